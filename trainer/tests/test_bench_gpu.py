"""`make bench ARGS=gpu` (scripts/bench_gpu.py): its arithmetic, its clean skip without CUDA, and a rehearsal
of both sides on the CPU with the CUDA calls made CPU ones. The timings need a GPU: they are measured
where one is lent, never here."""

from __future__ import annotations

import math
from pathlib import Path

import bench_gpu
import pytest
import torch
from airbench_cpu import cuda_calls_on_cpu


def test_without_cuda_the_gpu_bench_says_so_and_succeeds_without_touching_data(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str], tmp_path
) -> None:
    # GIVEN no CUDA device, and a data cache that must stay untouched
    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    monkeypatch.setattr(bench_gpu, "CACHE", tmp_path / "cache")
    # WHEN the GPU bench runs
    status = bench_gpu.main([])
    # THEN it exits 0 with one line saying why nothing ran, and generated nothing
    assert status == 0
    assert capsys.readouterr().out.strip() == "GPU bench: no CUDA device here; skipped (run it where there is one)"
    assert not (tmp_path / "cache").exists()


def test_the_comparison_is_our_warm_time_over_the_references_against_a_goal_of_one() -> None:
    # GIVEN the reference at 4 s warm and ours at 5 s, each over 476 x 1024 images
    side = {"images": 476 * 1024, "correct": 7000, "total": 10_000}
    reference = {**side, "cold_s": 9.0, "warm_s": 4.0}
    ours = {**side, "cold_s": 12.0, "warm_s": 5.0}
    result = bench_gpu.comparison(reference, ours)
    # THEN the ratio is 1.25, not met, and the rates are images over warm seconds
    assert (result["ratio"], result["met"]) == (1.25, False)
    assert result["reference"]["per_s"] == 476 * 1024 / 4.0
    assert result["ours"]["per_s"] == 476 * 1024 / 5.0
    # AND equal times meet the goal
    assert bench_gpu.comparison(reference, {**ours, "warm_s": 4.0})["met"]
    text = bench_gpu.report("H100", result)
    assert "RATIO ours / reference (warm): 1.25; GOAL <= 1.0: NOT MET" in text
    assert "accuracy 7000/10000 = 70.00 %" in text
    assert "one-off +5.00 s" in text


def test_both_sides_of_the_gpu_bench_run_end_to_end_when_cuda_calls_are_made_cpu_ones(
    monkeypatch: pytest.MonkeyPatch, tmp_path
) -> None:
    """A rehearsal on the CPU of everything the GPU run does but the device: no GPU is lent to most
    sessions, and one that is should not spend its minutes finding a wrong file format or call."""
    pytest.importorskip("airbench")
    from airbench import lib_airbench94 as ab94
    from trainer.config import load_config
    from trainer.data import load_dataset

    from trainer import synth

    # GIVEN the reference's CUDA calls made CPU ones (and its fp16 fp32: the CPU runs fp16 slowly), and its
    # batch 16 so that 64 generated images make 4 steps an epoch (its epochs, 9.9, are bound at import)
    cuda_calls_on_cpu(monkeypatch)
    monkeypatch.setattr(torch.Tensor, "half", lambda tensor, *_, **__: tensor.float())  # its loader's images
    real_load = torch.load
    monkeypatch.setattr(
        torch, "load", lambda path, *a, map_location=None, **k: real_load(path, *a, map_location="cpu", **k)
    )
    monkeypatch.setitem(ab94.hyp["opt"], "batch_size", 16)
    root = tmp_path / "data"
    synth.write_folder(root, n_train=64, n_test=64, seed=0, difficulty=synth.EASY)
    data = load_dataset(load_config(["--data-uri", str(root), "--work-dir", str(tmp_path / "work")], {}))
    before = Path.cwd()
    steps = [0]  # optimizer steps taken: both sides train with torch's SGD
    real_step = torch.optim.SGD.step

    def counted_step(optimizer: torch.optim.SGD, *args: object, **kwargs: object) -> object:
        steps[0] += 1
        return real_step(optimizer, *args, **kwargs)

    monkeypatch.setattr(torch.optim.SGD, "step", counted_step)
    # WHEN each side runs as main() runs it: the reference over its own files, ours through TrainingSession
    reference = bench_gpu.run_reference(data, tmp_path / "reference")
    reference_steps, steps[0] = steps[0], 0
    ours = bench_gpu.run_ours(root, tmp_path / "work", device="cpu", precision="fp32")
    ours_steps = steps[0]
    # THEN the reference read the files written in its own format (no download: the folder holds only ours)
    assert Path.cwd() == before
    assert sorted(p.name for p in (tmp_path / "reference" / "cifar10").iterdir()) == ["test.pt", "train.pt"]
    # AND each trained the whole recipe twice, 9.9 epochs, and its images are the steps of one run times its
    # batch: the reference's 16 (4 steps an epoch), ours 1/16 of the 64 images (recipe.MIN_STEPS_PER_EPOCH)
    assert (reference_steps, ours_steps) == (2 * math.ceil(4 * 9.9), 2 * math.ceil(16 * 9.9))
    assert (reference["images"], ours["images"]) == (reference_steps // 2 * 16, ours_steps // 2 * 4)
    # AND both timed each run and counted their predictions on all 64 test images
    for side in (reference, ours):
        assert side["cold_s"] > 0 and side["warm_s"] > 0
        assert side["total"] == 64 and 0 <= side["correct"] <= 64
    # AND the report takes what they return
    text = bench_gpu.report("cpu rehearsal", bench_gpu.comparison(reference, ours))
    assert f"accuracy {reference['correct']}/64" in text and "RATIO ours / reference (warm)" in text
