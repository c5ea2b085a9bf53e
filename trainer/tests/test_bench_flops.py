"""The benchmark: FLOP accounting (zero-padding work counted exactly) and its method (windows, contention, estimate)."""

from __future__ import annotations

import pytest
import torch
from torch import nn
from trainer.bench import padding_waste_flops, train_flops_per_image
from trainer.nets import build_model


def testpadding_waste_flops_of_a_3x3_convolution_on_a_3x3_image() -> None:
    # GIVEN one 3x3 conv with padding 1 on a 3x3 image: 9 outputs x 9 taps = 81 multiply-adds, of which
    # 7 x 7 = 49 touch real pixels (per axis, 3 outputs x 3 taps minus the two that fall off the edges)
    conv = nn.Conv2d(1, 1, 3, padding=1, bias=False)
    image = torch.rand(1, 1, 3, 3)
    # WHEN counted for a training step (forward + weight gradient; the input needs no gradient)
    waste = padding_waste_flops(conv, image)
    # THEN 32 wasted multiply-adds x 2 FLOPs x 2 passes
    assert waste == 32 * 2 * 2


def test_evaluation_wastes_one_pass_on_padding() -> None:
    # the same conv in a forward pass without autograd (evaluation): 32 wasted multiply-adds x 2 FLOPs
    with torch.no_grad():
        assert padding_waste_flops(nn.Conv2d(1, 1, 3, padding=1, bias=False), torch.rand(1, 1, 3, 3)) == 32 * 2


def test_evaluation_flops_without_padding_are_fewer_but_most() -> None:
    from trainer.bench import eval_flops_per_image

    total, no_padding = eval_flops_per_image(build_model("airbench"))
    assert 0.2e9 < total < 0.3e9  # 0.24 GFLOP forward
    assert 0.10 * total < total - no_padding < 0.18 * total


def test_unpadded_convolution_wastes_nothing() -> None:
    assert padding_waste_flops(nn.Conv2d(3, 4, 2, padding=0), torch.rand(2, 3, 8, 8)) == 0


def test_padding_work_per_image_does_not_depend_on_the_batch_size() -> None:
    model = build_model("airbench")
    one = padding_waste_flops(model, torch.rand(1, 3, 32, 32))
    eight = padding_waste_flops(model, torch.rand(8, 3, 32, 32))
    assert one == eight > 0


def test_airbench_training_flops_are_about_three_forward_passes() -> None:
    total, no_padding = train_flops_per_image(build_model("airbench"))
    assert 0.6e9 < total < 0.8e9  # 0.24 GFLOP forward, ~2x that backward
    # 3x3 convolutions on 31x31 .. 3x3 maps: ~14 % of their multiply-adds fall on the zero border
    assert 0.10 * total < total - no_padding < 0.18 * total


# --- the method: windows, medians, the contention flag, the estimate, the parity verdict ----------


def test_rate_is_the_median_window_and_efficiency_the_worst() -> None:
    from trainer.bench import Windows

    # GIVEN three windows of 100 units: 1 s, 2 s (a slow outlier) and 1.25 s wall, 2 threads
    w = Windows(wall=[1.0, 2.0, 1.25], cpu=[2.0, 1.0, 2.5], units=[100, 100, 100], threads=2)
    # THEN the rate is the middle one, and the efficiency the window that was off the CPUs most
    assert w.rate() == 80.0
    assert w.efficiency() == 0.25


def test_a_machine_is_reported_busy_when_others_use_it_or_a_window_was_descheduled() -> None:
    from trainer.bench import _busy_note

    quiet = {"others_load_before": 0.02, "others_load_after": 0.05, "seed": {"cpu_efficiency": 0.97}}
    assert "quiet" in _busy_note(quiet)
    assert "BUSY" in _busy_note({**quiet, "others_load_after": 0.6})
    assert "BUSY" in _busy_note({**quiet, "seed": {"cpu_efficiency": 0.5}})


def test_others_load_is_a_share_or_unknown() -> None:
    from trainer.bench import others_load

    load = others_load(0.05)
    assert load is None or 0.0 <= load <= 1.0


def test_estimate_adds_training_steps_per_epoch_evaluation_and_the_final_tta_pass() -> None:
    from trainer.bench import estimate

    row = {
        "total_steps": 476,
        "step_seconds": 1.0,
        "plan_seconds": 0.5,
        "epoch_eval_images": 2000,
        "eval_per_s": 1000.0,
        "eval_tta_per_s": 500.0,
        "whitening_seconds": 2.0,
    }
    e = estimate(row, epochs=9.9, cost_per_hour=3.6)
    # 476 steps + 10 plans; 10 cheap evaluations of 2 s + 10,000 images with TTA at 500/s; the setup
    assert e["train_s"] == 476 + 5.0
    assert e["eval_s"] == 10 * 2.0 + 20.0
    assert e["total_s"] == 2.0 + 481.0 + 40.0
    assert e["cost_on_demand"] == pytest.approx(523.0 / 1000)


def test_bf16_within_two_standard_errors_is_parity_and_below_is_a_loss() -> None:
    from trainer.bench import parity_verdict

    _, noise, ok = parity_verdict({"fp32": [0.80, 0.78, 0.82], "bf16": [0.79, 0.81, 0.77]})
    assert ok and noise > 0
    diff, _, ok = parity_verdict({"fp32": [0.80, 0.80, 0.81], "bf16": [0.70, 0.71, 0.70]})
    assert not ok and diff == pytest.approx(-0.1, abs=1e-9)


# --- the recipe's phases and the physical floor ------------------------------------------------------


def test_airbench_recipe_has_a_phase_with_the_whitening_bias_and_one_without() -> None:
    from trainer.bench import phases

    # 476 steps of 48 per epoch: the first 3 epochs train the whitening bias, the other 332 steps do not
    assert phases("airbench", 48, 476) == [(0, 144), (3, 332)]
    assert phases("airbench", 48, 100) == [(0, 100)]  # a run shorter than 3 epochs has one phase
    assert phases("cnn", 195, 1950) == [(0, 1950)]


def test_a_fixed_whitening_bias_skips_the_first_convolutions_input_gradient() -> None:
    # GIVEN the default model in epoch 0 (whitening bias trains) and in epoch 3 (it is fixed)
    early, _ = train_flops_per_image(build_model("airbench"), epoch=0)
    late, _ = train_flops_per_image(build_model("airbench"), epoch=3)
    # THEN the late step saves the input gradient of the 24 -> 64 conv at 31x31: 31*31*64*24*9 MACs x 2
    assert early - late == pytest.approx(2 * 31 * 31 * 64 * 24 * 9, rel=0.01)


def test_the_recipe_row_weights_each_phase_by_its_steps() -> None:
    from trainer.bench import _combine, estimate

    # GIVEN 144 steps at 2 s and 332 steps at 1.5 s, batch 1024, 0.7 and 0.68 GFLOP per image
    part = {"batch_size": 1024, "cpu_efficiency": 0.9, "windows_per_s": [1.0], "gflop_per_image_no_padding": 0.6}
    early = {**part, "epoch": 0, "steps": 144, "step_seconds": 2.0, "gflop_per_image": 0.7}
    late = {**part, "epoch": 3, "steps": 332, "step_seconds": 1.5, "gflop_per_image": 0.68}
    row = _combine([early, late])
    seconds = 144 * 2.0 + 332 * 1.5
    assert row["per_s"] == pytest.approx(476 * 1024 / seconds)
    assert row["gflops"] == pytest.approx((144 * 0.7 + 332 * 0.68) * 1024 / seconds)
    # AND the estimate takes each phase's steps at that phase's step time
    row.update(total_steps=476, step_seconds=99.0, plan_seconds=0.0, epoch_eval_images=0, eval_per_s=1.0)
    row.update(eval_tta_per_s=1e9, whitening_seconds=0.0)
    assert estimate(row, epochs=9.9, cost_per_hour=0.0)["train_s"] == pytest.approx(seconds)


def test_floor_is_every_flop_of_the_recipe_at_the_peak() -> None:
    from trainer.bench import floor, tta_views

    assert [tta_views(level) for level in (0, 1, 2)] == [1, 2, 6]
    row = {
        "recipe_train_gflop": 300_000.0,
        "recipe_train_gflop_no_padding": 260_000.0,
        "epoch_eval_images": 2000,
        "eval_gflop_per_image": 0.25,
        "eval_gflop_per_image_no_padding": 0.2,
    }
    f = floor(row, epochs=9.9, peak_gflops=400.0)
    # 10 progress evaluations of 2,000 images and 6 views of the 10,000 test images at the end
    assert f["eval_gflop"] == pytest.approx((10 * 2000 + 6 * 10_000) * 0.25)
    assert f["seconds"] == pytest.approx((300_000 + f["eval_gflop"]) / 400)
    # the least time of any exact implementation: only the multiply-adds on real pixels, at the peak
    assert f["gflop_no_padding"] == pytest.approx(260_000 + (10 * 2000 + 6 * 10_000) * 0.2)
    assert f["seconds_no_padding"] == pytest.approx(f["gflop_no_padding"] / 400)


def test_a_tiny_bench_run_reports_every_section(tmp_path, monkeypatch) -> None:
    from trainer import bench

    # GIVEN tiny sizes (the code paths of a full run, numbers meaningless) and its data cache in tmp
    monkeypatch.setattr(bench, "DATA_CACHE", tmp_path / "cache")
    tiny = bench.Sizes(
        train=512, test=64, parity_train=128, parity_test=32, parity_epochs=1, parity_seeds=(0, 1),
        cnn_steps=(0, 1, 1), airbench_steps=(0, 1, 1), gpu_steps=(0, 1, 1), matmul_sizes=(128, 256),
    )  # fmt: skip
    # WHEN every section but the seed loop runs
    results = bench.run(("machine", "throughput", "estimate", "gpu", "parity"), tiny)
    text = bench.report(results)
    # THEN the report has the phases, the whole-recipe ratio, the estimate, the floor and the parity table
    gpu = "ESTIMATE to the recipe's end" if torch.cuda.is_available() else "GPU: no CUDA device here"
    for expected in (
        "from epoch 0",
        "from epoch 3",
        "over the whole recipe",
        "ESTIMATE",
        "FLOOR:",
        "real pixels (",
        gpu,
        "parity",
    ):
        assert expected in text
    assert results["floor"]["seconds"] > 0
    # AND the peak is the best of the sizes measured
    peak = results["matmul_bf16"]
    assert peak["per_s"] == pytest.approx(max(peak["per_size"].values()), rel=1e-3)
