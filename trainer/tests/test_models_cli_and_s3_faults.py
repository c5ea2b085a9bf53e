"""`python -m trainer models` on damaged data (one line, exit 1, never a traceback), file verification,
closed pipes; S3 faults injected with botocore event hooks (500/503, connection reset, a PUT that
committed but whose response was lost) and the exact number of sends; objects whose stored SHA-256 is not
their body's (what moto stores without the check S3 makes); SIGTERM during start-up."""

from __future__ import annotations

import io
import json
import os
import re
import signal
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import boto3
import pytest
from botocore.awsrequest import AWSResponse
from botocore.exceptions import ConnectionClosedError
from moto import mock_aws
from trainer.__main__ import main as trainer_main
from trainer.config import TrainConfig
from trainer.gate import champion_key, version_counts
from trainer.metrics import EpochResult, EvalResult
from trainer.nets import build_model
from trainer.predict import ModelError, load_predictor
from trainer.publish import TrainingOutcome, publish_version
from trainer.runstate import new_record, read_status, set_state, status_key
from trainer.store import S3_MAX_ATTEMPTS, LocalStore, S3Store, StoreError, open_store, sha256_b64
from trainer.versions import METRICS_FILE, TORCHSCRIPT_FILE, read_manifest, verify_files, version_prefix

from trainer import registry_cli

BUCKET = "pushtrain-faults"
CLASSES = tuple(f"c{i}" for i in range(10))
VERSION = "20261125T090000Z-push-cccccccccccccccccccc"
RUN = "push-cccccccccccccccccccc"


def outcome() -> TrainingOutcome:
    epoch = EpochResult(epoch=1, train_loss=1.0, train_accuracy=0.5, test_loss=1.0, test_accuracy=0.8,
                        images_per_s=500.0, seconds=4.0, eval_seconds=0.2, lr=0.1)  # fmt: skip
    evaluation = EvalResult(loss=0.9, correct=8, total=10, per_class_accuracy=dict.fromkeys(CLASSES, 0.8),
                            confusion=[[1 if i == j else 0 for j in range(10)] for i in range(10)])  # fmt: skip
    return TrainingOutcome(
        model=build_model("cnn", 10), model_config={"name": "cnn", "num_classes": 10}, classes=CLASSES,
        evaluation=evaluation, history=[epoch], dataset={"checksum": "sha256:" + "0" * 64, "train_images": 2000},
        hardware={"device": "cpu"}, wall_seconds=5.0, precision="fp32",
    )  # fmt: skip


def publish(store: Any, work: Path) -> None:
    config = TrainConfig(model="cnn").replace(epochs=1, run_id=RUN, work_dir=str(work))
    publish_version(store, config, run_id=RUN, version=VERSION, outcome=outcome(), now=datetime.now(UTC))


@pytest.fixture(scope="module")
def published(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("published")
    publish(LocalStore(root / "store"), root / "work")
    return root / "store"


def models(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = trainer_main(["models", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


# --- the models CLI on damaged data ------------------------------------------------------------------


def test_show_verifies_every_file_against_the_manifest(published: Path, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = models(capsys, "show", VERSION, "--store", str(published))
    assert code == registry_cli.EXIT_OK
    assert "5 verified (sha256)" in out


@pytest.mark.parametrize(
    ("damage", "message"),
    [
        (lambda store: store.put(champion_key("cifar10"), b"{not json"), "champion.json is not a champion record"),
        (
            lambda store: store.put(version_prefix("cifar10", VERSION) + "manifest.json", b"\x00"),
            "manifest.json is not",
        ),
        (
            lambda store: store.put(version_prefix("cifar10", VERSION) + "manifest.json", b"{}"),
            "manifest.json is damaged",
        ),
    ],
    ids=["champion-not-json", "manifest-not-json", "manifest-missing-fields"],
)
@pytest.mark.parametrize("command", ["list", "show"])
def test_damaged_records_exit_1_with_one_line_naming_the_file(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], damage: Any, message: str, command: str
) -> None:
    store = LocalStore(tmp_path / "store")
    publish(store, tmp_path / "work")
    damage(store)
    args = [command, VERSION] if command == "show" else [command]
    code, _, err = models(capsys, *args, "--store", str(store.root))
    assert code == registry_cli.EXIT_NOT_FOUND
    assert message in err
    assert "Traceback" not in err
    assert len(err.strip().splitlines()) == 1


def test_show_reports_a_file_that_does_not_match_its_sha256(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    store = LocalStore(tmp_path / "store")
    publish(store, tmp_path / "work")
    store.put(version_prefix("cifar10", VERSION) + "model.pt", b"tampered")
    code, out, _ = models(capsys, "show", VERSION, "--store", str(store.root))
    assert code == registry_cli.EXIT_NOT_FOUND
    assert "model.pt has sha256" in out


def test_closed_pipe_ends_quietly(published: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    # GIVEN stdout whose reader went away (`python -m trainer models list | head -0`)
    sink = (tmp_path / "sink").open("w")

    class ClosedPipe(io.StringIO):
        def write(self, _text: str) -> int:
            raise BrokenPipeError(32, "Broken pipe")

        def fileno(self) -> int:
            return sink.fileno()

    monkeypatch.setattr(sys, "stdout", ClosedPipe())
    stderr = io.StringIO()
    monkeypatch.setattr(sys, "stderr", stderr)
    # WHEN listing, THEN it stops quietly
    assert registry_cli.main(["list", "--store", str(published)]) == registry_cli.EXIT_OK
    assert stderr.getvalue() == ""
    sink.close()


# --- S3 faults ---------------------------------------------------------------------------------------


class _Raw:
    """The smallest urllib3-like body an AWSResponse reads."""

    def __init__(self, body: bytes) -> None:
        self.body = body

    def stream(self, **_: Any) -> Iterator[bytes]:
        yield self.body


def _error_response(request: Any, status: int, code: str) -> AWSResponse:
    body = f"<Error><Code>{code}</Code><Message>injected</Message></Error>".encode()
    return AWSResponse(request.url, status, {"Content-Type": "application/xml"}, _Raw(body))


@pytest.fixture
def s3(monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Store]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    # the standard retry mode backs off up to 20 s between sends; the count matters here, not the wait
    monkeypatch.setattr("botocore.retries.standard.ExponentialBackoff.delay_amount", lambda self, context: 0)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket=BUCKET)
        store = open_store(f"s3://{BUCKET}")
        assert isinstance(store, S3Store)
        yield store


def test_s3_max_attempts_means_that_many_sends(s3: S3Store) -> None:
    # GIVEN an S3 that answers every send with 500
    sends: list[str] = []

    def always_500(request: Any, **_: Any) -> AWSResponse:
        sends.append(request.url)
        return _error_response(request, 500, "InternalError")

    s3.client.meta.events.register_first("before-send.s3.PutObject", always_500)
    # WHEN one object is written, THEN the SDK sends exactly S3_MAX_ATTEMPTS times, then the store says why
    with pytest.raises(StoreError, match="InternalError"):
        s3.put("runs/x/status.json", b"{}")
    assert len(sends) == S3_MAX_ATTEMPTS == 8


def test_publish_survives_resets_and_500_503_answers_to_puts_that_committed(s3: S3Store, tmp_path: Path) -> None:
    # GIVEN an S3 that fails the first send of each object in turn. A reset happens before the write; a
    # 500/503 comes after it committed (moto stores the object before this hook's answer replaces the
    # response): the SDK's retry then meets its own object under If-None-Match: *
    faults = iter(["503", "reset", "500"] * 10)
    first_send: set[str] = set()
    injected: list[str] = []

    def flaky(request: Any, **_: Any) -> AWSResponse | None:
        if request.url in first_send:
            return None
        first_send.add(request.url)
        injected.append(fault := next(faults))
        if fault == "reset":
            raise ConnectionClosedError(endpoint_url=request.url)
        return _error_response(request, int(fault), "SlowDown" if fault == "503" else "InternalError")

    s3.client.meta.events.register("before-send.s3.PutObject", flaky)
    # WHEN a version is published, THEN it is complete, every file exactly as the manifest says
    publish(s3, tmp_path / "work")
    assert {"503", "reset", "500"} <= set(injected)
    manifest = json.loads(s3.get(version_prefix("cifar10", VERSION) + "manifest.json"))
    assert registry_cli.verify_files(s3, "cifar10", VERSION, manifest) == []


def test_status_update_whose_response_was_lost_is_not_appended_twice(s3: S3Store) -> None:
    # GIVEN a record, and an S3 that loses the response of the next (committed) status write
    create = lambda: new_record(RUN, now="2026-11-25T19:00:00Z", source="manual")  # noqa: E731
    set_state(s3, RUN, "running", attempt=1, create=create)
    lost: list[int] = []

    def lose_once(response: Any, request_dict: dict[str, Any], **_: Any) -> int | None:
        if request_dict["url"].endswith("status.json") and response and response[0].status_code == 200 and not lost:
            lost.append(1)
            return 0
        return None

    s3.client.meta.events.register_first("needs-retry.s3.PutObject", lose_once)
    # WHEN the run is marked succeeded (the retry's If-Match fails: the write had landed)
    set_state(s3, RUN, "succeeded", attempt=1, version=VERSION, create=create)
    # THEN the history holds that change once
    record = read_status(s3, RUN)
    assert lost
    assert record is not None
    assert [h["state"] for h in record["history"]] == ["running", "succeeded"]


# --- a stored SHA-256 that is not the body's: moto keeps it, S3 would refuse the PUT (BadDigest) ----------


def _plant(s3: S3Store, key: str, body: bytes, claimed_sha256: str) -> None:
    """PUT `body` claiming `claimed_sha256` as its checksum: S3 checks the claim and refuses a false one
    (docs.aws.amazon.com/AmazonS3/latest/userguide/checking-object-integrity.html); moto 5.2.5 stores it."""
    s3.client.put_object(
        Bucket=BUCKET, Key=key, Body=body, ChecksumAlgorithm="SHA256", ChecksumSHA256=sha256_b64(claimed_sha256)
    )


def _tampered(file: str, original: bytes) -> bytes:
    if file == METRICS_FILE:  # a better score: what a forger would want the gate to read
        return json.dumps({**json.loads(original), "accuracy": 1.0, "correct": 10, "total": 10}).encode()
    return original[:-1] + bytes([original[-1] ^ 1])  # one flipped bit in the served TorchScript


def _use(store: S3Store, file: str) -> None:
    """What reads the file's bytes: the gate and the champion commands (metrics), `models predict` (TorchScript)."""
    if file == METRICS_FILE:
        version_counts(store, "cifar10", VERSION)
    else:
        load_predictor(store, "cifar10", VERSION)


# Two checks, each enough alone: botocore validates a GetObject body against the stored checksum (our client
# forces it on, whatever AWS_RESPONSE_CHECKSUM_VALIDATION says), and the readers hash the bytes they use
# against the manifest (seen with a client that does not validate).
CHECKS = {
    "sdk-validates-the-body": (StoreError, "did not match calculated checksum"),
    "reader-hashes-the-bytes": ((ValueError, ModelError), ""),
}


@pytest.mark.parametrize("check", CHECKS)
@pytest.mark.parametrize("file", [METRICS_FILE, TORCHSCRIPT_FILE])
def test_a_tampered_file_under_a_forged_stored_sha256_is_refused_by_the_reader_of_its_bytes(
    s3: S3Store, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, file: str, check: str
) -> None:
    # GIVEN a published version, then one of its files replaced by other bytes that claim the listed SHA-256
    publish(s3, tmp_path / "work")
    key = version_prefix("cifar10", VERSION) + file
    listed = read_manifest(s3, "cifar10", VERSION)["files"][file]["sha256"]
    _plant(s3, key, _tampered(file, s3.get(key)), listed)
    # the emulator's silence: it kept a checksum its body does not have, so the no-download check passes
    # (on S3 this object cannot exist: the PUT is refused)
    assert s3.sha256_of(key) == listed
    assert verify_files(s3, "cifar10", VERSION, read_manifest(s3, "cifar10", VERSION)) == []
    monkeypatch.setenv("AWS_RESPONSE_CHECKSUM_VALIDATION", "when_required")
    if check == "sdk-validates-the-body":
        reader = open_store(f"s3://{BUCKET}")  # the trainer's own client
    else:
        reader = S3Store(BUCKET, client=boto3.client("s3"))  # validation off (the variable above)
    assert isinstance(reader, S3Store)
    # WHEN something reads the file to use it, THEN it refuses the bytes, naming the file
    error, words = CHECKS[check]
    with pytest.raises(error, match=re.escape(file)) as refused:
        _use(reader, file)
    assert words in str(refused.value)


def test_a_wrong_stored_sha256_on_intact_bytes_fails_verification_naming_the_file(s3: S3Store, tmp_path: Path) -> None:
    # GIVEN a published version whose model.pt keeps its bytes but carries another SHA-256 (moto stores it)
    publish(s3, tmp_path / "work")
    key = version_prefix("cifar10", VERSION) + "model.pt"
    _plant(s3, key, s3.get(key), "0" * 64)
    # WHEN the version is verified, THEN the check against the stored SHA-256 names the file: never served or promoted
    problems = verify_files(s3, "cifar10", VERSION, read_manifest(s3, "cifar10", VERSION))
    assert problems == [
        f"model.pt has sha256 {'0' * 64}, the manifest says "
        + read_manifest(s3, "cifar10", VERSION)["files"]["model.pt"]["sha256"]
    ]


# --- SIGTERM during start-up -------------------------------------------------------------------------


def test_sigterm_while_the_trainer_is_still_starting_records_interrupted_and_exits_75(tmp_path: Path) -> None:
    # GIVEN a queued run, and a trainer process that is still importing torch
    store = LocalStore(tmp_path / "store")
    store.put(status_key(RUN), json.dumps(new_record(RUN, now="2026-11-25T19:00:00Z", source="push")).encode())
    env = {k: v for k, v in os.environ.items() if not k.startswith("TRAINER_")}
    env.update({"TRAINER_RUN_ID": RUN, "TRAINER_STORE_URI": str(store.root), "TRAINER_DATA_URI": str(tmp_path),
                "TRAINER_WORK_DIR": str(tmp_path / "work"), "PUSHTRAIN_LOG_LEVEL": "WARNING"})  # fmt: skip
    process = subprocess.Popen([sys.executable, "-m", "trainer", "train"], env=env, stderr=subprocess.PIPE, text=True)
    maps = Path(f"/proc/{process.pid}/maps")
    # torch's libraries are mapped only after main() installed the handlers (it imports torch lazily)
    while process.poll() is None and "libtorch" not in maps.read_text():
        time.sleep(0.005)
    # WHEN Spot's warning arrives
    process.send_signal(signal.SIGTERM)
    _, stderr = process.communicate(timeout=120)
    # THEN the process exits 75 and the record says interrupted
    assert process.returncode == 75, stderr
    record = read_status(store, RUN)
    assert record is not None
    assert record["state"] == "interrupted"
