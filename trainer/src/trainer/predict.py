"""`pushtrain models predict [VERSION|champion] FILES…`: call a published model on images.

    pushtrain models predict champion cat.png ship.jpg          # one JSON line per image
    pushtrain models predict 20261125T190312Z-push-… batch.npy   # a batch: one line per row
    pushtrain models predict cat.png --top-k 3                   # the champion, the 3 likeliest classes

Before anything runs, every file of the version is checked against its manifest's sha256
(trainer.registry.verify_files, the check `models show` and `models promote` use), and the
TorchScript export is loaded once from the bytes that were checked. Inputs are read and checked
before the model runs, so a bad file costs no inference and prints no half answer:

- PNG or JPEG: 32x32 pixels (the model's input; nothing is resized behind your back), converted
  to RGB;
- `.npy`: a batch, uint8 N x 32 x 32 x 3 (CIFAR-10's layout) or N x 3 x 32 x 32, or float
  N x 3 x 32 x 32 in [0, 1]; read with allow_pickle=False.

Each output line: {"file", "index" (the row of a .npy batch), "class", "probability", "top_k":
[{"class", "probability"}, …]}. Exit codes: 0 predicted; 1 the version is missing or damaged;
2 bad usage or an input that is unreadable or of the wrong size (one line naming it).
"""

from __future__ import annotations

import hashlib
import io
import json
import re
import warnings
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from trainer.registry import champion_record, verify_files
from trainer.store import NotFound, Store
from trainer.versions import METRICS_FILE, TORCHSCRIPT_FILE, read_manifest, version_prefix

SIDE = 32  # pixels: what every model takes (trainer.nets), RGB
IMAGE_SUFFIXES = {".png", ".jpg", ".jpeg"}
CHAMPION = "champion"
_VERSION = re.compile(r"[0-9]{8}T[0-9]{6}Z-[A-Za-z0-9._-]+")


class InputError(Exception):
    """An input file that cannot be used: unreadable, not an image, or not 32x32 RGB."""


class ModelError(Exception):
    """The version cannot be used: not published, damaged (a sha256 mismatch), or no champion."""


@dataclass(frozen=True)
class Inputs:
    """Images as float32 N x 3 x 32 x 32 in [0, 1], each with the file (and row) it came from."""

    images: np.ndarray
    sources: list[tuple[str, int | None]]


def split_target(args: Sequence[str]) -> tuple[str, list[str]]:
    """(version or "champion", files): the version is optional, the champion by default."""
    if args and (args[0] == CHAMPION or (_VERSION.fullmatch(args[0]) and not Path(args[0]).exists())):
        return args[0], list(args[1:])
    return CHAMPION, list(args)


# --- the inputs ---------------------------------------------------------------------------------


def _image(path: Path) -> np.ndarray:
    from PIL import Image, UnidentifiedImageError

    try:
        with Image.open(path) as image:
            if image.size != (SIDE, SIDE):
                width, height = image.size
                raise InputError(f"{path}: {width}x{height} pixels; the model takes {SIDE}x{SIDE} RGB images")
            pixels = np.asarray(image.convert("RGB"), dtype=np.uint8)
    except (UnidentifiedImageError, OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable PNG or JPEG ({type(exc).__name__}: {exc})") from exc
    return pixels.transpose(2, 0, 1)[None].astype(np.float32) / 255.0


def _batch(path: Path) -> np.ndarray:
    try:
        array = np.load(path, allow_pickle=False)
    except (OSError, ValueError) as exc:
        raise InputError(f"{path}: not a readable .npy array ({type(exc).__name__}: {exc})") from exc
    if array.ndim == 4 and array.shape[1:] == (SIDE, SIDE, 3):
        array = array.transpose(0, 3, 1, 2)  # CIFAR-10's N x H x W x C
    if array.ndim != 4 or array.shape[1:] != (3, SIDE, SIDE) or array.shape[0] == 0:
        raise InputError(f"{path}: shape {array.shape}; want N x 32 x 32 x 3 or N x 3 x 32 x 32 (N >= 1)")
    if array.dtype == np.uint8:
        return array.astype(np.float32) / 255.0
    if array.dtype.kind != "f":
        raise InputError(f"{path}: dtype {array.dtype}; want uint8 (0..255) or float (0..1)")
    if not np.isfinite(array).all() or array.min() < 0 or array.max() > 1:
        raise InputError(f"{path}: float values must be finite and in [0, 1]")
    return array.astype(np.float32)


def read_inputs(files: Sequence[str]) -> Inputs:
    """Every file read and checked (InputError naming the first bad one) before anything is predicted."""
    if not files:
        raise InputError("no input files: give PNG/JPEG images (32x32) or .npy batches")
    arrays, sources = [], []
    for name in files:
        path = Path(name)
        if not path.is_file():
            raise InputError(f"{path}: no such file")
        suffix = path.suffix.lower()
        if suffix == ".npy":
            batch = _batch(path)
            arrays.append(batch)
            sources += [(name, row) for row in range(len(batch))]
        elif suffix in IMAGE_SUFFIXES:
            arrays.append(_image(path))
            sources.append((name, None))
        else:
            raise InputError(f"{path}: unknown kind {suffix or '(no suffix)'!r}; want .png, .jpg, .jpeg or .npy")
    return Inputs(np.concatenate(arrays), sources)


# --- the model ----------------------------------------------------------------------------------


@dataclass
class Predictor:
    """A verified version's TorchScript model and class names, loaded once."""

    version: str
    classes: list[str]
    model: Any

    def predict(self, inputs: Inputs, top_k: int, batch_size: int = 256) -> list[dict[str, Any]]:
        import torch

        k = min(top_k, len(self.classes))
        lines = []
        with torch.inference_mode():
            for start in range(0, len(inputs.images), batch_size):
                images = torch.from_numpy(inputs.images[start : start + batch_size])
                probabilities = torch.softmax(self.model(images).float(), dim=1)
                best = torch.topk(probabilities, k, dim=1)
                for row in range(len(images)):
                    file, index = inputs.sources[start + row]
                    ranked = [
                        {"class": self.classes[int(c)], "probability": round(float(p), 6)}
                        for p, c in zip(best.values[row], best.indices[row], strict=True)
                    ]
                    line = {"file": file, **({} if index is None else {"index": index}), **ranked[0]}
                    lines.append({**line, "top_k": ranked} if top_k > 1 else line)
        return lines


def load_predictor(store: Store, model_name: str, target: str) -> Predictor:
    """The version (or the champion) after its files matched the manifest's sha256; ModelError otherwise."""
    import torch

    version = target
    if target == CHAMPION:
        champion = champion_record(store, model_name)
        if champion is None:
            raise ModelError(f"no champion for {model_name!r} in {store.uri} yet: name a version (models list)")
        version = str(champion["version"])
    try:
        manifest = read_manifest(store, model_name, version)
    except NotFound as exc:
        raise ModelError(f"no published version {version!r} of {model_name!r} in {store.uri}") from exc
    problems = verify_files(store, model_name, version, manifest)
    if problems:
        raise ModelError(f"{version} is damaged, not loading it: {'; '.join(problems)}")
    prefix = version_prefix(model_name, version)
    data = store.get(prefix + TORCHSCRIPT_FILE)
    # the bytes loaded are the bytes checked: a version is create-only, so bytes that differ from the manifest
    # while S3's stored checksum agreed with it mean a forged checksum or a damaged object, never a retry
    expected = manifest["files"][TORCHSCRIPT_FILE]
    expected = expected.get("sha256") if isinstance(expected, dict) else expected
    if hashlib.sha256(data).hexdigest() != str(expected).removeprefix("sha256:"):
        raise ModelError(
            f"{version} is damaged, not loading it: the bytes of {TORCHSCRIPT_FILE} read do not match the "
            "manifest's sha256 (though S3's stored checksum did)"
        )
    metrics = json.loads(store.get(prefix + METRICS_FILE))
    classes = [str(c) for c in metrics["confusion_matrix"]["classes"]]
    with warnings.catch_warnings():  # TorchScript is the format a version carries; torch 2.x warns it is legacy
        warnings.simplefilter("ignore", FutureWarning)
        model = torch.jit.load(io.BytesIO(data), map_location="cpu").eval()
    return Predictor(version, classes, model)
