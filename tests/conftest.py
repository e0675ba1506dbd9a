"""Shared fixtures: the real CIFAR-10 (LENET_DATA, else ../shared/cifar10-jpeg), loaded once per test session."""

import os
import sys
from pathlib import Path

import pytest
import torch

from lenet.data import load_cifar10

REPO = Path(__file__).resolve().parents[1]
SHARED_CIFAR = REPO.parent / "shared" / "cifar10-jpeg"


@pytest.fixture(scope="session")
def cifar_dir() -> Path:
    path = Path(os.environ.get("LENET_DATA") or SHARED_CIFAR)
    if not (path / "train").is_dir() and not (path / "cifar-10-batches-py").is_dir():
        pytest.fail(f"the real CIFAR-10 is needed at {path}: set LENET_DATA to a copy")
    return path


@pytest.fixture
def one_thread():
    """The machine is shared: one thread is faster than two that fight, and the results are the same."""
    before = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(before)


@pytest.fixture(autouse=True)
def release_app_registries():
    """After each test, the app's run registries (AppTest runs the pages in this process) stop their runs and let
    their warm training processes go: kept, every test's fresh runs folder would leave ~700 MB behind (CI ran out of
    memory at ~30 of them)."""
    yield
    resources = sys.modules.get("pages._resources")
    if resources is not None:
        resources._registry.clear()


@pytest.fixture(scope="session")
def cifar(cifar_dir):
    return load_cifar10(cifar_dir)


CHROMIUM = Path("/usr/bin/chromium")  # Debian's: playwright cannot download its own browsers here
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update", "--no-first-run"]


@pytest.fixture(scope="module")
def browser():
    """Chromium through Playwright, one per test module (the load test starts its own Playwright: never two at once).
    Without Chromium the browser tests are skipped, except under LENET_REQUIRE_BROWSER=1 (CI), where that fails."""
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests"
        if os.environ.get("LENET_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (LENET_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()
