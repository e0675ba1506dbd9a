"""lenet.predict: every file a user can hand over gives a Prediction or one clear ImageError.

Every image is built here, in memory or under tmp_path, so each case states exactly what it feeds in.
"""

import io
import pickle
import random
import struct
import time
import tomllib
import warnings
import zlib
from pathlib import Path

import numpy as np
import pytest
import torch
import torchvision.transforms.functional as TF
from PIL import EpsImagePlugin, Image, ImageFile, JpegImagePlugin

from lenet.data import CLASSES, WALKTHROUGH_NORMALIZATION
from lenet.model import LeNet5
from lenet.predict import (
    MAX_DISPLAY_SIDE,
    MAX_UPLOAD_BYTES,
    MAX_UPLOAD_MB,
    UNSURE_BELOW,
    ImageError,
    ModelError,
    Prediction,
    classify,
    classify_pixels,
    load_image,
    model_input,
    probabilities,
)

RED, BLUE, GRAY = (255, 0, 0), (0, 0, 255), (128, 128, 128)


def encode(image: Image.Image, fmt: str, **params) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, fmt, **params)
    return buffer.getvalue()


def noise(size=(64, 48), seed=0) -> Image.Image:
    """Random pixels: they compress badly, so a cut file really lacks image data."""
    rng = np.random.default_rng(seed)
    return Image.fromarray(rng.integers(0, 256, (size[1], size[0], 3), dtype=np.uint8))


def refused(source, name=None) -> str:
    """load_image's message for a file it must refuse; always one line."""
    with pytest.raises(ImageError) as caught:
        load_image(source, name)
    message = str(caught.value)
    assert "\n" not in message and message
    return message


def close(pixel, expected, tolerance=6) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def bilevel_png(width: int, height: int, idat: bytes) -> bytes:
    """A 1-bit grayscale PNG written by hand, so its header can claim any size cheaply."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


@pytest.fixture(scope="module")
def model() -> LeNet5:
    torch.manual_seed(0)
    return LeNet5().eval()


# --- formats and sources ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fmt, params",
    [("JPEG", {"quality": 95}), ("PNG", {}), ("WEBP", {"lossless": True}), ("BMP", {}), ("GIF", {}), ("TIFF", {}), ("PPM", {})],
)
def test_common_formats_load_as_rgb(fmt, params):
    image = Image.new("RGB", (40, 30), RED)
    image.paste(BLUE, (20, 0, 40, 30))
    loaded = load_image(encode(image, fmt, **params))
    assert loaded.mode == "RGB" and loaded.size == (40, 30)
    assert close(loaded.getpixel((5, 15)), RED, 12) and close(loaded.getpixel((35, 15)), BLUE, 12)


def test_paths_files_and_bytes_give_the_same_image(tmp_path):
    data = encode(noise(), "PNG")
    path = tmp_path / "photo.png"
    path.write_bytes(data)
    expected = np.asarray(load_image(data))
    with open(path, "rb") as f:
        from_file = load_image(f)
    for image in (load_image(str(path)), load_image(path), from_file, load_image(io.BytesIO(data))):
        assert np.array_equal(np.asarray(image), expected)


def test_a_stream_already_read_is_read_from_the_start():
    upload = io.BytesIO(encode(Image.new("RGB", (8, 8), RED), "PNG"))
    upload.read()
    assert load_image(upload).getpixel((0, 0)) == RED


def test_messages_name_the_file(tmp_path):
    path = tmp_path / "notes.txt"
    path.write_text("shopping list")
    assert refused(path).startswith("`notes.txt`: ")
    assert refused(str(path)).startswith("`notes.txt`: ")
    with open(path, "rb") as f:
        assert refused(f).startswith("`notes.txt`: ")
    assert refused(b"shopping list", "upload.jpg").startswith("`upload.jpg`: ")
    assert refused(path, "shown.png").startswith("`shown.png`: ")
    assert refused(b"shopping list").startswith("Not an image")


@pytest.mark.parametrize(
    "name, shown",
    [
        ("**[prize](http://example.com)** <img src=x onerror=alert(1)> $x^2$ :red[hi].png",
         "`**[prize](http://example.com)** <img src=x onerror=alert(1)> $x^2$ :red[hi].png`"),
        ("two\nlines\r.png", "`twolines.png`"),  # a newline would end the code span and the one-line message
        ("tick`s`.png", "`ticks.png`"),  # a backtick would close the code span early
        ("nul\0byte.png", "`nulbyte.png`"),
        ("right-to-left\u202egnp.exe", "`right-to-leftgnp.exe`"),  # bidi controls could disguise the name
        ("x" * 500, "`" + "x" * 119 + "…`"),
        ("\n\0`", None),  # nothing printable left: the message has no name
    ],
)
def test_names_are_shown_as_inline_code_whatever_they_hold(name, shown):
    # The app renders messages as Markdown: inside a code span, Markdown, HTML and LaTeX show as typed.
    message = refused(b"shopping list", name)
    if shown is None:
        assert message == "Not an image PIL can read (JPEG, PNG, WebP, GIF, BMP, TIFF or PPM)"
        return
    assert message == f"{shown}: not an image PIL can read (JPEG, PNG, WebP, GIF, BMP, TIFF or PPM)"
    assert message.count("`") == 2 and message.isprintable()


def test_a_path_with_a_nul_is_an_image_error(tmp_path):
    assert refused(f"{tmp_path}/photo\0.jpg").startswith("`photo.jpg`: cannot read the file")


def test_image_errors_keep_their_parts_and_survive_pickling():
    with pytest.raises(ImageError) as caught:
        load_image(b"", "a`b.png")
    error = caught.value
    assert (error.name, error.problem) == ("a`b.png", "the file is empty")
    again = pickle.loads(pickle.dumps(error))
    assert str(again) == str(error) == "`ab.png`: the file is empty"


def test_missing_files_and_folders_are_image_errors(tmp_path):
    assert refused(tmp_path / "gone.jpg").startswith("`gone.jpg`: cannot read the file")
    assert "cannot read the file" in refused(tmp_path)


# --- files that are not images ---------------------------------------------------------------------------


@pytest.mark.parametrize(
    "name, data",
    [
        ("notes.txt", b"Remember to buy milk.\n"),
        ("page.html", b"<!doctype html><html><body><img src='cat.jpg'></body></html>"),
        ("drawing.svg", b'<svg xmlns="http://www.w3.org/2000/svg" width="10" height="10"><rect width="10" height="10"/></svg>'),
        ("paper.pdf", b"%PDF-1.4\n1 0 obj << /Type /Catalog >> endobj\ntrailer << /Root 1 0 R >>\n%%EOF\n"),
        ("photo.jpg", bytes(random.Random(0).randrange(256) for _ in range(5000))),
        ("archive.png", zlib.compress(b"not a png" * 100)),
    ],
)
def test_non_images_are_refused_clearly(name, data, tmp_path):
    path = tmp_path / name
    path.write_bytes(data)
    assert refused(path) == f"`{name}`: not an image PIL can read (JPEG, PNG, WebP, GIF, BMP, TIFF or PPM)"


def test_empty_files_are_refused(tmp_path):
    path = tmp_path / "empty.jpg"
    path.write_bytes(b"")
    assert refused(path) == "`empty.jpg`: the file is empty"
    assert refused(b"") == "The file is empty"


def test_postscript_never_reaches_pils_eps_decoder(monkeypatch):
    opened = []
    monkeypatch.setattr(EpsImagePlugin.EpsImageFile, "_open", lambda self: opened.append(True))
    eps = b"%!PS-Adobe-3.0 EPSF-3.0\n%%BoundingBox: 0 0 10 10\nnewpath 0 0 moveto 10 10 lineto stroke\n%%EOF\n"
    assert "not an image PIL can read" in refused(eps, "figure.eps")
    assert opened == []


# --- damaged files ---------------------------------------------------------------------------------------


@pytest.mark.parametrize("fmt", ["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])
def test_truncated_files_are_refused_not_half_loaded(fmt):
    data = encode(noise((120, 90)), fmt)
    message = refused(data[: len(data) // 2], f"cut.{fmt.lower()}")
    assert message.startswith(f"`cut.{fmt.lower()}`: the file is truncated or corrupt (")
    assert ImageFile.LOAD_TRUNCATED_IMAGES is False


def test_corrupt_png_data_is_refused():
    data = bytearray(encode(noise(), "PNG"))
    data[len(data) // 2] ^= 0xFF  # breaks the IDAT checksum
    assert "truncated or corrupt" in refused(bytes(data), "broken.png")


def test_random_damage_gives_an_image_or_an_image_error_never_another_exception():
    rng = random.Random(1)
    originals = [encode(noise((24, 16), seed), fmt) for seed, fmt in enumerate(["JPEG", "PNG", "GIF", "WEBP", "BMP", "TIFF"])]
    outcomes = set()
    for data in originals:
        for _ in range(40):
            damaged = bytearray(data)
            for _ in range(rng.randint(1, 4)):
                damaged[rng.randrange(len(damaged))] = rng.randrange(256)
            damaged = damaged[: rng.randint(1, len(damaged))] if rng.random() < 0.3 else damaged
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")  # PIL warns about corrupt EXIF before refusing
                try:
                    image = load_image(bytes(damaged))
                    assert image.mode == "RGB" and max(image.size) <= MAX_DISPLAY_SIDE
                    outcomes.add("image")
                except ImageError:
                    outcomes.add("error")
    assert outcomes == {"image", "error"}


# --- sizes -----------------------------------------------------------------------------------------------


def test_a_gigapixel_bomb_is_refused_fast_without_decoding():
    bomb = bilevel_png(100_000, 100_000, zlib.compress(bytes(1000)))
    started = time.perf_counter()
    message = refused(bomb, "bomb.png")
    assert time.perf_counter() - started < 1
    assert message == "`bomb.png`: over 89 megapixels is too large (limit 64 megapixels)"


def test_a_valid_image_over_the_pixel_limit_is_refused_before_decoding():
    # A real, complete 9000 x 8000 PNG of 9 KB: decoding it would take 216 MB as RGB.
    width, height = 9000, 8000
    bomb = bilevel_png(width, height, zlib.compress(bytes(height * (1 + width // 8)), 9))
    assert len(bomb) < 20_000 and Image.open(io.BytesIO(bomb)).size == (width, height)
    started = time.perf_counter()
    assert refused(bomb, "bomb.png") == "`bomb.png`: 9000 x 8000 pixels is too large (limit 64 megapixels)"
    assert time.perf_counter() - started < 1


def test_pils_bomb_warning_raised_as_an_error_is_still_an_image_error():
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        assert "too large" in refused(bilevel_png(10_000, 10_000, zlib.compress(bytes(1000))), "big.png")


def test_files_over_the_upload_limit_are_refused(tmp_path):
    path = tmp_path / "huge.jpg"
    with open(path, "wb") as f:
        f.truncate(MAX_UPLOAD_BYTES + 1)  # sparse: no 20 MB written
    assert refused(path) == f"`huge.jpg`: the file is larger than the {MAX_UPLOAD_MB} MB limit"
    assert "larger than" in refused(bytes(MAX_UPLOAD_BYTES + 1))


def test_an_endless_stream_is_not_read_to_its_end():
    class Endless(io.RawIOBase):
        name = "camera-feed.jpg"
        given = 0

        def readable(self):
            return True

        def read(self, size=-1):
            assert size is not None and size >= 0, "asked to read everything"
            self.given += size
            return b"\xff" * size

    stream = Endless()
    assert refused(stream) == f"`camera-feed.jpg`: the file is larger than the {MAX_UPLOAD_MB} MB limit"
    assert stream.given <= MAX_UPLOAD_BYTES + 1


def test_large_jpegs_are_decoded_at_reduced_size_and_downscaled(monkeypatch):
    decoded = []  # the size each JPEG is decoded at
    load = JpegImagePlugin.JpegImageFile.load

    def spy(self):
        if self.tile:
            decoded.append(self.size)
        return load(self)

    monkeypatch.setattr(JpegImagePlugin.JpegImageFile, "load", spy)
    photo = Image.new("RGB", (6000, 4000), GRAY)
    photo.paste(RED, (0, 0, 600, 400))
    image = load_image(encode(photo, "JPEG", quality=90))
    assert decoded == [(1500, 1000)]  # 1/4 scale: the 6000 x 4000 pixels never exist in memory
    assert image.size == (1024, 683)
    assert close(image.getpixel((20, 20)), RED, 12) and close(image.getpixel((900, 600)), GRAY, 12)


def test_large_pngs_are_downscaled():
    image = load_image(encode(Image.new("RGB", (3000, 2000), BLUE), "PNG"))
    assert image.size == (1024, 683) and image.getpixel((500, 300)) == BLUE


def test_a_one_pixel_image_loads_and_fills_the_model_input(model):
    prediction = classify(model, WALKTHROUGH_NORMALIZATION, encode(Image.new("RGB", (1, 1), (10, 200, 30)), "PNG"))
    assert prediction.image.size == (1, 1)
    assert prediction.model_input.size == (32, 32)
    assert (np.asarray(prediction.model_input) == (10, 200, 30)).all()


# --- colour modes ----------------------------------------------------------------------------------------


def gradient16() -> np.ndarray:
    return np.tile(np.linspace(0, 65535, 256).round().astype(np.uint16), (4, 1))


@pytest.mark.parametrize(
    "image, fmt",
    [
        (Image.fromarray(gradient16()), "PNG"),  # opens as I;16
        (Image.fromarray(gradient16()), "TIFF"),  # I;16
        (Image.frombytes("I;16B", (256, 4), gradient16().astype(">u2").tobytes()), "TIFF"),  # I;16B
        (Image.fromarray(gradient16().astype(np.int32)), "TIFF"),  # I
    ],
)
def test_16_bit_grayscale_is_scaled_not_clipped(image, fmt):
    data = encode(image, fmt)
    assert Image.open(io.BytesIO(data)).mode == image.mode
    row = np.asarray(load_image(data))[0]
    assert (row[:, 0] == row[:, 1]).all() and (row[:, 1] == row[:, 2]).all()
    values = row[:, 0].astype(int)
    assert values[0] == 0 and values[-1] == 255 and abs(values[128] - 128) <= 1
    assert (np.diff(values) >= 0).all() and len(set(values)) > 200


@pytest.mark.parametrize("fmt", ["JPEG", "TIFF"])
def test_cmyk_becomes_rgb(fmt):
    image = Image.new("CMYK", (20, 10), (0, 0, 0, 0))  # no ink: white
    image.paste((255, 0, 0, 0), (10, 0, 20, 10))  # full cyan
    loaded = load_image(encode(image, fmt))
    assert loaded.mode == "RGB"
    assert close(loaded.getpixel((2, 5)), (255, 255, 255), 8) and close(loaded.getpixel((17, 5)), (0, 255, 255), 8)


@pytest.mark.parametrize("fmt", ["PNG", "GIF"])
def test_palette_transparency_is_white(fmt):
    image = Image.new("P", (10, 10), 0)
    image.putpalette([0, 0, 0, 255, 0, 0] + [0] * 762)  # index 0 black, index 1 red
    image.paste(1, (5, 0, 10, 10))
    loaded = load_image(encode(image, fmt, transparency=0))
    assert loaded.getpixel((1, 1)) == (255, 255, 255) and loaded.getpixel((8, 1)) == RED


def test_rgba_is_composited_on_white():
    image = Image.new("RGBA", (3, 1))
    image.putdata([(0, 0, 0, 0), (255, 0, 0, 255), (255, 0, 0, 128)])
    loaded = load_image(encode(image, "PNG"))
    assert loaded.getpixel((0, 0)) == (255, 255, 255)
    assert loaded.getpixel((1, 0)) == RED
    assert close(loaded.getpixel((2, 0)), (255, 127, 127), 2)


def test_gray_with_alpha_is_composited_on_white():
    image = Image.new("LA", (3, 1))
    image.putdata([(0, 0), (0, 255), (0, 128)])
    loaded = load_image(encode(image, "PNG"))
    assert [loaded.getpixel((x, 0)) for x in range(2)] == [(255, 255, 255), (0, 0, 0)]
    assert close(loaded.getpixel((2, 0)), (127, 127, 127), 2)


def test_grayscale_and_bilevel_become_rgb():
    gray = load_image(encode(Image.new("L", (4, 4), 100), "PNG"))
    assert gray.mode == "RGB" and gray.getpixel((0, 0)) == (100, 100, 100)
    bilevel = Image.new("1", (4, 4), 0)
    bilevel.paste(1, (2, 0, 4, 4))
    loaded = load_image(encode(bilevel, "PNG"))
    assert loaded.getpixel((0, 0)) == (0, 0, 0) and loaded.getpixel((3, 0)) == (255, 255, 255)


@pytest.mark.parametrize("fmt, params", [("GIF", {}), ("WEBP", {"lossless": True}), ("PNG", {})])
def test_animations_give_their_first_frame(fmt, params):
    frames = [Image.new("RGB", (16, 16), RED), Image.new("RGB", (16, 16), BLUE)]
    data = encode(frames[0], fmt, save_all=True, append_images=frames[1:], duration=100, loop=0, **params)
    assert getattr(Image.open(io.BytesIO(data)), "n_frames", 1) == 2
    assert load_image(data).getpixel((8, 8)) == RED


# --- orientation -----------------------------------------------------------------------------------------


def phone_photo(size, orientation: int) -> bytes:
    """A gray JPEG with a red block at its stored top-left corner and an EXIF orientation tag."""
    image = Image.new("RGB", size, GRAY)
    image.paste(RED, (0, 0, size[0] // 6, size[1] // 4))
    exif = Image.Exif()
    exif[0x0112] = orientation
    return encode(image, "JPEG", quality=95, exif=exif.tobytes())


@pytest.mark.parametrize(
    "orientation, size, red_corner",
    [
        (1, (60, 40), "top-left"),
        (3, (60, 40), "bottom-right"),  # rotated 180
        (6, (40, 60), "top-right"),  # the camera was turned clockwise
        (8, (40, 60), "bottom-left"),  # the camera was turned anticlockwise
    ],
)
def test_exif_orientation_is_applied(orientation, size, red_corner):
    image = load_image(phone_photo((60, 40), orientation))
    assert image.size == size
    w, h = size
    corners = {"top-left": (2, 2), "top-right": (w - 3, 2), "bottom-left": (2, h - 3), "bottom-right": (w - 3, h - 3)}
    for corner, xy in corners.items():
        assert close(image.getpixel(xy), RED if corner == red_corner else GRAY, 12), corner


def test_large_rotated_photos_are_turned_upright_then_downscaled():
    image = load_image(phone_photo((3000, 2000), 6))
    assert image.size == (683, 1024)
    assert close(image.getpixel((680, 5)), RED, 12) and close(image.getpixel((5, 5)), GRAY, 12)


# --- what the network sees -------------------------------------------------------------------------------


@pytest.mark.parametrize("size, middle", [((96, 32), (32, 0, 64, 32)), ((32, 96), (0, 32, 32, 64))])
def test_model_input_is_the_centre_square(size, middle):
    image = Image.new("RGB", size, RED)
    image.paste(BLUE, middle)
    small = model_input(image)
    assert small.mode == "RGB" and small.size == (32, 32)
    assert (np.abs(np.asarray(small).astype(int) - BLUE) <= 2).all()


def test_model_input_downscales_without_aliasing():
    stripes = np.zeros((64, 64, 3), dtype=np.uint8)
    stripes[:, ::2] = 255  # one-pixel stripes: a nearest-neighbour shrink gives all black or all white
    small = np.asarray(model_input(Image.fromarray(stripes))).astype(int)
    assert np.abs(small[4:-4, 4:-4] - 127.5).max() <= 3


def test_model_input_composites_transparency_on_white():
    assert model_input(Image.new("RGBA", (40, 40), (0, 0, 0, 0))).getpixel((16, 16)) == (255, 255, 255)


def test_probabilities_match_the_training_transforms(model):
    image32 = noise((32, 32), seed=3)
    p = probabilities(model, WALKTHROUGH_NORMALIZATION, image32)
    assert p.shape == (10,) and not p.requires_grad
    assert abs(p.sum().item() - 1) < 1e-5 and (p >= 0).all()
    reference = TF.normalize(TF.to_tensor(image32), WALKTHROUGH_NORMALIZATION["mean"], WALKTHROUGH_NORMALIZATION["std"])
    with torch.no_grad():
        expected = model(reference.unsqueeze(0))[0].softmax(0)
    assert torch.allclose(p, expected, atol=1e-6)


def test_probabilities_want_the_model_input():
    with pytest.raises(ValueError, match="32x32 RGB"):
        probabilities(LeNet5(), WALKTHROUGH_NORMALIZATION, Image.new("RGB", (64, 64)))


@pytest.mark.parametrize("bad", [float("nan"), float("inf")])
def test_a_model_with_non_finite_outputs_is_refused_not_reported(bad):
    broken = LeNet5().eval()
    with torch.no_grad():
        broken.fc3.bias[4] = bad  # a diverged run: inf gives NaN after softmax
    with pytest.raises(ModelError, match="^the model's outputs are not finite numbers: it cannot be used"):
        probabilities(broken, WALKTHROUGH_NORMALIZATION, noise((32, 32)))
    with pytest.raises(ModelError):
        classify(broken, WALKTHROUGH_NORMALIZATION, encode(noise(), "PNG"))


def test_a_prediction_never_carries_nan():
    with pytest.raises(ModelError, match="not finite"):
        prediction([float("nan")] + [0.1] * 9)
    assert issubclass(ModelError, ValueError)


# --- the Prediction ---------------------------------------------------------------------------------------


def prediction(probs) -> Prediction:
    return Prediction(image=Image.new("RGB", (1, 1)), model_input=Image.new("RGB", (32, 32)), probabilities=probs)


def test_prediction_reports_the_top_classes():
    probs = [0.05, 0.05, 0.6, 0.1, 0.05, 0.05, 0.02, 0.03, 0.03, 0.02]
    p = prediction(probs)
    assert p.label == "bird" and p.confidence == 0.6 and not p.unsure
    assert p.top() == [("bird", 0.6), ("cat", 0.1), ("airplane", 0.05)]
    assert [c for c, _ in p.top(10)] == sorted(CLASSES, key=lambda c: -probs[CLASSES.index(c)])
    assert len(p.top(20)) == 10


def test_prediction_is_unsure_below_the_threshold():
    assert UNSURE_BELOW == 0.5
    assert prediction([0.45, 0.4] + [0.01875] * 8).unsure
    assert not prediction([UNSURE_BELOW, 0.4] + [0.0125] * 8).unsure


def test_classify_with_an_untrained_lenet(model, tmp_path):
    photo = noise((300, 200), seed=7)
    path = tmp_path / "photo.jpg"
    photo.save(path, quality=95)
    result = classify(model, WALKTHROUGH_NORMALIZATION, path)
    assert result.image.size == (300, 200) and result.model_input.size == (32, 32)
    assert len(result.probabilities) == 10 and abs(sum(result.probabilities) - 1) < 1e-5
    assert result.label in CLASSES and result.confidence == max(result.probabilities)
    assert result.probabilities == probabilities(model, WALKTHROUGH_NORMALIZATION, result.model_input).tolist()
    assert [p for _, p in result.top(10)] == sorted(result.probabilities, reverse=True)
    with pytest.raises(ImageError, match="^`notes.txt`: "):
        classify(model, WALKTHROUGH_NORMALIZATION, b"hello", name="notes.txt")


def test_streamlit_upload_limit_matches():
    config = tomllib.loads((Path(__file__).parent.parent / ".streamlit" / "config.toml").read_text())
    assert config["server"]["maxUploadSize"] == MAX_UPLOAD_MB
    assert config["browser"]["gatherUsageStats"] is False


def test_a_dataset_image_is_classified_as_its_32x32_upload_would_be(model, cifar):
    pixels = cifar.test.images[3]
    from_tensor = classify_pixels(model, WALKTHROUGH_NORMALIZATION, pixels)
    as_upload = classify(model, WALKTHROUGH_NORMALIZATION, encode(Image.fromarray(pixels.permute(1, 2, 0).numpy()), "PNG"))
    assert from_tensor.probabilities == as_upload.probabilities and from_tensor.model_input.size == (32, 32)
