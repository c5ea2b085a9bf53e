"""Multi-node and GPU requests: refused without their capacity; with Batch, a pinned job definition and one job
per run (SubmitJob has no client token: the run record and a ListJobs by name keep it to one); a Batch
FAILED event marks the run failed.

S3 (the run records) is moto; Batch is botocore's Stubber on a real client, which checks every request
against the Batch API model: the exact SubmitJob and RegisterJobDefinition requests are what matter here.
"""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from datetime import datetime, timedelta
from typing import Any

import pytest
from botocore.stub import Stubber
from trigger.aws import Clients
from trigger.batch import job_name
from trigger.compute import parse_scaled_request
from trigger.config import Config, load_config
from trigger.errors import ConfigError, InvalidEventError, StartInFlightError
from trigger.handler import handle
from trigger.records import new_record, record_key
from trigger.runs import RunSpec
from trigger_testkit import BUCKET, DIGEST, ENVIRONMENT, GIT_SHA, REGION, Emulated, client, clock, load_event, no_sleep

ACCOUNT = "123456789012"
QUEUE = "pushtrain-mnp"
FAMILY = "pushtrain-trainer-mnp"
BATCH_ENVIRONMENT = ENVIRONMENT | {
    "PUSHTRAIN_BATCH_JOB_QUEUE": QUEUE, "PUSHTRAIN_BATCH_JOB_DEFINITION": FAMILY, "PUSHTRAIN_BATCH_MAX_NODES": "4",
}  # fmt: skip
REPO = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/pushtrain-trainer"
BASE_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/{FAMILY}:1"
PINNED_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job-definition/{FAMILY}:2"
JOB_ARN = f"arn:aws:batch:{REGION}:{ACCOUNT}:job/4c7599ae-0a82-49aa-ba5a-4727fcce14a8"
REQUEST = {"action": "retrain", "request_id": "11223344556", "image": GIT_SHA, "params": {"epochs": 12}, "nodes": 2}


def base_definition(image: str = f"{REPO}:base-revision-not-run", arn: str = BASE_ARN) -> dict[str, Any]:
    """A DescribeJobDefinitions entry as Terraform's batch.tf makes it."""
    return {
        "jobDefinitionName": FAMILY,
        "jobDefinitionArn": arn,
        "revision": int(arn.rsplit(":", 1)[1]),
        "status": "ACTIVE",
        "type": "multinode",
        "propagateTags": True,
        "platformCapabilities": ["EC2"],
        "retryStrategy": {"attempts": 3, "evaluateOnExit": [{"onStatusReason": "Host EC2*", "action": "retry"}]},
        "timeout": {"attemptDurationSeconds": 86400},
        "nodeProperties": {
            "numNodes": 2,
            "mainNode": 0,
            "nodeRangeProperties": [
                {
                    "targetNodes": "0:",
                    "container": {
                        "image": image,
                        "command": ["torchrun"],
                        "readonlyRootFilesystem": True,
                        "resourceRequirements": [{"type": "VCPU", "value": "4"}, {"type": "MEMORY", "value": "14336"}],
                    },
                }
            ],
        },
    }


# --- refused without capacity (pure) -------------------------------------------------------------------


def test_a_multi_node_request_is_refused_when_batch_is_not_deployed(config: Config) -> None:
    with pytest.raises(InvalidEventError, match=r"nodes=2 needs multi-node capacity.*var\.batch\.enabled"):
        parse_scaled_request(REQUEST, config)


def test_a_gpu_request_is_refused_when_gpu_capacity_is_not_deployed(config: Config) -> None:
    request = {k: v for k, v in REQUEST.items() if k != "nodes"} | {"compute": "gpu"}
    with pytest.raises(InvalidEventError, match=r"compute='gpu' needs GPU capacity.*var\.gpu\.enabled"):
        parse_scaled_request(request, config)


@pytest.mark.parametrize("nodes", [0, 17, True, "2", 1.5])
def test_a_node_count_outside_1_to_16_is_refused(nodes: object) -> None:
    with pytest.raises(InvalidEventError, match=r"nodes=.* must be an integer from 1 to 16"):
        parse_scaled_request(REQUEST | {"nodes": nodes}, load_config(BATCH_ENVIRONMENT))


def test_one_cpu_node_is_an_ordinary_retrain(aws: Emulated) -> None:
    answer = handle(REQUEST | {"nodes": 1}, aws.config, aws.clients, clock=clock, sleep=no_sleep)
    assert answer["task_arn"].startswith("arn:aws:ecs:")
    assert "job_arn" not in answer


# --- submitting (moto S3 + Stubber Batch) ----------------------------------------------------------------


@pytest.fixture
def batch_aws(aws: Emulated) -> Iterator[tuple[Emulated, Config, Stubber]]:
    batch = client("batch")
    stub = Stubber(batch)
    config = load_config(BATCH_ENVIRONMENT | {"PUSHTRAIN_SUBNETS": ",".join(aws.config.subnets)} | {
        "PUSHTRAIN_SECURITY_GROUPS": ",".join(aws.config.security_groups)
    })  # fmt: skip
    aws.clients = Clients(ecs=aws.ecs, s3=aws.s3, ecr=aws.ecr, batch=batch)
    with stub:
        yield aws, config, stub
        stub.assert_no_pending_responses()


def expected_submit(run_id: str) -> dict[str, Any]:
    environment = [
        {"name": "TRAINER_ATTEMPT", "value": "1"},
        {"name": "TRAINER_EPOCHS", "value": "12"},
        {"name": "TRAINER_GIT_SHA", "value": GIT_SHA},
        {"name": "TRAINER_IMAGE_DIGEST", "value": DIGEST},
        {"name": "TRAINER_RUN_ID", "value": run_id},
    ]
    return {
        "jobName": f"{run_id}-a1",
        "jobQueue": QUEUE,
        "jobDefinition": PINNED_ARN,
        "nodeOverrides": {
            "numNodes": 2,
            "nodePropertyOverrides": [{"targetNodes": "0:", "containerOverrides": {"environment": environment}}],
        },
        "tags": {
            "pushtrain:run-id": run_id,
            "pushtrain:attempt": "1",
            "pushtrain:image-digest": DIGEST,
            "pushtrain:git-sha": GIT_SHA,
        },
        "propagateTags": True,
    }


def run_id_for(config: Config) -> str:
    from trigger.runs import retrain_run_id

    return retrain_run_id(REQUEST["request_id"], DIGEST, REQUEST["params"])


def expect_pinning(stub: Stubber) -> None:
    """DescribeJobDefinitions finds Terraform's base only, so the digest's revision is registered."""
    stub.add_response(
        "describe_job_definitions",
        {"jobDefinitions": [base_definition()]},
        {"jobDefinitionName": FAMILY, "status": "ACTIVE"},
    )
    pinned = base_definition(image=f"{REPO}@{DIGEST}")
    register = {k: pinned[k] for k in ("jobDefinitionName", "type", "nodeProperties", "retryStrategy", "timeout")}
    register |= {"propagateTags": True, "platformCapabilities": ["EC2"], "tags": {"pushtrain:image-digest": DIGEST}}
    stub.add_response(
        "register_job_definition",
        {"jobDefinitionName": FAMILY, "jobDefinitionArn": PINNED_ARN, "revision": 2},
        register,
    )


def test_a_multi_node_request_pins_the_digest_and_submits_one_job_then_a_duplicate_submits_none(
    batch_aws: tuple[Emulated, Config, Stubber],
) -> None:
    aws, config, stub = batch_aws
    run_id = run_id_for(config)
    # GIVEN only Terraform's base revision of the job definition family
    expect_pinning(stub)
    stub.add_response(
        "submit_job", {"jobArn": JOB_ARN, "jobName": f"{run_id}-a1", "jobId": "4c7599ae"}, expected_submit(run_id)
    )
    # WHEN the retrain workflow asks for two nodes
    answer = handle(REQUEST, config, aws.clients, clock=clock, sleep=no_sleep)
    # THEN one job runs the pinned revision, and the run record names it
    assert (answer["run_id"], answer["job_arn"], answer["status_key"]) == (run_id, JOB_ARN, record_key(run_id))
    record = aws.record(run_id)
    assert (record["task_arn"], record["compute"], record["nodes"], record["state"]) == (JOB_ARN, "batch", 2, "queued")
    assert aws.tasks() == []  # nothing on ECS
    # WHEN the same request arrives again THEN nothing is described, registered or submitted
    again = handle(REQUEST, config, aws.clients, clock=clock, sleep=no_sleep)
    assert again["job_arn"] == JOB_ARN


def plant_claim(aws: Emulated, run_id: str, *, claimed_at: datetime) -> RunSpec:
    """A queued Batch run record claimed at `claimed_at`, with no job recorded."""
    spec = RunSpec(run_id=run_id, attempt=1, digest=DIGEST, git_sha=GIT_SHA, params={"epochs": 12})
    record = new_record(spec, "retrain", claimed_at) | {"compute": "batch", "nodes": 2}
    aws.s3.put_object(Bucket=BUCKET, Key=record_key(run_id), Body=json.dumps(record).encode())
    return spec


def test_a_start_claimed_moments_ago_raises_in_flight_and_submits_nothing(
    batch_aws: tuple[Emulated, Config, Stubber],
) -> None:
    aws, config, _stub = batch_aws
    run_id = run_id_for(config)
    # GIVEN another invocation claimed this run's start 10 s ago and has not recorded a job yet
    plant_claim(aws, run_id, claimed_at=clock() - timedelta(seconds=10))
    # WHEN the request is delivered again THEN it raises the retryable in-flight error; no ListJobs, no
    # SubmitJob (none stubbed), and the claim is left to its holder
    with pytest.raises(StartInFlightError, match="is in flight"):
        handle(REQUEST, config, aws.clients, clock=clock, sleep=no_sleep)
    assert aws.record(run_id)["task_arn"] is None


def test_a_start_that_died_after_submitting_adopts_its_job_instead_of_submitting_twice(
    batch_aws: tuple[Emulated, Config, Stubber],
) -> None:
    aws, config, stub = batch_aws
    run_id = run_id_for(config)
    # GIVEN an expired claim (queued record, no job) whose SubmitJob went through before the function died
    spec = plant_claim(aws, run_id, claimed_at=clock() - timedelta(hours=1))
    stub.add_response(
        "list_jobs",
        {"jobSummaryList": [{"jobArn": JOB_ARN, "jobId": "4c7599ae", "jobName": job_name(spec), "status": "RUNNING"}]},
        {"jobQueue": QUEUE, "filters": [{"name": "JOB_NAME", "values": [f"{run_id}-a1"]}]},
    )
    # WHEN Lambda retries the request THEN the job found by name is recorded; no second SubmitJob (none stubbed)
    answer = handle(REQUEST, config, aws.clients, clock=clock, sleep=no_sleep)
    assert answer["job_arn"] == JOB_ARN
    assert aws.record(run_id)["task_arn"] == JOB_ARN


# --- a job that failed for good ---------------------------------------------------------------------------


def described_job(event: dict[str, Any], **changes: Any) -> dict[str, Any]:
    """DescribeJobs' entry for the event's job, as Batch describes it (with `changes`)."""
    detail = event["detail"]
    job = {
        "jobArn": detail["jobArn"],
        "jobName": detail["jobName"],
        "jobId": detail["jobId"],
        "jobQueue": detail["jobQueue"],
        "status": detail["status"],
        "statusReason": detail["statusReason"],
        "attempts": detail["attempts"],
        "createdAt": detail["createdAt"],
        "startedAt": detail["attempts"][0]["startedAt"],
        "jobDefinition": detail["jobDefinition"],
        "tags": dict(detail["tags"]),
    }
    return job | changes


@pytest.fixture
def failed_job(aws: Emulated) -> Iterator[tuple[Emulated, Config, Stubber, dict[str, Any], str]]:
    """A running Batch run whose record names the sample event's job; Batch is a Stubber."""
    event = load_event("batch_job_failed.json")
    run_id = event["detail"]["tags"]["pushtrain:run-id"]
    record = {"run_id": run_id, "state": "running", "attempt": 1, "task_arn": event["detail"]["jobArn"], "history": []}
    aws.s3.put_object(Bucket=BUCKET, Key=record_key(run_id), Body=json.dumps(record).encode())
    batch = client("batch")
    aws.clients = Clients(ecs=aws.ecs, s3=aws.s3, ecr=aws.ecr, batch=batch)
    with Stubber(batch) as stub:
        yield aws, load_config(BATCH_ENVIRONMENT), stub, event, run_id
        stub.assert_no_pending_responses()


def test_a_batch_job_failure_batch_confirms_marks_its_run_failed_once(
    failed_job: tuple[Emulated, Config, Stubber, dict[str, Any], str],
) -> None:
    aws, config, stub, event, run_id = failed_job
    # GIVEN Batch describes the job as the event does
    stub.add_response("describe_jobs", {"jobs": [described_job(event)]}, {"jobs": [event["detail"]["jobArn"]]})
    # WHEN Batch reports the job FAILED
    decision = handle(event, config, aws.clients, clock=clock, sleep=no_sleep)
    # THEN the record says failed, with Batch's reason; a second delivery changes nothing (and asks nothing)
    assert decision["outcome"] == "marked-failed"
    stored = aws.record(run_id)
    assert (stored["state"], stored["reason"]) == ("failed", "Batch job FAILED: Essential container in task exited")
    again = handle(event, config, aws.clients, clock=clock, sleep=no_sleep)
    assert again["outcome"] == "no-restart"
    assert aws.record(run_id)["history"] == stored["history"]


@pytest.mark.parametrize(
    ("described", "why"),
    [
        (None, "Batch does not know job"),
        ({"status": "RUNNING"}, "status: event 'FAILED', Batch 'RUNNING'"),
        ({"tags": {"pushtrain:run-id": "retrain-99999999999-0123abcd"}}, "pushtrain:run-id: event"),
        (
            {"attempts": [{"container": {"exitCode": 73}, "startedAt": 1, "stoppedAt": 2, "statusReason": "x"}]},
            "exited 73: a duplicate trainer stood down",
        ),
    ],
)
def test_a_batch_failure_batch_does_not_confirm_leaves_the_run_alone(
    failed_job: tuple[Emulated, Config, Stubber, dict[str, Any], str], described: dict[str, Any] | None, why: str
) -> None:
    aws, config, stub, event, run_id = failed_job
    # GIVEN DescribeJobs contradicts the event (or shows a duplicate trainer's exit 73)
    jobs = [] if described is None else [described_job(event, **described)]
    stub.add_response("describe_jobs", {"jobs": jobs}, {"jobs": [event["detail"]["jobArn"]]})
    before = aws.record(run_id)
    # WHEN the FAILED event arrives THEN it is a logged no-op and the record is untouched
    decision = handle(event, config, aws.clients, clock=clock, sleep=no_sleep)
    assert decision["outcome"] == "unverified"
    assert why in decision["reason"]
    assert aws.record(run_id) == before


def test_a_batch_event_from_another_queue_is_rejected(aws: Emulated) -> None:
    event = load_event("batch_job_failed.json")
    event["detail"]["jobQueue"] = event["detail"]["jobQueue"].replace(QUEUE, "someone-elses")
    with pytest.raises(InvalidEventError, match="is not our queue"):
        handle(event, load_config(BATCH_ENVIRONMENT), aws.clients, clock=clock, sleep=no_sleep)


# --- reconcile: a multi-node run whose start or end was lost is repaired through Batch, never ECS ---------


def test_reconcile_submits_a_lost_batch_start_to_batch_not_to_ecs(batch_aws: tuple[Emulated, Config, Stubber]) -> None:
    from trigger.reconcile import repair_run

    aws, config, stub = batch_aws
    run_id = run_id_for(config)
    # GIVEN a multi-node run whose start claimed the record an hour ago and died before SubmitJob
    plant_claim(aws, run_id, claimed_at=clock() - timedelta(hours=1))
    stub.add_response(
        "list_jobs",
        {"jobSummaryList": []},
        {"jobQueue": QUEUE, "filters": [{"name": "JOB_NAME", "values": [f"{run_id}-a1"]}]},
    )
    expect_pinning(stub)
    stub.add_response(
        "submit_job", {"jobArn": JOB_ARN, "jobName": f"{run_id}-a1", "jobId": "4c7599ae"}, expected_submit(run_id)
    )
    # WHEN reconcile repairs it
    outcome = repair_run(aws.clients, config, run_id, now=clock(), dry_run=False, sleep=no_sleep)
    # THEN one Batch job is submitted and recorded; nothing is started on ECS
    assert outcome is not None
    assert (outcome.decision, outcome.outcome, outcome.task_arn) == ("repair", "retried-start", JOB_ARN)
    assert aws.record(run_id)["task_arn"] == JOB_ARN
    assert aws.tasks() == []


def test_reconcile_dry_run_of_a_lost_batch_start_calls_nothing(batch_aws: tuple[Emulated, Config, Stubber]) -> None:
    from trigger.reconcile import repair_run

    aws, config, _stub = batch_aws
    run_id = run_id_for(config)
    plant_claim(aws, run_id, claimed_at=clock() - timedelta(hours=1))
    outcome = repair_run(aws.clients, config, run_id, now=clock(), dry_run=True, sleep=no_sleep)
    assert outcome is not None and outcome.outcome == "would-start"  # and no Batch call (none stubbed)


@pytest.mark.parametrize(
    ("described", "outcome", "state"),
    [
        ({}, "marked-failed", "failed"),  # Batch says FAILED: its event was lost
        (None, "marked-failed", "failed"),  # Batch forgot the job: it cannot end any other way now
        ({"status": "RUNNING"}, None, "running"),  # alive: nothing to do
        ({"status": "SUCCEEDED"}, None, "running"),  # the trainer writes its own success
    ],
)
def test_reconcile_asks_batch_about_a_multi_node_runs_job(
    failed_job: tuple[Emulated, Config, Stubber, dict[str, Any], str],
    described: dict[str, Any] | None,
    outcome: str | None,
    state: str,
) -> None:
    from trigger.reconcile import repair_run

    aws, config, stub, event, run_id = failed_job
    # GIVEN a running multi-node run whose record names its job
    record = aws.record(run_id) | {"compute": "batch", "nodes": 2}
    aws.s3.put_object(Bucket=BUCKET, Key=record_key(run_id), Body=json.dumps(record).encode())
    jobs = [] if described is None else [described_job(event, **described)]
    stub.add_response("describe_jobs", {"jobs": jobs}, {"jobs": [event["detail"]["jobArn"]]})
    if outcome and described is not None:  # the FAILED event's own check, as if the event had come
        stub.add_response("describe_jobs", {"jobs": jobs}, {"jobs": [event["detail"]["jobArn"]]})
    # WHEN reconcile looks at the run
    repaired = repair_run(aws.clients, config, run_id, now=clock(), dry_run=False, sleep=no_sleep)
    # THEN Batch (never ECS) decides: failed when it says so or forgot the job, untouched otherwise
    assert (repaired.outcome if repaired else None) == outcome
    assert aws.record(run_id)["state"] == state
    assert aws.tasks() == []


@pytest.mark.parametrize("nodes", ["many", 1, 17, True, None, 2.0])
def test_reconcile_names_a_broken_node_count_and_starts_nothing(
    batch_aws: tuple[Emulated, Config, Stubber], nodes: object
) -> None:
    from trigger.errors import RecordConflictError
    from trigger.reconcile import repair_run

    aws, config, _stub = batch_aws
    run_id = run_id_for(config)
    # GIVEN a lost multi-node start whose record's node count was damaged
    plant_claim(aws, run_id, claimed_at=clock() - timedelta(hours=1))
    record = aws.record(run_id) | {"nodes": nodes}
    aws.s3.put_object(Bucket=BUCKET, Key=record_key(run_id), Body=json.dumps(record).encode())
    # WHEN reconcile repairs it THEN one error names the field (reconcile reports it and goes on); no Batch call
    with pytest.raises(RecordConflictError, match="nodes="):
        repair_run(aws.clients, config, run_id, now=clock(), dry_run=False, sleep=no_sleep)


@pytest.mark.parametrize(("field", "value"), [("attempt", "1"), ("attempt", 0), ("attempt", True), ("image_digest", 7)])
def test_a_damaged_record_names_its_field_instead_of_crashing(field: str, value: object) -> None:
    from trigger.errors import RecordConflictError
    from trigger.records import spec_of

    spec = RunSpec(run_id="push-0123456789abcdef0123", attempt=1, digest=DIGEST, git_sha=GIT_SHA, params={})
    record = new_record(spec, "push", clock()) | {field: value}
    with pytest.raises(RecordConflictError, match=f"{field}="):
        spec_of(record)


@pytest.mark.parametrize("nodes", [5, 16])
def test_more_nodes_than_the_compute_environment_holds_are_refused_before_anything_is_written(
    batch_aws: tuple[Emulated, Config, Stubber], nodes: int
) -> None:
    # GIVEN a stack whose Batch compute environment holds 4 nodes (var.batch.max_nodes; the stub answers no call)
    aws, config, _stub = batch_aws
    assert config.batch_max_nodes == 4
    # WHEN a request asks for more THEN it is refused, naming the limit, and no record, claim or job exists
    with pytest.raises(InvalidEventError, match=rf"nodes={nodes} is more than the 4 nodes .*var\.batch\.max_nodes"):
        handle(REQUEST | {"nodes": nodes}, config, aws.clients, clock=clock, sleep=no_sleep)
    assert aws.s3.list_objects_v2(Bucket=BUCKET).get("KeyCount", 0) == 0


@pytest.mark.parametrize(
    ("change", "named"),
    [
        ({"PUSHTRAIN_BATCH_MAX_NODES": ""}, "PUSHTRAIN_BATCH_MAX_NODES=''"),
        ({"PUSHTRAIN_BATCH_MAX_NODES": "17"}, "PUSHTRAIN_BATCH_MAX_NODES='17'"),
        ({"PUSHTRAIN_BATCH_JOB_QUEUE": "", "PUSHTRAIN_BATCH_JOB_DEFINITION": ""}, "PUSHTRAIN_BATCH_MAX_NODES is set"),
    ],
)
def test_the_node_limit_comes_with_the_queue(change: dict[str, str], named: str) -> None:
    with pytest.raises(ConfigError, match=re.escape(named)):
        load_config(BATCH_ENVIRONMENT | change)
