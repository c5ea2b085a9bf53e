"""The charts as GitHub shows them: report.md and the preview comment through marked and mermaid in Chromium.

GIVEN the golden report (trainer/tests/golden/report.md, exactly what render_report writes) and the
pull-request preview comment (ci.preview.render; both draw with trainer.chart), WHEN Chromium
renders them with the pinned marked and mermaid (tests/browser/package-lock.json), THEN the SVG has
every series of the Mermaid block, named in a legend the reader sees, each colour at least 3:1
against the chart's background (WCAG 2.1 SC 1.4.11, non-text contrast), text at least 4.5:1 (SC
1.4.3), and the axis titles. The same check fails Mermaid's default palette (the first line #ECECFF,
near-white), so it can fail. `make test` installs chromium and runs `npm ci` first; on CI (CI=true)
a missing piece fails the test, never skips it.
"""

from __future__ import annotations

import os
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from browser_render import missing, rendered_svgs, strip_ns
from ci import preview
from mermaid_grammar import mermaid_block

REPO = Path(__file__).resolve().parents[1]
GOLDEN = REPO / "trainer" / "tests" / "golden" / "report.md"
# The chart the report drew before it set a palette: Mermaid's defaults, unnamed series.
DEFAULT_PALETTE_CHART = """```mermaid
xychart-beta
    title "before: the default palette"
    x-axis "epoch" ["1", "2"]
    y-axis "accuracy (%)" 0 --> 100
    line [86.00, 99.60]
    line [50.71, 90.98]
```"""
PREVIEW_RESULTS = [
    {"ok": True, "accuracy": acc, "loss": 1 - acc, "wall_seconds": 60.0, "images_per_s": 400.0,
     "test_accuracy_by_epoch": [acc / 2, acc * 0.9, acc], "parameters": 1234}
    for acc in (0.62, 0.58)
]  # fmt: skip
# Each chart people see on GitHub: its Markdown, and the series its Mermaid block names, in order.
CHARTS = {
    "report": GOLDEN.read_text(),
    "preview": preview.render(*PREVIEW_RESULTS, None, pr_sha="a" * 40, base_sha="b" * 40),
}
MIN_GRAPHIC_CONTRAST = 3.0  # WCAG 2.1 SC 1.4.11
MIN_TEXT_CONTRAST = 4.5  # WCAG 2.1 SC 1.4.3

pytestmark = pytest.mark.slow


def relative_luminance(colour: str) -> float:
    """WCAG 2.1's relative luminance of #RRGGBB (w3.org/TR/WCAG21/#dfn-relative-luminance)."""
    colour = {"white": "#FFFFFF", "black": "#000000"}.get(colour.strip().lower(), colour.strip())
    match = re.fullmatch(r"#([0-9a-fA-F]{6})", colour)
    assert match, f"not a #RRGGBB colour: {colour!r}"
    channels = [int(match[1][i : i + 2], 16) / 255 for i in (0, 2, 4)]
    r, g, b = (c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4 for c in channels)
    return 0.2126 * r + 0.7152 * g + 0.0722 * b


def contrast(a: str, b: str) -> float:
    light, dark = sorted((relative_luminance(a), relative_luminance(b)), reverse=True)
    return (light + 0.05) / (dark + 0.05)


def groups(svg: ET.Element, css_class: str) -> list[ET.Element]:
    return [e for e in svg.iter() if strip_ns(e.tag) == "g" and css_class in (e.get("class") or "").split()]


def texts(element: ET.Element) -> list[ET.Element]:
    return [e for e in element.iter() if strip_ns(e.tag) == "text"]


def chart_problems(svg: ET.Element, names: list[str]) -> list[str]:
    """Why a reader could not read this xychart SVG: missing series, legend, axis titles, or low contrast."""
    problems = []
    (background,) = [e.get("fill") or "" for e in svg.iter() if "background" in (e.get("class") or "").split()]
    plots = [g for g in svg.iter() if re.fullmatch(r"line-plot-\d+", g.get("class") or "")]
    if len(plots) != len(names):
        problems.append(f"{len(plots)} lines drawn for {len(names)} series")
    strokes = [next(p.get("stroke") for p in plot.iter() if strip_ns(p.tag) == "path") or "" for plot in plots]
    for name, stroke in zip(names, strokes, strict=False):
        if contrast(stroke, background) < MIN_GRAPHIC_CONTRAST:
            problems.append(f"{name}: {stroke} on {background} is {contrast(stroke, background):.2f}:1")
    if len(set(strokes)) != len(strokes):
        problems.append(f"series share a colour: {strokes}")
    legend = [t.text for g in groups(svg, "legend") for t in texts(g)]
    if legend != names:
        problems.append(f"legend {legend}, want {names}")
    axis_titles = [[t.text for g in groups(axis, "title") for t in texts(g)] for axis in
                   (*groups(svg, "bottom-axis"), *groups(svg, "left-axis"))]  # fmt: skip
    if axis_titles != [["epoch"], ["accuracy (%)"]]:
        problems.append(f"axis titles {axis_titles}")
    for text in texts(svg):
        fill = text.get("fill") or ""
        if re.fullmatch(r"#[0-9a-fA-F]{6}", fill) is None or contrast(fill, background) < MIN_TEXT_CONTRAST:
            problems.append(f"text {text.text!r} in {fill!r} on {background}")
    return problems


@pytest.fixture(scope="module")
def svgs() -> list[ET.Element]:
    needs = missing()
    if needs and os.environ.get("CI", "").lower() == "true":
        pytest.fail(f"CI must render the report in a browser; missing: {', '.join(needs)} (make test installs them)")
    if needs:
        pytest.skip(f"missing {', '.join(needs)}: `make test` installs them")
    # one Chromium start for every chart: each of CHARTS, then the default-palette chart the report replaced
    return rendered_svgs("\n\n".join([*CHARTS.values(), DEFAULT_PALETTE_CHART]) + "\n")


@pytest.mark.parametrize(
    ("chart", "expected"),
    [("report", ["test accuracy", "train accuracy", "gate floor"]), ("preview", ["this PR", "base"])],
)
def test_each_chart_names_every_series_in_colours_a_reader_can_see(
    svgs: list[ET.Element], chart: str, expected: list[str]
) -> None:
    names = re.findall(r'^\s*line "([^"]*)" \[', mermaid_block(CHARTS[chart]), flags=re.MULTILINE)
    assert names == expected
    svg = svgs[list(CHARTS).index(chart)]
    assert svg.get("aria-roledescription") == "xychart"
    assert chart_problems(svg, names) == []


def test_the_check_fails_mermaids_default_palette(svgs: list[ET.Element]) -> None:
    assert len(svgs) == len(CHARTS) + 1  # one SVG per chart: none merged, none lost
    problems = chart_problems(svgs[-1], ["test accuracy", "train accuracy"])
    assert any("test accuracy: #ECECFF" in p for p in problems), problems
    assert any(p.startswith("legend") for p in problems), problems
