"""Render Markdown the way GitHub shows a comment (marked + mermaid) in headless Debian `chromium`.

The pinned npm packages are in tests/browser/package.json + package-lock.json, installed by
`make test` (`npm ci`) into tests/browser/node_modules; chromium is the Debian package (`make test`
installs it with apt when /usr/bin/chromium is missing). `rendered_svgs(markdown)` returns each
Mermaid chart's SVG as an element tree.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import subprocess
import tempfile
import xml.etree.ElementTree as ET
from pathlib import Path

HERE = Path(__file__).resolve().parent / "browser"
NODE_MODULES = HERE / "node_modules"
SCRIPTS = (NODE_MODULES / "marked" / "lib" / "marked.umd.js", NODE_MODULES / "mermaid" / "dist" / "mermaid.min.js")
CHROMIUM = shutil.which("chromium") or "/usr/bin/chromium"
# The flags of a locked-down one-shot render: no sandbox (CI runs as root), no GPU, nothing phoning home.
FLAGS = (
    "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync",
)  # fmt: skip
VIRTUAL_TIME_MS = 30_000  # chromium runs the page's timers and promises within this budget, then dumps the DOM
TIMEOUT_S = 180  # a bound on a busy 2-core machine, not an expectation (about 5 s here)
SVG_NS = "{http://www.w3.org/2000/svg}"


class RenderError(Exception):
    """Chromium did not render the page, or the page reported an error."""


def missing() -> list[str]:
    """What the browser test needs and this machine lacks (empty when it can run)."""
    needs = [] if Path(CHROMIUM).is_file() else [f"chromium ({CHROMIUM}; apt-get install chromium)"]
    needs += [f"{p.relative_to(HERE)} (npm ci in tests/browser)" for p in SCRIPTS if not p.is_file()]
    return needs


def page(markdown: str) -> str:
    """The HTML page: the pinned scripts, the Markdown as JSON, tests/browser/render.js to draw it."""
    payload = json.dumps(markdown).replace("</", "<\\/")  # no `</script>` can end the JSON early
    scripts = "".join(f'<script src="{p.as_uri()}"></script>' for p in (*SCRIPTS, HERE / "render.js"))
    return (
        '<!doctype html><html><head><meta charset="utf-8"></head><body><div id="document"></div>'
        f'<script id="markdown" type="application/json">{payload}</script>{scripts}</body></html>'
    )


def render(markdown: str) -> str:
    """The DOM after marked and mermaid ran (chromium --dump-dom)."""
    with tempfile.TemporaryDirectory(prefix="pushtrain-browser-") as tmp:
        html = Path(tmp) / "page.html"
        html.write_text(page(markdown))
        done = subprocess.run(
            [CHROMIUM, *FLAGS, f"--user-data-dir={Path(tmp) / 'profile'}", f"--virtual-time-budget={VIRTUAL_TIME_MS}",
             "--dump-dom", html.as_uri()],
            capture_output=True, text=True, check=False, timeout=TIMEOUT_S, env={**os.environ, "HOME": tmp},
        )  # fmt: skip
    result = re.search(r'<pre id="result">(.*?)</pre>', done.stdout, flags=re.DOTALL)
    if done.returncode != 0 or result is None:
        raise RenderError(f"chromium exited {done.returncode} without a result: {done.stderr[-2000:]}")
    if result.group(1) != "ok":
        raise RenderError(f"the page failed: {result.group(1)}")
    return done.stdout


def rendered_svgs(markdown: str) -> list[ET.Element]:
    """Each Mermaid chart of the rendered Markdown, as an SVG element tree (in document order)."""
    dom = render(markdown)
    svgs = re.findall(r"<svg\b.*?</svg>", dom, flags=re.DOTALL)
    # chromium serialises the inline SVG as XML-compatible markup, except for the HTML-style <br>
    # S314: the SVG is what our pinned mermaid drew from our own report, in a local browser
    return [ET.fromstring(svg.replace("<br>", "<br/>")) for svg in svgs]  # noqa: S314


def strip_ns(tag: str) -> str:
    return tag.removeprefix(SVG_NS)
