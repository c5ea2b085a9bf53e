"""A small evaluator for the Terraform expressions pushtrain's `.tf` files use to build names.

python-hcl2 parses the files; it leaves every expression as HCL text (`"${var.name}-trainer"`,
`${coalesce(var.x, "...")}`). This module evaluates the subset a naming scheme needs:

- literals (strings with `${...}` interpolation, numbers, bools, null, lists, objects);
- references: `var.<name>` (the variable's default), `local.<name>`, `path.module`, and resource or
  data attributes the caller knows (`Scope.known`, keyed by `(type, attribute)`; `(type, "*")` is the
  whole collection of a resource with `count`/`for_each`; `("type.name", attribute)` one resource), or a resource
  argument written in the configuration (`aws_ecs_cluster.this.name` is that block's `name`);
- `for` expressions over lists and maps, the conditional `c ? a : b`, `==`, `!=`, `!`, `&&`, `||`;
- the functions `coalesce`, `concat`, `contains`, `distinct`, `format`, `join`, `jsonencode`, `lower`, `merge`,
  `replace` (plain text), `templatefile`, `keys`, `length`, `slice`, `sort`, `tolist`, `toset`, `tomap`,
  `tostring`, `tonumber`, `upper`, `values`.

A reference the evaluator cannot know before an apply (a subnet id, an ARN) becomes `Unknown`, like
Terraform's "known after apply"; it is an error only where a caller needs the value (`require`).
Anything outside the subset raises `HclError` naming the expression, so a name is never guessed.
"""

from __future__ import annotations

import json
import operator
import re
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


class HclError(ValueError):
    """An expression outside the supported subset, or a reference to something that does not exist."""


@dataclass(frozen=True)
class Unknown:
    """A value only known after `terraform apply` (for example `aws_subnet.private[*].id`)."""

    reference: str

    def __str__(self) -> str:
        return f"(known after apply: {self.reference})"


@dataclass(frozen=True)
class JsonEncoded:
    """The result of `jsonencode(value)`: kept as a value so callers can read into it."""

    value: Any

    def text(self) -> str:
        return json.dumps(require(self.value, "jsonencode(...)"), separators=(",", ":"))


def require(value: Any, what: str) -> Any:
    """`value` with every `Unknown` inside it rejected: raises `HclError` naming `what` and the reference."""
    if isinstance(value, Unknown):
        raise HclError(f"{what} is only known after apply ({value.reference}); it cannot be read from the .tf files")
    if isinstance(value, JsonEncoded):
        return value.text()
    if isinstance(value, dict):
        return {k: require(v, f"{what}.{k}") for k, v in value.items()}
    if isinstance(value, list):
        return [require(v, f"{what}[{i}]") for i, v in enumerate(value)]
    return value


@dataclass
class Scope:
    """What references resolve to: variables' defaults, locals (evaluated on demand), resources, known values."""

    variables: Mapping[str, Any]
    locals: Mapping[str, Any]  # raw serialized values from python-hcl2, evaluated lazily
    resources: Mapping[tuple[str, str], Mapping[str, Any]]  # (type, name) -> raw arguments
    module_path: Path
    known: Mapping[tuple[str, str], Any] = field(default_factory=dict)  # (type, attribute) -> value
    bound: Mapping[str, Any] = field(default_factory=dict)  # for-expression and template variables
    _locals_done: dict[str, Any] = field(default_factory=dict)
    _locals_active: set[str] = field(default_factory=set)

    def with_bound(self, names: Mapping[str, Any]) -> Scope:
        child = Scope(
            self.variables, self.locals, self.resources, self.module_path, self.known, {**self.bound, **names}
        )
        child._locals_done = self._locals_done
        child._locals_active = self._locals_active
        return child

    def local(self, name: str) -> Any:
        if name in self._locals_done:
            return self._locals_done[name]
        if name not in self.locals:
            raise HclError(f"local.{name} is not defined in any locals block")
        if name in self._locals_active:
            raise HclError(f"local.{name} refers to itself")
        self._locals_active.add(name)
        try:
            value = evaluate_value(self.locals[name], self)
        finally:
            self._locals_active.discard(name)
        self._locals_done[name] = value
        return value


# --- values as python-hcl2 serializes them ---------------------------------------------------------


def evaluate_value(raw: Any, scope: Scope) -> Any:
    """Evaluate a value as python-hcl2 serializes it: `"\"text\""` is a string, `"${expr}"` an expression."""
    if isinstance(raw, dict):
        return {_unquote_key(k): evaluate_value(v, scope) for k, v in raw.items() if not k.startswith("__")}
    if isinstance(raw, list):
        return [evaluate_value(v, scope) for v in raw]
    if isinstance(raw, str):
        if raw.startswith("${") and raw.endswith("}") and _matching_brace(raw, 1) == len(raw) - 1:
            return evaluate(raw[2:-1], scope)
        if len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
            return render_template(raw[1:-1], scope)
        return evaluate(raw, scope)  # bare keywords python-hcl2 leaves unquoted, such as a type
    return raw


def _unquote_key(key: str) -> str:
    return key[1:-1] if len(key) >= 2 and key.startswith('"') and key.endswith('"') else key


def _matching_brace(text: str, start: int) -> int:
    """Index of the `}` closing the `{` at `start`, skipping quoted strings and nested braces."""
    depth, i, in_string = 0, start, False
    while i < len(text):
        ch = text[i]
        if in_string:
            if ch == "\\":
                i += 1
            elif ch == '"':
                in_string = False
            elif text.startswith("${", i):
                close = _matching_brace(text, i + 1)
                i = close
        elif ch == '"':
            in_string = True
        elif ch == "{":
            depth += 1
        elif ch == "}":
            depth -= 1
            if depth == 0:
                return i
        i += 1
    raise HclError(f"unbalanced braces in {text!r}")


_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", '"': '"', "\\": "\\"}


def render_template(text: str, scope: Scope) -> Any:
    """Render a template string's `${...}` interpolations; an `Unknown` part makes the whole value unknown."""
    parts: list[Any] = []
    i = 0
    while i < len(text):
        if text.startswith("$${", i):
            parts.append("${")
            i += 3
        elif text.startswith("%{", i) and not text.startswith("%%{", i):
            raise HclError(f"template directives (%{{...}}) are not supported: {text!r}")
        elif text.startswith("${", i):
            close = _matching_brace(text, i + 1)
            parts.append(evaluate(text[i + 2 : close], scope))
            i = close + 1
        elif text[i] == "\\" and i + 1 < len(text) and text[i + 1] in _ESCAPES:
            parts.append(_ESCAPES[text[i + 1]])
            i += 2
        else:
            parts.append(text[i])
            i += 1
    for part in parts:
        if isinstance(part, Unknown):
            return part
    if len(parts) == 1 and not isinstance(parts[0], str):
        return parts[0]  # "${x}" alone keeps x's type, as in Terraform
    return "".join(_to_string(p, text) for p in parts)


def _to_string(value: Any, where: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, (str, int, float)):
        return str(value)
    if isinstance(value, JsonEncoded):
        return value.text()
    raise HclError(f"cannot interpolate {value!r} into a string in {where!r}")


# --- expressions ---------------------------------------------------------------------------------

_TOKEN = re.compile(
    r"""\s*(?:
      (?P<string>"(?:[^"\\$]|\\.|\$(?!\{)|\$\{(?:[^{}"]|"[^"]*"|\{[^{}]*\})*\})*")
    | (?P<number>\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)
    | (?P<op>=>|==|!=|>=|<=|&&|\|\||\.\.\.|\[\*\]|[()\[\]{},.?:=!<>])
    | (?P<name>[A-Za-z_][A-Za-z0-9_-]*)
    )""",
    re.VERBOSE,
)


def _tokenize(text: str) -> list[tuple[str, str]]:
    tokens: list[tuple[str, str]] = []
    pos = 0
    while pos < len(text):
        if text[pos:].strip() == "":
            break
        match = _TOKEN.match(text, pos)
        if not match or match.end() == pos:
            raise HclError(f"unsupported syntax at {text[pos : pos + 30]!r} in expression {text!r}")
        kind = match.lastgroup or ""
        tokens.append((kind, match.group(kind)))
        pos = match.end()
    return tokens


@dataclass
class _Parser:
    """Recursive descent over the tokens; evaluates while parsing (bodies of `for` are re-parsed per item)."""

    text: str
    tokens: list[tuple[str, str]]
    scope: Scope
    pos: int = 0
    skip: int = 0  # > 0 while parsing a branch whose value is not needed (no lookups, no errors)

    def peek(self, offset: int = 0) -> tuple[str, str]:
        i = self.pos + offset
        return self.tokens[i] if i < len(self.tokens) else ("end", "")

    def take(self, value: str | None = None) -> tuple[str, str]:
        token = self.peek()
        if value is not None and token[1] != value:
            raise HclError(f"expected {value!r} but found {token[1] or 'the end'!r} in expression {self.text!r}")
        self.pos += 1
        return token

    def expression(self) -> Any:
        condition = self.or_expr()
        if self.peek()[1] != "?":
            return condition
        self.take("?")
        if isinstance(condition, Unknown) and not self.skip:
            self._skip_branch(self.expression)
            self.take(":")
            self._skip_branch(self.expression)
            return condition
        if self.skip:
            self.expression()
            self.take(":")
            self.expression()
            return None
        if condition:
            value = self.expression()
            self.take(":")
            self._skip_branch(self.expression)
            return value
        self._skip_branch(self.expression)
        self.take(":")
        return self.expression()

    def _skip_branch(self, parse: Callable[[], Any]) -> None:
        self.skip += 1
        try:
            parse()
        finally:
            self.skip -= 1

    def or_expr(self) -> Any:
        left = self.and_expr()
        while self.peek()[1] == "||":
            self.take()
            right = self.and_expr()
            left = _logic(left, right, any)
        return left

    def and_expr(self) -> Any:
        left = self.equality()
        while self.peek()[1] == "&&":
            self.take()
            right = self.equality()
            left = _logic(left, right, all)
        return left

    def equality(self) -> Any:
        left = self.comparison()
        while self.peek()[1] in {"==", "!="}:
            op = self.take()[1]
            right = self.comparison()
            for side in (left, right):
                if isinstance(side, Unknown):
                    left = side
                    break
            else:
                left = (left == right) if op == "==" else (left != right)
        return left

    def comparison(self) -> Any:
        left = self.unary()
        while self.peek()[1] in _COMPARE:
            op = self.take()[1]
            right = self.unary()
            if self.skip or isinstance(left, Unknown) or isinstance(right, Unknown):
                left = left if isinstance(left, Unknown) else right if isinstance(right, Unknown) else None
                continue
            if not all(isinstance(side, (int, float)) and not isinstance(side, bool) for side in (left, right)):
                raise HclError(f"{op} compares numbers, not {left!r} and {right!r}, in expression {self.text!r}")
            left = _COMPARE[op](left, right)
        return left

    def unary(self) -> Any:
        if self.peek()[1] == "!":
            self.take()
            value = self.unary()
            return value if isinstance(value, Unknown) else not value
        return self.postfix()

    def postfix(self) -> Any:
        kind, token = self.peek()
        if kind == "name" and token not in {"true", "false", "null", "for"} and self.peek(1)[1] != "(":
            return self.reference()
        value = self.primary()
        while self.peek()[1] in {".", "["}:
            value = self._index(value, repr(value))
        return value

    def _index(self, value: Any, path: str) -> Any:
        if self.peek()[1] == ".":
            self.take(".")
            key: Any = self.take()[1]
        else:
            self.take("[")
            key = self.expression()
            self.take("]")
        if self.skip or isinstance(value, Unknown):
            return value
        try:
            return value[int(key)] if isinstance(value, list) else value[key]
        except (KeyError, IndexError, TypeError, ValueError) as exc:
            raise HclError(f"{path} has no element {key!r} (in expression {self.text!r})") from exc

    def reference(self) -> Any:
        parts = [self.take()[1]]
        while self.peek()[1] == "." and self.peek(1)[0] == "name":
            self.take(".")
            parts.append(self.take()[1])
        splat = False
        if self.peek()[1] == "[*]":
            self.take()
            splat = True
            while self.peek()[1] == "." and self.peek(1)[0] == "name":
                self.take(".")
                parts.append(self.take()[1])
        name = ".".join(parts)
        if self.skip:
            value: Any = None
        else:
            value = self._resolve(parts, splat)
        while self.peek()[1] in {".", "["}:
            value = self._index(value, name)
        return value

    def _resolve(self, parts: list[str], splat: bool) -> Any:
        root, dotted = parts[0], ".".join(parts)
        if root in self.scope.bound:
            return _members(self.scope.bound[root], parts[1:], dotted)
        if root == "var":
            if len(parts) < 2 or parts[1] not in self.scope.variables:
                raise HclError(f"{dotted} is not a declared variable with a default")
            return _members(self.scope.variables[parts[1]], parts[2:], dotted)
        if root == "local" and len(parts) >= 2:
            return _members(self.scope.local(parts[1]), parts[2:], dotted)
        if root == "path" and parts[1:] == ["module"]:
            return str(self.scope.module_path)
        if root == "data" and len(parts) >= 3:
            return self._data_attribute(parts, dotted)
        if len(parts) >= 2:
            return self._resource_attribute(parts, splat, dotted)
        raise HclError(f"unsupported reference {dotted!r} in expression {self.text!r}")

    def _data_attribute(self, parts: list[str], dotted: str) -> Any:
        """A data source's attribute: known for this source (`data.type.name`), else for its type, else
        Unknown; `data.type.name[key]` is the collection of a count/for_each one, known from the caller."""
        source = f"data.{parts[1]}.{parts[2]}"
        if len(parts) == 3:
            return self.scope.known.get((source, "*"), Unknown(dotted))
        if (source, parts[3]) in self.scope.known:
            return _members(self.scope.known[(source, parts[3])], parts[4:], dotted)
        return self.scope.known.get((f"data.{parts[1]}", parts[3]), Unknown(dotted))

    def _resource_attribute(self, parts: list[str], splat: bool, dotted: str) -> Any:
        """`type.name.attribute`: known from the caller, else the argument in the .tf file, else Unknown."""
        rtype, rname = parts[0], parts[1]
        arguments = self.scope.resources.get((rtype, rname))
        if len(parts) == 2:
            if arguments is None:
                raise HclError(f"unsupported reference {dotted!r} in expression {self.text!r}")
            # A whole resource: the collection of a count/for_each resource, known only from the caller.
            return self.scope.known.get((f"{rtype}.{rname}", "*"), self.scope.known.get((rtype, "*"), Unknown(dotted)))
        attribute = parts[2]
        if (f"{rtype}.{rname}", attribute) in self.scope.known:
            return self.scope.known[(f"{rtype}.{rname}", attribute)]
        if (rtype, attribute) in self.scope.known:
            return self.scope.known[(rtype, attribute)]
        if arguments is None:
            raise HclError(f"{dotted} refers to resource {rtype}.{rname}, which no .tf file declares")
        if attribute in arguments and not splat and "count" not in arguments and "for_each" not in arguments:
            return evaluate_value(arguments[attribute], self.scope)
        return Unknown(dotted)

    def primary(self) -> Any:  # noqa: PLR0911 - one branch per kind of HCL term
        kind, word = self.take()
        if kind == "string":
            return None if self.skip else render_template(word[1:-1], self.scope)
        if kind == "number":
            return float(word) if any(c in word for c in ".eE") else int(word)
        if kind == "name":
            if word in {"true", "false"}:
                return word == "true"
            if word == "null":
                return None
            if self.peek()[1] == "(":
                return self.call(word)
        if word == "(":
            value = self.expression()
            self.take(")")
            return value
        if word == "[":
            if self.peek()[1] == "for":
                return self.for_expr("]")
            return self._sequence("]", self.expression)
        if word == "{":
            if self.peek()[1] == "for":
                return self.for_expr("}")
            return dict(self._sequence("}", self._object_item))
        raise HclError(f"unsupported syntax {word!r} in expression {self.text!r}")

    def _sequence(self, close: str, item: Callable[[], Any]) -> list[Any]:
        items = []
        while self.peek()[1] != close:
            items.append(item())
            if self.peek()[1] == ",":
                self.take(",")
            elif self.peek()[1] != close and self.peek()[0] != "name" and self.peek()[0] != "string":
                raise HclError(f"expected ',' or {close!r} in expression {self.text!r}, found {self.peek()[1]!r}")
        self.take(close)
        return items

    def _object_item(self) -> tuple[str, Any]:
        kind, token = self.take()
        if kind == "string":
            key = token[1:-1]
        elif kind == "name":
            key = token
        else:
            raise HclError(f"unsupported object key {token!r} in expression {self.text!r}")
        if self.peek()[1] not in {"=", ":"}:
            raise HclError(f"expected '=' after object key {key!r} in expression {self.text!r}")
        self.take()
        return key, self.expression()

    def for_expr(self, close: str) -> Any:
        self.take("for")
        names = [self.take()[1]]
        if self.peek()[1] == ",":
            self.take(",")
            names.append(self.take()[1])
        self.take("in")
        collection = self.expression()
        self.take(":")
        body_start = self.pos
        if self.skip or isinstance(collection, Unknown):
            self._skip_branch(lambda: self._for_body(close))
            self.take(close)
            return collection if isinstance(collection, Unknown) else None
        pairs = list(collection.items()) if isinstance(collection, dict) else list(enumerate(collection))
        results: list[Any] = []
        end = body_start
        for key, value in pairs:
            bound = {names[0]: value} if len(names) == 1 else {names[0]: key, names[1]: value}
            inner = _Parser(self.text, self.tokens, self.scope.with_bound(bound), body_start)
            result = inner._for_body(close)
            end = inner.pos
            if result is not _FILTERED:
                results.append(result)
        if not pairs:
            self._skip_branch(lambda: self._for_body(close))
            end = self.pos
        self.pos = end
        self.take(close)
        return dict(results) if close == "}" else results

    def _for_body(self, close: str) -> Any:
        first = self.expression()
        value = first
        if close == "}":
            self.take("=>")
            value = (first, self.expression())
        if self.peek()[1] == "if":
            self.take("if")
            keep = self.expression()
            if not self.skip and not keep:
                return _FILTERED
        return value

    def call(self, name: str) -> Any:
        self.take("(")
        args = self._sequence(")", self.expression)
        if self.skip:
            return None
        function = _FUNCTIONS.get(name)
        if function is None:
            raise HclError(f"function {name}() is not supported by the local pipeline's reader ({self.text!r})")
        for arg in args:
            if isinstance(arg, Unknown) and name not in {"coalesce", "jsonencode", "templatefile", "merge"}:
                return arg
        return function(self.scope, *args)


_FILTERED = object()


def _members(value: Any, keys: list[str], dotted: str) -> Any:
    for key in keys:
        value = _member(value, key, dotted)
    return value


def _member(value: Any, key: str, dotted: str) -> Any:
    if isinstance(value, Unknown):
        return value
    if not isinstance(value, dict) or key not in value:
        raise HclError(f"{dotted}: no attribute {key!r} in {value!r}")
    return value[key]


_COMPARE: dict[str, Callable[[Any, Any], bool]] = {
    ">": operator.gt,
    "<": operator.lt,
    ">=": operator.ge,
    "<=": operator.le,
}


def _logic(left: Any, right: Any, combine: Callable[[list[bool]], bool]) -> Any:
    for side in (left, right):
        if isinstance(side, Unknown):
            return side
    return combine([bool(left), bool(right)])


def _coalesce(_: Scope, *args: Any) -> Any:
    for arg in args:
        if isinstance(arg, Unknown):
            return arg
        if arg is not None and arg != "":
            return arg
    raise HclError("coalesce(): every argument is null or empty")


def _format(_: Scope, spec: str, *args: Any) -> str:
    values = iter(args)

    def one(match: re.Match[str]) -> str:
        if match.group(0) == "%%":
            return "%"
        return _to_string(next(values), spec)

    return re.sub(r"%%|%[sdv]", one, spec)


def _templatefile(scope: Scope, path: str, variables: Mapping[str, Any] | None = None) -> Any:
    file = Path(path) if Path(path).is_absolute() else scope.module_path / path
    if not file.is_file():
        raise HclError(f"templatefile(): {file} does not exist")
    template_scope = Scope({}, {}, {}, scope.module_path, {}, dict(variables or {}))
    return render_template(file.read_text(encoding="utf-8"), template_scope)


def _replace(_: Scope, text: str, search: str, replacement: str) -> str:
    if len(search) > 1 and search.startswith("/") and search.endswith("/"):
        raise HclError(f"replace() with a regular expression ({search!r}) is outside the local pipeline's reader")
    return text.replace(search, replacement)


def _merge(_: Scope, *maps: Any) -> Any:
    merged: dict[str, Any] = {}
    for item in maps:
        if isinstance(item, Unknown):
            return item
        merged.update(item or {})
    return merged


_FUNCTIONS: dict[str, Callable[..., Any]] = {
    "coalesce": _coalesce,
    "concat": lambda _, *lists: [x for items in lists for x in items],
    "contains": lambda _, items, value: value in items,
    "distinct": lambda _, items: list(dict.fromkeys(items)),
    "format": _format,
    "keys": lambda _, mapping: sorted(mapping),
    "length": lambda _, items: len(items),
    "sort": lambda _, items: sorted(items),
    "values": lambda _, mapping: [mapping[k] for k in sorted(mapping)],
    "join": lambda _, sep, items: sep.join(_to_string(x, "join()") for x in items),
    "jsonencode": lambda _, value: JsonEncoded(value),
    "lower": lambda _, text: text.lower(),
    "merge": _merge,
    "replace": _replace,
    "templatefile": _templatefile,
    "tolist": lambda _, items: list(items),
    "toset": lambda _, items: sorted(dict.fromkeys(items), key=str),
    "slice": lambda _, items, start, end: list(items)[start:end],
    "tomap": lambda _, mapping: dict(mapping),
    "tonumber": lambda _, value: float(value) if "." in str(value) else int(value),
    "tostring": lambda _, value: _to_string(value, "tostring()"),
    "upper": lambda _, text: text.upper(),
}


def evaluate(text: str, scope: Scope) -> Any:
    """Evaluate one HCL expression (the text inside `${...}`) in `scope`."""
    parser = _Parser(text, _tokenize(text), scope)
    value = parser.expression()
    if parser.pos != len(parser.tokens):
        raise HclError(f"unsupported syntax at {parser.peek()[1]!r} in expression {text!r}")
    return value
