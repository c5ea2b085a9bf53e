"""`make pin-tools` writes the pinned sha256 of each CI tool from its release's checksums file.

GIVEN release folders laid out like the tools' download sites (served over file://), WHEN
scripts/pin_tools.py runs for the versions the repository uses, THEN the checksums file holds one
`<sha256>  <tool>/<version>/<asset>` line per tool, and a release without the asset's line fails.
"""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from pin_tools import Tool, versions_in_use

REPO = Path(__file__).resolve().parent.parent
PIN = REPO / "scripts" / "pin_tools.py"


def publish(root: Path, tool: Tool, digest: str, *, list_asset: bool = True) -> None:
    """Put a checksums file where the tool's release publishes it, under root/<host>/<path>."""
    target = root / tool.checksums_url.removeprefix("https://")
    target.parent.mkdir(parents=True, exist_ok=True)
    lines = [f"{'1' * 64}  some_other_asset_darwin_arm64.zip"]
    if list_asset:
        lines.append(f"{digest}  {tool.asset}")
    target.write_text("\n".join(lines) + "\n")


def pin(root: Path, output: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, str(PIN), "--url-prefix", root.as_uri() + "/", "--output", str(output)],
        capture_output=True,
        text=True,
        check=False,
    )


def test_pins_every_tool_for_the_versions_in_use(tmp_path: Path) -> None:
    # GIVEN each tool's release publishes a checksums file listing its linux/amd64 asset
    tools = versions_in_use()
    assert {t.name for t in tools} == {"terraform", "tfcmt", "tflint"}
    for index, tool in enumerate(tools):
        publish(tmp_path / "web", tool, f"{index}" * 64)
    output = tmp_path / "tool-checksums.txt"
    output.write_text("# header kept\n0000  stale/0.0.1/line\n")
    # WHEN the pins are written
    result = pin(tmp_path / "web", output)
    # THEN one line per tool, in the format install-tool.sh and ci.yml read, the comments kept
    assert result.returncode == 0, result.stderr
    assert output.read_text().splitlines() == ["# header kept"] + [
        f"{index}" * 64 + f"  {tool.key}" for index, tool in enumerate(tools)
    ]


def test_a_release_without_the_asset_fails_and_writes_nothing(tmp_path: Path) -> None:
    # GIVEN tfcmt's checksums file lacks the linux/amd64 tarball
    for tool in versions_in_use():
        publish(tmp_path / "web", tool, "a" * 64, list_asset=tool.name != "tfcmt")
    output = tmp_path / "tool-checksums.txt"
    output.write_text("# untouched\n")
    # WHEN the pins are written  THEN it fails naming the tool and asset, and the file is unchanged
    result = pin(tmp_path / "web", output)
    assert result.returncode == 1
    assert "lists no sha256 for tfcmt_linux_amd64.tar.gz" in result.stderr
    assert output.read_text() == "# untouched\n"


def test_the_repository_pins_match_the_key_format_of_the_versions_in_use() -> None:
    # GIVEN the committed pins  THEN every line is `<64 hex>  <tool>/<version>/<asset>` of a version in use
    # (each tool in use is pinned: tfcmt too, since 4.14.13, README "Pinned tools")
    keys = {tool.key for tool in versions_in_use()}
    lines = (REPO / ".github/actions/terraform/tool-checksums.txt").read_text().splitlines()
    pins = [line.split() for line in lines if not line.startswith("#")]
    assert pins, "no pins"
    for digest, key in pins:
        assert len(digest) == 64
        assert set(digest) <= set("0123456789abcdef")
        assert key in keys, f"{key} is pinned but no workflow installs it"
    assert {key for _, key in pins} == keys, "a tool the workflows install has no pin"
