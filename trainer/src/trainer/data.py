"""CIFAR-10 in torchvision's on-disk format, loaded once as uint8 tensors, augmented a whole batch at a time.

Where the data comes from (`data_uri`):
- a local folder holding `cifar-10-batches-py/` or `cifar-10-python.tar.gz` (or either one named directly);
- `s3://bucket/key/cifar-10-python.tar.gz`: downloaded once into `<work_dir>/datasets/`, verified, extracted;
- `download`: torchvision's downloader into `<work_dir>/datasets/download` (needs the internet).

Integrity: the official archive's md5 (c58f3010...) and the official md5 of every batch file are checked
on every read; a mismatch is an error that names the file and both checksums. Generated data
(`trainer.synth`) carries `pushtrain-synth.json` with its own md5s, which are checked instead:
torchvision 0.29's `CIFAR10` insists on the official md5s, so the reader is a subclass that is told which
md5s to expect. Either way the pixels go through torchvision's own reading code.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import logging
import shutil
import tarfile
import tempfile
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torchvision.datasets import CIFAR10

from trainer.config import ConfigError, TrainConfig, local_path, parse_s3_uri
from trainer.recipe import alternating_flip
from trainer.synth import BATCH_FOLDER, GENERATOR, MANIFEST

log = logging.getLogger(__name__)

ARCHIVE_NAME = "cifar-10-python.tar.gz"
OFFICIAL_ARCHIVE_MD5 = CIFAR10.tgz_md5
OFFICIAL_MD5 = dict(CIFAR10.train_list + CIFAR10.test_list) | {CIFAR10.meta["filename"]: CIFAR10.meta["md5"]}
TRAIN_FILES = tuple(name for name, _ in CIFAR10.train_list)
TEST_FILES = tuple(name for name, _ in CIFAR10.test_list)
META_FILE = CIFAR10.meta["filename"]
DATA_FILES = (*TRAIN_FILES, *TEST_FILES, META_FILE)


class DatasetError(RuntimeError):
    """The dataset is missing, corrupted or not CIFAR-10; the message says what and where."""


class DatasetNotFoundError(DatasetError):
    """No dataset where the configuration points; the message lists where it looked."""


@dataclass(frozen=True)
class Cifar10Data:
    """The whole dataset in memory: uint8 images Nx3x32x32 and int64 labels, plus provenance."""

    train_images: torch.Tensor
    train_labels: torch.Tensor
    test_images: torch.Tensor
    test_labels: torch.Tensor
    classes: tuple[str, ...]
    checksum: str  # "md5:<archive md5>" when read from an archive, else "sha256:<hash of the six batch files>"
    source: str  # the data_uri it came from, and the folder it was read from
    generated: bool  # True for trainer.synth data
    val_images: torch.Tensor | None = None  # the held-out validation set (split_validation), else None
    val_labels: torch.Tensor | None = None

    @property
    def num_classes(self) -> int:
        return len(self.classes)

    def describe(self) -> dict[str, object]:
        """Provenance for the manifest."""
        return {
            "checksum": self.checksum,
            "source": self.source,
            "generated": self.generated,
            "train_images": len(self.train_labels),
            "test_images": len(self.test_labels),
            "classes": list(self.classes),
            "validation_images": 0 if self.val_labels is None else len(self.val_labels),
        }


# --- reading the on-disk format -------------------------------------------------------------------


def _md5(path: Path) -> str:
    digest = hashlib.md5(usedforsecurity=False)
    with path.open("rb") as fh:
        for chunk in iter(lambda: fh.read(1 << 20), b""):
            digest.update(chunk)
    return digest.hexdigest()


class _VerifiedCIFAR10(CIFAR10):
    """torchvision's CIFAR10 reader, checking the md5s it is given instead of the official ones."""

    def __init__(self, root: Path, *, train: bool, expected_md5: dict[str, str]) -> None:
        self.train_list = [[name, expected_md5[name]] for name in TRAIN_FILES]
        self.test_list = [[name, expected_md5[name]] for name in TEST_FILES]
        self.meta = {**CIFAR10.meta, "md5": expected_md5[META_FILE]}
        super().__init__(str(root), train=train, download=False)


def _expected_md5(batches: Path) -> tuple[dict[str, str], bool]:
    """The md5s to check `batches` against (official, or the synth manifest's) and whether it is generated."""
    manifest_path = batches / MANIFEST
    if not manifest_path.exists():
        return OFFICIAL_MD5, False
    try:
        manifest = json.loads(manifest_path.read_text(encoding="utf-8"))
        md5 = manifest["md5"]
        if manifest.get("generator") != GENERATOR or not all(isinstance(md5.get(n), str) for n in DATA_FILES):
            raise DatasetError(
                f"{manifest_path}: not a {GENERATOR} manifest listing the md5 of {', '.join(DATA_FILES)}"
            )
    except (json.JSONDecodeError, KeyError, TypeError, AttributeError) as err:
        raise DatasetError(f"{manifest_path}: unreadable dataset manifest ({err})") from err
    return {name: md5[name] for name in DATA_FILES}, True


def verify_folder(batches: Path) -> bool:
    """Check every file of `cifar-10-batches-py/` against its expected md5; return whether it is generated."""
    expected, generated = _expected_md5(batches)
    for name in DATA_FILES:
        path = batches / name
        if not path.is_file():
            raise DatasetNotFoundError(f"CIFAR-10 file missing: {path}")
        actual = _md5(path)
        if actual != expected[name]:
            kind = f"the md5 in {MANIFEST}" if generated else "the official CIFAR-10 md5"
            raise DatasetError(
                f"{path}: md5 {actual} does not match {kind} {expected[name]}: the file is corrupted or not "
                "CIFAR-10 (generated datasets carry their own manifest, see `python -m trainer.synth`)"
            )
    return generated


def read_folder(batches: Path, source: str, archive_md5: str | None = None) -> Cifar10Data:
    """Read a verified `cifar-10-batches-py/` folder into uint8 tensors."""
    generated = verify_folder(batches)
    expected, _ = _expected_md5(batches)
    splits = [_VerifiedCIFAR10(batches.parent, train=train, expected_md5=expected) for train in (True, False)]
    tensors = []
    for split in splits:
        images = torch.from_numpy(np.ascontiguousarray(split.data.transpose(0, 3, 1, 2)))  # NHWC -> NCHW
        tensors += [images, torch.tensor(split.targets, dtype=torch.int64)]
    if archive_md5 is not None:
        checksum = f"md5:{archive_md5}"
    else:
        digest = hashlib.sha256()
        for name in (*TRAIN_FILES, *TEST_FILES):
            digest.update((batches / name).read_bytes())
        checksum = f"sha256:{digest.hexdigest()}"
    return Cifar10Data(
        *tensors, classes=tuple(splits[0].classes), checksum=checksum, source=source, generated=generated
    )


# --- archives --------------------------------------------------------------------------------------


def extract_archive(archive: Path, cache: Path) -> tuple[Path, str]:
    """Extract `archive` (official md5, or a generated one whose files match its manifest) into a cache folder.

    Returns the `cifar-10-batches-py/` folder and the archive's md5. Extraction goes to a temporary
    folder that is renamed into place, so an interrupted extraction is never mistaken for a finished one.
    """
    md5 = _md5(archive)
    target = cache / f"extracted-{md5}"
    if not (target / BATCH_FOLDER).is_dir():
        target.parent.mkdir(parents=True, exist_ok=True)
        scratch = Path(tempfile.mkdtemp(prefix="extract-", dir=target.parent))
        try:
            with tarfile.open(archive, "r:gz") as tar:
                tar.extractall(scratch, filter="data")  # "data" refuses links and paths outside scratch
        except (tarfile.TarError, OSError, EOFError) as err:
            shutil.rmtree(scratch, ignore_errors=True)
            raise DatasetError(f"{archive}: cannot extract ({err}); archive md5 {md5}") from err
        if not (scratch / BATCH_FOLDER).is_dir():
            shutil.rmtree(scratch, ignore_errors=True)
            raise DatasetError(f"{archive}: no {BATCH_FOLDER}/ inside (archive md5 {md5})")
        try:
            scratch.rename(target)
        except OSError:  # another process finished first
            shutil.rmtree(scratch, ignore_errors=True)
    batches = target / BATCH_FOLDER
    if md5 != OFFICIAL_ARCHIVE_MD5 and not (batches / MANIFEST).exists():
        raise DatasetError(
            f"{archive}: md5 {md5} is not the official {ARCHIVE_NAME} md5 {OFFICIAL_ARCHIVE_MD5}, and the "
            f"archive carries no {MANIFEST} of a generated dataset: corrupted or not CIFAR-10"
        )
    return batches, md5


def _download_s3(uri: str, cache: Path) -> Path:
    """Download the object once into the cache (kept while its ETag is unchanged)."""
    import boto3
    from botocore.config import Config as BotoConfig
    from botocore.exceptions import BotoCoreError, ClientError

    bucket, key = parse_s3_uri(uri, "data_uri", key_required=True)
    local = cache / "s3" / bucket / key
    etag_file = local.with_name(local.name + ".etag")
    s3 = boto3.client("s3", config=BotoConfig(retries={"mode": "standard", "max_attempts": 5}))
    try:
        etag = s3.head_object(Bucket=bucket, Key=key)["ETag"]
        if local.is_file() and etag_file.is_file() and etag_file.read_text(encoding="utf-8") == etag:
            log.info("dataset %s already cached at %s", uri, local)
            return local
        local.parent.mkdir(parents=True, exist_ok=True)
        partial = local.with_name(local.name + ".partial")
        s3.download_file(bucket, key, str(partial))
    except ClientError as err:
        code = err.response.get("Error", {}).get("Code", "")
        if code in {"404", "NoSuchKey", "NoSuchBucket"}:
            raise DatasetNotFoundError(f"CIFAR-10 archive not found: looked for {uri} ({code})") from err
        raise DatasetError(f"cannot download {uri}: {err}") from err
    except BotoCoreError as err:
        raise DatasetError(f"cannot download {uri}: {err}") from err
    partial.replace(local)
    etag_file.write_text(etag, encoding="utf-8")
    log.info("downloaded %s to %s", uri, local)
    return local


def _local_batches(root: Path, cache: Path) -> tuple[Path, str | None]:
    """Find the batch folder for a local data_uri: a batches folder, a folder holding one, or an archive."""
    candidates = [root] if root.name == BATCH_FOLDER else [root / BATCH_FOLDER]
    for batches in candidates:
        if (batches / TRAIN_FILES[0]).exists() or (batches / META_FILE).exists():
            return batches, None
    archives = [root] if root.is_file() else [root / ARCHIVE_NAME]
    for archive in archives:
        if archive.is_file():
            return extract_archive(archive, cache)
    looked = [str(c / TRAIN_FILES[0]) for c in candidates] + [str(a) for a in archives]
    raise DatasetNotFoundError(
        f"CIFAR-10 not found: looked for {' and '.join(looked)}. Point TRAINER_DATA_URI (--data-uri) at the "
        f"folder holding {BATCH_FOLDER}/, at an s3://bucket/key/{ARCHIVE_NAME}, or use 'download'; "
        f"`pushtrain synth --out {root}` writes a small generated dataset there."
    )


def load_dataset(config: TrainConfig) -> Cifar10Data:
    """Load the dataset the configuration points at, verified, as uint8 tensors (limit_* applied)."""
    cache = Path(config.work_dir) / "datasets"
    uri = config.data_uri
    if uri.startswith("s3://"):
        batches, md5 = extract_archive(_download_s3(uri, cache), cache)
        data = read_folder(batches, source=uri, archive_md5=md5)
    elif uri == "download":
        root = cache / "download"
        try:
            CIFAR10(str(root), train=True, download=True)
        except (OSError, RuntimeError) as err:
            raise DatasetError(f"torchvision could not download CIFAR-10 into {root}: {err}") from err
        data = read_folder(root / BATCH_FOLDER, source="download", archive_md5=OFFICIAL_ARCHIVE_MD5)
    else:
        batches, md5 = _local_batches(Path(local_path(uri)), cache)
        data = read_folder(batches, source=uri, archive_md5=md5)
    return split_validation(limit(data, config.limit_train, config.limit_test), config.val_images)


def limit(data: Cifar10Data, n_train: int, n_test: int) -> Cifar10Data:
    """The first n_train / n_test images (0: all); before split_validation, which holds out of these."""
    if not n_train and not n_test:
        return data
    tr = slice(0, n_train or None)
    te = slice(0, n_test or None)
    return dataclasses.replace(
        data,
        train_images=data.train_images[tr],
        train_labels=data.train_labels[tr],
        test_images=data.test_images[te],
        test_labels=data.test_labels[te],
    )


VALIDATION_STREAM = 0x5EED_0A11  # the fixed seed of the held-out subset: the same images whatever the run's seed


def validation_indices(n_train: int, n_val: int) -> torch.Tensor:
    """The training-set indices held out for validation: `n_val` of `n_train`, sorted.

    A function of (n_train, n_val) alone, never of the run's seed: every run of a sweep is measured on
    the same images, so their validation counts compare. A larger n_val holds out a superset.
    """
    generator = torch.Generator().manual_seed(VALIDATION_STREAM)
    return torch.randperm(n_train, generator=generator)[:n_val].sort().values


def split_validation(data: Cifar10Data, n_val: int) -> Cifar10Data:
    """Hold out `n_val` training images (validation_indices) as the validation set; 0: the data unchanged.

    The training set keeps the rest in their original order. The test set is untouched: selection on the
    validation set leaves the test set for one unbiased measurement of the chosen model.
    """
    if not n_val:
        return data
    n_train = len(data.train_labels)
    if n_val >= n_train:
        raise ConfigError("val_images", f"{n_val} leaves no training images of the {n_train} there are")
    held = validation_indices(n_train, n_val)
    keep = torch.ones(n_train, dtype=torch.bool)
    keep[held] = False
    return dataclasses.replace(
        data,
        train_images=data.train_images[keep],
        train_labels=data.train_labels[keep],
        val_images=data.train_images[held],
        val_labels=data.train_labels[held],
    )


# --- batches as tensors ----------------------------------------------------------------------------


def epoch_generator(seed: int, epoch: int) -> torch.Generator:
    """A generator that is a pure function of (seed, epoch): the same epoch shuffles the same way after a resume."""
    # SeedSequence takes non-negative entropy: a negative seed (the trigger allows them) maps to 2**32 + seed,
    # which no seed in the configuration's range [-(2**31 - 1), 2**31 - 1] otherwise reaches.
    state = np.random.SeedSequence([seed % 2**32, epoch]).generate_state(2, dtype=np.uint32)
    return torch.Generator().manual_seed(int(state[0]) << 32 | int(state[1]))


@dataclass(frozen=True)
class EpochPlan:
    """The order of the training images and each one's augmentation for one epoch."""

    order: torch.Tensor  # permutation of the training set indices
    shift_y: torch.Tensor  # crop offsets in [0, 2*pad], indexed by training image
    shift_x: torch.Tensor
    flip: torch.Tensor  # bool, indexed by training image


FLIP_STREAM = 2**32 - 1  # the "epoch" whose generator draws each image's first mirror state (no real epoch)


def plan_epoch(n: int, seed: int, epoch: int, pad: int) -> EpochPlan:
    """Draw everything random about one epoch up front, so batch i is the same whether or not the run resumed.

    Flips alternate (airbench94): each image's mirror state is drawn once per run and inverted every other
    epoch, so every image is seen both ways in each pair of epochs.
    """
    gen = epoch_generator(seed, epoch)
    order = torch.randperm(n, generator=gen)
    shift_y = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    shift_x = torch.randint(0, 2 * pad + 1, (n,), generator=gen)
    base_flip = torch.rand(n, generator=epoch_generator(seed, FLIP_STREAM)) < 0.5
    return EpochPlan(order, shift_y, shift_x, alternating_flip(base_flip, epoch))


def to_float(images: torch.Tensor) -> torch.Tensor:
    """uint8 Nx3xHxW -> float32 in [0, 1] (the models normalize inside, so an exported model takes this too)."""
    return images.float().div_(255.0)


def augment(
    images: torch.Tensor, shift_y: torch.Tensor, shift_x: torch.Tensor, flip: torch.Tensor, pad: int
) -> torch.Tensor:
    """Random crop with reflect padding and horizontal flip of a whole batch, as tensor ops.

    `images` is float Nx3xHxW; returns Nx3xHxW in channels_last memory layout (the crop is a gather in
    NHWC, which leaves the result channels-last for free).
    """
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad), mode="reflect") if pad else images
    nhwc = padded.permute(0, 2, 3, 1)
    rows = (shift_y.to(images.device)[:, None] + torch.arange(h, device=images.device))[:, :, None]  # NxHx1
    cols = shift_x.to(images.device)[:, None] + torch.arange(w, device=images.device)  # NxW
    flipped = flip.to(images.device)[:, None]
    cols = torch.where(flipped, cols.flip(1), cols)[:, None, :]  # mirroring is reading the columns backwards
    batch = torch.arange(n, device=images.device)[:, None, None]
    return nhwc[batch, rows, cols].permute(0, 3, 1, 2)
