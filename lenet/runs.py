"""Training runs: a folder per run on disk, and a registry that trains one run at a time in a child process.

runs/<id>/config.json          the TrainConfig, written once
runs/<id>/status.json          state, error, progress, heartbeat (rewritten about once a second)
runs/<id>/metrics.jsonl        every Step, Epoch and Test event so far, one JSON object a line, appended (as TensorBoard
                               and MLflow log): a 1,000-epoch run never rewrites megabytes once a second
runs/<id>/checkpoint.pt        the latest weights, with what is needed to resume (after each epoch and on stop)
runs/<id>/epochs/epoch-NNN.pt  the weights at the end of each epoch (no optimizer state: about 250 KB each)
runs/<id>/.lock                held (flock) by the process that trains the run, for as long as it does

The registry is shared by every browser session of a server. A supervising thread relays what the training
process sends into the run's snapshot under a lock; readers get copies and never wait on the training itself.
"""

import atexit
import fcntl
import json
import multiprocessing
import os
import signal
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path

import torch

from .checkpoint import CheckpointError, checkpoint_bytes, load_checkpoint, write_checkpoint_bytes
from .data import CIFAR10, Split, finish_cache_writes, load_cifar10
from .events import Epoch, Event, EventError, LiveView, Progress, Start, Step, Test, from_dict, to_dict
from .files import atomic_write, locked
from .inference import NORMALIZATIONS, predict_logits
from .model import LeNet5
from .train import ConfigError, TrainConfig, TrainingDiverged, default_threads, make_optimizer, preset, train

FINISHED, STOPPED, FAILED, INTERRUPTED, RUNNING, LOADING = "finished", "stopped", "failed", "interrupted", "running", "loading data"
DAMAGED = "damaged"  # its files cannot be read as this version writes them; the error says which and why
LIVE_STATES = (RUNNING, LOADING)
HEARTBEAT_SECONDS = 1.0
STALLED_AFTER_SECONDS = 30.0  # a live run with no event for this long says so on the page
LIVE_VIEW_SECONDS = 2.0  # how often the training process looks inside the model between epochs
EPOCHS_FOLDER = "epochs"
METRICS = "metrics.jsonl"
LOCK = ".lock"
LEGACY_METRICS = "metrics.json"  # the version before JSON lines: one document, read when there is no metrics.jsonl


class RunError(Exception):
    """A run cannot start, resume or be read; the message says why."""


class RunInProgress(RunError):
    def __init__(self, run_id: str, elsewhere: bool = False):
        where = " in another process (a second server or the command line)" if elsewhere else ""
        super().__init__(f"run {run_id} is running{where}; stop it or watch it before starting another")
        self.run_id = run_id


@dataclass
class RunSnapshot:
    """A copy of what is known about one run, safe to read from any thread."""

    id: str
    folder: Path
    state: str
    config: dict
    created: str
    progress: Progress
    steps: list[Step] = field(default_factory=list)  # the loss curve
    epochs: list[Epoch] = field(default_factory=list)  # test accuracy after each epoch
    tests: list[Test] = field(default_factory=list)  # and inside epochs, every test_every images
    error: str | None = None
    test_accuracy: float | None = None
    last_event: float | None = None  # time.time() of the training process's latest event, while it trains
    live_view: LiveView | None = None  # the latest look inside the model, while this process trains it
    metrics_read: bool = True  # False in list_runs()'s light snapshots: steps and epochs not read (snapshot() reads them)

    @property
    def checkpoint(self) -> Path | None:
        path = self.folder / "checkpoint.pt"
        return path if path.is_file() else None

    def epoch_checkpoints(self) -> dict[int, Path]:
        return epoch_checkpoints(self.folder)

    @property
    def accuracies(self) -> list[Epoch | Test]:
        """Every test accuracy measured so far, in order: after each epoch, and every test_every images inside one."""
        return sorted(self.epochs + self.tests, key=lambda e: e.step)

    @property
    def live(self) -> bool:
        return self.state in LIVE_STATES

    @property
    def stalled_for(self) -> float | None:
        """Seconds since the training process last reported, when that is long enough to worry a watcher."""
        if self.state != RUNNING or self.last_event is None:
            return None
        quiet = time.time() - self.last_event
        return quiet if quiet >= STALLED_AFTER_SECONDS else None

    def copy(self) -> "RunSnapshot":
        return replace(self, config=dict(self.config), progress=replace(self.progress), steps=list(self.steps),
                       epochs=list(self.epochs), tests=list(self.tests))


def epoch_checkpoints(run_folder: Path | str) -> dict[int, Path]:
    """A run's per-epoch weights, epochs/epoch-001.pt, epoch-002.pt, ...: epoch number -> file, in epoch order."""
    numbered = {}
    for path in (Path(run_folder) / EPOCHS_FOLDER).glob("epoch-*.pt"):
        number = path.stem.removeprefix("epoch-")
        if number.isdigit():
            numbered[int(number)] = path
    return dict(sorted(numbered.items()))  # by number, not by name: epoch-1000 comes after epoch-999


def write_text(path: Path, text: str) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(text))


def write_json(path: Path, value) -> None:
    atomic_write(path, lambda tmp: tmp.write_text(json.dumps(value, indent=1)))


def read_json(path: Path, default=None):
    """A JSON file's value, or default when it is missing, unreadable or not JSON. Only regular files are read:
    a FIFO put where status.json goes would block the reader (a page, the CLI) for ever."""
    try:
        if not path.is_file():
            return default
        return json.loads(path.read_text())
    except (OSError, ValueError):
        return default


def _now() -> str:
    return datetime.now(UTC).isoformat(timespec="seconds")


def failure_message(exc: BaseException, folder: Path) -> str:
    """What a failed run shows: the reason in the user's words where it is known, else the exception."""
    if isinstance(exc, (TrainingDiverged, ConfigError, RunError, CheckpointError)):
        return str(exc)
    if isinstance(exc, OSError):
        return f"could not write to {getattr(exc, 'filename', None) or folder}: {exc.strerror or exc}"
    return f"{type(exc).__name__}: {exc}"


# -- the run's lock ------------------------------------------------------------------------------------------
# Whoever trains a run holds an flock on its .lock file: a second trainer (another server, the CLI) cannot take the
# run over while the first lives, however long it is paused, and the kernel releases the lock when that process dies.


def _take_lock(folder: Path, run_id: str):
    """The run's lock, held until closed; RunInProgress when another process trains it."""
    try:
        handle = open(folder / LOCK, "a+")  # noqa: SIM115 - held open for the whole training
    except OSError as error:
        raise RunError(f"cannot write to the run folder {folder}: {error.strerror or error}") from None
    try:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        handle.close()
        raise RunInProgress(run_id, elsewhere=True) from None
    return handle


# -- the training process ----------------------------------------------------------------------------------
# Training runs in a child process, not a thread of the server: page rendering holds Python's GIL so often that
# a training thread beside 10 viewers ran at half speed; a process only shares the cores. Spawned, not forked:
# forking a process that already runs torch's thread pools is unsafe.
_PROCESSES = multiprocessing.get_context("spawn")


def _arrays(data: CIFAR10) -> dict:
    """The dataset as numpy arrays, which the child receives as a plain copy: for data that is not in a folder
    (tests' small sets). Torch tensors would travel through shared memory, which containers often cap at 64 MB."""
    return {"train": (data.train.images.numpy(), data.train.labels.numpy()),
            "test": (data.test.images.numpy(), data.test.labels.numpy()), "source": data.source}


def _dataset(source: str | dict) -> CIFAR10:
    """The child's data: from a data folder (its tensor cache, memory-mapped, is read in well under a second once the
    server has loaded it: nothing large crosses the pipe), or from arrays sent along."""
    if isinstance(source, str):
        return load_cifar10(source)
    train_split, test_split = (Split(torch.from_numpy(images), torch.from_numpy(labels)) for images, labels in
                               (source["train"], source["test"]))
    return CIFAR10(train_split, test_split, source["source"])


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


def _get_ready() -> None:
    """What a Start would otherwise wait for, done ahead (measured on 2 cores): the first optimizer made in a process
    imports torch's compiler stack (about a second), and the live view's module imports Captum (half a second)."""
    from . import explain  # noqa: F401

    make_optimizer(preset("quick"), LeNet5())


def _training_process(data_source, threads: int, nice: int, jobs, pipe, stop, parent_pid: int, ready) -> None:
    """The child: get ready (torch, the data), wait for one job, train it, sending the parent ("event", Event),
    ("view", arrays), ("checkpoint", bytes, epoch or None), then ("outcome", state, error)."""
    _die_with_parent()
    signal.signal(signal.SIGINT, signal.SIG_IGN)  # Ctrl-C in a terminal is the parent's to handle: it asks to stop
    if nice:
        os.nice(nice)  # every core trains, and the server's pages still come first when they need the CPU
    torch.set_num_threads(threads)
    try:
        data, data_error = _dataset(data_source), None
    except Exception as exc:  # noqa: BLE001 - reported when a job comes, as that run's failure
        data, data_error = None, exc
    _get_ready()
    ready.set()
    try:
        config, resume, folder, meta = jobs.recv()
    except EOFError:
        os._exit(0)  # the server no longer needs this process (it stopped, or let a warm process go)
    try:
        if data_error is not None:
            raise data_error

        def save(model_state, training_state, metrics):
            # The server writes them, after the events before them: a checkpoint is never ahead of metrics.json.
            checkpoint_meta = {**meta, "metrics": metrics}
            pipe.send(("checkpoint", checkpoint_bytes(model_state, checkpoint_meta, training_state), None))
            if metrics["reason"] == "epoch":
                pipe.send(("checkpoint", checkpoint_bytes(model_state, checkpoint_meta), round(metrics["epoch"])))

        result = train(config, data, on_event=lambda event: pipe.send(("event", event)), stop=_StopOrOrphaned(stop, parent_pid),
                       resume=resume, on_checkpoint=save, watch=_LiveViewer(data, NORMALIZATIONS[config.normalization], pipe))
        pipe.send(("outcome", STOPPED if result.stopped else FINISHED, None))
    except Exception as exc:  # noqa: BLE001 - the parent marks the run failed with this message
        pipe.send(("outcome", FAILED, failure_message(exc, folder)))
    pipe.close()
    # Everything is written (the checkpoint atomically, the events into the pipe): skip the interpreter's
    # teardown, which takes torch most of a second, so that Stop is quick.
    sys.stdout.flush()
    sys.stderr.flush()
    os._exit(0)


class _TrainingProcess:
    """A spawned training process and its two pipes. Started ahead of need (warm), it has imported torch and read the
    data by the time Start is pressed: the first loss comes within a second instead of after three."""

    def __init__(self, data_source, threads: int, nice: int, stop=None, name: str = "train-process"):
        self.stop = stop if stop is not None else _PROCESSES.Event()  # set by the server, read by the training process
        self.ready = _PROCESSES.Event()  # set by the training process once torch is imported and the data read
        jobs_child, self.jobs = _PROCESSES.Pipe(duplex=False)
        self.events, events_child = _PROCESSES.Pipe(duplex=False)
        self.process = _PROCESSES.Process(target=_training_process, name=name, daemon=True,
                                          args=(data_source, threads, nice, jobs_child, events_child, self.stop, os.getpid(),
                                                self.ready))
        self.process.start()
        # Only the child's copies stay open: reading ends (EOFError) when the child does, and so does its waiting.
        jobs_child.close()
        events_child.close()

    def assign(self, config: TrainConfig, resume: dict | None, folder: Path, meta: dict) -> None:
        self.jobs.send((config, resume, folder, meta))

    def alive(self) -> bool:
        return self.process.is_alive()

    def close(self) -> None:
        """Let it go: an idle process ends when its job pipe closes; a busy one is killed (its run already ended)."""
        self.jobs.close()
        self.process.join(2)
        if self.process.is_alive():
            self.process.kill()
            self.process.join()
        self.events.close()


class _LiveViewer:
    """Makes a LiveView in the training process after each epoch and every LIVE_VIEW_SECONDS in between, so short
    runs are seen changing several times an epoch; each costs one forward pass of 10 images."""

    def __init__(self, data: CIFAR10, normalization: dict, pipe):
        from .explain import panel

        self.indices = panel(data.test)
        self.images, self.labels = data.test.images[self.indices], data.test.labels[self.indices].tolist()
        self.normalization, self.pipe = normalization, pipe
        self.last = 0.0

    def __call__(self, model, event: Event) -> None:
        now = time.monotonic()
        if isinstance(event, Step) and now - self.last < LIVE_VIEW_SECONDS:
            return
        self.last = now
        device = next(model.parameters()).device
        probabilities = predict_logits(model, self.images.to(device), self.normalization).softmax(1).cpu()
        # As numpy arrays: torch tensors would cross the pipe through shared memory, a file per message.
        self.pipe.send(("view", {"step": event.step, "epoch": event.epoch, "filters": model.conv1.weight.detach().cpu().numpy().copy(),
                                 "images": self.images.numpy(), "labels": self.labels, "probabilities": probabilities.numpy()}))


class _ActiveRun:
    """The one run this process is training; its snapshot changes only under self.lock."""

    def __init__(self, snapshot: RunSnapshot, trainer: "_TrainingProcess | None"):
        self.lock = threading.Lock()
        self.snapshot = snapshot
        self.trainer = trainer  # a warm training process, or None: one is started once the data is there
        self.stop = trainer.stop if trainer is not None else _PROCESSES.Event()  # set by the server, read by the child
        self.thread: threading.Thread | None = None
        self.last_flush = 0.0
        self.logged = 0  # how many of the snapshot's steps and epochs metrics.jsonl holds
        self.run_lock = None  # the flock on the run folder, held while this process trains it
        self.ended = False  # its state is final: a warm process may be made for the next run

    def copy(self) -> RunSnapshot:
        with self.lock:
            return self.snapshot.copy()


class RunRegistry:
    """Starts, stops, resumes and lists runs in runs_dir; at most one trains at a time in this process.

    load_data gives the dataset (the app's waits for its background load). With data_dir, the training process
    reads that folder's tensor cache itself; without, the data is sent to it as arrays. threads: the training
    process's CPU threads (default: every core); nice: how much it yields the CPU to this process's own work.
    warm (with data_dir): keep a training process started and ready, once the data is loaded, so a Start trains at
    once; it costs an idle process (about 490 MB PSS: torch, its compiler stack, Captum), never two during a run.
    """

    def __init__(self, runs_dir: Path | str, load_data: Callable[[], CIFAR10], threads: int | None = None, data_source: str = "",
                 data_dir: Path | str | None = None, nice: int = 0, warm: bool = False):
        self.runs_dir = Path(runs_dir)
        self.load_data = load_data
        self.threads = threads or default_threads()
        self.data_source = data_source
        self.data_dir = str(data_dir) if data_dir is not None else None
        self.nice = nice
        self._lock = threading.RLock()  # resume() reads a snapshot while holding it
        self._active: _ActiveRun | None = None
        self.warm = warm and self.data_dir is not None
        self._warm: _TrainingProcess | None = None
        if self.warm:
            self._warm_up()
        # A server or CLI that exits mid-run stops it cleanly (a last checkpoint, state "stopped") instead of
        # tearing the training down inside torch.
        atexit.register(self.stop, timeout=10)

    # -- starting and stopping -------------------------------------------------------------------

    def start(self, config: TrainConfig) -> str:
        """Validate config, create the run folder and start training in the background; return the run id."""
        config.validate()
        with self._lock:
            self._refuse_if_busy()
            try:
                self.runs_dir.mkdir(parents=True, exist_ok=True)
                run_id, folder = self._new_folder(config.preset)
                write_json(folder / "config.json", {"config": config.to_dict(), "created": _now()})
            except OSError as error:
                raise RunError(f"cannot write the runs folder {self.runs_dir}: {error.strerror or error}") from None
            snapshot = RunSnapshot(run_id, folder, LOADING, config.to_dict(), _now(), Progress(epochs=config.epochs))
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
            snapshot.steps = [e for e in snapshot.steps if e.step <= step]
            snapshot.epochs = [e for e in snapshot.epochs if e.step <= step]
            snapshot.tests = [e for e in snapshot.tests if e.step <= step]
            snapshot.progress.step = step
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

    def close(self) -> None:
        """Stop any run and let the warm training process go: for a registry made for a while (the bench, tests);
        a server keeps its registry for its whole life."""
        self.warm = False
        self.stop(timeout=10)
        with self._lock:
            warm, self._warm = self._warm, None
        if warm is not None:
            warm.close()

    def _warm_up(self) -> None:
        """Start a warm training process in the background, once the data is loaded (so it reads the cache, never
        decoding the images a second time beside the server)."""

        def make() -> None:
            try:
                self.load_data()
            except Exception:  # noqa: BLE001 - no data, no warm process: a Start says why
                return
            finish_cache_writes()  # the process reads the tensor cache: never decoding the images a second time
            with self._lock:
                # Not while a run trains (a Start that came before this process was ready made its own): two torch
                # processes would hold about 500 MB more until the run ends, which makes the next warm one anyway.
                training = self._active is not None and not self._active.ended
                if self.warm and self._warm is None and not training:  # named apart: it trains nothing until a Start
                    self._warm = _TrainingProcess(self.data_dir, self.threads, self.nice, name="warm-training-process")

        threading.Thread(target=make, name="warm-trainer", daemon=True).start()

    def warm_ready(self, timeout: float) -> bool:
        """Wait until a warm training process has imported torch and read the data (False: none within timeout)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                warm = self._warm
            if warm is not None:
                return warm.ready.wait(max(0.0, deadline - time.monotonic()))
            time.sleep(0.05)
        return False

    def _take_warm(self) -> "_TrainingProcess | None":
        warm, self._warm = self._warm, None
        if warm is not None and not warm.alive():
            warm.close()
            return None
        return warm

    def _refuse_if_busy(self) -> None:
        if self._active is not None and self._active.thread is not None and self._active.thread.is_alive():
            raise RunInProgress(self._active.snapshot.id)

    def _new_folder(self, preset: str) -> tuple[str, Path]:
        """A fresh run folder, named by when it started and its preset; created atomically (mkdir), so two
        processes starting in the same second never share one."""
        stamp = datetime.now().strftime("%Y%m%d-%H%M%S")
        for n in range(1, 1000):
            run_id = f"{stamp}-{preset}" if n == 1 else f"{stamp}-{preset}-{n}"
            try:
                (self.runs_dir / run_id).mkdir()
                return run_id, self.runs_dir / run_id
            except FileExistsError:
                continue
        raise RunError(f"cannot name a new run in {self.runs_dir}: too many started at {stamp}")

    def _launch(self, snapshot: RunSnapshot, config: TrainConfig, resume: dict | None) -> None:
        run_lock = _take_lock(snapshot.folder, snapshot.id)
        active = _ActiveRun(snapshot, self._take_warm())
        active.run_lock = run_lock
        active.thread = threading.Thread(target=self._train, args=(active, config, resume), name=f"train-{snapshot.id}", daemon=True)
        try:
            self._flush(active, force=True)
        except OSError as error:
            active.run_lock.close()
            self._warm = active.trainer  # not used: still warm for the next Start
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
        active.run_lock.close()
        active.ended = True
        if self.warm:
            self._warm_up()  # ready for the next Start

    def _train_in_child(self, active: _ActiveRun, config: TrainConfig, resume: dict | None, data: CIFAR10) -> tuple[str, str | None]:
        """Give the run to a training process and relay what it sends until it ends; return the run's final state and error.

        Any failure to write the run's files ends the run as failed and stops the child: a relay that died would
        leave the child blocked on a full pipe and the registry busy forever.
        """
        folder = active.snapshot.folder
        meta = {"normalization": NORMALIZATIONS[config.normalization], "recipe": config.to_dict(),
                "run_id": active.snapshot.id, "data_source": self.data_source}
        trainer = active.trainer
        if trainer is None:
            finish_cache_writes()
            trainer = _TrainingProcess(self.data_dir if self.data_dir is not None else _arrays(data), self.threads, self.nice,
                                       stop=active.stop)
        trainer.assign(config, resume, folder, meta)
        events, process = trainer.events, trainer.process
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
                    message = events.recv()
                except EOFError:  # it died without a word: killed (out of memory?) or crashed inside torch
                    process.join()
                    return FAILED, f"the training process ended unexpectedly (exit code {process.exitcode})"
                started = True
                kind = message[0]
                if kind == "outcome":
                    return message[1], message[2]
                try:
                    self._relay(active, message, process.pid)
                except OSError as exc:  # disk full, folder gone or made read-only: the run cannot keep what it trains
                    process.kill()
                    return FAILED, failure_message(exc, folder)
        finally:
            trainer.close()

    def _relay(self, active: _ActiveRun, message: tuple, training_pid: int) -> None:
        """One message of the training process into the run: a look inside, a checkpoint to write, or an event."""
        kind = message[0]
        if kind == "view":
            view = message[1]
            live_view = LiveView(step=view["step"], epoch=view["epoch"], filters=torch.from_numpy(view["filters"]),
                                 images=torch.from_numpy(view["images"]), labels=view["labels"],
                                 probabilities=torch.from_numpy(view["probabilities"]))
            with active.lock:
                active.snapshot.live_view = live_view
        elif kind == "checkpoint":
            _, data_bytes, epoch = message
            folder = active.snapshot.folder
            write_checkpoint_bytes(folder / "checkpoint.pt" if epoch is None else folder / EPOCHS_FOLDER / f"epoch-{epoch:03d}.pt",
                                   data_bytes)
        else:
            self._on_event(active, message[1], training_pid)

    def _on_event(self, active: _ActiveRun, event: Event, training_pid: int) -> None:
        with active.lock:
            s = active.snapshot
            s.state = RUNNING  # the child trains: its first event is Start
            s.last_event = time.time()
            s.progress.apply(event)
            if isinstance(event, Start):
                s.progress.training_pid = training_pid
            elif isinstance(event, Step):
                s.steps.append(event)
            elif isinstance(event, Epoch):
                s.epochs.append(event)
                s.test_accuracy = event.test_accuracy
            elif isinstance(event, Test):
                s.tests.append(event)
        self._flush(active, force=not isinstance(event, Step))

    def _flush(self, active: _ActiveRun, force: bool) -> None:
        """Write status and metrics at most once per HEARTBEAT_SECONDS, and always when force."""
        now = time.monotonic()
        if not force and now - active.last_flush < HEARTBEAT_SECONDS:
            return
        active.last_flush = now
        s = active.copy()
        events = sorted(s.steps + s.tests + s.epochs, key=lambda e: (e.step, isinstance(e, (Test, Epoch))))
        if active.logged == 0:
            # A new run, or one resumed (its curve cut back to the checkpoint): the file starts over, atomically.
            write_text(s.folder / METRICS, "".join(json.dumps(to_dict(e)) + "\n" for e in events))
        elif len(events) > active.logged:
            with open(s.folder / METRICS, "a") as f:
                f.write("".join(json.dumps(to_dict(e)) + "\n" for e in events[active.logged:]))
        active.logged = len(events)
        write_json(s.folder / "status.json", {"state": s.state, "error": s.error, "progress": s.progress.to_dict(),
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
        if not run_id or Path(run_id).name != run_id or run_id in (".", ".."):
            raise RunError(f"{run_id!r} is not a run id (a folder name inside {self.runs_dir})")
        with self._lock:
            active = self._active
        if active is not None and active.snapshot.id == run_id:
            return active.copy()
        try:
            return self._read(self.runs_dir / run_id)
        except RunError as error:
            if not (self.runs_dir / run_id / "config.json").exists():
                raise  # not a run at all
            return _damaged_config(self.runs_dir / run_id, error)

    def list_runs(self, metrics: bool = False) -> list[RunSnapshot]:
        """Every run in the folder, newest first; runs that were live in a process that died show as interrupted.

        Light by default: from each run's config and status only (its steps and epochs are not read: metrics_read is
        False), so listing 2,000 runs stays well under a second; metrics=True reads them all (snapshot() reads one).
        """
        if not self.runs_dir.is_dir():
            return []
        runs = []
        with self._lock:
            active = self._active
        for folder in sorted(self.runs_dir.iterdir(), reverse=True):
            if not (folder.is_dir() and (folder / "config.json").is_file()):
                continue
            try:
                if active is not None and active.snapshot.id == folder.name:
                    runs.append(active.copy())
                else:
                    runs.append(self._read(folder, metrics))
            except RunError as error:  # its config.json is damaged: listed as damaged, with the reason
                runs.append(_damaged_config(folder, error))
        return runs

    def _read(self, folder: Path, metrics: bool = True) -> RunSnapshot:
        config = read_json(folder / "config.json")
        if not isinstance(config, dict) or not isinstance(config.get("config"), dict):
            raise RunError(f"{folder}: not a run folder (config.json missing or unreadable)")
        created = config.get("created")
        snapshot = RunSnapshot(folder.name, folder, INTERRUPTED, config["config"], created if isinstance(created, str) else "",
                               Progress(epochs=_whole(config["config"].get("epochs"))), metrics_read=metrics)
        status = read_json(folder / "status.json")
        try:
            if status is None and (folder / "status.json").exists() and not (folder / "status.json").is_file():
                raise EventError("status.json is not a regular file")  # a FIFO or a folder: never read, never trusted
            if status is not None:
                _read_status(snapshot, status)
            if metrics:
                snapshot.steps, snapshot.epochs, snapshot.tests = read_metrics(folder)
        except EventError as error:
            snapshot.state, snapshot.error = DAMAGED, f"its files are damaged ({error}); the other runs are not affected"
            snapshot.steps, snapshot.epochs, snapshot.tests, snapshot.test_accuracy = [], [], [], None
            snapshot.progress = Progress(epochs=snapshot.progress.epochs)
            return snapshot
        if snapshot.state in LIVE_STATES and not locked(folder / LOCK):
            snapshot.state = INTERRUPTED  # it was live in a process that is gone (killed, crashed, restarted)
        return snapshot


_PARSED: dict[Path, tuple[tuple[int, int], list[Step], list[Epoch], list[Test]]] = {}  # metrics file -> (size, mtime), its events
_PARSED_MAX = 64
_PARSED_LOCK = threading.Lock()  # pages of many sessions read at once


def read_metrics(folder: Path) -> tuple[list[Step], list[Epoch], list[Test]]:
    """A run's steps, epochs and tests inside epochs from metrics.jsonl (or the older metrics.json); EventError when they are damaged.

    A last line without its newline is an append cut short by a kill: it is left out, not called damage. Parsed
    files are remembered by size and modification time, so redrawing a finished run's charts reads nothing again.
    """
    path = folder / METRICS
    if not path.is_file():
        legacy = read_json(folder / LEGACY_METRICS)
        if legacy is None:
            return [], [], []
        if not isinstance(legacy, dict) or not isinstance(legacy.get("steps"), list) or not isinstance(legacy.get("epochs"), list):
            raise EventError("metrics.json does not hold lists of steps and epochs")
        return [from_dict(e, Step) for e in legacy["steps"]], [from_dict(e, Epoch) for e in legacy["epochs"]], []
    try:
        stat = path.stat()
        key = (stat.st_size, stat.st_mtime_ns)
        with _PARSED_LOCK:
            known = _PARSED.get(path)
        if known is not None and known[0] == key:
            return list(known[1]), list(known[2]), list(known[3])
        text = path.read_text()
    except (OSError, UnicodeDecodeError) as error:
        raise EventError(f"{METRICS} cannot be read ({error})") from None
    lines = text.split("\n")
    steps, epochs, tests = [], [], []
    for number, line in enumerate(lines[:-1], start=1):  # the part after the last newline is torn or empty
        try:
            event = from_dict(json.loads(line))
        except ValueError as error:  # EventError is one
            raise EventError(f"{METRICS} line {number}: {error}") from None
        if isinstance(event, Step):
            steps.append(event)
        elif isinstance(event, Epoch):
            epochs.append(event)
        elif isinstance(event, Test):
            tests.append(event)
        else:
            raise EventError(f"{METRICS} line {number}: a {type(event).__name__} event does not belong there")
    with _PARSED_LOCK:
        if len(_PARSED) >= _PARSED_MAX:
            _PARSED.pop(next(iter(_PARSED)))
        _PARSED[path] = (key, steps, epochs, tests)
    return list(steps), list(epochs), list(tests)


def _damaged_config(folder: Path, error: RunError) -> RunSnapshot:
    """A run whose config.json cannot be read: shown, as damaged with the reason, and never resumed."""
    return RunSnapshot(folder.name, folder, DAMAGED, {}, "", Progress(epochs=0),
                       error=f"its files are damaged ({error}); the other runs are not affected")


def measured_rate(runs: list[RunSnapshot], config: TrainConfig) -> float | None:
    """Images per second of the newest run trained with the same batch size and augmentation, for time estimates."""
    for run in runs:
        same = run.config.get("batch_size") == config.batch_size and run.config.get("augment") == config.augment
        # A live run's first seconds, or a run of a few steps, are no measure: warm-up and start-up dominate them.
        if same and not run.live and run.progress.train_seconds >= 5 and run.progress.images_per_second > 0:
            return run.progress.images_per_second
    return None


def _whole(value) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _read_status(snapshot: RunSnapshot, status) -> None:
    if not isinstance(status, dict):
        raise EventError("status.json is not an object")
    state, error, accuracy = status.get("state"), status.get("error"), status.get("test_accuracy")
    if state not in (FINISHED, STOPPED, FAILED, *LIVE_STATES):
        raise EventError(f"status.json: unknown state {state!r}")
    if error is not None and not isinstance(error, str):
        raise EventError("status.json: the error is not text")
    if accuracy is not None and (isinstance(accuracy, bool) or not isinstance(accuracy, (int, float)) or not 0 <= accuracy <= 1):
        raise EventError(f"status.json: test accuracy {accuracy!r} is not a fraction")
    snapshot.state, snapshot.error, snapshot.test_accuracy = state, error, accuracy
    progress = status.get("progress")
    if isinstance(progress, dict) and (not progress or "event" in progress):
        # Written by the version before typed progress: its start and latest step events merged into one dict.
        fields_now = Progress(epochs=snapshot.progress.epochs).to_dict()
        progress = {name: progress.get(name, default) for name, default in fields_now.items()}
    snapshot.progress = Progress.from_dict(progress)
