"""`python -m trainer models list|show VERSION|champion|gate VERSION`: the published models in a store.

    python -m trainer models list                          # versions of TRAINER_MODEL_NAME (default cifar10)
    python -m trainer models show 20261125T190312Z-push-…  # one version's manifest, its files verified
    python -m trainer models champion --json               # the champion pointer
    python -m trainer models gate 20261125T190312Z-push-…  # run a pending gate, record it in the run
    python -m trainer models list --store s3://bucket --model-name cifar10

The store is `--store`, else `TRAINER_STORE_URI`, else the trainer's default local store; the model
name is `--model-name`, else `TRAINER_MODEL_NAME`, else `cifar10`. Exit codes: 0 found (and, for
`show`, every file matches the manifest's sha256), 1 not found, damaged or unreadable (one line naming
the file and what is wrong, never a traceback), 2 bad usage. A closed pipe (`| head`) ends it quietly.
"""

from __future__ import annotations

import argparse
import hashlib
import os
import sys
from collections.abc import Sequence
from typing import Any

from trainer.config import TrainConfig
from trainer.gate import GateError
from trainer.registry import champion_record, describe_version, list_model_names, summarize, to_json
from trainer.store import NotFound, Store, StoreError, open_store

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
# What damaged JSON in the store raises while it is read: a message, never a traceback.
DATA_ERRORS = (GateError, StoreError, ValueError, KeyError, TypeError, AttributeError, IndexError)


class DataError(Exception):
    """The store holds something damaged; the message names the file and what is wrong."""


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
    gate = commands.add_parser("gate", parents=[common], help="apply the quality gate to a published version")
    gate.add_argument("version", help="the version id (see `list`)")
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
    try:
        rows = _rows(described)
    except DATA_ERRORS as exc:
        where = store.uri_of(f"models/{model_name}/{version}/manifest.json")
        raise DataError(f"{where} is damaged: {_describe(exc)}") from exc
    problems = verify_files(store, model_name, version, described)
    rows.append(("files", "; ".join(problems) if problems else f"{len(described['files'])} verified (sha256)"))
    for name, value in rows:
        print(f"{name:<11} {value}")
    return EXIT_NOT_FOUND if problems else EXIT_OK


def _rows(described: dict[str, Any]) -> list[tuple[str, str]]:
    metrics, config = described["metrics"], described["config"]
    return [
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


def verify_files(store: Store, model_name: str, version: str, manifest: dict[str, Any]) -> list[str]:
    """One line per file of the version that is missing or differs from the manifest's sha256."""
    files = manifest.get("files")
    if not isinstance(files, dict) or not files:
        return ["the manifest lists no files"]
    problems = []
    for name, expected in sorted(files.items()):
        key = f"models/{model_name}/{version}/{name}"
        try:
            actual = hashlib.sha256(store.get(key)).hexdigest()
        except NotFound:
            problems.append(f"{name} is missing")
            continue
        if actual != expected.get("sha256"):
            problems.append(f"{name} has sha256 {actual}, the manifest says {expected.get('sha256')}")
    return problems


def _gate(store_uri: str, model_name: str, version: str, as_json: bool) -> int:
    from trainer import runstate
    from trainer.publish import read_manifest
    from trainer.run import run_gate

    store = open_store(store_uri)
    try:
        manifest = read_manifest(store, model_name, version)
    except NotFound:
        print(f"no published version {version!r} of {model_name!r} in {store.uri}", file=sys.stderr)
        return EXIT_NOT_FOUND
    config, run_id = manifest["config"], str(manifest["run_id"])
    gate = run_gate(
        store,
        model_name,
        version,
        float(manifest["metrics"]["accuracy"]),
        floor=float(config["accuracy_floor"]),
        margin=float(config["champion_margin"]),
        run_id=run_id,
    )
    runstate.set_state(
        store,
        run_id,
        "succeeded",
        attempt=None,
        version=version,
        create=lambda: runstate.new_record(run_id, now=runstate.utc_now(), source="manual"),
        extra={"gate": gate, "lease": None},
    )
    print(to_json(gate) if as_json else f"{version}: {gate['outcome']}: {gate['reason']}")
    return EXIT_NOT_FOUND if gate["outcome"] == "pending" else EXIT_OK


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


def main(argv: Sequence[str]) -> int:
    """Run one `models` command; return the exit code."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse exits 2 on bad usage and 0 on --help
        return int(exc.code or 0)
    try:
        open_store(args.store)
    except ValueError as exc:
        print(f"trainer models: {exc}", file=sys.stderr)
        return EXIT_USAGE
    commands = {
        "list": lambda: _list(args.store, args.model_name, args.json),
        "show": lambda: _show(args.store, args.model_name, args.version, args.json),
        "champion": lambda: _champion(args.store, args.model_name, args.json),
        "gate": lambda: _gate(args.store, args.model_name, args.version, args.json),
    }
    try:
        return commands[args.command]()
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly; point stdout at devnull so the exit flush cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (DataError, *DATA_ERRORS) as exc:
        print(f"trainer models: {_describe(exc)}", file=sys.stderr)
        return EXIT_NOT_FOUND


def _describe(exc: BaseException) -> str:
    """One line: what is wrong, and where (store errors and our own messages name the file)."""
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    if isinstance(exc, DataError | StoreError | GateError):
        return str(exc).splitlines()[0]  # these name the file themselves
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
