"""The run report people read on GitHub: `report.md` (markdown + a Mermaid chart) and `curves.png`.

Two reports are rendered from the same published files:

- `models/<model_name>/<version>/report.md`, written with the version (create-only, checksummed in
  the manifest). It is rendered before the quality gate runs, so it states the gate's rule (floor,
  margin) and where the decision will be, never a guessed decision.
- `runs/<run_id>/report.md`, written after the gate (trainer.finish): the same report with the
  decision and why (floor, margin, the champion's accuracy, the delta) and the capacity the run had.
  This is the one the workflows post to the commit and its pull request.

The curves are drawn twice: a Mermaid `xychart-beta` block that GitHub renders inside the comment
(no image hosting needed) and `curves.png`, the artifact, with integer epoch ticks, a title naming
the model and version, and the gate floor as a line.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from decimal import Decimal
from fractions import Fraction
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer import pricing
from trainer.chart import mermaid_chart, series_legend
from trainer.cli_common import COMMAND
from trainer.counts import Counts, parse_decimal, percent
from trainer.gate import GateOutcome
from trainer.metrics import EpochResult

if TYPE_CHECKING:
    from matplotlib.figure import Figure

# Fargate Spot is billed "up to 70 % off" on-demand (aws.amazon.com/fargate/pricing); 70 % is the
# discount the bench and cost notes use, so the Spot figure here is an estimate, stated as such.
SPOT_DISCOUNT = 0.7
SPOT, ON_DEMAND = "FARGATE_SPOT", "FARGATE"
MAX_EPOCH_TICKS = 15  # up to this many epochs, one tick each; beyond, integer ticks matplotlib spaces


# --- numbers in words ----------------------------------------------------------------------------


def _pct(value: float) -> str:
    return f"{100 * value:.2f} %"


def _points(value: float | Fraction) -> str:
    return f"{float(100 * value):+.2f} pp"


def _counts_of(metrics: Mapping[str, Any]) -> Counts | None:
    """The version's counts when its metrics carry them (a version published before counts: None)."""
    if "correct" not in metrics:
        return None
    return Counts.from_mapping(metrics, "metrics.json")


def _accuracy_cell(accuracy: float, counts: Counts | None) -> str:
    return str(counts) if counts is not None else _pct(accuracy)


def _floor_cell(floor: str, counts: Counts | None, accuracy: float) -> str:
    exact = parse_decimal(floor, "accuracy_floor")
    met = (counts.fraction if counts is not None else Fraction(accuracy)) >= exact
    return f"{floor} = {percent(exact)} ({'met' if met else 'not met'})"


def _duration(seconds: float) -> str:
    return f"{seconds:.0f} s" if seconds < 120 else f"{seconds / 60:.1f} min"


def cost_line(
    manifest: Mapping[str, Any], capacity: str | None, *, nodes: int = 1, on_demand: bool | None = None
) -> str:
    """The run's cost as run: on Spot, the Spot estimate first; on-demand, the on-demand figure.

    On Fargate (or where the capacity is unknown) the manifest's Fargate estimate. On EC2 capacity (a GPU
    capacity provider, an AWS Batch job of `nodes` instances) the instance type's on-demand price times
    the instance count and the wall time (trainer.pricing); `on_demand` (the run record's) says whether
    that was the price paid or, on a Spot provider, its upper bound.
    """
    if (capacity is not None and capacity not in {SPOT, ON_DEMAND}) or nodes > 1:
        return _ec2_cost_line(manifest, capacity or "EC2", nodes, on_demand)
    on_demand_usd = float(manifest["estimated_cost"]["usd"])
    spot = on_demand_usd * (1 - SPOT_DISCOUNT)
    if capacity == SPOT:
        return f"~${spot:.4f} on Fargate Spot (on-demand would have been ${on_demand_usd:.4f})"
    if capacity == ON_DEMAND:
        return f"${on_demand_usd:.4f} on on-demand Fargate (Spot had no capacity; Spot would have been ~${spot:.4f})"
    return f"${on_demand_usd:.4f} at the on-demand rate, ~${spot:.4f} if it ran on Fargate Spot (capacity not recorded)"


def _ec2_cost_line(manifest: Mapping[str, Any], capacity: str, nodes: int, on_demand: bool | None) -> str:
    hardware = manifest.get("hardware") or {}
    kind = pricing.instance_of(hardware)
    if kind is None:
        priced = ", ".join(k.name for k in pricing.INSTANCE_TYPES)
        return (
            f"not estimated: it ran on {capacity}, and its hardware (GPU {hardware.get('gpu', 'none recorded')}, "
            f"{hardware.get('host_cpus', 'unknown')} vCPUs) is none of the priced instance types ({priced}; "
            "trainer.pricing)"
        )
    wall = Decimal(str(manifest["wall_seconds"]))
    usd = pricing.run_cost(kind, nodes, wall)
    basis = (
        f"{nodes} x {kind.name} at ${kind.usd_per_hour}/h on demand for {_duration(float(wall))} on {capacity} "
        f"({pricing.PRICES_REGION} list price, {pricing.PRICES_AS_OF}, {pricing.PRICES_SOURCE})"
    )
    if on_demand is False:
        return f"at most ${usd}: {basis}; a Spot instance is billed at the hour's Spot price, lower"
    return f"${usd}: {basis}"


# --- the Mermaid chart (drawn by trainer.chart, shared with the preview comment) ----------------


def curve_series(epochs: Sequence[Mapping[str, Any]], floor: float | None) -> list[tuple[str, list[float]]]:
    """The report chart's lines: test and train accuracy (%) by epoch, and the floor as a flat line."""
    series = [
        ("test accuracy", [100 * float(e["test_accuracy"]) for e in epochs]),
        ("train accuracy", [100 * float(e["train_accuracy"]) for e in epochs]),
    ]
    if floor is not None:
        series.append(("gate floor", [100 * floor] * len(epochs)))
    return series


def mermaid_curves(epochs: Sequence[Mapping[str, Any]], *, title: str, floor: float | None) -> str:
    """The report's chart: test and train accuracy (%) by epoch, and the floor as a flat line.

    The x axis is a band of quoted epoch numbers (integers, one per epoch; a numeric x range would
    put ticks between epochs); the y axis is 0 --> 100 so runs compare at a glance.
    """
    if not epochs:
        return ""
    bands = [str(int(e["epoch"])) for e in epochs]
    return mermaid_chart(bands, curve_series(epochs, floor), title=title, y_title="accuracy (%)")


# --- report.md -----------------------------------------------------------------------------------


def _recipe_as_run(manifest: Mapping[str, Any]) -> str:
    """Batch and lr as they trained: after the small-data rule, with the configured values when it changed them."""
    config, effective = manifest["config"], manifest.get("effective") or {}
    batch, lr = effective.get("batch_size", config["batch_size"]), effective.get("lr", config["lr"])
    if (batch, lr) == (config["batch_size"], config["lr"]):
        return f"batch {batch}, lr {lr}"
    return (
        f"batch {batch}, lr {lr:.6g} (configured {config['batch_size']} and {config['lr']}: the small-data rule "
        "shrank the batch and scaled the lr with it)"
    )


def _margin_cell(margin: str) -> str:
    return f"{margin} = {_points(parse_decimal(margin, 'champion_margin')).lstrip('+')}"


def _gate_section(  # noqa: PLR0917 -- private, one call site
    accuracy: float,
    counts: Counts | None,
    gate: GateOutcome | None,
    config: Mapping[str, Any],
    run_id: str,
    version: str,
) -> list[str]:
    if gate is None:
        floor, margin = str(config["accuracy_floor"]), str(config["champion_margin"])
        return [
            f"**Gate:** promotes at or above the floor {floor} and at least the champion's accuracy + {margin} "
            f"(compared exactly as correct/total; a tie promotes); it runs after publishing: the decision is in "
            f"`runs/{run_id}/report.md` (`{COMMAND} runs show {run_id}`).",
        ]
    counts = gate.counts or counts
    if gate.pending:
        return [
            f"**Gate: pending** — {gate.reason}. The version is published and the run succeeded; the gate is "
            f"retried by the next start of this run or `{COMMAND} models gate {version}`, which "
            "rewrites this report.",
            "",
            "| gate | value |",
            "| --- | --- |",
            f"| test accuracy | {_accuracy_cell(accuracy, counts)} |",
            f"| floor | {_floor_cell(gate.floor, counts, accuracy)} |",
            f"| margin | {_margin_cell(gate.margin)} |",
        ]
    delta = gate.delta()
    verdict = "promoted to champion" if gate.promoted else "not promoted"
    champion = f"`{gate.compared.version}` {gate.compared.counts}" if gate.compared is not None else "none"
    return [
        f"**Gate: {verdict}** — {gate.reason}.",
        "",
        "| gate | value |",
        "| --- | --- |",
        f"| test accuracy | {_accuracy_cell(accuracy, counts)} |",
        f"| floor | {_floor_cell(gate.floor, counts, accuracy)} |",
        f"| champion compared | {champion} |",
        f"| margin | {_margin_cell(gate.margin)} |",
        f"| delta vs champion | {_points(delta) if delta is not None else 'n/a (no champion compared)'} |",
    ]


def render_report(
    manifest: Mapping[str, Any],
    metrics: Mapping[str, Any],
    curves_uri: str,
    *,
    gate: GateOutcome | None = None,
    capacity: str | None = None,
    nodes: int = 1,
    on_demand: bool | None = None,
) -> str:
    """Markdown for a GitHub comment: the gate and why, provenance, cost, the curves, per epoch and class."""
    config = manifest["config"]
    epochs = metrics["epochs"]
    accuracy = float(metrics["accuracy"])
    counts = _counts_of(metrics)
    title = f"{manifest['model_name']} {manifest['version']}"
    lines = [
        f"### {manifest['model_name']} `{manifest['version']}`: {_pct(accuracy)}",
        "",
        *_gate_section(accuracy, counts, gate, config, str(manifest["run_id"]), str(manifest["version"])),
        "",
        "| run | value |",
        "| --- | --- |",
        f"| test accuracy | **{_pct(accuracy)}** "
        f"({f'{counts.correct} of {counts.total}' if counts else metrics['test_images']} images), "
        f"loss {metrics['loss']:.4f} |",
        f"| model | `{config['model']}`, {config['epochs']} epochs, {_recipe_as_run(manifest)} |",
        f"| image | `{manifest['image_digest'] or 'local'}` |",
        f"| git sha | `{manifest['git_sha'] or 'unknown'}` |",
        f"| run | `{manifest['run_id']}`, {manifest['attempt']} attempt(s), {_duration(manifest['wall_seconds'])} |",
        f"| throughput | {manifest['throughput']['images_per_s']:.0f} images/s ({manifest['precision']}) |",
        f"| cost as run | {cost_line(manifest, capacity, nodes=nodes, on_demand=on_demand)} |",
        f"| dataset | `{manifest['dataset']['checksum']}` |",
        "",
        f"Accuracy (%) by epoch: {series_legend([name for name, _ in curve_series(epochs, 0.0)])}.",
        "",
        mermaid_curves(epochs, title=title, floor=float(config["accuracy_floor"])),
        "",
        f"Curves as an image: `{curves_uri}`",
        "",
        "<details><summary>per epoch and per class</summary>",
        "",
        "| epoch | train loss | test loss | test accuracy | images/s |",
        "| ---: | ---: | ---: | ---: | ---: |",
        *(
            f"| {e['epoch']} | {e['train_loss']:.4f} | {e['test_loss']:.4f} | {_pct(e['test_accuracy'])} "
            f"| {e['images_per_s']:.0f} |"
            for e in epochs
        ),
        "",
        "| class | accuracy |",
        "| --- | ---: |",
        *(f"| {name} | {100 * acc:.1f} % |" for name, acc in metrics["per_class_accuracy"].items()),
        "",
        "</details>",
        "",
    ]
    return "\n".join(lines)


# --- curves.png ----------------------------------------------------------------------------------


def curves_figure(history: Sequence[EpochResult], *, title: str, floor: float | None) -> Figure:
    """Loss and accuracy per epoch: integer epoch ticks, the title, the floor as a dashed line."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import FixedLocator, MaxNLocator

    epochs = [r.epoch for r in history]
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(10, 4), dpi=100)
    fig.suptitle(title)
    ax_loss.plot(epochs, [r.train_loss for r in history], marker="o", label="train")
    ax_loss.plot(epochs, [r.test_loss for r in history], marker="o", label="test")
    ax_loss.set(xlabel="epoch", ylabel="cross-entropy", title="loss")
    ax_loss.set_ylim(bottom=0)
    ax_acc.plot(epochs, [100 * r.train_accuracy for r in history], marker="o", label="train")
    ax_acc.plot(epochs, [100 * r.test_accuracy for r in history], marker="o", label="test")
    if floor is not None:
        ax_acc.axhline(100 * floor, color="tab:red", linestyle="--", label=f"gate floor {100 * floor:.0f} %")
    ax_acc.set(xlabel="epoch", ylabel="accuracy (%)", title="accuracy", ylim=(0, 100))
    for ax in (ax_loss, ax_acc):
        # every epoch gets a tick on a short run; MaxNLocator alone falls back to 0.2 steps on 1-2 epochs
        short = len(epochs) <= MAX_EPOCH_TICKS
        ax.xaxis.set_major_locator(FixedLocator(epochs) if short else MaxNLocator(integer=True))
        # one or two epochs would otherwise fill the axis edge to edge (or collapse it to a point)
        ax.set_xlim(min(epochs, default=1) - 0.5, max(epochs, default=1) + 0.5)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    return fig


def plot_curves(history: Sequence[EpochResult], path: str | Path, *, title: str, floor: float | None) -> Path:
    """`curves_figure` as a PNG at path (matplotlib's Agg backend, no display needed)."""
    import matplotlib.pyplot as plt

    fig = curves_figure(history, title=title, floor=floor)
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(target, format="png")
    plt.close(fig)
    return target
