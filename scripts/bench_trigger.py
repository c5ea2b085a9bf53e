"""`make bench ARGS=trigger`: what the trigger costs per cold start, per event, and on disk.

Each figure is printed next to a baseline measured in the same run, as a ratio:
1. cold start: `import trigger.handler` (and the first invocation's client setup) against a bare
   `python -c pass` and against `import boto3` (which the Lambda runtime pays for any Python function);
2. handler CPU per event, in-process, AWS answered in-process per operation (a
   `before-call` hook, as botocore's Stubber does): the whole handler against
   the same stubbed AWS calls made directly, so the ratio is what our logic adds to the SDK's own cost;
3. the deployment zip against the sources it packs and against the boto3 + botocore we do not ship.
Nothing here asserts on time; read the ratios.
"""

from __future__ import annotations

import contextlib
import io
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import package_lambda  # scripts/, this script's folder, is first on sys.path

REPO = Path(__file__).resolve().parent.parent
EVENT_FIXTURES = REPO / "lambda" / "tests" / "events"

REPEATS = 7  # cold-start subprocesses per variant; the median is printed
EVENTS = int(os.environ.get("BENCH_TRIGGER_EVENTS", "200"))  # handler invocations per measurement
ENV: dict[str, str] = json.loads((EVENT_FIXTURES / "trigger_environment.json").read_text())
AWS_ENV = {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "bench", "AWS_SECRET_ACCESS_KEY": "bench"}


def ratio(label: str, value: float, baseline: float, unit: str, baseline_label: str) -> None:
    print(f"  {label:<44} {value:10.2f} {unit:<3} vs {baseline_label} {baseline:.2f} {unit}: x{value / baseline:.3g}")


# --- 1. cold start ---------------------------------------------------------------------------------


def cold_start_ms(code: str) -> float:
    env = {**os.environ, **ENV, **AWS_ENV}
    times = []
    for _ in range(REPEATS):
        start = time.perf_counter()
        subprocess.run([sys.executable, "-c", code], check=True, env=env)
        times.append((time.perf_counter() - start) * 1000)
    return statistics.median(times)


def bench_cold_start() -> None:
    print(f"cold start (median of {REPEATS} fresh interpreters, wall ms)")
    bare = cold_start_ms("pass")
    boto = cold_start_ms("import boto3")
    boto_clients = cold_start_ms("import boto3; [boto3.client(s) for s in ('ecs', 's3', 'ecr')]")
    ours = cold_start_ms("import trigger.handler")
    ours_ready = cold_start_ms(
        "import trigger.handler as h; h.current_config(); from trigger.aws import default_clients; default_clients()"
    )
    ratio("import trigger.handler", ours, bare, "ms", "python -c pass")
    ratio("import trigger.handler", ours, boto, "ms", "import boto3")
    ratio("import + config + ecs/s3/ecr clients", ours_ready, boto_clients, "ms", "boto3 + the 3 clients")


# --- 2. handler CPU per event ------------------------------------------------------------------


FAMILY_ARN = "arn:aws:ecs:us-east-1:123456789012:task-definition/pushtrain-trainer"
BASE_TASK_DEFINITION = {
    "taskDefinitionArn": f"{FAMILY_ARN}:1",
    "family": "pushtrain-trainer",
    "revision": 1,
    "status": "ACTIVE",
    "networkMode": "awsvpc",
    "requiresCompatibilities": ["FARGATE"],
    "cpu": "2048",
    "memory": "8192",
    "containerDefinitions": [{"name": "trainer", "image": "x:bootstrap", "essential": True, "stopTimeout": 120}],
}
DIGEST = "sha256:811d8fd91f7b386ec753710d7872e87ef83143027533a8b5288c72e57c71b9d5"
MANIFEST = {
    "schemaVersion": 2,
    "mediaType": "application/vnd.docker.distribution.manifest.v2+json",
    "config": {"mediaType": "application/vnd.docker.container.image.v1+json", "size": 1, "digest": DIGEST},
    "layers": [{"mediaType": "application/vnd.docker.image.rootfs.diff.tar.gzip", "size": 1, "digest": DIGEST}],
}
# A first push, answered per operation (not per position in a script, so the bench follows the trigger's
# code as it changes): nothing is in the bucket yet, every write succeeds. An operation without an answer
# stops the bench naming it.
ANSWERS: dict[str, dict[str, Any]] = {
    "DescribeImages": {"imageDetails": [{"imageDigest": DIGEST, "imageManifestMediaType": MANIFEST["mediaType"]}]},
    "BatchGetImage": {"images": [{"imageManifest": json.dumps(MANIFEST)}]},
    "PutObject": {"ETag": '"e1"'},
    "DescribeTaskDefinition": {"taskDefinition": BASE_TASK_DEFINITION},
    "RegisterTaskDefinition": {"taskDefinition": {**BASE_TASK_DEFINITION, "taskDefinitionArn": f"{FAMILY_ARN}:2"}},
    "ListTasks": {"taskArns": []},
    "RunTask": {"tasks": [{"taskArn": "arn:aws:ecs:us-east-1:123456789012:task/pushtrain/abc"}]},
}
MISSING = {"GetObject": "NoSuchKey", "HeadObject": "404"}  # operation -> error code, HTTP 404


class CannedAws:
    """Real botocore clients (parameters validated and serialised as usual) whose requests never leave:
    a `before-call` hook answers each operation from ANSWERS, as botocore's Stubber does, but by name."""

    def __init__(self) -> None:
        import boto3
        from trigger.aws import Clients

        session = boto3.session.Session(  # its own credentials and region: the caller's environment is left alone
            aws_access_key_id=AWS_ENV["AWS_ACCESS_KEY_ID"],
            aws_secret_access_key=AWS_ENV["AWS_SECRET_ACCESS_KEY"],
            region_name=AWS_ENV["AWS_DEFAULT_REGION"],
        )
        self.clients = Clients(ecs=session.client("ecs"), s3=session.client("s3"), ecr=session.client("ecr"))
        for name in ("ecs", "s3", "ecr"):
            getattr(self.clients, name).meta.events.register("before-call.*.*", self._answer)

    @staticmethod
    def _answer(model: Any, **_: Any) -> tuple[Any, dict[str, Any]]:
        from botocore.awsrequest import AWSResponse

        if model.name in MISSING:
            error = {"Code": MISSING[model.name], "Message": "Not Found"}
            return AWSResponse("", 404, {}, None), {"Error": error, "ResponseMetadata": {"HTTPStatusCode": 404}}
        if model.name not in ANSWERS:
            raise SystemExit(f"bench_trigger: the trigger called {model.name}; give it an answer in ANSWERS")
        return AWSResponse("", 200, {}, None), {**ANSWERS[model.name], "ResponseMetadata": {"HTTPStatusCode": 200}}

    def record(self, run: Callable[[], None]) -> list[tuple[str, str, dict[str, Any]]]:
        """The (client, method, parameters) of each call `run` makes."""
        recorded: list[tuple[str, str, dict[str, Any]]] = []

        def snake(name: str) -> str:
            return "".join("_" + c.lower() if c.isupper() else c for c in name).lstrip("_")

        recorders = {
            name: (lambda params, model, _name=name, **_: recorded.append((_name, snake(model.name), dict(params))))
            for name in ("ecs", "s3", "ecr")
        }
        for name, recorder in recorders.items():
            getattr(self.clients, name).meta.events.register("provide-client-params.*.*", recorder)
        try:
            run()
        finally:
            for name, recorder in recorders.items():
                getattr(self.clients, name).meta.events.unregister("provide-client-params.*.*", recorder)
        return recorded


def cpu_ms(fn: Callable[[], None]) -> float:
    for _ in range(10):
        fn()  # warm caches (botocore loads its models on first use)
    start = time.process_time()
    for _ in range(EVENTS):
        fn()
    return (time.process_time() - start) * 1000 / EVENTS


def bench_handler_cpu() -> None:
    from trigger.config import load_config
    from trigger.handler import handle

    config = load_config(ENV)
    event = json.loads((EVENT_FIXTURES / "ecr_image_push.json").read_text())
    aws = CannedAws()
    sink = io.StringIO()

    def handler_once() -> None:
        stdout, sys.stdout = sys.stdout, sink
        try:
            handle(event, config, aws.clients, sleep=lambda _: None)
        finally:
            sys.stdout = stdout

    recorded = aws.record(handler_once)
    if ("ecs", "run_task") not in {(name, method) for name, method, _ in recorded}:
        # a refusal path is cheaper than a start: measuring it would flatter the handler
        raise SystemExit(f"bench_trigger: the push started no task; its log: {sink.getvalue()[-500:]}")

    def sdk_once() -> None:  # the same conversation without our logic: the SDK calls alone
        for name, method, params in recorded:
            client = getattr(aws.clients, name)
            with contextlib.suppress(client.exceptions.ClientError):  # the stubbed 404 of a first push
                getattr(client, method)(**params)

    print(f"handler CPU per event (process time, mean of {EVENTS}, AWS stubbed)")
    ratio(f"first push ({len(recorded)} AWS calls)", cpu_ms(handler_once), cpu_ms(sdk_once), "ms", "same calls alone")


# --- 3. zip size -------------------------------------------------------------------------------


def folder_bytes(folder: Path, suffix: str = "") -> int:
    return sum(p.stat().st_size for p in folder.rglob(f"*{suffix}") if p.is_file() and "__pycache__" not in p.parts)


def bench_zip() -> None:
    import boto3
    import botocore

    with tempfile.TemporaryDirectory() as tmp:
        output = Path(tmp) / "trigger.zip"
        package_lambda.build(package_lambda.SOURCE, output)
        size = output.stat().st_size / 1024
    sources = folder_bytes(package_lambda.SOURCE, ".py") / 1024
    sdk = (folder_bytes(Path(boto3.__file__).parent) + folder_bytes(Path(botocore.__file__).parent)) / 1024
    print("deployment zip")
    ratio("build/trigger.zip", size, sources, "KiB", "its .py sources")
    ratio("build/trigger.zip", size, sdk, "KiB", "boto3+botocore (not shipped)")


def main() -> int:
    bench_cold_start()
    bench_handler_cpu()
    bench_zip()
    return 0


if __name__ == "__main__":
    sys.exit(main())
