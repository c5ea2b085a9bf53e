"""Keep a published version's image pullable: tag its digest `keep-<run_id>` in ECR.

The repository's lifecycle policy (terraform/ecr.tf) expires every image `ecr_image_retention_days`
after its push, except images tagged `keep-*`. The trainer knows nothing of ECR (ARCHITECTURE.md), so
the trigger adds the tag when a run it started has succeeded with a version: its pinned digest gets
`keep-<run_id>`, and, when that digest is an image index, the n-th manifest the index lists (1, 2, …)
gets `keep-<run_id>-<n>` (ECR's documentation does not say whether a lifecycle rule expires the
children of a kept index).

Adding a tag is `PutImage` with the manifest exactly as stored (BatchGetImage) and the new tag. Tags
are immutable in our repository: `ImageAlreadyExistsException` means this digest already has the tag
(a re-delivered event, or a retry after the record write failed), which is success. A tag on another
digest cannot happen (run ids are unique); it is an error naming both digests.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from botocore.exceptions import ClientError

from trigger.errors import ImageNotFoundError, RecordConflictError
from trigger.events import KEEP_TAG_PREFIX, TAG
from trigger.images import IMAGE_MANIFESTS, INDEXES
from trigger.s3json import error_code

MAX_TAG = 128  # ECR / Docker tag length


def is_keep_tag(tag: str | None) -> bool:
    """Whether `tag` is one the trigger adds to keep an image (its push event trains nothing)."""
    return tag is not None and tag.startswith(KEEP_TAG_PREFIX)


def keep_tag(run_id: str, child: int | None = None) -> str:
    """`keep-<run_id>` for the run's digest, `keep-<run_id>-<n>` for the n-th manifest of its index."""
    tag = f"{KEEP_TAG_PREFIX}{run_id}" + ("" if child is None else f"-{child}")
    if len(tag) > MAX_TAG or not TAG.fullmatch(tag):
        raise ValueError(f"keep tag {tag!r} is not a valid image tag of at most {MAX_TAG} characters")
    return tag


def _get_manifest(ecr: Any, repository: str, digest: str) -> tuple[str, str | None]:
    """The manifest of `digest` as stored (the exact text PutImage must repeat) and its media type."""
    response = ecr.batch_get_image(
        repositoryName=repository,
        imageIds=[{"imageDigest": digest}],
        acceptedMediaTypes=sorted(IMAGE_MANIFESTS | INDEXES),
    )
    images = response.get("images") or []
    if not images or not images[0].get("imageManifest"):
        failures = [f.get("failureCode") for f in response.get("failures") or []]
        raise ImageNotFoundError(f"image {digest} of {repository!r}: BatchGetImage returned no manifest ({failures})")
    return str(images[0]["imageManifest"]), images[0].get("imageManifestMediaType")


def _tagged_digest(ecr: Any, repository: str, tag: str) -> str | None:
    try:
        details = ecr.describe_images(repositoryName=repository, imageIds=[{"imageTag": tag}]).get("imageDetails")
    except ClientError as error:
        if error_code(error) == "ImageNotFoundException":
            return None
        raise
    return str(details[0]["imageDigest"]) if details else None


def _put_tag(ecr: Any, repository: str, digest: str, *, manifest: str, media_type: str | None, tag: str) -> None:
    request: dict[str, Any] = {
        "repositoryName": repository,
        "imageManifest": manifest,
        "imageTag": tag,
        "imageDigest": digest,
    }
    if media_type:
        request["imageManifestMediaType"] = media_type
    try:
        ecr.put_image(**request)
    except ClientError as error:
        code = error_code(error)
        if code == "ImageAlreadyExistsException":
            return  # this digest already carries the tag
        if code != "ImageTagAlreadyExistsException":
            raise
        other = _tagged_digest(ecr, repository, tag)
        if other == digest:
            return
        raise RecordConflictError(
            f"tag {tag!r} of {repository!r} is on {other}, not on {digest}: run ids are unique, so something "
            "else added it"
        ) from error


def keep_image(ecr: Any, repository: str, digest: str, run_id: str) -> list[str]:
    """Tag `digest` `keep-<run_id>` (and each manifest its index lists `keep-<run_id>-<n>`); return the tags.

    Idempotent: a tag already on its digest counts as added.
    """
    manifest, media_type = _get_manifest(ecr, repository, digest)
    try:
        parsed = json.loads(manifest)
    except json.JSONDecodeError as error:
        raise ImageNotFoundError(f"image {digest} of {repository!r} has a manifest that is not JSON") from error
    media_type = media_type or (parsed.get("mediaType") if isinstance(parsed, Mapping) else None)
    tags: list[str] = []
    if media_type in INDEXES and isinstance(parsed, Mapping):
        # children first, so a failure part-way leaves no kept index with expiring children behind
        for n, entry in enumerate(parsed.get("manifests") or [], start=1):
            child = entry.get("digest") if isinstance(entry, Mapping) else None
            if not isinstance(child, str):
                raise ImageNotFoundError(f"image index {digest} of {repository!r} lists entry {n} without a digest")
            child_manifest, child_type = _get_manifest(ecr, repository, child)
            child_type = child_type or entry.get("mediaType")
            tag = keep_tag(run_id, n)
            _put_tag(ecr, repository, child, manifest=child_manifest, media_type=child_type, tag=tag)
            tags.append(tag)
    tag = keep_tag(run_id)
    _put_tag(ecr, repository, digest, manifest=manifest, media_type=media_type, tag=tag)
    return [tag, *tags]
