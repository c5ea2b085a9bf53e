"""Metrics done per sample: accuracy, loss, per-class accuracy, confusion matrix.

Accuracy compares each sample's predicted class (argmax over the *class* axis, dim 1) with its label.
The seed took the argmax over the batch axis, which scores something else entirely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """The predicted class of each sample: argmax over the class axis of NxC logits."""
    if logits.ndim != 2:
        raise ValueError(f"expected NxC logits, got shape {tuple(logits.shape)}")
    return logits.argmax(dim=1)


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples whose predicted class equals their label."""
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} predictions for {len(labels)} labels")
    return (predictions(logits) == labels).float().mean().item()


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """CxC counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class EvalResult:
    """Evaluation of a model on a labelled set."""

    loss: float  # mean cross-entropy (no label smoothing)
    accuracy: float  # fraction correct, per sample
    n: int  # samples evaluated
    per_class_accuracy: dict[str, float]  # class name -> recall of that class
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> EvalResult:
    """Every metric of `EvalResult` from NxC logits and N labels."""
    logits = logits.float()
    labels = labels.to(logits.device)
    preds = predictions(logits)
    confusion = confusion_matrix(preds, labels, len(classes))
    per_class_total = confusion.sum(dim=1)
    per_class = {
        name: (confusion[i, i] / per_class_total[i]).item() if per_class_total[i] else float("nan")
        for i, name in enumerate(classes)
    }
    return EvalResult(
        loss=torch.nn.functional.cross_entropy(logits, labels).item(),
        accuracy=accuracy(logits, labels),
        n=len(labels),
        per_class_accuracy=per_class,
        confusion=confusion.tolist(),
    )


@dataclass(frozen=True)
class EpochResult:
    """One epoch of training and its evaluation: a row of the training history."""

    epoch: int  # 1-based
    train_loss: float  # mean training loss (with label smoothing, on augmented images)
    train_accuracy: float  # per sample, on augmented images
    test_loss: float
    test_accuracy: float
    images_per_s: float  # training images per second of training time (evaluation excluded)
    seconds: float  # training time of the epoch (a resumed epoch counts both attempts)
    eval_seconds: float
    lr: float  # learning rate at the last step of the epoch

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> EpochResult:
        return cls(**values)
