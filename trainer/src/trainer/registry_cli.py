"""`python -m trainer models list|show VERSION|champion`: the published models in a store.

    python -m trainer models list                          # versions of TRAINER_MODEL_NAME (default cifar10)
    python -m trainer models show 20261125T190312Z-push-…  # one version's manifest
    python -m trainer models champion --json               # the champion pointer
    python -m trainer models list --store s3://bucket --model-name cifar10
    python -m trainer models promote VERSION --reason "…"   # by hand; and `models rollback` (see trainer.promote)

The store is `--store`, else `TRAINER_STORE_URI`, else the trainer's default local store; the model
name is `--model-name`, else `TRAINER_MODEL_NAME`, else `cifar10`. Exit codes: 0 found, 1 not found
(no such version, no champion yet), 2 bad usage.
"""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence

from trainer import promote
from trainer.config import TrainConfig
from trainer.registry import champion_record, describe_version, list_model_names, summarize, to_json
from trainer.store import NotFound, StoreError, open_store

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2


def _parser() -> argparse.ArgumentParser:
    defaults = TrainConfig()
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--store",
        default=os.environ.get("TRAINER_STORE_URI", defaults.store_uri),
        help="artifact store: s3://bucket[/prefix] or a local folder (default: $TRAINER_STORE_URI or %(default)s)",
    )
    common.add_argument(
        "--model-name",
        default=os.environ.get("TRAINER_MODEL_NAME", defaults.model_name),
        help="model name under models/ (default: $TRAINER_MODEL_NAME or %(default)s)",
    )
    common.add_argument("--json", action="store_true", help="print JSON instead of a table")
    parser = argparse.ArgumentParser(prog="python -m trainer models", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", parents=[common], help="published versions, oldest first")
    show = commands.add_parser("show", parents=[common], help="one version's manifest")
    show.add_argument("version", help="the version id (see `list`)")
    commands.add_parser("champion", parents=[common], help="the current champion")
    promote.add_parsers(commands, common)
    return parser


def _list(store_uri: str, model_name: str, as_json: bool) -> int:
    store = open_store(store_uri)
    versions = summarize(store, model_name)
    if as_json:
        print(to_json([v.to_dict() for v in versions]))
        return EXIT_OK
    if not versions:
        others = list_model_names(store)
        hint = f" (models in this store: {', '.join(others)})" if others else ""
        print(f"no published versions of {model_name!r} in {store.uri}{hint}")
        return EXIT_OK
    print(f"{'version':<48} {'accuracy':>9} {'model':<9} {'epochs':>6}  champion")
    for v in versions:
        print(f"{v.version:<48} {100 * v.accuracy:>8.2f}% {v.model:<9} {v.epochs:>6}  {'*' if v.champion else ''}")
    return EXIT_OK


def _show(store_uri: str, model_name: str, version: str, as_json: bool) -> int:
    store = open_store(store_uri)
    try:
        described = describe_version(store, model_name, version)
    except NotFound:
        print(f"no published version {version!r} of {model_name!r} in {store.uri}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if as_json:
        print(to_json(described))
        return EXIT_OK
    metrics, config = described["metrics"], described["config"]
    rows = [
        ("version", described["version"]),
        ("location", described["uri"]),
        ("champion", "yes" if described["champion"] else "no"),
        ("accuracy", f"{100 * metrics['accuracy']:.2f} %"),
        ("loss", f"{metrics['loss']:.4f}"),
        ("model", f"{config['model']} ({described.get('parameters', '?')} parameters)"),
        (
            "recipe",
            f"{config['epochs']} epochs, batch {config['batch_size']}, lr {config['lr']}, seed {config['seed']}",
        ),
        ("run", f"{described['run_id']} (attempt {described.get('attempt')})"),
        ("image", described.get("image_digest") or "local"),
        ("git sha", described.get("git_sha") or "unknown"),
        ("dataset", described["dataset"]["checksum"]),
        ("wall time", f"{described['wall_seconds']:.1f} s"),
        ("throughput", f"{described['throughput']['images_per_s']:.0f} images/s"),
        ("est. cost", f"${described['estimated_cost']['usd']:.4f}"),
        ("created", described["created_at"]),
    ]
    for name, value in rows:
        print(f"{name:<11} {value}")
    return EXIT_OK


def _champion(store_uri: str, model_name: str, as_json: bool) -> int:
    store = open_store(store_uri)
    champion = champion_record(store, model_name)
    if champion is None:
        print(f"no champion for {model_name!r} in {store.uri} yet", file=sys.stderr)
        return EXIT_NOT_FOUND
    if as_json:
        print(to_json(champion))
        return EXIT_OK
    print(f"{champion['version']}  accuracy {100 * float(champion['accuracy']):.2f} %  since {champion['promoted_at']}")
    previous = champion.get("previous")
    if previous:
        print(f"  replaced {previous['version']} ({100 * float(previous['accuracy']):.2f} %)")
    return EXIT_OK


def main(argv: Sequence[str]) -> int:  # noqa: PLR0911 -- one return per command, flat on purpose
    """Run one `models` command; return the exit code."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse exits 2 on bad usage and 0 on --help
        return int(exc.code or 0)
    try:
        if args.command == "list":
            return _list(args.store, args.model_name, args.json)
        if args.command == "show":
            return _show(args.store, args.model_name, args.version, args.json)
        if args.command in promote.COMMANDS:  # promote, rollback (trainer.promote)
            return promote.run(args)
        return _champion(args.store, args.model_name, args.json)
    except ValueError as exc:
        print(f"trainer models: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:
        print(f"trainer models: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
