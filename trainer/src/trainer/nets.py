"""The two models. Both take float images in [0, 1] (Nx3x32x32) and normalize inside, so an exported model
needs none of our code to be fed.

- `airbench` (default): airbench94's network (Keller Jordan, arXiv:2404.00498), written here and checked
  against the reference implementation (trainer/tests/test_airbench_reference.py): a frozen 2x2
  patch-whitening convolution with a bias as the stem, then three conv groups (conv, max-pool,
  BatchNorm, GELU, conv, BatchNorm, GELU) of widths 64/256/256, a global max-pool and a linear head
  scaled by 1/9. Convolutions start as Dirac identities on their first input-many filters, BatchNorms
  have a fixed unit scale and eps 1e-12. 1.97 M parameters, 0.24 GFLOP per image forward (~0.7 per
  training image).
- `cnn`: the seed repository's small CNN (conv 32/64/128 with ReLU and max-pooling, fully connected
  512/256/10), kept as the baseline it was.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer import recipe
from trainer.data import CIFAR10_MEAN, CIFAR10_STD

BN_MOMENTUM = recipe.BN_MOMENTUM  # torch convention (weight of the new batch); airbench's 0.6 is the old one's


class Normalize(nn.Module):
    """(x - mean) / std per channel, with the statistics as buffers (saved and exported with the model)."""

    def __init__(self, mean: tuple[float, ...] = CIFAR10_MEAN, std: tuple[float, ...] = CIFAR10_STD) -> None:
        super().__init__()
        self.register_buffer("mean", torch.tensor(mean).view(1, -1, 1, 1))
        self.register_buffer("std", torch.tensor(std).view(1, -1, 1, 1))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return (x - self.mean) / self.std


def _batchnorm(width: int) -> nn.BatchNorm2d:
    """BatchNorm with a fixed unit scale: the layer stays scale-invariant, which the high learning rate needs."""
    bn = nn.BatchNorm2d(width, eps=recipe.BN_EPS, momentum=BN_MOMENTUM)
    bn.weight.requires_grad_(False)
    return bn


class _Fp32WeightGradConv(torch.autograd.Function):
    """A stride-1 convolution of low-precision `x` whose backward computes the weight gradient in fp32."""

    @staticmethod
    def forward(ctx: Any, x: torch.Tensor, weight: torch.Tensor, padding: tuple[int, int]) -> torch.Tensor:
        low = weight.to(x.dtype)
        ctx.save_for_backward(x, low)
        ctx.padding = list(padding)
        return nn.functional.conv2d(x, low, None, 1, padding)

    @staticmethod
    def backward(ctx: Any, grad: torch.Tensor) -> tuple[torch.Tensor | None, torch.Tensor | None, None]:
        x, low = ctx.saved_tensors
        conv_backward = torch.ops.aten.convolution_backward
        args = ([1, 1], ctx.padding, [1, 1], False, [0, 0], 1)
        grad_x = grad_w = None
        if ctx.needs_input_grad[0]:
            grad_x = conv_backward(grad, x, low, None, *args, [True, False, False])[0]
        if ctx.needs_input_grad[1]:
            grad_w = conv_backward(grad.float(), x.float(), low.float(), None, *args, [False, True, False])[1]
        return grad_x, grad_w, None


class Conv2d(nn.Conv2d):
    """nn.Conv2d (stride 1) with two speed-ups for bf16 on CPUs; the arithmetic in fp32 is unchanged.

    - The bias is added after the convolution, not inside it: for the whitening stem (frozen weight,
      input without gradient) autograd then skips the convolution's backward altogether, where oneDNN
      spent as long as on a full layer's backward to produce a bias gradient (a sum).
    - `fp32_weight_grad`: under CPU bf16 autocast the weight gradient is computed in fp32. oneDNN's bf16
      weight gradient for 64 -> 256 channels at 15x15 measured 6x slower than fp32 on this 2-core Zen 4
      (7.0 s vs 1.1 s for a 256-image batch on a loaded machine; the input gradient stays bf16, 2x faster).
    """

    def __init__(self, *args: Any, fp32_weight_grad: bool = False, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.fp32_weight_grad = fp32_weight_grad

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding: Any = self.padding
        if (
            self.fp32_weight_grad
            and x.device.type == "cpu"
            and torch.is_autocast_enabled("cpu")
            and torch.is_grad_enabled()
            and self.weight.requires_grad
        ):
            y = _Fp32WeightGradConv.apply(x.to(torch.get_autocast_dtype("cpu")), self.weight, padding)
        else:
            y = nn.functional.conv2d(x, self.weight, None, self.stride, padding, self.dilation, self.groups)
        if self.bias is None:
            return y
        return y + self.bias.to(y.dtype).view(1, -1, 1, 1)


def _conv(
    channels_in: int,
    channels_out: int,
    kernel_size: int = 3,
    padding: int = 1,
    *,
    bias: bool = False,
    fp32_weight_grad: bool = False,
) -> Conv2d:
    """A convolution whose first `channels_in` filters start as the identity (Dirac), the rest as torch's
    default; a bias starts at zero. The identity start lets the deep stack pass its input through at first."""
    conv = Conv2d(channels_in, channels_out, kernel_size, padding=padding, bias=bias, fp32_weight_grad=fp32_weight_grad)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(channels_in, channels_out)])
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


class ConvGroup(nn.Module):
    """conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU."""

    def __init__(self, channels_in: int, channels_out: int, fp32_weight_grad: bool = False) -> None:
        super().__init__()
        self.conv1 = _conv(channels_in, channels_out, fp32_weight_grad=fp32_weight_grad)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _batchnorm(channels_out)
        self.conv2 = _conv(channels_out, channels_out)
        self.norm2 = _batchnorm(channels_out)
        self.act = nn.GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """The airbench94-style network; call `init_whitening` with training images before training."""

    augment_pad = recipe.TRANSLATE  # pixels of random translation in training
    head_scale = 1 / 9  # airbench's output scaling: keeps the initial logits small

    def __init__(self, widths: tuple[int, int, int] = (64, 256, 256), num_classes: int = 10) -> None:
        super().__init__()
        whiten_width = 2 * 3 * 2 * 2  # each of the 12 eigen-directions of a 2x2x3 patch, with both signs
        self.normalize = Normalize()
        self.whiten = _conv(3, whiten_width, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # fixed by init_whitening; its bias trains in the first epochs
        self.act = nn.GELU()
        self.group1 = ConvGroup(whiten_width, widths[0])
        self.group2 = ConvGroup(widths[0], widths[1], fp32_weight_grad=True)  # see Conv2d
        self.group3 = ConvGroup(widths[1], widths[2])
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    @torch.no_grad()
    def init_whitening(self, images: torch.Tensor, eps: float = recipe.WHITEN_EPS) -> None:
        """Set the stem to whiten 2x2 patches of `images` (float in [0, 1]): W = ±L^-1/2 V^T of their covariance."""
        x = self.normalize(images.float().to(self.whiten.weight.device))
        self.whiten.weight.copy_(recipe.whitening_filters(x, kernel_size=2, eps=eps))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.whiten(self.normalize(x)))
        x = self.group3(self.group2(self.group1(x)))
        return self.head(self.pool(x).flatten(1)) * self.head_scale


class SeedCNN(nn.Module):
    """The seed repository's CNN: conv 32/64/128 (3x3, ReLU, max-pool 2), then fc 512/256/10."""

    augment_pad = 4

    def __init__(self, num_classes: int = 10) -> None:
        super().__init__()
        self.normalize = Normalize()
        self.features = nn.Sequential(
            nn.Conv2d(3, 32, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(32, 64, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
            nn.Conv2d(64, 128, 3, padding=1),
            nn.ReLU(inplace=True),
            nn.MaxPool2d(2),
        )
        self.classifier = nn.Sequential(
            nn.Flatten(),
            nn.Linear(128 * 4 * 4, 512),
            nn.ReLU(inplace=True),
            nn.Linear(512, 256),
            nn.ReLU(inplace=True),
            nn.Linear(256, num_classes),
        )

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.classifier(self.features(self.normalize(x)))


MODEL_CLASSES: dict[str, type[nn.Module]] = {"airbench": AirbenchNet, "cnn": SeedCNN}


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """A freshly initialized model by name ("airbench" or "cnn"); weights come from torch's global RNG."""
    try:
        cls = MODEL_CLASSES[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (choose one of {', '.join(MODEL_CLASSES)})") from None
    return cls(num_classes=num_classes)


def count_parameters(model: nn.Module) -> int:
    """All parameters, trainable or not."""
    return sum(p.numel() for p in model.parameters())


def parameter_groups(model: nn.Module, weight_decay: float) -> list[dict[str, object]]:
    """SGD groups: weight decay on conv/linear weights only, none on biases and norms; frozen ones left out."""
    decay, no_decay = [], []
    for param in model.parameters():
        if not param.requires_grad:
            continue
        (decay if param.ndim > 1 else no_decay).append(param)
    return [{"params": decay, "weight_decay": weight_decay}, {"params": no_decay, "weight_decay": 0.0}]
