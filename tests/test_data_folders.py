"""Image-folder trees (train/<class>/*, test/<class>/*) that the tests write: decoded, validated, cached and re-read."""

import os
import shutil
import threading
import time

import numpy as np
import pytest
import torch
from PIL import Image

import lenet.data
from lenet.data import CLASSES, DataError, load_cifar10
from lenet.jpegs import SMALL_JPEG_BYTES


def _color(split: str, label: int, index: int) -> tuple[int, int, int]:
    """A solid color that says which split, class and image a pixel came from."""
    return (label * 20 + 5, index * 30 + 7, 200 if split == "train" else 100)


def _write_image(path, color, size=(32, 32), mode="RGB"):
    image = Image.new("RGB", size, color)
    image = image.convert(mode) if mode != "RGB" else image
    image.save(path)


def make_tree(root, per_class=None, size=(32, 32)):
    """train/<class>/ and test/<class>/ with per_class[split] lossless PNGs of known solid colors."""
    per_class = per_class or {"train": 3, "test": 2}
    for split, n in per_class.items():
        for label, name in enumerate(CLASSES):
            folder = root / split / name
            folder.mkdir(parents=True)
            for i in range(n):
                _write_image(folder / f"img{i:02d}.png", _color(split, label, i), size)
    return root


@pytest.fixture(autouse=True)
def private_cache(tmp_path, monkeypatch):
    cache = tmp_path / "cache"
    monkeypatch.setenv("LENET_CACHE", str(cache))
    return cache


@pytest.fixture
def tree(tmp_path):
    return make_tree(tmp_path / "data")


def _colors(split) -> list[tuple[int, int, int]]:
    return [tuple(split.images[i, :, 16, 16].tolist()) for i in range(len(split))]


def test_an_image_folder_gives_uint8_tensors_with_labels_in_class_order(tree):
    data = load_cifar10(tree)
    assert data.train.images.shape == (30, 3, 32, 32) and data.train.images.dtype == torch.uint8
    assert data.test.images.shape == (20, 3, 32, 32) and data.test.images.dtype == torch.uint8
    assert data.train.labels.dtype == torch.int64
    assert data.train.labels.tolist() == [c for c in range(10) for _ in range(3)]
    assert data.test.labels.tolist() == [c for c in range(10) for _ in range(2)]
    # Each image is the one its label says, channels first: the colors encode split, class and index.
    assert _colors(data.train) == [_color("train", c, i) for c in range(10) for i in range(3)]
    assert _colors(data.test) == [_color("test", c, i) for c in range(10) for i in range(2)]
    assert torch.equal(data.train.images[4, 0], torch.full((32, 32), 25, dtype=torch.uint8))
    assert "image-folder" in data.source and str(tree.resolve()) in data.source


def test_images_in_other_modes_and_formats_become_rgb(tree):
    cat = tree / "train" / "cat"
    _write_image(cat / "gray.png", (90, 90, 90), mode="L")
    _write_image(cat / "alpha.png", (10, 120, 240), mode="RGBA")
    palette = Image.new("P", (32, 32), 0)
    palette.putpalette([10, 120, 240] + [0] * 765)
    palette.save(cat / "palette.gif")
    Image.new("RGB", (32, 32), (10, 120, 240)).save(cat / "photo.JPG", quality=100)  # upper-case extension, JPEG
    data = load_cifar10(tree)
    assert data.train.images.shape == (34, 3, 32, 32)
    added = data.train.images[data.train.labels == CLASSES.index("cat")]
    assert len(added) == 7
    by_color = {tuple(img[:, 16, 16].tolist()) for img in added}
    assert (10, 120, 240) in by_color and (90, 90, 90) in by_color
    for img in added:
        center = img[:, 16, 16]
        assert (img.int() - center.int()[:, None, None]).abs().max() <= 3  # solid stays solid (JPEG within a few levels)


def test_images_of_other_sizes_are_refused_naming_one_and_the_count(tree):
    # Deliberately not resized (it used to be): CIFAR-10's images are 32 x 32, and a silent resize hides a mistake.
    cat = tree / "train" / "cat"
    _write_image(cat / "big.png", (10, 120, 240), size=(64, 48))
    _write_image(cat / "tiny.png", (10, 120, 240), size=(8, 8))
    _write_image(tree / "train" / "dog" / "wide.png", (10, 120, 240), size=(33, 32))
    message = _assert_data_error(tree, cat / "big.png", "64 x 48 pixels", f"3 images in {tree / 'train'} are not 32 x 32", "Resize")
    assert "\n" not in message


@pytest.mark.parametrize("side", [48, 600])
def test_jpegs_of_another_size_are_refused_whichever_decoder_reads_them(tree, side):
    """A small JPEG's size is read from its header by the decoding workers; one over SMALL_JPEG_BYTES goes to PIL,
    which reads the size before decoding anything."""
    path = tree / "train" / "cat" / "big.jpg"
    noise = np.random.default_rng(side).integers(0, 256, (side, side, 3), dtype=np.uint8)
    Image.fromarray(noise).save(path, quality=100)
    assert (path.stat().st_size > SMALL_JPEG_BYTES) == (side == 600)
    _assert_data_error(tree, path, f"{side} x {side} pixels", "not 32 x 32")


def test_real_jpegs_decode_to_pils_pixels_and_both_splits_report_one_progress(tmp_path, cifar_dir, monkeypatch):
    root = tmp_path / "data"
    for split, count in (("train", 30), ("test", 10)):
        for name in CLASSES:
            (root / split / name).mkdir(parents=True)
            for source in sorted((cifar_dir / split / name).iterdir())[:count]:
                shutil.copy(source, root / split / name / source.name)
    monkeypatch.setattr(lenet.data, "DECODE_CHUNK", 64)  # several chunks, so several reports
    reports = []
    data = load_cifar10(root, progress=lambda fraction, message: reports.append((fraction, message)))
    for split in ("train", "test"):
        files = [path for name in CLASSES for path in sorted((root / split / name).iterdir())]
        by_pil = np.stack([np.asarray(Image.open(path).convert("RGB")).transpose(2, 0, 1) for path in files])
        assert torch.equal(getattr(data, split).images, torch.from_numpy(by_pil))
    fractions = [fraction for fraction, _ in reports]
    assert fractions == sorted(fractions) and len(reports) >= 400 // 64 + 1  # 400 images, a report every 64 a worker
    assert reports[-1] == (1.0, f"Decoding CIFAR-10 from {root}: 400 of 400 images")
    lenet.data.finish_cache_writes()
    assert len(list((tmp_path / "cache").glob("cifar10-*.pt"))) == 2  # one cache a split, written behind
    load_cifar10(root, progress=lambda fraction, message: reports.append((fraction, message)))
    assert fractions == [fraction for fraction, _ in reports]  # the second load reads the caches: nothing reported


def test_one_image_of_another_size_is_refused_in_the_singular(tree):
    _write_image(tree / "test" / "ship" / "big.png", (1, 2, 3), size=(32, 31))
    _assert_data_error(tree, tree / "test" / "ship" / "big.png", "32 x 31 pixels", f"1 image in {tree / 'test'} is not 32 x 32")


def test_a_fifo_named_like_an_image_is_skipped_not_waited_on(tree):
    fifo = tree / "train" / "cat" / "x.png"
    os.mkfifo(fifo)
    result = {}
    loader = threading.Thread(target=lambda: result.update(data=load_cifar10(tree)), daemon=True)
    loader.start()
    loader.join(timeout=60)
    if loader.is_alive():
        os.close(os.open(fifo, os.O_WRONLY | os.O_NONBLOCK))  # let the blocked reader see end-of-file and finish
        loader.join()
        pytest.fail("load_cifar10 waited on a FIFO named x.png")
    assert len(result["data"].train) == 30 and result["data"].train.class_counts() == [3] * 10


def test_files_that_are_not_images_and_hidden_entries_are_ignored(tree):
    (tree / "README.txt").write_text("CIFAR-10 as images")
    (tree / "train" / "README.txt").write_text("train split")
    (tree / "train" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tree / "train" / ".ipynb_checkpoints").mkdir()
    (tree / "train" / "dog" / ".DS_Store").write_bytes(b"\0\0\0\1Bud1")
    (tree / "train" / "dog" / "labels.csv").write_text("file,label\n")
    (tree / "train" / "dog" / "notes.txt").write_text("nothing")
    (tree / "train" / "dog" / "._img00.png").write_bytes(b"AppleDouble junk")  # macOS resource fork, hidden
    data = load_cifar10(tree)
    assert len(data.train) == 30 and data.train.class_counts() == [3] * 10


def _assert_data_error(tree, *fragments):
    with pytest.raises(DataError) as caught:
        load_cifar10(tree)
    message = str(caught.value)
    for fragment in fragments:
        assert str(fragment) in message, message
    return message


def test_a_missing_class_folder_is_named(tree):
    for path in (tree / "test" / "frog").iterdir():
        path.unlink()
    (tree / "test" / "frog").rmdir()
    message = _assert_data_error(tree, tree / "test", "missing class folders: frog")
    assert "unexpected" not in message


def test_an_extra_class_folder_is_named(tree):
    (tree / "train" / "unicorn").mkdir()
    _write_image(tree / "train" / "unicorn" / "u.png", (1, 2, 3))
    _assert_data_error(tree, tree / "train", "unexpected folders: unicorn")


def test_a_misspelled_class_folder_is_named_both_ways(tree):
    (tree / "train" / "airplane").rename(tree / "train" / "aeroplane")
    _assert_data_error(tree, "missing class folders: airplane", "unexpected folders: aeroplane")


@pytest.mark.parametrize("split", ["test", "train"])
def test_a_missing_split_is_named(tree, split):
    for folder in (tree / split).iterdir():
        for path in folder.iterdir():
            path.unlink()
        folder.rmdir()
    (tree / split).rmdir()
    _assert_data_error(tree, tree / split, "missing")


def test_an_unreadable_image_is_named(tree):
    bad = tree / "train" / "horse" / "broken.jpg"
    bad.write_text("this is text, not a JPEG")
    _assert_data_error(tree, bad, "not a readable image")


def test_a_truncated_image_is_named(tree):
    path = tree / "test" / "ship" / "half.jpg"
    Image.new("RGB", (32, 32), (1, 2, 3)).save(path)
    path.write_bytes(path.read_bytes()[:100])
    _assert_data_error(tree, path, "not a readable image")


def test_an_empty_class_folder_is_named(tree):
    for path in (tree / "train" / "deer").iterdir():
        path.unlink()
    (tree / "train" / "deer" / "notes.txt").write_text("no images here")  # non-images do not count
    _assert_data_error(tree, tree / "train" / "deer", "no images")


@pytest.mark.parametrize("kind", ["empty", "nonexistent", "unrelated files"])
def test_a_folder_without_cifar10_says_how_to_get_it(tmp_path, kind):
    folder = tmp_path / "data"
    if kind != "nonexistent":
        folder.mkdir()
    if kind == "unrelated files":
        (folder / "photo.png").write_bytes(b"")
        (folder / "cifar-10-batches-py").mkdir()  # extracted only partly: no test_batch
    message = _assert_data_error(folder, folder, "download")
    assert "LENET_DATA" in message
    assert not (folder / "cifar-10-python.tar.gz").exists()  # nothing was downloaded without being asked


# -- the tensor cache ----------------------------------------------------------------------------------------


def _cache_files(cache):
    """The caches on disk, once this process has finished writing them (a load returns before that)."""
    lenet.data.finish_cache_writes()
    return sorted(cache.glob("cifar10-*.pt")) if cache.is_dir() else []


def test_the_decoded_splits_are_cached_and_the_cache_is_what_a_second_load_reads(tree, private_cache):
    first = load_cifar10(tree)
    files = _cache_files(private_cache)
    assert len(files) == 2  # one per split
    assert [p.name for p in private_cache.iterdir() if not p.name.startswith("cifar10-")] == []  # no temporaries left
    stamps = {p: p.stat().st_mtime_ns for p in files}

    second = load_cifar10(tree)
    assert torch.equal(second.train.images, first.train.images) and torch.equal(second.test.labels, first.test.labels)
    assert {p: p.stat().st_mtime_ns for p in _cache_files(private_cache)} == stamps  # read, not rewritten

    # Proof that the second load came from the cache and not the images: mark the cached test split.
    for path in files:
        entry = torch.load(path, weights_only=True)
        if len(entry["labels"]) == 20:
            entry["images"] = torch.full_like(entry["images"], 77)
            torch.save(entry, path)
    assert (load_cifar10(tree).test.images == 77).all()


def test_adding_an_image_invalidates_the_cache(tree, private_cache):
    assert len(load_cifar10(tree).train) == 30
    time.sleep(0.02)  # a later folder mtime even on coarse clocks
    _write_image(tree / "train" / "bird" / "new.png", (1, 2, 3))
    data = load_cifar10(tree)
    assert len(data.train) == 31 and data.train.class_counts()[CLASSES.index("bird")] == 4
    assert len(_cache_files(private_cache)) == 3  # a new entry for the changed split; test's is reused


def test_replacing_an_image_by_another_invalidates_the_cache(tree):
    before = load_cifar10(tree)
    time.sleep(0.02)
    folder = tree / "test" / "truck"
    (folder / "img00.png").unlink()
    _write_image(folder / "zzz.png", (250, 1, 2))  # same count of files, other content
    after = load_cifar10(tree)
    assert len(after.test) == len(before.test)
    assert (250, 1, 2) in _colors(after.test) and (250, 1, 2) not in _colors(before.test)


def test_an_image_rewritten_in_place_is_not_served_from_the_cache(tree):
    before = load_cifar10(tree)
    folder = tree / "train" / "horse"
    folder_stamp = os.stat(folder).st_mtime_ns
    time.sleep(0.02)  # a later file mtime even on coarse clocks
    _write_image(folder / "img01.png", (250, 1, 2))  # the same name, the same size in bytes or not: other pixels
    assert os.stat(folder).st_mtime_ns == folder_stamp  # no folder changed: the file's own stamp must tell
    after = load_cifar10(tree)
    index = CLASSES.index("horse") * 3 + 1
    assert _colors(before.train)[index] == _color("train", CLASSES.index("horse"), 1)
    assert _colors(after.train)[index] == (250, 1, 2)


def test_a_damaged_cache_is_rebuilt(tree, private_cache):
    first = load_cifar10(tree)
    for path in _cache_files(private_cache):
        path.write_bytes(b"garbage")
    again = load_cifar10(tree)
    assert torch.equal(again.train.images, first.train.images)
    assert all(p.stat().st_size > 1000 for p in _cache_files(private_cache))


def test_an_unwritable_cache_still_loads(tree, tmp_path, monkeypatch):
    blocker = tmp_path / "not-a-folder"
    blocker.write_text("a file where the cache folder would go")
    monkeypatch.setenv("LENET_CACHE", str(blocker / "cache"))
    data = load_cifar10(tree)
    assert len(data.train) == 30 and blocker.read_text().startswith("a file")


def test_the_data_folder_is_never_written(tree):
    # It may be read-only (a shared copy): the cache lives elsewhere.
    before = sorted(str(p.relative_to(tree)) for p in tree.rglob("*"))
    stamp = os.stat(tree).st_mtime_ns
    load_cifar10(tree)
    assert sorted(str(p.relative_to(tree)) for p in tree.rglob("*")) == before and os.stat(tree).st_mtime_ns == stamp


def test_many_images_decode_like_pil_does(tmp_path):
    # Noise images (not solid colors) through JPEG: the tensor equals PIL's own decoding, pixel for pixel.
    root = tmp_path / "data"
    rng = np.random.default_rng(0)
    expected = []
    for split in ("train", "test"):
        for name in CLASSES:
            folder = root / split / name
            folder.mkdir(parents=True)
            array = rng.integers(0, 256, (32, 32, 3), dtype=np.uint8)
            Image.fromarray(array).save(folder / "x.jpg", quality=90)
            if split == "test":
                with Image.open(folder / "x.jpg") as image:
                    expected.append(np.asarray(image.convert("RGB")).transpose(2, 0, 1))
    data = load_cifar10(root)
    assert torch.equal(data.test.images, torch.from_numpy(np.stack(expected)))
