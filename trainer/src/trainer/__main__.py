"""`python -m trainer <command>`: the container's entry point (ENTRYPOINT python -m trainer, CMD train).

    python -m trainer train [--model airbench --epochs 10 ...]   # settings also from TRAINER_* variables
    python -m trainer models list|show|champion ...             # look at published models in a store
    python -m trainer torchrun [--setting value ...]            # one node of an AWS Batch multi-node job
    python -m trainer synth --out DIR                           # write a small generated dataset
    python -m trainer settings                                  # every setting, its variable and default

Exit codes (docs/contracts.md): 0 succeeded, 1 failed, 2 invalid configuration, 75 interrupted.
"""

from __future__ import annotations

import json
import logging
import os
import sys
from collections.abc import Mapping, Sequence

from trainer.config import ConfigError, TrainConfig, load_config, settings_help

EXIT_INVALID_CONFIG = 2
USAGE = __doc__ or ""

log = logging.getLogger("trainer")


def _setup_logging() -> None:
    logging.basicConfig(
        level=os.environ.get("PUSHTRAIN_LOG_LEVEL", "INFO").upper(),
        format="%(asctime)s %(levelname)s %(name)s: %(message)s",
        stream=sys.stderr,
    )


def train(argv: Sequence[str]) -> int:
    """Resolve the configuration (exit 2 naming the bad setting), log it, then run (trainer.run.main)."""
    if any(arg in ("-h", "--help") for arg in argv):
        print(f"python -m trainer train [--setting value ...]; settings (flag, variable, default):\n{settings_help()}")
        return 0
    try:
        config = load_config(argv, os.environ)
    except ConfigError as err:
        print(f"trainer: {err}", file=sys.stderr)
        record_invalid_config(os.environ, err)
        return EXIT_INVALID_CONFIG
    log.info("configuration %s", json.dumps(config.to_dict(), sort_keys=True))
    return _run(config)


def record_invalid_config(environ: Mapping[str, str], err: ConfigError) -> None:
    """Best effort: mark the run `failed` with the reason, so a started task never leaves it `queued`.

    The configuration is invalid, so the run id, store and attempt are read raw from the
    environment; without a run id and a store there is no record to update. A failure here is
    logged and swallowed: the configuration error is what the caller reports (exit 2).
    """
    run_id, store_uri = environ.get("TRAINER_RUN_ID", ""), environ.get("TRAINER_STORE_URI", "")
    if not run_id or not store_uri:
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

    try:
        return run.main(config)
    except ConfigError as err:  # settings that can only be checked against the data (batch_size vs. its size)
        print(f"trainer: {err}", file=sys.stderr)
        return EXIT_INVALID_CONFIG


def main(argv: Sequence[str] | None = None) -> int:  # noqa: PLR0911 -- one return per command
    args = list(sys.argv[1:] if argv is None else argv)
    _setup_logging()
    command, rest = (args[0], args[1:]) if args else ("", [])
    if command == "train":
        return train(rest)
    if command == "models":
        from trainer import registry_cli

        return registry_cli.main(rest)
    if command == "torchrun":  # one node of an AWS Batch multi-node job: torchrun, then `train` per process
        from trainer import distributed

        return distributed.launch(rest, os.environ)
    if command == "synth":
        from trainer import synth

        return synth.main(rest)
    if command == "settings":
        print(settings_help())
        return 0
    if command in ("-h", "--help", "help"):
        print(USAGE)
        return 0
    print(f"trainer: unknown command {command!r}\n{USAGE}", file=sys.stderr)
    return EXIT_INVALID_CONFIG


if __name__ == "__main__":
    sys.exit(main())
