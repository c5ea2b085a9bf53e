"""Pin the sha256 of every tool binary CI downloads: `make pin-tools` (needs the network).

Reads the versions the repository uses (the terraform action's `terraform-version` and
`tfcmt-version` defaults, ci.yml's `TFLINT_VERSION`), downloads each release's published checksums
file over HTTPS from the project's own release site, takes the line of the linux/amd64 asset the
runners install, and rewrites .github/actions/terraform/tool-checksums.txt with them.

A checksums file fetched at run time would catch corruption, not replacement; the pin in the
repository is what a reviewer approves. So review the diff this writes before committing it, against
the release's *signed* checksums (README, "Pinned tools": `gpg --verify` for HashiCorp's SHA256SUMS,
`cosign verify-blob` for tfcmt's and tflint's), ideally from a second machine.

Usage:
    python scripts/pin_tools.py                     # rewrite the pins for the versions in use
    python scripts/pin_tools.py --url-prefix file:///mirror/   # tests: read releases from a folder
"""

from __future__ import annotations

import argparse
import re
import sys
import urllib.request
from dataclasses import dataclass
from pathlib import Path

import yaml

REPO = Path(__file__).resolve().parent.parent
ACTION = REPO / ".github" / "actions" / "terraform" / "action.yml"
CI = REPO / ".github" / "workflows" / "ci.yml"
PINS = REPO / ".github" / "actions" / "terraform" / "tool-checksums.txt"
_SHA256 = re.compile(r"[0-9a-f]{64}")
_VERSION = re.compile(r"\d+\.\d+\.\d+")


class PinError(Exception):
    """A pin cannot be written; the message names the tool, version and what is missing."""


@dataclass(frozen=True)
class Tool:
    name: str
    version: str

    @property
    def asset(self) -> str:
        return {
            "terraform": f"terraform_{self.version}_linux_amd64.zip",
            "tfcmt": "tfcmt_linux_amd64.tar.gz",
            "tflint": "tflint_linux_amd64.zip",
        }[self.name]

    @property
    def checksums_url(self) -> str:
        v = self.version
        return {
            "terraform": f"https://releases.hashicorp.com/terraform/{v}/terraform_{v}_SHA256SUMS",
            "tfcmt": f"https://github.com/suzuki-shunsuke/tfcmt/releases/download/v{v}/tfcmt_{v}_checksums.txt",
            "tflint": f"https://github.com/terraform-linters/tflint/releases/download/v{v}/checksums.txt",
        }[self.name]

    @property
    def key(self) -> str:
        return f"{self.name}/{self.version}/{self.asset}"


def versions_in_use() -> list[Tool]:
    """The versions the workflows install, from the files that set them."""
    inputs = yaml.safe_load(ACTION.read_text())["inputs"]
    tflint = yaml.safe_load(CI.read_text())["jobs"]["tflint"]["env"]["TFLINT_VERSION"]
    tools = [
        Tool("terraform", str(inputs["terraform-version"]["default"])),
        Tool("tfcmt", str(inputs["tfcmt-version"]["default"])),
        Tool("tflint", str(tflint)),
    ]
    for tool in tools:
        if not _VERSION.fullmatch(tool.version):
            raise PinError(f"{tool.name}: version {tool.version!r} is not X.Y.Z")
    return tools


def fetch(url: str, url_prefix: str | None) -> str:
    if url_prefix:
        url = url_prefix + url.removeprefix("https://")
    if not url.startswith(("https://", "file://")):
        raise PinError(f"refusing to fetch {url}: only https:// (or file:// in tests)")
    with urllib.request.urlopen(url, timeout=60) as response:  # noqa: S310 - scheme checked just above
        return response.read().decode()


def pinned_line(tool: Tool, checksums: str) -> str:
    """`<sha256>  <tool>/<version>/<asset>` from the release's checksums file."""
    for line in checksums.splitlines():
        parts = line.split()
        if len(parts) == 2 and parts[1].lstrip("*") == tool.asset and _SHA256.fullmatch(parts[0]):
            return f"{parts[0]}  {tool.key}"
    raise PinError(f"{tool.name} {tool.version}: {tool.checksums_url} lists no sha256 for {tool.asset}")


def write_pins(lines: list[str], path: Path = PINS) -> None:
    header = [line for line in path.read_text().splitlines() if line.startswith("#")] if path.exists() else []
    path.write_text("\n".join([*header, *lines]) + "\n")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--url-prefix", help="replace https:// with this prefix (tests: file:///folder/)")
    parser.add_argument("--output", type=Path, default=PINS, help="the checksums file to rewrite")
    args = parser.parse_args(argv)
    try:
        lines = [pinned_line(tool, fetch(tool.checksums_url, args.url_prefix)) for tool in versions_in_use()]
    except (PinError, OSError) as error:
        print(f"pin-tools: {error}", file=sys.stderr)
        return 1
    write_pins(lines, args.output)
    for line in lines:
        print(line)
    print(
        f"wrote {args.output.relative_to(REPO) if args.output.is_relative_to(REPO) else args.output}: review the diff "
        "against the signed checksums (README, Pinned tools) before committing it"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
