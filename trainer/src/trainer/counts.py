"""Exact accuracy: `correct` and `total` as integers, and gate thresholds as exact decimal fractions.

An accuracy is a count, never a float: `(pred == labels).float().mean()` makes 90/100, 450/500 and
9000/10000 all 0.89999998 (float32), below a 0.9 floor. So an evaluation records how many samples it
got right out of how many (`Counts`), every stored document carries both integers (metrics.json,
the manifest's `metrics`, the run record's `gate`, champion.json), and comparisons use
`fractions.Fraction`. The floor and margin are decimal strings ("0.9", "0.005") parsed digit by
digit into fractions (`parse_decimal`), never through a binary float.

A float `accuracy` is still written beside the counts for people and charts: it is `correct / total`
correctly rounded, and nothing decides on it. This module imports no torch: the gate, the registry
commands and the report read it.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

# An unsigned decimal as written in a setting: digits, optionally a point and more digits (no exponent,
# no sign, no "nan"/"inf": the only values a floor or margin in [0, 1] needs).
_DECIMAL = re.compile(r"[0-9]+(?:\.[0-9]+)?|\.[0-9]+")


def parse_decimal(text: str, setting: str) -> Fraction:
    """The exact value of a decimal string ("0.9" is 9/10 exactly); ValueError naming `setting` otherwise."""
    if not isinstance(text, str) or not _DECIMAL.fullmatch(text):
        raise ValueError(f"{setting} must be a decimal number like 0.9 (digits and one point), got {text!r}")
    return Fraction(text)


def decimal_text(value: str | float | int, setting: str) -> str:
    """A threshold as its decimal string: a string is kept as written (after checking it parses).

    A Python caller or a configuration saved before thresholds were strings may pass a number: an int
    is its digits, a float its `repr` (the shortest decimal that reads back as the same float, so 0.9
    gives "0.9"). Settings from the environment or the command line arrive as strings and never touch a
    float.
    """
    if isinstance(value, bool):
        raise ValueError(f"{setting} must be a decimal number, got {value!r}")  # noqa: TRY004 -- a bad setting, as the rest
    if isinstance(value, int):
        text = str(value)
    elif isinstance(value, float):
        text = repr(value)
        if "e" in text or "n" in text:  # 1e-05, nan, inf: not a plain decimal
            raise ValueError(f"{setting} must be a finite decimal number like 0.9, got {value!r}")
    else:
        text = str(value).strip()
    parse_decimal(text, setting)
    return text


def percent(value: Fraction) -> str:
    """A fraction as a percentage with two decimals, for people (decisions use the fraction itself)."""
    return f"{float(100 * value):.2f} %"


@dataclass(frozen=True)
class Counts:
    """How many of `total` evaluated samples were classified correctly."""

    correct: int
    total: int

    def __post_init__(self) -> None:
        for name in ("correct", "total"):
            value = getattr(self, name)
            if type(value) is not int:  # bool is an int subclass; a float count is a damaged document
                raise ValueError(f"{name} must be an integer count, got {value!r}")
        if self.total < 1 or not 0 <= self.correct <= self.total:
            raise ValueError(f"counts need 0 <= correct <= total and total >= 1, got {self.correct}/{self.total}")

    @property
    def fraction(self) -> Fraction:
        """The exact accuracy."""
        return Fraction(self.correct, self.total)

    @property
    def accuracy(self) -> float:
        """correct / total, correctly rounded (int / int): for display and charts, never for decisions."""
        return self.correct / self.total

    def to_dict(self) -> dict[str, int]:
        return {"correct": self.correct, "total": self.total}

    @classmethod
    def from_mapping(cls, values: Mapping[str, Any], where: str) -> Counts:
        """The counts in a document (`{"correct": 9000, "total": 10000, …}`); ValueError naming `where`."""
        if not isinstance(values, Mapping):
            raise ValueError(f"{where} holds no accuracy counts (a {type(values).__name__}, not an object)")  # noqa: TRY004 -- damaged data, reported like the rest
        if "correct" not in values or "total" not in values:
            raise ValueError(f"{where} holds no accuracy counts (want integer 'correct' and 'total')")
        try:
            return cls(values["correct"], values["total"])
        except ValueError as exc:
            raise ValueError(f"{where}: {exc}") from exc

    def __str__(self) -> str:
        return f"{self.correct}/{self.total} ({percent(self.fraction)})"
