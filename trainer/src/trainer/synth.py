"""A small, learnable stand-in for CIFAR-10, written in the exact CIFAR-10 python format.

Ten classes of procedurally drawn shapes and textures (disk, square, triangle, ring, cross, horizontal
stripes, vertical stripes, diagonal stripes, checkerboard, dot grid), each image with a random
background and foreground colour, position, scale, stripe period and Gaussian pixel noise. The classes
survive the training augmentation (crops, horizontal flips). A small CNN separates them in a few epochs.

`--hard` draws a harder variant, for comparisons that must not saturate (bf16 against fp32 in
`make bench`): smaller shapes in colours closer to the background, stronger noise, a distractor blob of
clutter, and a share of labels replaced by a random class in both splits (so no model can exceed
~1 - 0.9 x that share on the test split).

    python -m trainer.synth --out .pushtrain/data                 # cifar-10-batches-py/ under it
    python -m trainer.synth --out DIR --train 5000 --test 1000 --archive DIR/cifar-10-python.tar.gz
    python -m trainer.synth --out DIR --hard

The folder holds data_batch_1..5, test_batch and batches.meta (pickled dicts with "data" uint8 Nx3072,
"labels", "filenames", "batch_label"), exactly what torchvision's CIFAR10 reads, plus
`pushtrain-synth.json`: a manifest with each file's md5, which the trainer's reader checks in place of
the official md5s (see trainer.data). Output is a pure function of the arguments (same seed, same bytes).
"""

from __future__ import annotations

import argparse
import gzip
import hashlib
import io
import json
import pickle
import sys
import tarfile
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np

from trainer.cli_common import COMMAND

BATCH_FOLDER = "cifar-10-batches-py"
MANIFEST = "pushtrain-synth.json"
GENERATOR = "trainer.synth"
CLASSES = (
    "disk",
    "square",
    "triangle",
    "ring",
    "cross",
    "hstripes",
    "vstripes",
    "diagonal",
    "checker",
    "dots",
)
TRAIN_BATCHES = 5
SIZE = 32  # pixels per side
NOISE_STD = 12.0  # pixel noise, in uint8 levels


@dataclass(frozen=True)
class Difficulty:
    """How hard the generated images are to tell apart."""

    radius: tuple[float, float] = (6.0, 10.0)  # shape size range, pixels
    min_contrast: float = 150.0  # least summed |foreground - background| over the channels, uint8 levels
    noise_std: float = NOISE_STD  # Gaussian pixel noise, uint8 levels
    clutter: bool = False  # add one distractor blob in a random colour
    label_noise: float = 0.0  # share of labels replaced by a uniformly random class (train and test)


EASY = Difficulty()
HARD = Difficulty(radius=(3.5, 7.0), min_contrast=45.0, noise_std=40.0, clutter=True, label_noise=0.1)


def _soft(distance_inside: np.ndarray) -> np.ndarray:
    """Anti-aliased coverage from a signed distance in pixels (positive inside)."""
    return np.clip(distance_inside + 0.5, 0.0, 1.0)


def _masks(  # noqa: PLR0911 -- one return per class
    label: int, n: int, rng: np.random.Generator, radius: tuple[float, float] = EASY.radius
) -> np.ndarray:
    """n coverage masks (nx32x32 floats in [0, 1]) for one class."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    yy, xx = yy[None], xx[None]
    cy = rng.uniform(11, 21, (n, 1, 1)).astype(np.float32)
    cx = rng.uniform(11, 21, (n, 1, 1)).astype(np.float32)
    r = rng.uniform(*radius, (n, 1, 1)).astype(np.float32)
    period = rng.uniform(4, 8, (n, 1, 1)).astype(np.float32)
    phase = rng.uniform(0, 8, (n, 1, 1)).astype(np.float32)
    dy, dx = yy - cy, xx - cx
    dist = np.sqrt(dy**2 + dx**2)
    if label == 0:  # disk
        return _soft(r - dist)
    if label == 1:  # square
        return _soft(r * 0.85 - np.maximum(np.abs(dy), np.abs(dx)))
    if label == 2:  # triangle pointing up: below the two slanted edges, above the base
        base = _soft(r * 0.7 - dy)
        sides = _soft((dy + r) * 0.55 - np.abs(dx))
        return base * sides
    if label == 3:  # ring
        return _soft(r * 0.3 - np.abs(dist - r * 0.75))
    if label == 4:  # plus-shaped cross
        arm = r * 0.28
        horizontal = _soft(arm - np.abs(dy)) * _soft(r - np.abs(dx))
        vertical = _soft(arm - np.abs(dx)) * _soft(r - np.abs(dy))
        return np.maximum(horizontal, vertical)
    if label == 5:  # horizontal stripes
        return (np.sin(2 * np.pi * (yy + phase) / period) > 0).astype(np.float32)
    if label == 6:  # vertical stripes
        return (np.sin(2 * np.pi * (xx + phase) / period) > 0).astype(np.float32)
    if label == 7:  # diagonal stripes (a mirror image is still diagonal stripes)
        return (np.sin(2 * np.pi * (xx + yy + phase) / (period * 1.4)) > 0).astype(np.float32)
    if label == 8:  # checkerboard
        cells = np.floor((yy + phase) / period) + np.floor((xx + phase) / period)
        return (cells % 2).astype(np.float32)
    # 9: a grid of dots
    gy = (yy + phase) % period - period / 2
    gx = (xx + phase) % period - period / 2
    return _soft(period * 0.22 - np.sqrt(gy**2 + gx**2))


def _clutter(n: int, rng: np.random.Generator) -> np.ndarray:
    """n masks of one small soft blob each, anywhere in the image."""
    yy, xx = np.mgrid[0:SIZE, 0:SIZE].astype(np.float32)
    cy = rng.uniform(0, SIZE, (n, 1, 1)).astype(np.float32)
    cx = rng.uniform(0, SIZE, (n, 1, 1)).astype(np.float32)
    r = rng.uniform(2, 5, (n, 1, 1)).astype(np.float32)
    return _soft(r - np.sqrt((yy[None] - cy) ** 2 + (xx[None] - cx) ** 2))


def generate(n: int, seed: int, difficulty: Difficulty = EASY) -> tuple[np.ndarray, np.ndarray]:
    """n images (uint8 nx3x32x32) with balanced labels (int64 n) in a seeded random order."""
    rng = np.random.default_rng(seed)
    labels = np.arange(n, dtype=np.int64) % len(CLASSES)
    rng.shuffle(labels)
    images = np.empty((n, 3, SIZE, SIZE), dtype=np.uint8)
    for label in range(len(CLASSES)):
        where = np.flatnonzero(labels == label)
        if where.size == 0:
            continue
        k = where.size
        mask = _masks(label, k, rng, difficulty.radius)[:, None]  # kx1x32x32
        background = rng.uniform(0, 255, (k, 3, 1, 1))
        foreground = rng.uniform(0, 255, (k, 3, 1, 1))
        # keep the two colours apart so that every shape is visible
        too_close = np.abs(foreground - background).sum(axis=1, keepdims=True) < difficulty.min_contrast
        foreground = np.where(too_close, 255 - background, foreground)
        pixels = background * (1 - mask) + foreground * mask
        if difficulty.clutter:
            blob = _clutter(k, rng)[:, None]
            pixels = pixels * (1 - blob) + rng.uniform(0, 255, (k, 3, 1, 1)) * blob
        pixels += rng.normal(0, difficulty.noise_std, (k, 3, SIZE, SIZE))
        images[where] = np.clip(np.rint(pixels), 0, 255).astype(np.uint8)
    if difficulty.label_noise:
        relabel = rng.random(n) < difficulty.label_noise
        labels[relabel] = rng.integers(0, len(CLASSES), int(relabel.sum()))
    return images, labels


def _batch_bytes(images: np.ndarray, labels: np.ndarray, batch_label: str, offset: int) -> bytes:
    record = {
        "batch_label": batch_label,
        "labels": [int(v) for v in labels],
        "data": images.reshape(len(images), -1),
        "filenames": [f"{CLASSES[int(v)]}_s_{offset + i:06d}.png" for i, v in enumerate(labels)],
    }
    return pickle.dumps(record, protocol=2)


def dataset_files(n_train: int, n_test: int, seed: int, difficulty: Difficulty = EASY) -> dict[str, bytes]:
    """The files of cifar-10-batches-py/ (name -> bytes), manifest included."""
    if n_train < TRAIN_BATCHES or n_test < 1:
        raise ValueError(f"need at least {TRAIN_BATCHES} training and 1 test image, got {n_train} and {n_test}")
    train_images, train_labels = generate(n_train, seed, difficulty)
    test_images, test_labels = generate(n_test, seed + 1_000_003, difficulty)  # another stream than training
    files: dict[str, bytes] = {}
    bounds = np.linspace(0, n_train, TRAIN_BATCHES + 1).astype(int)
    for b in range(TRAIN_BATCHES):
        lo, hi = int(bounds[b]), int(bounds[b + 1])
        files[f"data_batch_{b + 1}"] = _batch_bytes(
            train_images[lo:hi], train_labels[lo:hi], f"training batch {b + 1} of {TRAIN_BATCHES}", lo
        )
    files["test_batch"] = _batch_bytes(test_images, test_labels, "testing batch 1 of 1", 0)
    meta = {"num_cases_per_batch": int(bounds[1]), "label_names": list(CLASSES), "num_vis": 3 * SIZE * SIZE}
    files["batches.meta"] = pickle.dumps(meta, protocol=2)
    manifest = {
        "generator": GENERATOR,
        "schema": 1,
        "seed": seed,
        "train": n_train,
        "test": n_test,
        "md5": {name: hashlib.md5(data, usedforsecurity=False).hexdigest() for name, data in files.items()},
    }
    if difficulty != EASY:
        manifest["difficulty"] = asdict(difficulty)
    files[MANIFEST] = (json.dumps(manifest, indent=2, sort_keys=True) + "\n").encode()
    return files


def write_folder(
    out: str | Path, n_train: int = 5000, n_test: int = 1000, seed: int = 0, difficulty: Difficulty = EASY
) -> Path:
    """Write `<out>/cifar-10-batches-py/` and return that folder."""
    folder = Path(out) / BATCH_FOLDER
    folder.mkdir(parents=True, exist_ok=True)
    for name, data in dataset_files(n_train, n_test, seed, difficulty).items():
        (folder / name).write_bytes(data)
    return folder


def write_archive(
    path: str | Path, n_train: int = 5000, n_test: int = 1000, seed: int = 0, difficulty: Difficulty = EASY
) -> Path:
    """Write a `cifar-10-python.tar.gz`-shaped archive (byte-identical for the same arguments)."""
    target = Path(path)
    target.parent.mkdir(parents=True, exist_ok=True)
    raw = io.BytesIO()
    with tarfile.open(fileobj=raw, mode="w", format=tarfile.PAX_FORMAT) as tar:
        folder = tarfile.TarInfo(BATCH_FOLDER)
        folder.type, folder.mode = tarfile.DIRTYPE, 0o755
        tar.addfile(folder)
        for name, data in sorted(dataset_files(n_train, n_test, seed, difficulty).items()):
            info = tarfile.TarInfo(f"{BATCH_FOLDER}/{name}")
            info.size, info.mode = len(data), 0o644
            tar.addfile(info, io.BytesIO(data))
    with target.open("wb") as fh, gzip.GzipFile(filename="", mode="wb", fileobj=fh, mtime=0) as gz:
        gz.write(raw.getvalue())
    return target


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog=f"{COMMAND} synth", description=__doc__.split("\n\n")[0])
    parser.add_argument("--out", required=True, help="folder to write cifar-10-batches-py/ into")
    parser.add_argument("--train", type=int, default=5000, help="training images (default 5000)")
    parser.add_argument("--test", type=int, default=1000, help="test images (default 1000)")
    parser.add_argument("--seed", type=int, default=0, help="random seed (default 0)")
    parser.add_argument("--archive", help="also write a cifar-10-python.tar.gz-shaped archive to this path")
    parser.add_argument("--hard", action="store_true", help="the harder variant (see the module docstring)")
    args = parser.parse_args(argv)
    difficulty = HARD if args.hard else EASY
    try:
        folder = write_folder(args.out, args.train, args.test, args.seed, difficulty)
        if args.archive:
            write_archive(args.archive, args.train, args.test, args.seed, difficulty)
    except ValueError as err:
        parser.error(str(err))
    print(json.dumps({"event": "synth", "folder": str(folder), "archive": args.archive, "train": args.train}))
    return 0


if __name__ == "__main__":
    sys.exit(main())
