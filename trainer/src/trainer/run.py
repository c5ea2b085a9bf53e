"""One training run, start to finish, surviving interruption: `python -m trainer train` lands here.

    python -m trainer train --model cnn --epochs 3 --data-uri ./data --store-uri ./store   # locally
    # in ECS: the same command, settings from TRAINER_* (docs/contracts.md), store s3://<bucket>

What a run does:

1. Read `runs/<run_id>/status.json`. A run that already succeeded (its version published) exits 0
   without training again; a run that published but died before saying so is finished (gate,
   status) without training again.
2. Mark the run `running` (counting the attempt), load the data, build the session, and resume
   from `runs/<run_id>/checkpoint.pt` when it exists (an unusable checkpoint fails the run).
3. Train epoch by epoch, storing a checkpoint after each. SIGTERM (Fargate Spot's two-minute
   warning) or SIGINT sets a flag; training stops before the next batch, stores a checkpoint
   of that exact position, marks the run `interrupted` and exits 75 (EX_TEMPFAIL). The next
   attempt with the same run id resumes there; a SIGKILL loses at most the current epoch.
4. Evaluate, publish a version (files first, manifest last), apply the quality gate, mark the run
   `succeeded` with the version, exit 0.

Any error marks the run `failed` with the reason and exits 1; nothing is published after an
error and the champion is only touched by a successful gate. Exit codes: docs/contracts.md.
"""

from __future__ import annotations

import hashlib
import json
import logging
import os
import signal
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

from trainer import runstate
from trainer.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from trainer.config import ConfigError, TrainConfig
from trainer.gate import GateDecision, GateError, promote_if_better
from trainer.progress import make_progress
from trainer.publish import TrainingOutcome, new_version_id, publish_version, read_manifest
from trainer.registry import versions_of_run
from trainer.store import Store, StoreError, open_store

if TYPE_CHECKING:
    from trainer.data import Cifar10Data
    from trainer.train import TrainingSession

log = logging.getLogger(__name__)

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: try again later, from the checkpoint
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# Settings that define what a local run trains; a run id derived from them makes a rerun of the
# same command resume (or find finished) the same run, as a duplicate push event does in AWS.
LOCAL_RUN_ID_FIELDS = (
    "model",
    "epochs",
    "batch_size",
    "lr",
    "momentum",
    "weight_decay",
    "label_smoothing",
    "warmup",
    "seed",
    "tta",
    "data_uri",
    "limit_train",
    "limit_test",
    "model_name",
)


class Interrupted(Exception):  # noqa: N818 -- a control-flow outcome, not an error
    """Training stopped on a signal; the checkpoint holds the exact position."""


def local_run_id(config: TrainConfig) -> str:
    """`local-` + a hash of what the run trains (used when no run id is configured)."""
    values = {name: getattr(config, name) for name in LOCAL_RUN_ID_FIELDS}
    digest = hashlib.sha256(json.dumps(values, sort_keys=True).encode()).hexdigest()
    return f"local-{digest[:20]}"


@contextmanager
def stop_on_signals() -> Iterator[threading.Event]:
    """An event set by SIGTERM or SIGINT while the block runs (handlers restored afterwards)."""
    stop = threading.Event()
    if threading.current_thread() is not threading.main_thread():
        log.warning("not on the main thread: SIGTERM/SIGINT will not checkpoint this run")
        yield stop
        return

    def handle(signum: int, _frame: FrameType | None) -> None:
        log.warning("received %s: stopping before the next batch to checkpoint", signal.Signals(signum).name)
        stop.set()

    previous = {sig: signal.signal(sig, handle) for sig in STOP_SIGNALS}
    try:
        yield stop
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


def _attempt_for(config: TrainConfig, record: dict[str, Any] | None) -> int:
    """The trigger numbers attempts; a run restarted by hand after a crash counts one more."""
    if record is None or record.get("state") == "queued":
        return config.attempt
    return max(config.attempt, int(record.get("attempt") or 0) + 1)


class Run:
    """The state machine of one attempt; see the module docstring."""

    def __init__(self, config: TrainConfig, store: Store, stop: threading.Event) -> None:
        self.config = config
        self.run_id = config.run_id
        self.store = store
        self.stop = stop
        self.started = time.monotonic()

    # --- status ---------------------------------------------------------------------------

    def _new_record(self) -> dict[str, Any]:
        params = {name: getattr(self.config, name) for name in ("model", "epochs", "lr", "batch_size", "seed")}
        return runstate.new_record(
            self.run_id,
            now=runstate.utc_now(),
            source="manual",
            attempt=self.config.attempt,
            image_digest=self.config.image_digest or None,
            git_sha=self.config.git_sha or None,
            params=params,
        )

    def set_state(self, state: str, reason: str | None = None, version: str | None = None) -> None:
        runstate.set_state(
            self.store,
            self.run_id,
            state,
            attempt=self.config.attempt,
            reason=reason,
            version=version,
            create=self._new_record,
        )
        log.info("run %s: %s%s", self.run_id, state, f" ({reason})" if reason else "")

    # --- the phases -----------------------------------------------------------------------

    def already_finished(self, record: dict[str, Any] | None) -> bool:
        """True (after finishing the bookkeeping) when this run's version is already published."""
        name = self.config.model_name
        version = record.get("version") if record and record.get("state") == "succeeded" else None
        if version and self.store.exists(f"models/{name}/{version}/manifest.json"):
            log.info("run %s already succeeded with version %s; nothing to do", self.run_id, version)
            return True
        published = versions_of_run(self.store, name, self.run_id)
        if not published:
            return False
        # Published, then stopped before the gate or the status (a crash in that window):
        # finish those two steps rather than train a second version.
        version = published[-1]
        manifest = read_manifest(self.store, name, version)
        log.info("run %s already published %s; finishing the gate and status", self.run_id, version)
        self.gate(version, float(manifest["metrics"]["accuracy"]))
        self.set_state("succeeded", version=version)
        return True

    def new_session(self, data: Cifar10Data) -> TrainingSession:
        """The training session (trainer.distributed.DistributedRun returns one process's share of it)."""
        from trainer.train import TrainingSession

        return TrainingSession(self.config, data)

    def train(self) -> TrainingOutcome:
        from trainer.data import load_dataset
        from trainer.resources import hardware_summary

        data = load_dataset(self.config)
        session = self.new_session(data)
        wall_before = 0.0
        payload = load_checkpoint(self.store, self.run_id, self.config, data.checksum)
        if payload is not None:
            try:
                session.load_state_dict(payload["state"])
            except (ValueError, KeyError, RuntimeError) as exc:
                raise CheckpointError(
                    f"checkpoint {self.store.uri_of(f'runs/{self.run_id}/checkpoint.pt')} does not fit this run: {exc}"
                ) from exc
            wall_before = float(payload.get("wall_seconds", 0.0))
            log.info(
                "run %s: resuming at epoch %d step %d of %d (checkpoint from %s)",
                self.run_id, session.epochs_done + 1, session.step, session.steps_per_epoch, payload.get("saved_at"),
            )  # fmt: skip

        def checkpoint() -> None:
            wall = wall_before + time.monotonic() - self.started
            save_checkpoint(
                self.store, self.run_id, session.state_dict(), self.config, data.checksum, wall_seconds=wall
            )

        epochs = self.config.epochs or 0
        progress = make_progress(self.config.progress, epochs, start_epoch=session.epochs_done + 1)
        try:
            while not session.finished:
                result = session.run_epoch(self.stop.is_set, progress.batch_done)
                if result is None or (self.stop.is_set() and not session.finished):
                    checkpoint()
                    raise Interrupted(
                        f"stopped by a signal at epoch {session.epochs_done + 1} step {session.step}/"
                        f"{session.steps_per_epoch}; checkpoint saved, resumable"
                    )
                progress.epoch_done(result)
                checkpoint()
        finally:
            progress.close()

        evaluation = session.evaluate()
        model_config = session.model_config()
        return TrainingOutcome(
            model=session.model,
            model_config={"name": model_config["model"], "num_classes": model_config["num_classes"]},
            classes=tuple(data.classes),
            evaluation=evaluation,
            history=tuple(session.history),
            dataset=data.describe(),
            hardware=hardware_summary(session.device),
            wall_seconds=wall_before + time.monotonic() - self.started,
            precision=session.precision,
        )

    def gate(self, version: str, accuracy: float) -> GateDecision:
        return promote_if_better(
            self.store,
            self.config.model_name,
            version,
            accuracy,
            floor=self.config.accuracy_floor,
            margin=self.config.champion_margin,
            run_id=self.run_id,
        )

    def execute(self) -> int:
        record = runstate.read_status(self.store, self.run_id)
        try:
            if self.already_finished(record):
                return EXIT_SUCCEEDED
        except (StoreError, GateError, ValueError, KeyError) as exc:
            # Leave the record as it is: the run may well have succeeded; a retry finishes the check.
            log.error("run %s: cannot tell whether it already finished: %s", self.run_id, exc)  # noqa: TRY400 -- the message is the cause; no traceback needed
            return EXIT_FAILED
        self.config = self.config.replace(attempt=_attempt_for(self.config, record))
        self.set_state("running")
        try:
            outcome = self.train()
            version = new_version_id(self.run_id, datetime.now(UTC))
            publish_version(
                self.store, self.config, run_id=self.run_id, version=version, outcome=outcome, now=datetime.now(UTC)
            )
            self.gate(version, outcome.evaluation.accuracy)
            self.set_state("succeeded", version=version)
        except Interrupted as stopped:
            self.set_state("interrupted", reason=str(stopped))
            return EXIT_INTERRUPTED
        except ConfigError as exc:
            self.set_state("failed", reason=str(exc))
            raise  # the CLI turns it into exit code 2
        except Exception as exc:  # every failure must end as a failed status, then exit 1
            log.exception("run %s failed", self.run_id)
            self.set_state("failed", reason=f"{type(exc).__name__}: {exc}")
            return EXIT_FAILED
        return EXIT_SUCCEEDED


def main(config: TrainConfig) -> int:
    """Run (or resume, or confirm) one training run; return the process exit code."""
    if not config.run_id:
        config = config.replace(run_id=local_run_id(config))
    if os.environ.get("WORLD_SIZE", "1") != "1":  # one of several processes (torchrun); validated there
        from trainer import distributed

        return distributed.main(config, os.environ)
    store = open_store(config.store_uri)
    with stop_on_signals() as stop:
        try:
            return Run(config, store, stop).execute()
        except (runstate.RunStateError, StoreError, OSError) as exc:
            # the status itself cannot be read or written: say so and fail, there is nothing to mark
            log.error("run %s: cannot record its status in %s: %s", config.run_id, store.uri, exc)  # noqa: TRY400 -- the cause is the message; no traceback needed
            return EXIT_FAILED
