"""Batch augmentation as tensor ops, and each epoch's randomness as a function of (seed, epoch)."""

from __future__ import annotations

import torch
from trainer.data import augment, plan_epoch


def _images(n: int = 4) -> torch.Tensor:
    return torch.rand(n, 3, 32, 32, generator=torch.Generator().manual_seed(0))


def test_centre_crop_without_flip_is_the_identity() -> None:
    x = _images()
    pad = 2
    same = augment(x, torch.full((4,), pad), torch.full((4,), pad), torch.zeros(4, dtype=torch.bool), pad)
    assert torch.equal(same, x)
    assert same.is_contiguous(memory_format=torch.channels_last)


def test_flip_mirrors_each_flagged_image_only() -> None:
    x = _images()
    flip = torch.tensor([True, False, True, False])
    out = augment(x, torch.zeros(4, dtype=torch.long), torch.zeros(4, dtype=torch.long), flip, 0)
    assert torch.equal(out[0], x[0].flip(2))
    assert torch.equal(out[1], x[1])


def test_shift_moves_the_content_and_pads_by_reflection() -> None:
    x = _images(1)
    # shift_x = 0 with pad 2 means the crop starts 2 pixels left of the image: content moves right by 2
    out = augment(x, torch.tensor([2]), torch.tensor([0]), torch.tensor([False]), 2)
    assert torch.equal(out[0, :, :, 2:], x[0, :, :, :30])
    assert torch.equal(out[0, :, :, 0], x[0, :, :, 2])  # reflect padding mirrors around the edge pixel


def test_epoch_plan_is_a_function_of_seed_and_epoch() -> None:
    a = plan_epoch(1000, seed=1, epoch=3, pad=2)
    b = plan_epoch(1000, seed=1, epoch=3, pad=2)
    c = plan_epoch(1000, seed=1, epoch=4, pad=2)
    d = plan_epoch(1000, seed=2, epoch=3, pad=2)
    assert torch.equal(a.order, b.order) and torch.equal(a.flip, b.flip) and torch.equal(a.shift_x, b.shift_x)
    assert not torch.equal(a.order, c.order)
    assert not torch.equal(a.order, d.order)
    assert sorted(a.order.tolist()) == list(range(1000))
    assert int(a.shift_y.min()) == 0 and int(a.shift_y.max()) == 4


def test_epoch_plan_ignores_the_global_rng() -> None:
    torch.manual_seed(0)
    a = plan_epoch(100, seed=1, epoch=0, pad=4)
    torch.manual_seed(12345)
    torch.rand(10)
    b = plan_epoch(100, seed=1, epoch=0, pad=4)
    assert torch.equal(a.order, b.order)
