"""The deployment zip is deterministic and holds our package alone."""

from __future__ import annotations

import ast
import hashlib
import io
import os
import shutil
import subprocess
import sys
import tokenize
import zipfile
from pathlib import Path

import package_lambda  # scripts/ is on pytest's pythonpath
import pytest

REPO = Path(__file__).resolve().parents[2]


DATA_FILES = ("trigger/params.schema.json",)


def copy_package(tmp_path: Path) -> Path:
    target = tmp_path / "src" / "trigger"
    shutil.copytree(package_lambda.SOURCE, target, ignore=shutil.ignore_patterns("__pycache__"))
    return target


def test_same_sources_give_the_same_bytes_whatever_the_file_times(tmp_path: Path) -> None:
    # GIVEN a copy of the package, zipped once
    package = copy_package(tmp_path)
    first = package_lambda.build(package, tmp_path / "a.zip")

    # WHEN every file gets another mtime and the package is zipped again
    for path in package.rglob("*"):
        os.utime(path, (1_900_000_000, 1_900_000_000))
    second = package_lambda.build(package, tmp_path / "b.zip")

    # THEN the bytes are identical
    assert first == second
    assert (tmp_path / "a.zip").read_bytes() == (tmp_path / "b.zip").read_bytes()


def test_zip_holds_only_the_package_sources_sorted_with_fixed_metadata(tmp_path: Path) -> None:
    package = copy_package(tmp_path)
    (package / "__pycache__").mkdir()
    (package / "__pycache__" / "handler.cpython-311.pyc").write_bytes(b"\0")
    (package / "notes.txt").write_text("not code")

    package_lambda.build(package, tmp_path / "trigger.zip")

    with zipfile.ZipFile(tmp_path / "trigger.zip") as archive:
        infos = archive.infolist()
    names = [info.filename for info in infos]
    assert names == sorted(names)
    assert "trigger/handler.py" in names
    assert all(name.startswith("trigger/") and name.endswith(".py") for name in names if name not in DATA_FILES)
    assert set(DATA_FILES) <= set(names)  # the parameter schema trigger.events reads at import
    assert {info.date_time for info in infos} == {(1980, 1, 1, 0, 0, 0)}
    assert {info.external_attr >> 16 for info in infos} == {0o100644}


def test_command_line_writes_the_zip_and_prints_its_sha256(tmp_path: Path) -> None:
    output = tmp_path / "out" / "trigger.zip"

    result = subprocess.run(
        [sys.executable, str(REPO / "scripts" / "package_lambda.py"), "--output", str(output)],
        capture_output=True,
        text=True,
        check=True,
    )

    assert result.stdout.split()[0] == hashlib.sha256(output.read_bytes()).hexdigest()


def test_the_zip_carries_no_comments_or_docstrings_and_every_line_where_the_repository_has_it(tmp_path: Path) -> None:
    # GIVEN the zip built from the package
    package_lambda.build(package_lambda.SOURCE, tmp_path / "trigger.zip")
    with zipfile.ZipFile(tmp_path / "trigger.zip") as archive:
        zipped = {name: archive.read(name).decode() for name in archive.namelist() if name.endswith(".py")}

    for name, text in zipped.items():
        original = (package_lambda.SOURCE.parent / name).read_text(encoding="utf-8")
        # THEN each module has its lines, and each code line its text up to where a comment began, so a
        # traceback's line number and text are the repository's
        assert text.count("\n") == original.count("\n"), name
        for slim_line, line in zip(text.splitlines(), original.splitlines(), strict=True):
            assert line.startswith(slim_line.rstrip()) or '""' in slim_line, (name, line)
        # AND no comment or docstring text is left
        tokens = list(tokenize.generate_tokens(io.StringIO(text).readline))
        assert not [t for t in tokens if t.type == tokenize.COMMENT], name
        assert all(ast.get_docstring(node, clean=False) in (None, "") for node in _owners(ast.parse(text))), name
    # AND the zip is much smaller for it: the sources' prose was more than a third of its bytes
    package_lambda.build(package_lambda.SOURCE, tmp_path / "unslimmed.zip", slimmed=False)
    assert (tmp_path / "trigger.zip").stat().st_size <= 0.7 * (tmp_path / "unslimmed.zip").stat().st_size


def _owners(tree: ast.Module) -> list[ast.AST]:
    return [tree, *(n for n in ast.walk(tree) if isinstance(n, ast.ClassDef | ast.FunctionDef | ast.AsyncFunctionDef))]


def test_the_slim_package_imports_and_a_traceback_names_the_repositorys_line(tmp_path: Path) -> None:
    # GIVEN the zip unpacked
    package_lambda.build(package_lambda.SOURCE, tmp_path / "trigger.zip")
    with zipfile.ZipFile(tmp_path / "trigger.zip") as archive:
        archive.extractall(tmp_path / "unpacked")
    # WHEN a fresh interpreter imports the handler from it and a function raises
    probe = (
        "import traceback, trigger.handler, trigger.sweeps as s\n"
        "try:\n"
        "    s.parse_sweep_request({'sweep': 'not a sweep'})\n"
        "except Exception as e:\n"
        "    frame = traceback.extract_tb(e.__traceback__)[-1]\n"
        "    print(frame.filename.rsplit('/', 1)[-1], frame.lineno, frame.line)\n"
    )
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "unpacked"), "AWS_DEFAULT_REGION": "us-east-1"}
    result = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, check=True, env=env)
    # THEN the line it names is that line of the repository's file
    filename, lineno, line = result.stdout.strip().split(" ", 2)
    source_line = (package_lambda.SOURCE / filename).read_text(encoding="utf-8").splitlines()[int(lineno) - 1]
    assert source_line.strip().startswith(line.strip()) and line.strip()


def test_slimming_blanks_docstrings_and_comments_only_and_keeps_every_line() -> None:
    source = (
        '"""Module doc,\nover two lines."""\n'
        "x = 1  # a comment\n"
        "s = '# not a comment'\n"
        "def f():\n"
        '    """Doc ≥ ünïcode."""; return 2  # trailing\n'
        "class C:\n"
        '    """Only a docstring."""\n'
    )
    slimmed = package_lambda.slim(source)
    assert slimmed == '""\n\nx = 1\ns = \'# not a comment\'\ndef f():\n    ""; return 2\nclass C:\n    ""\n'
    namespace: dict[str, object] = {}
    exec(compile(slimmed, "<slim>", "exec"), namespace)  # noqa: S102 - our own test source
    assert namespace["f"]() == 2  # type: ignore[operator]


def test_a_module_slimming_refuses_leaves_the_previous_zip_whole(tmp_path: Path, monkeypatch) -> None:
    # GIVEN a zip built once
    output = tmp_path / "trigger.zip"
    package_lambda.build(package_lambda.SOURCE, output)
    before = output.read_bytes()
    # WHEN a later build meets a module that slimming refuses (the last one zipped)
    last = [path for path in package_lambda.sources(package_lambda.SOURCE) if path.suffix == ".py"][-1]
    slim = package_lambda.slim

    def refusing(source: str, name: str = "<source>") -> str:
        if name == str(last):
            raise SystemExit(f"{name}: slimming changed the program")
        return slim(source, name)

    monkeypatch.setattr(package_lambda, "slim", refusing)
    with pytest.raises(SystemExit, match="slimming changed the program"):
        package_lambda.build(package_lambda.SOURCE, output)
    # THEN the previous zip is there, byte for byte, and no partial file is left beside it
    assert output.read_bytes() == before
    assert sorted(p.name for p in tmp_path.iterdir()) == ["trigger.zip"]
