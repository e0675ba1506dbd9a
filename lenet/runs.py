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
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

import torch

from .checkpoint import CheckpointError, atomic_write, checkpoint_bytes, load_checkpoint, write_checkpoint_bytes
from .data import CIFAR10, Split
from .inference import NORMALIZATIONS
from .train import ConfigError, TrainConfig, TrainingDiverged, default_threads, train

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


def failure_message(exc: BaseException, folder: Path) -> str:
    """What a failed run shows: the reason in the user's words where it is known, else the exception."""
    if isinstance(exc, (TrainingDiverged, ConfigError, RunError, CheckpointError)):
        return str(exc)
    if isinstance(exc, OSError):
        return f"could not write to {getattr(exc, 'filename', None) or folder}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


# -- the training process ----------------------------------------------------------------------------------
# Training runs in a child process, not a thread of the server: page rendering holds Python's GIL so often that
# a training thread beside 10 viewers ran at half speed; a process only shares the cores. Spawned, not forked:
# forking a process that already runs torch's thread pools is unsafe.
_PROCESSES = multiprocessing.get_context("spawn")


def _arrays(data: CIFAR10) -> dict:
    """The dataset as numpy arrays, which the child receives as a plain copy. Torch tensors would travel through
    shared memory, which containers often cap at 64 MB, too small for the 184 MB of CIFAR-10."""
    return {"train": (data.train.images.numpy(), data.train.labels.numpy()),
            "test": (data.test.images.numpy(), data.test.labels.numpy()), "source": data.source}


def _dataset(arrays: dict) -> CIFAR10:
    train_split, test_split = (Split(torch.from_numpy(images), torch.from_numpy(labels)) for images, labels in
                               (arrays["train"], arrays["test"]))
    return CIFAR10(train_split, test_split, arrays["source"])


class _StopOrOrphaned:
    """The stop event, which also ends the child at once if its parent is gone (where Linux's parent-death
    signal is not there to): a server killed mid-run leaves no training going on without it."""

    def __init__(self, stop, parent_pid: int):
        self.stop, self.parent_pid = stop, parent_pid

    def is_set(self) -> bool:
        if os.getppid() != self.parent_pid:
            os._exit(1)
        return self.stop.is_set()


def _die_with_parent() -> None:
    if sys.platform.startswith("linux"):
        import ctypes

        PR_SET_PDEATHSIG = 1
        ctypes.CDLL(None).prctl(PR_SET_PDEATHSIG, signal.SIGKILL)


def _training_process(config, arrays, resume, folder: Path, meta: dict, threads: int, events, stop, parent_pid: int) -> None:
    """The child: train, sending every event, and each checkpoint's bytes, to the parent."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the parent's to handle: it asks to stop
    torch.set_num_threads(threads)
    try:
        def save(model_state, training_state, metrics):
            # The server writes it, after the events before it: a checkpoint is never ahead of metrics.json.
            events.send({"event": "checkpoint", "data": checkpoint_bytes(model_state, {**meta, "metrics": metrics}, training_state)})

        def send(event: dict) -> None:
            events.send({**event, "training_pid": os.getpid()} if event["event"] == "start" else event)

        result = train(config, _dataset(arrays), on_event=send, stop=_StopOrOrphaned(stop, parent_pid),
                       resume=resume, on_checkpoint=save)
        events.send({"event": "outcome", "state": STOPPED if result.stopped else FINISHED, "error": None})
    except Exception as exc:  # noqa: BLE001 - the parent marks the run failed with this message
        events.send({"event": "outcome", "state": FAILED, "error": failure_message(exc, folder)})
    events.close()
    # Everything is written (the checkpoint atomically, the events into the pipe): skip the interpreter's
    # teardown, which takes torch most of a second, so that Stop is quick.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class _ActiveRun:
    """The one run this process is training; its fields change only under self.lock."""

    def __init__(self, snapshot: RunSnapshot):
        self.lock = threading.Lock()
        self.snapshot = snapshot
        self.stop = _PROCESSES.Event()  # set by the server, read by the training process
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

    # -- the supervising thread ---------------------------------------------------------------------

    def _train(self, active: _ActiveRun, config: TrainConfig, resume: dict | None) -> None:
        """Load the data, train in a child process, and turn what it sends into the run's snapshot and files."""
        try:
            data = self.load_data()
            if active.stop.is_set():  # stopped while the data loaded: nothing trained, nothing to start
                state, error = STOPPED, None
            else:
                state, error = self._train_in_child(active, config, resume, data)
        except Exception as exc:  # noqa: BLE001 - any failure ends the run as failed, with its message kept
            state, error = FAILED, failure_message(exc, active.snapshot.folder)
        with active.lock:
            active.snapshot.state, active.snapshot.error = state, error
        try:
            self._flush(active, force=True)
        except OSError:
            pass  # the run folder itself is gone or unwritable; the in-memory snapshot still says what happened

    def _train_in_child(self, active: _ActiveRun, config: TrainConfig, resume: dict | None, data: CIFAR10) -> tuple[str, str | None]:
        """Start the training process and relay its events until it ends; return the run's final state and error."""
        meta = {"normalization": NORMALIZATIONS[config.normalization], "recipe": config.to_dict(),
                "run_id": active.snapshot.id, "data_source": self.data_source}
        events, child_end = _PROCESSES.Pipe(duplex=False)
        process = _PROCESSES.Process(
            target=_training_process, name=f"train-{active.snapshot.id}", daemon=True,
            args=(config, _arrays(data), resume, active.snapshot.folder, meta, self.threads, child_end, active.stop, os.getpid()),
        )
        process.start()
        child_end.close()  # only the child's copy stays open: reading ends (EOFError) when the child does
        started = False
        try:
            while True:
                if not events.poll(0.05):
                    if active.stop.is_set() and not started:
                        # Stopped while the child still starts up (a second or two): it has written nothing yet, so
                        # end it now rather than make Stop wait for it.
                        process.kill()
                        return STOPPED, None
                    continue
                try:
                    event = events.recv()
                except EOFError:  # it died without a word: killed (out of memory?) or crashed inside torch
                    process.join()
                    return FAILED, f"the training process ended unexpectedly (exit code {process.exitcode})"
                started = True
                if event["event"] == "outcome":
                    return event["state"], event["error"]
                if event["event"] == "checkpoint":
                    try:
                        write_checkpoint_bytes(active.snapshot.folder / "checkpoint.pt", event["data"])
                    except OSError as exc:  # disk full, folder gone: the run cannot keep what it trains, so it ends
                        process.kill()
                        return FAILED, failure_message(exc, active.snapshot.folder)
                    continue
                self._on_event(active, event)
        finally:
            process.join()
            events.close()

    def _on_event(self, active: _ActiveRun, event: dict) -> None:
        with active.lock:
            s = active.snapshot
            s.state = RUNNING  # the child trains: its first event is "start"
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
