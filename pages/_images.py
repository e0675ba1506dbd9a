"""Pictures for the pages: tensors as PIL images, sharp upscaling, labelled grids."""

import torch
from PIL import Image, ImageDraw, ImageFont
from torchvision.utils import make_grid


def to_pil(image: torch.Tensor) -> Image.Image:
    """A uint8 3 x H x W tensor as a PIL image."""
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


def stretched(values: torch.Tensor, columns: int = 8, padding: int = 0) -> Image.Image:
    """Float images (C x H x W, or N of them) each stretched to its own full range, to show values that are not pixels
    (normalized inputs, weights): make_grid's normalize with scale_each, padded in white."""
    grid = make_grid(values.detach().float().cpu(), nrow=columns, padding=padding, normalize=True, scale_each=True, pad_value=1.0)
    return to_pil((grid * 255).round().to(torch.uint8))


def upscale(image: Image.Image, side: int) -> Image.Image:
    """Scaled up so its longer side is about `side`, by a whole factor with nearest-neighbour: every pixel a sharp
    square, and the browser shows it at that size without blurring it again."""
    factor = max(1, side // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def walkthrough_grid(images: torch.Tensor, side: int = 1024) -> Image.Image:
    """torchvision.utils.make_grid of a uint8 batch, 8 per row, as the walkthrough shows its batch (scaled up)."""
    return upscale(to_pil(make_grid(images, nrow=8, padding=2, pad_value=255)), side)


def labelled_grid(
    images: torch.Tensor, captions: list[str], colors: list[str] | None = None, columns: int = 8, tile: int = 128
) -> Image.Image:
    """The images in rows of `columns`, each scaled up to tile x tile (nearest), with its caption (one or more lines) underneath."""
    gap = max(6, tile // 12)
    widest = max((line for caption in captions for line in caption.splitlines()), key=len, default="")
    size = max(12, tile // 8)
    while size > 10 and ImageFont.load_default(size=size).getlength(widest) > tile + gap - 4:
        size -= 1  # long captions get a smaller font rather than run into their neighbours
    font = ImageFont.load_default(size=size)
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
