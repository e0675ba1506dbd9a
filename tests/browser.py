"""What the browser tests share besides the Chromium fixture (tests/conftest.py): a whole-page screenshot."""

from pathlib import Path


def whole_page_screenshot(page, path: Path, max_height: int = 8000) -> None:
    """The whole page: Streamlit's main area scrolls inside the window, so the window is made as tall as it first
    (up to max_height), then put back."""
    path.parent.mkdir(parents=True, exist_ok=True)
    size = page.viewport_size
    height = page.evaluate("document.querySelector('[data-testid=\"stMain\"]').scrollHeight")
    page.set_viewport_size({"width": size["width"], "height": max(size["height"], min(height, max_height))})
    page.wait_for_timeout(500)  # images and charts settle at the new size
    page.screenshot(path=str(path))
    page.set_viewport_size(size)
