"""Optional MLflow tracking: a succeeded run, as MLflow users expect to find it.

Off unless `MLFLOW_TRACKING_URI` is set (trainer.finish calls this after the run succeeded); the
demo and the default image never need MLflow. Install the client with the trainer's extra:
`pip install 'pushtrain-trainer[mlflow]'` (mlflow-skinny, pinned in requirements/dev.txt).

One MLflow run per pushtrain run, in the experiment `MLFLOW_EXPERIMENT_NAME` (default
`pushtrain-<model_name>`), holding:

- params: the resolved configuration; tags: run id, version, git sha, image digest, dataset checksum;
- metrics: train/test loss and accuracy, throughput and lr per epoch (step = epoch), then the
  final test accuracy and loss;
- artifacts: `report.md`, `curves.png`, `manifest.json`, and the weights under `model/`
  (`model.pt`, `model.torchscript.pt`);
- a version of the registered model `<model_name>` made from `model/`, with the `champion` alias
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
from collections.abc import Mapping
from pathlib import Path
from typing import Any

from trainer.store import Store
from trainer.versions import CURVES_FILE, MANIFEST, METRICS_FILE, MODEL_FILE, TORCHSCRIPT_FILE, version_prefix

log = logging.getLogger(__name__)

CHAMPION_ALIAS = "champion"
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
    store: Store, manifest: Mapping[str, Any], *, report: str, promoted: bool, environ: Mapping[str, str] | None = None
) -> str | None:
    """Log the version to MLflow; the MLflow run id, or None when skipped or failed (logged)."""
    environ = os.environ if environ is None else environ
    mlflow = _mlflow()
    if mlflow is None:
        return None
    try:
        return _log(mlflow, mlflow.MlflowClient(), store, manifest, report=report, promoted=promoted, environ=environ)
    except Exception as exc:  # noqa: BLE001 -- best effort: MLflow must never fail a finished run
        log.warning("could not log %s to MLflow: %s: %s", manifest.get("version"), type(exc).__name__, exc)
        return None


def _log(
    mlflow: Any,
    client: Any,
    store: Store,
    manifest: Mapping[str, Any],
    *,
    report: str,
    promoted: bool,
    environ: Mapping[str, str],
) -> str | None:
    model_name, version = str(manifest["model_name"]), str(manifest["version"])
    experiment = environ.get("MLFLOW_EXPERIMENT_NAME") or f"pushtrain-{model_name}"
    mlflow.set_experiment(experiment)
    found = mlflow.search_runs(
        experiment_names=[experiment], filter_string=f"tags.`pushtrain.version` = '{version}'", output_format="list"
    )
    if found:
        log.info("MLflow already has %s (run %s); not logging it again", version, found[0].info.run_id)
        return str(found[0].info.run_id)
    prefix = version_prefix(model_name, version)
    metrics = json.loads(store.get(prefix + METRICS_FILE))
    with (
        tempfile.TemporaryDirectory(prefix="pushtrain-mlflow-") as tmp,
        mlflow.start_run(run_name=str(manifest["run_id"])) as run,
    ):
        folder = Path(tmp)
        mlflow.set_tags({
            "pushtrain.run_id": manifest["run_id"],
            "pushtrain.version": version,
            "pushtrain.git_sha": manifest.get("git_sha") or "",
            "pushtrain.image_digest": manifest.get("image_digest") or "",
            "pushtrain.dataset": manifest["dataset"].get("checksum", ""),
            "pushtrain.promoted": str(promoted).lower(),
        })  # fmt: skip
        mlflow.log_params(_params(manifest["config"]))
        for epoch in metrics["epochs"]:
            mlflow.log_metrics({k: float(epoch[k]) for k in EPOCH_METRICS if k in epoch}, step=int(epoch["epoch"]))
        mlflow.log_metrics({"accuracy": float(metrics["accuracy"]), "loss": float(metrics["loss"])})
        mlflow.log_text(report, "report.md")
        for name in (CURVES_FILE, MANIFEST):
            store.download_file(prefix + name, folder / name)
            mlflow.log_artifact(str(folder / name))
        (folder / "model").mkdir()
        for name in (MODEL_FILE, TORCHSCRIPT_FILE):
            store.download_file(prefix + name, folder / "model" / name)
        mlflow.log_artifacts(str(folder / "model"), artifact_path="model")
        run_id = run.info.run_id
        artifact_uri = run.info.artifact_uri
    _register(client, model_name, version, f"{artifact_uri}/model", run_id, promoted=promoted)
    log.info("logged %s to MLflow run %s (experiment %s)", version, run_id, experiment)
    return str(run_id)


def _register(client: Any, model_name: str, version: str, source: str, run_id: str, *, promoted: bool) -> None:
    """A registered model version for the pushtrain version; the `champion` alias on it when promoted."""
    from mlflow.exceptions import MlflowException

    try:
        client.create_registered_model(model_name, description="pushtrain: one version per published model")
    except MlflowException as exc:
        if "RESOURCE_ALREADY_EXISTS" not in str(exc.error_code):
            raise
    registered = client.create_model_version(
        model_name, source=source, run_id=run_id, tags={"pushtrain.version": version}, description=version
    )
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
