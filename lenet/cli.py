"""python -m lenet: train, evaluate, predict, info, download and bench from a terminal.

Errors a user can cause (missing data, a bad checkpoint, an unreadable image, a bad setting)
print one line and exit with status 2; they never end in a traceback.
"""

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

from .checkpoint import CheckpointError, default_checkpoint, load_model
from .data import CLASSES, DataError, default_data_dir, download_cifar10, load_cifar10
from .files import atomic_write
from .files import runs_dir as default_runs_dir
from .model import LeNet5, count_parameters, layer_summary
from .predict import ImageError, ModelError, classify
from .runs import FAILED, RunError, RunRegistry
from .train import PRESETS, ConfigError, TrainConfig, default_threads, preset

USER_ERRORS = (DataError, CheckpointError, ConfigError, RunError, ImageError, ModelError)


def max_threads() -> int:
    return 4 * default_threads()  # beyond a few per core torch only slows down (and 100,000 crashed it)


def add_train_options(parser: argparse.ArgumentParser) -> None:
    """One option per TrainConfig field, built from the field's own label, help, range and choices."""
    for option in TrainConfig.options():
        meta = option.metadata
        name = "--" + option.name.replace("_", "-")
        flags = [name] if meta["flag"] is None else [meta["flag"], name]
        help_text = meta["help"].replace("%", "%%")  # argparse formats help with %
        if option.type is bool:
            parser.add_argument(*flags, dest=option.name, action=argparse.BooleanOptionalAction, default=None, help=help_text)
        elif meta["choices"]:
            parser.add_argument(*flags, dest=option.name, choices=meta["choices"], default=None, help=help_text)
        else:
            bounds = f"{meta['low']:g} to {meta['high']:g}" if option.type is float else f"{meta['low']:,} to {meta['high']:,}"
            parser.add_argument(*flags, dest=option.name, type=option.type, default=None, help=f"{help_text} ({bounds})")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m lenet", description="LeNet-5 on CIFAR-10: train, evaluate and classify.")
    commands = parser.add_subparsers(dest="command", required=True)

    def data_option(p):
        p.add_argument("--data", type=Path, default=None, help="CIFAR-10 folder (default: $LENET_DATA, else ./data)")

    p = commands.add_parser("train", help="train LeNet-5 and write a run folder")
    data_option(p)
    p.add_argument("--preset", choices=list(PRESETS), default="walkthrough", help="recipe to start from (default: walkthrough)")
    add_train_options(p)
    p.add_argument("--threads", type=int, default=None, help=f"CPU threads, 1 to {max_threads()} (default: all cores)")
    p.add_argument("--out", type=Path, default=None, help="folder that receives the run folder (default: $LENET_RUNS, else ./runs)")
    p.add_argument("--resume", metavar="RUN_ID", help="go on with an interrupted or stopped run in --out (its own settings)")
    p.add_argument("--export", type=Path, help="also write the final checkpoint here, with a JSON model card beside it")

    p = commands.add_parser("evaluate", help="test accuracy overall and per class")
    data_option(p)
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped pretrained model")
    p.add_argument("--json", action="store_true", help="print one JSON object")

    p = commands.add_parser("predict", help="classify image files")
    p.add_argument("images", nargs="+", type=Path)
    p.add_argument("--checkpoint", type=Path, default=None, help="default: the shipped pretrained model")
    p.add_argument("--top", type=int, default=3, help="how many classes to show per image")
    p.add_argument("--json", action="store_true", help="print one JSON object per image, one per line")

    p = commands.add_parser("info", help="the model's layers and parameters")
    p.add_argument("--json", action="store_true")

    p = commands.add_parser("download", help="download CIFAR-10 through torchvision")
    data_option(p)

    from . import bench, export

    bench.add_arguments(commands.add_parser("bench", help="benchmark the trainer against the walkthrough's loop"))
    export.add_arguments(commands.add_parser("export", help="write a model as .pth (the walkthrough's Net), .onnx or .py (a script)"))
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return COMMANDS[args.command](args)
    except USER_ERRORS as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130


# -- train -----------------------------------------------------------------------------------------


def train_command(args) -> int:
    overrides = {option.name: getattr(args, option.name) for option in TrainConfig.options() if getattr(args, option.name) is not None}
    if args.threads is not None and not 1 <= args.threads <= max_threads():
        raise ConfigError(f"--threads must be from 1 to {max_threads()} (got {args.threads})")
    if args.resume is not None:
        if overrides or args.preset != "walkthrough":
            raise ConfigError("--resume goes on with the run's own settings: leave out --preset and the training options")
        config = None
    else:
        config = preset(args.preset, **overrides).validate()
    runs_dir = args.out or default_runs_dir()
    if args.export is not None and args.export.is_dir():
        raise ConfigError(f"--export {args.export} is a folder: give a file name, for example {args.export / 'model.pt'}")
    data_dir = args.data or default_data_dir()
    data = load_data(data_dir)  # before the run starts: a missing data folder fails here, with its message
    # Tiny batches gain nothing from a second thread, and lose badly when another process wants the cores.
    batch_size = (config or TrainConfig()).batch_size
    threads = args.threads or (1 if batch_size <= 16 else default_threads())
    registry = RunRegistry(runs_dir, lambda: data, threads=threads, data_source=data.source, data_dir=data_dir)
    run_id = registry.resume(args.resume) if args.resume is not None else registry.start(config)
    print(f"run {run_id}: {registry.runs_dir / run_id}", file=sys.stderr)
    printer = ProgressPrinter()
    try:
        while registry.is_training():
            printer.draw(registry.active())
            time.sleep(0.5)
    except KeyboardInterrupt:
        print("\nstopping (the last checkpoint is kept)...", file=sys.stderr)
        registry.stop(timeout=10)
    registry.wait()
    run = registry.snapshot(run_id)
    printer.draw(run)
    if sys.stderr.isatty():
        print(file=sys.stderr)
    if run.state == FAILED:
        raise RunError(f"run {run_id} failed: {run.error}")
    accuracy = f"{run.test_accuracy:.2%}" if run.test_accuracy is not None else "not measured"
    print(f"{run.state}: test accuracy {accuracy}, {run.progress.train_seconds:.1f} s of training; checkpoint {run.checkpoint}")
    if args.export and run.checkpoint:
        export(run, data, args.export)
    return 0


class ProgressPrinter:
    """One bar redrawn in place on a terminal; in a log (not a terminal), one line per test (each epoch's, and every
    test_every images)."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream
        self.tests_logged = 0

    def draw(self, run) -> None:
        progress = run.progress
        if not progress.total_steps:
            return
        width = 30
        filled = int(width * progress.fraction)
        loss = f"loss {run.steps[-1].loss:.3f}" if run.steps else ""
        measured = run.accuracies
        acc = f"test {measured[-1].test_accuracy:.1%}" if measured else ""
        line = (f"[{'#' * filled}{'.' * (width - filled)}] epoch {progress.epoch}/{progress.epochs} "
                f"step {progress.step}/{progress.total_steps} {loss} {acc} {progress.images_per_second:,.0f} img/s "
                f"{progress.seconds_left or 0:.0f} s left")
        if self.stream.isatty():
            print("\r" + line + " ", end="", file=self.stream, flush=True)
        elif len(measured) > self.tests_logged:
            self.tests_logged = len(measured)
            print(line, file=self.stream, flush=True)


class DecodingBar:
    """The first load of an image folder decodes every image: a bar redrawn in place on a terminal, one line in a log.
    Nothing is drawn when the tensor cache is fresh (nothing is decoded)."""

    def __init__(self, stream=sys.stderr):
        self.stream = stream

    def __call__(self, fraction: float, message: str) -> None:
        width, done = 30, fraction >= 1.0
        if self.stream.isatty():
            filled = int(width * fraction)
            print(f"\r[{'#' * filled}{'.' * (width - filled)}] {message} ", end="\n" if done else "", file=self.stream, flush=True)
        elif done:
            print(message, file=self.stream, flush=True)


def load_data(data_dir: Path):
    return load_cifar10(data_dir, progress=DecodingBar())


def export(run, data, path: Path) -> None:
    """The run's final checkpoint at path, and a model card (path with .json) measured on the test set."""
    import shutil

    from .evaluate import evaluate

    model, meta = load_model(run.checkpoint)
    result = evaluate(model, data.test, meta["normalization"])
    card = {
        "model": "LeNet-5 (walkthrough architecture)",
        "parameters": count_parameters(model),
        "test_accuracy": result.accuracy,
        "per_class_accuracy": result.per_class,
        "recipe": meta["recipe"],
        "epochs": meta["recipe"]["epochs"],
        "train_seconds": round(run.progress.train_seconds, 1),
        "images_per_second": round(run.progress.images_per_second),
        "machine": {"platform": platform.platform(), "processor": platform.machine(), "cpu_count": os.cpu_count(),
                    "device": run.progress.device, "threads": run.progress.threads},
        "data_source": data.source,
        "versions": meta["versions"],
        "command": "python -m lenet " + " ".join(sys.argv[1:]) if sys.argv[0].endswith("__main__.py") else None,
        "run_id": run.id,
    }
    atomic_write(path, lambda tmp: shutil.copyfile(run.checkpoint, tmp))
    atomic_write(path.with_suffix(".json"), lambda tmp: tmp.write_text(json.dumps(card, indent=2) + "\n"))
    print(f"exported {path} and {path.with_suffix('.json')}: test accuracy {result.accuracy:.2%}")


# -- evaluate, predict, info, download ---------------------------------------------------------


def evaluate_command(args) -> int:
    from .evaluate import evaluate

    checkpoint = args.checkpoint or default_checkpoint()
    model, meta = load_model(checkpoint)
    data = load_data(args.data or default_data_dir())
    result = evaluate(model, data.test, meta["normalization"])
    if args.json:
        print(json.dumps({"checkpoint": str(checkpoint), **result.to_dict()}))
        return 0
    print(f"Accuracy of the network on the {len(data.test):,} test images: {result.accuracy:.2%}  ({checkpoint})")
    for name, value in result.per_class.items():
        print(f"  {name:<11} {value:6.1%}")
    return 0


def predict_command(args) -> int:
    if not 1 <= args.top <= len(CLASSES):
        raise ConfigError(f"--top must be from 1 to {len(CLASSES)} (got {args.top})")
    checkpoint = args.checkpoint or default_checkpoint()
    model, meta = load_model(checkpoint)
    status = 0
    for path in args.images:
        try:
            prediction = classify(model, meta["normalization"], path, name=str(path))
        except ImageError as error:
            print(f"error: {error}", file=sys.stderr)
            status = 2
            continue
        top = prediction.top(args.top)
        if args.json:
            print(json.dumps({"image": str(path), "label": prediction.label, "confidence": prediction.confidence,
                              "unsure": prediction.unsure, "top": [{"class": c, "probability": p} for c, p in top]}))
        else:
            shown = ", ".join(f"{c} {p:.1%}" for c, p in top)
            print(f"{path}: {shown}{'  (unsure)' if prediction.unsure else ''}")
    return status


def info_command(args) -> int:
    layers = layer_summary()
    parameters = count_parameters(LeNet5())
    if args.json:
        print(json.dumps({"model": "LeNet-5", "parameters": parameters, "classes": list(CLASSES), "layers": layers,
                          "presets": {name: cfg.to_dict() for name, cfg in PRESETS.items()}}))
        return 0
    print(f"LeNet-5 for CIFAR-10: {parameters:,} parameters, classes {', '.join(CLASSES)}")
    for row in layers:
        shape = " x ".join(map(str, row["output_shape"]))
        print(f"  {row['layer']:<8} {row['operation']:<28} {shape:>12} {row['parameters']:>8,}")
    return 0


def download_command(args) -> int:
    data_dir = args.data or default_data_dir()
    download_cifar10(data_dir)  # torchvision draws its own progress bar
    data = load_data(data_dir)
    print(f"CIFAR-10 ready in {data_dir}: {len(data.train):,} training and {len(data.test):,} test images")
    return 0


def bench_command(args) -> int:
    from . import bench

    return bench.run(args)


def export_command(args) -> int:
    from . import export

    return export.run(args)


COMMANDS = {"export": export_command, "train": train_command,  # one handler per subcommand
            "evaluate": evaluate_command, "predict": predict_command, "info": info_command,
            "download": download_command, "bench": bench_command}

