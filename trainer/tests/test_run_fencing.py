"""One fence guards every irreversible write: separate trainer processes against one moto S3 server.

A real `python -m trainer train` (trainer A) is held by a botocore hook (tests/hold_s3.py) at the fencing
write on its run record just before an irreversible step (the manifest PUT, the gate, the champion move).
While it is held, another trainer takes the run over, the way a trainer does at its start
(`runstate.set_state(..., "running", lease=...)`): by a newer attempt (the trigger superseded A) or because
A's lease aged. Released, A's conditional write on the record fails, it re-reads the record, finds the lease
gone, writes nothing more and exits 73.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto_env import moto_server_env
from trainer.store import PreconditionFailed, S3Store
from trainer.synth import write_folder

from trainer import runstate

pytestmark = pytest.mark.slow

BUCKET = "pushtrain-fencing-test"
RUN = "push-fe0ce0fe0ce0fe0ce0fe"
HOLD_SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "hold_s3.py"
EXIT_DUPLICATE = 73


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, str]]:
    with moto_server_env() as env:
        yield env


def client(env: dict[str, str]) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=env["AWS_ENDPOINT_URL"],
        region_name=env["AWS_DEFAULT_REGION"],
        aws_access_key_id=env["AWS_ACCESS_KEY_ID"],
        aws_secret_access_key=env["AWS_SECRET_ACCESS_KEY"],
    )


def test_moto_refuses_a_conditional_write_that_should_fail(server: dict[str, str]) -> None:
    # The fence rests on S3's If-Match and If-None-Match: never trust the emulator's silence about them.
    client(server).create_bucket(Bucket=f"{BUCKET}-cas")
    store = S3Store(f"{BUCKET}-cas", client=client(server))
    etag = store.put("k.json", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("k.json", b"2", if_none_match=True)
    store.put("k.json", b"3", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put("k.json", b"4", if_match=etag)  # stale: the object changed
    assert store.get("k.json") == b"3"


def take_over(store: S3Store, how: str) -> None:
    """Trainer B takes the run, as a trainer does at its start: a newer attempt, or over an aged lease."""
    record = runstate.read_status(store, RUN)
    assert record is not None and record["lease"] is not None
    attempt = int(record["lease"]["attempt"])
    if how == "aged":
        old = (datetime.now(UTC) - timedelta(seconds=runstate.LEASE_TTL_S + 60)).strftime("%Y-%m-%dT%H:%M:%SZ")

        def age(current: dict[str, Any]) -> None:
            current["lease"]["heartbeat_at"] = old

        runstate.update_status(store, RUN, age, create=dict)
    else:
        attempt += 1
    runstate.set_state(store, RUN, "running", attempt=attempt, lease=(f"trainer-b:{how}", attempt), create=dict)
    lease = (runstate.read_status(store, RUN) or {})["lease"]
    assert lease["took_over"] == how


# Each irreversible step once, with either way of taking over; the three held trainers run at the same time
# (each its own run in its own bucket) so the test costs about one trainer's start-up and training.
HOLDS = (("the manifest PUT", "superseded"), ("the gate", "aged"), ("the champion move", "superseded"))


def start_held_trainer(env: dict[str, str], folder: Path, step: str) -> subprocess.Popen[str]:
    settings = ["--model", "cnn", "--epochs", "1", "--batch-size", "64", "--progress", "none", "--threads", "1"]
    env = env | {
        "TRAINER_RUN_ID": RUN,
        "TRAINER_DATA_URI": str(folder.parent / "data"),
        "TRAINER_WORK_DIR": str(folder / "work"),
        "TRAINER_ACCURACY_FLOOR": "0",
    }
    return subprocess.Popen(
        [sys.executable, str(HOLD_SCRIPT), str(folder / "held"), str(folder / "release"), step, "--", "train",
         *settings],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip


def wait_until_held(trainer: subprocess.Popen[str], held: Path, step: str) -> None:
    deadline = time.monotonic() + 600
    while not held.exists():
        assert trainer.poll() is None, f"the trainer ended before {step}: {trainer.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, f"the trainer never reached {step}"
        time.sleep(0.1)


def test_a_trainer_held_before_each_irreversible_step_while_another_takes_over_writes_nothing_more(
    server: dict[str, str], tmp_path: Path
) -> None:
    write_folder(tmp_path / "data", n_train=256, n_test=64, seed=3)
    stores, trainers = [], []
    try:
        # GIVEN three trainers A of three runs, each held at the fencing write just before one irreversible step
        for i, (step, _) in enumerate(HOLDS):
            name = f"{BUCKET}-{i}"
            client(server).create_bucket(Bucket=name)
            stores.append(S3Store(name, client=client(server)))
            (tmp_path / str(i)).mkdir()
            trainers.append(start_held_trainer(server | {"TRAINER_STORE_URI": f"s3://{name}"}, tmp_path / str(i), step))
        before = []
        for i, (step, how) in enumerate(HOLDS):
            wait_until_held(trainers[i], tmp_path / str(i) / "held", step)
            # WHEN trainer B takes the run over (a newer attempt, or over the aged lease) ...
            take_over(stores[i], how)
            before.append((stores[i].list(""), stores[i].get_with_etag(runstate.status_key(RUN))))
        # ... and A is released
        for i in range(len(HOLDS)):
            (tmp_path / str(i) / "release").write_text("go")
        errors = [trainer.communicate(timeout=300)[1] for trainer in trainers]
    finally:
        for trainer in trainers:
            if trainer.poll() is None:
                trainer.kill()
    for i, (step, how) in enumerate(HOLDS):
        keys, record = before[i]
        # THEN A exits 73 having written nothing more: the same keys, the record exactly as B left it
        assert trainers[i].returncode == EXIT_DUPLICATE, errors[i][-3000:]
        assert f"stops before {step}" in errors[i]
        assert stores[i].list("") == keys
        assert stores[i].get_with_etag(runstate.status_key(RUN)) == record
        assert not stores[i].exists("models/cifar10/champion.json")
        assert json.loads(record[0])["lease"]["owner"] == f"trainer-b:{how}"
    # the manifest was never written by the trainer held before it; the others had published
    assert not any(key.endswith("/manifest.json") for key in before[0][0])
    assert all(any(key.endswith("/manifest.json") for key in keys) for keys, _ in before[1:])
