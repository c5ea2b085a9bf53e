"""Progress: one JSON line per epoch for log pipelines, a bar on a terminal."""

from __future__ import annotations

import io
import itertools
import json

from trainer.metrics import EpochResult
from trainer.progress import Bar, JsonLines, make_progress

RESULT = EpochResult(2, 1.2345678, 0.5, 1.1, 0.6, 512.3, 97.6, 4.2, 0.75)


def test_json_mode_writes_one_parseable_line_per_epoch() -> None:
    stream = io.StringIO()
    progress = make_progress("json", epochs=10, stream=stream)
    progress.batch_done(1, 48, 2.3)  # batches print nothing
    progress.epoch_done(RESULT)
    progress.close()
    lines = stream.getvalue().splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert event["event"] == "epoch"
    assert (event["epoch"], event["epochs"]) == (2, 10)
    assert event["test_accuracy"] == 0.6
    assert event["train_loss"] == 1.23457


def test_auto_mode_picks_json_lines_off_a_terminal() -> None:
    # under pytest stderr is captured, not a terminal
    assert isinstance(make_progress("auto", epochs=3), JsonLines)


def test_bar_mode_draws_a_bar_and_resumes_mid_epoch() -> None:
    stream = io.StringIO()
    progress = make_progress("bar", epochs=10, stream=stream, start_epoch=2)
    assert isinstance(progress, Bar)
    progress.batch_done(31, 48, 1.5)  # a resumed epoch starts at batch 31
    progress.epoch_done(RESULT)
    progress.close()
    assert "epoch 2/10" in stream.getvalue()
    assert "31/48" in stream.getvalue()


class FakeClock:
    """time.monotonic for the progress lines: the test moves it, nothing sleeps."""

    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


def test_json_mode_says_something_at_least_every_30_seconds_of_a_long_epoch() -> None:
    # GIVEN an epoch of 100 batches taking 7 s each (a CPU epoch of ~12 minutes)
    clock, stream = FakeClock(), io.StringIO()
    progress = JsonLines(epochs=10, stream=stream, start_epoch=2, clock=clock)
    for step in range(1, 101):
        clock.now += 7.0
        progress.batch_done(step, 100, 2.0 / step)
    progress.epoch_done(RESULT)
    events = [json.loads(line) for line in stream.getvalue().splitlines()]
    # THEN no 30 s pass without a line (a line comes when the next batch would be late), then the epoch's
    beats = [e for e in events if e["event"] == "progress"]
    assert events[-1]["event"] == "epoch" and len(events) == len(beats) + 1
    times = [1000.0] + [1000.0 + 7.0 * e["step"] for e in beats] + [1700.0]
    assert max(b - a for a, b in itertools.pairwise(times)) <= 30.0
    assert beats[0] == {"event": "progress", "epoch": 2, "epochs": 10, "step": 4, "steps": 100, "loss": 0.5,
                        "seconds": 28.0}  # fmt: skip
    # AND the next epoch's lines name it, timed from its own start
    clock.now += 30.0
    progress.batch_done(1, 100, 1.0)
    last = json.loads(stream.getvalue().splitlines()[-1])
    assert (last["epoch"], last["seconds"]) == (3, 30.0)


def test_json_mode_stays_quiet_when_epochs_are_short() -> None:
    clock, stream = FakeClock(), io.StringIO()
    progress = JsonLines(epochs=3, stream=stream, clock=clock)
    for step in range(1, 29):  # 28 one-second batches, then the epoch ends
        clock.now += 1.0
        progress.batch_done(step, 28, 1.0)
    assert stream.getvalue() == ""
