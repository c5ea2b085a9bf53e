"""Differential tests: our airbench94 recipe against the reference implementation, airbench==0.1.8.

The reference (`airbench/lib_airbench94.py`, `airbench/utils.py`; a test-only dependency) is run on the
CPU in fp32: its CUDA timing events and synchronization are replaced by no-ops, its test loader by a
stand-in, and its network is built from its own classes with `.half()`/`.cuda()` turned into no-ops.
Its training loop (`airbench.utils.train`) runs unchanged on batches we hand it.
"""

from __future__ import annotations

import math
from collections import OrderedDict
from collections.abc import Callable, Iterator
from typing import Any

import pytest
import torch
from torch import nn
from trainer.nets import CIFAR10_MEAN, CIFAR10_STD

from trainer import recipe

ab_utils = pytest.importorskip("airbench.utils")
ab94 = pytest.importorskip("airbench.lib_airbench94")


# --- the reference on the CPU -----------------------------------------------------------------------


class _NoEvent:
    def __init__(self, **_: Any) -> None:
        pass

    def record(self) -> None:
        pass

    def elapsed_time(self, _: object) -> float:
        return 0.0


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


@pytest.fixture
def reference_on_cpu(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(torch.cuda, "Event", _NoEvent)
    monkeypatch.setattr(torch.cuda, "synchronize", lambda *_, **__: None)
    monkeypatch.setattr(ab_utils, "CifarLoader", _NoLoader)
    monkeypatch.setattr(nn.Module, "cuda", lambda self, *_, **__: self)
    monkeypatch.setattr(nn.Module, "half", lambda self: self)


class Recorder:
    """Records, for every optimizer step of the reference, each group's (lr, weight_decay, momentum,
    nesterov), and after which step each lookahead update ran with which decay."""

    def __init__(self, monkeypatch: pytest.MonkeyPatch) -> None:
        self.steps: list[list[tuple[float, float, float, bool]]] = []
        self.lookahead: list[tuple[int, float]] = []
        recorder = self

        class RecordingSGD(torch.optim.SGD):
            def step(self, closure: Callable[[], float] | None = None) -> Any:  # type: ignore[override]
                groups = [(float(g["lr"]), g["weight_decay"], g["momentum"], g["nesterov"]) for g in self.param_groups]
                recorder.steps.append(groups)
                return super().step(closure)

        original_update = ab_utils.LookaheadState.update

        def update(state: Any, net: nn.Module, decay: float) -> None:
            recorder.lookahead.append((len(recorder.steps), float(decay)))
            original_update(state, net, decay)

        monkeypatch.setattr(torch.optim, "SGD", RecordingSGD)
        monkeypatch.setattr(ab_utils.LookaheadState, "update", update)


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


def test_every_step_of_a_full_run_has_the_references_lr_momentum_weight_decay_and_lookahead(
    reference_on_cpu: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    # GIVEN the reference's training loop over a full-size epoch (48 batches of 1024) for 9.9 epochs,
    # training a tiny stand-in network (only the arithmetic of the schedule is compared)
    torch.manual_seed(0)
    steps_per_epoch, batch = 50_000 // recipe.BATCH_SIZE, recipe.BATCH_SIZE
    tiny_batch = [(torch.rand(2, 3, 2, 2), torch.randint(0, 10, (2,)))] * steps_per_epoch
    loader = ReferenceLoader([tiny_batch], torch.rand(8, 3, 2, 2), batch)
    recorded = Recorder(monkeypatch)
    # WHEN it runs
    run_reference(loader, _tiny_net)
    # THEN it took as many steps as ours does
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


# --- training: our session and the reference's loop on the same batches ------------------------------

SMALL_WIDTHS = (16, 32, 32)  # the recipe does not depend on the widths; small ones keep the test fast


def test_our_session_trains_to_the_references_weights_on_the_same_batches(
    reference_on_cpu: None, monkeypatch: pytest.MonkeyPatch, tmp_path: Any
) -> None:
    from trainer.config import load_config
    from trainer.data import load_dataset, plan_epoch
    from trainer.train import TrainingSession, fit

    from trainer import nets, synth

    class SmallAirbench(nets.AirbenchNet):
        def __init__(self, num_classes: int = 10) -> None:
            super().__init__(widths=SMALL_WIDTHS, num_classes=num_classes)

    monkeypatch.setitem(nets.MODELS, "airbench", nets.ModelEntry(SmallAirbench, nets.AIRBENCH_RECIPE))
    # GIVEN the default recipe on 128 generated images: batch 1024 shrinks to 8 (16 steps per epoch),
    # 3.5 epochs (the whitening bias freezes after 3, the last pass stops halfway), fp32 on one thread
    synth.write_folder(tmp_path, n_train=128, n_test=16, seed=3)
    config = load_config(
        [
            *("--data-uri", str(tmp_path), "--work-dir", str(tmp_path / "work"), "--epochs", "3.5"),
            *("--precision", "fp32", "--threads", "1", "--progress", "none", "--tta", "false"),
        ],
        {},
    )
    data = load_dataset(config)
    session = TrainingSession(config, data)
    assert (session.batch_size, session.steps_per_epoch) == (8, 16)
    # the batches our session will train on, epoch by epoch (the augmentation plan is a pure function)
    epochs = []
    for epoch in range(session.epochs):
        plan = plan_epoch(len(data.train_labels), config.seed, epoch, session.augment_pad)
        session.epochs_done = epoch  # for the number of steps in this pass (the last is cut short)
        epochs.append([(images.clone(), labels.clone()) for _, images, labels in session._batches(plan)])
    session.epochs_done = 0
    assert [len(e) for e in epochs] == [16, 16, 16, 8]
    # the reference starts from our initial weights (whitened: it re-fits the stem on the same images)
    start = reference_copy(session.model, torch.channels_last)
    loader = ReferenceLoader(epochs, data.train_images[: recipe.WHITEN_IMAGES].float() / 255, session.batch_size)

    # WHEN both train: our session to the end, the reference's own training loop on those batches
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
