"""What the browser tests share besides the Chromium fixture (tests/conftest.py): a server with the shipped model, a
photo to upload, a whole-page screenshot and the layout check (boxes over each other, text cut short, a page wider
than the screen)."""

import io
from contextlib import contextmanager
from pathlib import Path

from PIL import Image, ImageDraw

from tests.loadtest import streamlit_server

SHIPPED_MODEL = Path(__file__).resolve().parents[1] / "assets" / "lenet5-cifar10.pt"

# Boxes that must not lie over one another, and text that must not be cut off (a box narrower than its text).
BLOCKS = ", ".join(['[data-testid="stImage"] img', "h1", "h2", "h3", '[data-testid="stVegaLiteChart"]', '[data-testid="stTable"]',
                    '[data-testid="stMetric"]', '[data-testid="stHtml"] .layer', '[data-testid="stAlert"]',
                    '[data-testid="stFileUploader"]', '[data-testid="stDownloadButton"]'])
TEXTS = ", ".join(["p", "h1", "h2", "h3", "li", "td", "th", "label", "button", '[data-testid="stMetricValue"]',
                   '[data-testid="stMetricLabel"]', '[data-testid="stMetricDelta"]', '[data-testid="stCaptionContainer"]',
                   '[data-testid="stImageCaption"]', '[data-testid="stHtml"] .layer'])
# The elements of each block, side by side or one under another: what a negative margin or a fixed width pushes over
# its neighbour.
NEIGHBOURS = '[data-testid="stVerticalBlock"] > *, [data-testid="stHorizontalBlock"] > *'

_LAYOUT_PROBLEMS = """([blocksSelector, textsSelector, ellipsis]) => {
  const main = document.querySelector('[data-testid="stMain"]');
  const shown = el => {  // on screen: not in a closed expander or an unselected tab
    const r = el.getBoundingClientRect(), closed = el.closest('details:not([open])');
    return r.width > 1 && r.height > 1 && !(closed && !el.closest('summary')) && el.checkVisibility({visibilityProperty: true});
  };
  const name = el => (el.getAttribute('data-testid') || el.tagName.toLowerCase())
                     + ' "' + (el.innerText || el.alt || '').trim().slice(0, 40) + '"';
  const blocks = blocksSelector ? [...main.querySelectorAll(blocksSelector)].filter(shown) : [];
  const problems = [];
  for (let i = 0; i < blocks.length; i++) {
    for (let j = i + 1; j < blocks.length; j++) {
      const a = blocks[i], b = blocks[j];
      if (a.contains(b) || b.contains(a)) continue;
      const p = a.getBoundingClientRect(), q = b.getBoundingClientRect();
      const w = Math.min(p.right, q.right) - Math.max(p.left, q.left);
      const h = Math.min(p.bottom, q.bottom) - Math.max(p.top, q.top);
      if (w > 2 && h > 2) problems.push('overlap: ' + name(a) + ' and ' + name(b));
    }
  }
  // With ellipsis, also whatever the page shortens with one (a metric's value, a select box's choice).
  const shortened = ellipsis ? [...main.querySelectorAll('*')].filter(el => getComputedStyle(el).textOverflow === 'ellipsis') : [];
  for (const el of [...new Set([...main.querySelectorAll(textsSelector), ...shortened])].filter(shown)) {
    if (el.clientWidth > 0 && el.scrollWidth > el.clientWidth + 1) {
      problems.push('cut: ' + name(el) + ' ' + el.scrollWidth + ' > ' + el.clientWidth);
    }
  }
  const area = document.querySelector('[data-testid="stMainBlockContainer"]');
  if (area.scrollWidth > area.clientWidth + 1) {
    problems.push('wider than the screen: ' + area.scrollWidth + ' > ' + area.clientWidth);
  }
  return problems;
}"""


def layout_problems(page, blocks: str | None = BLOCKS, texts: str = TEXTS, ellipsis: bool = False) -> list[str]:
    """What is wrong with the main area's layout as shown now, one line each ("overlap: …", "cut: …", "wider than
    the screen: …"); empty when nothing is. blocks=None: text and width only."""
    return page.evaluate(_LAYOUT_PROBLEMS, [blocks, texts, ellipsis])


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


@contextmanager
def shipped_model_server(workdir: Path, data_dir: Path):
    """`streamlit run app.py` with the shipped model and fresh runs in workdir; stopped when the block ends."""
    with streamlit_server(workdir, data_dir, start_timeout=90, env={"LENET_CHECKPOINT": str(SHIPPED_MODEL)}) as running:
        yield running


def photo() -> bytes:
    """A PNG photo of a red ball on the sky, 480 x 320: something to upload."""
    image = Image.new("RGB", (480, 320), "skyblue")
    ImageDraw.Draw(image).ellipse((140, 60, 340, 260), fill=(200, 30, 30))
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return buffer.getvalue()
