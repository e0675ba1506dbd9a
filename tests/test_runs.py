"""The run registry on small real subsets of CIFAR-10: progress, stop, resume, one run at a time, failures, kills and junk."""

import io
import json
import multiprocessing
import os
import random
import shutil
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import torch

from lenet.checkpoint import load_checkpoint
from lenet.data import CIFAR10
from lenet.runs import DAMAGED, FAILED, FINISHED, INTERRUPTED, LIVE_STATES, RUNNING, STOPPED, RunError, RunInProgress, RunRegistry
from lenet.train import preset
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
TEST_IMAGES = torch.arange(0, 10_000, 20)  # 500 real test images, 50 of each class: an epoch's test takes milliseconds


@pytest.fixture(scope="module")
def small(cifar):
    return CIFAR10(cifar.train, cifar.test.subset(TEST_IMAGES), cifar.source)


@pytest.fixture
def runs_dir(tmp_path):
    return tmp_path / "runs"


@pytest.fixture
def registry(runs_dir, small):
    registry = RunRegistry(runs_dir, lambda: small, threads=1)
    yield registry
    registry.stop(timeout=10)  # never leave a run training into the next test


def training_processes() -> list:
    return [p for p in multiprocessing.active_children() if p.name.startswith("train-")]


def training_threads() -> list[threading.Thread]:
    """The registry's live training threads (named train-<run id>), each supervising its training process.

    Checked newest first: a thread that is started only after the previous one ended cannot be counted
    together with it, so more than one here means two really overlapped.
    """
    return [t for t in reversed(threading.enumerate()) if t.name.startswith("train-") and t.is_alive()]


def running(pid: int) -> bool:
    """Whether a process runs (a zombie, dead but not yet reaped by its new parent, does not)."""
    try:
        return "\tZ" not in Path(f"/proc/{pid}/status").read_text().split("State:")[1][:4]
    except (OSError, IndexError):
        return False


def step_losses(run) -> list[tuple[int, float]]:
    return [(e.step, e.loss) for e in run.steps]


def read_status(folder: Path) -> dict:
    try:
        return json.loads((folder / "status.json").read_text())
    except (OSError, ValueError):
        return {}


# -- progress, stop, resume ----------------------------------------------------------------------------------


def test_progress_stop_within_a_second_and_resume_gives_the_uninterrupted_numbers(registry, small, runs_dir):
    # 500 steps an epoch, a loss logged every 7 steps: a stop usually lands between two logged steps.
    config = preset("walkthrough", train_subset=2_000, epochs=3, log_every=7)
    logged = len([s for s in range(1, 1_501) if s % 7 == 0 or s % 500 == 0])

    reference_id = registry.start(config)
    registry.wait(120)
    reference = registry.snapshot(reference_id)
    assert reference.state == FINISHED and len(reference.steps) == logged

    run_id = registry.start(config)
    wait_until(lambda: registry.active().progress.step >= 150, what="150 steps")
    first = registry.active()
    assert first.id == run_id and first.state == RUNNING and registry.is_training()
    assert first.progress.total_steps == 1_500 and first.progress.epochs == 3
    wait_until(lambda: len(registry.active().steps) > len(first.steps) + 3, what="more steps")  # the curve grows

    started = time.monotonic()
    assert registry.stop(timeout=5)
    took = time.monotonic() - started
    assert took < 1.0, f"stop took {took:.2f} s"
    assert not registry.is_training() and not training_threads() and not training_processes()
    stopped = registry.snapshot(run_id)
    assert stopped.state == STOPPED and stopped.error is None
    stop_step = stopped.progress.step
    assert 170 <= stop_step < 1_500 and 0 <= stop_step - stopped.steps[-1].step < 7
    assert read_status(runs_dir / run_id)["state"] == STOPPED
    entry = load_checkpoint(stopped.checkpoint)
    assert entry["training"]["step"] == stop_step and entry["meta"]["metrics"]["reason"] == "stopped"
    assert entry["meta"]["run_id"] == run_id and entry["meta"]["recipe"] == config.to_dict()
    assert registry.stop() is False  # nothing left to stop

    assert registry.resume(run_id) == run_id
    registry.wait(120)
    resumed = registry.snapshot(run_id)
    assert resumed.state == FINISHED and resumed.error is None
    assert step_losses(resumed) == step_losses(reference)  # exactly, every logged loss, the one spanning the stop too
    assert [(e.epoch, e.test_accuracy) for e in resumed.epochs] == [(e.epoch, e.test_accuracy) for e in reference.epochs]
    final, reference_final = load_checkpoint(resumed.checkpoint), load_checkpoint(reference.checkpoint)
    assert all(torch.equal(final["model"][k], reference_final["model"][k]) for k in final["model"])
    # What is on disk says the same, for a server restarted later.
    on_disk = RunRegistry(runs_dir, lambda: small).snapshot(run_id)
    assert on_disk.state == FINISHED and step_losses(on_disk) == step_losses(reference)


def test_tests_inside_epochs_are_kept_with_the_run_and_read_back_in_order(registry, small, runs_dir):
    config = preset("quick", train_subset=1_000, batch_size=100, epochs=2, test_every=400, log_every=5)
    run_id = registry.start(config)
    registry.wait(120)
    run = registry.snapshot(run_id)
    assert run.state == FINISHED
    assert [(e.step, e.images) for e in run.tests] == [(4, 400), (8, 800), (12, 1200), (16, 1600)]
    assert [e.step for e in run.accuracies] == [4, 8, 10, 12, 16, 20]  # with the two epochs', in order
    # As a server restarted later reads them from metrics.jsonl, and as the CLI's log prints them: one line each.
    on_disk = RunRegistry(runs_dir, lambda: small).snapshot(run_id)
    assert on_disk.tests == run.tests and on_disk.epochs == run.epochs
    from lenet.cli import ProgressPrinter

    log = io.StringIO()
    ProgressPrinter(log).draw(on_disk)
    assert log.getvalue().count("\n") == 1 and f"test {run.epochs[-1].test_accuracy:.1%}" in log.getvalue()


def test_a_second_start_or_a_resume_while_one_trains_is_refused(registry):
    config = preset("walkthrough", train_subset=2_000, epochs=20)
    run_id = registry.start(config)
    for attempt in (lambda: registry.start(config), lambda: registry.resume(run_id)):
        with pytest.raises(RunInProgress) as caught:
            attempt()
        assert caught.value.run_id == run_id and run_id in str(caught.value)
    assert len(list(registry.runs_dir.iterdir())) == 1  # the refused start made no folder
    assert registry.stop(timeout=5)
    finished = registry.start(preset("walkthrough", train_subset=200, epochs=1))
    registry.wait(60)
    assert registry.snapshot(finished).state == FINISHED
    with pytest.raises(RunError, match="finished"):
        registry.resume(finished)  # a finished run has nothing left to train


def test_many_threads_starting_stopping_and_resuming_never_train_two_runs_at_once(registry, runs_dir):
    config = preset("walkthrough", train_subset=2_000, epochs=30)
    started_ids: list[str] = []
    errors: list[BaseException] = []
    most_at_once = 0
    done = threading.Event()

    def hammer(seed):
        rng = random.Random(seed)
        try:
            while not done.is_set():
                action = rng.choice(["start", "start", "stop", "stop", "resume", "read"])
                try:
                    if action == "start":
                        started_ids.append(registry.start(config))
                    elif action == "stop":
                        registry.stop(timeout=rng.choice([0, 0.05]))
                    elif action == "resume" and started_ids:
                        registry.resume(rng.choice(started_ids))
                    else:
                        registry.list_runs()
                        registry.active()
                except RunError:
                    pass  # refused: another run trains, or that run is not resumable now
                time.sleep(rng.uniform(0, 0.01))
        except BaseException as error:  # noqa: BLE001 - anything else is a bug, reported below
            errors.append(error)

    workers = [threading.Thread(target=hammer, args=(i,)) for i in range(8)]
    for w in workers:
        w.start()
    # At least 2.5 s of hammering, and on until a few runs did start (each spawns a process: slow on a busy machine).
    began = time.monotonic()
    while time.monotonic() < began + 2.5 or (len(started_ids) < 3 and time.monotonic() < began + 60):
        most_at_once = max(most_at_once, len(training_threads()))
        time.sleep(0.001)
    done.set()
    for w in workers:
        w.join(10)
    assert errors == []
    assert most_at_once == 1
    assert len(started_ids) >= 3  # the hammering did start runs, not only get refused

    registry.stop(timeout=10)
    assert not registry.is_training() and not training_threads() and not training_processes()
    runs = RunRegistry(runs_dir, lambda: None).list_runs(metrics=True)
    assert {r.id for r in runs} == set(started_ids)
    assert all(r.state in (STOPPED, FINISHED) for r in runs), {r.id: r.state for r in runs}
    assert all(read_status(r.folder)["state"] not in LIVE_STATES for r in runs)
    # A run that trained keeps a checkpoint to resume from; only one stopped before its training process started
    # (so before any step) may have none.
    assert all(r.checkpoint is not None and load_checkpoint(r.checkpoint)["training"] for r in runs if r.steps)
    assert all(not r.steps and r.state == STOPPED for r in runs if r.checkpoint is None)


# -- failures ------------------------------------------------------------------------------------------------


def test_a_crash_in_the_training_thread_fails_the_run_with_its_message_and_the_next_run_starts(runs_dir, small):
    calls = []

    def load_data():
        calls.append(1)
        if len(calls) == 1:
            raise RuntimeError("the disk with CIFAR-10 went away")
        return small

    registry = RunRegistry(runs_dir, load_data, threads=1)
    run_id = registry.start(preset("walkthrough", train_subset=200, epochs=1))
    registry.wait(30)
    failed = registry.snapshot(run_id)
    assert failed.state == FAILED and failed.error == "RuntimeError: the disk with CIFAR-10 went away"
    status = read_status(runs_dir / run_id)
    assert status["state"] == FAILED and status["error"] == failed.error
    assert RunRegistry(runs_dir, load_data).snapshot(run_id).state == FAILED  # a restarted server says so too
    with pytest.raises(RunError, match="no checkpoint"):
        registry.resume(run_id)

    second = registry.start(preset("walkthrough", train_subset=200, epochs=1))
    registry.wait(60)
    assert registry.snapshot(second).state == FINISHED and second != run_id


def test_a_diverging_run_fails_with_its_reason_and_the_next_run_starts(registry, runs_dir):
    run_id = registry.start(preset("walkthrough", train_subset=512, epochs=1, batch_size=32, lr=10.0))
    registry.wait(60)
    run = registry.snapshot(run_id)
    assert run.state == FAILED and "nan" in run.error and "learning rate" in run.error
    assert read_status(runs_dir / run_id)["error"] == run.error
    assert not registry.is_training()
    good = registry.start(preset("walkthrough", train_subset=200, epochs=1))
    registry.wait(60)
    assert registry.snapshot(good).state == FINISHED


def test_the_lr_that_diverges_really_diverges_and_a_sane_one_does_not(registry):
    # The control for the test above: the same run with the walkthrough's learning rate finishes.
    run_id = registry.start(preset("walkthrough", train_subset=512, epochs=1, batch_size=32))
    registry.wait(60)
    assert registry.snapshot(run_id).state == FINISHED


def _blocked_by_a_file(tmp_path):
    (tmp_path / "afile").write_text("a regular file where a folder should be")
    return tmp_path / "afile" / "runs"


def _read_only(tmp_path):
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only folders; the case 'under a file' covers root")
    folder = tmp_path / "runs"
    folder.mkdir()
    folder.chmod(0o555)
    return folder


@pytest.mark.parametrize("make_runs_dir", [_blocked_by_a_file, _read_only], ids=["under a file", "read-only"])
def test_an_unwritable_runs_folder_refuses_to_start_and_starts_no_thread(tmp_path, small, make_runs_dir):
    runs_dir = make_runs_dir(tmp_path)
    registry = RunRegistry(runs_dir, lambda: small, threads=1)
    before = set(threading.enumerate())
    with pytest.raises(RunError) as caught:
        registry.start(preset("walkthrough", train_subset=200, epochs=1))
    message = str(caught.value)
    assert str(runs_dir) in message and "cannot write" in message and "\n" not in message
    assert not registry.is_training() and registry.active() is None
    assert [t for t in threading.enumerate() if t not in before] == []
    assert registry.list_runs() == []


def _metrics_in_the_way(folder):
    (folder / "metrics.jsonl").unlink()
    (folder / "metrics.jsonl").mkdir()  # a folder where the file goes: every rewrite of it fails, as on a read-only disk
    (folder / "metrics.jsonl" / "x").write_text("")


def _read_only_run(folder):
    if os.geteuid() == 0:
        pytest.skip("root writes to read-only folders; the case 'metrics in the way' covers root")
    folder.chmod(0o555)


@pytest.mark.parametrize("block", [_metrics_in_the_way, _read_only_run], ids=["metrics in the way", "read-only"])
def test_resuming_a_run_that_cannot_be_written_is_refused_and_starts_no_thread(registry, block):
    run_id = registry.start(preset("walkthrough", train_subset=2_000, epochs=20))
    wait_until(lambda: registry.active().steps, what="a step")
    registry.stop(timeout=5)
    folder = registry.runs_dir / run_id
    block(folder)
    before = set(threading.enumerate())
    try:
        with pytest.raises(RunError) as caught:
            registry.resume(run_id)
        assert str(folder) in str(caught.value) and "\n" not in str(caught.value)
        assert not registry.is_training() and [t for t in threading.enumerate() if t not in before] == []
    finally:
        folder.chmod(0o755)
    assert registry.active().state == STOPPED  # the registry still knows the stopped run


# -- a process killed while it writes ------------------------------------------------------------------------

CHILD = """
import sys, time
import torch
torch.set_num_threads(1)
from lenet.data import CIFAR10, load_cifar10
from lenet.runs import RunRegistry
from lenet.train import preset
runs_dir, data_dir, resume = sys.argv[1:4]
full = load_cifar10(data_dir)
data = CIFAR10(full.train, full.test.subset(torch.arange(0, 10_000, 20)), full.source)
registry = RunRegistry(runs_dir, lambda: data, threads=1)
run_id = registry.resume(resume) if resume else registry.start(preset("walkthrough", **{config}))
print(run_id, flush=True)
while registry.is_training():  # the step reached so far, for the test to kill at a moment chosen by progress
    print(registry.active().progress.step, flush=True)
    time.sleep(0.01)
"""
KILLED_CONFIG = dict(train_subset=400, epochs=12, log_every=5)  # the walkthrough's recipe, 100 steps an epoch


def _check_folder_is_whole(folder: Path) -> dict:
    for name in ("config.json", "status.json"):
        json.loads((folder / name).read_text())  # raises on a torn file
    *whole, torn = (folder / "metrics.jsonl").read_text().split("\n")  # appended: only a last line may be cut short
    assert [json.loads(line) for line in whole] and all(json.loads(line)["event"] in ("step", "epoch") for line in whole)
    entry = load_checkpoint(folder / "checkpoint.pt")
    assert "optimizer" in entry["training"]
    return entry


def test_a_run_killed_at_random_moments_stays_readable_and_resumes_to_the_uninterrupted_result(tmp_path, runs_dir, cifar_dir, small):
    script = CHILD.replace("{config}", repr(KILLED_CONFIG))
    env = {**os.environ, "PYTHONPATH": str(REPO)}
    run_id, checkpoint_step, moments = "", 0, []
    for _attempt in range(3):
        # A random moment by progress, not by the clock: somewhere in the next 2.5 epochs, after the first checkpoint.
        target = random.randint(max(checkpoint_step, 100) + 1, checkpoint_step + 250)
        jitter = random.uniform(0, 0.05)
        moments.append((target, round(jitter, 3)))
        with open(tmp_path / "child.err", "w") as err:
            child = subprocess.Popen([sys.executable, "-c", script, str(runs_dir), str(cifar_dir), run_id],
                                     stdout=subprocess.PIPE, stderr=err, text=True, cwd=REPO, env=env)
        try:
            run_id = child.stdout.readline().strip()
            assert run_id, f"the child failed: {(tmp_path / 'child.err').read_text()}"
            folder = runs_dir / run_id
            for line in child.stdout:
                if int(line) >= target:
                    break
            else:
                raise AssertionError(f"the child ended before step {target}: {(tmp_path / 'child.err').read_text()}")
            time.sleep(jitter)
            # Another process's live run shows as running here, and cannot be resumed from here.
            elsewhere = RunRegistry(runs_dir, lambda: small, threads=1)
            assert elsewhere.snapshot(run_id).state == RUNNING
            with pytest.raises(RunError, match="running"):
                elsewhere.resume(run_id)
        finally:
            child.send_signal(signal.SIGKILL)
            child.wait()  # reaped: a zombie's pid would still answer as alive
            child.stdout.close()
        training_pid = read_status(folder)["progress"]["training_pid"]
        wait_until(lambda pid=training_pid: not running(pid), what="the training process to die with its server", timeout=5)
        entry = _check_folder_is_whole(folder)
        checkpoint_step = entry["training"]["step"]
        assert checkpoint_step % 100 == 0 and checkpoint_step >= 100, moments  # checkpoints come at the ends of epochs
        runs = RunRegistry(runs_dir, lambda: small, threads=1).list_runs()
        assert [(r.id, r.state) for r in runs] == [(run_id, INTERRUPTED)], moments

    registry = RunRegistry(runs_dir, lambda: small, threads=1)
    registry.resume(run_id)
    registry.wait(120)
    run = registry.snapshot(run_id)
    assert run.state == FINISHED, (run.error, moments)
    assert [e.epoch for e in run.epochs] == list(range(1, 13)), moments
    assert [e.step for e in run.steps] == list(range(5, 1_201, 5)), moments  # increasing, no gaps, no duplicates
    assert _check_folder_is_whole(runs_dir / run_id)["training"]["step"] == 1_200

    # The curves continue where they left off, with the numbers of a run never killed. Across processes the CPU
    # kernels may round a last bit differently (buffer alignment picks their code path) and training amplifies
    # such bits over hundreds of steps, so: close to the reference up to just past the last checkpoint, and the
    # same curve at the end. (Within one process the resume test above demands exact equality.)
    reference_id = registry.start(preset("walkthrough", **KILLED_CONFIG))
    registry.wait(120)
    reference = registry.snapshot(reference_id)
    got, want = step_losses(run), step_losses(reference)
    assert [step for step, _ in got] == [step for step, _ in want], moments
    early = [i for i, (step, _) in enumerate(want) if step <= checkpoint_step + 50]
    assert [got[i][1] for i in early] == pytest.approx([want[i][1] for i in early], rel=1e-3), moments
    last = [loss for _, loss in got[-20:]], [loss for _, loss in want[-20:]]
    assert sum(last[0]) / 20 == pytest.approx(sum(last[1]) / 20, rel=0.03), moments
    accuracies = run.epochs[-1].test_accuracy, reference.epochs[-1].test_accuracy
    assert accuracies[0] == pytest.approx(accuracies[1], abs=0.03), moments


# -- reading a runs folder with junk in it -------------------------------------------------------------------


def test_list_runs_skips_junk_and_lists_damaged_runs_without_crashing(registry, runs_dir):
    real = registry.start(preset("walkthrough", train_subset=200, epochs=1))
    registry.wait(60)
    config_text = (runs_dir / real / "config.json").read_text()

    (runs_dir / "notes.txt").write_text("a stray file")
    (runs_dir / "empty-folder").mkdir()
    (runs_dir / "no-config").mkdir()
    (runs_dir / "no-config" / "status.json").write_text('{"state": "running"}')
    junk_configs = {"torn-config": '{"config": {"epochs": 2', "list-config": "[1, 2]", "number-config": '{"config": 5}',
                    "null-config": "null", "binary-config": "\x00\xff"}
    for name, text in junk_configs.items():
        (runs_dir / name).mkdir()
        (runs_dir / name / "config.json").write_text(text)
    (runs_dir / "config-is-a-folder").mkdir()
    (runs_dir / "config-is-a-folder" / "config.json").mkdir()
    (runs_dir / "20000101-000011-fifo-status").mkdir()
    (runs_dir / "20000101-000011-fifo-status" / "config.json").write_text(config_text)
    os.mkfifo(runs_dir / "20000101-000011-fifo-status" / "status.json")  # read, it would block for ever
    # Runs whose config is sound but whose status or metrics are not: listed as damaged, with the reason and no curve.
    damaged = {"20000101-000000-torn-status": ("{\"state\": \"runn", "{}"),
               "20000101-000001-odd-status": ("[\"running\"]", "\"steps\""),
               "20000101-000002-odd-fields": ('{"state": "running", "updated": "yesterday", "pid": "x", "progress": 3}',
                                              '{"steps": 5, "epochs": {"a": 1}}'),
               "20000101-000003-odd-events": ('{"state": "banana", "error": 7, "test_accuracy": "high"}',
                                              '{"steps": [1, null, {"loss": 2}, {"step": "3"}], "epochs": [[]]}'),
               # A fresh heartbeat from pid 0 or -1: os.kill would "reach" a process group, or every process.
               "20000101-000004-pid-zero": (json.dumps({"state": "running", "pid": 0, "updated": time.time()}), "{}"),
               "20000101-000005-pid-minus-one": (json.dumps({"state": "loading data", "pid": -1, "updated": time.time()}), "{}"),
               "20000101-000006-huge-pid": (json.dumps({"state": "running", "pid": 10**30, "updated": time.time()}), "{}"),
               # One Infinity where a fraction goes, and a logged step missing its loss.
               "20000101-000007-infinity": ('{"state": "finished", "test_accuracy": Infinity}', '{"steps": [], "epochs": []}'),
               "20000101-000008-stepless": (json.dumps({**json.loads((runs_dir / real / "status.json").read_text())}),
                                            '{"steps": [{"epoch": 1, "step": 3, "lr": 0.1}], "epochs": []}')}
    for name, (status, metrics) in damaged.items():
        (runs_dir / name).mkdir()
        (runs_dir / name / "config.json").write_text(config_text)
        (runs_dir / name / "status.json").write_text(status)
        (runs_dir / name / "metrics.json").write_text(metrics)

    # JSON lines: a garbled line in the middle is damage; a last line cut short by a kill is not.
    real_lines = (runs_dir / real / "metrics.jsonl").read_text()
    for name, text in {"20000101-000009-garbled-line": real_lines.replace("\n", "\n{oops\n", 1),
                       "20000101-000010-torn-last-line": real_lines + '{"event": "step", "epo'}.items():
        shutil.copytree(runs_dir / real, runs_dir / name)
        (runs_dir / name / "metrics.jsonl").write_text(text)
    damaged["20000101-000009-garbled-line"] = None
    torn = registry.snapshot("20000101-000010-torn-last-line")
    assert torn.state == FINISHED and torn.steps == registry.snapshot(real).steps
    shutil.rmtree(runs_dir / "20000101-000010-torn-last-line")

    light = {r.id: r for r in RunRegistry(runs_dir, lambda: None).list_runs()}
    runs = {r.id: r for r in RunRegistry(runs_dir, lambda: None).list_runs(metrics=True)}
    light.pop("20000101-000011-fifo-status")
    fifo = runs.pop("20000101-000011-fifo-status")  # listed at once, never blocking on the FIFO
    # A folder whose config.json is junk is listed too, as damaged with the reason; folders without one are not runs.
    assert set(runs) == set(light) == {real, *damaged, *junk_configs}
    for name in junk_configs:
        assert runs[name].state == DAMAGED and "config.json" in runs[name].error and runs[name].config == {}, name
        assert registry.snapshot(name).state == DAMAGED  # its own view says the same
    assert not light[real].metrics_read and light[real].steps == [] and light[real].progress == runs[real].progress
    assert runs[real].state == FINISHED and len(runs[real].epochs) == 1
    assert fifo.state == DAMAGED and "not a regular file" in fifo.error
    for name in damaged:
        assert runs[name].state == DAMAGED and runs[name].steps == [] and runs[name].epochs == [], name
        assert "damaged" in runs[name].error and "\n" not in runs[name].error, name
        assert runs[name].progress.step == 0 and runs[name].test_accuracy is None and not runs[name].live, name
        with pytest.raises(RunError, match="damaged"):
            registry.resume(name)
    for junk in ("empty-folder", "no-config", *junk_configs, "config-is-a-folder", "20000101-000011-fifo-status", "notes.txt",
                 "../" + runs_dir.name):
        with pytest.raises(RunError):
            registry.resume(junk)


def test_list_runs_of_a_folder_that_does_not_exist_is_empty(tmp_path):
    assert RunRegistry(tmp_path / "nothing-here", lambda: None).list_runs() == []
