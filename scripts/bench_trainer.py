"""`make bench ARGS=trainer`: how fast the trainer trains on this machine, how close to the matmul peak,
what the default recipe would take on full-size CIFAR-10, and whether bf16 holds accuracy.

    python scripts/bench_trainer.py                  # everything: ~6 (Zen 5) to ~10 (Zen 4) minutes on 2 quiet cores
    python scripts/bench_trainer.py --skip parity    # throughput and the estimate only (~4 minutes)
    python scripts/bench_trainer.py --only parity    # the bf16-vs-fp32 accuracy table only
    python scripts/bench_trainer.py --json out.json

A tool beside the product, not in it: it imports the trainer package (installed by `make setup`), the
trainer imports nothing of it, and the image does not ship it.

Method. Every rate is the median over several timed windows after warm-up steps (oneDNN creates its
kernels on first use). A contention probe reads /proc/stat before and after, and each window's CPU
time against its wall time, and flags a machine that other processes were using: on a busy machine
the wall-clock rates understate what the code does, and the report says so.

Measured, on synthetic CIFAR-format data of full CIFAR-10 size (throughput does not depend on pixels):
(a) a replica of the seed's loop (batch 4, per-image PIL transforms, 2 DataLoader workers, fp32);
(b) our pipeline with --model cnn and (c) with --model airbench (the default recipe), fp32 and, where the
CPU runs it natively, bf16 (elsewhere the trainer trains fp32: --emulated-bf16 measures bf16 anyway);
the matmul peak of each precision (the faster of torch.mm and the same product as a 1x1 convolution:
they can run in different libraries), with each row's GFLOP/s against the peak of its own precision;
FLOPs per training image from torch.utils.flop_counter, with and without zero-padding work; the
default model timed in both phases of its recipe (the whitening bias trains in the first 3 epochs,
then the first convolution needs no input gradient) and weighted by the steps of each; an ESTIMATE of
the full default recipe on 50,000 + 10,000 images from its parts (each phase's steps x its step time,
the per-epoch plan and evaluation, the final TTA evaluation), per precision; the FLOOR: all of the
recipe's FLOPs at the matmul peak of the precision the trainer trains in here (precision=auto), the least
time any code could take for it here, and the goals against it; LAYERS: each convolution pass of the
default model's step (forward, input gradient, weight gradient) timed alone, with its share of the peak
and the convolutions' share of the measured step (where the time outside them goes); on a machine
with a CUDA device, the default recipe's images/s there and its time to the recipe's end; and the
test accuracy of the default recipe in fp32 and bf16 (where bf16 is measured) over several seeds on the
hard synthetic set (`trainer.synth --hard`), where accuracy is far from saturated. Nothing here asserts on time.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import math
import os
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import cpuclock
import torch
from torch import nn
from trainer.config import RECIPES, TrainConfig, load_config
from trainer.data import Cifar10Data, load_dataset, plan_epoch
from trainer.nets import SeedCNN, build_model
from trainer.resources import apply_threads, available_cpus, cpu_has_native_bf16, cpu_model
from trainer.train import TrainingSession, fit

from trainer import recipe, synth

CIFAR10_TRAIN = 50_000
CIFAR10_TEST = 10_000
SPOT_DISCOUNT = 0.7  # Fargate Spot is typically ~70 % below on-demand
BUSY_SHARE = 0.10  # other processes using more than this share of our CPUs flags the machine as busy
EFFICIENT = 0.85  # a window whose CPU time is below this share of wall time x threads was descheduled


@dataclass(frozen=True)
class Sizes:
    """How much data each part uses: full size for real numbers, tiny for a smoke run of the code paths."""

    train: int = CIFAR10_TRAIN  # generated training images for the throughput and the estimate
    test: int = CIFAR10_TEST
    parity_train: int = 2500  # hard generated images for the parity table: the default recipe reaches ~77 %
    parity_test: int = 1000
    parity_epochs: int = 8
    parity_seeds: tuple[int, ...] = (0, 1, 2)
    cnn_steps: tuple[int, int, int] = (3, 4, 5)  # (warm-up steps, windows, steps per window)
    airbench_steps: tuple[int, int, int] = (2, 3, 2)
    gpu_steps: tuple[int, int, int] = (5, 5, 10)  # a GPU step is milliseconds: more steps per window
    layers_batch: int = 1024  # the recipe's batch, for each convolution timed alone
    layers_steps: tuple[int, int, int] = (1, 3, 1)
    # n x n matmuls for the peak: oneDNN's best size differs by precision and cache (measured here: fp32
    # 192 GFLOP/s at 1024 but 168 at 2048), so the peak is the best median over these sizes
    matmul_sizes: tuple[int, ...] = (1024, 2048, 3072)
    # work per timed matmul window: ~69 GFLOP (four 2048^3 products) takes a fraction of a second at
    # a native-bf16 peak but minutes where bf16 is emulated (a CPU without AVX-512 BF16), so the smoke
    # run of the code paths asks for far less
    matmul_gflop: float = 4 * 2 * 2048**3 / 1e9


FULL = Sizes()
FULL_MATMUL_GFLOP = FULL.matmul_gflop
SMOKE = Sizes(
    train=2048,
    test=256,
    parity_train=320,
    parity_test=64,
    parity_epochs=1,
    parity_seeds=(0, 1),
    cnn_steps=(1, 2, 2),
    airbench_steps=(1, 2, 1),
    gpu_steps=(1, 2, 2),
    layers_batch=64,
    layers_steps=(0, 1, 1),
)
SECTIONS = ("machine", "seed", "throughput", "estimate", "layers", "threads", "gpu", "parity")
DATA_CACHE = Path(".pushtrain/bench")  # generated data is a pure function of its arguments: reused across runs


# --- the machine and its load ----------------------------------------------------------------------


def _cpu_times() -> tuple[int, int]:
    """(busy, total) jiffies of the CPUs in our affinity mask, from /proc/stat."""
    ours = {f"cpu{i}" for i in os.sched_getaffinity(0)}
    busy = total = 0
    with Path("/proc/stat").open(encoding="ascii") as fh:
        for line in fh:
            name, *values = line.split()
            if name in ours:
                ticks = [int(v) for v in values[:8]]
                total += sum(ticks)
                busy += sum(ticks) - ticks[3] - ticks[4]  # minus idle and iowait
    return busy, total


def _own_jiffies() -> int:
    fields = Path("/proc/self/stat").read_text(encoding="ascii").rsplit(")", 1)[1].split()
    return int(fields[11]) + int(fields[12])  # utime + stime, all threads


def others_load(seconds: float = 1.0) -> float | None:
    """Share of our CPUs that other processes used over `seconds` (0: quiet, 1: fully busy); None off Linux."""
    try:
        busy0, total0 = _cpu_times()
        own0 = _own_jiffies()
        time.sleep(seconds)
        busy1, total1 = _cpu_times()
        own1 = _own_jiffies()
    except (OSError, ValueError, AttributeError):
        return None
    total = total1 - total0
    return max(0.0, (busy1 - busy0 - (own1 - own0)) / total) if total > 0 else None


@dataclass
class Windows:
    """Timed windows of one measurement: wall seconds, CPU seconds of this process, and work units each."""

    wall: list[float]
    cpu: list[float]
    units: list[float]
    threads: int

    def rate(self) -> float:
        """Median units per wall second."""
        return statistics.median(u / w for u, w in zip(self.units, self.wall, strict=True))

    def efficiency(self) -> float:
        """Lowest share of wall time x threads that this process spent on a CPU in any window."""
        return min(c / (w * self.threads) for c, w in zip(self.cpu, self.wall, strict=True))


def timed_windows(run: Callable[[], float], warmup: int, windows: int, threads: int) -> Windows:
    """Call `run` (returning the units of work it did) `warmup` times untimed, then `windows` times timed."""
    for _ in range(warmup):
        run()
    result = Windows([], [], [], threads)
    for _ in range(windows):
        wall, cpu = time.perf_counter(), time.process_time()
        units = run()
        result.wall.append(time.perf_counter() - wall)
        result.cpu.append(time.process_time() - cpu)
        result.units.append(units)
    return result


# The two forms of the same n x n x n product that the peak takes the better of. torch.mm goes to the BLAS
# torch was built with (MKL on x86-64), a 1x1 convolution over channels-last 8x8 images to oneDNN, the
# library that runs the trainer's convolutions. They need not agree: on an AMD Zen 5 MKL's sgemm ran
# its AVX2 kernels, 189-212 GFLOP/s in fp32 against 357-468 for the convolution (bf16: 818-956 against
# 781-878, both oneDNN; the run trainer/README.md quotes), and the fp32 convolutions of the default
# model had run at "191 %" of an mm-only peak. The peak is the fastest GEMM torch runs here, whichever
# library it comes from.
GEMM_FORMS = ("torch.mm", "1x1 convolution")
DTYPES = {"fp32": torch.float32, "bf16": torch.bfloat16}
CONV_GEMM_SIDE = 8  # the 1x1 convolution's images are 8x8: n rows are n/64 images (oneDNN's 1x1-pixel
# images take a slow path: 93-236 GFLOP/s here)


def gemm(dtype: torch.dtype, n: int, form: str) -> Callable[[], torch.Tensor]:
    """One n x n x n product (2 n^3 FLOPs) in `dtype` as `form` (one of GEMM_FORMS)."""
    a, b = torch.randn(n, n).to(dtype), torch.randn(n, n).to(dtype)
    if form == "torch.mm":
        return lambda: torch.mm(a, b)
    if form != "1x1 convolution":
        raise ValueError(f"unknown GEMM form {form!r}: one of {GEMM_FORMS}")
    side = CONV_GEMM_SIDE
    if n % (side * side):
        raise ValueError(f"a 1x1-convolution GEMM needs n divisible by {side * side} ({side}x{side} images), not {n}")
    # rows of `a` are the pixels of n/64 channels-last images, `b` the n filters of n input channels
    images = a.view(n // (side * side), side, side, n).permute(0, 3, 1, 2)
    filters = b.view(n, n, 1, 1)
    return lambda: nn.functional.conv2d(images, filters)


def matmul_gflops(
    dtype: torch.dtype, threads: int, n: int = 2048, gflop: float = FULL_MATMUL_GFLOP, form: str = "torch.mm"
) -> Windows:
    """GFLOP per window of n x n x n products in `dtype` as `form` (2 n^3 FLOPs each, about `gflop` a
    window): 2 warm-up, 5 windows."""
    product = gemm(dtype, n, form)
    repeats = max(1, round(gflop * 1e9 / (2 * n**3)))

    def run() -> float:
        for _ in range(repeats):
            product()
        return 2 * n**3 * repeats / 1e9

    return timed_windows(run, 2, 5, threads)


def higher_peak(start: dict[str, Any], end: dict[str, Any]) -> dict[str, Any]:
    """The higher of a peak measured at the start of a run and one at its end, with both measurements
    kept: the higher of two measurements of the same matmul was up to 9 % above the lower between quiet
    runs on a Zen 4 (427 and 392 GFLOP/s in bf16), and within one quiet run on a Zen 5 9 % in bf16 (969
    then 891) and 13 % in fp32 (498 then 440). A low peak would flatter every ratio of the run held
    against it, so each ratio uses the higher; the run's CPU/wall efficiency is the worse of the two."""
    best, at = max((start, "start"), (end, "end"), key=lambda peak: peak[0]["per_s"])
    return best | {
        "at": at,
        "start": start,
        "end": end,
        "cpu_efficiency": min(start["cpu_efficiency"], end["cpu_efficiency"]),
    }


def matmul_peak(
    dtype: torch.dtype, threads: int, sizes: tuple[int, ...], gflop: float = FULL_MATMUL_GFLOP
) -> dict[str, Any]:
    """The best median GFLOP/s over `sizes` and GEMM_FORMS (the peak), with the size and form that reached it."""
    rows = [
        (_window_record(matmul_gflops(dtype, threads, n, gflop, form), 1e9), n, form)
        for form in GEMM_FORMS
        for n in sizes
    ]
    best, n, form = max(rows, key=lambda row: row[0]["per_s"])
    per_form = {f: {str(size): round(r["per_s"], 1) for r, size, g in rows if g == f} for f in GEMM_FORMS}
    efficiency = min(r["cpu_efficiency"] for r, _, _ in rows)  # a window of any size or form descheduled
    return best | {"n": n, "form": form, "per_form": per_form, "cpu_efficiency": efficiency}


# --- FLOPs -------------------------------------------------------------------------------------------


def _valid_taps(size_in: int, size_out: int, k: int, pad: int) -> int:
    """Kernel taps that land on real pixels, summed over the output positions of one axis (stride 1)."""
    return sum(1 for o in range(size_out) for t in range(k) if 0 <= o - pad + t < size_in)


def conv_flops(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> tuple[float, float]:
    """(FLOPs of one pass of `module` for one image as torch counts them, the same on real pixels only):
    the forward, the input gradient and the weight gradient each do this much work."""
    kh, kw = module.kernel_size
    if module.padding == "same":
        ph, pw = (kh - 1) // 2, (kw - 1) // 2
    else:
        ph, pw = module.padding if isinstance(module.padding, tuple) else (0, 0)
    (h_in, w_in), (h_out, w_out) = inputs[0].shape[-2:], output.shape[-2:]
    per_tap = 2 * (module.in_channels // module.groups) * module.out_channels  # FLOPs per tap, one image
    taps_valid = _valid_taps(h_in, h_out, kh, ph) * _valid_taps(w_in, w_out, kw, pw)
    return per_tap * kh * h_out * kw * w_out, per_tap * taps_valid


def _forward_with_conv_hook(model: nn.Module, hook: Callable[..., None], batch: torch.Tensor) -> None:
    """One forward pass of `model` on `batch` with `hook` on every convolution (removed after)."""
    hooks = [m.register_forward_hook(hook) for m in model.modules() if isinstance(m, nn.Conv2d)]
    try:
        model(batch)
    finally:
        for h in hooks:
            h.remove()


def padding_waste_flops(model: nn.Module, batch: torch.Tensor) -> float:
    """FLOPs per image spent on zero padding in the convolutions of one training step (fwd + bwd), or of
    one forward pass when called under `torch.no_grad()` (evaluation).

    Computed per image from the layer shapes, so it does not depend on the batch size.
    """
    waste = 0.0
    grads = torch.is_grad_enabled()

    def hook(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        nonlocal waste
        counted, real = conv_flops(module, inputs, output)
        passes = 1 + int(grads and module.weight.requires_grad) + int(grads and inputs[0].requires_grad)  # fwd, dW, dx
        waste += (counted - real) * passes

    _forward_with_conv_hook(model, hook, batch)
    return waste


def train_flops_per_image(model: nn.Module, batch_size: int = 8, epoch: int = 0) -> tuple[float, float]:
    """(FLOPs per training image as torch's counter sees them, the same without zero-padding work), in
    epoch `epoch`: what autograd computes depends on it (airbench's whitening bias trains in the first
    epochs only, and while it does the first 3x3 convolution also computes its input gradient)."""
    from torch.utils.flop_counter import FlopCounterMode

    start_epoch = getattr(model, "start_epoch", None)
    if start_epoch is not None:
        start_epoch(epoch)
    x = torch.rand(batch_size, 3, 32, 32)
    y = torch.randint(0, 10, (batch_size,))
    counter = FlopCounterMode(display=False)
    with counter:
        nn.functional.cross_entropy(model(x), y).backward()
    model.zero_grad(set_to_none=True)
    total = counter.get_total_flops() / batch_size
    return total, total - padding_waste_flops(model, x)


# --- (a) the seed's loop -------------------------------------------------------------------------


class SeedDataset(torch.utils.data.Dataset):
    """The training set as the seed's torchvision CIFAR10 served it: one PIL image per item through `transform`
    (torchvision's `CIFAR10.__getitem__`: `Image.fromarray` of the HWC uint8 array, then the transform)."""

    def __init__(self, data: Cifar10Data, transform: Callable[[Any], torch.Tensor]) -> None:
        self.images = data.train_images.permute(0, 2, 3, 1).contiguous().numpy()
        self.labels = data.train_labels.tolist()
        self.transform = transform

    def __len__(self) -> int:
        return len(self.labels)

    def __getitem__(self, index: int) -> tuple[torch.Tensor, int]:
        from PIL import Image

        return self.transform(Image.fromarray(self.images[index])), self.labels[index]


def seed_loop(data: Cifar10Data, threads: int, batches: int = 100) -> Windows:
    """The seed: per-image PIL->tensor transforms, DataLoader(batch 4, 2 workers), plain SGD."""
    from torchvision import transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    dataset = SeedDataset(data, transform)
    loader = iter(torch.utils.data.DataLoader(dataset, batch_size=4, shuffle=True, num_workers=2))
    torch.manual_seed(0)
    net = SeedCNN()
    net.normalize = nn.Identity()  # the seed normalized in the transform
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)

    def run() -> float:
        seen = 0
        for _ in range(batches):
            inputs, labels = next(loader)
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels)
            loss.backward()
            optimizer.step()
            _ = loss.item()  # the seed's running_loss += loss.item()
            seen += len(labels)
        return seen

    return timed_windows(run, 1, 3, threads)


# --- (b), (c) our pipeline -----------------------------------------------------------------------


def _config(data_root: Path, work: Path, *argv: str) -> TrainConfig:
    return load_config(["--data-uri", str(data_root), "--work-dir", str(work), "--progress", "none", *argv], {})


def training_windows(session: TrainingSession, warmup: int, windows: int, steps: int) -> Windows:
    """Training images per window of `steps` batches, inside one epoch of `session` (evaluation excluded)."""
    batch = session.batch_size
    marks: list[tuple[float, float]] = []

    def should_stop() -> bool:  # asked before every batch: the time between two asks is one step
        if session.device.type == "cuda":
            torch.cuda.synchronize(session.device)  # the device's work, not the launches
        marks.append((time.perf_counter(), time.process_time()))
        return len(marks) > warmup + windows * steps

    session.run_epoch(should_stop)
    result = Windows([], [], [], session.threads)
    for w in range(windows):
        start, end = marks[warmup + w * steps], marks[warmup + (w + 1) * steps]
        result.wall.append(end[0] - start[0])
        result.cpu.append(end[1] - start[1])
        result.units.append(steps * batch)
    return result


def eval_windows(session: TrainingSession, images: torch.Tensor, tta_level: int) -> Windows:
    """Evaluated images per window (one pass over `images` each) at a TTA level."""

    def run() -> float:
        session.predict_logits(images, tta_level=tta_level)
        return len(images)

    return timed_windows(run, 1, 3, session.threads)


def _seconds(fn: Callable[[], object]) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


@contextlib.contextmanager
def _step(name: str, results: dict[str, Any]) -> Iterator[None]:
    started = time.perf_counter()
    print(f"   measuring {name} ...", file=sys.stderr, flush=True)
    yield
    results.setdefault("bench_seconds", {})[name] = round(time.perf_counter() - started, 1)


def _cached_synth(n_train: int, n_test: int, difficulty: synth.Difficulty) -> Path:
    hard = "-hard" if difficulty != synth.EASY else ""
    root = DATA_CACHE / f"synth-{n_train}-{n_test}{hard}"
    if not (root / synth.BATCH_FOLDER / synth.MANIFEST).exists():
        synth.write_folder(root, n_train=n_train, n_test=n_test, seed=0, difficulty=difficulty)
    return root


def _window_record(w: Windows, flops_per_unit: float = 0.0) -> dict[str, Any]:
    rate = w.rate()
    return {
        "per_s": rate,
        "gflops": rate * flops_per_unit / 1e9,
        "cpu_efficiency": w.efficiency(),
        "windows_per_s": [u / s for u, s in zip(w.units, w.wall, strict=True)],
    }


def phases(model: str, steps_per_epoch: int, total_steps: int) -> list[tuple[int, int]]:
    """[(first epoch, steps)] of the recipe's phases that train different parts of the model.

    airbench: the whitening bias trains in the first `recipe.WHITEN_BIAS_EPOCHS` epochs (each step also
    computes the first convolution's input gradient) and is fixed after; the other models have one phase.
    """
    if model != "airbench":
        return [(0, total_steps)]
    early = min(total_steps, recipe.WHITEN_BIAS_EPOCHS * steps_per_epoch)
    return [(0, early), (recipe.WHITEN_BIAS_EPOCHS, total_steps - early)] if total_steps > early else [(0, early)]


def _phase_session(config: TrainConfig, data: Cifar10Data, epoch: int) -> TrainingSession:
    """A fresh session about to train epoch `epoch` (for timing only: the weights are the initial ones)."""
    session = TrainingSession(config, data)
    session.epochs_done = epoch
    return session


def _combine(parts: list[dict[str, Any]]) -> dict[str, Any]:
    """One row for the whole recipe from its phases: images and FLOPs over the time they all take."""
    seconds = sum(p["steps"] * p["step_seconds"] for p in parts)
    images = sum(p["steps"] * p["batch_size"] for p in parts)
    flops = sum(p["steps"] * p["batch_size"] * p["gflop_per_image"] for p in parts)
    flops_no_pad = sum(p["steps"] * p["batch_size"] * p["gflop_per_image_no_padding"] for p in parts)
    return {
        "per_s": images / seconds,
        "gflops": flops / seconds,
        "gflops_no_padding": flops_no_pad / seconds,
        "cpu_efficiency": min(p["cpu_efficiency"] for p in parts),
        "windows_per_s": [w for p in parts for w in p["windows_per_s"]],
        "recipe_train_gflop": flops,
        "recipe_train_gflop_no_padding": flops_no_pad,
        "phases": parts,
    }


def measure_recipe(
    config: TrainConfig, data: Cifar10Data, results: dict[str, Any], steps: tuple[int, int, int], *, evaluation: bool
) -> dict[str, Any]:
    """One model in one precision on one device: its phases timed and weighted (`_combine`), and with
    `evaluation` the parts of an epoch the estimate needs (evaluation rates, setup, plan)."""
    label = f"{config.model} {config.precision}" + (" on the GPU" if config.device == "cuda" else "")
    warmup, windows, per_window = steps
    parts = []
    session = TrainingSession(config, data)
    for epoch, phase_steps in phases(config.model, session.steps_per_epoch, session.total_steps):
        with _step(f"{label} from epoch {epoch}", results):
            session = _phase_session(config, data, epoch)
            phase_flops, phase_no_pad = train_flops_per_image(build_model(config.model), epoch=epoch)
            part = _window_record(training_windows(session, warmup, windows, per_window), phase_flops)
            part.update(
                epoch=epoch,
                steps=phase_steps,
                batch_size=session.batch_size,
                step_seconds=session.batch_size / part["per_s"],
                gflop_per_image=phase_flops / 1e9,
                gflop_per_image_no_padding=phase_no_pad / 1e9,
            )
            parts.append(part)
    record = _combine(parts)
    record["step_seconds"] = sum(p["steps"] * p["step_seconds"] for p in parts) / sum(p["steps"] for p in parts)
    if evaluation:
        with _step(f"{label} evaluation", results):
            record["eval_per_s"] = _window_record(eval_windows(session, data.test_images[:2000], 0))["per_s"]
            tta = eval_windows(session, data.test_images[:500], recipe.TTA_LEVEL)
            record["eval_tta_per_s"] = _window_record(tta)["per_s"]
            record["whitening_seconds"] = _seconds(lambda: TrainingSession(config, data))
            record["plan_seconds"] = _seconds(lambda: plan_epoch(len(data.train_labels), 0, 1, 2))
            record["batch_size"] = session.batch_size
            record["steps_per_epoch"] = session.steps_per_epoch
            record["total_steps"] = session.total_steps
            record["epoch_eval_images"] = session.epoch_eval_images
            eval_flops, eval_no_pad = eval_flops_per_image(build_model(config.model))
            record["eval_gflop_per_image"] = eval_flops / 1e9
            record["eval_gflop_per_image_no_padding"] = eval_no_pad / 1e9
    return record


def measure_throughput(root: Path, work: Path, data: Cifar10Data, results: dict[str, Any], sizes: Sizes) -> None:
    """Training and evaluation throughput of both models in both precisions on the CPUs (the Fargate case,
    also on a machine with a GPU), and each part of an epoch.

    The default model is timed in each phase of its recipe (`phases`) and its row weights them by the
    steps the full recipe spends in each, so the rate and the share of the peak are those of a whole run.
    """
    for model in ("cnn", "airbench"):
        flops, flops_no_pad = train_flops_per_image(build_model(model))
        row: dict[str, Any] = {
            "train_gflop_per_image": flops / 1e9,
            "train_gflop_per_image_no_padding": flops_no_pad / 1e9,
        }
        steps = sizes.cnn_steps if model == "cnn" else sizes.airbench_steps
        for precision in results["precisions"]:
            config = _config(root, work, "--model", model, "--precision", precision, "--device", "cpu")
            row[precision] = measure_recipe(config, data, results, steps, evaluation=model == "airbench")
        results[model] = row


# --- where the step's time goes: each convolution alone ------------------------------------------------

LAYERS_EPOCH = recipe.WHITEN_BIAS_EPOCHS  # the recipe's longer phase: the whitening stem fixed


@dataclass(frozen=True)
class ConvPass:
    """One pass of one convolution in a training step: the forward, the input gradient (dx), the weight
    gradient (dw); its FLOPs per image counted as torch counts them and on real pixels only."""

    layer: str
    shape: str  # "in -> out channels, H x W output"
    name: str  # "fwd", "dx" or "dw"
    gflop_per_image: float
    gflop_per_image_no_padding: float


def conv_passes(
    model: nn.Module, epoch: int = LAYERS_EPOCH
) -> list[tuple[ConvPass, nn.Conv2d, torch.Size, torch.Size]]:
    """The convolution passes autograd runs in one training step of `model` in `epoch` (a module whose input
    needs no gradient has no dx pass; a frozen weight no dw pass), with each module and its input and output
    shapes for one image."""
    start_epoch = getattr(model, "start_epoch", None)
    if start_epoch is not None:
        start_epoch(epoch)
    found: list[tuple[ConvPass, nn.Conv2d, torch.Size, torch.Size]] = []
    names = {module: name for name, module in model.named_modules()}

    def hook(module: nn.Conv2d, inputs: tuple[torch.Tensor, ...], output: torch.Tensor) -> None:
        counted, real = conv_flops(module, inputs, output)
        shape = f"{module.in_channels:>3} -> {module.out_channels:<3} {output.shape[-2]}x{output.shape[-1]}"
        passes = ["fwd"] + (["dx"] if inputs[0].requires_grad else []) + (["dw"] if module.weight.requires_grad else [])
        for name in passes:
            entry = ConvPass(names[module], shape, name, counted / 1e9, real / 1e9)
            found.append((entry, module, inputs[0].shape[1:], output.shape[1:]))

    _forward_with_conv_hook(model, hook, torch.rand(1, 3, 32, 32))
    return found


def _pass_runner(
    entry: ConvPass, module: nn.Conv2d, x: torch.Tensor, w: torch.Tensor, g: torch.Tensor
) -> Callable[[], float]:
    """One call of the pass's aten kernel (what autograd calls in the step), returning its FLOPs."""
    stride, padding, dilation = list(module.stride), list(module.padding), list(module.dilation)
    mask = [entry.name == "dx", entry.name == "dw", False]
    flops = len(x) * entry.gflop_per_image * 1e9

    def run() -> float:
        if entry.name == "fwd":
            nn.functional.conv2d(x, w, None, stride, padding, dilation, module.groups)
        else:
            torch.ops.aten.convolution_backward(
                g, x, w, None, stride, padding, dilation, False, [0, 0], module.groups, mask
            )
        return flops

    return run


def measure_layers(results: dict[str, Any], sizes: Sizes) -> None:
    """Each convolution pass of the default model's step (after its whitening phase) timed alone at the
    recipe's batch in the precision the trainer trains in, channels-last as the trainer runs them: what
    share of the step the convolutions take, and how near the matmul peak each one runs."""
    precision = results["trained"]
    dtype = DTYPES[precision]
    batch, (warmup, windows, _) = sizes.layers_batch, sizes.layers_steps
    rows = []
    with _step(f"airbench {precision} convolutions alone (batch {batch})", results):
        for entry, module, shape_in, shape_out in conv_passes(build_model("airbench")):
            x = torch.randn(batch, *shape_in).to(dtype).contiguous(memory_format=torch.channels_last)
            w = module.weight.detach().to(dtype).contiguous(memory_format=torch.channels_last)
            g = torch.randn(batch, *shape_out).to(dtype).contiguous(memory_format=torch.channels_last)
            run = _pass_runner(entry, module, x, w, g)
            record = _window_record(timed_windows(run, warmup, windows, results["threads"]), 1.0)
            gflops = record["per_s"] / 1e9
            rows.append({
                "layer": entry.layer, "shape": entry.shape, "pass": entry.name,
                "seconds": batch * entry.gflop_per_image / gflops,
                "gflops": gflops,
                "gflops_no_padding": gflops * entry.gflop_per_image_no_padding / entry.gflop_per_image,
                "cpu_efficiency": record["cpu_efficiency"],
            })  # fmt: skip
    # the step of the same phase the throughput section measured, to hold the convolutions against
    phase = next(
        (p for p in results.get("airbench", {}).get(precision, {}).get("phases", []) if p["epoch"] == LAYERS_EPOCH),
        None,
    )
    results["layers"] = {
        "precision": precision,
        "batch": batch,
        "rows": rows,
        "conv_seconds": sum(r["seconds"] for r in rows),
        "step": {"seconds": phase["step_seconds"], "batch": phase["batch_size"]} if phase else None,
    }


def _layers_lines(layers: dict[str, Any], peak: float | None) -> list[str]:
    p = layers["precision"]
    lines = [
        "",
        f"LAYERS: the default model's convolutions after epoch {LAYERS_EPOCH} ({p}, batch {layers['batch']}, "
        "channels-last), each pass timed alone:",
        f"  {'layer':<14}{'in -> out  output':<20}{'pass':<6}{'ms':>7}{'GFLOP/s':>9}{'real':>7}"
        + (f"{'real % peak':>13}" if peak else ""),
    ]
    for r in layers["rows"]:
        share = f"{100 * r['gflops_no_padding'] / peak:>12.0f}%" if peak else ""
        lines.append(
            f"  {r['layer']:<14}{r['shape']:<20}{r['pass']:<6}{1000 * r['seconds']:>7.0f}{r['gflops']:>9.0f}"
            f"{r['gflops_no_padding']:>7.0f}{share}"
        )
    step = layers["step"]
    if step:
        conv, seconds = layers["conv_seconds"] * step["batch"] / layers["batch"], step["seconds"]
        lines.append(
            f"  convolutions {conv:.2f} s of the {seconds:.2f} s step measured above (batch {step['batch']}): "
            f"{100 * conv / seconds:.0f} %; the rest (BatchNorm, GELU, pooling, loss, optimizer, lookahead, batch "
            f"assembly, and what running together costs the passes) {seconds - conv:.2f} s"
        )
    return lines


# --- task size: thread scaling and the Fargate table ----------------------------------------------------

# Fargate Linux/x86 on demand, us-east-1 (the source of TrainConfig.cost_per_hour): billed per vCPU-hour
# and per GB-hour, each task size with the least memory Fargate pairs with its vCPUs.
FARGATE_VCPU_HOUR = 0.04048
FARGATE_GB_HOUR = 0.004445
TASK_SIZES = ((2, 4), (4, 8), (8, 16))  # (vCPU, memory GB)


def parallel_fraction(step_1: float, step_2: float) -> float:
    """Amdahl's parallel share p of a step from its time on 1 and on 2 threads: step_2 = step_1 (1 - p + p / 2)."""
    return min(1.0, max(0.0, 2 * (1 - step_2 / step_1)))


def task_size_table(step_1: float, step_2: float, seconds_at_2: float) -> list[dict[str, float]]:
    """Time and cost of a run on each task size in TASK_SIZES, from the run's time on 2 threads scaled by
    Amdahl's law fitted to 1 vs 2 threads. An optimistic bound: it assumes n vCPUs scale like the first
    two (no memory-bandwidth limit, and a vCPU is a hyperthread: two may share one core's FMA units)."""
    p = parallel_fraction(step_1, step_2)
    rows = []
    for vcpu, memory_gb in TASK_SIZES:
        seconds = seconds_at_2 * (1 - p + p / vcpu) / (1 - p + p / 2)
        per_hour = vcpu * FARGATE_VCPU_HOUR + memory_gb * FARGATE_GB_HOUR
        rows.append(
            {
                "vcpu": vcpu,
                "memory_gb": memory_gb,
                "seconds": seconds,
                "per_hour": per_hour,
                "cost": seconds / 3600 * per_hour,
            }
        )
    return rows


def measure_threads(root: Path, work: Path, data: Cifar10Data, results: dict[str, Any], sizes: Sizes) -> None:
    """The default model's step in the precision it trains in here (after epoch 3, most of the recipe) on 1
    and on 2 threads, and the task-size table it implies for the recipe's training steps."""
    steps: dict[int, float] = {}
    precision = results["trained"]
    for threads in (1, 2):
        with _step(f"airbench {precision} on {threads} thread(s)", results):
            config = _config(root, work, "--precision", precision, "--device", "cpu", "--threads", str(threads))
            session = _phase_session(config, data, recipe.WHITEN_BIAS_EPOCHS)
            record = _window_record(training_windows(session, *sizes.airbench_steps))
            steps[threads] = session.batch_size / record["per_s"]
    apply_threads(0)
    total_steps = TrainingSession(_config(root, work), data).total_steps
    results["thread_scaling"] = {  # results["threads"] is the thread count of the other sections
        "precision": precision,
        "step_1": steps[1],
        "step_2": steps[2],
        "total_steps": total_steps,
        "parallel_fraction": parallel_fraction(steps[1], steps[2]),
        "table": task_size_table(steps[1], steps[2], total_steps * steps[2]),
    }


def _threads_lines(t: dict[str, Any]) -> list[str]:
    lines = [
        "",
        f"THREADS: airbench {t['precision']} step {t['step_1']:.2f} s on 1 thread, {t['step_2']:.2f} s on 2 "
        f"({t['step_1'] / t['step_2']:.2f}x; Amdahl's parallel share {t['parallel_fraction']:.2f})",
        f"  the recipe's {t['total_steps']} training steps by Fargate task size (Amdahl from 1 vs 2 threads, "
        "an optimistic bound beyond 2; on-demand us-east-1):",
    ]
    for row in t["table"]:
        lines.append(
            f"  {row['vcpu']} vCPU / {row['memory_gb']} GB: {row['seconds'] / 60:5.1f} min  "
            f"${row['per_hour']:.4f}/h  ${row['cost']:.4f} per run"
        )
    return lines


def measure_gpu(root: Path, work: Path, data: Cifar10Data, results: dict[str, Any], sizes: Sizes) -> None:
    """The default recipe on the CUDA device, when there is one: images/s (windows end on a synchronize,
    so they time the device's work, not the launches) and the estimated time to the recipe's end."""
    if not torch.cuda.is_available():
        results["gpu"] = {"device": None}
        return
    config = _config(root, work, "--device", "cuda", "--precision", "bf16")
    record = measure_recipe(config, data, results, sizes.gpu_steps, evaluation=True)
    record["estimate"] = estimate(record, float(RECIPES["airbench"]["epochs"]), cost_per_hour=0.0)
    results["gpu"] = {"device": torch.cuda.get_device_name(), "bf16": record}


def eval_flops_per_image(model: nn.Module, batch_size: int = 8) -> tuple[float, float]:
    """(FLOPs of one forward pass per image in evaluation mode as torch's counter sees them, the same
    without zero-padding work)."""
    from torch.utils.flop_counter import FlopCounterMode

    model.eval()
    x = torch.rand(batch_size, 3, 32, 32)
    counter = FlopCounterMode(display=False)
    with counter, torch.no_grad():
        model(x)
    total = counter.get_total_flops() / batch_size
    with torch.no_grad():
        return total, total - padding_waste_flops(model, x)


def estimate(row: dict[str, Any], epochs: float, cost_per_hour: float, *, epoch_eval: bool = False) -> dict[str, float]:
    """Wall time and cost of the full default recipe on 50,000 + 10,000 images, from measured parts.

    The timed recipe is what the reference times: setup (whitening), training and the final TTA
    evaluation. The per-epoch progress evaluations the trainer adds are left out unless `epoch_eval`;
    `epoch_eval_s` is their cost either way.
    """
    passes = math.ceil(epochs)
    train_s = row["total_steps"] * row["step_seconds"] + passes * row["plan_seconds"]
    if "phases" in row:  # each phase's steps at that phase's step time
        train_s = sum(p["steps"] * p["step_seconds"] for p in row["phases"]) + passes * row["plan_seconds"]
    epoch_eval_s = passes * row["epoch_eval_images"] / row["eval_per_s"]
    eval_s = (epoch_eval_s if epoch_eval else 0.0) + CIFAR10_TEST / row["eval_tta_per_s"]
    total_s = row["whitening_seconds"] + train_s + eval_s
    hours = total_s / 3600
    return {
        "train_s": train_s,
        "eval_s": eval_s,
        "epoch_eval_s": epoch_eval_s,
        "total_s": total_s,
        "cost_on_demand": hours * cost_per_hour,
        "cost_spot": hours * cost_per_hour * (1 - SPOT_DISCOUNT),
    }


def tta_views(level: int) -> int:
    """Forward passes per image that `recipe.tta_logits` makes at `level`."""
    calls = 0

    def count(x: torch.Tensor) -> torch.Tensor:
        nonlocal calls
        calls += 1
        return x[:, :1, 0, 0]

    recipe.tta_logits(count, torch.zeros(1, 3, 4, 4), level)
    return calls


def floor(row: dict[str, Any], epochs: float, peak_gflops: float, *, epoch_eval: bool = False) -> dict[str, float]:
    """The least time the timed recipe can take here: all its FLOPs at 100 % of the matmul peak.

    Training FLOPs are the recipe's steps x batch x FLOPs per image of each phase; evaluation FLOPs are
    the final TTA pass (and the per-epoch progress evaluations with `epoch_eval`, as in `estimate`). No
    schedule of this recipe on this machine finishes sooner, whatever the code does.
    `seconds_no_padding` skips even the multiply-adds on the zero border (oneDNN's direct convolutions
    do): the least time of any exact implementation, the real-pixel floor.
    """
    evaluated = tta_views(recipe.TTA_LEVEL) * CIFAR10_TEST
    if epoch_eval:
        evaluated += math.ceil(epochs) * row["epoch_eval_images"]
    train, train_no_pad = row["recipe_train_gflop"], row["recipe_train_gflop_no_padding"]
    evaluation, eval_no_pad = (
        evaluated * row["eval_gflop_per_image"],
        evaluated * row["eval_gflop_per_image_no_padding"],
    )
    return {
        "train_gflop": train,
        "eval_gflop": evaluation,
        "seconds": (train + evaluation) / peak_gflops,
        "gflop_no_padding": train_no_pad + eval_no_pad,
        "seconds_no_padding": (train_no_pad + eval_no_pad) / peak_gflops,
    }


# --- the hardware peak and the goals -------------------------------------------------------------------

# FLOP per cycle per core (a multiply-add counts 2) by instruction set, for the hardware peak; an assumption
# from the vendors' figures and Agner Fog's instruction tables (https://www.agner.org/optimize/), overridable
# with --flop-per-cycle:
# - bf16, AMX (Intel Sapphire Rapids and later): 1,024;
# - bf16, AVX-512 BF16 (vdpbf16ps: 32 bf16 pairs, 64 FLOP per 512-bit instruction): AMD Zen 4 (family 0x19)
#   runs one per cycle on its 256-bit halves; Zen 5 (0x1a) and Intel run two;
# - fp32, FMA: two FMA pipes per core, 16 FLOP per 256-bit FMA, 32 per 512-bit one; Zen 4 splits a 512-bit
#   FMA over its 256-bit pipes (32 a cycle, as Zen 3's AVX2), Zen 5 and Intel's server cores run two 512-bit
#   FMAs (64; some Xeon Silver/Bronze parts have one 512-bit unit: 32, give --flop-per-cycle there).
AMX_FLOP_PER_CYCLE = 1024
VDPBF16PS_FLOP = 64
FMA256_FLOP = 16
# the trainer's precision here (precision=auto: bf16 only where it is native) against its own matmul peak
GOAL_REAL_PIXEL_RATIO = 0.85  # GFLOP/s on real pixels >= this share of the matmul peak
GOAL_OVER_FLOOR = 1.15  # end-to-end estimate <= this many times the real-pixel floor of the same run


def cpuinfo_fields(text: str, cpus: set[int] | None = None) -> list[dict[str, str]]:
    """The /proc/cpuinfo blocks (one per logical CPU) as dicts, only those in `cpus` when given."""
    blocks = []
    for chunk in text.strip().split("\n\n"):
        fields = {}
        for line in chunk.splitlines():
            key, sep, value = line.partition(":")
            if sep:
                fields[key.strip()] = value.strip()
        if fields and (cpus is None or int(fields.get("processor", -1)) in cpus):
            blocks.append(fields)
    return blocks


def flop_per_cycle(block: dict[str, str], precision: str) -> tuple[int, str] | None:
    """`precision` FLOP per cycle per core from one cpuinfo block, and why; None where the hardware has no
    native path for it (bf16 without AVX-512 BF16 or AMX; fp32 without FMA)."""
    flags = set(block.get("flags", "").split())
    zen4 = block.get("vendor_id") == "AuthenticAMD" and block.get("cpu family") == "25"
    return _bf16_per_cycle(flags, zen4) if precision == "bf16" else _fp32_per_cycle(flags, zen4)


def _bf16_per_cycle(flags: set[str], zen4: bool) -> tuple[int, str] | None:
    if "amx_bf16" in flags:
        return AMX_FLOP_PER_CYCLE, "AMX"
    if "avx512_bf16" not in flags:
        return None
    if zen4:
        return VDPBF16PS_FLOP, "AVX-512 BF16, one 512-bit vdpbf16ps per cycle (Zen 4)"
    return 2 * VDPBF16PS_FLOP, "AVX-512 BF16, two 512-bit vdpbf16ps per cycle"


def _fp32_per_cycle(flags: set[str], zen4: bool) -> tuple[int, str] | None:
    if "fma" not in flags:
        return None
    if "avx512f" in flags and not zen4:
        return 4 * FMA256_FLOP, "two 512-bit FMAs per cycle"
    split = " (Zen 4 splits 512-bit ones)" if "avx512f" in flags else ""  # family 25 is Zen 3 too (no AVX-512)
    return 2 * FMA256_FLOP, "two 256-bit FMAs per cycle" + split


def hardware_peak(
    threads: int,
    cpuinfo: str,
    cpus: set[int] | None = None,
    per_cycle: int | None = None,
    precision: str = "bf16",
    *,
    measured_mhz: float | None = None,
) -> dict[str, Any] | None:
    """threads x FLOP per cycle x clock, in GFLOP/s. The clock is `measured_mhz` when given (`cpuclock`:
    the cores' clock with `threads` of them busy), else the mean `cpu MHz` that the kernel reports in
    /proc/cpuinfo for our CPUs (on a VM often the nominal clock, not the boost one: the figure is then
    low, and the matmul beating it says so). None without a clock or a native path."""
    blocks = cpuinfo_fields(cpuinfo, cpus)
    clocks = [float(b["cpu MHz"]) for b in blocks if "cpu MHz" in b]
    known = flop_per_cycle(blocks[0], precision) if blocks else None
    if per_cycle is not None:
        known = (per_cycle, "given with --flop-per-cycle")
    cpuinfo_mhz = statistics.mean(clocks) if clocks else None
    mhz = measured_mhz or cpuinfo_mhz
    if not mhz or known is None:
        return None
    return {
        "precision": precision,
        "per_s": threads * known[0] * mhz / 1e3,
        "threads": threads,
        "flop_per_cycle": known[0],
        "why": known[1],
        "mhz": mhz,
        "clock": "measured" if measured_mhz else "cpuinfo",
        "cpuinfo_mhz": cpuinfo_mhz,
    }


def _hardware(
    results: dict[str, Any], threads: int, cpuinfo: str, per_cycle: int | None, clocks: list[float | None]
) -> None:
    """The hardware peak at the highest of the clocks measured so far (`cpuclock`; None where the chain
    could not run), with every measurement when there were several and all ran."""
    measured = [mhz for mhz in clocks if mhz]
    results["hardware"] = hardware_peak(
        threads,
        cpuinfo,
        os.sched_getaffinity(0),
        per_cycle,
        results["trained"],
        measured_mhz=max(measured, default=None),
    )
    if results["hardware"] and len(clocks) > 1 and len(measured) == len(clocks):
        results["hardware"]["measured_mhz"] = clocks


def judge(results: dict[str, Any], *, epoch_eval: bool = False) -> None:
    """The floor and the goals of a run, against the peak of the precision the trainer trains in, once
    that peak has its end-of-run measurement too (`higher_peak`)."""
    trained = results["trained"]
    if "estimate" in results and f"matmul_{trained}" in results and trained in results["airbench"]:
        peak, row = results[f"matmul_{trained}"]["per_s"], results["airbench"][trained]
        results["floor"] = floor(row, float(RECIPES["airbench"]["epochs"]), peak, epoch_eval=epoch_eval)
        results["goals"] = goals(row, peak, results["estimate"][trained]["total_s"], results["floor"])


def goals(row: dict[str, Any], peak: float, total_s: float, floor_row: dict[str, float]) -> dict[str, Any]:
    """The two goals of one run: the real-pixel share of the matmul peak (of the precision the trainer
    trains in here), and the end-to-end estimate over the real-pixel floor (all from the same run)."""
    real = row["gflops_no_padding"] / peak
    over = total_s / floor_row["seconds_no_padding"]
    return {
        "real_pixel_ratio": real,
        "counted_ratio": row["gflops"] / peak,
        "real_pixel_ratio_met": real >= GOAL_REAL_PIXEL_RATIO,
        "over_floor": over,
        "over_floor_met": over <= GOAL_OVER_FLOOR,
    }


def parity(work: Path, results: dict[str, Any], sizes: Sizes) -> None:
    """Test accuracy of the default recipe in fp32 and bf16 on the hard synthetic set, one run per seed."""
    root = _cached_synth(sizes.parity_train, sizes.parity_test, synth.HARD)
    seeds = sizes.parity_seeds
    table: dict[str, list[float]] = {"fp32": [], "bf16": []}
    for precision, accuracies in table.items():
        for seed in seeds:
            with _step(f"parity {precision} seed {seed}", results):
                epochs = str(sizes.parity_epochs)
                config = _config(
                    root, work, "--precision", precision, "--seed", str(seed), "--epochs", epochs, "--device", "cpu"
                )
                session = TrainingSession(config, load_dataset(config))
                fit(session)
                accuracies.append(session.history[-1].test_accuracy)
    results["parity"] = {
        "dataset": f"trainer.synth --hard, {sizes.parity_train} train / {sizes.parity_test} test images",
        "epochs": sizes.parity_epochs,
        "seeds": list(seeds),
        "accuracy": table,
    }


def parity_verdict(table: dict[str, list[float]]) -> tuple[float, float, bool]:
    """(bf16 - fp32 mean accuracy, two standard errors of that difference, whether bf16 is within them)."""
    f, b = table["fp32"], table["bf16"]
    diff = statistics.mean(b) - statistics.mean(f)
    noise = 2 * math.sqrt(statistics.variance(f) / len(f) + statistics.variance(b) / len(b))
    return diff, noise, diff >= -noise


def run(
    sections: tuple[str, ...],
    sizes: Sizes = FULL,
    *,
    epoch_eval: bool = False,
    flop_per_cycle: int | None = None,
    cpuinfo: Path = Path("/proc/cpuinfo"),
    precisions: tuple[str, ...] | None = None,
) -> dict[str, Any]:
    """Run `sections`; the timed recipe leaves the per-epoch progress evaluation out unless `epoch_eval`.

    `precisions` measured: by default fp32, and bf16 where the CPU runs it natively. Where bf16 is emulated
    (no AVX-512 BF16 or AMX: oneDNN converts through fp32, several times slower) the trainer trains in fp32
    (precision=auto), so the floors, goals and thread table are those of fp32; timing emulated bf16 would
    take most of the bench's time to describe a path nobody runs there.
    """
    threads = apply_threads(0)
    native = cpu_has_native_bf16()
    measured = precisions or (("fp32", "bf16") if native else ("fp32",))
    results: dict[str, Any] = {
        "threads": threads,
        "cpus_available": available_cpus(),
        "cpu_model": cpu_model() or "unknown",
        "native_bf16": native,
        "precisions": list(measured),
        "trained": "bf16" if native else "fp32",  # what precision=auto picks on this CPU
        "torch": torch.__version__,
        "sections": list(sections),
        "smoke": sizes != FULL,
        "others_load_before": others_load(),
        "epoch_eval": epoch_eval,
    }
    with tempfile.TemporaryDirectory(prefix="trainer-bench-") as tmp:
        work = Path(tmp) / "work"
        if "machine" in sections:
            with _step("matmul", results):
                for name in measured:
                    results[f"matmul_{name}"] = matmul_peak(
                        DTYPES[name], threads, sizes.matmul_sizes, sizes.matmul_gflop
                    )
                text = cpuinfo.read_text(encoding="ascii", errors="replace") if cpuinfo.exists() else ""
                clocks = [cpuclock.measure_mhz(threads)]
                _hardware(results, threads, text, flop_per_cycle, clocks)
        if {"seed", "throughput", "estimate", "threads", "gpu"} & set(sections):
            with _step(f"synthetic data ({sizes.train:,} + {sizes.test:,} images)", results):
                root = _cached_synth(sizes.train, sizes.test, synth.EASY)
                data = load_dataset(_config(root, work))
            if "seed" in sections:
                with _step("seed loop", results):
                    results["seed"] = _window_record(seed_loop(data, threads))
            if {"throughput", "estimate"} & set(sections):
                measure_throughput(root, work, data, results, sizes)
                epochs = float(RECIPES["airbench"]["epochs"])
                cost = TrainConfig().cost_per_hour
                results["estimate"] = {
                    p: estimate(results["airbench"][p], epochs, cost, epoch_eval=epoch_eval) for p in measured
                }
            if "threads" in sections:
                measure_threads(root, work, data, results, sizes)
            if "gpu" in sections:
                measure_gpu(root, work, data, results, sizes)
        if "layers" in sections:
            measure_layers(results, sizes)
        if "parity" in sections and "bf16" in measured:
            parity(work, results, sizes)
        elif "parity" in sections:
            results["parity"] = {
                "skipped": "bf16 is emulated on this CPU (no AVX-512 BF16 or AMX) and the trainer "
                "trains fp32 here; --emulated-bf16 measures it anyway (slowly)"
            }
        if "machine" in sections and len(sections) > 1:
            with _step("matmul again", results):
                for name in measured:
                    again = matmul_peak(DTYPES[name], threads, sizes.matmul_sizes, sizes.matmul_gflop)
                    results[f"matmul_{name}"] = higher_peak(results[f"matmul_{name}"], again)
                # the clock too: the matmul's share of the hardware peak is held against the higher
                clocks.append(cpuclock.measure_mhz(threads))
                _hardware(results, threads, text, flop_per_cycle, clocks)
    judge(results, epoch_eval=epoch_eval)
    results["others_load_after"] = others_load()
    return results


def _busy_note(results: dict[str, Any]) -> str:
    loads = [x for x in (results.get("others_load_before"), results.get("others_load_after")) if x is not None]
    effs = [r["cpu_efficiency"] for r in _rows(results)]
    busy = any(x > BUSY_SHARE for x in loads) or any(e < EFFICIENT for e in effs)
    load_text = ", ".join(f"{100 * x:.0f} %" for x in loads) or "unknown"
    eff_text = f"lowest CPU/wall efficiency of a window {100 * min(effs):.0f} %" if effs else "no windows"
    verdict = "BUSY: other processes competed for the CPUs; rates below understate the code" if busy else "quiet"
    return f"machine {verdict} (others' share of our CPUs before/after: {load_text}; {eff_text})"


def _peak_lines(results: dict[str, Any], peak: dict[str, float]) -> list[str]:
    """The matmul peak of each precision, with the form, size and measurement that reached it, and every
    rate measured (per measurement and form, one per size)."""
    records = {p: results[f"matmul_{p}"] for p in peak}
    first = next(iter(records.values()))
    sizes = "/".join(first.get("per_form", {}).get(GEMM_FORMS[0], {}))
    twice = all("start" in r for r in records.values())
    when = "; measured at the start and again at the end of the run, the higher used" if twice else ""
    lines = [
        f"matmul peak (best median of 5 windows over n = {sizes}, each product as {GEMM_FORMS[0]} and as a "
        f"{GEMM_FORMS[1]}{when}): "
        + ", ".join(
            f"{p} {v:.0f} GFLOP/s ({records[p].get('form')}, n={records[p].get('n')}"
            + (f", at the {records[p]['at']})" if twice else ")")
            for p, v in peak.items()
        )
    ]
    for p, record in records.items():
        measured = [("at the start", record["start"]), ("at the end", record["end"])] if twice else [("", record)]
        parts = []
        for label, m in measured:
            forms = ", ".join(
                f"{form} " + "/".join(f"{rate:.0f}" for rate in by_size.values())
                for form, by_size in m.get("per_form", {}).items()
            )
            parts.append(f"{label}: {forms}" if label else forms)
        lines.append(f"  {p}, GFLOP/s at n = {sizes}: " + "; ".join(parts))
    return lines


def _rows(results: dict[str, Any]) -> list[dict[str, Any]]:
    rows = [results[k] for k in ("matmul_fp32", "matmul_bf16", "seed") if k in results]
    for model in ("cnn", "airbench"):
        rows += [results[model][p] for p in ("fp32", "bf16") if p in results.get(model, {})]
    return rows


def _estimate_lines(results: dict[str, Any]) -> list[str]:
    """The full-recipe estimate, both floors, and the goals."""
    lines: list[str] = []
    auto = results["trained"]
    a = results["airbench"][auto]
    epoch_eval = (
        f"{a['epoch_eval_images']} test images evaluated per epoch"
        if results.get("epoch_eval")
        else "no per-epoch evaluation (as the reference times it)"
    )
    lines += [
        "",
        f"ESTIMATE, the timed recipe on 50,000 + 10,000 images ({a['total_steps']} steps of "
        f"{a['batch_size']} in {RECIPES['airbench']['epochs']} epochs, {epoch_eval}, TTA level "
        f"{recipe.TTA_LEVEL} on all {CIFAR10_TEST:,} at the end), {results['threads']} threads:",
    ]
    for precision, e in results["estimate"].items():
        mark = " <- precision=auto here" if precision == auto else ""
        lines.append(
            f"  {precision}: {e['train_s'] / 60:.1f} min training + {e['eval_s'] / 60:.1f} min evaluation = "
            f"{e['total_s'] / 60:.1f} min; Fargate 2 vCPU ${e['cost_on_demand']:.3f} on-demand, "
            f"~${e['cost_spot']:.3f} Spot{mark}"
        )
    if not results.get("epoch_eval"):
        e = results["estimate"][auto]
        lines.append(
            f"  (the trainer's per-epoch progress evaluations add {e['epoch_eval_s'] / 60:.1f} min, not timed)"
        )
    if "floor" in results:
        f = results["floor"]
        lines.append(
            f"FLOOR, real pixels: the {f['gflop_no_padding'] / 1e3:.0f} TFLOP on real pixels at 100 % of the {auto} "
            f"matmul peak: {f['seconds_no_padding'] / 60:.1f} min (no exact implementation is faster here)"
        )
        lines.append(
            f"FLOOR, counted: all {f['train_gflop'] / 1e3:.0f} TFLOP of training + {f['eval_gflop'] / 1e3:.0f} TFLOP "
            f"of evaluation, zero padding included: {f['seconds'] / 60:.1f} min"
        )
    if "goals" in results:
        lines += _goal_lines(results["goals"], auto)
    return lines


def _met(ok: bool) -> str:
    return "MET" if ok else "NOT MET"


def _goal_lines(g: dict[str, Any], precision: str) -> list[str]:
    return [
        f"GOAL {precision} real-pixel GFLOP/s >= {GOAL_REAL_PIXEL_RATIO:.2f} x the {precision} matmul peak: "
        f"{g['real_pixel_ratio']:.2f} (counted {g['counted_ratio']:.2f}): {_met(g['real_pixel_ratio_met'])}",
        f"GOAL {precision} end-to-end estimate <= {GOAL_OVER_FLOOR:.2f} x the real-pixel floor: "
        f"{g['over_floor']:.2f}x: {_met(g['over_floor_met'])}",
    ]


def _gpu_lines(gpu: dict[str, Any]) -> list[str]:
    if gpu.get("device") is None:
        return ["GPU: no CUDA device here; the GPU rows are measured where there is one"]
    r, e = gpu["bf16"], gpu["bf16"]["estimate"]
    return [
        f"GPU {gpu['device']}, default recipe bf16: {r['per_s']:.0f} images/s ({r['gflops'] / 1e3:.1f} TFLOP/s), "
        f"evaluation {r['eval_per_s']:.0f}/s, TTA {r['eval_tta_per_s']:.0f}/s",
        f"  ESTIMATE to the recipe's end: {e['train_s']:.1f} s training + {e['eval_s']:.1f} s evaluation = "
        f"{e['total_s']:.1f} s (setup included); cost: the instance's price for that time plus its boot",
    ]


def _parity_lines(p: dict[str, Any]) -> list[str]:
    if "skipped" in p:
        return ["", f"bf16 vs fp32 parity: not measured: {p['skipped']}"]
    lines: list[str] = []
    diff, noise, ok = parity_verdict(p["accuracy"])
    lines += ["", f"bf16 vs fp32 parity: default recipe, {p['epochs']} epochs, {p['dataset']}, seeds {p['seeds']}"]
    for precision, accs in p["accuracy"].items():
        lines.append(
            f"  {precision}: {100 * statistics.mean(accs):.1f} ± {100 * statistics.stdev(accs):.1f} %  "
            f"({', '.join(f'{100 * a:.1f}' for a in accs)})"
        )
    verdict = "within seed noise: parity" if ok else "bf16 LOSES beyond seed noise"
    lines.append(f"  bf16 - fp32 = {100 * diff:+.1f} points (2 standard errors: {100 * noise:.1f}): {verdict}")
    return lines


def _hardware_line(results: dict[str, Any]) -> str:
    p, hw = results["trained"], results.get("hardware")
    if not hw:
        return f"hardware {p} peak: unknown here (no native {p} path, or no clock measured or in /proc/cpuinfo)"
    if hw.get("clock") == "measured":
        said = f"; /proc/cpuinfo says {hw['cpuinfo_mhz'] / 1e3:.2f}" if hw.get("cpuinfo_mhz") else ""
        twice = hw.get("measured_mhz", [])
        when = (
            f", at the start and the end of the run ({twice[0] / 1e3:.2f} then {twice[1] / 1e3:.2f}), the higher"
            if len(twice) == 2
            else ""
        )
        source = f"measured: dependent integer adds on {hw['threads']} threads at once{when}{said}"
    else:
        source = "mean 'cpu MHz' in /proc/cpuinfo"
    return (
        f"hardware {p} peak: {hw['threads']} cores x {hw['flop_per_cycle']} FLOP/cycle ({hw['why']}) x "
        f"{hw['mhz'] / 1e3:.2f} GHz ({source}) = {hw['per_s']:.0f} GFLOP/s; the {p} "
        f"matmul reaches {results[f'matmul_{p}']['per_s'] / hw['per_s']:.2f} of it"
    )


def _throughput_lines(results: dict[str, Any], peak: dict[str, float], seed: float | None) -> list[str]:
    """The pipelines' table, the FLOPs per image, the phases and the headline ratio."""
    lines: list[str] = []
    lines += [
        "",
        f"{'pipeline':<18}{'images/s':>10}{'x seed':>8}{'GFLOP/s':>9}{'% own peak':>12}{'(no pad)':>10}"
        f"{'eval/s':>8}{'TTA/s':>7}",
    ]
    for label, model in (("(b) cnn", "cnn"), ("(c) airbench", "airbench")):
        for precision in results["precisions"]:
            r = results[model][precision]
            own = peak.get(precision)
            share = f"{100 * r['gflops'] / own:>11.0f}%{100 * r['gflops_no_padding'] / own:>9.0f}%" if own else ""
            ratio = f"{r['per_s'] / seed:>7.1f}x" if seed else f"{'':>8}"
            evals = f"{r['eval_per_s']:>8.0f}{r['eval_tta_per_s']:>7.0f}" if "eval_per_s" in r else ""
            lines.append(f"{label + ' ' + precision:<18}{r['per_s']:>10.0f}{ratio}{r['gflops']:>9.0f}{share}{evals}")
    for model in ("cnn", "airbench"):
        r = results[model]
        lines.append(
            f"{model}: {r['train_gflop_per_image']:.3f} GFLOP per training image "
            f"({r['train_gflop_per_image_no_padding']:.3f} without zero padding)"
        )
    p = results["trained"]
    for part in results["airbench"][p].get("phases", []):
        lines.append(
            f"  airbench {p} from epoch {part['epoch']} ({part['steps']} steps of the recipe): "
            f"{part['per_s']:.0f} images/s, {part['gflop_per_image']:.3f} GFLOP per image"
            + (f", {100 * part['gflops'] / peak[p]:.0f} % of peak" if p in peak else "")
        )
    if p in peak:
        r = results["airbench"][p]
        lines.append(
            f"RATIO (headline) default model {p} (the precision it trains in here) on real pixels / {p} matmul "
            f"peak, over the whole recipe: {r['gflops_no_padding'] / peak[p]:.2f} (counted, zero padding included: "
            f"{r['gflops'] / peak[p]:.2f})"
        )
    return lines


def report(results: dict[str, Any]) -> str:
    lines = [
        f"{results['cpu_model']}, {results['threads']} threads ({results['cpus_available']} CPUs available), "
        f"native bf16 {results['native_bf16']} (the trainer trains {results['trained']} here), "
        f"torch {results['torch']}",
        _busy_note(results),
    ]
    if results.get("smoke"):
        lines.append("SMOKE RUN (--smoke): tiny data, the numbers below mean nothing")
    peak = {p: results[f"matmul_{p}"]["per_s"] for p in ("fp32", "bf16") if f"matmul_{p}" in results}
    if peak:
        lines += _peak_lines(results, peak)
    if f"matmul_{results['trained']}" in results:
        lines.append(_hardware_line(results))
    seed = results.get("seed", {}).get("per_s")
    if seed:
        lines.append(f"(a) seed loop (batch 4, PIL transforms, 2 workers, fp32): {seed:.0f} images/s")
    if "airbench" in results:
        lines += _throughput_lines(results, peak, seed)
    if "estimate" in results:
        lines += _estimate_lines(results)
    if "layers" in results:
        lines += _layers_lines(results["layers"], peak.get(results["layers"]["precision"]))
    if "thread_scaling" in results:
        lines += _threads_lines(results["thread_scaling"])
    if "gpu" in results:
        lines += ["", *_gpu_lines(results["gpu"])]
    if "parity" in results:
        lines += _parity_lines(results["parity"])
    return "\n".join(lines)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="scripts/bench_trainer.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--only", help=f"comma-separated sections to run ({', '.join(SECTIONS)})")
    parser.add_argument("--skip", help="comma-separated sections to leave out")
    parser.add_argument("--smoke", action="store_true", help="tiny data: checks that every part runs (~1 min)")
    parser.add_argument(
        "--json", default=".pushtrain/bench/trainer.json", help="also write the raw results here (default %(default)s)"
    )
    parser.add_argument(
        "--epoch-eval", action="store_true", help="time the per-epoch progress evaluations too (the reference does not)"
    )
    parser.add_argument(
        "--flop-per-cycle",
        type=int,
        help="FLOP per cycle per core of the trained precision, for the hardware peak (default: by instruction set)",
    )
    parser.add_argument(
        "--emulated-bf16", action="store_true", help="measure bf16 (and the parity table) even where it is emulated"
    )
    args = parser.parse_args(argv)
    chosen = [s.strip() for s in args.only.split(",")] if args.only else list(SECTIONS)
    skipped = {s.strip() for s in args.skip.split(",")} if args.skip else set()
    unknown = sorted((set(chosen) | skipped) - set(SECTIONS))
    if unknown:
        parser.error(f"unknown section(s) {', '.join(unknown)} (choose from {', '.join(SECTIONS)})")
    started = time.perf_counter()
    sections = tuple(s for s in SECTIONS if s in chosen and s not in skipped)
    sizes = SMOKE if args.smoke else FULL
    precisions = ("fp32", "bf16") if args.emulated_bf16 else None
    results = run(
        sections, sizes, epoch_eval=args.epoch_eval, flop_per_cycle=args.flop_per_cycle, precisions=precisions
    )
    results["total_seconds"] = round(time.perf_counter() - started, 1)
    print(report(results))
    print(f"(bench took {results['total_seconds'] / 60:.1f} min)")
    if args.json:
        Path(args.json).parent.mkdir(parents=True, exist_ok=True)
        Path(args.json).write_text(json.dumps(results, indent=2) + "\n", encoding="utf-8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
