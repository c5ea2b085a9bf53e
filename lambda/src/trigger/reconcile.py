"""`python -m trigger.reconcile`: repair stuck runs and start the pushed images that never trained.

What the scheduled event does (trigger.flows.reconcile), from a laptop: every run record written
within the look-back that is not final is moved on (a start or Spot resume that never got its task,
a task whose stop event was lost, a task that no longer exists), and every tagged, runnable image
pushed within it that has no run record is started exactly as its push would have (the same run id,
so a late push event afterwards is a duplicate). ECR and ECS events are best effort. Reads the same
PUSHTRAIN_* variables as the Lambda function (the look-back is PUSHTRAIN_RECONCILE_LOOKBACK_DAYS)
and uses the caller's AWS credentials.

    python -m trigger.reconcile --dry-run              # what would be repaired or started
    python -m trigger.reconcile --since-hours 48       # repair / start, looking 48 hours back
    python -m trigger.reconcile --all                  # every run and image, however old
"""

from __future__ import annotations

import argparse
import sys
from datetime import timedelta

from botocore.exceptions import BotoCoreError, ClientError

from trigger.aws import default_clients
from trigger.config import load_config
from trigger.errors import TriggerError
from trigger.flows import reconcile
from trigger.log import log_decision


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trigger.reconcile", description=__doc__.split("\n\n")[0])
    window = parser.add_mutually_exclusive_group()
    window.add_argument(
        "--since-hours", type=float, help="only runs written and images pushed this recently (default: the look-back)"
    )
    window.add_argument("--all", action="store_true", help="every run and image, however old")
    parser.add_argument("--dry-run", action="store_true", help="list what would start; start nothing")
    args = parser.parse_args(argv)
    if args.since_hours is not None and args.since_hours <= 0:
        parser.error(f"--since-hours must be positive, got {args.since_hours}")

    try:
        config = load_config()
        since = None if args.all else timedelta(days=config.reconcile_lookback_days)
        if args.since_hours is not None:
            since = timedelta(hours=args.since_hours)
        outcomes = reconcile(default_clients(), config, since=since, dry_run=args.dry_run)
    except (TriggerError, BotoCoreError, ClientError) as error:  # no credentials, expired token, denied…
        log_decision("reconcile", "failed", error=f"{type(error).__name__}: {error}")
        return 1
    for outcome in outcomes:
        log_decision(**outcome.fields())
    started = sum(o.outcome in {"started", "retried-start"} for o in outcomes)
    log_decision("reconcile", "done", started=started, decisions=len(outcomes), dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
