"""What a training run reports, as types: the trainer emits these events, the registry keeps them, pages read them.

Every event travels as a dataclass inside a process and as a plain dict (with its "event" name) in metrics.json
and through the pipe from the training process. `from_dict` is strict: a missing or misspelt field is an error,
so a change to one side of the protocol fails a test instead of turning into a silent default on a page.
"""

import math
from dataclasses import asdict, dataclass, fields

import torch


class EventError(ValueError):
    """A dict is not the event it claims to be (a damaged metrics or status file, or another version's)."""


@dataclass(frozen=True)
class Start:
    """Training begins (or resumes at resumed_at_step)."""

    total_steps: int
    steps_per_epoch: int
    train_images: int
    device: str
    threads: int
    resumed_at_step: int


@dataclass(frozen=True)
class Step:
    """The mean loss over the steps since the last Step: a point of the loss curve."""

    epoch: int
    step: int
    loss: float
    lr: float
    images_per_second: float
    train_seconds: float
    seconds_left: float


@dataclass(frozen=True)
class Epoch:
    """An epoch ended: its test accuracy (and validation accuracy when images are held out)."""

    epoch: int
    step: int
    test_accuracy: float
    train_seconds: float
    validation_accuracy: float | None = None


@dataclass(frozen=True)
class Test:
    """Accuracy measured inside an epoch, every test_every training images (the epoch's end is an Epoch event)."""

    epoch: float  # epochs trained when measured: 0.25 a quarter into the first
    step: int
    images: int  # training images seen in the whole run
    test_accuracy: float
    train_seconds: float
    validation_accuracy: float | None = None


@dataclass(frozen=True)
class End:
    """Training ended: finished, or stopped on request."""

    step: int
    stopped: bool
    test_accuracy: float | None
    train_seconds: float


Event = Start | Step | Epoch | Test | End
KINDS: dict[str, type] = {"start": Start, "step": Step, "epoch": Epoch, "test": Test, "end": End}
NAMES = {cls: name for name, cls in KINDS.items()}


def to_dict(event: Event) -> dict:
    return {"event": NAMES[type(event)], **asdict(event)}


def from_dict(values: dict, kind: type | None = None) -> Event:
    """The event a dict holds; EventError when its name, fields or their types are not as written."""
    if not isinstance(values, dict):
        raise EventError(f"an event must be a mapping, got {type(values).__name__}")
    cls = KINDS.get(values.get("event")) if kind is None else kind
    if cls is None or (kind is not None and values.get("event", NAMES[kind]) != NAMES[kind]):
        raise EventError(f"unknown event {values.get('event')!r}")
    given = {k: v for k, v in values.items() if k != "event"}
    names = {f.name for f in fields(cls)}
    required = {f.name for f in fields(cls) if f.default is not None}
    if set(given) - names or required - set(given):
        raise EventError(f"{NAMES[cls]} event with fields {sorted(given)}, expected {sorted(names)}")
    for f in fields(cls):
        if f.name in given and not _fits(given[f.name], f.type):
            raise EventError(f"{NAMES[cls]} event: {f.name} = {given[f.name]!r} is not {f.type}")
    return cls(**given)


def _fits(value, annotation) -> bool:
    """Whether a JSON value is of a field's declared type (int, float, str, bool, or one of them | None)."""
    options = [t.strip() for t in str(annotation).replace("<class '", "").replace("'>", "").split("|")]
    if value is None:
        return "None" in options
    if isinstance(value, bool):
        return "bool" in options
    if isinstance(value, int):
        return "int" in options or "float" in options
    if isinstance(value, float):
        return "float" in options and math.isfinite(value)
    return isinstance(value, str) and "str" in options


@dataclass
class Progress:
    """Where a run stands: what its Start said, updated by each Step, Epoch and End. Zeros before it starts."""

    epochs: int
    total_steps: int = 0
    steps_per_epoch: int = 0
    train_images: int = 0
    device: str = ""
    threads: int = 0
    epoch: int = 0
    step: int = 0
    images_per_second: float = 0.0
    train_seconds: float = 0.0
    seconds_left: float | None = None
    training_pid: int | None = None  # the process that trains it (None: not started, or not known)

    @property
    def fraction(self) -> float:
        return min(1.0, self.step / self.total_steps) if self.total_steps else 0.0

    def apply(self, event: Event) -> None:
        if isinstance(event, Start):
            self.total_steps, self.steps_per_epoch = event.total_steps, event.steps_per_epoch
            self.train_images, self.device, self.threads = event.train_images, event.device, event.threads
            self.step = event.resumed_at_step
            self.epoch = event.resumed_at_step // max(1, event.steps_per_epoch) + 1
        elif isinstance(event, Step):
            self.epoch, self.step, self.train_seconds = event.epoch, event.step, event.train_seconds
            self.images_per_second, self.seconds_left = event.images_per_second, event.seconds_left
        elif isinstance(event, (Epoch, Test)):
            self.step, self.train_seconds = event.step, event.train_seconds
        else:
            self.step, self.train_seconds, self.seconds_left = event.step, event.train_seconds, 0.0

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, values: dict) -> "Progress":
        """Strict, as from_dict for events: a status file written by this version reads back exactly."""
        if not isinstance(values, dict) or set(values) != {f.name for f in fields(cls)}:
            raise EventError(f"progress with fields {sorted(values) if isinstance(values, dict) else values!r}")
        for f in fields(cls):
            if not _fits(values[f.name], f.type):
                raise EventError(f"progress: {f.name} = {values[f.name]!r} is not {f.type}")
        return cls(**values)


@dataclass(frozen=True)
class LiveView:
    """A look inside the model while it trains, made by the training process itself (cheap: 10 images, 6 filters):
    conv1's filters and the fixed panel's probabilities at one moment. Sent to the server, never written to disk."""

    step: int
    epoch: int  # the epoch in progress (after a Step) or just finished (after an Epoch), from 1
    filters: torch.Tensor  # conv1.weight, 6 x 3 x 5 x 5
    images: torch.Tensor  # the panel, uint8 10 x 3 x 32 x 32, one test image per class
    labels: list[int]  # the panel's true classes
    probabilities: torch.Tensor  # 10 x 10: each panel image's probability for each class
