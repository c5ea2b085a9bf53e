"""The models and their training recipes. Every model takes float images in [0, 1] (Nx3x32x32) and normalizes
inside, so an exported model needs none of our code to be fed.

- `airbench` (default): airbench94's network (Keller Jordan, arXiv:2404.00498), written here and checked
  against the reference implementation (trainer/tests/test_airbench_reference.py): a frozen 2x2
  patch-whitening convolution with a bias as the stem, then three conv groups (conv, max-pool,
  BatchNorm, GELU, conv, BatchNorm, GELU) of widths 64/256/256, a global max-pool and a linear head
  scaled by 1/9. Convolutions start as Dirac identities on their first input-many filters, BatchNorms
  have a fixed unit scale and eps 1e-12. 1.97 M parameters, 0.24 GFLOP per image forward (~0.7 per
  training image).
- `cnn`: the seed repository's small CNN (conv 32/64/128 with ReLU and max-pooling, fully connected
  512/256/10), kept as the baseline it was.

`MODELS` is the registry (`trainer.catalog.MODELS`, the same dict, kept free of torch so settings are
validated before torch loads): a name, the class, and the recipe its settings default to. Adding a model is
one class here and one entry there; the configuration (`trainer.config.MODELS`, `RECIPES`), the trainer
and the published artifacts take the name from it. A class may define `augment_pad` (pixels of random
translation in training, 0 when absent) and `prepare(images)`, called once on a sample of the float
training images before training starts (airbench fits its whitening stem there); and, for a recipe
beyond plain SGD, `parameter_groups(lr, weight_decay)`, `start_epoch(epoch)`, `lookahead`, `lr_end`
and `tta_level` (airbench: the airbench94 recipe of `trainer.recipe`; see `trainer.train`).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from trainer import catalog, recipe
from trainer.catalog import AIRBENCH_RECIPE, CNN_RECIPE, ModelEntry, Recipe  # noqa: F401 -- re-exported

# Per-channel statistics of the CIFAR-10 training set, on pixels scaled to [0, 1] (inside every model, so an
# exported model takes raw [0, 1] images).
CIFAR10_MEAN = (0.4914, 0.4822, 0.4465)
CIFAR10_STD = (0.2470, 0.2435, 0.2616)
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


class Conv2d(nn.Conv2d):
    """nn.Conv2d (stride 1) whose bias, while it trains, is added after the convolution, not inside it:
    for the whitening stem (frozen weight, input without gradient) autograd then skips the
    convolution's backward altogether, where oneDNN spent as long as on a full layer's backward to
    produce a bias gradient (a sum). A fixed bias (the stem's after its first epochs) is added inside
    the convolution, which oneDNN does for free. The choice follows the parameter, not the grad mode,
    so a traced model has one graph. The arithmetic is that of nn.Conv2d.

    (An earlier version computed group 2's first weight gradient in fp32, after it measured 6x slower
    in bf16 on a loaded machine. On a quiet one the plain bf16 step is faster: 446/482/465 images/s
    against 419/436/445 with it, alternating in one process; the trick is gone.)
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        padding: Any = self.padding
        if self.bias is not None and self.bias.requires_grad:
            y = nn.functional.conv2d(x, self.weight, None, self.stride, padding, self.dilation, self.groups)
            return y + self.bias.to(y.dtype).view(1, -1, 1, 1)
        return nn.functional.conv2d(x, self.weight, self.bias, self.stride, padding, self.dilation, self.groups)


class GELU(nn.GELU):
    """nn.GELU (erf); on the CPU, a bf16 channels-last activation goes through its contiguous NHWC view.

    The same function on the same memory, but torch's CPU kernel takes its vectorized bf16 path only
    for a tensor it sees as contiguous: on this network's channels-last activations the forward and
    backward together ran 1.5-1.7x faster through the view (1,024 images: 9.8 against 16.2 ms at
    64x15x15, 8.4 against 14.0 at 256x7x7), and the default model's bf16 training step 2.5 % faster
    (1.750 against 1.794 s, medians of 12 steps each, alternating in one session). The vectorized erf
    rounds differently in the last place, as any two GELU kernels do. fp32 gained nothing measurable
    (3.085 against 3.079 s), so fp32 and every other case stay on nn.GELU's own path: the differential
    tests against the reference airbench94, which run fp32, see the reference's kernel.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if (
            x.dtype == torch.bfloat16
            and x.device.type == "cpu"
            and x.dim() == 4
            and not x.is_contiguous()
            and x.is_contiguous(memory_format=torch.channels_last)
        ):
            return super().forward(x.permute(0, 2, 3, 1)).permute(0, 3, 1, 2)
        return super().forward(x)


def _conv(
    channels_in: int,
    channels_out: int,
    kernel_size: int = 3,
    padding: int = 1,
    *,
    bias: bool = False,
) -> Conv2d:
    """A convolution whose first `channels_in` filters start as the identity (Dirac), the rest as torch's
    default; a bias starts at zero. The identity start lets the deep stack pass its input through at first."""
    conv = Conv2d(channels_in, channels_out, kernel_size, padding=padding, bias=bias)
    with torch.no_grad():
        nn.init.dirac_(conv.weight[: min(channels_in, channels_out)])
        if conv.bias is not None:
            conv.bias.zero_()
    return conv


class ConvGroup(nn.Module):
    """conv 3x3 -> max-pool 2 -> BN -> GELU -> conv 3x3 -> BN -> GELU."""

    def __init__(self, channels_in: int, channels_out: int) -> None:
        super().__init__()
        self.conv1 = _conv(channels_in, channels_out)
        self.pool = nn.MaxPool2d(2)
        self.norm1 = _batchnorm(channels_out)
        self.conv2 = _conv(channels_out, channels_out)
        self.norm2 = _batchnorm(channels_out)
        self.act = GELU()

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x = self.act(self.norm1(self.pool(self.conv1(x))))
        return self.act(self.norm2(self.conv2(x)))


class AirbenchNet(nn.Module):
    """The airbench94-style network; its `prepare` hook fits the whitening stem to training images."""

    augment_pad = recipe.TRANSLATE  # pixels of random translation in training
    head_scale = 1 / 9  # airbench's output scaling: keeps the initial logits small
    # the airbench94 training recipe (trainer.recipe), read by the trainer
    lookahead = True  # an EMA of the weights every 5 steps, which the model is reset to
    lr_end = recipe.LR_END  # the schedule ends at 0.07 x the peak
    tta_level = recipe.TTA_LEVEL  # mirror and translate

    def __init__(self, widths: tuple[int, int, int] = (64, 256, 256), num_classes: int = 10) -> None:
        super().__init__()
        whiten_width = 2 * 3 * 2 * 2  # each of the 12 eigen-directions of a 2x2x3 patch, with both signs
        self.normalize = Normalize()
        self.whiten = _conv(3, whiten_width, kernel_size=2, padding=0, bias=True)
        self.whiten.weight.requires_grad_(False)  # fixed by init_whitening; its bias trains in the first epochs
        self.act = GELU()
        self.group1 = ConvGroup(whiten_width, widths[0])
        self.group2 = ConvGroup(widths[0], widths[1])
        self.group3 = ConvGroup(widths[1], widths[2])
        self.pool = nn.AdaptiveMaxPool2d(1)
        self.head = nn.Linear(widths[2], num_classes, bias=False)

    def prepare(self, images: torch.Tensor) -> None:
        """The registry's hook before training: fit the whitening stem to these training images."""
        self.init_whitening(images)

    def parameter_groups(self, lr: float, weight_decay: float) -> list[dict[str, object]]:
        """airbench94's SGD groups: BatchNorm biases at 64x the learning rate (`recipe.parameter_groups`)."""
        return recipe.parameter_groups(self, lr, weight_decay)

    def start_epoch(self, epoch: int) -> None:
        """Before epoch `epoch` (0-based): the whitening bias trains in the first 3 epochs only."""
        self.whiten.bias.requires_grad_(recipe.whiten_bias_trains(epoch))

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


# --- the registry: trainer.catalog (names, recipes and "module:Class" paths, no torch) -----------------
# Re-exported: nets.MODELS is catalog.MODELS (the same dict), so a model registered in either is known to both.
MODELS = catalog.MODELS


def build_model(name: str, num_classes: int = 10) -> nn.Module:
    """A freshly initialized registered model by name; weights come from torch's global RNG."""
    try:
        entry = MODELS[name]
    except KeyError:
        raise ValueError(f"unknown model {name!r} (choose one of {', '.join(MODELS)})") from None
    return entry.cls(num_classes=num_classes)


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
