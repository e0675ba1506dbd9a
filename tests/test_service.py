"""lenet.service.DatasetService: CIFAR-10 loaded or downloaded in a background thread, its state readable at any time."""

import socket
import threading
import time

import pytest
import torchvision

from lenet.data import DataError, load_cifar10
from lenet.service import ABSENT, DOWNLOADING, ERROR, LOADING, READY, DatasetService


def until(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def unused_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]  # nothing listens here once the socket is closed


def test_an_empty_folder_is_absent_and_says_what_to_do(tmp_path):
    service = DatasetService(tmp_path)
    assert service.start_loading() is False
    status = service.status()
    assert status.state == ABSENT and not status.busy and status.fraction is None
    assert str(tmp_path) in status.message and "Download" in status.message
    assert service.get() is None
    with pytest.raises(DataError, match="No CIFAR-10"):
        service.wait()


def test_the_real_dataset_loads_in_the_background(cifar_dir):
    service = DatasetService(cifar_dir)
    assert service.status().state == ABSENT  # nothing is read before start_loading
    assert service.start_loading() is True
    data = service.wait(timeout=300)
    assert (len(data.train), len(data.test)) == (50_000, 10_000)
    assert tuple(data.train.images.shape[1:]) == (3, 32, 32)
    status = service.status()
    assert status.state == READY and "50,000 training and 10,000 test images" in status.message
    assert service.get() is data
    assert service.start_loading() is True and service.get() is data  # loaded once
    assert service.start_download() is False  # nothing to download


def test_get_answers_at_once_while_loading(cifar_dir):
    release = threading.Event()

    def slow_load(data_dir, progress=None):
        release.wait(10)
        return load_cifar10(data_dir)

    service = DatasetService(cifar_dir, load=slow_load)
    service.start_loading()
    started = time.perf_counter()
    assert service.get() is None
    assert service.status().state == LOADING and service.status().busy
    assert service.start_loading() is True  # no second thread
    assert time.perf_counter() - started < 0.5
    release.set()
    assert len(service.wait(timeout=300).test) == 10_000


def test_a_download_without_network_fails_with_one_line(tmp_path, monkeypatch):
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", f"http://127.0.0.1:{unused_port()}/cifar-10-python.tar.gz")
    service = DatasetService(tmp_path / "data")
    assert service.start_download() is True
    with pytest.raises(DataError) as failure:
        service.wait(timeout=60)
    status = service.status()
    assert status.state == ERROR and str(failure.value) == status.message
    assert "Could not download CIFAR-10" in status.message and "\n" not in status.message
    assert service.get() is None
    assert service.start_loading() is False and service.status().state == ABSENT  # looking again finds nothing


def test_download_progress_is_published_then_the_data_loads(tmp_path, cifar_dir):
    """The service reports the downloader's progress as it comes, then loads what was downloaded."""
    halfway, finish = threading.Event(), threading.Event()

    def download(data_dir, progress):
        progress(0.5, "Downloading CIFAR-10: 85.2 of 170 MB")
        halfway.set()
        finish.wait(10)

    service = DatasetService(cifar_dir, download=download)
    service.start_download()
    halfway.wait(10)
    status = service.status()
    assert (status.state, status.fraction, status.message) == (DOWNLOADING, 0.5, "Downloading CIFAR-10: 85.2 of 170 MB")
    assert service.start_download() is False and service.start_loading() is True  # busy: nothing new starts
    finish.set()
    assert len(service.wait(timeout=300).train) == 50_000
    assert service.status().state == READY


def test_an_unexpected_failure_becomes_an_error_state(tmp_path, cifar_dir):
    def broken(data_dir, progress=None):
        raise MemoryError("no room")

    service = DatasetService(cifar_dir, load=broken)
    service.start_loading()
    until(lambda: not service.status().busy)
    assert service.status().state == ERROR
    assert "MemoryError: no room" in service.status().message


def test_a_cold_load_publishes_how_far_decoding_is(cifar_dir, tmp_path, monkeypatch):
    """The pages draw a progress bar from it while the first load decodes the 60,000 images."""
    monkeypatch.setenv("LENET_CACHE", str(tmp_path / "cache"))
    service = DatasetService(cifar_dir)
    service.start_loading()
    seen = set()
    while (status := service.status()).busy:
        if status.fraction is not None:
            seen.add((status.fraction, status.message))
        time.sleep(0.002)
    assert service.status().state == READY
    assert len(seen) >= 3, seen  # 50,000 training images report every 2,048
    assert all(message.startswith(f"Decoding CIFAR-10 from {cifar_dir}") and 0 < fraction <= 1 for fraction, message in seen)
