"""Optional MLflow tracking: a run you can watch while it trains, and a model MLflow can load.

Off unless `MLFLOW_TRACKING_URI` is set; the demo and the default image never need MLflow.

Live (`start_live_run`, called by trainer.run once the run holds its lease): the MLflow run is
created when training starts, with the params and the pushtrain tags; each epoch's metrics are
logged as the epoch ends; the run ends FINISHED (after the version is logged), FAILED or KILLED
(interrupted). Its id is kept in the run record (`mlflow_run_id`), so the attempt that resumes
after a Spot interruption continues the *same* MLflow run. A sweep's runs are children of one
parent run per sweep (tag `mlflow.parentRunId`), so MLflow's compare view shows them together.
Install the client with the trainer's extra: `pip install 'pushtrain-trainer[mlflow]'`
(mlflow-skinny, pinned in requirements/dev.txt).

One MLflow run per pushtrain run, in the experiment `MLFLOW_EXPERIMENT_NAME` (default
`pushtrain-<model_name>`), holding:

- params: the resolved configuration; tags: run id, version, git sha, image digest, dataset checksum;
- metrics: train/test loss and accuracy, throughput and lr per epoch (step = epoch), then the
  final test accuracy and loss;
- artifacts: `report.md`, `curves.png`, `manifest.json`, and the weights under `weights/`
  (`model.pt`, `model.torchscript.pt`);
- an MLflow Model `model` (the pytorch flavor, from the TorchScript export, so serving needs no
  pushtrain code), with a signature (float32 Nx3x32x32 in [0, 1] -> N x classes logits) and an
  input example: `mlflow.pyfunc.load_model("models:/cifar10@champion").predict(images)` works,
  and so does `mlflow models serve`;
- a version of the registered model `<model_name>` made from that model, with the `champion` alias
  moved to it when the gate promoted it (MLflow's own vocabulary for "the one to serve"); a
  `models promote` or `models rollback` by hand moves the alias too (`move_champion_alias`), so
  MLflow and the store name the same champion.

Best effort like the notification: an unreachable server or a refused call is logged and never
changes the run's outcome. Logging again for a version already in MLflow (a resumed bookkeeping
step) does nothing.
"""

from __future__ import annotations

import json
import logging
import os
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, Any

from trainer.store import Store
from trainer.versions import CURVES_FILE, MANIFEST, METRICS_FILE, MODEL_FILE, TORCHSCRIPT_FILE, version_prefix

if TYPE_CHECKING:  # trainer.metrics imports torch; `models promote|rollback` import this module without it
    from trainer.metrics import EpochResult

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
IMAGE_SHAPE = (3, 32, 32)  # what every model takes (trainer.nets): RGB float in [0, 1]
EPOCH_METRICS = ("train_loss", "train_accuracy", "test_loss", "test_accuracy", "images_per_s", "lr")
# The client retries an unreachable server with backoff for minutes by default; a run that has
# already succeeded should not wait that long to say so.
CLIENT_DEFAULTS = {"MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2", "MLFLOW_HTTP_REQUEST_TIMEOUT": "30"}


def _params(config: Mapping[str, Any]) -> dict[str, str]:
    """The configuration as MLflow params (strings), secrets-free: it holds URIs and numbers only."""
    return {name: "" if value is None else str(value) for name, value in sorted(config.items())}


def _mlflow() -> Any:
    """The mlflow module with our client defaults set, or None (logged) when it is not installed."""
    for name, value in CLIENT_DEFAULTS.items():
        os.environ.setdefault(name, value)
    try:
        import mlflow
    except ImportError:
        log.warning("MLFLOW_TRACKING_URI is set but mlflow is not installed: pip install 'pushtrain-trainer[mlflow]'")
        return None
    return mlflow


def log_version(
    store: Store,
    manifest: Mapping[str, Any],
    *,
    report: str,
    promoted: bool,
    environ: Mapping[str, str] | None = None,
    mlflow_run_id: str | None = None,
) -> str | None:
    """Log the version to MLflow (into the live run `mlflow_run_id` when there is one) and end that run
    FINISHED; the MLflow run id, or None when skipped or failed (logged)."""
    environ = os.environ if environ is None else environ
    mlflow = _mlflow()
    if mlflow is None:
        return None
    try:
        return _log(
            mlflow, mlflow.MlflowClient(), store, manifest, report=report, promoted=promoted, environ=environ,
            live_id=mlflow_run_id,
        )  # fmt: skip
    except Exception as exc:  # noqa: BLE001 -- best effort: MLflow must never fail a finished run
        log.warning("could not log %s to MLflow: %s: %s", manifest.get("version"), type(exc).__name__, exc)
        return None


def _experiment(mlflow: Any, environ: Mapping[str, str], model_name: str) -> str:
    """The experiment's name (MLFLOW_EXPERIMENT_NAME, else pushtrain-<model>), made current (created if new)."""
    experiment = environ.get("MLFLOW_EXPERIMENT_NAME") or f"pushtrain-{model_name}"
    mlflow.set_experiment(experiment)
    return experiment


def _log(
    mlflow: Any,
    client: Any,
    store: Store,
    manifest: Mapping[str, Any],
    *,
    report: str,
    promoted: bool,
    environ: Mapping[str, str],
    live_id: str | None = None,
) -> str | None:
    model_name, version = str(manifest["model_name"]), str(manifest["version"])
    experiment = _experiment(mlflow, environ, model_name)
    # model names and version ids are validated ([A-Za-z0-9._-]): no quote can end the filter early
    found = client.search_model_versions(f"name = '{model_name}' and tags.`pushtrain.version` = '{version}'")
    if found:
        log.info("MLflow already has %s (run %s); not logging it again", version, found[0].run_id)
        return str(found[0].run_id)
    prefix = version_prefix(model_name, version)
    metrics = json.loads(store.get(prefix + METRICS_FILE))
    with (
        tempfile.TemporaryDirectory(prefix="pushtrain-mlflow-") as tmp,
        # the live run when training logged one (resumed: status RUNNING until the block ends), else a new one
        mlflow.start_run(run_id=live_id) if live_id else mlflow.start_run(run_name=str(manifest["run_id"])) as run,
    ):
        folder = Path(tmp)
        mlflow.set_tags({
            **_tags(manifest["run_id"], manifest["config"]),
            "pushtrain.version": version,
            "pushtrain.git_sha": manifest.get("git_sha") or "",
            "pushtrain.image_digest": manifest.get("image_digest") or "",
            "pushtrain.dataset": manifest["dataset"].get("checksum", ""),
            "pushtrain.promoted": str(promoted).lower(),
        })  # fmt: skip
        if not live_id:  # a live run has its params and per-epoch metrics already
            mlflow.log_params(_params(manifest["config"]))
            for epoch in metrics["epochs"]:
                mlflow.log_metrics({k: float(epoch[k]) for k in EPOCH_METRICS if k in epoch}, step=int(epoch["epoch"]))
        effective = manifest.get("effective") or {}  # what ran, after the small-data rule (trainer.publish)
        ran = {f"effective_{k}": str(effective[k]) for k in ("batch_size", "lr") if k in effective}
        if ran:
            mlflow.log_params(ran)
        mlflow.log_metrics({"accuracy": float(metrics["accuracy"]), "loss": float(metrics["loss"])})
        mlflow.log_text(report, "report.md")
        for name in (CURVES_FILE, MANIFEST):
            store.download_file(prefix + name, folder / name)
            mlflow.log_artifact(str(folder / name))
        (folder / "weights").mkdir()
        for name in (MODEL_FILE, TORCHSCRIPT_FILE):
            store.download_file(prefix + name, folder / "weights" / name)
        mlflow.log_artifacts(str(folder / "weights"), artifact_path="weights")
        model_uri = _log_model(mlflow, folder / "weights" / TORCHSCRIPT_FILE, len(metrics["per_class_accuracy"]))
        run_id = run.info.run_id
    _register(client, mlflow, model_name, version, model_uri=model_uri, run_id=run_id, promoted=promoted)
    log.info("logged %s to MLflow run %s (experiment %s)", version, run_id, experiment)
    return str(run_id)


def _log_model(mlflow: Any, torchscript: Path, classes: int) -> str:
    """The TorchScript export as an MLflow Model (pytorch flavor) with signature and input example; its URI."""
    import mlflow.pytorch
    import numpy as np
    import torch
    from mlflow.models import ModelSignature
    from mlflow.types import Schema, TensorSpec

    model = torch.jit.load(str(torchscript), map_location="cpu").eval()
    signature = ModelSignature(
        # unnamed: a named input makes pyfunc hand the pytorch flavor a dict, which it refuses
        inputs=Schema([TensorSpec(np.dtype(np.float32), (-1, *IMAGE_SHAPE))]),  # RGB in [0, 1]
        outputs=Schema([TensorSpec(np.dtype(np.float32), (-1, classes))]),  # logits
    )
    example = np.full((1, *IMAGE_SHAPE), 0.5, dtype=np.float32)  # one mid-grey image
    # a ScriptModule is saved with torch.jit.save ("pickle" in MLflow's words; its default "pt2" is for
    # nn.Module exports): loading it needs torch, never pushtrain's code
    info = mlflow.pytorch.log_model(
        model, name="model", signature=signature, input_example=example, serialization_format="pickle"
    )
    return str(info.model_uri)


def _tags(run_id: Any, config: Mapping[str, Any]) -> dict[str, str]:
    tags = {"pushtrain.run_id": str(run_id)}
    if config.get("sweep_id"):
        tags["pushtrain.sweep_id"] = str(config["sweep_id"])
    return tags


# --- the live run ---------------------------------------------------------------------------------


class LiveRun:
    """The MLflow run of a pushtrain run while it trains: epochs logged as they end, then its end status.

    Every call is best effort (logged, never raised): an MLflow outage must not stop training.
    """

    def __init__(self, client: Any, run_id: str) -> None:
        self.client = client
        self.run_id = run_id

    def log_epoch(self, result: EpochResult) -> None:
        from mlflow.entities import Metric

        fields = result.to_dict()
        now = int(time.time() * 1000)
        metrics = [Metric(k, float(fields[k]), now, int(result.epoch)) for k in EPOCH_METRICS if k in fields]
        self._call("log epoch", lambda: self.client.log_batch(self.run_id, metrics=metrics))

    def end(self, status: str) -> None:
        """FAILED or KILLED (FINISHED comes with the version, log_version)."""
        self._call(f"end as {status}", lambda: self.client.set_terminated(self.run_id, status))

    def _call(self, what: str, call: Any) -> None:
        try:
            call()
        except Exception as exc:  # noqa: BLE001 -- best effort: MLflow must never stop training
            log.warning("MLflow run %s: could not %s: %s: %s", self.run_id, what, type(exc).__name__, exc)


def start_live_run(
    run_id: str, config: Mapping[str, Any], existing: str | None, environ: Mapping[str, str] | None = None
) -> LiveRun | None:
    """The MLflow run for a starting (or resuming) attempt: `existing` (the record's `mlflow_run_id`) set
    RUNNING again, else a new run with the params; None when tracking is off or MLflow cannot be reached."""
    environ = os.environ if environ is None else environ
    if not environ.get("MLFLOW_TRACKING_URI"):
        return None
    mlflow = _mlflow()
    if mlflow is None:
        return None
    try:
        client = mlflow.MlflowClient()
        if existing:
            client.update_run(existing, status="RUNNING")
            log.info("MLflow: run %s continues MLflow run %s", run_id, existing)
            return LiveRun(client, existing)
        experiment = _experiment(mlflow, environ, str(config["model_name"]))
        experiment_id = client.get_experiment_by_name(experiment).experiment_id
        tags = _tags(run_id, config)
        if config.get("sweep_id"):
            tags["mlflow.parentRunId"] = _sweep_parent(client, experiment_id, str(config["sweep_id"]))
        created = client.create_run(experiment_id, run_name=run_id, tags=tags)
        from mlflow.entities import Param

        client.log_batch(created.info.run_id, params=[Param(k, v) for k, v in _params(config).items()])
    except Exception as exc:  # noqa: BLE001 -- best effort: training goes on without MLflow
        log.warning("MLflow: could not start a run for %s: %s: %s", run_id, type(exc).__name__, exc)
        return None
    log.info("MLflow: run %s is MLflow run %s (experiment %s)", run_id, created.info.run_id, experiment)
    return LiveRun(client, created.info.run_id)


def _sweep_parent(client: Any, experiment_id: str, sweep_id: str) -> str:
    """The parent MLflow run of sweep `sweep_id`, created by its first child.

    Children start concurrently, so two may both create one: after creating, the oldest parent
    (start time, then id) wins and a losing child deletes its own, so every child names the same one.
    """
    query = f"tags.`pushtrain.sweep_parent` = '{sweep_id}'"  # sweep ids are validated [A-Za-z0-9._-]
    order = ["attributes.start_time ASC", "attributes.run_id ASC"]
    found = client.search_runs([experiment_id], filter_string=query, order_by=order, max_results=1)
    if found:
        return str(found[0].info.run_id)
    mine = client.create_run(experiment_id, run_name=f"sweep {sweep_id}", tags={"pushtrain.sweep_parent": sweep_id})
    (oldest,) = client.search_runs([experiment_id], filter_string=query, order_by=order, max_results=1)
    if oldest.info.run_id != mine.info.run_id:
        client.delete_run(mine.info.run_id)
    return str(oldest.info.run_id)


def _register(
    client: Any, mlflow: Any, model_name: str, version: str, *, model_uri: str, run_id: str, promoted: bool
) -> None:
    """A registered model version for the pushtrain version; the `champion` alias on it when promoted."""
    registered = mlflow.register_model(model_uri, model_name, tags={"pushtrain.version": version})
    client.update_model_version(model_name, registered.version, description=f"pushtrain {version} (run {run_id})")
    if promoted:
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, registered.version)
        log.info("MLflow: %s version %s is now @%s", model_name, registered.version, CHAMPION_ALIAS)


def move_champion_alias(model_name: str, version: str, environ: Mapping[str, str] | None = None) -> bool:
    """After a champion change by hand: point `champion` at the MLflow version of pushtrain `version`.

    Best effort, like logging: off without MLFLOW_TRACKING_URI; a version that was never logged to MLflow
    (tracking was off when it ran) or an unreachable server leaves the alias where it was and says so.
    True when the alias was moved.
    """
    environ = os.environ if environ is None else environ
    if not environ.get("MLFLOW_TRACKING_URI"):
        return False
    mlflow = _mlflow()
    if mlflow is None:
        return False
    try:
        client = mlflow.MlflowClient()
        # model names and version ids are validated ([A-Za-z0-9._-]): no quote can end the filter early
        found = client.search_model_versions(f"name = '{model_name}' and tags.`pushtrain.version` = '{version}'")
        if not found:
            log.warning("MLflow has no version of %s for %s: its @%s alias stays where it was", model_name, version,
                        CHAMPION_ALIAS)  # fmt: skip
            return False
        client.set_registered_model_alias(model_name, CHAMPION_ALIAS, found[0].version)
    except Exception as exc:  # noqa: BLE001 -- best effort: the store's champion has changed either way
        log.warning(
            "could not move the MLflow @%s alias to %s: %s: %s", CHAMPION_ALIAS, version, type(exc).__name__, exc
        )
        return False
    log.info("MLflow: %s version %s is now @%s", model_name, found[0].version, CHAMPION_ALIAS)
    return True
