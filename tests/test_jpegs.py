"""The decoding workers: what they decode (PIL's very pixels), what they leave to PIL, and how they report."""

import io
import os

import numpy as np
import pytest
from PIL import Image

from lenet.jpegs import decode_jpegs


def _jpeg(pixels: np.ndarray, **options) -> bytes:
    out = io.BytesIO()
    Image.fromarray(pixels).save(out, "JPEG", **options)
    return out.getvalue()


def _noise(seed: int, shape=(32, 32, 3)) -> np.ndarray:
    return np.random.default_rng(seed).integers(0, 256, shape, dtype=np.uint8)


@pytest.fixture
def files(tmp_path):
    """Each kind of file an image folder may hold, and whether the workers decode it (True) or leave it to PIL."""
    cmyk = io.BytesIO()
    Image.new("CMYK", (32, 32), (10, 200, 30, 40)).save(cmyk, "JPEG")
    png = io.BytesIO()
    Image.fromarray(_noise(9)).save(png, "PNG")
    kinds = [
        ("plain.jpg", _jpeg(_noise(1), quality=90), True),
        ("no-subsampling.jpg", _jpeg(_noise(2), quality=100, subsampling=0), True),
        ("progressive.jpeg", _jpeg(_noise(3), progressive=True), True),
        ("grey.jpg", _jpeg(_noise(4, (32, 32))), True),
        # Names are bytes on Linux: a newline and bytes that are no UTF-8 travel to the workers intact.
        ("new\nline-\udce9.jpg", _jpeg(_noise(5)), True),
        ("cmyk.jpg", cmyk.getvalue(), False),  # PIL's own CMYK conversion, not libjpeg's
        ("bigger.jpg", _jpeg(_noise(6, (48, 48, 3))), False),
        ("png-named.jpg", png.getvalue(), False),
        ("truncated.jpg", _jpeg(_noise(7))[:700], False),
        ("empty.jpg", b"", False),
        ("gone.jpg", None, False),  # listed, then removed before it was read
    ]
    out = []
    for name, contents, decodable in kinds:
        path = os.path.join(os.fsencode(tmp_path), os.fsencode(name)).decode("utf-8", "surrogateescape")
        if contents is not None:
            with open(os.fsencode(path), "wb") as file:
                file.write(contents)
        out.append((path, decodable))
    return out


@pytest.mark.parametrize("workers", [1, 2, 3])
def test_the_workers_decode_pils_pixels_and_leave_the_rest(files, workers):
    paths = [path for path, _ in files]
    pixels, left = decode_jpegs(paths, report_every=2, workers=workers)
    assert pixels.shape == (len(paths), 3, 32, 32) and pixels.dtype == np.uint8
    assert left == [i for i, (_, decodable) in enumerate(files) if not decodable]
    for i, (path, decodable) in enumerate(files):
        if decodable:
            with Image.open(os.fsencode(path)) as image:
                expected = np.asarray(image.convert("RGB")).transpose(2, 0, 1)
            assert np.array_equal(pixels[i], expected), path
        else:
            assert not pixels[i].any()  # untouched, for PIL to fill or refuse


def test_progress_counts_the_decoded_images_of_every_worker(tmp_path):
    paths = []
    for i in range(25):
        paths.append(str(tmp_path / f"{i}.jpg"))
        (tmp_path / f"{i}.jpg").write_bytes(_jpeg(_noise(i)))
    (tmp_path / "3.jpg").write_bytes(b"not a jpeg")
    reports = []
    pixels, left = decode_jpegs(paths, report_every=4, progress=reports.append, workers=2)
    assert left == [3]
    assert reports == sorted(reports) and reports[-1] == 24  # the one left is not counted as decoded
    assert len(reports) == 3 + 4  # shares of 12 and 13 images, a report after every 4 and at each share's end
    assert np.array_equal(pixels[24], np.asarray(Image.open(paths[24]).convert("RGB")).transpose(2, 0, 1))


def test_no_files_no_workers():
    pixels, left = decode_jpegs([], report_every=8)
    assert pixels.shape == (0, 3, 32, 32) and left == []


def test_without_memfd_a_temporary_file_is_shared_instead(files, monkeypatch):
    """As on macOS, which has no memfd_create: the same pixels through an unlinked temporary file."""
    paths = [path for path, _ in files]
    expected, expected_left = decode_jpegs(paths, report_every=3)
    monkeypatch.delattr(os, "memfd_create")
    pixels, left = decode_jpegs(paths, report_every=3)
    assert left == expected_left and np.array_equal(pixels, expected)
