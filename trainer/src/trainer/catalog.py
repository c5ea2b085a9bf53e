"""The registered models' names and training recipes as plain data: no torch.

`MODELS` is the registry: a name, the class that builds the model (a "module:Class" path, imported
only when a model is built, or the class itself) and the recipe its settings default to. Adding a
model is one class and one entry here. The configuration (`trainer.config`) validates every setting
against this table before torch is imported, so a bad setting exits 2 in about a second; the trainer
(`trainer.nets.build_model`) resolves the class when it builds the model.

airbench94's hyperparameters live here too (its `hyp` dict, section 1): they are the airbench recipe's
numbers; `trainer.recipe` (the schedules and optimizer settings made of them, with torch) re-exports them.
"""

from __future__ import annotations

import importlib
from dataclasses import dataclass
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from torch import nn

# --- 1. the hyperparameters of airbench94 (its `hyp` dict) -----------------------------------------
TRAIN_EPOCHS = 9.9  # passes over the training set; the last pass stops at 90 %
BATCH_SIZE = 1024
LR_PER_1024 = 11.5  # learning rate per 1024 examples on a summed loss, decoupled from momentum
WD_PER_1024 = 0.0153  # weight decay per 1024 examples, decoupled from the learning rate
MOMENTUM = 0.85  # Nesterov
BIAS_LR_SCALE = 64.0  # BatchNorm biases learn 64x faster (their weight decay per step stays the same)
LABEL_SMOOTHING = 0.2
WHITEN_BIAS_EPOCHS = 3  # the whitening stem's bias trains in the first 3 epochs, then stays fixed
TRANSLATE = 2  # pixels of random translation (reflect padding) in training
BN_MOMENTUM = 0.4  # torch convention (weight of the new batch); the reference's 0.6 is the old value's weight
BN_EPS = 1e-12
WHITEN_EPS = 5e-4  # added to the patch covariance eigenvalues before the inverse square root
WHITEN_IMAGES = 5000  # training images the whitening stem is fitted on
LR_START = 0.2  # the schedule: linear from 0.2 x peak at step 0 ...
LR_PEAK_AT = 0.23  # ... to the peak at 23 % of the steps ...
LR_END = 0.07  # ... then linear down to 0.07 x peak at the last step
LOOKAHEAD_EVERY = 5  # steps between lookahead (EMA) updates
LOOKAHEAD_BASE = 0.95**LOOKAHEAD_EVERY  # the EMA decay reached at the end of training
TTA_LEVEL = 2  # 0: none, 1: mirror, 2: mirror and translate by one pixel
MIN_STEPS_PER_EPOCH = 16  # small training sets: the batch shrinks until an epoch has at least this many steps


# --- 2. the registry --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recipe:
    """The training settings a model defaults to (each one a `TrainConfig` field of the same name)."""

    epochs: float  # passes over the training set; a fraction stops the last pass early (airbench94: 9.9)
    batch_size: int  # training images per step
    lr: float  # peak SGD learning rate for a mean loss
    momentum: float  # Nesterov momentum
    weight_decay: float  # SGD weight decay (airbench: every trainable parameter; cnn: conv/linear weights)
    label_smoothing: float  # cross-entropy label smoothing
    warmup: float  # fraction of all steps with a linear lr warmup, then linear decay (airbench: to 0.07 x peak)


@dataclass(frozen=True)
class ModelEntry:
    """One registered model: what builds it, and its recipe.

    model: the class, or its "module:Class" path (imported by `cls` only when a model is built, so that
    reading the registry never imports torch); built as `cls(num_classes=...)`.
    """

    model: type[nn.Module] | str
    recipe: Recipe

    @property
    def cls(self) -> type[nn.Module]:
        """The model's class (imports its module, and so torch, on first use)."""
        if not isinstance(self.model, str):
            return self.model
        module, _, name = self.model.partition(":")
        return getattr(importlib.import_module(module), name)  # type: ignore[no-any-return]


# airbench: the airbench94 recipe of Keller Jordan, "94% on CIFAR-10 in 3.29 seconds on a single GPU"
# (arXiv:2404.00498, 2024), implemented in trainer.recipe and proven equal to the reference
# implementation (airbench==0.1.8) step for step by trainer/tests/test_airbench_reference.py: batch 1024,
# Nesterov SGD momentum 0.85, label smoothing 0.2, 9.9 epochs, a triangular schedule (0.2 -> 1 at 23 %
# of the steps -> 0.07 x the peak), lookahead every 5 steps, BatchNorm biases at 64x the learning rate,
# the whitening bias trained for 3 epochs, alternating flip + translate-2 augmentation and mirror +
# translate test-time augmentation. Its lr 11.5 and weight decay 0.0153 are "per 1024 examples" on a
# summed loss; for the mean loss used here the SGD lr is 11.5 / (1 + 1 / (1 - momentum)) = 1.5 at batch
# 1024 and the SGD weight decay 0.0153 / 11.5 (trainer.recipe). 94.01 % mean test accuracy is the
# reference's published figure, not measured here (no CIFAR-10; the differential tests show equality
# within 1e-5 in fp32 on the CPU, not the bf16 path that trains).
AIRBENCH_RECIPE = Recipe(
    epochs=TRAIN_EPOCHS,  # 9.9: the last pass stops at 90 %
    batch_size=BATCH_SIZE,
    lr=1.5,  # = trainer.recipe.mean_loss_lr(1024): 11.5 per 1024 examples / (1 + 1 / (1 - 0.85))
    momentum=MOMENTUM,
    weight_decay=WD_PER_1024 / LR_PER_1024,  # lr x weight_decay = the reference's decay per step
    label_smoothing=LABEL_SMOOTHING,
    warmup=LR_PEAK_AT,  # the schedule's peak, at 23 % of all steps
)
# cnn: the seed's small CNN (no BatchNorm) with a conventional recipe; expect roughly 75-80 % on CIFAR-10.
CNN_RECIPE = Recipe(
    epochs=10.0, batch_size=256, lr=0.05, momentum=0.9, weight_decay=5.0e-4, label_smoothing=0.1, warmup=0.1
)

MODELS: dict[str, ModelEntry] = {
    "airbench": ModelEntry("trainer.nets:AirbenchNet", AIRBENCH_RECIPE),  # the default (TrainConfig.model)
    "cnn": ModelEntry("trainer.nets:SeedCNN", CNN_RECIPE),
}
