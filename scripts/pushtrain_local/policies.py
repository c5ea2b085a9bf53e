"""Every IAM policy document of a Terraform root, rendered to the JSON `terraform apply` would send.

The roots write their policies as `data "aws_iam_policy_document"` blocks. This module evaluates them
with the local pipeline's HCL reader (`pushtrain_local.hcl`) for one account and region, so a linter
(`scripts/lint.py --only iam`) and the contract tests read the same JSON:

    >>> documents = policy_documents(TerraformModule.load(Path("terraform")), "123456789012", "us-east-1")
    >>> documents["trigger"]["Statement"][0]["Action"]
    [...]

ARNs only an apply knows are built from the resources' names with AWS's documented ARN formats (a KMS
key id, which AWS generates, is a fixed placeholder). A document that still holds a value only an apply
knows is an error naming it: a policy is never linted half-rendered.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import Any

import hcl2

from pushtrain_local.hcl import HclError, Scope, Unknown, evaluate_value, require
from pushtrain_local.terraform import TerraformError, TerraformModule, _facts

KMS_KEY_ID = "00000000-0000-4000-8000-000000000000"  # AWS generates key ids; any id has this form

# (resource type) -> (naming argument, ARN from (partition, region, account, name, arguments)).
_ARNS: dict[str, tuple[str, Callable[[str, str, str, str, Mapping[str, Any]], str]]] = {
    "aws_s3_bucket": ("bucket", lambda p, r, a, n, _: f"arn:{p}:s3:::{n}"),
    "aws_ecr_repository": ("name", lambda p, r, a, n, _: f"arn:{p}:ecr:{r}:{a}:repository/{n}"),
    "aws_iam_role": ("name", lambda p, r, a, n, args: f"arn:{p}:iam::{a}:role{args.get('path') or '/'}{n}"),
    "aws_iam_policy": ("name", lambda p, r, a, n, args: f"arn:{p}:iam::{a}:policy{args.get('path') or '/'}{n}"),
    "aws_cloudwatch_log_group": ("name", lambda p, r, a, n, _: f"arn:{p}:logs:{r}:{a}:log-group:{n}"),
    "aws_sqs_queue": ("name", lambda p, r, a, n, _: f"arn:{p}:sqs:{r}:{a}:{n}"),
    "aws_sns_topic": ("name", lambda p, r, a, n, _: f"arn:{p}:sns:{r}:{a}:{n}"),
    "aws_batch_job_queue": ("name", lambda p, r, a, n, _: f"arn:{p}:batch:{r}:{a}:job-queue/{n}"),
    "aws_ecs_cluster": ("name", lambda p, r, a, n, _: f"arn:{p}:ecs:{r}:{a}:cluster/{n}"),
    "aws_lambda_function": ("function_name", lambda p, r, a, n, _: f"arn:{p}:lambda:{r}:{a}:function:{n}"),
    "aws_cloudwatch_event_rule": ("name", lambda p, r, a, n, _: f"arn:{p}:events:{r}:{a}:rule/{n}"),
    "aws_kms_key": ("description", lambda p, r, a, n, _: f"arn:{p}:kms:{r}:{a}:key/{KMS_KEY_ID}"),
    "aws_iam_openid_connect_provider": (
        "url",
        lambda p, r, a, n, _: f"arn:{p}:iam::{a}:oidc-provider/{n.removeprefix('https://')}",
    ),
}


def known_arns(module: TerraformModule, scope: Scope) -> dict[tuple[str, str], Any]:
    """`("type.name", "arn")` (and `"*"` for for_each/count resources) for every resource `_ARNS` knows."""
    partition = scope.known.get(("data.aws_partition", "partition"), "aws")
    region = module.variables.get("region", "us-east-1")
    account = scope.known[("data.aws_caller_identity", "account_id")]
    known: dict[tuple[str, str], Any] = {}
    for (rtype, name), body in module.resources.items():
        if rtype not in _ARNS:
            continue
        argument, arn = _ARNS[rtype]
        instances: dict[str, Any] = {}
        for key, instance_scope in module.instances(rtype, name, scope).items():
            try:
                value = evaluate_value(body.get(argument, '"?"'), instance_scope)
                path = evaluate_value(body["path"], instance_scope) if "path" in body else None
            except HclError:
                continue
            if isinstance(value, Unknown) or isinstance(path, Unknown):
                continue
            instances[key] = {"arn": arn(partition, region, account, str(value), {"path": path}), "name": value}
        if "for_each" in body:
            known[(f"{rtype}.{name}", "*")] = instances
        elif "count" in body:
            known[(f"{rtype}.{name}", "*")] = list(instances.values())
        elif name in instances:
            known[(f"{rtype}.{name}", "arn")] = instances[name]["arn"]
    return known


def _listed(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _one_or_list(values: list[Any]) -> Any:
    """The provider writes a one-element list as its element (`"Action": "s3:GetObject"`)."""
    return values[0] if len(values) == 1 else values


def render_statement(raw: Mapping[str, Any], scope: Scope, where: str) -> dict[str, Any]:
    """One `statement` block as IAM JSON (the aws provider's `aws_iam_policy_document` semantics)."""

    def value(name: str) -> Any:
        return require(evaluate_value(raw[name], scope), f"{where}.{name}")

    statement: dict[str, Any] = {}
    if "sid" in raw:
        statement["Sid"] = value("sid")
    statement["Effect"] = value("effect") if "effect" in raw else "Allow"
    for argument, key in (("actions", "Action"), ("not_actions", "NotAction")):
        if argument in raw:
            statement[key] = _one_or_list(sorted(set(_listed(value(argument)))))
    for argument, key in (("resources", "Resource"), ("not_resources", "NotResource")):
        if argument in raw:
            statement[key] = _one_or_list(sorted(set(_listed(value(argument)))))
    for argument, key in (("principals", "Principal"), ("not_principals", "NotPrincipal")):
        blocks = _listed(raw.get(argument, []))
        if not blocks:
            continue
        rendered: dict[str, list[str]] = {}
        for block in blocks:
            kind = require(evaluate_value(block["type"], scope), f"{where}.{argument}.type")
            rendered.setdefault(kind, []).extend(
                _listed(require(evaluate_value(block["identifiers"], scope), f"{where}.{argument}"))
            )
        statement[key] = "*" if rendered == {"*": ["*"]} else {k: _one_or_list(sorted(v)) for k, v in rendered.items()}
    conditions: dict[str, dict[str, list[Any]]] = {}
    for block in _listed(raw.get("condition", [])):
        test = require(evaluate_value(block["test"], scope), f"{where}.condition.test")
        variable = require(evaluate_value(block["variable"], scope), f"{where}.condition.variable")
        values = _listed(require(evaluate_value(block["values"], scope), f"{where}.condition.values"))
        rendered_values = [str(v).lower() if isinstance(v, bool) else v for v in values]
        conditions.setdefault(test, {})[variable] = _one_or_list(rendered_values)
    if conditions:
        statement["Condition"] = conditions
    return statement


def _dynamic_statements(body: Mapping[str, Any], scope: Scope, where: str) -> list[dict[str, Any]]:
    """`dynamic "statement" { for_each = ..., content { ... } }`: one statement per element, bound to the iterator."""
    statements: list[dict[str, Any]] = []
    for block in _listed(body.get("dynamic", [])):
        for label, dynamic in block.items():
            if label.strip('"') != "statement":
                raise HclError(f"{where}: dynamic {label} blocks are outside what the renderer reads")
            if "iterator" in dynamic:
                raise HclError(f"{where}: a dynamic statement's iterator must keep its default name, statement")
            iterator = "statement"
            collection = require(evaluate_value(dynamic["for_each"], scope), f"{where}.dynamic.for_each")
            items = collection.items() if isinstance(collection, dict) else enumerate(collection)
            (content,) = _listed(dynamic["content"])
            for key, value in items:
                bound = scope.with_bound({iterator: {"key": key, "value": value}})
                statements.append(render_statement(content, bound, f"{where}.dynamic[{key!r}]"))
    return statements


def example_variables(module: TerraformModule) -> dict[str, Any]:
    """The values of `terraform.tfvars.example` in the root (required variables have no default to read)."""
    example = module.path / "terraform.tfvars.example"
    if not example.is_file():
        return {}
    parsed = hcl2.loads(example.read_text(encoding="utf-8"))
    scope = Scope({}, {}, {}, module.path)
    return {name: evaluate_value(raw, scope) for name, raw in parsed.items() if not name.startswith("__")}


def policy_documents(
    module: TerraformModule,
    account_id: str,
    region: str,
    known: Mapping[tuple[str, str], Any] | None = None,
    variables: Mapping[str, Any] | None = None,
) -> dict[str, dict[str, Any]]:
    """Every `aws_iam_policy_document` of the root: "<name>" (or "<name>[<key>]" per for_each key) -> JSON.

    Variables are their defaults, then `terraform.tfvars.example`'s values, then `variables`.
    """
    module = module.with_variables({**example_variables(module), **(variables or {})})
    scope = module.scope(_facts(account_id, region, known))
    scope = module.scope({**_facts(account_id, region, known), **known_arns(module, scope)})
    documents: dict[str, dict[str, Any]] = {}
    for (dtype, name), body in sorted(module.data.items()):
        if dtype != "aws_iam_policy_document":
            continue
        instances = module.instances_of(body, f"data.{dtype}.{name}", scope)
        for key, instance_scope in instances.items():
            label = name if key is None else f"{name}[{key}]"
            where = f"data.aws_iam_policy_document.{label}"
            try:
                statements = [
                    render_statement(raw, instance_scope, f"{where}.statement[{i}]")
                    for i, raw in enumerate(_listed(body.get("statement", [])))
                ]
                statements += _dynamic_statements(body, instance_scope, where)
            except HclError as exc:
                raise TerraformError(f"{where} in {module.path}: {exc}") from exc
            documents[label] = {"Version": "2012-10-17", "Statement": statements}
    return documents
