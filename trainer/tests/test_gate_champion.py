"""The quality gate: floor and margin decide, and the champion pointer never loses an update."""

from __future__ import annotations

import json
import random
import tempfile
import threading
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor, ThreadPoolExecutor
from fractions import Fraction
from multiprocessing import get_context
from pathlib import Path

import boto3
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from moto import mock_aws
from moto.s3.responses import S3Response
from published import publish_counts
from trainer.counts import Counts
from trainer.gate import GateError, GateOutcome, champion_key, promote_if_better, read_champion
from trainer.store import LocalStore, Store, open_store

BUCKET = "pushtrain-gate-test"
MODEL = "cifar10"
FLOOR = "0.5"
PROMOTERS = 16


@pytest.fixture
def s3_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[Store]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # Real S3 evaluates If-Match/If-None-Match atomically with the write, and a GET reads one whole version.
    # moto 5.2.5 checks and then writes without a lock, so concurrent requests could both pass the check, and
    # an overwrite closes the old object's buffer under a GET still reading it ("I/O operation on closed
    # file", seen under load). One lock around its PutObject and GetObject gives the emulator S3's per-request
    # atomicity; requests still interleave between each other as they do on S3 (our code is unchanged).
    lock = threading.Lock()
    for name in ("put_object", "get_object"):
        original = getattr(S3Response, name)

        def atomic(
            self: S3Response, *args: object, _original: Callable[..., object] = original, **kwargs: object
        ) -> object:
            with lock:
                return _original(self, *args, **kwargs)

        monkeypatch.setattr(S3Response, name, atomic)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        yield open_store(f"s3://{BUCKET}")


@pytest.fixture(params=["local", "s3"])
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Store:
    if request.param == "local":
        return LocalStore(tmp_path / "store")
    return request.getfixturevalue("s3_store")


def promote(store: Store, version: str, correct: int, total: int = 1000, margin: str = "0") -> GateOutcome:
    """Publish `version` with these counts, then put it through the gate."""
    publish_counts(store, MODEL, version, correct, total)
    return promote_if_better(
        store, MODEL, version, Counts(correct, total), floor=FLOOR, margin=margin, run_id=f"run-{version}"
    )


def test_first_version_above_the_floor_becomes_champion(store: Store) -> None:
    decision = promote(store, "v1", 700)
    champion, _ = read_champion(store, MODEL)
    assert decision.promoted
    assert champion is not None
    assert (champion["version"], champion["correct"], champion["total"], champion["previous"]) == (
        "v1",
        700,
        1000,
        None,
    )


def test_version_below_the_floor_is_not_promoted_even_without_a_champion(store: Store) -> None:
    decision = promote(store, "v1", 499)
    assert not decision.promoted
    assert decision.reason == "accuracy 499/1000 (49.90 %) is below the floor 0.5"
    assert not store.exists(champion_key(MODEL))


@pytest.mark.parametrize(("correct", "total"), [(90, 100), (450, 500), (9000, 10000), (900, 1000)])
def test_exactly_ninety_percent_meets_a_0_9_floor_whatever_the_test_set_size(
    tmp_path: Path, correct: int, total: int
) -> None:
    # GIVEN counts that are exactly 9/10 (float32 makes each of them 0.89999998)
    store = LocalStore(tmp_path / "store")
    publish_counts(store, MODEL, "v1", correct, total)
    # WHEN gated against the floor "0.9"
    decision = promote_if_better(store, MODEL, "v1", Counts(correct, total), floor="0.9", margin="0")
    # THEN the tie with the floor passes
    assert decision.promoted, decision.reason
    assert decision.reason == f"accuracy {correct}/{total} (90.00 %) meets the floor 0.9 and there is no champion yet"


def test_one_sample_short_of_the_floor_fails_it(tmp_path: Path) -> None:
    store = LocalStore(tmp_path / "store")
    publish_counts(store, MODEL, "v1", 899, 1000)
    decision = promote_if_better(store, MODEL, "v1", Counts(899, 1000), floor="0.9", margin="0")
    assert not decision.promoted
    assert decision.reason == "accuracy 899/1000 (89.90 %) is below the floor 0.9"


def test_version_must_reach_the_champion_plus_the_margin_exactly(store: Store) -> None:
    # GIVEN champion v1 at 80/100 and a margin of 0.01 (one point): the bar is exactly 81/100
    promote(store, "v1", 80, 100)
    short = promote(store, "v2", 8099, 10000, margin="0.01")  # 0.8099 < 0.81
    tie = promote(store, "v3", 810, 1000, margin="0.01")  # exactly 0.81: a tie promotes the newer version
    champion, _ = read_champion(store, MODEL)
    assert not short.promoted
    assert short.reason == "accuracy 8099/10000 (80.99 %) is below champion v1 (80/100 (80.00 %)) + margin 0.01"
    assert tie.promoted
    assert tie.reason == (
        "accuracy 810/1000 (81.00 %) ties champion v1 (80/100 (80.00 %)) + margin 0.01; "
        "a tie promotes the newer version"
    )
    assert tie.previous_version == "v1"
    assert champion is not None
    assert champion["version"] == "v3"
    assert champion["previous"] == {"version": "v1", "accuracy": 0.8, "correct": 80, "total": 100}


def test_margin_is_parsed_exactly_not_as_a_float(store: Store) -> None:
    # 0.7 + 0.1 is 0.7999999999999999 in floats: a float margin would let 7999999/10000000 through
    promote(store, "v1", 7, 10)
    below = promote(store, "v2", 7_999_999, 10_000_000, margin="0.1")
    at = promote(store, "v3", 8, 10, margin="0.1")
    assert not below.promoted
    assert at.promoted


def test_the_champions_accuracy_comes_from_its_version_not_from_champion_json(store: Store) -> None:
    # GIVEN champion v1 at 70 %, and a pointer edited to claim 100 %
    promote(store, "v1", 700)
    record = json.loads(store.get(champion_key(MODEL)))
    store.put(champion_key(MODEL), json.dumps({**record, "accuracy": 1.0, "correct": 1000, "total": 1000}).encode())
    # WHEN a better version is gated
    decision = promote(store, "v2", 800)
    # THEN it is compared with v1's own 700/1000 and promoted
    assert decision.promoted, decision.reason
    assert decision.compared is not None
    assert decision.compared.counts == Counts(700, 1000)


def test_a_pointer_naming_an_unpublished_version_does_not_block_a_better_run(store: Store) -> None:
    # GIVEN a forged champion.json naming a version that was never published, claiming 100 %
    forged = {"schema": 1, "model_name": MODEL, "version": "forged", "accuracy": 1.0, "history": []}
    store.put(champion_key(MODEL), json.dumps(forged).encode())
    # WHEN a version meeting the floor is gated
    decision = promote(store, "v1", 600)
    # THEN it is judged against the floor alone, promoted, and the reason says why
    assert decision.promoted
    assert "champion.json names forged, which is not a published version" in decision.reason
    champion, _ = read_champion(store, MODEL)
    assert champion is not None
    assert (champion["version"], champion["previous"]) == ("v1", {"version": "forged"})


def test_a_champion_whose_metrics_were_altered_does_not_count(store: Store) -> None:
    # GIVEN champion v1 whose metrics.json was rewritten to 100 % after publishing (its SHA-256 no longer matches)
    promote(store, "v1", 700)
    store.put(f"models/{MODEL}/v1/metrics.json", json.dumps({"correct": 1000, "total": 1000}).encode())
    decision = promote(store, "v2", 650)
    assert decision.promoted
    assert "whose metrics are damaged" in decision.reason


def test_worse_version_leaves_the_champion_untouched(store: Store) -> None:
    promote(store, "v1", 900)
    before = store.get(champion_key(MODEL))
    decision = promote(store, "v2", 800)
    assert not decision.promoted
    assert decision.champion_version == "v1"
    assert store.get(champion_key(MODEL)) == before


def test_regating_a_superseded_version_with_equal_accuracy_keeps_the_newer_champion(store: Store) -> None:
    # GIVEN v1 promoted, then superseded by v2 of equal accuracy (margin 0: a tie promotes the newer)
    promote(store, "v1", 800)
    promote(store, "v2", 80, 100)
    before = store.get(champion_key(MODEL))
    # WHEN v1 is gated again (a resumed run finishing its bookkeeping)
    decision = promote(store, "v1", 800)
    # THEN it is not promoted again: v2 stays champion and v1 appears once in the history
    assert not decision.promoted
    assert "already judged" in decision.reason
    assert decision.champion_version == "v2"
    assert store.get(champion_key(MODEL)) == before
    history = json.loads(before)["history"]
    assert [entry["version"] for entry in history] == ["v1", "v2"]


def test_the_outcome_round_trips_through_the_run_record_shape(store: Store) -> None:
    promote(store, "v1", 700)
    decision = promote(store, "v2", 750, margin="0.01")
    record = decision.to_record()
    assert record["correct"] == 750
    assert record["total"] == 1000
    assert record["compared"] == {"version": "v1", "correct": 700, "total": 1000}
    assert (record["floor"], record["margin"]) == (FLOOR, "0.01")
    assert GateOutcome.from_record(record, version="v2", floor="x", margin="y") == decision


def test_corrupted_champion_record_is_an_error_not_a_silent_reset(store: Store) -> None:
    store.put(champion_key(MODEL), b"{not json")
    with pytest.raises(GateError, match=r"champion\.json is not a champion record"):
        promote(store, "v1", 900)


@pytest.mark.parametrize("margin", ["-0.1", "nan", "1e-3", "0.1 "])
def test_a_margin_that_is_not_a_plain_decimal_is_rejected_naming_it(tmp_path: Path, margin: str) -> None:
    store = LocalStore(tmp_path / "store")
    with pytest.raises(ValueError, match="champion_margin"):
        promote(store, "v1", 900, margin=margin)


def _contenders() -> list[tuple[str, int]]:
    # Sixteen distinct accuracies from 400/1000 to 850/1000: some under the floor, one clear best.
    accuracies = [400 + 30 * i for i in range(PROMOTERS)]
    random.Random(7).shuffle(accuracies)  # noqa: S311 -- a fixed test order, not cryptography
    return [(f"v{i:02d}", correct) for i, correct in enumerate(accuracies)]


def _assert_no_lost_update(store: Store, decisions: list[GateOutcome]) -> None:
    champion, _ = read_champion(store, MODEL)
    assert champion is not None
    best = max(decisions, key=lambda d: d.counts.fraction)
    # THEN the best qualifying version is champion ...
    assert champion["version"] == best.version
    # ... every promotion anyone was told about is in the pointer's history exactly once,
    # in rising accuracy (a lost update would drop one or let a worse one follow a better one) ...
    promoted = sorted(d.version for d in decisions if d.promoted)
    history = champion["history"]
    assert sorted(entry["version"] for entry in history) == promoted
    accuracies = [Fraction(entry["correct"], entry["total"]) for entry in history]
    assert accuracies == sorted(accuracies)
    assert len(set(accuracies)) == len(accuracies)
    # ... and nothing under the floor was ever promoted.
    assert all(not d.promoted for d in decisions if d.counts.fraction < Fraction(FLOOR))


def test_sixteen_concurrent_promoters_end_with_the_best_and_lose_no_update(store: Store) -> None:
    # GIVEN sixteen finished runs with shuffled accuracies, released at the same instant
    contenders = _contenders()
    start = threading.Barrier(PROMOTERS)

    for version, correct in contenders:
        publish_counts(store, MODEL, version, correct, 1000)

    def run(contender: tuple[str, int]) -> GateOutcome:
        version, correct = contender
        start.wait()
        return promote_if_better(store, MODEL, version, Counts(correct, 1000), floor=FLOOR, margin="0")

    # WHEN they all go through the gate concurrently
    with ThreadPoolExecutor(max_workers=PROMOTERS) as pool:
        decisions = list(pool.map(run, contenders))

    _assert_no_lost_update(store, decisions)


def test_sixteen_promoter_processes_on_a_local_store_lose_no_update(tmp_path: Path) -> None:
    # GIVEN sixteen separate processes (the local store's lock must hold across processes)
    contenders = _contenders()
    store = LocalStore(tmp_path / "store")
    for version, correct in contenders:
        publish_counts(store, MODEL, version, correct, 1000)
    # WHEN they all promote as soon as they have started
    with ProcessPoolExecutor(max_workers=PROMOTERS, mp_context=get_context("spawn")) as pool:
        futures = [
            pool.submit(promote_if_better, store, MODEL, v, Counts(c, 1000), floor=FLOOR, margin="0", run_id=f"run-{v}")
            for v, c in contenders
        ]
        decisions = [f.result(timeout=120) for f in futures]
    _assert_no_lost_update(store, decisions)
    assert json.loads((tmp_path / "store" / champion_key(MODEL)).read_text())["model_name"] == MODEL


@settings(max_examples=25, deadline=None)
@given(
    results=st.lists(st.tuples(st.integers(0, 1000), st.sampled_from([10, 100, 1000])), min_size=1, max_size=10),
    floor=st.sampled_from(["0", "0.5", "0.9", "0.95", "1"]),
    margin=st.sampled_from(["0", "0.01", "0.005", "0.1"]),
)
def test_any_sequence_of_versions_keeps_the_gate_invariants(
    results: list[tuple[int, int]], floor: str, margin: str
) -> None:
    # GIVEN any order of finished versions (counts out of 10, 100 or 1000), any floor and margin
    with tempfile.TemporaryDirectory() as root:
        store = LocalStore(Path(root))
        champion: Fraction | None = None
        for i, (drawn, total) in enumerate(results):
            correct = min(drawn, total)
            publish_counts(store, MODEL, f"v{i:02d}", correct, total)
            # WHEN each goes through the gate
            decision = promote_if_better(store, MODEL, f"v{i:02d}", Counts(correct, total), floor=floor, margin=margin)
            # THEN a version is promoted exactly when it meets the floor and reaches champion + margin (exactly)
            accuracy = Fraction(correct, total)
            expected = accuracy >= Fraction(floor) and (champion is None or accuracy >= champion + Fraction(margin))
            assert decision.promoted == expected
            if expected:
                champion = accuracy
        record, _ = read_champion(store, MODEL)
        assert (Fraction(record["correct"], record["total"]) if record else None) == champion


def test_a_version_whose_files_differ_from_its_manifest_is_never_promoted(store: Store) -> None:
    # GIVEN a published version whose metrics.json was replaced after publishing
    publish_counts(store, MODEL, "v1", 900, 1000)
    store.put(f"models/{MODEL}/v1/metrics.json", b'{"correct": 1000, "total": 1000}')
    # WHEN it goes through the gate
    decision = promote_if_better(store, MODEL, "v1", Counts(900, 1000), floor=FLOOR, margin="0")
    # THEN it is kept, saying which file differs, and no champion is written
    assert decision.outcome == "kept"
    assert decision.reason.startswith("its files do not match its manifest (metrics.json has sha256")
    assert not store.exists(champion_key(MODEL))
