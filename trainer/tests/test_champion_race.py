"""`models rollback` racing a gate: separate processes against one moto S3 server.

The operator's `python -m trainer models rollback` is held by a botocore hook (tests/hold_s3.py) at its
compare-and-swap write of champion.json, after it read B as the champion. Meanwhile a gate in another
process promotes C (`trainer.gate.promote_if_better`, what `train` and `models gate` both run; not the
`models gate` command itself, whose report rewrite imports torch, seconds per process here). Released, the
rollback's `If-Match` write fails (412), it reads again and finds C where it saw B: it refuses, naming both,
instead of stepping back from C, which would reinstate B, the very version the operator wanted gone
(docs/contracts.md, "Rollback").
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path

import pytest
from moto_env import moto_server_env, s3_client
from published import publish_counts
from trainer.counts import Counts
from trainer.gate import champion_key, promote_if_better
from trainer.store import S3Store
from trainer.versions import new_version_id

pytestmark = pytest.mark.slow

MODEL = "cifar10"
A, B, C = (new_version_id(f"push-{c * 20}", datetime(2026, 11, 24 + i, 9, tzinfo=UTC)) for i, c in enumerate("abc"))
CORRECT = {A: 70, B: 80, C: 90}  # of 100: C beats B, so the gate promotes it
HOLD_SCRIPT = Path(__file__).resolve().parents[2] / "tests" / "hold_s3.py"
EXIT_FAILED = 1
# The operator's view: without --from, the champion the command read when it started (B); with it, B named.
ROLLBACKS = {"champion-read-at-start": [], "from-B": ["--from", B]}


@pytest.fixture(scope="module")
def server() -> Iterator[dict[str, str]]:
    with moto_server_env() as env:
        yield env


def champion_b_over_a(env: dict[str, str], bucket: str) -> S3Store:
    """GIVEN A, B and C published; the gate made A, then B champion; C not gated yet."""
    s3_client(env).create_bucket(Bucket=bucket)
    store = S3Store(bucket, client=s3_client(env))
    for version, correct in CORRECT.items():
        publish_counts(store, MODEL, version, correct, 100)
    for version in (A, B):
        promote_if_better(store, MODEL, version, Counts(CORRECT[version], 100), floor="0.5", margin="0")
    return store


def trainer_cli(env: dict[str, str], *args: str, hold: Path | None = None) -> subprocess.Popen[str]:
    """`python -m trainer ARGS`, or held at its first champion.json PUT (files `hold`/held and `hold`/release)."""
    entry = ["-m", "trainer"]
    if hold is not None:
        entry = [str(HOLD_SCRIPT), str(hold / "held"), str(hold / "release"), f"key={champion_key(MODEL)}", "--"]
    command = [sys.executable, *entry, *args]
    return subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)


# The gate of `train` and `models gate`, in a process of its own: promote version argv[2] in s3://argv[1] if better.
GATE = """
import sys
from trainer.gate import promote_if_better, version_counts
from trainer.store import open_store
store, version = open_store("s3://" + sys.argv[1]), sys.argv[2]
counts = version_counts(store, "cifar10", version)
print(version, promote_if_better(store, "cifar10", version, counts, floor="0.5", margin="0").outcome)
"""


def wait_for(path: Path, process: subprocess.Popen[str]) -> None:
    deadline = time.monotonic() + 120
    while not path.exists():
        assert process.poll() is None, f"ended before its champion write: {process.communicate()[1][-3000:]}"
        assert time.monotonic() < deadline, "never reached its champion write"
        time.sleep(0.05)


def test_a_rollback_held_while_a_gate_promotes_refuses_and_never_reinstates_the_version_it_removes(
    server: dict[str, str], tmp_path: Path
) -> None:
    stores, rollbacks, gates = {}, {}, {}
    try:
        # GIVEN, per case, a rollback of B held at its compare-and-swap write of champion.json
        for i, (case, extra) in enumerate(ROLLBACKS.items()):
            stores[case] = champion_b_over_a(server, f"pushtrain-race-{i}")
            (tmp_path / case).mkdir()
            store_uri = f"s3://{stores[case].bucket}"
            rollbacks[case] = trainer_cli(
                server, "models", "rollback", *extra, "--store", store_uri, "--by", "operator",
                "--reason", f"{B} misclassifies trucks", hold=tmp_path / case,
            )  # fmt: skip
        for case in ROLLBACKS:
            wait_for(tmp_path / case / "held", rollbacks[case])
        # WHEN a gate, in its own process, promotes C meanwhile ...
        for case in ROLLBACKS:
            gates[case] = subprocess.Popen(
                [sys.executable, "-c", GATE, stores[case].bucket, C],
                env=server, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
            )  # fmt: skip
        gated = {case: gate.communicate(timeout=300) for case, gate in gates.items()}
        # ... and the rollback's write goes on
        for case in ROLLBACKS:
            (tmp_path / case / "release").write_text("go")
        rolled = {case: rollback.communicate(timeout=120) for case, rollback in rollbacks.items()}
    finally:
        for process in (*rollbacks.values(), *gates.values()):
            if process.poll() is None:
                process.kill()
    for case, store in stores.items():
        assert gates[case].returncode == 0, gated[case][1][-3000:]
        assert gated[case][0].split() == [C, "promoted"]
        # THEN the rollback refuses naming the new champion, exit 1, and C stays champion: B is not back
        assert rollbacks[case].returncode == EXIT_FAILED, rolled[case]
        assert f"the champion is {C}, not {B}" in rolled[case][1]
        assert f"run again with --from {C}" in rolled[case][1]
        champion = json.loads(store.get(champion_key(MODEL)))
        assert champion["version"] == C
        assert [entry["version"] for entry in champion["history"]] == [A, B, C]
        assert all(entry.get("action") != "rollback" for entry in champion["history"])
