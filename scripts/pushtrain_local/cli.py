"""`make demo` / `python scripts/local_pipeline.py [SCENARIO] [options]`: run the local pipeline and say what happened.

make demo                                   # the push scenario: push -> event -> trigger -> train -> champion
make demo ARGS="spot"                       # a Spot interruption mid-training, resumed by the trigger
make demo ARGS="all"                        # every scenario, one after the other, on one emulated stack
make demo ARGS="push --runner docker"       # the real image instead of a local process (needs Docker)
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from dataclasses import replace
from pathlib import Path

from pushtrain_local import summary
from pushtrain_local.pipeline import DemoSettings, PipelineError, Reporter, clean_workdir, open_pipeline
from pushtrain_local.scenarios import SCENARIOS

REQUIRED_MODULES = {
    "trainer.synth": "the synthetic dataset generator (trainer/src/trainer/synth.py)",
    "trainer.__main__": "the trainer's command line, `python -m trainer` (trainer/src/trainer/__main__.py)",
    "trigger.handler": "the trigger's Lambda handler (lambda/src/trigger/handler.py)",
}


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="local_pipeline.py", description=__doc__.split("\n")[0])
    parser.add_argument(
        "scenario", nargs="?", default="push", choices=[*SCENARIOS, "all"], help="what to run (default push)"
    )
    parser.add_argument(
        "--runner", choices=["local", "docker"], default="local", help="run tasks as processes or containers"
    )
    parser.add_argument("--train-images", type=int, default=DemoSettings.train_images, help="synthetic training images")
    parser.add_argument("--test-images", type=int, default=DemoSettings.test_images, help="synthetic test images")
    parser.add_argument("--epochs", type=int, help="TRAINER_EPOCHS of the demo's tasks (default 2)")
    parser.add_argument("--workdir", type=Path, help="where tasks and copied models go (default .pushtrain/demo)")
    parser.add_argument("--traceback", action="store_true", help="show the stack trace of a failure")
    return parser.parse_args(argv)


def missing_parts() -> list[str]:
    """The parts of pushtrain the demo needs that are not importable here."""
    missing = []
    for module, what in REQUIRED_MODULES.items():
        try:
            found = importlib.util.find_spec(module) is not None
        except ModuleNotFoundError:
            found = False
        if not found:
            missing.append(f"{module}: {what}")
    return missing


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    settings = DemoSettings(runner=args.runner, train_images=args.train_images, test_images=args.test_images)
    if args.epochs is not None:
        settings = replace(settings, task_parameters={**settings.task_parameters, "TRAINER_EPOCHS": str(args.epochs)})
    if args.workdir is not None:
        settings = replace(settings, workdir=args.workdir.resolve())
    missing = missing_parts()
    if missing:
        print("The local pipeline cannot run yet; these parts are missing:\n  " + "\n  ".join(missing), file=sys.stderr)
        return 1
    names = list(SCENARIOS) if args.scenario == "all" else [args.scenario]
    reporter = Reporter()
    started = time.monotonic()
    print(f"pushtrain local pipeline: {', '.join(names)} (AWS emulated by moto; the real trigger and trainer)")
    verdicts: list[summary.Verdict] = []
    notified: list[str] = []
    store: str | None = None
    try:
        clean_workdir(settings)
        with open_pipeline(settings, reporter) as pipeline:
            try:
                for name in names:
                    print(f"\n=== scenario: {name} " + "=" * (60 - len(name)))
                    try:
                        verdicts.append(summary.judge(pipeline, SCENARIOS[name](pipeline)))
                    except Exception as exc:
                        verdicts.append(summary.failed(name, exc))
                        raise
                    notified += pipeline.notifications()
                pipeline.show_models()
            finally:
                store = _shown(pipeline.export_store())  # kept even after a failure: it shows what happened
    except KeyboardInterrupt:
        print("\ninterrupted", file=sys.stderr)
        return 130
    except Exception as exc:
        if args.traceback:
            raise
        kind = "" if isinstance(exc, PipelineError) else f"{type(exc).__module__}.{type(exc).__name__}: "
        print(
            f"\nlocal pipeline failed: {kind}{exc}\n(run again with --traceback for the stack trace)", file=sys.stderr
        )
        print(summary.closing(verdicts, notified, store))
        return 1
    print(summary.closing(verdicts, notified, store))
    print(
        f"\ndone in {time.monotonic() - started:.0f} s; task folders and model files under {_shown(settings.workdir)}"
    )
    return 0 if all(v.passed for v in verdicts) else 1


def _shown(path: Path) -> str:
    try:
        return str(path.resolve().relative_to(Path.cwd()))
    except ValueError:
        return str(path)
