"""`models promote VERSION` and `models rollback`: CAS on champion.json, who/why in the history, checksums."""

from __future__ import annotations

import json
from datetime import UTC, datetime
from pathlib import Path

import pytest
from trainer.__main__ import main as trainer_main
from trainer.config import TrainConfig
from trainer.counts import Counts
from trainer.gate import promote_if_better, read_champion
from trainer.metrics import EpochResult, EvalResult
from trainer.nets import build_model
from trainer.promote import ChampionChangeError, champion_stack, change_champion
from trainer.publish import TrainingOutcome, publish_version
from trainer.store import LocalStore, PreconditionFailed, Store
from trainer.versions import new_version_id

A, B, C = (new_version_id(f"push-{c * 20}", datetime(2026, 11, 24 + i, 9, tzinfo=UTC)) for i, c in enumerate("abc"))


def outcome(accuracy: float) -> TrainingOutcome:
    epoch = EpochResult(1, 1.0, 0.5, 1.0, accuracy, 500.0, 4.0, 0.2, 0.1)
    evaluation = EvalResult(0.9, round(accuracy * 10), 10, {"a": accuracy, "b": accuracy}, [[5, 0], [0, 5]])
    return TrainingOutcome(
        model=build_model("cnn", 2), model_config={"name": "cnn", "num_classes": 2}, classes=("a", "b"),
        evaluation=evaluation, history=[epoch], dataset={"checksum": "sha256:" + "0" * 64, "train_images": 20},
        hardware={"device": "cpu"}, wall_seconds=5.0, precision="fp32",
    )  # fmt: skip


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """GIVEN versions A (0.70), B (0.80), C (0.60); the gate made A then B champion; C stayed below B."""
    root = tmp_path_factory.mktemp("promote")
    store = LocalStore(root / "store")
    for version, accuracy in ((A, 0.70), (B, 0.80), (C, 0.60)):
        run_id = version.split("-", 1)[1]
        config = TrainConfig(model="cnn", work_dir=str(root / "work")).replace(epochs=1, run_id=run_id)
        publish_version(store, config, run_id=run_id, version=version, outcome=outcome(accuracy), now=datetime.now(UTC))
        promote_if_better(
            store, "cifar10", version, Counts(round(accuracy * 10), 10), floor="0.5", margin="0", run_id=run_id
        )
    return store.root


@pytest.fixture
def store(published: Path, tmp_path: Path) -> LocalStore:
    """A fresh copy of the published store for each test (they change the champion)."""
    import shutil

    shutil.copytree(published, tmp_path / "store")
    return LocalStore(tmp_path / "store")


def models(capsys: pytest.CaptureFixture[str], store: Store, *args: str) -> tuple[int, str, str]:
    code = trainer_main(["models", *args, "--store", str(store.root), "--by", "alice"])  # type: ignore[attr-defined]
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def champion(store: Store) -> dict:
    record, _ = read_champion(store, "cifar10")
    assert record is not None
    return record


def test_promoting_a_less_accurate_version_is_refused_without_force_saying_by_how_much(
    store: LocalStore, capsys: pytest.CaptureFixture[str]
) -> None:
    before = store.get("models/cifar10/champion.json")
    code, _, err = models(capsys, store, "promote", C, "--reason", "better on the holdout set")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert f"refusing {C}: it is 20.00 percentage points less accurate (6/10 (60.00 %) against 8/10 (80.00 %))" in err
    assert "--force" in err
    assert store.get("models/cifar10/champion.json") == before


def test_promote_makes_the_version_champion_and_records_who_and_why(
    store: LocalStore, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, _ = models(capsys, store, "promote", C, "--force", "--reason", "better on the holdout set")
    record = champion(store)
    assert code == 0 and f"{C} is now the champion of cifar10 (was {B})" in out
    assert "note: " in out and "20.00 percentage points less accurate" in out
    assert (record["version"], record["accuracy"], record["previous"]["version"]) == (C, 0.60, B)
    assert record["history"][-1] | {"promoted_at": None} == {
        "version": C, "accuracy": 0.60, "correct": 6, "total": 10, "run_id": "push-" + "c" * 20, "promoted_at": None,
        "action": "promote", "by": "alice", "reason": "better on the holdout set", "replaced": B, "forced": True,
    }  # fmt: skip


def test_promoting_the_champion_changes_nothing_and_exits_0(
    store: LocalStore, capsys: pytest.CaptureFixture[str]
) -> None:
    before = store.get("models/cifar10/champion.json")
    code, out, _ = models(capsys, store, "promote", B, "--reason", "again")
    assert code == 0 and "already the champion" in out
    assert store.get("models/cifar10/champion.json") == before


def test_rollback_returns_to_the_previous_champion_and_a_second_goes_one_further(
    store: LocalStore, capsys: pytest.CaptureFixture[str]
) -> None:
    # GIVEN A, then B by the gate, then C by hand
    models(capsys, store, "promote", C, "--force", "--reason", "try it")
    # WHEN rolling back twice
    assert models(capsys, store, "rollback", "--reason", "C misclassifies trucks")[0] == 0
    assert champion(store)["version"] == B
    assert models(capsys, store, "rollback", "--reason", "B too")[0] == 0
    # THEN the champions went C -> B -> A (a stack), and a third rollback has nowhere to go
    assert champion(store)["version"] == A
    assert [e.get("action", "gate") for e in champion(store)["history"]] == [
        "gate", "gate", "promote", "rollback", "rollback",
    ]  # fmt: skip
    code, _, err = models(capsys, store, "rollback", "--reason", "once more")
    assert code == 1 and "nothing to roll back to" in err


def test_champion_stack_reads_promotions_as_pushes_and_rollbacks_as_pops() -> None:
    history = [{"version": "a"}, {"version": "b"}, {"version": "c", "action": "promote"},
               {"version": "b", "action": "rollback"}, {"version": "d"}]  # fmt: skip
    assert champion_stack({"history": history}) == ["a", "b", "d"]


@pytest.mark.parametrize("damage", ["alter", "delete"])
def test_a_version_whose_files_fail_the_manifest_checksum_is_refused_with_exit_1(
    store: LocalStore, capsys: pytest.CaptureFixture[str], damage: str
) -> None:
    key = f"models/cifar10/{C}/model.pt"
    if damage == "alter":
        store.put(key, b"not the published weights")
    else:
        (store.root / key).unlink()
    before = store.get("models/cifar10/champion.json")
    code, out, err = models(capsys, store, "promote", C, "--force", "--reason", "x")
    assert code == 1 and len(err.strip().splitlines()) == 1
    assert err.startswith(f"trainer models promote: refusing {C}:")
    assert "model.pt" in err and "do not match its manifest" in err and "Traceback" not in out + err
    assert store.get("models/cifar10/champion.json") == before


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["promote", "20990101T000000Z-push-nothere", "--reason", "x"], 1, "no published version"),
        (["promote", C], 2, "--reason"),
    ],
)
def test_bad_requests_end_with_one_line_and_their_exit_code(
    store: LocalStore, capsys: pytest.CaptureFixture[str], args: list[str], code: int, message: str
) -> None:
    got, _, err = models(capsys, store, *args)
    assert got == code and message in err


def racing(store: LocalStore) -> list[str]:
    """Make the first conditional write of champion.json lose to the gate promoting C in between."""
    real_put = store.put
    raced: list[str] = []

    def racing_put(key: str, data: bytes, **kwargs: object) -> str:
        if key.endswith("champion.json") and not raced:
            raced.append(key)
            promote_if_better(store, "cifar10", C, Counts(99, 100), floor="0.5", margin="0", run_id="push-" + "c" * 20)
            raise PreconditionFailed(store.uri_of(key), "If-Match")
        return real_put(key, data, **kwargs)  # type: ignore[arg-type]

    store.put = racing_put  # type: ignore[method-assignment]
    return raced


def test_a_rollback_racing_a_gate_is_refused_naming_the_new_champion(store: LocalStore) -> None:
    # GIVEN the operator saw B as champion, and the gate promotes C while the rollback is being written
    raced = racing(store)
    # WHEN the rollback's compare-and-swap fails and it reads again
    with pytest.raises(ChampionChangeError) as refused:
        change_champion(store, "cifar10", "rollback", None, by="bob", reason="r", now="2026-11-30T00:00:00Z")
    # THEN it does not step back from C (reinstating B, the version the operator wanted gone): it refuses
    assert raced
    assert str(refused.value) == (
        f"the champion is {C}, not {B} (it changed while rolling back): nothing rolled back; "
        f"to roll back {C}, run again with --from {C}"
    )
    assert json.loads(store.get("models/cifar10/champion.json"))["version"] == C


def test_rollback_from_a_version_that_is_not_the_champion_is_refused(
    store: LocalStore, capsys: pytest.CaptureFixture[str]
) -> None:
    before = store.get("models/cifar10/champion.json")
    code, _, err = models(capsys, store, "rollback", "--from", A, "--reason", "A is bad")
    assert code == 1 and f"the champion is {B}, not {A}: nothing rolled back" in err
    assert store.get("models/cifar10/champion.json") == before
    code, out, _ = models(capsys, store, "rollback", "--from", B, "--reason", "B is bad")
    assert code == 0 and f"{A} is now the champion of cifar10 (was {B})" in out
