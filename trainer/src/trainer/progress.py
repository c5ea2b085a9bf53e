"""Progress reporting: a tqdm bar on a terminal, one JSON line per epoch otherwise (CloudWatch Logs).

progress = make_progress(config.progress, epochs=config.epochs)
fit(session, should_stop, on_epoch=progress.epoch_done, on_batch=progress.batch_done)
progress.close()
"""

from __future__ import annotations

import json
import sys
from typing import IO, Any, Protocol

from trainer.metrics import EpochResult


class Progress(Protocol):
    def batch_done(self, step: int, steps: int, loss: float) -> None: ...
    def epoch_done(self, result: EpochResult) -> None: ...
    def close(self) -> None: ...


def event_line(event: str, **fields: Any) -> str:
    """One JSON object on one line: {"event": ..., ...}."""
    return json.dumps({"event": event, **fields}, sort_keys=False, default=str)


class JsonLines:
    """One JSON line per finished epoch on `stream` (stdout by default): what a log pipeline can parse."""

    def __init__(self, epochs: int, stream: IO[str] | None = None) -> None:
        self.epochs = epochs
        self.stream = stream if stream is not None else sys.stdout

    def batch_done(self, step: int, steps: int, loss: float) -> None:
        return None

    def epoch_done(self, result: EpochResult) -> None:
        fields = {k: round(v, 5) if isinstance(v, float) else v for k, v in result.to_dict().items()}
        print(event_line("epoch", epochs=self.epochs, **fields), file=self.stream, flush=True)

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
        return JsonLines(epochs, stream)
    if mode == "none":
        return Silent()
    raise ValueError(f"unknown progress mode {mode!r} (auto, bar, json, none)")
