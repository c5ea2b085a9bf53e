"""Mermaid `xychart-beta` blocks checked offline against the grammar's rules (mermaid's xychart.jison).

Used by the report and preview tests; GitHub renders these blocks, so one that does not parse shows
as an error box in the comment.
"""

from __future__ import annotations

import json
import re

_NUMBER = r"[0-9]+(?:\.[0-9]+)?"
_STRING = r'"[^"\n]*"'
_NUMBERS = rf"\[\s*{_NUMBER}(?:\s*,\s*{_NUMBER})*\s*\]"
_BAND = rf"\[\s*{_STRING}(?:\s*,\s*{_STRING})*\s*\]"


def _is_init_directive(line: str) -> bool:
    """`%%{init: {...}}%%` holding a JSON object (what the report writes: palette, legend, colours)."""
    init = re.fullmatch(r"%%\{init: (?P<json>\{.*\})\}%%", line)
    try:
        return init is not None and isinstance(json.loads(init["json"]), dict)
    except ValueError:
        return False


def _statements(block: str) -> tuple[list[str], str | None]:
    """The statements after the header, or why the fence, the directive or the header is wrong."""
    lines = block.split("\n")
    if lines[0] != "```mermaid" or lines[-1] != "```":
        return [], "not a fenced ```mermaid block"
    body = [line.strip() for line in lines[1:-1] if line.strip()]
    if body and body[0].startswith("%%{"):
        if not _is_init_directive(body[0]):
            return [], f"not an init directive with a JSON object: {body[0]!r}"
        body = body[1:]
    if not body or body[0] != "xychart-beta":
        return [], f"header must be xychart-beta, got {body[:1]}"
    return body, None


def mermaid_xychart_errors(block: str) -> list[str]:
    """Why a fenced xychart-beta block would not parse or would draw nonsense ([] when it is fine).

    The rules: an optional `%%{init: <JSON object>}%%` directive, the header `xychart-beta`;
    statements one per line: `title "<text>"`, `x-axis "<title>" [<"band">, ...]`,
    `y-axis "<title>" <min> --> <max>`, `line ["<name>"] [<numbers>]`;
    strings hold no double quote; every series has one value per band and lies inside the y range.
    """
    body, problem = _statements(block)
    if problem:
        return [problem]
    errors, bands, y_range, series = [], None, None, []
    for line in body[1:]:
        if re.fullmatch(rf"title {_STRING}", line):
            continue
        if m := re.fullmatch(rf"x-axis {_STRING} (?P<band>{_BAND})", line):
            bands = re.findall(_STRING, m["band"])
        elif m := re.fullmatch(rf"y-axis {_STRING} (?P<lo>{_NUMBER}) --> (?P<hi>{_NUMBER})", line):
            y_range = (float(m["lo"]), float(m["hi"]))
        elif m := re.fullmatch(rf"(?:line|bar)(?: {_STRING})? (?P<values>{_NUMBERS})", line):
            series.append([float(v) for v in re.findall(_NUMBER, m["values"])])
        else:
            errors.append(f"not a statement of the grammar: {line!r}")
    if bands is None or y_range is None or not series:
        errors.append("needs an x-axis band, a y-axis range and at least one series")
        return errors
    for values in series:
        if len(values) != len(bands):
            errors.append(f"series of {len(values)} values for {len(bands)} x categories")
        if any(not y_range[0] <= v <= y_range[1] for v in values):
            errors.append(f"series {values} leaves the y range {y_range}")
    return errors


def mermaid_block(markdown: str) -> str:
    match = re.search(r"```mermaid\n.*?\n```", markdown, flags=re.DOTALL)
    assert match, "no mermaid block in the report"
    return match.group(0)
