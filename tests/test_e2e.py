"""The app in a real Chromium against a real `streamlit run app.py`, on the real CIFAR-10.

The tests run in file order on one server: the first trains a short run through the Train page, and the
others use that run's checkpoint (the server is pointed at a missing pretrained checkpoint, so nothing else
is there). Screenshots of every page go to test-artifacts/screenshots/.
"""

import io
import re
from pathlib import Path

import pytest
from PIL import Image, ImageDraw

from tests.loadtest import streamlit_server

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots"
PAGES = {"overview": "", "dataset": "dataset", "model": "model", "train": "train", "evaluate": "evaluate", "classify": "classify"}
TIMEOUT_MS = 60_000


@pytest.fixture(scope="module")
def server(tmp_path_factory, cifar_dir):
    """`streamlit run app.py` on a free port, with fresh runs and no pretrained checkpoint; stopped at the end."""
    tmp = tmp_path_factory.mktemp("e2e")
    with streamlit_server(tmp, cifar_dir, start_timeout=60, env={"LENET_CHECKPOINT": str(tmp / "no-such.pt")}) as running:
        yield running.url




@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1600, "height": 1000})
    context.set_default_timeout(TIMEOUT_MS)
    yield context.new_page()
    context.close()


def open_page(page, server: str, name: str, ready: str) -> None:
    """Go to a page and wait until the text `ready` shows, i.e. the script got that far."""
    page.goto(f"{server}/{PAGES[name]}")
    page.get_by_text(ready, exact=False).first.wait_for()


def assert_no_errors(page, allowed: str | None = None) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]').all_inner_texts()
    errors = [text for text in page.locator('[data-testid="stAlertContentError"]').all_inner_texts() if not (allowed and allowed in text)]
    assert errors == []


def screenshot(page, name: str) -> None:
    """The whole page: the viewport is stretched to the main area's height first (it scrolls inside the page)."""
    SCREENSHOTS.mkdir(parents=True, exist_ok=True)
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": 1600, "height": max(1000, min(height, 8000))})
    page.wait_for_timeout(500)
    page.screenshot(path=str(SCREENSHOTS / f"{name}.png"))
    page.set_viewport_size({"width": 1600, "height": 1000})


def test_a_training_run_updates_live_and_stops(page, server):
    open_page(page, server, "train", "Start training")
    page.get_by_role("spinbutton", name="Training images").fill("5000")
    page.get_by_role("spinbutton", name="Epochs").fill("8")
    page.get_by_role("spinbutton", name="Epochs").press("Tab")
    page.get_by_role("button", name="Start training").click()

    progress = page.locator('[data-testid="stProgress"]')
    # The first steps (the server may still be decoding CIFAR-10 into its cache when nothing else did it first).
    page.get_by_text(re.compile(r"step [\d,]+ of [\d,]+ · [\d,]+ images/s")).first.wait_for(timeout=240_000)
    first = progress.inner_text()
    page.locator('[data-testid="stVegaLiteChart"]').nth(1).wait_for()  # the loss curve and the accuracy curve
    page.wait_for_function(
        "first => document.querySelector('[data-testid=\"stProgress\"]').innerText !== first", arg=first, timeout=15_000
    )  # no click: the fragment redraws it
    assert progress.inner_text() != first
    # A few epochs: a checkpoint worth evaluating (the training process yields the CPU to the server and the browser).
    page.get_by_text(re.compile(r"Epoch [34] of 8")).first.wait_for(timeout=180_000)
    screenshot(page, "train-live")

    page.locator('[data-testid="stMain"]').get_by_role("button", name="Stop").click()  # not the status widget's Stop
    page.get_by_text(re.compile(r"Stopped at step [\d,]+")).first.wait_for(timeout=10_000)
    page.get_by_role("button", name="Resume").wait_for()  # drawn by the full rerun that follows the end of the run
    assert_no_errors(page)
    screenshot(page, "train-stopped")


@pytest.mark.parametrize(
    "name, ready",
    [
        ("overview", "The five steps"),
        ("dataset", "Before and after normalization"),
        ("model", "62,006"),
        ("train", "All runs"),
        ("evaluate", "Test images and what the network said"),
        ("classify", "A photo (JPEG, PNG, WebP, BMP or GIF)"),
    ],
)
def test_every_page_renders_without_errors(page, server, name, ready):
    open_page(page, server, name, ready)
    page.wait_for_timeout(1500)  # charts and images settle
    assert_no_errors(page)
    screenshot(page, name)


def photo(color=(200, 30, 30)) -> bytes:
    image = Image.new("RGB", (480, 320), "skyblue")
    ImageDraw.Draw(image).ellipse((140, 60, 340, 260), fill=color)
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()


def test_an_uploaded_photo_gets_probabilities_and_a_non_image_a_message(page, server):
    open_page(page, server, "classify", "A photo (JPEG, PNG, WebP, BMP or GIF)")
    uploader = page.locator('[data-testid="stFileUploaderDropzoneInput"]')
    uploader.set_input_files(files=[{"name": "ball.png", "mimeType": "image/png", "buffer": photo()}])
    page.get_by_text("It says:").wait_for()
    page.get_by_text("what the network sees: 32 × 32 pixels").wait_for()
    page.locator('[data-testid="stVegaLiteChart"]').first.wait_for()
    assert_no_errors(page)
    screenshot(page, "classify-upload")

    uploader.set_input_files(files=[{"name": "notes.jpg", "mimeType": "image/jpeg", "buffer": b"these are notes, not a photo"}])
    page.locator('[data-testid="stAlertContentError"]').filter(has_text="notes.jpg").wait_for()
    assert "not an image" in page.locator('[data-testid="stAlertContentError"]').inner_text()
    assert_no_errors(page, allowed="notes.jpg")
    screenshot(page, "classify-not-an-image")


def test_a_deep_link_as_a_servers_first_request_goes_through_the_router(browser, tmp_path, cifar_dir):
    """A browser reconnecting to /classify after a restart: the server's first script run must still use app.py's
    navigation (its page titles), not Streamlit's old pages-folder mode (every file of pages/ as a page)."""
    with streamlit_server(tmp_path, cifar_dir, start_timeout=60) as fresh:
        context = browser.new_context(viewport={"width": 1600, "height": 1000})
        context.set_default_timeout(TIMEOUT_MS)
        page = context.new_page()
        page.goto(f"{fresh.url}/classify")
        page.get_by_text("A photo (JPEG, PNG, WebP, BMP or GIF)").wait_for()
        navigation = page.locator('[data-testid="stSidebarNav"]').inner_text().split()
        context.close()
    titles = ["Overview", "Dataset", "Model", "Inside", "Train", "Evaluate", "Classify"]  # "Inside the network"
    assert [word for word in navigation if word[0].isupper()] == titles
    assert page.url.endswith("/classify")
