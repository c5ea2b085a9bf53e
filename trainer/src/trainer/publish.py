"""Publishing a trained model as an immutable version: `models/<model_name>/<version>/`.

A version holds:

- `model.pt`: the weights and what rebuilds the network; load it with (see RUNS.md)

      import torch, trainer.nets
      saved = torch.load("model.pt", weights_only=True)
      model = trainer.nets.build_model(**saved["model_config"]).eval(); model.load_state_dict(saved["state_dict"])

- `model.torchscript.pt`: the same network traced to TorchScript, for serving without our code
  (`torch.jit.load`); input float images in [0, 1], Nx3x32x32, output logits (normalization inside);
- `metrics.json`, `curves.png`, `report.md` (a metrics table ready for a GitHub comment);
- `manifest.json`: provenance (git sha, image digest, dataset checksum, resolved configuration,
  library versions, hardware), wall time, throughput, estimated cost, metrics and a SHA-256 of
  every other file.

Every file is written create-only (`If-None-Match: *`), the manifest last: the manifest is the
commit point, and listings show only versions that have one. A crash midway leaves invisible
files, never a half-visible version; an existing version is never overwritten. A create-only
write refused because the object exists is accepted only when the object holds exactly the bytes
being published (an SDK retry of a PUT that committed but lost its response).
"""

from __future__ import annotations

import copy
import hashlib
import json
import logging
import platform
import warnings
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
import torchvision
from torch import nn

from trainer.checkpoint import non_finite_tensors, write_local
from trainer.config import TrainConfig
from trainer.counts import Counts
from trainer.metrics import EpochResult, EvalResult
from trainer.report import plot_curves, render_report
from trainer.store import NotFound, PreconditionFailed, Store, sha256_file
from trainer.versions import (
    CURVES_FILE,
    MANIFEST,
    MANIFEST_SCHEMA,
    METRICS_FILE,
    MODEL_FILE,
    MODEL_FORMAT,
    MODEL_FORMAT_VERSION,
    REPORT_FILE,
    TORCHSCRIPT_FILE,
    VERSION_FILES,
    PublishError,
    VersionExistsError,
    version_prefix,
)

log = logging.getLogger(__name__)

IMAGE_SIZE = 32  # CIFAR-10 images are 32x32 RGB
# Traced and eager outputs agree to float rounding; a larger gap means the trace lost a branch.
TORCHSCRIPT_TOLERANCE = 1e-4


@dataclass(frozen=True)
class TrainingOutcome:
    """What a finished run hands to publishing."""

    model: nn.Module
    model_config: dict[str, Any]  # build_model keyword arguments: {"name": ..., "num_classes": ...}
    classes: Sequence[str]
    evaluation: EvalResult
    history: Sequence[EpochResult]
    dataset: dict[str, Any]  # Cifar10Data.describe()
    hardware: dict[str, Any]
    wall_seconds: float  # all attempts, from start to the end of evaluation
    precision: str
    validation: Counts | None = None  # on the held-out validation set (val_images > 0)
    effective: dict[str, Any] | None = None  # what trained: {"batch_size", "lr"} after the small-data rule


@dataclass(frozen=True)
class PublishedVersion:
    model_name: str
    version: str
    uri: str
    manifest: dict[str, Any]


# --- the files --------------------------------------------------------------------------------


def write_model(model: nn.Module, model_config: dict[str, Any], classes: Sequence[str], path: Path) -> None:
    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    torch.save(
        {
            "format": MODEL_FORMAT,
            "format_version": MODEL_FORMAT_VERSION,
            "model_config": dict(model_config),
            "classes": list(classes),
            "input": "float images in [0, 1], Nx3x32x32 (RGB); normalization is inside the model",
            "state_dict": state,
        },
        path,
    )


def write_torchscript(model: nn.Module, path: Path) -> None:
    """Trace the model in evaluation mode on CPU and check that the trace reproduces it."""
    eager = copy.deepcopy(model).cpu().eval()  # a copy: the caller's model stays on its device and mode
    example = torch.rand(4, 3, IMAGE_SIZE, IMAGE_SIZE, generator=torch.Generator().manual_seed(0))
    with warnings.catch_warnings(), torch.no_grad():
        # torch 2.14 marks TorchScript deprecated in favour of torch.export; the issue asks for a
        # TorchScript file because every serving stack still loads it.
        warnings.simplefilter("ignore", FutureWarning)
        traced = torch.jit.trace(eager, example, check_trace=False)  # checked below, after a reload
        torch.jit.save(traced, str(path))
        reloaded = torch.jit.load(str(path))
        gap = (reloaded(example) - eager(example)).abs().max().item()
    if gap > TORCHSCRIPT_TOLERANCE:
        raise PublishError(f"TorchScript export differs from the model by {gap:.2e} (> {TORCHSCRIPT_TOLERANCE})")


def metrics_document(outcome: TrainingOutcome) -> dict[str, Any]:
    evaluation = outcome.evaluation
    return {
        "accuracy": evaluation.accuracy,  # correct / total, for people; the gate decides on the counts
        "correct": evaluation.correct,
        "total": evaluation.total,
        "loss": evaluation.loss,
        "test_images": evaluation.n,
        "per_class_accuracy": evaluation.per_class_accuracy,
        "confusion_matrix": {"classes": list(outcome.classes), "rows_true_columns_predicted": evaluation.confusion},
        "epochs": [r.to_dict() for r in outcome.history],
        **({} if outcome.validation is None else {"validation": outcome.validation.to_dict()}),
    }


def throughput(history: Sequence[EpochResult], train_images: int) -> tuple[float, float]:
    """(training seconds over all epochs, training images per second)."""
    seconds = sum(r.seconds for r in history)
    return seconds, (train_images * len(history) / seconds if seconds > 0 else 0.0)


def estimated_cost(config: TrainConfig, wall_seconds: float) -> dict[str, Any]:
    return {
        "usd": round(wall_seconds / 3600 * config.cost_per_hour, 4),
        "usd_per_hour": config.cost_per_hour,
        "basis": "wall time of all attempts x cost_per_hour (TrainConfig: Fargate on-demand, 2 vCPU + 4 GiB, "
        "us-east-1, from aws.amazon.com/fargate/pricing); Fargate Spot costs up to 70 % less",
        "estimate": True,
    }


def build_manifest(
    config: TrainConfig, run_id: str, version: str, outcome: TrainingOutcome, now: datetime
) -> dict[str, Any]:
    training_seconds, images_per_s = throughput(outcome.history, int(outcome.dataset.get("train_images", 0)))
    return {
        "schema": MANIFEST_SCHEMA,
        "model_name": config.model_name,
        "version": version,
        "run_id": run_id,
        "attempt": config.attempt,
        "created_at": now.strftime("%Y-%m-%dT%H:%M:%SZ"),
        "git_sha": config.git_sha or None,
        "image_digest": config.image_digest or None,
        "dataset": dict(outcome.dataset),
        "config": config.to_dict(),
        "model_config": dict(outcome.model_config),
        "parameters": sum(p.numel() for p in outcome.model.parameters()),
        "versions": {
            "python": platform.python_version(),
            "torch": torch.__version__,
            "torchvision": torchvision.__version__,
            "platform": platform.platform(),
        },
        "hardware": dict(outcome.hardware),
        "precision": outcome.precision,
        "wall_seconds": round(outcome.wall_seconds, 3),
        "throughput": {"training_seconds": round(training_seconds, 3), "images_per_s": round(images_per_s, 1)},
        # What ran: the small-data rule (trainer.recipe.fit_batch) may shrink the batch and scale the lr with it.
        "effective": {
            "batch_size": (outcome.effective or {}).get("batch_size", config.batch_size),
            "lr": (outcome.effective or {}).get("lr", config.lr),
            "configured_batch_size": config.batch_size,
            "configured_lr": config.lr,
        },
        "estimated_cost": estimated_cost(config, outcome.wall_seconds),
        "metrics": {
            "accuracy": outcome.evaluation.accuracy,
            **outcome.evaluation.counts.to_dict(),
            "loss": outcome.evaluation.loss,
            **({} if outcome.validation is None else {"validation": outcome.validation.to_dict()}),
        },
    }


# --- publishing -------------------------------------------------------------------------------


def _accept_if_identical(store: Store, key: str, sha256: str, refused: PreconditionFailed) -> None:
    """A create-only write found the object already there: fine if it holds our bytes, else refuse.

    The SDK retries a PUT whose response was lost; when the first try committed, the retry's
    `If-None-Match: *` fails although the object is exactly ours. Anything else at the key is
    another writer's: versions are never overwritten.
    """
    try:
        existing = hashlib.sha256(store.get(key)).hexdigest()
    except NotFound:
        existing = None  # refused, yet gone: not ours to reason about
    if existing == sha256:
        log.info("%s already holds the bytes being published (an earlier try committed); keeping it", refused.uri)
        return
    raise VersionExistsError(
        f"version {store.uri_of(key.rpartition('/')[0] + '/')} already has files ({refused.uri} holds sha256 "
        f"{existing or 'unknown'}, not the {sha256} being published); versions are never overwritten"
    ) from refused


def _replace_leftover(store: Store, key: str, path: Path, refused: PreconditionFailed) -> None:
    """Replace a file an interrupted earlier attempt of this run left in the (unpublished) version."""
    try:
        _, etag = store.get_with_etag(key)
    except NotFound:
        etag = None
    log.warning("%s is left over from an interrupted publish of this run; replacing it", refused.uri)
    if etag is None:
        store.put(key, path.read_bytes(), if_none_match=True)
    else:
        store.put(key, path.read_bytes(), if_match=etag)


def publish_version(
    store: Store,
    config: TrainConfig,
    *,
    run_id: str,
    version: str,
    outcome: TrainingOutcome,
    now: datetime,
    replace_leftovers: bool = False,
    fence: Callable[[str], None] | None = None,
) -> PublishedVersion:
    """Write every file of the version, then its manifest; refuse if the version already exists.

    replace_leftovers: the caller holds the run's lease and the attempt that held it before has provably
    ended (trainer.runstate.TAKEOVER_ENDED), so files already in this unpublished version (no manifest) are
    that attempt's leftovers: they are replaced, not refused. Without that proof a differing file is
    refused (VersionExistsError). The manifest is create-only either way.

    fence(step): the run's fencing check (trainer.runstate.heartbeat), called immediately before each
    replaced file and before the manifest PUT; it raises when this trainer lost its lease, and then nothing
    more is written.
    """
    prefix = version_prefix(config.model_name, version)
    if store.exists(prefix + MANIFEST):
        raise VersionExistsError(f"version {store.uri_of(prefix)} is already published; versions are never overwritten")

    # 1. build every file locally, from finite weights only
    bad = non_finite_tensors(outcome.model.state_dict())
    if bad:
        raise PublishError(f"the model has non-finite weights ({', '.join(bad[:3])}); not publishing it")
    folder = Path(config.work_dir) / "publish" / config.model_name / version
    folder.mkdir(parents=True, exist_ok=True)
    write_local(
        lambda: write_model(outcome.model, outcome.model_config, outcome.classes, folder / MODEL_FILE),
        folder / MODEL_FILE,
        "the model file",
    )
    write_local(
        lambda: write_torchscript(outcome.model, folder / TORCHSCRIPT_FILE),
        folder / TORCHSCRIPT_FILE,
        "the TorchScript file",
    )
    metrics = metrics_document(outcome)
    (folder / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    title = f"{config.model_name} {version}"
    plot_curves(outcome.history, folder / CURVES_FILE, title=title, floor=float(config.accuracy_floor))
    manifest = build_manifest(config, run_id, version, outcome, now)
    (folder / REPORT_FILE).write_text(render_report(manifest, metrics, store.uri_of(prefix + CURVES_FILE)))
    manifest["files"] = {
        name: {"sha256": sha256_file(folder / name), "bytes": (folder / name).stat().st_size} for name in VERSION_FILES
    }

    # 2. upload them create-only, then the manifest: the version becomes visible in one write
    for name in VERSION_FILES:
        try:
            store.upload_file(
                folder / name, prefix + name, if_none_match=True, sha256=manifest["files"][name]["sha256"]
            )
        except PreconditionFailed as exc:
            try:
                _accept_if_identical(store, prefix + name, manifest["files"][name]["sha256"], exc)
            except VersionExistsError:
                if not replace_leftovers or store.exists(prefix + MANIFEST):
                    raise
                if fence is not None:
                    fence(f"replacing {name}")
                _replace_leftover(store, prefix + name, folder / name, exc)
    body = json.dumps(manifest, indent=2).encode() + b"\n"
    if fence is not None:
        fence("the manifest PUT")  # the commit point: only the lease holder makes the version visible
    try:
        store.put(prefix + MANIFEST, body, if_none_match=True)
    except PreconditionFailed as exc:
        _accept_if_identical(store, prefix + MANIFEST, hashlib.sha256(body).hexdigest(), exc)
    log.info("published %s (accuracy %s)", store.uri_of(prefix), outcome.evaluation.counts)
    return PublishedVersion(config.model_name, version, store.uri_of(prefix), manifest)
