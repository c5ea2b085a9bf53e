"""`runs compare A B [C…]`: settings that differ, accuracy as counts, cost and time, the curves overlaid.

GIVEN two published runs that differ in lr and epochs and a failed run, WHEN they are compared, THEN
the table names only the settings that differ, the accuracies as correct/total, the cost and wall
time, and the Mermaid chart (valid, one named line per run) and PNG overlay their curves.
"""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path

import pytest
from mermaid_grammar import mermaid_block, mermaid_xychart_errors
from trainer.__main__ import main as trainer_main
from trainer.config import TrainConfig
from trainer.metrics import EpochResult, EvalResult
from trainer.nets import build_model
from trainer.publish import TrainingOutcome, publish_version
from trainer.store import LocalStore
from trainer.versions import new_version_id

from trainer import runstate

A, B, FAILED = "push-5555555555eeeeeeeeee", "push-6666666666ffffffffff", "push-7777777777aaaaaaaaaa"


def publish(store: LocalStore, run_id: str, *, lr: float, epochs: int, correct: int, hour: int) -> None:
    config = TrainConfig(model="cnn", work_dir="/tmp/unused").replace(epochs=epochs, lr=lr, run_id=run_id)
    history = [EpochResult(e, 1.0 / e, 0.5, 0.9 / e, 0.2 * e, 500.0, 3.0, 0.2, lr) for e in range(1, epochs + 1)]
    outcome = TrainingOutcome(
        model=build_model("cnn", 2), model_config={"name": "cnn", "num_classes": 2}, classes=("a", "b"),
        evaluation=EvalResult(0.4, correct, 8, {"a": 0.5, "b": 0.5}, [[2, 2], [2, 2]]), history=history,
        dataset={"checksum": "sha256:" + "e" * 64, "train_images": 16}, hardware={"device": "cpu"},
        wall_seconds=10.0 * epochs, precision="fp32",
    )  # fmt: skip
    version = new_version_id(run_id, datetime(2026, 11, 25, hour, tzinfo=UTC))
    publish_version(store, config, run_id=run_id, version=version, outcome=outcome, now=datetime.now(UTC))
    new = lambda: runstate.new_record(run_id, now="2026-11-25T19:00:00Z", source="push")  # noqa: E731
    runstate.set_state(store, run_id, "succeeded", attempt=1, version=version, create=new)


@pytest.fixture(scope="module")
def store(tmp_path_factory: pytest.TempPathFactory) -> LocalStore:
    store = LocalStore(tmp_path_factory.mktemp("compare") / "store")
    publish(store, A, lr=0.02, epochs=3, correct=6, hour=19)
    publish(store, B, lr=0.05, epochs=2, correct=7, hour=20)
    new = lambda: runstate.new_record(FAILED, now="2026-11-25T21:00:00Z", source="push")  # noqa: E731
    runstate.set_state(store, FAILED, "failed", attempt=1, reason="NaN loss", create=new)
    return store


def compare(capsys: pytest.CaptureFixture[str], store: LocalStore, *args: str) -> tuple[int, str, str]:
    code = trainer_main(["runs", "compare", *args, "--store", str(store.root)])
    out, err = capsys.readouterr()
    return code, out, err


def test_the_table_shows_what_differs_the_counts_cost_and_time(
    store: LocalStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = compare(capsys, store, A, B, FAILED)
    assert code == 0
    rows = {cells[0]: cells[1:] for cells in (re.split(r"\s{2,}", line.strip()) for line in out.splitlines())}
    assert rows["run"] == [A, B, FAILED]
    assert rows["lr"] == ["0.02", "0.05", "-"]  # the failed run published nothing, and its record has no params
    assert rows["epochs"] == ["3", "2", "-"]
    assert rows["test accuracy"] == ["6/8 (75.00 %)", "7/8 (87.50 %)", "-"]
    assert "run_id" not in rows and "model" not in rows  # identity, or the same in every run
    assert rows["training time"] == ["30.0 s", "20.0 s", "-"]
    assert [c.startswith("$") for c in rows["est. cost"]] == [True, True, False]
    assert rows["state"] == ["succeeded", "succeeded", "failed"]


def test_json_carries_exact_counts_and_the_differing_settings(
    store: LocalStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = compare(capsys, store, A, B, "--json")
    document = json.loads(out)
    assert code == 0
    assert [(r["correct"], r["total"]) for r in document["runs"]] == [(6, 8), (7, 8)]
    assert document["differing_settings"]["lr"] == [0.02, 0.05]
    assert document["runs"][0]["test_accuracy_by_epoch"] == pytest.approx([20.0, 40.0, 60.0])


def test_markdown_and_png_overlay_the_curves(
    store: LocalStore, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = compare(capsys, store, A, B, "--markdown", "--png", str(tmp_path / "c.png"))
    assert code == 0
    block = mermaid_block(out)
    assert mermaid_xychart_errors(block) == []
    assert f'line "{A}" [20.00, 40.00]' in block and f'line "{B}" [20.00, 40.00]' in block  # the common epochs
    assert f"{A} (blue), {B} (orange)" in out
    assert (tmp_path / "c.png").read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    assert str(tmp_path / "c.png") in err


@pytest.mark.parametrize(
    ("args", "code", "says"),
    [([A], 2, "two or more different run ids"), ([A, A], 2, "two or more different run ids"),
     ([A, "push-nothere"], 1, "no run 'push-nothere'")],
)  # fmt: skip
def test_mistakes_are_one_line(
    store: LocalStore, capsys: pytest.CaptureFixture[str], args: list[str], code: int, says: str
) -> None:
    got, out, err = compare(capsys, store, *args)
    assert (got, out) == (code, "")
    assert says in err and len(err.strip().splitlines()) == 1
