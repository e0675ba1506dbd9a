"""The web app through streamlit.testing.v1.AppTest: every page, with and without data, on the real CIFAR-10.

AppTest runs the real app.py router and switches pages as a browser would; the resources it shares
(dataset service, run registry, models) are the same st.cache_resource entries the test reads here.
"""

import hashlib
import io
import json
import logging
import math
import os
import pickle
import socket
import time
from pathlib import Path

import pyarrow as pa
import pytest
import torch
import torchvision
from PIL import Image, ImageDraw
from streamlit.elements.lib import policies
from streamlit.proto.WidgetStates_pb2 import WidgetState
from streamlit.testing.v1 import AppTest

from lenet.checkpoint import FORMAT, load_model, save_checkpoint
from lenet.data import CLASSES, WALKTHROUGH_NORMALIZATION
from lenet.evaluate import evaluate
from lenet.export import walkthrough_state_dict_bytes
from lenet.inference import NORMALIZATIONS, available_devices, predict_logits
from lenet.model import LeNet5
from lenet.runs import FINISHED, LIVE_STATES, STOPPED
from lenet.service import BUSY, ERROR
from lenet.train import preset, train
from pages import _charts, _code, _resources
from pages._format import percent
from tests.waiting import wait_until

APP = Path(__file__).resolve().parents[1] / "app.py"
SHIPPED = Path(__file__).resolve().parents[1] / "assets" / "lenet5-cifar10.pt"
PAGES = ["overview", "dataset", "model", "train", "evaluate", "classify"]


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


@pytest.fixture
def no_data(env, tmp_path, monkeypatch):
    empty = tmp_path / "empty"
    empty.mkdir()
    monkeypatch.setenv("LENET_DATA", str(empty))
    return empty


def open_page(name: str, theme: str | None = None) -> AppTest:
    """The app as a browser opens it, on the named page, once the dataset service is done (loaded, absent or failed);
    theme: the browser's "light" or "dark", as st.context.theme reports it."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    if theme is not None:
        at.context = {"theme": theme}
    at.run()
    wait_until(lambda: not _resources.dataset_service().status().busy)
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
    wait_until(lambda: _resources.dataset_service().status().state not in BUSY)
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
    wait_until(lambda: registry.snapshot(run.id).steps)

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
    # Stopped at a few of its 200 epochs: the accuracy chart's axis ends where the training did, not at epoch 200.
    accuracy = json.loads(next(c for c in at.get("vega_lite_chart") if "Accuracy after each epoch" in c.proto.spec).proto.spec)
    trained = math.ceil(stopped.progress.step / stopped.progress.steps_per_epoch)
    x_axes = [layer.get("encoding", {}).get("x", {}) for layer in accuracy["layer"]]
    axes = [x["scale"]["domain"] for x in x_axes if x.get("field") == "epoch"]
    assert trained < 200 and axes == [[0, trained]], axes
    # The "guessing" label hangs under its dashed line at 10%, where the first accuracy points (at or above it) are not.
    layers = [inner for layer in accuracy["layer"] for inner in layer.get("layer", [layer])]
    (label,) = [layer["mark"] for layer in layers if isinstance(layer.get("mark"), dict) and layer["mark"].get("type") == "text"]
    assert label["baseline"] == "top" and label["dy"] > 0

    at.button(key="resume").click().run()
    wait_until(lambda: registry.snapshot(run.id).state == "running")
    registry.stop(timeout=5)
    at.run()
    assert registry.snapshot(run.id).state == STOPPED and not at.exception


def test_an_upload_is_decoded_once_and_kept_with_its_session(env):
    at = open_page("classify")
    at.file_uploader(key="upload").set_value(("ball.png", photo(), "image/png")).run()
    kept = at.session_state["decoded-photos"]
    assert len(kept) == 1
    image = next(iter(kept.values()))
    for _ in range(3):  # a click anywhere reruns the page with the same upload: it is not decoded again
        at.run()
    assert not at.exception and not at.error and any("It says: **" in m.value for m in at.markdown)
    assert list(at.session_state["decoded-photos"].values()) == [image] and next(iter(kept.values())) is image
    # Another photo replaces nothing of another page's: each session keeps its last two (Classify's and Inside's).
    for n in range(3):
        at.file_uploader(key="upload").set_value((f"ball-{n}.png", photo(), "image/png")).run()
    assert len(at.session_state["decoded-photos"]) == _resources.SESSION_PHOTOS == 2
    # A file that is not an image is said so, and not kept.
    at.file_uploader(key="upload").set_value(("notes.jpg", b"not a photo", "image/jpeg")).run()
    assert at.error and len(at.session_state["decoded-photos"]) == 2


def test_a_run_that_tests_every_n_images_shows_those_points_on_the_accuracy_chart(env):
    at = open_page("train")
    at.number_input(key="train_subset-quick").set_value(1000)
    at.number_input(key="epochs-quick").set_value(1)
    at.number_input(key="test_every-quick").set_value(300)
    at.button(key="start").click().run()
    registry = _resources.registry()
    run = registry.active()
    wait_until(lambda: registry.snapshot(run.id).state == FINISHED)
    at.run()
    assert not at.exception and not at.error
    chart = next(c for c in at.get("vega_lite_chart") if "Accuracy while training" in c.proto.spec)
    tables = [pa.ipc.open_stream(d.data.data).read_all().to_pandas() for d in chart.proto.datasets]
    epochs = sorted({e for table in tables if "epoch" in table for e in table["epoch"]})
    assert epochs == pytest.approx([3 / 8, 5 / 8, 1.0])  # 128 images a step: past 300 at step 3, past 600 at 5, the end at 8
    latest = registry.snapshot(run.id).epochs[-1].test_accuracy
    assert next(m for m in at.metric if m.label == "Test accuracy").value == percent(latest)


def test_an_uploaded_photo_gets_probabilities_and_a_non_image_a_message(env):
    at = open_page("classify")
    at.file_uploader(key="upload").set_value(("ball.png", photo(), "image/png")).run()
    assert not at.exception and not at.error
    assert any("It says: **" in m.value for m in at.markdown)
    assert len(at.main.image) == 2  # the photo with its centre square, and the 32 x 32 the network sees
    assert at.get("vega_lite_chart")

    at.file_uploader(key="upload").set_value(("notes.jpg", b"these are notes, not a photo", "image/jpeg")).run()
    assert not at.exception
    assert [e.value for e in at.error] == ["`notes.jpg`: not an image PIL can read (JPEG, PNG, WebP, GIF, BMP, TIFF or PPM)"]


def test_a_camera_photo_is_classified(env):
    at = open_page("classify")
    at.segmented_control(key="source").set_value("Take a photo").run()
    at.camera_input(key="camera").set_value(("camera.jpg", photo("JPEG"), "image/jpeg")).run()
    assert not at.exception and not at.error
    assert any("It says: **" in m.value for m in at.markdown)


def test_uploads_work_without_a_dataset(no_data):
    at = open_page("classify")
    at.file_uploader(key="upload").set_value(("ball.png", photo(), "image/png")).run()
    assert not at.exception and not at.error
    assert any("It says: **" in m.value for m in at.markdown)


def test_a_test_image_is_classified_with_its_true_class(env):
    at = open_page("classify")
    at.segmented_control(key="source").set_value("A test image").run()
    at.selectbox(key="test-class").set_value("ship").run()
    assert not at.exception and not at.error
    assert any("this is a ship." in m.value for m in at.markdown)


def test_the_shipped_model_is_evaluated_with_its_test_time_flips_and_the_pages_say_so(env, monkeypatch, cifar):
    monkeypatch.setenv("LENET_CHECKPOINT", str(SHIPPED))
    model, meta = load_model(SHIPPED)
    assert model.test_flips
    with_flips = evaluate(model, cifar.test, meta["normalization"]).accuracy
    model.test_flips = False
    alone = evaluate(model, cifar.test, meta["normalization"]).accuracy
    at = open_page("evaluate")
    assert not at.exception and not at.error
    assert next(m for m in at.metric if m.label == "Test accuracy").value == percent(with_flips) != percent(alone)
    assert any("its mirror image together" in i.value for i in at.info)
    assert any("test-time flips travel in the ONNX file" in c.value for c in at.caption)  # beside the downloads
    at = open_page("classify")
    assert not at.exception and any("its mirror image together" in i.value for i in at.info)


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
    assert any(c.value.startswith(f"{count:,} images match") for c in at.caption) and len(at.main.image) == 1
    assert len(at.main.image[0].value) == min(count, 16)  # one tile per image, 16 by default

    never = next((t, p) for n, t, p in mistakes if n == 0)
    at.selectbox(key="true").set_value(CLASSES[never[0]])
    at.selectbox(key="predicted").set_value(CLASSES[never[1]]).run()
    assert [i.value for i in at.info] == ["No test image matches these choices."] and not at.main.image


def test_the_pytorch_code_compiles_and_the_model_and_classify_snippets_run(tmp_path, monkeypatch):
    for name in ("OVERVIEW", "DATASET", "MODEL", "TRAIN", "EVALUATE", "CLASSIFY"):
        compile(getattr(_code, name), name, "exec")
    monkeypatch.chdir(tmp_path)
    exec(_code.MODEL, {})  # noqa: S102 - our own snippet, as a reader would run it
    torch.save(LeNet5().state_dict(), tmp_path / "cifar_net.pth")  # the walkthrough's Net has the same layer names
    Image.open(io.BytesIO(photo())).save(tmp_path / "photo.jpg")
    exec(_code.CLASSIFY, {})  # noqa: S102


# -- Classify: honest answers ------------------------------------------------------------------------------------

CAVEAT = "This network knows only these ten classes"


def model_file(state_dict: dict) -> bytes:
    """What the walkthrough's `torch.save(net.state_dict(), PATH)` writes."""
    buffer = io.BytesIO()
    torch.save(state_dict, buffer)
    return buffer.getvalue()


def test_classify_always_names_the_ten_classes_and_calls_a_spread_out_answer_unsure(env):
    at = open_page("classify")
    at.file_uploader(key="upload").set_value(("ball.png", photo(), "image/png")).run()
    assert CAVEAT in text(at) and not at.exception

    # An untrained network spreads its probability over the ten classes (about 10% each): unsure, and still named.
    torch.manual_seed(0)
    at.file_uploader(key="classify-model-upload").set_value(("untrained.pth", model_file(LeNet5().state_dict()), "")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert at.selectbox(key="classify-model").value.startswith("upload:")
    assert [w.value for w in at.warning if w.value.startswith("**Unsure**")]
    assert not [m.value for m in at.markdown if "Confident" in m.value]
    assert any("It says: **" in m.value for m in at.markdown) and CAVEAT in text(at)


def seed_of_test_image(cifar, loaded, wanted) -> tuple[int, int]:
    """A seed under which the Classify page's "A test image" picks an image the model answers as wanted(p, right)."""
    for seed in range(5000):
        index = int(torch.randperm(len(cifar.test), generator=torch.Generator().manual_seed(seed))[0])
        image, label = cifar.test.images[index], int(cifar.test.labels[index])
        p = _resources.predict_tensor(loaded, image).probabilities
        if wanted(sorted(p, reverse=True), p.index(max(p)) == label):
            return seed, label
    raise AssertionError("no such test image")


@pytest.mark.parametrize("right", [True, False])
def test_a_confident_answer_is_called_confident_whether_or_not_it_is_right(env, monkeypatch, cifar, right):
    """Confidence comes from the probabilities alone: a confident mistake is still called confident, and wrong."""
    monkeypatch.setenv("LENET_CHECKPOINT", str(SHIPPED))
    loaded = _resources.loaded_model(SHIPPED)
    seed, label = seed_of_test_image(cifar, loaded, lambda p, is_right: p[0] >= 0.8 and p[0] - p[1] >= 0.5 and is_right == right)
    at = open_page("classify")
    at.session_state["test-pick"] = (_resources.ANY, seed)
    at.segmented_control(key="source").set_value("A test image").run()
    assert not at.exception and not at.error
    shown = text(at)
    assert ":green-badge[:material/verified: Confident]" in shown and "**Unsure**" not in shown
    assert ("**Right**" in shown) == right and ("**Wrong**" in shown) != right
    assert f"this is {'an' if CLASSES[label][0] in 'aeiou' else 'a'} {CLASSES[label]}." in shown and CAVEAT in shown


# -- bring your own model ----------------------------------------------------------------------------------------


def test_a_walkthrough_state_dict_uploaded_on_evaluate_is_evaluated_in_memory(env, tmp_path, cifar):
    model, meta = load_model(SHIPPED)
    data = walkthrough_state_dict_bytes(model, meta)  # the shipped weights, folded for the walkthrough's Normalize(0.5, 0.5)
    assets_before = sorted((p.name, p.stat().st_mtime_ns) for p in SHIPPED.parent.iterdir())
    at = open_page("evaluate")
    at.file_uploader(key="evaluate-model-upload").set_value(("cifar_net.pth", data, "application/octet-stream")).run()
    assert not at.exception and not at.error, [e.value for e in at.error]

    assert at.selectbox(key="evaluate-model").value == f"upload:{hashlib.sha256(data).hexdigest()}"
    # The same network with the walkthrough's preprocessing, but weights alone: each image is classified alone, without
    # the shipped model's test-time flips (its own Evaluate counts the mirror images too, and says so).
    model.test_flips = False
    alone = evaluate(model, cifar.test, meta["normalization"])
    shipped = _resources.evaluation(_resources.loaded_model(SHIPPED))
    assert shipped.accuracy > alone.accuracy
    accuracy = next(m for m in at.metric if m.label == "Test accuracy")
    assert accuracy.value == percent(alone.accuracy)
    assert accuracy.delta == f"{(alone.accuracy - 0.1) * 100:+.1f} points over guessing"
    assert any("its preprocessing was assumed" in i.value for i in at.info)
    assert not any("mirror image" in i.value for i in at.info)

    # Kept in this session only: nothing written to the runs folder or next to the shipped model.
    runs = Path(env["LENET_RUNS"])
    assert not runs.exists() or not [p for p in runs.rglob("*") if p.is_file()]
    assert sorted((p.name, p.stat().st_mtime_ns) for p in SHIPPED.parent.iterdir()) == assets_before
    # The other pages of this session offer it too; another session does not have it.
    at.switch_page("pages/classify.py").run()
    assert "Your model: cifar_net.pth" in at.selectbox(key="classify-model").options
    assert "Your model: cifar_net.pth" not in open_page("classify").selectbox(key="classify-model").options


class _RunsCode:
    """Unpickling this runs a shell command."""

    def __init__(self, marker: Path):
        self.marker = marker

    def __reduce__(self):
        return os.system, (f"touch {self.marker}",)


@pytest.mark.parametrize("kind", ["a checkpoint with code in its metadata", "a bare pickle"])
def test_a_malicious_pickle_uploaded_as_a_model_runs_nothing_and_gets_a_message(env, tmp_path, kind):
    marker = tmp_path / "pwned"
    if kind == "a bare pickle":
        data = pickle.dumps(_RunsCode(marker))
    else:
        meta = {"classes": list(CLASSES), "normalization": WALKTHROUGH_NORMALIZATION, "note": _RunsCode(marker)}
        data = model_file({"format": FORMAT, "model": LeNet5().state_dict(), "meta": meta})
    at = open_page("evaluate")
    at.file_uploader(key="evaluate-model-upload").set_value(("evil.pth", data, "application/octet-stream")).run()
    assert not marker.exists()
    assert not at.exception
    errors = [e.value for e in at.error]
    assert len(errors) == 1 and errors[0].startswith("evil.pth\\:") and "LeNet-5" in errors[0], errors
    assert not [o for o in at.selectbox(key="evaluate-model").options if o.startswith("Your model")]
    # The control: loaded the unsafe way, the same bytes do run the command, so the test above could fail.
    if kind == "a bare pickle":
        pickle.loads(data)  # noqa: S301
    else:
        torch.load(io.BytesIO(data), weights_only=False)
    assert marker.exists()


# -- Evaluate: the confusion matrix's selection ------------------------------------------------------------------


def confusion_chart(at: AppTest):
    return next(chart for chart in at.get("vega_lite_chart") if "confusion-" in chart.proto.id)


def rerun_as_the_browser(at: AppTest, selections: dict[str, dict]) -> AppTest:
    """Rerun as the browser does: every widget's value, and the selection of each chart it still shows (a chart's
    selection lives in the browser, keyed by the chart's id: a chart with a new id starts without one). AppTest does
    not send chart selections itself, so they are added here as the frontend's messages."""
    states = at._tree.get_widget_states()
    for chart in at.get("vega_lite_chart"):
        if chart.proto.id in selections:
            value = json.dumps({"selection": {_charts.CONFUSION_SELECTION: [selections[chart.proto.id]]}})
            states.widgets.append(WidgetState(id=chart.proto.id, string_value=value))
    return at._run(states)


class Records(logging.Handler):
    def __init__(self):
        super().__init__(logging.WARNING)
        self.messages = []

    def emit(self, record):
        self.messages.append(record.getMessage())


@pytest.fixture
def streamlit_warnings():
    """Streamlit's logged warnings during the test. Its loggers do not propagate, so the handler goes on each; it warns
    about Session State misuse once per process, so that is reset."""
    records = Records()
    loggers = [logging.getLogger(name) for name in list(logging.root.manager.loggerDict) if name.startswith("streamlit")]
    assert logging.getLogger(policies.__name__) in loggers
    policies._shown_default_value_warning = False
    for logger in loggers:
        logger.addHandler(records)
    yield records.messages
    for logger in loggers:
        logger.removeHandler(records)


def filters(at: AppTest) -> tuple:
    return at.selectbox(key="true").value, at.selectbox(key="predicted").value, at.toggle(key="mistakes").value


def test_a_click_on_the_confusion_matrix_filters_the_gallery_and_a_new_filter_or_model_clears_it(env, checkpoint, streamlit_warnings):
    result = _resources.evaluation(_resources.loaded_model(checkpoint))
    count, true, predicted = max((n, CLASSES[t], CLASSES[p]) for t, row in enumerate(result.confusion) for p, n in enumerate(row) if t != p)
    cell = {"true": true, "predicted": predicted}
    at = open_page("evaluate")
    first = confusion_chart(at).proto.id
    selections = {first: cell}
    rerun_as_the_browser(at, selections)
    assert filters(at) == (true, predicted, True)
    assert any(c.value.startswith(f"{count:,} images match") for c in at.caption)
    rerun_as_the_browser(at, selections)  # the browser sends the same selection again: nothing changes
    assert filters(at) == (true, predicted, True) and confusion_chart(at).proto.id == first

    # A filter changed by hand: the chart comes back without the cell it no longer matches...
    other = next(name for name in CLASSES if name != true)
    at.selectbox(key="true").set_value(other)
    rerun_as_the_browser(at, selections)
    assert filters(at) == (other, predicted, True)
    second = confusion_chart(at).proto.id
    assert second != first
    # ...so a click on that same cell again is a new click, and chooses it again.
    selections[second] = cell
    rerun_as_the_browser(at, selections)
    assert filters(at) == (true, predicted, True)

    # Another model: a new chart, with nothing selected.
    model, meta = load_model(SHIPPED)
    at.file_uploader(key="evaluate-model-upload").set_value(("cifar_net.pth", walkthrough_state_dict_bytes(model, meta), ""))
    rerun_as_the_browser(at, selections)
    assert at.selectbox(key="evaluate-model").value.startswith("upload:")
    assert confusion_chart(at).proto.id not in selections
    assert not at.exception and not at.error
    assert not [m for m in streamlit_warnings if "Session State" in m or "default value" in m], streamlit_warnings


# -- Evaluate: the card, the files -------------------------------------------------------------------------------


def test_the_model_card_is_a_table_of_labelled_formatted_values(env, checkpoint):
    card = json.loads(checkpoint.with_suffix(".json").read_text())
    at = open_page("evaluate")
    rows = dict(at.main.table[0].value.itertuples(index=False))
    assert rows["Test accuracy"] == percent(card["test_accuracy"])
    assert rows["Epochs"] == "1" and rows["Recipe"] == "quick" and rows["Optimizer"].startswith("SGD, learning rate 0.1")
    assert not [value for value in rows.values() if str(card["test_accuracy"]) in value]  # no raw 0.6012000441551208


def test_the_download_buttons_make_files_that_load_back(env, checkpoint, cifar):
    at = open_page("evaluate")
    assert [b.label for b in at.get("download_button")] == ["Walkthrough .pth", "Training script .py"]
    loaded = _resources.loaded_model(checkpoint)
    model, meta = load_model(_resources.walkthrough_file(loaded))
    assert meta["source"] == "state_dict"
    images = cifar.test.images[:500]
    answers = predict_logits(model, images, meta["normalization"]).argmax(1)
    assert (answers == predict_logits(loaded.model, images, loaded.normalization).argmax(1)).float().mean() >= 0.99
    compile(_resources.script_file(loaded, 0.6, "tiny_train.py"), "tiny_train.py", "exec")

    # ONNX takes seconds: exported by a button of its own, then offered for download (and kept for the next one).
    onnx = pytest.importorskip("onnx")
    next(b for b in at.button if b.label == "Export to ONNX").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    assert [b.label for b in at.get("download_button")] == ["Walkthrough .pth", "ONNX", "Training script .py"]
    exported = _resources.onnx_ready(loaded)
    assert [i.name for i in onnx.load_model_from_string(exported).graph.input] == ["image"]
    runtime = pytest.importorskip("onnxruntime")
    logits = runtime.InferenceSession(exported).run(None, {"image": (images[:8].float() / 255).numpy()})[0]
    assert torch.allclose(torch.from_numpy(logits), predict_logits(loaded.model, images[:8], loaded.normalization), atol=1e-4)
    assert _resources.onnx_file(loaded) is exported
    assert not [b for b in open_page("evaluate").button if b.label == "Export to ONNX"]  # another session downloads at once


# -- the theme and the pictures ----------------------------------------------------------------------------------


def luminance(color: str) -> float:
    red, green, blue = (int(color.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return 0.2126 * red + 0.7152 * green + 0.0722 * blue


@pytest.mark.parametrize("theme", ["light", "dark"])
def test_chart_labels_and_lines_on_the_background_stand_out_in_either_theme(env, theme):
    """Vega draws text and rules black unless told: unreadable on the dark theme. Every one of them on the page's
    background has a colour of its own, light on the dark theme and dark on the light one."""
    checked = 0
    for name in ("evaluate", "model"):
        at = open_page(name, theme=theme)
        for chart in at.get("vega_lite_chart"):
            spec = json.loads(chart.proto.spec)
            for layer in spec.get("layer", [spec]):
                mark = layer["mark"] if isinstance(layer["mark"], dict) else {"type": layer["mark"]}
                if mark["type"] in ("text", "rule") and "color" not in layer.get("encoding", {}):
                    assert "color" in mark, (name, layer)
                    assert (luminance(mark["color"]) > 0.6) == (theme == "dark"), (name, mark)
                    checked += 1
    assert checked >= 3  # per-class labels and line, parameter labels


def test_the_augmentation_preview_shows_the_trainers_draws_and_draws_again(env, cifar):
    at = open_page("dataset")

    def preview():
        nodes = list(at.main)
        start = next(i for i, node in enumerate(nodes) if getattr(node, "type", "") == "header" and node.value == "What augmentation does")
        return next(node for node in nodes[start:] if getattr(node, "type", "") == "image")

    batch = _resources.random_batch(cifar.train, _resources.ANY, 8, at.session_state.batch_seed)
    assert preview().captions == [CLASSES[label] for label in batch.labels]  # eight real training images
    first = preview().value
    assert len(first) == 8 and len(set(first)) == 8
    at.run()
    assert preview().value == first  # the same draw until asked for another
    next(b for b in at.button if b.label == "New draw").click().run()
    assert at.session_state["augment-step"] == 3 and not at.exception
    assert not set(preview().value) & set(first)  # every image drawn again
