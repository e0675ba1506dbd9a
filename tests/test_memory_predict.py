"""lenet.predict keeps memory bounded and gives it back: phones' large photos are decoded small, at most
DECODE_SLOTS decodes run at once, an upload is decoded once across reruns, and freed memory returns to the system.

Peak memory is measured in a fresh Python process (the kernel's VmHWM), on images made here.
"""

import io
import json
import struct
import subprocess
import sys
import threading
import time
import zlib
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from lenet.predict import (
    DECODE_SLOTS,
    MAX_DISPLAY_SIDE,
    MAX_WEBP_PIXELS,
    ImageError,
    decode_slot,
    decode_slots_busy,
    load_image,
    release_memory,
)

REPO = Path(__file__).resolve().parents[1]


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def rgba_png(width: int, height: int) -> bytes:
    """A real RGBA PNG of any size, written row by row so that making it takes little memory or time."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    row = b"\0" + (np.arange(width * 4) % 251).astype(np.uint8).tobytes()  # colours and alpha that vary
    compressor = zlib.compressobj(1)
    idat = b"".join(compressor.compress(row) for _ in range(height)) + compressor.flush()
    header = struct.pack(">IIBBBBB", width, height, 8, 6, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


def large_jpeg(width: int, height: int) -> bytes:
    gray = Image.linear_gradient("L").resize((width, height))
    return encode(Image.merge("RGB", (gray, gray.transpose(Image.Transpose.ROTATE_180), gray)), "JPEG", quality=80)


# VmHWM, not getrusage's ru_maxrss: that one keeps the peak of the test process this one was forked from.
MEASURE = """
import json, sys, warnings
warnings.simplefilter("error")  # PIL's DecompressionBombWarning included
from lenet.predict import load_image

def status_mb(field):
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith(field + ":")) / 1024

def rss():
    return status_mb("VmRSS")

report = []
for path in sys.argv[1:]:
    before = rss()
    image = load_image(path)
    peak = status_mb("VmHWM")
    size = image.size
    del image
    report.append({"size": size, "peak_mb": peak - before, "after_mb": rss() - before})
print(json.dumps(report))
"""


def test_phone_sized_photos_decode_within_300_mb_and_give_it_back(tmp_path):
    # A 108-megapixel JPEG (over PIL's 89-megapixel warning; refused before) and a 64-megapixel RGBA PNG, whose
    # decode used to peak at +734 MB (the RGBA copy, then a white RGB canvas, all at full size).
    jpeg, png = tmp_path / "phone.jpg", tmp_path / "poster.png"
    jpeg.write_bytes(large_jpeg(12000, 9000))
    png.write_bytes(rgba_png(8000, 8000))
    out = subprocess.run([sys.executable, "-c", MEASURE, str(jpeg), str(png)], cwd=REPO, capture_output=True, text=True,
                         timeout=300)
    assert out.returncode == 0, out.stderr
    phone, poster = json.loads(out.stdout)
    assert phone["size"] == [1024, 768] and poster["size"] == [1024, 1024]
    assert phone["peak_mb"] < 100, phone  # decoded at 1/8 scale: 1500 x 1125 (measured +27 MB for 200 MP)
    assert poster["peak_mb"] < 300, poster  # the PNG's own RGBA pixels, 256 MB, and little more (measured +265)
    assert phone["after_mb"] < 40 and poster["after_mb"] < 40, (phone, poster)  # and the memory came back


def test_a_large_rgba_png_is_reduced_as_if_composited_at_full_size():
    # The strip-by-strip reduction gives what compositing the whole image on white then shrinking would.
    size = (2600, 1300)
    rng = np.random.default_rng(0)
    pixels = rng.integers(0, 256, (size[1] // 100, size[0] // 100, 4), dtype=np.uint8).repeat(100, 0).repeat(100, 1)
    original = Image.fromarray(pixels, "RGBA")
    loaded = load_image(encode(original, "PNG"))
    reference = Image.new("RGB", size, "white")
    reference.paste(original, mask=original)
    reference.thumbnail((MAX_DISPLAY_SIDE, MAX_DISPLAY_SIDE), Image.Resampling.LANCZOS)
    assert loaded.size == reference.size == (1024, 512)
    difference = np.abs(np.asarray(loaded, dtype=int) - np.asarray(reference, dtype=int))
    assert np.percentile(difference, 99) <= 4 and difference.mean() < 1


def test_large_16_bit_and_palette_images_are_reduced_in_their_own_terms():
    gradient = np.tile(np.linspace(0, 65535, 3000).round().astype(np.uint16), (8, 1))
    row = np.asarray(load_image(encode(Image.fromarray(gradient), "PNG")))[0]
    assert row.shape == (MAX_DISPLAY_SIDE, 3) and row[0, 0] == 0 and row[-1, 0] >= 254  # scaled, not clipped to white
    palette = Image.new("P", (3000, 2000), 0)
    palette.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)
    palette.paste(1, (1500, 0, 3000, 2000))
    loaded = load_image(encode(palette, "PNG", transparency=0))
    assert loaded.getpixel((10, 10)) == (255, 255, 255) and loaded.getpixel((1000, 10)) == (255, 0, 0)


def test_a_webp_over_its_pixel_limit_is_refused_from_the_header():
    # PIL's WebP decoder holds about 16 bytes a pixel: 8000 x 8000 peaked at +982 MB.
    webp = encode(Image.new("RGB", (4100, 4000), (10, 200, 30)), "WEBP", quality=50)
    assert 4100 * 4000 > MAX_WEBP_PIXELS
    started = time.perf_counter()
    with pytest.raises(ImageError, match=r"^`big.webp`: 4100 x 4000 pixels is too large \(limit 16 megapixels for WebP"):
        load_image(webp, "big.webp")
    assert time.perf_counter() - started < 1
    assert load_image(encode(Image.new("RGB", (4000, 4000), (10, 200, 30)), "WEBP", quality=50)).size == (1024, 1024)


def claiming(jpeg: bytes, width: int, height: int) -> bytes:
    """The JPEG with its frame header (SOF0 baseline or SOF2 progressive) claiming another size."""
    sof = max(jpeg.find(b"\xff\xc0"), jpeg.find(b"\xff\xc2"))  # then length, precision, height, width
    return jpeg[: sof + 5] + struct.pack(">HH", height, width) + jpeg[sof + 9:]


def test_a_jpeg_over_200_megapixels_is_refused_before_decoding():
    claimed = claiming(encode(Image.new("RGB", (16, 16)), "JPEG"), 15000, 15000)
    started = time.perf_counter()
    with pytest.raises(ImageError, match=r"^`huge.jpg`: 15000 x 15000 pixels is too large \(limit 200 megapixels for JPEG\)$"):
        load_image(claimed, "huge.jpg")
    assert time.perf_counter() - started < 1


def test_a_progressive_jpeg_keeps_the_full_size_limit():
    # libjpeg holds every DCT coefficient of a JPEG with several scans, whatever the draft scale (about 3 bytes
    # a pixel: a 12000 x 9000 progressive JPEG peaked at +317 MB), so it is held to 64 megapixels.
    progressive = claiming(encode(Image.new("RGB", (16, 16)), "JPEG", progressive=True), 9000, 8000)
    with pytest.raises(ImageError, match=r"9000 x 8000 pixels is too large \(limit 64 megapixels for progressive JPEG\)$"):
        load_image(progressive)
    # A baseline JPEG carrying a whole JPEG (a thumbnail, with its own scan) in an APPn segment has one scan.
    thumbnail = encode(Image.new("RGB", (8, 8)), "JPEG", progressive=True)
    baseline = claiming(encode(Image.new("RGB", (16, 16)), "JPEG"), 9000, 8000)
    app3 = b"\xff\xe3" + struct.pack(">H", len(thumbnail) + 2) + thumbnail
    assert load_image(baseline[:2] + app3 + baseline[2:]).size == (1024, 910)  # not refused: decoded at 1/8


# -- at most DECODE_SLOTS decodes at once ------------------------------------------------------------------------


def test_a_decode_waits_while_every_slot_is_taken_and_says_so():
    assert DECODE_SLOTS == 2 and not decode_slots_busy()
    photo = encode(Image.new("RGB", (64, 48), (1, 2, 3)), "PNG")
    waiting, done = threading.Event(), threading.Event()
    results = []

    def decode():
        results.append(load_image(photo, on_wait=waiting.set))
        done.set()

    with decode_slot(), decode_slot():
        assert decode_slots_busy()
        worker = threading.Thread(target=decode)
        worker.start()
        assert waiting.wait(10)  # it said it was waiting...
        assert not done.wait(0.3)  # ...and it does wait
    assert done.wait(10) and results[0].getpixel((0, 0)) == (1, 2, 3)  # a slot freed: it went on
    worker.join()
    assert not decode_slots_busy()


def test_a_free_slot_means_no_waiting_and_failures_free_their_slot():
    calls = []
    for _ in range(DECODE_SLOTS + 3):
        with pytest.raises(ImageError):
            load_image(b"not an image", on_wait=lambda: calls.append(1))
    load_image(encode(Image.new("RGB", (8, 8)), "PNG"), on_wait=lambda: calls.append(1))
    assert calls == [] and not decode_slots_busy()


# -- freed memory goes back to the system ------------------------------------------------------------------------


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * 4096 / 2**20


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="malloc_trim is glibc's")
def test_release_memory_hands_freed_heap_back():
    # 200 MB in 64 KB blocks (under glibc's mmap threshold, so on the heap), every 16th kept: the freed blocks
    # between them stay in this process until they are trimmed.
    blocks = [bytearray(b"x" * 65536) for _ in range(3200)]
    kept = blocks[::16]
    del blocks
    before = rss_mb()
    assert release_memory() is True
    assert before - rss_mb() > 100
    del kept


ARENAS_USED = """
import ctypes, sys, threading
from lenet.predict import limit_malloc_arenas
if sys.argv[1] == "limited":
    assert limit_malloc_arenas(2)
together = threading.Barrier(8)
def work():
    block = bytearray(65536)  # a thread's first allocation from glibc gives it an arena
    together.wait()
threads = [threading.Thread(target=work) for _ in range(8)]
for thread in threads:
    thread.start()
for thread in threads:
    thread.join()
ctypes.CDLL(None).malloc_stats()  # one "Arena N:" paragraph per arena, on stderr
"""


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="mallopt is glibc's")
def test_threads_share_two_malloc_arenas_once_limited():
    """The web app's script threads (one per run) each got an arena of their own, each keeping freed pieces."""
    def arenas(mode: str) -> int:
        ran = subprocess.run([sys.executable, "-c", ARENAS_USED, mode], capture_output=True, text=True, cwd=REPO, timeout=120)
        assert ran.returncode == 0, ran.stderr
        return ran.stderr.count("Arena ")

    assert arenas("free") >= 8 and arenas("limited") <= 2
