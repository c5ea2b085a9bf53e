"""Reading the model registry: published versions and the champion, from a local or S3 store.

A version is published when its `manifest.json` exists (publishing writes it last), so listing
looks for manifests only; files of an interrupted publish stay invisible.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from trainer.gate import read_champion
from trainer.store import Store
from trainer.versions import MANIFEST, read_manifest, run_id_of_version, verify_files


@dataclass(frozen=True)
class VersionSummary:
    """One published version, as a listing shows it."""

    model_name: str
    version: str
    run_id: str
    created_at: str
    accuracy: float
    model: str
    epochs: float  # airbench94 trains 9.9 epochs
    image_digest: str | None
    champion: bool

    def to_dict(self) -> dict[str, Any]:
        return {
            "model_name": self.model_name,
            "version": self.version,
            "run_id": self.run_id,
            "created_at": self.created_at,
            "accuracy": self.accuracy,
            "model": self.model,
            "epochs": self.epochs,
            "image_digest": self.image_digest,
            "champion": self.champion,
        }


def list_model_names(store: Store) -> list[str]:
    """Every model name with at least one published version."""
    names = {key.split("/")[1] for key in store.list("models/") if key.endswith("/" + MANIFEST) and key.count("/") == 3}
    return sorted(names)


def published_versions(store: Store, model_name: str) -> list[str]:
    """Version ids of model_name with a manifest, oldest first (version ids sort by publish time)."""
    prefix = f"models/{model_name}/"
    versions = []
    for key in store.list(prefix):
        rest = key[len(prefix) :]
        version, _, name = rest.partition("/")
        if name == MANIFEST:
            versions.append(version)
    return sorted(versions)


def versions_of_run(store: Store, model_name: str, run_id: str) -> list[str]:
    """Published versions made by run_id (normally none or one)."""
    found = []
    for version in published_versions(store, model_name):
        try:
            if run_id_of_version(version) == run_id:
                found.append(version)
        except ValueError:
            continue  # a folder not made by publish_version; not ours to judge here
    return found


def summarize(store: Store, model_name: str) -> list[VersionSummary]:
    """Every published version of model_name with its headline numbers, oldest first."""
    champion, _ = read_champion(store, model_name)
    champion_version = champion["version"] if champion else None
    summaries = []
    for version in published_versions(store, model_name):
        manifest = read_manifest(store, model_name, version)
        try:
            summaries.append(_summary(model_name, version, manifest, champion_version))
        except (KeyError, TypeError, ValueError) as exc:
            where = store.uri_of(f"models/{model_name}/{version}/{MANIFEST}")
            raise ValueError(f"{where} is damaged: {type(exc).__name__}: {exc}") from exc
    return summaries


def _summary(model_name: str, version: str, manifest: dict[str, Any], champion_version: str | None) -> VersionSummary:
    return VersionSummary(
        model_name=model_name,
        version=version,
        run_id=str(manifest.get("run_id", "")),
        created_at=str(manifest.get("created_at", "")),
        accuracy=float(manifest["metrics"]["accuracy"]),
        model=str(manifest["config"]["model"]),
        epochs=float(manifest["config"]["epochs"]),
        image_digest=manifest.get("image_digest"),
        champion=version == champion_version,
    )


def describe_version(store: Store, model_name: str, version: str) -> dict[str, Any]:
    """The version's manifest, plus whether it is the champion and where its files are."""
    manifest = read_manifest(store, model_name, version)
    champion, _ = read_champion(store, model_name)
    return {
        **manifest,
        "champion": bool(champion and champion["version"] == version),
        "uri": store.uri_of(f"models/{model_name}/{version}/"),
    }


def champion_record(store: Store, model_name: str) -> dict[str, Any] | None:
    """The champion pointer (None when nothing has been promoted yet)."""
    champion, _ = read_champion(store, model_name)
    return champion


def to_json(value: Any) -> str:
    return json.dumps(value, indent=2, sort_keys=True)


__all__ = ["verify_files"]  # re-exported: the models commands and the gate share the one check
