"""Files written so that a reader, or a SIGKILL at any moment, never sees half of one."""

import fcntl
import os
import threading
from pathlib import Path


def atomic_write(path: Path | str, write) -> None:
    """Call write(tmp_path), then rename over path: readers see the old file or the new one, never half."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    # Unique per process and thread: two writers of one file must not share (and truncate) one temporary.
    tmp = path.with_name(f".{path.name}.tmp{os.getpid()}-{threading.get_ident()}")
    try:
        write(tmp)
        with open(tmp, "rb") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def runs_dir() -> Path:
    """Where run folders live: $LENET_RUNS, else ./runs (the app, the CLI and the tests agree on this one default)."""
    return Path(os.environ.get("LENET_RUNS") or "runs")


def locked(path: Path | str) -> bool:
    """Whether some process holds an flock on this file now (one of this very process counts too: flock locks belong
    to each open file). A run's trainer holds its .lock for as long as it trains it."""
    try:
        with open(path, "rb") as handle:
            fcntl.flock(handle, fcntl.LOCK_SH | fcntl.LOCK_NB)
            return False
    except BlockingIOError:
        return True
    except OSError:
        return False
