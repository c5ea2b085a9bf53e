"""Progress: one JSON line per epoch for log pipelines, a bar on a terminal."""

from __future__ import annotations

import io
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
