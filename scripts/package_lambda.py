"""Build the trigger's deployment zip, deterministically: the same sources give the same bytes.

    python scripts/package_lambda.py                     # -> build/trigger.zip, prints its sha256
    python scripts/package_lambda.py --output dist/x.zip

The zip holds the `trigger` package alone (boto3 comes with the Lambda runtime): its `.py` files and the
parameter schema it reads (`params.schema.json`, generated from the trainer's configuration), in sorted
order, each with a fixed timestamp (1980-01-01, the zip epoch) and mode 0644, so neither
checkout times nor umasks reach the bytes. Terraform can then compare hashes and redeploy only on a
real change. Standard library only: it runs before any virtualenv exists.
"""

from __future__ import annotations

import argparse
import hashlib
import sys
import zipfile
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
SOURCE = REPO / "lambda" / "src" / "trigger"
OUTPUT = REPO / "build" / "trigger.zip"
ZIP_EPOCH = (1980, 1, 1, 0, 0, 0)  # the earliest time a zip entry can carry
FILE_MODE = 0o100644  # regular file, rw-r--r--
DATA = ("params.schema.json",)  # read by trigger.events at import


def sources(package: Path) -> list[Path]:
    """The package's Python files and its data files (DATA), sorted by their path inside the zip (no caches)."""
    files = [p for p in package.rglob("*.py") if "__pycache__" not in p.parts]
    files += [package / name for name in DATA if (package / name).is_file()]
    if not (package / "__init__.py").is_file():
        raise SystemExit(f"{package} is not a Python package (no __init__.py)")
    return sorted(files, key=lambda p: p.relative_to(package.parent).as_posix())


def build(package: Path, output: Path) -> str:
    """Write the zip and return its sha256 (hex)."""
    output.parent.mkdir(parents=True, exist_ok=True)
    with zipfile.ZipFile(output, "w") as archive:
        for path in sources(package):
            info = zipfile.ZipInfo(path.relative_to(package.parent).as_posix(), date_time=ZIP_EPOCH)
            info.create_system = 3  # unix, so the mode below is honoured
            info.external_attr = FILE_MODE << 16
            info.compress_type = zipfile.ZIP_DEFLATED
            archive.writestr(info, path.read_bytes(), compresslevel=9)
    return hashlib.sha256(output.read_bytes()).hexdigest()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--source", type=Path, default=SOURCE, help=f"package folder (default {SOURCE})")
    parser.add_argument("--output", type=Path, default=OUTPUT, help=f"zip to write (default {OUTPUT})")
    args = parser.parse_args(argv)
    digest = build(args.source.resolve(), args.output.resolve())
    print(f"{digest}  {args.output}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
