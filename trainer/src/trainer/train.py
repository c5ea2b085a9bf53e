"""The training loop: a `TrainingSession` that trains epoch by epoch, can stop between any two batches, and
resumes from its `state_dict()` exactly where it stopped.

Resuming reproduces an uninterrupted run because nothing random depends on what ran before: each epoch's
data order and augmentation are drawn up front from a generator seeded by (seed, epoch)
(`trainer.data.plan_epoch`), the learning rate is a function of the global step, and the state carries
the model, optimizer (momentum), lookahead average, BatchNorm statistics, the position in the epoch and
the partial epoch's running sums.

The airbench model trains with the airbench94 recipe (`trainer.recipe`, proven equal to the reference
implementation step for step by trainer/tests/test_airbench_reference.py): BatchNorm biases at 64x the
learning rate, the whitening bias trained in the first 3 epochs only, lookahead every 5 steps, a
triangular schedule from 0.2 to 1 to 0.07 x the peak, alternating flips, and TTA (mirror + translate)
for the final evaluation. Each epoch but the last is evaluated cheaply: the first EPOCH_EVAL_IMAGES test
images, no TTA. A fractional `epochs` (9.9) stops the last pass early.

Small training sets: the batch shrinks so that every epoch has at least MIN_STEPS_PER_EPOCH steps
(`trainer.recipe.fit_batch`), and the learning rate shrinks with it (the same per-example rate); a
training set of fewer than MIN_STEPS_PER_EPOCH images is a configuration error.

    data = load_dataset(config)
    session = TrainingSession(config, data)
    fit(session, should_stop=lambda: False)
    print(session.history[-1])

Expect (airbench, default recipe) about the reference's published 94.01 % mean test accuracy on CIFAR-10
after 9.9 epochs (not measured here; see trainer.nets AIRBENCH_RECIPE); for the wall time on 2 cores in
fp32 and bf16, see the estimate of `make bench ARGS=trainer-speed` (trainer/README.md).
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
from trainer import nets, recipe
from trainer.config import ConfigError, TrainConfig, check_against_dataset
from trainer.counts import Counts
from trainer.data import Cifar10Data
from trainer.metrics import EpochResult, EvalResult, evaluate_logits
from trainer.resources import apply_threads, resolve_device, resolve_precision, retain_freed_memory

log = logging.getLogger(__name__)

STATE_SCHEMA = 2  # 2: the lookahead average, the airbench94 recipe
EVAL_BATCH = 1000  # images per evaluation batch: large enough to keep the cores busy, small in memory
WARMUP_START = recipe.LR_START  # the warmup starts at this fraction of the peak learning rate
PREPARE_IMAGES = recipe.WHITEN_IMAGES  # training images shown to a model's `prepare` hook (airbench: whitening)
EPOCH_EVAL_IMAGES = 2000  # test images evaluated (without TTA) after each epoch but the last
LOSS_SYNC_EVERY = 10  # on a GPU, read the loss for progress reports every this many batches


class NonFiniteLossError(RuntimeError):
    """The training loss became NaN or infinite: the run diverged and must not go on."""


class TrainingSession:
    """Trains `config.model` on `data`, one epoch per `run_epoch` call; see the module docstring."""

    def __init__(self, config: TrainConfig, data: Cifar10Data, device: torch.device | str | None = None) -> None:
        n_train = len(data.train_labels)
        self.batch_size = recipe.fit_batch(config.batch_size, n_train)
        if n_train < recipe.MIN_STEPS_PER_EPOCH:
            raise ConfigError(
                "batch_size",
                f"no batch gives {recipe.MIN_STEPS_PER_EPOCH} steps per epoch on {n_train} training images "
                f"(at least {recipe.MIN_STEPS_PER_EPOCH} images needed)",
            )
        check_against_dataset(config.replace(batch_size=self.batch_size), n_train)
        if self.batch_size != config.batch_size:
            log.warning(
                "batch %d on %d training images leaves fewer than %d steps per epoch: training with batch %d "
                "and the learning rate scaled by the same factor",
                config.batch_size, n_train, recipe.MIN_STEPS_PER_EPOCH, self.batch_size,
            )  # fmt: skip
        self.config = config
        self.data = data
        self.device = torch.device(device) if device is not None else resolve_device(config.device)
        self.precision = resolve_precision(config.precision, self.device)
        self.threads = apply_threads(config.threads)
        if self.device.type == "cpu":
            retain_freed_memory()  # no page faults on the activations every step (trainer.resources)
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

        # 2. the optimizer and the schedule (the peak lr follows the batch when it was scaled down); a model
        # class may define `parameter_groups(lr, weight_decay)`, `lookahead`, `lr_end` and `tta_level`
        # (airbench: trainer.recipe's airbench94), else plain groups, no lookahead, decay to 0, mirror TTA
        self.lr = config.lr * self.batch_size / config.batch_size
        custom_groups = getattr(self.model, "parameter_groups", None)
        if custom_groups is not None:
            groups = custom_groups(self.lr, config.weight_decay)
        else:
            groups = nets.parameter_groups(self.model, config.weight_decay)
            for group in groups:
                group["initial_lr"] = self.lr
        self.optimizer = torch.optim.SGD(
            groups, lr=self.lr, momentum=config.momentum, nesterov=config.momentum > 0
        )  # torch refuses Nesterov without momentum
        self.lookahead = recipe.Lookahead(self.model) if getattr(self.model, "lookahead", False) else None
        self.lr_end: float = getattr(self.model, "lr_end", 0.0)
        self.tta_level: int = getattr(self.model, "tta_level", 1) if config.tta else 0
        self.criterion = nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.steps_per_epoch = n_train // self.batch_size  # the last partial batch is dropped
        self.total_steps = recipe.total_steps(self.steps_per_epoch, config.epochs)
        self.epoch_eval_images = min(EPOCH_EVAL_IMAGES, len(data.test_labels))
        self._final: EvalResult | None = None  # the last epoch's evaluation (full test set, TTA)

        # 3. the position: epochs finished, batches done in the current epoch, and that epoch's running sums
        self.epochs_done = 0
        self.step = 0
        self.history: list[EpochResult] = []
        self._reset_partial()

    # --- schedule --------------------------------------------------------------------------------

    def lr_at(self, global_step: int) -> float:
        """Linear warmup from WARMUP_START x peak to the peak over `warmup` of the steps, then linear decay to
        `lr_end` x peak (airbench: 0.07, cnn: 0) at the last step."""
        factor = recipe.lr_factor(
            min(global_step, self.total_steps), self.total_steps, WARMUP_START, self.config.warmup, self.lr_end
        )
        return self.lr * factor

    @property
    def global_step(self) -> int:
        return self.epochs_done * self.steps_per_epoch + self.step

    @property
    def epochs(self) -> int:
        """Passes over the training set (a fractional `epochs` is rounded up; the last pass stops early)."""
        return math.ceil(self.config.epochs)

    @property
    def finished(self) -> bool:
        return self.epochs_done >= self.epochs

    def _epoch_steps(self) -> int:
        """Steps in the current pass: all, except in the last pass of a fractional `epochs`."""
        return min(self.steps_per_epoch, self.total_steps - self.epochs_done * self.steps_per_epoch)

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
        batch_size = self.batch_size
        for i in range(self.step, self._epoch_steps()):
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
        start_epoch = getattr(self.model, "start_epoch", None)
        if start_epoch is not None:
            start_epoch(self.epochs_done)  # airbench: the whitening bias trains in the first 3 epochs only
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
            loss, logits = self._train_step(images, labels, lr)
            loss_sum += loss.detach() * len(labels)
            correct += (logits.detach().argmax(dim=1) == labels).sum()
            seen += len(labels)
            self.step = i + 1
            if on_batch is not None:
                if self.device.type != "cuda" or self.step % LOSS_SYNC_EVERY == 0 or math.isnan(last_loss):
                    last_loss = loss.item()
                on_batch(self.step, self._epoch_steps(), last_loss)
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
        result = self._evaluate_epoch()
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

    def _train_step(self, images: torch.Tensor, labels: torch.Tensor, lr: float) -> tuple[torch.Tensor, torch.Tensor]:
        """One optimizer step at learning rate `lr` (then the lookahead update, when one is due)."""
        recipe.set_lr(self.optimizer, lr / self.lr if self.lr else 0.0)
        with self._autocast():
            logits = self.model(images)
        loss = self.criterion(logits.float(), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        if self.lookahead is not None:
            for decay in recipe.lookahead_updates(self.global_step + 1, self.total_steps):
                self.lookahead.update(self.model, decay)
        return loss, logits

    def _evaluate_epoch(self) -> EvalResult:
        """The last epoch: the whole test set with TTA (kept for `evaluate`); the others: the first
        EPOCH_EVAL_IMAGES test images without TTA, a cheap progress signal."""
        if self.epochs_done + 1 >= self.epochs:
            self._final = self.evaluate()
            return self._final
        n = self.epoch_eval_images
        logits = self.predict_logits(self.data.test_images[:n], tta_level=0)
        return evaluate_logits(logits, self.data.test_labels[:n], self.data.classes)

    @torch.inference_mode()
    def predict_logits(self, images: torch.Tensor, tta_level: int | None = None) -> torch.Tensor:
        """Logits for uint8 images (Nx3x32x32), in evaluation mode, with test-time augmentation at `tta_level`
        (default: the session's; `trainer.recipe.tta_logits`)."""
        level = self.tta_level if tta_level is None else tta_level
        self.model.eval()
        outputs = []

        def model(x: torch.Tensor) -> torch.Tensor:
            return self.model(x).float()

        for start in range(0, len(images), EVAL_BATCH):
            batch = datamod.to_float(images[start : start + EVAL_BATCH].to(self.device))
            if self.channels_last:
                batch = batch.contiguous(memory_format=torch.channels_last)
            with self._autocast():
                outputs.append(recipe.tta_logits(model, batch, level))
        return torch.cat(outputs)

    def evaluate(self) -> EvalResult:
        """Loss, per-sample accuracy, per-class accuracy and confusion matrix on the whole test set, with TTA
        (computed once after the last epoch and reused)."""
        if self._final is not None and self.finished:
            return self._final
        logits = self.predict_logits(self.data.test_images)
        return evaluate_logits(logits, self.data.test_labels, self.data.classes)

    def validate(self) -> Counts:
        """Exact counts on the held-out validation set (config.val_images).

        Without test-time augmentation, the same at every rung and at the end: a ranking signal that
        compares between the runs of a sweep. A session without a validation set raises ValueError.
        """
        if self.data.val_images is None or self.data.val_labels is None:
            raise ValueError("this run holds out no validation set (val_images is 0)")
        logits = self.predict_logits(self.data.val_images, tta_level=0)
        correct = int((logits.argmax(dim=1).cpu() == self.data.val_labels).sum().item())
        return Counts(correct, len(self.data.val_labels))

    # --- checkpoint state ------------------------------------------------------------------------

    def state_dict(self) -> dict[str, Any]:
        """Everything needed to resume: model, optimizer, position, history, partial epoch, RNG states, config."""
        return {
            "schema": STATE_SCHEMA,
            "config": self.config.to_dict(),
            "model": self.model.state_dict(),
            "optimizer": self.optimizer.state_dict(),
            "lookahead": self.lookahead.state_dict() if self.lookahead is not None else None,
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
        if self.lookahead is not None:
            self.lookahead.load_state_dict(state["lookahead"])
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
        log.info("epoch %d/%d: test accuracy %.4f", result.epoch, session.epochs, result.test_accuracy)
        if on_epoch is not None:
            on_epoch(result)
    return True
