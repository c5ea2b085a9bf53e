"""`python -m trigger.reconcile`: start the pushed images that never trained.

ECR events are best effort, so a push can go unseen. This lists the repository's tagged images,
skips those whose run record says they started, and starts the rest exactly as a push would (the
same run id, so a late push event afterwards is a duplicate). Reads the same PUSHTRAIN_* variables
as the Lambda function and uses the caller's AWS credentials.

    python -m trigger.reconcile --dry-run              # what would start, pushed in the last 7 days
    python -m trigger.reconcile --since-hours 48       # start them
    python -m trigger.reconcile --all                  # every image, however old
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
    window.add_argument("--since-hours", type=float, default=24 * 7, help="only images pushed this recently")
    window.add_argument("--all", action="store_true", help="every image in the repository, however old")
    parser.add_argument("--dry-run", action="store_true", help="list what would start; start nothing")
    args = parser.parse_args(argv)
    if args.since_hours <= 0:
        parser.error(f"--since-hours must be positive, got {args.since_hours}")

    try:
        config = load_config()
        since = None if args.all else timedelta(hours=args.since_hours)
        outcomes = reconcile(default_clients(), config, since=since, dry_run=args.dry_run)
    except (TriggerError, BotoCoreError, ClientError) as error:  # no credentials, expired token, denied…
        log_decision("reconcile", "failed", error=f"{type(error).__name__}: {error}")
        return 1
    for outcome in outcomes:
        log_decision(**outcome.fields())
    log_decision("reconcile", "done", started=sum(o.outcome != "would-start" for o in outcomes), dry_run=args.dry_run)
    return 0


if __name__ == "__main__":
    sys.exit(main())
