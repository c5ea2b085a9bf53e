"""`ci.preview`: the same short training for a pull request and its base, and one sticky comment.

GIVEN results as the training steps export them, WHEN the comment step runs as the workflow runs it
(a recording fake `gh` on PATH), THEN one comment is created on the first push and edited on every
later one; the table compares the PR with its base and the chart is valid Mermaid. The training step
itself runs the real trainer CLI with a smaller recipe.
"""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path
from typing import Any

import pytest
from trainer.chart import mermaid_init

sys.path.insert(0, str(Path(__file__).parent))  # importlib mode: tests/ is not on sys.path
try:
    from fakebin import FakeBin  # tests/fakebin.py, where issue 11 moves it
except ModuleNotFoundError:
    from ci.fakebin import FakeBin
from ci import preview
from mermaid_grammar import mermaid_block, mermaid_xychart_errors

REPO = Path(__file__).resolve().parent.parent
PR_SHA, BASE_SHA = "a" * 40, "b" * 40
COMMENT = ["comment", "--repository", "octo/pushtrain", "--pr", "42", "--pr-sha", PR_SHA, "--base-sha", BASE_SHA]
LIST = ["api", "--paginate", "repos/octo/pushtrain/issues/42/comments"]


def result(accuracy: float, seconds: float = 60.0) -> dict[str, Any]:
    return {"ok": True, "accuracy": accuracy, "loss": 1.0 - accuracy, "wall_seconds": seconds,
            "images_per_s": 400.0, "test_accuracy_by_epoch": [accuracy / 2, accuracy * 0.9, accuracy],
            "parameters": 1234}  # fmt: skip


def comment(tmp_path: Path, fakes: FakeBin, **env: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "ci.preview", *COMMENT],
        env=fakes.env(PYTHONPATH=f"{REPO / 'scripts'}:{REPO / 'trainer' / 'src'}", **env),
        capture_output=True, text=True, check=False, timeout=60,
    )  # fmt: skip


def results_env(pr: dict[str, Any], base: dict[str, Any], champion: dict[str, Any] | None = None) -> dict[str, str]:
    return {"PREVIEW_PR": json.dumps(pr), "PREVIEW_BASE": json.dumps(base),
            "PREVIEW_CHAMPION": json.dumps(champion) if champion else ""}  # fmt: skip


def writes(fakes: FakeBin) -> list[dict[str, Any]]:
    return [c for c in fakes.all_calls() if c["name"] == "gh" and "--method" in c["args"]]


def test_first_push_creates_the_comment_and_later_pushes_edit_it(tmp_path: Path) -> None:
    # GIVEN a pull request without a preview comment
    fakes = FakeBin(tmp_path)
    fakes.add("gh", LIST, stdout="", times=1)  # the first push finds none
    fakes.add("gh", LIST, stdout="5551212\n")  # later pushes find the bot's comment
    env = results_env(result(0.62), result(0.58))
    # WHEN two pushes run the comment step
    first, second = comment(tmp_path, fakes, **env), comment(tmp_path, fakes, **env)
    # THEN the first creates one comment and the second edits it; nothing is ever posted twice
    assert first.returncode == 0 and second.returncode == 0, first.stdout + second.stdout
    assert [c["args"][2:4] for c in writes(fakes)] == [
        ["POST", "repos/octo/pushtrain/issues/42/comments"],
        ["PATCH", "repos/octo/pushtrain/issues/comments/5551212"],
    ]
    bodies = [json.loads(c["stdin"])["body"] for c in writes(fakes)]
    assert all(b.startswith(preview.MARKER + "\n") for b in bodies)
    lookup = fakes.calls("gh")[0]
    assert lookup[:3] == LIST and '"github-actions[bot]"' in lookup[-1] and preview.MARKER in lookup[-1]


def test_the_comment_compares_the_pr_with_its_base_and_shows_the_champion() -> None:
    text = preview.render(result(0.62, 50.0), result(0.58, 60.0), {"version": "v7", "accuracy": 0.93},
                          pr_sha=PR_SHA, base_sha=BASE_SHA)  # fmt: skip
    assert "| test accuracy | 62.00 % | 58.00 % | +4.00 pp |" in text
    assert "| wall time | 50 s | 60 s | -10 s |" in text
    assert "Deployed champion: `v7` at 93.00 %" in text
    assert mermaid_xychart_errors(mermaid_block(text)) == []
    # the report's own look (trainer.chart): its theme, each line named, the legend in words
    assert mermaid_init(2) in text
    assert '    line "this PR" [31.00, 55.80, 62.00]' in text and '    line "base" [29.00, 52.20, 58.00]' in text
    assert "Test accuracy (%) by epoch: this PR (blue), base (orange)." in text


def test_a_failed_base_still_shows_the_pr_and_says_why_the_base_failed() -> None:
    failed = {"ok": False, "error": "`trainer synth` exited 2:\nunknown command 'synth'"}
    text = preview.render(result(0.62), failed, None, pr_sha=PR_SHA, base_sha=BASE_SHA)
    assert "| test accuracy | 62.00 % | — | — |" in text
    assert "**The base run failed:**" in text and "unknown command 'synth'" in text
    assert "not readable from this workflow" in text


def test_a_failed_pr_run_is_commented_and_fails_the_job(tmp_path: Path) -> None:
    fakes = FakeBin(tmp_path)
    fakes.install("gh")
    run = comment(tmp_path, fakes, **results_env({"ok": False, "error": "loss is NaN"}, result(0.58)))
    assert run.returncode == 1
    (posted,) = writes(fakes)
    assert "**The this PR run failed:**" in json.loads(posted["stdin"])["body"]


def test_train_runs_the_real_trainer_cli_and_exports_one_line_of_json(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the preview recipe made smaller for the test (same commands, fewer images and epochs)
    monkeypatch.setattr(preview, "RECIPE", {**preview.RECIPE, "epochs": "1", "threads": "1"})
    monkeypatch.setattr(preview, "SYNTH", {"train": "256", "test": "64", "seed": "0"})
    output = tmp_path / "github_output"
    output.touch()
    monkeypatch.setenv("GITHUB_OUTPUT", str(output))
    # WHEN the train step runs against this checkout's trainer
    code = preview.main(["train", "--trainer-src", str(REPO / "trainer" / "src"), "--python", sys.executable,
                         "--output", "pr"])  # fmt: skip
    # THEN it exports the published version's numbers as one JSON line
    assert code == 0
    name, _, value = output.read_text().strip().partition("=")
    exported = json.loads(value)
    assert name == "pr" and exported["ok"] is True, exported
    assert 0.0 <= exported["accuracy"] <= 1.0 and len(exported["test_accuracy_by_epoch"]) == 1


def test_train_with_a_base_that_lacks_a_command_exports_the_failure_instead_of_failing(tmp_path: Path) -> None:
    # GIVEN a base whose trainer does not know `synth` (a Python that answers like it)
    python = tmp_path / "python"
    python.write_text("#!/bin/sh\necho \"trainer: unknown command 'synth'\" >&2\nexit 2\n")
    python.chmod(0o755)
    # WHEN the train step runs; THEN the result says which command failed, how, and with what message
    failed = preview.train(str(python), tmp_path / "base" / "trainer" / "src", timeout_s=60)
    assert failed == {"ok": False, "error": "`trainer synth` exited 2:\ntrainer: unknown command 'synth'\n"}


def test_the_comment_job_is_not_started_for_a_fork_or_dependabot() -> None:
    # A fork's (or Dependabot's) run gets a read-only token: the comment could never be posted
    import yaml

    job = yaml.safe_load((REPO / ".github" / "workflows" / "preview.yml").read_text())["jobs"]["comment"]
    assert "github.event.pull_request.head.repo.full_name == github.repository" in job["if"]
    assert "github.actor != 'dependabot[bot]'" in job["if"]
    assert job["permissions"]["pull-requests"] == "write"
