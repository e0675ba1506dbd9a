"""The run registry when things go wrong, and what it keeps of a run: write failures, a second trainer, a warm
training process, per-epoch weights and the live look inside. Small real subsets of CIFAR-10."""

import multiprocessing
import shutil
import time
from pathlib import Path

import pytest
import torch

from lenet.checkpoint import load_model
from lenet.data import CIFAR10
from lenet.events import Step
from lenet.runs import FAILED, FINISHED, RUNNING, STOPPED, RunInProgress, RunRegistry
from lenet.train import preset
from tests.waiting import wait_until

TEST_IMAGES = torch.arange(0, 10_000, 20)


@pytest.fixture(scope="module")
def small(cifar):
    return CIFAR10(cifar.train, cifar.test.subset(TEST_IMAGES), cifar.source)


def training_processes() -> list:
    return [p for p in multiprocessing.active_children() if p.name.endswith("training-process") or p.name.startswith("train-")]


def test_a_failed_write_ends_the_run_as_failed_and_the_next_start_works(tmp_path, small):
    registry = RunRegistry(tmp_path / "runs", lambda: small, threads=1)
    run_id = registry.start(preset("walkthrough", train_subset=2_000, epochs=50))
    wait_until(lambda: registry.active().steps, what="a first step")
    folder = tmp_path / "runs" / run_id
    (folder / "status.json").unlink()
    (folder / "status.json").mkdir()  # every rewrite of it now fails, as on a folder made read-only mid-run
    wait_until(lambda: not registry.is_training(), timeout=30, what="the run to end")
    run = registry.active()
    assert run.state == FAILED and "status.json" in run.error and "\n" not in run.error
    pid = run.progress.training_pid
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text(),
               timeout=10, what="the training process to end")
    shutil.rmtree(folder / "status.json")
    again = registry.start(preset("walkthrough", train_subset=200, epochs=1))
    registry.wait(60)
    assert registry.snapshot(again).state == FINISHED


def test_a_second_trainer_cannot_take_a_run_that_is_training(tmp_path, small):
    runs_dir = tmp_path / "runs"
    first = RunRegistry(runs_dir, lambda: small, threads=1)
    run_id = first.start(preset("walkthrough", train_subset=2_000, epochs=50))
    wait_until(lambda: first.active().steps, what="a first step")
    second = RunRegistry(runs_dir, lambda: small, threads=1)
    # It is live for every reader while its trainer holds the run's lock, however long since its last word.
    assert second.snapshot(run_id).state == RUNNING
    with pytest.raises(RunInProgress):
        second._launch(second.snapshot(run_id), preset("walkthrough"), None)  # the lock, below resume's state check
    first.stop(timeout=10)
    assert second.snapshot(run_id).state == STOPPED
    second.resume(run_id)  # the lock is free once the first trainer is done
    wait_until(lambda: second.active().progress.step > first.snapshot(run_id).progress.step, what="training to go on")
    second.stop(timeout=10)


def test_a_warm_training_process_trains_the_same_run_and_a_new_one_waits_after_it(tmp_path, small, cifar_dir):
    """The app keeps a training process ready; what it trains is what a process started on demand trains."""
    config = preset("quick", epochs=1, train_subset=1_000, batch_size=100, log_every=1)
    cold = RunRegistry(tmp_path / "cold", lambda: small, threads=1)
    cold_id = cold.start(config)
    cold.wait(120)
    # The warm one reads the data folder's cache itself: the full test set, so compare losses, not accuracy.
    warm = RunRegistry(tmp_path / "warm", lambda: small, threads=1, data_dir=cifar_dir, warm=True)
    assert warm.warm_ready(120), "the warm training process did not get ready"  # torch, the data, the optimizer's imports
    warm_id = warm.start(config)
    warm.wait(120)
    losses = [(s.step, s.loss) for s in warm.snapshot(warm_id).steps]
    assert losses == [(s.step, s.loss) for s in cold.snapshot(cold_id).steps] and len(losses) == 10
    wait_until(lambda: warm._warm is not None and warm._warm.alive(), what="the next warm training process")
    waiting = warm._warm.process
    assert waiting in training_processes()
    warm.close()  # lets the waiting one go, and no other takes its place
    wait_until(lambda: waiting not in training_processes(), timeout=10, what="the idle process to end when let go")
    assert not warm.warm_ready(1) and warm._warm is None  # other tests' registries may keep theirs


def test_a_start_before_the_warm_process_is_made_leaves_one_training_process_until_the_run_ends(tmp_path, small, cifar_dir):
    """A teacher clicks Start while the server still loads the data: that run makes its own process, and no idle warm
    one (about 500 MB) waits beside it; the next one is made when the run ends."""
    import threading

    loaded = threading.Event()

    def load_data():
        loaded.wait(60)
        return small

    registry = RunRegistry(tmp_path / "runs", load_data, threads=1, data_dir=cifar_dir, warm=True)
    run_id = registry.start(preset("walkthrough", train_subset=2_000, epochs=50))  # before any warm process exists
    loaded.set()
    wait_until(lambda: registry.active().steps, what="a first step")
    time.sleep(1)  # the warm-up thread has had the data as long as the run has
    assert registry._warm is None
    registry.stop(timeout=30)
    assert registry.snapshot(run_id).state == STOPPED
    assert registry.warm_ready(120), "no warm training process after the run ended"
    registry.close()


def test_each_epoch_keeps_its_weights_and_the_live_view_shows_the_panel(tmp_path, small):
    registry = RunRegistry(tmp_path / "runs", lambda: small, threads=1)
    run_id = registry.start(preset("quick", epochs=2, train_subset=2_000, batch_size=32))
    views = []
    while registry.is_training():
        view = registry.active().live_view
        if view is not None and (not views or views[-1].step != view.step):
            views.append(view)
        time.sleep(0.02)
    run = registry.snapshot(run_id)
    assert run.state == FINISHED and sorted(run.epoch_checkpoints()) == [1, 2]
    first, last = (load_model(run.epoch_checkpoints()[n])[0] for n in (1, 2))
    assert not torch.equal(first.conv1.weight, last.conv1.weight)
    final = load_model(run.checkpoint)[0]
    assert all(torch.equal(a, b) for a, b in zip(last.state_dict().values(), final.state_dict().values(), strict=True))
    # After each epoch at least, a look inside: conv1's filters as the model has them, and the 10-image panel.
    assert len(views) >= 2
    view = views[-1]
    assert view.filters.shape == (6, 3, 5, 5) and torch.equal(view.filters, final.conv1.weight.detach())
    assert view.images.shape == (10, 3, 32, 32) and sorted(view.labels) == list(range(10))
    assert view.probabilities.shape == (10, 10) and torch.allclose(view.probabilities.sum(1), torch.ones(10), atol=1e-5)


def test_a_run_that_stops_reporting_says_it_is_stalled(tmp_path, small):
    registry = RunRegistry(tmp_path / "runs", lambda: small, threads=1)
    run_id = registry.start(preset("walkthrough", train_subset=2_000, epochs=50))
    wait_until(lambda: registry.active().steps, what="a first step")
    assert registry.active().stalled_for is None
    with registry._active.lock:
        registry._active.snapshot.last_event -= 45  # as if the training process had been silent for 45 s
    assert registry.snapshot(run_id).stalled_for >= 45
    registry.stop(timeout=10)
    assert isinstance(registry.snapshot(run_id).steps[0], Step)
