"""Conformance suite: the start protocol (trigger.starts) launches a run once on every launcher.

The same attacks, parameterised over the launchers (trigger.launcher): ECS on Fargate, ECS on the GPU
capacity providers (EC2), and AWS Batch multi-node jobs. They run against one emulated AWS, moto's
ThreadedMotoServer (conftest.moto_endpoint), which starts a task per RunTask (it ignores clientToken)
and a job per SubmitJob (which has no token): only the trigger's own guards keep a run to one launch.

- N = 2 and 32 separate processes start one run at the same moment -> one launch (the claim; 8 processes
  run the whole handler in test_concurrent_deliveries);
- a launch whose answer is lost (the emulator launches, then answers 500), through the real botocore
  clients built with the trigger's own retry configuration (trigger.aws.build_clients) -> one launch
  (the launch clients resend nothing; the launch is then adopted by name);
- a slow launch overtaken by an invocation whose clock runs an hour fast -> one launch (claim ages are
  S3's: the record's LastModified against the response's Date);
- a registration that fails releases its claim: Lambda's first retry (no wait) launches.

Each guard was removed in turn and this suite failed (lambda/README.md, "conformance").
"""

from __future__ import annotations

import functools
import json
import multiprocessing
import threading
import urllib.request
from collections import Counter
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import delivery_worker
import pytest
from botocore.exceptions import ClientError
from moto.batch.responses import BatchResponse
from moto.core.exceptions import JsonRESTError
from moto.ec2 import utils as ec2_utils
from moto.ecs.responses import EC2ContainerServiceResponse
from trigger.aws import Clients
from trigger.config import Config, load_config
from trigger.errors import StartInFlightError
from trigger.runs import RunSpec
from trigger.starts import start_run
from trigger_testkit import ACCOUNT, DIGEST, GIT_SHA, REGION, Emulated, no_sleep

LAUNCHERS = ("fargate", "gpu", "batch")
GPU_FAMILY, GPU_PROVIDER = "pushtrain-trainer-gpu", "pushtrain-gpu"
QUEUE, JOB_DEFINITION = "pushtrain-mnp", "pushtrain-trainer-mnp"
REPOSITORY_URI = f"{ACCOUNT}.dkr.ecr.{REGION}.amazonaws.com/pushtrain-trainer"


class Account:
    """A fresh emulated account with one launcher's capacity deployed, and how to count its launches."""

    def __init__(self, endpoint: str, kind: str) -> None:
        urllib.request.urlopen(urllib.request.Request(f"{endpoint}/moto-api/reset", method="POST"))  # noqa: S310 (our server)
        self.endpoint, self.kind = endpoint, kind
        session = delivery_worker.SESSION
        made = {s: session.client(s, endpoint_url=endpoint) for s in ("ecs", "ecr", "ec2", "batch", "iam")}
        made["s3"] = delivery_worker.clients_at(endpoint).s3  # path-style addressing
        self.aws = Emulated(make=made.__getitem__)
        self.ecs, self.batch = made["ecs"], made["batch"]
        environment = self.aws.environment()
        if kind == "gpu":
            environment |= {"PUSHTRAIN_GPU_TASK_FAMILY": GPU_FAMILY, "PUSHTRAIN_GPU_CAPACITY_PROVIDER": GPU_PROVIDER}
            self._deploy_gpu(session)
        if kind == "batch":
            environment |= {
                "PUSHTRAIN_BATCH_JOB_QUEUE": QUEUE, "PUSHTRAIN_BATCH_JOB_DEFINITION": JOB_DEFINITION,
                "PUSHTRAIN_BATCH_MAX_NODES": "4",
            }  # fmt: skip
            self._deploy_batch(made["iam"])
        self.environment = environment
        self.config: Config = load_config(environment)

    def _deploy_gpu(self, session: Any) -> None:
        base = self.ecs.describe_task_definition(taskDefinition=self.aws.base_arn)["taskDefinition"]
        (trainer,) = base["containerDefinitions"]
        trainer.update(memory=2048, resourceRequirements=[{"type": "GPU", "value": "1"}])
        self.ecs.register_task_definition(
            family=GPU_FAMILY,
            networkMode="awsvpc",
            requiresCompatibilities=["EC2"],
            cpu="1024",
            memory="2048",
            containerDefinitions=[trainer],
        )
        ec2 = session.resource("ec2", endpoint_url=self.endpoint)
        (instance,) = ec2.create_instances(ImageId="ami-12c6146b", MinCount=1, MaxCount=1, InstanceType="g6.xlarge")
        document = json.dumps(ec2_utils.generate_instance_identity_document(instance))
        self.ecs.register_container_instance(cluster="pushtrain", instanceIdentityDocument=document)

    def _deploy_batch(self, iam: Any) -> None:
        role = iam.create_role(RoleName="pushtrain-batch", AssumeRolePolicyDocument="{}")["Role"]["Arn"]
        environment = self.batch.create_compute_environment(
            computeEnvironmentName="pushtrain-mnp", type="UNMANAGED", state="ENABLED", serviceRole=role
        )
        self.batch.create_job_queue(
            jobQueueName=QUEUE,
            state="ENABLED",
            priority=1,
            computeEnvironmentOrder=[{"order": 1, "computeEnvironment": environment["computeEnvironmentArn"]}],
        )
        container = {
            "image": f"{REPOSITORY_URI}:base-revision-not-run",
            "command": ["torchrun"],
            "resourceRequirements": [{"type": "VCPU", "value": "4"}, {"type": "MEMORY", "value": "14336"}],
        }
        self.batch.register_job_definition(
            jobDefinitionName=JOB_DEFINITION,
            type="multinode",
            nodeProperties={
                "numNodes": 2,
                "mainNode": 0,
                "nodeRangeProperties": [{"targetNodes": "0:", "container": container}],
            },
            platformCapabilities=["EC2"],
        )

    def spec(self, request_id: str = "4242") -> RunSpec:
        compute = {"fargate": "cpu", "gpu": "gpu", "batch": "batch"}[self.kind]
        return RunSpec(
            run_id=f"retrain-{request_id}-0123abcd",
            attempt=1,
            digest=DIGEST,
            git_sha=GIT_SHA,
            params={"epochs": 2},
            compute=compute,
            nodes=2 if compute == "batch" else 1,
        )

    def launches(self, spec: RunSpec) -> list[str]:
        """Every task or job launched for the run (ECS: by startedBy; Batch: by job name), in any state."""
        if self.kind == "batch":
            jobs = self.batch.list_jobs(jobQueue=QUEUE, filters=[{"name": "JOB_NAME", "values": [f"{spec.run_id}-a1"]}])
            return [job["jobArn"] for job in jobs["jobSummaryList"]]
        return [
            arn
            for status in ("RUNNING", "STOPPED")
            for arn in self.ecs.list_tasks(cluster="pushtrain", startedBy=spec.run_id, desiredStatus=status)["taskArns"]
        ]

    def record(self, spec: RunSpec) -> dict[str, Any]:
        return self.aws.record(spec.run_id)

    def clients(self) -> Clients:
        """New clients, exactly as the trigger configures them (retries, timeouts, launch clients)."""
        return delivery_worker.trigger_clients_at(self.endpoint)


@pytest.fixture(params=LAUNCHERS)
def account(request: pytest.FixtureRequest, moto_endpoint: str) -> Iterator[Account]:
    made = Account(moto_endpoint, request.param)
    yield made
    made.aws.close()


@functools.cache
def fork_server() -> Any:
    context = multiprocessing.get_context("forkserver")
    context.set_forkserver_preload(["delivery_worker"])
    return context


def start_at_once(account: Account, specs: list[RunSpec]) -> list[dict[str, Any]]:
    """Run the start protocol for each spec in its own process, all released together; each outcome."""
    context = fork_server()
    barrier = context.Barrier(len(specs))
    results = context.Queue()
    processes = [
        context.Process(
            target=delivery_worker.start, args=(account.endpoint, account.environment, spec, barrier, results)
        )
        for spec in specs
    ]
    for process in processes:
        process.start()
    outcomes = [results.get(timeout=300) for _ in processes]
    for process in processes:
        process.join(timeout=30)
    assert [p.exitcode for p in processes] == [0] * len(processes)
    return outcomes


# --- the attacks -----------------------------------------------------------------------------------------


def test_simultaneous_starts_in_2_and_32_processes_launch_once(account: Account) -> None:
    # one run per burst: the smallest race, and 32 (the product's promise) once per launcher
    for deliveries in (2, 32):
        spec = account.spec(request_id=f"burst{deliveries}")
        # GIVEN one run started N times at the same moment, from N processes
        outcomes = start_at_once(account, [spec] * deliveries)
        # THEN one launched; the others saw a duplicate or a start in flight (Lambda retries those)
        counts = Counter(o["outcome"] for o in outcomes)
        assert counts["started"] == 1, (deliveries, outcomes)
        assert set(counts) <= {"started", "duplicate", "in-flight"}, (deliveries, outcomes)
        (launch,) = account.launches(spec)
        assert account.record(spec)["task_arn"] == launch
        # AND the retry of a start refused as in flight is a duplicate of that launch
        again = start_run(account.clients(), account.config, spec, "retrain", sleep=no_sleep)
        assert (again.outcome, again.task_arn) == ("duplicate", launch)
        assert account.launches(spec) == [launch]


class AnswerLostError(JsonRESTError):
    code = 500

    def __init__(self) -> None:
        super().__init__("ServerException", "injected: the launch went through and its answer was lost")


@pytest.fixture
def lose_first_launch_answer() -> Iterator[dict[str, int]]:
    """The emulator launches (RunTask, SubmitJob), then answers the first launch with a 500, as a
    lost answer looks to botocore (a 5xx it would retry)."""
    calls = {"n": 0}
    originals = {
        EC2ContainerServiceResponse: EC2ContainerServiceResponse.run_task,
        BatchResponse: BatchResponse.submitjob,
    }

    def lossy(original: Any) -> Any:
        def launch(self: Any) -> Any:
            answer = original(self)
            calls["n"] += 1
            if calls["n"] == 1:
                raise AnswerLostError
            return answer

        return launch

    EC2ContainerServiceResponse.run_task = lossy(originals[EC2ContainerServiceResponse])  # type: ignore[method-assign]
    BatchResponse.submitjob = lossy(originals[BatchResponse])  # type: ignore[method-assign]
    try:
        yield calls
    finally:
        EC2ContainerServiceResponse.run_task = originals[EC2ContainerServiceResponse]  # type: ignore[method-assign]
        BatchResponse.submitjob = originals[BatchResponse]  # type: ignore[method-assign]


def test_a_launch_whose_answer_is_lost_launches_once_and_is_adopted(
    account: Account, lose_first_launch_answer: dict[str, int]
) -> None:
    spec = account.spec()
    # WHEN the one launch call is executed but its answer lost, through the trigger's own clients
    outcome = start_run(account.clients(), account.config, spec, "retrain", sleep=no_sleep)
    # THEN nothing resent it (one launch call), and the launch found by name is recorded
    assert lose_first_launch_answer["n"] == 1
    (launch,) = account.launches(spec)
    assert (outcome.outcome, outcome.task_arn) == ("recovered", launch)
    assert account.record(spec)["task_arn"] == launch


def an_hour_fast() -> datetime:
    return datetime.now(UTC) + timedelta(hours=1)


def test_a_slow_launch_is_not_taken_over_by_an_invocation_with_a_fast_clock(account: Account) -> None:
    spec = account.spec()
    first_clients, released, launching = account.clients(), threading.Event(), threading.Event()
    operation = "before-call.batch.SubmitJob" if account.kind == "batch" else "before-call.ecs.RunTask"

    def slow(**_: Any) -> None:
        launching.set()
        assert released.wait(timeout=60)

    first_clients.launch_client((account.kind == "batch" and "batch") or "ecs").meta.events.register(operation, slow)
    results: list[Any] = []
    first = threading.Thread(target=lambda: results.append(start_run(first_clients, account.config, spec, "retrain")))
    # GIVEN a start that has claimed the run and is inside its launch call
    first.start()
    assert launching.wait(timeout=60)
    try:
        # WHEN reconcile, run by hand on a laptop whose clock is an hour fast, meets the claim
        with pytest.raises(StartInFlightError, match="in flight"):
            start_run(account.clients(), account.config, spec, "retrain", clock=an_hour_fast, sleep=no_sleep)
    finally:
        released.set()
        first.join(timeout=60)
    # THEN the claim, young by S3's clock, was left alone: one launch, the first start's
    (launch,) = account.launches(spec)
    assert results and results[0].task_arn == launch
    assert account.record(spec)["task_arn"] == launch


def test_a_failed_registration_releases_its_claim_so_the_first_retry_launches(account: Account) -> None:
    spec = account.spec()
    clients = account.clients()
    service, operation = (
        ("batch", "RegisterJobDefinition") if account.kind == "batch" else ("ecs", "RegisterTaskDefinition")
    )
    failures = {"n": 0}

    def refuse(**_: Any) -> None:
        if failures["n"] == 0:
            failures["n"] += 1
            raise ClientError({"Error": {"Code": "ServerException", "Message": "injected"}}, operation)

    getattr(clients, service).meta.events.register(f"before-call.{service}.{operation}", refuse)
    # GIVEN a start whose registration of the digest's pinned revision failed
    with pytest.raises(ClientError, match="injected"):
        start_run(clients, account.config, spec, "retrain", sleep=no_sleep)
    assert account.launches(spec) == []
    # WHEN Lambda retries at once (no claim has expired) THEN it registers and launches
    retried = start_run(clients, account.config, spec, "retrain", sleep=no_sleep)
    (launch,) = account.launches(spec)
    assert (retried.outcome, retried.task_arn, retried.registered_task_definition) == ("retried-start", launch, True)
