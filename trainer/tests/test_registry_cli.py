"""`python -m trainer models list|show|champion` over a store with published versions."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
import torch
from published import publish_counts
from trainer.__main__ import main as trainer_main
from trainer.config import TrainConfig
from trainer.counts import Counts
from trainer.gate import promote_if_better
from trainer.metrics import EpochResult, EvalResult
from trainer.nets import build_model
from trainer.publish import TrainingOutcome, publish_version
from trainer.store import LocalStore
from trainer.versions import new_version_id

CLASSES = tuple(f"c{i}" for i in range(10))
OLD = new_version_id("push-aaaaaaaaaaaaaaaaaaaa", datetime(2026, 11, 24, 9, 0, tzinfo=UTC))
NEW = new_version_id("push-bbbbbbbbbbbbbbbbbbbb", datetime(2026, 11, 25, 9, 0, tzinfo=UTC))


def outcome(accuracy: float) -> TrainingOutcome:
    torch.manual_seed(0)
    epoch = EpochResult(epoch=1, train_loss=1.0, train_accuracy=0.5, test_loss=1.0, test_accuracy=accuracy,
                        images_per_s=500.0, seconds=4.0, eval_seconds=0.2, lr=0.1)  # fmt: skip
    evaluation = EvalResult(loss=0.9, correct=round(accuracy * 100), total=100,
                            per_class_accuracy=dict.fromkeys(CLASSES, accuracy),
                            confusion=[[1 if i == j else 0 for j in range(10)] for i in range(10)])  # fmt: skip
    return TrainingOutcome(
        model=build_model("cnn", 10), model_config={"name": "cnn", "num_classes": 10}, classes=CLASSES,
        evaluation=evaluation, history=[epoch], dataset={"checksum": "sha256:" + "0" * 64, "train_images": 2000},
        hardware={"device": "cpu"}, wall_seconds=5.0, precision="fp32",
    )  # fmt: skip


@pytest.fixture(scope="module")
def store_uri(tmp_path_factory: pytest.TempPathFactory) -> str:
    # GIVEN two published versions; the older one (better) is champion, the newer one was not promoted
    root = tmp_path_factory.mktemp("registry")
    store = LocalStore(root / "store")
    for version, accuracy in ((OLD, 0.82), (NEW, 0.78)):
        run_id = version.split("-", 1)[1]
        config = TrainConfig(model="cnn").replace(epochs=1, run_id=run_id, work_dir=str(root / "work"))
        publish_version(store, config, run_id=run_id, version=version, outcome=outcome(accuracy), now=datetime.now(UTC))
        promote_if_better(
            store, "cifar10", version, Counts(round(accuracy * 100), 100), floor="0.5", margin="0", run_id=run_id
        )
    store.put(f"models/cifar10/{NEW[:-1]}x/model.pt", b"an unfinished publish: no manifest")
    return str(store.root)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = trainer_main(["models", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_shows_published_versions_oldest_first_and_marks_the_champion(
    store_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = cli(capsys, "list", "--store", store_uri, "--json")
    listed = json.loads(out)
    assert code == 0
    assert [v["version"] for v in listed] == [OLD, NEW]  # the unfinished publish is invisible
    assert [v["champion"] for v in listed] == [True, False]
    assert listed[0]["accuracy"] == 0.82

    code, out, _ = cli(capsys, "list", "--store", store_uri)
    assert code == 0
    assert "82.00%" in out
    assert NEW in out


def test_show_prints_a_versions_provenance(store_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "show", NEW, "--store", store_uri, "--json")
    shown = json.loads(out)
    assert code == 0
    assert (shown["version"], shown["champion"], shown["run_id"]) == (NEW, False, "push-bbbbbbbbbbbbbbbbbbbb")
    assert shown["dataset"]["checksum"] == "sha256:" + "0" * 64

    code, out, _ = cli(capsys, "show", OLD, "--store", store_uri)
    assert code == 0
    assert "champion    yes" in out


def test_champion_prints_the_pointer(store_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "champion", "--store", store_uri, "--json")
    assert code == 0
    assert json.loads(out)["version"] == OLD


def test_show_champion_shows_the_version_champion_json_names(
    store_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    # as `models predict champion` takes it (a new user's `show champion` was "no published version 'champion'")
    code, out, _ = cli(capsys, "show", "champion", "--store", store_uri)
    assert code == 0
    assert f"version     {OLD}" in out and "champion    yes" in out


def test_missing_version_or_champion_exits_1_saying_what_is_missing(
    store_uri: str, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    code, _, err = cli(capsys, "show", "20990101T000000Z-nope", "--store", store_uri)
    assert code == 1
    assert "no published version '20990101T000000Z-nope'" in err
    (tmp_path / "fresh" / "runs").mkdir(parents=True)  # a store whose first run has not published yet
    code, _, err = cli(capsys, "champion", "--store", str(tmp_path / "fresh"))
    assert code == 1
    assert "no champion" in err


def test_store_and_model_name_come_from_the_environment(
    store_uri: str, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("TRAINER_STORE_URI", store_uri)
    monkeypatch.setenv("TRAINER_MODEL_NAME", "other")
    code, out, _ = cli(capsys, "list")
    assert code == 0
    assert "no published versions of 'other'" in out
    assert "models in this store: cifar10" in out


@pytest.mark.parametrize("args", [[], ["frobnicate"], ["show"], ["list", "--store", "gs://bucket"]])
def test_bad_usage_exits_2(args: list[str], capsys: pytest.CaptureFixture[str]) -> None:
    code, _, _ = cli(capsys, *args)
    assert code == 2


def test_champion_whose_files_differ_from_its_manifest_exits_1_naming_them(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a champion whose metrics.json was altered after it was promoted
    store = LocalStore(tmp_path / "store")
    publish_counts(store, "cifar10", OLD, 8, 10)
    promote_if_better(store, "cifar10", OLD, Counts(8, 10), floor="0.5", margin="0")
    store.put(f"models/cifar10/{OLD}/metrics.json", b"{}")
    # WHEN `models champion` is asked, THEN it exits 1 in one line naming the file
    code, out, err = cli(capsys, "champion", "--store", str(store.root))
    assert code == 1 and out == ""
    assert len(err.strip().splitlines()) == 1
    assert f"names {OLD}: metrics.json has sha256" in err
