"""Pictures for the pages: tensors as PIL images, sharp upscaling, tiles for responsive grids, labelled grids.

Pixel pictures (CIFAR-10's 32 x 32 images, filters) are scaled up by a whole factor with nearest-neighbour before they
are sent, as PNG (Streamlit would send an RGB picture as JPEG, which smears the pixel edges), and shown inside a
container whose key starts with "pixels" so the browser keeps them sharp when it scales them (image-rendering:
pixelated), for instance at 150% zoom. Grids are lists of tiles of a fixed width: the browser puts as many on a row as
fit, so a phone gets fewer columns of the same crisp tiles rather than a shrunken, blurred picture.
"""

import re
from functools import cache

import torch
from PIL import Image, ImageDraw, ImageEnhance, ImageFont
from torchvision.utils import make_grid

PIXELATED_CSS = """
<style>
[class*="st-key-pixels"] img { image-rendering: pixelated; }
[class*="st-key-pixels"] [data-testid="stImage"] { column-gap: 0.6rem; row-gap: 0.4rem; }
</style>
"""
SQUARE_COLOR = "#00e5ff"  # the outline of the square the network used, on any photo
# Words drawn into pictures: PIL's own font has no Hangul, so text with CJK characters gets the first of these fonts
# that this machine has (Debian's fonts-noto-cjk, Nanum, macOS's and Windows' Korean fonts).
CJK_FONTS = [("/usr/share/fonts/opentype/noto/NotoSansCJK-Regular.ttc", 1), ("/usr/share/fonts/noto-cjk/NotoSansCJK-Regular.ttc", 1),
             ("/usr/share/fonts/truetype/nanum/NanumGothic.ttf", 0), ("/System/Library/Fonts/AppleSDGothicNeo.ttc", 0),
             ("C:/Windows/Fonts/malgun.ttf", 0)]
CJK_TEXT = re.compile("[\u1100-\u11ff\u3000-\u9fff\uac00-\ud7af\uf900-\ufaff\uff00-\uffef]")


def pixelated_style(st) -> None:
    """Keep pixel pictures sharp when the browser scales them: once per page, for the containers keyed "pixels…"."""
    st.html(PIXELATED_CSS)


@cache
def _cjk_font(size: int) -> ImageFont.FreeTypeFont | None:
    for path, index in CJK_FONTS:
        try:
            return ImageFont.truetype(path, size, index=index)
        except OSError:
            continue
    return None


def font_for(text: str, size: int) -> ImageFont.FreeTypeFont:
    """PIL's default font, or for text with Hangul (or other CJK characters) a font that has them, when one is here."""
    return (_cjk_font(size) if CJK_TEXT.search(text) else None) or ImageFont.load_default(size=size)


def to_pil(image: torch.Tensor) -> Image.Image:
    """A uint8 3 x H x W tensor as a PIL image."""
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


def stretched(values: torch.Tensor, columns: int = 8, padding: int = 0) -> Image.Image:
    """Float images (C x H x W, or N of them) each stretched to its own full range, to show values that are not pixels
    (normalized inputs, weights): make_grid's normalize with scale_each. The padding between them is transparent, so
    they sit on the page's own background: white there was a white block in the dark theme."""
    values = values.detach().float().cpu()
    pixels = (make_grid(values, nrow=columns, padding=padding, normalize=True, scale_each=True) * 255).round().to(torch.uint8)
    return with_transparent_padding(pixels, values if values.dim() == 4 else values.unsqueeze(0), columns, padding)


def with_transparent_padding(grid: torch.Tensor, batch: torch.Tensor, columns: int, padding: int) -> Image.Image:
    """A uint8 make_grid of batch (nrow=columns, that padding) as an image whose padding is transparent."""
    if not padding:
        return to_pil(grid)
    tiles = torch.full_like(batch[:, :1], 255, dtype=torch.uint8).expand(-1, 3, -1, -1)
    opaque = make_grid(tiles, nrow=columns, padding=padding, pad_value=0)[:1]
    return Image.fromarray(torch.cat([grid, opaque]).permute(1, 2, 0).contiguous().numpy(), "RGBA")


def upscale(image: Image.Image, side: int) -> Image.Image:
    """Scaled up so its longer side is about `side`, by a whole factor with nearest-neighbour: every pixel a sharp
    square, and the browser shows it at that size without blurring it again."""
    factor = max(1, side // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def tiles(images: torch.Tensor, side: int) -> list[Image.Image]:
    """Each uint8 3 x 32 x 32 image of a batch scaled up by a whole factor to at most `side` pixels: a grid's tiles."""
    return [upscale(to_pil(image), side) for image in images]


def walkthrough_grid(images: torch.Tensor, factor: int = 3) -> Image.Image:
    """torchvision.utils.make_grid of a uint8 batch, 8 per row, as the walkthrough shows its batch, scaled up by a whole
    factor; the 2-pixel padding is transparent, so the grid sits on the page's own background, light or dark."""
    grid = with_transparent_padding(make_grid(images, nrow=8, padding=2, pad_value=0), images, 8, 2)
    return grid.resize((grid.width * factor, grid.height * factor), Image.Resampling.NEAREST)


def column_strip(images: list[Image.Image], gap: int) -> Image.Image:
    """Images of one width stacked top to bottom with transparent gaps: one image's augmented copies under it."""
    width = max(image.width for image in images)
    height = sum(image.height for image in images) + gap * (len(images) - 1)
    strip = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    y = 0
    for image in images:
        strip.paste(image.convert("RGBA"), (0, y))
        y += image.height + gap
    return strip


def with_centre_square(photo: Image.Image) -> Image.Image:
    """The photo with the centred square the network was given outlined, and the parts it did not get dimmed."""
    width, height = photo.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    box = (left, top, left + side, top + side)
    shown = ImageEnhance.Brightness(photo.convert("RGB")).enhance(0.4)
    shown.paste(photo.convert("RGB").crop(box), box[:2])
    line = max(2, side // 100)
    ImageDraw.Draw(shown).rectangle((left, top, left + side - 1, top + side - 1), outline=SQUARE_COLOR, width=line)
    return shown


def labelled_grid(
    images: torch.Tensor, captions: list[str], colors: list[str] | None = None, columns: int = 8, tile: int = 128
) -> Image.Image:
    """The images in rows of `columns`, each scaled up to tile x tile (nearest), with its caption (one or more lines) underneath."""
    gap = max(6, tile // 12)
    widest = max((line for caption in captions for line in caption.splitlines()), key=len, default="")
    size = max(12, tile // 8)
    everything = "".join(captions)  # one font for all the captions: Hangul in any of them needs a font that has it
    while size > 10 and font_for(everything, size).getlength(widest) > tile + gap - 4:
        size -= 1  # long captions get a smaller font rather than run into their neighbours
    font = font_for(everything, size)
    lines = max((caption.count("\n") + 1 for caption in captions), default=1)
    strip = lines * (size + 4) + 6
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * (tile + gap) - gap, rows * (tile + strip + gap) - gap), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x, y = (i % columns) * (tile + gap), (i // columns) * (tile + strip + gap)
        canvas.paste(to_pil(image).resize((tile, tile), Image.Resampling.NEAREST), (x, y))
        color = colors[i] if colors else "black"
        draw.multiline_text((x + tile / 2, y + tile + 4), caption, fill=color, font=font, anchor="ma", align="center", spacing=4)
    return canvas
