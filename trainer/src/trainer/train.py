"""The training loop: a `TrainingSession` that trains epoch by epoch, can stop between any two batches, and
resumes from its `state_dict()` exactly where it stopped.

Resuming reproduces an uninterrupted run because nothing random depends on what ran before: each epoch's
data order and augmentation are drawn up front from a generator seeded by (seed, epoch)
(`trainer.data.plan_epoch`), the learning rate is a function of the global step, and the state carries
the model, optimizer (momentum), BatchNorm statistics, the position in the epoch and the partial epoch's
running sums.

    data = load_dataset(config)
    session = TrainingSession(config, data)
    fit(session, should_stop=lambda: False)
    print(session.history[-1])

Expect (airbench, default recipe) ~94 % test accuracy on CIFAR-10 after 10 epochs (see trainer.config
RECIPES for where that number comes from); on 2 cores with native bf16 about 750 training images/s, i.e. ~13
minutes with evaluation (`make bench ARGS=trainer`; about half that speed in fp32).
"""

from __future__ import annotations

import contextlib
import logging
import math
import random
import time
from collections.abc import Callable, Iterator
from typing import Any

import numpy as np
import torch
from torch import nn

from trainer import data as datamod
from trainer import nets
from trainer.config import TrainConfig, check_against_dataset
from trainer.data import Cifar10Data
from trainer.metrics import EpochResult, EvalResult, evaluate_logits
from trainer.resources import apply_threads, resolve_device, resolve_precision

log = logging.getLogger(__name__)

STATE_SCHEMA = 1
EVAL_BATCH = 1000  # images per evaluation batch: large enough to keep the cores busy, small in memory
WARMUP_START = 0.2  # the warmup starts at this fraction of the peak learning rate (airbench's schedule)
PREPARE_IMAGES = 5000  # training images shown to a model's `prepare` hook (airbench fits its whitening stem)
LOSS_SYNC_EVERY = 10  # on a GPU, read the loss for progress reports every this many batches


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run diverged and must not go on."""


class TrainingSession:
    """Trains `config.model` on `data`, one epoch per `run_epoch` call; see the module docstring."""

    def __init__(self, config: TrainConfig, data: Cifar10Data, device: torch.device | str | None = None) -> None:
        check_against_dataset(config, len(data.train_labels))
        self.config = config
        self.data = data
        self.device = torch.device(device) if device is not None else resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.threads = apply_threads(config.threads)
        # NHWC: measured 1.2-1.7x faster training here (oneDNN, both models, fp32 and bf16); cuDNN likes it with AMP
        self.channels_last = True
        if self.device.type == "cuda":
            torch.backends.cudnn.benchmark = True  # fixed shapes: pick the fastest kernels once
        # the uint8 training set on the device once (150 MB for CIFAR-10): no copy per batch
        self._train_images = data.train_images.to(self.device)
        self._train_labels = data.train_labels.to(self.device)

        # 1. the model, initialized from the seed, then its optional `prepare` hook on training images
        torch.manual_seed(config.seed)
        self.model = nets.build_model(config.model, data.num_classes).to(self.device)
        prepare = getattr(self.model, "prepare", None)
        if prepare is not None:
            prepare(datamod.to_float(data.train_images[:PREPARE_IMAGES]))
        if self.channels_last:
            self.model = self.model.to(memory_format=torch.channels_last)
        self.augment_pad: int = getattr(self.model, "augment_pad", 0)

        # 2. the optimizer and the schedule
        self.optimizer = torch.optim.SGD(
            nets.parameter_groups(self.model, config.weight_decay),
            lr=config.lr,
            momentum=config.momentum,
            nesterov=config.momentum > 0,  # torch refuses Nesterov without momentum
        )
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.steps_per_epoch = len(data.train_labels) // config.batch_size  # the last partial batch is dropped
        self.total_steps = self.steps_per_epoch * config.epochs

        # 3. the position: epochs finished, batches done in the current epoch, and that epoch's running sums
        self.epochs_done = 0
        self.step = 0
        self.history: list[EpochResult] = []
        self._reset_partial()

    # --- schedule --------------------------------------------------------------------------------

    def lr_at(self, global_step: int) -> float:
        """Linear warmup from WARMUP_START x peak to the peak over `warmup` of the steps, then linear decay to 0."""
        peak = self.config.lr
        warm = round(self.config.warmup * self.total_steps)
        if global_step < warm:
            return peak * (WARMUP_START + (1 - WARMUP_START) * global_step / warm)
        remaining = self.total_steps - global_step
        return peak * max(remaining, 0) / max(self.total_steps - warm, 1)

    @property
    def global_step(self) -> int:
        return self.epochs_done * self.steps_per_epoch + self.step

    @property
    def finished(self) -> bool:
        return self.epochs_done >= self.config.epochs

    # --- training --------------------------------------------------------------------------------

    def _autocast(self) -> contextlib.AbstractContextManager[Any]:
        if self.precision == "bf16":
            return torch.autocast(self.device.type, dtype=torch.bfloat16)
        return contextlib.nullcontext()

    def _reset_partial(self) -> None:
        self._loss_sum = 0.0
        self._correct = 0
        self._seen = 0
        self._seconds = 0.0

    def _batches(self, plan: datamod.EpochPlan) -> Iterator[tuple[int, torch.Tensor, torch.Tensor]]:
        batch_size = self.config.batch_size
        for i in range(self.step, self.steps_per_epoch):
            idx = self._shard(plan.order[i * batch_size : (i + 1) * batch_size])
            on_device = idx.to(self.device, non_blocking=True)
            images = datamod.to_float(self._train_images[on_device])
            images = datamod.augment(images, plan.shift_y[idx], plan.shift_x[idx], plan.flip[idx], self.augment_pad)
            if not self.channels_last:
                images = images.contiguous()
            yield i, images, self._train_labels[on_device]

    # Hooks for data-parallel training (trainer.distributed.DistributedSession overrides both): a single
    # process trains the whole batch and its sums are the epoch's.

    def _shard(self, batch: torch.Tensor) -> torch.Tensor:
        """The rows of one global batch (training-set indices) that this process trains on."""
        return batch

    def _end_of_pass(self, loss_sum: torch.Tensor, correct: torch.Tensor, seen: int) -> tuple[float, int, int]:
        """The summed loss, correct answers and images of the batches just trained, over every process."""
        return loss_sum.item(), int(correct.item()), seen

    def run_epoch(
        self,
        should_stop: Callable[[], bool] = lambda: False,
        on_batch: Callable[[int, int, float], None] | None = None,
    ) -> EpochResult | None:
        """Train the rest of the current epoch from `step`, then evaluate.

        `should_stop` is asked before every batch; when it answers True the session stops there and
        returns None, in a state that `state_dict()` can save and a new session can resume exactly.
        `on_batch(step, steps_per_epoch, loss)` is called after every batch (for progress bars); on a GPU
        the loss it sees is refreshed every LOSS_SYNC_EVERY batches, so reporting does not stall the GPU.
        """
        if self.finished:
            raise RuntimeError(f"all {self.config.epochs} epochs are done")
        plan = datamod.plan_epoch(len(self.data.train_labels), self.config.seed, self.epochs_done, self.augment_pad)
        self.model.train()
        loss_sum = torch.zeros((), device=self.device)  # summed on the device: no sync per batch on a GPU
        correct = torch.zeros((), dtype=torch.int64, device=self.device)
        seen = 0
        started = time.perf_counter()
        lr = self.lr_at(self.global_step)
        stopped = False
        last_loss = float("nan")
        for i, images, labels in self._batches(plan):
            if should_stop():
                stopped = True
                break
            lr = self.lr_at(self.global_step)
            for group in self.optimizer.param_groups:
                group["lr"] = lr
            with self._autocast():
                logits = self.model(images)
            loss = self.criterion(logits.float(), labels)
            self.optimizer.zero_grad(set_to_none=True)
            loss.backward()
            self.optimizer.step()
            loss_sum += loss.detach() * len(labels)
            correct += (logits.detach().argmax(dim=1) == labels).sum()
            seen += len(labels)
            self.step = i + 1
            if on_batch is not None:
                if self.device.type != "cuda" or self.step % LOSS_SYNC_EVERY == 0 or math.isnan(last_loss):
                    last_loss = loss.item()
                on_batch(self.step, self.steps_per_epoch, last_loss)
        if self.device.type == "cuda":
            torch.cuda.synchronize(self.device)
        pass_loss, pass_correct, pass_seen = self._end_of_pass(loss_sum, correct, seen)
        self._loss_sum += pass_loss
        self._correct += pass_correct
        self._seen += pass_seen
        self._seconds += time.perf_counter() - started
        if not math.isfinite(self._loss_sum):
            # diverged: the weights are garbage now, and so would be every checkpoint and version after this
            raise NonFiniteLossError(
                f"training loss is {self._loss_sum} in epoch {self.epochs_done + 1} by step {self.step}: the run "
                f"diverged (lower lr={self.config.lr}?); nothing is checkpointed or published from here"
            )
        if stopped:
            return None

        # the epoch is complete: evaluate, record, move on
        evaluated = time.perf_counter()
        result = self.evaluate()
        eval_seconds = time.perf_counter() - evaluated
        epoch = EpochResult(
            epoch=self.epochs_done + 1,
            train_loss=self._loss_sum / max(self._seen, 1),
            train_accuracy=self._correct / max(self._seen, 1),
            test_loss=result.loss,
            test_accuracy=result.accuracy,
            images_per_s=self._seen / self._seconds if self._seconds > 0 else 0.0,
            seconds=self._seconds,
            eval_seconds=eval_seconds,
            lr=lr,
        )
        self.history.append(epoch)
        self.epochs_done += 1
        self.step = 0
        self._reset_partial()
        return epoch

    @torch.inference_mode()
    def predict_logits(self, images: torch.Tensor) -> torch.Tensor:
        """Logits for uint8 images (Nx3x32x32), in evaluation mode, with flip TTA when `config.tta`."""
        self.model.eval()
        outputs = []
        for start in range(0, len(images), EVAL_BATCH):
            batch = datamod.to_float(images[start : start + EVAL_BATCH].to(self.device))
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                logits = self.model(batch).float()
                if self.config.tta:
                    logits = (logits + self.model(batch.flip(3)).float()) / 2
            outputs.append(logits)
        return torch.cat(outputs)

    def evaluate(self) -> EvalResult:
        """Loss, per-sample accuracy, per-class accuracy and confusion matrix on the test set."""
        logits = self.predict_logits(self.data.test_images)
        return evaluate_logits(logits, self.data.test_labels, self.data.classes)

    # --- checkpoint state ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: model, optimizer, position, history, partial epoch, RNG states, config."""
        return {
            "schema": STATE_SCHEMA,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "epochs_done": self.epochs_done,
            "step": self.step,
            "steps_per_epoch": self.steps_per_epoch,
            "history": [r.to_dict() for r in self.history],
            "partial": {
                "loss_sum": self._loss_sum,
                "correct": self._correct,
                "seen": self._seen,
                "seconds": self._seconds,
            },
            "rng": {
                "torch": torch.get_rng_state(),
                "cuda": torch.cuda.get_rng_state_all() if torch.cuda.is_available() else [],
                "numpy": np.random.get_state(),
                "python": random.getstate(),
            },
        }

    def load_state_dict(self, state: dict[str, Any]) -> None:
        """Resume from `state_dict()`; a state from another schema or an incompatible run raises ValueError."""
        if state.get("schema") != STATE_SCHEMA:
            raise ValueError(f"training state schema {state.get('schema')!r}, this trainer reads {STATE_SCHEMA}")
        differences = self.config.run_differences(state["config"])
        if differences:
            name, saved, ours = differences[0]
            raise ValueError(f"training state is for {name}={saved!r}, this run has {name}={ours!r}")
        if state["steps_per_epoch"] != self.steps_per_epoch:
            theirs, ours = state["steps_per_epoch"], self.steps_per_epoch
            raise ValueError(f"training state has {theirs} steps per epoch, this dataset gives {ours}")
        self.model.load_state_dict(state["model"])
        self.optimizer.load_state_dict(state["optimizer"])
        self.epochs_done = int(state["epochs_done"])
        self.step = int(state["step"])
        self.history = [EpochResult.from_dict(r) for r in state["history"]]
        partial = state["partial"]
        self._loss_sum = float(partial["loss_sum"])
        self._correct = int(partial["correct"])
        self._seen = int(partial["seen"])
        self._seconds = float(partial["seconds"])
        rng = state["rng"]
        torch.set_rng_state(rng["torch"])
        if rng["cuda"] and torch.cuda.is_available():
            torch.cuda.set_rng_state_all(rng["cuda"])
        np.random.set_state(rng["numpy"])
        random.setstate(rng["python"])

    def model_config(self) -> dict[str, Any]:
        """What `nets.build_model` needs to rebuild this model (saved next to the weights)."""
        return {"model": self.config.model, "num_classes": self.data.num_classes, "classes": list(self.data.classes)}


def fit(
    session: TrainingSession,
    should_stop: Callable[[], bool] = lambda: False,
    on_epoch: Callable[[EpochResult], None] | None = None,
    on_batch: Callable[[int, int, float], None] | None = None,
) -> bool:
    """Run epochs until done or stopped; True when all epochs finished. `on_epoch` sees each finished epoch
    (checkpoint there); `should_stop` is asked before every batch, and between epochs."""
    while not session.finished:
        if should_stop():
            return False
        result = session.run_epoch(should_stop, on_batch)
        if result is None:
            return False
        log.info("epoch %d/%d: test accuracy %.4f", result.epoch, session.config.epochs, result.test_accuracy)
        if on_epoch is not None:
            on_epoch(result)
    return True
