"""What a published version is, without torch: its layout in the store, its id, its manifest.

`trainer.publish` writes versions (and needs torch); the `models` and `runs` commands, the gate and the
run report only read them, and import this module, so `python -m trainer models list` starts in a
fraction of a second instead of loading torch first.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from trainer.store import NotFound, Store

DEFAULT_MODEL_NAME = "cifar10"  # TrainConfig.model_name: models/<model_name>/<version>/
MODEL_FORMAT = "pushtrain-model"
MODEL_FORMAT_VERSION = 1
MANIFEST_SCHEMA = 1
MANIFEST = "manifest.json"
MODEL_FILE = "model.pt"
TORCHSCRIPT_FILE = "model.torchscript.pt"
METRICS_FILE = "metrics.json"
CURVES_FILE = "curves.png"
REPORT_FILE = "report.md"
# Written in this order; the manifest (the commit point) comes after all of them.
VERSION_FILES = (MODEL_FILE, TORCHSCRIPT_FILE, METRICS_FILE, CURVES_FILE, REPORT_FILE)


class PublishError(Exception):
    """The version could not be published."""


class VersionExistsError(PublishError):
    """The version is already published (or partly written): published versions are never overwritten."""


def version_prefix(model_name: str, version: str) -> str:
    return f"models/{model_name}/{version}/"


def new_version_id(run_id: str, now: datetime) -> str:
    """A sortable version id: a UTC time, then the run id. A run passes the time its record was created, so
    every attempt (and any duplicate trainer) of one run names the same version: one run, one version."""
    return f"{now:%Y%m%dT%H%M%SZ}-{run_id}"


def run_id_of_version(version: str) -> str:
    """The run id inside a version id made by new_version_id."""
    stamp, sep, run_id = version.partition("-")
    if not sep or len(stamp) != len("20261125T190000Z"):
        raise ValueError(f"not a version id: {version!r} (want <YYYYmmddTHHMMSSZ>-<run_id>)")
    return run_id


def read_manifest(store: Store, model_name: str, version: str) -> dict[str, Any]:
    """The manifest of a published version (NotFound if the version is not published).

    A manifest that is not a JSON object raises ValueError naming it.
    """
    key = version_prefix(model_name, version) + MANIFEST
    data = store.get(key)
    try:
        manifest = json.loads(data)
    except ValueError as exc:
        raise ValueError(f"{store.uri_of(key)} is not JSON: {exc}") from exc
    if not isinstance(manifest, dict):
        raise ValueError(f"{store.uri_of(key)} is not a manifest (a JSON {type(manifest).__name__})")  # noqa: TRY004 -- damaged data, reported like unparsable JSON
    return manifest


def verify_files(store: Store, model_name: str, version: str, manifest: dict[str, Any]) -> list[str]:
    """One line per file of the version that is missing or differs from the manifest's sha256 (none: intact).

    Each file's SHA-256 comes from the store without downloading it (S3: the checksum S3 verified and
    stored at upload, HeadObject with ChecksumMode; the local store hashes the file), so checking a version
    of tens of MB costs one request per file. Used by `models show|champion`, `models promote|rollback`
    and the gate: one check.
    """
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return ["the manifest lists no files"]
    problems = []
    for name, expected in sorted(files.items()):
        try:
            actual = store.sha256_of(version_prefix(model_name, version) + name)
        except NotFound:
            problems.append(f"{name} is missing")
            continue
        want = expected.get("sha256") if isinstance(expected, dict) else expected
        if actual != want:
            problems.append(f"{name} has sha256 {actual}, the manifest says {want}")
    return problems
