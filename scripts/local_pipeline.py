"""The local pipeline (`make demo`): the whole chain offline, AWS emulated with moto.

A thin entry point; the logic is the tested package `pushtrain_local` next to this file.
See `python scripts/local_pipeline.py --help` and docs/demo.md.
"""

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from pushtrain_local.cli import main

if __name__ == "__main__":
    sys.exit(main())
