"""Checkpoints: a state_dict plus plain metadata, written atomically and read without running code."""

import io
import math
import os
import platform
import re
from pathlib import Path

import torch

from .data import CLASSES
from .files import atomic_write
from .model import LeNet5

FORMAT = "lenet5-cifar10/1"
MAX_CHECKPOINT_BYTES = 50 * 2**20  # LeNet-5 weights are ~250 KB; anything huge is not ours


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message names the file and says why."""


def versions() -> dict:
    import torchvision

    # str(): torch.__version__ is a TorchVersion, which weights_only loading (rightly) refuses to unpickle.
    return {"python": platform.python_version(), "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


def save_checkpoint(path, model_state: dict, meta: dict, training_state: dict | None = None) -> None:
    """meta holds normalization, recipe, metrics, ...; training_state (optimizer, progress) allows resuming."""
    write_checkpoint_bytes(path, checkpoint_bytes(model_state, meta, training_state))


def write_checkpoint_bytes(path, data: bytes) -> None:
    """Write what checkpoint_bytes() made, atomically."""
    atomic_write(Path(path), lambda tmp: tmp.write_bytes(data))


def checkpoint_bytes(model_state: dict, meta: dict, training_state: dict | None = None) -> bytes:
    """The checkpoint file's content: a training process makes it, and its server writes it in order with the metrics."""
    entry = {
        "format": FORMAT,
        "model": {k: v.detach().cpu().clone() for k, v in model_state.items()},
        "meta": {"classes": list(CLASSES), "versions": versions(), **meta},
    }
    if training_state is not None:
        entry["training"] = training_state
    buffer = io.BytesIO()
    torch.save(entry, buffer)
    return buffer.getvalue()


def load_checkpoint(path) -> dict:
    """The checkpoint's dict, validated against LeNet-5 and CIFAR-10's classes; CheckpointError otherwise."""
    path = Path(path)
    if not path.is_file():
        raise CheckpointError(f"{path}: no such checkpoint file")
    if path.stat().st_size > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{path}: {path.stat().st_size / 2**20:.0f} MB is far too large for a LeNet-5 checkpoint")
    try:
        # weights_only refuses any pickle that would import or call code.
        entry = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every failure here means "not a usable checkpoint"
        raise CheckpointError(f"{path}: not a readable LeNet-5 checkpoint ({_reason(error)})") from None
    validate(entry, path)
    return entry


# Lines of torch.load's messages that are advice, not reason; one says to load with weights_only=False.
_TORCH_ADVICE = ("weights only load failed", "please file an issue", "check the documentation")


def _reason(error: Exception) -> str:
    """One short line out of torch.load's long messages; a refused pickle says what it tried to load."""
    text = str(error)
    # torch < 2.6: "Unsupported global: GLOBAL posix.system was not ..."; later: "... unsupported GLOBAL posix.system whose ..."
    code = re.search(r"unsupported global:?\s+(?:GLOBAL\s+)?([\w.]+)", text, re.IGNORECASE)
    if code:
        return f"refused: it holds code or objects other than weights ({code.group(1)})"
    lines = [line.strip() for line in text.splitlines() if line.strip() and not line.strip().lower().startswith(_TORCH_ADVICE)]
    return (lines[0] if lines else type(error).__name__)[:200]


def validate(entry, path) -> None:
    if not isinstance(entry, dict) or entry.get("format") != FORMAT:
        raise CheckpointError(f"{path}: not a LeNet-5 CIFAR-10 checkpoint (format {FORMAT!r} expected)")
    state, meta = entry.get("model"), entry.get("meta")
    if not isinstance(state, dict) or not isinstance(meta, dict):
        raise CheckpointError(f"{path}: the checkpoint lacks its weights or metadata")
    expected = LeNet5().state_dict()
    if set(state) != set(expected):
        raise CheckpointError(f"{path}: the weights are not LeNet-5's (layers {sorted(set(state) ^ set(expected))} differ)")
    for name, tensor in expected.items():
        if not isinstance(state[name], torch.Tensor) or state[name].shape != tensor.shape:
            shape = tuple(getattr(state[name], "shape", ()))
            raise CheckpointError(f"{path}: layer {name} has shape {shape}, LeNet-5 needs {tuple(tensor.shape)}")
        if not torch.isfinite(state[name]).all():
            raise CheckpointError(f"{path}: layer {name} holds NaN or infinite weights")
    if meta.get("classes") != list(CLASSES):
        raise CheckpointError(f"{path}: trained for classes {meta.get('classes')}, not CIFAR-10's {list(CLASSES)}")
    norm = meta.get("normalization")
    ok = (
        isinstance(norm, dict)
        and all(isinstance(norm.get(k), list) and len(norm[k]) == 3 for k in ("mean", "std"))
        and all(isinstance(v, (int, float)) and math.isfinite(v) for v in norm["mean"] + norm["std"])
        and all(v > 0 for v in norm["std"])
    )
    if not ok:
        raise CheckpointError(f"{path}: the normalization (3 means, 3 positive stds) is missing or invalid")


def load_model(path, device: str | torch.device = "cpu") -> tuple[LeNet5, dict]:
    """A LeNet-5 in eval mode with the checkpoint's weights, and its metadata."""
    entry = load_checkpoint(path)
    model = LeNet5()
    model.load_state_dict(entry["model"])
    return model.to(device).eval(), entry["meta"]


def default_checkpoint() -> Path:
    """The shipped pretrained model, unless LENET_CHECKPOINT names another."""
    return Path(os.environ.get("LENET_CHECKPOINT") or Path(__file__).resolve().parent.parent / "assets" / "lenet5-cifar10.pt")
