"""Parameter sweeps: one retrain request, up to MAX_SETS runs. Pure: no AWS calls (the flow is trigger.sweep_flow).

A retrain request may carry `sweep` (docs/contracts.md): a grid, a list, or random samples of a space,
and how to run them:

    {"action": "retrain", "request_id": "1234", "image": "<tag or digest>", "params": {"epochs": 10},
     "sweep": {"grid": {"lr": [0.5, 1.0, 1.5], "seed": [0, 1]}}}          # 6 runs: every combination
    {"sweep": {"list": [{"lr": 0.5}, {"lr": 1.5, "seed": 3}]}}           # 2 runs: exactly these
    {"sweep": {"random": {"space": {"lr": {"loguniform": [0.1, 3.0]}, "label_smoothing": {"uniform": [0, 0.3]},
                                    "batch_size": {"choice": [256, 512]}, "seed": {"int": [0, 9]}},
                          "max_runs": 12, "seed": 7},                   # 12 runs, the same 12 for seed 7
               "max_parallel": 4, "max_cost_usd": 5.0, "early_stop": {"eta": 3}, "val_images": 5000}}

Selection is on a validation set held out of the training set (`val_images`, the trainer's
trainer.data.split_validation), never on the test set: when every run has ended, the best set by
validation accuracy (exact counts; ties go to the lower set index) is refit on the whole training set
as one more run, and only that run meets the gate. Sweep runs are published, never promoted.

Each set is `params` overlaid with the set's values, validated like any retrain's parameters. Run i is an
ordinary retrain run, `retrain-<request_id>-<8 hex of digest and its parameters>` (36 characters at most,
ECS startedBy's limit), so a sweep run is started, resumed and recorded exactly like a single retrain. The
sweep's own record, `sweeps/<request_id>.json`, lists its runs, which of them the trigger started, how each
ended, the ranking by validation accuracy, and the refit with the gate's decision.
"""

from __future__ import annotations

import itertools
import math
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from fractions import Fraction
from typing import Any, TypeGuard

from trigger.errors import InvalidEventError
from trigger.events import RetrainRequest, parse_retrain_request, validate_params
from trigger.records import FINAL_STATES
from trigger.runs import canonical_json, retrain_run_id

MAX_SETS = 32  # runs per sweep: a bounded bill per request (at most 32 tasks of ~15 minutes each on a CPU)
MAX_VALUES = 32  # values per grid axis
SCHEMA = 2  # 2: validation selection, refit, max_parallel, cost cap, early stopping
DEFAULT_VAL_IMAGES = 5000  # 10 % of CIFAR-10's 50,000 training images (the trainer checks it fits the data)
MAX_VAL_IMAGES = 25_000
MAX_ETA = 16  # trainer.config.MAX_ETA
DISTRIBUTIONS = ("uniform", "loguniform", "int", "choice")
_DRAWS_PER_RUN = 64  # random draws per requested run before a small space is refused as too small
_SIGNIFICANT = 6  # sampled floats keep 6 significant digits: readable, and the same JSON on every replay
# What one epoch of a run costs, for the sweep's cost cap: the CPU task's price (trainer.config cost_per_hour:
# Fargate on-demand 2 vCPU + 4 GiB, us-east-1) for airbench's ~90 s per epoch on it (trainer/README.md, the bench's
# estimate: 15.0 min for 9.9 epochs in bf16 on 2 threads).
EPOCH_COST_USD = 0.0987 * 90 / 3600


@dataclass(frozen=True)
class SweepRequest:
    """A retrain request with a sweep: the base request, the parameter sets in order, and how to run them."""

    base: RetrainRequest
    sets: tuple[dict[str, str | int | float], ...]
    max_parallel: int = MAX_SETS
    max_cost_usd: float | None = None
    eta: int = 0  # ASHA's reduction factor; 0: no early stopping
    val_images: int = DEFAULT_VAL_IMAGES

    @property
    def request_id(self) -> str:
        return self.base.request_id

    @property
    def event_id(self) -> str:
        return f"sweep-{self.base.request_id}"


def is_sweep_request(event: object) -> TypeGuard[Mapping[str, Any]]:
    """A retrain request that carries a sweep (anything else is parsed by trigger.events)."""
    return isinstance(event, Mapping) and event.get("action") == "retrain" and "sweep" in event


SETTINGS = ("max_parallel", "max_cost_usd", "early_stop", "val_images")  # besides one of grid/list/random


def parse_sweep_request(event: Mapping[str, Any]) -> SweepRequest:
    """Validate the retrain request and expand its sweep; InvalidEventError names the first problem."""
    base = parse_retrain_request({k: v for k, v in event.items() if k != "sweep"})
    sweep = event["sweep"]
    sets = expand(sweep, base.params)
    max_parallel = _count(sweep, "max_parallel", MAX_SETS, (1, MAX_SETS))
    val_images = _count(sweep, "val_images", DEFAULT_VAL_IMAGES, (1, MAX_VAL_IMAGES))
    early = sweep.get("early_stop")
    eta = 0
    if early is not None:
        if not isinstance(early, Mapping) or set(early) != {"eta"}:
            raise InvalidEventError(f"sweep.early_stop must be {{'eta': 2..{MAX_ETA}}}, got {early!r:.80}")
        eta = _count(early, "eta", 0, (2, MAX_ETA), where="sweep.early_stop")
        if len({params.get("epochs") for params in sets}) > 1:
            raise InvalidEventError("sweep.early_stop needs the same epochs in every set: the rungs are shared")
    cap = sweep.get("max_cost_usd")
    if cap is not None:
        if isinstance(cap, bool) or not isinstance(cap, int | float) or not math.isfinite(cap) or cap <= 0:
            raise InvalidEventError(f"sweep.max_cost_usd must be a positive number of USD, got {cap!r:.40}")
        needed = run_epochs(sets[0]) + max(run_epochs(params) for params in sets)
        if cap_epochs(cap) < needed:
            raise InvalidEventError(
                f"sweep.max_cost_usd {cap} does not cover one run and the refit "
                f"({needed} epochs, ~{needed * EPOCH_COST_USD:.4f} USD estimated)"
            )
        cap = float(cap)
    return SweepRequest(base, sets, max_parallel=max_parallel, max_cost_usd=cap, eta=eta, val_images=val_images)


def _count(body: Mapping[str, Any], name: str, default: int, bounds: tuple[int, int], where: str = "sweep") -> int:
    low, high = bounds
    value = body.get(name, default)
    if isinstance(value, bool) or not isinstance(value, int) or not low <= value <= high:
        raise InvalidEventError(f"{where}.{name} must be an integer from {low} to {high}, got {value!r:.40}")
    return value


def run_epochs(params: Mapping[str, Any], ran: int | None = None) -> int:
    """The epochs a run of `params` trains (or trained, `ran`, when it stopped early): what the cap counts."""
    planned = math.ceil(params.get("epochs", 10))
    return planned if ran is None else min(ran, planned)


def cap_epochs(max_cost_usd: float) -> int:
    """The cost cap in whole epochs of EPOCH_COST_USD: the cap is compared in counts, never in float sums."""
    return math.floor(max_cost_usd / EPOCH_COST_USD + 1e-9)


def expand(sweep: object, base: Mapping[str, str | int | float]) -> tuple[dict[str, str | int | float], ...]:
    """The parameter sets of a sweep: `{"grid": {name: [values]}}`, `{"list": [{name: value}]}` or
    `{"random": {"space": {name: {distribution: ...}}, "max_runs": n, "seed": s}}`, plus SETTINGS."""
    kinds = [key for key in ("grid", "list", "random") if isinstance(sweep, Mapping) and key in sweep]
    if not isinstance(sweep, Mapping) or len(kinds) != 1 or set(sweep) - {kinds[0], *SETTINGS}:
        raise InvalidEventError(
            f"sweep must be {{'grid': {{...}}}}, {{'list': [...]}} or {{'random': {{...}}}} (with optional "
            f"{', '.join(SETTINGS)}), got {sweep!r:.120}"
        )
    kind, body = kinds[0], sweep[kinds[0]]
    if kind == "grid":
        overlays = _grid(body)
    elif kind == "random":
        overlays = _random(body, base)
    else:
        if not isinstance(body, list) or not all(isinstance(item, Mapping) for item in body):
            raise InvalidEventError(f"sweep.list must be a list of parameter objects, got {body!r:.120}")
        overlays = [dict(item) for item in body]
    if not 1 <= len(overlays) <= MAX_SETS:
        raise InvalidEventError(f"sweep has {len(overlays)} parameter sets; a sweep has 1 to {MAX_SETS}")
    sets = tuple(validate_params({**base, **overlay}) for overlay in overlays)
    seen: dict[str, int] = {}
    for index, params in enumerate(sets):
        key = canonical_json(params)
        if key in seen:
            raise InvalidEventError(f"sweep sets {seen[key]} and {index} are the same parameters {key}")
        seen[key] = index
    return sets


def _grid(body: object) -> list[dict[str, Any]]:
    if not isinstance(body, Mapping) or not body:
        raise InvalidEventError(f"sweep.grid must map parameter names to lists of values, got {body!r:.120}")
    axes: list[tuple[str, list[Any]]] = []
    total = 1
    for name, values in sorted(body.items()):
        if not isinstance(values, list) or not 1 <= len(values) <= MAX_VALUES:
            raise InvalidEventError(f"sweep.grid.{name} must be a list of 1 to {MAX_VALUES} values, got {values!r:.80}")
        axes.append((name, values))
        total *= len(values)
    if total > MAX_SETS:  # checked before expanding: a grid of 32^7 must not be built to be refused
        raise InvalidEventError(f"sweep.grid makes {total} parameter sets; a sweep has 1 to {MAX_SETS}")
    names = [name for name, _ in axes]
    return [dict(zip(names, combo, strict=True)) for combo in itertools.product(*(v for _, v in axes))]


def _random(body: object, base: Mapping[str, str | int | float]) -> list[dict[str, Any]]:
    """`max_runs` distinct sets drawn from `space` by random.Random(seed): the same sets for the same request.

    Only Random.random() draws: the Python documentation guarantees its sequence for a seed across versions
    (docs.python.org/3/library/random.html, "Notes on Reproducibility"), which randrange/choice do not.
    """
    if not isinstance(body, Mapping) or set(body) - {"space", "max_runs", "seed"} or "space" not in body:
        raise InvalidEventError(
            f"sweep.random must be {{'space': {{...}}, 'max_runs': n, 'seed': s}}, got {body!r:.120}"
        )
    max_runs = _count(body, "max_runs", 0, (1, MAX_SETS), where="sweep.random")
    seed = body.get("seed", 0)
    if isinstance(seed, bool) or not isinstance(seed, int) or not 0 <= seed <= 2**31 - 1:
        raise InvalidEventError(f"sweep.random.seed must be an integer from 0 to 2**31 - 1, got {seed!r:.40}")
    space = body["space"]
    if not isinstance(space, Mapping) or not space:
        raise InvalidEventError(f"sweep.random.space must map parameter names to distributions, got {space!r:.120}")
    draws = [(name, *_distribution(name, space[name])) for name in sorted(space)]
    rng = random.Random(seed)  # noqa: S311 -- a reproducible search, not a secret
    sets: list[dict[str, Any]] = []
    seen: set[str] = set()
    for _ in range(max_runs * _DRAWS_PER_RUN):
        overlay = {name: draw(rng.random()) for name, draw, _ in draws}
        key = canonical_json(validate_params({**base, **overlay}))
        if key not in seen:
            seen.add(key)
            sets.append(overlay)
            if len(sets) == max_runs:
                return sets
    raise InvalidEventError(f"sweep.random.space has fewer than {max_runs} distinct sets (found {len(sets)})")


def _distribution(name: str, spec: object) -> tuple[Callable[[float], Any], str]:
    """A function from a uniform draw u in [0, 1) to a value, for `{"uniform"|"loguniform"|"int": [lo, hi]}`
    or `{"choice": [values]}`."""
    where = f"sweep.random.space.{name}"
    if not isinstance(spec, Mapping) or len(spec) != 1 or next(iter(spec)) not in DISTRIBUTIONS:
        raise InvalidEventError(f"{where} must be one of {{{'|'.join(DISTRIBUTIONS)}: ...}}, got {spec!r:.80}")
    kind, arg = next(iter(spec.items()))
    if kind == "choice":
        if not isinstance(arg, list) or not 1 <= len(arg) <= MAX_VALUES:
            raise InvalidEventError(f"{where}.choice must be a list of 1 to {MAX_VALUES} values, got {arg!r:.80}")
        return (lambda u: arg[min(int(u * len(arg)), len(arg) - 1)]), kind
    numbers = (
        isinstance(arg, list)
        and len(arg) == 2
        and all(isinstance(v, int | float) and not isinstance(v, bool) for v in arg)
    )
    if not numbers or not all(math.isfinite(v) for v in arg) or not arg[0] < arg[1]:
        raise InvalidEventError(f"{where}.{kind} must be [low, high] with low < high, got {arg!r:.80}")
    low, high = arg
    if kind == "int":
        if not all(isinstance(v, int) for v in arg):
            raise InvalidEventError(f"{where}.int must be two integers [low, high], got {arg!r:.80}")
        return (lambda u: min(low + int(u * (high - low + 1)), high)), kind
    if kind == "loguniform":
        if low <= 0:
            raise InvalidEventError(f"{where}.loguniform needs 0 < low, got {arg!r:.80}")
        log_low, log_high = math.log(low), math.log(high)
        return (lambda u: _round(math.exp(log_low + u * (log_high - log_low)))), kind
    return (lambda u: _round(low + u * (high - low))), kind


def _round(value: float) -> float:
    return float(f"{value:.{_SIGNIFICANT}g}")


# --- the sweep record ----------------------------------------------------------------------------------
#
# sweeps/<request_id>.json: the sweep's one record, changed only by compare-and-swap (trigger.s3json). Every
# decision is a pure function of it and of what the runs' records say (`step`), so whichever invocation
# (the workflow's, or a run's stop event) writes first decides, and the others redo `step` on its result:
# a run slot, the budget and the refit are each claimed exactly once. The trainer's own files sit beside it:
# sweeps/<request_id>/rungs/<epoch>/<run_id>.json (trainer.asha) and sweeps/<request_id>/final/<run_id>.json.


def sweep_key(request_id: str) -> str:
    return f"sweeps/{request_id}.json"


def final_key(request_id: str, run_id: str) -> str:
    """The trainer's validation counts after a sweep run's last epoch (trainer.run.final_key)."""
    return f"sweeps/{request_id}/final/{run_id}.json"


def rung_key(request_id: str, epoch: int, run_id: str) -> str:
    """A sweep run's validation counts at a rung (trainer.asha.rung_key)."""
    return f"sweeps/{request_id}/rungs/{epoch}/{run_id}.json"


def run_ids(request: SweepRequest, digest: str) -> list[str]:
    """One run id per set, in order; a clash of two 8-hex hashes is refused rather than merged."""
    ids = [retrain_run_id(request.request_id, digest, params) for params in request.sets]
    if len(set(ids)) != len(ids):
        raise InvalidEventError(f"sweep {request.request_id}: two parameter sets hash to the same run id {ids}")
    return ids


def new_sweep_record(request: SweepRequest, digest: str, git_sha: str | None, now: str) -> dict[str, Any]:
    return {
        "schema": SCHEMA,
        "request_id": request.request_id,
        "image_digest": digest,
        "git_sha": git_sha,
        "created_at": now,
        "updated_at": now,
        "state": "running",  # running (sets start as slots free) -> refitting (the best set's refit) -> finished
        "max_parallel": request.max_parallel,
        "max_cost_usd": request.max_cost_usd,
        "eta": request.eta,
        "val_images": request.val_images,
        "runs": [
            {"index": i, "run_id": run_id, "params": params, "started": False, "ended": None}
            for i, (run_id, params) in enumerate(zip(run_ids(request, digest), request.sets, strict=True))
        ],
        "refit": None,
        "budget": None,  # why sets were left unstarted, once the cost cap stops them
        "ranking": [],
    }


def same_sweep(record: Mapping[str, Any], request: SweepRequest, digest: str) -> bool:
    """Whether a stored sweep record is this request (a reused request id with other sets is not)."""
    stored = [(run.get("run_id"), run.get("params")) for run in record.get("runs", [])]
    ours = list(zip(run_ids(request, digest), request.sets, strict=True))
    settings = ("max_parallel", "max_cost_usd", "eta", "val_images")
    theirs = tuple(record.get(name) for name in settings)
    mine = (request.max_parallel, request.max_cost_usd, request.eta, request.val_images)
    return record.get("image_digest") == digest and stored == [(r, dict(p)) for r, p in ours] and theirs == mine


def trainer_params(record: Mapping[str, Any], run: Mapping[str, Any]) -> dict[str, Any]:
    """What a sweep run trains with: its set, on the training set less the validation set, under the sweep."""
    extra: dict[str, Any] = {"sweep_id": record["request_id"], "val_images": record["val_images"]}
    if record.get("eta"):
        extra["early_stop_eta"] = record["eta"]
    return {**run["params"], **extra}


def refit_run_id(record: Mapping[str, Any], params: Mapping[str, Any]) -> str:
    """The refit's run id: the hash of its set with `refit` marked, so never one of the sweep's own runs."""
    return retrain_run_id(str(record["request_id"]), str(record["image_digest"]), {**params, "refit": 1})


@dataclass(frozen=True)
class Observed:
    """What a run's record (and, for a succeeded sweep run, its final validation file) says now."""

    state: str | None
    version: str | None = None
    stopped_at_epoch: int | None = None
    validation: tuple[int, int] | None = None  # (correct, total): the final, or the rung's for stopped-early
    gate: Mapping[str, Any] | None = None


def committed_epochs(record: Mapping[str, Any]) -> int:
    """Spent plus running: each started run at its whole estimate, a stopped-early one at the epochs it ran."""
    return sum(run_epochs(run["params"], run.get("stopped_at_epoch")) for run in record["runs"] if run["started"])


def step(record: dict[str, Any], observed: Mapping[str, Observed]) -> list[dict[str, Any]]:
    """Advance the sweep record in place (pure; run inside a compare-and-swap); the runs to start now.

    1. Runs whose record has reached a final state are marked ended (with their validation counts).
    2. While running: the next sets in index order are claimed while fewer than `max_parallel` are active and
       the committed cost plus the set's estimate plus the refit's reserve stays within `max_cost_usd`; once
       the cap stops a set with nothing active, the sets left are ended `not-started` (the record says why).
    3. When every set has ended: the refit of the best set by validation accuracy (exact fractions; ties go
       to the lower index) is claimed, once (`refit`); with no succeeded run the sweep finishes without one.
    4. When the refit has ended: `finished`, with its gate outcome. Test metrics are never read.

    Returned: every claimed run or refit not known to be started yet (a start is exactly-once through its
    run record, so returning one again after a crash is safe).
    """
    tracked = [*record["runs"], *([record["refit"]] if record.get("refit") else [])]
    for run in tracked:
        seen = observed.get(run["run_id"])
        if run["started"] and run.get("ended") is None and seen is not None and seen.state in FINAL_STATES:
            run["ended"] = seen.state
            run["stopped_at_epoch"] = seen.stopped_at_epoch
            run["validation"] = list(seen.validation) if seen.validation else None
            run["version"] = seen.version
            if run is record.get("refit"):
                run["gate"] = dict(seen.gate) if seen.gate else None
    if record["state"] == "running":
        _claim(record)
    if record["state"] == "running" and all(run.get("ended") for run in record["runs"]):
        best = select(record["runs"])
        if best is None:
            record["state"] = "finished"
            record["refit"] = None
            record["outcome"] = "no run of the sweep succeeded with validation counts: nothing to refit"
        else:
            params = dict(best["params"])
            record["refit"] = {
                "index": best["index"],
                "run_id": refit_run_id(record, params),
                "params": params,
                "started": True,
                "ended": None,
            }
            record["state"] = "refitting"
    refit = record.get("refit")
    if record["state"] == "refitting" and refit and refit.get("ended"):
        record["state"] = "finished"
        gate = refit.get("gate") or {}
        record["outcome"] = f"refit {refit['ended']}; gate: {gate.get('outcome', 'none')}"
    record["ranking"] = ranking(record["runs"])
    record["summary_markdown"] = markdown_table(record)  # what the workflow and `trainer sweeps show` print
    todo = [run for run in record["runs"] if run["started"] and not run.get("ended") and not run.get("task_arn")]
    if refit and not refit.get("ended") and not refit.get("task_arn"):
        todo.append(refit)
    return todo


def _claim(record: dict[str, Any]) -> None:
    cap = record.get("max_cost_usd")
    reserve = max(run_epochs(run["params"]) for run in record["runs"])  # the refit of whichever set wins
    for run in record["runs"]:
        if run["started"]:
            continue
        active = sum(1 for r in record["runs"] if r["started"] and not r.get("ended"))
        if active >= record["max_parallel"]:
            return
        cost, committed = run_epochs(run["params"]), committed_epochs(record)
        if cap is not None and committed + cost + reserve > cap_epochs(cap):
            record["budget"] = (
                f"set {run['index']} not started: {committed} epochs spent or running + {cost} for the set + "
                f"{reserve} reserved for the refit > max_cost_usd {cap} = {cap_epochs(cap)} epochs of "
                f"{EPOCH_COST_USD:.5f} USD"
            )
            if active == 0:  # nothing running will free budget: the sets left never start
                for left in record["runs"]:
                    if not left["started"]:
                        left["ended"] = "not-started"
            return
        run["started"] = True


def select(runs: Sequence[Mapping[str, Any]]) -> Mapping[str, Any] | None:
    """The best succeeded run by validation accuracy (exact; ties: the lower index), or None. Reads nothing
    but the validation counts: test metrics play no part in the choice."""
    candidates = [run for run in runs if run.get("ended") == "succeeded" and run.get("validation")]
    if not candidates:
        return None
    return min(candidates, key=lambda run: (-Fraction(*run["validation"]), run["index"]))


def ranking(runs: Sequence[Mapping[str, Any]]) -> list[dict[str, Any]]:
    """Succeeded runs by validation accuracy (ties: lower index), then stopped-early ones by the rung they
    reached (later first) and their rung accuracy, then the rest in index order."""

    def key(run: Mapping[str, Any]) -> tuple[Any, ...]:
        validation = Fraction(*run["validation"]) if run.get("validation") else Fraction(-1)
        if run.get("ended") == "succeeded" and run.get("validation"):
            return (0, 0, -validation, run["index"])
        if run.get("ended") == "stopped-early":
            return (1, -(run.get("stopped_at_epoch") or 0), -validation, run["index"])
        return (2, 0, 0, run["index"])

    return [
        {
            "rank": position + 1,
            "index": run["index"],
            "run_id": run["run_id"],
            "params": dict(run["params"]),
            "state": run.get("ended") or ("running" if run["started"] else "waiting"),
            "validation": run.get("validation"),
            "stopped_at_epoch": run.get("stopped_at_epoch"),
            "version": run.get("version"),
        }
        for position, run in enumerate(sorted(runs, key=key))
    ]


def percent(validation: Sequence[int] | None) -> str:
    return "-" if not validation else f"{validation[0]}/{validation[1]} ({100 * validation[0] / validation[1]:.2f} %)"


def markdown_table(record: Mapping[str, Any]) -> str:
    """The ranking, the refit and the gate's decision as Markdown (the retrain workflow's summary shows it)."""
    lines = [
        "| rank | set | run | parameters | state | validation accuracy |",
        "|---:|---:|---|---|---|---:|",
    ]
    for row in record.get("ranking", []):
        state = row["state"] + (f" at epoch {row['stopped_at_epoch']}" if row.get("stopped_at_epoch") else "")
        params, accuracy = canonical_json(row["params"]), percent(row["validation"])
        lines.append(f"| {row['rank']} | {row['index']} | `{row['run_id']}` | `{params}` | {state} | {accuracy} |")
    refit = record.get("refit")
    if refit:
        gate = refit.get("gate") or {}
        lines += [
            "",
            f"Refit of set {refit['index']} on the whole training set: `{refit['run_id']}`, "
            f"{refit.get('ended') or 'running'}"
            + (f", version `{refit['version']}`" if refit.get("version") else "")
            + (f"; gate: **{gate.get('outcome')}** ({gate.get('reason')})" if gate else ""),
        ]
    if record.get("budget"):
        lines += ["", f"Cost cap: {record['budget']}"]
    if record.get("outcome"):
        lines += ["", f"Outcome: {record['outcome']}"]
    return "\n".join([*lines, *(f"\n{chart}" for chart in charts(record))])


def charts(record: Mapping[str, Any]) -> list[str]:
    """One Mermaid xychart per swept parameter (one whose value differs between sets): each measured run's
    validation accuracy (%), the runs sorted by that parameter. A stopped-early run's bar is its rung's
    accuracy, labelled with the epoch (`@e1`). GitHub renders these blocks in the step summary."""
    rows = [row for row in record.get("ranking", []) if row.get("validation")]
    names = sorted({name for row in record.get("ranking", []) for name in row["params"]})
    swept = [name for name in names if len({canonical_json(r["params"].get(name)) for r in record["ranking"]}) > 1]
    blocks = []
    for name in swept:
        ordered = sorted(rows, key=lambda row: (_sortable(row["params"].get(name)), row["index"]))
        if not ordered:
            continue
        bands = ", ".join(
            f'"{row["params"].get(name)} #{row["index"]}'
            + (f' @e{row["stopped_at_epoch"]}"' if row.get("stopped_at_epoch") else '"')
            for row in ordered
        )
        values = ", ".join(f"{100 * row['validation'][0] / row['validation'][1]:.2f}" for row in ordered)
        blocks.append(
            "\n".join(
                [
                    "```mermaid",
                    "xychart-beta",
                    f'title "Validation accuracy by {name}"',
                    f'x-axis "{name} #set" [{bands}]',
                    'y-axis "validation accuracy (%)" 0 --> 100',
                    f"bar [{values}]",
                    "```",
                ]
            )
        )
    return blocks


def _sortable(value: object) -> tuple[int, float, str]:
    if isinstance(value, int | float) and not isinstance(value, bool):
        return (0, float(value), "")
    return (1, 0.0, str(value))
