"""The "Inside the network" page through streamlit.testing.v1.AppTest, on the shipped model and real CIFAR-10 images.

The page draws what lenet.explain computes, so the tests recompute the same numbers for the same image and check
the page shows them: the logits, and the worked example's value.
"""

import io
import shutil
import time
from pathlib import Path

import pytest
import torch
from PIL import Image, ImageDraw
from streamlit.testing.v1 import AppTest

from lenet import explain
from lenet.checkpoint import default_checkpoint, load_model, save_checkpoint
from lenet.data import CLASSES
from lenet.model import LeNet5
from lenet.predict import ImageError, load_image
from pages import _resources

APP = Path(__file__).resolve().parents[1] / "app.py"
SHIPPED = default_checkpoint()
LAYER_TITLES = ["conv1: 6 maps of 28 × 28", "pool1: 6 maps of 14 × 14", "conv2: 16 maps of 10 × 10", "pool2: 16 maps of 5 × 5"]


@pytest.fixture
def env(monkeypatch, tmp_path, cifar_dir):
    """The real data, an empty runs folder and the shipped model."""
    monkeypatch.setenv("LENET_DATA", str(cifar_dir))
    monkeypatch.setenv("LENET_RUNS", str(tmp_path / "runs"))
    monkeypatch.setenv("LENET_CHECKPOINT", str(SHIPPED))
    yield


@pytest.fixture
def run_with_epochs(env, tmp_path, monkeypatch):
    """A run folder as training leaves it: checkpoint.pt and epochs/epoch-001.pt, epoch-002.pt. Epoch 1 holds freshly
    initialised weights, epoch 2 (and the run's checkpoint) the shipped model's."""
    run = tmp_path / "run"
    (run / "epochs").mkdir(parents=True)
    _, meta = load_model(SHIPPED)
    torch.manual_seed(0)
    save_checkpoint(run / "epochs" / "epoch-001.pt", LeNet5().state_dict(), {"normalization": meta["normalization"]})
    shutil.copyfile(SHIPPED, run / "epochs" / "epoch-002.pt")
    shutil.copyfile(SHIPPED, run / "checkpoint.pt")
    monkeypatch.setenv("LENET_CHECKPOINT", str(run / "checkpoint.pt"))
    return run


def open_inside() -> AppTest:
    """The app as a browser opens it, on this page, once the dataset has loaded."""
    at = AppTest.from_file(str(APP), default_timeout=60).run()
    deadline = time.monotonic() + 60
    while _resources.dataset_service().status().busy:
        assert time.monotonic() < deadline, "the dataset did not load"
        time.sleep(0.05)
    at.switch_page("pages/inside.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def shown_image(at: AppTest, cifar) -> torch.Tensor:
    """The test image the page drew at random: the same draw, from the seed it keeps in its session."""
    chosen, seed = at.session_state["inside-pick"]
    return _resources.random_batch(cifar.test, chosen, 1, seed).images[0]


def shown_logits(at: AppTest) -> torch.Tensor:
    (table,) = [frame.value for frame in at.dataframe if "logit" in frame.value.columns]
    assert list(table["class"]) == list(CLASSES)
    return torch.tensor(table["logit"].to_numpy())


def captions(at: AppTest) -> list[str]:
    return [picture.caption for element in at.image for picture in element.proto.imgs]


def test_the_page_shows_every_layer_and_a_worked_example_with_the_networks_own_numbers(env, cifar):
    at = open_inside()
    assert [h.value for h in at.header] == ["1 · The input", "2 · Convolutions and pooling", "3 · Fully connected layers and the answer",
                                             "4 · One value, worked out by hand", "5 · Why did it say that?"]
    assert [s.value for s in at.subheader][:4] == LAYER_TITLES
    assert len(at.image) >= 20 and any(c.startswith("test image: ") for c in captions(at))
    model, meta = load_model(SHIPPED)
    image = shown_image(at, cifar)
    stages = explain.activations(model, image, meta["normalization"])
    assert torch.equal(shown_logits(at), stages["logits"])
    # The answer's class and the runner-up, each with saliency and occlusion: the model's own answer, which for a model
    # tested with its mirror images (the shipped one) averages the image's logits with its mirror's, and says so.
    ranked = stages["answer"].argsort(descending=True).tolist()
    flips_said = [i.value for i in at.info if "mirror image" in i.value]
    assert len(flips_said) == (1 if model.test_flips else 0)
    if model.test_flips:
        assert f"**{CLASSES[ranked[0]]}, {stages['answer'].max().item():.1%}**" in flips_said[0]
    assert [s.value.split(" (")[0] for s in at.subheader][4:] == [CLASSES[ranked[0]], CLASSES[ranked[1]]]
    assert {"saliency", "occlusion"} <= set(captions(at))

    example = explain.worked_example(model, image, meta["normalization"], "conv1", 0, 14, 14)
    assert f"holds **{example.map_value:.4f}** at row 14, column 14" in at.success[0].value
    assert f"{example.post_relu:.4f}" in at.latex[0].value and "75 products" in at.latex[0].value
    assert [t.label for t in at.tabs] == ["red", "green", "blue"]

    at.segmented_control(key="inside-layer").set_value("conv2").run()
    at.selectbox(key="inside-map-conv2").set_value(15)
    at.slider(key="inside-row-conv2").set_value(9)
    at.slider(key="inside-col-conv2").set_value(0).run()
    assert not at.exception
    example = explain.worked_example(model, image, meta["normalization"], "conv2", 15, 9, 0)
    assert f"conv2 map 16 holds **{example.map_value:.4f}** at row 9, column 0" in at.success[0].value
    assert "150 products" in at.latex[0].value
    assert [t.label for t in at.tabs] == [f"pool1 map {i}" for i in range(1, 7)]


def test_stretching_each_map_replaces_the_shared_scales_with_a_note(env):
    at = open_inside()
    legends = len(at.image)
    assert not any("stretched from its own" in c.value for c in at.caption)
    at.checkbox(key="inside-stretch").check().run()
    assert not at.exception
    assert sum("stretched from its own" in c.value for c in at.caption) == 4
    assert len(at.image) == legends - 4  # one legend image fewer per stage


def photo(kind: str = "PNG") -> bytes:
    image = Image.new("RGB", (300, 200), "skyblue")
    ImageDraw.Draw(image).ellipse((90, 40, 210, 160), fill="orange")
    buffer = io.BytesIO()
    image.save(buffer, kind)
    return buffer.getvalue()


def test_an_uploaded_photo_goes_through_the_layers_and_a_non_image_gets_a_message(env):
    at = open_inside()
    at.segmented_control(key="inside-source").set_value("Upload a photo").run()
    assert not at.exception and not at.header  # nothing to show until there is a photo
    at.file_uploader(key="inside-upload").set_value(("ball.png", photo(), "image/png")).run()
    assert not at.exception and not at.error
    assert "your photo, 32 × 32" in captions(at)
    assert [s.value for s in at.subheader][:4] == LAYER_TITLES
    notes = b"these are notes, not a photo"
    at.file_uploader(key="inside-upload").set_value(("notes.jpg", notes, "image/jpeg")).run()
    assert not at.exception and not at.header
    with pytest.raises(ImageError) as refused:
        load_image(notes, "notes.jpg")
    assert [e.value for e in at.error] == [str(refused.value)]  # the upload checks' own one-line message


def test_a_run_with_a_checkpoint_per_epoch_gets_an_epoch_slider_and_the_time_machine(run_with_epochs, cifar):
    at = open_inside()
    (epoch,) = [s for s in at.select_slider if s.label == "Epoch"]
    assert epoch.value == 2 and at.header[-1].value == "6 · The time machine"
    image = shown_image(at, cifar)
    shipped, meta = load_model(SHIPPED)
    assert torch.equal(shown_logits(at), explain.activations(shipped, image, meta["normalization"])["logits"])
    assert len(at.get("vega_lite_chart")) == 2  # the probabilities, and the panel's true class through the epochs
    assert "what epoch 2 says (green: right)" in captions(at)

    epoch.set_value(1).run()
    assert not at.exception
    first, meta = load_model(run_with_epochs / "epochs" / "epoch-001.pt")
    assert torch.equal(shown_logits(at), explain.activations(first, image, meta["normalization"])["logits"])
    assert "what epoch 1 says (green: right)" in captions(at)
