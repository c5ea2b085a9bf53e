"""Build the trigger's deployment zip, deterministically: the same sources give the same bytes.

    python scripts/package_lambda.py                     # -> build/trigger.zip, prints its sha256
    python scripts/package_lambda.py --output dist/x.zip

The zip holds the `trigger` package alone (boto3 comes with the Lambda runtime): its `.py` files and the
parameter schema it reads (`params.schema.json`, generated from the trainer's configuration), in sorted
order, each with a fixed timestamp (1980-01-01, the zip epoch) and mode 0644, so neither
checkout times nor umasks reach the bytes. Terraform can then compare hashes and redeploy only on a
real change. Standard library only: it runs before any virtualenv exists.

The `.py` files go in without their comments and with empty docstrings (`slim`): most of the sources'
bytes are prose the function never reads. Every line keeps its number and every code line its text, so
a traceback in CloudWatch points at the line in the repository, and `slim` checks that the program is
unchanged (the same syntax tree, docstrings aside, on the same lines) before a file is zipped. Every file
is read and slimmed before the zip is written, to a temporary file renamed over the output: a refused
module leaves the previous zip as it was.
"""

from __future__ import annotations

import argparse
import ast
import hashlib
import io
import sys
import tokenize
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "lambda" / "src" / "trigger"
OUTPUT = REPO / "build" / "trigger.zip"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
FILE_MODE = 0o100644  # regular file, rw-r--r--
DATA = ("params.schema.json",)  # read by trigger.events at import


def _docstrings(tree: ast.Module) -> list[ast.Constant]:
    """The docstring nodes of the module and of every class and function in it."""
    owners = [
        tree,
        *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef)),
    ]
    found = []
    for owner in owners:
        first = owner.body[0] if owner.body else None
        if isinstance(first, ast.Expr) and isinstance(first.value, ast.Constant) and isinstance(first.value.value, str):
            found.append(first.value)
    return found


def _shape(tree: ast.Module) -> str:
    """The tree with its docstrings emptied, and the first line of every statement and expression: what must
    not change (a column may: a statement after a docstring on its line moves left; and a block that ends
    with a docstring ends on the docstring's first line)."""
    docstrings = _docstrings(tree)
    for node in docstrings:
        node.value = ""
    lines = [n.lineno for n in ast.walk(tree) if isinstance(n, ast.stmt | ast.expr)]
    return ast.dump(tree, include_attributes=False) + repr(lines)


def slim(source: str, name: str = "<source>") -> str:
    """`source` without comments and with empty docstrings, each line where it was (the line count, every
    statement's line, and the text of every code line before its comment are kept; only a statement that
    shares a line with a docstring moves left)."""
    lines = source.splitlines(keepends=True)
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type == tokenize.COMMENT:
            row, col = token.start
            line = lines[row - 1]
            lines[row - 1] = line[:col].rstrip() + line[len(line.rstrip("\r\n")) :]
    # ast positions are UTF-8 byte offsets: edit the docstrings' lines as bytes, last first
    data = [line.encode() for line in lines]
    for node in sorted(_docstrings(ast.parse(source, name)), key=lambda n: n.lineno, reverse=True):
        first, last = node.lineno - 1, (node.end_lineno or node.lineno) - 1
        start, end = node.col_offset, node.end_col_offset or 0
        data[first] = data[first][:start] + b'""' + data[last][end:]
        for row in range(first + 1, last + 1):
            data[row] = b"\n"
    slimmed = b"".join(data).decode()
    if slimmed.count("\n") != source.count("\n") or _shape(ast.parse(slimmed, name)) != _shape(ast.parse(source, name)):
        raise SystemExit(f"{name}: slimming changed the program; zip it unslimmed or fix scripts/package_lambda.py")
    return slimmed


def sources(package: Path) -> list[Path]:
    """The package's Python files and its data files (DATA), sorted by their path inside the zip (no caches)."""
    files = [p for p in package.rglob("*.py") if "__pycache__" not in p.parts]
    files += [package / name for name in DATA if (package / name).is_file()]
    if not (package / "__init__.py").is_file():
        raise SystemExit(f"{package} is not a Python package (no __init__.py)")
    return sorted(files, key=lambda p: p.relative_to(package.parent).as_posix())


def build(package: Path, output: Path, *, slimmed: bool = True) -> str:
    """Write the zip and return its sha256 (hex); `slimmed=False` zips the sources as they are (to compare)."""
    entries = []
    for path in sources(package):
        data = path.read_bytes()
        if slimmed and path.suffix == ".py":
            data = slim(data.decode("utf-8"), str(path)).encode("utf-8")
        entries.append((path.relative_to(package.parent).as_posix(), data))
    output.parent.mkdir(parents=True, exist_ok=True)
    partial = output.with_name(output.name + ".partial")
    try:
        with zipfile.ZipFile(partial, "w") as archive:
            for name, data in entries:
                info = zipfile.ZipInfo(name, date_time=ZIP_EPOCH)
                info.create_system = 3  # unix, so the mode below is honoured
                info.external_attr = FILE_MODE << 16
                info.compress_type = zipfile.ZIP_DEFLATED
                archive.writestr(info, data, compresslevel=9)
    except BaseException:
        partial.unlink(missing_ok=True)
        raise
    partial.replace(output)  # atomic on one filesystem: the output is the old zip or the whole new one
    return hashlib.sha256(output.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help=f"package folder (default {SOURCE})")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"zip to write (default {OUTPUT})")
    args = parser.parse_args(argv)
    digest = build(args.source.resolve(), args.output.resolve())
    print(f"{digest}  {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
