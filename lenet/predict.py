"""From any file a user hands us to the ten class probabilities: the CLI's `predict` and the web app's upload.

Uploads are untrusted, so every file either gives a Prediction or raises ImageError with one line a person
can act on. Memory stays bounded: files are read up to a size limit, pixel counts are checked from the header
before anything is decoded, and large photos are decoded at reduced size and downscaled for display.
"""

import io
import os
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import Image, ImageOps, UnidentifiedImageError

from .data import CLASSES
from .inference import normalize

MAX_UPLOAD_MB = 20  # the same number as server.maxUploadSize in .streamlit/config.toml
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20
MAX_PIXELS = 64_000_000  # refused before decoding: a tiny file can claim gigapixels (a decompression bomb)
MAX_DISPLAY_SIDE = 1024  # loaded images are downscaled to this longest side, so memory is bounded
UNSURE_BELOW = 0.5  # a top probability under this is reported as unsure

# Only common raster formats: PIL's rarer decoders are never reached (EPS, for one, runs Ghostscript).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
READABLE = "JPEG, PNG, WebP, GIF, BMP, TIFF or PPM"
PIXEL_LIMIT = f"limit {MAX_PIXELS // 10**6} megapixels"

Source = bytes | str | os.PathLike | BinaryIO


class ImageError(ValueError):
    """A file is not a usable image; the one-line message names the file when known and says why."""


def load_image(source: Source, name: str | None = None) -> Image.Image:
    """An upright RGB image, its longest side at most MAX_DISPLAY_SIDE, or ImageError.

    source is the file's bytes, a path or an open binary file (a Streamlit upload is one); name is what
    messages call it, by default the file's own name. Animated images give their first frame.
    """
    data, name = _read(source, name)
    try:
        image = Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise _error(name, f"not an image PIL can read ({READABLE})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # PIL refuses before we see the size; its own threshold is all we know.
        raise _error(name, f"over {Image.MAX_IMAGE_PIXELS // 10**6} megapixels is too large ({PIXEL_LIMIT})") from None
    except Exception as error:  # noqa: BLE001 - a damaged header raises OSError, SyntaxError, struct.error...
        raise _error(name, f"the file is truncated or corrupt ({_reason(error)})") from None
    width, height = image.size
    if width * height > MAX_PIXELS:
        raise _error(name, f"{width} x {height} pixels is too large ({PIXEL_LIMIT})")
    try:
        scale = MAX_DISPLAY_SIDE / max(width, height)
        if scale < 1:
            # JPEG decodes at 1/2, 1/4 or 1/8 size directly (other formats ignore this): a 24-megapixel photo
            # never exists in memory at full size. The result stays at least MAX_DISPLAY_SIDE on its longest side.
            image.draft(None, (max(1, int(width * scale)), max(1, int(height * scale))))
        # Decodes the pixels (truncated files fail here, as ImageFile.LOAD_TRUNCATED_IMAGES is left False),
        # then turns phone photos upright (EXIF orientation) before anything is resized.
        ImageOps.exif_transpose(image, in_place=True)
    except Exception as error:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, struct.error...
        raise _error(name, f"the file is truncated or corrupt ({_reason(error)})") from None
    try:
        image = _rgb(image)
    except Exception as error:  # noqa: BLE001 - e.g. colour modes PIL cannot convert to RGB
        raise _error(name, f"colour mode {image.mode} is not supported ({_reason(error)})") from None
    image.thumbnail((MAX_DISPLAY_SIDE, MAX_DISPLAY_SIDE), Image.Resampling.LANCZOS)
    return image


def model_input(image: Image.Image) -> Image.Image:
    """The 32x32 RGB image the network sees: the centred square crop, downscaled with antialiased Lanczos.

    Cropping rather than padding or squashing: CIFAR-10 photos are square and filled by their subject, so the
    network never saw letterbox bars or stretched shapes, and people put the subject in the middle.
    """
    image = _rgb(image)
    width, height = image.size
    side = min(width, height)
    left, top = (width - side) // 2, (height - side) // 2
    return image.resize((32, 32), Image.Resampling.LANCZOS, box=(left, top, left + side, top + side))


def probabilities(model: torch.nn.Module, normalization: dict, image32: Image.Image) -> torch.Tensor:
    """Softmax over CLASSES (shape (10,), on the CPU) for one 32x32 RGB image, normalized exactly as in training.

    The model should be in eval mode (load_model returns it so); it is not switched here, so a model shared
    between sessions is never mutated.
    """
    if image32.mode != "RGB" or image32.size != (32, 32):
        raise ValueError(f"expected a 32x32 RGB image (see model_input), got {image32.mode} {image32.size}")
    pixels = torch.from_numpy(np.array(image32, dtype=np.uint8)).permute(2, 0, 1).unsqueeze(0)
    device = next(model.parameters()).device
    with torch.inference_mode():
        logits = model(normalize(pixels.to(device), normalization))
    return logits[0].softmax(0).cpu()


@dataclass
class Prediction:
    image: Image.Image  # upright RGB, for display
    model_input: Image.Image  # the 32x32 image the network saw
    probabilities: list[float]  # in CLASSES order

    @property
    def label(self) -> str:
        return self.top(1)[0][0]

    @property
    def confidence(self) -> float:
        return self.top(1)[0][1]

    @property
    def unsure(self) -> bool:
        return self.confidence < UNSURE_BELOW

    def top(self, k: int = 3) -> list[tuple[str, float]]:
        """The k most probable classes, most probable first (ties keep CLASSES order)."""
        return sorted(zip(CLASSES, self.probabilities, strict=True), key=lambda pair: -pair[1])[:k]


def classify(model: torch.nn.Module, normalization: dict, source: Source, name: str | None = None) -> Prediction:
    """load_image, model_input and probabilities in one call; ImageError for files that are not usable images."""
    image = load_image(source, name)
    small = model_input(image)
    return Prediction(image=image, model_input=small, probabilities=probabilities(model, normalization, small).tolist())


def _read(source, name: str | None) -> tuple[bytes, str | None]:
    """The file's bytes and its name for messages; reads at most one byte past the limit, whatever the source."""
    try:
        if isinstance(source, (bytes, bytearray, memoryview)):
            data = bytes(source[: MAX_UPLOAD_BYTES + 1])
        elif isinstance(source, (str, os.PathLike)):
            name = name or Path(source).name
            with open(source, "rb") as f:
                data = f.read(MAX_UPLOAD_BYTES + 1)
        else:
            own_name = getattr(source, "name", None)
            name = name or (Path(own_name).name if isinstance(own_name, str) else None)
            if getattr(source, "seekable", lambda: False)():
                source.seek(0)  # the web app may hand over the same upload again on every rerun
            data = source.read(MAX_UPLOAD_BYTES + 1)
    except (OSError, ValueError) as error:
        raise _error(name, f"cannot read the file ({getattr(error, 'strerror', None) or _reason(error)})") from None
    if not data:
        raise _error(name, "the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise _error(name, f"the file is larger than the {MAX_UPLOAD_MB} MB limit")
    return data, name


def _rgb(image: Image.Image) -> Image.Image:
    """RGB from whatever mode PIL decoded.

    16-bit data (PIL's I;16 and I modes) is divided by 257, mapping 0..65535 onto 0..255 as an 8-bit export
    would; PIL's own conversion clips, which turns a 16-bit gradient white. Transparency is composited on white,
    the background icons and logos are drawn for (black would hide dark artwork). CMYK converts naively.
    """
    if image.mode.startswith("I"):
        image = image.convert("I").point(lambda value: value / 257, "L")
    if image.mode in ("RGBA", "LA", "PA", "RGBa", "La") or "transparency" in image.info:
        rgba = image.convert("RGBA")
        image = Image.new("RGB", rgba.size, "white")
        image.paste(rgba, mask=rgba)
        return image
    return image if image.mode == "RGB" else image.convert("RGB")


def _error(name: str | None, problem: str) -> ImageError:
    return ImageError(f"{name}: {problem}" if name else problem[0].upper() + problem[1:])


def _reason(error: Exception) -> str:
    text = str(error).strip()
    return text.splitlines()[0][:200] if text else type(error).__name__
