"""`python -m trainer models list|show VERSION|champion|gate VERSION`: the published models in a store.

    python -m trainer models list                          # versions of TRAINER_MODEL_NAME (default cifar10)
    python -m trainer models show 20261125T190312Z-push-…  # one version's manifest, its files verified
    python -m trainer models champion --json               # the champion pointer
    python -m trainer models gate 20261125T190312Z-push-…  # run a pending gate, record it in the run
    python -m trainer models list --store s3://bucket --model-name cifar10
    python -m trainer models promote VERSION --reason "…"  # by hand; and `models rollback` (see trainer.promote)
    python -m trainer models predict [VERSION|champion] cat.png batch.npy [--top-k 3]  # see trainer.predict

The store is `--store`, else `TRAINER_STORE_URI`, else the trainer's default local store; the model
name is `--model-name`, else `TRAINER_MODEL_NAME`, else `cifar10`. Exit codes: 0 found (and, for
`show`, every file matches the manifest's sha256; for `gate`, the gate ran), 1 not found, damaged,
unreadable or refused (`promote` of a version whose files fail their sha256; a `gate` still pending),
in one line `trainer models <command>: …` naming the file and what is wrong, never a traceback; 2 bad
usage, or a --store that does not exist or holds neither runs/ nor models/. A closed pipe (`| head`)
ends it quietly.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
from collections.abc import Sequence
from typing import Any

from trainer import promote
from trainer.cli_common import COMMAND, StoreMissing, explain, require_store, store_options
from trainer.counts import decimal_text
from trainer.gate import GateError
from trainer.registry import champion_record, describe_version, list_model_names, summarize, to_json, verify_files
from trainer.store import NotFound, Store, StoreError, open_store
from trainer.versions import read_manifest

EXIT_OK = 0
EXIT_NOT_FOUND = 1
EXIT_USAGE = 2
# What damaged JSON in the store raises while it is read: a message, never a traceback.
DATA_ERRORS = (GateError, StoreError, ValueError, KeyError, TypeError, AttributeError, IndexError)


class DataError(Exception):
    """The store holds something damaged; the message names the file and what is wrong."""


def _parser() -> argparse.ArgumentParser:
    common = store_options()
    parser = argparse.ArgumentParser(prog=f"{COMMAND} models", description=__doc__.split("\n\n")[0])
    commands = parser.add_subparsers(dest="command", required=True)
    commands.add_parser("list", parents=[common], help="published versions, oldest first")
    show = commands.add_parser("show", parents=[common], help="one version's manifest")
    show.add_argument("version", help="the version id (see `list`), or `champion`")
    commands.add_parser("champion", parents=[common], help="the current champion")
    gate = commands.add_parser("gate", parents=[common], help="apply the quality gate to a published version")
    gate.add_argument("version", help="the version id (see `list`)")
    predict = commands.add_parser(
        "predict", parents=[common], help="classify images with a version (default: the champion)",
        description="Classify 32x32 PNG/JPEG images or .npy batches with a published version, after checking "
        "its files' sha256; one JSON line per image (see trainer.predict).",
    )  # fmt: skip
    predict.add_argument("inputs", nargs="+", metavar="[VERSION|champion] FILE", help="the version, then the files")
    predict.add_argument("--top-k", type=_positive, default=1, help="also list the K likeliest classes")
    promote.add_parsers(commands, common)
    return parser


def _positive(text: str) -> int:
    if not text.isdecimal() or int(text) < 1:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number >= 1")
    return int(text)


def _predict(store_uri: str, model_name: str, inputs: list[str], top_k: int) -> int:
    """Check the inputs, then the version, load it once and print a line per image (trainer.predict)."""
    from trainer import predict

    target, files = predict.split_target(inputs)
    try:
        batch = predict.read_inputs(files)
    except predict.InputError as exc:
        print(f"trainer models predict: {exc}", file=sys.stderr)
        return EXIT_USAGE
    try:
        predictor = predict.load_predictor(open_store(store_uri), model_name, target)
    except predict.ModelError as exc:
        print(f"trainer models predict: {exc}", file=sys.stderr)
        return EXIT_NOT_FOUND
    for line in predictor.predict(batch, top_k):
        print(json.dumps({"version": predictor.version, **line}))
    return EXIT_OK


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
    if version == "champion":  # as `models predict champion` takes it: the version champion.json names
        champion = champion_record(store, model_name)
        if champion is None:
            print(f"trainer models show: no champion for {model_name!r} in {store.uri} yet", file=sys.stderr)
            return EXIT_NOT_FOUND
        version = str(champion["version"])
    try:
        described = describe_version(store, model_name, version)
    except NotFound:
        print(
            f"trainer models show: no published version {version!r} of {model_name!r} in {store.uri}", file=sys.stderr
        )
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


def _gate(store_uri: str, model_name: str, version: str, as_json: bool) -> int:
    from trainer import runstate
    from trainer.run import run_gate
    from trainer.versions import read_manifest

    store = open_store(store_uri)
    try:
        manifest = read_manifest(store, model_name, version)
    except NotFound:
        print(
            f"trainer models gate: no published version {version!r} of {model_name!r} in {store.uri}", file=sys.stderr
        )
        return EXIT_NOT_FOUND
    config, run_id = manifest["config"], str(manifest["run_id"])
    gate = run_gate(
        store,
        model_name,
        version,
        None,  # read from the version's checked metrics.json
        floor=decimal_text(config["accuracy_floor"], "accuracy_floor"),
        margin=decimal_text(config["champion_margin"], "champion_margin"),
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
    _rewrite_report(store, model_name, run_id, version, gate=gate, config=config)
    print(to_json(gate) if as_json else f"{version}: {gate['outcome']}: {gate['reason']}")
    return EXIT_NOT_FOUND if gate["outcome"] == "pending" else EXIT_OK


def _rewrite_report(
    store: Store, model_name: str, run_id: str, version: str, *, gate: dict[str, Any], config: dict[str, Any]
) -> None:
    """runs/<run_id>/report.md with the gate's new outcome (best effort: the record already holds it)."""
    from trainer.finish import write_run_report

    try:
        write_run_report(
            store,
            model_name,
            run_id,
            version,
            gate,
            floor=decimal_text(config["accuracy_floor"], "accuracy_floor"),
            margin=decimal_text(config["champion_margin"], "champion_margin"),
        )
    except Exception as exc:  # noqa: BLE001 -- best effort: the gate's outcome is recorded already
        print(f"trainer models gate: the run's report was not rewritten: {type(exc).__name__}: {exc}", file=sys.stderr)


def _champion(store_uri: str, model_name: str, as_json: bool) -> int:
    store = open_store(store_uri)
    champion = champion_record(store, model_name)
    if champion is None:
        print(f"trainer models champion: no champion for {model_name!r} in {store.uri} yet", file=sys.stderr)
        return EXIT_NOT_FOUND
    # The champion is served: check its files against its manifest (S3's stored SHA-256s, no download).
    version = str(champion["version"])
    try:
        problems = verify_files(store, model_name, version, read_manifest(store, model_name, version))
    except NotFound:
        problems = ["it is not a published version"]
    if problems:
        where = store.uri_of(f"models/{model_name}/champion.json")
        print(f"trainer models champion: {where} names {version}: {'; '.join(problems)}", file=sys.stderr)
        return EXIT_NOT_FOUND
    if as_json:
        print(to_json(champion))
        return EXIT_OK
    print(f"{champion['version']}  accuracy {100 * float(champion['accuracy']):.2f} %  since {champion['promoted_at']}")
    previous = champion.get("previous")
    if previous:
        shown = f" ({100 * float(previous['accuracy']):.2f} %)" if previous.get("accuracy") is not None else ""
        print(f"  replaced {previous['version']}{shown}")
    return EXIT_OK


def _store_problem(command: str, store_uri: str) -> int | None:
    """The exit code of a --store that names no store or cannot be reached (said in one line), else None."""
    try:
        require_store(open_store(store_uri))
    except (ValueError, StoreMissing) as exc:  # not a store URI, or it names no store
        print(f"trainer models {command}: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except StoreError as exc:  # unreachable, no credentials, access denied
        print(f"trainer models {command}: {explain(exc)}", file=sys.stderr)
        return EXIT_NOT_FOUND
    return None


def main(argv: Sequence[str]) -> int:
    """Run one `models` command; return the exit code."""
    try:
        args = _parser().parse_args(list(argv))
    except SystemExit as exc:  # argparse exits 2 on bad usage and 0 on --help
        return int(exc.code or 0)
    problem = _store_problem(args.command, args.store)
    if problem is not None:
        return problem
    commands = {
        "list": lambda: _list(args.store, args.model_name, args.json),
        "show": lambda: _show(args.store, args.model_name, args.version, args.json),
        "champion": lambda: _champion(args.store, args.model_name, args.json),
        "gate": lambda: _gate(args.store, args.model_name, args.version, args.json),
        "predict": lambda: _predict(args.store, args.model_name, args.inputs, args.top_k),
    }
    if args.command in promote.COMMANDS:  # promote, rollback: their own one-line errors (trainer.promote)
        return promote.run(args)
    try:
        return commands[args.command]()
    except BrokenPipeError:
        # the reader went away (`| head`): stop quietly; point stdout at devnull so the exit flush cannot fail
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return EXIT_OK
    except (DataError, *DATA_ERRORS) as exc:
        print(f"trainer models {args.command}: {_describe(exc)}", file=sys.stderr)
        return EXIT_NOT_FOUND


def _describe(exc: BaseException) -> str:
    """One line: what is wrong, and where (store errors and our own messages name the file)."""
    if isinstance(exc, KeyError):
        return f"missing field {exc}"
    if isinstance(exc, DataError | StoreError | GateError):
        return str(exc).splitlines()[0]  # these name the file themselves
    return f"{type(exc).__name__}: {exc}".splitlines()[0]
