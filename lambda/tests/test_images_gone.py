"""Images that are gone, and images already trained.

- A Spot resume or a reconcile repair long after the push asks ECR first: a digest no longer in the
  repository fails the run with that reason, and nothing is launched (on AWS the pull would fail and the
  run be marked failed only later, after a paid start).
- A digest trained once is remembered beyond runs/ (trigger.trained, digests/<digest>.json): a re-tag of it
  after its run record expired starts nothing, whether the push event or reconcile sees it.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from trigger.handler import handle
from trigger.reconcile import reconcile
from trigger.trained import MIN_RECORD_DAYS, digest_key
from trigger_testkit import BUCKET, DIGEST, GIT_SHA, NOW, PUSH_RUN_ID, Emulated, clock, no_sleep, stop_event_for

SPOT_REASON = "Your Spot Task was interrupted."


@pytest.fixture
def pushed(aws: Emulated, push_event: dict[str, Any]) -> Emulated:
    """GIVEN the push sample was trained: attempt 1 of PUSH_RUN_ID runs."""
    handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    return aws


def delete_image(aws: Emulated) -> None:
    aws.ecr.batch_delete_image(repositoryName="pushtrain-trainer", imageIds=[{"imageDigest": DIGEST}])


def test_a_spot_resume_of_an_image_deleted_since_fails_the_run_and_launches_nothing(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # GIVEN the image was deleted from ECR while attempt 1 ran
    first = pushed.record(PUSH_RUN_ID)["task_arn"]
    delete_image(pushed)
    # WHEN Spot interrupts attempt 1
    event = stop_event_for(pushed, spot_stop_event, first, "SpotInterruption", 75, SPOT_REASON)
    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    # THEN the run is failed with the reason, and attempt 2 was never launched
    assert (decision["decision"], decision["outcome"]) == ("resume", "marked-failed")
    record = pushed.record(PUSH_RUN_ID)
    assert (record["state"], record["attempt"], record["task_arn"]) == ("failed", 2, None)
    assert "no longer in repository" in record["reason"]
    assert len(pushed.tasks()) == 1


def test_a_reconcile_repair_of_an_image_deleted_since_fails_the_run_and_launches_nothing(aws: Emulated) -> None:
    # GIVEN a retrain whose start died an hour ago (claimed, no task), and its image deleted since
    spec_record = {"run_id": PUSH_RUN_ID, "state": "queued", "attempt": 1, "image_digest": DIGEST, "git_sha": GIT_SHA}
    spec_record |= {"params": {}, "compute": "cpu", "task_arn": None, "source": "push", "history": []}
    spec_record |= {"claimed_at": (clock() - timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")}
    aws.s3.put_object(
        Bucket=BUCKET, Key=f"runs/{PUSH_RUN_ID}/status.json", Body=str.encode(__import__("json").dumps(spec_record))
    )
    delete_image(aws)
    # WHEN reconcile repairs it
    outcomes = reconcile(aws.clients, aws.config, since=timedelta(days=7), clock=clock, sleep=no_sleep)
    # THEN the run is failed with the reason; nothing launched
    assert [(o.decision, o.outcome) for o in outcomes] == [("repair", "marked-failed")]
    assert aws.record(PUSH_RUN_ID)["state"] == "failed"
    assert aws.tasks() == []


def test_a_retag_of_a_trained_image_after_its_record_expired_starts_nothing(
    pushed: Emulated, push_event: dict[str, Any]
) -> None:
    # GIVEN the push sample's run record expired (runs/ lifecycle, at least MIN_RECORD_DAYS after the push),
    # its digest index did not
    pushed.s3.delete_object(Bucket=BUCKET, Key=f"runs/{PUSH_RUN_ID}/status.json")
    assert pushed.s3.get_object(Bucket=BUCKET, Key=digest_key(DIGEST))["ContentLength"] > 0

    def later() -> datetime:
        return NOW + timedelta(days=31)

    # WHEN the same digest is pushed under another tag, and reconcile runs
    retag = push_event | {"detail": push_event["detail"] | {"image-tag": "v2"}}
    pushed.push_image(DIGEST, "v2")
    decision = handle(retag, pushed.config, pushed.clients, clock=later, sleep=no_sleep)
    outcomes = reconcile(pushed.clients, pushed.config, since=timedelta(days=30), clock=later, sleep=no_sleep)
    # THEN nothing starts: the push is skipped as already trained, reconcile leaves it
    assert (decision["outcome"], decision["run_id"]) == ("already-trained", PUSH_RUN_ID)
    assert outcomes == []
    assert len(pushed.tasks()) == 1


@pytest.mark.parametrize("age_days", [0, MIN_RECORD_DAYS - 1])
def test_an_index_entry_without_its_record_yet_is_a_start_in_flight_not_an_expired_run(
    aws: Emulated, push_event: dict[str, Any], age_days: int
) -> None:
    # GIVEN the digest indexed by a delivery that has not created the run record yet (it is between its two
    # writes, or its invocation died there): younger than any record can live, so it cannot have expired
    first = NOW - timedelta(days=age_days)
    entry = {
        "schema": 1,
        "image_digest": DIGEST,
        "run_id": PUSH_RUN_ID,
        "first_started_at": first.strftime("%Y-%m-%dT%H:%M:%SZ"),
    }
    aws.s3.put_object(Bucket=BUCKET, Key=digest_key(DIGEST), Body=json.dumps(entry).encode())
    # WHEN a delivery of the push arrives (another one, or the died invocation's retry)
    decision = handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    # THEN the start protocol decides: it starts the run (the digest was never trained), not a final skip
    # (seen once under 8 simultaneous deliveries: one of them answered already-trained)
    assert (decision["outcome"], decision["run_id"]) == ("started", PUSH_RUN_ID)
    assert len(aws.tasks()) == 1
