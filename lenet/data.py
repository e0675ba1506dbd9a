"""CIFAR-10 as tensors: find the data, decode it once, cache it, download it when absent.

A data folder holds either torchvision's `cifar-10-batches-py` or an image-folder tree
`train/<class>/*` and `test/<class>/*`. Each split is decoded once into a uint8 tensor
N x 3 x 32 x 32 plus int64 labels, and cached outside the data folder (which may be read-only).
"""

import hashlib
import io
import math
import os
import pickle
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .files import atomic_write
from .jpegs import decode_jpegs

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
# The walkthrough's transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)): pixels to [-1, 1].
WALKTHROUGH_NORMALIZATION = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
# Per-channel statistics of the 50,000 training images, for recipes that standardize instead.
CIFAR10_NORMALIZATION = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
# The decoders those extensions need, and no others: PIL would otherwise also try its rarer ones on a file whose
# contents do not match its name (EPS, for one, runs Ghostscript).
IMAGE_FORMATS = ("JPEG", "PNG", "BMP", "GIF", "WEBP", "TIFF", "PPM")
BATCHES_FOLDER = "cifar-10-batches-py"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_BYTES = 170_498_071
MAX_BATCH_BYTES = 256 * 2**20  # a batch file is read whole; the official ones are 30 MB


class DataError(Exception):
    """The data folder cannot give CIFAR-10; the message says what is wrong and what to do."""


@dataclass
class Split:
    images: torch.Tensor  # uint8, N x 3 x 32 x 32
    labels: torch.Tensor  # int64, N

    def __len__(self) -> int:
        return len(self.labels)

    def subset(self, indices: torch.Tensor) -> "Split":
        return Split(self.images[indices], self.labels[indices])

    def sample(self, size: int, seed: int, label: int | None = None) -> "Split":
        """`size` images drawn at random (of one class, or any when label is None), the same for the same seed."""
        pool = torch.arange(len(self)) if label is None else (self.labels == label).nonzero().flatten()
        return self.subset(pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:size]])

    def class_counts(self) -> list[int]:
        return torch.bincount(self.labels, minlength=len(CLASSES)).tolist()


@dataclass
class CIFAR10:
    train: Split
    test: Split
    source: str  # "torchvision" or "image-folder", and where


def default_data_dir() -> Path:
    return Path(os.environ.get("LENET_DATA") or "data")


def cache_dir() -> Path:
    return Path(os.environ.get("LENET_CACHE") or Path.home() / ".cache" / "lenet")


def detect_layout(data_dir: Path) -> str | None:
    """'torchvision', 'image-folder', or None when the folder holds neither."""
    data_dir = Path(data_dir)
    if (data_dir / BATCHES_FOLDER / "test_batch").is_file():
        return "torchvision"
    if (data_dir / "train").is_dir() or (data_dir / "test").is_dir():
        return "image-folder"
    return None


def load_cifar10(data_dir: Path | str | None = None, download: bool = False, progress=None) -> CIFAR10:
    """Both splits as tensors, from the cache when it is fresh. Downloads first when asked and absent.

    progress(fraction, message), when given, hears how the download goes and how far decoding an image folder is."""
    data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
    layout = detect_layout(data_dir)
    if layout is None:
        if not download:
            raise DataError(
                f"No CIFAR-10 in {data_dir}: expected {BATCHES_FOLDER}/ or train/<class>/ and test/<class>/ folders. "
                "Download it (python -m lenet download, or the Dataset page) or point --data / LENET_DATA at a copy."
            )
        download_cifar10(data_dir, progress=progress)
        layout = "torchvision"
    if layout == "image-folder":
        train, test = _load_image_folder(data_dir, progress)
    else:
        train, test = (_load_batches(data_dir, split) for split in SPLITS)
    return CIFAR10(train=train, test=test, source=f"{layout} at {data_dir.resolve()}")


def _load_batches(data_dir: Path, split: str) -> Split:
    files = [data_dir / BATCHES_FOLDER / name for name in _batch_names(split)]
    missing = [str(f) for f in files if not f.is_file()]
    if missing:
        raise DataError(f"{data_dir}: missing CIFAR-10 batch files {', '.join(missing)}")
    fingerprint = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
    path = _cache_path(fingerprint)
    split_data = _read_cache(path)
    if split_data is None:
        split_data = _decode_batches(files)
        _write_cache_behind(path, split_data)
    return split_data


def _load_image_folder(data_dir: Path, progress=None) -> tuple[Split, Split]:
    """Both splits of an image folder, each from its cache when fresh; those that are not, decoded in one go (one
    start of the decoding workers, one progress bar)."""
    listed = {split: _list_image_folder(data_dir / split) for split in SPLITS}
    # Every file's name, size and mtime: an image rewritten in place changes no folder's mtime.
    paths = {split: _cache_path([str((data_dir / split).resolve()), listed[split][0]]) for split in SPLITS}
    splits = {split: _read_cache(paths[split]) for split in SPLITS}
    stale = [split for split in SPLITS if splits[split] is None]
    if stale:
        decoded = _decode_files(data_dir, {split: listed[split] for split in stale}, progress)
        for split in stale:
            splits[split] = decoded[split]
            _write_cache_behind(paths[split], decoded[split])
    return splits["train"], splits["test"]


def _batch_names(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


# -- torchvision's batches: pickles, read without ever running code ------------------------------------------


class _RefusedGlobal(pickle.UnpicklingError):
    """The pickle asked for a global that no CIFAR-10 batch needs."""


class _Callable:
    """An allowed global as the unpickler hands it out: it can be called, never modified by the pickle's BUILD."""

    __slots__ = ("name", "function")

    def __init__(self, name: str, function):
        self.name, self.function = name, function

    def __call__(self, *args):
        return self.function(*args)

    def __setstate__(self, state):
        raise pickle.UnpicklingError(f"the pickle tries to modify {self.name}")


class _Dtype:
    """numpy.dtype(spec, align, copy) then its __setstate__, for plain integer types only (CIFAR-10's are uint8)."""

    def __init__(self, spec, align=False, copy=False):
        spec = spec.decode("latin1") if isinstance(spec, bytes) else spec
        if not isinstance(spec, str) or not re.fullmatch(r"[biu][1248]", spec):
            raise pickle.UnpicklingError(f"array type {spec!r} is not an integer type")
        self.dtype = np.dtype(spec)

    def __setstate__(self, state):
        # numpy writes (version, byte order, subarray, names, fields, item size, alignment, flags); only the
        # byte order matters for integers, and nothing else may be set.
        if not isinstance(state, tuple) or len(state) < 2 or state[1] not in ("|", "<", ">", "="):
            raise pickle.UnpicklingError("malformed array type")
        if any(part is not None for part in state[2:5]):
            raise pickle.UnpicklingError("structured array types are not CIFAR-10's")
        if state[1] in "<>":
            self.dtype = self.dtype.newbyteorder(state[1])


class _Array:
    """numpy's _reconstruct(ndarray, shape, dtype) then __setstate__: the array is built here from the raw bytes."""

    def __init__(self, subtype, shape, dtype):
        if subtype is not _NDARRAY:
            raise pickle.UnpicklingError("_reconstruct builds only numpy arrays")
        self.array = None

    def __setstate__(self, state):
        if self.array is not None or not isinstance(state, tuple) or len(state) != 5:
            raise pickle.UnpicklingError("malformed array")
        _version, shape, dtype, fortran_order, raw = state
        self.array = _array_from_bytes(raw, dtype, shape, "F" if fortran_order else "C")


def _frombuffer(buffer, dtype, shape, order) -> _Array:
    """numpy's own reader for arrays pickled with protocol 5 (Python 3.8+ writes them so)."""
    array = _Array(_NDARRAY, (), None)
    array.array = _array_from_bytes(buffer, dtype, shape, order)
    return array


def _array_from_bytes(raw, dtype, shape, order) -> np.ndarray:
    if isinstance(raw, str):
        raw = raw.encode("latin1")  # Python 2 wrote the bytes as a str; read with encoding="latin1"
    if not isinstance(dtype, _Dtype) or not isinstance(raw, (bytes, bytearray)) or order not in ("C", "F"):
        raise pickle.UnpicklingError("malformed array")
    if not isinstance(shape, tuple) or not all(isinstance(n, int) and n >= 0 for n in shape):
        raise pickle.UnpicklingError("malformed array shape")
    if math.prod(shape) * dtype.dtype.itemsize != len(raw):  # Python ints: a huge shape cannot wrap around
        raise pickle.UnpicklingError("the array's bytes do not match its shape")
    return np.frombuffer(raw, dtype=dtype.dtype).reshape(shape, order=order)


def _not_callable(*args):
    raise pickle.UnpicklingError("numpy.ndarray is only an argument of _reconstruct here")


# Stands for numpy.ndarray, which the pickle passes to _reconstruct and never calls.
_NDARRAY = _Callable("numpy.ndarray", _not_callable)


def _latin1_bytes(text, encoding="utf-8", errors="strict") -> bytes:
    """_codecs.encode as pickle protocol 2 uses it for bytes, and for nothing else."""
    if not isinstance(text, str) or encoding not in ("latin1", "latin-1") or errors != "strict":
        raise pickle.UnpicklingError("_codecs.encode is allowed only to write bytes as latin1")
    return text.encode("latin1")


# Every global the official files need (Python 2 and numpy 1.x wrote them), and the ones numpy 2 writes when a
# student rebuilds a batch with pickle protocols 2 to 5. Nothing here can run other code or touch files.
_BATCH_GLOBALS = {
    ("numpy.core.multiarray", "_reconstruct"): _Callable("numpy.core.multiarray._reconstruct", _Array),
    ("numpy._core.multiarray", "_reconstruct"): _Callable("numpy._core.multiarray._reconstruct", _Array),
    ("numpy", "ndarray"): _NDARRAY,
    ("numpy", "dtype"): _Callable("numpy.dtype", _Dtype),
    ("numpy.core.numeric", "_frombuffer"): _Callable("numpy.core.numeric._frombuffer", _frombuffer),
    ("numpy._core.numeric", "_frombuffer"): _Callable("numpy._core.numeric._frombuffer", _frombuffer),
    ("_codecs", "encode"): _Callable("_codecs.encode", _latin1_bytes),
}


class _BatchUnpickler(pickle.Unpickler):
    """pickle.Unpickler that finds only _BATCH_GLOBALS: a crafted batch asking for anything else (os.system,
    builtins.open, ...) is refused when the global is looked up, before it can be called."""

    def find_class(self, module, name):
        try:
            return _BATCH_GLOBALS[(module, name)]
        except KeyError:
            raise _RefusedGlobal(f"{module}.{name}") from None

    def persistent_load(self, pid):
        raise pickle.UnpicklingError("persistent references are not CIFAR-10's")


def official_md5s() -> dict[str, str]:
    """The published md5 of each official batch file, as torchvision lists them (read at run time, not copied)."""
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    return dict(TorchvisionCIFAR10.train_list + TorchvisionCIFAR10.test_list)


def read_batch(path: Path, official_md5: str | None = None) -> tuple[np.ndarray, list[int]]:
    """One batch file's images (N x 3 x 32 x 32 uint8) and labels, or a one-line DataError naming the file.

    Official files (their md5 is torchvision's) and rebuilt ones in the same format load alike, through
    _BatchUnpickler; a file that asks for any other global is refused before anything in it runs.
    """
    try:
        with open(path, "rb") as f:
            too_large = os.fstat(f.fileno()).st_size > MAX_BATCH_BYTES
            content = b"" if too_large else f.read(MAX_BATCH_BYTES + 1)  # the limit again: a file may grow
    except OSError as error:
        raise DataError(f"{path}: cannot read the file ({error.strerror or error})") from None
    if too_large or len(content) > MAX_BATCH_BYTES:
        raise DataError(f"{path}: over {MAX_BATCH_BYTES // 2**20} MB is too large for a CIFAR-10 batch (the official ones are 30 MB)")
    md5 = hashlib.md5(content).hexdigest()
    provenance = "it is the official file" if md5 == official_md5 else f"its md5 {md5} is not the official file's"
    try:
        entry = _BatchUnpickler(io.BytesIO(content), encoding="latin1").load()
    except _RefusedGlobal as refused:
        raise DataError(
            f"{path}: refused: it asks to run {refused}, which no CIFAR-10 batch does, and {provenance}. "
            "Delete it and download CIFAR-10 again (python -m lenet download)."
        ) from None
    except Exception as error:  # noqa: BLE001 - a damaged pickle raises UnpicklingError, EOFError, ValueError...
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({_one_line(error)}; {provenance})") from None
    try:
        return _batch_contents(entry)
    except ValueError as error:
        raise DataError(f"{path}: not a readable CIFAR-10 batch ({error}; {provenance})") from None


def _batch_contents(entry) -> tuple[np.ndarray, list[int]]:
    """The images and labels of an unpickled batch, whose keys are str (Python 2's, read as latin1) or bytes."""
    if not isinstance(entry, dict):
        raise ValueError(f"a {type(entry).__name__}, not a dict")
    entry = {key.decode("latin1") if isinstance(key, bytes) else key: value for key, value in entry.items()}
    data, labels = entry.get("data"), entry.get("labels")
    if not isinstance(data, _Array) or data.array is None or data.array.dtype != np.uint8:
        raise ValueError("no 'data' array of uint8 pixels")
    if data.array.size % 3072:
        raise ValueError(f"'data' holds {data.array.size} bytes, not a whole number of 32 x 32 x 3 images")
    images = data.array.reshape(-1, 3, 32, 32)
    if isinstance(labels, _Array) and labels.array is not None and labels.array.ndim == 1:
        labels = labels.array.tolist()
    if not isinstance(labels, list) or not all(type(label) is int and 0 <= label < len(CLASSES) for label in labels):
        raise ValueError("no 'labels' list of class numbers 0 to 9")
    if len(labels) != len(images):
        raise ValueError(f"{len(images)} images but {len(labels)} labels")
    return images, labels


def _decode_batches(files: list[Path]) -> Split:
    md5s = official_md5s()
    images, labels = [], []
    for path in files:
        batch_images, batch_labels = read_batch(path, md5s.get(path.name))
        images.append(batch_images)
        labels.extend(batch_labels)
    return Split(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64))


def _one_line(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__


# -- image folders -------------------------------------------------------------------------------------------


def _list_image_folder(split_dir: Path) -> tuple[list[tuple[str, int, int]], list[int]]:
    """The images of a split in class order as ("class/name", size, mtime_ns), the cache key, and their labels.

    Only regular files count: a FIFO or a device named x.png would block or never end when read. Listing and
    stat-ing the 60,000 files of the real CIFAR-10 takes 0.2 to 0.3 s on the 2-core machine (the stat calls
    0.14 s of it); the whole warm load_cifar10 is no slower than when only folder mtimes were read (0.29 s
    against 0.36 to 0.51 s, measured alternately), as no Path object is made per file any more.
    """
    if not split_dir.is_dir():
        raise DataError(f"{split_dir} is missing: an image folder needs train/<class>/ and test/<class>/")
    folders = sorted(p.name for p in split_dir.iterdir() if p.is_dir() and not p.name.startswith("."))
    missing = [c for c in CLASSES if c not in folders]
    extra = [name for name in folders if name not in CLASSES]
    if missing or extra:
        parts = []
        if missing:
            parts.append(f"missing class folders: {', '.join(missing)}")
        if extra:
            parts.append(f"unexpected folders: {', '.join(extra)}")
        raise DataError(f"{split_dir}: {'; '.join(parts)} (expected exactly {', '.join(CLASSES)})")
    stamps, labels = [], []
    for label, name in enumerate(CLASSES):
        with os.scandir(split_dir / name) as entries:
            images = sorted(
                (entry.name, entry) for entry in entries
                if not entry.name.startswith(".") and os.path.splitext(entry.name)[1].lower() in IMAGE_EXTENSIONS
                and entry.is_file()  # follows links; False for FIFOs, sockets and devices
            )
        if not images:
            raise DataError(f"{split_dir / name} holds no images")
        for file_name, entry in images:
            info = entry.stat()
            stamps.append((f"{name}/{file_name}", info.st_size, info.st_mtime_ns))
        labels.extend([label] * len(images))
    return stamps, labels


def _decode_one(path: Path | str) -> np.ndarray | None:
    """The image as uint8 3 x 32 x 32, or None when it is not 32 x 32 (the size is read before any decoding)."""
    try:
        with Image.open(path, formats=IMAGE_FORMATS) as image:
            if image.size != (32, 32):
                return None
            return np.asarray(image.convert("RGB"), dtype=np.uint8).transpose(2, 0, 1)
    except Exception as error:  # noqa: BLE001 - reported with the file's name below
        raise DataError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None


DECODE_CHUNK = 2048  # images a worker decodes between two progress reports


def _decode_files(data_dir: Path, listed: dict[str, tuple[list[tuple[str, int, int]], list[int]]], progress=None) -> dict[str, Split]:
    """Every image of the listed splits: the small JPEGs in worker processes (lenet/jpegs.py), then the rest with
    PIL in threads (its decoder releases the GIL), reporting as they go."""
    files, ranges = [], {}
    for split, (stamps, _) in listed.items():
        folder = str(data_dir / split)
        ranges[split] = (len(files), len(files) + len(stamps))
        files.extend(os.path.join(folder, name) for name, _, _ in stamps)  # not Paths: 60,000 of them take a second
    decoded, lock = 0, threading.Lock()

    def report(done: int) -> None:
        if progress:
            progress(done / len(files), f"Decoding CIFAR-10 from {data_dir}: {done:,} of {len(files):,} images")

    def reported_by_workers(done: int) -> None:
        nonlocal decoded
        decoded = done
        report(done)

    pixels, by_pil = decode_jpegs(files, DECODE_CHUNK, reported_by_workers)
    wrong: list[int] = []  # the images not 32 x 32

    def decode_with_pil(start: int) -> None:
        nonlocal decoded
        for i in by_pil[start:start + DECODE_CHUNK]:
            array = _decode_one(files[i])
            if array is None:
                wrong.append(i)
            else:
                pixels[i] = array
        with lock:
            decoded += len(by_pil[start:start + DECODE_CHUNK])
            report(decoded)

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        list(pool.map(decode_with_pil, range(0, len(by_pil), DECODE_CHUNK)))
    if wrong:
        first = min(wrong)
        split = next(split for split, (start, stop) in ranges.items() if start <= first < stop)
        raise _wrong_sizes(data_dir / split, [files[i] for i in sorted(wrong) if ranges[split][0] <= i < ranges[split][1]])
    # Each split a tensor over its own rows of the workers' memory (from_numpy takes only those bytes: a cache holds
    # its own split, not both).
    return {split: Split(torch.from_numpy(pixels[start:stop]), torch.tensor(listed[split][1], dtype=torch.int64))
            for split, (start, stop) in ranges.items()}


def _wrong_sizes(split_dir: Path, wrong: list[str]) -> DataError:
    """Refused rather than resized: a silent resize would train on images unlike CIFAR-10's and hide the mistake."""
    with Image.open(wrong[0], formats=IMAGE_FORMATS) as image:
        width, height = image.size
    count = f"{len(wrong):,} image{'s' if len(wrong) > 1 else ''} in {split_dir} {'are' if len(wrong) > 1 else 'is'}"
    return DataError(
        f"{wrong[0]}: {width} x {height} pixels; {count} not 32 x 32 like CIFAR-10's. "
        "Resize them to 32 x 32 (for example with PIL's Image.resize) or move them out of the folder."
    )


# The tensor caches this process is writing, by path. The data is returned as soon as it is decoded, and its cache
# written behind it (0.4 s for the training split on the 2-core machine).
# The writers are not daemons: the interpreter waits for them at exit.
_cache_writes: dict[Path, threading.Thread] = {}
_cache_writes_lock = threading.Lock()


def finish_cache_writes() -> None:
    """Wait until every tensor cache this process is writing is on disk: before another process reads it."""
    with _cache_writes_lock:
        writes = list(_cache_writes.values())
    for thread in writes:
        thread.join()


def _cache_path(fingerprint) -> Path:
    return cache_dir() / f"cifar10-{hashlib.sha1(repr(fingerprint).encode()).hexdigest()[:16]}.pt"


def _read_cache(path: Path) -> Split | None:
    """The split cached at path (memory-mapped), or None when there is none or it is damaged (then rebuilt)."""
    with _cache_writes_lock:
        writing = _cache_writes.get(path)
    if writing is not None:
        writing.join()
    if path.is_file():
        try:
            entry = torch.load(path, weights_only=True, mmap=True)
            return Split(entry["images"], entry["labels"])
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            pass
    return None


def _write_cache_behind(path: Path, split: Split) -> None:
    """Write the split's cache in a thread of its own: the data is ready before its cache is."""

    def write() -> None:
        try:
            atomic_write(path, lambda tmp: torch.save({"images": split.images.contiguous(), "labels": split.labels}, tmp))
        except OSError:
            pass  # no writable cache: still correct, only slower next time
        finally:
            with _cache_writes_lock:
                _cache_writes.pop(path, None)

    writer = threading.Thread(target=write, name=f"write-{path.name}")
    with _cache_writes_lock:
        _cache_writes[path] = writer
    writer.start()


def download_cifar10(data_dir: Path | str, progress=None) -> None:
    """Download and extract the original CIFAR-10 through torchvision into data_dir.

    progress(fraction, message) is called from a watcher thread while the archive grows.
    Raises DataError with one line when the network or the folder fails.
    """
    from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

    data_dir = Path(data_dir)
    try:
        data_dir.mkdir(parents=True, exist_ok=True)
    except OSError as error:
        raise DataError(f"Cannot create the data folder {data_dir}: {error.strerror or error}") from None
    archive = data_dir / ARCHIVE_NAME
    done = threading.Event()

    def watch():
        while not done.wait(0.25):
            size = archive.stat().st_size if archive.exists() else 0
            if progress:
                progress(min(size / ARCHIVE_BYTES, 1.0), f"Downloading CIFAR-10: {size / 1e6:.1f} of {ARCHIVE_BYTES / 1e6:.0f} MB")

    watcher = threading.Thread(target=watch, daemon=True)
    watcher.start()
    try:
        TorchvisionCIFAR10(root=str(data_dir), train=True, download=True)
    except Exception as error:  # noqa: BLE001 - network, disk and checksum failures all become one line
        reason = getattr(error, "reason", None) or getattr(error, "strerror", None) or error
        raise DataError(
            f"Could not download CIFAR-10 from {TorchvisionCIFAR10.url} into {data_dir}: {reason}. "
            "Check the network connection, or copy CIFAR-10 into that folder."
        ) from None
    finally:
        done.set()
        watcher.join()
    if progress:
        progress(1.0, "CIFAR-10 is ready")


def train_validation_split(n: int, validation_size: int, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    """Indices of a fixed held-out validation set and of the rest, for choosing recipes without the test set."""
    order = torch.randperm(n, generator=torch.Generator().manual_seed(seed))
    return order[validation_size:], order[:validation_size]

