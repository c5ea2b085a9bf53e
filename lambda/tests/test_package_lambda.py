"""The deployment zip is deterministic and holds our package alone."""

from __future__ import annotations

import hashlib
import os
import shutil
import subprocess
import sys
import zipfile
from pathlib import Path

import package_lambda  # scripts/ is on pytest's pythonpath

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
