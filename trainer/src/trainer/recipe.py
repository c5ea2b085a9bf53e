"""The airbench94 training recipe (Keller Jordan, arXiv:2404.00498) as small pure functions.

Everything that makes airbench94 reach 94 % in under ten epochs, apart from the network itself
(`trainer.nets`): the hyperparameters, the learning-rate/lookahead schedules, the per-step optimizer
settings, the alternating flip, the whitening initialization and the level-2 test-time augmentation.
Each piece is written here from the paper and checked against the reference implementation
(`airbench==0.1.8` on PyPI, a test-only dependency) by `trainer/tests/test_airbench_reference.py`:
the same numbers for every step of a full run, the same whitening filters, the same TTA logits, and
the same weights after training the same batches. A drift from the reference fails the build.

Units. The reference states lr and weight decay "per 1024 examples" on a *summed* loss, decoupled from
momentum. This trainer uses a *mean* loss, so for batch B the SGD learning rate is
`lr_per_1024 * B / (1024 * (1 + 1 / (1 - momentum)))` (1.5 at B = 1024) and the SGD weight decay is
`wd_per_1024 / lr_per_1024` (independent of B); gradients and momentum buffers are then the
reference's divided by B and every update is the same.
"""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable

import torch
from torch import nn

# 1. airbench94's hyperparameters (its `hyp` dict) live in trainer.catalog (no torch), where the configuration
# reads the airbench recipe before torch loads; re-exported here as recipe.<NAME>.
from trainer.catalog import (  # noqa: F401 -- re-exported: recipe.BATCH_SIZE etc. are airbench94's hyp
    BATCH_SIZE,
    BIAS_LR_SCALE,
    BN_EPS,
    BN_MOMENTUM,
    LABEL_SMOOTHING,
    LOOKAHEAD_BASE,
    LOOKAHEAD_EVERY,
    LR_END,
    LR_PEAK_AT,
    LR_PER_1024,
    LR_START,
    MIN_STEPS_PER_EPOCH,
    MOMENTUM,
    TRAIN_EPOCHS,
    TRANSLATE,
    TTA_LEVEL,
    WD_PER_1024,
    WHITEN_BIAS_EPOCHS,
    WHITEN_EPS,
    WHITEN_IMAGES,
)

# --- 2. optimizer settings --------------------------------------------------------------------------


def kilostep_scale(momentum: float) -> float:
    """How much larger Nesterov steps are than the gradients they follow, times 1024 examples."""
    return 1024 * (1 + 1 / (1 - momentum))


def mean_loss_lr(batch_size: int, lr_per_1024: float = LR_PER_1024, momentum: float = MOMENTUM) -> float:
    """The SGD learning rate for a mean loss over `batch_size` examples (1.5 for the default recipe)."""
    return lr_per_1024 * batch_size / kilostep_scale(momentum)


def mean_loss_weight_decay(wd_per_1024: float = WD_PER_1024, lr_per_1024: float = LR_PER_1024) -> float:
    """The SGD weight decay for a mean loss: lr x weight_decay is the reference's decay per step."""
    return wd_per_1024 / lr_per_1024


def fit_batch(batch_size: int, n_train: int, min_steps: int = MIN_STEPS_PER_EPOCH) -> int:
    """The batch to train `n_train` images with: `batch_size`, or smaller so that an epoch has at least
    `min_steps` steps (floor(n_train / min_steps), at least 1).

    airbench94 takes 48 steps per epoch of CIFAR-10; with batch 1024 on 2,000 images an epoch would be one
    step and the model learns nothing. The caller scales the learning rate by the same factor, which
    keeps the reference's per-example learning rate (its lr is stated per 1024 examples).
    """
    return max(1, min(batch_size, n_train // min_steps))


def total_steps(steps_per_epoch: int, epochs: float) -> int:
    """Optimizer steps of a run of `epochs` (fractional: 9.9 epochs of 48 steps is 476 steps)."""
    return math.ceil(steps_per_epoch * epochs)


def lr_factor(
    step: int, total: int, start: float = LR_START, peak_at: float = LR_PEAK_AT, end: float = LR_END
) -> float:
    """The fraction of the peak learning rate used by optimizer step `step` (0-based) of `total`.

    Piecewise linear through (0, start), (floor(peak_at x total), 1) and (total, end).
    """
    peak_step = int(peak_at * total)
    if step < peak_step:
        return start + (1 - start) * step / peak_step
    return 1 + (end - 1) * (step - peak_step) / max(total - peak_step, 1)


def lookahead_decay(step: int, total: int, base: float = LOOKAHEAD_BASE) -> float:
    """The EMA decay of the lookahead update after step `step` (1-based): base x (step / total)^3."""
    return base * (step / total) ** 3


def lookahead_updates(step: int, total: int) -> tuple[float, ...]:
    """The decays of the lookahead updates that follow step `step` (1-based), in order.

    One every LOOKAHEAD_EVERY steps; after the last step one more with decay 1, which resets the
    model to the average (the steps since the last update are discarded, as in the reference).
    """
    decays = (lookahead_decay(step, total),) if step % LOOKAHEAD_EVERY == 0 else ()
    return (*decays, 1.0) if step >= total else decays


def whiten_bias_trains(epoch: int, epochs: int = WHITEN_BIAS_EPOCHS) -> bool:
    """Whether the whitening bias trains in `epoch` (0-based)."""
    return epoch < epochs


def parameter_groups(
    model: nn.Module, lr: float, weight_decay: float, bias_lr_scale: float = BIAS_LR_SCALE
) -> list[dict[str, object]]:
    """SGD parameter groups: BatchNorm biases at `bias_lr_scale` x lr, everything else trainable at lr.

    Every trainable parameter decays by the same lr x weight_decay per step (the BatchNorm biases'
    weight decay is divided by the scale), as in the reference. Build the groups while the whitening
    bias still trains: once frozen it stays in its group, and SGD skips a parameter without a gradient.
    """
    norm_biases = {
        id(m.bias) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm) and m.bias is not None
    }
    trainable = [p for p in model.parameters() if p.requires_grad]
    scaled = [p for p in trainable if id(p) in norm_biases]
    other = [p for p in trainable if id(p) not in norm_biases]
    bias_lr = lr * bias_lr_scale
    return [
        {"params": scaled, "lr": bias_lr, "initial_lr": bias_lr, "weight_decay": weight_decay / bias_lr_scale},
        {"params": other, "lr": lr, "initial_lr": lr, "weight_decay": weight_decay},
    ]


def set_lr(optimizer: torch.optim.Optimizer, factor: float) -> None:
    """Set every group's lr to `factor` x its peak (kept as the group's `initial_lr`)."""
    for group in optimizer.param_groups:
        group["lr"] = group["initial_lr"] * factor


# --- 3. lookahead -----------------------------------------------------------------------------------


class Lookahead:
    """An exponential moving average of the model's floating-point state that the model is reset to.

    Every LOOKAHEAD_EVERY steps: ema <- decay x ema + (1 - decay) x model, then model <- ema. Covers
    parameters and BatchNorm statistics alike (the whole floating-point state_dict), as the reference does.
    """

    def __init__(self, model: nn.Module) -> None:
        self.ema = {k: v.detach().clone() for k, v in model.state_dict().items() if v.is_floating_point()}

    @torch.no_grad()
    def update(self, model: nn.Module, decay: float) -> None:
        state = model.state_dict()
        for name, average in self.ema.items():
            average.lerp_(state[name], 1 - decay)
            state[name].copy_(average)

    def state_dict(self) -> dict[str, torch.Tensor]:
        return self.ema

    def load_state_dict(self, state: dict[str, torch.Tensor]) -> None:
        for name, average in self.ema.items():
            average.copy_(state[name])


# --- 4. data: alternating flip, whitening -----------------------------------------------------------


def alternating_flip(base_flip: torch.Tensor, epoch: int) -> torch.Tensor:
    """Each image's mirror state in `epoch`: random in epoch 0, then the opposite every other epoch.

    Every image is seen both ways in each pair of epochs (more diverse than a fresh coin per epoch).
    """
    return base_flip ^ (epoch % 2 == 1)


def whitening_filters(images: torch.Tensor, kernel_size: int = 2, eps: float = WHITEN_EPS) -> torch.Tensor:
    """Filters that whiten the kernel_size^2 patches of normalized `images` (N x C x H x W), with both signs.

    The patch covariance's eigenvectors, strongest first, each scaled by 1/sqrt(eigenvalue + eps);
    then the same filters negated: 2 x C x k x k filters in all. Computed in fp32, as the reference does
    (the eigenvectors' signs, and so the channel order, then match it).
    """
    c = images.shape[1]
    patches = images.unfold(2, kernel_size, 1).unfold(3, kernel_size, 1).transpose(1, 3)
    flat = patches.reshape(-1, c * kernel_size * kernel_size).float()
    covariance = flat.T @ flat / len(flat)
    eigenvalues, eigenvectors = torch.linalg.eigh(covariance, UPLO="U")
    eigenvalues = eigenvalues.flip(0).view(-1, 1, 1, 1)
    filters = eigenvectors.T.reshape(-1, c, kernel_size, kernel_size).flip(0) / torch.sqrt(eigenvalues + eps)
    return torch.cat((filters, -filters))


# --- 5. test-time augmentation ----------------------------------------------------------------------


def tta_logits(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, level: int) -> torch.Tensor:
    """Logits averaged over views of `images`: level 0 none, 1 with the mirror image, 2 also shifted by
    one pixel up-left and down-right (reflect padding), each shifted view with its mirror; the shifted
    views weigh half."""

    def mirror(x: torch.Tensor) -> torch.Tensor:
        return 0.5 * model(x) + 0.5 * model(x.flip(-1))

    if level == 0:
        return model(images)
    if level == 1:
        return mirror(images)
    if level != 2:
        raise ValueError(f"TTA level {level} (choose 0, 1 or 2)")
    h, w = images.shape[-2:]
    padded = nn.functional.pad(images, (1, 1, 1, 1), mode="reflect")
    shifted = [padded[:, :, 0:h, 0:w], padded[:, :, 2 : h + 2, 2 : w + 2]]
    return 0.5 * mirror(images) + 0.5 * torch.stack([mirror(x) for x in shifted]).mean(0)


def schedule_table(steps_per_epoch: int, epochs: float) -> Iterable[tuple[float, tuple[float, ...]]]:
    """(lr factor, lookahead decays after it) for every optimizer step of a run, in order."""
    total = total_steps(steps_per_epoch, epochs)
    for step in range(total):
        yield lr_factor(step, total), lookahead_updates(step + 1, total)
