"""MLflow tracking against a real local tracking server (SQLite backend, loopback only) started here.

GIVEN a run that trains with MLFLOW_TRACKING_URI set and is interrupted after its first epoch, WHEN
it is started again, THEN it continues the same MLflow run (id in the run record), which ends
FINISHED with both epochs, and the champion loads by alias with mlflow.pyfunc and predicts, and
MLflow's scoring server (the app `mlflow models serve` runs) serves it: POST /invocations answers
the same logits.

GIVEN a published, promoted version, WHEN the run finishes with MLFLOW_TRACKING_URI set, THEN MLflow
holds the params, the per-epoch metrics, the report and curves, and a registered model version
carrying the `champion` alias; finishing again logs nothing twice; without mlflow or a server the run
is unaffected.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

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
STARTUP_S = 300  # the server imports its whole stack on start (minutes on a loaded 2-core machine); a bound


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def mlflow_process(args: list[str], port: int, health: str, log: Path) -> Iterator[str]:
    """`python -m mlflow ARGS` on loopback, once GET `health` answers 200; stopped with its process group."""
    process = subprocess.Popen(
        [sys.executable, "-m", "mlflow", *args, "--host", "127.0.0.1", "--port", str(port), "--workers", "1"],
        stdout=log.open("w"), stderr=subprocess.STDOUT, start_new_session=True,
    )  # fmt: skip
    uri = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + STARTUP_S
    try:
        while True:
            try:
                with urllib.request.urlopen(f"{uri}{health}", timeout=2) as answer:  # noqa: S310 -- our own loopback server
                    if answer.status == 200:
                        break
            except OSError:
                pass
            if process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"mlflow {args[0]} did not start: {log.read_text()[-2000:]}")
            time.sleep(0.5)
        yield uri
    finally:
        # the process's own group: its uvicorn workers go with it
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(timeout=60)
        except subprocess.TimeoutExpired:  # a loaded machine: a worker outlives SIGTERM's grace
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(timeout=60)


@pytest.fixture(scope="module")
def tracking_uri(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    root = tmp_path_factory.mktemp("mlflow")
    args = ["server", "--backend-store-uri", f"sqlite:///{root / 'mlflow.db'}",
            "--artifacts-destination", str(root / "artifacts")]  # fmt: skip
    with mlflow_process(args, free_port(), "/health", root / "server.log") as uri:
        yield uri


def score_over_http(model_uri: str, images: Any) -> Any:
    """The predictions of POST /invocations from MLflow's scoring server serving `model_uri` on loopback.

    In process, not `mlflow models serve`: that command loads the model, then execs `uvicorn
    mlflow.pyfunc.scoring_server.app:app`, whose app is `scoring_server.init(load_model_with_mlflow_config(
    uri))`: this builds the same app the same way and serves it with the same uvicorn, without the
    second interpreter start (the command took 34.9 s here, busy 2-core machine; README, MLflow).
    """
    import threading

    import uvicorn
    from mlflow.pyfunc import scoring_server

    app = scoring_server.init(scoring_server.load_model_with_mlflow_config(model_uri))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=free_port(), log_level="warning"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    try:
        deadline = time.monotonic() + STARTUP_S
        while not server.started:
            if not thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the scoring server did not start")
            time.sleep(0.05)
        uri = f"http://127.0.0.1:{server.config.port}"
        with urllib.request.urlopen(f"{uri}/ping", timeout=10) as answer:  # noqa: S310 -- our own loopback server
            assert answer.status == 200
        body = json.dumps({"inputs": images.tolist()}).encode()
        request = urllib.request.Request(f"{uri}/invocations", data=body, method="POST")  # noqa: S310 -- loopback
        request.add_header("Content-Type", "application/json")
        with urllib.request.urlopen(request, timeout=STARTUP_S) as answer:  # noqa: S310 -- our own loopback server
            return json.loads(answer.read())["predictions"]
    finally:
        server.should_exit = True
        thread.join(timeout=60)


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
    assert {"report.md", "curves.png", "manifest.json", "weights"} <= artifacts
    report = Path(client.download_artifacts(run.info.run_id, "report.md", str(tmp_path))).read_text()
    assert "**Gate: promoted to champion**" in report
    # AND the registered model's `champion` alias points at this version
    champion = client.get_model_version_by_alias("cifar10", "champion")
    assert champion.run_id == run.info.run_id and champion.tags["pushtrain.version"] == version


def test_a_live_run_is_interrupted_resumed_in_the_same_mlflow_run_and_its_champion_loads_by_alias(
    tracking_uri: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    import threading

    import numpy as np
    from trainer.run import EXIT_INTERRUPTED, EXIT_SUCCEEDED
    from trainer.run import main as run_main
    from trainer.runstate import read_status
    from trainer.synth import write_folder
    from trainer.tracking import LiveRun

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "live")
    write_folder(tmp_path / "data", n_train=64, n_test=32, seed=2)
    run_id = "push-3333333333cccccccccc"
    config = TrainConfig(model="cnn", data_uri=str(tmp_path / "data"), work_dir=str(tmp_path / "work")).replace(
        store_uri=str(tmp_path / "store"), run_id=run_id, epochs=2, batch_size=16, progress="none",
        accuracy_floor="0", threads=1,
    )  # fmt: skip
    client = mlflow.MlflowClient(tracking_uri)
    seen: list[tuple[int, str]] = []
    log_epoch = LiveRun.log_epoch

    def interrupt_after_epoch_1(self: LiveRun, result: EpochResult) -> None:
        log_epoch(self, result)
        # THEN while training, the MLflow run is RUNNING and already holds the epoch just ended
        seen.append((result.epoch, client.get_run(self.run_id).info.status))
        if result.epoch == 1 and stop is not None:
            stop.set()  # what SIGTERM does: the run checkpoints and ends interrupted before the next batch

    monkeypatch.setattr(LiveRun, "log_epoch", interrupt_after_epoch_1)
    # WHEN the first attempt is interrupted after epoch 1
    stop: threading.Event | None = threading.Event()
    assert run_main(config, stop=stop) == EXIT_INTERRUPTED
    first_id = read_status(LocalStore(tmp_path / "store"), run_id)["mlflow_run_id"]
    assert client.get_run(first_id).info.status == "KILLED"
    # AND the second attempt resumes
    stop = None
    assert run_main(config.replace(attempt=2), stop=threading.Event()) == EXIT_SUCCEEDED
    # THEN it continued the same MLflow run, which is FINISHED with both epochs, once each
    assert read_status(LocalStore(tmp_path / "store"), run_id)["mlflow_run_id"] == first_id
    assert seen == [(1, "RUNNING"), (2, "RUNNING")]
    run = client.get_run(first_id)
    assert run.info.status == "FINISHED" and run.data.params["epochs"] == "2"
    assert [m.step for m in client.get_metric_history(first_id, "test_accuracy")] == [1, 2]
    experiment = client.get_experiment_by_name("live").experiment_id
    assert len(client.search_runs([experiment], f"tags.`pushtrain.run_id` = '{run_id}'")) == 1
    # AND the champion, by alias, loads with pyfunc and predicts one row of logits per image
    model = mlflow.pyfunc.load_model("models:/cifar10@champion")
    assert model.metadata.run_id == first_id
    images = np.random.default_rng(0).random((3, 3, 32, 32), dtype=np.float32)
    logits = model.predict(images)
    assert np.asarray(logits).shape == (3, 10)
    # AND MLflow's scoring server, the app `mlflow models serve` runs, serves the champion by alias over
    # HTTP: POST /invocations ({"inputs": …}, MLflow's scoring protocol) answers the same logits
    served = np.asarray(score_over_http("models:/cifar10@champion", images), dtype=np.float32)
    assert served.shape == (3, 10)
    assert np.allclose(served, np.asarray(logits), atol=1e-5)
    assert served.argmax(axis=1).tolist() == np.asarray(logits).argmax(axis=1).tolist()


def test_a_sweeps_runs_are_children_of_one_parent_run(tracking_uri: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from trainer.tracking import start_live_run

    monkeypatch.setenv("MLFLOW_TRACKING_URI", tracking_uri)
    monkeypatch.setenv("MLFLOW_EXPERIMENT_NAME", "sweeps")
    # WHEN two runs of sweep s1 and one of sweep s2 start
    config = {"model_name": "cifar10", "sweep_id": "s1", "lr": "0.1"}
    children = [start_live_run(f"sweep-s1-{i}", {**config, "lr": f"0.{i}"}, None) for i in (1, 2)]
    other = start_live_run("sweep-s2-1", {**config, "sweep_id": "s2"}, None)
    client = mlflow.MlflowClient(tracking_uri)
    parents = [client.get_run(c.run_id).data.tags["mlflow.parentRunId"] for c in (*children, other)]  # type: ignore[union-attr]
    # THEN both s1 runs name one parent, tagged with the sweep, and s2 has its own
    assert parents[0] == parents[1] != parents[2]
    assert client.get_run(parents[0]).data.tags["pushtrain.sweep_parent"] == "s1"
    assert client.get_run(children[0].run_id).data.params["lr"] == "0.1"  # type: ignore[union-attr]


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
