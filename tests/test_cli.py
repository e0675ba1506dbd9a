"""The command line's contract, run as a user runs it: python -m lenet in a subprocess."""

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

from lenet.checkpoint import save_checkpoint
from lenet.data import CLASSES
from lenet.evaluate import evaluate
from lenet.inference import NORMALIZATIONS
from lenet.train import preset, train
from tests.test_data_folders import make_tree

REPO = Path(__file__).resolve().parents[1]


def lenet(*args, env=None):
    return subprocess.run([sys.executable, "-m", "lenet", *map(str, args)], cwd=REPO, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


@pytest.fixture(scope="module")
def small_checkpoint(tmp_path_factory, cifar):
    config = preset("quick", train_subset=3_000, epochs=2)
    result = train(config, cifar)
    path = tmp_path_factory.mktemp("ckpt") / "small.pt"
    save_checkpoint(path, result.model.state_dict(), {"normalization": NORMALIZATIONS[config.normalization], "recipe": config.to_dict()})
    return path, result.model


def test_info_json_describes_the_model():
    out = lenet("info", "--json")
    assert out.returncode == 0, out.stderr
    info = json.loads(out.stdout)
    assert info["parameters"] == 62_006 and info["classes"] == list(CLASSES)


def test_evaluate_json_matches_the_library(small_checkpoint, cifar_dir, cifar):
    path, model = small_checkpoint
    out = lenet("evaluate", "--checkpoint", path, "--data", cifar_dir, "--json")
    assert out.returncode == 0, out.stderr
    report = json.loads(out.stdout)
    assert 0.0 <= report["accuracy"] <= 1.0 and set(report["per_class"]) == set(CLASSES)
    expected = evaluate(model, cifar.test, NORMALIZATIONS[preset("quick").normalization])
    assert abs(report["accuracy"] - expected.accuracy) < 1e-6


def test_a_first_load_of_an_image_folder_reports_its_decoding(small_checkpoint, tmp_path):
    """Not a terminal here, so one line once both splits are decoded; the second run reads the cache and says nothing."""
    data = make_tree(tmp_path / "data")
    env = {"LENET_CACHE": str(tmp_path / "cache")}
    first = lenet("evaluate", "--checkpoint", small_checkpoint[0], "--data", data, env=env)
    assert first.returncode == 0, first.stderr
    assert [line for line in first.stderr.splitlines() if "Decoding" in line] == [f"Decoding CIFAR-10 from {data}: 50 of 50 images"]
    again = lenet("evaluate", "--checkpoint", small_checkpoint[0], "--data", data, env=env)
    assert again.returncode == 0 and "Decoding" not in again.stderr


def test_predict_reports_bad_files_in_one_line_and_goes_on(small_checkpoint, tmp_path):
    path, _ = small_checkpoint
    good = tmp_path / "red.png"
    Image.new("RGB", (50, 40), (200, 20, 20)).save(good)
    bad = tmp_path / "notes.jpg"
    bad.write_text("not a picture")
    out = lenet("predict", bad, good, "--checkpoint", path, "--json")
    assert out.returncode == 2
    assert "notes.jpg" in out.stderr and "Traceback" not in out.stderr and len(out.stderr.strip().splitlines()) == 1
    [line] = out.stdout.strip().splitlines()
    answer = json.loads(line)
    assert answer["image"].endswith("red.png") and answer["label"] in CLASSES
    assert len(answer["top"]) == 3 and answer["top"][0]["probability"] >= answer["top"][1]["probability"]


def test_train_writes_a_run_folder(tmp_path, cifar_dir):
    out = lenet("train", "--data", cifar_dir, "--preset", "quick", "--subset", 1_000, "--epochs", 1, "--out", tmp_path,
                "--export", tmp_path / "model.pt")
    assert out.returncode == 0, out.stderr
    [run] = [p for p in tmp_path.iterdir() if p.is_dir()]
    assert {"config.json", "status.json", "metrics.jsonl", "checkpoint.pt"} <= {p.name for p in run.iterdir()}
    events = [json.loads(line) for line in (run / "metrics.jsonl").read_text().splitlines()]
    assert {e["event"] for e in events} == {"step", "epoch"} and sum(e["event"] == "epoch" for e in events) == 1
    card = json.loads((tmp_path / "model.json").read_text())
    assert 0 < card["test_accuracy"] < 1 and set(card["per_class_accuracy"]) == set(CLASSES)


@pytest.mark.parametrize(
    "args, message",
    [
        (["train", "--epochs", "0"], "Epochs must be from 1 to 1,000"),
        (["train", "--lr", "nan"], "Learning rate must be above 0"),
        (["train", "--threads", "-1"], "--threads must be from 1"),
        (["train", "--threads", "100000"], "--threads must be from 1"),
        (["train", "--resume", "", "--out", "{empty}"], "not a run id"),
        (["train", "--resume", "../outside", "--out", "{empty}"], "not a run id"),
        (["train", "--resume", "x", "--epochs", "2"], "--resume goes on with the run's own settings"),
        (["train", "--export", "{empty}"], "is a folder"),
        (["predict", "--top", "0", "x.png"], "--top must be from 1 to 10"),
        (["predict", "--top", "-1", "x.png"], "--top must be from 1 to 10"),
        (["evaluate", "--checkpoint", "missing.pt"], "missing.pt"),
        (["evaluate", "--data", "{empty}", "--checkpoint", "{ckpt}"], "No CIFAR-10"),
    ],
)
def test_user_errors_are_one_line_with_status_2(args, message, tmp_path, small_checkpoint):
    args = [a.replace("{empty}", str(tmp_path)).replace("{ckpt}", str(small_checkpoint[0])) for a in args]
    out = lenet(*args)
    assert out.returncode == 2
    assert message in out.stderr and "Traceback" not in out.stderr
