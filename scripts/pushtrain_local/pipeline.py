"""The local pipeline: pushtrain's real trigger and trainer against an AWS emulated by moto.

`Pipeline` holds one provisioned emulation and the steps of the chain (push an image, deliver an
event to the trigger, run the task it started); the scenarios of `make demo` and the end-to-end tests
are short compositions of those steps (`pushtrain_local.scenarios`). Every step reports what it did through `Reporter`.
"""

from __future__ import annotations

import hashlib
import importlib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator, Mapping
from contextlib import contextmanager, redirect_stdout
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from botocore.exceptions import ClientError
from tfread.hcl import Unknown
from tfread.terraform import Stack, TerraformModule, rule_targets

from pushtrain_local import events, runner
from pushtrain_local.emulator import (
    Emulator,
    Resources,
    environ,
    provision,
    register_base_task_definition,
    report_stop,
    running,
)

REPO = Path(__file__).resolve().parents[2]
DATASET_KEY = "datasets/cifar-10-python.tar.gz"
TASK_TIMEOUT_S = 1800  # a demo task takes seconds; this only stops a hung one from hanging the tests
EXIT_INTERRUPTED = 75  # docs/contracts.md: SIGTERM -> checkpoint -> status interrupted -> 75


class PipelineError(RuntimeError):
    """A step of the local pipeline failed; the message says which and why (never a bare stack trace)."""


@dataclass(frozen=True)
class DemoSettings:
    """The demo's own task parameters and data size: small, so the whole chain runs in about a minute on 2 cores.

    They are layered over Terraform's base task environment in the emulated base task definition (the
    demo prints them); Terraform's own defaults train the full recipe on the real CIFAR-10.
    """

    train_images: int = 2000  # airbench reaches ~99 % on these in 2 epochs of batch 64 (~10 s on 2 cores)
    test_images: int = 500
    task_parameters: Mapping[str, str] = field(
        default_factory=lambda: {"TRAINER_BATCH_SIZE": "64", "TRAINER_EPOCHS": "2", "TRAINER_PROGRESS": "json"}
    )
    workdir: Path = REPO / ".pushtrain" / "demo"
    runner: str = "local"  # "local" (a process) or "docker" (the real image)
    terraform_dir: Path = REPO / "terraform"
    sample_events: Path = REPO / "lambda" / "tests" / "events"
    dockerfile: Path = REPO / "trainer" / "Dockerfile"


class Reporter:
    """Prints the pipeline's steps; tests pass `quiet=True` and read the results instead."""

    def __init__(self, quiet: bool = False) -> None:
        self.quiet = quiet
        self.count = 0

    def step(self, title: str) -> None:
        self.count += 1
        self._print(f"\n[{self.count}] {title}")

    def info(self, text: str) -> None:
        self._print(f"    {text}")

    def output(self, line: str) -> None:
        if " INFO botocore." not in line:  # boto's "found credentials" chatter says nothing about the run
            self._print(f"    | {_compact(line)}")

    def _print(self, text: str) -> None:
        if not self.quiet:
            print(text, flush=True)


def _compact(line: str) -> str:
    """A JSON progress line as `key=value` pairs; anything else unchanged."""
    try:
        record = json.loads(line)
    except ValueError:
        return line
    if not isinstance(record, dict):
        return line
    return " ".join(f"{k}={_short(v)}" for k, v in record.items())


def _short(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:.4g}"
    return json.dumps(value) if isinstance(value, (dict, list)) else str(value)


@dataclass(frozen=True)
class Pushed:
    """An image pushed to the emulated ECR."""

    tag: str
    digest: str
    event: dict[str, Any]


@dataclass
class TaskRun:
    """One started task, as run here."""

    task_arn: str
    run_id: str
    attempt: int
    image: str
    task_definition_arn: str
    exit_code: int | None = None
    output: list[str] = field(default_factory=list)


class LambdaContext:
    """The attributes of Lambda's context object the handler may read."""

    def __init__(self, function_name: str, region: str, account_id: str) -> None:
        self.function_name = function_name
        self.function_version = "$LATEST"
        self.invoked_function_arn = f"arn:aws:lambda:{region}:{account_id}:function:{function_name}"
        self.memory_limit_in_mb = 256
        self.aws_request_id = str(uuid.uuid4())
        self.log_group_name = f"/aws/lambda/{function_name}"
        self.log_stream_name = "local"
        self._deadline = time.monotonic() + 60

    def get_remaining_time_in_millis(self) -> int:
        return max(0, int((self._deadline - time.monotonic()) * 1000))


class Pipeline:
    """One provisioned emulation of the stack, and the steps of the chain."""

    def __init__(self, emulator: Emulator, module: TerraformModule, settings: DemoSettings, reporter: Reporter) -> None:
        self.emulator = emulator
        self.module = module
        self.settings = settings
        self.say = reporter
        self.ecs = emulator.client("ecs")
        self.s3 = emulator.client("s3")
        self.ecr = emulator.client("ecr")
        self.stack: Stack = module.stack(emulator.account_id, emulator.region)
        self.resources: Resources | None = None
        self.patterns: dict[str, dict[str, Any]] = {}
        self.trigger_environment: dict[str, str] = {}
        self.targets = rule_targets(module)
        self._handler: Callable[[dict[str, Any], Any], Any] | None = None
        self._saved_modules: dict[str, Any] = {}

    def close(self) -> None:
        """Put back the modules the fresh handler import replaced (tests share one interpreter)."""
        if self._handler is not None:
            package = self.stack.lambda_handler.split(".", 1)[0]
            for name in [m for m in sys.modules if m.split(".")[0] == package]:
                del sys.modules[name]
            sys.modules.update(self._saved_modules)
            self._handler = None

    # --- 1. provisioning ---------------------------------------------------------------------------

    def provision(self) -> Resources:
        """Create the emulated stack from Terraform's names and the demo's task parameters."""
        names = self.stack.names
        self.say.step("Provision the emulated AWS from terraform/ (moto on " + self.emulator.endpoint + ")")
        environment = {**self.stack.trainer_environment, **self.settings.task_parameters}
        vpc_cidr = self.module.variables.get("vpc_cidr") or "10.42.0.0/16"
        self.resources = provision(self.emulator, self.stack, environment, vpc_cidr=vpc_cidr)
        known = self.resources.known(self.stack)
        resolved = self.module.stack(self.emulator.account_id, self.emulator.region, known)
        self.patterns = self.module.event_patterns(self.emulator.account_id, self.emulator.region, known)
        self.trigger_environment = _resolved_environment(resolved.lambda_environment)
        self.say.info(f"bucket       s3://{names.bucket}")
        self.say.info(f"repository   {self.resources.repository_uri}")
        self.say.info(f"cluster      {names.cluster}   subnets {', '.join(self.resources.subnets)}")
        self.say.info(
            f"task family  {names.task_family} (base revision {_revision(self.resources.base_task_definition_arn)})"
        )
        self.say.info(f"rules        {', '.join(sorted(self.patterns))}")
        overrides = " ".join(f"{k}={v}" for k, v in sorted(self.settings.task_parameters.items()))
        self.say.info(f"demo task parameters over Terraform's (small, for a quick run): {overrides}")
        return self.resources

    def register_base_revision(self, extra: Mapping[str, str]) -> str:
        """A new base revision with `extra` over the demo's environment (what a Terraform change would register)."""
        if self.resources is None:
            raise PipelineError("provision() first")
        self.settings = replace(self.settings, task_parameters={**self.settings.task_parameters, **extra})
        arn = register_base_task_definition(
            self.emulator, self.stack, self.resources.repository_uri, self.task_environment()
        )
        self.say.info(f"registered base revision {_revision(arn)} of {self.stack.names.task_family} with {dict(extra)}")
        return arn

    def upload_dataset(self) -> str:
        """Generate the synthetic CIFAR-10-format dataset (cached by size) and upload it where Terraform points."""
        train, test = self.settings.train_images, self.settings.test_images
        self.say.step(f"Generate a learnable synthetic dataset ({train} train / {test} test images, CIFAR-10 format)")
        cache = self.settings.workdir / "data" / f"synth-{train}-{test}"
        archive = cache / "cifar-10-python.tar.gz"
        if not archive.is_file():
            command = [sys.executable, "-m", "trainer.synth", "--out", str(cache), "--train", str(train)]
            command += ["--test", str(test), "--archive", str(archive)]
            done = subprocess.run(command, capture_output=True, text=True, check=False)
            if done.returncode != 0 or not archive.is_file():
                raise PipelineError(f"trainer.synth failed (exit {done.returncode}): {done.stderr.strip()[-800:]}")
        bucket = self.stack.names.bucket
        self.s3.upload_file(str(archive), bucket, DATASET_KEY)
        uri = f"s3://{bucket}/{DATASET_KEY}"
        self.say.info(f"uploaded {archive.stat().st_size / 1e6:.1f} MB to {uri}")
        return uri

    # --- 2. events and the trigger -----------------------------------------------------------------

    def push_image(self, tag: str | None = None, salt: str = "") -> Pushed:
        """ "Push" an image: an OCI manifest into the emulated ECR under a git-sha tag; its digest is real."""
        # The image workflow tags with the full git sha; a made-up commit stands in for it.
        tag = tag or hashlib.sha1(f"{time.time_ns()}{salt}".encode(), usedforsecurity=False).hexdigest()
        layer = hashlib.sha256(f"pushtrain trainer {tag}".encode()).hexdigest()
        manifest = json.dumps(
            {
                "schemaVersion": 2,
                "mediaType": "application/vnd.oci.image.manifest.v1+json",
                "config": {
                    "mediaType": "application/vnd.oci.image.config.v1+json",
                    "digest": f"sha256:{layer}",
                    "size": 2,
                },
                "layers": [
                    {"mediaType": "application/vnd.oci.image.layer.v1.tar+gzip", "digest": f"sha256:{layer}", "size": 2}
                ],
            },
            separators=(",", ":"),
        )
        digest = "sha256:" + hashlib.sha256(manifest.encode()).hexdigest()  # what a registry names a manifest by
        names = self.stack.names
        self.say.step(f"Push image {names.repository}:{tag} to the emulated ECR")
        image = self.ecr.put_image(
            repositoryName=names.repository, imageManifest=manifest, imageTag=tag, imageDigest=digest
        )["image"]
        digest = image["imageId"]["imageDigest"]
        self.say.info(f"digest {digest}")
        sample = events.find_sample(self.settings.sample_events, events.ECR_DETAIL_TYPE)
        event = events.ecr_push_event(
            sample,
            account_id=self.emulator.account_id,
            region=self.emulator.region,
            repository=names.repository,
            digest=digest,
            tag=tag,
        )
        return Pushed(tag=tag, digest=digest, event=event)

    def route(self, event: Mapping[str, Any]) -> list[str]:
        """The rules from terraform/ that `event` matches and that deliver to the trigger (EventBridge's job)."""
        matched = [name for name in sorted(self.patterns) if events.matches(self.patterns[name], event)]
        to_trigger = [name for name in matched if "aws_lambda_function" in self.targets.get(name, set())]
        described = ", ".join(f"{n} -> {'/'.join(sorted(self.targets.get(n, set())))}" for n in matched) or "no rule"
        self.say.info(f"EventBridge: {event['detail-type']} ({_event_summary(event)}) matches {described}")
        return to_trigger

    def deliver(self, event: Mapping[str, Any]) -> Any:
        """Route `event` like EventBridge and hand it to the trigger; an error when no rule delivers it there."""
        if not self.route(event):
            raise PipelineError(f"no rule in terraform/ delivers this {event['detail-type']} event to the trigger")
        return self.invoke(event)

    def invoke(self, event: Mapping[str, Any]) -> Any:
        """Call the real trigger handler, as Lambda would, and report its answer."""
        handler = self._load_handler()
        context = LambdaContext(self.stack.names.function, self.emulator.region, self.emulator.account_id)
        before = set(self.task_arns())
        log = io.StringIO()
        try:
            with (
                environ(self.trigger_environment),  # what Terraform sets on the function
                redirect_stdout(log),
            ):  # the trigger's one JSON line per decision, shown indented below
                answer = handler(dict(event), context)
        finally:
            for line in log.getvalue().splitlines():
                self.say.output(f"trigger log: {line}")
        started = [arn for arn in self.task_arns() if arn not in before]
        self.say.info(f"tasks started by this event: {len(started)}")
        return answer

    def _load_handler(self) -> Callable[[dict[str, Any], Any], Any]:
        if self._handler is not None:
            return self._handler
        # A Lambda container imports the handler once and keeps its configuration and clients (cached
        # on first use); each pipeline is a new container: a fresh import, restored by close().
        package = self.stack.lambda_handler.split(".", 1)[0]
        self._saved_modules = {m: sys.modules.pop(m) for m in list(sys.modules) if m.split(".")[0] == package}
        module_name, _, function_name = self.stack.lambda_handler.rpartition(".")
        where = f"the Lambda handler {self.stack.lambda_handler!r} (aws_lambda_function handler in terraform/)"
        try:
            module = importlib.import_module(module_name)
        except ImportError as exc:
            raise PipelineError(f"{where} cannot be imported: {exc}") from exc
        handler = getattr(module, function_name, None)
        if not callable(handler):
            raise PipelineError(f"{where}: module {module_name} has no function {function_name!r}")
        self._handler = handler
        return handler

    # --- 3. ECS state and the task runner ----------------------------------------------------------

    def task_arns(self) -> list[str]:
        """Every task the emulated cluster knows, running or stopped, oldest first."""
        cluster = self.stack.names.cluster
        arns: list[str] = []
        for status in ("RUNNING", "STOPPED"):
            arns += self.ecs.list_tasks(cluster=cluster, desiredStatus=status)["taskArns"]
        if not arns:
            return []
        described = self.ecs.describe_tasks(cluster=cluster, tasks=arns)["tasks"]
        return [t["taskArn"] for t in sorted(described, key=lambda t: t.get("createdAt", 0))]

    def describe(self, task_arn: str) -> dict[str, Any]:
        tasks = self.ecs.describe_tasks(cluster=self.stack.names.cluster, tasks=[task_arn], include=["TAGS"])["tasks"]
        if not tasks:
            raise PipelineError(f"the emulated cluster has no task {task_arn}")
        return tasks[0]

    def latest_task(self) -> str:
        arns = self.task_arns()
        if not arns:
            raise PipelineError("the trigger started no task")
        return arns[-1]

    def run_task(self, task_arn: str, interrupt: bool = False) -> TaskRun:
        """Run the task's container as a local process (or in Docker); with `interrupt`, SIGTERM it mid-training."""
        run, started = self.start_task(task_arn)
        if interrupt:
            self._interrupt_after_checkpoint(started, run.run_id)
        return self.end_task(run, started, interrupt=interrupt)

    def start_task(
        self, task_arn: str, *, label: str = "", cpus: tuple[int, ...] = ()
    ) -> tuple[TaskRun, runner.RunningTask]:
        """Start the task's container; `label` prefixes its output lines (tasks that run side by side), `cpus`
        pins it to those CPUs (`runner.share_cpus`: tasks side by side each on their own)."""
        spec = runner.task_spec(
            self.ecs, self.stack.names.cluster, task_arn, self.stack.names.container, self.settings.dockerfile
        )
        run = TaskRun(
            task_arn=task_arn,
            run_id=spec.environment.get("TRAINER_RUN_ID", ""),
            attempt=int(spec.environment.get("TRAINER_ATTEMPT", "1")),
            image=spec.image,
            task_definition_arn=spec.task_definition_arn,
        )
        task = self.describe(task_arn)
        self.say.step(
            f"Run task {spec.task_id} ({self.settings.runner} runner): run {run.run_id}, attempt {run.attempt}"
        )
        self.say.info(
            f"task definition {_short_arn(spec.task_definition_arn)} (capacity {task.get('capacityProviderName')})"
        )
        self.say.info(f"image           {spec.image}")
        self.say.info(f"command         {' '.join(spec.argv)}")
        per_run = {k: v for k, v in spec.environment.items() if k not in self.task_environment()}
        self.say.info("overrides       " + " ".join(f"{k}={v}" for k, v in sorted(per_run.items())))
        task_dir = self.settings.workdir / "tasks" / spec.task_id
        for container_path, volume in spec.mounts.items():
            self.say.info(f"volume          {volume} ({container_path}) -> {task_dir / volume}")
        if cpus:
            self.say.info(f"cpus            {','.join(map(str, cpus))} of this machine's (its own while it runs)")
        return run, self._start(spec, task_dir, label, cpus)

    def end_task(self, run: TaskRun, started: runner.RunningTask, *, interrupt: bool = False) -> TaskRun:
        """Wait for a started task's process, then stop the task in the emulated ECS as its exit would."""
        try:
            run.exit_code = started.wait(timeout=TASK_TIMEOUT_S)
        except subprocess.TimeoutExpired as exc:
            started.process.kill()
            raise PipelineError(f"task {run.task_arn} ran past {TASK_TIMEOUT_S} s and was killed") from exc
        run.output = started.output
        self.say.info(f"run {run.run_id}: exit code {run.exit_code}")
        reason = (
            "Your Spot Task was interrupted." if interrupt else f"Essential container in task exited ({run.exit_code})"
        )
        self.ecs.stop_task(cluster=self.stack.names.cluster, task=run.task_arn, reason=reason)
        stop_code = "SpotInterruption" if interrupt else "EssentialContainerExited"
        report_stop(self.emulator, self.stack.names.cluster, run.task_arn, stop_code, run.exit_code)
        return run

    @staticmethod
    def first_to_end(running: Mapping[str, runner.RunningTask]) -> str:
        """The key of the first of `running` whose process has exited (polled; a hung one ends the demo)."""
        deadline = time.monotonic() + TASK_TIMEOUT_S
        while time.monotonic() < deadline:
            for key, started in running.items():
                if started.process.poll() is not None:
                    return key
            time.sleep(0.2)
        raise PipelineError(f"no task of {sorted(running)} ended within {TASK_TIMEOUT_S} s")

    def task_environment(self) -> dict[str, str]:
        """The base task definition's environment in the emulation: Terraform's, then the demo's parameters."""
        return {**self.stack.trainer_environment, **self.settings.task_parameters}

    def _start(
        self, spec: runner.TaskSpec, task_dir: Path, label: str = "", cpus: tuple[int, ...] = ()
    ) -> runner.RunningTask:
        task_dir.mkdir(parents=True, exist_ok=True)
        aws = self.emulator.environment()
        on_line = (lambda line: self.say.output(f"{label} {line}")) if label else self.say.output
        if self.settings.runner == "docker":
            missing = runner.docker_available()
            if missing:
                raise PipelineError(f"--runner docker needs a Docker engine here: {missing}. Use --runner local.")
            self._build_image()
            return runner.start_docker(spec, task_dir, aws, on_line, runner.DOCKER_IMAGE, cpus=cpus)
        return runner.start_local(spec, task_dir, aws, on_line, cpus=cpus)

    def _build_image(self) -> None:
        dockerfile = self.settings.dockerfile
        self.say.info(f"building {runner.DOCKER_IMAGE} from {dockerfile} (the image the push stands for)")
        command = ["docker", "build", "-t", runner.DOCKER_IMAGE, "-f", str(dockerfile), str(dockerfile.parent)]
        if subprocess.run(command, check=False).returncode != 0:
            raise PipelineError(f"docker build of {dockerfile} failed")

    def _interrupt_after_checkpoint(self, started: runner.RunningTask, run_id: str) -> None:
        """Wait for the first epoch's checkpoint in the store, then do what Spot does: SIGTERM."""
        key = f"runs/{run_id}/checkpoint.pt"
        deadline = time.monotonic() + 600
        while started.process.poll() is None and time.monotonic() < deadline:
            if self._exists(key):
                self.say.info(
                    f"checkpoint s3://{self.stack.names.bucket}/{key} written: Spot reclaims the task (SIGTERM)"
                )
                started.interrupt()
                return
            time.sleep(0.1)
        raise PipelineError(
            f"the task ended (exit {started.process.poll()}) before it wrote {key}; nothing to interrupt"
        )

    # --- 4. the store ------------------------------------------------------------------------------

    def _exists(self, key: str) -> bool:
        listed = self.s3.list_objects_v2(Bucket=self.stack.names.bucket, Prefix=key, MaxKeys=1)
        return any(item["Key"] == key for item in listed.get("Contents", []))

    def read_json(self, key: str) -> dict[str, Any] | None:
        """A JSON object from the emulated bucket, or None when it does not exist."""
        if not self._exists(key):
            return None
        body = self.s3.get_object(Bucket=self.stack.names.bucket, Key=key)["Body"].read()
        return json.loads(body)

    def status(self, run_id: str) -> dict[str, Any] | None:
        return self.read_json(f"runs/{run_id}/status.json")

    @property
    def model_name(self) -> str:
        return self.task_environment().get("TRAINER_MODEL_NAME", "")

    def champion(self) -> dict[str, Any] | None:
        return self.read_json(f"models/{self.model_name}/champion.json")

    def versions(self) -> list[str]:
        prefix = f"models/{self.model_name}/"
        listed = self.s3.list_objects_v2(Bucket=self.stack.names.bucket, Prefix=prefix, Delimiter="/")
        return sorted(p["Prefix"][len(prefix) : -1] for p in listed.get("CommonPrefixes", []))

    def copy_out(self, version: str) -> Path:
        """Copy a published version's files out of the emulated bucket into the demo folder."""
        prefix = f"models/{self.model_name}/{version}/"
        target = self.settings.workdir / "models" / self.model_name / version
        target.mkdir(parents=True, exist_ok=True)
        listed = self.s3.list_objects_v2(Bucket=self.stack.names.bucket, Prefix=prefix)
        for item in listed.get("Contents", []):
            name = item["Key"][len(prefix) :]
            if name and "/" not in name:
                self.s3.download_file(self.stack.names.bucket, item["Key"], str(target / name))
        return target

    def show_models(self) -> None:
        """The store as the trainer's own CLI sees it: `python -m trainer models list` and `champion`."""
        store = f"s3://{self.stack.names.bucket}"
        self.say.step(f"The models in the store (python -m trainer models list|champion --store {store})")
        base = [sys.executable, "-m", "trainer", "models"]
        options = ["--store", store, "--model-name", self.model_name]
        aws = self.emulator.environment()
        _run_and_show(self.say, [*base, "list", *options], aws)
        _run_and_show(self.say, [*base, "champion", *options], aws)

    def notifications(self) -> list[str]:
        """Subjects of the messages the trainer published to the notifications topic since the last call."""
        if self.resources is None or not self.resources.notifications_queue_url:
            return []
        sqs = self.emulator.client("sqs")
        subjects = []
        while True:
            batch = sqs.receive_message(QueueUrl=self.resources.notifications_queue_url, MaxNumberOfMessages=10)
            messages = batch.get("Messages", [])
            if not messages:
                return subjects
            for message in messages:
                subjects.append(str(json.loads(message["Body"]).get("Subject", "")))
                sqs.delete_message(
                    QueueUrl=self.resources.notifications_queue_url, ReceiptHandle=message["ReceiptHandle"]
                )

    def export_store(self) -> Path:
        """Copy runs/ and models/ out of the emulated bucket into a local store that outlives the demo.

        The trainer reads a local folder as a store with the same keys, so `python -m trainer runs list`
        and `models list|champion|promote|rollback` work on it after the emulator is gone.
        """
        target = self.settings.workdir / "store"
        paginator = self.s3.get_paginator("list_objects_v2")
        for prefix in ("runs/", "models/"):
            for page in paginator.paginate(Bucket=self.stack.names.bucket, Prefix=prefix):
                for item in page.get("Contents", []):
                    path = target / item["Key"]
                    path.parent.mkdir(parents=True, exist_ok=True)
                    self.s3.download_file(self.stack.names.bucket, item["Key"], str(path))
        return target

    def report_result(self, run: TaskRun) -> str | None:
        """Print the run record, the published version with its metrics, the champion and where the files are."""
        self.say.step(f"Result of run {run.run_id}")
        record = self.status(run.run_id) or {}
        self.say.info(f"status  {record.get('state')} (attempt {record.get('attempt')}, source {record.get('source')})")
        version = record.get("version")
        if not version:
            self.say.info(f"no version published; reason: {record.get('reason')}")
            return None
        metrics = self.read_json(f"models/{self.model_name}/{version}/metrics.json") or {}
        shown = {k: v for k, v in metrics.items() if not isinstance(v, (dict, list))}
        self.say.info(f"version {version}: " + " ".join(f"{k}={_short(v)}" for k, v in shown.items()))
        champion = self.champion() or {}
        self.say.info(f"champion {champion.get('version')} (models/{self.model_name}/champion.json)")
        folder = self.copy_out(version)
        # runs/<run_id>/report.md is written after the gate and carries its decision; the version's own
        # report.md (create-only, checksummed) was rendered before the gate ran.
        # (not under <workdir>/runs/: that would make the demo folder itself look like a store)
        report = self.settings.workdir / "reports" / f"{run.run_id}.md"
        report.parent.mkdir(parents=True, exist_ok=True)
        try:
            self.s3.download_file(self.stack.names.bucket, f"runs/{run.run_id}/report.md", str(report))
        except ClientError:
            report.unlink(missing_ok=True)
        shown = {"report.md": (report, " (with the gate's decision)"), "curves.png": (folder / "curves.png", "")}
        for name, (path, note) in shown.items():
            self.say.info(f"{name:<10} {_relative(path)}" + (note if path.is_file() else "  (missing!)"))
        return version


def _resolved_environment(environment: Mapping[str, Any]) -> dict[str, str]:
    unknown = [f"{k} ({v.reference})" for k, v in environment.items() if isinstance(v, Unknown)]
    if unknown:
        raise PipelineError(
            "the emulation cannot supply these trigger variables from terraform/: " + ", ".join(unknown)
        )
    return {k: str(v) for k, v in environment.items()}


def _run_and_show(say: Reporter, command: list[str], environment: Mapping[str, str]) -> int:
    done = subprocess.run(command, env={**os.environ, **environment}, capture_output=True, text=True, check=False)
    for line in (done.stdout + done.stderr).splitlines():
        say.output(line)
    return done.returncode


def _event_summary(event: Mapping[str, Any]) -> str:
    detail = event.get("detail", {})
    keys = ("action-type", "result", "image-tag", "lastStatus", "stopCode")
    return ", ".join(f"{k}={detail[k]}" for k in keys if k in detail)


def _revision(arn: str) -> str:
    return arn.rsplit(":", 1)[-1]


def _short_arn(arn: str) -> str:
    return arn.rsplit("/", 1)[-1]


def _relative(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)


@contextmanager
def open_pipeline(settings: DemoSettings, reporter: Reporter, emulator: Emulator | None = None) -> Iterator[Pipeline]:
    """A provisioned pipeline with the dataset uploaded; on a server of its own unless `emulator` is given."""
    module = TerraformModule.load(settings.terraform_dir)
    if emulator is not None:
        emulator.reset()
        yield from _provisioned(emulator, module, settings, reporter)
        return
    with running(module.default_region()) as own:
        yield from _provisioned(own, module, settings, reporter)


def _provisioned(
    emulator: Emulator, module: TerraformModule, settings: DemoSettings, reporter: Reporter
) -> Iterator[Pipeline]:
    pipeline = Pipeline(emulator, module, settings, reporter)
    try:
        pipeline.provision()
        pipeline.upload_dataset()
        yield pipeline
    finally:
        pipeline.close()


def clean_workdir(settings: DemoSettings) -> None:
    """Remove the previous run's task folders, copied models and exported store (the dataset cache stays)."""
    for name in ("tasks", "models", "store"):
        shutil.rmtree(settings.workdir / name, ignore_errors=True)
