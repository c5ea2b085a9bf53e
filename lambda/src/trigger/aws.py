"""The AWS clients the trigger uses: ecs, s3, ecr and batch, created once per Lambda container.

They are made on first use rather than at import, so importing the handler costs no client setup
(tests and `make demo` point them at moto, or pass their own). boto3 is imported here alone: it is
part of the Lambda runtime, never of our zip.
"""

from __future__ import annotations

import functools
from dataclasses import dataclass
from typing import Any

from trigger.errors import ConfigError

# Adaptive retry mode: botocore backs off on throttling (and rate-limits itself client-side); RunTask
# adds its own bounded retry on top (trigger.ecs), since a start must not be lost to a busy account.
# Attempts, counted as botocore counts them (boto3 guide "Retries",
# https://docs.aws.amazon.com/boto3/latest/guide/retries.html): left unset, standard and adaptive mode
# make 3 attempts and legacy mode 5, the first request included. `total_max_attempts` counts the first
# request too; a client Config's `max_attempts` counts only the retries (4 there made 5 attempts, measured
# with botocore 1.44: a 500 answered five times). So total_max_attempts = 4: one request, three retries.
# Time budget against the function's 60 s timeout:
# - throttling (fast answers): standard/adaptive back off at most 1, 2, 4 s before the three retries
#   (random x 2^(retry-1), capped at 20 s), 7 s in all; RunTask's 3 tries add at most 1 + 2 = 3 s of our
#   own, so one RunTask request waits at most 3 x 7 + 3 = 24 s;
# - a hung endpoint: one attempt may take 5 s to connect and 20 s to read, so two hung attempts of any
#   call reach the timeout. Lambda then ends the invocation without our `except` running: the start's
#   claim is not released and expires after PUSHTRAIN_CLAIM_SECONDS (180 s); Lambda retries an async
#   event after about 1 and 3 minutes, so its second retry may take the start over, and the scheduled
#   reconcile repairs anything later.
RETRIES = {"mode": "adaptive", "total_max_attempts": 4}
# The launch calls are not idempotent to the trigger: SubmitJob takes no client token, and a resent
# RunTask is deduplicated only by ECS's token (which emulators ignore). They make one attempt; after any
# error the start protocol looks for the launch by name before it gives up (trigger.starts).
NO_RETRIES = {"mode": "standard", "total_max_attempts": 1}
TIMEOUTS = {"connect_timeout": 5, "read_timeout": 20}  # seconds, per attempt


@dataclass(frozen=True)
class Clients:
    """One client per service the trigger calls (the IAM policy grants exactly their calls)."""

    ecs: Any
    s3: Any
    ecr: Any
    batch: Any = None  # multi-node runs (trigger.batch); only called when PUSHTRAIN_BATCH_JOB_QUEUE is set
    # The launch calls (RunTask, SubmitJob) on clients that make one attempt (NO_RETRIES); None: the
    # service's client above (tests that stub one client).
    ecs_launch: Any = None
    batch_launch: Any = None

    def launch_client(self, service: str) -> Any:
        """The client a launch call goes through: one that never resends it by itself."""
        return getattr(self, f"{service}_launch") or getattr(self, service)


CONDITIONAL_WRITE_MEMBERS = ("IfMatch", "IfNoneMatch")


def require_conditional_writes(s3: Any, botocore_version: str) -> None:
    """Fail at cold start unless this botocore can send S3 conditional writes (If-Match / If-None-Match).

    Exactly-once starts depend on them, and the runtime's bundled boto3 is not pinned by us: an old
    botocore would reject (or, worse, a hand-patched one drop) the parameters on every write.
    """
    members = s3.meta.service_model.operation_model("PutObject").input_shape.members
    missing = [name for name in CONDITIONAL_WRITE_MEMBERS if name not in members]
    if missing:
        raise ConfigError(
            f"botocore {botocore_version} has no S3 PutObject {' / '.join(missing)}: the trigger needs S3 "
            "conditional writes (botocore 1.35.x from late 2024 or newer); use a newer Lambda Python runtime"
        )


@functools.cache
def default_clients() -> Clients:
    """The container's clients, built once (credentials and region from the Lambda environment)."""
    import boto3
    import botocore

    return build_clients(boto3, botocore.__version__)


def build_clients(session: Any, botocore_version: str) -> Clients:
    """The trigger's clients, each with its retry configuration. `session` has boto3's `client(service,
    config=...)`: the boto3 module itself in Lambda, or a session pointed at an emulator in tests."""
    from botocore.config import Config as BotoConfig

    config = BotoConfig(retries=dict(RETRIES), **TIMEOUTS)  # type: ignore[arg-type] (botocore edits the dict)
    once = BotoConfig(retries=dict(NO_RETRIES), **TIMEOUTS)  # type: ignore[arg-type]
    s3 = session.client("s3", config=config)
    require_conditional_writes(s3, botocore_version)
    return Clients(
        ecs=session.client("ecs", config=config),
        s3=s3,
        ecr=session.client("ecr", config=config),
        batch=session.client("batch", config=config),
        ecs_launch=session.client("ecs", config=once),
        batch_launch=session.client("batch", config=once),
    )
