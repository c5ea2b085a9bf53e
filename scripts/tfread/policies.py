"""Every IAM policy document of a Terraform root, rendered to the JSON `terraform apply` would send.

The roots write their policies as `data "aws_iam_policy_document"` blocks. This module evaluates them
with the local pipeline's HCL reader (`tfread.hcl`) for one account and region, so a linter
(`scripts/lint.py --only iam`) and the contract tests read the same JSON:

    >>> documents = policy_documents(TerraformModule.load(Path("terraform")), "123456789012", "us-east-1")
    >>> documents["trigger"]["Statement"][0]["Action"]
    [...]

ARNs only an apply knows are built from the resources' names with AWS's documented ARN formats (a KMS
key id, which AWS generates, is a fixed placeholder). A document that still holds a value only an apply
knows is an error naming it: a policy is never linted half-rendered.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from typing import Any

import hcl2

from tfread.hcl import HclError, JsonEncoded, Scope, Unknown, evaluate_value, require
from tfread.terraform import TerraformError, TerraformModule, _facts

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
            if rtype == "aws_iam_role":
                instances[key]["id"] = value  # a role's id in Terraform is its name
        if "for_each" in body:
            known[(f"{rtype}.{name}", "*")] = instances
        elif "count" in body:
            known[(f"{rtype}.{name}", "*")] = list(instances.values())
        elif name in instances:
            known[(f"{rtype}.{name}", "arn")] = instances[name]["arn"]
            if rtype == "aws_iam_role":
                known[(f"{rtype}.{name}", "id")] = instances[name]["id"]
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


@dataclass(frozen=True)
class RolePolicies:
    """What IAM holds for one role: its trust policy, its inline policies and its attached managed ones."""

    role: str  # "aws_iam_role.<name>" or "aws_iam_role.<name>[<key>]"
    name: str
    trust: dict[str, Any] | None
    inline: dict[str, dict[str, Any]] = field(default_factory=dict)  # policy name -> document
    # attached policy ARN -> document; None for a policy the root does not define (an AWS managed one)
    managed: dict[str, dict[str, Any] | None] = field(default_factory=dict)


def _document(value: Any, where: str) -> dict[str, Any] | None:
    """A `policy`-like argument's value as JSON: a rendered document's text or a jsonencode()d object."""
    if isinstance(value, JsonEncoded):
        value = value.value
    if isinstance(value, str):
        try:
            value = json.loads(value)
        except json.JSONDecodeError as exc:
            raise TerraformError(f"{where} is not JSON: {exc}") from exc
    if value is None or isinstance(value, Unknown):
        return None
    if not isinstance(value, dict):
        raise TerraformError(f"{where} is not a policy document: {value!r}")
    return value


def document_scope(
    module: TerraformModule,
    account_id: str,
    region: str,
    known: Mapping[tuple[str, str], Any] | None = None,
    variables: Mapping[str, Any] | None = None,
) -> tuple[TerraformModule, Scope]:
    """The module under the variables, and a scope where every rendered `aws_iam_policy_document`'s
    `.json` and every ARN `known_arns` builds are known: a resource's `policy = data....json` evaluates."""
    documents = policy_documents(module, account_id, region, known, variables)
    module = module.with_variables({**example_variables(module), **(variables or {})})
    facts = _facts(account_id, region, known)
    rendered: dict[tuple[str, str], Any] = {}
    for label, document in documents.items():
        name, _, key = label.partition("[")
        source = f"data.aws_iam_policy_document.{name}"
        text = json.dumps(document)
        if key:
            rendered.setdefault((source, "*"), {})[key.removesuffix("]")] = {"json": text}
        else:
            rendered[(source, "json")] = text
    for (source, attribute), value in list(rendered.items()):
        if attribute == "*" and "count" in module.data.get(("aws_iam_policy_document", source.rsplit(".", 1)[1]), {}):
            rendered[(source, "*")] = [value[k] for k in sorted(value, key=int)]
    scope = module.scope({**facts, **rendered})
    return module, module.scope({**facts, **rendered, **known_arns(module, scope)})


def resource_values(module: TerraformModule, scope: Scope, rtype: str, argument: str) -> dict[str, Any]:
    """`argument` of every instance of every `rtype` resource: "<type>.<name>[<key>]" -> value (Unknown when
    only an apply knows it, None when unset)."""
    values: dict[str, Any] = {}
    for (kind, name), body in sorted(module.resources.items()):
        if kind != rtype:
            continue
        for key, instance_scope in module.instances_of(body, f"{kind}.{name}", scope).items():
            label = f"{kind}.{name}" if key is None else f"{kind}.{name}[{key}]"
            try:
                values[label] = evaluate_value(body[argument], instance_scope) if argument in body else None
            except HclError as exc:
                raise TerraformError(f"{label}.{argument} in {module.path}: {exc}") from exc
    return values


def role_policies(
    module: TerraformModule,
    account_id: str,
    region: str,
    known: Mapping[tuple[str, str], Any] | None = None,
    variables: Mapping[str, Any] | None = None,
) -> dict[str, RolePolicies]:
    """Every `aws_iam_role` of the root (by its name) with the policies IAM would hold for it: its
    `assume_role_policy`, the `aws_iam_role_policy` resources naming it, and the managed policies that
    `aws_iam_role_policy_attachment` (or `managed_policy_arns`) attach to it."""
    return roles_in(*document_scope(module, account_id, region, known, variables))


def roles_in(module: TerraformModule, scope: Scope) -> dict[str, RolePolicies]:
    """`role_policies` for a module and scope `document_scope` made (so a caller renders once)."""
    names = resource_values(module, scope, "aws_iam_role", "name")
    trusts = resource_values(module, scope, "aws_iam_role", "assume_role_policy")
    roles: dict[str, RolePolicies] = {}
    for label, name in names.items():
        if not isinstance(name, str):
            raise TerraformError(f"{label}.name in {module.path} is not known before apply: {name!r}")
        roles[name] = RolePolicies(label, name, _document(trusts[label], f"{label}.assume_role_policy"))
    managed_documents = {
        arn: _document(policy, f"{label}.policy")
        for label, policy in resource_values(module, scope, "aws_iam_policy", "policy").items()
        for arn in [_managed_arn(module, scope, label)]
    }
    inline_roles = resource_values(module, scope, "aws_iam_role_policy", "role")
    inline_names = resource_values(module, scope, "aws_iam_role_policy", "name")
    inline_policies = resource_values(module, scope, "aws_iam_role_policy", "policy")
    for label, role in inline_roles.items():
        holder = _role(roles, role, f"{label}.role")
        holder.inline[str(inline_names[label] or label)] = _document(inline_policies[label], f"{label}.policy") or {}
    attached_roles = resource_values(module, scope, "aws_iam_role_policy_attachment", "role")
    attached_arns = resource_values(module, scope, "aws_iam_role_policy_attachment", "policy_arn")
    for label, role in attached_roles.items():
        arn = attached_arns[label]
        if not isinstance(arn, str):
            raise TerraformError(f"{label}.policy_arn in {module.path} is not known before apply: {arn!r}")
        _role(roles, role, f"{label}.role").managed[arn] = managed_documents.get(arn)
    for label, arns in resource_values(module, scope, "aws_iam_role", "managed_policy_arns").items():
        for arn in arns or []:
            roles[names[label]].managed[str(arn)] = managed_documents.get(str(arn))
    return roles


def _managed_arn(module: TerraformModule, scope: Scope, label: str) -> str:
    resource, _, key = label.partition("[")
    value = scope.known.get((resource, "*"), {}) if key else scope.known.get((resource, "arn"))
    if key:
        value = value.get(key.removesuffix("]"), {}).get("arn") if isinstance(value, dict) else None
    if not isinstance(value, str):
        raise TerraformError(f"{label} in {module.path}: its ARN is not known before apply")
    return value


def _role(roles: Mapping[str, RolePolicies], reference: Any, where: str) -> RolePolicies:
    """The role a `role` argument (its name, or its id, which is the name) names."""
    if not isinstance(reference, str) or reference not in roles:
        raise TerraformError(f"{where} names no role of this root: {reference!r}")
    return roles[reference]
