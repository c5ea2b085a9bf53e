"""Multi-node runs on AWS Batch: the Batch launcher (trigger.launcher) for requests with `nodes > 1`.

Exactly once without a client token. RunTask takes a clientToken; Batch's SubmitJob takes none, so two
SubmitJob calls start two jobs, and botocore's own retries would resend one after a 5xx or a read timeout
(the SubmitJob client makes one attempt only, trigger.aws). What keeps a run to one job is the start
protocol every launcher shares (trigger.starts): the run record's claim, and `find_existing`, which finds
a job named `<run_id>-a<attempt>` in the queue (ListJobs, every status) after any failed or lost start.

Pinning is trigger.taskdef's, as for ECS: one job definition revision per image digest, a copy of the
revision Terraform made (`base-revision-not-run`) with every node's image set to repo@sha256:...

Spot and lost hosts: Batch runs no multi-node job on Spot. A lost host fails the attempt and the job
definition's retry strategy (terraform/batch.tf) starts the whole job again, which resumes from the
checkpoint; the trainer counts the attempts in the record. When Batch gives up, its "Batch Job State
Change" FAILED event (trigger.events) reaches the trigger (trigger.flows.handle_batch_job_event), which
marks the run `failed` once DescribeJobs confirms it (trigger.stops.unverified_job_failure).
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Any

from trigger.config import Config
from trigger.launcher import Launched
from trigger.runs import RunSpec, container_environment, resource_tags
from trigger.s3json import Sleep
from trigger.taskdef import ensure_job_definition


def job_name(spec: RunSpec) -> str:
    """`<run_id>-a<attempt>`: what a retried start looks for in the queue (Batch allows 128 characters)."""
    return f"{spec.run_id}-a{spec.attempt}"


def submit_job_request(spec: RunSpec, config: Config, job_definition_arn: str) -> dict[str, Any]:
    """The SubmitJob request for one run on `spec.nodes` nodes (pure): TRAINER_* on every node, tags on the job."""
    return {
        "jobName": job_name(spec),
        "jobQueue": config.batch_job_queue,
        "jobDefinition": job_definition_arn,
        "nodeOverrides": {
            "numNodes": spec.nodes,
            "nodePropertyOverrides": [
                {"targetNodes": "0:", "containerOverrides": {"environment": container_environment(spec)}}
            ],
        },
        "tags": {tag["key"]: tag["value"] for tag in resource_tags(spec)},
        "propagateTags": True,
    }


def find_job(batch: Any, config: Config, name: str) -> str | None:
    """The ARN of a job of that name in our queue, in any status (a JOB_NAME filter lists them all)."""
    token: str | None = None
    while True:
        page = batch.list_jobs(
            jobQueue=config.batch_job_queue,
            filters=[{"name": "JOB_NAME", "values": [name]}],
            **({"nextToken": token} if token else {}),
        )
        for job in page.get("jobSummaryList") or []:
            if job.get("jobName") == name and job.get("jobArn"):
                return str(job["jobArn"])
        token = page.get("nextToken")
        if not token:
            return None


@dataclass(frozen=True)
class BatchLauncher:
    """Submits a multi-node job to PUSHTRAIN_BATCH_JOB_QUEUE."""

    batch: Any
    submit_client: Any  # SubmitJob's own client (trigger.aws.Clients.launch_client: no automatic retries)
    s3: Any
    config: Config
    now: datetime
    sleep: Sleep

    def find_existing(self, spec: RunSpec) -> str | None:
        return find_job(self.batch, self.config, job_name(spec))

    def launch(self, spec: RunSpec) -> Launched:
        definition, registered = ensure_job_definition(
            self.batch, self.s3, self.config, spec.digest, self.now, sleep=self.sleep
        )
        job_arn = str(self.submit_client.submit_job(**submit_job_request(spec, self.config, definition))["jobArn"])
        return Launched(job_arn, None, definition, registered)
