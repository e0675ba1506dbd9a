"""The benchmark runs end to end on a tiny data set, and the trainer equals the walkthrough's plain loop."""

import argparse
import json
import os
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms as transforms
from PIL import Image

from lenet import bench
from lenet.data import CIFAR10, CLASSES, load_cifar10
from lenet.events import Step
from lenet.model import LeNet5
from lenet.train import preset, train

REAL_DATA = Path(os.environ.get("LENET_DATA") or "/work/shared/cifar10-jpeg")


@pytest.fixture
def tiny_image_folder(tmp_path, monkeypatch):
    """train/<class>/ with 10 random PNGs per class and test/<class>/ with 3: lossless, so every decoder agrees."""
    monkeypatch.setenv("LENET_CACHE", str(tmp_path / "cache"))
    rng = np.random.default_rng(0)
    root = tmp_path / "cifar"
    for split, count in (("train", 10), ("test", 3)):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(count):
                Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(folder / f"{i:04d}.png")
    return root


def test_tiny_bench_writes_every_number(tiny_image_folder, tmp_path, capsys):
    out = tmp_path / "bench.json"
    status = bench.main([
        "--data", str(tiny_image_folder), "--json", str(out),
        "--walkthrough-images", "40", "--throughput-steps", "2", "--engine-repeats", "2", "--latency-runs", "10",
    ])
    assert status == 0
    printed = capsys.readouterr().out
    for words in ("speed-up at the same batch size", "seconds to 55% test accuracy", "test accuracy after 40,000 training images",
                  "Start -> first loss event, warm process", "one image's inside view, median of 25",
                  "trainer against the plain loop", "trainer against the bound", "batch 128", "batch 512",
                  "cold load", "warm load", "single image, median", "peak resident memory", "peak after the engine section"):
        assert words in printed

    results = json.loads(out.read_text())
    w = results["walkthrough"]
    assert w["plain_images"] == 40 and w["trainer_images"] == 40 and w["batch_size"] == 4
    for key in ("plain_images_per_second", "trainer_images_per_second", "speedup", "plain_seconds", "trainer_seconds"):
        assert w[key] > 0, key
    for key in ("plain_test_accuracy", "trainer_test_accuracy"):
        assert 0 <= w[key] <= 1, key

    q = results["quick"]
    assert q["walkthrough_reference_seconds"] == bench.WALKTHROUGH_REFERENCE_SECONDS
    assert q["train_seconds"] > 0 and q["plain_loop_two_epochs_seconds"] > 0
    assert [e["epoch"] for e in q["epochs"]] == list(range(1, preset("quick").epochs + 1))
    assert q["seconds_to_target"] is None or q["seconds_to_target"] > 0  # random pixels rarely reach 55%

    r = results["registry"]  # through a RunRegistry and its warm training process, as the app trains
    assert r["finished"] and len(r["first_loss_seconds"]) == 3 and r["first_loss_median_seconds"] > 0
    assert 0 <= r["final_test_accuracy"] <= 1

    f = results["frugal"]
    assert [p["images"] for p in f["points"]] == [100] and 0 <= f["test_accuracy"] <= 1  # one pass over the 100 images

    e = results["engine"]
    assert e["batch_size"] == 100 and e["repeats"] == 2 and all(len(rates) == 2 for rates in e["all"].values())
    assert e["trainer_vs_plain"] == e["trainer_images_per_second"] / e["plain_images_per_second"]
    assert e["trainer_no_augmentation_vs_plain"] == e["trainer_no_augmentation_images_per_second"] / e["plain_images_per_second"]
    assert e["bound_images_per_second"] == e["gemm_flops_per_second"] / e["training_flops_per_image"]
    assert e["trainer_vs_bound"] == e["trainer_images_per_second"] / e["bound_images_per_second"]

    assert set(results["throughput"]) == {"batch_128", "batch_128_augmented", "batch_512", "batch_512_augmented"}
    assert all(rate > 0 for rate in results["throughput"].values())
    assert results["data"]["images"] == 130
    assert results["data"]["cold_seconds"] > 0 and results["data"]["warm_seconds"] > 0
    assert 0 < results["latency"]["median_ms"] <= results["latency"]["p90_ms"]
    assert results["inside"]["images"] == 25 and 0 < results["inside"]["median_ms"] <= results["inside"]["p90_ms"]
    memory = results["memory"]
    assert 0 < memory["at_start_mb"] <= memory["peak_rss_mb"]
    assert list(memory["peak_after_mb"]) == ["data", "walkthrough", "quick", "registry", "frugal", "engine", "throughput", "inside",
                                            "latency"]
    assert max(memory["peak_after_mb"].values()) == memory["peak_rss_mb"]

    rows = results["table"]
    assert {r["section"] for r in rows} == {"walkthrough", "quick", "registry", "frugal", "engine", "throughput", "data", "inside",
                                            "latency", "memory"}
    for r in rows:
        assert set(r) == {"section", "measure", "value", "unit", "target", "ok"}
        assert r["value"] is None or r["value"] >= 0
    # The temporary cache of the cold load is gone, and the user's cache setting is back.
    assert os.environ["LENET_CACHE"] == str(tmp_path / "cache")


def test_sections_can_be_chosen(tiny_image_folder, capsys):
    assert bench.main(["--data", str(tiny_image_folder), "--only", "latency", "--latency-runs", "5"]) == 0
    printed = capsys.readouterr().out
    assert "single image" in printed and "walkthrough" not in printed and "throughput" not in printed
    assert bench.main(["--data", str(tiny_image_folder), "--only", "nonsense"]) == 2
    assert "unknown sections nonsense" in capsys.readouterr().err
    assert bench.main(["--data", str(tiny_image_folder / "nowhere"), "--only", "latency"]) == 2


def test_check_fails_the_run_when_a_target_is_missed(monkeypatch, capsys):
    """--check turns any row whose target is missed into exit status 1; without it the table is only printed."""
    def fake(args, log=None):
        results = {"memory": {"peak_rss_mb": 1500.0, "at_start_mb": 500.0, "peak_after_mb": {}},
                   "engine": {"batch_size": 128, "repeats": 3, "threads": 2, "plain_images_per_second": 10_000.0,
                              "trainer_images_per_second": 16_000.0, "trainer_vs_plain": 1.6, "gemm_flops_per_second": 2e11,
                              "trainer_no_augmentation_images_per_second": 17_000.0, "trainer_no_augmentation_vs_plain": 1.7,
                              "training_flops_per_image": 3.2e6, "bound_images_per_second": 62_500.0, "trainer_vs_bound": 0.256}}
        return {**results, "table": bench.make_table(results, args)}

    monkeypatch.setattr(bench, "run_benchmarks", fake)
    assert bench.main(["--only", "engine"]) == 0
    assert bench.main(["--only", "engine", "--check"]) == 1
    err = capsys.readouterr().err
    assert "missed targets: trainer against the bound; peak resident memory" in err  # 1.6x against the plain loop passes


def test_the_flops_of_a_training_image_are_counted_forward_and_backward():
    # Multiply-adds, 2 FLOPs each. Forward: conv1 6*28*28*75, conv2 16*10*10*150, fc 400*120 + 120*84 + 84*10: 651,720.
    # Backward: twice that, less conv1's gradient for its input, which the images do not need: 950,640.
    assert bench.training_flops_per_image() == 2 * (3 * 651_720 - 6 * 28 * 28 * 75) == 3_204_720


def test_registers_as_a_subcommand():
    parser = argparse.ArgumentParser(prog="lenet")
    bench.add_arguments(parser.add_subparsers(dest="command").add_parser("bench"))
    args = parser.parse_args(["bench", "--quick-only", "--json", "out.json", "--walkthrough-images", "500"])
    assert args.quick_only and args.json == Path("out.json") and args.walkthrough_images == 500
    assert args.bench_run is bench.run


def test_walkthrough_net_is_lenet5():
    torch.manual_seed(7)
    plain = bench.WalkthroughNet().state_dict()
    torch.manual_seed(7)
    ours = LeNet5().state_dict()
    assert list(plain) == list(ours)
    assert all(torch.equal(plain[k], ours[k]) for k in ours)


@pytest.mark.skipif(not REAL_DATA.is_dir(), reason=f"no CIFAR-10 at {REAL_DATA} (set LENET_DATA)")
def test_trainer_walkthrough_preset_equals_plain_loop():
    """Same seed and batch order: the trainer's losses are the plain PyTorch loop's, step for step."""
    data = load_cifar10(REAL_DATA)
    pick = torch.arange(0, len(data.test), len(data.test) // 400)[:400]  # 40 images of every class
    subset = data.test.subset(pick)
    small = CIFAR10(train=subset, test=subset.subset(torch.arange(20)), source="subset")
    seed, epochs = 3, 2
    result = train(preset("walkthrough", seed=seed, epochs=epochs, log_every=1), small)
    trainer_losses = torch.tensor([e.loss for e in result.history if isinstance(e, Step)])

    # The walkthrough's loop in plain PyTorch, fed the same images in the same order.
    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    n = len(subset)
    images = [transform(subset.images[i].permute(1, 2, 0).numpy()) for i in range(n)]  # H x W x C uint8, as from PIL
    labels = subset.labels
    # The trainer first orders the images by its (empty) validation split's permutation, then shuffles every epoch.
    base = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    torch.manual_seed(seed)
    net = LeNet5()
    criterion = torch.nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    plain_losses = []
    for epoch in range(epochs):
        order = base[torch.randperm(n, generator=torch.Generator().manual_seed(seed * 100_003 + epoch))]
        for start in range(0, n, 4):
            idx = order[start : start + 4]
            inputs = torch.stack([images[i] for i in idx])
            optimizer.zero_grad()
            loss = criterion(net(inputs), labels[idx])
            loss.backward()
            optimizer.step()
            plain_losses.append(loss.item())

    assert len(plain_losses) == len(trainer_losses) == epochs * n // 4
    assert torch.allclose(trainer_losses, torch.tensor(plain_losses), rtol=1e-5, atol=1e-6)
