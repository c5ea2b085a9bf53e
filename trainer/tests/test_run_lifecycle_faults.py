"""The run lifecycle under faults: exit codes mean what docs/contracts.md says, one run makes one version,
a visible version always ends `succeeded`, and nothing non-finite is ever published.

Everything runs in-process on a tiny generated dataset, one thread, the small cnn.
"""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import torch
from torch import nn
from trainer.checkpoint import checkpoint_key, sidecar_key
from trainer.config import TrainConfig
from trainer.gate import champion_key
from trainer.nets import ModelEntry, Normalize, Recipe
from trainer.publish import publish_version
from trainer.registry import published_versions
from trainer.runstate import new_record, read_status, status_key
from trainer.store import LocalStore, Store, StoreError
from trainer.synth import write_folder
from trainer.versions import MANIFEST, PublishError, VersionExistsError, version_prefix

from trainer import nets, registry_cli, run, runstate

RUN = "push-aabbccddeeff00112233"
LOW_CHAMPION = {"schema": 1, "version": "20260101T000000Z-push-old", "accuracy": 0.0, "history": []}


@pytest.fixture(scope="module")
def data_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("data")
    write_folder(root, n_train=256, n_test=64, seed=3)
    return root


def make_config(data_dir: Path, tmp_path: Path, **changes: Any) -> TrainConfig:
    settings: dict[str, Any] = {
        "model": "cnn", "epochs": 2, "batch_size": 64, "lr": 0.02, "seed": 0, "run_id": RUN,
        "data_uri": str(data_dir), "store_uri": str(tmp_path / "store"), "work_dir": str(tmp_path / "work"),
        "progress": "none", "threads": 1, "accuracy_floor": 0.0, "device": "cpu", "precision": "fp32",
    }  # fmt: skip
    settings.update(changes)
    return TrainConfig(model="cnn").replace(**settings)


def record(store: Store) -> dict[str, Any]:
    found = read_status(store, RUN)
    assert found is not None
    return found


def assert_one_complete_version(store: Store) -> str:
    """Exactly one visible version, every file matching its manifest's sha256; returns it."""
    versions = published_versions(store, "cifar10")
    assert len(versions) == 1, versions
    manifest = json.loads(store.get(version_prefix("cifar10", versions[0]) + MANIFEST))
    assert registry_cli.verify_files(store, "cifar10", versions[0], manifest) == []
    return versions[0]


# --- once a version is visible, the run succeeds ----------------------------------------------------


def test_damaged_champion_after_publishing_ends_succeeded_with_the_gate_pending_then_models_gate_finishes_it(
    data_dir: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN a champion record that is damaged
    config = make_config(data_dir, tmp_path)
    store = LocalStore(Path(config.store_uri))
    store.put(champion_key("cifar10"), b"{damaged")
    # WHEN the run trains and publishes
    code = run.main(config)
    # THEN it succeeds: its version is visible, the gate's failure is recorded for a retry, the champion untouched
    version = assert_one_complete_version(store)
    assert code == run.EXIT_SUCCEEDED
    status = record(store)
    assert (status["state"], status["version"]) == ("succeeded", version)
    assert status["gate"]["outcome"] == "pending"
    assert "champion.json is not a champion record" in status["gate"]["reason"]
    assert store.get(champion_key("cifar10")) == b"{damaged"
    # AND the run's report says the gate is pending and how it is retried
    report = store.get(f"runs/{RUN}/report.md").decode()
    assert "**Gate: pending**" in report and f"pushtrain models gate {version}" in report

    # WHEN the champion is repaired and the gate is run again by hand
    store.put(champion_key("cifar10"), json.dumps(LOW_CHAMPION).encode())
    assert registry_cli.main(["gate", version, "--store", config.store_uri]) == registry_cli.EXIT_OK
    # THEN the version is promoted and the run record says so
    assert json.loads(store.get(champion_key("cifar10")))["version"] == version
    status = record(store)
    assert (status["state"], status["gate"]["outcome"]) == ("succeeded", "promoted")
    assert capsys.readouterr().out.startswith(f"{version}: promoted")
    # AND the run's report is rewritten with the gate's outcome
    assert "**Gate: promoted to champion**" in store.get(f"runs/{RUN}/report.md").decode()


def test_pending_gate_is_retried_by_the_next_start_of_the_run(data_dir: Path, tmp_path: Path) -> None:
    # GIVEN a run that succeeded with its gate pending (the champion was damaged), then repaired
    config = make_config(data_dir, tmp_path)
    store = LocalStore(Path(config.store_uri))
    store.put(champion_key("cifar10"), b"[]")
    assert run.main(config) == run.EXIT_SUCCEEDED
    assert record(store)["gate"]["outcome"] == "pending"
    store.put(champion_key("cifar10"), json.dumps(LOW_CHAMPION).encode())
    # WHEN the run is started again (the trigger's reconcile, or by hand)
    assert run.main(config.replace(attempt=2)) == run.EXIT_SUCCEEDED
    # THEN the gate ran without training a second version
    version = assert_one_complete_version(store)
    assert record(store)["gate"]["outcome"] == "promoted"
    assert json.loads(store.get(champion_key("cifar10")))["version"] == version


def test_status_write_failing_after_publishing_is_retried_and_still_exits_0(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a store whose status write fails twice when the run records its success
    config = make_config(data_dir, tmp_path)
    store = LocalStore(Path(config.store_uri))
    failures = {"left": 2}
    real_set_state = runstate.set_state

    def flaky(store_: Store, run_id: str, state: str, **kwargs: Any) -> dict[str, Any]:
        if state == "succeeded" and failures["left"]:
            failures["left"] -= 1
            raise StoreError("injected: status PUT failed")
        return real_set_state(store_, run_id, state, **kwargs)

    monkeypatch.setattr(runstate, "set_state", flaky)
    monkeypatch.setattr(run, "STATUS_RETRY_BASE_S", 0.0)
    # WHEN it runs, THEN the write is retried and the run ends succeeded with its version
    assert run.main(config) == run.EXIT_SUCCEEDED
    assert failures["left"] == 0
    assert (record(store)["state"], record(store)["version"]) == ("succeeded", assert_one_complete_version(store))


# --- nothing non-finite -------------------------------------------------------------------------------


class DivergingNet(nn.Module):
    """Trains like any model, but its logits become infinite: the loss is not finite."""

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.head = nn.Linear(3 * 4 * 4, num_classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.head(nn.functional.adaptive_avg_pool2d(self.normalize(x), 4).flatten(1)) * float("inf")


def test_non_finite_loss_fails_the_run_with_exit_1_and_publishes_nothing(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    recipe = Recipe(epochs=2, batch_size=64, lr=0.1, momentum=0.9, weight_decay=0.0, label_smoothing=0.0, warmup=0.0)
    monkeypatch.setitem(nets.MODELS, "diverging", ModelEntry(DivergingNet, recipe))
    config = make_config(data_dir, tmp_path, model="diverging")
    store = LocalStore(Path(config.store_uri))
    store.put(champion_key("cifar10"), json.dumps(LOW_CHAMPION).encode())
    assert run.main(config) == run.EXIT_FAILED
    status = record(store)
    assert status["state"] == "failed"
    assert "NonFiniteLossError" in status["reason"]
    assert published_versions(store, "cifar10") == []
    assert not store.exists(checkpoint_key(RUN))  # no checkpoint of the diverged weights either
    assert json.loads(store.get(champion_key("cifar10"))) == LOW_CHAMPION


def test_a_model_with_non_finite_weights_is_never_published(tmp_path: Path) -> None:
    from trainer.metrics import EvalResult
    from trainer.publish import TrainingOutcome

    model = nets.build_model("cnn")
    with torch.no_grad():
        next(model.parameters()).view(-1)[:256] = float("inf")
    outcome = TrainingOutcome(
        model=model, model_config={"name": "cnn", "num_classes": 10}, classes=tuple(str(i) for i in range(10)),
        evaluation=EvalResult(loss=1.0, correct=1, total=2, per_class_accuracy={}, confusion=[]), history=[],
        dataset={"checksum": "x", "train_images": 1}, hardware={}, wall_seconds=1.0, precision="fp32",
    )  # fmt: skip
    store = LocalStore(tmp_path / "store")
    config = TrainConfig(model="cnn").replace(work_dir=str(tmp_path / "work"))
    with pytest.raises(PublishError, match="non-finite weights"):
        publish_version(store, config, run_id=RUN, version=f"20260101T000000Z-{RUN}", outcome=outcome,
                        now=datetime.now(UTC))  # fmt: skip
    assert store.list("models/") == []


# --- one run, one trainer, one version -----------------------------------------------------------------


def _leased_record(owner: str, attempt: int, heartbeat: datetime) -> bytes:
    stamp = heartbeat.strftime("%Y-%m-%dT%H:%M:%SZ")
    created = new_record(RUN, now="2026-11-25T19:00:00Z", source="push", attempt=attempt, state="running")
    created["lease"] = {"owner": owner, "attempt": attempt, "heartbeat_at": stamp}
    return json.dumps(created).encode()


def test_second_trainer_of_a_live_run_refuses_with_its_own_exit_code_and_changes_nothing(
    data_dir: Path, tmp_path: Path
) -> None:
    # GIVEN a run whose lease another trainer (another host) renewed a moment ago
    config = make_config(data_dir, tmp_path)
    store = LocalStore(Path(config.store_uri))
    store.put(status_key(RUN), _leased_record("ip-10-0-1-5:1:feedbeef", 1, datetime.now(UTC)))
    before = store.get(status_key(RUN))
    # WHEN a duplicate task of the same attempt starts, THEN it exits 73 without touching anything
    assert run.main(config) == run.EXIT_DUPLICATE
    assert store.get(status_key(RUN)) == before
    assert store.list("models/") == []


@pytest.mark.parametrize(
    ("heartbeat_age", "attempt"),
    [(timedelta(seconds=runstate.LEASE_TTL_S + 60), 1), (timedelta(0), 2)],
    ids=["stale-heartbeat", "trigger-started-next-attempt"],
)
def test_a_dead_trainers_lease_is_taken_over(
    data_dir: Path, tmp_path: Path, heartbeat_age: timedelta, attempt: int
) -> None:
    config = make_config(data_dir, tmp_path, attempt=attempt, epochs=1)
    store = LocalStore(Path(config.store_uri))
    store.put(status_key(RUN), _leased_record("ip-10-0-1-5:1:feedbeef", 1, datetime.now(UTC) - heartbeat_age))
    assert run.main(config) == run.EXIT_SUCCEEDED
    assert record(store)["lease"] is None  # given up at the end
    assert_one_complete_version(store)


def test_trainer_whose_lease_was_taken_over_stops_without_publishing(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a trainer presumed dead: after its first epoch another trainer takes the run's lease
    config = make_config(data_dir, tmp_path)
    store = LocalStore(Path(config.store_uri))
    real_save = run.Checkpoints.save

    def save_then_lose_the_lease(self: Any, *args: Any, **kwargs: Any) -> str:
        uri = real_save(self, *args, **kwargs)
        current = record(store)
        current["lease"] = {"owner": "other-host:7:cafe", "attempt": 2, "heartbeat_at": runstate.utc_now()}
        store.put(status_key(RUN), json.dumps(current).encode())
        return uri

    monkeypatch.setattr(run.Checkpoints, "save", save_then_lose_the_lease)
    # WHEN it goes on, THEN it stops with the duplicate exit code, publishing nothing, leaving the record
    assert run.main(config) == run.EXIT_DUPLICATE
    assert store.list("models/") == []
    assert record(store)["lease"]["owner"] == "other-host:7:cafe"


def test_second_publish_of_the_same_run_collides_instead_of_adding_a_sibling(data_dir: Path, tmp_path: Path) -> None:
    # GIVEN a finished run
    config = make_config(data_dir, tmp_path, epochs=1)
    store = LocalStore(Path(config.store_uri))
    assert run.main(config) == run.EXIT_SUCCEEDED
    version = assert_one_complete_version(store)
    # WHEN another trainer of the same run (its record says when the run was created) publishes again
    again = run.Run(config.replace(attempt=2), store, stop=threading.Event())
    again.created_at = str(again.set_state("running")["created_at"])
    assert again.version_id() == version
    outcome = again.train()
    # THEN it names the same version, and create-only refuses it
    with pytest.raises(VersionExistsError):
        publish_version(store, config, run_id=RUN, version=again.version_id(), outcome=outcome,
                        now=datetime.now(UTC))  # fmt: skip
    assert published_versions(store, "cifar10") == [version]


# --- the kill storm ------------------------------------------------------------------------------------


class Killed(BaseException):
    """The process died here."""


class KillingStore(LocalStore):
    """A local store that dies once, before or after writing the n-th key that ends with `suffix`."""

    def __init__(self, root: Path, suffix: str, when: str, nth: int = 1, state: str | None = None) -> None:
        super().__init__(root)
        self.suffix, self.when, self.nth, self.state = suffix, when, nth, state
        self.seen = 0
        self.armed = True

    def _maybe_die(self, key: str, data: bytes | None, when: str) -> None:
        if not self.armed or when != self.when or not key.endswith(self.suffix):
            return
        if self.state is not None and (data is None or json.loads(data).get("state") != self.state):
            return
        self.seen += 1
        if self.seen == self.nth:
            self.armed = False
            raise Killed(f"killed {when} writing {key}")

    def put(self, key: str, data: bytes, **kwargs: Any) -> str:
        self._maybe_die(key, data, "before")
        etag = super().put(key, data, **kwargs)
        self._maybe_die(key, data, "after")
        return etag

    def upload_file(self, path: Path, key: str, **kwargs: Any) -> str:
        self._maybe_die(key, None, "before")
        etag = super().upload_file(path, key, **kwargs)
        self._maybe_die(key, None, "after")
        return etag


MOMENTS: dict[str, Callable[[Path], KillingStore]] = {
    "first-status": lambda root: KillingStore(root, "status.json", "after", state="running"),
    "checkpoint-data-before-sidecar": lambda root: KillingStore(root, "checkpoint.b.pt", "after"),
    "checkpoint-sidecar": lambda root: KillingStore(root, "checkpoint.pt.sha256", "after", nth=1),
    "publish-midway": lambda root: KillingStore(root, "model.torchscript.pt", "after"),
    "manifest-written": lambda root: KillingStore(root, MANIFEST, "after"),
    "champion-written": lambda root: KillingStore(root, "champion.json", "after"),
    "final-status": lambda root: KillingStore(root, "status.json", "before", state="succeeded"),
}


@pytest.mark.parametrize("moment", list(MOMENTS))
def test_kill_storm_next_attempt_ends_with_one_complete_version(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, moment: str
) -> None:
    # GIVEN a champion to beat, and a trainer that dies (SIGKILL: no handler runs) at this moment
    config = make_config(data_dir, tmp_path)
    LocalStore(Path(config.store_uri)).put(champion_key("cifar10"), json.dumps(LOW_CHAMPION).encode())
    killing = MOMENTS[moment](Path(config.store_uri))
    monkeypatch.setattr(run, "open_store", lambda uri: killing)
    with pytest.raises(Killed):
        run.main(config)
    # WHEN the trigger starts the next attempt
    code = run.main(config.replace(attempt=2))
    # THEN the run ends succeeded with one complete version, gated; nothing half-visible anywhere
    store = LocalStore(Path(config.store_uri))
    version = assert_one_complete_version(store)
    assert code == run.EXIT_SUCCEEDED
    status = record(store)
    assert (status["state"], status["version"], status["lease"]) == ("succeeded", version, None)
    assert status.get("gate", {}).get("outcome", "promoted") == "promoted"
    assert json.loads(store.get(champion_key("cifar10")))["version"] == version
    updates = [entry["update"] for entry in status["history"] if "update" in entry]
    assert len(updates) == len(set(updates))


def test_sigterm_at_the_first_batch_checkpoints_and_exits_75(
    data_dir: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    config = make_config(data_dir, tmp_path)
    store = LocalStore(Path(config.store_uri))
    stop = threading.Event()
    load = run.Run.load_data

    def loaded_then_signalled(self: run.Run) -> Any:
        data = load(self)
        stop.set()  # the signal came once the data was there, before the first batch (a signal before the
        return data  # data ends the run without a download: test_run_outcomes covers that)

    monkeypatch.setattr(run.Run, "load_data", loaded_then_signalled)
    assert run.main(config, stop=stop) == run.EXIT_INTERRUPTED
    status = record(store)
    assert (status["state"], status["lease"]) == ("interrupted", None)
    assert store.exists(sidecar_key(RUN, 0))
    assert store.list("models/") == []
