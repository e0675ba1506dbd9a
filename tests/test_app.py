"""The web app through streamlit.testing.v1.AppTest: every page, with and without data, on the real CIFAR-10.

AppTest runs the real app.py router and switches pages as a browser would; the resources it shares
(dataset service, run registry, models) are the same st.cache_resource entries the test reads here.
"""

import io
import json
import os
import socket
import time
from pathlib import Path

import pytest
import torch
import torchvision
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from lenet.checkpoint import save_checkpoint
from lenet.data import CLASSES
from lenet.inference import NORMALIZATIONS, available_devices
from lenet.model import LeNet5
from lenet.runs import LIVE_STATES, STOPPED
from lenet.service import BUSY, ERROR
from lenet.train import preset, train
from pages import _code, _resources

APP = Path(__file__).resolve().parents[1] / "app.py"
PAGES = ["overview", "dataset", "model", "train", "evaluate", "classify"]


def until(condition, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory, cifar):
    """A real, tiny LeNet-5 checkpoint: one epoch of the quick preset on 2,000 training images."""
    config = preset("quick", train_subset=2000, epochs=1)
    result = train(config, cifar)
    path = tmp_path_factory.mktemp("model") / "tiny.pt"
    meta = {"normalization": NORMALIZATIONS[config.normalization], "recipe": config.to_dict()}
    save_checkpoint(path, result.model.state_dict(), {**meta, "metrics": {"test_accuracy": result.test_accuracy}})
    path.with_suffix(".json").write_text(json.dumps({"test_accuracy": result.test_accuracy, "recipe": config.to_dict()}))  # its card
    return path


@pytest.fixture
def env(monkeypatch, tmp_path, cifar_dir, checkpoint):
    """The real data, a fresh runs folder and the tiny checkpoint; yields a dict the test may change before opening pages."""
    values = {"LENET_DATA": str(cifar_dir), "LENET_RUNS": str(tmp_path / "runs"), "LENET_CHECKPOINT": str(checkpoint)}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    yield values
    registry = _resources._registry(os.environ["LENET_RUNS"], os.environ["LENET_DATA"])
    registry.stop()
    registry.wait(30)


@pytest.fixture
def no_data(env, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("LENET_DATA", str(empty))
    return empty


def open_page(name: str) -> AppTest:
    """The app as a browser opens it, on the named page, once the dataset service is done (loaded, absent or failed)."""
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    until(lambda: not _resources.dataset_service().status().busy)
    at.switch_page(f"pages/{name}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def text(at: AppTest) -> str:
    """Everything a reader sees as text: titles, markdown, captions, alerts, metrics, widget labels."""
    parts = []
    for kind in ("title", "header", "subheader", "markdown", "caption", "info", "warning", "error", "success", "code"):
        parts += [str(element.value) for element in getattr(at, kind)]
    parts += [f"{m.label} {m.value}" for m in at.metric]
    parts += [w.label for kind in ("button", "selectbox", "number_input", "file_uploader") for w in getattr(at, kind)]
    return "\n".join(parts)


def photo(fmt: str = "PNG") -> bytes:
    """A red ball on a blue sky, 240 x 160, encoded as fmt."""
    image = Image.new("RGB", (240, 160), "skyblue")
    ImageDraw.Draw(image).ellipse((60, 20, 180, 140), fill="red")
    buffer = io.BytesIO()
    image.save(buffer, fmt)
    return buffer.getvalue()


EXPECTED_WITH_DATA = {
    "overview": ["The five steps", "Dataset available", "test accuracy"],
    "dataset": ["A random batch", "Images per class", "Before and after normalization"],
    "model": ["Learnable parameters 62,006", "cross-entropy", "learning rate $\\eta$ = 0.001"],
    "train": ["No runs yet", "Start training", "Training images (0: all 50,000)"],
    "evaluate": ["Test accuracy", "Easiest: ", "Test images and what the network said"],
    "classify": ["A photo (JPEG, PNG, WebP, BMP or GIF)"],
}


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_with_data(env, name):
    at = open_page(name)
    assert not at.error, [e.value for e in at.error]
    shown = text(at)
    for expected in EXPECTED_WITH_DATA[name]:
        assert expected in shown
    assert any(expander.label == "PyTorch code" for expander in at.expander)
    if name == "evaluate":
        assert any(expander.label.startswith("Model card") for expander in at.expander)


@pytest.mark.parametrize("name", PAGES)
def test_every_page_renders_without_a_dataset(no_data, name):
    at = open_page(name)
    assert not at.error, [e.value for e in at.error]
    shown = text(at)
    if name in ("dataset", "evaluate"):
        assert f"No CIFAR-10 in {no_data}" in shown
    if name == "dataset":
        assert "Download CIFAR-10 (170 MB)" in shown
    if name == "classify":
        assert "A photo (JPEG, PNG, WebP, BMP or GIF)" in shown  # uploads need no dataset


def test_training_without_a_dataset_says_so_and_starts_nothing(no_data):
    at = open_page("train")
    at.button(key="start").click().run()
    assert [e.value for e in at.error] == [f"Not started: {_resources.dataset_service().status().message}"]
    assert "No CIFAR-10" in at.error[0].value and _resources.registry().list_runs() == []


@pytest.mark.parametrize("name", ["overview", "model", "evaluate", "classify"])
def test_pages_say_how_to_get_a_model_when_there_is_none(no_data, tmp_path, monkeypatch, name):
    monkeypatch.setenv("LENET_CHECKPOINT", str(tmp_path / "not-shipped-yet.pt"))
    at = open_page(name)
    assert not at.error, [e.value for e in at.error]
    assert _resources.NO_MODEL in text(at)


def test_download_without_network_says_so(no_data, monkeypatch):
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    monkeypatch.setattr(torchvision.datasets.CIFAR10, "url", f"http://127.0.0.1:{port}/cifar-10-python.tar.gz")
    at = open_page("dataset")
    next(b for b in at.button if b.label == "Download CIFAR-10 (170 MB)").click().run()
    until(lambda: _resources.dataset_service().status().state not in BUSY)
    at.run()
    assert _resources.dataset_service().status().state == ERROR
    assert len(at.error) == 1 and "Could not download CIFAR-10" in at.error[0].value
    assert not at.exception


def test_the_dataset_page_shuffles_and_filters(env):
    at = open_page("dataset")
    seed = at.session_state.batch_seed
    next(b for b in at.button if b.label == "Shuffle").click().run()
    assert at.session_state.batch_seed != seed
    at.selectbox(key="class").set_value("cat").run()
    at.select_slider(key="size").set_value(4).run()
    walkthrough_labels = at.code[0].value
    assert walkthrough_labels.split() == ["cat"] * 4
    assert not at.exception and not at.error


@pytest.mark.parametrize(
    "key, value, sentence",
    [
        ("lr-quick", 0.0, "Learning rate must be above 0 and at most 10 (you entered 0)."),
        ("lr-quick", -1.0, "Learning rate must be above 0 and at most 10 (you entered -1)."),
        ("epochs-quick", 0, "Epochs must be from 1 to 1,000 (you entered 0)."),
        ("batch_size-quick", 0, "Batch size must be from 1 to 8,192 (you entered 0)."),
        ("momentum-quick", 1.5, "Momentum must be from 0 to 0.999 (you entered 1.5)."),
    ],
)
def test_each_refused_value_says_why_in_words_and_nothing_starts(env, key, value, sentence):
    at = open_page("train")
    at.number_input(key=key).set_value(value)
    at.button(key="start").click().run()
    assert [e.value for e in at.error] == [f"Not started. {sentence}"]
    assert _resources.registry().list_runs() == []


def test_a_run_of_a_thousand_epochs_asks_before_it_takes_the_training_slot(env):
    at = open_page("train")
    at.number_input(key="epochs-quick").set_value(1000)
    at.button(key="start").click().run()
    question = [w.value for w in at.warning if "Start it anyway?" in w.value]
    assert len(question) == 1 and " h " in question[0], [w.value for w in at.warning]  # the time it would take, in hours
    assert _resources.registry().list_runs() == []
    at.button(key="confirm-cancel").click().run()
    assert not [w for w in at.warning if "Start it anyway?" in w.value] and _resources.registry().list_runs() == []
    # The devices offered are the ones this machine has.
    assert at.selectbox(key="device-quick").options == list(available_devices())


def test_start_stop_and_resume_a_run_through_the_widgets(env):
    at = open_page("train")
    at.number_input(key="train_subset-quick").set_value(2000)
    at.number_input(key="epochs-quick").set_value(200)
    at.button(key="start").click().run()
    assert not at.exception and not at.error
    registry = _resources.registry()
    run = registry.active()
    assert run is not None and run.state in LIVE_STATES and at.selectbox(key="run").value == run.id
    until(lambda: registry.snapshot(run.id).steps)

    # A second start while it trains: told so, and offered to watch it.
    at.button(key="start").click().run()
    assert any(f"Run {run.id} is in progress" in w.value for w in at.warning)
    assert any(b.label == "Watch it" for b in at.button)

    started = time.monotonic()
    at.button(key="stop").click().run()
    assert time.monotonic() - started < 3
    stopped = registry.snapshot(run.id)
    assert stopped.state == STOPPED and stopped.checkpoint is not None
    assert "Stopped at step" in at.get("progress")[0].proto.text
    assert not at.exception and not at.error

    at.button(key="resume").click().run()
    until(lambda: registry.snapshot(run.id).state == "running")
    registry.stop(timeout=5)
    at.run()
    assert registry.snapshot(run.id).state == STOPPED and not at.exception


def test_an_uploaded_photo_gets_probabilities_and_a_non_image_a_message(env):
    at = open_page("classify")
    at.file_uploader(key="upload").set_value(("ball.png", photo(), "image/png")).run()
    assert not at.exception and not at.error
    assert any(m.value.startswith("### It says: **") for m in at.markdown)
    assert len(at.image) == 2  # the photo and the 32 x 32 the network sees
    assert at.get("vega_lite_chart")

    at.file_uploader(key="upload").set_value(("notes.jpg", b"these are notes, not a photo", "image/jpeg")).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["`notes.jpg`: not an image PIL can read (JPEG, PNG, WebP, GIF, BMP, TIFF or PPM)"]


def test_a_camera_photo_is_classified(env):
    at = open_page("classify")
    at.segmented_control(key="source").set_value("Take a photo").run()
    at.camera_input(key="camera").set_value(("camera.jpg", photo("JPEG"), "image/jpeg")).run()
    assert not at.exception and not at.error
    assert any(m.value.startswith("### It says: **") for m in at.markdown)


def test_uploads_work_without_a_dataset(no_data):
    at = open_page("classify")
    at.file_uploader(key="upload").set_value(("ball.png", photo(), "image/png")).run()
    assert not at.exception and not at.error
    assert any(m.value.startswith("### It says: **") for m in at.markdown)


def test_a_test_image_is_classified_with_its_true_class(env):
    at = open_page("classify")
    at.segmented_control(key="source").set_value("A test image").run()
    at.selectbox(key="test-class").set_value("ship").run()
    assert not at.exception and not at.error
    assert any("this is a **ship**" in m.value for m in at.markdown)


def test_the_evaluation_gallery_filters_to_a_pair(env, checkpoint):
    at = open_page("evaluate")
    result = _resources.evaluation(_resources.loaded_model(checkpoint))
    # The model's most common mistake, and a pair it never predicts.
    mistakes = [(n, t, p) for t, row in enumerate(result.confusion) for p, n in enumerate(row) if t != p]
    count, true, predicted = max(mistakes)
    at.selectbox(key="true").set_value(CLASSES[true])
    at.selectbox(key="predicted").set_value(CLASSES[predicted]).run()
    assert not at.exception and not at.error
    assert count == int(((result.labels == true) & (result.predicted == predicted)).sum()) > 0
    assert any(c.value.startswith(f"{count:,} images match") for c in at.caption) and len(at.image) == 1

    never = next((t, p) for n, t, p in mistakes if n == 0)
    at.selectbox(key="true").set_value(CLASSES[never[0]])
    at.selectbox(key="predicted").set_value(CLASSES[never[1]]).run()
    assert [i.value for i in at.info] == ["No test image matches these choices."] and not at.image


def test_the_pytorch_code_compiles_and_the_model_and_classify_snippets_run(tmp_path, monkeypatch):
    for name in ("OVERVIEW", "DATASET", "MODEL", "TRAIN", "EVALUATE", "CLASSIFY"):
        compile(getattr(_code, name), name, "exec")
    monkeypatch.chdir(tmp_path)
    exec(_code.MODEL, {})  # noqa: S102 - our own snippet, as a reader would run it
    torch.save(LeNet5().state_dict(), tmp_path / "cifar_net.pth")  # the walkthrough's Net has the same layer names
    Image.open(io.BytesIO(photo())).save(tmp_path / "photo.jpg")
    exec(_code.CLASSIFY, {})  # noqa: S102
