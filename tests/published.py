"""A published version reduced to what the gate reads: metrics.json with its counts, and a manifest listing its SHA-256.

Tests of the gate and the champion commands use it instead of training a model (`trainer.publish` writes
the real thing; tests/test_e2e_pipeline.py and trainer/tests/test_run_* cover that path).
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from trainer.store import Store


def publish_counts(
    store: Store, model_name: str, version: str, correct: int, total: int, *, run_id: str | None = None, **metrics: Any
) -> dict[str, Any]:
    """Write models/<model_name>/<version>/{metrics.json,manifest.json}; return the manifest."""
    prefix = f"models/{model_name}/{version}/"
    body = json.dumps({"accuracy": correct / total, "correct": correct, "total": total, **metrics}).encode()
    store.put(prefix + "metrics.json", body)
    manifest = {
        "schema": 1,
        "model_name": model_name,
        "version": version,
        "run_id": run_id or f"run-{version}",
        "metrics": {"accuracy": correct / total, "correct": correct, "total": total},
        "files": {"metrics.json": {"sha256": hashlib.sha256(body).hexdigest(), "bytes": len(body)}},
    }
    store.put(prefix + "manifest.json", json.dumps(manifest).encode())
    return manifest
