"""Benchmarks: the project's trainer against the walkthrough's plain loop, on this machine and this data.

    python -m lenet bench [--data DIR] [--json PATH] [options]

Everything runs in one process, one section after another, on the same data:

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
  throughput   Training images per second of the `best` recipe (with and without augmentation) at batch
               128 and 512, over --throughput-steps steps after a warm-up.
  data         Seconds to load CIFAR-10 cold (decoding every image into a fresh, temporary tensor cache)
               and warm (from that cache). The operating system's file cache is not dropped: cold means
               "no tensor cache", not "cold disk".
  latency      Single-image prediction: one uint8 3x32x32 image normalized and through the model, the median
               (and 90th percentile) of --latency-runs calls after a warm-up.
  memory       Peak resident memory of this process (getrusage ru_maxrss), reported at the end.

Options:
  --data DIR               CIFAR-10 folder: cifar-10-batches-py/ or train/<class>/, test/<class>/ (default: $LENET_DATA or data)
  --json PATH              also write every number as JSON to PATH
  --only LIST              comma-separated sections to run: walkthrough,quick,throughput,data,latency (default: all)
  --quick-only             the same as --only quick
  --walkthrough-images N   images each side trains on in the walkthrough comparison (default 10000)
  --full                   train both sides of the walkthrough comparison for its two whole epochs (about 5 minutes)
  --target A               the quick preset's accuracy target (default 0.55)
  --throughput-steps N     steps timed per throughput measurement (default 40)
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
import json
import os
import platform
import resource
import statistics
import sys
import tempfile
import time
from pathlib import Path

import torch
from torch import nn

from .data import CIFAR10, DataError, Split, default_data_dir, detect_layout, load_cifar10
from .events import Epoch
from .inference import NORMALIZATIONS, accuracy, predict_logits
from .model import LeNet5
from .train import preset, train

# The walkthrough's two epochs (12,500 steps of 4 images each) took 239 s when run as published on the
# 2-core development machine (torch 2.14 on CPU, the image-folder copy of CIFAR-10): the reference
# the quick preset is measured against.
WALKTHROUGH_REFERENCE_SECONDS = 239.0
WALKTHROUGH_REFERENCE_ORIGIN = "the walkthrough as published, 2 epochs, measured once on the 2-core development machine"
SECTIONS = ("walkthrough", "quick", "throughput", "data", "latency")
# What the project promises, checked by --check.
TARGETS = {"speedup": 3.0, "quick_seconds": 15.0, "throughput": 8000.0, "latency_ms": 10.0}


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
    for name in ("walkthrough_images", "throughput_steps", "latency_runs"):
        if getattr(args, name) < 1:
            raise ValueError(f"--{name.replace('_', '-')} must be at least 1")
    if args.threads:
        torch.set_num_threads(args.threads)
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
        started = time.perf_counter()
        results[name] = fn()
        section_seconds[name] = time.perf_counter() - started

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
    if "throughput" in sections:
        timed("throughput", lambda: bench_throughput(data, steps=args.throughput_steps))
    if "latency" in sections:
        timed("latency", lambda: bench_latency(runs=args.latency_runs))
    results["memory"] = {"peak_rss_mb": peak_memory_mb()}
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
    plain_model, plain_seen, plain_seconds = plain_walkthrough_loop(data_dir, epochs=epochs, max_images=max_images, subset=limit)
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
        "plain_test_accuracy": accuracy(plain_model, data.test.images, data.test.labels, normalization),
        "trainer_images": trainer_seen,
        "trainer_seconds": result.train_seconds,
        "trainer_images_per_second": trainer_rate,
        "trainer_test_accuracy": result.test_accuracy,
        "speedup": trainer_rate / plain_rate,
    }


# --- the project's presets ------------------------------------------------------------------------


def bench_quick(data: CIFAR10, target: float, plain_rate: float | None = None) -> dict:
    started = time.perf_counter()
    # A batch never larger than the data: the smoke test's tiny folder holds fewer images than one quick batch.
    result = train(preset("quick", batch_size=min(preset("quick").batch_size, len(data.train))), data)
    wall = time.perf_counter() - started
    epochs = [e for e in result.history if isinstance(e, Epoch)]
    reached = next((e for e in epochs if e.test_accuracy >= target), None)
    out = {
        "target": target,
        "seconds_to_target": reached.train_seconds if reached else None,
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


def _repeat(split: Split, count: int) -> Split:
    return split.subset(torch.arange(count) % len(split))


def bench_throughput(data: CIFAR10, steps: int, batch_sizes=(128, 512)) -> dict:
    """Images per second of the best recipe, at each batch size, augmented and not, after a warm-up."""
    tiny_test = data.test.subset(torch.arange(min(10, len(data.test))))
    out = {}
    for batch_size in batch_sizes:
        for augment in (True, False):
            warm = CIFAR10(train=_repeat(data.train, 3 * batch_size), test=tiny_test, source=data.source)
            train(preset("best", epochs=1, batch_size=batch_size, augment=augment, warmup=0.0, log_every=10**6), warm)
            timed = CIFAR10(train=_repeat(data.train, steps * batch_size), test=tiny_test, source=data.source)
            result = train(preset("best", epochs=1, batch_size=batch_size, augment=augment, warmup=0.0, log_every=10**6), timed)
            key = f"batch_{batch_size}" + ("_augmented" if augment else "")
            out[key] = steps * batch_size / result.train_seconds
    return out


# --- data and inference ---------------------------------------------------------------------------


def bench_data_load(data_dir: Path, cold: bool = True) -> dict:
    """Load both splits with an empty temporary tensor cache (cold), then again from it (warm)."""
    saved = os.environ.get("LENET_CACHE")
    out: dict = {}
    with tempfile.TemporaryDirectory(prefix="lenet-bench-cache-") as cache:
        os.environ["LENET_CACHE"] = cache
        try:
            if cold:
                started = time.perf_counter()
                fresh = load_cifar10(data_dir)
                out["cold_seconds"] = time.perf_counter() - started
                out["images"] = len(fresh.train) + len(fresh.test)
                del fresh
            else:
                load_cifar10(data_dir)  # fills the temporary cache untimed
            started = time.perf_counter()
            data = load_cifar10(data_dir)
            out["warm_seconds"] = time.perf_counter() - started
            # The cache is memory-mapped: reading every byte once is part of what a trainer waits for.
            started = time.perf_counter()
            checksum = int(data.train.images.sum()) + int(data.test.images.sum())
            out["warm_read_seconds"] = time.perf_counter() - started
            out["pixel_sum"] = checksum
            out["images"] = len(data.train) + len(data.test)
            del data
        finally:
            if saved is None:
                os.environ.pop("LENET_CACHE", None)
            else:
                os.environ["LENET_CACHE"] = saved
    return out


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
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak / 2**20 if sys.platform == "darwin" else peak / 1024  # bytes on macOS, kilobytes on Linux


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
    if "throughput" in results:
        for key, rate in results["throughput"].items():
            label = key.replace("batch_", "batch ").replace("_augmented", ", augmented")
            row("throughput", f"best recipe, {label}", rate, "img/s", f">= {TARGETS['throughput']:,.0f}", rate >= TARGETS["throughput"])
    if "data" in results:
        d = results["data"]
        if "cold_seconds" in d:
            row("data", f"cold load (decode {d['images']:,} images, write cache)", d["cold_seconds"], "s")
        row("data", "warm load (from the tensor cache)", d["warm_seconds"], "s")
        row("data", "warm load, first read of every byte", d["warm_read_seconds"], "s")
    if "latency" in results:
        lat = results["latency"]
        row("latency", f"single image, median of {lat['runs']}", lat["median_ms"], "ms", f"< {TARGETS['latency_ms']:g} ms",
            lat["median_ms"] < TARGETS["latency_ms"])
        row("latency", "single image, 90th percentile", lat["p90_ms"], "ms")
    row("memory", "peak resident memory", results["memory"]["peak_rss_mb"], "MB")
    return rows


def _format_value(value, unit: str) -> str:
    if value is None:
        return "not reached"
    if unit == "img/s":
        return f"{value:,.0f} {unit}"
    if unit == "x":
        return f"{value:.1f}x"
    if unit == "%":
        return f"{value:.1f} %"
    if unit == "ms":
        return f"{value:.2f} ms"
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
