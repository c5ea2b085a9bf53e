"""A real `python -m trainer train` process against S3 (moto's server on 127.0.0.1), as in ECS.

The trainer finds the endpoint through boto3's own `AWS_ENDPOINT_URL`, so this exercises the same
code path as AWS: conditional PUTs over HTTP, the status record, the checkpoint, the published
version and `python -m trainer models` reading them back.
"""

from __future__ import annotations

import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest
from moto_env import moto_server_env, s3_client
from trainer.synth import write_folder

pytestmark = pytest.mark.slow

BUCKET = "pushtrain-artifacts-test"
RUN = "push-0a1b2c3d4e5f60718293"


@pytest.fixture
def s3_env() -> Iterator[dict[str, str]]:
    with moto_server_env() as env:
        s3_client(env).create_bucket(Bucket=BUCKET)
        yield env


def test_trainer_process_on_s3_publishes_a_version_the_models_cli_lists(s3_env: dict[str, str], tmp_path: Path) -> None:
    # GIVEN a small dataset and the environment an ECS task gets (TRAINER_* from the task definition)
    write_folder(tmp_path / "data", n_train=512, n_test=128, seed=4)
    env = s3_env | {
        "TRAINER_STORE_URI": f"s3://{BUCKET}",
        "TRAINER_RUN_ID": RUN,
        "TRAINER_IMAGE_DIGEST": "sha256:" + "9" * 64,
        "TRAINER_DATA_URI": str(tmp_path / "data"),
        "TRAINER_WORK_DIR": str(tmp_path / "scratch"),
        "TRAINER_ACCURACY_FLOOR": "0",
    }
    settings = ["--model", "cnn", "--epochs", "1", "--batch-size", "64", "--progress", "none", "--threads", "1"]
    # WHEN the trainer runs to the end
    done = subprocess.run([sys.executable, "-m", "trainer", "train", *settings], env=env, capture_output=True,
                          text=True, timeout=600, check=False)  # fmt: skip
    assert done.returncode == 0, done.stderr
    # THEN the models CLI, pointed at the bucket, lists the version as champion
    listed = subprocess.run([sys.executable, "-m", "trainer", "models", "list", "--json"], env=env,
                            capture_output=True, text=True, timeout=120, check=True)  # fmt: skip
    versions = json.loads(listed.stdout)
    assert [(v["run_id"], v["champion"], v["image_digest"]) for v in versions] == [(RUN, True, "sha256:" + "9" * 64)]
    s3 = s3_client(env)
    status = json.loads(s3.get_object(Bucket=BUCKET, Key=f"runs/{RUN}/status.json")["Body"].read())
    assert (status["state"], status["version"]) == ("succeeded", versions[0]["version"])
    keys = {o["Key"] for o in s3.list_objects_v2(Bucket=BUCKET)["Contents"]}
    assert f"runs/{RUN}/checkpoint.pt" in keys
    assert f"models/cifar10/{versions[0]['version']}/manifest.json" in keys
