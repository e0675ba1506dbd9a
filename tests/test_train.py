"""The trainer on small real subsets of CIFAR-10: it learns, stops, repeats itself and refuses nonsense."""

import math
import threading

import pytest
import torch

from lenet import events  # events.Test: a class named Test here would be collected by pytest
from lenet.events import End, Epoch, Step
from lenet.model import FAST_POOL_MIN_NUMBERS, LeNet5, max_pool_2x2
from lenet.train import ConfigError, MuonAndSGD, TrainConfig, TrainingDiverged, augment, make_optimizer, preset, train


def losses(result):
    return [e.loss for e in result.history if isinstance(e, Step)]


def test_training_lowers_the_loss_and_beats_chance_on_unseen_images(cifar):
    result = train(preset("quick", train_subset=5_000, epochs=3, log_every=10), cifar)
    curve = losses(result)
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.2
    assert result.test_accuracy > 0.25  # chance is 0.10; the 10,000 test images were never trained on
    epochs = [e for e in result.history if isinstance(e, Epoch)]
    assert [e.epoch for e in epochs] == [1, 2, 3]


def test_same_seed_same_numbers_other_seed_other_numbers(cifar):
    config = dict(train_subset=400, epochs=1, log_every=5)
    first, second = (losses(train(preset("walkthrough", **config), cifar)) for _ in range(2))
    assert first == second and len(first) == 20
    assert losses(train(preset("walkthrough", seed=1, **config), cifar)) != first


def test_stop_mid_epoch(cifar):
    stop = threading.Event()
    seen = []

    def on_event(event):
        seen.append(event)
        if isinstance(event, Step) and event.step >= 30:
            stop.set()

    result = train(preset("walkthrough", train_subset=2_000, epochs=2, log_every=10), cifar, on_event=on_event, stop=stop)
    assert result.stopped
    assert isinstance(seen[-1], End) and seen[-1].step == 30  # stopped at the very next step check, mid-epoch
    assert not [e for e in seen if isinstance(e, Epoch)]


def test_a_diverging_run_stops_itself_and_says_so(cifar):
    with pytest.raises(TrainingDiverged, match="nan"):
        train(preset("walkthrough", train_subset=512, epochs=1, batch_size=32, lr=10.0), cifar)


@pytest.mark.parametrize(
    "overrides, complaint",
    [
        ({"epochs": 0}, "epochs"),
        ({"epochs": -3}, "epochs"),
        ({"epochs": 2.5}, "epochs"),
        ({"lr": 0}, "lr"),
        ({"lr": float("nan")}, "lr"),
        ({"lr": float("inf")}, "lr"),
        ({"momentum": -0.1}, "momentum"),
        ({"batch_size": 0}, "batch_size"),
        ({"batch_size": 600, "train_subset": 500}, "batch_size"),
        ({"optimizer": "lion"}, "optimizer"),
        ({"train_subset": -1}, "train_subset"),
        ({"train_subset": 60_000}, "train_subset"),
        ({"seed": "x"}, "seed"),
    ],
)
def test_nonsensical_settings_are_refused_before_training(overrides, complaint):
    config = TrainConfig.from_dict({**preset("walkthrough").to_dict(), **overrides})
    with pytest.raises(ConfigError) as caught:
        config.validate()
    assert caught.value.field == complaint
    # The sentence names the setting as a person sees it, and says what works; no field names, no code.
    label = TrainConfig.__dataclass_fields__[complaint].metadata["label"].split(" (")[0]
    assert str(caught.value).startswith(label) and "_" not in str(caught.value)
    assert config.problems()[complaint] == str(caught.value)


def test_every_option_is_the_same_in_the_config_the_command_line_and_the_train_page():
    """TrainConfig's fields are the one list: the CLI's train options and the page's widgets are built from them."""
    import argparse
    import ast
    from pathlib import Path

    from lenet.cli import build_parser

    names = {f.name for f in TrainConfig.options()}
    assert names == set(TrainConfig.__dataclass_fields__) - {"preset"}
    train_parser = next(a for a in build_parser()._actions if isinstance(a, argparse._SubParsersAction)).choices["train"]
    cli_dests = {a.dest for a in train_parser._actions} - {"help", "data", "preset", "threads", "out", "resume", "export"}
    assert cli_dests == names
    for option in TrainConfig.options():
        meta = option.metadata
        assert meta["label"] and meta["help"].endswith(".") and (meta["choices"] or option.type is bool or meta["low"] is not None)
        action = next(a for a in train_parser._actions if a.dest == option.name)
        assert (tuple(action.choices) if action.choices else ()) == meta["choices"]
        if option.type is bool:
            assert action.nargs == 0 and meta["label"]
        elif not meta["choices"]:
            assert action.type is option.type
    # The page writes no option of its own: its form loops over TrainConfig.options().
    page = ast.parse((Path(__file__).resolve().parents[1] / "pages" / "train.py").read_text())
    widget_labels = {node.args[0].value for node in ast.walk(page) if isinstance(node, ast.Call) and node.args
                     and isinstance(node.args[0], ast.Constant) and getattr(node.func, "attr", "") in ("number_input", "checkbox")}
    assert not widget_labels & {f.metadata["label"] for f in TrainConfig.options()}


def test_unknown_settings_and_presets_are_refused():
    with pytest.raises(ConfigError, match="unknown settings"):
        TrainConfig.from_dict({"epochs": 1, "lerning_rate": 0.1})
    with pytest.raises(ConfigError, match="unknown preset"):
        preset("fastest")


def test_batched_augmentation_crops_and_flips_each_image_on_its_own():
    images = torch.arange(4 * 3 * 32 * 32, dtype=torch.int64).reshape(4, 3, 32, 32).remainder(251).to(torch.uint8)
    out = augment(images, torch.Generator().manual_seed(0))
    assert out.shape == images.shape and out.dtype == torch.uint8
    for original, crop in zip(images, out, strict=True):
        # Every output is some 32x32 window of the zero-padded image, possibly mirrored.
        padded = torch.nn.functional.pad(original, (4, 4, 4, 4))
        windows = [padded[:, y : y + 32, x : x + 32] for y in range(9) for x in range(9)]
        assert any(torch.equal(crop, w) or torch.equal(crop, w.flip(2)) for w in windows)
    assert not all(torch.equal(a, b) for a, b in zip(images, out, strict=True))


def test_presets_are_valid_and_keep_the_walkthrough_recipe():
    walkthrough = preset("walkthrough")
    assert (walkthrough.batch_size, walkthrough.lr, walkthrough.momentum, walkthrough.epochs) == (4, 0.001, 0.9, 2)
    assert walkthrough.optimizer == "sgd" and not walkthrough.augment and walkthrough.normalization == "walkthrough"
    for name in ("walkthrough", "quick", "frugal", "best"):
        preset(name).validate()
    assert preset("quick", epochs=1).epochs == 1 and preset("quick").epochs != 1  # overrides apply, presets stay


def _walkthrough_augment(images, generator, pad):
    """The first batched augmentation, four broadcast index tensors: the reference for the same draws, the same images."""
    n, _, h, w = images.shape
    padded = torch.nn.functional.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator)
    flip = torch.rand(n, generator=generator) < 0.5
    rows = dy[:, None] + torch.arange(h)
    cols = torch.where(flip[:, None], (dx[:, None] + torch.arange(w)).flip(1), dx[:, None] + torch.arange(w))
    batch, channel = torch.arange(n)[:, None, None, None], torch.arange(3)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


@pytest.mark.parametrize("pad", [0, 1, 2, 4, 8])
def test_augmentation_picks_the_same_windows_as_the_first_version(pad):
    """Same seed, same crops and flips: runs keep their numbers, and a resumed run its exact continuation."""
    images = torch.randint(0, 256, (64, 3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(pad))
    for seed in range(3):
        expected = _walkthrough_augment(images, torch.Generator().manual_seed(seed), pad)
        assert torch.equal(augment(images, torch.Generator().manual_seed(seed), pad), expected)


def test_the_fast_pooling_gives_max_pool2ds_numbers_forward_and_backward_ties_included():
    torch.manual_seed(0)
    for shape in [(16, 6, 28, 28), (48, 16, 10, 10)]:  # conv1's and conv2's outputs, large enough for the fast path
        assert math.prod(shape) >= FAST_POOL_MIN_NUMBERS
        x = torch.randn(shape)
        x[:, :, :4, :4] = 0.5  # whole windows tied
        x[:, :, 6, :] = -1.0  # half windows tied
        x[0, 0, 8:10, 8:10] = torch.tensor([[1.0, 5.0], [5.0, 0.0]])  # the first maximum in reading order is top right
        ours, theirs = x.clone().requires_grad_(), x.clone().requires_grad_()
        pooled = max_pool_2x2(ours)
        expected = torch.nn.functional.max_pool2d(theirs, 2, 2)
        upstream = torch.randn_like(expected)
        pooled.backward(upstream)
        expected.backward(upstream)
        assert torch.equal(pooled, expected) and torch.equal(ours.grad, theirs.grad)
        with torch.inference_mode():
            assert torch.equal(max_pool_2x2(x), expected)


def test_lenet5_computes_the_walkthroughs_function_with_the_same_gradients():
    """ReLU after pooling, with the fast pooling: the walkthrough's Net's loss and gradients, to the bit."""
    from lenet.bench import WalkthroughNet

    torch.manual_seed(0)
    ours = LeNet5()
    theirs = WalkthroughNet()
    theirs.load_state_dict(ours.state_dict())
    images, labels = torch.randn(48, 3, 32, 32), torch.randint(0, 10, (48,))  # both poolings on the fast path
    images[:, :, :8, :8] = 0.0  # flat regions: ties in the pooling windows
    losses = [torch.nn.functional.cross_entropy(net(images), labels) for net in (ours, theirs)]
    for loss in losses:
        loss.backward()
    assert torch.equal(losses[0], losses[1])
    for (name, mine), (_, reference) in zip(ours.named_parameters(), theirs.named_parameters(), strict=True):
        assert torch.equal(mine.grad, reference.grad), name


def test_test_every_measures_accuracy_between_epochs_and_leaves_the_epochs_alone(cifar):
    config = preset("quick", train_subset=1_000, batch_size=100, epochs=2, test_every=300, log_every=5)
    result = train(config, cifar)
    assert [p.images for p in result.test_points] == [300, 600, 900, 1000, 1200, 1500, 1800, 2000]
    assert [p.step for p in result.test_points] == [3, 6, 9, 10, 12, 15, 18, 20]
    epochs = [e for e in result.history if isinstance(e, Epoch)]
    assert [(e.step, e.test_accuracy) for e in epochs] == [(p.step, p.test_accuracy) for p in result.test_points if p.images % 1000 == 0]
    assert all(0 <= p.test_accuracy <= 1 and p.validation_accuracy is None for p in result.test_points)
    # Those inside an epoch are Test events, at the fraction of the epoch they were measured; the epochs' stay Epoch events.
    inside = [e for e in result.history if isinstance(e, events.Test)]
    assert [(e.epoch, e.step, e.images) for e in inside] == [(0.3, 3, 300), (0.6, 6, 600), (0.9, 9, 900), (1.2, 12, 1200),
                                                             (1.5, 15, 1500), (1.8, 18, 1800)]
    assert [e.test_accuracy for e in inside] == [p.test_accuracy for p in result.test_points if p.images % 1000]
    # Testing changes no training number.
    plain = train(preset("quick", train_subset=1_000, batch_size=100, epochs=2, log_every=5), cifar)
    assert losses(plain) == losses(result) and [p.images for p in plain.test_points] == [1000, 2000]


def test_the_frugal_preset_trains_one_pass_over_40000_images_and_tests_every_10000():
    config = preset("frugal")
    assert config.validate() is config
    assert config.epochs * config.train_subset == 40_000 and config.test_every == 10_000


def test_the_frugal_preset_reaches_55_percent_on_the_real_test_set_after_40000_images(cifar):
    result = train(preset("frugal"), cifar)  # about 5 s on 2 cores
    assert [round(point.images, -3) for point in result.test_points] == [10_000, 20_000, 30_000, 40_000]  # at whole batches
    assert result.test_points[-1].test_accuracy >= 0.55 and result.test_accuracy >= 0.55


def test_test_flips_change_how_the_run_is_tested_never_how_it_trains(cifar):
    config = dict(train_subset=2_000, batch_size=100, epochs=2, log_every=5)
    plain = train(preset("quick", **config), cifar)
    flipped = train(preset("quick", test_flips=True, **config), cifar)
    assert losses(flipped) == losses(plain)
    assert all(torch.equal(a, b) for a, b in zip(flipped.model.state_dict().values(), plain.model.state_dict().values(), strict=True))
    assert flipped.model.test_flips and not plain.model.test_flips
    # Its test accuracy is the mirror-averaged one, measured on the 10,000 real test images.
    from lenet.inference import NORMALIZATIONS, predict_logits

    images, labels = cifar.test.images, cifar.test.labels
    norm = NORMALIZATIONS["cifar10"]
    averaged = (predict_logits(plain.model, images, norm) + predict_logits(plain.model, images.flip(3), norm)) / 2
    assert flipped.test_accuracy == pytest.approx((averaged.argmax(1) == labels).float().mean().item(), abs=1e-4)
    assert flipped.test_accuracy != plain.test_accuracy


def test_muon_moves_the_hidden_matrices_on_the_schedule_and_a_stopped_run_resumes_to_the_same_weights(cifar):
    config = preset("frugal", train_subset=1_280, test_every=0, log_every=5)  # 40 steps of 32, one-cycle, Muon
    optimizer = make_optimizer(config, LeNet5())
    assert isinstance(optimizer, MuonAndSGD)
    muon = [tuple(p.shape) for p in optimizer.muon.param_groups[0]["params"]]
    assert muon == [(120, 400), (84, 120)] and sum(len(g["params"]) for g in optimizer.param_groups) == 8
    whole = train(config, cifar)
    assert whole.history[-1].step == 40 and losses(whole)[-1] < losses(whole)[0]

    stop, saved = threading.Event(), {}

    def on_event(event):
        if isinstance(event, Step) and event.step == 15:
            stop.set()

    def on_checkpoint(model, training, metrics):
        saved.update(model=model, training=training)

    first = train(config, cifar, on_event=on_event, stop=stop, on_checkpoint=on_checkpoint)
    assert first.stopped and saved["training"]["step"] == 15
    assert sorted(saved["training"]["optimizer"]["state"]) == list(range(10))  # one state_dict: SGD's 8, then Muon's 2
    resumed = train(config, cifar, resume={"model": saved["model"], "training": saved["training"]})
    assert losses(resumed)[-1] == losses(whole)[-1]
    for name, weights in whole.model.state_dict().items():
        assert torch.equal(resumed.model.state_dict()[name], weights), name


def test_muons_rate_follows_sgds_schedule_at_its_own_peak(cifar):
    config = preset("frugal")
    model = LeNet5()
    optimizer = make_optimizer(config, model)
    for fraction in (1.0, 0.5, 0.1):
        for group in optimizer.param_groups:
            group["lr"] = config.lr * fraction
        model(torch.randn(4, 3, 32, 32)).sum().backward()
        optimizer.step()
        assert optimizer.muon.param_groups[0]["lr"] == pytest.approx(config.muon_lr * fraction)
        assert [g["lr"] for g in optimizer.sgd.param_groups] == [config.lr * fraction] * 2
