"""`make bench ARGS=trainer`: training throughput of the seed's loop against ours, on this machine, in one run.

    python -m trainer.bench                 # about 2-3 minutes on 2 cores
    python -m trainer.bench --json out.json

Measured, all on synthetic CIFAR-format data (throughput does not depend on the pixels):
(a) a faithful replica of the seed's loop: batch 4, per-image ToTensor/Normalize in a DataLoader with
    2 worker processes, the seed CNN, SGD lr 0.001 momentum 0.9, fp32;
(b) our pipeline with --model cnn, (c) our pipeline with --model airbench: the TrainingSession with the
    default recipe (batch 256 / 1024), fp32 and bf16 autocast, channels_last;
the machine's fp32 (and bf16) matmul GFLOP/s; FLOPs per training image from torch.utils.flop_counter,
with and without the multiply-adds on zero padding (which oneDNN skips); test accuracy of a short
training run in fp32 and bf16 on learnable synthetic data (bf16 is kept only if it holds); and the
estimated wall time and Fargate cost of the default recipe to ~94 % (an estimate: epochs x 50,000 /
images/s plus evaluation, not a measured run). Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import torch
from torch import nn

from trainer import synth
from trainer.config import RECIPES, TrainConfig, load_config
from trainer.data import Cifar10Data, limit, load_dataset, torchvision_dataset
from trainer.nets import SeedCNN, build_model
from trainer.resources import apply_threads, cpu_has_native_bf16
from trainer.train import TrainingSession, fit

CIFAR10_TRAIN = 50_000
CIFAR10_TEST = 10_000
SPOT_DISCOUNT = 0.7  # Fargate Spot is typically ~70 % below on-demand


def matmul_gflops(dtype: torch.dtype, n: int = 2048, repeats: int = 8) -> float:
    """Best-of-3 GFLOP/s of an n x n matmul in `dtype` (2 n^3 FLOPs each)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    torch.mm(a, b)
    best = 0.0
    for _ in range(3):
        started = time.perf_counter()
        for _ in range(repeats):
            torch.mm(a, b)
        best = max(best, 2 * n**3 * repeats / (time.perf_counter() - started) / 1e9)
    return best


def padding_waste_flops(model: nn.Module, batch: torch.Tensor) -> float:
    """FLOPs per image spent on zero padding in the convolutions of one training step (fwd + bwd)."""
    waste = 0.0
    hooks = []

    def hook(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal waste
        kh, kw = module.kernel_size
        ph, pw = module.padding if isinstance(module.padding, tuple) else (0, 0)
        h_out, w_out = output.shape[-2:]
        h_in, w_in = inputs[0].shape[-2:]
        macs_total = module.in_channels // module.groups * kh * kw * h_out * w_out * module.out_channels

        def valid_taps(size_in: int, size_out: int, k: int, pad: int) -> int:
            return sum(1 for o in range(size_out) for t in range(k) if 0 <= o - pad + t < size_in)

        valid = valid_taps(h_in, h_out, kh, ph) * valid_taps(w_in, w_out, kw, pw)
        macs_valid = module.in_channels // module.groups * valid * module.out_channels
        passes = 1 + int(module.weight.requires_grad) + int(inputs[0].requires_grad)  # fwd, grad W, grad x
        waste += 2 * (macs_total - macs_valid) * passes

    for module in model.modules():
        if isinstance(module, nn.Conv2d):
            hooks.append(module.register_forward_hook(hook))
    try:
        model(batch)
    finally:
        for h in hooks:
            h.remove()
    return waste / len(batch)


def train_flops_per_image(model: nn.Module, batch_size: int = 8) -> tuple[float, float]:
    """(FLOPs per training image as torch's counter sees them, the same without zero-padding work)."""
    from torch.utils.flop_counter import FlopCounterMode

    x = torch.rand(batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (batch_size,))
    counter = FlopCounterMode(display=False)
    with counter:
        nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    total = counter.get_total_flops() / batch_size
    return total, total - padding_waste_flops(model, x)


# --- (a) the seed's loop -------------------------------------------------------------------------


def seed_loop_images_per_s(data_root: Path, images: int) -> float:
    """The seed: torchvision dataset with per-image PIL->tensor transforms, DataLoader(batch 4, 2 workers)."""
    from torchvision import transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    dataset = torchvision_dataset(data_root / synth.BATCH_FOLDER, train=True)
    dataset.transform = transform
    loader = torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2)
    torch.manual_seed(0)
    net = SeedCNN()
    net.normalize = nn.Identity()  # the seed normalized in the transform
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    warmup, seen, started = 50, 0, 0.0
    for i, (inputs, labels) in enumerate(loader):
        if i == warmup:
            started, seen = time.perf_counter(), 0
        optimizer.zero_grad()
        loss = criterion(net(inputs), labels)
        loss.backward()
        optimizer.step()
        _ = loss.item()  # the seed's running_loss += loss.item()
        seen += len(labels)
        if i >= warmup and seen >= images:
            break
    return seen / (time.perf_counter() - started)


# --- (b), (c) our pipeline -----------------------------------------------------------------------


def _config(data_root: Path, work: Path, *argv: str) -> TrainConfig:
    return load_config(["--data-uri", str(data_root), "--work-dir", str(work), "--progress", "none", *argv], {})


def session_images_per_s(config: TrainConfig, data: Cifar10Data, steps: int) -> float:
    """Images/s of `steps` training batches after one warm-up batch (evaluation excluded)."""
    session = TrainingSession(config, data)
    counter = {"n": 0}

    def stop_after(n: int) -> Callable[[], bool]:
        def should_stop() -> bool:
            counter["n"] += 1
            return counter["n"] > n

        return should_stop

    session.run_epoch(stop_after(1))  # warm-up: oneDNN picks and caches its kernels
    counter["n"] = 0
    started = time.perf_counter()
    session.run_epoch(stop_after(steps))
    return steps * config.batch_size / (time.perf_counter() - started)


def eval_images_per_s(config: TrainConfig, data: Cifar10Data) -> float:
    session = TrainingSession(config, data)
    session.predict_logits(data.test_images[:256])
    started = time.perf_counter()
    session.predict_logits(data.test_images)
    return len(data.test_images) / (time.perf_counter() - started)


def short_run_accuracy(config: TrainConfig, data: Cifar10Data) -> float:
    session = TrainingSession(config, data)
    fit(session)
    return session.history[-1].test_accuracy


@contextlib.contextmanager
def _step(name: str, results: dict[str, Any]) -> Iterator[None]:
    started = time.perf_counter()
    print(f"   measuring {name} ...", file=sys.stderr, flush=True)
    yield
    results.setdefault("bench_seconds", {})[name] = round(time.perf_counter() - started, 1)


def run(images: int) -> dict[str, Any]:
    threads = apply_threads(0)
    results: dict[str, Any] = {"threads": threads, "native_bf16": cpu_has_native_bf16(), "torch": torch.__version__}
    with tempfile.TemporaryDirectory(prefix="trainer-bench-") as tmp:
        root, work = Path(tmp) / "data", Path(tmp) / "work"
        synth.write_folder(root, n_train=max(images, 2048), n_test=1000, seed=0)
        data = load_dataset(_config(root, work))
        with _step("matmul", results):
            results["matmul_gflops_fp32"] = matmul_gflops(torch.float32)
            results["matmul_gflops_bf16"] = matmul_gflops(torch.bfloat16)
        with _step("seed loop", results):
            results["seed_images_per_s"] = seed_loop_images_per_s(root, images=2000)
        for model in ("cnn", "airbench"):
            flops, flops_no_pad = train_flops_per_image(build_model(model))
            results[model] = {
                "train_gflop_per_image": flops / 1e9,
                "train_gflop_per_image_no_padding": flops_no_pad / 1e9,
            }
            batch = RECIPES[model]["batch_size"]
            steps = max(1, min(images // batch - 1, 30 if model == "cnn" else 5))  # + 1 warm-up batch
            for precision in ("fp32", "bf16"):
                with _step(f"{model} {precision}", results):
                    config = _config(root, work, "--model", model, "--precision", precision)
                    ips = session_images_per_s(config, data, steps)
                results[model][precision] = {
                    "images_per_s": ips,
                    "gflops": ips * flops / 1e9,
                    "gflops_no_padding": ips * flops_no_pad / 1e9,
                    "eval_images_per_s": eval_images_per_s(config, data),
                }
        # does bf16 hold accuracy? short runs on learnable data, both precisions
        short = {
            "cnn": ("--epochs", "6", "--batch-size", "16", "--lr", "0.02", "--limit-train", "2000"),
            "airbench": ("--epochs", "4", "--batch-size", "50", "--lr", "0.2", "--limit-train", "1200"),
        }
        for model, argv in short.items():
            for precision in ("fp32", "bf16"):
                with _step(f"{model} {precision} accuracy", results):
                    # one thread: only the accuracy counts here, and one thread does not stall on a busy machine
                    config = _config(
                        root,
                        work,
                        "--model",
                        model,
                        "--precision",
                        precision,
                        "--threads",
                        "1",
                        "--limit-test",
                        "500",
                        *argv,
                    )
                    subset = limit(data, config.limit_train, config.limit_test)
                    results[model][precision]["synthetic_test_accuracy"] = short_run_accuracy(config, subset)
    return results


def report(results: dict[str, Any], cost_per_hour: float) -> str:
    peak = results["matmul_gflops_fp32"]
    seed = results["seed_images_per_s"]
    lines = [
        f"threads {results['threads']}, native bf16 {results['native_bf16']}, torch {results['torch']}",
        f"matmul peak: fp32 {peak:.0f} GFLOP/s, bf16 {results['matmul_gflops_bf16']:.0f} GFLOP/s",
        f"(a) seed loop (batch 4, PIL transforms, 2 workers, fp32): {seed:.0f} images/s",
        "",
        f"{'pipeline':<18}{'images/s':>10}{'x seed':>8}{'GFLOP/s':>9}{'% fp32 peak':>13}{'(no pad)':>10}"
        f"{'synth acc':>11}",
    ]
    for label, model in (("(b) cnn", "cnn"), ("(c) airbench", "airbench")):
        for precision in ("fp32", "bf16"):
            r = results[model][precision]
            lines.append(
                f"{label + ' ' + precision:<18}{r['images_per_s']:>10.0f}{r['images_per_s'] / seed:>7.1f}x"
                f"{r['gflops']:>9.0f}{100 * r['gflops'] / peak:>12.0f}%{100 * r['gflops_no_padding'] / peak:>9.0f}%"
                f"{100 * r['synthetic_test_accuracy']:>10.1f}%"
            )
    for model in ("cnn", "airbench"):
        r = results[model]
        lines.append(
            f"{model}: {r['train_gflop_per_image']:.3f} GFLOP per training image "
            f"({r['train_gflop_per_image_no_padding']:.3f} without zero padding)"
        )
    precision = "bf16" if results["native_bf16"] else "fp32"
    r = results["airbench"][precision]
    epochs = RECIPES["airbench"]["epochs"]
    train_s = epochs * CIFAR10_TRAIN / r["images_per_s"]
    eval_s = epochs * CIFAR10_TEST / r["eval_images_per_s"]
    hours = (train_s + eval_s) / 3600
    lines += [
        "",
        f"b/a (cnn {precision} / seed): {results['cnn'][precision]['images_per_s'] / seed:.1f}x",
        f"ESTIMATE, default recipe (airbench, {epochs} epochs, {precision}) on {results['threads']} threads: "
        f"{epochs} x {CIFAR10_TRAIN:,} / {r['images_per_s']:.0f} images/s = {train_s / 60:.1f} min training "
        f"+ {eval_s / 60:.1f} min evaluation = {hours * 60:.1f} min; "
        f"Fargate 2 vCPU on-demand ${hours * cost_per_hour:.3f}, "
        f"Spot ~${hours * cost_per_hour * (1 - SPOT_DISCOUNT):.3f}",
    ]
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m trainer.bench", description=__doc__.split("\n\n")[0])
    parser.add_argument("--images", type=int, default=10240, help="synthetic training images (default 10240)")
    parser.add_argument(
        "--json", default=".pushtrain/bench/trainer.json", help="also write the raw results here (default %(default)s)"
    )
    args = parser.parse_args(argv)
    results = run(args.images)
    print(report(results, TrainConfig().cost_per_hour))
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
