"""`make bench ARGS=trigger`'s handler measurement runs the real push flow to a started task.

It broke once silently: it answered AWS from a fixed script of calls, the trigger gained a read, and the bench
died with a Stubber traceback the next time someone ran it. These run its handler part with two events.
"""

from __future__ import annotations

import bench_trigger
import pytest


@pytest.fixture
def quick(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(bench_trigger, "EVENTS", 2)
    for name in ("AWS_DEFAULT_REGION", "AWS_REGION", "AWS_ACCESS_KEY_ID", "AWS_SECRET_ACCESS_KEY", "AWS_PROFILE"):
        monkeypatch.delenv(name, raising=False)  # the bench brings its own: nothing from the caller's environment


def test_the_handler_bench_starts_a_task_and_prints_its_ratio(quick: None, capsys: pytest.CaptureFixture[str]) -> None:
    bench_trigger.bench_handler_cpu()
    out = capsys.readouterr().out
    assert "first push (" in out
    assert "vs same calls alone" in out


def test_an_operation_without_an_answer_stops_the_bench_naming_it(quick: None, monkeypatch: pytest.MonkeyPatch) -> None:
    answers = {k: v for k, v in bench_trigger.ANSWERS.items() if k != "RunTask"}
    monkeypatch.setattr(bench_trigger, "ANSWERS", answers)
    with pytest.raises(SystemExit, match="RunTask"):
        bench_trigger.bench_handler_cpu()


def test_a_push_that_starts_nothing_is_not_measured(quick: None, monkeypatch: pytest.MonkeyPatch) -> None:
    # an image the trigger cannot read is refused before any start: the bench must say so, not time the refusal
    answers = {**bench_trigger.ANSWERS, "DescribeImages": {"imageDetails": []}}
    monkeypatch.setattr(bench_trigger, "ANSWERS", answers)
    with pytest.raises(SystemExit, match="started no task"):
        bench_trigger.bench_handler_cpu()
