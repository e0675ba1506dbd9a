"""torchvision's CIFAR-10 batches are pickles: they load through a restricted unpickler, and one that would run
code is refused before anything in it runs, through load_cifar10 and through the command line.

Every batch is written here: in the official format (Python 2's pickle protocol 2, as the published files are),
rebuilt with today's pickle, or crafted to attack.
"""

import hashlib
import io
import os
import pickle
import pickletools
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

from lenet.data import BATCHES_FOLDER, DataError, load_cifar10, official_md5s, read_batch

REPO = Path(__file__).resolve().parents[1]
BATCH_NAMES = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]


class Python2Pickler(pickle._Pickler):
    """Writes str and bytes as Python 2's str (SHORT_BINSTRING, BINSTRING), as the official files were written."""

    dispatch = pickle._Pickler.dispatch.copy()

    def save_python2_str(self, obj):
        data = obj.encode("latin1") if isinstance(obj, str) else obj
        if len(data) < 256:
            self.write(pickle.SHORT_BINSTRING + bytes([len(data)]) + data)
        else:
            self.write(pickle.BINSTRING + struct.pack("<i", len(data)) + data)
        self.memoize(obj)

    dispatch[str] = save_python2_str
    dispatch[bytes] = save_python2_str


def official_format(entry: dict) -> bytes:
    """A pickle like the published batch files: protocol 2, Python 2 strings, numpy 1.x's module names."""
    buffer = io.BytesIO()
    Python2Pickler(buffer, protocol=2).dump(entry)
    return buffer.getvalue().replace(b"cnumpy._core.multiarray\n_reconstruct\n", b"cnumpy.core.multiarray\n_reconstruct\n")


def globals_of(content: bytes) -> set[str]:
    return {arg.replace(" ", ".") for op, arg, _ in pickletools.genops(content) if op.name == "GLOBAL"}


def batch_entry(index: int, n: int = 20, keys=str) -> dict:
    rng = np.random.default_rng(index)
    return {
        keys("batch_label"): keys(f"training batch {index} of 5"),
        keys("labels"): [int(label) for label in rng.integers(0, 10, n)],
        keys("data"): rng.integers(0, 256, (n, 3072), dtype=np.uint8),
        keys("filenames"): [keys(f"image_{index}_{i}.png") for i in range(n)],
    }


def write_batches(root: Path, content_of=lambda name, entry: official_format(entry)) -> dict[str, dict]:
    folder = root / BATCHES_FOLDER
    folder.mkdir(parents=True)
    entries = {}
    for index, name in enumerate(BATCH_NAMES, start=1):
        entries[name] = batch_entry(index)
        (folder / name).write_bytes(content_of(name, entries[name]))
    return entries


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    monkeypatch.setenv("LENET_CACHE", str(tmp_path / "cache"))


class WritesMarker:
    """Unpickling it would create a file: what a crafted data_batch_1 could do with any code at all."""

    def __init__(self, marker: Path, how: str):
        self.marker, self.how = marker, how

    def __reduce__(self):
        if self.how == "open":
            return open, (str(self.marker), "w")
        if self.how == "system":
            return os.system, (f"touch {self.marker}",)
        return eval, (f"open({str(self.marker)!r}, 'w')",)


# -- what loads ---------------------------------------------------------------------------------------------


def test_the_official_format_needs_only_numpy_globals_and_loads(tmp_path):
    entries = write_batches(tmp_path)
    content = (tmp_path / BATCHES_FOLDER / "test_batch").read_bytes()
    assert content.startswith(b"\x80\x02")  # protocol 2, as the published files
    assert globals_of(content) == {"numpy.core.multiarray._reconstruct", "numpy.ndarray", "numpy.dtype"}
    data = load_cifar10(tmp_path)
    train = [entries[name] for name in BATCH_NAMES[:5]]
    assert torch.equal(data.train.images, torch.from_numpy(np.concatenate([e["data"] for e in train]).reshape(-1, 3, 32, 32)))
    assert data.train.labels.tolist() == [label for e in train for label in e["labels"]]
    assert torch.equal(data.test.images, torch.from_numpy(entries["test_batch"]["data"].reshape(-1, 3, 32, 32)))


@pytest.mark.parametrize("protocol", [2, 3, 4, 5])
@pytest.mark.parametrize("keys", [str, str.encode], ids=["str keys", "bytes keys"])
def test_batches_rebuilt_with_todays_pickle_load_too(tmp_path, protocol, keys):
    entry = batch_entry(1, keys=keys)
    path = tmp_path / "data_batch_1"
    path.write_bytes(pickle.dumps(entry, protocol=protocol))
    images, labels = read_batch(path)
    assert np.array_equal(images.reshape(-1, 3072), entry[keys("data")]) and labels == entry[keys("labels")]


def test_official_files_are_recognised_by_torchvisions_md5(tmp_path):
    assert official_md5s()["data_batch_1"] == "c99cafc152244af753f735de768cd75f"  # as published with CIFAR-10
    assert official_md5s()["test_batch"] == "40351d587109b95175f43aff81a1287e"
    path = tmp_path / "data_batch_1"
    path.write_bytes(official_format({"data": np.zeros((1, 3072), np.uint8), "labels": [11]}))  # label 11: unusable
    with pytest.raises(DataError, match="is not the official file's"):
        read_batch(path, official_md5s()["data_batch_1"])
    with pytest.raises(DataError, match="it is the official file"):
        read_batch(path, hashlib.md5(path.read_bytes()).hexdigest())


# -- what is refused ----------------------------------------------------------------------------------------


@pytest.mark.parametrize("how, named", [("open", "io.open"), ("system", "posix.system"), ("eval", "__builtin__.eval")])
def test_a_batch_that_would_run_code_is_refused_before_it_runs(tmp_path, how, named):
    marker = tmp_path / "marker"

    def crafted(name, entry):
        if name == "data_batch_1":
            entry = {"attack": WritesMarker(marker, how), **entry}
        return official_format(entry)

    write_batches(tmp_path / "data", crafted)
    with pytest.raises(DataError) as caught:
        load_cifar10(tmp_path / "data")
    message = str(caught.value)
    assert message.startswith(str(tmp_path / "data" / BATCHES_FOLDER / "data_batch_1")) and "\n" not in message
    assert f"it asks to run {named}" in message and "is not the official file's" in message
    assert not marker.exists()


def test_the_command_line_refuses_it_in_one_line_with_status_2(tmp_path):
    marker = tmp_path / "marker"
    write_batches(tmp_path / "data", lambda name, entry: pickle.dumps(
        {**entry, "labels": WritesMarker(marker, "open")} if name == "data_batch_1" else entry, protocol=2))
    out = subprocess.run(
        [sys.executable, "-m", "lenet", "evaluate", "--data", str(tmp_path / "data")],
        cwd=REPO, capture_output=True, text=True, timeout=300, env={**os.environ, "LENET_CACHE": str(tmp_path / "cache")},
    )
    assert out.returncode == 2, out.stderr
    assert len(out.stderr.strip().splitlines()) == 1 and "Traceback" not in out.stderr
    assert "data_batch_1" in out.stderr and "io.open" in out.stderr
    assert not marker.exists()


def hand_written(*opcodes: bytes) -> bytes:
    return b"\x80\x02" + b"".join(opcodes) + b"."


@pytest.mark.parametrize(
    "content, problem",
    [
        (pickle.dumps({"data": np.array([1, "x"], dtype=object), "labels": [0]}, protocol=2), "not an integer type"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.float32), "labels": [0, 1]}, protocol=4), "not an integer type"),
        (pickle.dumps({"data": np.zeros((2, 3000), np.uint8), "labels": [0, 1]}, protocol=4), "not a whole number"),
        (pickle.dumps({"data": np.zeros((2, 3072), np.uint8), "labels": [0]}, protocol=4), "2 images but 1 labels"),
        (pickle.dumps({"data": np.zeros((1, 3072), np.uint8), "labels": [10]}, protocol=4), "class numbers 0 to 9"),
        (pickle.dumps([np.zeros((1, 3072), np.uint8)], protocol=4), "a list, not a dict"),
        (pickle.dumps({"labels": [0]}, protocol=4), "no 'data' array"),
        # numpy.dtype handed out, then modified by BUILD: refused, and it stays usable by the next file.
        (hand_written(b"cnumpy\ndtype\n", b"(X\x02\x00\x00\x00u1t", b"R", b"}", b"b"), "malformed array type"),
        # _reconstruct with something other than numpy.ndarray.
        (hand_written(b"cnumpy.core.multiarray\n_reconstruct\n", b"(K\x01K\x01K\x01t", b"R"), "builds only numpy arrays"),
        # The allowed callables cannot be changed by the pickle.
        (hand_written(b"c_codecs\nencode\n", b"}", b"b"), "tries to modify _codecs.encode"),
        (hand_written(b"c_codecs\nencode\n", b"X\x01\x00\x00\x00xX\x0a\x00\x00\x00zlib_codec\x86", b"R"), "only to write bytes as latin1"),
        (b"this is not a pickle at all", "not a readable CIFAR-10 batch"),
        (b"", "not a readable CIFAR-10 batch"),
    ],
    ids=["object dtype", "float pixels", "partial image", "label count", "label 10", "a list", "no data",
         "dtype modified", "reconstruct other type", "callable modified", "other codec", "not a pickle", "empty"],
)
def test_malformed_batches_are_one_line_errors_naming_the_file(tmp_path, content, problem):
    path = tmp_path / "data_batch_3"
    path.write_bytes(content)
    with pytest.raises(DataError) as caught:
        read_batch(path)
    message = str(caught.value)
    assert message.startswith(f"{path}: ") and problem in message and "\n" not in message
    write_batches(tmp_path / "after")  # an attempt leaves nothing behind: the next good batches still load
    assert len(load_cifar10(tmp_path / "after").test) == 20


def test_a_huge_file_is_refused_before_it_is_read_whole(tmp_path):
    path = tmp_path / "data_batch_1"
    with open(path, "wb") as f:
        f.truncate(300 * 2**20)  # sparse: nothing written
    with pytest.raises(DataError, match="too large for a CIFAR-10 batch"):
        read_batch(path)
