"""Retrain requests: a tag or digest resolved in ECR, parameters as overrides, the answer the retrain
workflow reads, and a request id that makes asking again train again."""

from __future__ import annotations

import copy
from typing import Any

import pytest
from trigger.errors import ImageNotFoundError, InvalidEventError, NotAnImageError
from trigger.handler import handle
from trigger_testkit import DIGEST, GIT_SHA, SIGNATURE_MANIFEST, Emulated, clock, env_of, load_event, no_sleep


@pytest.fixture
def request_() -> dict[str, Any]:
    return load_event("retrain_request.json")


@pytest.fixture
def pushed(aws: Emulated) -> Emulated:
    """GIVEN the sample image, tagged with its git sha (the emulated account holds it from the start)."""
    return aws


def test_retrain_by_tag_starts_the_resolved_digest_with_the_parameters(
    pushed: Emulated, request_: dict[str, Any]
) -> None:
    # WHEN the retrain workflow asks for the image by its tag
    answer = handle(request_, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    # THEN the answer names the run (with the request id), its task, digest and status key
    run_id = answer["run_id"]
    assert run_id.startswith("retrain-11223344556-")
    assert len(run_id) == len("retrain-11223344556-") + 8
    assert answer == {
        "run_id": run_id,
        "task_arn": answer["task_arn"],
        "image_digest": DIGEST,
        "status_key": f"runs/{run_id}/status.json",
        "compute": "cpu",
    }
    # AND the task trains that digest with the parameters as TRAINER_* overrides
    (task,) = pushed.tasks()
    assert task["taskArn"] == answer["task_arn"]
    assert env_of(task) == {
        "TRAINER_RUN_ID": run_id,
        "TRAINER_ATTEMPT": "1",
        "TRAINER_IMAGE_DIGEST": DIGEST,
        "TRAINER_GIT_SHA": GIT_SHA,  # the tag is the commit sha
        "TRAINER_EPOCHS": "12",
        "TRAINER_LR": "0.2",
        "TRAINER_MODEL": "airbench",
    }
    record = pushed.record(run_id)
    assert (record["source"], record["params"]) == ("retrain", {"epochs": 12, "lr": 0.2, "model": "airbench"})


def test_same_request_delivered_twice_answers_the_same_task(pushed: Emulated, request_: dict[str, Any]) -> None:
    first = handle(request_, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    second = handle(request_, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert second == first
    assert len(pushed.tasks()) == 1


def test_new_request_id_trains_again_on_the_same_pinned_revision(pushed: Emulated, request_: dict[str, Any]) -> None:
    first = handle(request_, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    revisions = pushed.revisions()

    again = {**copy.deepcopy(request_), "request_id": "11223344557", "image": DIGEST}
    second = handle(again, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert second["run_id"] != first["run_id"]
    assert len(pushed.tasks()) == 2
    assert pushed.revisions() == revisions  # one revision per digest, whatever the run


def test_unknown_tag_raises_and_starts_nothing(pushed: Emulated, request_: dict[str, Any]) -> None:
    request_["image"] = "no-such-tag"

    with pytest.raises(ImageNotFoundError, match="'no-such-tag' is not in repository 'pushtrain-trainer'"):
        handle(request_, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    assert pushed.tasks() == []


def test_retrain_of_a_signature_raises_and_writes_nothing(pushed: Emulated, request_: dict[str, Any]) -> None:
    # GIVEN a cosign signature pushed under its conventional tag: an OCI image config, a non-filesystem layer
    signature = "sha256:" + "5" * 64
    pushed.push_image(signature, "sha256-811d8fd9.sig", manifest=SIGNATURE_MANIFEST)
    request_["image"] = "sha256-811d8fd9.sig"

    with pytest.raises(NotAnImageError, match="simplesigning"):
        handle(request_, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    assert pushed.tasks() == []
    assert pushed.s3.list_objects_v2(Bucket=pushed.config.bucket).get("KeyCount") == 0


def test_retrain_of_latest_is_refused_before_any_aws_call(pushed: Emulated, request_: dict[str, Any]) -> None:
    request_["image"] = "latest"

    with pytest.raises(InvalidEventError, match="'latest' is refused"):
        handle(request_, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    assert pushed.tasks() == []
