"""Training runs: a folder per run on disk, and a registry that trains one run at a time in a background thread.

runs/<id>/config.json      the TrainConfig, written once
runs/<id>/status.json      state, error, progress, heartbeat (rewritten about once a second)
runs/<id>/metrics.json     every step and epoch event so far
runs/<id>/checkpoint.pt    the latest weights, with what is needed to resume (after each epoch and on stop)

The registry is shared by every browser session of a server. The training thread owns its model and
publishes plain data under a lock; readers get copies and never wait on the training itself.
"""

import atexit
import json
import os
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from .checkpoint import CheckpointError, atomic_write, load_checkpoint, save_checkpoint
from .data import CIFAR10
from .train import NORMALIZATIONS, ConfigError, TrainConfig, TrainingDiverged, default_threads, train

FINISHED, STOPPED, FAILED, INTERRUPTED, RUNNING, LOADING = "finished", "stopped", "failed", "interrupted", "running", "loading data"
LIVE_STATES = (RUNNING, LOADING)
HEARTBEAT_SECONDS = 1.0
STALE_AFTER_SECONDS = 30.0


class RunError(Exception):
    """A run cannot start, resume or be read; the message says why."""


class RunInProgress(RunError):
    def __init__(self, run_id: str):
        super().__init__(f"run {run_id} is training; stop it or watch it before starting another")
        self.run_id = run_id


@dataclass
class RunSnapshot:
    """A copy of what is known about one run, safe to read from any thread."""

    id: str
    folder: Path
    state: str
    config: dict
    created: str
    steps: list[dict] = field(default_factory=list)  # step events: step, epoch, loss, lr, images_per_second, ...
    epochs: list[dict] = field(default_factory=list)  # epoch events: epoch, step, test_accuracy, ...
    progress: dict = field(default_factory=dict)  # the start event merged with the latest step event
    error: str | None = None
    test_accuracy: float | None = None

    @property
    def checkpoint(self) -> Path | None:
        path = self.folder / "checkpoint.pt"
        return path if path.is_file() else None

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES


def write_json(path: Path, value) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=1)))


def read_json(path: Path, default=None):
    try:
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def _pid_alive(pid) -> bool:
    if not isinstance(pid, int) or isinstance(pid, bool) or pid <= 0:
        return False  # 0 and -1 would signal a whole process group, or every process, and so always "succeed"
    try:
        os.kill(pid, 0)
        return True
    except (OSError, OverflowError):
        return False


class _ActiveRun:
    """The one run this process is training; its fields change only under self.lock."""

    def __init__(self, snapshot: RunSnapshot):
        self.lock = threading.Lock()
        self.snapshot = snapshot
        self.stop = threading.Event()
        self.thread: threading.Thread | None = None
        self.last_flush = 0.0

    def copy(self) -> RunSnapshot:
        with self.lock:
            s = self.snapshot
            return RunSnapshot(s.id, s.folder, s.state, dict(s.config), s.created, list(s.steps), list(s.epochs),
                               dict(s.progress), s.error, s.test_accuracy)


class RunRegistry:
    """Starts, stops, resumes and lists runs in runs_dir; at most one trains at a time in this process."""

    def __init__(self, runs_dir: Path | str, load_data: Callable[[], CIFAR10], threads: int | None = None, data_source: str = ""):
        self.runs_dir = Path(runs_dir)
        self.load_data = load_data
        self.threads = threads or default_threads()
        self.data_source = data_source
        self._lock = threading.RLock()  # resume() reads a snapshot while holding it
        self._active: _ActiveRun | None = None
        # A server or CLI that exits mid-run stops it cleanly (a last checkpoint, state "stopped") instead of
        # tearing the training thread down inside torch.
        atexit.register(self.stop, timeout=10)

    # -- starting and stopping -------------------------------------------------------------------

    def start(self, config: TrainConfig) -> str:
        """Validate config, create the run folder and start training in the background; return the run id."""
        config.validate()
        with self._lock:
            self._refuse_if_busy()
            run_id = self._new_id(config.preset)
            folder = self.runs_dir / run_id
            try:
                folder.mkdir(parents=True)
                write_json(folder / "config.json", {"config": config.to_dict(), "created": _now()})
            except OSError as error:
                raise RunError(f"cannot write the runs folder {self.runs_dir}: {error.strerror or error}") from None
            snapshot = RunSnapshot(run_id, folder, LOADING, config.to_dict(), _now())
            self._launch(snapshot, config, resume=None)
            return run_id

    def resume(self, run_id: str) -> str:
        """Go on training an interrupted or stopped run from its last checkpoint, with the same curves."""
        with self._lock:
            self._refuse_if_busy()
            snapshot = self.snapshot(run_id)
            if snapshot.state not in (INTERRUPTED, STOPPED, FAILED):
                raise RunError(f"run {run_id} is {snapshot.state}; only interrupted, stopped or failed runs can be resumed")
            if snapshot.checkpoint is None:
                raise RunError(f"run {run_id} has no checkpoint to resume from")
            try:
                entry = load_checkpoint(snapshot.checkpoint)
            except CheckpointError as error:
                raise RunError(str(error)) from None
            if "training" not in entry:
                raise RunError(f"{snapshot.checkpoint}: holds no optimizer state to resume from")
            config = TrainConfig.from_dict(snapshot.config)
            step = entry["training"]["step"]
            # Drop what was logged after the checkpoint: those steps are trained again, identically.
            snapshot.steps = [e for e in snapshot.steps if e["step"] <= step]
            snapshot.epochs = [e for e in snapshot.epochs if e["step"] <= step]
            snapshot.progress["step"] = step
            snapshot.state, snapshot.error = LOADING, None
            self._launch(snapshot, config, resume=entry)
            return run_id

    def stop(self, timeout: float = 0.0) -> bool:
        """Ask the running training to stop (it checks every step); wait up to timeout for it to end."""
        with self._lock:
            active = self._active
        if active is None or active.thread is None or not active.thread.is_alive():
            return False
        active.stop.set()
        if timeout:
            active.thread.join(timeout)
        return True

    def wait(self, timeout: float | None = None) -> None:
        with self._lock:
            active = self._active
        if active is not None and active.thread is not None:
            active.thread.join(timeout)

    def _refuse_if_busy(self) -> None:
        if self._active is not None and self._active.thread is not None and self._active.thread.is_alive():
            raise RunInProgress(self._active.snapshot.id)

    def _new_id(self, preset: str) -> str:
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        run_id, n = f"{stamp}-{preset}", 1
        while (self.runs_dir / run_id).exists():
            n += 1
            run_id = f"{stamp}-{preset}-{n}"
        return run_id

    def _launch(self, snapshot: RunSnapshot, config: TrainConfig, resume: dict | None) -> None:
        active = _ActiveRun(snapshot)
        active.thread = threading.Thread(target=self._train, args=(active, config, resume), name=f"train-{snapshot.id}", daemon=True)
        try:
            self._flush(active, force=True)
        except OSError as error:
            raise RunError(f"cannot write to the run folder {snapshot.folder}: {error.strerror or error}") from None
        self._active = active
        active.thread.start()

    # -- the training thread ---------------------------------------------------------------------

    def _train(self, active: _ActiveRun, config: TrainConfig, resume: dict | None) -> None:
        state, error = FAILED, None
        try:
            torch.set_num_threads(self.threads)
            data = self.load_data()
            with active.lock:
                active.snapshot.state = RUNNING
            result = train(config, data, on_event=lambda e: self._on_event(active, e), stop=active.stop, resume=resume,
                           on_checkpoint=lambda m, t, metrics: self._save_checkpoint(active, config, m, t, metrics))
            state = STOPPED if result.stopped else FINISHED
        except TrainingDiverged as exc:
            error = str(exc)
        except (ConfigError, RunError, CheckpointError) as exc:
            error = str(exc)
        except OSError as exc:
            error = f"could not write to {getattr(exc, 'filename', None) or active.snapshot.folder}: {exc.strerror or exc}"
        except Exception as exc:  # noqa: BLE001 - any failure ends the run as failed, with its message kept
            error = f"{type(exc).__name__}: {exc}"
        with active.lock:
            active.snapshot.state, active.snapshot.error = state, error
        try:
            self._flush(active, force=True)
        except OSError:
            pass  # the run folder itself is gone or unwritable; the in-memory snapshot still says what happened

    def _on_event(self, active: _ActiveRun, event: dict) -> None:
        with active.lock:
            s = active.snapshot
            if event["event"] == "step":
                s.steps.append(event)
                s.progress.update(event)
            elif event["event"] == "epoch":
                s.epochs.append(event)
                s.test_accuracy = event["test_accuracy"]
                s.progress.update(train_seconds=event["train_seconds"])
            elif event["event"] == "start":
                s.progress.update(event, epochs=s.config["epochs"])
            elif event["event"] == "end":
                s.progress.update(step=event["step"], train_seconds=event["train_seconds"])
        self._flush(active, force=event["event"] != "step")

    def _save_checkpoint(self, active, config: TrainConfig, model_state, training_state, metrics) -> None:
        meta = {
            "normalization": NORMALIZATIONS[config.normalization],
            "recipe": config.to_dict(),
            "metrics": metrics,
            "run_id": active.snapshot.id,
            "data_source": self.data_source,
        }
        save_checkpoint(active.snapshot.folder / "checkpoint.pt", model_state, meta, training_state)

    def _flush(self, active: _ActiveRun, force: bool) -> None:
        """Write status and metrics at most once per HEARTBEAT_SECONDS, and always when force."""
        now = time.monotonic()
        if not force and now - active.last_flush < HEARTBEAT_SECONDS:
            return
        active.last_flush = now
        s = active.copy()
        write_json(s.folder / "metrics.json", {"steps": s.steps, "epochs": s.epochs})
        write_json(s.folder / "status.json", {"state": s.state, "error": s.error, "progress": s.progress,
                                              "test_accuracy": s.test_accuracy, "pid": os.getpid(), "updated": time.time()})

    # -- reading ---------------------------------------------------------------------------------

    def active(self) -> RunSnapshot | None:
        """The run this process is training (or just finished training), as a copy."""
        with self._lock:
            active = self._active
        return active.copy() if active is not None else None

    def is_training(self) -> bool:
        with self._lock:
            return self._active is not None and self._active.thread is not None and self._active.thread.is_alive()

    def snapshot(self, run_id: str) -> RunSnapshot:
        with self._lock:
            active = self._active
        if active is not None and active.snapshot.id == run_id:
            return active.copy()
        return self._read(self.runs_dir / run_id)

    def list_runs(self) -> list[RunSnapshot]:
        """Every run in the folder, newest first; runs that were live in a process that died show as interrupted."""
        if not self.runs_dir.is_dir():
            return []
        runs = []
        for folder in sorted(self.runs_dir.iterdir(), reverse=True):
            if folder.is_dir() and (folder / "config.json").is_file():
                try:
                    runs.append(self.snapshot(folder.name))
                except RunError:
                    continue
        return runs

    def _read(self, folder: Path) -> RunSnapshot:
        config = read_json(folder / "config.json")
        if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
            raise RunError(f"{folder}: not a run folder (config.json missing or unreadable)")
        # Status and metrics may be damaged (edited by hand, from another version): what is not as written reads as absent.
        status, metrics = _dict(read_json(folder / "status.json")), _dict(read_json(folder / "metrics.json"))
        state = status.get("state")
        if state not in (FINISHED, STOPPED, FAILED, *LIVE_STATES):
            state = INTERRUPTED
        if state in LIVE_STATES:
            # Live in another process that is still beating, or interrupted (killed, crashed, restarted).
            updated = status.get("updated")
            fresh = isinstance(updated, (int, float)) and time.time() - updated < STALE_AFTER_SECONDS
            if status.get("pid") == os.getpid() or not (_pid_alive(status.get("pid")) and fresh):
                state = INTERRUPTED
        error, accuracy = status.get("error"), status.get("test_accuracy")
        created = config.get("created")
        return RunSnapshot(folder.name, folder, state, config["config"], created if isinstance(created, str) else "",
                           _events(metrics.get("steps")), _events(metrics.get("epochs")), _dict(status.get("progress")),
                           error if isinstance(error, str) else None,
                           accuracy if isinstance(accuracy, (int, float)) and not isinstance(accuracy, bool) else None)


def _dict(value) -> dict:
    return value if isinstance(value, dict) else {}


def _events(value) -> list[dict]:
    """Step or epoch events as written: dicts with a whole step number; anything else is dropped."""
    if not isinstance(value, list):
        return []
    return [e for e in value if isinstance(e, dict) and isinstance(e.get("step"), int) and not isinstance(e.get("step"), bool)]
