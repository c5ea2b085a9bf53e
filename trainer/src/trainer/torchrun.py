"""`python -m trainer torchrun [--setting value ...]`: one node of an AWS Batch multi-node parallel job.

Batch's node variables become torchrun's static rendezvous (the main node is node rank 0), torchrun starts
`python -m trainer train ...` once per GPU (trainer.distributed takes over in each), and this process
exits with rank 0's exit code where rank 0 ran (the main node), torchrun's own on the other nodes. Batch
takes the job's outcome from the main node alone (docs.aws.amazon.com/batch/latest/userguide/
multi-node-parallel-jobs.html), so 0, 1, 2, 73 and 75 reach Batch, its retry strategy (exit 75 is
retried) and the trigger as they do from a Fargate task.

Why a launcher that stays: torchrun's elastic agent exits 1 whenever a worker exits non-zero (worker
failures reach it as ChildFailedError, pytorch.org/docs/stable/elastic/errors.html) and, on SIGTERM,
stops its workers and dies of the signal itself: a 75 or a 73 is lost either way. So this process starts
torchrun as its child, passes SIGTERM/SIGINT on to it (torchrun passes them to every worker and waits
30 s, its shutdown timeout, for them to checkpoint and exit 75), and reads the codes the workers left in
the folder named by PUSHTRAIN_EXIT_CODES_DIR (trainer.cli_common.report_exit_code). When it passed a stop
on and rank 0 left no code (torchrun was still gathering the nodes, or killed rank 0 after its 30 s), it
exits 75 too: stopped before the end, so Batch retries the attempt, which resumes from the last checkpoint
(a job the trigger terminated is not retried whatever its code). The converse: when rank 0 exits 75
although no stop reached this node, and a worker beside it failed or left no code, the SIGTERM was
torchrun's, ending the group for that worker: the node exits with torchrun's code (1), a failure Batch
does not retry. (A stop from another node leaves every worker here with 75, and the node exits 75.)

No torch here: the launcher is the container's first process and must not spend seconds importing what
only the workers use.
"""

from __future__ import annotations

import logging
import re
import signal
import socket
import subprocess
import sys
import tempfile
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path

from trainer.cli_common import EXIT_CODES_DIR, EXIT_INTERRUPTED

log = logging.getLogger(__name__)

EXIT_INVALID_CONFIG = 2  # as the CLI's (trainer.__main__)
STOP_SIGNALS = (signal.SIGTERM, signal.SIGINT)
# AWS Batch multi-node parallel jobs (docs.aws.amazon.com/batch/latest/userguide/mnp-env-vars.html);
# the main node's address is set on child nodes only.
BATCH_NUM_NODES = "AWS_BATCH_JOB_NUM_NODES"
BATCH_NODE_INDEX = "AWS_BATCH_JOB_NODE_INDEX"
BATCH_MAIN_NODE_INDEX = "AWS_BATCH_JOB_MAIN_NODE_INDEX"
BATCH_MAIN_NODE_ADDRESS = "AWS_BATCH_JOB_MAIN_NODE_PRIVATE_IPV4_ADDRESS"
RENDEZVOUS_PORT = 29500  # torchrun's default; the Batch security group allows it between the nodes
RENDEZVOUS_PORT_VARIABLE = "PUSHTRAIN_RENDEZVOUS_PORT"  # another port (tests on a shared machine)
PROCS_PER_NODE = "PUSHTRAIN_PROCS_PER_NODE"  # processes per node; default: one per GPU the node shows
GPU_DEVICE = re.compile(r"nvidia\d+")  # /dev/nvidia0 ...: the GPUs ECS/Batch gave this container


class BatchEnvironmentError(ValueError):
    """A Batch or launcher variable is missing or malformed (exit 2, naming it)."""

    def __init__(self, setting: str, detail: str) -> None:
        super().__init__(f"invalid setting {setting!r}: {detail}")
        self.setting = setting
        self.detail = detail


def int_variable(environ: Mapping[str, str], name: str, minimum: int, maximum: int | None = None) -> int:
    raw = environ.get(name, "")
    if not (raw.isascii() and raw.isdecimal()) or int(raw) < minimum:
        raise BatchEnvironmentError(name, f"expected an integer >= {minimum}, got {raw!r}")
    if maximum is not None and int(raw) > maximum:
        raise BatchEnvironmentError(name, f"{raw} is above {maximum}")
    return int(raw)


def procs_per_node(environ: Mapping[str, str], devices: Path = Path("/dev")) -> int:
    """PUSHTRAIN_PROCS_PER_NODE, else one process per GPU device the container sees (one without any)."""
    if environ.get(PROCS_PER_NODE):
        return int_variable(environ, PROCS_PER_NODE, 1)
    try:
        gpus = sum(1 for entry in devices.iterdir() if GPU_DEVICE.fullmatch(entry.name))
    except OSError:
        gpus = 0
    return gpus or 1


@dataclass(frozen=True)
class Rendezvous:
    """This node's place in the AWS Batch multi-node parallel job, as torchrun's static rendezvous takes it."""

    nodes: int
    node_rank: int  # the main node is 0
    procs: int  # processes per node
    address: str  # the main node's
    port: int

    @property
    def first_rank(self) -> int:
        """This node's first global rank (torchrun numbers the ranks node by node)."""
        return self.node_rank * self.procs

    def flags(self) -> list[str]:
        return [
            f"--nnodes={self.nodes}",
            f"--node-rank={self.node_rank}",
            f"--nproc-per-node={self.procs}",
            f"--master-addr={self.address}",
            f"--master-port={self.port}",
            "--max-restarts=0",  # a lost node fails the job; AWS Batch's retry strategy starts it again
        ]


def rendezvous(environ: Mapping[str, str], procs_per_node: int) -> Rendezvous:
    """This node of an AWS Batch multi-node parallel job, from Batch's variables.

    Node indices become node ranks with the main node as rank 0 (Batch lets any index be the main node);
    child nodes reach the main node at the address Batch gives them, the main node listens on its own.
    """
    nodes = int_variable(environ, BATCH_NUM_NODES, 1)
    node = int_variable(environ, BATCH_NODE_INDEX, 0)
    main_node = int_variable(environ, BATCH_MAIN_NODE_INDEX, 0)
    if node >= nodes or main_node >= nodes:
        raise BatchEnvironmentError(BATCH_NODE_INDEX, f"node {node} / main node {main_node} outside {nodes} nodes")
    node_rank = 0 if node == main_node else (node + 1 if node < main_node else node)
    if node == main_node:
        address = socket.gethostbyname(socket.gethostname())
    else:
        address = environ.get(BATCH_MAIN_NODE_ADDRESS, "")
        if not address:
            raise BatchEnvironmentError(BATCH_MAIN_NODE_ADDRESS, "a child node needs the main node's address")
    port = RENDEZVOUS_PORT
    if environ.get(RENDEZVOUS_PORT_VARIABLE):
        port = int_variable(environ, RENDEZVOUS_PORT_VARIABLE, 1, 65535)
    return Rendezvous(nodes, node_rank, procs_per_node, address, port)


def torchrun_arguments(environ: Mapping[str, str], procs_per_node: int) -> list[str]:
    """torchrun's rendezvous flags for this node (see `rendezvous`)."""
    return rendezvous(environ, procs_per_node).flags()


def launch(argv: Sequence[str], environ: Mapping[str, str]) -> int:
    """Run torchrun for this node with `-m trainer train ARGV`; rank 0's exit code (see the module docstring)."""
    try:
        node = rendezvous(environ, procs_per_node(environ))
    except BatchEnvironmentError as err:
        print(f"trainer: {err}", file=sys.stderr)
        return EXIT_INVALID_CONFIG
    with tempfile.TemporaryDirectory(prefix="trainer-torchrun-") as scratch:
        command = [sys.executable, "-m", "torch.distributed.run", *node.flags(), "-m", "trainer", "train", *argv]
        log.info("starting %s", " ".join(command))
        agent_code, stopped = _run_forwarding_signals(command, dict(environ) | {EXIT_CODES_DIR: scratch})
        codes = read_exit_codes(Path(scratch))
    if stopped and not codes and node.node_rank:
        # A child node stopped before any worker here could say so: tell the ranks gathering on the main node
        # (the main node's own exit ends the job, so it needs to tell no one).
        _tell_the_gathering(node)
    rank0_code = codes.pop(0, None)
    if rank0_code is None:  # no rank 0 on this node, or it died before it could say (killed)
        if stopped:
            log.info("stopped by a signal before rank 0 reported (torchrun exited %d): exit 75", agent_code)
            return EXIT_INTERRUPTED
        return _exit_status(agent_code)
    # Rank 0 stopped although nobody stopped this node, and a worker beside it failed or vanished (no code):
    # the SIGTERM was torchrun's own, ending the group for that worker. That is the failure, not a stop to
    # retry from. (A stop that came from another node leaves every worker here with 75 or 0.)
    local_failure = len(codes) < node.procs - 1 or any(code not in (0, EXIT_INTERRUPTED) for code in codes.values())
    if rank0_code == EXIT_INTERRUPTED and not stopped and agent_code != 0 and local_failure:
        log.info("rank 0 was stopped by torchrun after another worker failed: exit %d", agent_code)
        return _exit_status(agent_code)
    if rank0_code != agent_code:
        log.info("torchrun exited %d; rank 0 exited %d, the job's exit code", agent_code, rank0_code)
    return rank0_code


def _exit_status(returncode: int) -> int:
    """A child's returncode as a shell reports it: killed by signal N (returncode -N) is 128 + N."""
    return returncode if returncode >= 0 else 128 - returncode


def _tell_the_gathering(node: Rendezvous) -> None:
    """Best effort (trainer.distributed.tell_the_gathering; torch is imported on this path only)."""
    try:
        from trainer.distributed import tell_the_gathering

        decision = tell_the_gathering(node.address, node.port, node.first_rank)
    except Exception as exc:  # noqa: BLE001 -- the node's own exit code is what matters; this only shortens a wait
        log.warning("could not tell the other nodes that this one stopped: %s: %s", type(exc).__name__, exc)
        return
    log.info("told the ranks gathering that rank %d stopped (their decision: %s)", node.first_rank, decision)


def read_exit_codes(folder: Path) -> dict[int, int]:
    """The codes the workers left (trainer.cli_common.report_exit_code), by rank; unreadable ones left out."""
    codes = {}
    for path in folder.glob("rank*"):
        try:
            codes[int(path.name.removeprefix("rank"))] = int(path.read_text(encoding="ascii"))
        except (OSError, ValueError):
            continue
    return codes


def _run_forwarding_signals(command: list[str], environ: dict[str, str]) -> tuple[int, bool]:
    """Run `command`, passing SIGTERM and SIGINT on to it (one that came before it started, at its start);
    its exit code, and whether a signal was passed on."""
    child: subprocess.Popen[bytes] | None = None
    pending: list[int] = []
    forwarded: list[int] = []

    def forward(signum: int, _frame: object) -> None:
        forwarded.append(signum)
        if child is None:
            pending.append(signum)
        else:
            child.send_signal(signum)

    previous = {sig: signal.signal(sig, forward) for sig in STOP_SIGNALS}
    try:
        child = subprocess.Popen(command, env=environ)  # noqa: S603 -- our own interpreter running torchrun
        for signum in pending:
            child.send_signal(signum)
        return child.wait(), bool(forwarded)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)


__all__ = [
    "BatchEnvironmentError",
    "Rendezvous",
    "launch",
    "procs_per_node",
    "read_exit_codes",
    "rendezvous",
    "torchrun_arguments",
]
