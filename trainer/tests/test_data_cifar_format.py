"""The dataset: the exact CIFAR-10 python format, md5 verification, where a missing dataset was looked for."""

from __future__ import annotations

import hashlib
import pickle
import shutil
from pathlib import Path

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10
from trainer.config import load_config
from trainer.data import (
    OFFICIAL_ARCHIVE_MD5,
    DatasetError,
    DatasetNotFoundError,
    load_dataset,
    read_folder,
)

from trainer import synth

N_TRAIN, N_TEST = 250, 60


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("synth")
    synth.write_folder(root, N_TRAIN, N_TEST, seed=1)
    return root


def _config(data_uri: Path | str, work_dir: Path) -> object:
    return load_config(["--data-uri", str(data_uri), "--work-dir", str(work_dir)], {})


def test_generated_files_have_the_cifar10_python_layout(generated: Path) -> None:
    # GIVEN a generated dataset, WHEN its files are unpickled the way CIFAR-10's own page says
    batches = generated / "cifar-10-batches-py"
    assert sorted(p.name for p in batches.iterdir()) == sorted(
        [*(f"data_batch_{i}" for i in range(1, 6)), "test_batch", "batches.meta", synth.MANIFEST]
    )
    total = 0
    for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]:
        with (batches / name).open("rb") as fh:
            entry = pickle.load(fh, encoding="latin1")  # noqa: S301 -- our own generated file
        # THEN every batch is the same dict as the real files: uint8 rows of 3072 (R, G, B planes), int labels
        assert set(entry) == {"batch_label", "labels", "data", "filenames"}
        assert entry["data"].dtype == np.uint8
        assert entry["data"].shape == (len(entry["labels"]), 3072)
        assert all(type(v) is int and 0 <= v < 10 for v in entry["labels"])
        assert len(entry["filenames"]) == len(entry["labels"])
        total += len(entry["labels"])
    assert total == N_TRAIN + N_TEST
    with (batches / "batches.meta").open("rb") as fh:
        meta = pickle.load(fh, encoding="latin1")  # noqa: S301 -- our own generated file
    assert meta["label_names"] == list(synth.CLASSES)
    assert meta["num_vis"] == 3072


def test_generated_data_loads_through_torchvisions_reader_with_the_same_pixels(generated: Path) -> None:
    # GIVEN torchvision's own CIFAR10 refuses generated data (it checks the official md5s) ...
    with pytest.raises(RuntimeError, match="not found or corrupted"):
        CIFAR10(str(generated), train=True)
    # WHEN our reader (torchvision's reader told to expect the manifest's md5s) loads it
    data = read_folder(generated / "cifar-10-batches-py", source="test")
    # THEN it yields uint8 NCHW tensors whose pixels are the pickled rows, plane by plane
    assert data.train_images.shape == (N_TRAIN, 3, 32, 32)
    assert data.train_images.dtype == torch.uint8
    assert data.train_labels.dtype == torch.int64
    assert data.test_images.shape == (N_TEST, 3, 32, 32)
    with (generated / "cifar-10-batches-py" / "data_batch_1").open("rb") as fh:
        first = pickle.load(fh, encoding="latin1")  # noqa: S301 -- our own generated file
    assert torch.equal(data.train_images[0], torch.from_numpy(first["data"][0].reshape(3, 32, 32)))
    assert data.train_labels[0].item() == first["labels"][0]
    assert data.generated
    assert data.classes == synth.CLASSES
    assert data.checksum.startswith("sha256:")


def test_generation_is_a_pure_function_of_its_arguments(tmp_path: Path) -> None:
    a = synth.write_archive(tmp_path / "a.tar.gz", 50, 10, seed=4)
    b = synth.write_archive(tmp_path / "b.tar.gz", 50, 10, seed=4)
    c = synth.write_archive(tmp_path / "c.tar.gz", 50, 10, seed=5)
    assert a.read_bytes() == b.read_bytes()
    assert a.read_bytes() != c.read_bytes()


def test_a_changed_byte_is_rejected_naming_the_file_and_both_md5s(generated: Path, tmp_path: Path) -> None:
    # GIVEN a generated dataset with one byte of data_batch_3 changed
    copy = tmp_path / "data"
    shutil.copytree(generated, copy)
    target = copy / "cifar-10-batches-py" / "data_batch_3"
    raw = bytearray(target.read_bytes())
    raw[-100] ^= 0xFF
    target.write_bytes(bytes(raw))
    # WHEN it is loaded, THEN the error names the file, its md5 and the expected one
    with pytest.raises(DatasetError, match=r"data_batch_3: md5 [0-9a-f]{32} does not match the md5 in"):
        load_dataset(_config(copy, tmp_path / "work"))


def test_files_without_a_manifest_must_have_the_official_md5s(generated: Path, tmp_path: Path) -> None:
    # GIVEN files in the CIFAR-10 layout that are not the official ones and carry no manifest
    copy = tmp_path / "data"
    shutil.copytree(generated, copy)
    (copy / "cifar-10-batches-py" / synth.MANIFEST).unlink()
    # WHEN loaded, THEN the official md5 check rejects them
    with pytest.raises(DatasetError, match="does not match the official CIFAR-10 md5 c99cafc152244af753f735de768cd75f"):
        load_dataset(_config(copy, tmp_path / "work"))


def test_archive_loads_and_its_md5_is_the_checksum(tmp_path: Path) -> None:
    # GIVEN a generated cifar-10-python.tar.gz in the data folder
    archive = synth.write_archive(tmp_path / "data" / "cifar-10-python.tar.gz", 100, 20, seed=2)
    # WHEN loaded (twice, the second time named as a file:// URI: it reads the extracted cache)
    first = load_dataset(_config(tmp_path / "data", tmp_path / "work"))
    again = load_dataset(_config(f"file://{archive}", tmp_path / "work"))
    # THEN the data is there and the checksum is the archive's md5
    md5 = hashlib.md5(archive.read_bytes(), usedforsecurity=False).hexdigest()
    assert first.checksum == again.checksum == f"md5:{md5}"
    assert torch.equal(first.train_images, again.train_images)
    assert len(first.train_labels) == 100


def test_archive_that_is_not_the_official_one_and_not_generated_is_rejected(generated: Path, tmp_path: Path) -> None:
    # GIVEN an archive whose md5 is not the official one and which carries no generator manifest
    import tarfile

    archive = tmp_path / "data" / "cifar-10-python.tar.gz"
    archive.parent.mkdir()
    with tarfile.open(archive, "w:gz") as tar:
        for path in sorted((generated / "cifar-10-batches-py").iterdir()):
            if path.name != synth.MANIFEST:
                tar.add(path, arcname=f"cifar-10-batches-py/{path.name}")
    # WHEN loaded, THEN the error says the md5 is not the official one
    with pytest.raises(DatasetError, match=f"not the official cifar-10-python.tar.gz md5 {OFFICIAL_ARCHIVE_MD5}"):
        load_dataset(_config(tmp_path / "data", tmp_path / "work"))


def test_a_missing_dataset_says_where_it_looked(tmp_path: Path) -> None:
    empty = tmp_path / "nothing-here"
    with pytest.raises(DatasetNotFoundError) as caught:
        load_dataset(_config(empty, tmp_path / "work"))
    message = str(caught.value)
    assert str(empty / "cifar-10-batches-py" / "data_batch_1") in message
    assert str(empty / "cifar-10-python.tar.gz") in message
    assert "pushtrain synth --out" in message


def test_limits_take_the_first_images(generated: Path, tmp_path: Path) -> None:
    config = load_config(
        ["--data-uri", str(generated), "--work-dir", str(tmp_path), "--limit-train", "40", "--limit-test", "7"], {}
    )
    data = load_dataset(config)
    full = read_folder(generated / "cifar-10-batches-py", source="test")
    assert torch.equal(data.train_images, full.train_images[:40])
    assert len(data.test_labels) == 7
