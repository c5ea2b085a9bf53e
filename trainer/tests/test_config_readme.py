"""Every setting is documented in trainer/README.md with its environment variable."""

from __future__ import annotations

from dataclasses import fields
from pathlib import Path

from trainer.config import TrainConfig

README = Path(__file__).resolve().parents[1] / "README.md"


def test_every_setting_has_a_row_in_the_readme() -> None:
    text = README.read_text(encoding="utf-8")
    missing = [f.name for f in fields(TrainConfig) if f"| `{f.name}` | `TRAINER_{f.name.upper()}` |" not in text]
    assert missing == []
