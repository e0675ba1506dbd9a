"""CIFAR-10 as tensors: find the data, decode it once, cache it, download it when absent.

A data folder holds either torchvision's `cifar-10-batches-py` or an image-folder tree
`train/<class>/*` and `test/<class>/*`. Each split is decoded once into a uint8 tensor
N x 3 x 32 x 32 plus int64 labels, and cached outside the data folder (which may be read-only).
"""

import hashlib
import os
import pickle
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from .files import atomic_write

CLASSES = ("airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck")
SPLITS = ("train", "test")
# The walkthrough's transforms.Normalize((0.5, 0.5, 0.5), (0.5, 0.5, 0.5)): pixels to [-1, 1].
WALKTHROUGH_NORMALIZATION = {"mean": [0.5, 0.5, 0.5], "std": [0.5, 0.5, 0.5]}
# Per-channel statistics of the 50,000 training images, for recipes that standardize instead.
CIFAR10_NORMALIZATION = {"mean": [0.4914, 0.4822, 0.4465], "std": [0.2470, 0.2435, 0.2616]}
IMAGE_EXTENSIONS = {".jpg", ".jpeg", ".png", ".bmp", ".gif", ".webp", ".tif", ".tiff", ".ppm"}
BATCHES_FOLDER = "cifar-10-batches-py"
ARCHIVE_NAME = "cifar-10-python.tar.gz"
ARCHIVE_BYTES = 170_498_071


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
    """Both splits as tensors, from the cache when it is fresh. Downloads first when asked and absent."""
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
    train, test = (load_split(data_dir, split, layout) for split in SPLITS)
    return CIFAR10(train=train, test=test, source=f"{layout} at {data_dir.resolve()}")


def load_split(data_dir: Path, split: str, layout: str | None = None) -> Split:
    layout = layout or detect_layout(data_dir)
    if layout == "torchvision":
        files = [data_dir / BATCHES_FOLDER / name for name in _batch_names(split)]
        missing = [str(f) for f in files if not f.is_file()]
        if missing:
            raise DataError(f"{data_dir}: missing CIFAR-10 batch files {', '.join(missing)}")
        fingerprint = [(str(f.resolve()), f.stat().st_size, f.stat().st_mtime_ns) for f in files]
        return _cached(fingerprint, lambda: _decode_batches(files))
    if layout == "image-folder":
        files, labels = _list_image_folder(Path(data_dir) / split)
        split_dir = (Path(data_dir) / split).resolve()
        # Adding, removing or renaming files changes a folder's mtime; the count guards the rest.
        fingerprint = [str(split_dir), len(files)] + [(c, (split_dir / c).stat().st_mtime_ns) for c in CLASSES]
        return _cached(fingerprint, lambda: _decode_files(files, labels))
    raise DataError(f"No CIFAR-10 in {data_dir}")


def _batch_names(split: str) -> list[str]:
    return [f"data_batch_{i}" for i in range(1, 6)] if split == "train" else ["test_batch"]


def _decode_batches(files: list[Path]) -> Split:
    images, labels = [], []
    for path in files:
        try:
            with open(path, "rb") as f:
                entry = pickle.load(f, encoding="latin1")  # the official CIFAR-10 format is a pickle
            images.append(np.asarray(entry["data"], dtype=np.uint8).reshape(-1, 3, 32, 32))
            labels.extend(entry["labels"])
        except Exception as error:  # noqa: BLE001 - any failure means the file is unusable
            raise DataError(f"{path}: not a readable CIFAR-10 batch ({error})") from None
    return Split(torch.from_numpy(np.concatenate(images)), torch.tensor(labels, dtype=torch.int64))


def _list_image_folder(split_dir: Path) -> tuple[list[Path], list[int]]:
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
    files, labels = [], []
    for label, name in enumerate(CLASSES):
        names = sorted(
            n for n in os.listdir(split_dir / name)
            if not n.startswith(".") and Path(n).suffix.lower() in IMAGE_EXTENSIONS
        )
        if not names:
            raise DataError(f"{split_dir / name} holds no images")
        files.extend(split_dir / name / n for n in names)
        labels.extend([label] * len(names))
    return files, labels


def _decode_one(path: Path) -> np.ndarray:
    try:
        with Image.open(path) as image:
            image = image.convert("RGB")
            if image.size != (32, 32):
                image = image.resize((32, 32), Image.Resampling.BICUBIC)
            return np.asarray(image, dtype=np.uint8).transpose(2, 0, 1)
    except Exception as error:  # noqa: BLE001 - reported with the file's name below
        raise DataError(f"{path}: not a readable image ({type(error).__name__}: {error})") from None


def _decode_files(files: list[Path], labels: list[int]) -> Split:
    # PIL releases the GIL while decoding, so threads use every core.
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 2) as pool:
        arrays = list(pool.map(_decode_one, files, chunksize=256))
    return Split(torch.from_numpy(np.stack(arrays)), torch.tensor(labels, dtype=torch.int64))


def _cached(fingerprint, decode) -> Split:
    key = hashlib.sha1(repr(fingerprint).encode()).hexdigest()[:16]
    path = cache_dir() / f"cifar10-{key}.pt"
    if path.is_file():
        try:
            entry = torch.load(path, weights_only=True, mmap=True)
            return Split(entry["images"], entry["labels"])
        except Exception:  # noqa: BLE001 - a damaged cache is rebuilt, never trusted
            pass
    split = decode()
    try:
        atomic_write(path, lambda tmp: torch.save({"images": split.images.contiguous(), "labels": split.labels}, tmp))
    except OSError:
        pass  # no writable cache: still correct, only slower next time
    return split


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

