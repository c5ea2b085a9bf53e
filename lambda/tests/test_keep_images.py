"""A published run's image stays pullable: the trigger tags its digest `keep-<run_id>` (and each manifest
of its index `keep-<run_id>-<n>`) when the training task stops with exit 0 and the record says
`succeeded` with a `version`, and reconcile repairs a keep that was missed. The `keep-` pushes ECR then
announces train nothing. The run record also says which capacity its task got."""

from __future__ import annotations

import json
from datetime import timedelta
from typing import Any

import pytest
from botocore.exceptions import ClientError
from trigger import reconcile as reconciling
from trigger.errors import RecordConflictError
from trigger.handler import handle
from trigger.images import DOCKER_MANIFEST, OCI_INDEX, OCI_MANIFEST
from trigger.keep import keep_image, keep_tag
from trigger.reconcile import reconcile
from trigger_testkit import DIGEST, PUSH_RUN_ID, Emulated, Stubbed, clock, load_event, no_sleep, stop_event_for

REPOSITORY = "pushtrain-trainer"
VERSION = "20261125T190000Z-push-9a749648e91499fcfb67"
KEEP = f"keep-{PUSH_RUN_ID}"
INDEX_DIGEST = "sha256:" + "1" * 64
MANIFEST = json.dumps({"schemaVersion": 2, "mediaType": DOCKER_MANIFEST})
CHILDREN = ("sha256:" + "2" * 64, "sha256:" + "3" * 64)


@pytest.fixture
def pushed(aws: Emulated, push_event: dict[str, Any]) -> Emulated:
    """GIVEN the push sample was trained: attempt 1 of PUSH_RUN_ID has a task."""
    handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    return aws


def tags_of(aws: Emulated, digest: str) -> set[str]:
    (detail,) = aws.ecr.describe_images(repositoryName=REPOSITORY, imageIds=[{"imageDigest": digest}])["imageDetails"]
    return set(detail.get("imageTags") or ())


def succeeded_stop(aws: Emulated, sample: dict[str, Any], exit_code: int = 0) -> dict[str, Any]:
    """The record says succeeded with VERSION (as the trainer writes it); the stop event of its task."""
    aws.put_record(PUSH_RUN_ID, state="succeeded", version=VERSION)
    return stop_event_for(aws, sample, aws.record(PUSH_RUN_ID)["task_arn"], "EssentialContainerExited", exit_code)


def push_index(aws: Emulated) -> None:
    """An OCI index (platform image + attestation, both untagged as buildx pushes them) tagged `index`."""
    for n, child in enumerate(CHILDREN):
        manifest = {
            "schemaVersion": 2,
            "mediaType": OCI_MANIFEST,
            "config": {"mediaType": "application/vnd.oci.image.config.v1+json", "size": n + 1, "digest": child},
            "layers": [{"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "size": 1, "digest": child}],
        }
        aws.ecr.put_image(repositoryName=REPOSITORY, imageManifest=json.dumps(manifest), imageDigest=child)
    index = {
        "schemaVersion": 2,
        "mediaType": OCI_INDEX,
        "manifests": [
            {"mediaType": OCI_MANIFEST, "digest": CHILDREN[0], "size": 1, "platform": {"os": "linux"}},
            {"mediaType": OCI_MANIFEST, "digest": CHILDREN[1], "size": 1, "platform": {"os": "unknown"}},
        ],
    }
    aws.push_image(INDEX_DIGEST, "index", manifest=index)


# --- the success stop -----------------------------------------------------------------------------------


def test_success_stop_of_a_published_run_tags_its_digest_and_records_it(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    event = succeeded_stop(pushed, spot_stop_event)

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert (decision["decision"], decision["outcome"], decision["digest"]) == ("keep", "kept", DIGEST)
    assert KEEP in tags_of(pushed, DIGEST)
    record = pushed.record(PUSH_RUN_ID)
    assert record["image_kept_at"] == "2026-11-25T19:00:00Z"
    assert (record["state"], record["version"]) == ("succeeded", VERSION)  # the trainer's result is untouched
    assert len(pushed.tasks()) == 1


def test_success_stop_of_an_index_tags_the_index_and_every_manifest_it_lists(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    push_index(pushed)
    pushed.put_record(PUSH_RUN_ID, image_digest=INDEX_DIGEST)
    event = succeeded_stop(pushed, spot_stop_event)

    handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert tags_of(pushed, INDEX_DIGEST) == {"index", KEEP}
    assert tags_of(pushed, CHILDREN[0]) == {f"{KEEP}-1"}
    assert tags_of(pushed, CHILDREN[1]) == {f"{KEEP}-2"}


@pytest.mark.parametrize(
    ("fields", "exit_code"),
    [
        ({"state": "succeeded", "version": None}, 0),
        ({"state": "running", "version": None}, 0),
        ({"state": "failed", "version": None}, 1),
        ({"state": "succeeded", "version": VERSION, "source": "manual"}, 0),
    ],
    ids=["succeeded-without-version", "record-not-caught-up", "failure-exit", "run-started-by-hand"],
)
def test_stops_without_a_published_version_tag_nothing(
    pushed: Emulated, spot_stop_event: dict[str, Any], fields: dict[str, Any], exit_code: int
) -> None:
    pushed.put_record(PUSH_RUN_ID, **fields)
    event = stop_event_for(
        pushed, spot_stop_event, pushed.record(PUSH_RUN_ID)["task_arn"], "EssentialContainerExited", exit_code
    )

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert decision["decision"] != "keep"
    assert tags_of(pushed, DIGEST) == {pushed.record(PUSH_RUN_ID)["git_sha"]}
    assert "image_kept_at" not in pushed.record(PUSH_RUN_ID)


def test_success_event_that_ecs_contradicts_tags_nothing(pushed: Emulated, spot_stop_event: dict[str, Any]) -> None:
    event = succeeded_stop(pushed, spot_stop_event)
    pushed.stopped[event["detail"]["taskArn"]]["exitCode"] = 1  # ECS says the task failed

    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert (decision["decision"], decision["outcome"]) == ("no-op", "unverified")
    assert KEEP not in tags_of(pushed, DIGEST)


def test_success_event_delivered_twice_keeps_once_without_error(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    event = succeeded_stop(pushed, spot_stop_event)
    handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    kept = pushed.record(PUSH_RUN_ID)

    again = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert (again["decision"], again["outcome"]) == ("no-op", "no-restart")
    assert "image kept at" in again["reason"]
    assert pushed.record(PUSH_RUN_ID) == kept


def test_retry_after_the_record_write_was_lost_finds_the_tag_there_and_records_it(
    pushed: Emulated, spot_stop_event: dict[str, Any]
) -> None:
    # GIVEN the tags were added but the record write was lost (the invocation died after PutImage)
    event = succeeded_stop(pushed, spot_stop_event)
    handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    record = pushed.record(PUSH_RUN_ID)
    del record["image_kept_at"]
    pushed.s3.put_object(Bucket=pushed.config.bucket, Key=f"runs/{PUSH_RUN_ID}/status.json", Body=json.dumps(record))

    # WHEN the event is delivered again: ECR answers ImageAlreadyExistsException, which is success
    decision = handle(event, pushed.config, pushed.clients, clock=clock, sleep=no_sleep)

    assert (decision["decision"], decision["outcome"]) == ("keep", "kept")
    assert pushed.record(PUSH_RUN_ID)["image_kept_at"] is not None


# --- the exact ECR requests ----------------------------------------------------------------------------------


def test_put_image_repeats_the_stored_manifest_and_media_type_with_the_keep_tag(stubbed: Stubbed) -> None:
    stored = '{"schemaVersion":2,  "mediaType":"application/vnd.docker.distribution.manifest.v2+json"}'  # as stored
    accepted = sorted(
        {DOCKER_MANIFEST, OCI_MANIFEST, OCI_INDEX, "application/vnd.docker.distribution.manifest.list.v2+json"}
    )
    stubbed.ecr.add_response(
        "batch_get_image",
        {
            "images": [
                {"imageId": {"imageDigest": DIGEST}, "imageManifest": stored, "imageManifestMediaType": DOCKER_MANIFEST}
            ]
        },
        {"repositoryName": REPOSITORY, "imageIds": [{"imageDigest": DIGEST}], "acceptedMediaTypes": accepted},
    )
    stubbed.ecr.add_response(
        "put_image",
        {"image": {"imageId": {"imageDigest": DIGEST, "imageTag": KEEP}}},
        {
            "repositoryName": REPOSITORY,
            "imageManifest": stored,
            "imageManifestMediaType": DOCKER_MANIFEST,
            "imageTag": KEEP,
            "imageDigest": DIGEST,
        },
    )

    assert keep_image(stubbed.clients.ecr, REPOSITORY, DIGEST, PUSH_RUN_ID) == [KEEP]
    stubbed.assert_done()


def test_tag_already_on_the_digest_is_success(stubbed: Stubbed) -> None:
    stubbed.ecr.add_response(
        "batch_get_image",
        {
            "images": [
                {"imageManifest": '{"mediaType":"' + DOCKER_MANIFEST + '"}', "imageManifestMediaType": DOCKER_MANIFEST}
            ]
        },
    )
    stubbed.ecr.add_client_error("put_image", "ImageAlreadyExistsException", "tag already on this digest")

    assert keep_image(stubbed.clients.ecr, REPOSITORY, DIGEST, PUSH_RUN_ID) == [KEEP]
    stubbed.assert_done()


def test_keep_tag_on_another_digest_is_an_error_naming_both(stubbed: Stubbed) -> None:
    # (moto moves a tag even in an IMMUTABLE repository; ECR refuses with ImageTagAlreadyExistsException)
    other = "sha256:" + "9" * 64
    stubbed.ecr.add_response(
        "batch_get_image", {"images": [{"imageManifest": MANIFEST, "imageManifestMediaType": DOCKER_MANIFEST}]}
    )
    stubbed.ecr.add_client_error("put_image", "ImageTagAlreadyExistsException", "tag is immutable")
    stubbed.ecr.add_response(
        "describe_images",
        {"imageDetails": [{"imageDigest": other, "imageTags": [KEEP]}]},
        {"repositoryName": REPOSITORY, "imageIds": [{"imageTag": KEEP}]},
    )

    with pytest.raises(RecordConflictError, match=f"is on {other}, not on {DIGEST}"):
        keep_image(stubbed.clients.ecr, REPOSITORY, DIGEST, PUSH_RUN_ID)
    stubbed.assert_done()


def test_other_ecr_errors_are_raised(stubbed: Stubbed) -> None:
    stubbed.ecr.add_response(
        "batch_get_image",
        {
            "images": [
                {"imageManifest": '{"mediaType":"' + DOCKER_MANIFEST + '"}', "imageManifestMediaType": DOCKER_MANIFEST}
            ]
        },
    )
    stubbed.ecr.add_client_error("put_image", "AccessDeniedException", "no ecr:PutImage")

    with pytest.raises(ClientError, match="AccessDenied"):
        keep_image(stubbed.clients.ecr, REPOSITORY, DIGEST, PUSH_RUN_ID)


def test_keep_tags_fit_ecr_for_the_longest_run_id() -> None:
    longest = "retrain-" + "r" * 19 + "-" + "a" * 8
    assert len(keep_tag(longest, 99)) <= 128
    with pytest.raises(ValueError, match="not a valid image tag"):
        keep_tag("x" * 124)


# --- keep- pushes train nothing -------------------------------------------------------------------------------


def test_push_of_a_keep_tag_is_skipped_with_its_reason(aws: Emulated, push_event: dict[str, Any]) -> None:
    push_event["detail"]["image-tag"] = KEEP

    decision = handle(push_event, aws.config, aws.clients, clock=clock, sleep=no_sleep)

    assert (decision["decision"], decision["outcome"]) == ("skip", "not-for-us")
    assert "keep" in decision["reason"]
    assert aws.tasks() == []


def test_reconcile_starts_no_manifest_tagged_only_keep(aws: Emulated) -> None:
    # GIVEN the sample image trained and published, and a kept index's child that only carries keep-…-1
    aws.push_image("sha256:" + "4" * 64, f"{KEEP}-1")

    outcomes = reconcile(aws.clients, aws.config, since=timedelta(days=7), clock=clock, sleep=no_sleep)

    assert {(o.outcome, o.digest) for o in outcomes} == {("started", DIGEST)}
    assert len(aws.tasks()) == 1


# --- reconcile repairs a missed keep -------------------------------------------------------------------------


def test_reconcile_keeps_a_published_run_whose_success_stop_was_lost(pushed: Emulated) -> None:
    pushed.put_record(PUSH_RUN_ID, state="succeeded", version=VERSION)

    dry = reconcile(pushed.clients, pushed.config, since=timedelta(days=7), dry_run=True, clock=clock)
    outcomes = reconcile(pushed.clients, pushed.config, since=timedelta(days=7), clock=clock, sleep=no_sleep)

    assert [(o.decision, o.outcome) for o in dry] == [("repair", "would-keep")]
    assert KEEP in tags_of(pushed, DIGEST)
    assert [(o.decision, o.outcome, o.run_id) for o in outcomes] == [("repair", "kept", PUSH_RUN_ID)]
    assert pushed.record(PUSH_RUN_ID)["image_kept_at"] is not None
    assert reconcile(pushed.clients, pushed.config, since=timedelta(days=7), clock=clock, sleep=no_sleep) == []
    assert len(pushed.tasks()) == 1


def test_reconcile_keeps_a_bounded_number_per_invocation(pushed: Emulated, monkeypatch: pytest.MonkeyPatch) -> None:
    # GIVEN two published runs whose images are not kept, and a quota of one keep per reconcile
    handle(load_event("retrain_request.json"), pushed.config, pushed.clients, clock=clock, sleep=no_sleep)
    listed = pushed.s3.list_objects_v2(Bucket=pushed.config.bucket, Prefix="runs/")["Contents"]
    run_ids = sorted(item["Key"].split("/")[1] for item in listed if item["Key"].endswith("/status.json"))
    assert len(run_ids) == 2
    for run_id in run_ids:
        pushed.put_record(run_id, state="succeeded", version=f"v-{run_id}")
    monkeypatch.setattr(reconciling, "MAX_KEEPS_PER_RECONCILE", 1)

    first = reconcile(pushed.clients, pushed.config, since=timedelta(days=7), clock=clock, sleep=no_sleep)
    second = reconcile(pushed.clients, pushed.config, since=timedelta(days=7), clock=clock, sleep=no_sleep)

    assert sorted(o.outcome for o in first) == ["keep-deferred", "kept"]
    assert [o.outcome for o in second] == ["kept"]
    assert all(pushed.record(run_id)["image_kept_at"] for run_id in run_ids)


# --- the capacity a run got ----------------------------------------------------------------------------------


def test_run_record_says_which_capacity_its_task_got(pushed: Emulated) -> None:
    record = pushed.record(PUSH_RUN_ID)
    (task,) = pushed.tasks()
    assert record["task_arn"] == task["taskArn"]
    assert record["capacity_provider"] == "FARGATE_SPOT"
