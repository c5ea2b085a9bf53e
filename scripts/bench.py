"""`make bench`: every benchmark of the repository, one after the other.

Each benchmark measures its own baseline in the same run and prints a ratio
against it; nothing here asserts on time. Pass names to run a subset:
`make bench ARGS="trainer"`, `make bench ARGS="trainer-speed"` (no parity table),
`make bench ARGS="trainer-parity"`, `make bench ARGS=gpu`.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent

# name -> command (run from the repository root with this interpreter)
BENCHES: dict[str, list[str]] = {
    "trigger": ["scripts/bench_trigger.py"],  # cold start, handler CPU per event, zip size
    # seed loop vs ours (cnn, airbench; fp32, bf16), matmul peak, full-recipe estimate, bf16 parity (~6-8 min)
    "trainer": ["scripts/bench_trainer.py"],
    "trainer-speed": ["scripts/bench_trainer.py", "--skip", "parity"],  # the same without the parity table (~4 min)
    "trainer-parity": ["scripts/bench_trainer.py", "--only", "parity"],  # only the bf16-vs-fp32 accuracy table
    # the default model's step on 1 vs 2 threads and the time/cost table for 2/4/8 vCPU it implies (~2 min)
    "threads": ["scripts/bench_trainer.py", "--only", "threads"],
    # the reference airbench94 and our trainer on the same GPU, warm, with accuracy (skips without CUDA)
    "gpu": ["scripts/bench_gpu.py"],
}
DEFAULT = ("trigger", "trainer")  # what a bare `make bench` runs (the subsets are parts of "trainer")


def main(argv: list[str]) -> int:
    unknown = [name for name in argv if name not in BENCHES]
    if unknown:
        print(f"unknown benchmark(s): {', '.join(unknown)}; known: {', '.join(BENCHES) or 'none yet'}")
        return 2
    status = 0
    for name in argv or DEFAULT:
        print(f"== bench: {name}", flush=True)
        status |= subprocess.run([sys.executable, *BENCHES[name]], cwd=REPO, check=False).returncode
    if not BENCHES:
        print("no benchmarks yet")
    return status


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
