"""Write the inputs/outputs table of a Terraform root into its README, between the terraform-docs markers.

terraform-docs (the usual tool) is not installable in this environment, so this script renders the same
kind of table from the `.tf` files with python-hcl2: every `variable` (name, description, type, default,
required) and every `output` (name, description), sorted by name, between
`<!-- BEGIN_TF_DOCS -->` and `<!-- END_TF_DOCS -->`. The prose above the markers is left alone.

    python scripts/tf_docs.py terraform terraform/bootstrap          # rewrite the tables
    python scripts/tf_docs.py --check terraform terraform/bootstrap  # exit 1 when a table is stale
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Any

import hcl2

BEGIN = "<!-- BEGIN_TF_DOCS -->"
END = "<!-- END_TF_DOCS -->"


class DocsError(ValueError):
    """A root or README the script cannot document; the message names the file."""


def load_root(directory: Path) -> dict[str, list[Any]]:
    """Every top-level block of the root's `*.tf` files, merged by block type (python-hcl2's form)."""
    files = sorted(directory.glob("*.tf"))
    if not files:
        raise DocsError(f"no *.tf files in {directory}")
    merged: dict[str, list[Any]] = {}
    for path in files:
        with path.open(encoding="utf-8") as handle:
            for kind, blocks in hcl2.load(handle).items():
                merged.setdefault(kind, []).extend(blocks)
    return merged


def unquote(raw: Any) -> Any:
    """A python-hcl2 literal as a Python value: `'"text"'` is text; containers are unquoted recursively."""
    if isinstance(raw, str) and len(raw) >= 2 and raw.startswith('"') and raw.endswith('"'):
        try:
            return json.loads(raw)
        except json.JSONDecodeError:
            return raw[1:-1]
    if isinstance(raw, dict):
        return {unquote(k): unquote(v) for k, v in raw.items() if not str(k).startswith("__")}
    if isinstance(raw, list):
        return [unquote(v) for v in raw]
    return raw


def expression(raw: Any) -> str:
    """The HCL text of a type or expression as python-hcl2 keeps it (`${map(string)}` -> `map(string)`)."""
    text = str(raw)
    return text[2:-1] if text.startswith("${") and text.endswith("}") else text


def named_blocks(root: dict[str, list[Any]], kind: str) -> dict[str, dict[str, Any]]:
    """`variable` or `output` blocks by name."""
    found: dict[str, dict[str, Any]] = {}
    for block in root.get(kind, []):
        for name, body in block.items():
            found[unquote(name)] = body
    return found


def _cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def _prose(text: str) -> str:
    """A description for a table cell: `<name>` placeholders would be read as HTML tags."""
    return _cell(text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;"))


def _default(body: dict[str, Any]) -> str:
    if "default" not in body:
        return "n/a"
    value = unquote(body["default"])
    return "`" + _cell(json.dumps(value, sort_keys=True)) + "`"


def render(directory: Path) -> str:
    """The markdown between the markers for one root."""
    root = load_root(directory)
    lines = ["## Inputs", "", "| Name | Description | Type | Default | Required |", "| --- | --- | --- | --- | :---: |"]
    for name, body in sorted(named_blocks(root, "variable").items()):
        if "description" not in body:
            raise DocsError(f"variable {name!r} in {directory} has no description")
        required = "yes" if "default" not in body else "no"
        lines.append(
            f"| `{name}` | {_prose(unquote(body['description']))} | `{_cell(expression(body.get('type', 'any')))}` "
            f"| {_default(body)} | {required} |"
        )
    lines += ["", "## Outputs", "", "| Name | Description |", "| --- | --- |"]
    for name, body in sorted(named_blocks(root, "output").items()):
        if "description" not in body:
            raise DocsError(f"output {name!r} in {directory} has no description")
        lines.append(f"| `{name}` | {_prose(unquote(body['description']))} |")
    return "\n".join(lines) + "\n"


def updated_readme(readme: str, table: str, where: Path) -> str:
    """The README text with the table between the markers replaced."""
    start, end = readme.find(BEGIN), readme.find(END)
    if start < 0 or end < start:
        raise DocsError(f"{where} has no {BEGIN} ... {END} section")
    return readme[: start + len(BEGIN)] + "\n" + table + readme[end:]


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--check", action="store_true", help="change nothing; exit 1 when a README is stale")
    parser.add_argument("roots", nargs="+", type=Path, help="Terraform root directories (each with a README.md)")
    args = parser.parse_args(argv)
    stale = []
    for directory in args.roots:
        readme_path = directory / "README.md"
        readme = readme_path.read_text(encoding="utf-8")
        new = updated_readme(readme, render(directory), readme_path)
        if new != readme:
            stale.append(readme_path)
            if not args.check:
                readme_path.write_text(new, encoding="utf-8")
    for path in stale:
        print(f"{path}: inputs/outputs table {'is stale' if args.check else 'rewritten'}")
    return 1 if stale and args.check else 0


if __name__ == "__main__":
    sys.exit(main())
