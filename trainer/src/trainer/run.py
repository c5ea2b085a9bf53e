"""One training run, start to finish, surviving interruption: `python -m trainer train` lands here.

    python -m trainer train --model cnn --epochs 3 --data-uri ./data --store-uri ./store   # locally
    # in ECS: the same command, settings from TRAINER_* (docs/contracts.md), store s3://<bucket>

What a run does:

1. Read `runs/<run_id>/status.json`. A run that already succeeded (its version published) exits 0
   without training again (running its gate first if that is still pending); a run that published
   but died before saying so is finished (gate, status) without training again.
2. Mark the run `running` (counting the attempt) and take its lease: another live trainer of the
   same run makes this one exit 73 having changed nothing. Load the data, build the session, and
   resume from the newest intact checkpoint (runs/<run_id>/checkpoint.pt or checkpoint.b.pt).
3. Train epoch by epoch (`train.fit`), storing a checkpoint and renewing the lease after each.
   SIGTERM (Fargate Spot's two-minute warning) or SIGINT sets a flag; training stops before the
   next batch, stores a checkpoint of that exact position, marks the run `interrupted` and exits 75
   (EX_TEMPFAIL). The next attempt resumes there; a SIGKILL loses at most the current epoch.
4. Evaluate and publish the run's one version (files first, manifest last; its id comes from the
   record's creation time, so every attempt names the same one). From the moment it is visible the
   run ends `succeeded`, exit 0: the gate's outcome is recorded with it, `pending` when the gate
   could not run (retried by the next start or `python -m trainer models gate`).

A run of a sweep (`sweep_id`) trains on the training set less its held-out validation images
(`val_images`), writes its validation counts under `sweeps/<sweep_id>/` and is published for comparison,
never promoted (only the sweep's refit is gated). With `early_stop_eta`, at each rung (trainer.asha) it
goes on only in the top 1/eta of the runs there so far; otherwise it checkpoints and ends
`stopped-early`, exit 0, publishing nothing: a final state, like succeeded and failed.

An error before the version is visible marks the run `failed` with the reason and exits 1 (a
non-finite loss included); nothing is published after an error and the champion is only touched
by a successful gate. Exit codes: docs/contracts.md.
"""

from __future__ import annotations

import contextlib
import json
import logging
import signal
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from types import FrameType
from typing import TYPE_CHECKING, Any

from trainer import asha, runstate
from trainer.checkpoint import CheckpointError, Checkpoints, checkpoint_key
from trainer.cli_common import COMMAND, explain, log_failure
from trainer.config import RUN_FIELDS, ConfigError, TrainConfig, local_run_id
from trainer.counts import Counts
from trainer.finish import after_success
from trainer.gate import GateError, GateOutcome, pending, promote_if_better, version_counts
from trainer.progress import make_progress
from trainer.publish import TrainingOutcome, publish_version
from trainer.registry import versions_of_run
from trainer.store import Store, StoreError, open_store
from trainer.versions import VersionExistsError, new_version_id, read_manifest

if TYPE_CHECKING:
    from trainer.data import Cifar10Data
    from trainer.metrics import EpochResult
    from trainer.progress import Progress
    from trainer.tracking import LiveRun
    from trainer.train import TrainingSession

log = logging.getLogger(__name__)

EXIT_SUCCEEDED = 0
EXIT_FAILED = 1
EXIT_DUPLICATE = 73  # EX_CANTCREAT: another live trainer holds this run's lease; this one did nothing
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL: try again later, from the checkpoint
EXIT_STOPPED_EARLY = 0  # the sweep's early stopping ended the run as designed: nothing to retry
STOPPED_EARLY = "stopped-early"  # the run record's final state for it (runstate.STATES)
GATE_PENDING = "pending"  # the run record's gate outcome when the gate could not run yet
STATUS_RETRIES = 4  # writes of the final status after publishing, with backoff: 0.5 + 1 + 2 s between them
STATUS_RETRY_BASE_S = 0.5
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)


class Interrupted(Exception):  # noqa: N818 -- a control-flow outcome, not an error
    """Training stopped on a signal; the checkpoint holds the exact position."""


class StoppedEarly(Exception):  # noqa: N818 -- a control-flow outcome, not an error
    """The sweep's early stopping (trainer.asha) ended the run at a rung; the checkpoint holds the position."""

    def __init__(self, message: str, rung: int) -> None:
        super().__init__(message)
        self.rung = rung


def final_key(sweep_id: str, run_id: str) -> str:
    """Where a sweep run's validation counts after its last epoch go (the trigger selects on them)."""
    return f"sweeps/{sweep_id}/final/{run_id}.json"


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
        self.owner = runstate.lease_owner()
        self.started_attempt = config.attempt  # as the trigger numbered it, before a manual restart counts one more
        self.created_at: object = None  # the record's creation time: it names the run's one version
        self.holds_lease = False  # set once this trainer took the run's lease (`running`)
        self.tracker: LiveRun | None = None  # the MLflow run while training, with MLFLOW_TRACKING_URI
        self.predecessor_ended = False  # the lease's previous holder provably stopped (runstate.TAKEOVER_ENDED)

    # --- status ---------------------------------------------------------------------------

    def _new_record(self) -> dict[str, Any]:
        params = {name: getattr(self.config, name) for name in RUN_FIELDS}
        return runstate.new_record(
            self.run_id,
            now=runstate.utc_now(),
            source="manual",
            attempt=self.config.attempt,
            image_digest=self.config.image_digest or None,
            git_sha=self.config.git_sha or None,
            params=params,
        )

    def set_state(
        self,
        state: str,
        reason: str | None = None,
        version: str | None = None,
        gate: dict[str, Any] | None = None,
        fields: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        extra: dict[str, Any] = {**(fields or {}), **({} if gate is None else {"gate": gate})}
        if state != "running" and not self.holds_lease:
            extra["lease"] = None  # finishing a published run's bookkeeping: whoever held the run is done
        record = runstate.set_state(
            self.store,
            self.run_id,
            state,
            attempt=self.config.attempt,
            reason=reason,
            version=version,
            create=self._new_record,
            lease=(self.owner, self.started_attempt) if state == "running" or self.holds_lease else None,
            extra=extra,
        )
        self.holds_lease = state == "running"
        log.info("run %s: %s%s", self.run_id, state, f" ({reason})" if reason else "")
        return record

    def heartbeat(self) -> None:
        runstate.heartbeat(self.store, self.run_id, self.owner, create=self._new_record)

    # --- the phases -----------------------------------------------------------------------

    def already_finished(self, record: dict[str, Any] | None) -> int | None:
        """The exit code when this run's version is already published (after finishing its bookkeeping)."""
        name = self.config.model_name
        if record is not None and record.get("state") == STOPPED_EARLY:
            log.info("run %s was stopped early by its sweep (%s); nothing to do", self.run_id, record.get("reason"))
            return EXIT_STOPPED_EARLY
        version = record.get("version") if record and record.get("state") == "succeeded" else None
        if version and self.store.exists(f"models/{name}/{version}/manifest.json"):
            gate = (record or {}).get("gate")
            if isinstance(gate, dict) and gate.get("outcome") == GATE_PENDING:
                log.info("run %s succeeded with %s, but its gate has not run yet: running it now", self.run_id, version)
                return self.finish(version)
            log.info(
                "run %s already succeeded with version %s; nothing to do (to train again, give a new run id: "
                "--run-id NEW or TRAINER_RUN_ID; a local run id is a hash of the settings, so changing one also does)",
                self.run_id, version,
            )  # fmt: skip
            return EXIT_SUCCEEDED
        published = versions_of_run(self.store, name, self.run_id)
        if not published:
            return None
        # Published, then stopped before the gate or the status (a crash in that window):
        # finish those two steps rather than train a second version.
        log.info("run %s already published %s; finishing the gate and status", self.run_id, published[-1])
        return self.finish(published[-1])

    def new_session(self, data: Cifar10Data) -> TrainingSession:
        """The training session (trainer.distributed.DistributedRun returns one process's share of it)."""
        from trainer.train import TrainingSession

        return TrainingSession(self.config, data)

    def save_checkpoint(self, checkpoints: Checkpoints, session: TrainingSession, wall_seconds: float) -> None:
        """Store the session's position (trainer.distributed.DistributedRun: the leader alone stores it)."""
        checkpoints.save(session.state_dict(), wall_seconds=wall_seconds)

    def load_data(self) -> Cifar10Data:
        """The dataset; Interrupted instead when a signal came while torch loaded (the CLI installs its
        handlers first): Spot's two minutes are no time for a download."""
        from trainer.data import load_dataset

        if self.stop.is_set():
            raise Interrupted(
                "stopped by a signal before training started (nothing trained yet): rerun the same command to resume"
            )
        data = load_dataset(self.config)
        self.heartbeat()  # a large download may take a while: say this trainer is alive before training
        return data

    def train(self) -> TrainingOutcome:
        from trainer.resources import hardware_summary
        from trainer.train import fit

        data = self.load_data()
        session = self.new_session(data)
        wall_before = 0.0
        checkpoints = Checkpoints(self.store, self.run_id, self.config, data.checksum)
        payload = checkpoints.load()
        if payload is not None:
            try:
                session.load_state_dict(payload["state"])
            except (ValueError, KeyError, RuntimeError) as exc:
                raise CheckpointError(
                    f"checkpoint {self.store.uri_of(checkpoint_key(self.run_id, checkpoints.slot))} does not fit "
                    f"this run: {exc}"
                ) from exc
            wall_before = float(payload.get("wall_seconds", 0.0))
            log.info(
                "run %s: resuming at epoch %d step %d of %d (checkpoint from %s)",
                self.run_id, session.epochs_done + 1, session.step, session.steps_per_epoch, payload.get("saved_at"),
            )  # fmt: skip

        saved_step = session.global_step if payload is not None else -1
        rungs = asha.rung_epochs(self.config.epochs, self.config.early_stop_eta) if self.config.early_stop_eta else ()
        stopped_early: list[StoppedEarly] = []

        def checkpoint() -> None:
            nonlocal saved_step
            self.save_checkpoint(checkpoints, session, wall_before + time.monotonic() - self.started)
            saved_step = session.global_step

        def epoch_done(result: EpochResult) -> None:
            self.report_epoch(progress, result)
            if result.epoch in rungs:  # measured and reported before the checkpoint: a crash between re-measures
                stop = self.rung(session, result.epoch)
                if stop is not None:
                    stopped_early.append(stop)
            checkpoint()
            self.heartbeat()

        progress = make_progress(self.config.progress, self.config.epochs, start_epoch=session.epochs_done + 1)
        try:
            finished = fit(
                session,
                lambda: self.stop.is_set() or bool(stopped_early),
                on_epoch=epoch_done,
                on_batch=progress.batch_done,
            )
        finally:
            progress.close()
        if stopped_early:
            raise stopped_early[0]
        if not finished:
            if saved_step != session.global_step:
                checkpoint()
            raise Interrupted(
                f"stopped by a signal at epoch {session.epochs_done + 1} step {session.step}/"
                f"{session.steps_per_epoch}; checkpoint saved: rerun the same command to resume"
            )

        evaluation = session.evaluate()
        validation = session.validate() if self.config.val_images else None
        if validation is not None and self.config.sweep_id:
            final = {"run_id": self.run_id, "epochs": session.epochs_done, **validation.to_dict()}
            self.store.put(final_key(self.config.sweep_id, self.run_id), json.dumps(final, sort_keys=True).encode())
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
            validation=validation,
            effective={"batch_size": session.batch_size, "lr": session.lr},
        )

    def rung(self, session: TrainingSession, epoch: int) -> StoppedEarly | None:
        """Report the validation counts at rung `epoch` (trainer.asha); a StoppedEarly when the run must end."""
        counts = session.validate()
        decision, reached = asha.report(
            self.store, self.config.sweep_id, epoch=epoch, run_id=self.run_id, counts=counts,
            eta=self.config.early_stop_eta,
        )  # fmt: skip
        log.info(
            "run %s: rung at epoch %d, validation %s, %d run(s) there so far: %s",
            self.run_id, epoch, counts, reached, decision,
        )  # fmt: skip
        if decision == asha.CONTINUE:
            return None
        return StoppedEarly(
            f"stopped early at the rung after epoch {epoch}: validation {counts.correct}/{counts.total} is not "
            f"in the top 1/{self.config.early_stop_eta} of the {reached} run(s) of sweep {self.config.sweep_id} there",
            rung=epoch,
        )

    def fence(self, step: str) -> None:
        """The fencing check before an irreversible step: a conditional write on the run record that holds only
        while the lease is still this trainer's (owner and attempt); LeaseLostError (exit 73) otherwise.

        A trainer finishing the bookkeeping of an already published run holds no lease and has nothing to fence.
        """
        if self.holds_lease:
            runstate.heartbeat(
                self.store, self.run_id, self.owner, create=self._new_record, attempt=self.started_attempt, step=step
            )

    def gate(self, version: str, counts: Counts | None) -> dict[str, Any]:
        """The gate's outcome for this run's published version, as the record's `gate` field (see run_gate).

        A sweep run is never promoted: its version is there for comparison; the sweep's refit is gated.
        """
        if self.config.sweep_id:
            reason = (
                f"a run of sweep {self.config.sweep_id}: published for comparison, never promoted "
                "(the sweep's refit of its best set is gated)"
            )
            floor, margin = self.config.accuracy_floor, self.config.champion_margin
            return GateOutcome(
                "kept", reason, version, counts, floor, margin, None, None, runstate.utc_now()
            ).to_record()
        self.fence("the gate")
        return run_gate(
            self.store,
            self.config.model_name,
            version,
            counts,
            floor=self.config.accuracy_floor,
            margin=self.config.champion_margin,
            run_id=self.run_id,
            fence=lambda: self.fence("the champion move"),
        )

    def version_id(self) -> str:
        """The run's one version: named by the record's creation time, the same in every attempt.

        The time must be a UTC time the run can have been created at (runstate.parse_created_at): a damaged
        record fails the run naming the field, instead of naming a version 1970… or 2099….
        """
        created = runstate.parse_created_at(self.created_at, where=self.store.uri_of(runstate.status_key(self.run_id)))
        return new_version_id(self.run_id, created)

    def finish(self, version: str, counts: Counts | None = None) -> int:
        """The version is visible: apply the gate, record `succeeded` with the gate's outcome, exit 0.

        A gate that cannot run (a damaged or unreachable champion) is recorded as pending and retried
        by the next start of this run or `python -m trainer models gate`; it never fails the run.
        Then, best effort and never changing the exit code: the run's report (with the gate's outcome,
        pending included), the success notification and MLflow (trainer.finish).
        """
        gate = self.gate(version, counts)
        self.record_success(version, gate)
        try:
            after_success(self.store, self.config, self.run_id, version, gate)
        except Exception as exc:  # noqa: BLE001 -- best effort: the run has succeeded already, whatever this says
            log.warning("run %s: report, notification or tracking failed: %s: %s", self.run_id, type(exc).__name__, exc)
        return EXIT_SUCCEEDED

    def record_success(self, version: str, gate: dict[str, Any]) -> None:
        """Record `succeeded` with the gate's outcome, retrying; a record that still fails is logged, not raised.

        The record also says what ran (`effective`: batch size and lr after the small-data rule, and the
        configured ones), from the version's manifest: the trainer never changes the trigger's `params`.
        """
        fields: dict[str, Any] = {}
        try:
            effective = read_manifest(self.store, self.config.model_name, version).get("effective")
        except (StoreError, ValueError) as exc:
            log.warning("run %s: cannot read what ran from the manifest of %s: %s", self.run_id, version, exc)
        else:
            if isinstance(effective, dict):
                fields["effective"] = effective
        for attempt in range(1, STATUS_RETRIES + 1):
            try:
                self.set_state("succeeded", version=version, gate=gate, fields=fields)
            except (runstate.LeaseLostError, runstate.LeaseHeldError):
                raise
            except (runstate.RunStateError, StoreError, OSError) as exc:
                if attempt == STATUS_RETRIES:
                    log.error(  # noqa: TRY400 -- the cause is the message; no traceback needed
                        "run %s: published %s but cannot record it (%s); the manifest holds the outcome, and the "
                        "next start of this run or `%s models gate %s` records it",
                        self.run_id, version, exc, COMMAND, version,
                    )  # fmt: skip
                    return
                delay = STATUS_RETRY_BASE_S * 2 ** (attempt - 1)
                log.warning("run %s: recording success failed (%s); retrying in %.1f s", self.run_id, exc, delay)
                time.sleep(delay)
            else:
                return

    def stopped(self, stopped: Interrupted | StoppedEarly) -> int:
        """Record a run that stopped before publishing (a checkpoint holds its position); its exit code."""
        if isinstance(stopped, StoppedEarly):
            self.set_state(STOPPED_EARLY, reason=str(stopped), fields={"stopped_at_epoch": stopped.rung})
            self.end_tracking("FINISHED")  # ASHA's decision: the run is over, with the epochs it has
            return EXIT_STOPPED_EARLY
        self.set_state("interrupted", reason=str(stopped))
        self.end_tracking("KILLED")  # the attempt that resumes continues the same MLflow run
        return EXIT_INTERRUPTED

    def start_tracking(self, record: dict[str, Any] | None) -> None:
        """With MLFLOW_TRACKING_URI: the MLflow run this attempt logs into, its id kept in the run record.

        A resumed attempt finds the id in the record and continues that MLflow run (trainer.tracking).
        """
        from trainer import tracking

        existing = (record or {}).get("mlflow_run_id")
        self.tracker = tracking.start_live_run(
            self.run_id, self.config.to_dict(), existing if isinstance(existing, str) else None
        )
        if self.tracker is None or self.tracker.run_id == existing:
            return
        mlflow_run_id = self.tracker.run_id
        runstate.update_status(
            self.store, self.run_id, lambda r: r.update(mlflow_run_id=mlflow_run_id), create=self._new_record
        )

    def report_epoch(self, progress: Progress, result: EpochResult) -> None:
        """An epoch ended: the progress line, and MLflow when tracking (trainer.tracking.LiveRun)."""
        progress.epoch_done(result)
        if self.tracker is not None:
            self.tracker.log_epoch(result)

    def end_tracking(self, status: str) -> None:
        if self.tracker is not None:
            self.tracker.end(status)

    def publish(self, version: str, outcome: TrainingOutcome) -> None:
        """Publish the run's version, fenced (see fence); leftovers are replaced only after a proven end."""
        try:
            publish_version(
                self.store,
                self.config,
                run_id=self.run_id,
                version=version,
                outcome=outcome,
                now=datetime.now(UTC),
                replace_leftovers=self.predecessor_ended,
                fence=self.fence,
            )
        except VersionExistsError as exc:
            if self.predecessor_ended or self.store.exists(f"models/{self.config.model_name}/{version}/manifest.json"):
                raise
            # Files of the trainer this one took over from by an aged lease: it may be stalled, not gone, so they
            # are not replaced; the next attempt of the run (whose start proves both stopped) replaces them.
            raise Interrupted(f"not replacing files of the trainer whose aged lease this one took over: {exc}") from exc

    def execute(self) -> int:
        record = runstate.read_status(self.store, self.run_id)
        try:
            finished = self.already_finished(record)
        except (StoreError, ValueError, KeyError) as exc:
            # Leave the record as it is: the run may well have succeeded; a retry finishes the check.
            log.error("run %s: cannot tell whether it already finished: %s", self.run_id, exc)  # noqa: TRY400 -- the message is the cause; no traceback needed
            return EXIT_FAILED
        if finished is not None:
            return finished
        self.config = self.config.replace(attempt=_attempt_for(self.config, record))
        running = self.set_state("running")
        self.created_at = running.get("created_at")  # as written: version_id checks it
        lease = running.get("lease") if isinstance(running.get("lease"), dict) else {}
        self.predecessor_ended = lease.get("took_over", "free") in runstate.TAKEOVER_ENDED
        self.start_tracking(record)
        version = None
        try:
            version = self.version_id()  # a damaged created_at fails the run below, before any training
            outcome = self.train()
            self.publish(version, outcome)
        except (Interrupted, StoppedEarly) as stopped:
            return self.stopped(stopped)
        except (runstate.LeaseLostError, runstate.LeaseHeldError):
            raise
        except ConfigError as exc:
            self.set_state("failed", reason=str(exc))
            raise  # the CLI turns it into exit code 2
        except Exception as exc:  # noqa: BLE001 -- every failure ends as a failed status, then exit 1 (log_failure keeps a bug's traceback)
            if version and self.store.exists(f"models/{self.config.model_name}/{version}/manifest.json"):
                log.warning("run %s: %s after its version %s became visible", self.run_id, exc, version)
                return self.finish(version)  # visible: the run succeeded, whatever broke after the commit point
            log_failure(log, self.run_id, exc)  # one line for missing data, credentials, S3; a traceback for bugs
            self.set_state("failed", reason=f"{type(exc).__name__}: {exc}")
            self.end_tracking("FAILED")
            return EXIT_FAILED
        return self.finish(version, outcome.evaluation.counts)


def run_gate(
    store: Store,
    model_name: str,
    version: str,
    counts: Counts | None,
    *,
    floor: str,
    margin: str,
    run_id: str | None,
    fence: Callable[[], None] | None = None,
) -> dict[str, Any]:
    """Apply the quality gate to a published version; its outcome (trainer.gate.GateOutcome) as the run record's `gate`.

    counts: the version's test counts as just evaluated, or None to read them from its published (checked)
    metrics. A gate that cannot run (a damaged or unreachable champion, unreadable metrics) is returned as
    `pending` with the reason, for a later retry; it is never raised.
    """
    try:
        if counts is None:
            counts = version_counts(store, model_name, version)
        decision = promote_if_better(
            store, model_name, version, counts, floor=floor, margin=margin, run_id=run_id, fence=fence
        )
    except (GateError, StoreError, ValueError, KeyError, TypeError) as exc:
        reason = f"the gate could not run: {type(exc).__name__}: {exc}"
        log.error("gate for %s is pending: %s", version, reason)  # noqa: TRY400 -- the cause is the message
        return pending(version, counts, reason, floor=floor, margin=margin).to_record()
    return decision.to_record()


def main(config: TrainConfig, stop: threading.Event | None = None) -> int:
    """Run (or resume, or confirm) one training run; return the process exit code.

    stop: the event the process's signal handlers set (installed first thing by the CLI); without
    one, handlers are installed for the duration of the run.
    """
    if not config.run_id:
        config = config.replace(run_id=local_run_id(config))
    store = open_store(config.store_uri)
    with contextlib.ExitStack() as stack:
        if stop is None:
            stop = stack.enter_context(stop_on_signals())
        try:
            return Run(config, store, stop).execute()
        except (runstate.LeaseHeldError, runstate.LeaseLostError) as exc:
            log.error("run %s: %s", config.run_id, exc)  # noqa: TRY400 -- the cause is the message; no traceback needed
            return EXIT_DUPLICATE
        except (runstate.RunStateError, StoreError, OSError) as exc:
            # the status itself cannot be read or written: say so and fail, there is nothing to mark
            log.error("run %s: cannot record its status in %s: %s", config.run_id, store.uri, explain(exc))  # noqa: TRY400 -- the cause is the message; no traceback needed
            return EXIT_FAILED
    return EXIT_FAILED  # not reached: the block returns
