"""Stress suite: issue #14's robustness claims, each checked end to end with real processes, servers and files.

From the repository root, with the real CIFAR-10 in LENET_DATA (else ../shared/cifar10-jpeg):

    python -m tests.stress            # the full run: 30 sessions x 64 MP photo x 15 reruns, a 35 s pause, ...
    python -m tests.stress --quick    # the CI version (tests/test_stress.py): fewer sessions, reruns and seconds

It prints one table, a row per case (case, expected, observed, pass/miss/skip), and exits 1 on any miss. Every case
goes through what a user touches: `python -m lenet` in a subprocess (its own peak RSS from the kernel's rusage of that
child, read by GNU time), a Streamlit server started with `make run`'s command line, and browser sessions played by
tools/wsload's protocol client. Every wait is bounded: a process that hangs is killed at its timeout, and the case is a
miss. A miss whose cause in the project is known says so after a dash.

The groups (--only takes their names), in the order the full run goes through them; --quick runs three lanes at once:

- memory       predict on a 64 MP image against a small photo; 48 MP and 200 MP phone JPEGs (EXIF orientation); a
               5,000-frame GIF; the upload corpus the unit tests build (tests/test_predict.py, test_memory_predict.py)
- checkpoints  answers that overflow (fc3 x 3e37, std 1e-300) refused at load, --json stays JSON; a deflated checkpoint
               that unpacks to 1 GB, meta-device and sparse tensors
- data         a crafted cifar-10-batches-py/data_batch_1 through the command line (the app's side: group app)
- cli          nonsensical options refused up front, one line, exit 2, no run folder left
- damaged      damaged run files: listed as damaged with the reason, every other run still listed, one line in the CLI
- small        FIFOs where a file is expected, 8 simultaneous starts, upload names with Markdown or NUL
- runs         a write failure mid-run ends it failed and the next Start works; a paused trainer keeps its run
- app          the server `make run` starts: listens on 127.0.0.1 only; a crafted data folder shows a message, runs nothing
- server       many sessions uploading large photos (memory peak and return); the damaged runs on the Train page; SIGKILL
               of the server and of the trainer at random moments by progress, no orphan process, resume through the CLI
               to the same final step

Generated inputs (large photos, the GIF, the compressed bomb) are cached in $TMPDIR/lenet-stress-corpus-<version>;
everything else lives in a temporary work folder, removed at the end unless --workdir names one.
"""

import argparse
import asyncio
import io
import json
import os
import random
import re
import shlex
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import threading
import time
import traceback
import urllib.request
import zipfile
import zlib
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from pathlib import Path

import numpy as np
from PIL import Image

REPO = Path(__file__).resolve().parents[1]
PYTHON = sys.executable
CORPUS_VERSION = 1  # bump when a generated input changes, so that stale cached files are not used
CORPUS = Path(tempfile.gettempdir()) / f"lenet-stress-corpus-{CORPUS_VERSION}"
MB = 2**20
# Environment variables of the project that would change what a case tests (a PIN hides the Start button).
PROJECT_VARIABLES = ("LENET_TEACHER_PIN", "LENET_RUNS", "LENET_CHECKPOINT")


# -- the table -----------------------------------------------------------------------------------------------


@dataclass
class Row:
    group: str
    case: str
    expected: str
    observed: str = ""
    result: str = "miss"  # pass, miss, or skip (the machine cannot do it: no chattr, a GPU present)
    seconds: float = 0.0
    order: int = 0  # the suite group's place: the table keeps their order when two lanes run at once

    def verdict(self, ok: bool, observed: str, cause: str = "") -> None:
        """ok decides pass or miss; on a miss, cause (what in the project makes it so) is added to what was seen."""
        self.result = "pass" if ok else "miss"
        self.observed = observed if ok or not cause else f"{observed} — {cause}"

    def skip(self, why: str) -> None:
        self.result, self.observed = "skip", why


class Table:
    def __init__(self, log: Callable[[str], None], errors_file: Path):
        self.rows: list[Row] = []
        self.lane = threading.local()  # which suite group this thread runs now (its `order`)
        self.log = log
        self.errors_file = errors_file
        self.lock = threading.Lock()

    @contextmanager
    def case(self, group: str, name: str, expected: str) -> Iterator[Row]:
        """One row: what runs inside the block decides it; an exception there is a miss that says what broke."""
        row, started = Row(group, name, expected, order=getattr(self.lane, "order", 0)), time.monotonic()
        try:
            yield row
        except Exception as error:  # noqa: BLE001 - the suite goes on; the row says what broke, the log has the traceback
            row.result = "miss"
            row.observed = (row.observed + "; " if row.observed else "") + f"the check stopped: {type(error).__name__}: {error}"[:400]
            with self.lock, open(self.errors_file, "a") as f:
                f.write(f"--- {group} / {name}\n{traceback.format_exc()}\n")
        finally:
            row.seconds = time.monotonic() - started
            row.observed = shorten(row.observed)
            with self.lock:
                self.rows.append(row)
            self.log(f"  [{row.result}] {name} ({row.seconds:.0f} s): {row.observed}")

    def misses(self) -> list[Row]:
        return [row for row in self.rows if row.result == "miss"]

    def markdown(self) -> str:
        lines = ["| case | expected | observed | result |", "|---|---|---|---|"]
        for row in sorted(self.rows, key=lambda r: r.order):
            cells = (row.case, row.expected, row.observed, f"**{row.result}**" if row.result == "miss" else row.result)
            lines.append("| " + " | ".join(_cell(c) for c in cells) + " |")
        return "\n".join(lines)


def _cell(text: str) -> str:
    return " ".join(str(text).split()).replace("|", "\\|")


# -- processes -----------------------------------------------------------------------------------------------


@dataclass
class Ran:
    """A finished subprocess: what it printed, how it ended, its peak memory (that child's own maximum RSS)."""

    command: list[str]
    returncode: int | None
    stdout: str
    stderr: str
    seconds: float
    peak_mb: float
    timed_out: bool

    def lines(self) -> list[str]:
        return [line for line in self.stderr.splitlines() if line.strip()]

    def errors(self) -> list[str]:
        return [line for line in self.lines() if line.startswith("error:")]

    def brief(self) -> str:
        """How it ended, in a few words, with its last stderr line (the message, where it says why, kept whole at the end)."""
        if self.timed_out:
            return f"still running after {self.seconds:.0f} s: killed"
        last = clip(self.lines()[-1].removeprefix("error: ")) if self.lines() else "nothing on stderr"
        return f"exit {self.returncode}, {len(self.lines())} line(s), {self.seconds:.0f} s: {last}"


def signed_mb(value: float) -> str:
    return f"{round(value) or 0:+,d} MB"


SHORT_NAMES: dict[str, Path] = {}  # long folders and the short names the table gives them (set by Stress)


def shorten(text: str) -> str:
    for short, path in SHORT_NAMES.items():
        text = text.replace(str(path), short)
    return text


def clip(text: str, length: int = 150) -> str:
    """At most `length` characters: the start and the end, which say what and why, around an ellipsis."""
    text = shorten(text)
    return text if len(text) <= length else text[: length // 3] + " … " + text[-(2 * length // 3):]


TIME = shutil.which("time", path="/usr/bin:/bin")  # GNU time: a child's own peak RSS


class Background:
    """A subprocess in its own process group (so a timeout kills its children too), its output in files.

    measure: run it under GNU time, whose %M is the child's own peak RSS. The rusage wait4 gives for a direct child
    would also count this process's RSS at the fork (the kernel keeps the larger of the two), and this one holds
    generated photos of hundreds of MB. Without GNU time, wait4's figure is used. A measured process's pid is time's.
    """

    def __init__(self, command: list[str], env: dict | None = None, cwd: Path = REPO, measure: bool = False):
        self.command = [str(part) for part in command]
        self.out, self.err = tempfile.TemporaryFile(), tempfile.TemporaryFile()
        self.memory = Path(tempfile.mktemp(prefix="lenet-stress-rss-")) if measure and TIME else None
        launched = [TIME, "-o", str(self.memory), "-f", "%M", *self.command] if self.memory else self.command
        self.started = time.monotonic()
        # Ctrl-C as a terminal would deliver it, however this suite was started: a shell's background job (`... &`,
        # nohup) ignores SIGINT, and children inherit that, so the cases' Ctrl-C would do nothing.
        self.process = subprocess.Popen(launched, stdin=subprocess.DEVNULL, stdout=self.out, stderr=self.err, cwd=cwd,
                                        env=env if env is not None else base_env(), start_new_session=True,
                                        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_DFL))
        self.pid = self.process.pid
        self.result: Ran | None = None

    def poll(self) -> Ran | None:
        """The result once the process has ended (reaped with wait4, which gives its peak memory), else None."""
        if self.result is None:
            pid, status, usage = os.wait4(self.pid, os.WNOHANG)
            if pid:
                self._finish(status, usage, timed_out=False)
        return self.result

    def wait(self, timeout: float) -> Ran:
        deadline = time.monotonic() + timeout
        while self.poll() is None:
            if time.monotonic() > deadline:
                self.kill_group()
                _, status, usage = os.wait4(self.pid, 0)
                self._finish(status, usage, timed_out=True)
                break
            time.sleep(0.05)
        return self.result

    def kill_group(self, sig: int = signal.SIGKILL) -> None:
        try:
            os.killpg(self.pid, sig)
        except ProcessLookupError:
            pass

    def _finish(self, status: int, usage, timed_out: bool) -> None:
        self.process.returncode = os.waitstatus_to_exitcode(status)  # reaped here: Popen must not wait for it again
        self.out.seek(0)
        self.err.seek(0)
        peak_kb = usage.ru_maxrss
        if self.memory is not None:
            try:  # the last line is %M; a killed command's file starts with "Command terminated by signal 9"
                peak_kb = int(self.memory.read_text().split()[-1])
            except (OSError, ValueError, IndexError):
                pass
            self.memory.unlink(missing_ok=True)
        self.result = Ran(self.command, None if timed_out else self.process.returncode, self.out.read().decode(errors="replace"),
                          self.err.read().decode(errors="replace"), time.monotonic() - self.started, peak_kb / 1024, timed_out)
        self.out.close()
        self.err.close()


def base_env(**extra) -> dict:
    env = {k: v for k, v in os.environ.items() if k not in PROJECT_VARIABLES}
    return {**env, "PYTHONUNBUFFERED": "1", **{k: str(v) for k, v in extra.items()}}


def lenet_command(*args) -> list[str]:
    return [PYTHON, "-m", "lenet", *map(str, args)]


def lenet(*args, timeout: float = 240, env: dict | None = None) -> Ran:
    """python -m lenet ..., as a user runs it, killed at the timeout."""
    return Background(lenet_command(*args), env=env, measure=True).wait(timeout)


def refused_in_one_line(ran: Ran, *fragments: str) -> tuple[bool, str]:
    """Exit 2, one line on stderr ("error: ..."), no traceback, naming each fragment."""
    ok = (not ran.timed_out and ran.returncode == 2 and len(ran.lines()) == 1 and ran.lines()[0].startswith("error:")
          and "Traceback" not in ran.stderr and all(f.lower() in ran.stderr.lower() for f in fragments))
    return ok, ran.brief()


def json_lines_valid(ran: Ran) -> bool:
    try:
        return all(isinstance(json.loads(line), dict) for line in ran.stdout.splitlines() if line.strip())
    except ValueError:
        return False


def alive(pid: int | None) -> bool:
    """A process that exists and is not a zombie (a zombie has ended; only its exit status is left)."""
    if not pid:
        return False
    try:
        state = next(line for line in Path(f"/proc/{pid}/status").read_text().splitlines() if line.startswith("State:"))
    except (OSError, StopIteration):
        return False
    return "zombie" not in state


def wait_for(predicate: Callable[[], object], timeout: float, every: float = 0.1):
    """predicate's first true value within timeout seconds, else None."""
    deadline = time.monotonic() + timeout
    while True:
        value = predicate()
        if value:
            return value
        if time.monotonic() > deadline:
            return None
        time.sleep(every)


def read_json(path: Path) -> dict:
    try:
        value = json.loads(path.read_text())
    except (OSError, ValueError):
        return {}
    return value if isinstance(value, dict) else {}


def slug(text: str) -> str:
    return re.sub(r"\W+", "-", text).strip("-")


def run_folders(runs_dir: Path) -> list[Path]:
    return sorted(p for p in runs_dir.iterdir() if p.is_dir()) if runs_dir.is_dir() else []


def progress_of(folder: Path) -> dict:
    return read_json(folder / "status.json").get("progress") or {}


def metrics_events(folder: Path) -> list[dict]:
    lines = (folder / "metrics.jsonl").read_text().split("\n")[:-1]  # after the last newline: a torn append, or nothing
    return [json.loads(line) for line in lines]


# -- generated inputs ----------------------------------------------------------------------------------------


def cached(name: str, make: Callable[[], bytes]) -> Path:
    """A generated file in the corpus cache, made once (written whole, then renamed: a concurrent run never sees half)."""
    path = CORPUS / name
    if not path.is_file():
        path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(f".{path.name}.{os.getpid()}-{threading.get_ident()}")
        tmp.write_bytes(make())
        tmp.replace(path)
    return path


def phone_jpeg(width: int, height: int, orientation: int, quality: int, texture: int) -> bytes:
    """A phone-like photo: a colour gradient with fine texture (so it weighs what a photo weighs), EXIF orientation."""
    gray = Image.linear_gradient("L").resize((width, height))
    image = Image.merge("RGB", (gray, gray.transpose(Image.Transpose.ROTATE_180), gray.transpose(Image.Transpose.FLIP_LEFT_RIGHT)))
    tile = Image.fromarray(np.random.default_rng(width).integers(0, texture, (512, 512, 3), dtype=np.uint8))
    grain = Image.new("RGB", (width, height))
    for top in range(0, height, 512):
        for left in range(0, width, 512):
            grain.paste(tile, (left, top))
    from PIL import ImageChops

    image = ImageChops.add(image, grain)
    del grain
    exif = Image.Exif()
    exif[0x0112] = orientation  # Orientation: 6 is "turn 90 degrees clockwise to view", 8 counter-clockwise
    exif[0x010F], exif[0x0110] = "StressPhone", f"{width * height / 1e6:.0f} MP"
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=quality, exif=exif.tobytes())
    return buffer.getvalue()


def small_photo() -> bytes:
    image = Image.fromarray(np.random.default_rng(7).integers(0, 256, (48, 64, 3), dtype=np.uint8)).resize((640, 480))
    buffer = io.BytesIO()
    image.save(buffer, "JPEG", quality=90)
    return buffer.getvalue()


def with_comment(jpeg: bytes, text: str) -> bytes:
    """The same JPEG with a COM segment after its SOI: other bytes (another upload to the server), the same pixels."""
    comment = text.encode()
    return jpeg[:2] + b"\xff\xfe" + struct.pack(">H", len(comment) + 2) + comment + jpeg[2:]


def with_png_text(png: bytes, text: str) -> bytes:
    """The same PNG with a tEXt chunk before IEND (its last 12 bytes)."""
    data = b"Comment\0" + text.encode()
    chunk = struct.pack(">I", len(data)) + b"tEXt" + data + struct.pack(">I", zlib.crc32(b"tEXt" + data))
    return png[:-12] + chunk + png[-12:]


def many_frame_gif(frames: int = 5000, size: tuple[int, int] = (320, 240)) -> bytes:
    """An animated GIF of `frames` frames: the first red, every other one blue with a moving square.

    Written block by block (PIL takes 20 s to save 5,000 frames): PIL encodes one frame's LZW data once, and every
    frame is a graphic control extension, an image descriptor with its own 4-colour table, and that data.
    """
    width, height = size
    picture = Image.new("P", size, 0)
    picture.paste(1, (width // 3, height // 3, 2 * width // 3, 2 * height // 3))
    picture.putpalette([0, 0, 0] * 4)
    buffer = io.BytesIO()
    picture.save(buffer, "GIF")
    lzw = _gif_image_data(buffer.getvalue())
    out = bytearray(b"GIF89a" + struct.pack("<HHBBB", width, height, 0x01, 0, 0))  # no global colour table
    out += b"\x21\xff\x0bNETSCAPE2.0\x03\x01\x00\x00\x00"  # loop forever
    for index in range(frames):
        if index == 0:
            colours = [(220, 30, 30), (250, 220, 40), (0, 0, 0), (0, 0, 0)]
        else:
            colours = [(30, 30, 200), (index % 256, 200, 40), (0, 0, 0), (0, 0, 0)]
        out += b"\x21\xf9\x04\x04" + struct.pack("<H", 2) + b"\x00\x00"  # 20 ms a frame, keep the previous one
        out += b"\x2c" + struct.pack("<HHHHB", 0, 0, width, height, 0x81)  # a local table of 4 colours
        out += bytes(c for colour in colours for c in colour) + lzw
    return bytes(out + b"\x3b")


def _gif_image_data(gif: bytes) -> bytes:
    """The LZW minimum code size and data sub-blocks of a single-frame GIF's image (through its block terminator)."""
    position = 13
    flags = gif[10]
    if flags & 0x80:
        position += 3 * 2 ** ((flags & 7) + 1)
    while gif[position] == 0x21:  # extensions: label, then sub-blocks until a zero length
        position += 2
        while gif[position]:
            position += gif[position] + 1
        position += 1
    assert gif[position] == 0x2C, "no image descriptor"
    packed = gif[position + 9]
    position += 10 + (3 * 2 ** ((packed & 7) + 1) if packed & 0x80 else 0)
    start = position
    position += 1  # LZW minimum code size
    while gif[position]:
        position += gif[position] + 1
    return gif[start:position + 1]


def deflate_bomb() -> bytes:
    """A LeNet-5 state_dict whose fc1.weight is a 120 x 400 view of a 1 GB storage of zeros (torch.save writes the whole
    storage), re-zipped with deflate: about a megabyte that unpacks to a gigabyte."""
    import torch

    from lenet.model import LeNet5

    state = LeNet5().state_dict()
    storage = torch.zeros(2**28)
    state["fc1.weight"] = storage[: 120 * 400].view(120, 400)
    out = io.BytesIO()
    with tempfile.TemporaryDirectory(prefix="lenet-stress-bomb-") as tmp:
        plain = Path(tmp) / "plain.pt"
        torch.save(state, plain)
        del storage, state
        with zipfile.ZipFile(plain) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED, compresslevel=6) as target:
            for info in source.infolist():
                with source.open(info) as reader, target.open(info.filename, "w") as writer:
                    shutil.copyfileobj(reader, writer, 16 * MB)
    return out.getvalue()


def upload_corpus() -> list[Path]:
    """The files the unit tests feed lenet.predict (tests/test_predict.py, tests/test_memory_predict.py), as files:
    every format, non-images, empty, truncated and damaged files, pixel bombs, a file over the upload limit, odd
    colour modes, a 108-megapixel photo."""
    import random as stdlib_random

    from tests.test_memory_predict import claiming, large_jpeg
    from tests.test_predict import bilevel_png, encode, gradient16, noise

    red_blue = Image.new("RGB", (40, 30), (255, 0, 0))
    red_blue.paste((0, 0, 255), (20, 0, 40, 30))
    files: dict[str, Callable[[], bytes]] = {
        f"format.{ext}": (lambda fmt=fmt, params=params: encode(red_blue, fmt, **params))
        for ext, fmt, params in [("jpg", "JPEG", {"quality": 95}), ("png", "PNG", {}), ("webp", "WEBP", {"lossless": True}),
                                 ("bmp", "BMP", {}), ("gif", "GIF", {}), ("tiff", "TIFF", {}), ("ppm", "PPM", {})]
    }
    files.update({
        "notes.txt": lambda: b"Remember to buy milk.\n",
        "page.html": lambda: b"<!doctype html><html><body><img src='cat.jpg'></body></html>",
        "drawing.svg": lambda: b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>',
        "paper.pdf": lambda: b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n",
        "random.jpg": lambda: bytes(stdlib_random.Random(0).randrange(256) for _ in range(5000)),
        "archive.png": lambda: zlib.compress(b"not a png" * 100),
        "figure.eps": lambda: b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n",
        "empty.jpg": lambda: b"",
        "broken.png": lambda: _flip_middle_byte(encode(noise(), "PNG")),
        "bomb-gigapixel.png": lambda: bilevel_png(100_000, 100_000, zlib.compress(bytes(1000))),
        "bomb-9000x8000.png": lambda: bilevel_png(9000, 8000, zlib.compress(bytes(8000 * (1 + 9000 // 8)), 9)),
        "claims-15000x15000.jpg": lambda: claiming(encode(Image.new("RGB", (16, 16)), "JPEG"), 15000, 15000),
        "progressive-9000x8000.jpg": lambda: claiming(encode(Image.new("RGB", (16, 16)), "JPEG", progressive=True), 9000, 8000),
        "big.webp": lambda: encode(Image.new("RGB", (4100, 4000), (10, 200, 30)), "WEBP", quality=50),
        "over-the-limit.jpg": lambda: bytes(20 * MB + 1),
        "gradient-16bit.png": lambda: encode(Image.fromarray(gradient16()), "PNG"),
        "palette-transparent.png": lambda: _palette_png(encode),
        "cmyk.jpg": lambda: encode(Image.new("CMYK", (40, 30), (0, 255, 255, 0)), "JPEG"),
        "gray-alpha.png": lambda: encode(Image.new("LA", (40, 30), (90, 128)), "PNG"),
        "one-pixel.png": lambda: encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"),
        "phone-108mp.jpg": lambda: large_jpeg(12000, 9000),
    })
    for fmt in ("JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"):
        files[f"cut.{fmt.lower()}"] = lambda fmt=fmt: (lambda data: data[: len(data) // 2])(encode(noise((120, 90)), fmt))
    rng = stdlib_random.Random(1)
    for seed, fmt in enumerate(["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"]):
        for copy in range(4):
            damaged = bytearray(encode(noise((24, 16), seed), fmt))
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            damaged = damaged[: rng.randint(1, len(damaged))] if rng.random() < 0.3 else damaged
            files[f"damaged-{fmt.lower()}-{copy}.{fmt.lower()}"] = lambda data=bytes(damaged): data
    return [cached(f"uploads/{name}", make) for name, make in files.items()]


def _flip_middle_byte(data: bytes) -> bytes:
    damaged = bytearray(data)
    damaged[len(damaged) // 2] ^= 0xFF
    return bytes(damaged)


def _palette_png(encode) -> bytes:
    palette = Image.new("P", (3000, 2000), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (1500, 0, 3000, 2000))
    return encode(palette, "PNG", transparency=0)


# -- the suite's state ---------------------------------------------------------------------------------------


class Stress:
    """What the cases share: the table, the mode, the folders, the random moments, the shipped model."""

    def __init__(self, quick: bool, workdir: Path, data_dir: Path, seed: int, log: Callable[[str], None]):
        self.quick, self.workdir, self.data_dir, self.log = quick, workdir, data_dir, log
        self.table = Table(log, workdir / "stress-errors.log")
        SHORT_NAMES.update({"<work>": workdir, "<corpus>": CORPUS})
        self.rng = random.Random(seed)
        self.seed = seed
        self.predict_runs: list[Ran] = []  # every `predict --json`, for the valid-JSON row
        self._template: Path | None = None
        self.shared = threading.Lock()  # two lanes may ask for the template run or the crafted data at once
        self.crafted: Path | None = None  # the data folder with a crafted data_batch_1 (group data, then app)
        self.damaged_runs: Path | None = None  # runs with damaged files (group damaged), copied into the server's runs folder
        from lenet.checkpoint import default_checkpoint

        self.shipped = default_checkpoint()
        self.small = cached("small.jpg", small_photo)

    def folder(self, name: str) -> Path:
        path = self.workdir / name
        path.mkdir(parents=True, exist_ok=True)
        return path

    def predict(self, *images: Path, checkpoint: Path | None = None, timeout: float = 240) -> Ran:
        ran = lenet("predict", "--json", *images, "--checkpoint", checkpoint or self.shipped, timeout=timeout)
        self.predict_runs.append(ran)
        return ran

    def template_run(self) -> Path:
        """A real finished run of 2 epochs, made by the command line once: the model for damaged copies."""
        with self.shared:
            return self._make_template()

    def _make_template(self) -> Path:
        if self._template is None:
            runs = self.folder("template-runs")
            ran = lenet("train", "--data", self.data_dir, "--preset", "quick", "--subset", 512, "--epochs", 2, "--threads", 1,
                        "--out", runs)
            folders = run_folders(runs)
            if ran.returncode != 0 or len(folders) != 1:
                raise RuntimeError(f"the template run failed: {ran.brief()}")
            self._template = folders[0]
        return self._template

    def copy_run(self, runs_dir: Path, name: str) -> Path:
        target = runs_dir / name
        shutil.copytree(self.template_run(), target, ignore=shutil.ignore_patterns(".lock"))
        return target


# -- memory --------------------------------------------------------------------------------------------------


def memory_group(s: Stress) -> None:
    from lenet.predict import load_image
    from tests.test_memory_predict import rgba_png

    base = s.predict(s.small)
    if base.returncode != 0:
        raise RuntimeError(f"predict on a small photo failed: {base.brief()}")
    s.log(f"  small photo: peak {base.peak_mb:.0f} MB, {base.seconds:.1f} s")

    with s.table.case("memory", "predict: a 64 MP image", "peak RSS of `python -m lenet predict` at most 300 MB above a small "
                      "photo's, for the worst 64 MP format (RGBA PNG) and a 64 MP JPEG; both classified") as row:
        png = s.predict(cached("poster-64mp.png", lambda: rgba_png(8000, 8000)))
        jpeg = s.predict(cached("phone-64mp.jpg", lambda: phone_jpeg(9238, 6928, 6, 80, 16)))
        above = {"PNG": png.peak_mb - base.peak_mb, "JPEG": jpeg.peak_mb - base.peak_mb}
        ok = all(r.returncode == 0 and len(r.stdout.splitlines()) == 1 for r in (png, jpeg)) and max(above.values()) <= 300
        row.verdict(ok, f"8000 x 8000 RGBA PNG {signed_mb(above['PNG'])} ({png.seconds:.0f} s), 9238 x 6928 JPEG "
                        f"{signed_mb(above['JPEG'])} ({jpeg.seconds:.0f} s) above the small photo's {base.peak_mb:,.0f} MB"
                    + ("" if png.returncode == 0 and jpeg.returncode == 0 else f"; {png.brief()}; {jpeg.brief()}"))

    for megapixels, size, orientation, quality, texture in [(48, (8000, 6000), 6, 80, 24), (200, (16320, 12240), 8, 75, 16)]:
        with s.table.case("memory", f"predict: a {megapixels} MP phone JPEG", "classified (exit 0, one JSON line), turned "
                          "upright by its EXIF orientation, at most 300 MB above the small photo") as row:
            path = cached(f"phone-{megapixels}mp.jpg", lambda size=size, o=orientation, q=quality, t=texture: phone_jpeg(*size, o, q, t))
            ran = s.predict(path)
            upright = load_image(path).size  # the display image: portrait once turned
            answer = json.loads(ran.stdout.splitlines()[0]) if ran.returncode == 0 and ran.stdout.strip() else {}
            ok = ran.returncode == 0 and answer.get("label") and upright[1] > upright[0] and ran.peak_mb - base.peak_mb <= 300
            row.verdict(ok, f"{size[0]} x {size[1]}, {path.stat().st_size / MB:.1f} MB, orientation {orientation}: "
                            f"{answer.get('label', ran.brief())}, shown {upright[0]} x {upright[1]}, "
                            f"{signed_mb(ran.peak_mb - base.peak_mb)}, {ran.seconds:.0f} s")

    with s.table.case("memory", "predict: a 5,000-frame GIF", "classified from its first frame, at most 100 MB and 15 s "
                      "more than the small photo") as row:
        path = cached("frames-5000.gif", many_frame_gif)
        frames = Image.open(path).n_frames
        ran = s.predict(path)
        first = load_image(path).getpixel((2, 2))  # the first frame's red, not a later frame's blue
        ok = (ran.returncode == 0 and frames == 5000 and first == (220, 30, 30) and ran.peak_mb - base.peak_mb <= 100
              and ran.seconds - base.seconds <= 15)
        row.verdict(ok, f"{frames:,} frames ({path.stat().st_size / MB:.1f} MB): exit {ran.returncode}, first frame's pixel "
                        f"{first}, {signed_mb(ran.peak_mb - base.peak_mb)}, {ran.seconds:.1f} s (small photo {base.seconds:.1f} s)")

    with s.table.case("memory", "predict: the upload corpus", "every file gives one JSON line or one `error:` line naming it; "
                      "no traceback; exit 2; at most 300 MB above the small photo; under 3 minutes") as row:
        corpus = upload_corpus()
        ran = s.predict(*corpus, timeout=300)
        answered = {json.loads(line)["image"] for line in ran.stdout.splitlines() if line.strip()} if json_lines_valid(ran) else set()
        refused = ran.errors()
        unaccounted = [p.name for p in corpus if (str(p) in answered) == any(f"`{p}`" in line for line in refused)]
        ok = (not ran.timed_out and ran.returncode == 2 and "Traceback" not in ran.stderr and not unaccounted
              and len(answered) + len(refused) == len(corpus) == len(ran.lines()) + len(answered) and ran.peak_mb - base.peak_mb <= 300
              and ran.seconds < 180)
        row.verdict(ok, f"{len(corpus)} files: {len(answered)} classified, {len(refused)} refused in one line each, "
                        f"{len(unaccounted)} unaccounted {unaccounted[:5]}; exit {ran.returncode}, "
                        f"{signed_mb(ran.peak_mb - base.peak_mb)}, {ran.seconds:.0f} s")


# -- only finite answers; checkpoints bounded after decompression ---------------------------------------------


def finite_group(s: Stress) -> None:
    import torch

    from lenet.checkpoint import FORMAT, load_checkpoint, save_checkpoint
    from lenet.data import CLASSES, WALKTHROUGH_NORMALIZATION

    entry = load_checkpoint(s.shipped)
    folder = s.folder("checkpoints")
    huge, tiny = folder / "fc3-times-3e37.pt", folder / "std-1e-300.pt"
    state = dict(entry["model"])
    state["fc3.weight"] = state["fc3.weight"] * 3e37  # every weight still a finite float32
    save_checkpoint(huge, state, {"normalization": entry["meta"]["normalization"]})
    save_checkpoint(tiny, entry["model"], {"normalization": {"mean": [0.5] * 3, "std": [1e-300] * 3}})
    for name, path in [("fc3 weights x 3e37", huge), ("normalization std 1e-300", tiny)]:
        with s.table.case("finite", f"checkpoint: {name}", "refused at load by predict (and evaluate, full run): exit 2, one line "
                          "saying the answers are not finite; predict --json's stdout stays JSON") as row:
            predicted = s.predict(s.small, checkpoint=path)
            checks = [refused_in_one_line(predicted, "not finite")]
            if not s.quick:
                checks.append(refused_in_one_line(lenet("evaluate", "--checkpoint", path, "--data", s.data_dir), "not finite"))
            row.verdict(all(ok for ok, _ in checks) and json_lines_valid(predicted),
                        f"predict: {checks[0][1]}" + (f"; evaluate: {checks[1][1].split(': ', 1)[0]}" if len(checks) > 1 else ""))

    with s.table.case("bounded", "checkpoint: 1 MB deflated, unpacking to 1 GB", "refused before anything is unpacked: exit 2, "
                      "one line; peak RSS at most 150 MB above predicting with the shipped model (unpacked, it would be "
                      "1,000 more)") as row:
        bomb = cached("bomb-1gb.pt", deflate_bomb)
        with zipfile.ZipFile(bomb) as archive:
            unpacked = sum(info.file_size for info in archive.infolist())
        base = s.predict(s.small)
        ran = s.predict(s.small, checkpoint=bomb)
        ok, seen = refused_in_one_line(ran, "unpacks to")
        # Two processes' peaks differ by up to about 100 MB with nothing unpacked: how much of torch's shared libraries
        # each maps depends on the page cache (the kernel maps cached pages around each fault). CI saw 640 against 549.
        row.verdict(ok and ran.peak_mb - base.peak_mb <= 150,
                    f"{bomb.stat().st_size / MB:.2f} MB file of {unpacked / MB:,.0f} MB unpacked: {seen}; peak {ran.peak_mb:.0f} MB "
                    f"(shipped model {base.peak_mb:.0f} MB)")

    def torch_file(name: str, change) -> Path:
        weights = dict(entry["model"])
        change(weights)
        path = folder / name
        torch.save({"format": FORMAT, "model": weights, "meta": {"classes": list(CLASSES), "normalization": WALKTHROUGH_NORMALIZATION}},
                   path)
        return path

    for name, change, fragment in [
        ("meta-device", lambda w: w.update({"conv1.weight": torch.empty(6, 3, 5, 5, device="meta")}), "meta device"),
        ("sparse", lambda w: w.update({"fc1.weight": w["fc1.weight"].to_sparse()}), "sparse"),
    ]:
        with s.table.case("bounded", f"checkpoint: {name} tensor", "refused in one line naming the layer, exit 2") as row:
            ran = s.predict(s.small, checkpoint=torch_file(f"{name}.pt", change))
            ok, seen = refused_in_one_line(ran, fragment)
            row.verdict(ok, seen)

    with s.table.case("finite", "predict --json: always JSON", "every stdout line of every `predict --json` above parses as a "
                      "JSON object") as row:
        bad = [r.command[-1] for r in s.predict_runs if not json_lines_valid(r)]
        lines = sum(len(r.stdout.splitlines()) for r in s.predict_runs)
        row.verdict(not bad, f"{len(s.predict_runs)} runs, {lines} lines, {len(bad)} not JSON {bad[:3]}")


# -- data files never execute (the command line; the app is in app_group) ------------------------------------


def data_group(s: Stress) -> None:
    crafted, marker = make_crafted_data(s)
    env = base_env(LENET_CACHE=s.workdir / "cache")
    with s.table.case("data", "crafted data_batch_1: the command line", "evaluate and train refuse it in one line naming "
                      "data_batch_1, exit 2; the marker file is never created; no run folder") as row:
        runs = s.folder("crafted-runs")
        evaluated = lenet("evaluate", "--data", crafted, "--checkpoint", s.shipped, env=env)
        trained = lenet("train", "--data", crafted, "--epochs", 1, "--out", runs, env=env)
        checks = [refused_in_one_line(r, "data_batch_1", "refused") for r in (evaluated, trained)]
        ok = all(c[0] for c in checks) and not marker.exists() and not run_folders(runs)
        row.verdict(ok, f"evaluate: {checks[0][1]}; train: exit {trained.returncode}, {len(trained.lines())} line(s); "
                        f"marker {'CREATED' if marker.exists() else 'absent'}; {len(run_folders(runs))} run folders")


# -- command-line gaps ---------------------------------------------------------------------------------------


def cli_group(s: Stress) -> None:
    import torch

    root = s.folder("cli")
    fifo = root / "model.pt"
    os.mkfifo(fifo)
    outside = root / "outside" / "r1"
    shutil.copytree(s.template_run(), outside, ignore=shutil.ignore_patterns(".lock"))
    long_name = "o" * 300
    cases = [
        ("--threads -1", ["train", "--threads", "-1"], ["--threads must be from 1"]),
        ("--threads 100000", ["train", "--threads", "100000"], ["--threads must be from 1"]),
        ("--threads 0", ["train", "--threads", "0"], ["--threads must be from 1"]),
        ("--device cuda without a GPU", ["train", "--device", "cuda"], ["cuda"]),
        ("--out with a 300-character name", ["train", "--preset", "quick", "--subset", "256", "--epochs", "1", "--out", long_name],
         ["name too long"]),
        ("--export to a directory", ["train", "--export", "{out}"], ["is a folder"]),
        ('--resume ""', ["train", "--resume", ""], ["not a run id"]),
        ("--resume X --epochs 2", ["train", "--resume", "X", "--epochs", "2"], ["--resume goes on with the run's own settings"]),
        ("--resume ../outside/r1", ["train", "--resume", "../outside/r1"], ["not a run id"]),
        ("predict --top 0", ["predict", "--top", "0", s.small], ["--top must be from 1 to 10"]),
        ("predict --top -1", ["predict", "--top", "-1", s.small], ["--top must be from 1 to 10"]),
        ("--checkpoint is a directory", ["predict", "--checkpoint", root, s.small], [str(root)]),
        ("--checkpoint is a FIFO", ["predict", "--checkpoint", fifo, s.small], [str(fifo)]),
        ("evaluate --checkpoint is a FIFO", ["evaluate", "--checkpoint", fifo, "--data", s.data_dir], [str(fifo)]),
    ]

    def one(case):
        name, args, fragments = case
        out = root / slug(name)
        out.mkdir()
        args = [str(a).replace("{out}", str(out)) for a in args]
        if args[0] == "train":
            args = ["train", "--data", s.data_dir, *args[1:]]
            if "--out" in args:  # the 300-character name goes inside this case's own folder
                index = args.index("--out") + 1
                args[index] = str(out / args[index])
            else:
                args += ["--out", str(out)]
        return name, fragments, out, Background(lenet_command(*args)).wait(90)

    # A few at a time: each loads torch, and the machine may have two cores.
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(one, cases))
    for name, fragments, out, ran in results:
        with s.table.case("cli", f"CLI: {name}", "refused up front: exit 2, one line, no run folder left, never hangs") as row:
            if name.startswith("--device cuda") and torch.cuda.is_available():
                row.skip("this machine has a GPU")
                continue
            ok, seen = refused_in_one_line(ran, *fragments)
            left = [p.name[:40] for p in out.rglob("*") if p.is_dir()]
            row.verdict(ok and not left, seen + (f"; left behind: {left}" if left else ""))


# -- damaged run files ---------------------------------------------------------------------------------------

MEMORY_CAUSE = (
    "what held memory before (README, Stress suite): script runs' reference cycles (runner.postScriptGC is off), "
    "closed sessions Streamlit forgets without shutting down (their uploads), a server-wide photo cache thrashed by the "
    "sessions, one malloc arena per script thread; see pages/_resources.memory_sweeper, whose fixes these were")
FIFO_HANG = ("lenet/runs.py read_json() reads status.json with Path.read_text(), and opening a FIFO for reading blocks until "
             "a writer comes: list_runs() and resume never return")


def damaged_group(s: Stress) -> None:
    from lenet.runs import DAMAGED, FINISHED, RunRegistry

    runs = s.folder("damaged-runs")
    good = [s.copy_run(runs, s.template_run().name).name, s.copy_run(runs, "20000101-000000-good").name]

    def edit_status(change):
        def edit(folder: Path) -> None:
            status = json.loads((folder / "status.json").read_text())
            (folder / "status.json").write_text(change(status))
        return edit

    def garble_metrics(folder: Path) -> None:
        first, rest = (folder / "metrics.jsonl").read_text().split("\n", 1)
        (folder / "metrics.jsonl").write_text(first + "\n{oops, not json\n" + rest)

    variants = {
        "status.json without test accuracy, two epochs logged": (
            "20000101-000001-no-accuracy", edit_status(lambda st: json.dumps({k: v for k, v in st.items() if k != "test_accuracy"}))),
        "one Infinity in status.json": (
            "20000101-000002-infinity", edit_status(lambda st: json.dumps({**st, "test_accuracy": float("inf")}))),
        "garbage in metrics.jsonl": ("20000101-000003-garbage-metrics", garble_metrics),
        "garbage in config.json": ("20000101-000004-garbage-config",
                                   lambda folder: (folder / "config.json").write_bytes(b"\x00\xff{garbage")),
    }
    for name, edit in variants.values():
        edit(s.copy_run(runs, name))
    s.damaged_runs = runs
    epochs_logged = sum(e["event"] == "epoch" for e in metrics_events(runs / variants[next(iter(variants))][0]))

    registry = RunRegistry(runs, lambda: None)
    full = {r.id: r for r in registry.list_runs(metrics=True)}
    light = {r.id: r for r in registry.list_runs()}
    for case, (name, _edit) in variants.items():
        lenient = case.startswith("status.json without")
        expected = ("listed: finished with no accuracy, or damaged with the reason; every other run still listed" if lenient else
                    "listed as damaged with the reason (full listing and the run's own view); every other run still listed")
        with s.table.case("damaged", f"damaged run: {case}", expected) as row:
            others = all(other in full and full[other].state == FINISHED for other in good)
            run = full.get(name)
            try:
                own = registry.snapshot(name)
                listed_error = full[name].error if name in full else None
                own_view = own.state if own.error == listed_error else f"{own.state} ({clip(own.error or '', 100)})"
            except Exception as error:  # noqa: BLE001 - the run's own view failed: said in the row
                own, own_view = None, clip(f"{type(error).__name__}: {error}", 100)
            if run is None:
                seen = "not listed at all"
                ok = False
            else:
                seen = f"listed {run.state}" + (f" ({clip(run.error, 110)})" if run.error else "") + f", light listing {light[name].state}"
                reason = run.state == DAMAGED and bool(run.error) and own is not None and own.state == DAMAGED
                ok = (run.state == FINISHED and run.test_accuracy is None) or reason if lenient else reason
            cause = ("lenet/runs.py list_runs() skips a folder whose config.json cannot be read (_read raises RunError, "
                     "caught by `except RunError: continue`), so the run vanishes instead of showing as damaged"
                     if run is None and "config" in case else "")
            if lenient:
                seen += f"; {epochs_logged} epochs logged"
            row.verdict(ok and others, f"{seen}; its own view: {own_view}; the {len(good)} good runs "
                                       f"{'listed' if others else 'NOT all listed'}", cause)

    with s.table.case("damaged", "damaged runs: the command line", "`train --resume` on each says why in one line, exit 2") as row:
        with ThreadPoolExecutor(max_workers=3) as pool:
            ran = list(pool.map(lambda name: lenet("train", "--resume", name, "--out", runs, "--data", s.data_dir, timeout=120),
                                [name for name, _ in variants.values()]))
        checks = [refused_in_one_line(r) for r in ran]
        row.verdict(all(ok for ok, _ in checks), "; ".join(clip(r.lines()[0].removeprefix("error: "), 90) if r.lines() else r.brief()
                                                       for r in ran))


# -- smaller cases -------------------------------------------------------------------------------------------


def small_group(s: Stress) -> None:
    with s.table.case("small", "FIFO named x.png in the data folder", "skipped, not waited on: evaluate on that image folder "
                      "answers (exit 0) within 90 s") as row:
        from lenet.data import CLASSES

        tree = s.folder("fifo-data")
        rng = np.random.default_rng(3)
        for split in ("train", "test"):
            for name in CLASSES:
                (tree / split / name).mkdir(parents=True)
                for index in range(3):
                    Image.fromarray(rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)).save(tree / split / name / f"{index}.png")
        os.mkfifo(tree / "train" / "cat" / "x.png")
        os.mkfifo(tree / "test" / "dog" / "y.png")
        ran = lenet("evaluate", "--data", tree, "--checkpoint", s.shipped, "--json", timeout=90,
                    env=base_env(LENET_CACHE=s.workdir / "cache"))
        answer = json.loads(ran.stdout) if ran.returncode == 0 and json_lines_valid(ran) and ran.stdout.strip() else {}
        row.verdict(ran.returncode == 0 and "accuracy" in answer,
                    f"{ran.brief()}; accuracy on the 30 test images {answer.get('accuracy', float('nan')):.0%}")

    with s.table.case("small", "FIFO in place of status.json", "never hangs: the runs listing answers within 20 s and lists the "
                      "other run; `train --resume` on it says why in one line within 45 s") as row:
        runs = s.folder("fifo-runs")
        s.copy_run(runs, "20000101-000000-good")
        fifo_run = s.copy_run(runs, "20000101-000001-fifo-status")
        (fifo_run / "status.json").unlink()
        os.mkfifo(fifo_run / "status.json")
        # Both at once: a hang costs the suite one timeout, not two.
        listing = Background([PYTHON, "-c", "import sys; from lenet.runs import RunRegistry; "
                              "print([(r.id, r.state) for r in RunRegistry(sys.argv[1], lambda: None).list_runs()])", runs])
        resuming = Background(lenet_command("train", "--resume", fifo_run.name, "--out", runs, "--data", s.data_dir))
        listed = listing.wait(20)
        resumed = resuming.wait(max(1.0, 45 - (time.monotonic() - resuming.started)))
        ok_resume, seen_resume = refused_in_one_line(resumed)
        ok = listed.returncode == 0 and "20000101-000000-good" in listed.stdout and ok_resume
        hung = listed.timed_out or resumed.timed_out
        row.verdict(ok, f"listing: {listed.brief() if listed.returncode != 0 else listed.stdout.strip()[:160]}; resume: {seen_resume}",
                    FIFO_HANG if hung else "")

    count = 4 if s.quick else 8
    with s.table.case("small", f"{count} simultaneous starts", f"{count} `python -m lenet train` started at once: every one "
                      "finishes (exit 0) in its own run folder; no two share a run id") as row:
        runs = s.folder("simultaneous")
        started = [Background(lenet_command("train", "--data", s.data_dir, "--preset", "quick", "--subset", 256, "--epochs", 1,
                                            "--threads", 1, "--out", runs)) for _ in range(count)]
        ran = [b.wait(420) for b in started]
        ids = [m.group(1) for r in ran for m in [re.search(r"^run (\S+):", r.stderr, re.MULTILINE)] if m]
        finished = [f for f in run_folders(runs) if read_json(f / "status.json").get("state") == "finished"]
        seconds = {i.rsplit("-quick", 1)[0] for i in ids}
        ok = all(r.returncode == 0 for r in ran) and len(set(ids)) == count and len(finished) == count
        row.verdict(ok, f"exit codes {sorted(r.returncode for r in ran)}; {len(set(ids))} distinct ids over {len(seconds)} "
                        f"start second(s) ({', '.join(sorted(i.split('-', 2)[2] for i in ids))}); {len(finished)} finished folders")

    with s.table.case("small", "upload names with Markdown, NUL, newline, backtick, bidi", "lenet.predict's message shows the name "
                      "as one inline-code span of printable characters, on one line") as row:
        from lenet.predict import ImageError, load_image

        names = ["**[prize](http://example.com)** <img src=x onerror=alert(1)> $x^2$ :red[hi].png", "nul\0byte.png",
                 "two\nlines\r.png", "tick`s`.png", "right-to-left\u202egnp.exe", "x" * 500, "\n\0`"]
        shown = []
        for name in names:
            try:
                load_image(b"not an image", name)
                shown.append(None)
            except ImageError as error:
                shown.append(str(error))
        good = [m is not None and m.isprintable() and "\n" not in m and m.count("`") in (0, 2) and "\0" not in m for m in shown]
        row.verdict(all(good), f"{sum(good)} of {len(names)} safe, e.g. {shown[0]!r:.110} and {shown[1]!r}")


# -- runs that never hang --------------------------------------------------------------------------------------


def long_run(s: Stress, out: Path, *extra) -> Background:
    """A CLI run that trains for minutes, stopped by the case: the walkthrough's batch of 4, 500 epochs of 2,000 images
    (a million images; 50 epochs took only 16 to 22 s at this trainer's 4,500 to 6,400 images/s, so a resumed run
    could finish before the case saw it go on)."""
    return Background(lenet_command("train", "--data", s.data_dir, "--preset", "walkthrough", "--subset", 2000, "--epochs", 500,
                                    "--threads", 1, "--out", out, *extra))


def first_step(out: Path, trainer: Background, timeout: float = 180) -> Path | None:
    """The run folder once its status shows a trained step (None if the trainer ended or it took too long)."""
    def ready():
        if trainer.poll() is not None:
            return True
        folders = [f for f in run_folders(out) if progress_of(f).get("step", 0) > 0]
        return folders[0] if folders else None

    found = wait_for(ready, timeout, every=0.2)
    return found if isinstance(found, Path) else None


def failed_in_one_line(ran: Ran, fragment: str) -> bool:
    """Exit 2 with exactly one `error:` line naming fragment (the run's own "run <id>: <folder>" line may precede it)."""
    return (not ran.timed_out and ran.returncode == 2 and len(ran.errors()) == 1 and fragment in ran.errors()[0]
            and "Traceback" not in ran.stderr)


def runs_group(s: Stress) -> None:
    def write_failure(label: str, block: Callable[[Path], None], unblock: Callable[[Path], None], fragment: str) -> None:
        with s.table.case("runs", f"write failure mid-run: {label}", "the CLI run ends failed within 60 s: exit 2, one error line "
                          "with the reason; its training process ends; the next Start works") as row:
            out = s.folder(f"write-failure-{slug(label)}")
            trainer = long_run(s, out)
            folder = first_step(out, trainer)
            if folder is None:
                trainer.kill_group()
                raise RuntimeError(f"no first step: {trainer.wait(1).brief()}")
            try:
                training_pid = progress_of(folder).get("training_pid")
                block(folder)
                blocked = time.monotonic()
                ran = trainer.wait(60)
                ended_in = time.monotonic() - blocked
            finally:
                trainer.kill_group()
                unblock(folder)
            gone = wait_for(lambda: not alive(training_pid), 10)
            after = lenet("train", "--data", s.data_dir, "--preset", "quick", "--subset", 256, "--epochs", 1, "--threads", 1, "--out", out)
            ok = failed_in_one_line(ran, fragment) and bool(gone) and after.returncode == 0
            error = clip(ran.errors()[0].removeprefix("error: ")) if ran.errors() else ran.brief()
            row.verdict(ok, f"ended {ended_in:.1f} s after the write failed, exit {ran.returncode}: {error}; training process "
                            f"{'ended' if gone else 'STILL ALIVE'}; next Start exit {after.returncode}")

    def folder_for_status(folder: Path) -> None:
        status = folder / "status.json"
        for _ in range(200):  # the server rewrites it about once a second (write then rename): retry until the folder stays
            try:
                status.unlink(missing_ok=True)
                status.mkdir()
                return
            except (FileExistsError, FileNotFoundError):
                time.sleep(0.01)
        raise RuntimeError("could not put a folder in place of status.json")

    write_failure("status.json replaced by a folder", folder_for_status,
                  lambda folder: shutil.rmtree(folder / "status.json", ignore_errors=True), "status.json")

    probe = s.folder("chattr-probe")
    if s.quick:
        with s.table.case("runs", "write failure mid-run: run folder made immutable (chattr +i)", "as above") as row:
            row.skip("full run only (the folder case above is the same failure)")
    elif subprocess.run(["chattr", "+i", probe], capture_output=True).returncode == 0:
        subprocess.run(["chattr", "-i", probe], capture_output=True)
        write_failure("run folder made immutable (chattr +i)", lambda folder: subprocess.run(["chattr", "+i", folder], check=True),
                      lambda folder: subprocess.run(["chattr", "-i", folder], capture_output=True), "could not write")
    else:
        with s.table.case("runs", "write failure mid-run: run folder made immutable (chattr +i)", "as above") as row:
            row.skip("chattr +i is not available here (not root, or the file system has no immutable flag)")

    pause = 5 if s.quick else 35
    with s.table.case("runs", f"a second trainer while the first is paused {pause} s", f"SIGSTOP of the CLI and its training "
                      f"process for {pause} s: the run stays running and `train --resume` is refused in one line; after SIGCONT and "
                      "Ctrl-C it ends stopped, and then resumes") as row:
        from lenet.runs import RunRegistry

        out = s.folder("second-trainer")
        trainer = long_run(s, out)
        resumed = None
        try:
            folder = first_step(out, trainer)
            if folder is None:
                raise RuntimeError(f"no first step: {trainer.wait(1).brief()}")
            os.killpg(trainer.pid, signal.SIGSTOP)  # as Ctrl-Z does: the CLI and its training process
            time.sleep(pause)
            state = RunRegistry(out, lambda: None).snapshot(folder.name).state
            second = lenet("train", "--resume", folder.name, "--out", out, "--data", s.data_dir, timeout=120)
            os.killpg(trainer.pid, signal.SIGCONT)
            time.sleep(1)
            os.kill(trainer.pid, signal.SIGINT)  # Ctrl-C: stop, keeping the last checkpoint
            first = trainer.wait(60)
            stopped = read_json(folder / "status.json")
            resumed = Background(lenet_command("train", "--resume", folder.name, "--out", out, "--data", s.data_dir))
            went_on = wait_for(lambda: resumed.poll() is None and read_json(folder / "status.json").get("pid") == resumed.pid
                               and progress_of(folder).get("step", 0) > (stopped.get("progress") or {}).get("step", 0), 120, every=0.2)
            os.kill(resumed.pid, signal.SIGINT)
            last = resumed.wait(60)
        finally:
            trainer.kill_group(signal.SIGCONT)
            trainer.kill_group()
            if resumed is not None:
                resumed.kill_group()
        ok_second, seen_second = refused_in_one_line(second, "running")
        ok = (state == "running" and ok_second and first.returncode == 0 and stopped.get("state") == "stopped" and bool(went_on)
              and last.returncode == 0)
        row.verdict(ok, f"state while paused: {state}; second trainer: {seen_second}; first after Ctrl-C: exit {first.returncode}, "
                        f"{stopped.get('state')}; resumed afterwards: {'went on' if went_on else 'did NOT go on'}, exit {last.returncode}")


# -- the app: `make run`, and a crafted data folder ------------------------------------------------------------


def make_run_command() -> list[str]:
    """The command `make run` runs, read from the Makefile's recipe. (make itself would first reinstall the
    requirements whenever requirements.txt is newer than the venv's stamp, which needs the network.)"""
    text = (REPO / "Makefile").read_text()
    recipe = re.search(r"^run:.*\n((?:\t.*\n?)+)", text, re.MULTILINE)
    if recipe is None:
        raise RuntimeError("the Makefile has no `run` recipe")
    line = [line.strip() for line in recipe.group(1).splitlines() if "streamlit" in line][-1]
    variables = {"PY": PYTHON, "PYTHON": PYTHON, "VENV": str(Path(PYTHON).parent.parent)}
    return shlex.split(re.sub(r"\$\((\w+)\)", lambda m: variables.get(m.group(1), m.group(0)), line))


def listening_addresses(pids: list[int]) -> list[str]:
    """Where these processes accept TCP connections ("address:port"), from their sockets' inodes in /proc/net: nothing
    is contacted."""
    inodes = set()
    for pid in pids:
        try:
            fds = list(Path(f"/proc/{pid}/fd").iterdir())
        except OSError:
            continue
        for fd in fds:
            try:
                target = os.readlink(fd)
            except OSError:
                continue
            if target.startswith("socket:["):
                inodes.add(target[8:-1])
    found = []
    for table, family in (("/proc/net/tcp", socket.AF_INET), ("/proc/net/tcp6", socket.AF_INET6)):
        try:
            lines = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for line in lines:
            fields = line.split()
            if fields[3] == "0A" and fields[9] in inodes:  # 0A: LISTEN
                address, port = fields[1].split(":")
                raw = bytes.fromhex(address)  # in host order, 32 bits at a time
                raw = raw[::-1] if family == socket.AF_INET else b"".join(raw[i:i + 4][::-1] for i in range(0, 16, 4))
                found.append(f"{socket.inet_ntop(family, raw)}:{int(port, 16)}")
    return sorted(set(found))


@contextmanager
def app_server(command: list[str], env: dict, port: int, log_path: Path, timeout: float = 180) -> Iterator[tuple[subprocess.Popen, str]]:
    """A server started by `command` in its own process group; the group is killed at the end."""
    from tests.loadtest import Server, wait_healthy

    url = f"http://127.0.0.1:{port}"
    with open(log_path, "w") as log:
        process = subprocess.Popen(command, cwd=REPO, env=env, stdout=log, stderr=subprocess.STDOUT, start_new_session=True)
    try:
        wait_healthy(Server(url, process.pid, Path(env["LENET_RUNS"]), log_path), process, timeout)
        yield process, url
    finally:
        try:
            os.killpg(process.pid, signal.SIGTERM)
            process.wait(15)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
        except ProcessLookupError:
            process.wait()


def make_crafted_data(s: Stress) -> tuple[Path, Path]:
    """A torchvision data folder whose data_batch_1 would run `touch MARKER` if it were unpickled carelessly."""
    marker = s.workdir / "MARKER-the-batch-ran-code"
    with s.shared:
        return _make_crafted(s, marker), marker


def _make_crafted(s: Stress, marker: Path) -> Path:
    from tests.test_safety_data import WritesMarker, official_format, write_batches

    if s.crafted is None:
        s.crafted = s.workdir / "crafted-data"

        def crafted(name, entry):
            return official_format({"attack": WritesMarker(marker, "system"), **entry} if name == "data_batch_1" else entry)

        write_batches(s.crafted, crafted)
    return s.crafted


async def dataset_page_texts(url: str, fragment: str, timeout: float) -> tuple[list[str], list[str]]:
    """Open the app, go to the Dataset page, and wait for a text containing fragment: (those texts, the page's problems)."""
    from tools.wsload import Tab, text_containing

    with ThreadPoolExecutor(max_workers=4) as pool:
        tab = Tab(url, pool, 0, timeout)
        try:
            await asyncio.wait_for(tab.open(""), timeout)
            await asyncio.wait_for(tab.wait_until(lambda: "Dataset" in tab.page_hashes), timeout)  # as in server_load
            since = tab.seq
            await tab.navigate("Dataset")
            await asyncio.wait_for(tab.wait_until(lambda: text_containing(fragment)(tab.page, since)), timeout)
            return [text for text in tab.page.texts() if fragment in text], list(tab.problems)
        finally:
            await tab.close()


def app_group(s: Stress) -> None:
    from tests.loadtest import descendants, free_port

    crafted, marker = make_crafted_data(s)
    command, port = make_run_command(), free_port()
    env = base_env(LENET_DATA=crafted, LENET_RUNS=s.folder("app-runs"), LENET_CACHE=s.workdir / "cache", STREAMLIT_SERVER_PORT=port,
                   STREAMLIT_SERVER_HEADLESS="true", STREAMLIT_BROWSER_GATHER_USAGE_STATS="false",
                   STREAMLIT_SERVER_FILE_WATCHER_TYPE="none")
    s.log(f"  `make run` runs: {' '.join(command)} (port {port} from STREAMLIT_SERVER_PORT)")
    with app_server(command, env, port, s.workdir / "make-run.log") as (process, url):
        with s.table.case("app", "`make run` listens on 127.0.0.1 only", "the server's listening sockets (from /proc/net/tcp "
                          "and tcp6) are all on 127.0.0.1, and 127.0.0.1 answers") as row:
            addresses = listening_addresses([process.pid, *descendants(process.pid)])
            with urllib.request.build_opener(urllib.request.ProxyHandler({})).open(f"{url}/_stcore/health", timeout=30) as reply:
                answer = reply.status
            ok = bool(addresses) and all(a.startswith("127.0.0.1:") for a in addresses) and answer == 200
            row.verdict(ok, f"listening on {', '.join(addresses) or 'nothing'}; http://127.0.0.1:{port}/_stcore/health: {answer}")

        with s.table.case("app", "crafted data_batch_1: the app", "a server on that data folder shows a message naming "
                          "data_batch_1 on the Dataset page, no exception; the marker file is never created") as row:
            texts, problems = asyncio.run(dataset_page_texts(url, "data_batch_1", 120))
            exceptions = [p for p in problems if p.startswith("exception")]
            ok = bool(texts) and not exceptions and not marker.exists()
            row.verdict(ok, f"shown: {texts[0][:150] if texts else 'nothing'}; exceptions: {len(exceptions)}; "
                            f"marker {'CREATED' if marker.exists() else 'absent'}")


# -- the server: many sessions with large photos; SIGKILL of the server and of the trainer ----------------------


def runs_table(tab) -> dict[str, str]:
    """The Train page's table of all runs as it was sent (Arrow): folder -> state."""
    import pyarrow as pa

    from tools.wsload import element_kind

    for node in tab.page.elements():
        if element_kind(node.element) == "dataframe" and node.element.dataframe.arrow_data.data:
            frame = pa.ipc.open_stream(node.element.dataframe.arrow_data.data).read_all().to_pandas()
            if "folder" in frame.columns and "state" in frame.columns:
                return dict(zip(frame["folder"], frame["state"], strict=True))
    return {}


def settled_rss(pids: Callable[[], list[int]], quiet_seconds: float = 6, tolerance_mb: float = 15, limit: float = 120) -> float:
    """The processes' RSS once it has changed by less than tolerance_mb over quiet_seconds (at most `limit` seconds)."""
    from tests.loadtest import rss_mb

    samples, deadline = [], time.monotonic() + limit
    while time.monotonic() < deadline:
        samples.append((time.monotonic(), rss_mb(pids())))
        window = [mb for t, mb in samples if t >= samples[-1][0] - quiet_seconds]
        if samples[-1][0] - samples[0][0] >= quiet_seconds and max(window) - min(window) < tolerance_mb:
            break
        time.sleep(0.5)
    return samples[-1][1]


async def photo_session(url: str, pool: ThreadPoolExecutor, number: int, photo: tuple[bytes, str, str], reruns: int,
                        timeout: float) -> tuple[int, list[str]]:
    """One visitor: the Classify page, one upload, then `reruns` reruns of the page with it; (answers seen, problems).

    A rerun comes as soon as the answer shows, before the page's images have loaded, as a quick second click does."""
    from websockets.exceptions import WebSocketException

    from tools.wsload import ANSWER_SHOWN, CLASSIFY_READY, UPLOAD_LABEL, ClientError, Tab

    data, name, mime = photo
    tab, answers, problems = Tab(url, pool, number, timeout), 0, []

    async def answered(action) -> None:
        since = tab.seq
        await action()
        await asyncio.wait_for(tab.wait_until(lambda: ANSWER_SHOWN(tab.page, since)), timeout)

    try:
        await asyncio.wait_for(tab.open("classify"), timeout)
        await asyncio.wait_for(tab.wait_until(lambda: CLASSIFY_READY(tab.page, 0)), timeout)
        uploader = tab.page.find("file_uploader", UPLOAD_LABEL)
        await answered(lambda: tab.upload(data, name, mime, uploader))
        answers += 1
        for _ in range(reruns):
            await answered(tab.rerun)  # the page again, with the same upload: as any click on it does
            answers += 1
    except TimeoutError:
        problems.append(f"session {number}: timeout ({tab.silence()})")
    except (ClientError, OSError, WebSocketException) as error:
        problems.append(f"session {number}: {type(error).__name__}: {str(error)[:200]}")
    finally:
        await tab.close()
    return answers, problems + [f"session {number}: {p}" for p in tab.problems]


async def server_load(server, s: Stress, photos: list[tuple[bytes, str, str]], reruns: int, settle: float,
                      runs_listed: bool) -> dict:
    """Warm the server up (every page it needs, the runs table read when runs_listed: the runs folder holds runs),
    then the sessions; memory sampled throughout."""
    from tests.loadtest import Sampler
    from tools.wsload import ANSWER_SHOWN, CLASSIFY_READY, UPLOAD_LABEL, Tab, heading

    found: dict = {}
    sampler = Sampler(server.pid)
    with ThreadPoolExecutor(max_workers=max(8, len(photos) + 4), thread_name_prefix="stress-http") as pool:
        tab = Tab(server.url, pool, -1, 180)
        try:
            await asyncio.wait_for(tab.open(""), 180)
            # A fresh server's first script run lists pages/ as files (Streamlit's folder mode); the app's router then
            # declares its own pages, by title: navigating waits for those.
            await asyncio.wait_for(tab.wait_until(lambda: {"Train", "Classify"} <= set(tab.page_hashes)), 180)
            since = tab.seq
            await tab.navigate("Train")
            # The table comes after its heading, and the runs are read (and the run labels made) in between; with no
            # runs (`--only server`) there is no table, and the form is what shows the page is drawn.
            drawn = ((lambda: heading("All runs")(tab.page, since) and bool(runs_table(tab))) if runs_listed else
                     (lambda: tab.page.find("button", "Start training") is not None))
            await asyncio.wait_for(tab.wait_until(drawn), 180)
            found["runs_table"], found["train_problems"] = runs_table(tab), list(tab.problems)
            since = tab.seq
            await tab.navigate("Classify")
            await asyncio.wait_for(tab.wait_until(lambda: CLASSIFY_READY(tab.page, since)), 180)
            since = tab.seq
            await tab.upload(s.small.read_bytes(), "small.jpg", "image/jpeg", tab.page.find("file_uploader", UPLOAD_LABEL))
            await asyncio.wait_for(tab.wait_until(lambda: ANSWER_SHOWN(tab.page, since)), 180)
        finally:
            await tab.close()
        found["baseline_mb"] = await asyncio.to_thread(settled_rss, sampler.server_pids)
        s.log(f"  baseline {found['baseline_mb']:,.0f} MB (server and its children); {len(photos)} sessions x {reruns} reruns")

        stop = asyncio.Event()
        sampling = asyncio.create_task(sampler.run(stop, every=0.5))
        started = time.monotonic()

        async def staggered(number: int):
            await asyncio.sleep(number * 0.2)
            return await photo_session(server.url, pool, number, photos[number], reruns, 240 if s.quick else 600)

        results = await asyncio.gather(*(staggered(n) for n in range(len(photos))))
        found["load_seconds"] = time.monotonic() - started
        found["peak_mb"] = max(sampler.rss)
        sampler.rss.clear()
        await asyncio.sleep(settle)
        found["after_mb"] = max(sampler.rss[-4:])  # the last two seconds
        stop.set()
        await sampling
    found["answers"] = sum(answers for answers, _ in results)
    found["problems"] = [p for _, problems in results for p in problems]
    return found


async def start_on_train_page(url: str, images: int, epochs: int, batch: int) -> None:
    """Press Start training on the Train page with these settings, as a visitor does; until the live progress shows."""
    from tools.wsload import TRAIN_READY, ClientError, Tab, number_value

    with ThreadPoolExecutor(max_workers=4) as pool:
        tab = Tab(url, pool, -2, 180)
        try:
            await asyncio.wait_for(tab.open("train"), 180)
            await asyncio.wait_for(tab.wait_until(lambda: tab.page.find("button", "Start training") is not None), 180)
            inputs = {label: tab.page.find("number_input", label) for label in ("Training images", "Epochs", "Batch size")}
            if None in inputs.values():
                raise ClientError(f"the Train page lacks an input: {[k for k, v in inputs.items() if v is None]}")
            values = [number_value(inputs["Training images"], images), number_value(inputs["Epochs"], epochs),
                      number_value(inputs["Batch size"], batch)]
            await tab.submit_form(values, tab.page.find("button", "Start training"))
            await asyncio.wait_for(tab.wait_until(lambda: TRAIN_READY(tab.page, 0)), 240)
        finally:
            await tab.close()


def server_group(s: Stress) -> None:
    from lenet.checkpoint import load_checkpoint
    from lenet.runs import FINISHED, INTERRUPTED, RunRegistry
    from tests.loadtest import descendants, streamlit_server
    from tests.test_memory_predict import rgba_png

    work = s.folder("server")
    runs = work / "runs"
    damaged = s.damaged_runs
    if damaged is not None:
        shutil.copytree(damaged, runs)
    sessions, reruns, settle = (3, 3, 30) if s.quick else (30, 15, 60)
    jpeg = cached("phone-64mp.jpg", lambda: phone_jpeg(9238, 6928, 6, 80, 16)).read_bytes()
    png = cached("poster-64mp.png", lambda: rgba_png(8000, 8000)).read_bytes()
    # Each session its own file (other bytes, the same pixels); one in six a 64 MP RGBA PNG, the costliest to decode.
    photos = [(with_png_text(png, f"session {n}"), f"poster-{n}.png", "image/png") if n % 6 == 2 else
              (with_comment(jpeg, f"session {n}"), f"phone-{n}.jpg", "image/jpeg") for n in range(sessions)]
    load: dict = {}
    kill: dict = {}
    # The run to kill: the quick preset with its own batch (its learning rate is for that batch).
    images, epochs, batch = (4000, 8, 128) if s.quick else (8000, 8, 128)
    per_epoch = -(-images // batch)
    total = per_epoch * epochs
    with streamlit_server(work, s.data_dir, start_timeout=180) as server:
        s.log(f"  server {server.url} (pid {server.pid}), log {server.log}")
        with s.table.case("server", f"{sessions} sessions x 64 MP photo x {reruns} reruns", "every upload and rerun answered "
                          "(It says: ...), no exception or error alert") as row:
            load = asyncio.run(server_load(server, s, photos, reruns, settle, runs_listed=damaged is not None))
            wanted = sessions * (1 + reruns)
            # An image the browser had not fetched yet when the next rerun ran may be gone (404): Streamlit drops a run's
            # media once another run of the session replaces it. Said here, not counted as a question left unanswered.
            gone = [p for p in load["problems"] if re.match(r"session -?\d+: image /media/", p)]
            shown = [p for p in load["problems"] if p not in gone]
            row.verdict(load["answers"] == wanted and not shown,
                        f"{load['answers']} of {wanted} answered in {load['load_seconds']:.0f} s; errors shown: {len(shown)} "
                        f"{shown[:2]}; page images gone (404) when fetched during the next rerun: {len(gone)}")
        with s.table.case("server", "server memory under those sessions", "peak at most 1.5 GB above the warm baseline; "
                          f"within 200 MB of it {settle:.0f} s after the sessions close") as row:
            if "peak_mb" not in load:
                raise RuntimeError("not measured: the sessions did not run")
            above, after = load["peak_mb"] - load["baseline_mb"], load["after_mb"] - load["baseline_mb"]
            row.verdict(above <= 1536 and after <= 200, f"baseline {load['baseline_mb']:,.0f} MB, peak {signed_mb(above)}, "
                                                         f"{settle:.0f} s after closing {signed_mb(after)}", MEMORY_CAUSE)
        if damaged is not None:
            with s.table.case("damaged", "damaged runs on the Train page", "the table of all runs lists every run that has a "
                              "readable config; the damaged ones say damaged; no exception") as row:
                if "runs_table" not in load:
                    raise RuntimeError("not measured: the warm-up did not reach the Train page")
                table = load["runs_table"]
                listable = [p.name for p in damaged.iterdir() if read_json(p / "config.json")]
                missing = [name for name in listable if name not in table]
                exceptions = [p for p in load.get("train_problems", []) if p.startswith("exception")]
                states = ", ".join(f"{name.split('-', 2)[-1]}: {state}" for name, state in sorted(table.items()))
                row.verdict(bool(table) and not missing and not exceptions, f"{states}; missing {missing}; exceptions {exceptions[:1]}")

        with s.table.case("kills", "SIGKILL of the server mid-run", "at a random step after the first epoch: the training "
                          "process and every other child of the server end within 10 s (no orphan); the run reads interrupted") as row:
            before = {p.name for p in run_folders(runs)}
            asyncio.run(start_on_train_page(server.url, images, epochs, batch))
            # Three epochs left at least: the CLI's resume below needs steps to be killed in before it finishes
            # (its status is read, and written about once a second).
            target = s.rng.randint(per_epoch + 1, total - 3 * per_epoch)

            def at_target():
                new = [f for f in run_folders(runs) if f.name not in before]
                if new and (new[0] / "checkpoint.pt").is_file() and progress_of(new[0]).get("step", 0) >= target:
                    return new[0]
                return None

            folder = wait_for(at_target, 300, every=0.05)
            if folder is None:
                raise RuntimeError(f"the run did not reach step {target} within 300 s")
            children = descendants(server.pid)
            kill["folder"], kill["step"] = folder, progress_of(folder).get("step", 0)
            training_pid = progress_of(folder).get("training_pid")
            os.kill(server.pid, signal.SIGKILL)
            survivors = wait_for(lambda: not any(alive(p) for p in children), 10) is None
            left = [p for p in children if alive(p)]
            state = RunRegistry(runs, lambda: None).snapshot(folder.name).state
            ok = not survivors and training_pid in children and state == INTERRUPTED
            row.verdict(ok, f"killed at step {kill['step']} of {total} (aimed at {target}); {len(children)} children incl. the "
                            f"training process {training_pid}: {len(left)} alive 10 s later {left}; run {state}")

    if "folder" not in kill:
        return
    folder = kill["folder"]
    with s.table.case("kills", "SIGKILL of the trainer (CLI) mid-run", "`train --resume` goes on from the last checkpoint; "
                      "SIGKILL at a random later step: its training process ends within 10 s; the run reads interrupted") as row:
        resumed_from = load_checkpoint(folder / "checkpoint.pt")["training"]["step"]
        # Two epochs before the end at the latest: the status it is read from is rewritten about once a second.
        target = s.rng.randint(max(resumed_from, kill["step"]) + 1, max(max(resumed_from, kill["step"]) + 1, total - 2 * per_epoch))
        trainer = Background(lenet_command("train", "--resume", folder.name, "--out", runs, "--data", s.data_dir))
        try:
            reached = wait_for(lambda: trainer.poll() is None and read_json(folder / "status.json").get("pid") == trainer.pid
                               and progress_of(folder).get("step", 0) >= target, 300, every=0.05)
            step, training_pid = progress_of(folder).get("step", 0), progress_of(folder).get("training_pid")
            os.kill(trainer.pid, signal.SIGKILL)
        finally:
            ran = trainer.wait(10)
        gone = wait_for(lambda: not alive(training_pid), 10)
        state = RunRegistry(runs, lambda: None).snapshot(folder.name).state
        kill["trainer_step"] = step
        ok = bool(reached) and step < total and training_pid != trainer.pid and bool(gone) and state == INTERRUPTED
        row.verdict(ok, f"resumed from step {resumed_from}, killed at step {step} (aimed at {target}; "
                        f"{'reached' if reached else 'NOT reached: ' + ran.brief()}); training process {training_pid} "
                        f"{'ended' if gone else 'STILL ALIVE'}; run {state}")

    with s.table.case("kills", "resume through the CLI to the same final step", f"`train --resume` finishes: step {total} of "
                      f"{total}, epochs 1..{epochs} once each, logged steps increasing without gaps or repeats, "
                      "the checkpoint at the last step") as row:
        ran = lenet("train", "--resume", folder.name, "--out", runs, "--data", s.data_dir, timeout=600)
        status = read_json(folder / "status.json")
        events = metrics_events(folder)
        steps = [e["step"] for e in events if e["event"] == "step"]
        every = steps[1] - steps[0] if len(steps) > 1 else 0
        epoch_numbers = [e["epoch"] for e in events if e["event"] == "epoch"]
        last = load_checkpoint(folder / "checkpoint.pt")["training"]["step"]
        ok = (ran.returncode == 0 and status.get("state") == FINISHED and (status.get("progress") or {}).get("step") == total
              and epoch_numbers == list(range(1, epochs + 1)) and steps == list(range(every, total + 1, every)) and every > 0
              and last == total)
        row.verdict(ok, f"exit {ran.returncode}, {status.get('state')} at step {(status.get('progress') or {}).get('step')}; "
                        f"epochs {epoch_numbers}; {len(steps)} logged steps every {every}; checkpoint at {last}; "
                        f"test accuracy {status.get('test_accuracy') or 0:.1%}")


# -- running it ----------------------------------------------------------------------------------------------

GROUPS = {"memory": memory_group, "checkpoints": finite_group, "data": data_group, "cli": cli_group, "damaged": damaged_group,
          "small": small_group, "runs": runs_group, "app": app_group, "server": server_group}  # in the table's order


# Lanes for --quick (the CI version): each case mostly waits for a process to start torch, for a server or for a
# pause, so three at a time finish sooner even on two cores. Within a lane the order matters: damaged runs are copied into the
# server's runs folder. The full run goes one group at a time, so that its server figures are the server's alone.
LANES = (["damaged", "server"], ["memory", "checkpoints", "data", "app"], ["cli", "small", "runs"])


def run_suite(quick: bool, data_dir: Path, workdir: Path, seed: int, groups: list[str], log: Callable[[str], None] = print) -> Stress:
    s = Stress(quick, workdir, data_dir, seed, log)

    def run_lane(names: list[str]) -> None:
        for name in names:
            s.table.lane.order = list(GROUPS).index(name)
            log(f"== {name}")
            with s.table.case(name, f"group {name} ran", "its cases ran to their verdicts") as row:
                GROUPS[name](s)
                row.result = "pass"
            with s.table.lock:  # only a group that broke keeps its row
                s.table.rows = [r for r in s.table.rows if not (r.case == f"group {name} ran" and r.result == "pass")]

    if quick:
        lanes = [[name for name in lane if name in groups] for lane in LANES]
        threads = [threading.Thread(target=run_lane, args=(lane,), name=f"lane-{i}") for i, lane in enumerate(lanes) if lane]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join()
    else:
        run_lane(groups)
    return s


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="the CI version: fewer sessions and reruns, shorter pauses")
    parser.add_argument("--only", help=f"comma-separated groups to run (of {', '.join(GROUPS)}; default all)")
    parser.add_argument("--data", type=Path, default=Path(os.environ.get("LENET_DATA") or REPO.parent / "shared" / "cifar10-jpeg"),
                        help="the real CIFAR-10 (default: LENET_DATA, else ../shared/cifar10-jpeg)")
    parser.add_argument("--workdir", type=Path, help="keep every file the cases make here (default: a temporary folder, removed)")
    parser.add_argument("--seed", type=int, default=None, help="for the random kill moments (default: from the clock)")
    parser.add_argument("--markdown", type=Path, help="also write the table, with the command and the date, to this file")
    parser.add_argument("--json", type=Path, help="also write the rows as JSON")
    args = parser.parse_args(argv)
    groups = args.only.split(",") if args.only else list(GROUPS)
    unknown = [g for g in groups if g not in GROUPS]
    if unknown:
        parser.error(f"unknown groups {unknown}: choose from {', '.join(GROUPS)}")
    if not (args.data / "train").is_dir() and not (args.data / "cifar-10-batches-py").is_dir():
        parser.error(f"no CIFAR-10 in {args.data}: set LENET_DATA or --data")
    for name in PROJECT_VARIABLES:  # the servers inherit this environment: no PIN, no other runs folder or model
        os.environ.pop(name, None)
    seed = args.seed if args.seed is not None else int(time.time()) % 100_000

    def log(line: str) -> None:
        print(line, flush=True)

    started, when = time.monotonic(), datetime.now(UTC)
    command = "python -m tests.stress" + (" --quick" if args.quick else "") + (f" --only {args.only}" if args.only else "")
    if args.workdir is None:
        with tempfile.TemporaryDirectory(prefix="lenet-stress-") as tmp:
            s = run_suite(args.quick, args.data.resolve(), Path(tmp), seed, groups, log)
            _unlock(Path(tmp))
    else:
        args.workdir.mkdir(parents=True, exist_ok=True)
        s = run_suite(args.quick, args.data.resolve(), args.workdir.resolve(), seed, groups, log)
        _unlock(args.workdir)
    minutes = (time.monotonic() - started) / 60
    misses = s.table.misses()
    header = (f"`{command}` on {when:%Y-%m-%d %H:%M} UTC, {os.cpu_count()} cores, {minutes:.1f} min, seed {seed}: "
              f"{sum(r.result == 'pass' for r in s.table.rows)} pass, {len(misses)} miss, "
              f"{sum(r.result == 'skip' for r in s.table.rows)} skip")
    print("\n" + header + "\n\n" + s.table.markdown())
    if args.markdown:
        args.markdown.parent.mkdir(parents=True, exist_ok=True)
        args.markdown.write_text(header + "\n\n" + s.table.markdown() + "\n")
    if args.json:
        args.json.parent.mkdir(parents=True, exist_ok=True)
        args.json.write_text(json.dumps({"command": command, "when": when.isoformat(), "minutes": round(minutes, 1), "seed": seed,
                                         "rows": [asdict(row) for row in s.table.rows]}, indent=1) + "\n")
    for row in misses:
        print(f"MISS: {row.case}: {row.observed}", file=sys.stderr)
    return 1 if misses else 0


def _unlock(folder: Path) -> None:
    """Clear any immutable flag a case left (so the folder can be removed), quietly."""
    if shutil.which("chattr"):
        subprocess.run(["chattr", "-R", "-i", str(folder)], capture_output=True)


if __name__ == "__main__":
    sys.exit(main())
