"""Shared fixtures: the real CIFAR-10 (LENET_DATA, else ../shared/cifar10-jpeg), loaded once per test session."""

import os
from pathlib import Path

import pytest

from lenet.data import load_cifar10

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "cifar10-jpeg"


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    path = Path(os.environ.get("LENET_DATA") or SHARED_CIFAR)
    if not (path / "train").is_dir() and not (path / "cifar-10-batches-py").is_dir():
        pytest.fail(f"the real CIFAR-10 is needed at {path}: set LENET_DATA to a copy")
    return path


@pytest.fixture(scope="session")
def cifar(cifar_dir):
    return load_cifar10(cifar_dir)
