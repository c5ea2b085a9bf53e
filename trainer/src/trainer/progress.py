"""Progress reporting: a tqdm bar on a terminal, JSON lines otherwise (CloudWatch Logs).

In JSON mode a line per finished epoch, and between them a `progress` line (step, steps, loss, seconds
into the epoch) at least every PROGRESS_EVERY_S: a CPU epoch can take minutes, and a log with no line
for that long looks like a hung task.

progress = make_progress(config.progress, epochs=config.epochs)
fit(session, should_stop, on_epoch=progress.epoch_done, on_batch=progress.batch_done)
progress.close()
"""

from __future__ import annotations

import json
import sys
import time
from collections.abc import Callable
from typing import IO, Any, Protocol

from trainer.metrics import EpochResult


class Progress(Protocol):
    def batch_done(self, step: int, steps: int, loss: float) -> None: ...
    def epoch_done(self, result: EpochResult) -> None: ...
    def close(self) -> None: ...


def event_line(event: str, **fields: Any) -> str:
    """One JSON object on one line: {"event": ..., ...}."""
    return json.dumps({"event": event, **fields}, sort_keys=False, default=str)


PROGRESS_EVERY_S = 30.0  # the longest a JSON-mode log stays silent while batches are running


class JsonLines:
    """JSON lines on `stream` (stdout by default): one per finished epoch, and a `progress` line at least
    every PROGRESS_EVERY_S seconds of batches in between; what a log pipeline can parse."""

    def __init__(
        self,
        epochs: int,
        stream: IO[str] | None = None,
        *,
        start_epoch: int = 1,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self.epochs = epochs
        self.stream = stream if stream is not None else sys.stdout
        self.epoch = start_epoch
        self.clock = clock
        self._epoch_started = self._last_line = self._last_batch = clock()

    def batch_done(self, step: int, steps: int, loss: float) -> None:
        now = self.clock()
        batch_seconds, self._last_batch = now - self._last_batch, now
        # speak now if waiting for the next batch (as long as this one) would leave PROGRESS_EVERY_S silent
        if now - self._last_line + batch_seconds < PROGRESS_EVERY_S:
            return
        self._last_line = now
        line = event_line(
            "progress", epoch=self.epoch, epochs=self.epochs, step=step, steps=steps,
            loss=round(loss, 5), seconds=round(now - self._epoch_started, 1),
        )  # fmt: skip
        print(line, file=self.stream, flush=True)

    def epoch_done(self, result: EpochResult) -> None:
        fields = {k: round(v, 5) if isinstance(v, float) else v for k, v in result.to_dict().items()}
        print(event_line("epoch", epochs=self.epochs, **fields), file=self.stream, flush=True)
        self.epoch = result.epoch + 1
        self._epoch_started = self._last_line = self._last_batch = self.clock()

    def close(self) -> None:
        return None


class Bar:
    """A tqdm bar per epoch with the running loss, and a summary line when the epoch ends."""

    def __init__(self, epochs: int, stream: IO[str] | None = None) -> None:
        from tqdm import tqdm

        self._tqdm = tqdm
        self.epochs = epochs
        self.stream = stream if stream is not None else sys.stderr
        self.epoch = 1
        self._bar: Any = None

    def batch_done(self, step: int, steps: int, loss: float) -> None:
        if self._bar is None:
            self._bar = self._tqdm(
                total=steps, initial=step - 1, desc=f"epoch {self.epoch}/{self.epochs}", file=self.stream, unit="batch"
            )
        self._bar.update(1)
        self._bar.set_postfix(loss=f"{loss:.3f}", refresh=False)

    def epoch_done(self, result: EpochResult) -> None:
        if self._bar is not None:
            self._bar.set_postfix(test_acc=f"{100 * result.test_accuracy:.2f}%", img_s=f"{result.images_per_s:.0f}")
            self._bar.close()
            self._bar = None
        self.epoch = result.epoch + 1

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None


class Silent:
    def batch_done(self, step: int, steps: int, loss: float) -> None:
        return None

    def epoch_done(self, result: EpochResult) -> None:
        return None

    def close(self) -> None:
        return None


def make_progress(mode: str, epochs: int, stream: IO[str] | None = None, start_epoch: int = 1) -> Progress:
    """ "bar", "json", "none", or "auto": a bar when stderr is a terminal, else JSON lines on stdout."""
    if mode == "auto":
        mode = "bar" if sys.stderr.isatty() else "json"
    if mode == "bar":
        bar = Bar(epochs, stream)
        bar.epoch = start_epoch
        return bar
    if mode == "json":
        return JsonLines(epochs, stream, start_epoch=start_epoch)
    if mode == "none":
        return Silent()
    raise ValueError(f"unknown progress mode {mode!r} (auto, bar, json, none)")
