"""Every page in Korean in a real Chromium, on a 1440 x 900 screen and a 390 x 844 phone: it renders (no exception), no
text is cut off, and the language survives a page switch through the sidebar; the browser's own language is the default.

One `streamlit run app.py` for the module, with the shipped model. Screenshots go to
test-artifacts/screenshots/ko/<size>-<page>.png (look at them for the Hangul in charts and pictures). Chromium comes
from conftest's `browser` fixture: skipped without /usr/bin/chromium, unless LENET_REQUIRE_BROWSER=1.
"""

from pathlib import Path

import pytest

from tests.browser import layout_problems, photo, shipped_model_server, whole_page_screenshot

pytestmark = pytest.mark.e2e

REPO = Path(__file__).resolve().parents[1]
SCREENSHOTS = REPO / "test-artifacts" / "screenshots" / "ko"
TIMEOUT_MS = 90_000
SIZES = {
    "1440x900": {"viewport": {"width": 1440, "height": 900}},
    "390x844-phone": {"viewport": {"width": 390, "height": 844}, "device_scale_factor": 2, "is_mobile": True, "has_touch": True},
}
# What each page shows, in Korean, once it has drawn its last part; and whether it has a chart to wait for.
READY = {
    "overview": ("지금 상황", False),
    "dataset": ("정규화 전과 후", True),
    "model": ("첫 번째 계층이 배운 것", True),
    "inside": ("5 · 왜 그렇게 답했을까?", True),
    "train": ("모든 실행", True),
    "evaluate": ("모델 가져가기", True),
    "classify": ("신경망의 답:", True),
}

@pytest.fixture(scope="module")
def server(browser, tmp_path_factory, cifar_dir):
    with shipped_model_server(tmp_path_factory.mktemp("i18n"), cifar_dir) as running:
        yield running


@pytest.fixture(scope="module")
def trained(browser, server):
    """One short run started from the Train page in Korean (2 epochs on 2,000 images), so the page shows its curves,
    numbers and settings."""
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/train?lang=ko&preset=quick&train_subset=2000&epochs=2")
        page.get_by_role("button", name="학습 시작").click()
        page.locator('[data-testid="stMain"]').get_by_text("완료", exact=True).first.wait_for(timeout=180_000)
    finally:
        context.close()


def wait_drawn(page, name: str) -> None:
    """Until the page's last part is there, its charts drawn and its pictures loaded."""
    if name == "classify":
        uploader = page.locator('[data-testid="stFileUploader"]').first.locator("input[type=file]")
        uploader.set_input_files(files=[{"name": "ball.png", "mimeType": "image/png", "buffer": photo()}])
    text, chart = READY[name]
    page.get_by_text(text, exact=False).first.wait_for()
    if chart:
        page.locator('[data-testid="stVegaLiteChart"] canvas, [data-testid="stVegaLiteChart"] svg').first.wait_for()
    page.wait_for_function("() => [...document.querySelectorAll('[data-testid=\"stMain\"] img')].every(i => i.complete)")
    page.wait_for_timeout(700)  # charts size themselves to their containers


@pytest.mark.parametrize("size", SIZES)
def test_every_page_in_korean_renders_whole(browser, server, trained, size):
    options = SIZES[size]
    context = browser.new_context(**options)
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    problems = {}
    try:
        for name in READY:
            page.goto(f"{server.url}/{'' if name == 'overview' else name}?lang=ko")  # Overview is the app's home page
            wait_drawn(page, name)
            assert page.locator('[data-testid="stException"]').count() == 0, name
            found = layout_problems(page, blocks=None, ellipsis=True)  # cut text
            if found:
                problems[name] = found
            whole_page_screenshot(page, SCREENSHOTS / f"{size}-{name}.png")
    finally:
        context.close()
    assert not problems, problems


def test_the_language_survives_a_page_switch_and_follows_the_browser(browser, server):
    context = browser.new_context(viewport={"width": 1440, "height": 900})
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/?lang=ko")
        page.get_by_text("지금 상황").wait_for()
        page.locator('[data-testid="stSidebarNav"]').get_by_text("모델", exact=True).click()
        page.get_by_text("첫 번째 계층이 배운 것").wait_for()
        page.wait_for_url("**/model?lang=ko")  # put back into the URL: a link copied now opens in Korean
        assert page.locator('[data-testid="stSidebarNav"]').get_by_text("평가", exact=True).count() == 1
    finally:
        context.close()
    context = browser.new_context(viewport={"width": 1440, "height": 900}, locale="ko-KR")
    context.set_default_timeout(TIMEOUT_MS)
    page = context.new_page()
    try:
        page.goto(f"{server.url}/model")  # no ?lang=: the browser's preferred language
        page.get_by_text("첫 번째 계층이 배운 것").wait_for()
        assert page.locator('[data-testid="stSidebar"] [data-testid="stSelectbox"] input').first.input_value() == "한국어"
    finally:
        context.close()
