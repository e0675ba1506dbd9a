"""Classify and Evaluate (and Model and Dataset on the small screens) in a real Chromium, at the sizes a classroom
uses, in the light and the dark theme: nothing overlaps, no text is cut off, the pixel pictures stay sharp.

One `streamlit run app.py` for the module, with the shipped model. Screenshots of every page and size go to
test-artifacts/screenshots/pages/<size>-<theme>-<page>.png. Chromium comes from conftest's `browser` fixture: skipped
without /usr/bin/chromium, unless LENET_REQUIRE_BROWSER=1.
"""

from pathlib import Path

import pytest

from tests.browser import layout_problems, photo, shipped_model_server, whole_page_screenshot

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots" / "pages"
TIMEOUT_MS = 90_000
SIZES = {
    # A 1920 x 1080 laptop screen at 150% scaling, and a 1280 x 720 one at 150% browser zoom (853 CSS pixels wide).
    "1280x720-scale150": {"viewport": {"width": 1280, "height": 720}, "device_scale_factor": 1.5},
    "1280x720-zoom150": {"viewport": {"width": 853, "height": 480}, "device_scale_factor": 1.5},
    "1440x900": {"viewport": {"width": 1440, "height": 900}},
    "1920x1080": {"viewport": {"width": 1920, "height": 1080}},
    "390x844-phone": {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 3, "is_mobile": True, "has_touch": True},
}
SMALL = ("1280x720-zoom150", "390x844-phone")  # where Model and Dataset are checked too
THEMES = ("light", "dark")
READY = {"classify": "It says:", "evaluate": "Take the model with you", "model": "What the first layer learned",
         "dataset": "Before and after normalization"}

# The page's main blocks, whose boxes must not overlap, and its text, which must not be cut: JavaScript run in the page.
DARK_BACKGROUND = """() => {
  const app = document.querySelector('[data-testid="stApp"]');
  const [r, g, b] = getComputedStyle(app).backgroundColor.match(/\\d+/g).map(Number);
  return 0.2126 * r + 0.7152 * g + 0.0722 * b < 128;
}"""
# The pixel pictures shown: sent as PNG at a whole multiple of 32 pixels, drawn pixelated, never shrunk into a blur.
PIXEL_PICTURES = """() => [...document.querySelectorAll('[class*="st-key-pixels"] img')]
  .filter(img => img.getBoundingClientRect().width > 0)
  .map(img => ({src: img.currentSrc, natural: img.naturalWidth, shown: img.getBoundingClientRect().width,
                rendering: getComputedStyle(img).imageRendering}))"""



@pytest.fixture(scope="module")
def server(browser, tmp_path_factory, cifar_dir):
    """`streamlit run app.py` with the shipped model and fresh runs; stopped at the end of the module."""
    with shipped_model_server(tmp_path_factory.mktemp("pages"), cifar_dir) as running:
        yield running


def open_page(page, url: str, name: str) -> None:
    page.goto(f"{url}/{name}")
    if name == "classify":
        page.get_by_text("A photo (JPEG, PNG, WebP, BMP or GIF)").wait_for()
        uploader = page.locator('[data-testid="stFileUploader"]').filter(has_text="A photo").locator("input[type=file]")
        uploader.set_input_files(files=[{"name": "ball.png", "mimeType": "image/png", "buffer": photo()}])
    page.get_by_text(READY[name], exact=False).first.wait_for()
    page.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg').first.wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stMain\"] img')].every(i => i.complete)")
    page.wait_for_timeout(700)  # charts size themselves to their containers


@pytest.mark.parametrize("theme", THEMES)
@pytest.mark.parametrize("size", SIZES)
def test_pages_fit_the_screen_in_either_theme(browser, server, size, theme):
    options = SIZES[size]
    context = browser.new_context(**options, color_scheme=theme)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems = {}
    try:
        for name in ("classify", "evaluate", *(("model", "dataset") if size in SMALL else ())):
            open_page(page, server.url, name)
            assert page.locator('[data-testid="stException"]').count() == 0
            assert page.evaluate(DARK_BACKGROUND) == (theme == "dark")
            found = layout_problems(page)
            if found:
                problems[name] = found
            for picture in page.evaluate(PIXEL_PICTURES):
                assert picture["rendering"] == "pixelated" and ".png" in picture["src"], (name, picture)
                assert picture["natural"] % 32 == 0 or name == "model", (name, picture)  # conv1's filters are 5 x 5
                assert picture["shown"] >= picture["natural"] * 0.74, (name, picture)  # never shrunk into a blur
            if name == "evaluate":  # the headline figures whole, never shortened with an ellipsis
                figures = page.locator('[data-testid="stMetric"] *').evaluate_all(
                    "els => els.filter(el => el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1).map(el => el.innerText)")
                assert figures == [], (size, figures)
            if name == "classify":
                answer = page.locator("h1, h2").filter(has_text="It says:").first.bounding_box()
                # The answer above the photo (the main area's first image: the sidebar may hold one of its own).
                assert answer["y"] < page.locator('[data-testid="stMain"] [data-testid="stImage"]').first.bounding_box()["y"]
            whole_page_screenshot(page, SCREENSHOTS / f"{size}-{theme}-{name}.png")
    finally:
        context.close()
    assert not problems, problems


def test_the_download_buttons_build_their_files_when_clicked(browser, server, tmp_path):
    """The files are made when asked for (ONNX, which takes seconds, by a button of its own first): a click downloads
    the walkthrough's .pth, which loads as the walkthrough loads it, the ONNX model and the training script."""
    import torch

    from lenet.model import LeNet5

    context = browser.new_context(viewport={"width": 1440, "height": 900}, accept_downloads=True)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        open_page(page, server.url, "evaluate")
        page.get_by_role("button", name="Export to ONNX").click()
        failed = page.locator('[data-testid="stAlertContentError"]')
        page.get_by_role("button", name="ONNX", exact=True).or_(failed).first.wait_for()
        assert failed.count() == 0, failed.all_inner_texts()
        files = {}
        for label in ("Walkthrough .pth", "ONNX", "Training script .py"):
            with page.expect_download(timeout=TIMEOUT_MS) as download:
                page.get_by_role("button", name=label, exact=True).click()
            files[label] = tmp_path / download.value.suggested_filename
            download.value.save_as(files[label])
    finally:
        context.close()
    net = LeNet5()
    net.load_state_dict(torch.load(files["Walkthrough .pth"], weights_only=True))  # the walkthrough's own loading code
    assert files["ONNX"].suffix == ".onnx" and files["ONNX"].stat().st_size > 200_000  # 62,006 float32 weights and more
    compile(files["Training script .py"].read_text(), files["Training script .py"].name, "exec")
