"""Reconcile: pushed images whose event never arrived are started, once; every non-final run is
repaired (a start that never got its task, a stop whose event was lost, a task that vanished); the
CLI and the schedule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from trigger import aws as trigger_aws
from trigger.handler import handle
from trigger.reconcile import main, reconcile
from trigger.runs import push_run_id
from trigger_testkit import (
    DIGEST,
    ENVIRONMENT,
    PUSH_RUN_ID,
    SIGNATURE_MANIFEST,
    Emulated,
    clock,
    load_event,
    no_sleep,
    run_task_failing_once,
    stop_event_for,
)

OTHER_DIGEST = "sha256:" + "ab" * 32
OTHER_SHA = "0123456789abcdef0123456789abcdef01234567"


@pytest.fixture
def two_images(aws: Emulated, push_event: dict[str, Any]) -> Emulated:
    """GIVEN two pushed images; only the first one's event arrived (and trained)."""
    aws.push_image(OTHER_DIGEST, OTHER_SHA)  # the sample image (DIGEST) is there from the start
    handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    return aws


def test_reconcile_starts_only_the_image_that_never_trained_and_only_once(two_images: Emulated) -> None:
    # WHEN reconcile runs (with no time window)
    outcomes = reconcile(two_images.clients, two_images.config, since=None, clock=clock, sleep=no_sleep)

    # THEN it started the second image, as the push would have (same run id, so a late event is a duplicate)
    assert [(o.outcome, o.digest) for o in outcomes] == [("started", OTHER_DIGEST)]
    assert outcomes[0].run_id == push_run_id(OTHER_DIGEST, {})
    assert two_images.record(outcomes[0].run_id)["source"] == "reconcile"
    assert two_images.record(outcomes[0].run_id)["git_sha"] == OTHER_SHA
    assert len(two_images.tasks()) == 2
    # AND running it again starts nothing
    assert reconcile(two_images.clients, two_images.config, since=None, clock=clock, sleep=no_sleep) == []
    assert len(two_images.tasks()) == 2


def test_reconcile_window_skips_images_pushed_before_it(two_images: Emulated) -> None:
    # moto stamps imagePushedAt with the real clock; a clock a year ahead puts every image outside a week
    def later() -> Any:
        return clock() + timedelta(days=365 * 5)

    outcomes = reconcile(two_images.clients, two_images.config, since=timedelta(days=7), clock=later, sleep=no_sleep)

    assert outcomes == []
    assert len(two_images.tasks()) == 1


def test_scheduled_event_reconciles_through_the_handler(two_images: Emulated) -> None:
    decision = handle(
        load_event("scheduled_event.json"), two_images.config, two_images.clients, clock=clock, sleep=no_sleep
    )

    assert (decision["decision"], decision["outcome"], decision["started"]) == ("reconcile", "done", 1)
    assert len(two_images.tasks()) == 2


@pytest.fixture
def cli_environment(two_images: Emulated, monkeypatch: pytest.MonkeyPatch) -> Iterator[Emulated]:
    """The CLI reads PUSHTRAIN_* like the function, and makes its own (moto-patched) clients."""
    config = two_images.config
    for name, value in {
        **ENVIRONMENT,
        "PUSHTRAIN_SUBNETS": ",".join(config.subnets),
        "PUSHTRAIN_SECURITY_GROUPS": ",".join(config.security_groups),
    }.items():
        monkeypatch.setenv(name, value)
    trigger_aws.default_clients.cache_clear()
    yield two_images
    trigger_aws.default_clients.cache_clear()


def test_cli_dry_run_lists_what_would_start_and_starts_nothing(
    cli_environment: Emulated, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["--dry-run", "--all"]) == 0

    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    would = [line for line in lines if line["outcome"] == "would-start"]
    assert [line["digest"] for line in would] == [OTHER_DIGEST]
    assert len(cli_environment.tasks()) == 1


def test_cli_starts_the_missing_image(cli_environment: Emulated, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["--since-hours", "24"]) == 0

    assert len(cli_environment.tasks()) == 2
    assert '"outcome": "done"' in capsys.readouterr().out


def test_cli_without_configuration_fails_naming_the_variable(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name in ENVIRONMENT:
        monkeypatch.delenv(name, raising=False)

    assert main(["--dry-run"]) == 1
    assert "PUSHTRAIN_CLUSTER is not set" in capsys.readouterr().out


# --- repairs: every non-final run is moved on --------------------------------------------------------

GONE_TASK = "arn:aws:ecs:us-east-1:123456789012:task/pushtrain/00000000000000000000000000000000"


def reconciled(aws: Emulated) -> list[Any]:
    return reconcile(aws.clients, aws.config, since=timedelta(days=7), clock=clock, sleep=no_sleep)


@pytest.fixture
def trained(aws: Emulated, push_event: dict[str, Any]) -> Emulated:
    """GIVEN the push sample was started: attempt 1 of PUSH_RUN_ID has a task."""
    handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    return aws


def test_retrain_run_left_queued_is_started_by_reconcile(aws: Emulated) -> None:
    # GIVEN a retrain run whose start failed (claim released) and whose caller gave up
    request = {**load_event("retrain_request.json")}
    with run_task_failing_once(aws), pytest.raises(ClientError):
        handle(request, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    (run_id,) = [k.split("/")[1] for k in keys(aws) if k.endswith("status.json")]
    assert aws.record(run_id)["claimed_at"] is None

    outcomes = [o for o in reconciled(aws) if o.decision == "repair"]  # (the sample image's push also starts)

    assert [(o.outcome, o.run_id) for o in outcomes] == [("retried-start", run_id)]
    assert aws.record(run_id)["task_arn"] in {t["taskArn"] for t in aws.tasks()}
    assert reconciled(aws) == []  # and once only


def test_spot_resume_whose_run_task_failed_is_started_by_reconcile(
    trained: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    event = stop_event_for(trained, spot_stop_event, trained.record(PUSH_RUN_ID)["task_arn"], "SpotInterruption", 75)
    with run_task_failing_once(trained), pytest.raises(ClientError):
        handle(event, trained.config, trained.clients, clock=clock, sleep=no_sleep)
    # (the stop event's retries were lost too)

    outcomes = reconciled(trained)

    assert [(o.outcome, o.attempt) for o in outcomes] == [("retried-start", 2)]
    assert len(trained.tasks()) == 2
    assert trained.record(PUSH_RUN_ID)["attempt"] == 2


def test_spot_interruption_whose_event_was_lost_is_resumed_by_reconcile(trained: Emulated) -> None:
    trained.put_record(PUSH_RUN_ID, state="interrupted")
    trained.stop_task(trained.record(PUSH_RUN_ID)["task_arn"], "SpotInterruption", 75)

    outcomes = reconciled(trained)

    assert [(o.decision, o.outcome, o.attempt) for o in outcomes] == [("repair", "started", 2)]
    assert len(trained.tasks()) == 2


def test_run_stopped_by_a_person_with_exit_137_and_no_event_is_marked_failed(trained: Emulated) -> None:
    trained.put_record(PUSH_RUN_ID, state="running")
    trained.stop_task(trained.record(PUSH_RUN_ID)["task_arn"], "UserInitiated", 137, "Task stopped by user")

    outcomes = reconciled(trained)

    assert [(o.decision, o.outcome) for o in outcomes] == [("repair", "marked-failed")]
    record = trained.record(PUSH_RUN_ID)
    assert (record["state"], record["reason"]) == (
        "failed",
        "stopCode UserInitiated, exit code 137: Task stopped by user",
    )
    assert len(trained.tasks()) == 1


@pytest.mark.parametrize("state", ["queued", "running", "interrupted"])
def test_run_whose_task_no_longer_exists_is_marked_failed(trained: Emulated, state: str) -> None:
    trained.put_record(PUSH_RUN_ID, state=state, task_arn=GONE_TASK)

    outcomes = reconciled(trained)

    assert [(o.outcome, o.task_arn) for o in outcomes] == [("marked-failed", GONE_TASK)]
    assert trained.record(PUSH_RUN_ID)["state"] == "failed"
    assert "no longer exists" in trained.record(PUSH_RUN_ID)["reason"]


@pytest.mark.parametrize(
    ("fields", "why"),
    [
        ({"state": "running"}, "its task is running"),
        ({"state": "succeeded"}, "final"),
        ({"state": "running", "task_arn": GONE_TASK, "source": "manual"}, "started by hand"),
        ({"task_arn": None, "claimed_at": "2026-11-25T18:59:00Z"}, "a start in flight"),
    ],
)
def test_runs_that_need_nothing_are_left_alone(trained: Emulated, fields: dict[str, Any], why: str) -> None:
    trained.put_record(PUSH_RUN_ID, **fields)
    before = trained.record(PUSH_RUN_ID)

    assert reconciled(trained) == [], why
    assert trained.record(PUSH_RUN_ID) == before
    assert len(trained.tasks()) == 1


def test_runs_last_written_before_the_look_back_are_left_alone(trained: Emulated) -> None:
    trained.put_record(PUSH_RUN_ID, state="running", task_arn=GONE_TASK)

    outcomes = reconcile(
        trained.clients, trained.config, since=timedelta(days=7), clock=lambda: datetime.now(UTC) + timedelta(days=8)
    )

    assert outcomes == []
    assert trained.record(PUSH_RUN_ID)["state"] == "running"


def test_reconcile_starts_no_artifact(aws: Emulated) -> None:
    aws.push_image("sha256:" + "7" * 64, "sha256-811d8fd9.sig", manifest=SIGNATURE_MANIFEST)

    outcomes = reconciled(aws)

    assert {(o.outcome, o.digest) for o in outcomes} == {
        ("started", DIGEST),
        ("not-an-image", "sha256:" + "7" * 64),
    }
    assert len(aws.tasks()) == 1


def test_the_schedule_uses_the_configured_look_back(trained: Emulated) -> None:
    trained.put_record(PUSH_RUN_ID, state="running", task_arn=GONE_TASK)
    # moto stamps objects and images with the real clock
    later = datetime.now(UTC) + timedelta(days=trained.config.reconcile_lookback_days + 1)

    decision = handle(load_event("scheduled_event.json"), trained.config, trained.clients, clock=lambda: later)

    assert (decision["outcome"], decision["decisions"]) == ("done", 0)


def keys(aws: Emulated) -> list[str]:
    return [item["Key"] for item in aws.s3.list_objects_v2(Bucket=aws.config.bucket).get("Contents", [])]
