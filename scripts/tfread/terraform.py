"""Read the names, the trainer's base environment, the trigger's variables and the event patterns from `terraform/`.

The local pipeline provisions its emulated AWS from the same values `terraform apply` would use, so a
name is written once, in `terraform/main.tf`. Everything is found through the resources that use it
(the ECR repository's `name`, the task definition's `family` and container definitions, the Lambda
function's `environment`, the EventBridge rules' `event_pattern`), not through the names of locals.

    >>> module = TerraformModule.load(Path("terraform"))
    >>> stack = module.stack(account_id="123456789012", region="us-east-1")
    >>> stack.names.repository
    'pushtrain-trainer'
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import hcl2
from hcl2 import SerializationOptions

from tfread.hcl import HclError, JsonEncoded, Scope, Unknown, evaluate_value, require

_OPTIONS = SerializationOptions(with_comments=False, explicit_blocks=False, preserve_heredocs=False)


class TerraformError(RuntimeError):
    """The `.tf` files do not hold something the local pipeline needs; the message names it and the file."""


@dataclass(frozen=True)
class Names:
    """The names the parts share (docs/contracts.md, "Names")."""

    repository: str
    cluster: str
    task_family: str
    container: str
    function: str
    bucket: str


@dataclass(frozen=True)
class TaskShape:
    """The base task definition as Terraform registers it (the container's `image` may be unknown)."""

    cpu: str
    memory: str
    network_mode: str
    compatibilities: list[str]
    volumes: list[str]
    container: dict[str, Any]


@dataclass(frozen=True)
class Stack:
    """What the local pipeline needs from `terraform/`, resolved for one account and region."""

    names: Names
    region: str
    trainer_environment: dict[str, str]  # the base task definition's container environment
    task: TaskShape
    lambda_environment: dict[str, Any]  # PUSHTRAIN_* -> value, or Unknown for values only an apply knows
    lambda_handler: str  # "module.function" Lambda calls


@dataclass(frozen=True)
class TerraformModule:
    """The parsed `.tf` files of one root module."""

    path: Path
    variables: dict[str, Any]
    locals: dict[str, Any]
    resources: dict[tuple[str, str], dict[str, Any]]
    data: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)  # data sources, as resources
    # every resource the files declare, those counted out by the defaults too (see `with_variables`)
    declared: dict[tuple[str, str], dict[str, Any]] = field(default_factory=dict)

    @classmethod
    def load(cls, path: Path) -> TerraformModule:
        """Parse every `*.tf` file in `path` (not recursively); raises `TerraformError` when there are none."""
        files = sorted(path.glob("*.tf"))
        if not files:
            raise TerraformError(f"no .tf files in {path}: the local pipeline reads its names from terraform/")
        variables: dict[str, Any] = {}
        local_values: dict[str, Any] = {}
        resources: dict[tuple[str, str], dict[str, Any]] = {}
        data: dict[tuple[str, str], dict[str, Any]] = {}
        for file in files:
            try:
                document = hcl2.loads(file.read_text(encoding="utf-8"), serialization_options=_OPTIONS)
            except Exception as exc:
                raise TerraformError(f"{file}: cannot parse: {exc}") from exc
            for block in document.get("variable", []):
                for name, body in block.items():
                    variables[_unquote(name)] = body
            for block in document.get("locals", []):
                local_values.update({k: v for k, v in block.items() if not k.startswith("__")})
            for kind, into in (("resource", resources), ("data", data)):
                for block in document.get(kind, []):
                    for rtype, named in block.items():
                        for rname, body in named.items():
                            into[(_unquote(rtype), _unquote(rname))] = body
        defaults: dict[str, Any] = {}
        scope = Scope({}, {}, {}, path)
        for name, body in variables.items():
            if "default" in body:
                defaults[name] = evaluate_value(body["default"], scope)
        # The emulated stack is the default one: a resource whose `count` is 0 there (the optional GPU and
        # Batch capacity, gpu.tf and batch.tf) does not exist in it.
        module = cls(path, defaults, local_values, resources, data, declared=resources)
        return module.with_variables({})

    def with_variables(self, variables: Mapping[str, Any]) -> TerraformModule:
        """This module with `variables` over its defaults, and only the resources with instances then (a
        `count` or `for_each` that is not 0 or empty)."""
        merged = {**self.variables, **variables}
        scope = Scope(merged, self.locals, self.declared, self.path)
        resources = {key: body for key, body in self.declared.items() if _count(body, scope) != 0}
        return replace(self, variables=merged, resources=resources)

    def default_region(self) -> str:
        """The `region` variable's default: the region the stack (and so the emulation) lives in."""
        region = self.variables.get("region")
        if not isinstance(region, str) or not region:
            raise TerraformError(f'variable "region" in {self.path} has no default; the local pipeline needs one')
        return region

    def scope(self, known: Mapping[tuple[str, str], Any]) -> Scope:
        return Scope(self.variables, self.locals, self.resources, self.path.resolve(), known)

    def single(self, rtype: str) -> tuple[str, dict[str, Any]]:
        """The one resource of `rtype` (its name and arguments); an error when there is none or several."""
        found = [(name, body) for (kind, name), body in self.resources.items() if kind == rtype]
        if len(found) != 1:
            names = ", ".join(f"{rtype}.{name}" for name, _ in found) or "none"
            raise TerraformError(f"expected exactly one {rtype} in {self.path}, found {names}")
        return found[0]

    def argument(self, rtype: str, argument: str, scope: Scope) -> Any:
        """Evaluate `argument` of the single `rtype` resource, with every part known."""
        name, body = self.single(rtype)
        where = f"{rtype}.{name}.{argument}"
        if argument not in body:
            raise TerraformError(f"{where} is not set in {self.path}")
        try:
            return require(evaluate_value(body[argument], scope), where)
        except HclError as exc:
            raise TerraformError(f"{where} in {self.path}: {exc}") from exc

    def stack(self, account_id: str, region: str, known: Mapping[tuple[str, str], Any] | None = None) -> Stack:
        """Resolve names, the trainer environment, the Lambda environment and event patterns.

        `known` supplies resource attributes only an apply knows (`("aws_ecs_cluster", "arn")`); the
        caller's account and region stand in for `data.aws_caller_identity` and `data.aws_region`.
        """
        scope = self.scope(_facts(account_id, region, known))
        container = self._container(scope)
        names = Names(
            repository=self.argument("aws_ecr_repository", "name", scope),
            cluster=self.argument("aws_ecs_cluster", "name", scope),
            task_family=self.argument("aws_ecs_task_definition", "family", scope),
            container=_field(container, "name", "the container definition"),
            function=self.argument("aws_lambda_function", "function_name", scope),
            bucket=self.argument("aws_s3_bucket", "bucket", scope),
        )
        environment = {
            _field(item, "name", "a container environment entry"): str(_field(item, "value", "environment"))
            for item in container.get("environment", [])
        }
        _, task_body = self.single("aws_ecs_task_definition")
        volumes = task_body.get("volume") or []
        task = TaskShape(
            cpu=str(self.argument("aws_ecs_task_definition", "cpu", scope)),
            memory=str(self.argument("aws_ecs_task_definition", "memory", scope)),
            network_mode=self.argument("aws_ecs_task_definition", "network_mode", scope),
            compatibilities=self.argument("aws_ecs_task_definition", "requires_compatibilities", scope),
            volumes=[_unquote(str(v.get("name", ""))) for v in (volumes if isinstance(volumes, list) else [volumes])],
            container=container,
        )
        handler = self.argument("aws_lambda_function", "handler", scope)
        return Stack(names, region, environment, task, self._lambda_environment(scope), handler)

    def _container(self, scope: Scope) -> dict[str, Any]:
        name, body = self.single("aws_ecs_task_definition")
        where = f"aws_ecs_task_definition.{name}.container_definitions"
        try:
            value = evaluate_value(body.get("container_definitions"), scope)
        except HclError as exc:
            raise TerraformError(f"{where} in {self.path}: {exc}") from exc
        if isinstance(value, JsonEncoded):
            value = value.value
        elif isinstance(value, str):
            value = json.loads(value)
        if not isinstance(value, list) or len(value) != 1 or not isinstance(value[0], dict):
            raise TerraformError(f"{where} must be one container definition, found {value!r}")
        return value[0]

    def _lambda_environment(self, scope: Scope) -> dict[str, Any]:
        name, body = self.single("aws_lambda_function")
        blocks = body.get("environment") or []
        blocks = blocks if isinstance(blocks, list) else [blocks]
        if not blocks or "variables" not in blocks[0]:
            raise TerraformError(f"aws_lambda_function.{name} has no environment {{ variables = ... }} block")
        try:
            variables = evaluate_value(blocks[0]["variables"], scope)
        except HclError as exc:
            raise TerraformError(f"aws_lambda_function.{name}.environment in {self.path}: {exc}") from exc
        if isinstance(variables, Unknown) or not isinstance(variables, dict):
            raise TerraformError(f"aws_lambda_function.{name}.environment.variables is not a map: {variables!r}")
        return variables

    def instances(self, rtype: str, name: str, scope: Scope) -> dict[str, Scope]:
        """The instances of one resource: its name -> `scope` for a plain one, each `for_each` key -> `scope`
        with `each.key`/`each.value` bound, "0".."n-1" for `count` (with `count.index`)."""
        instances = self.instances_of(self.resources[(rtype, name)], f"{rtype}.{name}", scope)
        return {name if key is None else key: instance for key, instance in instances.items()}

    def instances_of(self, body: Mapping[str, Any], where: str, scope: Scope) -> dict[str | None, Scope]:
        """A block's instances: None -> `scope` without `for_each`/`count`, else one scope per key or index."""
        if "count" in body:
            try:
                count = evaluate_value(body["count"], scope)
            except HclError as exc:
                raise TerraformError(f"{where}.count in {self.path}: {exc}") from exc
            if not isinstance(count, int) or isinstance(count, bool):
                raise TerraformError(f"{where}.count in {self.path} is not a number known before apply: {count!r}")
            return {str(i): scope.with_bound({"count": {"index": i}}) for i in range(count)}
        if "for_each" not in body:
            return {None: scope}
        try:
            collection = evaluate_value(body["for_each"], scope)
        except HclError as exc:
            raise TerraformError(f"{where}.for_each in {self.path}: {exc}") from exc
        if isinstance(collection, list):
            collection = {str(item): item for item in collection}
        if not isinstance(collection, dict):
            raise TerraformError(
                f"{where}.for_each in {self.path} is not a map or set known before plan: {collection!r}"
            )
        return {key: scope.with_bound({"each": {"key": key, "value": value}}) for key, value in collection.items()}

    def event_patterns(
        self, account_id: str, region: str, known: Mapping[tuple[str, str], Any] | None = None
    ) -> dict[str, dict[str, Any]]:
        """Every EventBridge rule's pattern (rule instance -> pattern), templates rendered with real names.

        A rule instance is the resource name, or its key for a rule written with `for_each`; a schedule rule
        (no pattern, or a null one) has no entry.
        """
        scope = self.scope(_facts(account_id, region, known))
        patterns: dict[str, dict[str, Any]] = {}
        for (rtype, name), body in self.resources.items():
            if rtype != "aws_cloudwatch_event_rule" or "event_pattern" not in body:
                continue
            for instance, instance_scope in self.instances(rtype, name, scope).items():
                where = f"aws_cloudwatch_event_rule.{name}[{instance!r}].event_pattern"
                try:
                    value = require(evaluate_value(body["event_pattern"], instance_scope), where)
                    if value is not None:
                        patterns[instance] = json.loads(value)
                except (HclError, json.JSONDecodeError) as exc:
                    raise TerraformError(f"{where} in {self.path}: {exc}") from exc
        return patterns


_RULE_REFERENCE = re.compile(r'\$\{aws_cloudwatch_event_rule\.([A-Za-z0-9_-]+)(?:\[("[^"]*")\])?\.name\}')
_TARGET_TYPE = re.compile(r"\b(aws_[a-z0-9_]+)\.[A-Za-z0-9_-]+(?:\[[^\]]*\])?\.")
_WHOLE_RULE = re.compile(r"\$\{aws_cloudwatch_event_rule\.([A-Za-z0-9_-]+)\}")


def rule_targets(module: TerraformModule) -> dict[str, set[str]]:
    """Each EventBridge rule instance (as in `event_patterns`) -> the resource types its targets deliver to.

    A target names its rule as `aws_cloudwatch_event_rule.<name>.name`, `...<name>["key"].name`, or, with
    `for_each = aws_cloudwatch_event_rule.<name>`, as `each.value.name` (one target per rule instance).
    """
    scope = module.scope(_facts("000000000000", module.default_region(), None))
    targets: dict[str, set[str]] = {}
    for (rtype, name), body in module.resources.items():
        if rtype != "aws_cloudwatch_event_target":
            continue
        kind = _TARGET_TYPE.search(str(body.get("arn", "")))
        rule_text = str(body.get("rule", ""))
        whole = _WHOLE_RULE.fullmatch(str(body.get("for_each", "")))
        instances: list[str] = []
        if whole and rule_text == "${each.value.name}":
            instances = list(module.instances("aws_cloudwatch_event_rule", whole.group(1), scope))
        elif reference := _RULE_REFERENCE.fullmatch(rule_text):
            key = reference.group(2)
            instances = [reference.group(1) if key is None else key.strip('"')]
        if not kind or not instances or "each.key" in rule_text:
            raise TerraformError(f"aws_cloudwatch_event_target.{name}: cannot tell its rule and target from {body!r}")
        for instance in instances:
            targets.setdefault(instance, set()).add(kind.group(1))
    return targets


def _count(body: Mapping[str, Any], scope: Scope) -> int | None:
    """A resource's number of instances under the variables: its `count`, or the size of its `for_each`;
    None when it has neither or the number needs an apply."""
    key = "count" if "count" in body else "for_each" if "for_each" in body else None
    if key is None:
        return None
    try:
        value = evaluate_value(body[key], scope)
    except HclError:
        return None
    if key == "for_each":
        return len(value) if isinstance(value, dict | list) else None
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _facts(account_id: str, region: str, known: Mapping[tuple[str, str], Any] | None) -> dict[tuple[str, str], Any]:
    return {
        ("data.aws_caller_identity", "account_id"): account_id,
        ("data.aws_region", "name"): region,
        ("data.aws_region", "region"): region,
        ("data.aws_region", "id"): region,
        ("data.aws_partition", "partition"): "aws",
        ("data.aws_partition", "reverse_dns_prefix"): "com.amazonaws",
        **(known or {}),
    }


def _unquote(text: str) -> str:
    return text[1:-1] if len(text) >= 2 and text.startswith('"') and text.endswith('"') else text


def _field(mapping: Any, key: str, what: str) -> Any:
    if not isinstance(mapping, dict) or key not in mapping:
        raise TerraformError(f"{what} has no {key!r}: {mapping!r}")
    value = mapping[key]
    if isinstance(value, Unknown):
        raise TerraformError(f"{what}.{key} is only known after apply ({value.reference})")
    return value
