"""`make bench ARGS=gpu`: the reference airbench94 and our trainer on the same GPU, in one run.

    python scripts/bench_gpu.py            # ~2-5 minutes on one GPU; without CUDA it says so and exits 0

Both train the default recipe (airbench94: 9.9 epochs of batch 1024) on the hard generated set
(`trainer.synth --hard`, 50,000 + 10,000 images, cached in .pushtrain/bench/; CIFAR-10 is not
downloaded), each twice: the first run pays the one-off costs (CUDA context, cuDNN's autotuning of
its convolutions: neither side uses torch.compile, so this is their "compile"), reported apart; the
second, warm, is the time compared. Each time runs from the first data on the device to the last
test prediction (whitening fit, training, the final TTA evaluation), bracketed by
`torch.cuda.synchronize`. Printed: both times, images/s, test accuracy on the hard set (exact
counts), and ours / reference, against the goal of at most 1.0 (no slower on the same device).

The reference is PyPI's `airbench==0.1.8` (installed by `make setup` with the dev requirements;
nothing is downloaded at run time): its own `CifarLoader` over `train.pt`/`test.pt` files written
from the generated data, its own `train94` and `infer`, in its own precision (fp16 network, fp32
BatchNorm). Ours runs `TrainingSession` in bf16 autocast, its per-epoch progress evaluations
included (the reference does none when not verbose), so the comparison does not favour us.
"""

from __future__ import annotations

import argparse
import contextlib
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from trainer.config import load_config
from trainer.data import Cifar10Data, load_dataset
from trainer.train import TrainingSession, fit

from trainer import synth

CACHE = Path(".pushtrain/bench")
GOAL_RATIO = 1.0  # our warm time / the reference's, on the same device


def comparison(reference: dict[str, Any], ours: dict[str, Any]) -> dict[str, Any]:
    """Both sides' warm seconds, images/s and accuracy as a fraction, the ratio and whether the goal is met."""
    ratio = ours["warm_s"] / reference["warm_s"]
    return {
        "reference": reference | {"per_s": reference["images"] / reference["warm_s"]},
        "ours": ours | {"per_s": ours["images"] / ours["warm_s"]},
        "ratio": ratio,
        "met": ratio <= GOAL_RATIO,
    }


def report(device: str, result: dict[str, Any]) -> str:
    lines = [f"GPU {device}: the default recipe, warm (first run reported apart), hard generated set"]
    for name, label in (("reference", "reference airbench94 (fp16)"), ("ours", "ours, TrainingSession (bf16)")):
        r = result[name]
        lines.append(
            f"  {label:<30} warm {r['warm_s']:6.2f} s  first run {r['cold_s']:6.2f} s "
            f"(one-off {r['cold_s'] - r['warm_s']:+.2f} s)  {r['per_s']:8.0f} images/s  "
            f"accuracy {r['correct']}/{r['total']} = {100 * r['correct'] / r['total']:.2f} %"
        )
    verdict = "MET" if result["met"] else "NOT MET"
    lines.append(f"RATIO ours / reference (warm): {result['ratio']:.2f}; GOAL <= {GOAL_RATIO:.1f}: {verdict}")
    return "\n".join(lines)


@contextlib.contextmanager
def _inside(folder: Path) -> Iterator[None]:
    """The reference's train() opens its test loader at the relative path 'cifar10': run it from `folder`."""
    previous = Path.cwd()
    os.chdir(folder)
    try:
        yield
    finally:
        os.chdir(previous)


def _timed(run: Callable[[], Any]) -> tuple[float, Any]:
    torch.cuda.synchronize()
    started = time.perf_counter()
    value = run()
    torch.cuda.synchronize()
    return time.perf_counter() - started, value


def run_reference(data: Cifar10Data, folder: Path) -> dict[str, Any]:
    """airbench94 as its README runs it, twice, over `data` written in its own file format."""
    import airbench
    from airbench import lib_airbench94 as ab94

    (folder / "cifar10").mkdir(parents=True, exist_ok=True)
    for name, images, labels in (
        ("train.pt", data.train_images, data.train_labels),
        ("test.pt", data.test_images, data.test_labels),
    ):
        nhwc = images.permute(0, 2, 3, 1).contiguous()
        torch.save({"images": nhwc, "labels": labels, "classes": list(data.classes)}, folder / "cifar10" / name)
    hyp = ab94.hyp
    with _inside(folder):
        test_loader = airbench.CifarLoader("cifar10", train=False, batch_size=2000)

        def once() -> torch.Tensor:
            loader = airbench.CifarLoader(
                "cifar10", train=True, batch_size=hyp["opt"]["batch_size"], aug=hyp["aug"], altflip=True
            )
            model = airbench.train94(loader, verbose=False)
            return airbench.infer(model, test_loader, tta_level=hyp["net"]["tta_level"])

        cold_s, _ = _timed(once)
        warm_s, logits = _timed(once)
        steps = math.ceil(len(data.train_labels) // hyp["opt"]["batch_size"] * hyp["opt"]["train_epochs"])
        correct = int((logits.argmax(1) == test_loader.labels).sum())
    return {
        "cold_s": cold_s,
        "warm_s": warm_s,
        "images": steps * hyp["opt"]["batch_size"],
        "correct": correct,
        "total": len(data.test_labels),
    }


def run_ours(root: Path, work: Path, device: str = "cuda", precision: str = "bf16") -> dict[str, Any]:
    """Our TrainingSession with the default recipe on `device` in `precision` (the GPU in bf16), twice."""
    config = load_config(
        [
            *("--data-uri", str(root), "--work-dir", str(work)),
            *("--device", device, "--precision", precision, "--progress", "none"),
        ],
        {},
    )
    data = load_dataset(config)

    def once() -> tuple[TrainingSession, torch.Tensor]:
        session = TrainingSession(config, data)
        fit(session)
        return session, session.predict_logits(data.test_images)

    cold_s, _ = _timed(once)
    warm_s, (session, logits) = _timed(once)
    correct = int((logits.argmax(1).cpu() == data.test_labels).sum())
    return {
        "cold_s": cold_s,
        "warm_s": warm_s,
        "images": session.total_steps * session.batch_size,
        "correct": correct,
        "total": len(data.test_labels),
    }


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench_gpu.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--train", type=int, default=50_000, help="generated training images (default %(default)s)")
    parser.add_argument("--test", type=int, default=10_000, help="generated test images (default %(default)s)")
    args = parser.parse_args(argv)
    if not torch.cuda.is_available():
        print("GPU bench: no CUDA device here; skipped (run it where there is one)")
        return 0
    root = CACHE / f"synth-{args.train}-{args.test}-hard"
    if not (root / synth.BATCH_FOLDER / synth.MANIFEST).exists():
        synth.write_folder(root, n_train=args.train, n_test=args.test, seed=0, difficulty=synth.HARD)
    with tempfile.TemporaryDirectory(prefix="bench-gpu-") as tmp:
        ours = run_ours(root, Path(tmp) / "work")
        data = load_dataset(load_config(["--data-uri", str(root), "--work-dir", str(Path(tmp) / "work")], {}))
        reference = run_reference(data, Path(tmp) / "reference")
    print(report(torch.cuda.get_device_name(), comparison(reference, ours)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
