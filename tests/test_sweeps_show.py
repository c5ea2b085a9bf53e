"""`python -m trainer sweeps show ID` on a record the trigger wrote: the same summary the workflow shows,
and one line (no traceback) for a sweep that is missing, damaged or misnamed."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from trainer.__main__ import main
from trainer.store import LocalStore
from trigger.sweeps import Observed, new_sweep_record, parse_sweep_request, step, sweep_key

from trainer import sweeps_cli

DIGEST = "sha256:" + "cd" * 32
REQUEST = {
    "action": "retrain",
    "request_id": "4321",
    "image": DIGEST,
    "params": {"epochs": 4},
    "sweep": {"grid": {"lr": [0.1, 0.2, 0.4]}, "max_parallel": 2, "early_stop": {"eta": 2}},
}


@pytest.fixture
def store(tmp_path: Path) -> LocalStore:
    record = new_sweep_record(parse_sweep_request(REQUEST), DIGEST, None, "2026-12-07T00:00:00Z")
    step(record, {})
    ids = [run["run_id"] for run in record["runs"]]
    step(record, {ids[0]: Observed("succeeded", validation=(70, 100), version="v0")})
    step(record, {ids[1]: Observed("stopped-early", stopped_at_epoch=1, validation=(20, 100))})
    step(record, {ids[2]: Observed("succeeded", validation=(71, 100), version="v2")})
    assert record["state"] == "refitting"
    local = LocalStore(tmp_path)
    local.put(sweep_key("4321"), json.dumps(record).encode())
    return local


def test_show_prints_the_summary_the_trigger_rendered(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweeps", "show", "4321", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    record = json.loads(store.get(sweep_key("4321")))
    assert out.startswith("sweep 4321: refitting, 3 set(s) on sha256:cdcd")
    assert "at most 2 at once, early stopping eta=2; refit retrain-4321-" in out
    assert record["summary_markdown"] in out
    assert "| 1 | 2 |" in out and "stopped-early at epoch 1" in out and "```mermaid" in out
    assert main(["sweeps", "show", "4321", "--store", str(store.root), "--json"]) == 0
    assert json.loads(capsys.readouterr().out) == record


def test_show_of_a_finished_sweep_names_the_refit_and_the_gates_decision(
    store: LocalStore, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN the refit's end recorded by the trigger (trigger.sweeps.step, as its stop event applies it)
    record = json.loads(store.get(sweep_key("4321")))
    gate = {"outcome": "promoted", "reason": "72/100 beats the champion's 70/100"}
    step(record, {record["refit"]["run_id"]: Observed("succeeded", version="v-refit", gate=gate)})
    store.put(sweep_key("4321"), json.dumps(record).encode())
    # WHEN shown THEN the head line and the summary say the sweep finished and what the gate decided
    assert main(["sweeps", "show", "4321", "--store", str(store.root)]) == 0
    out = capsys.readouterr().out
    assert out.startswith("sweep 4321: finished, 3 set(s)")
    assert f"refit {record['refit']['run_id']} succeeded, gate: promoted\n" in out
    assert "version `v-refit`; gate: **promoted** (72/100 beats the champion's 70/100)" in out
    assert "Outcome: refit succeeded; gate: promoted" in out


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (b'{"state": "running", "runs": [', "is not JSON"),
        (b"[1, 2]", "is not a JSON object"),
        (b'{"state": "done", "runs": []}', "state 'done' is not one of"),
        (b'{"state": "running", "runs": {}}', "runs is not a list"),
        (b'{"state": "running", "runs": [], "summary_markdown": 3}', "summary_markdown is not text"),
    ],
)
def test_a_damaged_record_is_one_line(
    store: LocalStore, damage: bytes, message: str, capsys: pytest.CaptureFixture[str]
) -> None:
    store.put(sweep_key("4321"), damage)
    assert main(["sweeps", "show", "4321", "--store", str(store.root)]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1 and "Traceback" not in err


def test_a_missing_or_misnamed_sweep_is_one_line(store: LocalStore, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["sweeps", "show", "9999", "--store", str(store.root)]) == 1
    assert "no sweep 9999 in" in capsys.readouterr().err
    assert main(["sweeps", "show", "../x", "--store", str(store.root)]) == 2
    assert "is not a sweep id" in capsys.readouterr().err


def test_the_states_show_accepts_are_the_states_the_trigger_writes() -> None:
    record = new_sweep_record(parse_sweep_request(REQUEST), DIGEST, None, "2026-12-07T00:00:00Z")
    assert record["state"] in sweeps_cli.STATES
    assert set(sweeps_cli.STATES) == {"running", "refitting", "finished"}
