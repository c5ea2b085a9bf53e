"""What a new user types: the `pushtrain` entry point, and a --store that names no store (exit 2, one line)."""

from __future__ import annotations

import importlib
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from trainer.__main__ import main as trainer_main
from trainer.runstate import status_key
from trainer.store import LocalStore

REPO = Path(__file__).resolve().parents[2]
RUN_ID = "push-aaaaaaaaaaaaaaaaaaaa"


def entry_point(name: str) -> Callable[[list[str]], int]:
    """The function trainer/pyproject.toml's [project.scripts] names for `name`, as pip would install it."""
    scripts = tomllib.loads((REPO / "trainer" / "pyproject.toml").read_text())["project"]["scripts"]
    module, _, function = scripts[name].partition(":")
    return getattr(importlib.import_module(module), function)  # type: ignore[no-any-return]


def test_the_pushtrain_entry_point_runs_the_same_cli(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    # GIVEN a store with one run; WHEN `pushtrain runs list` runs as installed
    store = LocalStore(tmp_path / "store")
    store.put(status_key(RUN_ID), b'{"run_id": "' + RUN_ID.encode() + b'", "state": "queued"}')
    assert entry_point("pushtrain") is trainer_main
    assert entry_point("pushtrain")(["runs", "list", "--store", str(store.root)]) == 0
    # THEN it lists the run
    assert RUN_ID in capsys.readouterr().out


@pytest.mark.parametrize(
    "argv",
    [["runs", "list"], ["runs", "show", RUN_ID], ["models", "list"], ["models", "champion"],
     ["models", "rollback", "--reason", "x"]],
    ids=lambda a: " ".join(a[:2]),
)  # fmt: skip
@pytest.mark.parametrize(
    ("where", "says"),
    [
        ("missing", "does not exist"),  # a typo
        ("empty", "has neither runs/ nor models/"),  # a folder that is not a store
        ("too-deep", "did you mean --store"),  # the store's runs/ folder instead of the store
        ("too-shallow", "did you mean --store"),  # the demo folder instead of its store/
    ],
)
def test_a_store_that_is_not_one_is_exit_2_naming_it(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], where: str, says: str
) -> None:
    store = LocalStore(tmp_path / "demo" / "store")
    store.put(status_key(RUN_ID), b"{}")
    (tmp_path / "empty").mkdir()
    path = {
        "missing": tmp_path / "demo" / "stor",
        "empty": tmp_path / "empty",
        "too-deep": store.root / "runs",
        "too-shallow": tmp_path / "demo",
    }[where]
    code = trainer_main([*argv, "--store", str(path)])
    out, err = capsys.readouterr()
    assert code == 2
    assert len(err.strip().splitlines()) == 1 and str(path) in err and says in err
    if where in ("too-deep", "too-shallow"):
        assert f"--store {store.root}?" in err
    assert out == ""


def test_an_empty_bucket_is_exit_2_naming_it(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    for name, value in {"AWS_DEFAULT_REGION": "us-east-1", "AWS_ACCESS_KEY_ID": "testing",
                        "AWS_SECRET_ACCESS_KEY": "testing"}.items():  # fmt: skip
        monkeypatch.setenv(name, value)
    with mock_aws():
        boto3.client("s3").create_bucket(Bucket="artifacts")
        boto3.client("s3").put_object(Bucket="artifacts", Key="other/thing", Body=b"x")
        code = trainer_main(["runs", "list", "--store", "s3://artifacts/pushtrain"])
    assert code == 2
    assert "s3://artifacts/pushtrain has neither runs/ nor models/" in capsys.readouterr().err


def test_python_dash_m_trainer_says_it_in_one_line_without_a_traceback(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "trainer", "runs", "list", "--store", str(tmp_path / "nope")],
        env={**os.environ, "PYTHONPATH": str(REPO / "trainer" / "src")}, capture_output=True, text=True,
        check=False, timeout=120,
    )  # fmt: skip
    assert result.returncode == 2
    assert result.stderr.strip() == (
        f"trainer runs: store {tmp_path / 'nope'} does not exist (--store or TRAINER_STORE_URI: a folder or "
        "s3://bucket)"
    )


def test_train_help_lists_every_exit_code_and_the_mlflow_variable() -> None:
    from trainer.train_help import format_help

    from trainer import run

    text = format_help()
    codes = {value for name, value in vars(run).items() if name.startswith("EXIT_")}
    assert codes == {0, 1, 73, 75}
    for code in (*codes, 2):
        assert f"\n  {code} " in text, f"exit {code} is missing from train --help"
    assert "MLFLOW_TRACKING_URI" in text and "MLFLOW_EXPERIMENT_NAME" in text


# What a new user types wrong, beyond the store (above) and `python -m trainer` (above): each is exit
# 1 or 2 with no traceback and its last stderr line naming what is wrong and what to type instead;
# our own errors are that one line, argparse's usage errors end with it after a usage that names
# `pushtrain` (what the user can paste), never `python -m trainer` (the system python has no trainer).
MISTAKES = [
    # (argv before --store, exit code, the last line says, our own one-line error)
    (["runs", "show"], 2, "the following arguments are required: run_id", False),
    (["runs", "lst"], 2, "invalid choice: 'lst' (choose from 'list', 'show', 'compare')", False),
    (["runs", "show", "push-nothere"], 1, "no run 'push-nothere' in", True),
    (["runs", "compare", RUN_ID], 2, "give two or more different run ids", True),
    (["runs", "compare", RUN_ID, "push-nothere"], 1, "no run 'push-nothere' in", True),
    (["runs", "list", "--git-sha", "zz"], 2, "'zz' is not a git sha or a prefix of 7+", False),
    (["runs", "list", "--state", "done"], 2, "invalid choice: 'done'", False),
    (["models", "show", "champion"], 1, "no champion for 'cifar10'", True),
    (["models", "show"], 2, "the following arguments are required: version", False),
    (["models", "promote", "v1"], 2, "the following arguments are required: --reason", False),
    (["models", "predict", "champion", "x.png", "--top-k", "0"], 2, "'0' is not a whole number >= 1", False),
    (["models", "predict", "champion", "x.png"], 2, "x.png: no such file", True),
    (["sweeps", "show", "1"], 1, "no sweep 1", True),
]


@pytest.mark.parametrize(
    ("argv", "expected"), [(m[0], m[1:]) for m in MISTAKES], ids=[" ".join(m[0]) for m in MISTAKES]
)
def test_each_typical_mistake_is_a_clear_error_with_the_fix(
    tmp_path: Path, capsys: pytest.CaptureFixture[str], argv: list[str], expected: tuple[int, str, bool]
) -> None:
    code, says, own = expected
    # GIVEN a store with one run and no published model yet
    store = LocalStore(tmp_path / "store")
    store.put(status_key(RUN_ID), b'{"run_id": "' + RUN_ID.encode() + b'", "state": "queued"}')
    # WHEN the mistake is typed
    try:
        exit_code = trainer_main([*argv, "--store", str(store.root)])
    except SystemExit as exc:  # argparse's own exit
        exit_code = int(exc.code or 0)
    out, err = capsys.readouterr()
    # THEN it is that exit code, and stderr ends with the line naming the mistake, without a traceback
    lines = err.strip().splitlines()
    assert exit_code == code and out == ""
    assert says in lines[-1] and "Traceback" not in err
    if own:
        assert len(lines) == 1
    else:
        assert lines[0].startswith(f"usage: pushtrain {argv[0]}")
    # AND a hint to list runs names the command to paste, with the store given
    if "no run '" in says:
        assert f"pushtrain runs list --store {store.root}" in lines[-1]
    assert "python -m trainer" not in err
