"""`python -m trainer train --help`: every setting, grouped and described, from TrainConfig itself.

The description of a setting is its field's `metadata["help"]` when the field has one, else the
comment written beside the field in trainer/config.py (continuation lines included), so the help
and the code cannot drift apart; the groups are the numbered section comments there ("# 1. what to
train"). argparse lays it out; parsing the values stays with `load_config`, which also merges the
TRAINER_* environment.
"""

from __future__ import annotations

import argparse
import dataclasses
import inspect
import io
import re
import tokenize

from trainer.cli_common import COMMAND
from trainer.config import ENV_PREFIX, RECIPES, TrainConfig

_SECTION = re.compile(r"#\s*\d+\.\s*(?P<title>.+)")
_FIELD = re.compile(r"(?P<name>[a-z_][a-z0-9_]*)\s*:")


def field_comments() -> tuple[dict[str, str], dict[str, str]]:
    """({field: its comment text}, {field: the section title above it}) read from TrainConfig's source.

    A field's comment is the one beside it (with its continuation lines) or, when there is none, the
    comment lines directly above it (a field whose declaration fills the line carries its comment there).
    """
    source = inspect.getsource(TrainConfig)
    comments: dict[str, str] = {}
    sections: dict[str, str] = {}
    above: dict[int, str] = {}  # row -> a comment alone on its line that is no section title or continuation
    section_rows: list[tuple[int, str]] = []
    section, last_field, last_line = "", None, -1
    lines = source.splitlines()
    for token in tokenize.generate_tokens(io.StringIO(source).readline):
        if token.type != tokenize.COMMENT:
            continue
        row = token.start[0]
        text = token.string.lstrip("#").strip()
        code = lines[row - 1][: token.start[1]].strip()
        if not code:
            if match := _SECTION.fullmatch(token.string.strip()):
                section, last_field = match["title"], None
                section_rows.append((row, section))
            elif last_field is not None and row == last_line + 1:  # a continuation of the comment above
                comments[last_field] += " " + text
                last_line = row
            else:
                above[row] = text
            continue
        if match := _FIELD.match(code):
            last_field, last_line = match["name"], row
            comments[last_field] = text
            sections[last_field] = section
    names = {f.name for f in dataclasses.fields(TrainConfig)}
    for row, line in enumerate(lines, start=1):
        match = _FIELD.match(line.strip())
        if not match or match["name"] not in names or match["name"] in comments:
            continue
        first = row
        while first - 1 in above:
            first -= 1
        if first < row:
            comments[match["name"]] = " ".join(above[r] for r in range(first, row))
            sections[match["name"]] = next((t for r, t in reversed(section_rows) if r < row), "")
    return comments, sections


def _default(field: dataclasses.Field[object]) -> str:
    if field.default is None:
        return "the model's recipe (" + ", ".join(f"{m} {r[field.name]}" for m, r in RECIPES.items()) + ")"
    return repr(field.default)


EPILOG = """\
exit codes (docs/contracts.md):
  0   succeeded (published; the gate's decision is in the run record and runs/<run_id>/report.md)
  1   failed (the reason is in the run record)
  2   invalid configuration (the setting and what is wrong, in one line)
  73  another trainer holds this run's lease (a duplicate start; nothing was changed)
  75  interrupted by SIGTERM/SIGINT (checkpoint saved: rerun the same command to resume)

other environment variables:
  MLFLOW_TRACKING_URI     log the run to this MLflow server while it trains (off when unset;
                          pip install 'pushtrain-trainer[mlflow]')
  MLFLOW_EXPERIMENT_NAME  the MLflow experiment (default pushtrain-<model_name>)
  PUSHTRAIN_LOG_LEVEL     DEBUG, INFO (default), WARNING or ERROR
"""


def parser() -> argparse.ArgumentParser:
    """The `train` help as an argparse parser (used for --help only)."""
    comments, sections = field_comments()
    help_parser = argparse.ArgumentParser(
        prog=f"{COMMAND} train",
        description="Train, publish and gate one model. Every setting is also the environment variable "
        f"{ENV_PREFIX}<SETTING>; a flag wins over the variable, which wins over the default.",
        epilog=EPILOG,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    groups: dict[str, argparse._ArgumentGroup] = {}
    for field in dataclasses.fields(TrainConfig):
        title = sections.get(field.name) or "settings"
        group = groups.setdefault(title, help_parser.add_argument_group(title))
        text = str(field.metadata.get("help") or comments.get(field.name) or "").strip()
        group.add_argument(
            f"--{field.name.replace('_', '-')}",
            metavar=field.name.upper(),
            help=f"{text} [{ENV_PREFIX}{field.name.upper()}; default {_default(field)}]".replace("%", "%%"),
        )
    return help_parser


def format_help() -> str:
    return parser().format_help()
