"""JSON objects in the artifacts bucket, written only under a condition: the trigger's one S3 module.

The run records (`records`) and the digest index (`taskdef`) are both small JSON objects that
several writers race for, so every write here is conditional:

- create-only: `If-None-Match: *` (a second creator loses);
- compare-and-swap: `If-Match: <ETag read>` (a writer that read an older version loses).

S3 answers a lost race with 412 PreconditionFailed, or with 409 ConditionalRequestConflict while the
other conditional write is still in flight, when its outcome is not known yet: then we back off,
look again, and either see that the other writer won or try again (bounded).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from datetime import datetime, timedelta
from email.utils import parsedate_to_datetime
from typing import Any

from botocore.exceptions import ClientError

from trigger.errors import RecordConflictError, StoreAccessError

PRECONDITION_FAILED = frozenset({"PreconditionFailed", "412"})
CONDITIONAL_CONFLICT = frozenset({"ConditionalRequestConflict", "409"})
NOT_FOUND = frozenset({"NoSuchKey", "404", "NotFound"})  # NotFound: what a HEAD would say
WRITE_TRIES = 4  # conditional writes answered 409 before giving up
UPDATE_TRIES = 4  # compare-and-swap rounds lost (412/409) before giving up
CONFLICT_BACKOFF_S = 0.2  # seconds, doubled per try: 0.2 + 0.4 + 0.8 at most

Sleep = Callable[[float], None]
Document = dict[str, Any]


class Found(tuple[Any, str]):
    """(parsed JSON, ETag) of an object as read, and its age by S3's own clock (`age`).

    The age is the response's `Date` minus the object's `LastModified`, both S3's: a claim's age judged
    by them is the same for every reader, whatever its own clock says (a reconcile run by hand on a fast
    laptop must not take over a live claim). None when S3 gave no dates (a stubbed response).
    """

    age: timedelta | None = None


def s3_age(response: dict[str, Any]) -> timedelta | None:
    """Date - LastModified of a GetObject response, never negative; None without both."""
    modified = response.get("LastModified")
    date = (response.get("ResponseMetadata") or {}).get("HTTPHeaders", {}).get("date")
    if not isinstance(modified, datetime) or not isinstance(date, str):
        return None
    try:
        said = parsedate_to_datetime(date)
    except (TypeError, ValueError):
        return None
    return max(said - modified, timedelta(0))


def error_code(error: ClientError) -> str:
    """The code of an AWS error ("PreconditionFailed", "409", "ThrottlingException", ...)."""
    return str(error.response.get("Error", {}).get("Code", ""))


def encode(document: Any) -> bytes:
    return json.dumps(document, indent=2, sort_keys=True).encode()


def get_json(s3: Any, bucket: str, key: str) -> Found | None:
    """(parsed JSON, ETag) of an object, or None when it does not exist.

    S3 answers a missing key with 403, not 404, to a caller without s3:ListBucket on the bucket; the
    trigger needs 404 to tell "never started" from "forbidden", so a 403 raises naming the grant.
    """
    try:
        response = s3.get_object(Bucket=bucket, Key=key)
    except ClientError as error:
        code = error_code(error)
        if code in NOT_FOUND:
            return None
        if code in {"AccessDenied", "403"}:
            raise StoreAccessError(
                f"s3:GetObject on s3://{bucket}/{key} was denied; if the key does not exist, S3 says so only "
                "to a role that also has s3:ListBucket on the bucket (with no s3:prefix condition)"
            ) from error
        raise
    found = Found((json.loads(response["Body"].read()), str(response["ETag"])))
    found.age = s3_age(response)
    return found


def put_json(
    s3: Any, bucket: str, key: str, document: Any, *, etag: str | None, sleep: Sleep = time.sleep
) -> str | None:
    """Write `document` if the object is still as we saw it: absent (`etag` None) or at `etag`.

    Returns the new ETag, or None when another writer won. A 409 backs off and reads: an object
    whose ETag is no longer the one we expected means the other write landed (we lost); otherwise
    the write is tried again, at most WRITE_TRIES times.
    """
    condition = {"IfMatch": etag} if etag else {"IfNoneMatch": "*"}
    for attempt in range(WRITE_TRIES):
        try:
            response = s3.put_object(
                Bucket=bucket, Key=key, Body=encode(document), ContentType="application/json", **condition
            )
        except ClientError as error:
            code = error_code(error)
            if code in PRECONDITION_FAILED:
                return None
            if code not in CONDITIONAL_CONFLICT:
                raise
            sleep(CONFLICT_BACKOFF_S * 2**attempt)
            now_there = get_json(s3, bucket, key)
            if (now_there[1] if now_there else None) != etag:
                return None
            continue
        return str(response["ETag"])
    writes = "creates" if etag is None else "writes"
    raise RecordConflictError(f"s3://{bucket}/{key}: {WRITE_TRIES} {writes} answered 409 ConditionalRequestConflict")


def update_json(
    s3: Any,
    bucket: str,
    key: str,
    change: Callable[[Document], Document | None],
    *,
    read: Callable[[], Found | None],
    known: Found | None = None,
    sleep: Sleep = time.sleep,
) -> Found | None:
    """Compare-and-swap: apply `change` to the current document and write it with If-Match.

    `change` gets a copy and returns the new document, or None to leave it as it is. On a lost race
    the document is read again (`read`) and `change` applied to the fresh copy. Returns what was
    written and its new ETag, or None when `change` left the document as it was.
    """
    current = known
    for _ in range(UPDATE_TRIES):
        if current is None:
            current = read()
            if current is None:
                raise RecordConflictError(f"s3://{bucket}/{key} disappeared while being updated")
        document, etag = current
        changed = change(json.loads(json.dumps(document)))
        if changed is None:
            return None
        written = put_json(s3, bucket, key, changed, etag=etag, sleep=sleep)
        if written is not None:
            return changed, written
        current = None  # someone else wrote in between: read again and re-apply
    raise RecordConflictError(f"s3://{bucket}/{key} changed {UPDATE_TRIES} times while being updated")
