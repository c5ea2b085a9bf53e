"""Metrics done per sample: accuracy, loss, per-class accuracy, confusion matrix.

Accuracy compares each sample's predicted class (argmax over the *class* axis, dim 1) with its label.
The seed took the argmax over the batch axis, which scores something else entirely.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass
from typing import Any

import torch

from trainer.counts import Counts


def predictions(logits: torch.Tensor) -> torch.Tensor:
    """The predicted class of each sample: argmax over the class axis of NxC logits."""
    if logits.ndim != 2:
        raise ValueError(f"expected NxC logits, got shape {tuple(logits.shape)}")
    return logits.argmax(dim=1)


def count_correct(logits: torch.Tensor, labels: torch.Tensor) -> Counts:
    """How many samples' predicted class equals their label, out of how many (exact integers)."""
    if len(logits) != len(labels):
        raise ValueError(f"{len(logits)} predictions for {len(labels)} labels")
    return Counts(int((predictions(logits) == labels).sum().item()), len(labels))


def accuracy(logits: torch.Tensor, labels: torch.Tensor) -> float:
    """Fraction of samples whose predicted class equals their label (correct / total of int counts).

    Never `(pred == labels).float().mean()`: float32 makes 9000/10000 0.89999998 (trainer.counts).
    """
    return count_correct(logits, labels).accuracy


def confusion_matrix(preds: torch.Tensor, labels: torch.Tensor, num_classes: int) -> torch.Tensor:
    """CxC counts: row = true class, column = predicted class."""
    flat = labels.long() * num_classes + preds.long()
    return torch.bincount(flat, minlength=num_classes * num_classes).reshape(num_classes, num_classes)


@dataclass(frozen=True)
class EvalResult:
    """Evaluation of a model on a labelled set."""

    loss: float  # mean cross-entropy (no label smoothing)
    correct: int  # samples whose predicted class is their label
    total: int  # samples evaluated
    per_class_accuracy: dict[str, float]  # class name -> recall of that class
    confusion: list[list[int]]  # rows: true class, columns: predicted class

    def __post_init__(self) -> None:
        Counts(self.correct, self.total)  # raises on counts that cannot be

    @property
    def counts(self) -> Counts:
        """The exact accuracy: what the gate decides on."""
        return Counts(self.correct, self.total)

    @property
    def accuracy(self) -> float:
        """correct / total, correctly rounded: for display and charts."""
        return self.counts.accuracy

    @property
    def n(self) -> int:
        return self.total

    def to_dict(self) -> dict[str, Any]:
        return {**asdict(self), "accuracy": self.accuracy}


def evaluate_logits(logits: torch.Tensor, labels: torch.Tensor, classes: Sequence[str]) -> EvalResult:
    """Every metric of `EvalResult` from NxC logits and N labels."""
    logits = logits.float()
    labels = labels.to(logits.device)
    preds = predictions(logits)
    confusion = confusion_matrix(preds, labels, len(classes))
    counts = count_correct(logits, labels)
    per_class_total = confusion.sum(dim=1)
    per_class = {
        name: (confusion[i, i] / per_class_total[i]).item() if per_class_total[i] else float("nan")
        for i, name in enumerate(classes)
    }
    return EvalResult(
        loss=torch.nn.functional.cross_entropy(logits, labels).item(),
        correct=counts.correct,
        total=counts.total,
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
