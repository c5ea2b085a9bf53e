"""Write the trigger's parameter schema from the trainer's configuration (one source for both).

    python scripts/gen_param_schema.py           # rewrite lambda/src/trigger/params.schema.json
    python scripts/gen_param_schema.py --check   # exit 1 when the committed file is stale

The schema lists what a retrain request may set (`TrainConfig` fields whose metadata has `request`), with
the JSON type and the interval (or the choices) the trainer's `validate` enforces. The trigger reads the
JSON and never imports the trainer (it must stay torch-free and its zip small); scripts/ci/retrain.py
reads it too.
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path

from trainer.config import request_schema

SCHEMA_PATH = Path(__file__).resolve().parents[1] / "lambda" / "src" / "trigger" / "params.schema.json"


def render() -> str:
    return json.dumps(request_schema(), indent=2, sort_keys=True) + "\n"


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--check", action="store_true", help="fail when the committed schema is stale")
    args = parser.parse_args(argv)
    wanted = render()
    if args.check:
        current = SCHEMA_PATH.read_text() if SCHEMA_PATH.is_file() else ""
        if current != wanted:
            print(f"{SCHEMA_PATH} is stale: run python scripts/gen_param_schema.py", file=sys.stderr)
            return 1
        return 0
    SCHEMA_PATH.write_text(wanted)
    return 0


if __name__ == "__main__":
    sys.exit(main())
