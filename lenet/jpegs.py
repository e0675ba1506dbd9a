"""Many small JPEGs decoded on every core: CIFAR-10's image folders, 60,000 files of about 1 KB each.

Threads do not get there: each image is a few short calls (open, read, close, decode) that each give up and take
back Python's GIL, and two threads decoded the 50,000 training images no faster than one (0.70 s against 0.63 s on
the 2-core machine). So the work goes to worker processes, one per core, that run this file as a script: Python,
numpy and simplejpeg only (no torch, no package import), 0.07 s to start. Each decodes its share of the files straight
into its rows of one array in a memfd (memory shared with the parent, with no file name and no /dev/shm size cap)
and prints how far it is, for the progress bar. simplejpeg is libjpeg-turbo, as PIL's decoder: the same pixels,
at 9 us an image against PIL's 56 (whose Image.open parses the markers in Python).

What a worker cannot decode (not a JPEG, not 32 x 32, CMYK, a damaged file) it names; the caller decodes those
rows with PIL, which reads them or says why not.

This file never imports torch or the package: `python lenet/jpegs.py` must start in a blink.
"""

import mmap
import os
import subprocess
import sys
import tempfile
import threading
from collections.abc import Callable

import numpy as np
import simplejpeg

IMAGE_BYTES = 32 * 32 * 3
# A CIFAR-10 JPEG is about 1 KB; a file this large goes to PIL, which reads its size before decoding anything.
SMALL_JPEG_BYTES = 64 * 1024
# The JPEG colour spaces simplejpeg turns into RGB as PIL's convert("RGB") does; CMYK and the rest go to PIL.
FAST_COLORSPACES = ("YCbCr", "Gray")


def decode_into(path: str, row: np.ndarray) -> bool:
    """Decode one small 32 x 32 JPEG into row (32 x 32 x 3 uint8) and say True; False when it is anything else."""
    try:
        descriptor = os.open(path, os.O_RDONLY)  # os.open/os.read: a third of open()'s cost on a 1 KB file
        try:
            contents = os.read(descriptor, SMALL_JPEG_BYTES + 1)
        finally:
            os.close(descriptor)
        if len(contents) > SMALL_JPEG_BYTES:
            return False
        height, width, colorspace, _ = simplejpeg.decode_jpeg_header(contents)
        if (height, width) != (32, 32) or colorspace not in FAST_COLORSPACES:
            return False
        simplejpeg.decode_jpeg(contents, colorspace="RGB", buffer=row)
        return True
    except (OSError, ValueError):  # unreadable, not a JPEG (a PNG named .jpg) or damaged: PIL decodes it or says why
        return False


def decode_jpegs(paths: list[str], report_every: int, progress: Callable[[int], None] | None = None,
                 workers: int | None = None) -> tuple[np.ndarray, list[int]]:
    """Decode the files in worker processes: (pixels N x 3 x 32 x 32, the indices of the files left for PIL).

    The pixels are the memory the workers wrote (no copy; it goes when the array does), zero where a file was left.
    progress(done) is called, from a reader thread, with the number of images decoded so far, after every
    report_every images of a worker. A worker that fails leaves its share's undecoded rows to PIL as well.
    """
    count = len(paths)
    workers = max(1, min(workers or os.cpu_count() or 1, count // report_every + 1))
    shares = [(count * k // workers, count * (k + 1) // workers) for k in range(workers)]
    descriptor = _shared_file()
    try:
        os.ftruncate(descriptor, max(count, 1) * IMAGE_BYTES)
        processes = [_start_worker(descriptor, start, report_every) for start, _ in shares]
        done, left, lock = [0] * workers, [], threading.Lock()

        def follow(k: int) -> None:
            (start, stop), process = shares[k], processes[k]
            finished = False
            if process is not None:
                try:
                    process.stdin.write("\0".join(paths[start:stop]).encode("utf-8", "surrogateescape"))
                    process.stdin.close()
                except OSError:
                    pass  # it died before reading: its rows are all left below
                for line in process.stdout:
                    word, _, rest = line.decode().partition(" ")
                    with lock:
                        if word == "done":
                            done[k] = int(rest)
                            if progress:
                                progress(sum(done))
                        elif word == "left":
                            left.extend(start + int(i) for i in rest.split())
                            finished = True
                finished = process.wait() == 0 and finished
            if not finished:  # no worker, or one that died: none of its rows can be trusted
                with lock:
                    left.extend(range(start, stop))

        readers = [threading.Thread(target=follow, args=(k,), name=f"jpeg-worker-{k}") for k in range(workers)]
        for reader in readers:
            reader.start()
        for reader in readers:
            reader.join()
        return _mapped(descriptor, 0, count), sorted(set(left))
    finally:
        os.close(descriptor)  # the mapping stays


def _shared_file() -> int:
    """A descriptor of memory both processes map: a memfd on Linux, elsewhere a temporary file already unlinked."""
    if hasattr(os, "memfd_create"):
        return os.memfd_create("cifar10-pixels")
    with tempfile.TemporaryFile() as file:
        return os.dup(file.fileno())


def _start_worker(descriptor: int, first_row: int, report_every: int) -> subprocess.Popen | None:
    """A worker process, or None when none can start (its share then goes to PIL: slower, still right)."""
    try:
        # -P: the script's own folder (this package's, with its data.py, files.py, ...) stays off the import path.
        return subprocess.Popen([sys.executable, "-P", os.path.abspath(__file__), str(descriptor), str(first_row), str(report_every)],
                                stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, pass_fds=(descriptor,))
    except OSError:
        return None


def _mapped(descriptor: int, first_row: int, rows: int) -> np.ndarray:
    """Rows first_row.. of the shared array, as rows x 3 x 32 x 32, their pages mapped in one go (MAP_POPULATE: a page
    fault per page made decoding 0.9 s instead of 0.7). The mapping lasts as long as the array does."""
    if rows == 0:
        return np.zeros((0, 3, 32, 32), dtype=np.uint8)
    start = first_row * IMAGE_BYTES
    offset = start - start % mmap.ALLOCATIONGRANULARITY
    flags = mmap.MAP_SHARED | getattr(mmap, "MAP_POPULATE", 0)  # Linux's
    shared = mmap.mmap(descriptor, start + rows * IMAGE_BYTES - offset, flags=flags, offset=offset)
    return np.frombuffer(shared, dtype=np.uint8, offset=start - offset, count=rows * IMAGE_BYTES).reshape(rows, 3, 32, 32)


def _work(descriptor: int, first_row: int, report_every: int) -> None:
    """A worker: the paths come on stdin, NUL-separated; "done N" lines and one "left i j ..." line go to stdout."""
    paths = sys.stdin.buffer.read().decode("utf-8", "surrogateescape").split("\0")
    paths = [] if paths == [""] else paths
    pixels = _mapped(descriptor, first_row, len(paths))
    decoded = np.zeros((report_every, 32, 32, 3), dtype=np.uint8)  # the decoder's layout, turned a chunk at a time
    left = []
    for start in range(0, len(paths), report_every):
        chunk = paths[start:start + report_every]
        for i, path in enumerate(chunk):
            if not decode_into(path, decoded[i]):
                decoded[i] = 0  # whatever a failed decoding or an earlier chunk left there
                left.append(start + i)
        pixels[start:start + len(chunk)] = decoded[:len(chunk)].transpose(0, 3, 1, 2)
        print(f"done {start + len(chunk) - len(left)}", flush=True)
    print("left " + " ".join(map(str, left)), flush=True)


if __name__ == "__main__":
    _work(*map(int, sys.argv[1:4]))
