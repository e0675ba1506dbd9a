"""Walkthrough in, walkthrough out: the walkthrough's own Net and transforms read what `export` writes, and lenet
reads what the walkthrough saves, with the same test accuracy counted the walkthrough's way; ONNX and the
standalone script do what they say."""

import argparse
import copy
import importlib.util
import json
import math
import os
import re
import subprocess
import sys

import pytest
import torch
import torch.nn as nn
import torch.nn.functional as F
import torchvision
import torchvision.transforms as transforms

from lenet import export
from lenet.bench import WalkthroughNet
from lenet.checkpoint import default_checkpoint, load_checkpoint, load_model, load_model_bytes
from lenet.data import CIFAR10_NORMALIZATION, CLASSES, WALKTHROUGH_NORMALIZATION, detect_layout
from lenet.evaluate import evaluate
from lenet.inference import normalize, predict_logits
from lenet.model import LeNet5
from lenet.train import TrainConfig, learning_rate, make_optimizer, preset

# The walkthrough's network exactly as it writes it: bench's plain loop has it typed in, with no project code.
Net = WalkthroughNet


@pytest.fixture(scope="module")
def walkthrough_testloader(cifar_dir):
    """The test set as the walkthrough loads it (per-image ToTensor + Normalize(0.5, 0.5), a DataLoader), decoded once."""
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    if detect_layout(cifar_dir) == "torchvision":
        testset = torchvision.datasets.CIFAR10(root=str(cifar_dir), train=False, download=False, transform=transform)
    else:
        testset = torchvision.datasets.ImageFolder(str(cifar_dir / "test"), transform=transform)
    assert tuple(testset.classes) == CLASSES
    return list(torch.utils.data.DataLoader(testset, batch_size=500, shuffle=False, num_workers=0))


def walkthrough_accuracy(net: nn.Module, testloader) -> float:
    """The walkthrough's test loop: argmax of the outputs, counted."""
    correct, total = 0, 0
    with torch.no_grad():
        for images, labels in testloader:
            outputs = net(images)
            _, predicted = torch.max(outputs, 1)
            total += labels.size(0)
            correct += (predicted == labels).sum().item()
    return correct / total


def _args(*argv) -> argparse.Namespace:
    return export.add_arguments(argparse.ArgumentParser()).parse_args([str(a) for a in argv])


@pytest.fixture(scope="module")
def shipped():
    """The shipped model (trained with CIFAR-10's own mean and std, not the walkthrough's 0.5)."""
    model, meta = load_model(default_checkpoint())
    assert meta["normalization"] == CIFAR10_NORMALIZATION  # what makes the .pth export's fold necessary
    return model, meta


# -- walkthrough in -------------------------------------------------------------------------------------------


def test_lenet_counts_a_walkthrough_state_dict_as_the_walkthrough_does(tmp_path, cifar, walkthrough_testloader, one_thread):
    torch.manual_seed(0)
    net = Net()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.01, momentum=0.9)
    order = torch.randperm(len(cifar.train))  # an image folder lists its images class by class
    for step in range(300):  # a few seconds: far from converged, far from chance
        batch = order[step * 32 : (step + 1) * 32]
        loss = F.cross_entropy(net(normalize(cifar.train.images[batch], WALKTHROUGH_NORMALIZATION)), cifar.train.labels[batch])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    path = tmp_path / "cifar_net.pth"
    torch.save(net.state_dict(), path)  # the walkthrough's save

    model, meta = load_model(path)
    ours = evaluate(model, cifar.test, meta["normalization"]).accuracy
    theirs = walkthrough_accuracy(net.eval(), walkthrough_testloader)
    assert theirs > 0.2  # a trained model, so agreeing is not a coincidence of chance-level guesses
    assert abs(ours - theirs) <= 0.001
    assert meta["source"] == "state_dict" and "assumed" in meta["assumed"]
    # The same file uploaded: the same model.
    uploaded, _ = load_model_bytes(path.read_bytes(), "cifar_net.pth")
    assert torch.equal(predict_logits(uploaded, cifar.test.images[:100], meta["normalization"]),
                       predict_logits(model, cifar.test.images[:100], meta["normalization"]))


# -- walkthrough out: .pth ------------------------------------------------------------------------------------


def test_the_exported_pth_of_the_shipped_model_keeps_its_accuracy_in_the_walkthroughs_own_code(
        tmp_path, cifar, shipped, walkthrough_testloader, one_thread, capsys):
    model, meta = shipped
    out = tmp_path / "cifar_net.pth"
    assert export.run(_args(default_checkpoint(), out)) == 0
    said = capsys.readouterr().out
    assert str(out) in said
    # The shipped model is tested with mirror images too, which weights alone cannot carry: the message says so, and
    # the walkthrough's loop gets the accuracy of each image alone.
    assert model.test_flips and "mirror images" in said
    alone = copy.deepcopy(model)
    alone.test_flips = False

    net = Net()
    net.load_state_dict(torch.load(out, weights_only=True))  # exactly the walkthrough's load
    reference = evaluate(alone, cifar.test, meta["normalization"]).accuracy
    assert reference > 0.72 and evaluate(model, cifar.test, meta["normalization"]).accuracy > reference
    assert abs(walkthrough_accuracy(net.eval(), walkthrough_testloader) - reference) <= 0.001

    # The control: the same weights without the fold lose accuracy with the walkthrough's transforms.
    unfolded = Net()
    unfolded.load_state_dict(model.state_dict())
    assert walkthrough_accuracy(unfolded.eval(), walkthrough_testloader) < reference - 0.02

    # And lenet reads it back as a walkthrough state_dict: the same answers as the shipped model gives each image alone.
    again, again_meta = load_model(out)
    assert again_meta["normalization"] == WALKTHROUGH_NORMALIZATION and not again.test_flips
    images = cifar.test.images[:500]
    torch.testing.assert_close(predict_logits(again, images, again_meta["normalization"]),
                               predict_logits(alone, images, meta["normalization"]), rtol=0, atol=1e-4)


def test_exporting_a_walkthrough_state_dict_to_pth_gives_back_the_same_weights(tmp_path):
    torch.manual_seed(3)
    state = Net().state_dict()
    source = tmp_path / "in.pth"
    torch.save(state, source)
    out = tmp_path / "out.pth"
    assert export.run(_args(source, out)) == 0
    back = torch.load(out, weights_only=True)
    assert list(back) == list(state) and all(torch.equal(back[k], state[k]) for k in state)


# -- .onnx ----------------------------------------------------------------------------------------------------


def test_the_onnx_export_checks_and_agrees_with_pytorch_for_any_batch_size(tmp_path, cifar, shipped, one_thread):
    import onnx
    import onnxruntime

    model, meta = shipped
    out = tmp_path / "lenet.onnx"
    assert export.run(_args(default_checkpoint(), out)) == 0
    proto = onnx.load(str(out))
    onnx.checker.check_model(proto, full_check=True)
    assert [i.name for i in proto.graph.input] == ["image"] and [o.name for o in proto.graph.output] == ["logits"]
    dims = proto.graph.input[0].type.tensor_type.shape.dim
    assert dims[0].dim_param and [d.dim_value for d in dims[1:]] == [3, 32, 32]
    props = {p.key: p.value for p in proto.metadata_props}
    assert all(name in props["classes"] for name in CLASSES)

    session = onnxruntime.InferenceSession(out.read_bytes(), providers=["CPUExecutionProvider"])
    for start, batch in ((0, 2), (100, 7)):
        images = cifar.test.images[start : start + batch]
        (logits,) = session.run(["logits"], {"image": (images.float() / 255).numpy()})
        assert logits.shape == (batch, 10)
        torch.testing.assert_close(torch.from_numpy(logits), predict_logits(model, images, meta["normalization"]), rtol=0, atol=1e-4)


def test_onnx_export_without_its_packages_says_what_to_install(tmp_path, monkeypatch, capsys):
    monkeypatch.setitem(sys.modules, "onnxscript", None)  # what an environment without onnxscript gives: ImportError
    out = tmp_path / "lenet.onnx"
    assert export.run(_args(default_checkpoint(), out)) == 2
    message = capsys.readouterr().err.strip()
    assert "\n" not in message and "onnxscript" in message and "pip install -r requirements-dev.txt" in message
    assert not out.exists()


# -- .py: the run as a standalone script ----------------------------------------------------------------------


def _script_module(tmp_path, text: str, name: str = "exported"):
    path = tmp_path / f"{name}.py"
    path.write_text(text)
    spec = importlib.util.spec_from_file_location(name, path)
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)  # its main() only runs as __main__
    return module


def test_the_script_runs_standalone_on_the_image_folder_prints_losses_and_saves_for_the_walkthrough(tmp_path, cifar_dir):
    out = tmp_path / "train_lenet.py"
    assert export.run(_args(default_checkpoint(), out)) == 0
    text = out.read_text()
    assert "import lenet" not in text and "from lenet" not in text
    card = json.loads(default_checkpoint().with_suffix(".json").read_text())
    assert card["run_id"] in text and f"{card['test_accuracy']:.2%}" in text  # the run and its measured accuracy
    assert "TEST_FLIPS = True" in text and "images.flip(3)" in text  # tested as the shipped model was
    assert "RandomCrop(32, padding=2)" in text and "RandomHorizontalFlip()" in text and "nesterov=True" in text

    saved = tmp_path / "cifar_net.pth"
    command = [sys.executable, str(out), "--data", str(cifar_dir), "--max-steps", "5", "--workers", "0", "--save", str(saved)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    losses = [float(v) for v in re.findall(r"loss: (\S+)", result.stdout)]
    assert losses and all(math.isfinite(v) and 0 < v < 5 for v in losses)
    assert re.search(r"Accuracy of the network on the 10000 test images: [\d.]+ %", result.stdout)
    # Walkthrough out, walkthrough in: what it saved is a walkthrough state_dict lenet reads.
    model, meta = load_model(saved)
    assert meta["source"] == "state_dict"
    net = Net()
    net.load_state_dict(torch.load(saved, weights_only=True))


@pytest.mark.parametrize("schedule", ["constant", "onecycle", "cosine"])
def test_the_scripts_schedule_is_the_trainers(tmp_path, schedule):
    config = preset("quick", schedule=schedule, warmup=0.2)
    module = _script_module(tmp_path, export.script_text({"normalization": CIFAR10_NORMALIZATION, "recipe": config.to_dict()}))
    total = 1173
    for step in (0, 1, 100, 234, 235, 600, 1172):
        assert module.learning_rate(step, total) == pytest.approx(learning_rate(config, step, total), rel=1e-12)


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam", "adamw"])
def test_the_scripts_optimizer_is_the_trainers(tmp_path, optimizer_name):
    config = preset("best", optimizer=optimizer_name)
    module = _script_module(tmp_path, export.script_text({"normalization": CIFAR10_NORMALIZATION, "recipe": config.to_dict()}))
    ours, theirs = make_optimizer(config, LeNet5()), module.make_optimizer(module.Net())
    assert type(theirs) is type(ours)
    for mine, script in zip(ours.param_groups, theirs.param_groups, strict=True):
        assert [tuple(p.shape) for p in mine["params"]] == [tuple(p.shape) for p in script["params"]]
        for key in ("lr", "weight_decay", "momentum", "nesterov", "betas"):
            assert mine.get(key) == script.get(key), key
    assert module.MEAN == tuple(CIFAR10_NORMALIZATION["mean"]) and module.EPOCHS == 200 and module.BATCH_SIZE == 128
    assert module.TEST_FLIPS is True  # tested with mirror images, as the trainer tests the best recipe


def test_the_scripts_muon_is_the_trainers_and_trains(tmp_path, cifar_dir):
    config = preset("frugal")
    text = export.script_text({"normalization": CIFAR10_NORMALIZATION, "recipe": config.to_dict()})
    assert "Muon lr 0.01 for fc1's and fc2's weights, SGD lr 0.03 momentum 0.9 nesterov for the rest" in " ".join(text.split())
    module = _script_module(tmp_path, text)
    ours, theirs = make_optimizer(config, LeNet5()), module.make_optimizer(module.Net())
    for mine, script in zip(ours.param_groups + ours.muon.param_groups, theirs.param_groups + theirs.muon.param_groups, strict=True):
        assert [tuple(p.shape) for p in mine["params"]] == [tuple(p.shape) for p in script["params"]]
        for key in ("lr", "weight_decay", "momentum", "nesterov"):
            assert mine.get(key) == script.get(key), key
    out = tmp_path / "frugal.py"
    out.write_text(text)
    saved = tmp_path / "net.pth"
    command = [sys.executable, str(out), "--data", str(cifar_dir), "--max-steps", "20", "--workers", "0", "--save", str(saved)]
    result = subprocess.run(command, cwd=tmp_path, capture_output=True, text=True, timeout=300, env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr
    assert [float(v) for v in re.findall(r"loss: (\S+)", result.stdout)]


def test_a_checkpoint_without_a_recipe_exports_the_walkthroughs(tmp_path):
    text = export.script_text(load_checkpoint(_walkthrough_file(tmp_path))["meta"])
    module = _script_module(tmp_path, text)
    walkthrough = TrainConfig()
    assert (module.EPOCHS, module.BATCH_SIZE, module.LR, module.MEAN) == (walkthrough.epochs, walkthrough.batch_size, walkthrough.lr,
                                                                         (0.5, 0.5, 0.5))
    assert "not recorded" in text and "RandomCrop" not in text


def _walkthrough_file(tmp_path):
    path = tmp_path / "cifar_net.pth"
    torch.save(Net().state_dict(), path)
    return path


# -- the command: run ids and one-line errors -----------------------------------------------------------------


def test_a_run_id_names_its_checkpoint_in_the_runs_folder(tmp_path):
    runs = tmp_path / "runs"
    (runs / "20260101-120000-quick").mkdir(parents=True)
    (runs / "20260101-120000-quick" / "checkpoint.pt").write_bytes(default_checkpoint().read_bytes())
    out = tmp_path / "run.py"
    assert export.run(_args("20260101-120000-quick", out, "--runs", runs)) == 0
    assert "run 20260101-120000-quick" in out.read_text()


def _folder(path):
    path.mkdir()
    return path


def _file(path, text: str = ""):
    path.write_text(text)
    return path


USER_ERRORS = {
    "unknown suffix": (lambda tmp: [default_checkpoint(), tmp / "model.h5"], "unknown format '.h5'"),
    "no suffix": (lambda tmp: [default_checkpoint(), tmp / "model"], "unknown format"),
    "missing checkpoint": (lambda tmp: [tmp / "nothing.pt", tmp / "model.pth"], "no such checkpoint"),
    "unknown run id": (lambda tmp: ["20990101-000000-best", tmp / "model.pth", "--runs", tmp], "nor a run"),
    "a path out of the runs folder": (lambda tmp: ["../secret", tmp / "model.pth", "--runs", tmp / "runs"], "no such checkpoint"),
    "OUT is a folder": (lambda tmp: [default_checkpoint(), _folder(tmp / "folder.onnx")], "is a folder"),
    "OUT under a file": (lambda tmp: [default_checkpoint(), _file(tmp / "a-file") / "model.pth"], "cannot write"),
    "not a checkpoint": (lambda tmp: [_file(tmp / "notes.pt", "hello"), tmp / "model.pth"], "not a readable"),
}


@pytest.mark.parametrize("case", USER_ERRORS)
def test_user_errors_exit_2_with_one_line(tmp_path, capsys, case):
    make, complaint = USER_ERRORS[case]
    (tmp_path / "runs").mkdir()
    (tmp_path / "secret").mkdir()
    (tmp_path / "secret" / "checkpoint.pt").write_bytes(default_checkpoint().read_bytes())  # a real checkpoint outside the runs
    argv = make(tmp_path)
    assert export.run(_args(*argv)) == 2
    captured = capsys.readouterr()
    message = captured.err.strip()
    assert message.startswith("error: ") and "\n" not in message and complaint in message
    assert captured.out == ""
    assert not any(p.name.startswith(".") for p in tmp_path.rglob("*"))  # no temporary left behind
