"""`pushtrain runs compare A B [C…]`: runs side by side, from their records and published versions.

    pushtrain runs compare push-aaaa… push-bbbb…                   # a table: what differs, metrics, cost, time
    pushtrain runs compare push-aaaa… push-bbbb… --png compare.png # and the test-accuracy curves overlaid
    pushtrain runs compare push-aaaa… push-bbbb… --markdown        # the table and the same Mermaid chart

For each run: its state, version, the settings that differ between the runs (from each version's
resolved configuration, else the record's params), test accuracy as a count (correct / total test
images, the count the version was judged on) and its loss, the epochs, the estimated cost and the
wall time. The curves are each run's test accuracy by epoch, in the report's colours
(trainer.chart.mermaid_chart), so a comparison reads like a report.
"""

from __future__ import annotations

import json
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from trainer import runstate
from trainer.chart import SERIES_COLOURS, mermaid_chart, series_legend
from trainer.cli_common import COMMAND
from trainer.store import NotFound, Store
from trainer.versions import METRICS_FILE, read_manifest, version_prefix

SAME_FOR_EVERY_RUN = {"run_id", "attempt"}  # always differ between runs; not a difference in the recipe


class CompareError(Exception):
    """A run that cannot be compared: no record, or its version's files cannot be read."""


@dataclass(frozen=True)
class RunSide:
    """One run as compared: its record, and its version's manifest and metrics when it published one."""

    run_id: str
    record: dict[str, Any]
    manifest: dict[str, Any] | None = None
    metrics: dict[str, Any] | None = None
    settings: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        return self.run_id

    def correct_total(self) -> tuple[int, int] | None:
        """(correct, total) test images: the counts when metrics.json has them, else accuracy x images, rounded."""
        if self.metrics is None:
            return None
        total = int(self.metrics.get("total", self.metrics.get("test_images", 0)))
        if "correct" in self.metrics:
            return int(self.metrics["correct"]), total
        return round(float(self.metrics["accuracy"]) * total), total  # an exact count: accuracy = correct / total

    def curve(self) -> list[float]:
        return [100 * float(e["test_accuracy"]) for e in (self.metrics or {}).get("epochs", [])]


def load_side(store: Store, model_name: str, run_id: str) -> RunSide:
    record = runstate.read_status(store, run_id)
    if record is None:
        raise CompareError(f"no run {run_id!r} in {store.uri} (see `{COMMAND} runs list --store {store.uri}`)")
    version = record.get("version")
    if not version:
        return RunSide(run_id, record, settings=dict(record.get("params") or {}))
    try:
        manifest = read_manifest(store, model_name, str(version))
        metrics = json.loads(store.get(version_prefix(model_name, str(version)) + METRICS_FILE))
    except (NotFound, ValueError) as exc:
        raise CompareError(f"run {run_id}: its version {version} cannot be read: {exc}") from exc
    return RunSide(run_id, record, manifest, metrics, dict(manifest.get("config") or {}))


def differing(sides: Sequence[RunSide]) -> dict[str, list[Any]]:
    """Every setting whose value is not the same in all runs that have settings (one run's value per run).

    A run without any settings (it published nothing and its record holds no params) shows None in
    each row and does not make every setting "differ"; a setting one run lacks and another has does.
    """
    known = [side.settings for side in sides if side.settings]
    names = sorted({name for settings in known for name in settings} - SAME_FOR_EVERY_RUN)
    missing = object()
    return {
        name: [side.settings.get(name) for side in sides]
        for name in names
        if len({json.dumps(settings.get(name, missing), default=repr, sort_keys=True) for settings in known}) > 1
    }


def _accuracy(side: RunSide) -> str:
    counts = side.correct_total()
    if counts is None:
        return "-"
    correct, total = counts
    return f"{correct}/{total} ({100 * correct / total:.2f} %)" if total else "-"


def rows(sides: Sequence[RunSide]) -> list[tuple[str, list[str]]]:
    """The comparison as (row name, one cell per run)."""
    from trainer.runs_cli import timings

    def cell(value: Any) -> str:
        return "-" if value is None or value == "" else str(value)

    table: list[tuple[str, list[str]]] = [
        ("state", [cell(s.record.get("state")) for s in sides]),
        ("version", [cell(s.record.get("version")) for s in sides]),
        *((f"  {name}", [cell(v) for v in values]) for name, values in differing(sides).items()),
        ("test accuracy", [_accuracy(s) for s in sides]),
        ("test loss", [f"{float(s.metrics['loss']):.4f}" if s.metrics else "-" for s in sides]),
        ("epochs trained", [str(len(s.curve())) if s.metrics else "-" for s in sides]),
        (
            "est. cost",
            [f"${float(s.manifest['estimated_cost']['usd']):.4f}" if s.manifest else "-" for s in sides],
        ),
        ("training time", [f"{float(s.manifest['wall_seconds']):.1f} s" if s.manifest else "-" for s in sides]),
        ("run time", [_seconds(timings(s.record)["total_s"]) for s in sides]),
    ]
    return table


def _seconds(value: float | None) -> str:
    return "-" if value is None else f"{value:.0f} s"


def text_table(sides: Sequence[RunSide]) -> str:
    table = [("run", [s.label for s in sides]), *rows(sides)]
    widths = [max(len(r[1][i]) for r in table) for i in range(len(sides))]
    name_width = max(len(name) for name, _ in table)
    lines = [f"{name:<{name_width}}  " + "  ".join(f"{c:<{w}}" for c, w in zip(cells, widths, strict=True))
             for name, cells in table]  # fmt: skip
    if not differing(sides):
        lines.insert(3, f"{'':<{name_width}}  (every setting is the same)")
    return "\n".join(line.rstrip() for line in lines)


def curves_chart(sides: Sequence[RunSide]) -> str:
    """The report's Mermaid chart with one test-accuracy line per run (over the epochs every run has)."""
    with_curves = [s for s in sides if s.curve()]
    if not with_curves:
        return ""
    common = min(len(s.curve()) for s in with_curves)
    return mermaid_chart(
        [str(e) for e in range(1, common + 1)],
        [(s.label, s.curve()[:common]) for s in with_curves],
        title="test accuracy by epoch",
        y_title="test accuracy (%)",
    )


def markdown(sides: Sequence[RunSide]) -> str:
    table = [("run", [f"`{s.label}`" for s in sides]), *rows(sides)]
    lines = [
        "| | " + " | ".join(table[0][1]) + " |",
        "| --- |" + " ---: |" * len(sides),
        *(f"| {name.strip()} | " + " | ".join(cells) + " |" for name, cells in table[1:]),
    ]
    chart = curves_chart(sides)
    if chart:
        names = [s.label for s in sides if s.curve()]
        lines += ["", f"Test accuracy (%) by epoch: {series_legend(names)}.", "", chart]
    return "\n".join(lines) + "\n"


def plot(sides: Sequence[RunSide], path: Path) -> Path:
    """Every run's test accuracy by epoch on one axis (all epochs of each), in the chart's colours."""
    import matplotlib as mpl

    mpl.use("Agg")
    import matplotlib.pyplot as plt
    from matplotlib.ticker import MaxNLocator

    fig, ax = plt.subplots(figsize=(8, 4.5), dpi=100)
    for i, side in enumerate(s for s in sides if s.curve()):
        curve = side.curve()
        colour = SERIES_COLOURS[i % len(SERIES_COLOURS)]
        ax.plot(range(1, len(curve) + 1), curve, marker="o", color=colour, label=side.label)
    ax.set(xlabel="epoch", ylabel="test accuracy (%)", title="test accuracy by epoch", ylim=(0, 100))
    ax.xaxis.set_major_locator(MaxNLocator(integer=True))
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, format="png")
    plt.close(fig)
    return path


def to_json(sides: Sequence[RunSide]) -> dict[str, Any]:
    def one(side: RunSide) -> Mapping[str, Any]:
        counts = side.correct_total()
        return {
            "run_id": side.run_id,
            "state": side.record.get("state"),
            "version": side.record.get("version"),
            "correct": counts[0] if counts else None,
            "total": counts[1] if counts else None,
            "loss": side.metrics.get("loss") if side.metrics else None,
            "test_accuracy_by_epoch": side.curve(),
            "estimated_cost_usd": side.manifest["estimated_cost"]["usd"] if side.manifest else None,
            "wall_seconds": side.manifest["wall_seconds"] if side.manifest else None,
        }

    return {"runs": [one(s) for s in sides], "differing_settings": differing(sides)}
