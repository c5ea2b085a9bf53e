"""Digest pinning: one task-definition revision of the base family per pushed image digest.

A run must train exactly the image that was pushed, so its task definition names the container image
as `<repository-uri>@<digest>`, never a tag. The revision is a copy of the family's latest ACTIVE
revision (which Terraform registers) with only the image replaced.

Finding the revision of a digest already seen: a small index object per digest,
`runs/_taskdefs/<digest>.json`, holding the revision ARN. ECS cannot search revisions by tag or image
without one DescribeTaskDefinition per revision, so the index makes a repeat O(1): one S3 read and one
DescribeTaskDefinition to check the revision is still ACTIVE and still names that image (a revision
deregistered by hand is replaced, not used). The index is written with If-None-Match (or If-Match on
the ETag read), so two concurrent first events for one digest agree on one revision: the loser uses
the winner's and its own copy stays unused.
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime
from typing import Any

from trigger.config import Config
from trigger.errors import TaskDefinitionError
from trigger.records import timestamp
from trigger.runs import TAG_PREFIX
from trigger.s3json import get_json, put_json

INDEX_PREFIX = "runs/_taskdefs/"


def index_key(digest: str) -> str:
    return f"{INDEX_PREFIX}{digest}.json"


def pinned_image(repository_uri: str, digest: str) -> str:
    return f"{repository_uri}@{digest}"


def accepted_fields(ecs: Any) -> frozenset[str]:
    """The request members RegisterTaskDefinition accepts, from botocore's model of the ECS API."""
    shape = ecs.meta.service_model.operation_model("RegisterTaskDefinition").input_shape
    return frozenset(shape.members)


def pinned_copy(
    base: Mapping[str, Any], container_name: str, image: str, digest: str, accepted: Iterable[str]
) -> dict[str, Any]:
    """A RegisterTaskDefinition request: `base` (a DescribeTaskDefinition result) with one image replaced.

    Only fields RegisterTaskDefinition accepts are copied (the description also carries revision,
    status, ARNs and timestamps); the revision is tagged with the digest for people reading the console.
    """
    accepted = frozenset(accepted) - {"tags"}
    request = {key: json.loads(json.dumps(value)) for key, value in base.items() if key in accepted}
    containers = request.get("containerDefinitions") or []
    matching = [c for c in containers if c.get("name") == container_name]
    if len(matching) != 1:
        names = [c.get("name") for c in containers]
        raise TaskDefinitionError(
            f"task definition {base.get('taskDefinitionArn')!r} has containers {names}; "
            f"expected exactly one named {container_name!r} (PUSHTRAIN_CONTAINER_NAME)"
        )
    matching[0]["image"] = image
    request["tags"] = [{"key": TAG_PREFIX + "image-digest", "value": digest}]
    return request


def container_image(task_definition: Mapping[str, Any], container_name: str) -> str | None:
    for container in task_definition.get("containerDefinitions") or []:
        if container.get("name") == container_name:
            return container.get("image")
    return None


def _read_index(s3: Any, bucket: str, digest: str) -> tuple[str, str] | None:
    """(revision ARN, ETag) of the index object for the digest, or None."""
    found = get_json(s3, bucket, index_key(digest))
    if found is None:
        return None
    index, etag = found
    arn = index.get("task_definition_arn") if isinstance(index, dict) else None
    if not isinstance(arn, str):
        raise TaskDefinitionError(f"s3://{bucket}/{index_key(digest)} has no task_definition_arn: {index!r:.200}")
    return arn, etag


def _write_index(
    s3: Any,
    bucket: str,
    digest: str,
    *,
    arn: str,
    base_arn: str,
    now: datetime,
    etag: str | None,
    sleep: Callable[[float], None] = time.sleep,
) -> bool:
    """Write the index (create, or replace the version we read); False when another writer won."""
    body = {
        "image_digest": digest,
        "task_definition_arn": arn,
        "base_task_definition_arn": base_arn,
        "registered_at": timestamp(now),
    }
    return put_json(s3, bucket, index_key(digest), body, etag=etag, sleep=sleep) is not None


def ensure_pinned_revision(
    ecs: Any, s3: Any, config: Config, digest: str, now: datetime, *, sleep: Callable[[float], None] = time.sleep
) -> tuple[str, bool]:
    """The ARN of the revision that runs `digest`, registering it on first sight: (arn, registered)."""
    image = pinned_image(config.repository_uri, digest)
    index = _read_index(s3, config.bucket, digest)
    if index is not None:
        described = ecs.describe_task_definition(taskDefinition=index[0])["taskDefinition"]
        if described.get("status") == "ACTIVE" and container_image(described, config.container_name) == image:
            return index[0], False

    base = ecs.describe_task_definition(taskDefinition=config.task_family)["taskDefinition"]
    request = pinned_copy(base, config.container_name, image, digest, accepted_fields(ecs))
    arn = ecs.register_task_definition(**request)["taskDefinition"]["taskDefinitionArn"]
    base_arn = str(base.get("taskDefinitionArn"))
    etag = index[1] if index else None
    if _write_index(s3, config.bucket, digest, arn=arn, base_arn=base_arn, now=now, etag=etag, sleep=sleep):
        return arn, True
    winner = _read_index(s3, config.bucket, digest)
    if winner is None:
        raise TaskDefinitionError(f"s3://{config.bucket}/{index_key(digest)} vanished after a conflicting write")
    return winner[0], True
