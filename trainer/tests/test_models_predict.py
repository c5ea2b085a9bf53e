"""`models predict`: a verified version called on PNG/JPEG images and .npy batches, one JSON line per image.

GIVEN a published champion (a 2-class cnn), WHEN images are classified, THEN each gets its class and
probability (the same for the same pixels, whatever the file kind), the model is loaded once, and
every mistake (a wrong size, an unreadable file, a damaged version) is one line with its exit code.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image
from trainer.__main__ import main as trainer_main
from trainer.config import TrainConfig
from trainer.metrics import EpochResult, EvalResult
from trainer.nets import build_model
from trainer.publish import TrainingOutcome, publish_version
from trainer.run import run_gate
from trainer.store import LocalStore
from trainer.versions import new_version_id

RUN_ID = "push-4444444444dddddddddd"
RNG = np.random.default_rng(7)
PIXELS = RNG.integers(0, 256, size=(3, 32, 32, 3), dtype=np.uint8)  # three CIFAR-layout images


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> tuple[LocalStore, str]:
    root = tmp_path_factory.mktemp("predict")
    store = LocalStore(root / "store")
    config = TrainConfig(model="cnn", work_dir=str(root / "work")).replace(epochs=1, run_id=RUN_ID)
    torch.manual_seed(0)
    outcome = TrainingOutcome(
        model=build_model("cnn", 2).eval(), model_config={"name": "cnn", "num_classes": 2}, classes=("cat", "ship"),
        evaluation=EvalResult(0.4, 6, 8, {"cat": 0.75, "ship": 0.75}, [[3, 1], [1, 3]]),
        history=[EpochResult(1, 1.0, 0.6, 0.9, 0.75, 500.0, 3.0, 0.2, 0.1)],
        dataset={"checksum": "sha256:" + "e" * 64, "train_images": 16}, hardware={"device": "cpu"},
        wall_seconds=9.0, precision="fp32",
    )  # fmt: skip
    version = new_version_id(RUN_ID, datetime(2026, 11, 25, 19, tzinfo=UTC))
    publish_version(store, config, run_id=RUN_ID, version=version, outcome=outcome, now=datetime.now(UTC))
    run_gate(store, "cifar10", version, None, floor="0.5", margin="0", run_id=RUN_ID)
    return store, version


def predict(capsys: pytest.CaptureFixture[str], store: LocalStore, *args: str) -> tuple[int, list[dict], str]:
    code = trainer_main(["models", "predict", *args, "--store", str(store.root)])
    out, err = capsys.readouterr()
    return code, [json.loads(line) for line in out.splitlines()], err


def test_images_and_a_batch_get_one_line_each_the_same_answer_for_the_same_pixels(
    published: tuple[LocalStore, str], tmp_path: Path, capsys: pytest.CaptureFixture[str],
    monkeypatch: pytest.MonkeyPatch,
) -> None:  # fmt: skip
    store, version = published
    Image.fromarray(PIXELS[0]).save(tmp_path / "a.png")
    np.save(tmp_path / "batch.npy", PIXELS)  # N x 32 x 32 x 3 uint8, CIFAR-10's layout
    np.save(tmp_path / "planar.npy", PIXELS.transpose(0, 3, 1, 2).astype(np.float32) / 255)  # N x 3 x 32 x 32
    loads = []
    real_load = torch.jit.load
    monkeypatch.setattr(torch.jit, "load", lambda *a, **k: loads.append(1) or real_load(*a, **k))
    # WHEN the champion classifies a PNG and two batches of the same pixels
    code, lines, err = predict(capsys, store, "champion", str(tmp_path / "a.png"), str(tmp_path / "batch.npy"),
                               str(tmp_path / "planar.npy"), "--top-k", "2")  # fmt: skip
    # THEN one line per image, in order, naming the version, the file and the row
    assert (code, err) == (0, "")
    assert len(loads) == 1  # the model is loaded once for every file
    assert [(Path(line["file"]).name, line.get("index")) for line in lines] == [
        ("a.png", None),
        *(("batch.npy", i) for i in range(3)),
        *(("planar.npy", i) for i in range(3)),
    ]
    assert {line["version"] for line in lines} == {version}
    for line in lines:
        ranked = line["top_k"]
        assert [r["class"] for r in ranked] in (["cat", "ship"], ["ship", "cat"])
        assert ranked[0]["probability"] >= ranked[1]["probability"]
        assert (line["class"], line["probability"]) == (ranked[0]["class"], ranked[0]["probability"])
    # AND the same pixels get the same answer from a PNG, an HWC uint8 batch and a CHW float batch
    answers = [(line["class"], line["probability"]) for line in lines]
    assert answers[0] == answers[1] == answers[4]
    assert answers[1:4] == answers[4:7]


def test_a_named_version_without_top_k_prints_class_and_probability_only(
    published: tuple[LocalStore, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, version = published
    Image.fromarray(PIXELS[1]).save(tmp_path / "b.jpg", quality=95)
    code, (line,), _ = predict(capsys, store, version, str(tmp_path / "b.jpg"))
    assert code == 0
    assert set(line) == {"version", "file", "class", "probability"} and 0 < line["probability"] <= 1


@pytest.mark.parametrize(
    ("make", "says"),
    [
        (lambda d: Image.new("RGB", (64, 48)).save(d / "big.png") or "big.png", "64x48 pixels"),
        (lambda d: (d / "text.png").write_text("not an image") and "text.png", "not a readable PNG or JPEG"),
        (lambda d: "missing.png", "no such file"),
        (lambda d: (d / "notes.txt").write_text("x") and "notes.txt", "unknown kind '.txt'"),
        (lambda d: np.save(d / "odd.npy", np.zeros((2, 28, 28), np.uint8)) or "odd.npy", "shape (2, 28, 28)"),
        (lambda d: np.save(d / "hot.npy", np.full((1, 3, 32, 32), 2.0)) or "hot.npy", "in [0, 1]"),
        (lambda d: (d / "bad.npy").write_bytes(b"\x93NUMPY garbage") and "bad.npy", "not a readable .npy"),
    ],
    ids=["wrong-size", "not-an-image", "missing", "unknown-kind", "wrong-shape", "out-of-range", "corrupt-npy"],
)
def test_a_bad_input_is_one_line_naming_it_and_nothing_is_predicted(
    published: tuple[LocalStore, str], tmp_path: Path, capsys: pytest.CaptureFixture[str], make, says: str
) -> None:  # type: ignore[no-untyped-def]
    store, _ = published
    Image.fromarray(PIXELS[0]).save(tmp_path / "good.png")
    name = make(tmp_path)
    code, lines, err = predict(capsys, store, str(tmp_path / "good.png"), str(tmp_path / name))
    assert (code, lines) == (2, [])
    assert len(err.strip().splitlines()) == 1 and name in err and says in err


def test_a_damaged_version_is_refused_before_it_is_loaded(
    published: tuple[LocalStore, str], tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store, version = published
    Image.fromarray(PIXELS[0]).save(tmp_path / "a.png")
    # GIVEN a copy of the store whose TorchScript file has one byte flipped
    damaged = LocalStore(tmp_path / "copy")
    for key in store.list():
        damaged.put(key, store.get(key))
    key = f"models/cifar10/{version}/model.torchscript.pt"
    data = bytearray(damaged.get(key))
    data[len(data) // 2] ^= 0xFF
    damaged.put(key, bytes(data))
    code, lines, err = predict(capsys, damaged, version, str(tmp_path / "a.png"))
    assert (code, lines) == (1, [])
    assert "is damaged, not loading it: model.torchscript.pt has sha256" in err


def test_no_champion_or_no_such_version_is_exit_1(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    (tmp_path / "store" / "models").mkdir(parents=True)
    Image.fromarray(PIXELS[0]).save(tmp_path / "a.png")
    code, _, err = predict(capsys, LocalStore(tmp_path / "store"), str(tmp_path / "a.png"))
    assert code == 1 and "no champion for 'cifar10'" in err
    code, _, err = predict(capsys, LocalStore(tmp_path / "store"), "20261125T190000Z-push-x", str(tmp_path / "a.png"))
    assert code == 1 and "no published version '20261125T190000Z-push-x'" in err
