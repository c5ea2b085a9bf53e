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

import pytest
from moto_env import moto_server_env, s3_client
from trainer.config import load_config
from trainer.registry import published_versions
from trainer.store import PreconditionFailed, S3Store
from trainer.synth import write_folder
from trainer.versions import read_manifest, verify_files

from trainer import run, runstate

pytestmark = pytest.mark.slow

BUCKET = "pushtrain-fencing-test"
RUN = "push-fe0ce0fe0ce0fe0ce0fe"
HOLD_SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "hold_s3.py"
EXIT_DUPLICATE = 73
EXIT_INTERRUPTED = 75


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, str]]:
    with moto_server_env() as env:
        yield env


def test_moto_refuses_a_conditional_write_that_should_fail(server: dict[str, str]) -> None:
    # The fence rests on S3's If-Match and If-None-Match: never trust the emulator's silence about them.
    s3_client(server).create_bucket(Bucket=f"{BUCKET}-cas")
    store = S3Store(f"{BUCKET}-cas", client=s3_client(server))
    etag = store.put("k.json", b"1", if_none_match=True)
    with pytest.raises(PreconditionFailed):
        store.put("k.json", b"2", if_none_match=True)
    store.put("k.json", b"3", if_match=etag)
    with pytest.raises(PreconditionFailed):
        store.put("k.json", b"4", if_match=etag)  # stale: the object changed
    assert store.get("k.json") == b"3"


def age_lease(store: S3Store) -> None:
    """Make the holder's last heartbeat older than LEASE_TTL_S, as if it had stalled that long."""
    old = (datetime.now(UTC) - timedelta(seconds=runstate.LEASE_TTL_S + 60)).strftime("%Y-%m-%dT%H:%M:%SZ")

    def age(current: dict[str, Any]) -> None:
        current["lease"]["heartbeat_at"] = old

    runstate.update_status(store, RUN, age, create=dict)


def take_over(store: S3Store, how: str) -> None:
    """Trainer B takes the run, as a trainer does at its start: a newer attempt, or over an aged lease."""
    record = runstate.read_status(store, RUN)
    assert record is not None and record["lease"] is not None
    attempt = int(record["lease"]["attempt"])
    if how == "aged":
        age_lease(store)
    else:
        attempt += 1
    runstate.set_state(store, RUN, "running", attempt=attempt, lease=(f"trainer-b:{how}", attempt), create=dict)
    lease = (runstate.read_status(store, RUN) or {})["lease"]
    assert lease["took_over"] == how


# Each irreversible step with each way of taking over; the held trainers run at the same time (each its own
# run in its own bucket). The manifest PUT with an aged lease is the end-to-end test below, where a real
# trainer B takes the lease over.
STEPS = ("the manifest PUT", "the gate", "the champion move")
HOLDS = tuple(
    (step, how) for step in STEPS for how in ("superseded", "aged") if (step, how) != ("the manifest PUT", "aged")
)
# A trainer of this test: the smallest settings that train, publish and gate (no TTA: evaluation is not the point).
SETTINGS = ("--model", "cnn", "--epochs", "1", "--batch-size", "64", "--progress", "none", "--threads", "1")


def trainer_env(env: dict[str, str], folder: Path) -> dict[str, str]:
    return env | {
        "TRAINER_RUN_ID": RUN,
        "TRAINER_DATA_URI": str(folder.parent / "data"),
        "TRAINER_WORK_DIR": str(folder / "work"),
        "TRAINER_ACCURACY_FLOOR": "0",
        "TRAINER_TTA": "false",
    }


def start_held_trainer(env: dict[str, str], folder: Path, step: str) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, str(HOLD_SCRIPT), str(folder / "held"), str(folder / "release"), step, "--", "train",
         *SETTINGS],
        env=trainer_env(env, folder), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
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
            s3_client(server).create_bucket(Bucket=name)
            stores.append(S3Store(name, client=s3_client(server)))
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
    # the manifest was never written by a trainer held before it; the others had published
    for (step, _), (keys, _) in zip(HOLDS, before, strict=True):
        assert any(key.endswith("/manifest.json") for key in keys) == (step != "the manifest PUT")


def test_an_aged_takeover_ends_73_and_75_without_a_version_and_the_next_attempt_publishes_once(
    server: dict[str, str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN trainer A held just before its manifest PUT (its files written), stalled past the lease's TTL
    write_folder(tmp_path / "data", n_train=256, n_test=64, seed=3)
    bucket = f"{BUCKET}-aged"
    s3_client(server).create_bucket(Bucket=bucket)
    store = S3Store(bucket, client=s3_client(server))
    env = server | {"TRAINER_STORE_URI": f"s3://{bucket}"}
    (tmp_path / "a").mkdir()
    (tmp_path / "b").mkdir()
    trainer_a = start_held_trainer(env, tmp_path / "a", "the manifest PUT")
    trainer_b = None
    try:
        wait_until_held(trainer_a, tmp_path / "a" / "held", "the manifest PUT")
        age_lease(store)
        leftovers = {key: store.get(key) for key in store.list("models/")}
        # WHEN trainer B of the same attempt starts: it takes the aged lease, trains, and finds A's files
        trainer_b = subprocess.Popen(
            [sys.executable, "-m", "trainer", "train", *SETTINGS],
            env=trainer_env(env, tmp_path / "b"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
        )  # fmt: skip
        _, errors_b = trainer_b.communicate(timeout=300)
        # THEN B replaces nothing (A may be stalled, not gone): it ends interrupted, exit 75, giving the lease up
        assert trainer_b.returncode == EXIT_INTERRUPTED, errors_b[-3000:]
        assert "not replacing files of the trainer whose aged lease this one took over" in errors_b
        record = runstate.read_status(store, RUN) or {}
        assert (record["state"], record["lease"]) == ("interrupted", None)
        assert {key: store.get(key) for key in store.list("models/")} == leftovers
        # WHEN A is released at its manifest PUT
        (tmp_path / "a" / "release").write_text("go")
        _, errors_a = trainer_a.communicate(timeout=300)
    finally:
        for trainer in (trainer_a, trainer_b):
            if trainer is not None and trainer.poll() is None:
                trainer.kill()
    # THEN A exits 73 having written nothing: no manifest, no champion, the record as B left it
    assert trainer_a.returncode == EXIT_DUPLICATE, errors_a[-3000:]
    assert "stops before the manifest PUT" in errors_a
    assert {key: store.get(key) for key in store.list("models/")} == leftovers
    assert runstate.read_status(store, RUN) == record
    # WHEN the trigger's next attempt runs (its start proves both ended), THEN it replaces the leftovers, publishes
    # the run's one version and gates it
    monkeypatch.setattr(run, "open_store", lambda uri: store)
    config = load_config([*SETTINGS], trainer_env(env, tmp_path / "c") | {"TRAINER_ATTEMPT": "2"})
    assert run.main(config) == run.EXIT_SUCCEEDED
    versions = published_versions(store, "cifar10")
    assert len(versions) == 1
    assert verify_files(store, "cifar10", versions[0], read_manifest(store, "cifar10", versions[0])) == []
    assert json.loads(store.get("models/cifar10/champion.json"))["version"] == versions[0]
    final = runstate.read_status(store, RUN) or {}
    assert (final["state"], final["version"]) == ("succeeded", versions[0])
    assert final["attempt"] > record["attempt"]
