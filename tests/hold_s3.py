"""`python -m trainer` with a botocore hook that holds one S3 call until a test releases it.

    python tests/hold_s3.py HELD RELEASE STEP -- train --model cnn ...
    python tests/hold_s3.py HELD RELEASE key=models/cifar10/champion.json -- models rollback ...

The hook (botocore `before-parameter-build.s3.PutObject`, on boto3's default session, which the trainer's S3
store uses) holds the first PutObject of `runs/<run>/status.json` whose lease carries `"step": STEP` (the
trainer's fencing write before that irreversible step), or with `key=SUFFIX` the first PutObject of a key
ending in SUFFIX: it creates the file HELD, then waits until the file RELEASE exists, then lets the call go
on. The test changes the world in between (another trainer takes the lease, a gate moves the champion) and
sees what the held process does next.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path
from typing import Any

import boto3

HOLD_LIMIT_S = 300  # a test that never releases must not leave a trainer behind for ever
KEY_MARK = "key="  # STEP of this form holds a PutObject by its key instead


def install(held: Path, release: Path, step: str) -> None:
    boto3.setup_default_session()
    done = []

    def wanted(key: str, body: object) -> bool:
        if step.startswith(KEY_MARK):
            return key.endswith(step[len(KEY_MARK) :])
        if not key.endswith("/status.json") or not isinstance(body, bytes):
            return False
        return (json.loads(body).get("lease") or {}).get("step") == step

    def hold(params: dict[str, Any], **_: Any) -> None:
        key, body = str(params.get("Key", "")), params.get("Body")
        if done or not wanted(key, body):
            return
        done.append(key)
        held.write_text(key)
        deadline = time.monotonic() + HOLD_LIMIT_S
        while not release.exists() and time.monotonic() < deadline:
            time.sleep(0.05)

    boto3.DEFAULT_SESSION.events.register("before-parameter-build.s3.PutObject", hold)


if __name__ == "__main__":
    held_path, release_path, held_step, separator, *rest = sys.argv[1:]
    if separator != "--":
        raise SystemExit("usage: hold_s3.py HELD RELEASE STEP|key=SUFFIX -- <trainer arguments>")
    install(Path(held_path), Path(release_path), held_step)
    from trainer.__main__ import main

    sys.exit(main(rest))
