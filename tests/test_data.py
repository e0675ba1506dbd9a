"""The real CIFAR-10 (the shared image folder) and torchvision's download path, served offline from 127.0.0.1."""

import hashlib
import http.server
import io
import pickle
import tarfile
import threading
import time

import numpy as np
import pytest
import torch
from torchvision.datasets import CIFAR10 as TorchvisionCIFAR10

from lenet.data import CLASSES, DataError, detect_layout, load_cifar10


def test_real_cifar10_has_every_image_in_class_order(cifar):
    assert cifar.train.images.shape == (50_000, 3, 32, 32) and cifar.train.images.dtype == torch.uint8
    assert cifar.test.images.shape == (10_000, 3, 32, 32)
    assert cifar.train.class_counts() == [5_000] * 10
    assert cifar.test.class_counts() == [1_000] * 10
    # Folders are read in class order, so labels are sorted: 0 ... 0, 1 ... 1, ..., 9 ... 9.
    assert torch.equal(cifar.test.labels, torch.arange(10).repeat_interleave(1_000))
    # Real photos, not blank tensors: CIFAR-10's mean pixel is about 0.47.
    assert 0.4 < cifar.train.images.float().mean().item() / 255 < 0.55


def test_cached_reload_takes_under_two_seconds(cifar_dir, cifar):
    started = time.perf_counter()
    again = load_cifar10(cifar_dir)
    assert time.perf_counter() - started < 2.0
    assert torch.equal(again.test.images, cifar.test.images)


def _cifar_archive(per_class: int = 2) -> tuple[bytes, dict, dict]:
    """A miniature cifar-10-python.tar.gz in the official format, and the md5s torchvision checks."""
    rng = np.random.default_rng(0)
    files, md5 = {}, {}
    names = [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch"]
    for name in names:
        labels = [c for c in range(10) for _ in range(per_class)]
        entry = {"data": rng.integers(0, 256, (len(labels), 3072), dtype=np.uint8), "labels": labels}
        files[name] = pickle.dumps(entry)
    files["batches.meta"] = pickle.dumps({"label_names": list(CLASSES)})
    md5 = {name: hashlib.md5(content).hexdigest() for name, content in files.items()}
    buffer = io.BytesIO()
    with tarfile.open(fileobj=buffer, mode="w:gz") as tar:
        for name, content in files.items():
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(content)
            tar.addfile(info, io.BytesIO(content))
    return buffer.getvalue(), md5, files


@pytest.fixture
def cifar_server(monkeypatch):
    """Serve a miniature CIFAR-10 archive on 127.0.0.1 and point torchvision's CIFAR10 at it."""
    archive, md5, files = _cifar_archive()

    class Handler(http.server.BaseHTTPRequestHandler):
        def do_GET(self):
            self.send_response(200)
            self.send_header("Content-Length", str(len(archive)))
            self.end_headers()
            self.wfile.write(archive)

        def log_message(self, *args):
            pass

    server = http.server.ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    url = f"http://127.0.0.1:{server.server_address[1]}/cifar-10-python.tar.gz"
    monkeypatch.setattr(TorchvisionCIFAR10, "url", url)
    monkeypatch.setattr(TorchvisionCIFAR10, "tgz_md5", hashlib.md5(archive).hexdigest())
    monkeypatch.setattr(TorchvisionCIFAR10, "train_list", [[f"data_batch_{i}", md5[f"data_batch_{i}"]] for i in range(1, 6)])
    monkeypatch.setattr(TorchvisionCIFAR10, "test_list", [["test_batch", md5["test_batch"]]])
    monkeypatch.setattr(TorchvisionCIFAR10, "meta", {"filename": "batches.meta", "key": "label_names", "md5": md5["batches.meta"]})
    yield files
    server.shutdown()


def test_download_through_torchvision_then_load_the_batches(tmp_path, monkeypatch, cifar_server):
    monkeypatch.setenv("LENET_CACHE", str(tmp_path / "cache"))
    reports = []
    data = load_cifar10(tmp_path / "data", download=True, progress=lambda fraction, message: reports.append(fraction))
    assert detect_layout(tmp_path / "data") == "torchvision"
    assert len(data.train) == 5 * 20 and len(data.test) == 20
    expected = pickle.loads(cifar_server["test_batch"])
    assert torch.equal(data.test.images, torch.from_numpy(expected["data"].reshape(-1, 3, 32, 32)))
    assert data.test.labels.tolist() == expected["labels"]
    assert reports and reports[-1] == 1.0
    # Loading again needs no network and no download.
    assert torch.equal(load_cifar10(tmp_path / "data").test.images, data.test.images)


def test_download_without_network_is_one_clear_line(tmp_path, monkeypatch):
    monkeypatch.setattr(TorchvisionCIFAR10, "url", "http://127.0.0.1:9/cifar-10-python.tar.gz")  # nothing listens on port 9
    with pytest.raises(DataError) as error:
        load_cifar10(tmp_path / "data", download=True)
    message = str(error.value)
    assert "Could not download CIFAR-10" in message and "\n" not in message


def test_a_folder_without_cifar10_says_how_to_get_it(tmp_path):
    with pytest.raises(DataError, match="Download it"):
        load_cifar10(tmp_path)


def test_a_sample_is_of_the_class_asked_and_the_same_for_the_same_seed(cifar):
    cats = cifar.test.sample(16, seed=7, label=CLASSES.index("cat"))
    assert len(cats) == 16 and (cats.labels == CLASSES.index("cat")).all()
    assert torch.equal(cats.images, cifar.test.sample(16, seed=7, label=CLASSES.index("cat")).images)
    assert not torch.equal(cats.images, cifar.test.sample(16, seed=8, label=CLASSES.index("cat")).images)
    anything = cifar.test.sample(200, seed=1)
    assert len(set(anything.labels.tolist())) == 10  # any class: 200 draws cover all ten
