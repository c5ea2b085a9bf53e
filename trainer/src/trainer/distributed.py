"""Data-parallel training over several processes and machines (PyTorch DDP semantics, torchrun's environment).

    torchrun --standalone --nproc-per-node 2 -m trainer train --model cnn ...   # two processes, one machine
    python -m trainer torchrun [--setting value ...]   # an AWS Batch node: trainer.torchrun starts torchrun

`python -m trainer train` (trainer.__main__) calls `main` here instead of `trainer.run.main` whenever
WORLD_SIZE is set and not 1 (torchrun sets RANK,
WORLD_SIZE, LOCAL_RANK, MASTER_ADDR and MASTER_PORT for every process it starts). Backends: gloo on CPU,
NCCL on CUDA (one GPU per process, cuda:LOCAL_RANK).

Why the result is the single-process result with the same `batch_size` (the global batch):

1. Every process loads the whole dataset and draws the same epoch plan (`trainer.data.plan_epoch` is a
   function of seed and epoch). Global batch i is cut into WORLD_SIZE equal contiguous shards and rank r
   trains shard r, so `batch_size` must be a multiple of WORLD_SIZE (checked: exit 2 naming it). On a
   small training set the global batch is the one TrainingSession actually trains (`recipe.fit_batch`
   shrinks it to keep 16 steps per epoch), and that one is sharded and checked.
2. Before every optimizer step the gradients are averaged over the processes in one all-reduce. Each rank's
   loss is the mean over its shard, so the average is the gradient of the mean over the global batch: the
   single-process gradient up to floating-point summation order. Parameters start equal (rank 0's are
   broadcast), so identical steps keep them equal; the epoch's loss and accuracy sums are summed too.
3. BatchNorm: per-rank batch statistics, not SyncBatchNorm. SyncBatchNorm would add two latency-bound
   all-reduces per BatchNorm layer per step (airbench has 6) across the network, and PyTorch implements it
   for accelerators only (no gloo/CPU). Normalizing over shards of 1024/WORLD_SIZE images is the "ghost
   batch norm" every large-batch recipe trains with (Goyal et al. 2017 used 32 per GPU). The running
   statistics used for evaluation are averaged over the ranks at the end of every pass, so all ranks (and
   the checkpoint) hold the same model; for the running mean this is exactly the single-process value
   (its update is linear in the batch mean). The `cnn` model has no BatchNorm and matches a single
   process to floating-point order; airbench matches it statistically, not bit for bit.
4. Stopping: SIGTERM or SIGINT on any rank sets that rank's flag; before every batch (and after every
   epoch) the ranks agree with one all-reduce (MAX), so every rank stops at the same step, rank 0 stores
   one checkpoint of that position and records `interrupted`, and every rank exits 75. Before the process
   group exists the same holds (`join`): a rank stopped while the ranks gather tells the others through
   torch's TCPStore, and every rank there exits 75 within a second, with nothing trained and nothing
   written. (Without torchrun rank 0 serves that store, and keeps it up 5 s for a stop: a rank that
   arrives later waits for COLLECTIVE_TIMEOUT. Under torchrun its agent serves it for the whole run.)
5. Writes: rank 0 (the leader) alone reads and writes the run record, writes checkpoints, publishes and
   runs the gate; it tells the other ranks (followers) whether to train, and they exit with its exit code.
   A follower's store view refuses nothing but writes nothing (`FollowerStore`).
6. Resuming on another world size is allowed (resharded): the training state has no per-rank part (the
   position is a global step, the partial-epoch sums are global, the model is the same on every rank), so
   the resumed run continues the same global schedule; only the BatchNorm shards change size.
"""

from __future__ import annotations

import contextlib
import datetime
import logging
import socket
import threading
import time
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from trainer import recipe, runstate
from trainer.checkpoint import Checkpoints
from trainer.config import ConfigError, TrainConfig
from trainer.data import Cifar10Data
from trainer.metrics import EpochResult
from trainer.resources import resolve_device
from trainer.run import (
    EXIT_DUPLICATE,
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    Interrupted,
    Run,
    local_run_id,
    stop_on_signals,
)
from trainer.store import Store, StoreError, open_store
from trainer.torchrun import BatchEnvironmentError, int_variable
from trainer.train import TrainingSession

log = logging.getLogger(__name__)

TORCHRUN_VARIABLES = ("RANK", "WORLD_SIZE", "LOCAL_RANK", "MASTER_ADDR", "MASTER_PORT")
# A collective that waits longer than this means a peer is gone (torchrun also tears the group down
# when any process dies); one epoch of airbench on a CPU takes ~80 s, evaluation included.
COLLECTIVE_TIMEOUT = datetime.timedelta(minutes=15)
EXIT_INVALID_CONFIG = 2  # as the CLI's (trainer.__main__)
JOIN_POLL_S = 0.2  # how often a gathering rank looks at the store and at its own stop flag
JOIN_LOG_S = 30.0  # how often it says whom it is still waiting for
REFUSAL_TIMEOUT = datetime.timedelta(seconds=60)  # how long a rank that refuses tries to reach the store
JOIN_GRACE_S = 5.0  # how long a rank that hosts the store keeps it up for the others to read a stop
# Our keys in torch's store, under join_keys' prefix (torch's own live under "default_pg"): ranks counted in,
# the decision, and how many ranks have read a decision not to train.
JOINED, DECISION, SEEN = "joined", "decision", "seen"
TRAIN = "train"  # the leader's message: training starts (otherwise it sends its exit code)


class DistributedError(ConfigError):
    """The torchrun or AWS Batch environment is incomplete or inconsistent (exit 2, naming the variable)."""


# --- the environment -------------------------------------------------------------------------------


@dataclass(frozen=True)
class World:
    """This process's place among the training processes (torchrun's variables)."""

    rank: int
    world_size: int
    local_rank: int
    master_addr: str
    master_port: int
    agent_store: bool = False  # torchrun's agent serves the store at MASTER_ADDR:MASTER_PORT (every rank a client)
    restart: int = 0  # torchrun's TORCHELASTIC_RESTART_COUNT: its agent's store outlives a restart of the workers

    @property
    def leader(self) -> bool:
        return self.rank == 0


def _int_variable(environ: Mapping[str, str], name: str, minimum: int) -> int:
    try:
        return int_variable(environ, name, minimum)
    except BatchEnvironmentError as err:
        raise DistributedError(name, err.detail) from None


def world_from_env(environ: Mapping[str, str]) -> World:
    """torchrun's variables, checked; a missing or inconsistent one raises DistributedError naming it."""
    missing = [name for name in TORCHRUN_VARIABLES if name not in environ]
    if missing:
        raise DistributedError(missing[0], f"WORLD_SIZE is set, so torchrun's {', '.join(missing)} must be too")
    world_size = _int_variable(environ, "WORLD_SIZE", 1)
    rank = _int_variable(environ, "RANK", 0)
    if rank >= world_size:
        raise DistributedError("RANK", f"{rank} is not below WORLD_SIZE {world_size}")
    port = _int_variable(environ, "MASTER_PORT", 1)
    if port > 65535:
        raise DistributedError("MASTER_PORT", f"{port} is not a TCP port")
    if not environ["MASTER_ADDR"].strip():
        raise DistributedError("MASTER_ADDR", "must not be empty")
    # torchrun's agent says so (torch.distributed.rendezvous._create_c10d_store reads the same variable)
    agent_store = environ.get("TORCHELASTIC_USE_AGENT_STORE") == "True"
    restart = _int_variable(environ, "TORCHELASTIC_RESTART_COUNT", 0) if "TORCHELASTIC_RESTART_COUNT" in environ else 0
    local_rank = _int_variable(environ, "LOCAL_RANK", 0)
    return World(rank, world_size, local_rank, environ["MASTER_ADDR"], port, agent_store, restart)


def join_keys(store: dist.Store, restart: int) -> dist.Store:
    """The view of `store` that holds one gathering's keys (a fresh one for each torchrun restart)."""
    return dist.PrefixStore(f"pushtrain/join/{restart}", store)  # keys "pushtrain/join/0/joined", ...


# --- joining ---------------------------------------------------------------------------------------


class JoinTimeoutError(TimeoutError):
    """Not every rank joined within COLLECTIVE_TIMEOUT (a peer never started, or died before joining)."""


class JoinRefusedError(Exception):
    """Another rank refused to train before the ranks joined (`join(..., refusal=code)`); exit with its code."""

    def __init__(self, rank: int, code: int) -> None:
        super().__init__(f"rank {rank} exited {code} before the ranks joined")
        self.code = code


def join(
    world: World, stop: threading.Event, timeout: datetime.timedelta = COLLECTIVE_TIMEOUT, refusal: int = 0
) -> dist.Store:
    """Gather the ranks on torch's TCPStore, interruptibly; the store once every rank is there.

    `dist.init_process_group` waits in C++ until every rank has joined (up to its timeout, 15 min), and
    CPython runs signal handlers only between bytecodes, so a SIGTERM there (Spot, a stop) went unanswered:
    torchrun killed the rank 30 s later and the node exited 143 or 1, a failed Batch job where exit 75 is
    retried; and a rank that refused to train (exit 2: no usable GPU on its node) left the others waiting
    for it for 15 min. So each rank first counts itself in and polls every JOIN_POLL_S, and one decision is
    made for every rank with `compare_set` (whichever rank comes first wins; every rank reads the same one):
    - "go": a rank saw every rank counted in; init_process_group then finds them all there (a stop that
      comes after it is honoured at the first batch, as during training);
    - "stop:<rank>": that rank was stopped; every rank raises Interrupted (exit 75), nothing trained;
    - "exit:<rank>:<code>": that rank refused to train (it called this with `refusal`, the code it exits
      with, and returns at once); every other rank raises JoinRefusedError, and exits with that code.

    Raises JoinTimeoutError when the ranks have not all joined within `timeout`, and torch's DistError when
    the store cannot be served or reached.
    """
    deadline = time.monotonic() + timeout.total_seconds()
    hosting = world.leader and not world.agent_store  # without torchrun's agent, rank 0 serves the store
    if hosting:  # at once, without waiting for the others to connect (wait_for_workers blocks in C++)
        store = dist.TCPStore(
            world.master_addr, world.master_port, world.world_size, is_master=True, timeout=timeout,
            wait_for_workers=False,
        )  # fmt: skip
    else:
        _wait_for_server(world, stop, deadline)
        store = dist.TCPStore(world.master_addr, world.master_port, world.world_size, is_master=False, timeout=timeout)
    keys = join_keys(store, world.restart)
    if refusal:
        keys.compare_set(DECISION, "", f"exit:{world.rank}:{refusal}")
        _leave(keys, world, hosting, counted=False)
        return store
    keys.add(JOINED, 1)
    next_log = time.monotonic() + JOIN_LOG_S
    while True:
        joined = int(keys.add(JOINED, 0))
        decision = _decision(keys, joined >= world.world_size, stop.is_set(), world.rank)
        if decision == "go":
            return store
        if decision:
            _leave(keys, world, hosting)
            kind, by, *code = decision.split(":")
            if kind == "exit":
                raise JoinRefusedError(int(by), int(code[0]))
            raise Interrupted("stopped by a signal" if by == str(world.rank) else f"rank {by} was stopped")
        if time.monotonic() > deadline:
            raise JoinTimeoutError(f"{joined} of {world.world_size} ranks joined within {timeout}")
        if time.monotonic() > next_log:
            log.info("rank %d: waiting for the other ranks (%d of %d joined)", world.rank, joined, world.world_size)
            next_log = time.monotonic() + JOIN_LOG_S
        stop.wait(JOIN_POLL_S)  # a signal handler runs during the wait and sets `stop`


def _decision(store: dist.Store, everyone: bool, stopped: bool, rank: int) -> str:
    """The join's one decision, made here if this rank can make it; "" while undecided."""
    if stopped:
        return str(store.compare_set(DECISION, "", f"stop:{rank}").decode())
    if everyone:
        return str(store.compare_set(DECISION, "", "go").decode())
    return store.get(DECISION).decode() if store.check([DECISION]) else ""


def _leave(store: dist.Store, world: World, hosting: bool, *, counted: bool = True) -> None:
    """Count this rank (if `counted` in) as having read a decision not to train. A rank that serves the
    store keeps it up until every other rank has read the decision too (at most JOIN_GRACE_S: a rank that
    comes later finds no store and gives up at its timeout)."""
    if counted:
        store.add(SEEN, 1)
    readers = world.world_size if counted else world.world_size - 1
    grace = time.monotonic() + JOIN_GRACE_S
    while hosting and int(store.add(SEEN, 0)) < readers and time.monotonic() < grace:
        time.sleep(JOIN_POLL_S / 4)


def tell_the_gathering(master_addr: str, master_port: int, rank: int, restart: int = 0) -> str:
    """Decide "stop" for ranks gathering on torchrun's agent store, for `rank`, which will not come.

    For the launcher (trainer.torchrun) of a node that was stopped while its workers were starting: a
    worker that gets SIGTERM before it installs its handlers dies of it without telling anyone, and the
    ranks already waiting would wait for COLLECTIVE_TIMEOUT. No effect once they went on ("go"). The
    decision in force is returned.
    """
    store = dist.TCPStore(master_addr, master_port, None, is_master=False, timeout=datetime.timedelta(seconds=5))
    return str(join_keys(store, restart).compare_set(DECISION, "", f"stop:{rank}").decode())


def _wait_for_server(world: World, stop: threading.Event, deadline: float) -> None:
    """Until the store's port accepts connections (a TCPStore client would retry in C++, deaf to signals).

    A rank stopped meanwhile keeps trying for JOIN_GRACE_S more, to tell the others (Interrupted after it).
    """
    told_by: float | None = None
    while True:
        try:
            with socket.create_connection((world.master_addr, world.master_port), timeout=JOIN_POLL_S):
                return
        except OSError:
            pass
        now = time.monotonic()
        if stop.is_set():
            told_by = told_by or now + JOIN_GRACE_S
            if now > told_by:
                raise Interrupted("stopped by a signal")
            time.sleep(JOIN_POLL_S)  # `stop` is set: its wait would return at once
        elif now > deadline:
            raise JoinTimeoutError(f"no store at {world.master_addr}:{world.master_port}")
        else:
            stop.wait(JOIN_POLL_S)


# --- the process group -----------------------------------------------------------------------------


class Group:
    """The initialized process group and the few collectives the trainer needs."""

    def __init__(self, world: World, device: torch.device, stop: threading.Event) -> None:
        """Join the other ranks (`join`: Interrupted when stopped first) and initialize the process group."""
        self.world = world
        self.device = device
        store = join(world, stop)
        backend = "nccl" if device.type == "cuda" else "gloo"
        dist.init_process_group(
            backend, store=store, rank=world.rank, world_size=world.world_size, timeout=COLLECTIVE_TIMEOUT
        )

    def any(self, flag: bool) -> bool:
        """True on every rank when it is True on any rank."""
        value = torch.tensor([1 if flag else 0], dtype=torch.int32, device=self.device)
        dist.all_reduce(value, op=dist.ReduceOp.MAX)
        return bool(value.item())

    def sum(self, values: Sequence[float]) -> list[float]:
        """Element-wise sums over the ranks (float64: exact for counts below 2**53)."""
        tensor = torch.tensor(list(values), dtype=torch.float64, device=self.device)
        dist.all_reduce(tensor)
        return [float(v) for v in tensor.tolist()]

    def average(self, tensors: Sequence[torch.Tensor]) -> None:
        """Replace each tensor by its mean over the ranks, in one all-reduce."""
        if not tensors:
            return
        flat = torch.cat([t.reshape(-1).to(torch.float32) for t in tensors])
        dist.all_reduce(flat)
        flat /= self.world.world_size
        offset = 0
        for t in tensors:
            t.copy_(flat[offset : offset + t.numel()].view_as(t))
            offset += t.numel()

    def broadcast_from_leader(self, message: Any = None) -> Any:
        """The leader's `message` on every rank (followers pass nothing)."""
        box = [message]
        dist.broadcast_object_list(box, src=0, device=self.device if self.device.type == "cuda" else None)
        return box[0]

    def broadcast_module(self, module: nn.Module) -> None:
        """Make every parameter and buffer equal to the leader's."""
        for tensor in [*module.parameters(), *module.buffers()]:
            dist.broadcast(tensor.data, src=0)

    def close(self) -> None:
        if dist.is_initialized():
            dist.destroy_process_group()


# --- one process's share of the training -----------------------------------------------------------


class DistributedSession(TrainingSession):
    """A TrainingSession that trains its rank's shard of every global batch; see the module docstring."""

    def __init__(
        self, config: TrainConfig, data: Cifar10Data, group: Group, raw_stop: threading.Event, agreed: threading.Event
    ) -> None:
        world = group.world.world_size
        assert config.batch_size is not None  # noqa: S101 -- resolved by load_config
        # The batch actually trained: on a small set TrainingSession shrinks it (recipe.fit_batch), and the
        # shards must split that one, else rank 0 trains a full shard and the last ranks a short or empty one.
        trained = recipe.fit_batch(config.batch_size, len(data.train_labels))
        if trained % world:
            shrunk = (
                f" (shrunk to {trained} for {len(data.train_labels)} training images)"
                if trained != config.batch_size
                else ""
            )
            raise ConfigError("batch_size", f"{config.batch_size}{shrunk} is not a multiple of WORLD_SIZE {world}")
        super().__init__(config, data, device=group.device)
        assert self.batch_size == trained  # noqa: S101 -- the same rule as TrainingSession's
        self.group = group
        self.raw_stop = raw_stop
        self.agreed = agreed
        self.shard_size = self.batch_size // world
        group.broadcast_module(self.model)
        self.optimizer.register_step_pre_hook(self._average_gradients)
        self._norm_buffers = [
            buffer
            for module in self.model.modules()
            if isinstance(module, nn.modules.batchnorm._BatchNorm)
            for buffer in (module.running_mean, module.running_var)
            if buffer is not None
        ]

    def _average_gradients(self, *_: Any) -> None:
        self.group.average([p.grad for p in self.model.parameters() if p.grad is not None])

    def _shard(self, batch: torch.Tensor) -> torch.Tensor:
        start = self.group.world.rank * self.shard_size
        return batch[start : start + self.shard_size]

    def _end_of_pass(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[float, int, int]:
        total_loss, total_correct, total_seen = self.group.sum([loss_sum.item(), float(correct.item()), seen])
        self.group.average(self._norm_buffers)
        return total_loss, round(total_correct), round(total_seen)

    def _agree_to_stop(self) -> bool:
        if self.group.any(self.raw_stop.is_set()):
            self.agreed.set()
        return self.agreed.is_set()

    def run_epoch(
        self,
        should_stop: Callable[[], bool] = lambda: False,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> EpochResult | None:
        """As TrainingSession.run_epoch, with one stop decision for all ranks (a collective per batch).

        `Run` reads the agreed event after an epoch, so the ranks agree once more there: a signal that
        arrives during evaluation stops every rank before the next epoch, not just the one it reached.
        """
        result = super().run_epoch(lambda: self._agree_to_stop() or should_stop(), on_batch)
        if result is not None:
            self._agree_to_stop()
        return result

    def state_dict(self) -> dict[str, Any]:
        return super().state_dict() | {"world_size": self.group.world.world_size}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        saved = state.get("world_size", 1)
        if saved != self.group.world.world_size:
            log.warning(
                "checkpoint was written by %s processes, resuming on %s: the global batch and schedule are"
                " unchanged (resharded); BatchNorm now normalizes over %d images per process",
                saved, self.group.world.world_size, self.shard_size,
            )  # fmt: skip
        super().load_state_dict({k: v for k, v in state.items() if k != "world_size"})


class FollowerStore(Store):
    """A follower's view of the store: it reads what the leader wrote, and its writes are the leader's to make.

    A follower runs the same `Run.train` as the leader (the same resume, the same epochs); the checkpoint it
    would store is byte for byte the leader's position, so dropping it keeps the one-writer rule without a
    second training loop.
    """

    def __init__(self, inner: Store) -> None:
        self.inner = inner
        self.uri = inner.uri

    def get_with_etag(self, key: str) -> tuple[bytes, str]:
        return self.inner.get_with_etag(key)

    def exists(self, key: str) -> bool:
        return self.inner.exists(key)

    def list(self, prefix: str = "") -> list[str]:
        return self.inner.list(prefix)

    def download_file(self, key: str, path: Path) -> None:
        self.inner.download_file(key, path)

    def put(self, key: str, data: bytes, *, if_none_match: bool = False, if_match: str | None = None) -> str:
        log.debug("follower: not writing %s (rank 0 writes it)", key)
        return ""

    def upload_file(self, path: Path, key: str, *, if_none_match: bool = False, sha256: str | None = None) -> str:
        log.debug("follower: not writing %s (rank 0 writes it)", key)
        return ""

    def sha256_of(self, key: str) -> str:
        return self.inner.sha256_of(key)


class DistributedRun(Run):
    """The leader runs the whole `Run` (record, resume, publish, gate); a follower only `train`s."""

    def __init__(self, config: TrainConfig, store: Store, group: Group, raw_stop: threading.Event) -> None:
        self.agreed = threading.Event()  # set on every rank at the same step (see DistributedSession)
        super().__init__(config, store if group.world.leader else FollowerStore(store), self.agreed)
        self.group = group
        self.raw_stop = raw_stop
        self.announced = False

    def new_session(self, data: Cifar10Data) -> TrainingSession:
        return DistributedSession(self.config, data, self.group, self.raw_stop, self.agreed)

    def heartbeat(self) -> None:
        """The leader alone holds and renews the run's lease; a follower never touches it."""
        if self.group.world.leader:
            super().heartbeat()

    def save_checkpoint(self, checkpoints: Checkpoints, session: TrainingSession, wall_seconds: float) -> None:
        """The leader alone stores checkpoints (both slots and their sidecars); every rank holds the same state."""
        if self.group.world.leader:
            super().save_checkpoint(checkpoints, session, wall_seconds)

    def train(self) -> Any:
        if self.group.world.leader:
            self.group.broadcast_from_leader(TRAIN)
            self.announced = True
        return super().train()

    def lead(self) -> int:
        """The leader's attempt: the whole Run, then its exit code to the followers."""
        try:
            code = self.execute()
        except ConfigError as err:  # found only against the data (batch_size): the CLI exits 2
            self.group.broadcast_from_leader(EXIT_INVALID_CONFIG)
            raise err from None
        except (runstate.LeaseHeldError, runstate.LeaseLostError) as exc:  # another live trainer has this run
            log.error("run %s: %s", self.run_id, exc)  # noqa: TRY400 -- the cause is the message
            code = EXIT_DUPLICATE
        except (runstate.RunStateError, StoreError, OSError) as exc:  # the record cannot be read or written
            log.error("run %s: cannot record its status in %s: %s", self.run_id, self.store.uri, exc)  # noqa: TRY400 -- the cause is the message
            code = EXIT_FAILED
        try:
            self.group.broadcast_from_leader(code)
        except RuntimeError as exc:  # a follower that failed on its own has left the group already
            log.warning("run %s: could not tell every rank the exit code %d: %s", self.run_id, code, exc)
        return code

    def follow(self) -> int:
        """A follower's attempt: train when the leader trains, then exit with the leader's code."""
        message = self.group.broadcast_from_leader()
        if message != TRAIN:
            return int(message)
        try:
            self.train()
        except Interrupted:
            log.info("rank %d: stopped with the other ranks", self.group.world.rank)
        except ConfigError as err:  # the leader meets the same setting at the same point and reports it
            log.info("rank %d: %s", self.group.world.rank, err)
        except Exception:  # the leader may be waiting in a collective: leave, torchrun ends the others
            log.exception("rank %d: training failed", self.group.world.rank)
            return EXIT_FAILED
        return int(self.group.broadcast_from_leader())


def main(config: TrainConfig, environ: Mapping[str, str], stop: threading.Event | None = None) -> int:
    """One rank of a distributed run: join the group, lead or follow, leave the group; the exit code.

    stop: the event the CLI's signal handlers (installed first thing) set; without one, handlers are
    installed for the duration of the run.
    """
    if not config.run_id:
        config = config.replace(run_id=local_run_id(config))  # as trainer.run.main: every rank names the same run
    world = world_from_env(environ)
    if (config.batch_size or 0) % world.world_size:  # refused by every rank before any of them waits for another
        raise ConfigError("batch_size", f"{config.batch_size} is not a multiple of WORLD_SIZE {world.world_size}")
    with contextlib.ExitStack() as stack:
        raw_stop = stop if stop is not None else stack.enter_context(stop_on_signals())
        try:
            device = _device_for(config, world)
        except ConfigError:  # this node's own (no usable GPU): tell the others, then exit 2 naming it
            _refuse(world, raw_stop, EXIT_INVALID_CONFIG)
            raise
        if not world.leader:
            config = config.replace(progress="none")  # one progress report per run: the leader's
        # The processes of one node share its work dir (a Batch node's /scratch): each gets its own folder, so
        # two ranks never download a dataset or a checkpoint into the same file at once.
        config = config.replace(work_dir=str(Path(config.work_dir) / f"rank{world.local_rank}"))
        try:
            group = Group(world, device, raw_stop)
        except Interrupted as why:
            log.info("run %s rank %d: %s while the ranks joined; nothing trained", config.run_id, world.rank, why)
            return EXIT_INTERRUPTED  # EX_TEMPFAIL: Batch retries the attempt (terraform/batch.tf)
        except JoinRefusedError as exc:
            log.info("run %s rank %d: %s; exiting with its code", config.run_id, world.rank, exc)
            return exc.code
        except JoinTimeoutError as exc:
            log.error("run %s rank %d: %s", config.run_id, world.rank, exc)  # noqa: TRY400 -- the cause is the message
            return EXIT_FAILED
        log.info("rank %d of %d joined (%s, %s)", world.rank, world.world_size, dist.get_backend(), device)
        try:
            run = DistributedRun(config, open_store(config.store_uri), group, raw_stop)
            return run.lead() if world.leader else run.follow()
        except (StoreError, OSError) as exc:
            log.error("run %s rank %d: %s", config.run_id, world.rank, exc)  # noqa: TRY400 -- the cause is the message
            return EXIT_FAILED
        finally:
            group.close()


def _refuse(world: World, stop: threading.Event, code: int) -> None:
    """Tell the ranks gathering that this one exits `code` (best effort: within REFUSAL_TIMEOUT)."""
    try:
        join(world, stop, REFUSAL_TIMEOUT, refusal=code)
    except (Interrupted, JoinTimeoutError, dist.DistError) as exc:
        log.warning("rank %d: could not tell the other ranks it exits %d: %s", world.rank, code, exc)


def _device_for(config: TrainConfig, world: World) -> torch.device:
    """This process's device: cuda:LOCAL_RANK, or the CPU; `device` cuda without a usable GPU raises
    ConfigError naming it (exit 2 on this rank; `_refuse` makes every other rank exit 2 too)."""
    device = resolve_device(config.device)
    if device.type != "cuda":
        return device
    torch.cuda.set_device(world.local_rank)
    return torch.device("cuda", world.local_rank)


__all__ = [
    "DistributedError",
    "DistributedRun",
    "DistributedSession",
    "FollowerStore",
    "Group",
    "JoinRefusedError",
    "JoinTimeoutError",
    "World",
    "join",
    "join_keys",
    "main",
    "tell_the_gathering",
    "world_from_env",
]
