"""ci.sweep: the retrain workflow's sweep step, against a fake trigger that answers like trigger.sweep_flow."""

from __future__ import annotations

import json
import re
import subprocess
import sys
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pytest
import yaml
from ci.github import CIError
from ci.retrain import build_request
from ci.sweep import parse_random, parse_values, ranking_table, start_all, sweep_request, verdict, wait_finished
from fakebin import FakeBin
from trigger.sweeps import Observed, new_sweep_record, parse_sweep_request, step

REPO = Path(__file__).resolve().parent.parent
RETRAIN_WORKFLOW = REPO / ".github" / "workflows" / "retrain.yml"
DIGEST = "sha256:" + "cd" * 32
# GitHub refuses to dispatch a workflow with more: "You can define up to 25 inputs for a workflow_dispatch
# event" (docs.github.com, Actions, "Manually running a workflow"; 10 before December 2025).
MAX_DISPATCH_INPUTS = 25

BASE = build_request(request_id="4242", image="0123abc", git_sha=None, epochs=10, lr=None, model="airbench")


def test_lrs_and_seeds_become_a_grid_over_the_base_parameters() -> None:
    request = sweep_request(BASE, parse_values("0.5, 1.5", "lrs", float), parse_values("0,1", "seeds", int))
    assert request["sweep"] == {"grid": {"lr": [0.5, 1.5], "seed": [0, 1]}}
    assert request["params"] == {"epochs": 10, "model": "airbench"}
    assert request["request_id"] == "4242"


@pytest.mark.parametrize(
    ("lrs", "seeds", "message"),
    [
        ("", "", "needs learning rates or seeds"),
        ("0.5, x", "", "'x' is not a float"),
        ("0.5, 0.5", "", "given twice"),
        ("-1", "", "out of range"),
        (",".join(str(0.1 * i) for i in range(1, 12)), "0,1,2", "makes 33 runs"),
    ],
)
def test_a_bad_sweep_input_fails_with_one_line(lrs: str, seeds: str, message: str) -> None:
    with pytest.raises(CIError, match=message):
        sweep_request(BASE, parse_values(lrs, "lrs", float), parse_values(seeds, "seeds", int))


@pytest.mark.parametrize(
    ("lrs", "random", "settings", "message"),
    [
        ("", '{"space": {"lr": ', {}, "random: not JSON"),
        ("", '[{"lr": 1}]', {}, 'random: expected {"space"'),
        ("0.5", '{"space": {"lr": {"uniform": [0.1, 1]}}}', {}, "either learning rates and seeds .* or a random"),
        ("0.5", "", {"max_parallel": -1}, "max_parallel: -1 is out of range"),
        ("0.5", "", {"max_cost_usd": float("nan")}, "max_cost_usd: nan is out of range"),
    ],
)
def test_a_bad_random_space_or_setting_fails_with_one_line(
    lrs: str, random: str, settings: dict[str, Any], message: str
) -> None:
    with pytest.raises(CIError, match=message):
        sweep_request(BASE, parse_values(lrs, "lrs", float), [], random=parse_random(random), **settings)


class FakeTrigger:
    """Answers as trigger.sweep_flow does: 4 starts per invocation, then the states, then the summary."""

    def __init__(self, runs: int, polls_until_finished: int, refit_ended: str = "succeeded") -> None:
        self.runs, self.started, self.polls, self.calls = runs, 0, polls_until_finished, 0
        self.refit_ended = refit_ended

    def __call__(self, request: Mapping[str, Any]) -> dict[str, Any]:
        self.calls += 1
        runs = [
            {"run_id": f"retrain-4242-{i:08x}", "params": {"lr": i}, "started": i < self.started}
            for i in range(self.runs)
        ]
        ranking = [{"rank": i + 1, "index": i, "state": "running"} for i in range(self.runs)]
        answer: dict[str, Any] = {"request_id": "4242", "sweep_key": "sweeps/4242.json", "runs": runs}
        if self.started < self.runs:
            self.started = min(self.runs, self.started + 4)
            return answer | {"remaining": self.runs - self.started, "state": "running", "ranking": ranking}
        if self.polls:
            self.polls -= 1
            return answer | {"remaining": 0, "state": "running", "ranking": ranking}
        refit = {"index": 1, "run_id": "retrain-4242-ffffffff", "ended": self.refit_ended}
        summary = "| rank | set | run |\n|---:|---:|---|\n| 1 | 1 | `retrain-4242-00000001` |"
        return answer | {"remaining": 0, "state": "finished", "refit": refit, "summary_markdown": summary}


def test_the_step_invokes_until_every_run_started_then_waits_for_the_refit() -> None:
    trigger = FakeTrigger(runs=10, polls_until_finished=2)
    request = sweep_request(BASE, [0.5, 1.0], [0, 1, 2, 3, 4], max_parallel=3, early_stop_eta=2)
    assert request["sweep"] == {"grid": {"lr": [0.5, 1.0], "seed": [0, 1, 2, 3, 4]}, "max_parallel": 3,
                                "early_stop": {"eta": 2}}  # fmt: skip
    started = start_all(trigger, request)
    assert (started["remaining"], trigger.calls) == (0, 3)  # 4 + 4 + 2 runs
    slept: list[float] = []
    finished = wait_finished(trigger, request, timeout_s=3600, poll_s=60, sleep=slept.append, clock=lambda: 0.0)
    assert finished["state"] == "finished"
    assert slept == [60, 60]
    table = ranking_table(finished)
    assert table.startswith("### Sweep 4242: 0 sets on")
    assert finished["summary_markdown"] in table
    assert verdict(finished) is None
    assert "ended failed" in str(verdict({**finished, "refit": {"run_id": "r", "ended": "failed"}}))
    assert verdict({"state": "finished", "refit": None, "outcome": "nothing to refit"}) == "nothing to refit"


def test_waiting_past_the_timeout_fails_and_says_the_runs_go_on() -> None:
    trigger = FakeTrigger(runs=1, polls_until_finished=100)
    request = sweep_request(BASE, [0.5], [])
    start_all(trigger, request)
    now = {"t": 0.0}

    def sleep(seconds: float) -> None:
        now["t"] += seconds

    with pytest.raises(CIError, match="did not finish within 5 minutes; its runs go on"):
        wait_finished(trigger, request, timeout_s=300, poll_s=60, sleep=sleep, clock=lambda: now["t"])


# --- the workflow's sweep step, as the runner runs it -----------------------------------------------------


def workflow() -> dict[str, Any]:
    document = yaml.safe_load(RETRAIN_WORKFLOW.read_text())
    document["on"] = document.pop(True)  # YAML 1.1 reads a bare `on` as True
    return document


def sweep_step() -> dict[str, Any]:
    (step,) = [s for s in workflow()["jobs"]["retrain"]["steps"] if "ci.sweep" in s.get("run", "")]
    return step


def run_step(
    tmp_path: Path, inputs: dict[str, str], answers: list[dict[str, Any]], step: dict[str, Any] | None = None
) -> subprocess.CompletedProcess[str]:
    """The sweep step's `run` under bash, its env's `${{ … }}` resolved from `inputs` (the runner's part),
    against a fake `aws lambda invoke` that answers `answers` in turn."""
    step = step or sweep_step()
    context = {"github.run_id": "4242", "vars.TRIGGER_FUNCTION_NAME": "pushtrain-trigger",
               "inputs.image || github.sha": "0123abc", "inputs.image == '' && github.sha || ''": ""}  # fmt: skip
    context |= {f"inputs.{name}": value for name, value in inputs.items()}

    def resolve(value: object) -> str:
        return re.sub(r"\$\{\{\s*([^}]+?)\s*\}\}", lambda m: context[m.group(1)], str(value))

    fakes = FakeBin(tmp_path)
    for answer in answers:
        fakes.add("aws", ["lambda", "invoke"], stdout='{"StatusCode": 200}', writes={"{last}": json.dumps(answer)},
                  times=1)  # fmt: skip
    # `python3` is the runner's own; here the tests' interpreter (a pyenv shim would put its own `aws` first on PATH)
    (fakes.bin_dir / "python3").symlink_to(sys.executable)
    (tmp_path / "summary").touch()
    (tmp_path / "output").touch()
    env = fakes.env(
        PYTHONPATH=str(REPO / "scripts"), GITHUB_STEP_SUMMARY=str(tmp_path / "summary"),
        GITHUB_OUTPUT=str(tmp_path / "output"), RUNNER_TEMP=str(tmp_path),
        **{name: resolve(value) for name, value in step["env"].items()},
    )  # fmt: skip
    bash = ["bash", "--noprofile", "--norc", "-eo", "pipefail", "-c", step["run"]]
    return subprocess.run(bash, env=env, capture_output=True, text=True, check=False, timeout=60)


def inputs_of(**given: str) -> dict[str, str]:
    """Every workflow input at its default (as text, as the runner renders it), then `given`."""
    defaults = {name: spec.get("default", "") for name, spec in workflow()["on"]["workflow_dispatch"]["inputs"].items()}
    return {
        name: str(value).lower() if isinstance(value, bool) else str(value) for name, value in defaults.items()
    } | given


def sent_request(result: subprocess.CompletedProcess[str]) -> dict[str, Any]:
    assert result.returncode == 0, result.stdout + result.stderr
    return dict(json.loads(result.stdout.split("sweep request: ", 1)[1].splitlines()[0]))


STARTED = {"request_id": "4242", "sweep_key": "sweeps/4242.json", "remaining": 0, "runs": [], "state": "running"}


@pytest.mark.parametrize(
    ("given", "sweep"),
    [
        # a grid of lr x seed with every setting
        ({"sweep_lrs": "0.5, 1.5", "sweep_seeds": "0,1", "sweep_max_parallel": "2", "sweep_early_stop_eta": "3",
          "sweep_max_cost_usd": "0.5", "sweep_val_images": "4000"},
         {"grid": {"lr": [0.5, 1.5], "seed": [0, 1]}, "max_parallel": 2, "early_stop": {"eta": 3},
          "max_cost_usd": 0.5, "val_images": 4000}),
        # random samples; the settings left at 0 are left to the trigger's defaults
        ({"sweep_random": '{"space": {"lr": {"loguniform": [0.1, 3.0]}, "seed": {"int": [0, 9]}}, "max_runs": 12, '
                          '"seed": 7}', "sweep_max_parallel": "4"},
         {"random": {"space": {"lr": {"loguniform": [0.1, 3.0]}, "seed": {"int": [0, 9]}}, "max_runs": 12, "seed": 7},
          "max_parallel": 4}),
    ],
)  # fmt: skip
def test_the_workflows_sweep_inputs_reach_the_request_the_trigger_accepts(
    tmp_path: Path, given: dict[str, str], sweep: dict[str, Any]
) -> None:
    # GIVEN the workflow dispatched with sweep inputs (and wait off)
    # WHEN its sweep step runs as the runner runs it
    request = sent_request(run_step(tmp_path, inputs_of(wait="false", **given), [STARTED]))
    # THEN every input is in the request, and the trigger parses it with those settings
    assert request["sweep"] == sweep
    parsed = parse_sweep_request(request)
    eta = sweep.get("early_stop", {}).get("eta", 0)
    assert (parsed.max_parallel, parsed.eta) == (sweep.get("max_parallel", 32), eta)
    assert (parsed.max_cost_usd, parsed.val_images) == (sweep.get("max_cost_usd"), sweep.get("val_images", 5000))
    assert len(parsed.sets) == (4 if "grid" in sweep else 12)


def test_the_workflow_runs_the_sweep_step_for_any_sweep_input_and_the_single_run_otherwise() -> None:
    steps = workflow()["jobs"]["retrain"]["steps"]
    (single,) = [s for s in steps if s.get("id") == "invoke"]
    sweep_inputs = ("sweep_lrs", "sweep_seeds", "sweep_random")
    assert sweep_step()["if"] == " || ".join(f"inputs.{name} != ''" for name in sweep_inputs)
    assert single["if"] == " && ".join(f"inputs.{name} == ''" for name in sweep_inputs)
    inputs = workflow()["on"]["workflow_dispatch"]["inputs"]
    assert len(inputs) <= MAX_DISPATCH_INPUTS
    # every sweep input reaches the step (the settings left out would silently be the trigger's defaults)
    passed = " ".join(str(value) for value in sweep_step()["env"].values())
    assert {name for name in inputs if name.startswith("sweep_")} == set(re.findall(r"inputs\.(sweep_\w+)", passed))


def finished_answer() -> dict[str, Any]:
    """What the trigger answers for a finished sweep: its summary rendered by trigger.sweeps (not a stand-in)."""
    request = {"action": "retrain", "request_id": "4242", "image": DIGEST, "params": {"epochs": 4},
               "sweep": {"grid": {"lr": [0.1, 0.2, 0.4]}, "early_stop": {"eta": 2}}}  # fmt: skip
    record = new_sweep_record(parse_sweep_request(request), DIGEST, None, "2026-12-07T00:00:00Z")
    step(record, {})
    ids = [run["run_id"] for run in record["runs"]]
    step(record, {ids[0]: Observed("succeeded", validation=(70, 100), version="v0"),
                  ids[1]: Observed("stopped-early", stopped_at_epoch=2, validation=(20, 100)),
                  ids[2]: Observed("succeeded", validation=(71, 100), version="v2")})  # fmt: skip
    gate = {"outcome": "promoted", "reason": "beats the champion"}
    step(record, {record["refit"]["run_id"]: Observed("succeeded", version="v-refit", gate=gate)})
    assert record["state"] == "finished"
    keys = ("request_id", "image_digest", "state", "runs", "ranking", "refit", "outcome", "summary_markdown")
    return {name: record[name] for name in keys} | {"sweep_key": "sweeps/4242.json", "remaining": 0}


def test_the_job_summary_shows_the_ranking_the_stopped_run_the_refit_the_gate_and_a_chart(tmp_path: Path) -> None:
    # GIVEN a trigger that answers "running", then "finished" with its rendered summary
    given = inputs_of(wait="true", sweep_lrs="0.1, 0.2, 0.4", sweep_early_stop_eta="2")
    step = sweep_step()
    step["run"] = step["run"].replace("--timeout-minutes 105", "--timeout-minutes 1 --poll-seconds 0")
    result = run_step(tmp_path, given, [STARTED, STARTED, finished_answer()], step)
    # WHEN the step waited for it THEN it succeeds and the job summary holds the sweep's whole story
    assert result.returncode == 0, result.stdout + result.stderr
    summary = (tmp_path / "summary").read_text()
    assert "### Sweep 4242: 3 sets on `sha256:cdcd" in summary
    assert "| 1 | 2 | `retrain-4242-" in summary and "| 71/100 (71.00 %) |" in summary  # ranked by validation
    assert "stopped-early at epoch 2 | 20/100 (20.00 %) |" in summary
    assert (
        "Refit of set 2 on the whole training set" in summary and "gate: **promoted** (beats the champion)" in summary
    )
    assert '```mermaid\nxychart-beta\ntitle "Validation accuracy by lr"' in summary
    assert '"0.2 #1 @e2"' in summary  # the stopped-early run's bar is labelled with its rung
