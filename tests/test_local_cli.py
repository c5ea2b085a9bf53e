"""`make demo` never ends in a stack trace: a missing piece or an unusable runner is one clear message and exit 1.

GIVEN the demo's command line, WHEN a part it needs is missing (a module, a Docker engine), THEN it
exits 1 with a message that names what is missing, and no traceback.
"""

from __future__ import annotations

from pathlib import Path

import pytest
from pushtrain_local import cli


def test_a_missing_part_is_named_before_anything_runs(
    capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setitem(cli.REQUIRED_MODULES, "trainer.not_written_yet", "the part someone is still writing")

    code = cli.main(["push"])

    err = capsys.readouterr().err
    assert code == 1
    assert "trainer.not_written_yet: the part someone is still writing" in err
    assert "Traceback" not in err


def test_an_unknown_scenario_is_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exited:
        cli.main(["no-such-scenario"])

    assert exited.value.code == 2
    assert "invalid choice: 'no-such-scenario'" in capsys.readouterr().err


@pytest.mark.slow
def test_docker_runner_without_an_engine_says_so(
    capsys: pytest.CaptureFixture[str], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN no docker command (a PATH of one empty folder; the pipeline runs Python by its absolute path)
    empty = tmp_path / "bin"
    empty.mkdir()
    monkeypatch.setenv("PATH", str(empty))

    # WHEN the demo gets as far as running the started task, with --runner docker
    code = cli.main(["push", "--runner", "docker", "--workdir", str(tmp_path)])

    # THEN it stops there with one clear line (the emulation, the push and the trigger all ran before)
    captured = capsys.readouterr()
    assert code == 1
    assert "--runner docker needs a Docker engine here: no `docker` command on PATH" in captured.err
    assert "Traceback" not in captured.err
    assert "tasks started by this event: 1" in captured.out
