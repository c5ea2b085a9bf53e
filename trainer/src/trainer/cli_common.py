"""What every read-the-store command shares: the --store/--model-name options, one-line errors, quiet pipes."""

from __future__ import annotations

import argparse
import functools
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

if TYPE_CHECKING:
    from trainer.store import Store

# The console script trainer/pyproject.toml installs: the commands we print for people to paste use
# it, since the system python has no trainer package (`python -m trainer` works only inside the venv).
COMMAND = "pushtrain"
EXIT_OK = 0
EXIT_FAILED = 1  # not found, unreadable, refused, or the store could not be reached
EXIT_USAGE = 2
EXIT_INTERRUPTED = 75  # EX_TEMPFAIL, as trainer.run's (which imports torch): stopped, retry from the checkpoint

CREDENTIALS_HINT = (
    "no AWS credentials: set AWS_PROFILE (after `aws sso login` or `aws configure`), or "
    "AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and AWS_REGION"
)

F = TypeVar("F", bound=Callable[..., int])


def store_options() -> argparse.ArgumentParser:
    """A parent parser with --store, --model-name and --json, defaulting from TRAINER_* like `train`."""
    # The same constants TrainConfig takes its defaults from; a read-only command needs nothing else of it.
    from trainer.store import DEFAULT_STORE_URI
    from trainer.versions import DEFAULT_MODEL_NAME

    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        default=os.environ.get("TRAINER_STORE_URI", DEFAULT_STORE_URI),
        help="artifact store: s3://bucket[/prefix] or a local folder (default: $TRAINER_STORE_URI or %(default)s)",
    )
    common.add_argument(
        "--model-name",
        default=os.environ.get("TRAINER_MODEL_NAME", DEFAULT_MODEL_NAME),
        help="model name under models/ (default: $TRAINER_MODEL_NAME or %(default)s)",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    return common


class StoreMissing(Exception):  # noqa: N818 -- a usage error, named for what the user got wrong
    """The --store names nothing that holds runs or models (a typo, a missing folder, one level too deep)."""


STORE_ROOTS = ("runs/", "models/")


def require_store(store: Store) -> None:
    """StoreMissing, naming the store and the fix, unless it exists and holds `runs/` or `models/`.

    A wrong --store used to print "no runs in …" and exit 0, which reads as "nothing happened yet".
    """
    from trainer.store import LocalStore

    if isinstance(store, LocalStore) and not store.root.is_dir():
        raise StoreMissing(f"store {store.uri} does not exist (--store or TRAINER_STORE_URI: a folder or s3://bucket)")
    if any(store.has_any(prefix) for prefix in STORE_ROOTS):
        return
    nearby = _nearby_store(store.root) if isinstance(store, LocalStore) else None
    hint = f"; did you mean --store {nearby}?" if nearby else ""
    raise StoreMissing(f"store {store.uri} has neither runs/ nor models/: not a pushtrain store{hint}")


def _nearby_store(root: Path) -> Path | None:
    """A folder one or two levels up, or one down, that holds runs/ or models/: where a store probably is."""
    candidates = [root.parent, root.parent.parent]
    if root.is_dir():
        candidates += sorted(p for p in root.iterdir() if p.is_dir())
    return next((c for c in candidates if any((c / name).is_dir() for name in ("runs", "models"))), None)


def explain(exc: BaseException) -> str:
    """One line for an expected failure; credentials problems say how to provide them."""
    text = f"{exc}"
    if "credentials" in text.lower() and ("unable to locate" in text.lower() or "nocredentials" in text.lower()):
        return f"{text} ({CREDENTIALS_HINT})"
    return text


# The failures that are the world's, not the code's, by the module that defines them. A module that was
# never imported cannot have raised its error, so asking does not import it (the data and checkpoint
# modules load torch, which the `models` and `runs` commands never need).
EXPECTED_FAILURES = (
    ("trainer.data", "DatasetError"),
    ("trainer.checkpoint", "CheckpointError"),
    ("trainer.checkpoint", "DiskFullError"),
    ("trainer.runstate", "RecordFieldError"),
    ("trainer.versions", "PublishError"),
    ("trainer.gate", "GateError"),
    ("trainer.store", "StoreError"),
    ("botocore.exceptions", "BotoCoreError"),
    ("botocore.exceptions", "ClientError"),
)


def expected_failure(exc: BaseException) -> bool:
    """A failure that is the world's, not the code's (no data, no credentials, S3 refused): one line is enough."""
    for module_name, class_name in EXPECTED_FAILURES:
        module = sys.modules.get(module_name)
        expected = getattr(module, class_name, None) if module is not None else None
        if isinstance(expected, type) and isinstance(exc, expected):
            return True
    return False


def log_failure(log: logging.Logger, run_id: str, exc: BaseException) -> None:
    """Log why a run failed: one line for an expected failure, the traceback for a bug."""
    if expected_failure(exc):
        log.error("run %s failed: %s: %s", run_id, type(exc).__name__, explain(exc))
    else:
        log.error("run %s failed", run_id, exc_info=exc)


def quiet_pipe(command: F) -> F:
    """Run a printing command so that `| head` closing the pipe ends it quietly (exit 0, no traceback)."""

    @functools.wraps(command)
    def wrapper(*args: object, **kwargs: object) -> int:
        try:
            code = command(*args, **kwargs)
            sys.stdout.flush()
        except BrokenPipeError:
            # Python flushes stdout again at exit; point it at /dev/null so that flush cannot fail too.
            devnull = os.open(os.devnull, os.O_WRONLY)
            os.dup2(devnull, sys.stdout.fileno())
            return EXIT_OK
        return code

    return wrapper  # type: ignore[return-value]


# --- the workers' exit codes, through torchrun (trainer.torchrun.launch) ---------------------------
# torchrun's elastic agent exits 1 when any worker exits non-zero, and on SIGTERM it re-raises the signal
# after stopping the workers: either way the worker's own code (75 interrupted, 73 duplicate) is lost
# (pytorch.org/docs/stable/elastic/errors.html: worker failures reach the agent as ChildFailedError).
# So the launcher names a folder here and every worker leaves its exit code in it as `rank<RANK>`: the
# launcher exits with rank 0's, and reads the others to tell torchrun's own teardown from a stop.
EXIT_CODES_DIR = "PUSHTRAIN_EXIT_CODES_DIR"


def report_exit_code(code: int, environ: Mapping[str, str] | None = None) -> None:
    """A worker under `python -m trainer torchrun`: leave `code` for the launcher (nothing otherwise)."""
    environ = os.environ if environ is None else environ
    folder, rank = environ.get(EXIT_CODES_DIR), environ.get("RANK", "")
    if folder and rank.isascii() and rank.isdecimal():
        path = Path(folder) / f"rank{int(rank)}"
        partial = path.with_name(f"{path.name}.partial")
        try:  # whole or absent: a worker killed mid-write must not leave "7" of "75"
            partial.write_text(f"{code}\n", encoding="ascii")
            partial.replace(path)
        except OSError as exc:  # the launcher then reports torchrun's own code
            logging.getLogger("trainer").error("cannot leave exit code %d in %s: %s", code, path, exc)  # noqa: TRY400
