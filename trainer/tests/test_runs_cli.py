"""`python -m trainer runs list|show`: state, attempts, timings, version, reason; filters; bad records; pipes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws
from trainer.__main__ import main as trainer_main
from trainer.runstate import new_record, status_key
from trainer.store import LocalStore, Store, open_store

REPO = Path(__file__).resolve().parents[2]
SHA = "0123456789abcdef0123456789abcdef01234567"
DIGEST = "sha256:" + "ab" * 32
OTHER_DIGEST = "sha256:" + "cd" * 32


def record(run_id: str, state: str, created: str, **fields: Any) -> dict[str, Any]:
    history = [{"at": created, "state": "queued", "attempt": 1, "reason": None}]
    if state != "queued":
        history.append({"at": created.replace(":00Z", ":30Z"), "state": "running", "attempt": 1, "reason": None})
        history.append({"at": created.replace("00:00Z", "05:30Z"), "state": state, "attempt": 1,
                        "reason": fields.get("reason")})  # fmt: skip
    return new_record(run_id, now=created, source="push", state=state, history=history,
                      updated_at=history[-1]["at"], **fields)  # fmt: skip


def fill(store: Store) -> None:
    """GIVEN three runs (one succeeded, one failed, one queued), a corrupt record and a task-definition index."""
    runs = [
        record("push-aaaaaaaaaaaaaaaaaaaa", "succeeded", "2026-11-25T19:00:00Z", git_sha=SHA, image_digest=DIGEST,
               version="20261125T190530Z-push-aaaaaaaaaaaaaaaaaaaa"),
        record("push-bbbbbbbbbbbbbbbbbbbb", "failed", "2026-11-26T19:00:00Z", image_digest=OTHER_DIGEST,
               reason="ValueError: loss is NaN at epoch 2"),
        record("retrain-42-cccccccc", "queued", "2026-11-27T19:00:00Z", image_digest=DIGEST),
    ]  # fmt: skip
    for run in runs:
        store.put(status_key(run["run_id"]), json.dumps(run).encode())
    store.put("runs/push-broken/status.json", b"{not json")
    store.put(f"runs/_taskdefs/{DIGEST}.json", b'{"task_definition_arn": "arn"}')  # the earlier layout
    store.put(f"runs/_taskdefs/pushtrain-trainer-gpu/{DIGEST}.json", b'{"task_definition_arn": "arn"}')
    store.put("runs/push-aaaaaaaaaaaaaaaaaaaa/report.md", b"# report")


@pytest.fixture
def store_uri(tmp_path: Path) -> str:
    store = LocalStore(tmp_path / "store")
    fill(store)
    return str(store.root)


def cli(capsys: pytest.CaptureFixture[str], *args: str) -> tuple[int, str, str]:
    code = trainer_main(["runs", *args])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def test_list_shows_runs_newest_first_with_state_attempts_timing_and_version_or_reason(
    store_uri: str, capsys: pytest.CaptureFixture[str]
) -> None:
    code, out, err = cli(capsys, "list", "--store", store_uri)
    lines = out.splitlines()
    assert code == 0 and err == ""
    assert [line.split()[0] for line in lines[1:]] == [
        "retrain-42-cccccccc", "push-bbbbbbbbbbbbbbbbbbbb", "push-aaaaaaaaaaaaaaaaaaaa", "push-broken",
    ]  # fmt: skip
    assert "20261125T190530Z-push-aaaaaaaaaaaaaaaaaaaa" in lines[3] and "5.0m" in lines[3]
    assert "loss is NaN at epoch 2" in lines[2]
    # THEN the corrupt record is one line saying why, and the task-definition index is not a run
    assert "unreadable" in lines[4] and "is not JSON" in lines[4]
    assert "_taskdefs" not in out


@pytest.mark.parametrize(
    ("filters", "expected"),
    [
        (["--state", "failed"], ["push-bbbbbbbbbbbbbbbbbbbb"]),
        (["--git-sha", SHA[:7]], ["push-aaaaaaaaaaaaaaaaaaaa"]),
        (["--digest", DIGEST], ["retrain-42-cccccccc", "push-aaaaaaaaaaaaaaaaaaaa"]),
        (["--digest", DIGEST, "--state", "succeeded"], ["push-aaaaaaaaaaaaaaaaaaaa"]),
    ],
)
def test_list_filters_by_state_git_sha_and_digest_as_json(
    store_uri: str, capsys: pytest.CaptureFixture[str], filters: list[str], expected: list[str]
) -> None:
    code, out, _ = cli(capsys, "list", "--store", store_uri, "--json", *filters)
    assert code == 0
    assert [r["run_id"] for r in json.loads(out)] == expected


def test_list_json_carries_timings_of_each_run(store_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    _, out, _ = cli(capsys, "list", "--store", store_uri, "--json", "--state", "succeeded")
    (run,) = json.loads(out)
    assert run["timings"] == {"queued_s": 30.0, "running_s": 300.0, "total_s": 330.0}


def test_show_prints_history_reason_and_the_report_location(store_uri: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "show", "push-aaaaaaaaaaaaaaaaaaaa", "--store", store_uri)
    assert code == 0
    assert "runs/push-aaaaaaaaaaaaaaaaaaaa/report.md" in out
    assert "pushtrain models show 20261125T190530Z-push-aaaaaaaaaaaaaaaaaaaa" in out
    assert out.count("attempt 1") == 3
    code, out, _ = cli(capsys, "show", "push-bbbbbbbbbbbbbbbbbbbb", "--store", store_uri, "--json")
    assert (code, json.loads(out)["reason"]) == (0, "ValueError: loss is NaN at epoch 2")


@pytest.mark.parametrize(
    ("args", "code", "message"),
    [
        (["show", "push-nothere"], 1, "no run 'push-nothere'"),
        (["show", "push-broken"], 1, "is not JSON"),
        (["list", "--git-sha", "XYZ"], 2, "is not a git sha"),
        (["list", "--state", "dancing"], 2, "invalid choice"),
    ],
)
def test_expected_failures_are_one_line_with_their_exit_code(
    store_uri: str, capsys: pytest.CaptureFixture[str], args: list[str], code: int, message: str
) -> None:
    got, out, err = cli(capsys, *args, "--store", store_uri)
    assert got == code
    assert message in err
    assert "Traceback" not in err + out


def test_list_closes_quietly_when_the_pipe_closes(tmp_path: Path) -> None:
    # GIVEN many runs; WHEN the listing is piped into `head -1`
    store = LocalStore(tmp_path / "store")
    for i in range(1500):  # ~150 KB of listing: more than a pipe buffer holds
        run_id = f"push-{i:020d}"
        store.put(status_key(run_id), json.dumps(record(run_id, "queued", "2026-11-25T19:00:00Z")).encode())
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'trainer' / 'src'}"}
    reader = subprocess.Popen(
        [sys.executable, "-m", "trainer", "runs", "list", "--store", str(store.root)],
        env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
    )  # fmt: skip
    assert reader.stdout is not None and reader.stderr is not None
    first = reader.stdout.readline()
    reader.stdout.close()  # what `| head -n 1` does after its line
    reader.wait(timeout=120)
    # THEN the reader stops without a traceback
    assert first.startswith("run ")
    assert reader.stderr.read() == ""
    assert reader.returncode == 0


@pytest.fixture
def s3_store(monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="artifacts")
        fill(open_store("s3://artifacts"))
        yield "s3://artifacts"


def test_list_reads_run_records_from_s3(s3_store: str, capsys: pytest.CaptureFixture[str]) -> None:
    code, out, _ = cli(capsys, "list", "--store", s3_store, "--json", "--git-sha", SHA)
    assert code == 0
    assert [r["run_id"] for r in json.loads(out)] == ["push-aaaaaaaaaaaaaaaaaaaa"]


def test_s3_without_credentials_says_how_to_provide_them(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("AWS_")}
    env.update(
        PYTHONPATH=str(REPO / "trainer" / "src"), AWS_CONFIG_FILE=str(tmp_path / "none"),
        AWS_SHARED_CREDENTIALS_FILE=str(tmp_path / "none"), AWS_EC2_METADATA_DISABLED="true",
        AWS_DEFAULT_REGION="us-east-1",
    )  # fmt: skip
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "runs", "list", "--store", "s3://artifacts"],
        env=env, capture_output=True, text=True, check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 1
    assert "AWS_PROFILE" in result.stderr
    assert "Traceback" not in result.stderr
    assert len(result.stderr.strip().splitlines()) == 1


@pytest.mark.parametrize(
    "argv",
    [
        ["runs", "list"],
        ["runs", "show", "push-nothere"],
        ["models", "list"],
        ["models", "show", "20261125T190000Z-push-nothere"],
        ["models", "champion"],
    ],
)
def test_read_only_commands_never_load_torch(store_uri: str, argv: list[str]) -> None:
    # GIVEN a store; WHEN a read-only command runs (answers and expected failures alike)
    probe = (
        "import runpy, sys\n"
        f"sys.argv = ['trainer', *{argv!r}, '--store', {store_uri!r}]\n"
        "try:\n    runpy.run_module('trainer', run_name='__main__')\n"
        "except SystemExit:\n    pass\n"
        "print('TORCH' if 'torch' in sys.modules else 'NO-TORCH', file=sys.stderr)\n"
    )
    env = {**os.environ, "PYTHONPATH": f"{REPO / 'trainer' / 'src'}"}
    command = [sys.executable, "-c", probe]
    done = subprocess.run(command, env=env, capture_output=True, text=True, timeout=120, check=False)
    # THEN torch was never imported: these commands answer in a fraction of a second
    assert done.stderr.strip().endswith("NO-TORCH"), done.stderr


def test_every_expected_failure_names_an_exception_class_that_exists() -> None:
    import importlib

    from trainer.cli_common import EXPECTED_FAILURES

    # GIVEN the expected failures listed by module and class name (so that asking imports nothing)
    # THEN each resolves to an exception class: a rename cannot silently turn one-line errors into tracebacks
    for module_name, class_name in EXPECTED_FAILURES:
        found = getattr(importlib.import_module(module_name), class_name, None)
        assert isinstance(found, type) and issubclass(found, Exception), f"{module_name}.{class_name}"
