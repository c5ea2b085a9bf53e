"""The local task runner runs what ECS would: the container's command, environment and overrides, mounts as folders.

GIVEN a task started in (in-process) moto ECS, WHEN the runner reads it, THEN the command comes from
the task definition (or the image's Dockerfile when the definition leaves it to the image), the
RunTask overrides win over the task definition's environment, and mount paths become local folders.
"""

from __future__ import annotations

import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from pushtrain_local import runner

REGION = "us-east-1"


def test_image_command_is_entrypoint_then_cmd(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text(
        'FROM python:3.12-slim\nENTRYPOINT ["python", "-m", \\\n  "trainer"]\nCMD ["ignored"]\nCMD ["train"]\n',
        encoding="utf-8",
    )

    assert runner.image_command(dockerfile) == ["python", "-m", "trainer", "train"]


def test_shell_form_command_is_rejected_naming_it(tmp_path: Path) -> None:
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text("FROM x\nCMD python -m trainer train\n", encoding="utf-8")

    with pytest.raises(runner.RunnerError, match=r"JSON \(exec\) form.*python -m trainer train"):
        runner.image_command(dockerfile)


def test_missing_dockerfile_is_named(tmp_path: Path) -> None:
    with pytest.raises(runner.RunnerError, match="Dockerfile does not exist"):
        runner.image_command(tmp_path / "Dockerfile")


@mock_aws
def test_task_spec_merges_overrides_over_the_task_definition(tmp_path: Path) -> None:
    # GIVEN a task definition with a base environment and a scratch mount, and a task with overrides
    ecs = boto3.client("ecs", region_name=REGION)
    ecs.create_cluster(clusterName="pushtrain")
    ecs.register_task_definition(
        family="pushtrain-trainer",
        containerDefinitions=[
            {
                "name": "trainer",
                "image": "repo@sha256:" + "c" * 64,
                "memory": 512,
                "environment": [
                    {"name": "TRAINER_EPOCHS", "value": "10"},
                    {"name": "TRAINER_WORK_DIR", "value": "/scratch"},
                ],
                "mountPoints": [{"sourceVolume": "scratch", "containerPath": "/scratch"}],
            }
        ],
        volumes=[{"name": "scratch"}],
    )
    task_arn = ecs.run_task(
        cluster="pushtrain",
        taskDefinition="pushtrain-trainer",
        launchType="FARGATE",
        overrides={
            "containerOverrides": [
                {"name": "trainer", "environment": [{"name": "TRAINER_EPOCHS", "value": "2"}]},
            ]
        },
    )["tasks"][0]["taskArn"]
    dockerfile = tmp_path / "Dockerfile"
    dockerfile.write_text('FROM x\nENTRYPOINT ["python", "-m", "trainer"]\nCMD ["train"]\n', encoding="utf-8")

    # WHEN the runner reads the task
    spec = runner.task_spec(ecs, "pushtrain", task_arn, "trainer", dockerfile)
    env = runner.local_environment(spec, tmp_path / "task", {"AWS_ENDPOINT_URL": "http://127.0.0.1:1"})

    # THEN the override wins, the command is the image's, and /scratch is a local folder
    assert spec.argv == ["python", "-m", "trainer", "train"]
    assert spec.image == "repo@sha256:" + "c" * 64
    assert env["TRAINER_EPOCHS"] == "2"
    assert env["TRAINER_WORK_DIR"] == str(tmp_path / "task" / "scratch")
    assert (tmp_path / "task" / "scratch").is_dir()
    assert env["AWS_ENDPOINT_URL"] == "http://127.0.0.1:1"


def test_local_process_output_is_streamed_and_sigterm_reaches_it(tmp_path: Path) -> None:
    # GIVEN a "container" that reports readiness, then waits and turns SIGTERM into exit code 75
    script = (
        "import signal, sys, time\n"
        "signal.signal(signal.SIGTERM, lambda *_: sys.exit(75))\n"
        "print('ready', flush=True)\n"
        "time.sleep(60)\n"
    )
    spec = runner.TaskSpec("arn:aws:ecs:r:1:task/c/t1", "td", "img", ["python", "-c", script], {}, {}, None)
    lines: list[str] = []

    # WHEN it runs locally and is interrupted once it is ready
    started = runner.start_local(spec, tmp_path, {}, lines.append)
    deadline = time.monotonic() + 30
    while not lines and started.process.poll() is None and time.monotonic() < deadline:
        time.sleep(0.05)
    started.interrupt()

    # THEN its output arrived line by line and its exit code is the one it chose for SIGTERM
    assert started.wait(timeout=30) == 75
    assert lines == ["ready"]


@pytest.mark.parametrize(
    ("busy", "tasks", "cpus", "expected"),
    [
        ([], 2, [0, 1], [(0,), (1,)]),  # two sets side by side on 2 cores: one each
        ([0], 1, [0, 1], [(1,)]),  # the next set, beside a running one: the free CPU
        ([], 1, [0, 1], [(0, 1)]),  # alone (the last set, the refit): every CPU
        ([], 2, [0, 1, 2, 3, 4], [(0, 1, 2), (3, 4)]),  # uneven: the first takes the remainder
        ([1], 2, [0, 1, 2, 3], [(0, 2), (3,)]),
        ([0], 2, [0, 1], [(0,), (1,)]),  # more new tasks than free CPUs: one CPU each of all, not both on 1
        ([0, 1], 1, [0, 1], [(0,)]),  # none free: one CPU, shared with a running task
        ([], 3, [0, 1], [(0,), (1,), (0,)]),
        ([], 0, [0, 1], []),
    ],
)
def test_share_cpus_gives_tasks_side_by_side_cpus_of_their_own(
    busy: list[int], tasks: int, cpus: list[int], expected: list[tuple[int, ...]]
) -> None:
    assert runner.share_cpus(busy, tasks, cpus) == expected


def test_a_pinned_local_task_runs_on_its_cpus_and_the_demo_keeps_its_own(tmp_path: Path) -> None:
    # GIVEN a "container" that prints the CPUs it may run on, and the first CPU of ours to pin it to
    ours = os.sched_getaffinity(0)
    first = min(ours)
    script = "import os; print(sorted(os.sched_getaffinity(0)), flush=True)"
    spec = runner.TaskSpec("arn:aws:ecs:r:1:task/c/t1", "td", "img", ["python", "-c", script], {}, {}, None)
    lines: list[str] = []

    # WHEN it starts pinned to that CPU
    started = runner.start_local(spec, tmp_path, {}, lines.append, cpus=(first,))

    # THEN the process ran on that CPU alone (the trainer takes its threads from this mask), the task
    # remembers its CPUs, and the demo's own thread is back on every CPU it had
    assert started.wait(timeout=30) == 0
    started.reader.join(timeout=30)
    assert lines == [str([first])]
    assert started.cpus == (first,)
    assert os.sched_getaffinity(0) == ours


def test_docker_runner_runs_the_image_like_fargate_with_mounts_and_environment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN a stand-in `docker` that prints the arguments it was given
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    fake = bin_dir / "docker"
    fake.write_text('#!/bin/sh\nfor arg in "$@"; do echo "$arg"; done\n', encoding="utf-8")
    fake.chmod(0o755)
    monkeypatch.setenv("PATH", f"{bin_dir}:/usr/bin:/bin")
    spec = runner.TaskSpec(
        "arn:aws:ecs:r:1:task/c/t1",
        "td",
        "repo@sha256:" + "d" * 64,
        ["python", "-m", "trainer", "train"],
        {"TRAINER_WORK_DIR": "/scratch"},
        {"/scratch": "scratch"},
        120,
        read_only=True,
    )
    lines: list[str] = []

    # WHEN the task runs with the docker runner, pinned to CPUs 2 and 3
    started = runner.start_docker(
        spec, tmp_path / "task", {"AWS_ENDPOINT_URL": "http://127.0.0.1:9"}, lines.append, "img", cpus=(2, 3)
    )

    # THEN docker ran the image read-only, with the volume mounted and the task's environment, unchanged paths
    assert started.wait(timeout=30) == 0
    args = lines[1:]
    assert args[-1] == "img"
    assert "--read-only" in args
    assert f"{(tmp_path / 'task' / 'scratch').resolve()}:/scratch" in args
    assert "TRAINER_WORK_DIR=/scratch" in args
    assert "AWS_ENDPOINT_URL=http://127.0.0.1:9" in args
    assert args[args.index("--cpuset-cpus") + 1] == "2,3"


def test_a_task_whose_run_wrote_its_final_state_frees_its_cpus_for_the_next_set() -> None:
    from pushtrain_local.pipeline import TaskRun
    from pushtrain_local.scenarios import busy_cpus

    # GIVEN three started tasks: one training, one whose run is final but whose process still exits, one ended
    def started(cpus: tuple[int, ...], alive: bool) -> runner.RunningTask:
        process = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)" if alive else "pass"])
        if not alive:
            process.wait()
        return runner.RunningTask(process, threading.Thread(), cpus=cpus)

    tasks = {
        "training": started((0,), alive=True),
        "exiting": started((1,), alive=True),
        "ended": started((2,), alive=False),
    }
    running = {
        arn: (TaskRun(task_arn=arn, run_id=arn, attempt=1, image="i", task_definition_arn="td"), task)
        for arn, task in tasks.items()
    }
    states = {"training": "running", "exiting": "stopped-early", "ended": "succeeded"}
    try:
        # THEN only the training task's CPU counts as held
        assert busy_cpus(running, lambda run_id: {"state": states[run_id]}) == [0]
        # AND a run without a record yet (just started) holds its CPUs
        assert busy_cpus(running, lambda run_id: None) == [0, 1]
    finally:
        for task in tasks.values():
            task.process.kill()
            task.process.wait()
