"""Install requirements/dev.txt into the virtualenv, with CPU-only PyTorch where its index is reachable.

    python scripts/install_deps.py requirements/dev.txt --python .venv/bin/python    # what `make` runs

requirements/dev.txt pins torch and torchvision as PyPI publishes them for Linux: the CUDA build,
which pulls ~4 GB of nvidia-* and triton wheels that a CPU-only demo never uses. When the PyTorch
CPU index (CPU_INDEX) answers, this installs `torch==<pin>+cpu` and `torchvision==<pin>+cpu` from
it (the same versions, no CUDA) and every other pin from dev.txt except the CUDA-only packages.
When the index cannot be reached (a mirror-only network, an outage), it says so and installs
dev.txt exactly as pinned, from PyPI. Either way the same versions of everything else; the choice
is printed, and `PUSHTRAIN_TORCH=cuda` forces the PyPI (CUDA) build, `PUSHTRAIN_TORCH=cpu` the CPU
index (failing if it is unreachable).
"""

from __future__ import annotations

import argparse
import os
import re
import subprocess
import sys
import tempfile
import urllib.error
import urllib.request
from collections.abc import Sequence
from pathlib import Path

CPU_INDEX = "https://download.pytorch.org/whl/cpu"
PROBE_TIMEOUT_S = 5.0
# Packages only the CUDA build of torch needs; the CPU wheels depend on none of them.
CUDA_ONLY = re.compile(r"(nvidia-.*|cuda-.*|triton)", re.IGNORECASE)
TORCH_PACKAGES = ("torch", "torchvision")
_PIN = re.compile(r"(?P<name>[A-Za-z0-9_.-]+)==(?P<version>[^\s;#]+)")


def reachable(index: str, timeout_s: float = PROBE_TIMEOUT_S) -> bool:
    """Whether the index answers for torch within the timeout."""
    try:
        with urllib.request.urlopen(f"{index.rstrip('/')}/torch/", timeout=timeout_s) as answer:  # noqa: S310 -- a fixed https URL (or a test's local one)
            return 200 <= answer.status < 400
    except (urllib.error.URLError, OSError, ValueError):
        return False


def split_requirements(lines: Sequence[str]) -> tuple[dict[str, str], list[str]]:
    """({torch package: pinned version}, the other requirement lines minus CUDA-only packages)."""
    torch_pins: dict[str, str] = {}
    rest = []
    for line in lines:
        match = _PIN.fullmatch(line.strip())
        name = match["name"].lower() if match else ""
        if name in TORCH_PACKAGES:
            torch_pins[name] = match["version"].split("+")[0]  # type: ignore[index]
        elif not (match and CUDA_ONLY.fullmatch(name)):
            rest.append(line)
    missing = [p for p in TORCH_PACKAGES if p not in torch_pins]
    if missing:
        raise SystemExit(f"install_deps: the requirements pin no {', '.join(missing)} (want name==version)")
    return torch_pins, rest


def pip(python: str, *args: str) -> None:
    command = [python, "-m", "pip", "--disable-pip-version-check", "-q", "install", *args]
    result = subprocess.run(command, check=False)
    if result.returncode != 0:
        raise SystemExit(f"install_deps: `pip install {' '.join(args)}` failed (exit {result.returncode})")


def install(requirements: Path, python: str, index: str, choice: str) -> str:
    """Install; return which torch build was installed ("cpu" or "cuda")."""
    lines = requirements.read_text().splitlines()
    torch_pins, rest = split_requirements(lines)
    use_cpu = choice == "cpu" or (choice == "auto" and reachable(index))
    if choice == "cpu" and not reachable(index):
        raise SystemExit(f"install_deps: PUSHTRAIN_TORCH=cpu but the PyTorch CPU index {index} is not reachable")
    if not use_cpu:
        why = "PUSHTRAIN_TORCH=cuda" if choice == "cuda" else f"the PyTorch CPU index {index} is not reachable"
        print(
            f"install_deps: {why}: installing torch from PyPI as pinned (the CUDA build, ~4 GB of nvidia/triton wheels)"
        )
        pip(python, "-r", str(requirements))
        return "cuda"
    print(f"install_deps: torch {torch_pins['torch']}+cpu and torchvision {torch_pins['torchvision']}+cpu from {index}")
    pip(python, "--extra-index-url", index, *(f"{name}=={version}+cpu" for name, version in torch_pins.items()))
    with tempfile.NamedTemporaryFile("w", suffix=".txt", prefix="requirements-cpu-", delete=False) as fh:
        fh.write("\n".join(rest) + "\n")
    try:
        pip(python, "-r", fh.name)
    finally:
        Path(fh.name).unlink()
    return "cpu"


def main(argv: Sequence[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("requirements", type=Path, help="the pinned requirements file (requirements/dev.txt)")
    parser.add_argument("--python", default=sys.executable, help="the virtualenv's python (default: this one)")
    parser.add_argument("--index", default=os.environ.get("PUSHTRAIN_TORCH_INDEX", CPU_INDEX), help="CPU wheel index")
    args = parser.parse_args(argv)
    choice = os.environ.get("PUSHTRAIN_TORCH", "auto")
    if choice not in ("auto", "cpu", "cuda"):
        raise SystemExit(f"install_deps: PUSHTRAIN_TORCH={choice!r}: want auto, cpu or cuda")
    install(args.requirements, args.python, args.index, choice)
    return 0


if __name__ == "__main__":
    sys.exit(main())
