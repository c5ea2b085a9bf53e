"""MLflow tracking against a real local tracking server (SQLite backend, loopback only) started here.

GIVEN a published, promoted version, WHEN the run finishes with MLFLOW_TRACKING_URI set, THEN MLflow
holds the params, the per-epoch metrics, the report and curves, and a registered model version
carrying the `champion` alias; finishing again logs nothing twice; without mlflow or a server the run
is unaffected.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from trainer.config import TrainConfig
from trainer.finish import after_success
from trainer.metrics import EpochResult, EvalResult
from trainer.nets import build_model
from trainer.publish import TrainingOutcome, publish_version
from trainer.run import run_gate
from trainer.store import LocalStore
from trainer.versions import new_version_id

mlflow = pytest.importorskip("mlflow")
# The server takes tens of seconds to start on a small machine; still part of `make test`.
pytestmark = pytest.mark.slow

RUN_ID = "push-0f0e0d0c0b0a09080706"
STARTUP_S = 90  # the server imports its whole stack on start; a bound, not an expectation


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    port = free_port()
    server = subprocess.Popen(
        [sys.executable, "-m", "mlflow", "server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
         "--artifacts-destination", str(root / "artifacts"), "--host", "127.0.0.1", "--port", str(port),
         "--workers", "1"],
        stdout=(root / "server.log").open("w"), stderr=subprocess.STDOUT,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{uri}/health", timeout=2) as answer:  # noqa: S310 -- our own loopback server
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if server.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow server did not start: {(root / 'server.log').read_text()[-2000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        server.terminate()
        server.wait(timeout=30)


def published(
    tmp_path: Path, run_id: str = RUN_ID, accuracy: float = 0.75, hour: int = 19
) -> tuple[LocalStore, TrainConfig, str]:
    """A version of 3 epochs of run `run_id` with test accuracy `accuracy`, published in tmp_path's store."""
    store = LocalStore(tmp_path / "store")
    config = TrainConfig(model="cnn", work_dir=str(tmp_path / "work")).replace(epochs=3, run_id=run_id)
    history = [EpochResult(e, 2.0 / e, 0.2 * e, 1.9 / e, 0.25 * e, 500.0 + e, 3.0, 0.2, 0.1) for e in (1, 2, 3)]
    outcome = TrainingOutcome(
        model=build_model("cnn", 2), model_config={"name": "cnn", "num_classes": 2}, classes=("a", "b"),
        evaluation=EvalResult(0.4, round(accuracy * 8), 8, {"a": accuracy, "b": accuracy}, [[3, 1], [1, 3]]),
        history=history,
        dataset={"checksum": "sha256:" + "e" * 64, "train_images": 16}, hardware={"device": "cpu"},
        wall_seconds=9.0, precision="fp32",
    )  # fmt: skip
    version = new_version_id(run_id, datetime(2026, 11, 25, hour, tzinfo=UTC))
    publish_version(store, config, run_id=run_id, version=version, outcome=outcome, now=datetime.now(UTC))
    return store, config, version


def test_a_promoted_run_is_in_mlflow_with_metrics_artifacts_and_the_champion_alias(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    store, config, version = published(tmp_path)
    decision = run_gate(store, "cifar10", version, None, floor="0.5", margin="0", run_id=RUN_ID)
    # WHEN the run finishes (twice: a resumed bookkeeping step must not log a second run)
    after_success(store, config, RUN_ID, version, decision)
    after_success(store, config, RUN_ID, version, decision)
    # THEN one MLflow run holds the params, per-epoch metrics, report, curves and weights
    client = mlflow.MlflowClient(tracking_uri)
    (run,) = client.search_runs(
        [client.get_experiment_by_name("pushtrain-cifar10").experiment_id],
        filter_string=f"tags.`pushtrain.version` = '{version}'",
    )
    assert run.data.params["model"] == "cnn" and run.data.params["epochs"] == "3"
    assert run.data.tags["pushtrain.run_id"] == RUN_ID
    steps = [(m.step, m.value) for m in client.get_metric_history(run.info.run_id, "test_accuracy")]
    assert steps == [(1, 0.25), (2, 0.5), (3, 0.75)]
    assert run.data.metrics["accuracy"] == 0.75
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"report.md", "curves.png", "manifest.json", "model"} <= artifacts
    report = Path(client.download_artifacts(run.info.run_id, "report.md", str(tmp_path))).read_text()
    assert "**Gate: promoted to champion**" in report
    # AND the registered model's `champion` alias points at this version
    champion = client.get_model_version_by_alias("cifar10", "champion")
    assert champion.run_id == run.info.run_id and champion.tags["pushtrain.version"] == version


def test_promote_and_rollback_by_hand_move_the_mlflow_champion_alias(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from trainer.registry_cli import main as models

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    # GIVEN two versions logged to MLflow, the second promoted over the first by the gate
    versions = []
    for run_id, accuracy, hour in (("push-1111111111aaaaaaaaaa", 0.75, 20), ("push-2222222222bbbbbbbbbb", 0.875, 21)):
        store, config, version = published(tmp_path, run_id, accuracy, hour)
        decision = run_gate(store, "cifar10", version, None, floor="0.5", margin="0", run_id=run_id)
        after_success(store, config, run_id, version, decision)
        versions.append(version)
    client = mlflow.MlflowClient(tracking_uri)

    def champion() -> str:
        return client.get_model_version_by_alias("cifar10", "champion").tags["pushtrain.version"]

    assert champion() == versions[1]
    # WHEN a person rolls back THEN the store and MLflow both name the first version
    assert models(["rollback", "--store", str(store.root), "--reason", "regression in the field"]) == 0
    assert champion() == versions[0]
    # WHEN the second is promoted again by hand THEN the alias follows
    assert models(["promote", versions[1], "--store", str(store.root), "--reason", "fixed"]) == 0
    assert champion() == versions[1]


def test_an_alias_move_for_a_version_mlflow_never_saw_is_refused_quietly(
    tracking_uri: str, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    from trainer.tracking import move_champion_alias

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    assert move_champion_alias("cifar10", "20261125T190000Z-push-ffffffffffffffffffff") is False
    assert any("has no version of cifar10" in r.getMessage() for r in caplog.records)


def test_an_unreachable_server_is_logged_and_changes_nothing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
) -> None:
    # GIVEN a tracking URI nobody listens on
    monkeypatch.setenv("MLFLOW_TRACKING_URI", f"http://127.0.0.1:{free_port()}")
    monkeypatch.setenv("MLFLOW_HTTP_REQUEST_MAX_RETRIES", "0")
    store, config, version = published(tmp_path)
    decision = run_gate(store, "cifar10", version, None, floor="0.5", margin="0", run_id=RUN_ID)
    # WHEN the run finishes; THEN it says why MLflow got nothing, and the run's report is still written
    after_success(store, config, RUN_ID, version, decision)
    assert any("could not log" in r.getMessage() for r in caplog.records)
    assert store.exists(f"runs/{RUN_ID}/report.md")
    assert "MLFLOW_TRACKING_URI" in os.environ
