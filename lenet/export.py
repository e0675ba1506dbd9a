"""python -m lenet export CHECKPOINT OUT: a trained model for other code, in the format OUT's suffix names.

    .pth   a plain state_dict for the walkthrough's own `Net` and its transforms (ToTensor, Normalize 0.5/0.5):
           net.load_state_dict(torch.load(OUT, weights_only=True)). A model trained with another normalization
           has it folded into conv1, so it gives the same answers on the walkthrough's inputs (from the image
           alone: a model tested with its mirror image too loses those test-time flips, which need code).
    .onnx  the model for any ONNX runtime: input "image", float32 N x 3 x 32 x 32, RGB in [0, 1] (the
           normalization, and a model's test-time flips, are inside the graph); output "logits", N x 10 in
           CIFAR-10's class order.
    .py    one standalone script of plain PyTorch and torchvision that trains the run again: the same model,
           data, normalization, augmentation, optimizer, schedule, epochs and seed.

CHECKPOINT is a checkpoint file, a run folder, or the id of a run in --runs (default: $LENET_RUNS, else ./runs).
The app gets the same files from walkthrough_state_dict_bytes(), onnx_bytes() and script_text().
"""

import argparse
import copy
import io
import json
import math
import re
import string
import sys
import textwrap
from collections import OrderedDict
from pathlib import Path

import torch
from torch import nn

from .checkpoint import CheckpointError, load_model
from .data import CLASSES, WALKTHROUGH_NORMALIZATION
from .files import atomic_write, runs_dir
from .train import TrainConfig

SUFFIXES = {".pth": "the walkthrough's state_dict", ".onnx": "an ONNX model", ".py": "a standalone training script"}
RUN_ID = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_.-]*")  # a plain folder name: no separators, no "..", no leading dot
ONNX_INSTALL = "pip install -r requirements-dev.txt (onnx and onnxscript)"


class ExportError(Exception):
    """The export cannot be made; the message says why in one line."""


# -- the command ---------------------------------------------------------------------------------------------


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the export options on a parser (the CLI's `export` subcommand, or a parser of its own)."""
    parser.add_argument("checkpoint", help="a checkpoint file (.pt or a walkthrough .pth), a run folder, or a run id in --runs")
    parser.add_argument("out", type=Path, help="the file to write; its suffix picks the format: " +
                        ", ".join(f"{suffix} ({what})" for suffix, what in SUFFIXES.items()))
    parser.add_argument("--runs", type=Path, default=None, help="where run ids are looked up (default: $LENET_RUNS, else ./runs)")
    return parser


def run(args: argparse.Namespace) -> int:
    """Export; 0 when written, 2 with one line on standard error when the user asked for something impossible."""
    try:
        print(export(args.checkpoint, args.out, args.runs))
    except (ExportError, CheckpointError) as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    return 0


def main(argv: list[str] | None = None) -> int:
    parser = add_arguments(argparse.ArgumentParser(prog="python -m lenet.export", description=__doc__.splitlines()[0]))
    return run(parser.parse_args(argv))


def export(checkpoint: str | Path, out: Path, runs: Path | None = None) -> str:
    """Write the checkpoint as OUT's format; returns a line saying what was written."""
    out = Path(out)
    suffix = out.suffix.lower()
    if out.is_dir():
        raise ExportError(f"{out} is a folder; give a file name ending in {', '.join(SUFFIXES)}")
    if suffix not in SUFFIXES:
        raise ExportError(f"{out}: unknown format {out.suffix or '(no suffix)'!r}; name the file with one of {', '.join(SUFFIXES)}")
    path, run_id = find_checkpoint(checkpoint, runs)
    model, meta = load_model(path)
    if suffix == ".pth":
        data = walkthrough_state_dict_bytes(model, meta)
    elif suffix == ".onnx":
        data = onnx_bytes(model, meta)
    else:
        data = script_text(meta, run_id=run_id or meta.get("run_id"), accuracy=stated_accuracy(path, meta), filename=out.name).encode()
    try:
        atomic_write(out, lambda tmp: tmp.write_bytes(data))
    except OSError as error:
        raise ExportError(f"cannot write {out}: {error.strerror or error}") from None
    said = f"wrote {out}: {SUFFIXES[suffix]} of {path} ({len(data):,} bytes)"
    if suffix == ".pth" and model.test_flips:
        said += ("; the model was tested with its mirror images too, which a state_dict cannot hold: the walkthrough's "
                 "test loop sees each image alone (average net(x) and net(x.flip(3)) to predict as it was tested)")
    return said


def find_checkpoint(value: str | Path, runs: Path | None = None) -> tuple[Path, str | None]:
    """(checkpoint file, run id or None) for a file, a run folder, or a run id in the runs folder."""
    path = Path(value)
    if path.is_file():
        return path, None
    if path.is_dir():
        if (path / "checkpoint.pt").is_file():
            return path / "checkpoint.pt", path.name
        raise ExportError(f"{path} is a folder without a checkpoint.pt")
    runs = Path(runs) if runs is not None else runs_dir()
    # Only a plain folder name is looked up: an id never reaches outside the runs folder.
    if not RUN_ID.fullmatch(str(value)):
        raise ExportError(f"{value}: no such checkpoint file")
    candidate = runs / str(value) / "checkpoint.pt"
    if not candidate.is_file():
        raise ExportError(f"{value}: no such checkpoint file, nor a run with a checkpoint in {runs}")
    return candidate, str(value)


def stated_accuracy(checkpoint: Path, meta: dict) -> float | None:
    """The test accuracy the checkpoint's card (same name, .json) states, else the one saved in its metrics."""
    try:
        card = json.loads(Path(checkpoint).with_suffix(".json").read_text())
    except (OSError, ValueError):
        card = None
    value = card.get("test_accuracy") if isinstance(card, dict) else None
    if value is None:
        metrics = meta.get("metrics")
        value = metrics.get("test_accuracy") if isinstance(metrics, dict) else None
    return float(value) if isinstance(value, (int, float)) and math.isfinite(value) else None


# -- .pth: the walkthrough's state_dict ----------------------------------------------------------------------


def fold_normalization(state: dict, trained_with: dict, fed_with: dict) -> "OrderedDict[str, torch.Tensor]":
    """The weights for inputs normalized with fed_with that give exactly the outputs state gives with trained_with.

    conv1 was trained on x_t = (x - m_t) / s_t; fed x_f = (x - m_f) / s_f instead, x_t = (s_f / s_t) x_f + (m_f - m_t) / s_t.
    So each input channel's weights scale by s_f / s_t, and the constant moves into the bias. Exact because conv1 has
    no padding: every output sums over real pixels only (a zero-padded border would see the constant differently).
    """
    def per_channel(values) -> torch.Tensor:  # in float64, so the fold adds no rounding of its own
        return torch.tensor(values, dtype=torch.float64).view(1, 3, 1, 1)

    m_t, s_t, m_f, s_f = (per_channel(n[k]) for n in (trained_with, fed_with) for k in ("mean", "std"))
    weight, bias = state["conv1.weight"].detach().cpu().double(), state["conv1.bias"].detach().cpu().double()
    folded = OrderedDict((name, tensor.detach().cpu().clone().contiguous()) for name, tensor in state.items())
    folded["conv1.weight"] = (weight * (s_f / s_t)).float()
    folded["conv1.bias"] = (bias + (weight * ((m_f - m_t) / s_t)).sum(dim=(1, 2, 3))).float()
    return folded


def walkthrough_state_dict(model: nn.Module, meta: dict) -> "OrderedDict[str, torch.Tensor]":
    """The model's weights for the walkthrough's Net fed through Normalize((0.5,)*3, (0.5,)*3)."""
    return fold_normalization(model.state_dict(), meta["normalization"], WALKTHROUGH_NORMALIZATION)


def walkthrough_state_dict_bytes(model: nn.Module, meta: dict) -> bytes:
    """What torch.save(net.state_dict(), PATH) would have written for that Net: a .pth file's content."""
    buffer = io.BytesIO()
    torch.save(walkthrough_state_dict(model, meta), buffer)
    return buffer.getvalue()


# -- .onnx ---------------------------------------------------------------------------------------------------


class ImageToLogits(nn.Module):
    """RGB images in [0, 1] -> logits: the normalization and the model in one graph."""

    def __init__(self, model: nn.Module, normalization: dict):
        super().__init__()
        self.model = model
        self.register_buffer("mean", torch.tensor(normalization["mean"], dtype=torch.float32).view(1, 3, 1, 1))
        self.register_buffer("std", torch.tensor(normalization["std"], dtype=torch.float32).view(1, 3, 1, 1))

    def forward(self, image: torch.Tensor) -> torch.Tensor:
        return self.model((image - self.mean) / self.std)


def onnx_bytes(model: nn.Module, meta: dict) -> bytes:
    """The model as an ONNX file's content: "image" N x 3 x 32 x 32 in [0, 1] -> "logits" N x 10, any batch size."""
    try:
        import onnx
        import onnxscript  # noqa: F401 - torch.onnx.export needs it; imported here for a clear message when absent
    except ImportError as error:
        raise ExportError(f"ONNX export needs the {error.name} package: {ONNX_INSTALL}") from None
    # A copy on the CPU: the app shares its model between sessions, and the export must not move or change it. Its
    # weights are frozen: an export traces inference, and the trainer's fused pooling has a backward of its own.
    wrapped = ImageToLogits(copy.deepcopy(model).cpu().eval().requires_grad_(False), meta["normalization"]).eval()
    batch = torch.export.Dim("batch", min=1, max=65536)
    program = torch.onnx.export(wrapped, (torch.rand(2, 3, 32, 32),), input_names=["image"], output_names=["logits"],
                                dynamic_shapes={"image": {0: batch}}, dynamo=True, verbose=False)
    proto = program.model_proto
    onnx.helper.set_model_props(proto, {
        "classes": json.dumps(list(CLASSES)),
        "input": "image: float32 N x 3 x 32 x 32, RGB, values in [0, 1] (ToTensor's range); normalization is inside",
        "normalization": json.dumps(meta["normalization"]),
        "test_flips": json.dumps(bool(getattr(model, "test_flips", False))),  # inside the graph when true
        "source": "LeNet-5 on CIFAR-10, the PyTorch walkthrough's architecture",
    })
    onnx.checker.check_model(proto)
    return proto.SerializeToString()


# -- .py: the run as one plain script ------------------------------------------------------------------------

# A string.Template: script_text fills in each $name (the code below uses no other dollar sign).
SCRIPT_TEMPLATE = '''\
"""$title

$header
Run it:
    python $filename                        # downloads CIFAR-10 into ./data through torchvision
    python $filename --data cifar10-jpeg    # or a folder of train/<class>/*.jpg and test/<class>/*.jpg
    python $filename --max-steps 50         # a quick try: stop after 50 steps

Plain PyTorch and torchvision, in the style of the PyTorch "Training a classifier" walkthrough. The same recipe
gives about the same accuracy, not the same numbers: the data order and augmentation draws differ.
"""

import argparse
import math
from pathlib import Path

import torch
import torch.nn as nn
import torch.nn.functional as F
import torch.optim as optim
import torchvision
import torchvision.transforms as transforms

# The run's settings.
CLASSES = $classes
MEAN, STD = $mean, $std
EPOCHS = $epochs
BATCH_SIZE = $batch_size
LR = $lr
SCHEDULE, WARMUP = $schedule, $warmup  # the learning rate per step: constant, onecycle or cosine, after a warm-up
WEIGHT_DECAY = $weight_decay  # on the weights only, not the biases
LABEL_SMOOTHING = $label_smoothing
SUBSET, VALIDATION_SIZE = $train_subset, $validation_size  # train on SUBSET images (0: all), holding VALIDATION_SIZE out
SEED = $seed
TEST_FLIPS = $test_flips  # tested from each image and its mirror image together (their logits averaged)


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(F.relu(self.conv1(x)))
        x = self.pool(F.relu(self.conv2(x)))
        x = torch.flatten(x, 1)  # flatten all dimensions except batch
        x = F.relu(self.fc1(x))
        x = F.relu(self.fc2(x))
        x = self.fc3(x)
        return x
$optimizer_class

def datasets(root):
    """CIFAR-10's training and test sets: an image folder (train/<class>/, test/<class>/) or torchvision's download."""
    train_transform = transforms.Compose([$augmentation
        transforms.ToTensor(),
        transforms.Normalize(MEAN, STD),
    ])
    test_transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize(MEAN, STD)])
    root = Path(root)
    if (root / "train").is_dir() and (root / "test").is_dir():
        trainset = torchvision.datasets.ImageFolder(str(root / "train"), transform=train_transform)
        testset = torchvision.datasets.ImageFolder(str(root / "test"), transform=test_transform)
        if tuple(trainset.classes) != CLASSES or tuple(testset.classes) != CLASSES:
            raise SystemExit(f"{root}: the class folders must be CIFAR-10's: {', '.join(CLASSES)}")
    else:
        trainset = torchvision.datasets.CIFAR10(root=str(root), train=True, download=True, transform=train_transform)
        testset = torchvision.datasets.CIFAR10(root=str(root), train=False, download=True, transform=test_transform)
    if SUBSET or VALIDATION_SIZE:
        order = torch.randperm(len(trainset), generator=torch.Generator().manual_seed(SEED))
        keep = order[VALIDATION_SIZE:]
        trainset = torch.utils.data.Subset(trainset, (keep[:SUBSET] if SUBSET else keep).tolist())
    return trainset, testset


def learning_rate(step, total_steps):
    if SCHEDULE == "constant":
        return LR
    warmup = int(WARMUP * total_steps)
    if step < warmup:
        return LR * (step + 1) / warmup
    progress = (step - warmup) / max(1, total_steps - warmup)
    if SCHEDULE == "onecycle":
        return LR * max(0.0, 1.0 - progress)
    return LR * 0.5 * (1 + math.cos(math.pi * progress))  # cosine


def make_optimizer(net):
    decay = [p for name, p in net.named_parameters() if name.endswith("weight")]
    rest = [p for name, p in net.named_parameters() if not name.endswith("weight")]
    groups = [{"params": decay, "weight_decay": WEIGHT_DECAY}, {"params": rest, "weight_decay": 0.0}]
    return $optimizer


def for_walkthrough_normalization(state):
    """The weights for inputs normalized with mean 0.5, std 0.5 (the walkthrough's), giving the same outputs:
    each input channel's conv1 weights scale by 0.5 / STD, and the shift moves into conv1's bias (exact: no padding)."""
    state = {name: tensor.clone() for name, tensor in state.items()}
    mean = torch.tensor(MEAN, dtype=torch.float64).view(1, 3, 1, 1)
    std = torch.tensor(STD, dtype=torch.float64).view(1, 3, 1, 1)
    weight = state["conv1.weight"].cpu().double()
    state["conv1.weight"] = (weight * (0.5 / std)).float()
    state["conv1.bias"] = (state["conv1.bias"].cpu().double() + (weight * ((0.5 - mean) / std)).sum(dim=(1, 2, 3))).float()
    return state


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--data", default="./data", help="CIFAR-10's folder (default: ./data, downloaded there when absent)")
    parser.add_argument("--max-steps", type=int, default=0, help="stop after this many steps (0: train every epoch)")
    parser.add_argument("--workers", type=int, default=2, help="DataLoader worker processes")
    parser.add_argument("--save", default="./cifar_net.pth", help="where to save the trained state_dict")
    args = parser.parse_args()

    torch.manual_seed(SEED)
    device = torch.device("cuda" if torch.cuda.is_available() else "cpu")
    trainset, testset = datasets(args.data)
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=BATCH_SIZE, shuffle=True, num_workers=args.workers)
    testloader = torch.utils.data.DataLoader(testset, batch_size=1000, shuffle=False, num_workers=args.workers)

    net = Net().to(device)
    criterion = nn.CrossEntropyLoss(label_smoothing=LABEL_SMOOTHING)
    optimizer = make_optimizer(net)
    total_steps = EPOCHS * len(trainloader)
    print_every = max(1, 8000 // BATCH_SIZE)  # every 2000 mini-batches of 4, as in the walkthrough
    step = 0
    for epoch in range(EPOCHS):  # loop over the dataset multiple times
        running_loss, count = 0.0, 0
        for i, (inputs, labels) in enumerate(trainloader):
            inputs, labels = inputs.to(device), labels.to(device)
            for group in optimizer.param_groups:
                group["lr"] = learning_rate(step, total_steps)
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            step += 1
            running_loss += loss.item()
            count += 1
            done = step == args.max_steps
            if i % print_every == print_every - 1 or done:
                print(f"[{epoch + 1}, {i + 1:5d}] loss: {running_loss / count:.3f}", flush=True)
                running_loss, count = 0.0, 0
            if done:
                break
        if step == args.max_steps:
            break
    print(f"Finished Training after {step} steps")
    # Saved for the walkthrough's transforms, whatever this recipe normalizes with, so its code loads it as is.
    torch.save(for_walkthrough_normalization(net.state_dict()), args.save)

    net.eval()
    correct, total = 0, 0
    with torch.no_grad():
        for images, labels in testloader:
            outputs = net(images.to(device))
            if TEST_FLIPS:
                outputs = (outputs + net(images.flip(3).to(device))) / 2
            predicted = outputs.argmax(1).cpu()
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    print(f"Accuracy of the network on the {total} test images: {100 * correct / total:.2f} %")


if __name__ == "__main__":
    main()
'''


# With the "muon" optimizer the script gets lenet.train.MuonAndSGD's plain form (no checkpoints: no state_dict).
MUON_CLASS = '''


MUON_LR = 0.01  # Muon's peak learning rate, for fc1's and fc2's weights (on LR's schedule)


class MuonAndSGD:
    """Muon for fc1's and fc2's weights (the hidden layers' matrices, which it is made for), SGD for every other
    parameter, stepped as one optimizer. Its param_groups are SGD's; Muon's rate follows them in proportion."""

    def __init__(self, net, groups, lr, **sgd_settings):
        hidden = [net.fc1.weight, net.fc2.weight]
        groups = [{**group, "params": [p for p in group["params"] if all(p is not h for h in hidden)]} for group in groups]
        self.sgd = optim.SGD(groups, lr=lr, **sgd_settings)
        self.muon = optim.Muon(hidden, lr=MUON_LR, weight_decay=0.0)
        self.param_groups = self.sgd.param_groups

    def zero_grad(self):
        self.sgd.zero_grad()
        self.muon.zero_grad()

    def step(self):
        self.muon.param_groups[0]["lr"] = MUON_LR * self.sgd.param_groups[0]["lr"] / LR
        self.muon.step()
        self.sgd.step()'''


def script_text(meta: dict, run_id: str | None = None, accuracy: float | None = None, filename: str = "lenet5_cifar10.py") -> str:
    """The standalone training script for a checkpoint's recipe (the walkthrough's when it has none)."""
    recipe_known = isinstance(meta.get("recipe"), dict)
    recipe = {**TrainConfig().to_dict(), **(meta["recipe"] if recipe_known else {})}
    normalization = meta["normalization"]
    title = f"LeNet-5 on CIFAR-10{f': run {run_id},' if run_id else ','} as one plain PyTorch script."
    header = [
        "Exported by `python -m lenet export` from " + (f"run {run_id}." if run_id else "a checkpoint."),
        "Its measured test accuracy: " + (f"{accuracy:.2%} on the 10,000 test images." if accuracy is not None else "not recorded."),
        "Recipe: " + (describe_recipe(recipe, normalization) if recipe_known
                      else "not recorded in the checkpoint, so the walkthrough's: " + describe_recipe(recipe, normalization)),
    ]
    values = {
        "title": title,
        "header": "\n".join(textwrap.fill(line, 110, subsequent_indent="    ") for line in header),
        "filename": filename,
        "classes": repr(tuple(CLASSES)),
        "mean": repr(tuple(float(v) for v in normalization["mean"])),
        "std": repr(tuple(float(v) for v in normalization["std"])),
        "epochs": int(recipe["epochs"]),
        "batch_size": int(recipe["batch_size"]),
        "lr": repr(float(recipe["lr"])),
        "schedule": repr(recipe["schedule"]),
        "warmup": repr(float(recipe["warmup"])),
        "weight_decay": repr(float(recipe["weight_decay"])),
        "label_smoothing": repr(float(recipe["label_smoothing"])),
        "train_subset": int(recipe["train_subset"]),
        "validation_size": int(recipe["validation_size"]),
        "seed": int(recipe["seed"]),
        "test_flips": bool(recipe.get("test_flips", False)),
        "augmentation": _augmentation_code(recipe),
        "optimizer": _optimizer_code(recipe),
        "optimizer_class": MUON_CLASS.replace("MUON_LR = 0.01", f"MUON_LR = {float(recipe['muon_lr'])!r}")
                           if recipe["optimizer"] == "muon" else "",
    }
    return string.Template(SCRIPT_TEMPLATE).substitute(values)


def describe_recipe(recipe: dict, normalization: dict) -> str:
    """The recipe in one sentence, for the script's header."""
    if recipe["optimizer"] in ("sgd", "muon"):
        optimizer = f"SGD lr {recipe['lr']:g} momentum {recipe['momentum']:g}" + (" nesterov" if recipe["nesterov"] else "")
        if recipe["optimizer"] == "muon":
            optimizer = f"Muon lr {recipe['muon_lr']:g} for fc1's and fc2's weights, {optimizer} for the rest"
    else:
        optimizer = f"{'Adam' if recipe['optimizer'] == 'adam' else 'AdamW'} lr {recipe['lr']:g}"
    schedule = {"constant": "constant learning rate", "onecycle": "one-cycle schedule", "cosine": "cosine schedule"}[recipe["schedule"]]
    if recipe["schedule"] != "constant" and recipe["warmup"]:
        schedule += f" with {recipe['warmup']:.0%} warm-up"
    parts = [f"{recipe['epochs']} epoch{'s' if recipe['epochs'] != 1 else ''}", f"batch {recipe['batch_size']}", optimizer, schedule]
    if recipe["weight_decay"]:
        parts.append(f"weight decay {recipe['weight_decay']:g} (weights only)")
    if recipe["label_smoothing"]:
        parts.append(f"label smoothing {recipe['label_smoothing']:g}")
    if recipe["augment"]:
        parts.append(f"random {recipe['crop_padding']}-pixel crops + flips" if recipe["crop_padding"] else "random flips")
    mean, std = normalization["mean"], normalization["std"]
    parts.append("Normalize(0.5, 0.5)" if normalization == WALKTHROUGH_NORMALIZATION
                 else f"Normalize(mean {', '.join(f'{v:g}' for v in mean)}; std {', '.join(f'{v:g}' for v in std)})")
    parts.append(f"seed {recipe['seed']}")
    if recipe.get("test_flips"):
        parts.append("tested from each image and its mirror image (logits averaged)")
    return ", ".join(parts) + "."


def _augmentation_code(recipe: dict) -> str:
    if not recipe["augment"]:
        return ""
    lines = []
    if recipe["crop_padding"]:
        lines.append(f"transforms.RandomCrop(32, padding={int(recipe['crop_padding'])}),  # zero padding, as the run had")
    lines.append("transforms.RandomHorizontalFlip(),")
    return "".join("\n        " + line for line in lines)


def _optimizer_code(recipe: dict) -> str:
    if recipe["optimizer"] in ("sgd", "muon"):
        nesterov = bool(recipe["nesterov"]) and recipe["momentum"] > 0
        maker = "optim.SGD(groups, " if recipe["optimizer"] == "sgd" else "MuonAndSGD(net, groups, "
        return f"{maker}lr=LR, momentum={float(recipe['momentum'])!r}, nesterov={nesterov})"
    return f"optim.{'Adam' if recipe['optimizer'] == 'adam' else 'AdamW'}(groups, lr=LR)"


if __name__ == "__main__":
    raise SystemExit(main())
