"""`python -m trainer <command>`: the container's entry point (ENTRYPOINT python -m trainer, CMD train).

    python -m trainer train [--model airbench --epochs 10 ...]   # settings also from TRAINER_* variables
    python -m trainer models list|show|champion|gate ...        # published models; retry a pending gate
    python -m trainer models promote VERSION | rollback         # move the champion by hand (who/why recorded)
    python -m trainer runs list|show ...                        # runs: state, attempts, timings, version, reason
    python -m trainer sweeps show ID                            # a sweep: ranking by validation, refit, gate
    python -m trainer torchrun [--setting value ...]            # one node of an AWS Batch multi-node job
    python -m trainer synth --out DIR                           # write a small generated dataset
    python -m trainer settings                                  # every setting, its variable and default

Exit codes (docs/contracts.md): 0 succeeded, 1 failed, 2 invalid configuration, 73 another trainer
holds the run, 75 interrupted.

The SIGTERM/SIGINT handlers are installed first thing, before torch is imported: Fargate Spot's warning
can arrive while the container is still starting, and the run must still end `interrupted` (exit 75).
"""

from __future__ import annotations

import importlib
import json
import logging
import os
import signal
import sys
import threading
from collections.abc import Mapping, Sequence
from types import FrameType
from typing import TYPE_CHECKING

from trainer.cli_common import (  # no torch: the signal handlers come first
    EXIT_INTERRUPTED,
    quiet_pipe,
    report_exit_code,
)

if TYPE_CHECKING:
    from trainer.config import ConfigError, TrainConfig

EXIT_INVALID_CONFIG = 2
USAGE = __doc__ or ""
STOP = threading.Event()  # set by SIGTERM or SIGINT; the run stops before its next batch

log = logging.getLogger("trainer")


def _on_stop_signal(signum: int, _frame: FrameType | None) -> None:
    log.warning("received %s: stopping before the next batch to checkpoint", signal.Signals(signum).name)
    STOP.set()


def install_stop_handlers() -> None:
    """SIGTERM and SIGINT set STOP instead of killing the process (only the main thread can install them)."""
    if threading.current_thread() is threading.main_thread():
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, _on_stop_signal)


def _setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("PUSHTRAIN_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def train(argv: Sequence[str]) -> int:
    """Resolve the configuration (exit 2 naming the bad setting), log it, then run (trainer.run.main)."""
    from trainer.config import ConfigError, load_config

    if any(arg in ("-h", "--help") for arg in argv):
        from trainer.train_help import format_help

        print(format_help())
        return 0
    try:
        config = load_config(argv, os.environ)
    except ConfigError as err:
        print(f"trainer: {err}", file=sys.stderr)
        record_invalid_config(os.environ, err)
        return EXIT_INVALID_CONFIG
    log.info("configuration %s", json.dumps(config.to_dict(), sort_keys=True))
    if STOP.is_set() and not _distributed():  # one of several ranks: its join tells the others (every rank 75)
        record_early_interrupt(config)
        return EXIT_INTERRUPTED
    return _run(config)


def _distributed() -> bool:
    """One of several processes under torchrun (validated in trainer.distributed)."""
    return os.environ.get("WORLD_SIZE", "1") != "1"


def record_early_interrupt(config: TrainConfig) -> None:
    """A signal came before training started: mark a queued (or new) run `interrupted`; best effort.

    A record in any other state is left alone: it belongs to an attempt that got further than this one.
    """
    from trainer import runstate
    from trainer.config import local_run_id
    from trainer.store import open_store

    run_id = config.run_id or local_run_id(config)
    try:
        store = open_store(config.store_uri)
        record = runstate.read_status(store, run_id)
        if record is not None and record.get("state") != "queued":
            log.warning("run %s is %s; a signal before training changes nothing", run_id, record.get("state"))
            return
        runstate.set_state(
            store,
            run_id,
            "interrupted",
            attempt=config.attempt,
            reason="stopped by a signal before training started; nothing to resume from",
            create=lambda: runstate.new_record(run_id, now=runstate.utc_now(), source="manual"),
        )
    except Exception as exc:  # noqa: BLE001 -- best effort: the exit code (75) is what the caller reports
        log.error("run %s: cannot record the interruption: %s: %s", run_id, type(exc).__name__, exc)  # noqa: TRY400


def record_invalid_config(environ: Mapping[str, str], err: ConfigError) -> None:
    """Best effort: mark the run `failed` with the reason, so a started task never leaves it `queued`.

    The configuration is invalid, so the run id, store and attempt are read raw from the
    environment; without a run id and a store there is no record to update. A failure here is
    logged and swallowed: the configuration error is what the caller reports (exit 2).
    """
    from trainer.config import is_valid_run_id

    run_id, store_uri = environ.get("TRAINER_RUN_ID", ""), environ.get("TRAINER_STORE_URI", "")
    if not run_id or not store_uri:
        return
    if not is_valid_run_id(run_id):
        log.error("run id %r cannot name a run record; recording nothing", run_id)
        return
    raw_attempt = environ.get("TRAINER_ATTEMPT", "")
    attempt = int(raw_attempt) if raw_attempt.isascii() and raw_attempt.isdecimal() and int(raw_attempt) >= 1 else None
    reason = str(err)
    try:
        from trainer import runstate
        from trainer.store import open_store

        store = open_store(store_uri)
        record = runstate.read_status(store, run_id)
        if record is not None and record.get("state") == "succeeded":
            log.warning("run %s already succeeded; not marking it failed for: %s", run_id, reason)
            return
        runstate.set_state(
            store,
            run_id,
            "failed",
            attempt=attempt,
            reason=reason,
            create=lambda: runstate.new_record(run_id, now=runstate.utc_now(), source="manual"),
        )
    except Exception as exc:  # noqa: BLE001 -- best effort: whatever breaks here must not mask the config error
        # the cause is the message; a traceback would bury the configuration error
        log.error("run %s: cannot record its failure in %s: %s: %s", run_id, store_uri, type(exc).__name__, exc)  # noqa: TRY400
        return
    log.info("run %s: failed (%s)", run_id, reason)


def _run(config: TrainConfig) -> int:
    from trainer import run
    from trainer.config import ConfigError

    try:
        if _distributed():
            from trainer import distributed

            return distributed.main(config, os.environ, stop=STOP)
        return run.main(config, stop=STOP)
    except ConfigError as err:  # settings that can only be checked against the data (batch_size vs. its size)
        print(f"trainer: {err}", file=sys.stderr)
        return EXIT_INVALID_CONFIG


# Commands that live in their own module (imported only when used): name -> module with main(argv).
SUBCOMMANDS = {
    "models": "trainer.registry_cli",
    "runs": "trainer.runs_cli",
    "sweeps": "trainer.sweeps_cli",
    "synth": "trainer.synth",
}
# `torchrun`: one node of an AWS Batch multi-node job (torchrun, then `train` per process); it takes the environment.


@quiet_pipe  # `python -m trainer … | head` ends quietly
def main(argv: Sequence[str] | None = None) -> int:
    args = list(sys.argv[1:] if argv is None else argv)
    if args[:1] == ["train"]:
        install_stop_handlers()  # first thing: see the module docstring
    _setup_logging()
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command == "train":
        code = train(rest)
        report_exit_code(code)  # under `python -m trainer torchrun`: rank 0's is the job's exit code
        return code
    if command == "torchrun":
        from trainer.torchrun import launch

        return launch(rest, os.environ)
    if command in SUBCOMMANDS:
        return int(importlib.import_module(SUBCOMMANDS[command]).main(rest))
    if command == "settings":
        from trainer.config import settings_help

        print(settings_help())
        return 0
    if command in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    print(f"trainer: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return EXIT_INVALID_CONFIG


if __name__ == "__main__":
    sys.exit(main())
