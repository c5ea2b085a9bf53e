"""Only container images train: the facts the trigger checks in ECR before it starts anything.

A tag in our repository can hold things that are not images: a cosign signature (`sha256-….sig`),
an attestation (`.att`, in-toto), an SBOM, a Helm chart, any OCI artifact. Each is a manifest too,
and ECR announces its push like an image's. Training one starts a task that cannot run.

What counts as runnable (the OCI image spec and Docker's distribution formats):
- an image manifest (Docker v2 schema 2 or OCI) with no `artifactType`, whose config is a container
  image config and whose layers are all filesystem layers (a cosign signature has an OCI image config
  but a `simplesigning` layer, which this rule refuses);
- an image index / manifest list with no `artifactType` naming at least one image manifest for a real
  platform (buildx adds attestation manifests as `unknown/unknown` entries; those do not count).

ECR's DescribeImages says whether the digest exists and gives `imageManifestMediaType` and, on AWS,
`artifactMediaType`; that is enough to refuse most artifacts at once. Whether something is runnable
needs the manifest itself (BatchGetImage): a signature's artifact media type is an image config.
"""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from botocore.exceptions import ClientError

from trigger.errors import ImageNotFoundError
from trigger.s3json import error_code

DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
DOCKER_MANIFEST_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
IMAGE_MANIFESTS = frozenset({DOCKER_MANIFEST, OCI_MANIFEST})
INDEXES = frozenset({DOCKER_MANIFEST_LIST, OCI_INDEX})
CONTAINER_CONFIGS = frozenset(
    {"application/vnd.docker.container.image.v1+json", "application/vnd.oci.image.config.v1+json"}
)
LAYER_PREFIXES = ("application/vnd.oci.image.layer.", "application/vnd.docker.image.rootfs.")
ATTESTATION_ANNOTATION = "vnd.docker.reference.type"  # buildx marks its attestation manifests with it


@dataclass(frozen=True)
class ImageFacts:
    """One digest of our repository, as ECR describes it."""

    digest: str
    tags: tuple[str, ...]
    pushed_at: datetime | None
    manifest_media_type: str | None
    artifact_media_type: str | None


def facts_of(detail: Mapping[str, Any]) -> ImageFacts:
    """An ECR ImageDetail (DescribeImages) as ImageFacts."""
    return ImageFacts(
        digest=str(detail["imageDigest"]),
        tags=tuple(detail.get("imageTags") or ()),
        pushed_at=detail.get("imagePushedAt"),
        manifest_media_type=detail.get("imageManifestMediaType"),
        artifact_media_type=detail.get("artifactMediaType"),
    )


def describe_image(ecr: Any, repository: str, image: str, *, by_digest: bool) -> ImageFacts:
    """The one image a tag or digest names in `repository`; ImageNotFoundError when there is none."""
    image_id = {"imageDigest": image} if by_digest else {"imageTag": image}
    try:
        response = ecr.describe_images(repositoryName=repository, imageIds=[image_id])
    except ClientError as error:
        if error_code(error) in {"ImageNotFoundException", "RepositoryNotFoundException"}:
            raise ImageNotFoundError(f"image {image!r} is not in repository {repository!r}") from error
        raise
    details = response.get("imageDetails") or []
    if len(details) != 1:
        raise ImageNotFoundError(f"image {image!r} matched {len(details)} images in {repository!r}")
    return facts_of(details[0])


def refusal_from_description(facts: ImageFacts) -> str | None:
    """Why the description alone shows the digest is not a runnable image, or None when it may be."""
    media_type = facts.manifest_media_type
    if media_type is not None and media_type not in IMAGE_MANIFESTS | INDEXES:
        return f"manifest media type {media_type} is neither an image manifest nor an image index"
    artifact = facts.artifact_media_type
    if media_type in IMAGE_MANIFESTS and artifact is not None and artifact not in CONTAINER_CONFIGS:
        return f"artifact media type {artifact} is not a container image config"
    return None


def refusal_from_manifest(manifest: Mapping[str, Any]) -> str | None:  # noqa: PLR0911 (one return per rule)
    """Why this manifest (image manifest or index) is not a runnable image, or None when it is. Pure."""
    media_type = manifest.get("mediaType")
    if manifest.get("artifactType"):
        return f"manifest has artifactType {manifest['artifactType']}: an OCI artifact, not an image"
    if media_type in INDEXES or (media_type is None and "manifests" in manifest):
        entries = manifest.get("manifests")
        if not isinstance(entries, list):
            return "image index without a manifests list"
        runnable = [entry for entry in entries if isinstance(entry, Mapping) and _is_platform_image(entry)]
        return None if runnable else "image index names no image manifest for a real platform"
    if media_type not in IMAGE_MANIFESTS and not (media_type is None and "config" in manifest):
        return f"manifest media type {media_type} is neither an image manifest nor an image index"
    config = manifest.get("config")
    config_type = config.get("mediaType") if isinstance(config, Mapping) else None
    if config_type not in CONTAINER_CONFIGS:
        return f"config media type {config_type} is not a container image config"
    layers = manifest.get("layers")
    if not isinstance(layers, list) or not layers:
        return "image manifest has no layers"
    odd = sorted({str(layer.get("mediaType")) for layer in layers if not _is_layer(layer)})
    if odd:
        return f"layers of media type {', '.join(odd)} are not filesystem layers"
    return None


def _is_layer(layer: object) -> bool:
    return isinstance(layer, Mapping) and str(layer.get("mediaType", "")).startswith(LAYER_PREFIXES)


def _is_platform_image(entry: Mapping[str, Any]) -> bool:
    platform = entry.get("platform")
    annotations = entry.get("annotations")
    return (
        entry.get("mediaType") in IMAGE_MANIFESTS
        and not entry.get("artifactType")
        and isinstance(platform, Mapping)
        and platform.get("os") not in (None, "unknown")
        and not (isinstance(annotations, Mapping) and ATTESTATION_ANNOTATION in annotations)
    )


def fetch_manifest(ecr: Any, repository: str, digest: str) -> Mapping[str, Any]:
    """The manifest of `digest` as stored (BatchGetImage, accepting every image format we run)."""
    response = ecr.batch_get_image(
        repositoryName=repository,
        imageIds=[{"imageDigest": digest}],
        acceptedMediaTypes=sorted(IMAGE_MANIFESTS | INDEXES),
    )
    images = response.get("images") or []
    if len(images) != 1:
        failures = [f.get("failureCode") for f in response.get("failures") or []]
        raise ImageNotFoundError(f"image {digest} of {repository!r}: BatchGetImage returned no manifest ({failures})")
    try:
        manifest = json.loads(images[0].get("imageManifest") or "")
    except json.JSONDecodeError as error:
        raise ImageNotFoundError(f"image {digest} of {repository!r} has a manifest that is not JSON") from error
    return manifest if isinstance(manifest, Mapping) else {}


def not_runnable(ecr: Any, repository: str, facts: ImageFacts) -> str | None:
    """Why `facts`' digest is not a runnable container image, or None when it is."""
    refusal = refusal_from_description(facts)
    if refusal is not None:
        return refusal
    return refusal_from_manifest(fetch_manifest(ecr, repository, facts.digest))
