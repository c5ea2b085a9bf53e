"""Checkpoints: `runs/<run_id>/checkpoint.pt`, the latest resumable state of a run.

A checkpoint wraps `TrainingSession.state_dict()` (model, optimizer, schedule position, partial
epoch, RNG states, configuration) with a format marker, a format version and the dataset
checksum. It is written to the work folder first and then stored in one atomic write, so the
stored checkpoint is always a complete one: the previous epoch's, or the new one.

Loading never guesses. A checkpoint that cannot be read, has another format version, or was made
for a different training recipe or dataset raises `CheckpointError` saying which, and where the
file is; the run then fails with that reason instead of silently starting over (delete the file
to start over on purpose).
"""

from __future__ import annotations

import logging
import pickle
import zipfile
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.store import NotFound, Store

log = logging.getLogger(__name__)

FORMAT = "pushtrain-checkpoint"
FORMAT_VERSION = 1


class CheckpointError(Exception):
    """A checkpoint exists but cannot be used; the message names the file and the reason."""


def checkpoint_key(run_id: str) -> str:
    return f"runs/{run_id}/checkpoint.pt"


def _local_path(config: TrainConfig, run_id: str, name: str) -> Path:
    return Path(config.work_dir) / "runs" / run_id / name


def save_checkpoint(
    store: Store,
    run_id: str,
    state: dict[str, Any],
    config: TrainConfig,
    dataset_checksum: str,
    *,
    wall_seconds: float = 0.0,
) -> str:
    """Store state as the run's checkpoint (atomically replacing the previous one); return its URI.

    wall_seconds is the run's wall time so far, over all attempts (for the manifest's cost).
    """
    path = _local_path(config, run_id, "checkpoint.pt")
    path.parent.mkdir(parents=True, exist_ok=True)
    payload = {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "run_id": run_id,
        "saved_at": datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "dataset_checksum": dataset_checksum,
        "wall_seconds": wall_seconds,
        "state": state,
    }
    torch.save(payload, path)
    key = checkpoint_key(run_id)
    store.upload_file(path, key)
    return store.uri_of(key)


def _numpy_rng_globals() -> list[Any]:
    # numpy's RNG state (a uint32 array) is the only non-tensor object in the state; allow exactly
    # what unpickling it needs, so loading stays weights_only (no arbitrary code from the file).
    from numpy._core.multiarray import _reconstruct

    return [_reconstruct, np.ndarray, np.dtype, type(np.dtype(np.uint32))]


def read_checkpoint_file(path: Path, where: str) -> dict[str, Any]:
    """Load and check a checkpoint file's envelope; where names it in errors."""
    try:
        with torch.serialization.safe_globals(_numpy_rng_globals()):
            payload = torch.load(path, map_location="cpu", weights_only=True)
    except (RuntimeError, pickle.UnpicklingError, EOFError, ValueError, zipfile.BadZipFile, OSError) as exc:
        raise CheckpointError(
            f"checkpoint {where} is unreadable (corrupted or not a checkpoint): {type(exc).__name__}: "
            f"{str(exc).splitlines()[0] if str(exc) else ''}. Delete it to start the run over."
        ) from exc
    if not isinstance(payload, dict) or payload.get("format") != FORMAT:
        got = payload.get("format") if isinstance(payload, dict) else type(payload).__name__
        raise CheckpointError(f"checkpoint {where} is not a pushtrain checkpoint (format {got!r}, want {FORMAT!r})")
    if payload.get("format_version") != FORMAT_VERSION:
        raise CheckpointError(
            f"checkpoint {where} has format version {payload.get('format_version')!r}; "
            f"this trainer reads version {FORMAT_VERSION}"
        )
    if not isinstance(payload.get("state"), dict) or not isinstance(payload["state"].get("config"), dict):
        raise CheckpointError(f"checkpoint {where} has no training state")
    return payload


def check_compatible(payload: dict[str, Any], config: TrainConfig, dataset_checksum: str, where: str) -> None:
    """Raise CheckpointError naming every setting of `RUN_FIELDS` (and the dataset) that differs from this run."""
    differences = [
        f"{name}: checkpoint {saved!r}, run {ours!r}"
        for name, saved, ours in config.run_differences(payload["state"]["config"])
    ]
    if payload.get("dataset_checksum") != dataset_checksum:
        differences.append(f"dataset: checkpoint {payload.get('dataset_checksum')!r}, run {dataset_checksum!r}")
    if differences:
        raise CheckpointError(f"checkpoint {where} was made for a different run ({'; '.join(differences)})")


def load_checkpoint(store: Store, run_id: str, config: TrainConfig, dataset_checksum: str) -> dict[str, Any] | None:
    """The run's checkpoint state if one exists and fits this run; None if there is none."""
    key = checkpoint_key(run_id)
    path = _local_path(config, run_id, "resume.pt")
    try:
        store.download_file(key, path)
    except NotFound:
        return None
    where = store.uri_of(key)
    try:
        payload = read_checkpoint_file(path, where)
    finally:
        path.unlink(missing_ok=True)
    check_compatible(payload, config, dataset_checksum, where)
    return payload
