"""The trainer on small real subsets of CIFAR-10: it learns, stops, repeats itself and refuses nonsense."""

import threading

import pytest
import torch

from lenet.train import ConfigError, TrainConfig, TrainingDiverged, augment, preset, train


def losses(result):
    return [e["loss"] for e in result.history if e["event"] == "step"]


def test_training_lowers_the_loss_and_beats_chance_on_unseen_images(cifar):
    result = train(preset("quick", train_subset=5_000, epochs=3, log_every=10), cifar)
    curve = losses(result)
    assert sum(curve[-5:]) / 5 < sum(curve[:5]) / 5 - 0.2
    assert result.test_accuracy > 0.25  # chance is 0.10; the 10,000 test images were never trained on
    epochs = [e for e in result.history if e["event"] == "epoch"]
    assert [e["epoch"] for e in epochs] == [1, 2, 3]


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
        if event["event"] == "step" and event["step"] >= 30:
            stop.set()

    result = train(preset("walkthrough", train_subset=2_000, epochs=2, log_every=10), cifar, on_event=on_event, stop=stop)
    assert result.stopped
    assert seen[-1]["event"] == "end" and seen[-1]["step"] == 30  # stopped at the very next step check, mid-epoch
    assert not [e for e in seen if e["event"] == "epoch"]


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
    with pytest.raises(ConfigError, match=complaint):
        TrainConfig.from_dict({**preset("walkthrough").to_dict(), **overrides}).validate()


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
    for name in ("walkthrough", "quick", "best"):
        preset(name).validate()
    assert preset("quick", epochs=1).epochs == 1 and preset("quick").epochs != 1  # overrides apply, presets stay
