"""Publishing: a version is complete before it is visible, loadable as documented, and never overwritten."""

from __future__ import annotations

import json
import re
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
import torch
from trainer.config import TrainConfig
from trainer.metrics import EpochResult, EvalResult
from trainer.nets import build_model
from trainer.publish import TrainingOutcome, publish_version
from trainer.registry import published_versions
from trainer.store import LocalStore, PreconditionFailed, Store, StoreError
from trainer.versions import MANIFEST, VERSION_FILES, VersionExistsError, new_version_id, run_id_of_version

RUNS_MD = Path(__file__).resolve().parents[1] / "RUNS.md"
RUN_ID = "push-0123456789abcdef0123"
NOW = datetime(2026, 11, 25, 19, 0, 0, tzinfo=UTC)
CLASSES = tuple(f"class{i}" for i in range(10))


def make_outcome(accuracy: float = 0.8) -> TrainingOutcome:
    torch.manual_seed(0)
    model = build_model("cnn", 10)
    history = [
        EpochResult(epoch=e, train_loss=2.0 / e, train_accuracy=0.3 * e, test_loss=1.9 / e, test_accuracy=0.25 * e,
                    images_per_s=1000.0, seconds=2.0, eval_seconds=0.1, lr=0.05)
        for e in (1, 2, 3)
    ]  # fmt: skip
    evaluation = EvalResult(
        loss=0.6, correct=round(accuracy * 100), total=100, per_class_accuracy=dict.fromkeys(CLASSES, accuracy),
        confusion=[[10 if i == j else 0 for j in range(10)] for i in range(10)],
    )  # fmt: skip
    return TrainingOutcome(
        model=model,
        model_config={"name": "cnn", "num_classes": 10},
        classes=CLASSES,
        evaluation=evaluation,
        history=history,
        dataset={"checksum": "sha256:" + "d" * 64, "train_images": 2000, "test_images": 100},
        hardware={"device": "cpu", "torch_threads": 2},
        wall_seconds=9.5,
        precision="fp32",
    )


@pytest.fixture
def config(tmp_path: Path) -> TrainConfig:
    return TrainConfig(model="cnn", work_dir=str(tmp_path / "work"), store_uri=str(tmp_path / "store")).replace(
        run_id=RUN_ID, image_digest="sha256:" + "a" * 64, git_sha="abc1234"
    )


@pytest.fixture
def store(config: TrainConfig) -> Store:
    return LocalStore(Path(config.store_uri))


def test_version_ids_sort_by_time_and_name_their_run() -> None:
    early = new_version_id(RUN_ID, NOW)
    late = new_version_id(RUN_ID, NOW.replace(minute=1))
    assert early == "20261125T190000Z-push-0123456789abcdef0123"
    assert sorted([late, early]) == [early, late]
    assert run_id_of_version(early) == RUN_ID


def test_published_version_has_every_file_and_a_manifest_with_provenance(store: Store, config: TrainConfig) -> None:
    version = new_version_id(RUN_ID, NOW)
    publish_version(store, config, run_id=RUN_ID, version=version, outcome=make_outcome(), now=NOW)

    prefix = f"models/cifar10/{version}/"
    assert store.list(prefix) == sorted(prefix + name for name in (*VERSION_FILES, MANIFEST))
    manifest = json.loads(store.get(prefix + MANIFEST))
    assert manifest["git_sha"] == "abc1234"
    assert manifest["image_digest"] == "sha256:" + "a" * 64
    assert manifest["dataset"]["checksum"] == "sha256:" + "d" * 64
    assert manifest["config"] == config.to_dict()
    assert set(manifest["versions"]) >= {"python", "torch", "torchvision"}
    assert manifest["hardware"]["device"] == "cpu"
    assert manifest["wall_seconds"] == 9.5
    assert manifest["throughput"]["images_per_s"] == 1000.0  # 3 epochs x 2000 images in 6 s
    assert manifest["estimated_cost"]["usd"] == round(9.5 / 3600 * config.cost_per_hour, 4)
    assert manifest["metrics"] == {"accuracy": 0.8, "correct": 80, "total": 100, "loss": 0.6}
    # every file is pinned by its hash, so a reader can check what it downloaded
    for name in VERSION_FILES:
        assert manifest["files"][name]["bytes"] == len(store.get(prefix + name))
    report = store.get(prefix + "report.md").decode()
    assert "| test accuracy | **80.00 %**" in report
    assert store.get(prefix + "curves.png").startswith(b"\x89PNG")


def test_documented_three_line_snippet_loads_the_model(
    store: Store, config: TrainConfig, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a published model.pt and the snippet exactly as RUNS.md shows it
    outcome = make_outcome()
    version = new_version_id(RUN_ID, NOW)
    publish_version(store, config, run_id=RUN_ID, version=version, outcome=outcome, now=NOW)
    store.download_file(f"models/cifar10/{version}/model.pt", tmp_path / "model.pt")
    snippet = re.search(r"```python\n(# load model\.pt\n.*?)```", RUNS_MD.read_text(), re.DOTALL)
    assert snippet is not None, "RUNS.md must show the loading snippet in a ```python block starting '# load model.pt'"
    code = snippet.group(1)
    assert len([line for line in code.splitlines() if line and not line.startswith("#")]) == 3
    # WHEN it runs in the download folder
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {}
    exec(code, namespace)  # noqa: S102 -- executing our own documentation is the point of the test
    # THEN it rebuilds the same network with the same outputs
    images = torch.rand(4, 3, 32, 32)
    loaded = namespace["model"]
    assert isinstance(loaded, torch.nn.Module)
    assert not loaded.training
    torch.testing.assert_close(loaded(images), outcome.model.eval()(images))


def test_torchscript_export_runs_without_our_code(store: Store, config: TrainConfig, tmp_path: Path) -> None:
    outcome = make_outcome()
    version = new_version_id(RUN_ID, NOW)
    publish_version(store, config, run_id=RUN_ID, version=version, outcome=outcome, now=NOW)
    path = tmp_path / "model.torchscript.pt"
    store.download_file(f"models/cifar10/{version}/model.torchscript.pt", path)
    with pytest.warns(FutureWarning):  # torch.jit is deprecated in torch 2.14 but still loads
        scripted = torch.jit.load(str(path))
    images = torch.rand(2, 3, 32, 32)
    torch.testing.assert_close(scripted(images), outcome.model.eval()(images))


def test_publishing_the_same_version_twice_is_refused_and_leaves_the_first(store: Store, config: TrainConfig) -> None:
    version = new_version_id(RUN_ID, NOW)
    publish_version(store, config, run_id=RUN_ID, version=version, outcome=make_outcome(0.8), now=NOW)
    first = store.get(f"models/cifar10/{version}/{MANIFEST}")
    with pytest.raises(VersionExistsError, match="never overwritten"):
        publish_version(store, config, run_id=RUN_ID, version=version, outcome=make_outcome(0.9), now=NOW)
    assert store.get(f"models/cifar10/{version}/{MANIFEST}") == first


class FailingStore(LocalStore):
    """A local store whose writes of one file name fail, as a broken network or bucket would."""

    def __init__(self, root: Path, fail_on: str) -> None:
        super().__init__(root)
        self.fail_on = fail_on

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        if key.endswith(self.fail_on):
            raise StoreError(f"injected write error for {key}")
        return super().put(key, data, if_none_match=if_none_match, if_match=if_match)

    def upload_file(self, path: Path, key: str, **kwargs: Any) -> str:
        if key.endswith(self.fail_on):
            raise StoreError(f"injected write error for {key}")
        return super().upload_file(path, key, **kwargs)


@pytest.mark.parametrize("fail_on", ["metrics.json", MANIFEST])
def test_a_publish_that_fails_midway_leaves_no_visible_version(config: TrainConfig, fail_on: str) -> None:
    # GIVEN a store that fails on one of the writes
    store = FailingStore(Path(config.store_uri), fail_on)
    # WHEN publishing fails there
    with pytest.raises(StoreError, match="injected"):
        publish_version(
            store, config, run_id=RUN_ID, version=new_version_id(RUN_ID, NOW), outcome=make_outcome(), now=NOW
        )
    # THEN files written before the failure exist, but no version is listed
    assert store.list("models/cifar10/")
    assert published_versions(store, "cifar10") == []


class LostResponseStore(LocalStore):
    """A local store where every create-only write commits, then answers 412.

    That is what an SDK retry sees when the first PUT committed but its response was lost.
    """

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        super().put(key, data, if_none_match=if_none_match, if_match=if_match)
        if if_none_match:
            raise PreconditionFailed(self.uri_of(key), "If-None-Match: * (retry after a lost response)")
        return self._etag(data)

    def upload_file(self, path: Path, key: str, *, if_none_match: bool = False, **kwargs: Any) -> str:
        etag = super().upload_file(path, key, if_none_match=if_none_match, **kwargs)
        if if_none_match:
            raise PreconditionFailed(self.uri_of(key), "If-None-Match: * (retry after a lost response)")
        return etag


def test_create_only_write_retried_after_a_lost_response_still_publishes(config: TrainConfig) -> None:
    # GIVEN a store where each create-only write commits, then its retry is refused with 412
    store = LostResponseStore(Path(config.store_uri))
    version = new_version_id(RUN_ID, NOW)
    # WHEN the version is published
    published = publish_version(store, config, run_id=RUN_ID, version=version, outcome=make_outcome(), now=NOW)
    # THEN the refusals are recognised as our own writes: the version is complete and listed
    assert published_versions(store, "cifar10") == [version]
    assert json.loads(store.get(f"models/cifar10/{version}/{MANIFEST}")) == published.manifest


def test_other_bytes_already_at_a_version_file_are_a_conflict_not_overwritten(
    store: Store, config: TrainConfig
) -> None:
    # GIVEN another writer's metrics.json already under the version
    version = new_version_id(RUN_ID, NOW)
    key = f"models/cifar10/{version}/metrics.json"
    store.put(key, b'{"accuracy": 0.1}\n')
    # WHEN the version is published
    with pytest.raises(VersionExistsError, match=r"metrics\.json.*never overwritten"):
        publish_version(store, config, run_id=RUN_ID, version=version, outcome=make_outcome(), now=NOW)
    # THEN that file is left as it was and the version never becomes visible
    assert store.get(key) == b'{"accuracy": 0.1}\n'
    assert published_versions(store, "cifar10") == []
