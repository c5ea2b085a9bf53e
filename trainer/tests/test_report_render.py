"""report.md and curves.png: the gate and why, provenance, cost as run, a valid Mermaid chart, readable axes.

The report is compared with a golden file (trainer/tests/golden/report.md); regenerate it on purpose
with `PUSHTRAIN_UPDATE_GOLDEN=1 pytest trainer/tests/test_report_render.py` and review the diff.
"""

from __future__ import annotations

import json
import os
import sys
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from trainer.config import TrainConfig
from trainer.counts import Counts
from trainer.finish import after_success, placement_of, run_report_key
from trainer.gate import Compared, GateOutcome
from trainer.metrics import EpochResult, EvalResult
from trainer.nets import build_model
from trainer.publish import TrainingOutcome, publish_version
from trainer.report import SPOT, curves_figure, mermaid_curves, render_report
from trainer.run import run_gate
from trainer.store import LocalStore
from trainer.versions import new_version_id

from trainer import pricing

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "tests"))  # importlib mode: shared test helpers
from mermaid_grammar import mermaid_block, mermaid_xychart_errors

GOLDEN = Path(__file__).resolve().parent / "golden" / "report.md"
VERSION = "20261125T190000Z-push-0123456789abcdef0123"


def manifest() -> dict[str, Any]:
    return {
        "model_name": "cifar10",
        "version": VERSION,
        "run_id": "push-0123456789abcdef0123",
        "attempt": 2,
        "git_sha": "0123456789abcdef0123456789abcdef01234567",
        "image_digest": "sha256:" + "ab" * 32,
        "config": {"model": "airbench", "epochs": 3, "batch_size": 512, "lr": 1.5, "accuracy_floor": "0.5",
                   "champion_margin": "0.01"},
        "dataset": {"checksum": "sha256:" + "d" * 64},
        "precision": "bf16",
        "wall_seconds": 412.0,
        "throughput": {"images_per_s": 1234.5},
        "estimated_cost": {"usd": 0.0113},
        "metrics": {"accuracy": 0.8125, "correct": 8125, "total": 10000, "loss": 0.61},
    }  # fmt: skip


def metrics() -> dict[str, Any]:
    return {
        "accuracy": 0.8125,
        "correct": 8125,
        "total": 10000,
        "loss": 0.61,
        "test_images": 10000,
        "per_class_accuracy": {"airplane": 0.85, "automobile": 0.9},
        "epochs": [
            {"epoch": e, "train_loss": 2.0 / e, "test_loss": 1.8 / e, "train_accuracy": 0.3 * e,
             "test_accuracy": acc, "images_per_s": 1200.0 + e}
            for e, acc in ((1, 0.55), (2, 0.74), (3, 0.8125))
        ],
    }  # fmt: skip


CHAMPION = "20261124T090000Z-push-aaaaaaaaaaaaaaaaaaaa"
PROMOTED = GateOutcome(
    outcome="promoted",
    reason=f"accuracy 8125/10000 (81.25 %) is above champion {CHAMPION} (7800/10000 (78.00 %)) + margin 0.01",
    version=VERSION,
    counts=Counts(8125, 10000),
    floor="0.5",
    margin="0.01",
    compared=Compared(CHAMPION, Counts(7800, 10000)),
    champion_version=VERSION,
    at="2026-11-25T19:10:00.000000Z",
)


@pytest.mark.parametrize(
    "bad",
    [
        '```mermaid\nxychart-beta\n    title "a "quoted" title"\n    x-axis "epoch" ["1"]\n    y-axis "%" 0 --> 100\n'
        "    line [1]\n```",
        '```mermaid\nxychart-beta\n    x-axis "epoch" ["1", "2"]\n    y-axis "%" 0 --> 100\n    line [1]\n```',
        '```mermaid\nxychart-beta\n    x-axis "epoch" ["1"]\n    y-axis "%" 0 --> 100\n    line [101]\n```',
        '```mermaid\nxychart\n    x-axis "epoch" ["1"]\n    y-axis "%" 0 --> 100\n    line [1]\n```',
    ],
)
def test_the_grammar_check_rejects_broken_charts(bad: str) -> None:
    assert mermaid_xychart_errors(bad) != []


def test_report_chart_is_a_valid_xychart_with_a_band_per_epoch_and_the_floor_line() -> None:
    # GIVEN three epochs and a floor of 50 %; WHEN the chart is drawn
    block = mermaid_curves(metrics()["epochs"], title='cifar10 "v1"', floor=0.5)
    # THEN it follows the grammar, has integer epochs 1..3 and a flat line at the floor
    assert mermaid_xychart_errors(block) == []
    assert 'x-axis "epoch" ["1", "2", "3"]' in block
    assert 'line "gate floor" [50.00, 50.00, 50.00]' in block
    assert "title \"cifar10 'v1'\"" in block


def test_final_report_matches_the_golden_file() -> None:
    # GIVEN a promoted version that ran on Spot; WHEN its report is rendered
    text = render_report(manifest(), metrics(), "s3://bucket/models/cifar10/v/curves.png", gate=PROMOTED, capacity=SPOT)
    if os.environ.get("PUSHTRAIN_UPDATE_GOLDEN"):
        GOLDEN.write_text(text)
    # THEN it is exactly the reviewed golden report (gate and why, digest, sha, cost on Spot, chart)
    assert text == GOLDEN.read_text()
    assert mermaid_xychart_errors(mermaid_block(text)) == []


def test_report_states_the_gate_decision_and_the_numbers_behind_it() -> None:
    text = render_report(manifest(), metrics(), "curves.png", gate=PROMOTED, capacity=SPOT)
    assert "**Gate: promoted to champion**" in text
    assert "| floor | 0.5 = 50.00 % (met) |" in text
    assert "| delta vs champion | +3.25 pp |" in text
    assert "| margin | 0.01 = 1.00 pp |" in text
    assert "~$0.0034 on Fargate Spot (on-demand would have been $0.0113)" in text
    assert f"`{'sha256:' + 'ab' * 32}`" in text and "`0123456789abcdef0123456789abcdef01234567`" in text


def test_report_without_a_champion_or_capacity_says_so_instead_of_guessing() -> None:
    first = GateOutcome("promoted", "meets the floor and there is no champion yet", VERSION, Counts(8125, 10000),
                        "0.5", "0", None, VERSION, "")  # fmt: skip
    text = render_report(manifest(), metrics(), "curves.png", gate=first, capacity=None)
    assert "| champion compared | none |" in text
    assert "n/a (no champion compared)" in text
    assert "capacity not recorded" in text


def test_report_shows_the_counts_and_the_exact_floor_it_was_judged_against() -> None:
    # GIVEN 9000/10000 against a floor of 0.9 (float32 would have made it 0.89999998, "below 0.9000")
    exact = {**metrics(), "accuracy": 0.9, "correct": 9000, "total": 10000}
    gate = GateOutcome("promoted", "meets", VERSION, Counts(9000, 10000), "0.9", "0", None, VERSION, "")
    text = render_report(manifest(), exact, "curves.png", gate=gate, capacity=None)
    assert "| test accuracy | 9000/10000 (90.00 %) |" in text
    assert "| floor | 0.9 = 90.00 % (met) |" in text
    assert "(9000 of 10000 images)" in text


def test_version_report_written_before_the_gate_states_the_rule_and_where_the_decision_is() -> None:
    text = render_report(manifest(), metrics(), "curves.png")
    assert "runs/push-0123456789abcdef0123/report.md" in text
    assert "promoted to champion" not in text and "not promoted" not in text


def test_the_report_reads_the_champion_compared_from_the_gate_record_alone() -> None:
    # GIVEN the run record's gate field (the one shape: GateOutcome.to_record)
    record = PROMOTED.to_record()
    # WHEN it is read back for the report, THEN it is the same outcome, delta exact
    gate = GateOutcome.from_record(record, version=VERSION, floor="ignored", margin="ignored")
    assert gate == PROMOTED
    text = render_report(manifest(), metrics(), "curves.png", gate=gate)
    assert f"| champion compared | `{CHAMPION}` 7800/10000 (78.00 %) |" in text
    assert "| delta vs champion | +3.25 pp |" in text


def trained(accuracy: float) -> TrainingOutcome:
    """A tiny untrained CNN dressed as a finished run (publishing only needs its shape)."""
    evaluation = EvalResult(0.6, round(accuracy * 10), 10, {"a": accuracy, "b": accuracy}, [[5, 0], [0, 5]])
    return TrainingOutcome(
        model=build_model("cnn", 2), model_config={"name": "cnn", "num_classes": 2}, classes=("a", "b"),
        evaluation=evaluation, history=history(3), dataset={"checksum": "sha256:" + "d" * 64, "train_images": 20},
        hardware={"device": "cpu"}, wall_seconds=3.0, precision="fp32",
    )  # fmt: skip


def history(n: int) -> list[EpochResult]:
    return [EpochResult(e, 2.0 / e, 0.3 * e / n, 1.9 / e, 0.25 * e / n, 500.0, 10.0, 1.0, 0.1) for e in range(1, n + 1)]


@pytest.mark.parametrize("epochs", [1, 2, 7])
def test_curves_have_integer_epoch_ticks_a_title_and_the_floor(epochs: int) -> None:
    import matplotlib.pyplot as plt

    fig = curves_figure(history(epochs), title=f"cifar10 {VERSION}", floor=0.6)
    try:
        _, ax_acc = fig.axes
        low, high = ax_acc.get_xlim()
        ticks = [t for t in ax_acc.get_xticks() if low <= t <= high]
        assert ticks and all(float(t).is_integer() for t in ticks)
        assert fig._suptitle is not None and fig._suptitle.get_text() == f"cifar10 {VERSION}"
        assert any(list(line.get_ydata()) == [60.0, 60.0] for line in ax_acc.get_lines())
        assert ax_acc.get_ylim() == (0.0, 100.0)
    finally:
        plt.close(fig)


def test_a_succeeded_run_leaves_its_final_report_in_the_run_folder(tmp_path: Path) -> None:
    # GIVEN a version published and promoted as run.py does it
    store = LocalStore(tmp_path / "store")
    run_id = "push-0123456789abcdef0123"
    config = TrainConfig(model="cnn", work_dir=str(tmp_path / "work")).replace(epochs=3, run_id=run_id)
    version = new_version_id(run_id, datetime(2026, 11, 25, 19, tzinfo=UTC))
    publish_version(store, config, run_id=run_id, version=version, outcome=trained(0.8), now=datetime.now(UTC))
    decision = run_gate(store, "cifar10", version, None, floor="0.5", margin="0", run_id=run_id)
    # WHEN the run finishes
    after_success(store, config, run_id, version, decision, environ={})
    # THEN runs/<run_id>/report.md holds the decision, and the version's own report is unchanged
    text = store.get(run_report_key(run_id)).decode()
    assert "**Gate: promoted to champion**" in text
    assert "there is no champion yet" in text
    assert mermaid_xychart_errors(mermaid_block(text)) == []
    manifest_doc = json.loads(store.get(f"models/cifar10/{version}/manifest.json"))
    assert manifest_doc["files"]["report.md"]["sha256"]


def test_a_pending_gate_is_reported_as_pending_with_its_reason_and_how_it_is_retried() -> None:
    # GIVEN a gate that could not run (the run record's gate outcome "pending")
    reason = "the gate could not run: GateError: champion.json is not a champion record"
    view = GateOutcome.from_record(
        {"outcome": "pending", "reason": reason}, version=VERSION, floor="0.5", margin="0.01"
    )
    # WHEN the report is rendered
    text = render_report(manifest(), metrics(), "curves.png", gate=view, capacity=SPOT)
    # THEN it says pending and why, compares with no champion, and names the command that retries it
    assert view.outcome == "pending" and not view.promoted and view.champion_version is None
    assert f"**Gate: pending** — {reason}." in text
    assert f"pushtrain models gate {VERSION}" in text
    assert "promoted to champion" not in text and "not promoted" not in text


def test_a_run_whose_gate_is_pending_still_gets_its_report_saying_so(tmp_path: Path) -> None:
    # GIVEN a published version and a champion record that cannot be read (the gate cannot run)
    store = LocalStore(tmp_path / "store")
    run_id = "push-0123456789abcdef0123"
    config = TrainConfig(model="cnn", work_dir=str(tmp_path / "work")).replace(epochs=3, run_id=run_id)
    version = new_version_id(run_id, datetime(2026, 11, 25, 19, tzinfo=UTC))
    publish_version(store, config, run_id=run_id, version=version, outcome=trained(0.8), now=datetime.now(UTC))
    store.put("models/cifar10/champion.json", b"{not json")
    gate = run_gate(store, "cifar10", version, None, floor="0.5", margin="0", run_id=run_id)
    # WHEN the run finishes
    after_success(store, config, run_id, version, gate, environ={})
    # THEN the gate is pending and the run's report says so
    assert gate["outcome"] == "pending"
    assert "**Gate: pending**" in store.get(run_report_key(run_id)).decode()


@pytest.mark.parametrize("capacity", ["pushtrain-gpu", "pushtrain-gpu-od", "batch:2-nodes"])
def test_report_of_a_run_on_ec2_capacity_says_its_cost_is_not_estimated(capacity: str) -> None:
    # GIVEN a run whose record names a GPU capacity provider (or a Batch job), not Fargate
    text = render_report(manifest(), metrics(), "curves.png", gate=PROMOTED, capacity=capacity)
    # THEN the report does not price it at Fargate's rates: it names the capacity and says unknown
    assert f"not estimated: it ran on {capacity}" in text
    assert "Fargate Spot (on-demand would have been" not in text


# --- GPU and multi-node runs: priced per instance (trainer.pricing) -------------------------------------


def on_hardware(gpu: str | None, host_cpus: int | None) -> dict[str, Any]:
    described = manifest()
    described["hardware"] = {k: v for k, v in {"gpu": gpu, "host_cpus": host_cpus}.items() if v is not None}
    return described


@pytest.mark.parametrize(
    ("record", "gpu", "expected"),
    [
        # a GPU run's first attempt on the Spot GPU provider: 0.8048 x 412 / 3600 = 0.092104888... -> 0.0921
        (
            {"compute": "gpu", "capacity_provider": "pushtrain-gpu", "on_demand": False},
            "NVIDIA L4",
            "at most $0.0921: 1 x g6.xlarge at $0.8048/h on demand for 6.9 min on pushtrain-gpu",
        ),
        # its resumed attempt on the on-demand provider: the price paid
        (
            {"compute": "gpu", "capacity_provider": "pushtrain-gpu-od", "on_demand": True},
            "NVIDIA L4",
            "$0.0921: 1 x g6.xlarge at $0.8048/h on demand for 6.9 min on pushtrain-gpu-od",
        ),
        # a 2-node Batch job of g5.xlarge: 1.006 x 2 x 412 / 3600 = 0.230262... -> 0.2303
        (
            {"compute": "batch", "nodes": 2, "capacity_provider": None, "on_demand": False},
            "NVIDIA A10G",
            "$0.2303: 2 x g5.xlarge at $1.006/h on demand for 6.9 min on AWS Batch (on demand)",
        ),
    ],
    ids=["gpu-spot", "gpu-on-demand", "batch-2-nodes"],
)
def test_a_gpu_or_multi_node_run_is_priced_by_instance_type_count_and_wall_time(
    record: dict[str, Any], gpu: str, expected: str
) -> None:
    # GIVEN a run record (trigger) and the hardware the manifest recorded (4 vCPUs: an xlarge)
    text = render_report(on_hardware(gpu, 4), metrics(), "curves.png", gate=PROMOTED, **placement_of(record))
    # THEN the cost line prices its instances exactly, not Fargate's rate, and cites the price list
    assert ("a Spot instance is billed at the hour's Spot price" in text) == (
        placement_of(record)["on_demand"] is False
    )
    assert (
        f"| cost as run | {expected} (us-east-1 list price, 2026-11, https://aws.amazon.com/ec2/pricing/on-demand/)"
        in text
    )


@pytest.mark.parametrize(
    ("gpu", "host_cpus"),
    [("NVIDIA L40S", 8), ("NVIDIA L4", 8), (None, 4)],
    ids=["unpriced-gpu", "l4-on-a-2xlarge", "no-gpu-recorded"],
)
def test_a_gpu_run_on_hardware_no_priced_type_matches_is_not_estimated(gpu: str | None, host_cpus: int) -> None:
    record = {"compute": "gpu", "capacity_provider": "pushtrain-gpu", "on_demand": False}
    text = render_report(on_hardware(gpu, host_cpus), metrics(), "curves.png", gate=PROMOTED, **placement_of(record))
    assert "not estimated: it ran on pushtrain-gpu, and its hardware" in text
    assert "g6.xlarge at" not in text


def test_ec2_costs_are_exact_decimals_rounded_once_half_up() -> None:
    g4dn = pricing.INSTANCE_TYPES[2]
    assert g4dn.name == "g4dn.xlarge"
    assert pricing.run_cost(g4dn, 1, Decimal(450)) == Decimal("0.0658")  # exactly 0.06575: half up
    assert pricing.run_cost(g4dn, 3, Decimal(1)) == Decimal("0.0004")  # 0.000438333...
    assert pricing.run_cost(g4dn, 1, Decimal(3600)) == Decimal("0.5260")
    assert pricing.run_cost(g4dn, 16, Decimal("7200.5")) == Decimal("16.8332")  # 16.833168888...
    with pytest.raises(ValueError, match="nodes=0"):
        pricing.run_cost(g4dn, 0, Decimal(1))
