"""Run a started ECS task here: its container's command and environment as a local process, or its image in Docker.

moto records a RunTask but runs nothing. The runner reads what ECS would run from the emulated state
(the task's digest-pinned task definition and its RunTask overrides) and runs exactly that:

- the command is the container definition's `entryPoint` + `command`, or, where the task definition
  leaves them to the image (as pushtrain's does), the image's own `ENTRYPOINT` + `CMD` from
  `trainer/Dockerfile`; `python` becomes this interpreter (the `trainer` package is installed in it);
- the environment is the task definition's, then the overrides' (overrides win, as in ECS), plus the
  emulation's endpoint and fake credentials;
- each volume mount (`/scratch`) becomes a folder under the task's local directory, and environment
  values naming a mount path are rewritten to it, as the mount would make them true;
- `cpus`, when given, are the CPUs the task may run on (the process's affinity, Docker's `--cpuset-cpus`):
  a Fargate task has vCPUs of its own, and tasks side by side on this machine must not share theirs.
  The trainer takes its thread count from its affinity mask (`trainer.resources.resolve_threads`).
"""

from __future__ import annotations

import contextlib
import json
import os
import shlex
import shutil
import signal
import subprocess
import sys
import threading
from collections.abc import Callable, Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

DOCKER_IMAGE = "pushtrain-trainer:local"


class RunnerError(RuntimeError):
    """The task cannot be run here; the message says what is missing."""


@dataclass(frozen=True)
class TaskSpec:
    """What ECS would run for one task."""

    task_arn: str
    task_definition_arn: str
    image: str
    argv: list[str]  # entryPoint + command, as the container would run them
    environment: dict[str, str]  # task definition environment, then overrides
    mounts: dict[str, str]  # container path -> volume name
    stop_timeout: int | None
    read_only: bool = False  # readonlyRootFilesystem

    @property
    def task_id(self) -> str:
        return self.task_arn.rsplit("/", 1)[-1]


def image_command(dockerfile: Path) -> list[str]:
    """The image's ENTRYPOINT + CMD (JSON form) from `dockerfile`; the last of each wins, as in Docker."""
    if not dockerfile.is_file():
        raise RunnerError(f"{dockerfile} does not exist: the task definition leaves the command to the image")
    entrypoint: list[str] = []
    command: list[str] = []
    for line in _instructions(dockerfile.read_text(encoding="utf-8")):
        keyword, _, rest = line.partition(" ")
        if keyword.upper() in {"ENTRYPOINT", "CMD"}:
            try:
                value = json.loads(rest)
            except json.JSONDecodeError:
                value = None
            if not isinstance(value, list) or not all(isinstance(x, str) for x in value):
                raise RunnerError(f"{dockerfile}: {keyword} must be in JSON (exec) form, found {rest!r}")
            if keyword.upper() == "ENTRYPOINT":
                entrypoint = value
            else:
                command = value
    if not entrypoint and not command:
        raise RunnerError(f"{dockerfile} has neither ENTRYPOINT nor CMD")
    return entrypoint + command


def _instructions(text: str) -> Iterator[str]:
    current = ""
    for raw in text.splitlines():
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if line.endswith("\\"):
            current += line[:-1] + " "
            continue
        yield (current + line).strip()
        current = ""


def task_spec(ecs: Any, cluster: str, task_arn: str, container_name: str, dockerfile: Path) -> TaskSpec:
    """Read the task, its task definition and overrides from (emulated) ECS."""
    described = ecs.describe_tasks(cluster=cluster, tasks=[task_arn])
    if not described["tasks"]:
        raise RunnerError(f"ECS does not know task {task_arn}: {described.get('failures')}")
    task = described["tasks"][0]
    definition = ecs.describe_task_definition(taskDefinition=task["taskDefinitionArn"])["taskDefinition"]
    containers = [c for c in definition["containerDefinitions"] if c["name"] == container_name]
    if not containers:
        raise RunnerError(f"task definition {task['taskDefinitionArn']} has no container named {container_name!r}")
    container = containers[0]
    environment = {item["name"]: item["value"] for item in container.get("environment", [])}
    overrides = [o for o in task.get("overrides", {}).get("containerOverrides", []) if o.get("name") == container_name]
    argv = list(container.get("entryPoint") or []) + list(container.get("command") or [])
    for override in overrides:
        environment.update({item["name"]: item["value"] for item in override.get("environment", [])})
        if override.get("command"):
            argv = list(container.get("entryPoint") or []) + list(override["command"])
    if not argv:
        argv = image_command(dockerfile)
    mounts = {m["containerPath"]: m["sourceVolume"] for m in container.get("mountPoints", [])}
    return TaskSpec(
        task_arn=task_arn,
        task_definition_arn=task["taskDefinitionArn"],
        image=container["image"],
        argv=argv,
        environment=environment,
        mounts=mounts,
        stop_timeout=container.get("stopTimeout"),
        read_only=bool(container.get("readonlyRootFilesystem")),
    )


@dataclass
class RunningTask:
    """A started task's process; `lines` receives its output line by line while it runs."""

    process: subprocess.Popen[str]
    reader: threading.Thread
    output: list[str] = field(default_factory=list)
    cpus: tuple[int, ...] = ()  # the CPUs it is pinned to; () for all of this machine's

    def interrupt(self) -> None:
        """What ECS does to a Spot task being reclaimed: SIGTERM to the container's main process."""
        self.process.send_signal(signal.SIGTERM)

    def wait(self, timeout: float | None = None) -> int:
        code = self.process.wait(timeout=timeout)
        self.reader.join(timeout=10)
        return code


def local_environment(spec: TaskSpec, task_dir: Path, aws_environment: Mapping[str, str]) -> dict[str, str]:
    """The process environment: mounts mapped to folders under `task_dir`, then the task's, then AWS's."""
    rewritten = dict(spec.environment)
    for container_path, volume in spec.mounts.items():
        local = task_dir / volume
        local.mkdir(parents=True, exist_ok=True)
        for name, value in rewritten.items():
            if value == container_path or value.startswith(container_path.rstrip("/") + "/"):
                rewritten[name] = str(local) + value[len(container_path.rstrip("/")) :]
    base = {k: v for k, v in os.environ.items() if not k.startswith(("TRAINER_", "PUSHTRAIN_", "AWS_"))}
    return {**base, "PYTHONUNBUFFERED": "1", **rewritten, **aws_environment}


def start_local(
    spec: TaskSpec,
    task_dir: Path,
    aws_environment: Mapping[str, str],
    on_line: Callable[[str], None],
    *,
    cpus: tuple[int, ...] = (),
) -> RunningTask:
    """Run the task's command as a local process with the task's environment, streaming its output; pinned
    to `cpus` when given."""
    argv = list(spec.argv)
    if argv and Path(argv[0]).name in {"python", "python3"}:
        argv[0] = sys.executable
    environment = local_environment(spec, task_dir, aws_environment)
    with _pinned(cpus):
        process = subprocess.Popen(
            argv,
            env=environment,
            cwd=task_dir,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            bufsize=1,
        )
    return _attach(process, on_line, cpus)


@contextlib.contextmanager
def _pinned(cpus: tuple[int, ...]) -> Iterator[None]:
    """This thread on `cpus` while the block runs (a child forked in it inherits the mask from its first
    instruction: no window in which it runs elsewhere, and no preexec_fn, which is unsafe beside threads).
    sched_setaffinity(0) is the calling thread's mask only (Linux), so the demo's other threads keep theirs."""
    if not cpus:
        yield
        return
    before = os.sched_getaffinity(0)
    os.sched_setaffinity(0, cpus)
    try:
        yield
    finally:
        os.sched_setaffinity(0, before)


def share_cpus(busy: Iterable[int], tasks: int, cpus: Iterable[int] | None = None) -> list[tuple[int, ...]]:
    """Pin sets for `tasks` tasks starting together: this machine's CPUs (`cpus`, default our affinity mask)
    that no running task holds (`busy`), split as evenly as they go, the first tasks taking the remainder.
    With fewer free CPUs than new tasks, each new task gets one CPU of all of them in turn: a new task may
    then share a CPU with a running one, but new tasks never crowd onto the few free CPUs together."""
    if tasks < 1:
        return []
    every = sorted(os.sched_getaffinity(0) if cpus is None else set(cpus))
    free = [cpu for cpu in every if cpu not in set(busy)]
    if len(free) < tasks:
        return [(every[i % len(every)],) for i in range(tasks)]
    share, extra = divmod(len(free), tasks)
    sets, start = [], 0
    for i in range(tasks):
        size = share + (1 if i < extra else 0)
        sets.append(tuple(free[start : start + size]))
        start += size
    return sets


def docker_available() -> str | None:
    """None when a Docker engine answers here, else why not (for a clear message)."""
    docker = shutil.which("docker")
    if docker is None:
        return "no `docker` command on PATH"
    probe = subprocess.run(
        [docker, "info", "--format", "{{.ServerVersion}}"], capture_output=True, text=True, check=False
    )
    if probe.returncode != 0:
        return f"`docker info` failed: {(probe.stderr or probe.stdout).strip()[:200]}"
    return None


def start_docker(
    spec: TaskSpec,
    task_dir: Path,
    aws_environment: Mapping[str, str],
    on_line: Callable[[str], None],
    image: str,
    *,
    cpus: tuple[int, ...] = (),
) -> RunningTask:
    """Run the task in the real image (built locally as `image`), the emulation reached over the host network.

    Like Fargate: the root filesystem read-only when the task definition says so, each volume a
    writable mount; unlike Fargate, as this user (so the mounted folders stay writable and removable).
    SIGTERM to `docker run` reaches the container (Docker proxies signals), as a Spot reclaim would.
    """
    docker = shutil.which("docker") or "docker"
    args = [docker, "run", "--rm", "--init", "--network", "host", "--user", f"{os.getuid()}:{os.getgid()}"]
    if spec.read_only:
        args.append("--read-only")
    if cpus:
        args += ["--cpuset-cpus", ",".join(map(str, cpus))]
    for container_path, volume in spec.mounts.items():
        local = task_dir / volume
        local.mkdir(parents=True, exist_ok=True)
        args += ["--volume", f"{local.resolve()}:{container_path}"]
    environment = {**spec.environment, **aws_environment}
    on_line(f"$ {shlex.join([*args, image])}  (plus --env for {len(environment)} variables)")
    for name, value in environment.items():
        args += ["--env", f"{name}={value}"]
    args.append(image)
    process = subprocess.Popen(args, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True, bufsize=1)
    return _attach(process, on_line, cpus)


def _attach(process: subprocess.Popen[str], on_line: Callable[[str], None], cpus: tuple[int, ...]) -> RunningTask:
    running = RunningTask(process, threading.Thread(), cpus=cpus)

    def pump() -> None:
        assert process.stdout is not None  # noqa: S101 - Popen was given stdout=PIPE
        for line in process.stdout:
            text = line.rstrip("\n")
            running.output.append(text)
            on_line(text)

    running.reader = threading.Thread(target=pump, daemon=True)
    running.reader.start()
    return running
