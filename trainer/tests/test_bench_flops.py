"""The benchmark's FLOP accounting: multiply-adds on zero padding are counted exactly."""

from __future__ import annotations

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
