"""Differential tests: our airbench94 recipe against the reference implementation, airbench==0.1.8.

The reference (`airbench/lib_airbench94.py`, `airbench/utils.py`; a test-only dependency) is run on the
CPU in fp32: its CUDA timing events and synchronization are replaced by no-ops, its test loader by a
stand-in, and its network is built from its own classes with `.half()`/`.cuda()` turned into no-ops.
Its training loop (`airbench.utils.train`) and its training loader (`CifarLoader`: normalize, flip once,
reflect-pad, `batch_crop` every epoch, mirror everything every other epoch, shuffle, drop the partial
batch) run unchanged; only the loader's random draws are replaced by ours (`OurDraws`), so the two
pipelines see the same randomness and must produce the same batches.

What these tests prove, and what not: equality within 1e-5 (relative to each tensor's scale; 1e-4 for
weights after training) in fp32 on the CPU, for the recipe's hyperparameters, every step's learning
rates, weight decays and lookahead of a full-size `TrainingSession` (50,000 images, 476 steps), the
whitening stem fitted on the reference's 5,000 images, the augmented batches epoch by epoch, the
network's logits and gradients, the trainer's own TTA evaluation, and the weights after training a few
epochs end to end. Not bit-for-bit, not the bf16/fp16 paths that train in production, and not the
94.01 % accuracy, which is the reference's published figure (no CIFAR-10 here).
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
import torch
from airbench_cpu import cuda_calls_on_cpu
from torch import nn
from trainer.config import TrainConfig
from trainer.data import Cifar10Data, plan_epoch
from trainer.nets import CIFAR10_MEAN, CIFAR10_STD, Normalize
from trainer.train import TrainingSession, fit

from trainer import data as datamod
from trainer import recipe

ab_utils = pytest.importorskip("airbench.utils")
ab94 = pytest.importorskip("airbench.lib_airbench94")
RealCifarLoader = ab_utils.CifarLoader  # `reference_on_cpu` swaps the module's name for the test loader's stand-in
CIFAR10_TRAIN = 50_000


# --- the reference on the CPU -----------------------------------------------------------------------


class _NoLoader:
    def __init__(self, *_: Any, **__: Any) -> None:
        pass


class ReferenceLoader:
    """What the reference's training loop reads of a CifarLoader: batches (normalized), the batch size,
    the training images for the whitening stem, and the normalization."""

    def __init__(self, epochs: list[list[tuple[torch.Tensor, torch.Tensor]]], images: torch.Tensor, batch_size: int):
        self.epoch_batches = epochs
        self.images = images  # float in [0, 1], as the reference keeps them (in fp16 there)
        self.batch_size = batch_size
        self.normalize = ab_utils.T.Normalize(ab_utils.CIFAR_MEAN, ab_utils.CIFAR_STD)
        self.epoch = 0

    def __len__(self) -> int:
        return len(self.epoch_batches[0])

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        batches = self.epoch_batches[min(self.epoch, len(self.epoch_batches) - 1)]
        self.epoch += 1
        for images, labels in batches:
            yield self.normalize(images), labels


def _put_reference_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    cuda_calls_on_cpu(monkeypatch)
    monkeypatch.setattr(ab_utils, "CifarLoader", _NoLoader)


@pytest.fixture
def reference_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    _put_reference_on_cpu(monkeypatch)


GroupSettings = list[tuple[float, float, float, bool]]  # per parameter group: (lr, weight_decay, momentum, nesterov)


def group_settings(optimizer: torch.optim.Optimizer) -> GroupSettings:
    return [(float(g["lr"]), float(g["weight_decay"]), g["momentum"], g["nesterov"]) for g in optimizer.param_groups]


class Recorder:
    """Records, for every optimizer step of the reference, each group's (lr, weight_decay, momentum,
    nesterov) and whether the whitening bias trains, after which step each lookahead update ran with
    which decay, and the parameters of each group (as ids) when the optimizer was built."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.steps: list[GroupSettings] = []
        self.whiten_bias_trains: list[bool] = []
        self.lookahead: list[tuple[int, float]] = []
        self.groups: list[list[int]] = []
        self.net: nn.Module | None = None
        recorder = self

        class RecordingSGD(torch.optim.SGD):
            def __init__(self, params: Any, *args: Any, **kwargs: Any) -> None:
                super().__init__(params, *args, **kwargs)
                recorder.groups = [[id(p) for p in g["params"]] for g in self.param_groups]

            def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
                recorder.steps.append(group_settings(self))
                assert recorder.net is not None
                recorder.whiten_bias_trains.append(recorder.net[0].bias.requires_grad)
                return super().step(closure)

        original_update = ab_utils.LookaheadState.update

        def update(state: Any, net: nn.Module, decay: float) -> None:
            recorder.lookahead.append((len(recorder.steps), float(decay)))
            original_update(state, net, decay)

        monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
        monkeypatch.setattr(ab_utils.LookaheadState, "update", update)

    def make(self, make_net: Callable[[], nn.Module]) -> Callable[[], nn.Module]:
        """`make_net`, keeping the net it built (the reference's loop builds it inside)."""

        def build() -> nn.Module:
            self.net = make_net()
            return self.net

        return build


class OurDraws:
    """Stands in for the `torch` module inside airbench.utils: every name passes through to torch, except
    the training loader's three random draws, which return the trainer's (`trainer.data.plan_epoch`)
    for the epoch the loader is in. The draws correspond one to one (a bijection of equally likely
    values, so the distributions are the same too):
    - `batch_flip_lr`'s coin per image (epoch 0 only: the reference mirrors the images once, before
      padding, then mirrors all of them every other epoch) <- our mirror state in epoch 0;
    - `batch_crop`'s (dy, dx) in [-2, 2] <- our crop offsets (shift_y, shift_x) in [0, 4] minus 2, with dx
      mirrored for an image the reference pre-flipped (cropping a mirror image at dx is mirroring the
      crop of the original at -dx);
    - `randperm`'s order <- our order.
    Whatever the trainer does with its draws (crop, mirror, alternate, batch, drop) must then give the
    reference loader's batches.
    """

    def __init__(self, loader: Any, seed: int, pad: int) -> None:
        self.loader, self.seed, self.pad = loader, seed, pad
        self.n = len(loader.images)
        self.first_flip = self._plan(0).flip

    def __getattr__(self, name: str) -> Any:
        return getattr(torch, name)

    def _plan(self, epoch: int) -> Any:
        return plan_epoch(self.n, self.seed, epoch, self.pad)

    def rand(self, n: int, device: Any = None) -> torch.Tensor:
        assert (n, self.loader.epoch) == (self.n, 0), "the reference draws its flips once, in epoch 0"
        return torch.where(self.first_flip, 0.25, 0.75)  # flipped where < 0.5

    def randint(self, low: int, high: int, size: tuple[int, ...], device: Any = None) -> torch.Tensor:
        assert (low, high, tuple(size)) == (-self.pad, self.pad + 1, (self.n, 2))
        plan = self._plan(self.loader.epoch)
        dx = torch.where(self.first_flip, self.pad - plan.shift_x, plan.shift_x - self.pad)
        return torch.stack((plan.shift_y - self.pad, dx), dim=1)

    def randperm(self, n: int, device: Any = None) -> torch.Tensor:
        assert n == self.n
        return self._plan(self.loader.epoch - 1).order  # the loader counts the epoch before it shuffles


def reference_loader(folder: Path, data: Cifar10Data, batch_size: int) -> Any:
    """The reference's own training loader over `data`'s training images, as `train94` builds it
    (hyp["aug"]: flip and translate 2, alternating flips), with the images kept in fp32 (it makes
    them fp16 for the GPU)."""
    folder.mkdir(parents=True, exist_ok=True)
    nhwc = data.train_images.permute(0, 2, 3, 1).contiguous()
    torch.save({"images": nhwc, "labels": data.train_labels, "classes": list(data.classes)}, folder / "train.pt")
    loader = RealCifarLoader(
        str(folder), train=True, batch_size=batch_size, aug=ab94.hyp["aug"], altflip=True, gpu="cpu"
    )
    loader.images = (data.train_images.float() / 255).to(memory_format=torch.channels_last)
    return loader


def fake_data(n_train: int, n_test: int, seed: int = 0, distinct: int | None = None) -> Cifar10Data:
    """Smooth random uint8 images in memory (their 2x2 patches have distinct covariance eigenvalues, so
    whitening filters are well defined) with random labels; only the first `distinct` training images
    are drawn, the rest repeat them (a full-size set without the memory of drawing it)."""
    distinct = min(n_train, distinct or n_train)
    train = (_correlated_images(distinct, seed) * 255).round().to(torch.uint8)
    if distinct < n_train:
        train = train.repeat(math.ceil(n_train / distinct), 1, 1, 1)[:n_train]
    test = (_correlated_images(n_test, seed + 1) * 255).round().to(torch.uint8)
    gen = torch.Generator().manual_seed(seed)
    return Cifar10Data(
        train, torch.randint(0, 10, (n_train,), generator=gen),
        test, torch.randint(0, 10, (n_test,), generator=gen),
        classes=tuple(f"c{i}" for i in range(10)), checksum="sha256:fake", source="memory", generated=True,
    )  # fmt: skip


def cpu_config(**changes: Any) -> TrainConfig:
    """The default recipe in fp32 on one CPU thread."""
    return TrainConfig(precision="fp32", threads=1, device="cpu", progress="none").replace(**changes)


def stand_in_network(session: TrainingSession, seen: list[torch.Tensor] | None = None) -> None:
    """Replace the session's forward pass by one that costs nothing: zero logits that still depend on a
    weight (so backward and the optimizer run), recording the training batches it is given. Everything
    else (batches, schedule, optimizer, lookahead, evaluation) stays the trainer's."""
    head = session.model.head.weight

    def forward(x: torch.Tensor) -> torch.Tensor:
        if seen is not None and session.model.training:
            seen.append(x.detach().clone())
        return torch.zeros(len(x), head.shape[0]) + 0 * head.sum()

    session.model.forward = forward  # an instance attribute: nn.Module.__call__ finds it first


def run_reference(
    loader: ReferenceLoader, make_net: Callable[[], nn.Module], epochs: float = recipe.TRAIN_EPOCHS
) -> nn.Module:
    """The reference's training loop with the airbench94 hyperparameters (its defaults), no printing."""
    hyp = ab94.hyp["opt"]
    return ab_utils.train(
        loader,
        epochs,
        hyp["label_smoothing"],
        hyp["lr"],
        hyp["bias_scaler"],
        hyp["momentum"],
        hyp["weight_decay"],
        hyp["whiten_bias_epochs"],
        ab94.hyp["net"]["tta_level"],
        make_net,
        0,
        False,
    )


def _tiny_net() -> nn.Module:
    """The smallest net the reference's loop accepts: a whitening stem at [0], a BatchNorm bias, a head."""
    net = nn.Sequential(
        OrderedDict(
            [
                ("0", ab94.Conv(3, 24, 2, padding=0, bias=True)),
                ("flat", nn.Flatten()),
                ("norm", nn.BatchNorm1d(24)),
                ("head", nn.Linear(24, 10, bias=False)),
            ]
        )
    )
    net[0].weight.requires_grad = False
    return net


# --- the hyperparameters and the schedules, every step of a full run ------------------------------


def test_hyperparameters_are_the_references() -> None:
    hyp = ab94.hyp
    assert (hyp["opt"]["train_epochs"], hyp["opt"]["batch_size"]) == (recipe.TRAIN_EPOCHS, recipe.BATCH_SIZE)
    assert (
        hyp["opt"]["lr"],
        hyp["opt"]["weight_decay"],
        hyp["opt"]["momentum"],
    ) == (recipe.LR_PER_1024, recipe.WD_PER_1024, recipe.MOMENTUM)
    assert hyp["opt"]["bias_scaler"] == recipe.BIAS_LR_SCALE
    assert hyp["opt"]["label_smoothing"] == recipe.LABEL_SMOOTHING
    assert hyp["opt"]["whiten_bias_epochs"] == recipe.WHITEN_BIAS_EPOCHS
    assert hyp["aug"]["translate"] == recipe.TRANSLATE
    assert hyp["net"]["tta_level"] == recipe.TTA_LEVEL
    assert pytest.approx(1 - hyp["net"]["batchnorm_momentum"]) == recipe.BN_MOMENTUM
    bn = ab94.BatchNorm(4, hyp["net"]["batchnorm_momentum"])
    assert bn.eps == recipe.BN_EPS


@pytest.fixture(scope="module")
def reference_full_run() -> Recorder:
    """The reference's training loop over full-size epochs (48 batches of 1024) for 9.9 epochs, training a
    tiny stand-in network (only the arithmetic of the schedule is recorded)."""
    with pytest.MonkeyPatch.context() as monkeypatch:
        _put_reference_on_cpu(monkeypatch)
        torch.manual_seed(0)
        steps_per_epoch = CIFAR10_TRAIN // recipe.BATCH_SIZE
        tiny_batch = [(torch.rand(2, 3, 2, 2), torch.randint(0, 10, (2,)))] * steps_per_epoch
        loader = ReferenceLoader([tiny_batch], torch.rand(8, 3, 2, 2), recipe.BATCH_SIZE)
        recorded = Recorder(monkeypatch)
        run_reference(loader, recorded.make(_tiny_net))
    return recorded


@pytest.fixture(scope="module")
def full_session() -> dict[str, Any]:
    """A TrainingSession of the default recipe on 50,000 fake training images (100 test images), run to the
    end with its network replaced by a stand-in (`stand_in_network`: no forward/backward work) and the
    crops skipped, and what it did at every step: each group's settings, whether the whitening bias
    trained, the lookahead updates, and the TTA level of each evaluation."""
    data = fake_data(CIFAR10_TRAIN, 100, distinct=6000)
    steps: list[GroupSettings] = []
    whiten_bias_trains: list[bool] = []
    lookahead: list[tuple[int, float]] = []
    levels: list[int] = []
    with pytest.MonkeyPatch.context() as monkeypatch:
        tta_logits = recipe.tta_logits

        def tta(model: Callable[[torch.Tensor], torch.Tensor], images: torch.Tensor, level: int) -> torch.Tensor:
            levels.append(level)
            return tta_logits(model, images, level)

        monkeypatch.setattr(recipe, "tta_logits", tta)
        # the crops are compared with the reference's in the loader test; here they would only cost time
        monkeypatch.setattr(datamod, "augment", lambda images, *_: images)
        session = TrainingSession(cpu_config(), data)
        names = {id(p): reference_name(n) for n, p in session.model.named_parameters()}
        groups = [[names[id(p)] for p in g["params"]] for g in session.optimizer.param_groups]
        whitening = session.model.whiten.weight.detach().clone()
        optimizer_step, lookahead_update = session.optimizer.step, session.lookahead.update

        def step(*args: Any, **kwargs: Any) -> Any:
            steps.append(group_settings(session.optimizer))
            whiten_bias_trains.append(session.model.whiten.bias.requires_grad)
            return optimizer_step(*args, **kwargs)

        def update(model: nn.Module, decay: float) -> None:
            lookahead.append((len(steps), float(decay)))
            lookahead_update(model, decay)

        monkeypatch.setattr(session.optimizer, "step", step)
        monkeypatch.setattr(session.lookahead, "update", update)
        stand_in_network(session)
        assert fit(session)
    return {
        "data": data,
        "batch_size": session.batch_size,
        "epochs": session.epochs,
        "groups": groups,
        "whitening": whitening,
        "steps": steps,
        "whiten_bias_trains": whiten_bias_trains,
        "lookahead": lookahead,
        "levels": levels,
    }


def test_every_step_of_a_full_run_has_the_references_lr_momentum_weight_decay_and_lookahead(
    reference_full_run: Recorder,
) -> None:
    # GIVEN the reference's loop recorded over a full run (48 steps per epoch, 9.9 epochs)
    recorded = reference_full_run
    steps_per_epoch, batch = CIFAR10_TRAIN // recipe.BATCH_SIZE, recipe.BATCH_SIZE
    # THEN it took as many steps as the recipe's functions say
    total = recipe.total_steps(steps_per_epoch, recipe.TRAIN_EPOCHS)
    assert len(recorded.steps) == total == 476
    # AND every step used our per-example lr (mean-loss lr / batch), the same decay per step, momentum
    lr = recipe.mean_loss_lr(batch)
    wd = recipe.mean_loss_weight_decay()
    ours = [(factor, decays) for factor, decays in recipe.schedule_table(steps_per_epoch, recipe.TRAIN_EPOCHS)]
    for step, (groups, (factor, _)) in enumerate(zip(recorded.steps, ours, strict=True)):
        (bias_lr, bias_wd, momentum, nesterov), (other_lr, other_wd, _, _) = groups
        assert other_lr == pytest.approx(lr * factor / batch, rel=1e-6), step
        assert bias_lr == pytest.approx(recipe.BIAS_LR_SCALE * lr * factor / batch, rel=1e-6), step
        assert other_lr * other_wd == pytest.approx(lr * factor * wd, rel=1e-6), step
        assert bias_lr * bias_wd == pytest.approx(lr * factor * wd, rel=1e-6), step
        assert (momentum, nesterov) == (recipe.MOMENTUM, True)
    # AND the lookahead updates came after the same steps with the same decays
    ours_lookahead = [(step + 1, d) for step, (_, decays) in enumerate(ours) for d in decays]
    assert [s for s, _ in recorded.lookahead] == [s for s, _ in ours_lookahead]
    for (_, theirs), (step, mine) in zip(recorded.lookahead, ours_lookahead, strict=True):
        assert theirs == pytest.approx(mine, rel=1e-6, abs=1e-12), step


def test_a_full_size_session_steps_with_the_references_settings_at_every_step(
    full_session: dict[str, Any], reference_full_run: Recorder
) -> None:
    # GIVEN our TrainingSession run to the end on 50,000 images and the reference's loop on full-size epochs
    ours, theirs = full_session["steps"], reference_full_run.steps
    batch = full_session["batch_size"]
    # THEN both took 476 optimizer steps (9.9 x 48, rounded up) in 10 passes, with batch 1024
    assert (len(ours), len(theirs), full_session["epochs"], batch) == (476, 476, 10, 1024)
    for step, (our_groups, their_groups) in enumerate(zip(ours, theirs, strict=True)):
        assert len(our_groups) == len(their_groups) == 2, step
        for (lr, wd, momentum, nesterov), (t_lr, t_wd, t_momentum, t_nesterov) in zip(
            our_groups, their_groups, strict=True
        ):
            # a mean loss: our gradients are the summed loss's / batch, so our lr is theirs x batch ...
            assert lr == pytest.approx(t_lr * batch, rel=1e-6), step
            # ... and every parameter decays by the same amount per step
            assert lr * wd == pytest.approx(t_lr * t_wd, rel=1e-6), step
            assert (momentum, nesterov) == (t_momentum, t_nesterov), step
        # the BatchNorm biases' group at 64x the lr of the others, in both
        assert our_groups[0][0] / our_groups[1][0] == pytest.approx(their_groups[0][0] / their_groups[1][0], rel=1e-9)
    # AND the whitening bias trained in the same steps (the first 3 epochs)
    assert full_session["whiten_bias_trains"] == reference_full_run.whiten_bias_trains
    assert sum(full_session["whiten_bias_trains"]) == 3 * 48
    # AND the lookahead updated after the same steps with the same decays (the last one resets to the average)
    assert [s for s, _ in full_session["lookahead"]] == [s for s, _ in reference_full_run.lookahead]
    for (step, mine), (_, t) in zip(full_session["lookahead"], reference_full_run.lookahead, strict=True):
        assert mine == pytest.approx(t, rel=1e-6, abs=1e-12), step
    # AND the session evaluated each epoch but the last without TTA, the last at the reference's TTA level
    epochs = full_session["epochs"]
    assert full_session["levels"] == [0] * (epochs - 1) + [ab94.hyp["net"]["tta_level"]]


def test_a_full_size_session_whitens_on_the_references_5000_images_and_groups_parameters_as_it_does(
    full_session: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the reference's loop building its own network (fp32 on the CPU) over the same training images
    # (it takes its whitening sample from them itself), with no batches to train
    _put_reference_on_cpu(monkeypatch)
    data = full_session["data"]
    loader = ReferenceLoader([[]], data.train_images[:6000].float() / 255, recipe.BATCH_SIZE)
    recorded = Recorder(monkeypatch)
    theirs = run_reference(loader, recorded.make(lambda: ab94.make_net94().float()))
    # THEN our session's whitening stem (fitted on 50,000 offered images) equals the reference's
    assert_close_to_scale(full_session["whitening"], theirs[0].weight.detach(), "whitening filters")
    # AND the optimizer's groups hold the same parameters: BatchNorm biases, then all the other trainable ones
    names = {id(p): n for n, p in theirs.named_parameters()}
    their_groups = [sorted(names[i] for i in group) for group in recorded.groups]
    assert [sorted(group) for group in full_session["groups"]] == their_groups


def test_schedule_runs_from_a_fifth_of_the_peak_to_the_peak_at_23_percent_and_ends_at_7_percent() -> None:
    total = 476
    assert recipe.lr_factor(0, total) == pytest.approx(0.2)
    assert recipe.lr_factor(int(0.23 * total), total) == 1.0
    assert recipe.lr_factor(total, total) == pytest.approx(0.07)
    assert max(recipe.lr_factor(s, total) for s in range(total)) == 1.0


def test_a_fractional_epoch_count_rounds_the_steps_up() -> None:
    assert recipe.total_steps(48, 9.9) == 476
    assert recipe.total_steps(10, 1) == 10


def test_whitening_bias_trains_only_in_the_first_three_epochs() -> None:
    assert [recipe.whiten_bias_trains(e) for e in range(5)] == [True, True, True, False, False]


def test_alternating_flip_mirrors_every_image_every_other_epoch() -> None:
    base = torch.tensor([True, False, False, True])
    assert torch.equal(recipe.alternating_flip(base, 0), base)
    assert torch.equal(recipe.alternating_flip(base, 1), ~base)
    assert torch.equal(recipe.alternating_flip(base, 2), base)


# --- whitening and TTA --------------------------------------------------------------------------------


def _normalized(images: torch.Tensor) -> torch.Tensor:
    mean = torch.tensor(CIFAR10_MEAN).view(1, 3, 1, 1)
    std = torch.tensor(CIFAR10_STD).view(1, 3, 1, 1)
    return (images - mean) / std


def _correlated_images(n: int, seed: int = 0) -> torch.Tensor:
    gen = torch.Generator().manual_seed(seed)
    base = torch.rand(n, 3, 8, 8, generator=gen)
    smooth = nn.functional.interpolate(base, size=32, mode="bilinear")
    return (0.8 * smooth + 0.2 * torch.rand(n, 3, 32, 32, generator=gen)).clamp(0, 1)


def test_whitening_filters_equal_the_references_for_the_same_images() -> None:
    # GIVEN normalized images
    images = _normalized(_correlated_images(64))
    # WHEN both fit a 2x2 whitening layer to them
    layer = nn.Conv2d(3, 24, 2, bias=True)
    ab_utils.init_whitening_conv(layer, images)
    ours = recipe.whitening_filters(images)
    # THEN the filters are the same, channel for channel (order and signs included)
    torch.testing.assert_close(ours, layer.weight.data, rtol=1e-4, atol=1e-5)


def _reference_net() -> nn.Module:
    return ab94.make_net94().float().eval()


def test_tta_level_two_equals_the_references_mirror_and_translate(reference_on_cpu: None) -> None:
    # GIVEN the reference network (fp32, CPU) and images in [0, 1]
    torch.manual_seed(0)
    net = _reference_net()
    images = torch.rand(6, 3, 32, 32)
    loader = ReferenceLoader([[]], images, 6)
    loader.images = images
    # WHEN the reference infers with TTA level 2 and we do on the same net (normalizing first)
    theirs = ab_utils.infer(net, loader, tta_level=2)
    with torch.no_grad():
        ours = recipe.tta_logits(lambda x: net(_normalized(x)), images, level=2)
    # THEN the logits agree
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("level", [0, 1])
def test_lower_tta_levels_equal_the_references(reference_on_cpu: None, level: int) -> None:
    torch.manual_seed(1)
    net = _reference_net()
    images = torch.rand(4, 3, 32, 32)
    loader = ReferenceLoader([[]], images, 4)
    theirs = ab_utils.infer(net, loader, tta_level=level)
    with torch.no_grad():
        ours = recipe.tta_logits(lambda x: net(_normalized(x)), images, level=level)
    torch.testing.assert_close(ours, theirs, rtol=1e-5, atol=1e-5)


def test_an_unknown_tta_level_is_an_error_naming_it() -> None:
    with pytest.raises(ValueError, match="TTA level 3"):
        recipe.tta_logits(lambda x: x, torch.zeros(1, 3, 4, 4), level=3)


def test_mean_loss_lr_of_the_default_recipe_is_one_and_a_half() -> None:
    assert recipe.mean_loss_lr(1024) == pytest.approx(1.5)
    assert recipe.mean_loss_lr(256) == pytest.approx(1.5 / 4)
    assert math.isclose(recipe.mean_loss_weight_decay(), 0.0153 / 11.5)


def assert_close_to_scale(actual: torch.Tensor, expected: torch.Tensor, name: str, tolerance: float = 1e-5) -> None:
    """Every element within `tolerance` x the largest magnitude in `expected` (fp32 rounding)."""
    scale = expected.abs().max().item()
    worst = (actual - expected).abs().max().item()
    assert worst <= tolerance * scale, f"{name}: differs by {worst:.3g}, {worst / scale:.2g} of its scale {scale:.3g}"


# --- the network: same weights, same batch -> same logits, loss and gradients ------------------------

_OUR_TO_REFERENCE = {"whiten": "0", "group1": "2", "group2": "3", "group3": "4", "head": "7"}


def reference_name(ours: str) -> str:
    """Our parameter name -> the reference nn.Sequential's ("group2.norm1.bias" -> "3.norm1.bias")."""
    first, _, rest = ours.partition(".")
    return f"{_OUR_TO_REFERENCE[first]}.{rest}"


def reference_copy(model: nn.Module, memory_format: torch.memory_format = torch.contiguous_format) -> nn.Module:
    """The reference network built from its own classes (CPU, fp32), holding `model`'s weights.

    In `memory_format`: the reference runs channels-last; a layout only changes which convolution
    algorithm runs, and so the rounding, which max-pooling can amplify where two values nearly tie.
    In the same layout as ours, the two networks compute bit for bit the same.
    """
    widths = {f"block{i}": getattr(model, f"group{i}").conv1.out_channels for i in (1, 2, 3)}
    net = ab94.make_net94(widths=widths).float().to(memory_format=memory_format)
    ours = {reference_name(k): v for k, v in model.state_dict().items() if not k.startswith("normalize.")}
    net.load_state_dict(ours, strict=True)
    return net


def test_our_network_has_the_references_layers_initialization_and_frozen_parameters(reference_on_cpu: None) -> None:
    from trainer.nets import AirbenchNet

    ours, theirs = AirbenchNet(), ab94.make_net94()
    our_names = {reference_name(k): v for k, v in ours.state_dict().items() if not k.startswith("normalize.")}
    assert {k: tuple(v.shape) for k, v in our_names.items()} == {
        k: tuple(v.shape) for k, v in theirs.state_dict().items()
    }
    assert {reference_name(k) for k, p in ours.named_parameters() if p.requires_grad} == {
        k for k, p in theirs.named_parameters() if p.requires_grad
    }
    for name, module in theirs.named_modules():
        if isinstance(module, nn.BatchNorm2d):
            mine = ours.get_submodule(next(k for k, v in _OUR_TO_REFERENCE.items() if v == name.split(".")[0]))
            assert mine.get_submodule(name.split(".", 1)[1]).eps == module.eps
            assert mine.get_submodule(name.split(".", 1)[1]).momentum == module.momentum
    # Dirac identity on the first in_channels filters of every 3x3 convolution, as the reference's Conv
    for name, param in ours.named_parameters():
        if name.endswith(("conv1.weight", "conv2.weight")):
            c_in = param.shape[1]
            identity = torch.zeros(c_in, c_in, 3, 3)
            nn.init.dirac_(identity)
            assert torch.equal(param.detach()[:c_in], identity), name
    assert torch.count_nonzero(ours.whiten.bias) == 0


def test_same_weights_and_batch_give_the_references_logits_loss_and_gradients(reference_on_cpu: None) -> None:
    from trainer.nets import AirbenchNet

    # GIVEN our network, whitened on some images, and the reference holding the same weights
    torch.manual_seed(0)
    ours = AirbenchNet()
    images = _correlated_images(32, seed=1)
    ours.init_whitening(images)
    theirs = reference_copy(ours)
    labels = torch.randint(0, 10, (len(images),))
    # WHEN both run a training-mode forward and backward pass on the same batch (ours: mean loss,
    # the reference: summed loss, each with label smoothing 0.2)
    our_logits = ours(images)
    our_loss = nn.functional.cross_entropy(our_logits, labels, label_smoothing=recipe.LABEL_SMOOTHING)
    our_loss.backward()
    their_logits = theirs(_normalized(images))
    their_loss = nn.CrossEntropyLoss(label_smoothing=0.2, reduction="none")(their_logits, labels).sum()
    their_loss.backward()
    # THEN the logits, the loss and every gradient agree (ours x batch size = the reference's)
    torch.testing.assert_close(our_logits, their_logits, rtol=1e-5, atol=1e-5)
    torch.testing.assert_close(our_loss * len(images), their_loss, rtol=1e-5, atol=1e-5)
    theirs_by_name = dict(theirs.named_parameters())
    for name, param in ours.named_parameters():
        if param.requires_grad:
            expected = theirs_by_name[reference_name(name)].grad
            assert_close_to_scale(param.grad * len(images), expected, name)
    # AND the BatchNorm statistics moved the same way
    for name, value in ours.state_dict().items():
        if "running" in name:
            torch.testing.assert_close(value, theirs.state_dict()[reference_name(name)], rtol=1e-5, atol=1e-6)


def test_the_references_loader_gives_our_sessions_batches_epoch_by_epoch_for_the_same_draws(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN 520 images: batch 1024 shrinks to 32, 16 steps per epoch, the last 8 images of each epoch dropped
    data = fake_data(520, 8, seed=5)
    session = TrainingSession(cpu_config(epochs=3.0), data)
    assert (session.batch_size, session.steps_per_epoch) == (32, 16)
    # AND the reference's own loader over the same images, drawing what our epoch plans draw
    loader = reference_loader(tmp_path, data, session.batch_size)
    monkeypatch.setattr(ab_utils, "torch", OurDraws(loader, session.config.seed, session.augment_pad))
    # WHEN our session trains three epochs (mirror states drawn, all inverted, back) on a stand-in network
    # that records the batches it is given, and the criterion records their labels
    seen: list[torch.Tensor] = []
    labels: list[torch.Tensor] = []
    stand_in_network(session, seen)
    criterion = session.criterion
    session.criterion = lambda logits, y: labels.append(y.clone()) or criterion(logits, y)  # type: ignore[assignment]
    assert fit(session)
    # THEN the reference's loader yields the same batches, epoch by epoch: the same images in the same
    # order, cropped and mirrored the same way (ours normalize inside the network: normalized here)
    normalize = Normalize()
    for epoch in range(3):
        theirs = list(loader)
        assert len(theirs) == 16
        for i, (their_images, their_labels) in enumerate(theirs):
            step = epoch * 16 + i
            assert torch.equal(labels[step], their_labels), (epoch, i)
            torch.testing.assert_close(
                normalize(seen[step]),
                their_images,
                rtol=0,
                atol=1e-6,
                msg=lambda m, e=epoch, b=i: f"epoch {e} batch {b}: {m}",
            )
    assert len(seen) == 3 * 16


def test_our_epoch_plans_draw_uniformly_over_the_references_ranges() -> None:
    # The loader test maps our draws onto the reference's, so it cannot see a skewed draw: count them.
    # GIVEN a full-size epoch plan, and the reference's ranges: crops by randint(-2, 3) per axis, a
    # flip where rand < 0.5, a permutation
    n, pad = CIFAR10_TRAIN, recipe.TRANSLATE
    for epoch in (0, 1):
        plan = plan_epoch(n, seed=0, epoch=epoch, pad=pad)
        # THEN each of the 5 offsets per axis is drawn n/5 times, within 5 standard deviations
        for shifts in (plan.shift_y, plan.shift_x):
            counts = torch.bincount(shifts, minlength=2 * pad + 1).tolist()
            assert len(counts) == 2 * pad + 1, counts
            sd = math.sqrt(n * (1 / 5) * (4 / 5))
            assert all(abs(c - n / 5) < 5 * sd for c in counts), counts
        # AND half the images are mirrored, and the order is a permutation
        assert abs(int(plan.flip.sum()) - n / 2) < 5 * math.sqrt(n / 4)
        assert torch.equal(plan.order.sort().values, torch.arange(n))


# --- training: our session and the reference's loop, each with its own loader -------------------------

SMALL_WIDTHS = (16, 32, 32)  # the recipe does not depend on the widths; small ones keep the test fast


def test_our_session_trains_to_the_references_weights_and_tta_logits_from_the_same_draws(
    reference_on_cpu: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    from trainer.config import load_config
    from trainer.data import load_dataset

    from trainer import nets, synth

    class SmallAirbench(nets.AirbenchNet):
        def __init__(self, num_classes: int = 10) -> None:
            super().__init__(widths=SMALL_WIDTHS, num_classes=num_classes)

    monkeypatch.setitem(nets.MODELS, "airbench", nets.ModelEntry(SmallAirbench, nets.AIRBENCH_RECIPE))
    # GIVEN the default recipe on 132 generated images: batch 1024 shrinks to 8 (16 steps per epoch, the
    # last 4 images dropped), 3.5 epochs (the whitening bias freezes after 3, the last pass stops
    # halfway), fp32 on one thread, TTA on (the default)
    synth.write_folder(tmp_path / "data", n_train=132, n_test=16, seed=3)
    config = load_config(
        [
            *("--data-uri", str(tmp_path / "data"), "--work-dir", str(tmp_path / "work"), "--epochs", "3.5"),
            *("--precision", "fp32", "--threads", "1", "--progress", "none"),
        ],
        {},
    )
    data = load_dataset(config)
    session = TrainingSession(config, data)
    assert (session.batch_size, session.steps_per_epoch, session.total_steps) == (8, 16, 56)
    # the reference starts from our initial weights (whitened: it re-fits the stem on the same images)
    start = reference_copy(session.model, torch.channels_last)
    # AND its own training loader (augmentation, flips, batches) over the same images, with our draws
    loader = reference_loader(tmp_path / "reference", data, session.batch_size)
    monkeypatch.setattr(ab_utils, "torch", OurDraws(loader, config.seed, session.augment_pad))

    # WHEN both train: our session to the end, the reference's own training loop with its own loader
    assert fit(session)
    theirs = run_reference(loader, lambda: start, epochs=config.epochs)

    # THEN every weight and BatchNorm statistic agrees
    their_state = theirs.state_dict()
    for name, value in session.model.state_dict().items():
        if name.startswith("normalize.") or not value.is_floating_point():
            continue
        assert_close_to_scale(value, their_state[reference_name(name)], name, tolerance=1e-4)
    # AND the whitening bias stopped training after epoch 3: it moved, then stayed (checked in ours)
    assert torch.count_nonzero(session.model.whiten.bias) > 0
    # AND our session's own final evaluation (its TTA level, its evaluation path) gives the loss of the
    # reference's TTA logits at the reference's level
    test_loader = ReferenceLoader([[]], data.test_images.float() / 255, len(data.test_images))
    their_logits = ab_utils.infer(theirs, test_loader, tta_level=ab94.hyp["net"]["tta_level"])
    assert_close_to_scale(session.predict_logits(data.test_images), their_logits, "TTA logits", tolerance=1e-4)
    their_loss = nn.functional.cross_entropy(their_logits, data.test_labels).item()
    assert session.evaluate().loss == pytest.approx(their_loss, rel=1e-4)
