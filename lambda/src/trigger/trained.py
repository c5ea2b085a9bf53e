"""The per-digest index: `digests/<digest>.json`, which digests a push has trained, kept beyond runs/.

A push trains a digest once: its run id is a hash of the digest, so a second push of it (a re-tag, an
ECR event delivered twice) finds the run record and starts nothing. But run records live under runs/,
which expires (Terraform var.checkpoint_expiration_days, 30 by default); a re-tag of a trained image
after that would train it again. This index outlives them (no lifecycle rule covers digests/): one small
object per digest, created (If-None-Match) when its push run is first started, naming the run.

    {"schema": 1, "image_digest": "sha256:…", "run_id": "push-…", "first_started_at": "…"}

A push whose digest is indexed and whose run record is gone was trained and has expired: it is skipped
(`already-trained`). While the record exists the start protocol decides, as before (duplicate, in flight).
The entry is written just before the record is created, so an entry younger than the least a record can
live (MIN_RECORD_DAYS) with no record beside it is a start in flight, or one whose invocation died between
the two writes: never "expired". The start protocol decides those too (exactly one task either way); only
an older entry can mean an expired record.
"""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import Any, NamedTuple

from trigger.errors import RecordConflictError
from trigger.records import parse_timestamp, timestamp
from trigger.runs import RunSpec
from trigger.s3json import Sleep, get_json, put_json

PREFIX = "digests/"
SCHEMA = 1
# runs/ objects live at least this long after their last write: terraform/variables.tf validates
# checkpoint_expiration_days >= 8, and S3 lifecycle expiration counts from an object's last PUT.
MIN_RECORD_DAYS = 8


class Remembered(NamedTuple):
    """An index entry: the run a push of the digest started, and when."""

    run_id: str
    first_started_at: datetime

    def could_have_expired(self, now: datetime) -> bool:
        """Whether the run's record can be gone by expiry (else a missing record was never written yet)."""
        return now - self.first_started_at >= timedelta(days=MIN_RECORD_DAYS)


def digest_key(digest: str) -> str:
    return f"{PREFIX}{digest}.json"


def remembered(s3: Any, bucket: str, digest: str) -> Remembered | None:
    """The run a push of `digest` started and when, or None when no push ever started one."""
    found = get_json(s3, bucket, digest_key(digest))
    if found is None:
        return None
    entry = found[0]
    run_id = entry.get("run_id") if isinstance(entry, dict) else None
    started = parse_timestamp(entry.get("first_started_at")) if isinstance(entry, dict) else None
    if not isinstance(run_id, str) or started is None or entry.get("image_digest") != digest:
        raise RecordConflictError(
            f"s3://{bucket}/{digest_key(digest)} is not an index entry for {digest}: {entry!r:.200}"
        )
    return Remembered(run_id, started)


def remember(s3: Any, bucket: str, spec: RunSpec, now: datetime, *, sleep: Sleep) -> None:
    """Index the digest as trained by `spec`'s run, unless it already is (the first push's entry stays)."""
    entry = {"schema": SCHEMA, "image_digest": spec.digest, "run_id": spec.run_id, "first_started_at": timestamp(now)}
    put_json(s3, bucket, digest_key(spec.digest), entry, etag=None, sleep=sleep)
