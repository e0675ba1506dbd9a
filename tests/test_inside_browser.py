"""Inside the network in a real Chromium against a real `streamlit run app.py`: a test image, an upload, the time
machine's epoch slider on a real short run, at a desktop and a phone size. Screenshots go to
test-artifacts/screenshots/inside/."""

from pathlib import Path

import pytest

from lenet.data import CIFAR10, load_cifar10
from lenet.runs import FINISHED, RunRegistry
from lenet.train import preset
from tests.browser import photo, whole_page_screenshot
from tests.loadtest import streamlit_server

pytestmark = pytest.mark.e2e

SCREENSHOTS = Path(__file__).resolve().parents[1] / "test-artifacts" / "screenshots" / "inside"
TIMEOUT_MS = 90_000


@pytest.fixture(scope="module")
def server(tmp_path_factory, cifar_dir):
    """A server whose runs folder holds one finished 3-epoch run (so its epochs/ has three checkpoints)."""
    workdir = tmp_path_factory.mktemp("inside")
    data = load_cifar10(cifar_dir)
    registry = RunRegistry(workdir / "runs", lambda: CIFAR10(data.train, data.test, data.source), threads=1)
    run_id = registry.start(preset("quick", epochs=3, train_subset=2_000, batch_size=32))
    registry.wait(300)
    assert registry.snapshot(run_id).state == FINISHED
    with streamlit_server(workdir, cifar_dir, start_timeout=90) as running:
        yield running.url




def new_page(browser, width: int, height: int, mobile: bool = False):
    context = browser.new_context(viewport={"width": width, "height": height}, is_mobile=mobile, has_touch=mobile)
    context.set_default_timeout(TIMEOUT_MS)
    return context, context.new_page()


def no_errors(page) -> None:
    assert page.locator('[data-testid="stException"]').count() == 0, page.locator('[data-testid="stException"]').all_inner_texts()
    alerts = page.locator('[data-testid="stAlertContentError"]')
    assert alerts.count() == 0, alerts.all_inner_texts()


def screenshot(page, name: str) -> None:
    whole_page_screenshot(page, SCREENSHOTS / f"{name}.png", max_height=12000)



def test_a_test_image_then_an_upload_show_every_layer_and_the_arithmetic(browser, server):
    context, page = new_page(browser, 1440, 900)
    page.goto(f"{server}/inside")
    for heading in ("1 · The input", "2 · Convolutions and pooling", "4 · One value, worked out by hand", "5 · Why did it say that?"):
        page.get_by_text(heading).first.wait_for()
    assert page.locator('[data-testid="stImage"]').count() >= 10  # the input, its channels, maps, filters, attributions
    # The shipped model answers from the image and its mirror image: the page says so, and which answer that gives.
    flips = page.locator('[data-testid="stAlertContentInfo"]').filter(has_text="its mirror image together")
    flips.first.wait_for()
    assert "%" in flips.first.inner_text()
    no_errors(page)
    screenshot(page, "desktop-test-image")

    page.get_by_text("Upload a photo").first.click()
    page.locator('[data-testid="stFileUploaderDropzoneInput"]').set_input_files(
        files=[{"name": "ball.png", "mimeType": "image/png", "buffer": photo()}])
    page.get_by_text("your photo").first.wait_for()
    page.get_by_text("5 · Why did it say that?").wait_for()
    no_errors(page)
    screenshot(page, "desktop-upload")
    context.close()


def test_the_epoch_slider_of_a_real_run_changes_what_the_network_says(browser, server):
    context, page = new_page(browser, 1440, 900)
    page.goto(f"{server}/inside")
    page.get_by_text("1 · The input").wait_for()
    model_box = page.locator('[data-testid="stSelectbox"]').filter(has_text="Model").first
    model_box.click()
    page.get_by_role("option").filter(has_text="Run 1").first.click()
    page.get_by_text("6 · The time machine").wait_for()
    slider = page.get_by_role("slider").first
    slider.wait_for()
    last = page.get_by_text("Epoch").first.inner_text()
    before = page.locator('[data-testid="stMain"]').inner_text()
    slider.focus()
    slider.press("Home")  # to epoch 1
    page.wait_for_function("b => document.querySelector('[data-testid=\"stMain\"]').innerText !== b", arg=before)
    page.wait_for_timeout(1500)
    assert page.locator('[data-testid="stMain"]').inner_text() != before, last
    no_errors(page)
    screenshot(page, "desktop-epoch-1")
    context.close()


def test_the_page_fits_a_phone(browser, server):
    context, page = new_page(browser, 390, 844, mobile=True)
    page.goto(f"{server}/inside")
    page.get_by_text("5 · Why did it say that?").wait_for()
    overflow = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollWidth - window.innerWidth")
    assert overflow <= 1, f"the page is {overflow} px wider than the phone"
    no_errors(page)
    screenshot(page, "phone")
    context.close()


# Each colour legend (52 pixels tall): whether its corner is see-through, and the lightest and darkest of its written
# pixels (under the bar), read back from the images the browser shows.
LEGENDS = """() => [...document.querySelectorAll('[data-testid="stMain"] img')]
  .filter(img => img.complete && img.naturalHeight === 52)
  .map(img => {
    const canvas = document.createElement('canvas');
    canvas.width = img.naturalWidth; canvas.height = img.naturalHeight;
    const pen = canvas.getContext('2d');
    pen.drawImage(img, 0, 0);
    const data = pen.getImageData(0, 20, canvas.width, 32).data;
    const written = [];
    for (let i = 0; i < data.length; i += 4) if (data[i + 3] > 200) written.push((data[i] + data[i + 1] + data[i + 2]) / 3);
    return {corner: pen.getImageData(0, 0, 1, 1).data[3], lightest: Math.max(...written), darkest: Math.min(...written),
            shown: img.getBoundingClientRect().width / img.naturalWidth};
  })"""


@pytest.mark.parametrize("scheme", ["light", "dark"])
def test_the_colour_legends_sit_on_the_page_in_either_theme(browser, server, scheme):
    # 853 pixels wide, as 1280 x 720 at 150% zoom; as tall as the page, so that every picture loads (the browser loads
    # those far below the fold lazily).
    context = browser.new_context(viewport={"width": 853, "height": 12000}, color_scheme=scheme)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    page.goto(f"{server}/inside")
    page.get_by_text("5 · Why did it say that?").wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stMain\"] img')]"
                           ".filter(i => i.complete && i.naturalHeight === 52).length >= 9")  # every legend drawn
    legends = page.evaluate(LEGENDS)
    assert len(legends) >= 9  # input, conv1, pool1, conv2, pool2, fc1, fc2, then saliency and occlusion twice
    assert all(legend["corner"] == 0 for legend in legends), legends  # no white block in the dark theme
    assert all(legend["shown"] > 0.9 for legend in legends), legends  # at (about) their own size, their writing readable
    if scheme == "dark":
        assert all(legend["lightest"] > 200 for legend in legends), legends  # light writing on the dark page
    else:
        assert all(legend["darkest"] < 60 for legend in legends), legends
    no_errors(page)
    context.close()


def test_the_logits_table_keeps_its_three_columns_on_a_projector(browser, server):
    """1280 x 720 at 150% zoom: 853 CSS pixels with the sidebar open. In two fixed columns the table was 210 pixels wide
    and hid its probability column; it keeps its own width now, the chart going below it."""
    context, page = new_page(browser, 853, 480)
    page.goto(f"{server}/inside")
    page.get_by_text("5 · Why did it say that?").wait_for()
    table = page.locator('[data-testid="stDataFrame"]').filter(has=page.locator("canvas")).first
    table.scroll_into_view_if_needed()
    box = table.bounding_box()
    chart = page.locator('[data-testid="stVegaLiteChart"]').first.bounding_box()
    assert box["width"] >= 300, box
    assert chart["y"] >= box["y"] + box["height"] - 1, (box, chart)  # below the table, not squeezed beside it
    no_errors(page)
    context.close()
