"""The quality gate: floor and margin decide, and the champion pointer never loses an update."""

from __future__ import annotations

import json
import random
import tempfile
import threading
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from multiprocessing import get_context
from pathlib import Path

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws
from moto.s3.responses import S3Response
from trainer.gate import GateDecision, GateError, champion_key, promote_if_better, read_champion
from trainer.store import LocalStore, Store, open_store

BUCKET = "pushtrain-gate-test"
MODEL = "cifar10"
FLOOR = 0.5
PROMOTERS = 16


@pytest.fixture
def s3_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # Real S3 evaluates If-Match/If-None-Match atomically with the write. moto 5.2.5 checks
    # and then writes without a lock, so concurrent requests could both pass the check; one
    # lock around its PutObject gives the emulator S3's atomicity (our code is unchanged).
    lock = threading.Lock()
    original = S3Response.put_object

    def atomic_put_object(self: S3Response) -> object:
        with lock:
            return original(self)

    monkeypatch.setattr(S3Response, "put_object", atomic_put_object)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield open_store(f"s3://{BUCKET}")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")


def promote(store: Store, version: str, accuracy: float, margin: float = 0.0) -> GateDecision:
    return promote_if_better(store, MODEL, version, accuracy, floor=FLOOR, margin=margin, run_id=f"run-{version}")


def test_first_version_above_the_floor_becomes_champion(store: Store) -> None:
    decision = promote(store, "v1", 0.7)
    champion, _ = read_champion(store, MODEL)
    assert decision.promoted
    assert champion is not None
    assert (champion["version"], champion["accuracy"], champion["previous"]) == ("v1", 0.7, None)


def test_version_below_the_floor_is_not_promoted_even_without_a_champion(store: Store) -> None:
    decision = promote(store, "v1", 0.49)
    assert not decision.promoted
    assert "below the floor" in decision.reason
    assert not store.exists(champion_key(MODEL))


def test_version_must_beat_the_champion_by_the_margin(store: Store) -> None:
    promote(store, "v1", 0.80)
    not_enough = promote(store, "v2", 0.805, margin=0.01)
    enough = promote(store, "v3", 0.81, margin=0.01)
    champion, _ = read_champion(store, MODEL)
    assert not not_enough.promoted
    assert "is below champion v1 (0.8000) + margin 0.0100" in not_enough.reason
    assert enough.promoted
    assert enough.previous_version == "v1"
    assert champion is not None
    assert champion["version"] == "v3"
    assert champion["previous"] == {"version": "v1", "accuracy": 0.80}


def test_worse_version_leaves_the_champion_untouched(store: Store) -> None:
    promote(store, "v1", 0.9)
    before = store.get(champion_key(MODEL))
    decision = promote(store, "v2", 0.8)
    assert not decision.promoted
    assert decision.champion_version == "v1"
    assert store.get(champion_key(MODEL)) == before


def test_regating_a_superseded_version_with_equal_accuracy_keeps_the_newer_champion(store: Store) -> None:
    # GIVEN v1 promoted, then superseded by v2 of equal accuracy (margin 0)
    promote(store, "v1", 0.8)
    promote(store, "v2", 0.8)
    before = store.get(champion_key(MODEL))
    # WHEN v1 is gated again (a resumed run finishing its bookkeeping)
    decision = promote(store, "v1", 0.8)
    # THEN it is not promoted again: v2 stays champion and v1 appears once in the history
    assert not decision.promoted
    assert "already judged" in decision.reason
    assert decision.champion_version == "v2"
    assert store.get(champion_key(MODEL)) == before
    history = json.loads(before)["history"]
    assert [entry["version"] for entry in history] == ["v1", "v2"]


def test_corrupted_champion_record_is_an_error_not_a_silent_reset(store: Store) -> None:
    store.put(champion_key(MODEL), b"{not json")
    with pytest.raises(GateError, match=r"champion\.json is not a champion record"):
        promote(store, "v1", 0.9)


def test_negative_margin_is_rejected_naming_it(store: Store) -> None:
    with pytest.raises(ValueError, match="champion_margin"):
        promote(store, "v1", 0.9, margin=-0.1)


def _contenders() -> list[tuple[str, float]]:
    # Sixteen distinct accuracies from 0.40 to 0.85: some under the floor, one clear best.
    accuracies = [round(0.40 + 0.03 * i, 2) for i in range(PROMOTERS)]
    random.Random(7).shuffle(accuracies)  # noqa: S311 -- a fixed test order, not cryptography
    return [(f"v{i:02d}", acc) for i, acc in enumerate(accuracies)]


def _assert_no_lost_update(store: Store, decisions: list[GateDecision]) -> None:
    champion, _ = read_champion(store, MODEL)
    assert champion is not None
    best = max(decisions, key=lambda d: d.accuracy)
    # THEN the best qualifying version is champion ...
    assert champion["version"] == best.version
    # ... every promotion anyone was told about is in the pointer's history exactly once,
    # in rising accuracy (a lost update would drop one or let a worse one follow a better one) ...
    promoted = sorted(d.version for d in decisions if d.promoted)
    history = champion["history"]
    assert sorted(entry["version"] for entry in history) == promoted
    accuracies = [entry["accuracy"] for entry in history]
    assert accuracies == sorted(accuracies)
    assert len(set(accuracies)) == len(accuracies)
    # ... and nothing under the floor was ever promoted.
    assert all(not d.promoted for d in decisions if d.accuracy < FLOOR)


def test_sixteen_concurrent_promoters_end_with_the_best_and_lose_no_update(store: Store) -> None:
    # GIVEN sixteen finished runs with shuffled accuracies, released at the same instant
    contenders = _contenders()
    start = threading.Barrier(PROMOTERS)

    def run(contender: tuple[str, float]) -> GateDecision:
        start.wait()
        return promote(store, *contender)

    # WHEN they all go through the gate concurrently
    with ThreadPoolExecutor(max_workers=PROMOTERS) as pool:
        decisions = list(pool.map(run, contenders))

    _assert_no_lost_update(store, decisions)


def test_sixteen_promoter_processes_on_a_local_store_lose_no_update(tmp_path: Path) -> None:
    # GIVEN sixteen separate processes (the local store's lock must hold across processes)
    contenders = _contenders()
    store = LocalStore(tmp_path / "store")
    # WHEN they all promote as soon as they have started
    with ProcessPoolExecutor(max_workers=PROMOTERS, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(promote_if_better, store, MODEL, v, acc, floor=FLOOR, margin=0.0, run_id=f"run-{v}")
            for v, acc in contenders
        ]
        decisions = [f.result(timeout=120) for f in futures]
    _assert_no_lost_update(store, decisions)
    assert json.loads((tmp_path / "store" / champion_key(MODEL)).read_text())["model_name"] == MODEL


@settings(max_examples=40, deadline=None)
@given(
    accuracies=st.lists(st.floats(0, 1, allow_nan=False), min_size=1, max_size=12),
    floor=st.floats(0, 1),
    margin=st.floats(0, 0.2),
)
def test_any_sequence_of_versions_keeps_the_gate_invariants(
    accuracies: list[float], floor: float, margin: float
) -> None:
    # GIVEN any order of finished versions, any floor and margin; WHEN each goes through the gate
    with tempfile.TemporaryDirectory() as root:
        store = LocalStore(Path(root))
        champion: float | None = None
        for i, accuracy in enumerate(accuracies):
            decision = promote_if_better(store, MODEL, f"v{i:02d}", accuracy, floor=floor, margin=margin)
            # THEN a version is promoted exactly when it meets the floor and reaches champion + margin
            expected = accuracy >= floor and (champion is None or accuracy >= champion + margin)
            assert decision.promoted == expected
            if expected:
                champion = accuracy
        record, _ = read_champion(store, MODEL)
        assert (record["accuracy"] if record else None) == champion
