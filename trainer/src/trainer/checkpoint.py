"""Checkpoints: `runs/<run_id>/checkpoint.pt` and `checkpoint.b.pt`, the last two resumable states of a run.

A checkpoint wraps `TrainingSession.state_dict()` (model, optimizer, schedule position, partial
epoch, RNG states, configuration) with a format marker, a format version, a sequence number and the
dataset checksum. It is written to the work folder first and stored in one atomic write, then its
sidecar `<name>.sha256` (JSON: sha256, bytes, sequence) is written: a sidecar never vouches for data
that is not there. Saves alternate between the two names, so the one before the newest survives.

Loading never guesses. The newest checkpoint whose bytes match its sidecar, that reads, and whose
weights are finite is resumed; a damaged one is skipped for the older one with a warning. When none
is usable, or one was made for a different training recipe or dataset, `CheckpointError` says which
and where the file is; the run then fails with that reason instead of silently starting over
(delete the files to start over on purpose).
"""

from __future__ import annotations

import errno
import json
import logging
import pickle
import shutil
import zipfile
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import torch

from trainer.config import TrainConfig
from trainer.store import NotFound, Store, sha256_file

log = logging.getLogger(__name__)

FORMAT = "pushtrain-checkpoint"
FORMAT_VERSION = 1
SLOTS = ("checkpoint.pt", "checkpoint.b.pt")  # written alternately: the newest and the one before it
SIDECAR_SUFFIX = ".sha256"
DISK_NEARLY_FULL_BYTES = 1 << 20  # a failed write with less than this free is a full disk


class DiskFullError(Exception):
    """A local write failed because the file system is full (the message says where and what to do)."""


def write_local(write: Callable[[], None], path: Path, what: str) -> None:
    """Run `write` (which writes `path`); a full disk becomes one clear line naming the place and the fix.

    torch.save reports ENOSPC from its zip writer as an opaque "PytorchStreamWriter failed writing file
    ...: file write failed"; Python's own writes raise OSError(ENOSPC). Either way the free space left on
    the file system decides the message.
    """
    try:
        write()
    except (OSError, RuntimeError) as exc:
        full = isinstance(exc, OSError) and exc.errno == errno.ENOSPC
        if not full and isinstance(exc, RuntimeError) and "write failed" in str(exc):
            try:
                full = shutil.disk_usage(path.parent).free < DISK_NEARLY_FULL_BYTES
            except OSError:
                full = False
        if not full:
            raise
        path.unlink(missing_ok=True)
        raise DiskFullError(
            f"no space left on device writing {what} at {path} (the work_dir volume): free space there or give "
            "TRAINER_WORK_DIR a larger volume"
        ) from exc


class CheckpointError(Exception):
    """A checkpoint exists but cannot be used; the message names the file and the reason."""


def checkpoint_key(run_id: str, slot: int = 0) -> str:
    return f"runs/{run_id}/{SLOTS[slot]}"


def sidecar_key(run_id: str, slot: int = 0) -> str:
    return checkpoint_key(run_id, slot) + SIDECAR_SUFFIX


def _local_path(config: TrainConfig, run_id: str, name: str) -> Path:
    return Path(config.work_dir) / "runs" / run_id / name


def _read_sidecar(store: Store, run_id: str, slot: int) -> dict[str, Any] | None:
    """The slot's sidecar, or None when it is missing or unreadable (the slot then counts as unverified)."""
    try:
        sidecar = json.loads(store.get(sidecar_key(run_id, slot)))
        int(sidecar["sequence"])
        str(sidecar["sha256"])
    except NotFound:
        return None
    except (ValueError, KeyError, TypeError) as exc:
        where = store.uri_of(sidecar_key(run_id, slot))
        log.warning("checkpoint sidecar %s is unreadable (%s); its checkpoint counts as unverified", where, exc)
        return None
    return dict(sidecar)


class Checkpoints:
    """The last two checkpoints of one run, each with a sha256 sidecar written after its data.

    Saves alternate between the two slots, never overwriting the checkpoint the run resumed from, so
    when the newest one is damaged (or a save died between its data and its sidecar) the one before
    it is still there. `load` tries the newest first and falls back, saying so.
    """

    def __init__(self, store: Store, run_id: str, config: TrainConfig, dataset_checksum: str) -> None:
        self.store = store
        self.run_id = run_id
        self.config = config
        self.dataset_checksum = dataset_checksum
        self.sequence = 0  # of the last checkpoint saved or loaded
        self.slot = 1  # the slot of that checkpoint; the next save goes to the other one

    def save(self, state: dict[str, Any], *, wall_seconds: float = 0.0) -> str:
        """Store state in the other slot, then its sidecar; return the checkpoint's URI.

        wall_seconds is the run's wall time so far, over all attempts (for the manifest's cost).
        """
        slot, sequence = 1 - self.slot, self.sequence + 1
        path = _local_path(self.config, self.run_id, SLOTS[slot])
        path.parent.mkdir(parents=True, exist_ok=True)
        saved_at = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
        payload = {
            "format": FORMAT,
            "format_version": FORMAT_VERSION,
            "run_id": self.run_id,
            "saved_at": saved_at,
            "sequence": sequence,
            "dataset_checksum": self.dataset_checksum,
            "wall_seconds": wall_seconds,
            "state": state,
        }
        write_local(lambda: torch.save(payload, path), path, "the checkpoint")
        sidecar = {"sha256": sha256_file(path), "bytes": path.stat().st_size, "sequence": sequence}
        sidecar["saved_at"] = saved_at
        key = checkpoint_key(self.run_id, slot)
        # 1. the data, 2. its sidecar: a sidecar never vouches for data that is not there yet
        self.store.upload_file(path, key)
        self.store.put(sidecar_key(self.run_id, slot), json.dumps(sidecar, sort_keys=True).encode())
        path.unlink(missing_ok=True)
        self.slot, self.sequence = slot, sequence
        return self.store.uri_of(key)

    def continue_sequence(self) -> None:
        """Number the next save after the newest stored checkpoint (for a save without a load first)."""
        candidates = self._candidates()
        if candidates:
            slot, sequence, _ = candidates[0]
            self.slot, self.sequence = slot, max(sequence, 0)

    def _candidates(self) -> list[tuple[int, int, dict[str, Any] | None]]:
        """(slot, sequence, sidecar) of each stored checkpoint, newest first; one without a sidecar goes last."""
        found = []
        for slot in range(len(SLOTS)):
            sidecar = _read_sidecar(self.store, self.run_id, slot)
            if sidecar is None and not self.store.exists(checkpoint_key(self.run_id, slot)):
                continue
            found.append((slot, int(sidecar["sequence"]) if sidecar else -1, sidecar))
        return sorted(found, key=lambda c: c[1], reverse=True)

    def load(self) -> dict[str, Any] | None:
        """The newest intact checkpoint that fits this run; None if there is none.

        A damaged checkpoint (checksum mismatch, unreadable, non-finite weights) is skipped for the
        older one with a warning; when every stored one is damaged, CheckpointError says why. One
        made for another run or dataset raises CheckpointError at once: falling back would hide it.
        """
        errors: list[CheckpointError] = []
        for slot, sequence, sidecar in self._candidates():
            where = self.store.uri_of(checkpoint_key(self.run_id, slot))
            try:
                payload = self._read(slot, sidecar, where)
            except CheckpointError as exc:
                errors.append(exc)
                log.warning("%s; falling back to the previous checkpoint if there is one", exc)
                continue
            check_compatible(payload, self.config, self.dataset_checksum, where)
            if errors:
                log.warning("resuming from the older checkpoint %s (sequence %d)", where, sequence)
            self.slot, self.sequence = slot, max(sequence, 0)
            return payload
        if errors:
            raise errors[0]
        return None

    def _read(self, slot: int, sidecar: dict[str, Any] | None, where: str) -> dict[str, Any]:
        path = _local_path(self.config, self.run_id, "resume.pt")
        try:
            self.store.download_file(checkpoint_key(self.run_id, slot), path)
        except NotFound:
            raise CheckpointError(f"checkpoint {where} is missing although its sidecar exists") from None
        try:
            if sidecar is not None:
                actual = sha256_file(path)
                if actual != sidecar["sha256"]:
                    raise CheckpointError(
                        f"checkpoint {where} is unreadable (corrupted: sha256 {actual} does not match "
                        f"{sidecar['sha256']} in its sidecar, or its save was interrupted)"
                    )
            payload = read_checkpoint_file(path, where)
        finally:
            path.unlink(missing_ok=True)
        bad = non_finite_tensors(payload["state"].get("model", {}))
        if bad:
            raise CheckpointError(f"checkpoint {where} has non-finite weights ({', '.join(bad[:3])})")
        return payload


def non_finite_tensors(tensors: dict[str, Any]) -> list[str]:
    """Names of the floating-point tensors holding NaN or infinity."""
    return [
        name
        for name, value in tensors.items()
        if isinstance(value, torch.Tensor) and value.is_floating_point() and not bool(torch.isfinite(value).all())
    ]


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


def save_checkpoint(
    store: Store,
    run_id: str,
    state: dict[str, Any],
    config: TrainConfig,
    dataset_checksum: str,
    *,
    wall_seconds: float = 0.0,
) -> str:
    """Save one more checkpoint of the run (see Checkpoints); return its URI."""
    checkpoints = Checkpoints(store, run_id, config, dataset_checksum)
    checkpoints.continue_sequence()
    return checkpoints.save(state, wall_seconds=wall_seconds)


def load_checkpoint(store: Store, run_id: str, config: TrainConfig, dataset_checksum: str) -> dict[str, Any] | None:
    """The run's newest intact checkpoint that fits this run (see Checkpoints.load); None if there is none."""
    return Checkpoints(store, run_id, config, dataset_checksum).load()
