"""`make bench ARGS=gpu` (scripts/bench_gpu.py): its arithmetic and its clean skip without CUDA. The GPU
run itself needs a GPU: it is measured where one is lent, never here."""

from __future__ import annotations

import bench_gpu
import pytest
import torch


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
