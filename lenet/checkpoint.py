"""Checkpoints: a state_dict plus plain metadata, written atomically and read without running code.

What loads: this project's checkpoints, and the walkthrough's own `torch.save(net.state_dict(), PATH)`
(a bare state_dict: its meta says which preprocessing was assumed). From a path, from bytes in memory
or from a binary file object (a browser upload), never writing anything to disk.

What is refused, each with one line naming the file: anything over MAX_CHECKPOINT_BYTES, before or after
unzipping; pickles outside torch's zip format; pickles that would run code; other networks; tensors that
are not dense float32 on the CPU; NaN or infinite weights; a resume state of the wrong types; and any
model whose answers on a few fixed test patterns are not finite numbers.
"""

import io
import math
import os
import pickletools
import platform
import re
import warnings
import zipfile
from collections.abc import Mapping
from pathlib import Path

import torch

from .data import CLASSES, WALKTHROUGH_NORMALIZATION
from .files import atomic_write
from .inference import predict_logits
from .model import LeNet5
from .train import parameter_groups

FORMAT = "lenet5-cifar10/1"
# LeNet-5's weights are 248 KB; a resumable checkpoint adds the optimizer's state (SGD's momentum doubles it,
# Adam's two moments triple it), with metadata under 1 MB in all. 4 MB leaves room while keeping a hostile file
# from making a server allocate much: the bound holds for the file and for what its zip entries unpack to.
MAX_CHECKPOINT_BYTES = 4 * 2**20
TOP_LEVEL_KEYS = ("format", "model", "meta", "training")
TRAINING_KEYS = ("optimizer", "step", "train_seconds", "running_loss", "running_count")
# A trained LeNet-5's logits are tens; a million leaves room for any real training and still 32 orders of magnitude
# below float32's overflow.
MAX_LOGIT = 1e6
MAX_STEPS = 10**9  # 1,000 epochs of 50,000 single-image steps is 5e7: anything beyond is not a real run
STATE_DICT_ASSUMED = (
    "A plain state_dict without metadata: the walkthrough's preprocessing (ToTensor, then Normalize with mean 0.5 "
    "and std 0.5) and CIFAR-10's class order were assumed."
)
# What a resumable optimizer state may hold per parameter (make_optimizer's SGD, Adam and AdamW).
OPTIMIZER_STATE_KEYS = {"momentum_buffer", "step", "exp_avg", "exp_avg_sq", "max_exp_avg_sq"}


class CheckpointError(Exception):
    """A checkpoint cannot be used; the message names the file and says why, in one line."""


def versions() -> dict:
    import torchvision

    # str(): torch.__version__ is a TorchVersion, which weights_only loading (rightly) refuses to unpickle.
    return {"python": platform.python_version(), "torch": str(torch.__version__), "torchvision": str(torchvision.__version__)}


# -- writing -------------------------------------------------------------------------------------------------


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


# -- reading -------------------------------------------------------------------------------------------------


def load_checkpoint(source, name: str | None = None) -> dict:
    """The checkpoint's dict {"format", "model", "meta"[, "training"]}, validated; CheckpointError otherwise.

    source: a path, the file's bytes, or a binary file object; name: how messages call it (default: the path,
    else "the uploaded file"). A bare state_dict comes back in the same shape, with meta["source"] "state_dict".
    """
    entry, _model = _load(source, name)
    return entry


def load_model(source, device: str | torch.device = "cpu", name: str | None = None) -> tuple[LeNet5, dict]:
    """A LeNet-5 in eval mode with the checkpoint's weights, and its metadata (source as for load_checkpoint)."""
    entry, model = _load(source, name)
    return model.to(device).eval(), entry["meta"]


def load_model_bytes(data: bytes, name: str = "the uploaded file", device: str | torch.device = "cpu") -> tuple[LeNet5, dict]:
    """load_model for a file held in memory (a browser upload): nothing is written to disk."""
    if not isinstance(data, (bytes, bytearray, memoryview)):
        raise CheckpointError(f"{name}: expected the file's bytes, got {type(data).__name__}")
    return load_model(bytes(data), device, name=name)


def _load(source, name: str | None) -> tuple[dict, LeNet5]:
    data, name = _read_bounded(source, name)
    _check_archive(data, name)
    entry = _unpickle(data, name)
    if is_bare_state_dict(entry):
        entry = {"format": FORMAT, "model": dict(entry), "meta": assumed_meta()}
    validate(entry, name)
    model = LeNet5()
    model.load_state_dict(entry["model"])
    model.test_flips = uses_test_flips(entry["meta"])
    check_outputs(model.eval(), entry["meta"]["normalization"], name)
    return entry, model


def _read_bounded(source, name: str | None) -> tuple[bytes, str]:
    """The file's bytes, read through the size limit, and the name messages use."""
    if isinstance(source, (bytes, bytearray, memoryview)):
        name = name or "the uploaded file"
        data = bytes(source)
    elif hasattr(source, "read"):
        name = name or str(getattr(source, "name", "") or "the uploaded file")
        data = source.read(MAX_CHECKPOINT_BYTES + 1)
        if not isinstance(data, bytes):
            raise CheckpointError(f"{name}: open the file in binary mode ('rb') to load it")
    else:
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise CheckpointError(f"{name}: no such checkpoint file")
        try:
            with open(path, "rb") as f:
                data = f.read(MAX_CHECKPOINT_BYTES + 1)  # bounded even if the file grows after a size check
        except OSError as error:
            raise CheckpointError(f"{name}: cannot be read ({error.strerror or error})") from None
    if len(data) > MAX_CHECKPOINT_BYTES:
        size = os.path.getsize(source) if isinstance(source, (str, Path)) else len(data)
        raise CheckpointError(f"{name}: {size / 2**20:.0f} MB is far too large for a LeNet-5 checkpoint "
                              f"(at most {MAX_CHECKPOINT_BYTES // 2**20} MB)")
    return data, name


def _check_archive(data: bytes, name: str) -> None:
    """Refuse before unpickling anything that is not torch's zip format, or that would unpack to too much."""
    if not data:
        raise CheckpointError(f"{name}: not a readable LeNet-5 checkpoint (the file is empty)")
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError):
        if data.startswith(b"PK"):
            why = "a damaged or truncated zip archive"
        elif data[:1] == b"\x80":
            # torch's legacy format (and a plain pickle) sizes its tensors from numbers in the file itself:
            # a few bytes could ask for gigabytes. torch.save has written zip archives since torch 1.6.
            code = [g for g in _pickle_globals(data) if g not in _LEGACY_WEIGHT_GLOBALS]
            why = "a bare pickle or torch's legacy format, refused unread: " + (
                f"it holds code or objects other than weights ({_few(code, 3)})" if code else "save it again with torch.save")
        else:
            why = "not a file torch.save writes"
        raise CheckpointError(f"{name}: not a readable LeNet-5 checkpoint ({why})") from None
    with archive:
        unpacked = sum(info.file_size for info in archive.infolist())
    # The sizes the zip declares bound what torch's reader allocates (it extracts into buffers of that size).
    if unpacked > MAX_CHECKPOINT_BYTES:
        raise CheckpointError(f"{name}: unpacks to {unpacked / 2**20:,.0f} MB, far too large for a LeNet-5 checkpoint "
                              f"(at most {MAX_CHECKPOINT_BYTES // 2**20} MB); refused before loading")


# What torch's legacy format names for plain weights; anything else it names is code or an object.
_LEGACY_WEIGHT_GLOBALS = {"collections.OrderedDict", "torch._utils._rebuild_tensor_v2", "torch._utils._rebuild_parameter",
                          "torch.FloatStorage"}


def _pickle_globals(data: bytes) -> list[str]:
    """The module.name of every global the pickles at the start of data name, read by pickletools: nothing runs."""
    found, strings, stream = [], [], io.BytesIO(data)
    try:
        while stream.tell() < len(data):  # the legacy format is several pickles one after another, then raw bytes
            for opcode, arg, _position in pickletools.genops(stream):
                if opcode.name == "GLOBAL":
                    found.append(str(arg).replace(" ", "."))
                elif opcode.name == "STACK_GLOBAL" and len(strings) >= 2:
                    found.append(".".join(strings[-2:]))
                elif isinstance(arg, str):
                    strings.append(arg)
    except Exception:  # noqa: BLE001 - the raw tensor bytes after the pickles, or a damaged pickle: stop reading
        pass
    return list(dict.fromkeys(found))


def _unpickle(data: bytes, name: str):
    try:
        with warnings.catch_warnings():
            # torch remarks that it checks sparse tensors' indices: it should, and those are refused below anyway.
            warnings.filterwarnings("ignore", message="Validating sparse tensor invariants")
            # weights_only refuses any pickle that would import or call code.
            return torch.load(io.BytesIO(data), map_location="cpu", weights_only=True)
    except Exception as error:  # noqa: BLE001 - every failure here means "not a usable checkpoint"
        raise CheckpointError(f"{name}: not a readable LeNet-5 checkpoint ({_reason(error)})") from None


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


# -- the walkthrough's bare state_dict -----------------------------------------------------------------------


def uses_test_flips(meta: dict) -> bool:
    """Whether the model was tested, and so predicts, from each image and its mirror image together (its recipe's
    test_flips); a bare state_dict or an older checkpoint predicts from the image alone."""
    recipe = meta.get("recipe")
    return isinstance(recipe, dict) and recipe.get("test_flips") is True


def is_bare_state_dict(entry) -> bool:
    """torch.save(net.state_dict()): a mapping of layer names to tensors, without this project's "format"."""
    return (isinstance(entry, Mapping) and len(entry) > 0 and "format" not in entry
            and all(isinstance(k, str) and isinstance(v, torch.Tensor) for k, v in entry.items()))


def assumed_meta() -> dict:
    """What a bare state_dict is taken to be: the walkthrough's model, preprocessing and classes."""
    normalization = {key: list(values) for key, values in WALKTHROUGH_NORMALIZATION.items()}
    return {"classes": list(CLASSES), "normalization": normalization, "source": "state_dict", "assumed": STATE_DICT_ASSUMED}


# -- validation ----------------------------------------------------------------------------------------------


def validate(entry, name) -> None:
    """Raise CheckpointError unless entry is a LeNet-5 checkpoint for CIFAR-10 in this project's format."""
    if not isinstance(entry, dict):
        raise CheckpointError(f"{name}: not a LeNet-5 checkpoint nor a state_dict (it holds a {type(entry).__name__})")
    if entry.get("format") != FORMAT:
        found = f"format {entry['format']!r}" if "format" in entry else "no format, and not a state_dict"
        raise CheckpointError(f"{name}: not a LeNet-5 CIFAR-10 checkpoint ({found}; format {FORMAT!r} expected)")
    unknown = [str(key) for key in entry if key not in TOP_LEVEL_KEYS]
    if unknown:
        raise CheckpointError(f"{name}: unexpected entries {_few(unknown)} (a checkpoint holds {', '.join(TOP_LEVEL_KEYS)})")
    state, meta = entry.get("model"), entry.get("meta")
    if not isinstance(state, dict) or not isinstance(meta, dict):
        raise CheckpointError(f"{name}: the checkpoint lacks its weights or metadata")
    validate_weights(state, name)
    validate_meta(meta, name)
    if "training" in entry:
        recipe = meta.get("recipe")
        validate_training(entry["training"], name, optimizer=recipe.get("optimizer") if isinstance(recipe, dict) else None)


def validate_weights(state: dict, name) -> None:
    """LeNet-5's ten tensors, each dense float32 on the CPU, of the right shape, with finite values."""
    expected = LeNet5().state_dict()
    unexpected = [str(k) for k in state if k not in expected]
    missing = [k for k in expected if k not in state]
    if unexpected or missing:
        parts = ([f"unexpected layers {_few(unexpected)}"] if unexpected else []) + ([f"missing {_few(missing)}"] if missing else [])
        raise CheckpointError(f"{name}: the weights are not LeNet-5's ({'; '.join(parts)})")
    for layer, reference in expected.items():
        check_tensor(state[layer], f"{name}: layer {layer}", tuple(reference.shape))


def check_tensor(value, what: str, shape: tuple | None) -> None:
    """A dense float32 CPU tensor with finite values (and the given shape, when one is given)."""
    if not isinstance(value, torch.Tensor):
        raise CheckpointError(f"{what} is a {type(value).__name__}, not a tensor")
    if value.is_meta:
        raise CheckpointError(f"{what} is on the meta device: it has a shape but no values")
    if value.layout != torch.strided:
        raise CheckpointError(f"{what} is a {str(value.layout).removeprefix('torch.')} tensor; only dense tensors are accepted")
    if value.dtype != torch.float32:
        raise CheckpointError(f"{what} is {str(value.dtype).removeprefix('torch.')}; LeNet-5 checkpoints hold float32")
    if value.device.type != "cpu":
        raise CheckpointError(f"{what} is on {value.device}, not the CPU")
    if shape is not None and tuple(value.shape) != shape:
        raise CheckpointError(f"{what} has shape {tuple(value.shape)}, LeNet-5 needs {shape}")
    if not torch.isfinite(value).all():
        raise CheckpointError(f"{what} holds NaN or infinite values")


def validate_meta(meta: dict, name) -> None:
    if meta.get("classes") != list(CLASSES):
        raise CheckpointError(f"{name}: trained for classes {meta.get('classes')}, not CIFAR-10's {list(CLASSES)}")
    norm = meta.get("normalization")
    ok = (
        isinstance(norm, dict)
        and all(isinstance(norm.get(k), list) and len(norm[k]) == 3 for k in ("mean", "std"))
        and all(_is_number(v) and math.isfinite(v) for v in norm["mean"] + norm["std"])
        and all(v > 0 for v in norm["std"])
    )
    if not ok:
        raise CheckpointError(f"{name}: the normalization (3 means, 3 positive stds) is missing or invalid")


def validate_training(training, name="the checkpoint", optimizer: str | None = None) -> None:
    """The "training" entry, checked so that resuming from it never fails on a wrong type or a missing key.

    optimizer: the recipe's ("sgd", "adam", "adamw", "muon"), when known: its state must be of that kind.
    """
    where = f"{name}: the training state"
    if not isinstance(training, dict):
        raise CheckpointError(f"{where} is a {type(training).__name__}, not a dict")
    unknown = [str(k) for k in training if k not in TRAINING_KEYS]
    if unknown:
        raise CheckpointError(f"{where} has unexpected entries {_few(unknown)}")
    for key in ("optimizer", "step"):
        if key not in training:
            raise CheckpointError(f"{where} lacks its {key!r}")
    _check_count(training["step"], f"{where}'s step")
    if "running_count" in training:
        _check_count(training["running_count"], f"{where}'s running_count")
    for key, low in (("train_seconds", 0.0), ("running_loss", -math.inf)):
        value = training.get(key, 0.0)
        if not (_is_number(value) and math.isfinite(value) and value >= low):
            raise CheckpointError(f"{where}'s {key} must be a finite number{'' if low < 0 else ' of at least 0'}, got {value!r}")
    _validate_optimizer(training["optimizer"], f"{where}'s optimizer", optimizer)


def _validate_optimizer(state, where: str, optimizer: str | None) -> None:
    """An optimizer state_dict that make_optimizer's optimizer for LeNet-5 can load and step with."""
    if not isinstance(state, dict) or set(state) != {"state", "param_groups"}:
        raise CheckpointError(f"{where} is not an optimizer state (a dict of 'state' and 'param_groups')")
    groups = state["param_groups"]
    # make_optimizer's groups: the decayed weights, the biases, and with Muon the weights it moves; numbered in order.
    layouts = {name: parameter_groups(name) for name in ("sgd", "muon")}
    layout = layouts["muon" if optimizer == "muon" or (optimizer is None and isinstance(groups, list) and len(groups) == 3) else "sgd"]
    ids = iter(range(10))
    expected_ids = [[next(ids) for _ in names] for names in layout]
    if not isinstance(groups, list) or [g.get("params") if isinstance(g, dict) else None for g in groups] != expected_ids:
        labels = ("weights", "biases", "Muon's weights")
        parts = ", ".join(f"{label} {ids[0]}-{ids[-1]}" for label, ids in zip(labels, expected_ids, strict=False))
        raise CheckpointError(f"{where} is not for LeNet-5's {('two', 'three')[len(layout) - 2]} parameter groups ({parts})")
    shapes = {name: tuple(p.shape) for name, p in LeNet5().named_parameters()}
    shapes = [shapes[name] for names in layout for name in names]
    for group in groups:
        for key, value in group.items():
            if key != "params" and not _is_setting(value):
                raise CheckpointError(f"{where}'s setting {key!r} is {value!r}, not a finite number, a flag or None")
    per_parameter = state["state"]
    if not isinstance(per_parameter, dict):
        raise CheckpointError(f"{where}'s state is not a dict")
    kinds = set()
    for index, values in per_parameter.items():
        if not (isinstance(index, int) and not isinstance(index, bool) and 0 <= index < len(shapes)) or not isinstance(values, dict):
            raise CheckpointError(f"{where} holds state for {index!r}, not for one of LeNet-5's 10 parameters")
        unknown = [str(k) for k in values if k not in OPTIMIZER_STATE_KEYS]
        if unknown:
            raise CheckpointError(f"{where} holds unexpected state {_few(unknown)}")
        for key, value in values.items():
            if key == "step":  # Adam counts its steps in a scalar tensor (or a number)
                if not ((isinstance(value, torch.Tensor) and value.dim() == 0) or _is_number(value)):
                    raise CheckpointError(f"{where}'s step for parameter {index} is not a number")
                check_tensor(value if isinstance(value, torch.Tensor) else torch.tensor(float(value)), f"{where}'s step", ())
            elif value is not None:  # SGD without momentum keeps None
                check_tensor(value, f"{where}'s {key} for parameter {index}", shapes[index])
        kinds.add("sgd" if set(values) <= {"momentum_buffer"} else "adam")
    wanted = {"adamw": "adam", "muon": "sgd"}.get(optimizer, optimizer)  # Muon keeps a momentum buffer, as SGD
    if per_parameter and (len(kinds) > 1 or (wanted in ("sgd", "adam") and kinds != {wanted})):
        raise CheckpointError(f"{where} does not match the recipe's optimizer {optimizer!r}")
    if kinds == {"adam"} and any({"step", "exp_avg", "exp_avg_sq"} - set(values) for values in per_parameter.values()):
        raise CheckpointError(f"{where}: Adam's state needs step, exp_avg and exp_avg_sq for every parameter")


def _check_count(value, what: str) -> None:
    if isinstance(value, bool) or not isinstance(value, int) or not 0 <= value <= MAX_STEPS:
        raise CheckpointError(f"{what} must be a whole number from 0 to {MAX_STEPS:,}, got {value!r}")


def _is_number(value) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_setting(value) -> bool:
    """An optimizer hyperparameter: a flag, None, a finite number, or a pair of them (Adam's betas)."""
    if value is None or isinstance(value, bool):
        return True
    if isinstance(value, (tuple, list)):
        return len(value) <= 4 and all(_is_number(v) and math.isfinite(v) for v in value)
    return _is_number(value) and math.isfinite(value)


def _few(names: list[str], limit: int = 6) -> str:
    """A list of names for a one-line message: the first few, then how many more."""
    shown = ", ".join(names[:limit])
    return shown + (f" and {len(names) - limit} more" if len(names) > limit else "")


# -- the model's answers -------------------------------------------------------------------------------------


def probe_images() -> torch.Tensor:
    """Four fixed uint8 test patterns: black, white, a gradient, and seeded noise."""
    ramp = torch.linspace(0, 255, 32).round().to(torch.uint8)
    gradient = torch.stack([ramp.view(1, 32).expand(32, 32), ramp.view(32, 1).expand(32, 32), ramp.flip(0).view(1, 32).expand(32, 32)])
    noise = torch.randint(0, 256, (3, 32, 32), dtype=torch.uint8, generator=torch.Generator().manual_seed(0))
    return torch.stack([torch.zeros(3, 32, 32, dtype=torch.uint8), torch.full((3, 32, 32), 255, dtype=torch.uint8), gradient, noise])


def check_outputs(model: torch.nn.Module, normalization: dict, name) -> None:
    """Refuse a model whose logits or probabilities on the probe images are not finite (huge weights, a tiny std).

    Logits beyond MAX_LOGIT count too: the probe is four images, and logits near float32's limit on those mean
    other images overflow to infinity.
    """
    logits = predict_logits(model, probe_images(), normalization)
    if not (torch.isfinite(logits).all() and torch.isfinite(logits.softmax(1)).all()):
        raise CheckpointError(f"{name}: the model's answers are not finite numbers (NaN or infinite logits on plain test images): "
                              "its weights or normalization are out of range")
    largest = logits.abs().max().item()
    if largest > MAX_LOGIT:
        raise CheckpointError(f"{name}: the model's answers are not finite numbers for every image (logits up to {largest:.1e} on "
                              f"plain test images, where a trained LeNet-5's are tens): its weights or normalization are out of range")


def default_checkpoint() -> Path:
    """The shipped pretrained model, unless LENET_CHECKPOINT names another."""
    return Path(os.environ.get("LENET_CHECKPOINT") or Path(__file__).resolve().parent.parent / "assets" / "lenet5-cifar10.pt")
