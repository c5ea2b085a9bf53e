"""The models: sizes, shapes, the whitening stem, and export without our code."""

from __future__ import annotations

import io

import pytest
import torch
from trainer.nets import AirbenchNet, build_model, count_parameters, parameter_groups


def test_airbench_has_about_two_million_parameters() -> None:
    assert 1_900_000 < count_parameters(build_model("airbench")) < 2_100_000


@pytest.mark.parametrize("name", ["airbench", "cnn"])
def test_models_map_float_images_to_class_logits(name: str) -> None:
    model = build_model(name).eval()
    with torch.no_grad():
        logits = model(torch.rand(3, 3, 32, 32))
    assert logits.shape == (3, 10)


def test_unknown_model_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="resnet"):
        build_model("resnet")


def test_whitening_stem_decorrelates_image_patches() -> None:
    # GIVEN images whose neighbouring pixels and channels are strongly correlated
    gen = torch.Generator().manual_seed(0)
    base = torch.rand(256, 1, 8, 8, generator=gen)
    images = torch.nn.functional.interpolate(base, size=32, mode="bilinear").repeat(1, 3, 1, 1)
    images = (images + 0.05 * torch.rand(256, 3, 32, 32, generator=gen)).clamp(0, 1)
    model = AirbenchNet()
    # WHEN the stem is fitted to them (with a negligible eps; training uses a larger one to damp noise)
    model.init_whitening(images, eps=1e-9)
    # THEN its first 12 output channels have identity covariance on those images
    with torch.no_grad():
        out = torch.nn.functional.conv2d(model.normalize(images), model.whiten.weight[:12])
    flat = out.permute(1, 0, 2, 3).reshape(12, -1).double()
    covariance = flat @ flat.T / flat.shape[1]
    assert torch.allclose(covariance, torch.eye(12, dtype=torch.double), atol=1e-3)
    assert not model.whiten.weight.requires_grad


def test_weight_decay_applies_to_weights_but_not_biases_or_frozen_parameters() -> None:
    model = build_model("airbench")
    decay, no_decay = parameter_groups(model, 5e-4)
    assert decay["weight_decay"] == 5e-4 and no_decay["weight_decay"] == 0.0
    assert all(p.ndim > 1 for p in decay["params"])
    assert all(p.ndim == 1 for p in no_decay["params"])
    trainable = {id(p) for p in model.parameters() if p.requires_grad}
    assert {id(p) for p in decay["params"] + no_decay["params"]} == trainable
    assert id(model.whiten.weight) not in trainable


@pytest.mark.filterwarnings("ignore:`torch.jit.*` is deprecated:FutureWarning")
@pytest.mark.parametrize("name", ["airbench", "cnn"])
def test_traced_model_runs_without_our_code(name: str) -> None:
    model = build_model(name).eval()
    example = torch.rand(2, 3, 32, 32)
    traced = torch.jit.trace(model, example)
    buffer = io.BytesIO()
    torch.jit.save(traced, buffer)
    buffer.seek(0)
    loaded = torch.jit.load(buffer)
    with torch.no_grad():
        assert torch.allclose(loaded(example), model(example), atol=1e-5)


def test_a_frozen_whitening_stem_needs_no_convolution_backward() -> None:
    model = AirbenchNet()
    model.whiten.bias.requires_grad_(False)
    out = model.whiten(torch.rand(2, 3, 32, 32))
    assert out.grad_fn is None  # nothing to differentiate: autograd skips the stem entirely
    model.whiten.bias.requires_grad_(True)
    assert model.whiten(torch.rand(2, 3, 32, 32)).grad_fn.name() == "AddBackward0"


def test_gelu_runs_a_bf16_channels_last_activation_through_its_nhwc_view_and_anything_else_as_nn_gelu() -> None:
    from torch import nn
    from trainer.nets import GELU

    # GIVEN a bf16 channels-last activation (as the trainer's convolutions produce under autocast here)
    torch.manual_seed(0)
    x = (3 * torch.randn(8, 16, 5, 5)).to(torch.bfloat16).contiguous(memory_format=torch.channels_last)
    grad = torch.randn_like(x)
    ours, theirs = x.detach().requires_grad_(), x.detach().requires_grad_()
    # WHEN our GELU and torch's run forward and backward
    y = GELU()(ours)
    y.backward(grad)
    expected = nn.GELU()(theirs)
    expected.backward(grad)
    # THEN the same values and gradients within bf16's last place, in the same layout
    torch.testing.assert_close(y, expected, atol=1e-2, rtol=1e-2)
    torch.testing.assert_close(ours.grad, theirs.grad, atol=1e-2, rtol=1e-2)
    assert y.is_contiguous(memory_format=torch.channels_last) and not y.is_contiguous()
    assert ours.grad is not None and ours.grad.is_contiguous(memory_format=torch.channels_last)
    # AND it took the view (the vectorized kernel's rounding)
    assert torch.equal(y.detach(), nn.functional.gelu(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2))
    # AND fp32 (what the differential tests against the reference run), other layouts and shapes are
    # nn.GELU's own path, bit for bit
    for other in (x.float(), x.contiguous(), x[:, :, 0, 0]):
        assert torch.equal(GELU()(other), nn.functional.gelu(other))
