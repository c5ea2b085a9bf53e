"""Recording fakes of command-line tools (`terraform`, `tfcmt`, `gh`, `aws`, ...) for tests.

A fake is a tiny Python program written into a folder that the test puts first on PATH. Each
call appends one JSON line (its name, arguments and standard input) to a log, then answers with
the first scripted rule whose `args` are a prefix of its arguments (and that has not used up its
`times`, so a sequence of answers is a sequence of rules):

    bin = FakeBin(tmp_path)
    bin.add("terraform", args=["plan"], exit=2, stdout="Plan: 1 to add")
    bin.add("tfcmt", args=["plan"], run_after_dashdash=True)  # run the wrapped command, like tfcmt
    subprocess.run([...], env=bin.env())
    assert bin.calls("terraform")[0][:1] == ["init"]

A call no rule matches exits 0 with no output. A rule may also write files (`writes`: path ->
content, `{last}` in a path is replaced by the last argument) so a fake `aws lambda invoke` can
leave its answer where the real one would.
"""

from __future__ import annotations

import json
import os
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

_PROGRAM = """\
#!{python}
import json, os, shutil, subprocess, sys
NAME = {name!r}
argv = sys.argv[1:]
stdin = "" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.read()
with open({log!r}, "a") as fh:
    fh.write(json.dumps({{"name": NAME, "args": argv, "stdin": stdin, "cwd": os.getcwd()}}) + "\\n")
with open({rules!r}) as fh:
    rules = json.load(fh).get(NAME, [])
with open({counts!r}) as fh:
    counts = json.load(fh)
for index, rule in enumerate(rules):
    if argv[: len(rule["args"])] != rule["args"]:
        continue
    key = f"{{NAME}}:{{index}}"
    if rule["times"] is not None and counts.get(key, 0) >= rule["times"]:
        continue
    counts[key] = counts.get(key, 0) + 1
    with open({counts!r}, "w") as fh:
        json.dump(counts, fh)
    for path, content in rule["writes"].items():
        with open(path.replace("{{last}}", argv[-1] if argv else ""), "w") as out:
            out.write(content)
    for source, destination in rule["copies"].items():
        shutil.copyfile(source.replace("{{last}}", argv[-1] if argv else ""), destination)
    sys.stdout.write(rule["stdout"])
    sys.stderr.write(rule["stderr"])
    sys.stdout.flush()
    if rule["run_after_dashdash"] and "--" in argv:
        sys.exit(subprocess.run(argv[argv.index("--") + 1 :], check=False).returncode)
    sys.exit(rule["exit"])
sys.exit(0)
"""


@dataclass
class FakeBin:
    """A folder of recording fake executables, and the rules they answer with."""

    root: Path
    rules: dict[str, list[dict[str, Any]]] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self.bin_dir = self.root / "fakebin"
        self.bin_dir.mkdir(parents=True, exist_ok=True)
        self.log = self.root / "fakebin-calls.jsonl"
        self.log.touch()
        self._rules_file = self.root / "fakebin-rules.json"
        self._counts_file = self.root / "fakebin-counts.json"
        self._counts_file.write_text("{}")
        self._save()

    def add(
        self,
        name: str,
        args: list[str] | None = None,
        *,
        exit: int = 0,
        stdout: str = "",
        stderr: str = "",
        writes: dict[str, str] | None = None,
        copies: dict[str, str] | None = None,
        run_after_dashdash: bool = False,
        times: int | None = None,
    ) -> None:
        """Script `name`: calls whose arguments start with `args` answer like this (first rule added wins).

        `times` limits how many calls the rule answers; `run_after_dashdash` runs the command after `--`.
        """
        self.rules.setdefault(name, []).append(
            {
                "args": list(args or []),
                "exit": exit,
                "stdout": stdout,
                "stderr": stderr,
                "writes": dict(writes or {}),
                "copies": dict(copies or {}),
                "run_after_dashdash": run_after_dashdash,
                "times": times,
            }
        )
        self.install(name)
        self._save()

    def install(self, *names: str) -> None:
        """Create fakes that only record (exit 0, no output) unless a rule says otherwise."""
        for name in names:
            program = self.bin_dir / name
            program.write_text(
                _PROGRAM.format(
                    python=sys.executable,
                    name=name,
                    log=str(self.log),
                    rules=str(self._rules_file),
                    counts=str(self._counts_file),
                )
            )
            program.chmod(0o755)

    def env(self, **extra: str) -> dict[str, str]:
        """The current environment with the fakes first on PATH, plus `extra`."""
        env = dict(os.environ)
        env["PATH"] = f"{self.bin_dir}{os.pathsep}{env.get('PATH', '')}"
        env.update(extra)
        return env

    def all_calls(self) -> list[dict[str, Any]]:
        """Every recorded call in order: {"name", "args", "stdin", "cwd"}."""
        return [json.loads(line) for line in self.log.read_text().splitlines() if line]

    def calls(self, name: str) -> list[list[str]]:
        """The argument lists of every call of `name`, in order."""
        return [c["args"] for c in self.all_calls() if c["name"] == name]

    def _save(self) -> None:
        self._rules_file.write_text(json.dumps(self.rules))


def github_outputs(path: Path) -> dict[str, str]:
    """What a step wrote to $GITHUB_OUTPUT: `key=value` lines and `key<<DELIMITER` ... `DELIMITER` blocks
    (GitHub's "Multiline strings" form), as GitHub reads them."""
    found: dict[str, str] = {}
    lines = iter(path.read_text().splitlines())
    for line in lines:
        key, sep, delimiter = line.partition("<<")
        if sep and "=" not in key:
            found[key] = "\n".join(iter(lines.__next__, delimiter))
        else:
            name, _, value = line.partition("=")
            found[name] = value
    return found
