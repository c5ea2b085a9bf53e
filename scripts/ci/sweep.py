"""A sweep from GitHub Actions: one retrain request with a grid of learning rates and seeds, or random samples.

    python3 -m ci.sweep --function pushtrain-trigger --request-id 9876543210 --image 0123abc… \\
        --model airbench --epochs 10 --lrs "0.5, 1.0, 1.5" --seeds "0, 1" --wait true --timeout-minutes 105 \\
        [--max-parallel 2] [--early-stop-eta 3] [--max-cost-usd 5] [--val-images 5000]
    ... --random '{"space": {"lr": {"loguniform": [0.1, 3.0]}}, "max_runs": 12, "seed": 7}'

1. Build the retrain request of docs/contracts.md with `"sweep": {"grid": {"lr": [...], "seed": [...]}}`
   (an empty list leaves that parameter to the model's recipe), or `{"random": <--random>}`, plus each
   setting given (`max_parallel`, `early_stop`, `max_cost_usd`, `val_images`; 0 leaves the trigger's
   default) and invoke the trigger until its answer says no run `remaining` (it starts at most a few
   runs per invocation). With `--max-parallel N` the rest start as runs end (on their stop events), not
   from here. The trigger checks every value (trigger.sweeps); this only refuses what is not a number
   or not JSON, so the workflow fails with one line before anything is invoked.
2. With `--wait true`, invoke it again every `--poll-seconds` (it answers the runs' states, reading their
   records) until it answers `finished`: every run ended, the best set by validation accuracy refit on the
   whole training set and gated. Then write the trigger's summary (the ranking by validation accuracy, the
   stopped-early runs, the refit and the gate's decision, a chart per swept parameter) to
   $GITHUB_STEP_SUMMARY. Exit 1 when the time runs out (the runs go on) or when the refit did not succeed.

Only the standard library, like ci.retrain: the runner's own python3 runs this.
"""

from __future__ import annotations

import argparse
import json
import math
import os
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from ci.github import CIError, append_summary, write_output
from ci.retrain import build_request, call_trigger

MAX_RUNS = 32  # the trigger's limit per sweep
MAX_START_INVOCATIONS = 16  # 32 runs at 4 per invocation need 8; more means the trigger is not progressing

Invoke = Callable[[Mapping[str, Any]], dict[str, Any]]


def parse_values(text: str, name: str, kind: type) -> list[Any]:
    """ "0.5, 1.0" -> [0.5, 1.0]; empty -> [] (the recipe's value). Bad or repeated values raise CIError."""
    values: list[Any] = []
    for raw in (part.strip() for part in text.split(",")):
        if not raw:
            continue
        try:
            value = kind(raw)
        except ValueError:
            raise CIError(f"{name}: {raw!r} is not a {kind.__name__}") from None
        if (kind is float and (not math.isfinite(value) or value <= 0)) or (kind is int and value < 0):
            raise CIError(f"{name}: {raw!r} is out of range")
        if value in values:
            raise CIError(f"{name}: {raw!r} is given twice")
        values.append(value)
    return values


def parse_random(text: str) -> dict[str, Any] | None:
    """The `random` sampling of the sweep (docs/contracts.md) from JSON text; empty -> None."""
    if not text.strip():
        return None
    try:
        value = json.loads(text)
    except json.JSONDecodeError as error:
        raise CIError(f"random: not JSON ({error.msg} at character {error.pos})") from None
    if not isinstance(value, dict) or not isinstance(value.get("space"), dict):
        raise CIError('random: expected {"space": {...}, "max_runs": N, "seed": S} (docs/contracts.md, Sweeps)')
    return value


def sweep_request(
    base: Mapping[str, Any],
    lrs: Sequence[float],
    seeds: Sequence[int],
    *,
    random: Mapping[str, Any] | None = None,
    max_parallel: int = 0,
    early_stop_eta: int = 0,
    max_cost_usd: float = 0.0,
    val_images: int = 0,
) -> dict[str, Any]:
    """The sweep request: a grid of `lrs` x `seeds`, or `random` samples; each setting that is not 0."""
    grid: dict[str, list[Any]] = {}
    if lrs:
        grid["lr"] = list(lrs)
    if seeds:
        grid["seed"] = list(seeds)
    if grid and random is not None:
        raise CIError("give either learning rates and seeds (a grid) or a random space, not both")
    if not grid and random is None:
        raise CIError("a sweep needs learning rates or seeds (comma-separated), or a random space")
    runs = math.prod(len(values) for values in grid.values())
    if runs > MAX_RUNS:
        raise CIError(f"the sweep makes {runs} runs; the trigger allows {MAX_RUNS}")
    for name, value in (("max_parallel", max_parallel), ("early_stop_eta", early_stop_eta),
                        ("max_cost_usd", max_cost_usd), ("val_images", val_images)):  # fmt: skip
        if not math.isfinite(value) or value < 0:
            raise CIError(f"{name}: {value!r} is out of range (0 leaves the trigger's default)")
    swept = set(grid) | set((random or {}).get("space") or {})
    params = {name: value for name, value in base["params"].items() if name not in swept}
    sweep: dict[str, Any] = {"grid": grid} if grid else {"random": dict(random or {})}
    if max_parallel:
        sweep["max_parallel"] = max_parallel
    if early_stop_eta:
        sweep["early_stop"] = {"eta": early_stop_eta}
    if max_cost_usd:
        sweep["max_cost_usd"] = max_cost_usd
    if val_images:
        sweep["val_images"] = val_images
    return {**base, "params": params, "sweep": sweep}


def start_all(invoke: Invoke, request: Mapping[str, Any]) -> dict[str, Any]:
    """Invoke until every run of the sweep is started; the last answer."""
    for _ in range(MAX_START_INVOCATIONS):
        answer = invoke(request)
        if "remaining" not in answer or "runs" not in answer:
            raise CIError(f"the trigger's answer is not a sweep answer: {json.dumps(answer)[:300]}")
        print(f"sweep {answer.get('request_id')}: {answer['remaining']} run(s) not started yet", flush=True)
        if answer["remaining"] == 0:
            return answer
    raise CIError(f"runs still not started after {MAX_START_INVOCATIONS} invocations: {json.dumps(answer)[:300]}")


def wait_finished(
    invoke: Invoke,
    request: Mapping[str, Any],
    *,
    timeout_s: float,
    poll_s: float,
    sleep: Callable[[float], None] = time.sleep,
    clock: Callable[[], float] = time.monotonic,
) -> dict[str, Any]:
    """Invoke every `poll_s` until the trigger answers `finished` (every run ended, the refit ended)."""
    deadline = clock() + timeout_s
    while True:
        answer = invoke(request)
        if answer.get("state") == "finished":
            return answer
        states = {row.get("index"): row.get("state") for row in answer.get("ranking", [])}
        refit = answer.get("refit") or {}
        print(f"sweep {answer.get('state')}: sets {json.dumps(states)}; refit {refit.get('ended', '-')}", flush=True)
        if clock() + poll_s > deadline:
            raise CIError(f"the sweep did not finish within {timeout_s / 60:.0f} minutes; its runs go on")
        sleep(poll_s)


def ranking_table(answer: Mapping[str, Any]) -> str:
    """The trigger's summary (trigger.sweeps.markdown_table, rendered once into the sweep record) under a title."""
    runs = len(answer.get("ranking", []))
    title = f"### Sweep {answer.get('request_id')}: {runs} sets on `{answer.get('image_digest')}`"
    return f"{title}\n\n{answer.get('summary_markdown') or '(no summary)'}"


def verdict(answer: Mapping[str, Any]) -> str | None:
    """Why the finished sweep failed (no refit, or a refit that did not succeed), or None."""
    refit = answer.get("refit")
    if not refit:
        return answer.get("outcome") or "no run of the sweep succeeded"
    if refit.get("ended") != "succeeded":
        return f"the refit {refit.get('run_id')} ended {refit.get('ended')}"
    return None


def _parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python3 -m ci.sweep", description=__doc__.split("\n\n")[0])
    parser.add_argument("--function", required=True)
    parser.add_argument("--request-id", required=True)
    parser.add_argument("--image", required=True)
    parser.add_argument("--git-sha", default="")
    parser.add_argument("--model", default="")
    parser.add_argument("--epochs", type=int, default=0)
    parser.add_argument("--lrs", default="", help="comma-separated learning rates")
    parser.add_argument("--seeds", default="", help="comma-separated seeds")
    parser.add_argument("--random", default="", help="JSON: the random space, max_runs and seed (instead of a grid)")
    parser.add_argument("--max-parallel", type=int, default=0, help="runs at once (0: all)")
    parser.add_argument("--early-stop-eta", type=int, default=0, help="ASHA's eta (0: no early stopping)")
    parser.add_argument("--max-cost-usd", type=float, default=0.0, help="the sweep's cost cap in USD (0: none)")
    parser.add_argument("--val-images", type=int, default=0, help="validation images held out (0: 5,000)")
    parser.add_argument("--wait", choices=("true", "false"), default="false", help="wait for the ranking")
    parser.add_argument("--timeout-minutes", type=float, default=105)
    parser.add_argument("--poll-seconds", type=float, default=60)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = _parser().parse_args(argv)
    try:
        base = build_request(
            request_id=args.request_id,
            image=args.image,
            git_sha=args.git_sha or None,
            epochs=args.epochs,
            lr=None,
            model=args.model or None,
        )
        request = sweep_request(
            base,
            parse_values(args.lrs, "lrs", float),
            parse_values(args.seeds, "seeds", int),
            random=parse_random(args.random),
            max_parallel=args.max_parallel,
            early_stop_eta=args.early_stop_eta,
            max_cost_usd=args.max_cost_usd,
            val_images=args.val_images,
        )
        print(f"sweep request: {json.dumps(request)}", flush=True)
        with tempfile.TemporaryDirectory(dir=os.environ.get("RUNNER_TEMP")) as workdir:

            def invoke(payload: Mapping[str, Any]) -> dict[str, Any]:
                return call_trigger(args.function, payload, Path(workdir))

            started = start_all(invoke, request)
            write_output("sweep-key", str(started.get("sweep_key", "")))
            append_summary(f"Started sweep `{args.request_id}`: {len(started['runs'])} runs.")
            if args.wait != "true":
                return 0
            finished = wait_finished(invoke, request, timeout_s=args.timeout_minutes * 60, poll_s=args.poll_seconds)
        append_summary(ranking_table(finished))
        failed = verdict(finished)
        if failed:
            print(f"::error title=sweep::{failed}")
            return 1
    except CIError as error:
        print(f"::error title=sweep::{error}")
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
