"""Digest pinning: one task-definition revision per pushed image digest and base revision.

A run must train exactly the image that was pushed, so its task definition names the container image
as `<repository-uri>@<digest>`, never a tag. The revision is a copy of the family's latest ACTIVE
revision (which Terraform registers) with only the image replaced; when Terraform registers a new
base, the digest gets a new copy (the index remembers which base its copy was made from).

Finding the revision of a digest already seen: a small index object per family and digest,
`runs/_taskdefs/<family>/<digest>.json`, holding the revision ARN and the base it copies (the Fargate
family and the GPU family each pin their own copies; the family in the key keeps them apart). Index
objects of the earlier layout, `runs/_taskdefs/<digest>.json`, are no longer read: the first start of
such a digest registers one more revision, and the old object expires with runs/. ECS cannot search
revisions by tag or image without one DescribeTaskDefinition per revision, so the index makes a repeat
cheap: one DescribeTaskDefinition of the base, one S3 read, one DescribeTaskDefinition to check the
revision is still ACTIVE and still names that image (a revision deregistered by hand is replaced).
Registering is claimed in the index first (If-None-Match, or If-Match on the ETag read), so
concurrent starts for one digest register one revision between them: no orphan revisions.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import time
from collections.abc import Callable, Iterable, Mapping
from datetime import datetime, timedelta
from typing import Any

from trigger.config import Config
from trigger.errors import StartInFlightError, TaskDefinitionError
from trigger.records import parse_timestamp, timestamp
from trigger.runs import TAG_PREFIX
from trigger.s3json import get_json, put_json

INDEX_PREFIX = "runs/_taskdefs/"
INDEX_ROUNDS = 12  # looks at the index before giving up with a retryable error
INDEX_POLL_S = 0.5  # seconds between looks while another invocation registers: ~5 s in all


def index_key(family: str, digest: str) -> str:
    return f"{INDEX_PREFIX}{family}/{digest}.json"


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


def fingerprint(request: Mapping[str, Any], container_name: str) -> str:
    """What a pinned copy takes from its base: the request without the image and tags, hashed.

    The family's latest revision may be the base Terraform registered or a pinned copy of another
    digest (made from it); both give the same fingerprint, so only a real change of the base
    (memory, environment, roles, …) makes a digest's copy stale.
    """
    copy = {key: value for key, value in request.items() if key != "tags"}
    copy["containerDefinitions"] = [
        {**c, "image": ""} if c.get("name") == container_name else c for c in copy.get("containerDefinitions") or []
    ]
    return hashlib.sha256(json.dumps(copy, sort_keys=True, separators=(",", ":")).encode()).hexdigest()


def container_image(task_definition: Mapping[str, Any], container_name: str) -> str | None:
    for container in task_definition.get("containerDefinitions") or []:
        if container.get("name") == container_name:
            return container.get("image")
    return None


def _read_index(s3: Any, bucket: str, key: str) -> tuple[dict[str, Any], str] | None:
    """(index document, ETag) at `key`, or None."""
    found = get_json(s3, bucket, key)
    if found is None:
        return None
    index, etag = found
    if not isinstance(index, dict):
        raise TaskDefinitionError(f"s3://{bucket}/{key} is not a JSON object: {index!r:.200}")
    return index, etag


def _usable(ecs: Any, arn: object, image: str, container_name: str) -> bool:
    """Whether the indexed revision is still ACTIVE and still runs `image` (not deregistered by hand)."""
    if not isinstance(arn, str):
        return False
    described = ecs.describe_task_definition(taskDefinition=arn)["taskDefinition"]
    return described.get("status") == "ACTIVE" and container_image(described, container_name) == image


def ensure_pinned_revision(
    ecs: Any,
    s3: Any,
    config: Config,
    digest: str,
    now: datetime,
    *,
    family: str | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> tuple[str, bool]:
    """The ARN of the revision of `family` (default: the Fargate trainer family) that runs `digest` on
    the family's current base revision: (arn, registered).

    The index holds the fingerprint of the base the pinned copy was made from; when Terraform
    registers a new base (memory, environment, roles), the next start registers a new copy and
    replaces the index. Registering is claimed in the index (`register_once`).
    """
    image = pinned_image(config.repository_uri, digest)
    family = family or config.task_family
    base = ecs.describe_task_definition(taskDefinition=family)["taskDefinition"]
    request = pinned_copy(base, config.container_name, image, digest, accepted_fields(ecs))
    return register_once(
        s3,
        config,
        index_key(family, digest),
        digest=digest,
        base_print=fingerprint(request, config.container_name),
        base_arn=str(base.get("taskDefinitionArn")),
        register=lambda: str(ecs.register_task_definition(**request)["taskDefinition"]["taskDefinitionArn"]),
        usable=lambda arn: _usable(ecs, arn, image, config.container_name),
        now=now,
        sleep=sleep,
    )


def register_once(
    s3: Any,
    config: Config,
    key: str,
    *,
    digest: str,
    base_print: str,
    base_arn: str,
    register: Callable[[], str],
    usable: Callable[[str], bool],
    now: datetime,
    sleep: Callable[[float], None],
) -> tuple[str, bool]:
    """Register a digest's pinned revision once for every launcher (ECS task definitions, Batch job definitions).

    The registration is claimed first in the index at `key` (a `pending` entry written with a condition),
    so a burst of starts for one digest registers one revision and leaves no orphan: the others wait for
    the claimant's ARN, or take the claim over when it is older than PUSHTRAIN_CLAIM_SECONDS. A
    registration that raises releases its claim (`claimed_at` null) before the error goes on, so Lambda's
    first retry registers at once instead of waiting for the claim to expire.
    """
    claim = timedelta(seconds=config.claim_seconds)
    for _ in range(INDEX_ROUNDS):
        found = _read_index(s3, config.bucket, key)
        index, etag = found if found else ({}, None)
        same_base = index.get("base_fingerprint") == base_print
        if same_base and index.get("task_definition_arn") is not None:
            if usable(index["task_definition_arn"]):
                return str(index["task_definition_arn"]), False
        elif same_base and not _claim_expired(index.get("claimed_at"), now, claim):
            sleep(INDEX_POLL_S)  # another invocation is registering this very copy: wait for its ARN
            continue
        pending = {
            "image_digest": digest,
            "base_fingerprint": base_print,
            "base_task_definition_arn": base_arn,
            "task_definition_arn": None,
        }
        claimed = put_json(s3, config.bucket, key, {**pending, "claimed_at": timestamp(now)}, etag=etag, sleep=sleep)
        if claimed is None:
            continue  # another invocation claimed (or finished) first: look again
        try:
            arn = register()
        except Exception:
            with contextlib.suppress(Exception):  # the registration's error is the one to raise
                put_json(s3, config.bucket, key, {**pending, "claimed_at": None}, etag=claimed, sleep=sleep)
            raise
        done = {**pending, "task_definition_arn": arn, "claimed_at": None, "registered_at": timestamp(now)}
        put_json(s3, config.bucket, key, done, etag=claimed, sleep=sleep)
        return arn, True
    raise StartInFlightError(
        f"the revision of {digest} on base {base_print[:12]} is being registered by another invocation "
        f"(s3://{config.bucket}/{key}); retry"
    )


def _claim_expired(claimed_at: object, now: datetime, claim: timedelta) -> bool:
    claimed = parse_timestamp(claimed_at)
    return claimed is None or now - claimed >= claim


# --- AWS Batch: one multi-node job definition revision per digest -------------------------------------

BATCH_BASE_TAG = ":base-revision-not-run"  # the image of the revision Terraform manages (never run)


def node_images(definition: Mapping[str, Any]) -> set[str]:
    ranges = (definition.get("nodeProperties") or {}).get("nodeRangeProperties") or []
    return {str(r.get("container", {}).get("image")) for r in ranges}


def pinned_job_definition(base: Mapping[str, Any], image: str, digest: str) -> dict[str, Any]:
    """The RegisterJobDefinition request: `base` (a DescribeJobDefinitions entry) with every node's image pinned."""
    node_properties = json.loads(json.dumps(base["nodeProperties"]))
    for node_range in node_properties["nodeRangeProperties"]:
        node_range["container"]["image"] = image
    request: dict[str, Any] = {
        "jobDefinitionName": base["jobDefinitionName"],
        "type": "multinode",
        "nodeProperties": node_properties,
        "tags": {f"{TAG_PREFIX}image-digest": digest},
    }
    for key in ("parameters", "retryStrategy", "timeout", "propagateTags", "platformCapabilities"):
        if key in base:
            request[key] = json.loads(json.dumps(base[key]))
    return request


def _active_job_definitions(batch: Any, name: str) -> list[dict[str, Any]]:
    definitions: list[dict[str, Any]] = []
    token: str | None = None
    while True:
        page = batch.describe_job_definitions(
            jobDefinitionName=name, status="ACTIVE", **({"nextToken": token} if token else {})
        )
        definitions += page.get("jobDefinitions") or []
        token = page.get("nextToken")
        if not token:
            return definitions


def _usable_job_definition(batch: Any, arn: str, image: str) -> bool:
    described = batch.describe_job_definitions(jobDefinitions=[arn]).get("jobDefinitions") or []
    return any(d.get("status") == "ACTIVE" and node_images(d) == {image} for d in described)


def ensure_job_definition(
    batch: Any, s3: Any, config: Config, digest: str, now: datetime, *, sleep: Callable[[float], None] = time.sleep
) -> tuple[str, bool]:
    """The ARN of the Batch job definition revision that runs `digest`, registered once (`register_once`).

    An ACTIVE revision already pinned to the image is used as it is; otherwise the newest revision whose
    every node runs `…:base-revision-not-run` (terraform/batch.tf) is copied with the image pinned.
    """
    image = pinned_image(config.repository_uri, digest)
    name = config.batch_job_definition
    definitions = sorted(_active_job_definitions(batch, name), key=lambda d: int(d.get("revision", 0)))
    for definition in definitions:
        if node_images(definition) == {image}:
            return str(definition["jobDefinitionArn"]), False
    bases = [d for d in definitions if node_images(d) and all(i.endswith(BATCH_BASE_TAG) for i in node_images(d))]
    if not bases:
        raise TaskDefinitionError(
            f"job definition {name!r} has no active base revision (image …{BATCH_BASE_TAG}); "
            "terraform/batch.tf creates it"
        )
    request = pinned_job_definition(bases[-1], image, digest)
    base_print = hashlib.sha256(
        json.dumps(
            {k: v for k, v in request.items() if k != "tags"} | {"nodeProperties": bases[-1]["nodeProperties"]},
            sort_keys=True,
            separators=(",", ":"),
        ).encode()
    ).hexdigest()
    return register_once(
        s3,
        config,
        index_key(name, digest),
        digest=digest,
        base_print=base_print,
        base_arn=str(bases[-1]["jobDefinitionArn"]),
        register=lambda: str(batch.register_job_definition(**request)["jobDefinitionArn"]),
        usable=lambda arn: _usable_job_definition(batch, arn, image),
        now=now,
        sleep=sleep,
    )
