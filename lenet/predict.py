"""From any file a user hands us to the ten class probabilities: the CLI's `predict` and the web app's upload.

Uploads are untrusted, so every file either gives a Prediction or raises ImageError with one line a person
can act on. Memory stays bounded: files are read up to a size limit, pixel counts are checked from the header
before anything is decoded, large photos are decoded at reduced size (JPEG) or reduced strip by strip before
any colour conversion (other formats), at most DECODE_SLOTS decodes run at once, and the memory a decode
freed is handed back to the operating system.
"""

import ctypes
import ctypes.util
import functools
import io
import math
import os
import threading
from collections.abc import Callable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

import numpy as np
import torch
from PIL import ExifTags, Image, ImageOps, JpegImagePlugin, UnidentifiedImageError

from .data import CLASSES
from .inference import normalize

MAX_UPLOAD_MB = 20  # the same number as server.maxUploadSize in .streamlit/config.toml
MAX_UPLOAD_BYTES = MAX_UPLOAD_MB * 2**20
# Refused from the header, before decoding: a tiny file can claim gigapixels (a decompression bomb). The limits
# bound what one decode holds at once (measured: peak RSS of one load_image above the RSS before it):
# - JPEG decodes at 1/8 scale (draft): a 16320 x 12240 (200-megapixel) phone photo peaks at +27 MB.
MAX_JPEG_PIXELS = 200_000_000
# - Other formats decode at full size in their own mode, at most 4 bytes a pixel: 64 megapixels is 256 MB
#   (an 8000 x 8000 RGBA PNG peaks at +265 MB).
MAX_PIXELS = 64_000_000
# - PIL's WebP decoder holds the frame about four times over (8000 x 8000: +982 MB; 4000 x 4000: +248 MB),
#   so WebP gets a quarter of the pixels.
MAX_WEBP_PIXELS = 16_000_000
MAX_DISPLAY_SIDE = 1024  # loaded images are downscaled to this longest side, so memory is bounded
UNSURE_BELOW = 0.5  # a top probability under this is reported as unsure
DECODE_SLOTS = 2  # decodes at once in this process: two large photos at a time, not one per open browser tab
TRIM_AFTER_PIXELS = 4_000_000  # decodes this large are followed by release_memory()

# Only common raster formats: PIL's rarer decoders are never reached (EPS, for one, runs Ghostscript).
FORMATS = ("JPEG", "PNG", "WEBP", "GIF", "BMP", "TIFF", "PPM")
READABLE = "JPEG, PNG, WebP, GIF, BMP, TIFF or PPM"
PIXEL_LIMIT = f"limit {MAX_PIXELS // 10**6} megapixels"
JPEG_SIGNATURE = b"\xff\xd8\xff"
NOT_FINITE = "the model's outputs are not finite numbers: it cannot be used (was it trained with a learning rate too high?)"

Source = bytes | str | os.PathLike | BinaryIO


class ImageError(ValueError):
    """A file is not a usable image; the one-line message names the file when known and says why.

    The name is shown as Markdown inline code (the app renders messages as Markdown), so a file called
    `**[click](http://x)**` or holding a newline or NUL shows as typed; `name` and `problem` are the parts.
    """

    def __init__(self, name: str | None, problem: str):
        self.name, self.problem = name, problem
        shown = _shown_name(name)
        super().__init__(f"{shown}: {problem}" if shown else problem[0].upper() + problem[1:])

    def __reduce__(self):
        return type(self), (self.name, self.problem)


class ModelError(ValueError):
    """The model cannot be used: its outputs are not finite numbers (NaN or infinity, e.g. a diverged training run)."""


# -- decoding: one image, bounded memory ---------------------------------------------------------------------


def load_image(source: Source, name: str | None = None, on_wait: Callable[[], object] | None = None) -> Image.Image:
    """An upright RGB image, its longest side at most MAX_DISPLAY_SIDE, or ImageError.

    source is the file's bytes, a path or an open binary file (a Streamlit upload is one); name is what
    messages call it, by default the file's own name. Animated images give their first frame. While
    DECODE_SLOTS other decodes run, this waits, calling on_wait() once first (to say so on the page).
    """
    return _load(*_read(source, name), on_wait)


def _load(data: bytes, name: str | None, on_wait: Callable[[], object] | None) -> Image.Image:
    with decode_slot(on_wait):
        image, pixels = _decode(data, name)
    if pixels >= TRIM_AFTER_PIXELS:
        release_memory()
    return image


_decode_slots = threading.BoundedSemaphore(DECODE_SLOTS)


@contextmanager
def decode_slot(on_wait: Callable[[], object] | None = None):
    """Holds one of the DECODE_SLOTS decode slots; when all are taken, calls on_wait() once and waits."""
    if not _decode_slots.acquire(blocking=False):
        if on_wait is not None:
            on_wait()
        _decode_slots.acquire()
    try:
        yield
    finally:
        _decode_slots.release()


def decode_slots_busy() -> bool:
    """True while every decode slot is taken: an upload decoded now would wait for one to free."""
    if _decode_slots.acquire(blocking=False):
        _decode_slots.release()
        return False
    return True


def release_memory() -> bool:
    """Hands memory that Python and PIL have freed back to the operating system; False where that cannot be done.

    glibc keeps freed heap memory for reuse in each thread's arena (Streamlit runs every script run in its own
    thread). Measured, 15 rounds of two threads each decoding an 8000 x 8000 RGBA PNG: RSS stayed up to 471 MB
    above the start without this (302 MB with MALLOC_ARENA_MAX=2), at most 23 MB with it, which took 5 to 45 ms.
    load_image calls it after every decode of TRIM_AFTER_PIXELS or more.
    """
    trim = _malloc_trim()
    if trim is None:
        return False
    trim(0)
    return True


def limit_malloc_arenas(arenas: int = 2) -> bool:
    """Let threads started from now on share `arenas` glibc malloc arenas, as MALLOC_ARENA_MAX does when set before a
    process starts; False where that cannot be done. A web server runs each script run in a thread, and glibc gives
    busy threads arenas of their own, each keeping its freed pieces: in the stress suite, 30 sessions' photos left
    the server +90 to +200 MB a minute after they closed, and +26 MB with two arenas (the peak no higher)."""
    libc = _libc()
    return bool(libc is not None and libc.mallopt(M_ARENA_MAX, arenas))


def _malloc_trim():
    libc = _libc()
    return libc.malloc_trim if libc is not None else None


@functools.cache
def _libc():
    """glibc, or None (macOS, Windows, musl: no malloc_trim nor mallopt there)."""
    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        return libc if libc is not None and hasattr(libc, "malloc_trim") and hasattr(libc, "mallopt") else None
    except OSError:
        return None


M_ARENA_MAX = -8  # mallopt's parameter number, from glibc's malloc.h


def _decode(data: bytes, name: str | None) -> tuple[Image.Image, int]:
    """The image for display from the file's bytes, and the number of pixels decoded on the way."""
    image = _open(data, name)
    width, height = image.size
    limit, format_name = _pixel_limit(image, data)
    if width * height > limit:
        raise ImageError(name, f"{width} x {height} pixels is too large (limit {limit // 10**6} megapixels{format_name})")
    try:
        scale = MAX_DISPLAY_SIDE / max(width, height)
        if scale < 1 and isinstance(image, JpegImagePlugin.JpegImageFile):
            # JPEG decodes at 1/2, 1/4 or 1/8 size directly: a 48-megapixel photo never exists in memory at full
            # size. The result stays at least MAX_DISPLAY_SIDE on its longest side.
            image.draft(None, (max(1, int(width * scale)), max(1, int(height * scale))))
        # Decodes the pixels (truncated files fail here, as ImageFile.LOAD_TRUNCATED_IMAGES is left False).
        image.load()
    except Exception as error:  # noqa: BLE001 - decoders raise OSError, SyntaxError, ValueError, struct.error...
        raise ImageError(name, f"the file is truncated or corrupt ({_reason(error)})") from None
    decoded = image.width * image.height
    turn = _orientation(image)
    try:
        small = _reduced_rgb(image)
    except Exception as error:  # noqa: BLE001 - e.g. colour modes PIL cannot convert to RGB
        raise ImageError(name, f"colour mode {image.mode} is not supported ({_reason(error)})") from None
    if small is image:
        small = image.copy()  # an image that was RGB and small already: drop the file object it holds
    image.close()  # the full-size pixels go now, before the small image is turned and resized
    if turn is not None:
        small = small.transpose(turn)  # phone photos upright (EXIF orientation)
    small.thumbnail((MAX_DISPLAY_SIDE, MAX_DISPLAY_SIDE), Image.Resampling.LANCZOS)
    return small, decoded


def _open(data: bytes, name: str | None) -> Image.Image:
    """The image with only its header read, from one of FORMATS."""
    try:
        if data.startswith(JPEG_SIGNATURE):
            # PIL's own bomb check in Image.open warns over 89 and refuses over 179 megapixels, below what a
            # phone's JPEG may have and what draft decodes cheaply; _decode checks MAX_JPEG_PIXELS instead.
            return JpegImagePlugin.jpeg_factory(io.BytesIO(data))
        return Image.open(io.BytesIO(data), formats=FORMATS)
    except UnidentifiedImageError:
        raise ImageError(name, f"not an image PIL can read ({READABLE})") from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning):
        # PIL refuses before we see the size; its own threshold is all we know.
        raise ImageError(name, f"over {Image.MAX_IMAGE_PIXELS // 10**6} megapixels is too large ({PIXEL_LIMIT})") from None
    except Exception as error:  # noqa: BLE001 - a damaged header raises OSError, SyntaxError, struct.error...
        raise ImageError(name, f"the file is truncated or corrupt ({_reason(error)})") from None


def _pixel_limit(image: Image.Image, data: bytes) -> tuple[int, str]:
    """The most pixels this image's format may have, and how a message says which format that limit is for."""
    if isinstance(image, JpegImagePlugin.JpegImageFile):
        if _more_than_one_scan(data):
            # libjpeg then keeps every DCT coefficient of the image whatever the draft scale, about 3 bytes a
            # pixel (a 12000 x 9000 progressive JPEG peaked at +317 MB): the full-size formats' limit applies.
            return MAX_PIXELS, " for progressive JPEG"
        return MAX_JPEG_PIXELS, " for JPEG"
    if image.format == "WEBP":
        return MAX_WEBP_PIXELS, " for WebP; save it as JPEG"
    return MAX_PIXELS, ""


def _more_than_one_scan(data: bytes) -> bool:
    """Whether a JPEG has a second scan (progressive JPEGs always do); True when its header cannot be walked.

    The header's segments are walked to the first start-of-scan (SOS) marker, skipping APPn segments, which
    may hold a thumbnail with its own; inside a scan a 0xFF byte is always followed by 0x00 or a restart
    marker, so a later SOS before the end-of-image marker is a real second scan.
    """
    position = 2
    while position + 4 <= len(data) and data[position] == 0xFF:
        marker = data[position + 1]
        if marker == 0xFF:  # fill byte
            position += 1
            continue
        length = int.from_bytes(data[position + 2:position + 4], "big")
        if marker == 0xDA:
            start = position + 2 + length
            end = data.find(b"\xff\xd9", start)
            return data.find(b"\xff\xda", start, end if end >= 0 else len(data)) >= 0
        position += 2 + length
    return True


_TRANSPOSE = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}


def _orientation(image: Image.Image) -> Image.Transpose | None:
    """What turns the image upright, from its EXIF orientation (as ImageOps.exif_transpose reads it)."""
    try:
        return _TRANSPOSE.get(image.getexif().get(ExifTags.Base.Orientation, 1))
    except Exception:  # noqa: BLE001 - damaged EXIF: the pixels are still a photo, shown as stored
        return None


def _reduced_rgb(image: Image.Image) -> Image.Image:
    """RGB, reduced by a whole factor to between 1 and 2 times MAX_DISPLAY_SIDE on its longest side.

    The full-size image is converted and box-averaged strip by strip (Image.reduce), so it never exists at
    full size in RGB: for a 64-megapixel RGBA PNG that is 256 MB less at the peak (Image.reduce alone would
    first copy all of it to premultiplied RGBa). Compositing on white is linear, so compositing each strip
    before averaging gives what averaging premultiplied pixels then compositing would.
    """
    factor = max(image.size) // MAX_DISPLAY_SIDE
    if factor <= 1:
        return _rgb(image)
    width, height = image.size
    rows = max(1, 1_000_000 // width // factor) * factor  # about a megapixel a strip, a whole number of blocks
    reduced = Image.new("RGB", (math.ceil(width / factor), math.ceil(height / factor)))
    for top in range(0, height, rows):
        strip = _rgb(image.crop((0, top, width, min(top + rows, height))))
        reduced.paste(strip.reduce(factor), (0, top // factor))
    return reduced


def model_input(image: Image.Image) -> Image.Image:
    """The 32x32 RGB image the network sees: the centred square crop, downscaled with antialiased Lanczos.

    Cropping rather than padding or squashing: CIFAR-10 photos are square and filled by their subject, so the
    network never saw letterbox bars or stretched shapes, and people put the subject in the middle.
    """
    return ImageOps.fit(_rgb(image), (32, 32), Image.Resampling.LANCZOS)  # centring is fit's default


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
    if not torch.isfinite(logits).all():
        raise ModelError(NOT_FINITE)
    return logits[0].softmax(0).cpu()


@dataclass
class Prediction:
    image: Image.Image  # upright RGB, for display
    model_input: Image.Image  # the 32x32 image the network saw
    probabilities: list[float]  # in CLASSES order

    def __post_init__(self):
        # NaN compares false with everything: a NaN would sort anywhere and read as a confident answer.
        if not all(math.isfinite(p) for p in self.probabilities):
            raise ModelError(NOT_FINITE)

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


def classify(
    model: torch.nn.Module,
    normalization: dict,
    source: Source,
    name: str | None = None,
    on_wait: Callable[[], object] | None = None,
) -> Prediction:
    """load_image, then classify_image, in one call.

    ImageError for files that are not usable images; ModelError when the model's outputs are not finite.
    """
    return classify_image(model, normalization, load_image(source, name, on_wait))


def classify_image(model: torch.nn.Module, normalization: dict, image: Image.Image) -> Prediction:
    """model_input and probabilities for an image load_image gave (read only: the web app keeps it between reruns)."""
    small = model_input(image)
    return Prediction(image=image, model_input=small, probabilities=probabilities(model, normalization, small).tolist())


def classify_pixels(model: torch.nn.Module, normalization: dict, pixels: torch.Tensor) -> Prediction:
    """The Prediction for one dataset image (uint8 3 x 32 x 32), classified exactly as an upload's 32 x 32 input."""
    small = Image.fromarray(pixels.permute(1, 2, 0).contiguous().numpy())
    return Prediction(image=small, model_input=small, probabilities=probabilities(model, normalization, small).tolist())


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
        raise ImageError(name, f"cannot read the file ({getattr(error, 'strerror', None) or _reason(error)})") from None
    if not data:
        raise ImageError(name, "the file is empty")
    if len(data) > MAX_UPLOAD_BYTES:
        raise ImageError(name, f"the file is larger than the {MAX_UPLOAD_MB} MB limit")
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


def _shown_name(name: str | None, longest: int = 120) -> str:
    """The name as Markdown inline code: only printable characters (no NUL, newline or bidi control), no backticks,
    at most `longest` characters; "" when nothing is left."""
    clean = "".join(ch for ch in name or "" if ch.isprintable() and ch != "`").strip()
    if len(clean) > longest:
        clean = clean[: longest - 1] + "…"
    return f"`{clean}`" if clean else ""


def _reason(error: Exception) -> str:
    """The first line of PIL's own explanation, printable characters only (it may quote bytes from the file)."""
    text = "".join(ch for ch in str(error).strip().split("\n")[0] if ch.isprintable())[:200]
    return text or type(error).__name__
