"""Benchmarks: the project's trainer against the walkthrough's plain loop, on this machine and this data.

    python -m lenet bench [--data DIR] [--json PATH] [options]

Everything runs in one process, one section after another, on the same data, except the plain walkthrough loop,
the cold load and the FLOP count, which each run in a fresh Python (see run_in_child):

  walkthrough  The PyTorch CIFAR-10 walkthrough's loop, written plainly (torchvision ImageFolder or
               datasets.CIFAR10 with per-image ToTensor + Normalize((0.5,)*3, (0.5,)*3), a DataLoader with
               batch_size=4, shuffle=True, num_workers=2, SGD lr 0.001 momentum 0.9, CrossEntropyLoss),
               against the project's trainer with the `walkthrough` preset (the same batch size, optimizer
               and loss). Both train on a slice of --walkthrough-images images (or two whole epochs with
               --full); reported: training images per second of each, the speed-up, and the test accuracy
               each model reaches (both evaluated the same way, on the decoded test tensors).
  quick        The `quick` preset on the whole training set: seconds of training until the test accuracy
               first reaches --target (checked after each epoch), against the walkthrough's 239 s for its
               two epochs (measured once on the 2-core development machine) and against the plain loop's
               rate measured above, extrapolated to two epochs.
  registry     Training as the app does it: through a RunRegistry whose warm training process reads the tensor
               cache itself. Start -> first loss event (median of 3, the warm process ready), and the quick preset's
               seconds from Start until the epoch reaching --target is known, against the same through train()
               in this process (the quick section; wall clock on both sides, testing included).
  frugal       The `frugal` preset, tested every 10,000 training images: its test accuracy after 40,000 images
               (a number that does not depend on the machine).
  engine       The trainer against the plainest fast loop, in alternating repetitions (medians): the same
               LeNet-5 typed plainly, batch 128, SGD, the images as one normalized float tensor, X[idx]
               batches; the trainer runs the `best` recipe with its augmentation (and without). Also the matrix-product
               bound: the rate of a 2048 x 2048 float32 matmul on the same threads, divided by the FLOPs of
               one training image (forward and backward, torch.utils.flop_counter), against the trainer's rate.
  throughput   Training images per second of the `best` recipe (with and without augmentation) at batch
               128 and 512, over --throughput-steps steps after a warm-up.
  data         Seconds to load CIFAR-10 cold (decoding every image into a fresh, temporary tensor cache)
               and warm (from that cache). The operating system's file cache is not dropped: cold means
               "no tensor cache", not "cold disk".
  inside       What the Inside page computes for one test image (every layer's activations, the filters, a worked
               example, saliency and occlusion for the top class): milliseconds, median and 90th percentile of 25
               images after a warm-up, untrained weights (the time does not depend on them).
  latency      Single-image prediction: one uint8 3x32x32 image normalized and through the model, the median
               (and 90th percentile) of --latency-runs calls after a warm-up.
  memory       Peak resident memory of this process (getrusage ru_maxrss), reported at the end, with what
               it was at the start (Python and torch's libraries) and the peak after each section (where the
               rest goes); the two child processes report their own.

Options:
  --data DIR               CIFAR-10 folder: cifar-10-batches-py/ or train/<class>/, test/<class>/ (default: $LENET_DATA or data)
  --json PATH              also write every number as JSON to PATH
  --only LIST              comma-separated sections to run: walkthrough,quick,registry,frugal,engine,throughput,data,
                           inside,latency
                           (default: all)
  --quick-only             the same as --only quick
  --walkthrough-images N   images each side trains on in the walkthrough comparison (default 10000)
  --full                   train both sides of the walkthrough comparison for its two whole epochs (about 5 minutes)
  --target A               the quick preset's accuracy target (default 0.55)
  --throughput-steps N     steps timed per throughput measurement (default 40)
  --engine-repeats N       alternating repetitions of the engine comparison (default 7)
  --latency-runs N         single-image predictions timed (default 200)
  --train-subset N         train on at most N images in every section (a smoke test; 0: all)
  --skip-cold              skip the cold data load (decoding every image takes a while)
  --threads N              torch threads (default: torch's own choice)
  --check                  exit with status 1 when a measured target is missed

The default run takes about two minutes on a 2-core CPU. Python use:

    from lenet import bench
    bench.main(["--quick-only", "--json", "bench.json"])   # returns the exit status
    results = bench.run_benchmarks(bench.parse_args([...]))  # the numbers as a dict
"""

import argparse
import ctypes
import gc
import json
import os
import platform
import resource
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import torch
from torch import nn

from .data import CIFAR10, DataError, Split, default_data_dir, detect_layout, load_cifar10
from .events import Epoch, Step
from .inference import NORMALIZATIONS, normalize, predict_logits
from .model import LeNet5
from .train import preset, train

# The walkthrough's two epochs (12,500 steps of 4 images each) took 239 s when run as published on the
# 2-core development machine (torch 2.14 on CPU, the image-folder copy of CIFAR-10): the reference
# the quick preset is measured against.
WALKTHROUGH_REFERENCE_SECONDS = 239.0
WALKTHROUGH_REFERENCE_ORIGIN = "the walkthrough as published, 2 epochs, measured once on the 2-core development machine"
SECTIONS = ("walkthrough", "quick", "registry", "frugal", "engine", "throughput", "data", "inside", "latency")
# What the project promises, checked by --check.
TARGETS = {"speedup": 3.0, "quick_seconds": 15.0, "frugal_accuracy": 0.55, "engine_vs_plain": 1.5, "engine_vs_bound": 0.5,
           "throughput": 8000.0, "latency_ms": 10.0, "peak_memory_mb": 1000.0, "registry_first_loss_seconds": 1.0,
           "registry_vs_train": 1.2, "inside_ms": 1000.0, "cold_vs_plain_pil": 1 / 3}
FRUGAL_IMAGES = 40_000  # the frugal preset's promise: TARGETS["frugal_accuracy"] after at most this many training images
ENGINE_BATCH = 128
PLAIN_IMAGES = 1024  # the plain loop's float tensor: its batches are drawn from these (12.5 MB)
GEMM_SIZE = 2048


def add_arguments(parser: argparse.ArgumentParser) -> argparse.ArgumentParser:
    """Register the bench options on a parser (the CLI's `bench` subcommand, or a parser of its own)."""
    parser.add_argument("--data", type=Path, default=None, help="CIFAR-10 folder (default: $LENET_DATA or data)")
    parser.add_argument("--json", type=Path, default=None, metavar="PATH", help="also write the numbers as JSON")
    parser.add_argument("--only", default=",".join(SECTIONS), metavar="LIST", help=f"sections to run, from {','.join(SECTIONS)}")
    parser.add_argument("--quick-only", action="store_true", help="only the quick preset's time to accuracy")
    parser.add_argument("--walkthrough-images", type=int, default=10_000, metavar="N", help="images per side in the walkthrough comparison")
    parser.add_argument("--full", action="store_true", help="two whole epochs on both sides of the walkthrough comparison")
    parser.add_argument("--target", type=float, default=0.55, metavar="A", help="the quick preset's test accuracy target")
    parser.add_argument("--throughput-steps", type=int, default=40, metavar="N", help="steps timed per throughput measurement")
    parser.add_argument("--engine-repeats", type=int, default=7, metavar="N", help="alternating repetitions of the engine comparison")
    parser.add_argument("--latency-runs", type=int, default=200, metavar="N", help="single-image predictions timed")
    parser.add_argument("--train-subset", type=int, default=0, metavar="N", help="train on at most N images everywhere (smoke test)")
    parser.add_argument("--skip-cold", action="store_true", help="skip the cold data load")
    parser.add_argument("--threads", type=int, default=0, metavar="N", help="torch threads (default: torch's choice)")
    parser.add_argument("--check", action="store_true", help="exit with status 1 when a target is missed")
    parser.set_defaults(bench_run=run)
    return parser


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = argparse.ArgumentParser(prog="python -m lenet bench", description="Benchmark the trainer against the walkthrough's loop.")
    return add_arguments(parser).parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    return run(parse_args(argv))


def run(args: argparse.Namespace) -> int:
    """Run the sections args asks for, print the table, write the JSON; the exit status."""
    try:
        results = run_benchmarks(args, log=lambda message: print(message, file=sys.stderr, flush=True))
    except (DataError, ValueError) as error:
        print(f"bench: {error}", file=sys.stderr)
        return 2
    print(format_table(results["table"]))
    if args.json is not None:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps(results, indent=2) + "\n")
        print(f"wrote {args.json}")
    missed = [row["measure"] for row in results["table"] if row["ok"] is False]
    if missed:
        print(f"missed targets: {'; '.join(missed)}", file=sys.stderr)
    return 1 if args.check and missed else 0


def run_benchmarks(args: argparse.Namespace, log=lambda message: None) -> dict:
    """Every number as a plain dict: one entry per section, the table's rows under "table"."""
    sections = ["quick"] if args.quick_only else [s.strip() for s in args.only.split(",") if s.strip()]
    unknown = [s for s in sections if s not in SECTIONS]
    if unknown:
        raise ValueError(f"unknown sections {', '.join(unknown)}; choose from {', '.join(SECTIONS)}")
    for name in ("walkthrough_images", "throughput_steps", "engine_repeats", "latency_runs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
    memory = {"at_start_mb": peak_memory_mb(), "peak_after_mb": {}}  # at start: Python, torch and its libraries
    data_dir = Path(args.data) if args.data is not None else default_data_dir()
    results: dict = {
        "machine": {
            "python": platform.python_version(), "torch": torch.__version__, "platform": platform.platform(),
            "cpu_count": os.cpu_count(), "torch_threads": torch.get_num_threads(), "data": str(data_dir.resolve()),
            "load_average_before": _load_average(),
        },
        "sections": sections,
    }
    table: list[dict] = []
    section_seconds = results["section_seconds"] = {}

    def timed(name, fn):
        log(f"{name} ...")
        return_freed_memory()
        started = time.perf_counter()
        results[name] = fn()
        section_seconds[name] = time.perf_counter() - started
        # Linux syncs its per-thread memory counters lazily: a later reading of the peak can be a few kB lower.
        memory["peak_after_mb"][name] = max(peak_memory_mb(), *memory["peak_after_mb"].values(), memory["at_start_mb"])

    if "data" in sections:
        timed("data", lambda: bench_data_load(data_dir, cold=not args.skip_cold))
    data = load_cifar10(data_dir)
    if args.train_subset:
        data = CIFAR10(train=data.train.subset(torch.arange(min(args.train_subset, len(data.train)))), test=data.test, source=data.source)
    results["machine"]["data_source"] = data.source
    if "walkthrough" in sections:
        timed("walkthrough", lambda: bench_walkthrough(data_dir, data, images=args.walkthrough_images, full=args.full,
                                                       limit=args.train_subset))
    if "quick" in sections:
        plain_rate = results.get("walkthrough", {}).get("plain_images_per_second")
        timed("quick", lambda: bench_quick(data, target=args.target, plain_rate=plain_rate))
    if "registry" in sections:
        timed("registry", lambda: bench_registry(data_dir, data, target=args.target, subset=args.train_subset))
    if "frugal" in sections:
        timed("frugal", lambda: bench_frugal(data))
    if "engine" in sections:
        timed("engine", lambda: bench_engine(data, steps=args.throughput_steps, repeats=args.engine_repeats))
    if "throughput" in sections:
        timed("throughput", lambda: bench_throughput(data, steps=args.throughput_steps))
    if "inside" in sections:
        timed("inside", lambda: bench_inside(data))
    if "latency" in sections:
        timed("latency", lambda: bench_latency(runs=args.latency_runs))
    results["memory"] = {"peak_rss_mb": max(peak_memory_mb(), *memory["peak_after_mb"].values(), memory["at_start_mb"]), **memory}
    results["machine"]["load_average_after"] = _load_average()
    busy = results["machine"]["load_average_before"] or 0  # the bench's own work is in the later reading
    if busy > 0.5 + (os.cpu_count() or 1) / 2:
        log(f"note: the load average was {busy:.1f} on {os.cpu_count()} cores before the bench started: other processes slow "
            "every number down, and more busy threads than cores make torch's threads wait on each other")
    table = make_table(results, args)
    results["table"] = table
    return results


# --- the walkthrough, written plainly -------------------------------------------------------------


class WalkthroughNet(nn.Module):
    """The walkthrough's `Net`, typed in again here so the plain loop uses no project code."""

    def __init__(self):
        super().__init__()
        self.conv1 = nn.Conv2d(3, 6, 5)
        self.pool = nn.MaxPool2d(2, 2)
        self.conv2 = nn.Conv2d(6, 16, 5)
        self.fc1 = nn.Linear(16 * 5 * 5, 120)
        self.fc2 = nn.Linear(120, 84)
        self.fc3 = nn.Linear(84, 10)

    def forward(self, x):
        x = self.pool(torch.relu(self.conv1(x)))
        x = self.pool(torch.relu(self.conv2(x)))
        x = torch.flatten(x, 1)
        x = torch.relu(self.fc1(x))
        x = torch.relu(self.fc2(x))
        return self.fc3(x)


def walkthrough_trainset(data_dir: Path):
    """The training set as the walkthrough reads it: a torchvision dataset decoding and transforming per image."""
    import torchvision
    import torchvision.transforms as transforms

    transform = transforms.Compose([transforms.ToTensor(), transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))])
    if detect_layout(data_dir) == "torchvision":
        return torchvision.datasets.CIFAR10(root=str(data_dir), train=True, download=False, transform=transform)
    return torchvision.datasets.ImageFolder(str(Path(data_dir) / "train"), transform=transform)


def plain_walkthrough_loop(data_dir: Path, epochs: int = 2, max_images: int = 0, seed: int = 0,
                           subset: int = 0) -> tuple[nn.Module, int, float]:
    """The walkthrough's training loop; stops after max_images when given. (model, images seen, seconds)."""
    torch.manual_seed(seed)
    trainset = walkthrough_trainset(data_dir)
    if subset:
        trainset = torch.utils.data.Subset(trainset, range(min(subset, len(trainset))))
    trainloader = torch.utils.data.DataLoader(trainset, batch_size=4, shuffle=True, num_workers=2)
    net = WalkthroughNet()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.001, momentum=0.9)
    seen = 0
    started = time.perf_counter()
    for _epoch in range(epochs):
        running_loss = 0.0
        for i, (inputs, labels) in enumerate(trainloader):
            optimizer.zero_grad()
            outputs = net(inputs)
            loss = criterion(outputs, labels)
            loss.backward()
            optimizer.step()
            running_loss += loss.item()
            if i % 2000 == 1999:
                running_loss = 0.0  # the walkthrough prints it here
            seen += len(labels)
            if max_images and seen >= max_images:
                break
        if max_images and seen >= max_images:
            break
    return net.eval(), seen, time.perf_counter() - started


def bench_walkthrough(data_dir: Path, data: CIFAR10, images: int, full: bool, limit: int = 0) -> dict:
    normalization = NORMALIZATIONS["walkthrough"]
    n = len(data.train)
    if full:
        epochs, max_images, subset = 2, 0, 0
    else:
        epochs, max_images, subset = 1, min(images, n), min(images, n)
    with tempfile.TemporaryDirectory(prefix="lenet-bench-") as folder:
        weights = Path(folder) / "plain.pt"
        plain = run_in_child(PLAIN_LOOP, data_dir, epochs, max_images, limit, torch.get_num_threads(), weights)
        plain_model = WalkthroughNet()
        plain_model.load_state_dict(torch.load(weights, weights_only=True))
    plain_seen, plain_seconds = plain["seen"], plain["seconds"]
    plain_rate = plain_seen / plain_seconds
    # The project's trainer on the same number of images, same batch size, optimizer and loss.
    result = train(preset("walkthrough", epochs=epochs, train_subset=subset, log_every=10**6), data)
    trainer_seen = result.history[0].train_images * epochs
    trainer_rate = trainer_seen / result.train_seconds
    return {
        "batch_size": 4,
        "full": full,
        "plain_images": plain_seen,
        "plain_seconds": plain_seconds,
        "plain_images_per_second": plain_rate,
        "plain_test_accuracy": _accuracy(plain_model.eval(), data.test, normalization),
        "plain_peak_rss_mb": plain["peak_rss_mb"],
        "trainer_images": trainer_seen,
        "trainer_seconds": result.train_seconds,
        "trainer_images_per_second": trainer_rate,
        "trainer_test_accuracy": result.test_accuracy,
        "speedup": trainer_rate / plain_rate,
    }


def _accuracy(model: nn.Module, split: Split, normalization: dict) -> float:
    """Test accuracy 250 images at a time, as the trainer tests (inference's 1,000 at a time would raise the peak memory)."""
    logits = predict_logits(model, split.images, normalization, batch_size=250)
    return (logits.argmax(1) == split.labels).float().mean().item()


# --- the project's presets ------------------------------------------------------------------------


def quick_config(data: CIFAR10):
    # A batch never larger than the data: the smoke test's tiny folder holds fewer images than one quick batch.
    return preset("quick", batch_size=min(preset("quick").batch_size, len(data.train)))


def bench_quick(data: CIFAR10, target: float, plain_rate: float | None = None) -> dict:
    started = time.perf_counter()
    arrived: dict[int, float] = {}  # epoch -> seconds from the call until its test accuracy was known

    def on_event(event) -> None:
        if isinstance(event, Epoch):
            arrived[event.epoch] = time.perf_counter() - started

    result = train(quick_config(data), data, on_event=on_event)
    wall = time.perf_counter() - started
    epochs = [e for e in result.history if isinstance(e, Epoch)]
    reached = next((e for e in epochs if e.test_accuracy >= target), None)
    out = {
        "target": target,
        "seconds_to_target": reached.train_seconds if reached else None,
        "wall_seconds_to_target": arrived[reached.epoch] if reached else None,
        "epoch_reached": reached.epoch if reached else None,
        "final_test_accuracy": result.test_accuracy,
        "train_seconds": result.train_seconds,
        "wall_seconds": wall,
        "epochs": [{"epoch": e.epoch, "test_accuracy": e.test_accuracy, "train_seconds": e.train_seconds} for e in epochs],
        "walkthrough_reference_seconds": WALKTHROUGH_REFERENCE_SECONDS,
        "walkthrough_reference_origin": WALKTHROUGH_REFERENCE_ORIGIN,
    }
    if plain_rate:
        out["plain_loop_two_epochs_seconds"] = 2 * 50_000 / plain_rate
    return out


def bench_registry(data_dir: Path, data: CIFAR10, target: float, subset: int = 0, starts: int = 3) -> dict:
    """The app's way to train: a RunRegistry with a warm training process that reads the tensor cache itself.

    Start -> first loss: from registry.start() until the first Step event has reached this process, with the warm
    process ready (the app's case once the server has loaded the data); the median of `starts` runs, each stopped at
    once. Then the quick preset to the target, from start() until the Epoch event that reaches it has arrived, to set
    against the same preset through train() in this process (bench_quick's wall_seconds_to_target).
    """
    from .runs import FINISHED, RunRegistry

    config = quick_config(data)
    if subset:  # --train-subset: the training process reads the whole folder, and trains on as many of its images
        config = preset("quick", batch_size=config.batch_size, train_subset=min(subset, len(data.train)))

    def wait_for(predicate, timeout: float = 600.0) -> None:
        deadline = time.monotonic() + timeout
        while not predicate():
            if time.monotonic() > deadline:
                raise RuntimeError("the training process did not report in time")
            time.sleep(0.002)

    with tempfile.TemporaryDirectory(prefix="lenet-bench-runs-") as runs_dir:
        registry = RunRegistry(runs_dir, lambda: data, threads=torch.get_num_threads(), data_source=data.source,
                               data_dir=data_dir, warm=True)
        try:
            first_loss = []
            for _ in range(starts):
                if not registry.warm_ready(300):
                    raise RuntimeError("no warm training process within 300 s")
                started = time.perf_counter()
                registry.start(config)
                wait_for(lambda: registry.active().steps or not registry.is_training())
                first_loss.append(time.perf_counter() - started)
                registry.stop(timeout=10)
            registry.warm_ready(300)
            arrived: dict[int, float] = {}
            started = time.perf_counter()
            run_id = registry.start(config)
            while registry.is_training() or not arrived:
                run = registry.active()
                for epoch in run.epochs:
                    arrived.setdefault(epoch.epoch, time.perf_counter() - started)
                if not registry.is_training():
                    break
                time.sleep(0.002)
            registry.wait(60)
            run = registry.snapshot(run_id)
        finally:
            registry.close()  # stops a run still going, and lets the warm process go
    reached = next((e for e in run.epochs if e.test_accuracy >= target), None)
    return {
        "target": target, "starts": starts, "first_loss_seconds": first_loss,
        "first_loss_median_seconds": statistics.median(first_loss),
        "finished": run.state == FINISHED,
        "seconds_to_target": reached.train_seconds if reached else None,
        "wall_seconds_to_target": arrived.get(reached.epoch) if reached else None,
        "final_test_accuracy": run.test_accuracy,
    }


def bench_frugal(data: CIFAR10) -> dict:
    """The frugal preset with a test every 10,000 images: the accuracy it has after FRUGAL_IMAGES images."""
    frugal = preset("frugal")  # capped to a tiny data set's size, for smoke tests
    config = preset("frugal", train_subset=min(frugal.train_subset, len(data.train)), batch_size=min(frugal.batch_size, len(data.train)))
    result = train(config, data)
    points = [{"images": p.images, "test_accuracy": p.test_accuracy} for p in result.test_points]
    within = [p for p in points if p["images"] <= FRUGAL_IMAGES]
    return {"images": FRUGAL_IMAGES, "test_accuracy": within[-1]["test_accuracy"] if within else None,
            "train_seconds": result.train_seconds, "points": points}


def _repeat(split: Split, count: int) -> Split:
    return split.subset(torch.arange(count) % len(split))


def plain_in_memory_loop(images: torch.Tensor, labels: torch.Tensor, batch_size: int, steps: int, seed: int = 0) -> float:
    """The usual fast PyTorch loop: normalized float images in one tensor, X[idx] batches, SGD. Its images per second.

    `steps` batches, each a random draw from the images (fewer images than steps x batch: less memory, same speed).
    """
    torch.manual_seed(seed)
    net = WalkthroughNet()
    criterion = nn.CrossEntropyLoss()
    optimizer = torch.optim.SGD(net.parameters(), lr=0.05, momentum=0.9)
    batches = torch.randint(0, len(labels), (steps, batch_size))
    started = time.perf_counter()
    for idx in batches:
        optimizer.zero_grad()
        loss = criterion(net(images[idx]), labels[idx])
        loss.backward()
        optimizer.step()
    return steps * batch_size / (time.perf_counter() - started)


def gemm_flops_per_second(a: torch.Tensor, product: torch.Tensor, runs: int = 3) -> float:
    """The best of a few float32 products a @ a (square, written into `product`) on torch's threads: what the CPU does
    at its best. Two 16 MB matrices, made once for all repetitions: less memory than a fresh a, b and a @ b each time."""
    torch.matmul(a, a, out=product)  # warm-up: the library picks its kernels
    best = min(_seconds(lambda: torch.matmul(a, a, out=product)) for _ in range(runs))
    return 2 * a.shape[0] ** 3 / best


def _seconds(fn) -> float:
    started = time.perf_counter()
    fn()
    return time.perf_counter() - started


def training_flops_per_image(batch_size: int = ENGINE_BATCH) -> float:
    """FLOPs of one training image: LeNet-5's forward, the loss and the backward pass (the optimizer's few are left out)."""
    from torch.utils.flop_counter import FlopCounterMode

    model = LeNet5()
    images, labels = torch.randn(batch_size, 3, 32, 32), torch.randint(0, 10, (batch_size,))
    with FlopCounterMode(display=False) as counter:
        nn.functional.cross_entropy(model(images), labels).backward()
    return counter.get_total_flops() / batch_size


def bench_engine(data: CIFAR10, steps: int, repeats: int, batch_size: int = ENGINE_BATCH) -> dict:
    """The trainer (best recipe, augmented) against the plain in-memory loop and the matrix-product bound.

    The plain loop, the trainer with and without augmentation and the matrix product are measured in turn, `repeats`
    times, and each reported as its median: other processes then slow them alike, not whichever ran in a busy moment.
    """
    batch_size = min(batch_size, len(data.train))
    picked = torch.randperm(len(data.train), generator=torch.Generator().manual_seed(0))[:PLAIN_IMAGES]
    plain_images, plain_labels = normalize(data.train.images[picked], NORMALIZATIONS["cifar10"]), data.train.labels[picked]
    tiny_test = data.test.subset(torch.arange(min(10, len(data.test))))
    engine_data = CIFAR10(train=data.train, test=tiny_test, source=data.source)
    config = preset("best", epochs=1, batch_size=batch_size, warmup=0.0)

    def engine(augment: bool = True) -> float:
        return steps * batch_size / _train_steps(preset("best", **{**config.to_dict(), "augment": augment}), engine_data, steps)

    generator = torch.Generator().manual_seed(0)
    matrices = torch.randn(GEMM_SIZE, GEMM_SIZE, generator=generator), torch.empty(GEMM_SIZE, GEMM_SIZE)
    rates: dict[str, list[float]] = {"plain": [], "engine": [], "engine_no_augmentation": [], "gemm": []}
    plain_in_memory_loop(plain_images, plain_labels, batch_size, 3)  # warm-ups
    engine()
    for _ in range(repeats):
        return_freed_memory()
        rates["plain"].append(plain_in_memory_loop(plain_images, plain_labels, batch_size, steps))
        rates["engine"].append(engine())
        rates["engine_no_augmentation"].append(engine(augment=False))
        rates["gemm"].append(gemm_flops_per_second(*matrices))
    plain, trainer, bare, gemm = (statistics.median(rates[k]) for k in ("plain", "engine", "engine_no_augmentation", "gemm"))
    flops = run_in_child(FLOP_COUNT, batch_size)["flops_per_image"]
    bound = gemm / flops
    return {
        "batch_size": batch_size, "images_per_measurement": steps * batch_size, "repeats": repeats, "threads": torch.get_num_threads(),
        "plain_images_per_second": plain, "trainer_images_per_second": trainer, "trainer_vs_plain": trainer / plain,
        "trainer_no_augmentation_images_per_second": bare, "trainer_no_augmentation_vs_plain": bare / plain,
        "gemm_flops_per_second": gemm, "training_flops_per_image": flops, "bound_images_per_second": bound,
        "trainer_vs_bound": trainer / bound, "all": rates,
    }


def _train_steps(config, data: CIFAR10, steps: int) -> float:
    """Seconds the trainer takes for its first `steps` steps: stopped there, so no copy of the images is made."""
    if len(data.train) < steps * config.batch_size:  # a small data set: repeated into one long epoch
        data = CIFAR10(train=_repeat(data.train, steps * config.batch_size), test=data.test, source=data.source)
    stop = threading.Event()

    def on_event(event) -> None:
        if isinstance(event, Step) and event.step >= steps:
            stop.set()

    return train(preset(config.preset, **{**config.to_dict(), "log_every": steps}), data, on_event=on_event, stop=stop).train_seconds


def bench_throughput(data: CIFAR10, steps: int, batch_sizes=(128, 512)) -> dict:
    """Images per second of the best recipe, at each batch size, augmented and not, after a warm-up."""
    tiny_test = data.test.subset(torch.arange(min(10, len(data.test))))
    data = CIFAR10(train=data.train, test=tiny_test, source=data.source)
    out = {}
    for batch_size in batch_sizes:
        for augment in (True, False):
            config = preset("best", epochs=1, batch_size=batch_size, augment=augment, warmup=0.0)
            _train_steps(config, data, 3)  # warm-up
            key = f"batch_{batch_size}" + ("_augmented" if augment else "")
            out[key] = steps * batch_size / _train_steps(config, data, steps)
    return out


def run_in_child(code: str, *args) -> dict:
    """Python code in a fresh interpreter (this package importable, this environment): the JSON its last line prints.

    Three things run there: the cold load, so nothing of it is warm; the walkthrough's plain loop, as a student
    would run it; and the FLOP count. Their libraries and buffers (torchvision: 150 MB; the decoder holds every image
    twice while it stacks them) are then not in this process's peak memory; the first two report their own.
    """
    package_parent = str(Path(__file__).resolve().parents[1])
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(filter(None, [package_parent, os.environ.get("PYTHONPATH")]))}
    done = subprocess.run([sys.executable, "-c", code, *map(str, args)], env=env, capture_output=True, text=True)
    if done.returncode != 0:
        raise DataError(f"a benchmark's child process failed: {(done.stderr.strip().splitlines() or ['no message'])[-1]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


COLD_LOAD = """
import json, sys, time
from lenet.bench import peak_memory_mb
from lenet.data import finish_cache_writes, load_cifar10
started = time.perf_counter()
data = load_cifar10(sys.argv[1])
seconds = time.perf_counter() - started
finish_cache_writes()
cached = time.perf_counter() - started
print(json.dumps({"seconds": seconds, "cached_seconds": cached, "images": len(data.train) + len(data.test),
                  "peak_rss_mb": peak_memory_mb()}))
"""

# An image folder decoded as a newcomer would write it: list the files, open each with PIL, make it an array.
PLAIN_PIL_DECODE = """
import json, sys, time
import numpy as np
from pathlib import Path
from PIL import Image
started = time.perf_counter()
files = sorted(Path(sys.argv[1]).glob("*/*/*.*"))
arrays = [np.asarray(Image.open(path).convert("RGB")) for path in files]
print(json.dumps({"seconds": time.perf_counter() - started, "images": len(arrays)}))
"""

# Counted in a fresh Python too: the counter imports torch's tracing machinery (36 MB more at this process's peak).
FLOP_COUNT = """
import json, sys
from lenet.bench import training_flops_per_image
print(json.dumps({"flops_per_image": training_flops_per_image(int(sys.argv[1]))}))
"""

PLAIN_LOOP = """
import json, sys, torch
from pathlib import Path
from lenet.bench import peak_memory_mb, plain_walkthrough_loop
data_dir, epochs, max_images, subset, threads, weights = sys.argv[1:]
torch.set_num_threads(int(threads))
net, seen, seconds = plain_walkthrough_loop(Path(data_dir), epochs=int(epochs), max_images=int(max_images), subset=int(subset))
torch.save(net.state_dict(), weights)
print(json.dumps({"seen": seen, "seconds": seconds, "peak_rss_mb": peak_memory_mb()}))
"""


def bench_data_load(data_dir: Path, cold: bool = True) -> dict:
    """Load both splits cold (in a fresh Python, into an empty temporary tensor cache), then warm from that cache.

    Without cold, only the warm load, from the usual cache (decoded there first if it is not yet).
    """
    if not cold:
        return warm_load(data_dir)
    saved = os.environ.get("LENET_CACHE")
    with tempfile.TemporaryDirectory(prefix="lenet-bench-cache-") as cache:
        os.environ["LENET_CACHE"] = cache
        try:
            plain = run_in_child(PLAIN_PIL_DECODE, data_dir) if detect_layout(data_dir) == "image-folder" else None
            child = run_in_child(COLD_LOAD, data_dir)
            out = {"cold_seconds": child["seconds"], "cold_cached_seconds": child["cached_seconds"],
                   "cold_peak_rss_mb": child["peak_rss_mb"], **warm_load(data_dir)}
            if plain is not None:
                out |= {"plain_pil_seconds": plain["seconds"], "cold_vs_plain_pil": child["seconds"] / plain["seconds"]}
            return out
        finally:
            if saved is None:
                os.environ.pop("LENET_CACHE", None)
            else:
                os.environ["LENET_CACHE"] = saved


def warm_load(data_dir: Path) -> dict:
    """Seconds to load both splits from the tensor cache, and to read every byte of them once (it is memory-mapped:
    that first read is part of what a trainer waits for)."""
    started = time.perf_counter()
    data = load_cifar10(data_dir)
    out = {"warm_seconds": time.perf_counter() - started}
    started = time.perf_counter()
    out["pixel_sum"] = _pixel_sum(data.train.images) + _pixel_sum(data.test.images)
    out["warm_read_seconds"] = time.perf_counter() - started
    out["images"] = len(data.train) + len(data.test)
    return out


def _pixel_sum(images: torch.Tensor) -> int:
    """The sum of every pixel, through a histogram of the 256 byte values: uint8's own sum widens every byte to
    int64 first (1.2 GB for the training split at once, and heap growth of 100 to 150 MB when taken in chunks)."""
    counts = torch.bincount(images.reshape(-1), minlength=256)
    return int((counts * torch.arange(256)).sum())


def bench_inside(data: CIFAR10, images: int = 25) -> dict:
    """Milliseconds for what the Inside page computes for one image, over `images` test images spread over the split
    (the first one, a warm-up, left out)."""
    from . import explain

    torch.manual_seed(0)
    model = LeNet5().eval()
    normalization = NORMALIZATIONS["cifar10"]
    times = []
    for index in torch.linspace(0, len(data.test) - 1, images + 1).long().tolist():
        image = data.test.images[index]
        started = time.perf_counter()
        explain.activations(model, image, normalization)
        explain.filters(model)
        explain.worked_example(model, image, normalization, "conv2", channel=3, row=4, col=4)
        explain.saliency_map(model, image, normalization)
        explain.occlusion_map(model, image, normalization)
        times.append((time.perf_counter() - started) * 1000)
    times = sorted(times[1:])
    return {"images": len(times), "median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))]}


def bench_latency(runs: int, warmup: int = 20) -> dict:
    """Milliseconds to classify one uint8 image: normalization, the model, the logits (weights untrained)."""
    torch.manual_seed(0)
    model = LeNet5().eval()
    image = torch.randint(0, 256, (1, 3, 32, 32), dtype=torch.uint8)
    normalization = NORMALIZATIONS["cifar10"]
    times = []
    for i in range(warmup + runs):
        started = time.perf_counter()
        predict_logits(model, image, normalization).softmax(1)
        if i >= warmup:
            times.append((time.perf_counter() - started) * 1000)
    times.sort()
    return {"runs": runs, "median_ms": statistics.median(times), "p90_ms": times[int(0.9 * (len(times) - 1))], "min_ms": times[0]}


def _load_average() -> float | None:
    try:
        return os.getloadavg()[0]
    except OSError:  # not on every platform
        return None


def peak_memory_mb() -> float:
    """This process's peak resident memory. Linux's VmHWM where there is one: getrusage's ru_maxrss also counts what the
    parent process held when it started this one (a fresh Python started by this bench reported 809 MB for 9)."""
    try:
        with open("/proc/self/status") as status:
            return next(int(line.split()[1]) / 1024 for line in status if line.startswith("VmHWM:"))
    except (OSError, StopIteration, ValueError):
        peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
        return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kilobytes on Linux


def return_freed_memory() -> None:
    """Give the memory earlier sections freed back to the system, so that each section's peak is its own: glibc keeps
    freed blocks for reuse (about 130 MB after the training sections, measured with VmRSS), and Python never asks."""
    gc.collect()
    try:
        ctypes.CDLL(None).malloc_trim(0)
    except (OSError, AttributeError, TypeError):
        pass  # not glibc: nothing to ask


# --- the table ------------------------------------------------------------------------------------


def make_table(results: dict, args: argparse.Namespace) -> list[dict]:
    """One row per number: section, measure, value, unit, target (text or None), ok (True, False or None)."""
    rows: list[dict] = []

    def row(section, measure, value, unit="", target=None, ok=None):
        rows.append({"section": section, "measure": measure, "value": value, "unit": unit, "target": target, "ok": ok})

    if "walkthrough" in results:
        w = results["walkthrough"]
        how = "2 epochs" if w["full"] else f"{w['plain_images']:,} images"
        row("walkthrough", f"plain loop, batch 4, {how}", w["plain_images_per_second"], "img/s")
        row("walkthrough", f"project trainer, batch 4, {how}", w["trainer_images_per_second"], "img/s")
        row("walkthrough", "speed-up at the same batch size", w["speedup"], "x", f">= {TARGETS['speedup']:g}x",
            w["speedup"] >= TARGETS["speedup"])
        row("walkthrough", "plain loop test accuracy", w["plain_test_accuracy"] * 100, "%")
        row("walkthrough", "project trainer test accuracy", w["trainer_test_accuracy"] * 100, "%")
        row("walkthrough", "plain loop's peak memory (a fresh process, not in the peak below)", w["plain_peak_rss_mb"], "MB")
    if "quick" in results:
        q = results["quick"]
        seconds = q["seconds_to_target"]
        row("quick", f"seconds to {q['target'] * 100:g}% test accuracy", seconds, "s", f"<= {TARGETS['quick_seconds']:g} s",
            seconds is not None and seconds <= TARGETS["quick_seconds"])
        row("quick", "final test accuracy", q["final_test_accuracy"] * 100, "%")
        row("quick", "training seconds, all epochs", q["train_seconds"], "s")
        row("quick", "walkthrough reference, 2 epochs (measured once)", q["walkthrough_reference_seconds"], "s")
        if "plain_loop_two_epochs_seconds" in q:
            row("quick", "plain loop measured here, extrapolated to 2 epochs", q["plain_loop_two_epochs_seconds"], "s")
    if "registry" in results:
        r = results["registry"]
        first = r["first_loss_median_seconds"]
        row("registry", f"Start -> first loss event, warm process, median of {r['starts']}", first, "s",
            f"<= {TARGETS['registry_first_loss_seconds']:g} s", first <= TARGETS["registry_first_loss_seconds"])
        mine, direct = r["wall_seconds_to_target"], results.get("quick", {}).get("wall_seconds_to_target")
        row("registry", f"quick, Start -> {r['target'] * 100:g}% known", mine, "s")
        if mine is not None and direct:
            ratio = mine / direct
            row("registry", "quick to the target: registry against train()", ratio, "x",
                f"<= {TARGETS['registry_vs_train']:g}x", ratio <= TARGETS["registry_vs_train"])
    if "frugal" in results:
        f = results["frugal"]
        target = TARGETS["frugal_accuracy"]
        reached = f["test_accuracy"]
        row("frugal", f"test accuracy after {f['images']:,} training images", None if reached is None else reached * 100, "%",
            f">= {target * 100:g} %", reached is not None and reached >= target)
        row("frugal", "training seconds", f["train_seconds"], "s")
    if "engine" in results:
        e = results["engine"]
        how = f"batch {e['batch_size']}, median of {e['repeats']}"
        row("engine", f"plain in-memory loop, {how}", e["plain_images_per_second"], "img/s")
        row("engine", f"trainer, best recipe augmented, {how}", e["trainer_images_per_second"], "img/s")
        row("engine", "trainer against the plain loop", e["trainer_vs_plain"], "x", f">= {TARGETS['engine_vs_plain']:g}x",
            e["trainer_vs_plain"] >= TARGETS["engine_vs_plain"])
        row("engine", f"trainer, best recipe without augmentation, {how}", e["trainer_no_augmentation_images_per_second"], "img/s")
        row("engine", "the same against the plain loop", e["trainer_no_augmentation_vs_plain"], "x")
        gemm = f"matrix product {GEMM_SIZE}x{GEMM_SIZE} float32, {e['threads']} threads"
        row("engine", gemm, e["gemm_flops_per_second"] / 1e9, "GFLOP/s")
        row("engine", "FLOPs per training image (forward + backward)", e["training_flops_per_image"] / 1e6, "MFLOP")
        row("engine", "matrix-product bound", e["bound_images_per_second"], "img/s")
        row("engine", "trainer against the bound", e["trainer_vs_bound"] * 100, "%", f">= {TARGETS['engine_vs_bound'] * 100:g} %",
            e["trainer_vs_bound"] >= TARGETS["engine_vs_bound"])
    if "throughput" in results:
        for key, rate in results["throughput"].items():
            label = key.replace("batch_", "batch ").replace("_augmented", ", augmented")
            row("throughput", f"best recipe, {label}", rate, "img/s", f">= {TARGETS['throughput']:,.0f}", rate >= TARGETS["throughput"])
    if "data" in results:
        d = results["data"]
        if "cold_seconds" in d:
            row("data", f"cold load (decode {d['images']:,} images: the data is ready)", d["cold_seconds"], "s")
            row("data", "cold load, until the tensor cache (written behind) is on disk", d["cold_cached_seconds"], "s")
            row("data", "cold load's peak memory (a fresh process, not in the peak below)", d["cold_peak_rss_mb"], "MB")
        if "plain_pil_seconds" in d:
            row("data", "plain PIL loop over the same images (list, open, convert; a fresh process)", d["plain_pil_seconds"], "s")
            row("data", "cold load against the plain PIL loop", d["cold_vs_plain_pil"], "x",
                f"<= {TARGETS['cold_vs_plain_pil']:.2f}x", d["cold_vs_plain_pil"] <= TARGETS["cold_vs_plain_pil"])
        row("data", "warm load (from the tensor cache)", d["warm_seconds"], "s")
        row("data", "warm load, first read of every byte", d["warm_read_seconds"], "s")
    if "inside" in results:
        inside = results["inside"]
        row("inside", f"one image's inside view, median of {inside['images']}", inside["median_ms"], "ms",
            f"< {TARGETS['inside_ms']:g} ms", inside["median_ms"] < TARGETS["inside_ms"])
        row("inside", "one image's inside view, 90th percentile", inside["p90_ms"], "ms")
    if "latency" in results:
        lat = results["latency"]
        row("latency", f"single image, median of {lat['runs']}", lat["median_ms"], "ms", f"< {TARGETS['latency_ms']:g} ms",
            lat["median_ms"] < TARGETS["latency_ms"])
        row("latency", "single image, 90th percentile", lat["p90_ms"], "ms")
    memory = results["memory"]
    row("memory", "peak resident memory", memory["peak_rss_mb"], "MB", f"<= {TARGETS['peak_memory_mb']:,.0f} MB",
        memory["peak_rss_mb"] <= TARGETS["peak_memory_mb"])
    row("memory", "of which at start (Python, torch and its libraries)", memory["at_start_mb"], "MB")
    for section, peak in memory["peak_after_mb"].items():
        row("memory", f"peak after the {section} section", peak, "MB")
    return rows


def _format_value(value, unit: str) -> str:
    if value is None:
        return "not reached"
    if unit == "img/s":
        return f"{value:,.0f} {unit}"
    if unit == "x":
        return f"{value:.2f}x"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "ms" or (unit == "s" and value < 1):
        return f"{value:.2f} {unit}"
    return f"{value:,.1f} {unit}".strip()


def format_table(rows: list[dict]) -> str:
    cells = [("section", "measure", "value", "target")]
    for r in rows:
        target = "" if r["target"] is None else f"{r['target']} {'ok' if r['ok'] else 'MISSED'}"
        cells.append((r["section"], r["measure"], _format_value(r["value"], r["unit"]), target))
    widths = [max(len(c[i]) for c in cells) for i in range(4)]
    lines = []
    for i, c in enumerate(cells):
        lines.append("  ".join(c[j].rjust(widths[j]) if j == 2 else c[j].ljust(widths[j]) for j in range(4)).rstrip())
        if i == 0:
            lines.append("  ".join("-" * w for w in widths))
    return "\n".join(lines)


if __name__ == "__main__":
    raise SystemExit(main())
