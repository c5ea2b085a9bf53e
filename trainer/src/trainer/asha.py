"""Early stopping for the runs of a sweep without a controller: asynchronous successive halving (ASHA).

Li et al., "A System for Massively Parallel Hyperparameter Tuning" (MLSys 2020, arXiv:1810.05934),
in the stopping form Ray Tune's AsyncHyperBandScheduler uses: there is no scheduler process. Each run,
on reaching a rung, writes its validation counts into the store and reads everyone else's:

    sweeps/<sweep_id>/rungs/<epoch>/<run_id>.json   {"run_id", "epoch", "correct", "total", "decision"}

and goes on only when it is in the top ceil(n / eta) of the n runs that have reached that rung so far
(itself included, so the first run at a rung always goes on, as in ASHA). Otherwise it checkpoints and
ends `stopped-early` (docs/contracts.md).

- Rungs: whole epochs E / eta^k (k = 1, 2, ...; at least 1, below the run's E passes): E=8, eta=2 gives
  rungs at epochs 1, 2 and 4. Every run of a sweep shares E (the sweep's `epochs`), so they share rungs.
- Ranking: exact fractions correct/total (cross-multiplied, never floats); ties go to the smaller run id
  (string order), so every reader ranks the same set the same way.
- Writes: a run creates its own result with If-None-Match and is the only writer of that key. A resumed
  run that reaches a rung again finds its first result and keeps it, and keeps the decision stored with
  it: a rung is measured and decided once per run. Two runs reaching a rung together both write first,
  then list (S3 lists are strongly consistent after a write), so the later one always sees the earlier.
"""

from __future__ import annotations

import json
import logging
import math
from dataclasses import dataclass
from fractions import Fraction
from typing import Any

from trainer.counts import Counts
from trainer.store import NotFound, PreconditionFailed, Store, StoreError

log = logging.getLogger(__name__)

CONTINUE = "continue"
STOP = "stop"


class RungError(StoreError):
    """A rung result in the store cannot be read or written as expected."""


def rung_epochs(epochs: float, eta: int) -> tuple[int, ...]:
    """The epochs after which a run with `epochs` passes is measured: E // eta^k >= 1, below E, ascending."""
    passes = math.ceil(epochs)
    rungs: set[int] = set()
    k = 1
    while passes // eta**k >= 1:
        rungs.add(passes // eta**k)
        k += 1
    return tuple(sorted(r for r in rungs if r < passes))


def rung_prefix(sweep_id: str, epoch: int) -> str:
    return f"sweeps/{sweep_id}/rungs/{epoch}/"


def rung_key(sweep_id: str, epoch: int, run_id: str) -> str:
    return f"{rung_prefix(sweep_id, epoch)}{run_id}.json"


@dataclass(frozen=True)
class RungResult:
    run_id: str
    correct: int
    total: int

    @property
    def accuracy(self) -> Fraction:
        return Fraction(self.correct, self.total)


def parse_result(raw: bytes, run_id: str, where: str) -> tuple[RungResult, str | None]:
    """A stored rung result and its decision (None when not decided yet); RungError names what is wrong."""
    try:
        doc = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError) as exc:
        raise RungError(f"{where}: not JSON ({exc})") from None
    if not isinstance(doc, dict):
        raise RungError(f"{where}: not a JSON object")
    decision = doc.get("decision")
    if doc.get("run_id") != run_id:
        raise RungError(f"{where}: names run {doc.get('run_id')!r}, its key says {run_id!r}")
    try:
        counts = Counts.from_mapping(doc, where)
    except ValueError as exc:
        raise RungError(str(exc)) from None
    if decision not in (None, CONTINUE, STOP):
        raise RungError(f"{where}: decision {decision!r} is not {CONTINUE!r} or {STOP!r}")
    return RungResult(run_id, counts.correct, counts.total), decision


def ranking(results: list[RungResult]) -> list[RungResult]:
    """Best first: by exact accuracy, ties by the smaller run id."""
    return sorted(results, key=lambda r: (-r.accuracy, r.run_id))


def keeps_going(results: list[RungResult], run_id: str, eta: int) -> bool:
    """ASHA's rule: `run_id` is in the top ceil(n / eta) of the n results at the rung (its own included)."""
    order = [r.run_id for r in ranking(results)]
    if run_id not in order:
        raise ValueError(f"run {run_id} has no result among the {len(order)} at this rung")
    return order.index(run_id) < math.ceil(len(order) / eta)


def read_rung(store: Store, sweep_id: str, epoch: int) -> list[RungResult]:
    """Every readable result at a rung; a damaged one is left out with a warning naming it (not ours to fix)."""
    results = []
    prefix = rung_prefix(sweep_id, epoch)
    for key in store.list(prefix):
        name = key[len(prefix) :]
        if not name.endswith(".json") or "/" in name:
            continue
        try:
            result, _ = parse_result(store.get(key), name[: -len(".json")], store.uri_of(key))
        except (RungError, NotFound) as exc:
            log.warning("rung result left out: %s", exc)
            continue
        results.append(result)
    return results


def _document(result: RungResult, epoch: int, decision: str | None) -> bytes:
    doc: dict[str, Any] = {
        "run_id": result.run_id,
        "epoch": epoch,
        "correct": result.correct,
        "total": result.total,
        "decision": decision,
    }
    return json.dumps(doc, sort_keys=True).encode()


def report(store: Store, sweep_id: str, *, epoch: int, run_id: str, counts: Counts, eta: int) -> tuple[str, int]:
    """Record this run's counts at rung `epoch` (once) and decide: (CONTINUE or STOP, runs at the rung).

    A run that already reported this rung (a resumed attempt) keeps its first counts and its decision.
    """
    key = rung_key(sweep_id, epoch, run_id)
    where = store.uri_of(key)
    mine = RungResult(run_id, counts.correct, counts.total)
    try:
        etag = store.put(key, _document(mine, epoch, None), if_none_match=True)
    except PreconditionFailed:
        raw, etag = store.get_with_etag(key)
        mine, decided = parse_result(raw, run_id, where)
        log.info("run %s: rung %d already reported (%d/%d); keeping it", run_id, epoch, mine.correct, mine.total)
        if decided is not None:
            return decided, len(read_rung(store, sweep_id, epoch))
    results = [r for r in read_rung(store, sweep_id, epoch) if r.run_id != run_id] + [mine]
    decision = CONTINUE if keeps_going(results, run_id, eta) else STOP
    try:
        store.put(key, _document(mine, epoch, decision), if_match=etag)
    except PreconditionFailed as exc:  # only this run writes this key: another trainer of it is running
        raise RungError(f"{where} changed under run {run_id}: {exc}") from None
    return decision, len(results)
