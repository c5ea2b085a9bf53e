"""Mermaid line charts people can read on GitHub: one palette, one theme, every series named.

    from trainer.chart import mermaid_chart, series_legend
    block = mermaid_chart(["1", "2"], [("test accuracy", [50.0, 61.5])], title="cifar10 v1", y_title="accuracy (%)")

The one home of the chart's look, used by the run report (trainer.report), `runs compare`
(trainer.compare) and the pull-request preview comment (scripts/ci/preview.py, which runs on the
Actions runner's own python3 before anything is installed). So this module imports the standard
library only: tests/test_ci_imports.py holds it to that. tests/test_report_browser.py renders
each of those charts in Chromium and checks what a reader sees.
"""

from __future__ import annotations

import json
from collections.abc import Sequence


def _mermaid_text(text: str) -> str:
    """A Mermaid string literal's content: no double quotes, no line breaks (the grammar allows neither)."""
    return " ".join(text.replace('"', "'").split())


def _number(value: float) -> str:
    return f"{value:.2f}"


# Explicit colours: Mermaid's default palette starts near-white (#ECECFF), invisible on GitHub's light
# background. Each is >= 3:1 against CHART_BACKGROUND, the WCAG 2.1 minimum for graphical objects
# (SC 1.4.11, w3.org/TR/WCAG21/#non-text-contrast); the background is set too, so GitHub's dark mode
# shows the same white chart instead of these lines on near-black. tests/test_report_browser.py checks
# the rendered SVG in Chromium.
CHART_BACKGROUND = "#FFFFFF"
CHART_TEXT = "#24292F"  # GitHub's light-mode text colour: titles, tick labels, legend
SERIES_COLOURS = ("#0072B2", "#D55E00", "#6E6E6E", "#009E73", "#CC79A7", "#8A6D00")  # Okabe-Ito, darkened


def mermaid_init(series: int) -> str:
    """The `%%{init}%%` directive: white background, dark text, our palette, the legend on."""
    text = {
        f"{axis}{part}": CHART_TEXT
        for axis in ("xAxis", "yAxis")
        for part in ("LabelColor", "TitleColor", "TickColor", "LineColor")
    }
    palette = ", ".join(SERIES_COLOURS[i % len(SERIES_COLOURS)] for i in range(series))
    theme = {"backgroundColor": CHART_BACKGROUND, "titleColor": CHART_TEXT, **text, "plotColorPalette": palette}
    init = {"theme": "base", "xyChart": {"showLegend": True}, "themeVariables": {"xyChart": theme}}
    return "%%{init: " + json.dumps(init) + "}%%"


def mermaid_chart(
    bands: Sequence[str], series: Sequence[tuple[str, Sequence[float]]], *, title: str, y_title: str
) -> str:
    """A fenced `xychart-beta` block of named lines over quoted bands, y 0 --> 100.

    Every line is named (`line "test accuracy" [...]`): Mermaid draws the names as a legend (11.x),
    and the colours are ours (see SERIES_COLOURS).
    """
    lines = [
        "```mermaid",
        mermaid_init(len(series)),
        "xychart-beta",
        f'    title "{_mermaid_text(title)}"',
        f'    x-axis "epoch" [{", ".join(f"{chr(34)}{_mermaid_text(b)}{chr(34)}" for b in bands)}]',
        f'    y-axis "{_mermaid_text(y_title)}" 0 --> 100',
        *(f'    line "{_mermaid_text(name)}" [{", ".join(_number(v) for v in values)}]' for name, values in series),
        "```",
    ]
    return "\n".join(lines)


def series_legend(names: Sequence[str]) -> str:
    """The chart's series in words with their colours, for readers whose renderer draws no legend."""
    return ", ".join(
        f"{name} ({_colour_name(SERIES_COLOURS[i % len(SERIES_COLOURS)])})" for i, name in enumerate(names)
    )


COLOUR_NAMES = {"#0072B2": "blue", "#D55E00": "orange", "#6E6E6E": "grey", "#009E73": "green",
                "#CC79A7": "pink", "#8A6D00": "olive"}  # fmt: skip


def _colour_name(colour: str) -> str:
    return COLOUR_NAMES.get(colour, colour)
