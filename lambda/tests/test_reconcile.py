"""Reconcile: pushed images whose event never arrived are started, once; the CLI and the schedule."""

from __future__ import annotations

import json
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest
from trigger import aws as trigger_aws
from trigger.flows import reconcile
from trigger.handler import handle
from trigger.reconcile import main
from trigger.runs import push_run_id
from trigger_testkit import ENVIRONMENT, Emulated, clock, load_event, no_sleep

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
