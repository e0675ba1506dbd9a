"""The training loop: the whole split as one uint8 tensor, batches by index, batched augmentation.

Every random choice is a function of (seed, epoch, step), so a run resumed from a checkpoint
goes on with exactly the numbers it would have had, and the same config gives the same losses twice.
"""

import math
import os
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import Field, asdict, dataclass, field, fields

import torch
import torch.nn.functional as F

from .data import CIFAR10, train_validation_split
from .events import End, Epoch, Event, Start, Step, Test
from .inference import DEVICES, NORMALIZATIONS, available_devices, normalization_tensors, normalize, pick_device, predict_logits
from .model import LeNet5
from .words import N_

OPTIMIZERS = ("sgd", "adam", "adamw", "muon")
# Muon is made for the weight matrices of hidden layers: here fc1's and fc2's (the convolutions' weights are 4-D and
# fc3 is the output layer). With the "muon" optimizer, SGD moves every other parameter.
MUON_PARAMETERS = ("fc1.weight", "fc2.weight")
SCHEDULES = ("constant", "onecycle", "cosine")


class ConfigError(ValueError):
    """A setting is out of range; the message says, in plain words, which one and what is allowed."""

    def __init__(self, message: str, field: str | None = None):
        super().__init__(message)
        self.field = field


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


def option(default, label: str, help: str, *, low=None, high=None, choices=(), low_open=False, flag=None, advanced=False):
    """A TrainConfig field with everything the CLI, the Train page and validation need to know about it, said once.

    low/high bound numbers (low_open: low itself is refused); choices list the allowed strings; flag overrides the
    command-line name (default --field-name); advanced options sit behind the page's "Advanced" expander.
    """
    meta = {"label": label, "help": help, "low": low, "high": high, "choices": tuple(choices), "low_open": low_open,
            "flag": flag, "advanced": advanced}
    return field(default=default, metadata=meta)


MAX_EPOCHS = 1000
MAX_BATCH = 8192


@dataclass
class TrainConfig:
    """One training recipe: every option with its help and range (see option()), the walkthrough's values by default."""

    preset: str = "walkthrough"  # the recipe this one started from; not an option of its own
    epochs: int = option(2, N_("Epochs"), N_("How many times the network sees every training image."), low=1, high=MAX_EPOCHS)
    batch_size: int = option(4, N_("Batch size"), N_("How many images the network looks at before each nudge of its weights."),
                             low=1, high=MAX_BATCH)
    optimizer: str = option("sgd", N_("Optimizer"),
                            N_("The rule that nudges the weights: SGD as in the walkthrough, Adam, or Muon for the two hidden "
                               "layers' weights with SGD for the rest (it learns more from few images)."),
                            choices=OPTIMIZERS)
    lr: float = option(0.001, N_("Learning rate"), N_("How big each nudge is (the peak, with a schedule). Too big and the loss explodes."),
                       low=0, high=10, low_open=True)
    momentum: float = option(0.9, N_("Momentum"), N_("How much of the last nudge carries over into the next, like a rolling ball (SGD)."),
                             low=0, high=0.999)
    nesterov: bool = option(False, N_("Nesterov momentum"), N_("Look ahead along the momentum before measuring the slope (SGD)."),
                            advanced=True)
    muon_lr: float = option(0.01, N_("Muon learning rate"),
                            N_("With Muon: the peak step for fc1's and fc2's weights, on the same schedule; the learning rate "
                               "above is SGD's, for every other weight."),
                            low=0, high=1, low_open=True, advanced=True)
    weight_decay: float = option(0.0, N_("Weight decay"), N_("Pulls every weight a little towards zero at each step, against overfitting."),
                                 low=0, high=1, advanced=True)
    schedule: str = option("constant", N_("Learning-rate schedule"),
                           N_("constant; onecycle: up during the warm-up, then straight down to zero; cosine: down along a curve."),
                           choices=SCHEDULES, advanced=True)
    warmup: float = option(0.0, N_("Warm-up"), N_("The share of all steps over which the learning rate climbs to its peak."),
                           low=0, high=0.9, advanced=True)
    label_smoothing: float = option(0.0, N_("Label smoothing"),
                                    N_("Aim for 90% sure instead of 100% (at 0.1): a network less overconfident."),
                                    low=0, high=0.9, advanced=True)
    augment: bool = option(False, N_("Augment (crop and flip)"),
                           N_("Show each image shifted a little and mirrored at random, so the network cannot memorise pixels."),
                           advanced=True)
    crop_padding: int = option(4, N_("Crop padding (pixels)"), N_("How far augmentation may shift an image; 0: flips only."),
                               low=0, high=8, advanced=True)
    test_flips: bool = option(False, N_("Mirror at test time"),
                              N_("Answer from each image and its mirror image together (their logits averaged): one to two "
                                 "points more accuracy, for twice the work of each prediction. Training is unchanged."),
                              advanced=True)
    normalization: str = option("walkthrough", N_("Normalization"),
                                N_("walkthrough: pixels to -1..1; cifar10: each colour to mean 0, spread 1 over the training images."),
                                choices=tuple(NORMALIZATIONS), advanced=True)
    train_subset: int = option(0, N_("Training images (0: all 50,000)"),
                               N_("Train on the first images of a fixed shuffle only: 5,000 make an epoch of a second or two."),
                               low=0, high=50_000, flag="--subset")
    validation_size: int = option(0, N_("Validation images held out"),
                                  N_("Keep this many training images aside to choose recipes without peeking at the test set."),
                                  low=0, high=49_999, advanced=True)
    seed: int = option(0, N_("Seed"), N_("The same seed gives the same starting weights and shuffles, so the same run twice."),
                       low=0, high=2**31 - 1)
    test_every: int = option(0, N_("Test every (images)"),
                             N_("Also measure test accuracy every this many training images, not only after each epoch; "
                                "0: per epoch only."),
                             low=0, high=10**8, advanced=True)
    log_every: int = option(0, N_("Log every (steps)"), N_("Steps between points of the loss curve; 0: about 100 per epoch."),
                            low=0, high=10**7, advanced=True)
    device: str = option("auto", N_("Device"), N_("Where to train: auto picks a GPU when there is one."), choices=DEVICES, advanced=True)

    @classmethod
    def options(cls) -> list[Field]:
        """The fields a person sets (all but preset), in order, each with its metadata."""
        return [f for f in fields(cls) if f.metadata]

    def problems(self, train_images: int = 50_000) -> dict[str, str]:
        """Every out-of-range setting -> a sentence a person understands; empty when all are sound."""
        found = {}
        for f in self.options():
            problem = _problem(f, getattr(self, f.name))
            if problem:
                found[f.name] = problem
        if "batch_size" not in found and not {"train_subset", "validation_size"} & set(found):
            available = min(self.train_subset or train_images, train_images - self.validation_size)
            if self.batch_size > available:
                found["batch_size"] = (f"Batch size must be at most the {available:,} images that train "
                                       f"(you entered {self.batch_size:,}).")
        if "validation_size" not in found and self.validation_size >= train_images:
            found["validation_size"] = f"Validation images must be fewer than the {train_images:,} training images."
        if "device" not in found and self.device not in available_devices():
            found["device"] = f"Device {self.device} is not on this machine: choose one of {', '.join(available_devices())}."
        if "train_subset" not in found and self.train_subset > train_images:
            found["train_subset"] = f"Training images must be at most the {train_images:,} there are (you entered {self.train_subset:,})."
        return found

    def validate(self, train_images: int = 50_000) -> "TrainConfig":
        """Raise ConfigError for the first setting out of range; return self when all are sound."""
        for name, problem in self.problems(train_images).items():
            raise ConfigError(problem, name)
        return self

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "TrainConfig":
        known = {f.name for f in fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown settings: {', '.join(sorted(unknown))}")
        return cls(**values)


def _problem(option_field: Field, value) -> str | None:
    """What is wrong with one option's value, in words, or None."""
    meta, kind = option_field.metadata, option_field.type
    label = meta["label"].split(" (")[0]
    if meta["choices"]:
        return None if value in meta["choices"] else f"{label} must be one of {', '.join(meta['choices'])} (got {value!r})."
    if kind is bool:
        return None if isinstance(value, bool) else f"{label} must be on or off (got {value!r})."
    whole = kind is int
    if isinstance(value, bool) or not isinstance(value, (int, float)) or (whole and not float(value).is_integer()):
        return f"{label} must be {'a whole number' if whole else 'a number'} (got {value!r})."
    low, high = meta["low"], meta["high"]
    if not math.isfinite(value) or value < low or value > high or (meta["low_open"] and value == low):
        bound = f"above {low:g}" if meta["low_open"] else f"from {low:,}" if whole else f"from {low:g}"
        top = f"{high:,}" if whole else f"{high:g}"
        return f"{label} must be {bound} {'to' if not meta['low_open'] else 'and at most'} {top} (you entered {value:g})."
    return None


PRESETS = {
    # The walkthrough, unchanged: the reference every class can compare with.
    "walkthrough": TrainConfig(),
    # A live demo: about 60% test accuracy in about 9 s of training on 2 CPU cores (55% after 2 of its 3 epochs).
    # Chosen on a 5,000-image validation split: 3 epochs at batch 128 and lr 0.1 match 4 at batch 64 in less time.
    "quick": TrainConfig(
        preset="quick", epochs=3, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
        weight_decay=5e-4, schedule="onecycle", warmup=0.2, label_smoothing=0.1, normalization="cifar10",
    ),
    # The fewest images: one pass over 40,000 images, tested every 10,000 (a number no machine changes), 55% or more
    # after them. Chosen on a 5,000-image validation split, validation accuracy after 40,000 images, means of seeds
    # 0-4 (the README has each run): SGD nesterov alone (batch 32, lr 0.03, warm-up 0.1, weight decay 5e-4, label
    # smoothing 0.1, tested with flips) 55.1%; with Muon for fc1's and fc2's weights at Muon lr 0.01 (this preset)
    # 58.2%; Muon lr 0.003 / 0.006 / 0.0075 / 0.012 / 0.015 / 0.03: 55.6 / 57.6 / 58.2 / 57.8 / 57.3 / 51.3%;
    # SGD lr 0.02 / 0.045 beside Muon's 0.01: 57.9 / 56.9%.
    "frugal": TrainConfig(
        preset="frugal", epochs=1, train_subset=40_000, test_every=10_000, batch_size=32, optimizer="muon", lr=0.03, momentum=0.9,
        nesterov=True, muon_lr=0.01, weight_decay=5e-4, schedule="onecycle", warmup=0.1, label_smoothing=0.1, normalization="cifar10",
        test_flips=True,
    ),
    # The most this architecture gives: augmentation, weight decay, one-cycle, label smoothing, test-time flips.
    # Chosen on a 5,000-image validation split (seed 0): a 2-pixel crop beats 4 pixels (too much shift for a net this
    # small), weight decay 1e-3 beats 5e-4; 60 / 100 / 200 epochs: 74.5 / 74.9 / 75.8%, and 77.2% at 200 with the flips.
    "best": TrainConfig(
        preset="best", epochs=200, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
        weight_decay=1e-3, schedule="onecycle", warmup=0.15, label_smoothing=0.1, augment=True, crop_padding=2,
        normalization="cifar10", test_flips=True,
    ),
}


def preset(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[name].to_dict(), **overrides})


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, for a whole uint8 batch at once.

    Each image is one window of its padded self (or of its mirror image), picked by indexing a strided view of
    all windows: no index tensor as large as the batch. 0.42 ms at batch 128 on one thread, where four
    broadcast index tensors took 1.7 ms (the same draws, the same images: a tenth of a step saved).
    """
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
    # The mirror image's window starting at column 2*pad - dx is the window at dx, mirrored.
    windows = torch.stack((padded, padded.flip(3))).unfold(3, h, 1).unfold(4, w, 1)  # 2 x N x C x rows x cols x h x w
    return windows[flip.long(), torch.arange(n, device=images.device), :, dy, torch.where(flip, 2 * pad - dx, dx)]


@contextmanager
def onednn(enabled: bool) -> Iterator[None]:
    """oneDNN's CPU kernels on or off for the block (a process-wide switch, put back afterwards)."""
    before = torch.backends.mkldnn.enabled
    torch.backends.mkldnn.enabled = enabled
    try:
        yield
    finally:
        torch.backends.mkldnn.enabled = before


def learning_rate(config: TrainConfig, step: int, total_steps: int) -> float:
    if config.schedule == "constant":
        return config.lr
    warmup = int(config.warmup * total_steps)
    if step < warmup:
        return config.lr * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if config.schedule == "onecycle":
        return config.lr * max(0.0, 1.0 - progress)
    return config.lr * 0.5 * (1 + math.cos(math.pi * progress))


def parameter_groups(optimizer: str) -> list[list[str]]:
    """make_optimizer's parameter groups by name, in the order its state_dict numbers the parameters: the weights
    (decayed), the biases, then, with Muon, the weights it moves."""
    names = list(LeNet5.PARAMETER_NAMES)
    muon = list(MUON_PARAMETERS) if optimizer == "muon" else []
    groups = [[n for n in names if n.endswith("weight") and n not in muon], [n for n in names if not n.endswith("weight")]]
    return groups + [muon] if muon else groups


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> "torch.optim.Optimizer | MuonAndSGD":
    # Weight decay on weights only: decaying biases only slows a network this small.
    decay, rest = ([model.get_parameter(n) for n in names] for names in parameter_groups(config.optimizer)[:2])
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if config.optimizer in ("sgd", "muon"):
        # Fused: one kernel for all ten parameters, a few percent of a step at batch 4 (CPU and CUDA have it).
        fused = next(model.parameters()).device.type in ("cpu", "cuda")
        sgd = torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
                              fused=fused)
        if config.optimizer == "sgd":
            return sgd
        return MuonAndSGD(torch.optim.Muon([model.get_parameter(n) for n in MUON_PARAMETERS], lr=config.muon_lr, weight_decay=0.0),
                          sgd)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr)


class MuonAndSGD:
    """torch.optim.Muon for fc1's and fc2's weights, SGD for the rest, stepped as one optimizer.

    Muon takes each step of a weight matrix along the nearest orthogonal matrix to its momentum (Newton-Schulz
    iterations), so every direction of the matrix learns at once: from 40,000 images, 58% validation accuracy against
    SGD's 55% (the frugal preset). param_groups are SGD's: the loop sets their learning rate at each step and Muon's
    follows at the same fraction of its own peak. state_dict is one state_dict in torch's layout, SGD's parameters
    numbered first (parameter_groups), so a checkpoint holds one optimizer state as with every other optimizer.
    """

    def __init__(self, muon: torch.optim.Muon, sgd: torch.optim.SGD):
        self.muon, self.sgd = muon, sgd
        self.peaks = (sgd.param_groups[0]["lr"], muon.param_groups[0]["lr"])

    @property
    def param_groups(self) -> list[dict]:
        return self.sgd.param_groups

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.sgd.zero_grad(set_to_none=set_to_none)
        self.muon.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        sgd_peak, muon_peak = self.peaks
        self.muon.param_groups[0]["lr"] = muon_peak * self.sgd.param_groups[0]["lr"] / sgd_peak
        self.muon.step()
        self.sgd.step()

    def _sgd_parameters(self) -> int:
        return sum(len(group["params"]) for group in self.sgd.param_groups)

    def state_dict(self) -> dict:
        sgd, muon, shift = self.sgd.state_dict(), self.muon.state_dict(), self._sgd_parameters()
        return {"state": {**sgd["state"], **{index + shift: state for index, state in muon["state"].items()}},
                "param_groups": sgd["param_groups"] + [{**group, "params": [index + shift for index in group["params"]]}
                                                       for group in muon["param_groups"]]}

    def load_state_dict(self, state_dict: dict) -> None:
        shift, groups = self._sgd_parameters(), state_dict["param_groups"]
        self.sgd.load_state_dict({"state": {i: s for i, s in state_dict["state"].items() if i < shift}, "param_groups": groups[:-1]})
        self.muon.load_state_dict({"state": {i - shift: s for i, s in state_dict["state"].items() if i >= shift},
                                   "param_groups": [{**groups[-1], "params": [i - shift for i in groups[-1]["params"]]}]})


EVAL_BATCH = 250  # images per forward pass when testing (see _Loop.accuracy)
GATHER_IMAGES = 4096  # images of an epoch gathered at once in its shuffled order (see _Loop.batches)
FALLBACK_IMAGES_PER_SECOND = {4: 1_500, 32: 4_000, MAX_BATCH: 8_000}  # 2 CPU cores, by batch size up to the key


def estimated_seconds(config: TrainConfig, measured_images_per_second: float | None = None, train_images: int = 50_000) -> float:
    """About how long a run will train: its images at a rate measured on this machine (a past run's), else a rough one."""
    rate = measured_images_per_second or next(r for size, r in sorted(FALLBACK_IMAGES_PER_SECOND.items()) if config.batch_size <= size)
    images = min(config.train_subset or train_images, train_images - config.validation_size)
    testing = 0.5  # seconds to test after each epoch, on 10,000 images
    return config.epochs * (images / rate + testing)


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


class Stopwatch:
    """Seconds of training: what earlier sessions of a resumed run trained, plus this one's, less evaluation."""

    def __init__(self, before: float = 0.0):
        self.before = before
        self.started = time.perf_counter()
        self.paused = 0.0

    @contextmanager
    def pause(self) -> Iterator[None]:
        """Time inside the block (testing after an epoch) is not training time."""
        tick = time.perf_counter()
        try:
            yield
        finally:
            self.paused += time.perf_counter() - tick

    @property
    def here(self) -> float:
        """Seconds trained in this process."""
        return time.perf_counter() - self.started - self.paused

    @property
    def total(self) -> float:
        return self.before + self.here


@dataclass(frozen=True)
class TestPoint:
    """Accuracy measured while training: after each epoch, and every config.test_every training images."""

    images: int  # training images seen when measured (a resumed run counts those before the resume too)
    step: int
    test_accuracy: float
    validation_accuracy: float | None
    train_seconds: float


@dataclass
class TrainResult:
    model: LeNet5
    history: list[Event]  # every event, in order
    test_accuracy: float | None
    train_seconds: float
    stopped: bool
    test_points: list[TestPoint] = field(default_factory=list)  # every accuracy measured, epochs' and test_every's


class _Loop:
    """One training: the model and optimizer, where it stands (step, running loss) and how it reports.

    train() below drives it; each method does one thing: an epoch, a step, a logged point, a checkpoint.
    """

    def __init__(self, config: TrainConfig, data: CIFAR10, device: torch.device, emit: Callable[[Event], None]):
        self.config, self.device, self.emit = config, device, emit
        # Which images train: a seeded held-out validation set first, then an optional subset.
        train_idx, val_idx = train_validation_split(len(data.train), config.validation_size, config.seed)
        if config.train_subset:
            train_idx = train_idx[: config.train_subset]
        self.labels = data.train.labels[train_idx].to(device)
        if device.type == "cpu":
            # No copy of the training images: each part of an epoch is gathered from the split itself, in its shuffled
            # order (150 MB less at the memory peak).
            self.images, self.positions = data.train.images, train_idx
        else:
            self.images, self.positions = data.train.images[train_idx].to(device), torch.arange(len(train_idx), device=device)
        self.validation = data.train.subset(val_idx) if config.validation_size else None
        self.test_split = data.test
        self.normalization = NORMALIZATIONS[config.normalization]
        self.mean_std = normalization_tensors(self.normalization, device)  # made once: at batch 4 that is a tenth of a step

        torch.manual_seed(config.seed)
        self.model = LeNet5().to(device)
        self.model.test_flips = config.test_flips  # how it is tested here, and how the app predicts with it later
        self.optimizer = make_optimizer(config, self.model)
        self.criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
        self.steps_per_epoch = math.ceil(len(self.labels) / config.batch_size)
        self.total_steps = self.steps_per_epoch * config.epochs
        self.log_every = config.log_every or max(1, round(self.steps_per_epoch / 100))
        self.step = 0
        self.running_loss, self.running_count = torch.zeros((), device=device), 0
        self.images_seen = 0  # in this process, for images per second
        self.test_accuracy: float | None = None
        self.test_points: list[TestPoint] = []
        self.clock = Stopwatch()

    def resume_from(self, resume: dict) -> None:
        """A checkpoint's weights and "training" entry: the run goes on exactly where it stopped."""
        training = resume["training"]
        self.model.load_state_dict(resume["model"])
        self.optimizer.load_state_dict(training["optimizer"])
        self.step = training["step"]
        self.clock = Stopwatch(before=training.get("train_seconds", 0.0))
        # The running loss goes along, so a resumed run reports exactly the losses an unbroken one would.
        self.running_loss += training.get("running_loss", 0.0)
        self.running_count = training.get("running_count", 0)

    def epoch(self, epoch: int, stop) -> bool:
        """Train the rest of one epoch (all of it, unless resumed inside it); False when stopped on the way."""
        position = self.step - epoch * self.steps_per_epoch
        seed = self.config.seed * 100_003 + epoch
        order = torch.randperm(len(self.labels), generator=torch.Generator().manual_seed(seed)).to(self.device)
        every = self.config.test_every
        for images, labels in self.batches(order, position):
            if stop is not None and stop.is_set():
                return False
            before = self.trained_images()
            self.train_step(images, labels)
            position += 1
            if self.step % self.log_every == 0 or position == self.steps_per_epoch:
                self.log(epoch)
            if every and self.trained_images() // every > before // every and position < self.steps_per_epoch:
                self.test_within(epoch)  # the epoch's own test follows at its end
        return True

    def batches(self, order: torch.Tensor, start: int) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        """The epoch's batches from step `start` on, in its shuffled order.

        GATHER_IMAGES images are gathered at a time, so each batch is a slice, not a gather of its own (at batch 4
        a gather per step cost a tenth of it), and only that part of the epoch is ever copied (12 MB, not 150).
        """
        size = self.config.batch_size
        per_gather = max(1, GATHER_IMAGES // size)
        for first in range(start - start % per_gather, self.steps_per_epoch, per_gather):
            picked = order[first * size : (first + per_gather) * size]
            images, labels = self.images[self.positions[picked]], self.labels[picked]
            for position in range(max(start, first), min(first + per_gather, self.steps_per_epoch)):
                batch = slice((position - first) * size, (position - first + 1) * size)
                yield images[batch], labels[batch]

    def trained_images(self) -> int:
        """Training images seen so far in the whole run (the last batch of an epoch may be short)."""
        epochs, position = divmod(self.step, self.steps_per_epoch)
        return epochs * len(self.labels) + min(position * self.config.batch_size, len(self.labels))

    def train_step(self, images: torch.Tensor, labels: torch.Tensor) -> None:
        config = self.config
        if config.augment:
            images = augment(images, torch.Generator().manual_seed(config.seed * 1_000_003 + self.step), pad=config.crop_padding)
        if config.schedule != "constant":
            for group in self.optimizer.param_groups:
                group["lr"] = learning_rate(config, self.step, self.total_steps)
        loss = self.criterion(self.model(normalize(images, self.mean_std)), labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        # Summed on the device, read back only when logged: a .item() per step would wait for every step.
        self.running_loss += loss.detach()
        self.running_count += 1
        self.step += 1
        self.images_seen += len(labels)

    def log(self, epoch: int) -> None:
        """A point of the loss curve: the mean loss since the last one."""
        mean_loss = (self.running_loss / self.running_count).item()
        if not math.isfinite(mean_loss):
            raise TrainingDiverged(
                f"the loss became {mean_loss} at step {self.step}: training stopped. Lower the learning rate and start again."
            )
        rate = self.images_seen / max(self.clock.here, 1e-9)
        left = (self.total_steps - self.step) * self.config.batch_size / max(rate, 1e-9)
        self.emit(Step(epoch=epoch + 1, step=self.step, loss=mean_loss, lr=self.optimizer.param_groups[0]["lr"],
                       images_per_second=rate, train_seconds=self.clock.total, seconds_left=left))
        self.running_loss, self.running_count = torch.zeros((), device=self.device), 0

    def test(self, epoch: int) -> None:
        """After an epoch: test (and validation) accuracy, reported as an Epoch event."""
        point = self.test_point()
        self.emit(Epoch(epoch=epoch + 1, step=self.step, test_accuracy=point.test_accuracy, train_seconds=point.train_seconds,
                        validation_accuracy=point.validation_accuracy))

    def test_within(self, epoch: int) -> None:
        """Every test_every images inside an epoch: test (and validation) accuracy, reported as a Test event."""
        point = self.test_point()
        self.emit(Test(epoch=epoch + (self.step - epoch * self.steps_per_epoch) / self.steps_per_epoch, step=self.step,
                       images=point.images, test_accuracy=point.test_accuracy, train_seconds=point.train_seconds,
                       validation_accuracy=point.validation_accuracy))

    def test_point(self) -> TestPoint:
        """Test (and validation) accuracy now, in evaluation time that the stopwatch leaves out."""
        with self.clock.pause():
            self.test_accuracy = self.accuracy(self.test_split)
            held_out = self.accuracy(self.validation) if self.validation else None
        point = TestPoint(images=self.trained_images(), step=self.step, test_accuracy=self.test_accuracy,
                          validation_accuracy=held_out, train_seconds=self.clock.total)
        self.test_points.append(point)
        return point

    def accuracy(self, split) -> float:
        """The share of a split the model gets right, EVAL_BATCH images at a time: 250 rather than inference's 1,000
        keeps about 35 MB of activations off the training process's memory peak, at no measurable cost in time."""
        logits = predict_logits(self.model, split.images, self.normalization, batch_size=EVAL_BATCH)
        return (logits.argmax(1).cpu() == split.labels.cpu()).float().mean().item()

    def checkpoint(self, on_checkpoint, reason: str) -> None:
        if on_checkpoint is None:
            return
        training = {"optimizer": self.optimizer.state_dict(), "step": self.step, "train_seconds": self.clock.total,
                    "running_loss": self.running_loss.item(), "running_count": self.running_count}
        metrics = {"epoch": self.step / self.steps_per_epoch, "step": self.step, "test_accuracy": self.test_accuracy, "reason": reason}
        on_checkpoint(self.model.state_dict(), training, metrics)


def train(
    config: TrainConfig,
    data: CIFAR10,
    on_event: Callable[[Event], None] | None = None,
    stop: threading.Event | None = None,
    resume: dict | None = None,
    on_checkpoint: Callable[[dict, dict, dict], None] | None = None,
    watch: Callable[[LeNet5, Event], None] | None = None,
) -> TrainResult:
    """Train LeNet-5 on data.train, testing on data.test after each epoch.

    on_event(event) gets the events of lenet.events: Start, Step (the loss every log_every steps), Epoch,
    Test (every test_every images inside an epoch), End.
    on_checkpoint(model_state, training_state, metrics) is called after each epoch and when stopped.
    watch(model, event) is called after each Step and Epoch with the model itself, to look inside it (read only).
    stop is checked every step. resume is a checkpoint's "training" entry plus its "model" weights.
    """
    config.validate(len(data.train))
    device = pick_device(config.device)
    history: list[Event] = []

    def emit(event: Event) -> None:
        history.append(event)
        if on_event is not None:
            on_event(event)
        if watch is not None and isinstance(event, (Step, Epoch)):
            watch(loop.model, event)

    loop = _Loop(config, data, device, emit)
    if resume is not None:
        loop.resume_from(resume)
    emit(Start(total_steps=loop.total_steps, steps_per_epoch=loop.steps_per_epoch, train_images=len(loop.labels),
               device=str(device), threads=torch.get_num_threads(), resumed_at_step=loop.step))

    # Below batches of 8, oneDNN's convolutions cost more to set up than they save: ATen's own make a step at
    # batch 4 some 12% quicker on CPU. At 16 and up oneDNN is far faster, and testing (outside the switch) keeps it.
    use_onednn = torch.backends.mkldnn.enabled and not (device.type == "cpu" and config.batch_size < 8)
    loop.model.train()
    stopped = False
    while loop.step < loop.total_steps:
        epoch = loop.step // loop.steps_per_epoch
        with onednn(use_onednn):
            stopped = not loop.epoch(epoch, stop)
        if stopped:
            loop.checkpoint(on_checkpoint, "stopped")
            break
        loop.test(epoch)
        loop.checkpoint(on_checkpoint, "epoch")
    emit(End(step=loop.step, stopped=stopped, test_accuracy=loop.test_accuracy, train_seconds=loop.clock.total))
    return TrainResult(model=loop.model.eval(), history=history, test_accuracy=loop.test_accuracy,
                       train_seconds=loop.clock.total, stopped=stopped, test_points=loop.test_points)
