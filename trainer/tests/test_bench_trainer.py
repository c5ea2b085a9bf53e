"""The trainer benchmark (scripts/bench_trainer.py, not shipped): FLOP accounting (zero-padding work counted
exactly) and its method (windows, contention, estimate)."""

from __future__ import annotations

import pytest
import torch
from bench_trainer import padding_waste_flops, train_flops_per_image
from torch import nn
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
    from bench_trainer import eval_flops_per_image

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
    from bench_trainer import Windows

    # GIVEN three windows of 100 units: 1 s, 2 s (a slow outlier) and 1.25 s wall, 2 threads
    w = Windows(wall=[1.0, 2.0, 1.25], cpu=[2.0, 1.0, 2.5], units=[100, 100, 100], threads=2)
    # THEN the rate is the middle one, and the efficiency the window that was off the CPUs most
    assert w.rate() == 80.0
    assert w.efficiency() == 0.25


def test_a_machine_is_reported_busy_when_others_use_it_or_a_window_was_descheduled() -> None:
    from bench_trainer import _busy_note

    quiet = {"others_load_before": 0.02, "others_load_after": 0.05, "seed": {"cpu_efficiency": 0.97}}
    assert "quiet" in _busy_note(quiet)
    assert "BUSY" in _busy_note({**quiet, "others_load_after": 0.6})
    assert "BUSY" in _busy_note({**quiet, "seed": {"cpu_efficiency": 0.5}})


def test_others_load_is_a_share_or_unknown() -> None:
    from bench_trainer import others_load

    load = others_load(0.05)
    assert load is None or 0.0 <= load <= 1.0


def test_estimate_times_training_and_the_final_tta_pass_and_per_epoch_evaluation_only_when_asked() -> None:
    from bench_trainer import estimate

    row = {
        "total_steps": 476,
        "step_seconds": 1.0,
        "plan_seconds": 0.5,
        "epoch_eval_images": 2000,
        "eval_per_s": 1000.0,
        "eval_tta_per_s": 500.0,
        "whitening_seconds": 2.0,
    }
    # the timed recipe (as the reference times it): 476 steps + 10 plans, 10,000 images with TTA at 500/s, setup
    e = estimate(row, epochs=9.9, cost_per_hour=3.6)
    assert e["train_s"] == 476 + 5.0
    assert e["eval_s"] == 20.0
    assert e["epoch_eval_s"] == 10 * 2.0  # reported beside it: 10 cheap evaluations of 2,000 images at 1,000/s
    assert e["total_s"] == 2.0 + 481.0 + 20.0
    assert e["cost_on_demand"] == pytest.approx(503.0 / 1000)
    # with the per-epoch evaluations timed too
    assert estimate(row, epochs=9.9, cost_per_hour=3.6, epoch_eval=True)["total_s"] == 2.0 + 481.0 + 40.0


def test_bf16_within_two_standard_errors_is_parity_and_below_is_a_loss() -> None:
    from bench_trainer import parity_verdict

    _, noise, ok = parity_verdict({"fp32": [0.80, 0.78, 0.82], "bf16": [0.79, 0.81, 0.77]})
    assert ok and noise > 0
    diff, _, ok = parity_verdict({"fp32": [0.80, 0.80, 0.81], "bf16": [0.70, 0.71, 0.70]})
    assert not ok and diff == pytest.approx(-0.1, abs=1e-9)


# --- the recipe's phases and the physical floor ------------------------------------------------------


def test_airbench_recipe_has_a_phase_with_the_whitening_bias_and_one_without() -> None:
    from bench_trainer import phases

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
    from bench_trainer import _combine, estimate

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


def test_floor_is_every_flop_of_the_timed_recipe_at_the_peak() -> None:
    from bench_trainer import floor, tta_views

    assert [tta_views(level) for level in (0, 1, 2)] == [1, 2, 6]
    row = {
        "recipe_train_gflop": 300_000.0,
        "recipe_train_gflop_no_padding": 260_000.0,
        "epoch_eval_images": 2000,
        "eval_gflop_per_image": 0.25,
        "eval_gflop_per_image_no_padding": 0.2,
    }
    f = floor(row, epochs=9.9, peak_gflops=400.0)
    # 6 views of the 10,000 test images at the end
    assert f["eval_gflop"] == pytest.approx(6 * 10_000 * 0.25)
    assert f["seconds"] == pytest.approx((300_000 + f["eval_gflop"]) / 400)
    # the least time of any exact implementation: only the multiply-adds on real pixels, at the peak
    assert f["gflop_no_padding"] == pytest.approx(260_000 + 6 * 10_000 * 0.2)
    assert f["seconds_no_padding"] == pytest.approx(f["gflop_no_padding"] / 400)
    # with the per-epoch progress evaluations: 10 more passes over 2,000 images
    timed = floor(row, epochs=9.9, peak_gflops=400.0, epoch_eval=True)
    assert timed["eval_gflop"] == pytest.approx((10 * 2000 + 6 * 10_000) * 0.25)


CPUINFO = """processor\t: 0
vendor_id\t: AuthenticAMD
cpu family\t: 25
model name\t: AMD EPYC 9R14
cpu MHz\t\t: 3600.000
flags\t\t: fpu avx2 avx512f avx512_bf16

processor\t: 1
vendor_id\t: AuthenticAMD
cpu family\t: 25
cpu MHz\t\t: 3700.000
flags\t\t: fpu avx2 avx512f avx512_bf16

processor\t: 2
vendor_id\t: AuthenticAMD
cpu family\t: 25
cpu MHz\t\t: 1000.000
flags\t\t: fpu avx2 avx512f avx512_bf16
"""


def test_hardware_peak_is_cores_times_flop_per_cycle_times_the_mean_clock_of_our_cpus() -> None:
    from bench_trainer import hardware_peak

    # GIVEN two Zen 4 CPUs of ours at 3.6 and 3.7 GHz (a third, not ours, at 1 GHz)
    peak = hardware_peak(2, CPUINFO, cpus={0, 1})
    # THEN 2 cores x 64 bf16 FLOP/cycle x 3.65 GHz
    assert peak is not None
    assert (peak["flop_per_cycle"], peak["mhz"]) == (64, 3650.0)
    assert peak["per_s"] == pytest.approx(2 * 64 * 3.65)
    # AND the FLOP per cycle follows the instruction set, or the caller
    amx = CPUINFO.replace("avx512_bf16", "avx512_bf16 amx_bf16").replace("AuthenticAMD", "GenuineIntel")
    assert hardware_peak(1, amx, cpus={0})["flop_per_cycle"] == 1024  # type: ignore[index]
    zen5 = CPUINFO.replace("cpu family\t: 25", "cpu family\t: 26")
    assert hardware_peak(1, zen5, cpus={0})["flop_per_cycle"] == 128  # type: ignore[index]
    assert hardware_peak(2, CPUINFO, cpus={0}, per_cycle=32)["per_s"] == pytest.approx(2 * 32 * 3.6)  # type: ignore[index]


@pytest.mark.parametrize(
    ("vendor", "family", "flags", "expected"),
    [
        ("AuthenticAMD", "25", "fma avx2", 32),  # Zen 3 (this machine's kind): two 256-bit FMAs
        ("AuthenticAMD", "25", "fma avx2 avx512f avx512_bf16", 32),  # Zen 4 splits 512-bit FMAs
        ("AuthenticAMD", "26", "fma avx2 avx512f", 64),  # Zen 5: two 512-bit FMAs
        ("GenuineIntel", "6", "fma avx2 avx512f", 64),
        ("GenuineIntel", "6", "fma avx2", 32),
        ("GenuineIntel", "6", "avx", None),  # no FMA: no native figure to claim
    ],
)
def test_the_fp32_hardware_peak_follows_the_fma_units(
    vendor: str, family: str, flags: str, expected: int | None
) -> None:
    from bench_trainer import hardware_peak

    text = CPUINFO.replace("AuthenticAMD", vendor).replace("cpu family\t: 25", f"cpu family\t: {family}")
    text = text.replace("fpu avx2 avx512f avx512_bf16", f"fpu {flags}")
    peak = hardware_peak(2, text, cpus={0, 1}, precision="fp32")
    assert (peak and peak["flop_per_cycle"]) == expected
    if peak:
        assert peak["per_s"] == pytest.approx(2 * expected * 3.65)
        assert ("Zen 4" in peak["why"]) == (vendor == "AuthenticAMD" and family == "25" and "avx512f" in flags)


def test_no_hardware_peak_without_native_bf16_or_a_clock() -> None:
    from bench_trainer import hardware_peak

    assert hardware_peak(2, CPUINFO.replace(" avx512_bf16", ""), cpus={0, 1}) is None
    assert hardware_peak(2, "\n".join(line for line in CPUINFO.splitlines() if "MHz" not in line)) is None
    assert hardware_peak(2, "") is None


def test_goals_compare_real_pixel_work_with_the_matmul_peak_and_the_estimate_with_the_real_pixel_floor() -> None:
    from bench_trainer import goals

    # GIVEN the quiet run: matmul 415 GFLOP/s, airbench bf16 370 counted / 316 real, 15.9 min vs 12.2
    row = {"gflops": 370.0, "gflops_no_padding": 316.0}
    g = goals(row, peak=415.0, total_s=15.9 * 60, floor_row={"seconds_no_padding": 12.2 * 60})
    # THEN the headline is the real-pixel ratio, 0.76 < 0.85, and 1.30x the floor > 1.15: neither met
    assert (round(g["real_pixel_ratio"], 2), round(g["counted_ratio"], 2)) == (0.76, 0.89)
    assert (g["real_pixel_ratio_met"], g["over_floor_met"]) == (False, False)
    assert g["over_floor"] == pytest.approx(15.9 / 12.2)
    # AND at the goals' edges both are met
    edge = goals({"gflops": 1.0, "gflops_no_padding": 0.85}, 1.0, 115.0, {"seconds_no_padding": 100.0})
    assert (edge["real_pixel_ratio_met"], edge["over_floor_met"]) == (True, True)


def test_task_size_table_scales_the_two_thread_time_by_amdahls_law_fitted_to_one_and_two_threads() -> None:
    from bench_trainer import parallel_fraction, task_size_table

    # GIVEN a step of 4 s on 1 thread and 2.5 s on 2: 2.5 = 4 (1 - p + p / 2), so p = 0.75
    assert parallel_fraction(4.0, 2.5) == 0.75
    # WHEN a run takes 600 s on 2 threads
    rows = {row["vcpu"]: row for row in task_size_table(4.0, 2.5, 600.0)}
    # THEN 4 vCPU take 600 x (0.25 + 0.75 / 4) / (0.25 + 0.75 / 2) = 420 s, 8 vCPU 330 s
    assert rows[2]["seconds"] == pytest.approx(600.0)
    assert rows[4]["seconds"] == pytest.approx(420.0)
    assert rows[8]["seconds"] == pytest.approx(330.0)
    # AND each costs its time at vCPU-hours + GB-hours (the least memory for its vCPUs)
    assert (rows[4]["memory_gb"], rows[4]["per_hour"]) == (8, pytest.approx(4 * 0.04048 + 8 * 0.004445))
    assert rows[4]["cost"] == pytest.approx(420 / 3600 * (4 * 0.04048 + 8 * 0.004445))
    # AND a perfectly parallel step halves the time per doubling; a serial one never speeds up
    perfect = {row["vcpu"]: row["seconds"] for row in task_size_table(2.0, 1.0, 600.0)}
    assert (perfect[4], perfect[8]) == (pytest.approx(300.0), pytest.approx(150.0))
    assert {row["seconds"] for row in task_size_table(2.0, 2.0, 600.0)} == {600.0}
    assert parallel_fraction(2.0, 2.5) == 0.0  # slower on 2 threads (a busy machine): no parallel share


def test_a_tiny_bench_run_reports_every_section(tmp_path, monkeypatch) -> None:
    import bench_trainer as bench

    # GIVEN tiny sizes (the code paths of a full run, numbers meaningless) and its data cache in tmp. Each
    # training step is 1/16 of an epoch (recipe.MIN_STEPS_PER_EPOCH), so the batch is train/16; every image
    # costs seconds where bf16 is emulated (no AVX-512 BF16 here): 256 and 64 training images, 16 test ones
    monkeypatch.setattr(bench, "DATA_CACHE", tmp_path / "cache")
    tiny = bench.Sizes(
        train=256, test=16, parity_train=64, parity_test=16, parity_epochs=1, parity_seeds=(0, 1),
        cnn_steps=(0, 1, 1), airbench_steps=(0, 1, 1), gpu_steps=(0, 1, 1), matmul_sizes=(128, 256), matmul_gflop=0.05,
        layers_batch=8, layers_steps=(0, 1, 1),
    )  # fmt: skip
    # WHEN every section but the seed loop runs, in both precisions (bf16 even where it is emulated)
    sections = ("machine", "throughput", "estimate", "layers", "threads", "gpu", "parity")
    results = bench.run(sections, tiny, precisions=("fp32", "bf16"))
    text = bench.report(results)
    p = results["trained"]  # floors, goals and threads are those of the precision the trainer trains in here
    # THEN the report has the phases, the whole-recipe ratio, the estimate, the floor and the parity table
    gpu = "ESTIMATE to the recipe's end" if torch.cuda.is_available() else "GPU: no CUDA device here"
    for expected in (
        "from epoch 0",
        "from epoch 3",
        "over the whole recipe",
        "ESTIMATE",
        "RATIO (headline)",
        f"hardware {p} peak",
        "FLOOR, real pixels",
        "FLOOR, counted",
        f"GOAL {p} real-pixel",
        f"GOAL {p} end-to-end",
        f"THREADS: airbench {p}",
        f"LAYERS: the default model's convolutions after epoch 3 ({p}",
        "group3.conv2  256 -> 256 3x3      dw",
        "s step measured above (batch",
        "8 vCPU / 16 GB",
        gpu,
        "parity",
    ):
        assert expected in text
    assert results["floor"]["seconds"] > 0
    assert isinstance(results["threads"], int) and set(results["thread_scaling"]) >= {"step_1", "step_2", "table"}
    # AND the peak was measured at the start and again at the end, each time over every size and GEMM form,
    # and is the best rate of either measurement; the report names its form, size and measurement
    for precision in ("fp32", "bf16"):
        peak = results[f"matmul_{precision}"]
        rates = []
        for measurement in (peak["start"], peak["end"]):
            assert set(measurement["per_form"]) == set(bench.GEMM_FORMS)
            rates += [rate for by_size in measurement["per_form"].values() for rate in by_size.values()]
        assert len(rates) == 2 * 2 * len(tiny.matmul_sizes)
        assert peak["per_s"] == pytest.approx(max(rates), abs=0.05)  # per_form is rounded to 0.1
        assert peak["per_s"] == max(peak["start"]["per_s"], peak["end"]["per_s"])
        named = f"{precision} {peak['per_s']:.0f} GFLOP/s ({peak['form']}, n={peak['n']}, at the {peak['at']})"
        assert named in text
        assert f"  {precision}, GFLOP/s at n = 128/256: at the start: torch.mm " in text
    floor = results["floor"]
    assert floor["seconds_no_padding"] == pytest.approx(floor["gflop_no_padding"] / results[f"matmul_{p}"]["per_s"])


def _fake_peaks(monkeypatch: pytest.MonkeyPatch, rates: dict[tuple[str, str], float]) -> list[tuple[str, int]]:
    """bench.matmul_gflops answering `rates[(form, call)]` GFLOP/s, `call` "start" for the first
    measurement of a precision and "end" for the second; returns the (form, n) of every call."""
    import bench_trainer as bench

    calls: list[tuple[str, int]] = []
    seen: dict[tuple[torch.dtype, str, int], int] = {}

    def fake(dtype: torch.dtype, threads: int, n: int = 2048, gflop: float = 1.0, form: str = "torch.mm"):
        count = seen[dtype, form, n] = seen.get((dtype, form, n), 0) + 1
        calls.append((form, n))
        rate = rates[form, "start" if count == 1 else "end"]
        return bench.Windows([1.0] * 5, [2.0] * 5, [rate] * 5, threads)

    monkeypatch.setattr(bench, "matmul_gflops", fake)
    return calls


def test_the_peak_is_the_faster_form_and_measurement_and_the_goals_use_it(tmp_path, monkeypatch) -> None:
    import bench_trainer as bench

    # GIVEN a machine whose 1x1-convolution GEMM beats torch.mm, and runs faster at the end of the run
    monkeypatch.setattr(bench, "DATA_CACHE", tmp_path / "cache")
    calls = _fake_peaks(
        monkeypatch,
        {("torch.mm", "start"): 100.0, ("1x1 convolution", "start"): 150.0, ("torch.mm", "end"): 120.0,
         ("1x1 convolution", "end"): 300.0},
    )  # fmt: skip
    tiny = bench.Sizes(
        train=256, test=16, cnn_steps=(0, 1, 1), airbench_steps=(0, 1, 1), matmul_sizes=(64, 128), matmul_gflop=0.01
    )
    # AND a clock that reads 3.0 GHz at the start and 4.0 at the end
    ghz = iter([3000.0, 4000.0])
    monkeypatch.setattr(bench.cpuclock, "measure_mhz", lambda threads: next(ghz))
    # WHEN a run measures throughput and the estimate in the precision the trainer trains in here
    trained = "bf16" if bench.cpu_has_native_bf16() else "fp32"
    results = bench.run(("machine", "throughput", "estimate"), tiny, precisions=(trained,))
    # THEN every size was measured in both forms, twice
    assert sorted(calls) == sorted([(f, n) for f in bench.GEMM_FORMS for n in (64, 128)] * 2)
    # AND the peak is the convolution's rate at the end, and the floor and goals are held against it
    peak = results[f"matmul_{trained}"]
    assert (peak["per_s"], peak["form"], peak["at"]) == (300.0, "1x1 convolution", "end")
    assert (peak["start"]["per_s"], peak["end"]["per_s"]) == (150.0, 300.0)
    floor, row = results["floor"], results["airbench"][trained]
    assert floor["seconds_no_padding"] == pytest.approx(floor["gflop_no_padding"] / 300.0)
    assert results["goals"]["real_pixel_ratio"] == pytest.approx(row["gflops_no_padding"] / 300.0)
    # AND the hardware peak (where this CPU has a native path for that precision) is at the higher clock
    hardware = results["hardware"]
    if hardware:
        assert (hardware["mhz"], hardware["measured_mhz"]) == (4000.0, [3000.0, 4000.0])
        assert hardware["per_s"] == hardware["threads"] * hardware["flop_per_cycle"] * 4.0
        assert "at the start and the end of the run (3.00 then 4.00), the higher" in bench.report(results)


@pytest.mark.parametrize("section", ["gpu", "layers"])
def test_each_section_runs_when_chosen_alone(section: str, tmp_path, monkeypatch) -> None:
    import bench_trainer as bench

    # GIVEN tiny sizes; WHEN one section is chosen alone (`--only gpu`, `--only layers`)
    monkeypatch.setattr(bench, "DATA_CACHE", tmp_path / "cache")
    tiny = bench.Sizes(train=256, test=16, gpu_steps=(0, 1, 1), layers_batch=4, layers_steps=(0, 1, 1))
    results = bench.run((section,), tiny)
    # THEN it ran (without CUDA the gpu section records that there is no device), and nothing else did
    assert section in results
    assert "airbench" not in results and "thread_scaling" not in results


@pytest.mark.parametrize("native", [True, False])
def test_bf16_is_measured_only_where_the_cpu_runs_it_natively(native: bool, tmp_path, monkeypatch) -> None:
    import bench_trainer as bench

    # GIVEN a CPU with or without native bf16 (where it is emulated, precision=auto trains fp32)
    monkeypatch.setattr(bench, "cpu_has_native_bf16", lambda: native)
    # WHEN the bench decides what to measure (the matmul section, tiny)
    tiny = bench.Sizes(matmul_sizes=(64,), matmul_gflop=0.001)
    results = bench.run(("machine", "parity"), tiny) if not native else bench.run(("machine",), tiny)
    # THEN it measures and judges the precision the trainer trains in, and skips emulated bf16 with the reason
    assert results["trained"] == ("bf16" if native else "fp32")
    assert results["precisions"] == (["fp32", "bf16"] if native else ["fp32"])
    assert ("matmul_bf16" in results) is native
    if not native:
        assert "emulated" in bench.report(results)
        assert "parity: not measured" in bench.report(results)


def test_the_benchmark_ships_neither_in_the_package_nor_as_an_import_of_it() -> None:
    import importlib.util
    import re
    from pathlib import Path

    import trainer

    # the image installs trainer/src: the benchmark is not there, and nothing there imports it
    package = Path(trainer.__file__).parent
    assert importlib.util.find_spec("trainer.bench") is None
    imports_bench = re.compile(r"^\s*(from|import)\s+[\w.]*bench", re.MULTILINE)
    assert [p.name for p in package.glob("*.py") if imports_bench.search(p.read_text(encoding="utf-8"))] == []


@pytest.mark.parametrize("epoch", [0, 3])
def test_the_layer_table_times_exactly_the_convolution_work_of_a_training_step(epoch: int) -> None:
    from bench_trainer import conv_passes

    # GIVEN the default model in each phase of its recipe
    passes = [entry for entry, *_ in conv_passes(build_model("airbench"), epoch)]
    # THEN the passes are those autograd runs: the fixed whitening stem only forward, the first 3x3
    # convolution's input gradient only while the whitening bias trains (epoch 0), every other both
    names = {(e.layer, e.name) for e in passes}
    assert ("whiten", "dx") not in names and ("whiten", "dw") not in names
    assert (("group1.conv1", "dx") in names) is (epoch == 0)
    assert {("group3.conv2", "dx"), ("group3.conv2", "dw")} <= names
    # AND their FLOPs are torch's count of the step less the head's matmuls, and on real pixels less the
    # padding work, so the table's times add up to the step's convolutions, no more and no less
    total, no_padding = train_flops_per_image(build_model("airbench"), epoch=epoch)
    head = 2 * 256 * 10 * 2  # the linear head: forward and weight gradient (its input gradient too)
    head += 2 * 256 * 10
    assert sum(e.gflop_per_image for e in passes) * 1e9 == pytest.approx(total - head, rel=1e-9)
    assert sum(e.gflop_per_image_no_padding for e in passes) * 1e9 == pytest.approx(no_padding - head, rel=1e-9)


# --- the measured clock (scripts/cpuclock.py) --------------------------------------------------------


@pytest.mark.skipif(not __import__("cpuclock").supported(), reason="the chain is x86-64 Linux machine code")
def test_the_clock_chain_runs_here_and_adds_once_per_iteration_and_add() -> None:
    import cpuclock

    chain = cpuclock.load(cpuclock.program(7))
    assert chain is not None
    assert (chain(1), chain(5), chain(1000)) == (7, 35, 7000)
    with pytest.raises(ValueError, match="at least 1"):
        chain(0)  # rdi = 0 would wrap around instead of returning


def test_the_measured_clock_is_additions_over_seconds_of_the_best_window() -> None:
    import threading

    import cpuclock

    # GIVEN a chain of 400 adds per iteration at 0.4 ns per add (a 2.5 GHz core), slowed in some
    # windows (a VM descheduling us), each thread keeping its own time
    adds, per_add = 400, 1 / 2.5e9
    slowdowns = iter([1.0, 1.0, 3.0, 1.6, 1.0, 1.25, 1.0, 1.0, 1.0, 2.0, 1.1, 4.0])  # sum check, probe, 5 x 2
    lock, now, calls = threading.Lock(), threading.local(), []

    def clock() -> float:
        return getattr(now, "t", 0.0)

    def chain(iterations: int) -> int:
        with lock:
            slow = next(slowdowns, 1.0)
            calls.append(iterations)
        now.t = clock() + iterations * adds * per_add * slow
        return iterations * adds

    # WHEN measured on 2 threads in 5 windows of ~10 ms
    mhz = cpuclock.measure_mhz(2, windows=5, window_seconds=0.01, adds=adds, chain=chain, clock=clock)
    # THEN the best window's mean over the threads: one window ran both threads at full speed
    assert mhz == pytest.approx(2500.0)
    # AND the windows were sized from the probe: ~10 ms of additions each
    assert calls[0] == 3 and calls[1] == 1000
    assert all(n == pytest.approx(0.01 / (adds * per_add), rel=0.01) for n in calls[2:])
    assert len(calls) == 2 + 2 * 5


def test_no_measured_clock_from_a_wrong_chain_or_a_machine_it_cannot_run_on(monkeypatch: pytest.MonkeyPatch) -> None:
    import cpuclock

    assert cpuclock.measure_mhz(1, chain=lambda n: n * cpuclock.ADDS + 1) is None  # a wrong sum
    monkeypatch.setattr(cpuclock.platform, "machine", lambda: "aarch64")
    assert cpuclock.load(cpuclock.program()) is None
    assert cpuclock.measure_mhz(1) is None


def test_a_measured_clock_replaces_cpuinfos_and_the_report_says_which() -> None:
    from bench_trainer import _hardware_line, hardware_peak

    # GIVEN two Zen 4 CPUs that /proc/cpuinfo puts at 3.65 GHz on average, measured at 3.30
    peak = hardware_peak(2, CPUINFO, cpus={0, 1}, measured_mhz=3300.0)
    assert peak is not None
    assert (peak["mhz"], peak["clock"], peak["cpuinfo_mhz"]) == (3300.0, "measured", 3650.0)
    assert peak["per_s"] == pytest.approx(2 * 64 * 3.3)
    line = _hardware_line({"trained": "bf16", "hardware": peak, "matmul_bf16": {"per_s": 396.0}})
    assert "x 3.30 GHz (measured: dependent integer adds on 2 threads at once; /proc/cpuinfo says 3.65)" in line
    assert line.endswith("= 422 GFLOP/s; the bf16 matmul reaches 0.94 of it")
    # AND a measured clock is enough where cpuinfo has none; without either there is no peak
    no_mhz = "\n".join(row for row in CPUINFO.splitlines() if "MHz" not in row)
    assert hardware_peak(2, no_mhz, measured_mhz=3300.0)["per_s"] == pytest.approx(2 * 64 * 3.3)  # type: ignore[index]
    assert hardware_peak(2, no_mhz) is None
    cpuinfo_only = hardware_peak(2, CPUINFO, cpus={0, 1})
    assert cpuinfo_only is not None and cpuinfo_only["clock"] == "cpuinfo"
    assert "(mean 'cpu MHz' in /proc/cpuinfo)" in _hardware_line(
        {"trained": "bf16", "hardware": cpuinfo_only, "matmul_bf16": {"per_s": 396.0}}
    )


def test_the_peaks_convolution_form_is_the_same_product_as_the_matmul() -> None:
    import bench_trainer as bench

    # GIVEN the two GEMM forms of one n x n x n product, on the same random operands
    n = 128
    torch.manual_seed(0)
    conv = bench.gemm(torch.float32, n, "1x1 convolution")()
    torch.manual_seed(0)
    a, b = torch.randn(n, n), torch.randn(n, n)
    # THEN the 1x1 convolution's output pixels are the rows of a @ b^T: 2 n^3 FLOPs, as the peak counts them
    assert conv.shape == (n // 64, n, 8, 8)
    torch.testing.assert_close(conv.permute(0, 2, 3, 1).reshape(n, n), a @ b.T, rtol=1e-4, atol=1e-4)
    # AND a size the form cannot take, or an unknown form, is refused by name
    with pytest.raises(ValueError, match="divisible by 64"):
        bench.gemm(torch.float32, 96, "1x1 convolution")
    with pytest.raises(ValueError, match="unknown GEMM form 'einsum'"):
        bench.gemm(torch.float32, 64, "einsum")


def test_a_peak_measured_twice_is_the_higher_of_the_two_with_both_kept() -> None:
    import bench_trainer as bench

    # GIVEN the same peak measured at a run's start and at its end, the end slower (a quieter start)
    start = {"per_s": 913.0, "n": 1024, "form": "torch.mm", "cpu_efficiency": 0.99}
    end = {"per_s": 871.5, "n": 2048, "form": "1x1 convolution", "cpu_efficiency": 0.6}
    # THEN the run holds its ratios against the higher (a low peak flatters every ratio), either way round,
    # keeps both measurements, and counts the worse efficiency (a descheduled window makes the run BUSY)
    for first, second, at in ((start, end, "start"), (end, start, "end")):
        peak = bench.higher_peak(first, second)
        assert (peak["per_s"], peak["n"], peak["form"], peak["at"]) == (913.0, 1024, "torch.mm", at)
        assert (peak["start"], peak["end"]) == (first, second)
        assert peak["cpu_efficiency"] == 0.6
