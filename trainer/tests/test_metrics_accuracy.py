"""Metrics are per sample; the seed's argmax over the batch axis would fail these."""

from __future__ import annotations

from fractions import Fraction

import pytest
import torch
from trainer.counts import Counts
from trainer.metrics import accuracy, confusion_matrix, evaluate_logits


def test_accuracy_compares_each_samples_argmax_over_classes_with_its_label() -> None:
    # GIVEN 3 samples x 3 classes: samples 0 and 1 predict class 1, sample 2 predicts class 2; all correct
    logits = torch.tensor([[0.0, 9.0, 0.0], [0.0, 5.0, 0.0], [0.0, 0.0, 9.0]])
    labels = torch.tensor([1, 1, 2])
    # WHEN scored, THEN every sample is right
    assert accuracy(logits, labels) == pytest.approx(1.0)
    # AND the seed's argmax over the batch axis (dim 0: which sample scores highest per class) gives
    # [0, 0, 2] and would report 1/3
    seed_bug = (logits.argmax(dim=0) == labels).float().mean().item()
    assert seed_bug == pytest.approx(1 / 3)


def test_accuracy_of_a_batch_larger_than_the_class_count() -> None:
    # the seed's bug cannot even compare shapes here: argmax over dim 0 gives C values for N labels
    logits = torch.zeros(5, 10)
    labels = torch.tensor([3, 3, 7, 1, 0])
    logits[torch.arange(5), torch.tensor([3, 3, 7, 2, 2])] = 1.0
    assert accuracy(logits, labels) == pytest.approx(3 / 5)
    with pytest.raises(ValueError, match="5 predictions for 4 labels"):
        accuracy(logits, labels[:4])


def test_confusion_matrix_rows_are_true_classes() -> None:
    preds = torch.tensor([0, 1, 1, 2, 2, 2])
    labels = torch.tensor([0, 1, 2, 2, 2, 0])
    assert confusion_matrix(preds, labels, 3).tolist() == [[1, 0, 1], [0, 1, 0], [0, 1, 2]]


def test_evaluate_logits_reports_loss_accuracy_and_per_class_accuracy() -> None:
    logits = torch.tensor([[2.0, 0.0], [0.0, 2.0], [2.0, 0.0], [2.0, 0.0]])
    labels = torch.tensor([0, 1, 1, 1])
    result = evaluate_logits(logits, labels, ("cat", "dog"))
    assert result.accuracy == pytest.approx(0.5)
    assert result.per_class_accuracy == {"cat": pytest.approx(1.0), "dog": pytest.approx(1 / 3)}
    assert result.confusion == [[1, 0], [2, 1]]
    assert result.loss == pytest.approx(torch.nn.functional.cross_entropy(logits, labels).item())
    assert result.n == 4


@pytest.mark.parametrize(("correct", "total"), [(90, 100), (450, 500), (9000, 10000)])
def test_evaluation_counts_correct_samples_exactly_where_a_float32_mean_falls_below_nine_tenths(
    correct: int, total: int
) -> None:
    # GIVEN logits right on exactly 9 of every 10 samples
    labels = torch.zeros(total, dtype=torch.long)
    logits = torch.zeros(total, 2)
    logits[:correct, 0] = 1.0
    logits[correct:, 1] = 1.0
    # WHEN evaluated
    result = evaluate_logits(logits, labels, ("a", "b"))
    # THEN the counts are exact and their fraction is 9/10, which the float32 mean is not
    assert (result.correct, result.total) == (correct, total)
    assert result.counts.fraction == Fraction(9, 10)
    assert result.accuracy == 0.9
    assert (logits.argmax(dim=1) == labels).float().mean().item() < 0.9  # what the gate used to compare


def test_counts_refuse_impossible_values() -> None:
    for correct, total in ((11, 10), (-1, 10), (0, 0), (True, 1), (1.0, 2)):
        with pytest.raises(ValueError, match=r"correct|total|counts"):
            Counts(correct, total)  # type: ignore[arg-type]
