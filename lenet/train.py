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
from dataclasses import asdict, dataclass, fields

import torch
import torch.nn.functional as F

from .data import CIFAR10, train_validation_split
from .inference import NORMALIZATIONS, accuracy, normalization_tensors, normalize, pick_device
from .model import LeNet5

OPTIMIZERS = ("sgd", "adam", "adamw")
SCHEDULES = ("constant", "onecycle", "cosine")


class ConfigError(ValueError):
    """A hyperparameter is out of range; the message says which and what is allowed."""


class TrainingDiverged(RuntimeError):
    """The loss became NaN or infinite."""


@dataclass
class TrainConfig:
    preset: str = "walkthrough"
    epochs: int = 2
    batch_size: int = 4
    optimizer: str = "sgd"
    lr: float = 0.001
    momentum: float = 0.9
    nesterov: bool = False
    weight_decay: float = 0.0
    schedule: str = "constant"  # constant, onecycle (linear up then down) or cosine
    warmup: float = 0.0  # fraction of all steps spent warming up (onecycle, cosine)
    label_smoothing: float = 0.0
    augment: bool = False  # random crop with crop_padding-pixel zero padding + horizontal flip, on whole batches
    crop_padding: int = 4  # pixels of padding for augment's random crop; 0: flips only
    normalization: str = "walkthrough"
    train_subset: int = 0  # train on this many images (0: all), for quick demos
    validation_size: int = 0  # hold this many training images out, to choose recipes without the test set
    seed: int = 0
    log_every: int = 0  # steps between loss reports; 0: about 100 per epoch
    device: str = "auto"

    def validate(self, train_images: int = 50_000) -> "TrainConfig":
        """Raise ConfigError naming the first nonsensical value; return self when all are sound."""

        def number(name, low, high, integer=False, low_open=False):
            value = getattr(self, name)
            if isinstance(value, bool) or not isinstance(value, (int, float)) or (integer and not float(value).is_integer()):
                raise ConfigError(f"{name} must be {'a whole number' if integer else 'a number'}, got {value!r}")
            if not math.isfinite(value) or value < low or value > high or (low_open and value == low):
                raise ConfigError(f"{name} must be {'above' if low_open else 'at least'} {low} and at most {high}, got {value!r}")

        number("epochs", 1, 1000, integer=True)
        number("lr", 0, 10, low_open=True)
        number("momentum", 0, 0.999)
        number("weight_decay", 0, 1)
        number("warmup", 0, 0.9)
        number("label_smoothing", 0, 0.9)
        number("crop_padding", 0, 8, integer=True)
        number("seed", 0, 2**31 - 1, integer=True)
        number("log_every", 0, 10**7, integer=True)
        number("validation_size", 0, train_images - 1, integer=True)
        number("train_subset", 0, train_images, integer=True)
        available = min(self.train_subset or train_images, train_images - self.validation_size)
        number("batch_size", 1, max(1, min(available, 8192)), integer=True)
        for name, allowed in (("optimizer", OPTIMIZERS), ("schedule", SCHEDULES), ("normalization", NORMALIZATIONS)):
            if getattr(self, name) not in allowed:
                raise ConfigError(f"{name} must be one of {', '.join(allowed)}, got {getattr(self, name)!r}")
        if self.device not in ("auto", "cpu", "cuda", "mps"):
            raise ConfigError(f"device must be auto, cpu, cuda or mps, got {self.device!r}")
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


PRESETS = {
    # The walkthrough, unchanged: the reference every class can compare with.
    "walkthrough": TrainConfig(),
    # A live demo: about 60% test accuracy in about 9 s of training on 2 CPU cores (55% after 2 of its 3 epochs).
    # Chosen on a 5,000-image validation split: 3 epochs at batch 128 and lr 0.1 match 4 at batch 64 in less time.
    "quick": TrainConfig(
        preset="quick", epochs=3, batch_size=128, optimizer="sgd", lr=0.1, momentum=0.9, nesterov=True,
        weight_decay=5e-4, schedule="onecycle", warmup=0.2, label_smoothing=0.1, normalization="cifar10",
    ),
    # The most this architecture gives: augmentation, weight decay, one-cycle, label smoothing.
    # Chosen on a 5,000-image validation split: a 2-pixel crop beats 4 pixels (too much shift for a net this small),
    # and weight decay 1e-3 beats 5e-4.
    "best": TrainConfig(
        preset="best", epochs=60, batch_size=128, optimizer="sgd", lr=0.05, momentum=0.9, nesterov=True,
        weight_decay=1e-3, schedule="onecycle", warmup=0.15, label_smoothing=0.1, augment=True, crop_padding=2,
        normalization="cifar10",
    ),
}


def preset(name: str, **overrides) -> TrainConfig:
    if name not in PRESETS:
        raise ConfigError(f"unknown preset {name!r}; choose one of {', '.join(PRESETS)}")
    return TrainConfig.from_dict({**PRESETS[name].to_dict(), **overrides})


def augment(images: torch.Tensor, generator: torch.Generator, pad: int = 4) -> torch.Tensor:
    """Random crop with zero padding and random horizontal flip, for a whole uint8 batch at once."""
    n, _, h, w = images.shape
    padded = F.pad(images, (pad, pad, pad, pad))
    dy = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    dx = torch.randint(0, 2 * pad + 1, (n,), generator=generator).to(images.device)
    flip = (torch.rand(n, generator=generator) < 0.5).to(images.device)
    rows = dy[:, None] + torch.arange(h, device=images.device)
    cols = dx[:, None] + torch.arange(w, device=images.device)
    cols = torch.where(flip[:, None], cols.flip(1), cols)
    batch = torch.arange(n, device=images.device)[:, None, None, None]
    channel = torch.arange(images.shape[1], device=images.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]


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


def make_optimizer(config: TrainConfig, model: torch.nn.Module) -> torch.optim.Optimizer:
    # Weight decay on weights only: decaying biases only slows a network this small.
    decay = [p for n, p in model.named_parameters() if n.endswith("weight")]
    rest = [p for n, p in model.named_parameters() if not n.endswith("weight")]
    groups = [{"params": decay, "weight_decay": config.weight_decay}, {"params": rest, "weight_decay": 0.0}]
    if config.optimizer == "sgd":
        # Fused: one kernel for all ten parameters, a few percent of a step at batch 4 (CPU and CUDA have it).
        fused = next(model.parameters()).device.type in ("cpu", "cuda")
        return torch.optim.SGD(groups, lr=config.lr, momentum=config.momentum, nesterov=config.nesterov and config.momentum > 0,
                               fused=fused)
    cls = torch.optim.Adam if config.optimizer == "adam" else torch.optim.AdamW
    return cls(groups, lr=config.lr)


def default_threads() -> int:
    return max(1, os.cpu_count() or 1)


@dataclass
class TrainResult:
    model: LeNet5
    history: list[dict]  # every event, in order
    test_accuracy: float | None
    train_seconds: float
    stopped: bool


def train(
    config: TrainConfig,
    data: CIFAR10,
    on_event: Callable[[dict], None] | None = None,
    stop: threading.Event | None = None,
    resume: dict | None = None,
    on_checkpoint: Callable[[dict, dict, dict], None] | None = None,
) -> TrainResult:
    """Train LeNet-5 on data.train, testing on data.test after each epoch.

    on_event(event) gets plain dicts: "start", "step" (loss every log_every steps), "epoch", "end".
    on_checkpoint(model_state, training_state, metrics) is called after each epoch and when stopped.
    stop is checked every step. resume is a checkpoint's "training" entry plus its "model" weights.
    """
    config.validate(len(data.train))
    device = pick_device(config.device)
    normalization = NORMALIZATIONS[config.normalization]
    emit = on_event or (lambda event: None)
    history: list[dict] = []

    def publish(event: dict) -> None:
        history.append(event)
        emit(event)

    # Which images train: a seeded held-out validation set first, then an optional subset.
    train_idx, val_idx = train_validation_split(len(data.train), config.validation_size, config.seed)
    if config.train_subset:
        train_idx = train_idx[: config.train_subset]
    train_images = data.train.images[train_idx].to(device)
    train_labels = data.train.labels[train_idx].to(device)
    val_images, val_labels = data.train.images[val_idx], data.train.labels[val_idx]

    torch.manual_seed(config.seed)
    model = LeNet5().to(device)
    mean_std = normalization_tensors(normalization, device)
    optimizer = make_optimizer(config, model)
    criterion = torch.nn.CrossEntropyLoss(label_smoothing=config.label_smoothing)
    n = len(train_labels)
    steps_per_epoch = math.ceil(n / config.batch_size)
    total_steps = steps_per_epoch * config.epochs
    log_every = config.log_every or max(1, round(steps_per_epoch / 100))
    step, elapsed_before = 0, 0.0
    running_loss, running_count = torch.zeros((), device=device), 0
    if resume is not None:
        model.load_state_dict(resume["model"])
        optimizer.load_state_dict(resume["training"]["optimizer"])
        step = resume["training"]["step"]
        elapsed_before = resume["training"].get("train_seconds", 0.0)
        running_loss += resume["training"].get("running_loss", 0.0)
        running_count = resume["training"].get("running_count", 0)
    publish({"event": "start", "total_steps": total_steps, "steps_per_epoch": steps_per_epoch, "train_images": n,
             "device": str(device), "threads": torch.get_num_threads(), "resumed_at_step": step})

    model.train()
    test_accuracy, stopped = None, False
    started = time.perf_counter()
    seen_since_start = 0

    def train_seconds() -> float:
        return elapsed_before + train_clock

    def save(reason: str) -> None:
        if on_checkpoint is not None:
            # The running loss goes along, so a resumed run reports exactly the losses an unbroken one would.
            training = {"optimizer": optimizer.state_dict(), "step": step, "train_seconds": train_seconds(),
                        "running_loss": running_loss.item(), "running_count": running_count}
            on_checkpoint(model.state_dict(), training,
                          {"epoch": step / steps_per_epoch, "step": step, "test_accuracy": test_accuracy, "reason": reason})

    # Below batches of 8, oneDNN's convolutions cost more to set up than they save: ATen's own make a step at
    # batch 4 some 12% quicker on CPU (at 16 and up oneDNN is far faster, and evaluation keeps it).
    onednn_for_training = torch.backends.mkldnn.enabled and not (device.type == "cpu" and config.batch_size < 8)
    train_clock, eval_clock = 0.0, 0.0
    while step < total_steps:
        epoch, position = divmod(step, steps_per_epoch)
        order = torch.randperm(n, generator=torch.Generator().manual_seed(config.seed * 100_003 + epoch)).to(device)
        # The epoch's images in its shuffled order, gathered once: each batch is then a slice, not a gather.
        epoch_images, epoch_labels = train_images[order], train_labels[order]
        with onednn(onednn_for_training):
            while position < steps_per_epoch:
                if stop is not None and stop.is_set():
                    stopped = True
                    break
                batch = slice(position * config.batch_size, (position + 1) * config.batch_size)
                images, labels = epoch_images[batch], epoch_labels[batch]
                if config.augment:
                    images = augment(images, torch.Generator().manual_seed(config.seed * 1_000_003 + step), pad=config.crop_padding)
                if config.schedule != "constant":
                    for group in optimizer.param_groups:
                        group["lr"] = learning_rate(config, step, total_steps)
                loss = criterion(model(normalize(images, mean_std)), labels)
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
                running_loss += loss.detach()
                running_count += 1
                step += 1
                position += 1
                seen_since_start += len(labels)
                if step % log_every == 0 or position == steps_per_epoch:
                    mean_loss = (running_loss / running_count).item()
                    if not math.isfinite(mean_loss):
                        raise TrainingDiverged(
                            f"the loss became {mean_loss} at step {step}: training stopped. Lower the learning rate and start again."
                        )
                    train_clock = time.perf_counter() - started - eval_clock
                    rate = seen_since_start / max(train_clock, 1e-9)
                    publish({"event": "step", "epoch": epoch + 1, "step": step, "loss": mean_loss, "lr": optimizer.param_groups[0]["lr"],
                             "images_per_second": rate, "train_seconds": train_seconds(),
                             "seconds_left": (total_steps - step) * config.batch_size / max(rate, 1e-9)})
                    running_loss, running_count = torch.zeros((), device=device), 0
        if stopped:
            break
        # The end of an epoch: test (and validation) accuracy, then a checkpoint.
        tick = time.perf_counter()
        test_accuracy = accuracy(model, data.test.images, data.test.labels, normalization)
        event = {"event": "epoch", "epoch": epoch + 1, "step": step, "test_accuracy": test_accuracy}
        if config.validation_size:
            event["validation_accuracy"] = accuracy(model, val_images, val_labels, normalization)
        eval_clock += time.perf_counter() - tick
        train_clock = time.perf_counter() - started - eval_clock
        event["train_seconds"] = train_seconds()
        publish(event)
        save("epoch")
    train_clock = time.perf_counter() - started - eval_clock
    if stopped:
        save("stopped")
    publish({"event": "end", "step": step, "stopped": stopped, "test_accuracy": test_accuracy, "train_seconds": train_seconds()})
    return TrainResult(model=model.eval(), history=history, test_accuracy=test_accuracy, train_seconds=train_seconds(), stopped=stopped)
