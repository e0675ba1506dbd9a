"""CIFAR-10 for a long-lived process (the web app): load or download it in a background thread, never blocking a caller.

One DatasetService per data folder. Its state is one of ABSENT (the folder holds no CIFAR-10), LOADING
(decoding, or reading the tensor cache), DOWNLOADING (with a fraction and a message), READY or ERROR
(with a one-line message). `get()` answers at once; `wait()` blocks until the data is there, for the
run registry (before a run starts); `status()` is a copy the web pages draw.
"""

import threading
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from .data import CIFAR10, DataError, default_data_dir, detect_layout, download_cifar10, load_cifar10

ABSENT, LOADING, DOWNLOADING, READY, ERROR = "absent", "loading", "downloading", "ready", "error"
BUSY = (LOADING, DOWNLOADING)


@dataclass(frozen=True)
class DatasetStatus:
    state: str
    message: str
    fraction: float | None  # download progress, 0..1; None when not downloading
    data_dir: Path

    @property
    def busy(self) -> bool:
        return self.state in BUSY


class DatasetService:
    """Owns CIFAR-10 for the app: a thread loads or downloads it; every method is thread-safe and quick, except wait()."""

    def __init__(
        self,
        data_dir: Path | str | None = None,
        load: Callable[..., CIFAR10] = load_cifar10,
        download: Callable[..., None] = download_cifar10,
    ):
        self.data_dir = Path(data_dir) if data_dir is not None else default_data_dir()
        self._load, self._download = load, download
        self._changed = threading.Condition()
        self._data: CIFAR10 | None = None
        self._state, self._message, self._fraction = ABSENT, self._absent_message(), None

    # -- reading -----------------------------------------------------------------------------------

    def get(self) -> CIFAR10 | None:
        """The data when it is loaded, else None, at once."""
        with self._changed:
            return self._data

    def status(self) -> DatasetStatus:
        with self._changed:
            return DatasetStatus(self._state, self._message, self._fraction, self.data_dir)

    def wait(self, timeout: float | None = None) -> CIFAR10:
        """Block until the data is loaded (starting to load it if needed); DataError when there is none to load."""
        self.start_loading()
        with self._changed:
            if not self._changed.wait_for(lambda: self._state not in BUSY, timeout):
                raise DataError(f"CIFAR-10 in {self.data_dir} was not ready within {timeout:.0f} s")
            if self._data is None:
                raise DataError(self._message)
            return self._data

    # -- starting work -----------------------------------------------------------------------------

    def start_loading(self) -> bool:
        """Begin loading in the background unless it is loaded or busy; False when the folder holds no CIFAR-10."""
        with self._changed:
            if self._state in BUSY or self._state == READY:
                return True
            if detect_layout(self.data_dir) is None:
                self._set(ABSENT, self._absent_message())
                return False
            self._set(LOADING, f"Loading CIFAR-10 from {self.data_dir} (the first time decodes every image: a progress bar follows)")
        self._spawn(self._load_now, "cifar10-load")
        return True

    def start_download(self) -> bool:
        """Begin downloading (then loading) in the background; False when loaded or busy already."""
        with self._changed:
            if self._state in BUSY or self._state == READY:
                return False
            self._set(DOWNLOADING, "Starting the download of CIFAR-10", fraction=0.0)
        self._spawn(self._download_now, "cifar10-download")
        return True

    # -- the worker thread -------------------------------------------------------------------------

    def _spawn(self, target, name: str) -> None:
        threading.Thread(target=self._guarded, args=(target,), name=name, daemon=True).start()

    def _guarded(self, target) -> None:
        try:
            target()
        except DataError as error:
            self._finish(None, str(error))
        except Exception as error:  # noqa: BLE001 - the thread must always leave a state a page can show
            self._finish(None, f"Could not load CIFAR-10 from {self.data_dir}: {type(error).__name__}: {error}")

    def _download_now(self) -> None:
        self._download(self.data_dir, progress=self._on_progress)
        with self._changed:
            self._set(LOADING, "Downloaded; decoding CIFAR-10")
        self._load_now()

    def _load_now(self) -> None:
        self._finish(self._load(self.data_dir, progress=self._on_progress), None)

    def _on_progress(self, fraction: float, message: str) -> None:
        """The downloader's and the decoder's reports, for the pages' progress bar."""
        with self._changed:
            if self._state in BUSY:
                self._set(self._state, message, fraction=fraction)

    def _finish(self, data: CIFAR10 | None, error: str | None) -> None:
        with self._changed:
            self._data = data
            if data is not None:
                self._set(READY, f"{len(data.train):,} training and {len(data.test):,} test images ({data.source})")
            else:
                self._set(ERROR, error or "CIFAR-10 could not be loaded")

    def _set(self, state: str, message: str, fraction: float | None = None) -> None:
        """Change the state; the caller holds self._changed."""
        self._state, self._message, self._fraction = state, message, fraction
        self._changed.notify_all()

    def _absent_message(self) -> str:
        return (
            f"No CIFAR-10 in {self.data_dir}. Download it (about 170 MB) on the Dataset page or with "
            "`python -m lenet download`, or set LENET_DATA to a folder that holds it."
        )
