"""Checkpoints: they round-trip, never run code when read, refuse anything that is not LeNet-5 on CIFAR-10, and are written atomically.

The walkthrough's bare state_dict loads too (from a file or from memory), with its preprocessing assumed and said.
"""

import io
import os
import pickle
import threading
import zipfile

import pytest
import torch

from lenet.checkpoint import (
    FORMAT,
    MAX_CHECKPOINT_BYTES,
    CheckpointError,
    atomic_write,
    default_checkpoint,
    load_checkpoint,
    load_model,
    load_model_bytes,
    probe_images,
    save_checkpoint,
    validate_training,
)
from lenet.data import CIFAR10_NORMALIZATION, CLASSES, WALKTHROUGH_NORMALIZATION
from lenet.inference import normalize, predict_logits
from lenet.model import LeNet5
from lenet.train import make_optimizer, preset


def _trained(cifar, steps: int = 5):
    """A LeNet-5 after a few real SGD steps on CIFAR-10 images, and its optimizer (with momentum buffers)."""
    torch.manual_seed(0)
    model = LeNet5()
    config = preset("quick")
    optimizer = make_optimizer(config, model)
    for i in range(steps):
        images = cifar.train.images[i * 32 : (i + 1) * 32]
        labels = cifar.train.labels[i * 32 : (i + 1) * 32]
        loss = torch.nn.functional.cross_entropy(model(normalize(images, CIFAR10_NORMALIZATION)), labels)
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return model.eval(), optimizer


def _save(path, state=None, **meta):
    meta.setdefault("normalization", WALKTHROUGH_NORMALIZATION)
    save_checkpoint(path, state if state is not None else LeNet5().state_dict(), meta)
    return path


@pytest.fixture
def good_checkpoint(tmp_path):
    return _save(tmp_path / "good.pt")


# -- round trip ----------------------------------------------------------------------------------------------


def test_round_trip_gives_the_same_outputs_on_real_test_images_and_keeps_the_metadata(tmp_path, cifar, one_thread):
    model, optimizer = _trained(cifar)
    path = tmp_path / "run" / "model.pt"  # the folder does not exist yet
    recipe = preset("quick").to_dict()
    save_checkpoint(path, model.state_dict(), {"normalization": CIFAR10_NORMALIZATION, "recipe": recipe, "metrics": {"step": 5}},
                    {"optimizer": optimizer.state_dict(), "step": 5, "train_seconds": 1.5})

    loaded, meta = load_model(path)
    images = cifar.test.images[::50]  # 200 real test images, every class
    expected = predict_logits(model, images, CIFAR10_NORMALIZATION)
    assert torch.equal(predict_logits(loaded, images, meta["normalization"]), expected)
    assert not loaded.training

    assert meta["classes"] == list(CLASSES)
    assert meta["normalization"] == CIFAR10_NORMALIZATION
    assert meta["recipe"] == recipe and meta["metrics"] == {"step": 5}
    assert set(meta["versions"]) == {"python", "torch", "torchvision"}
    assert all(type(v) is str and v for v in meta["versions"].values())  # plain strings, not TorchVersion objects
    assert meta["versions"]["torch"] == str(torch.__version__)

    entry = load_checkpoint(path)
    assert entry["format"] == FORMAT
    assert entry["training"]["step"] == 5
    restored = make_optimizer(preset("quick"), LeNet5())
    restored.load_state_dict(entry["training"]["optimizer"])  # the momentum buffers come back too
    buffers = [s["momentum_buffer"] for s in entry["training"]["optimizer"]["state"].values()]
    assert len(buffers) == 10 and all(torch.isfinite(b).all() and b.abs().sum() > 0 for b in buffers)


# -- loading never executes code -----------------------------------------------------------------------------


class _Payload:
    """Unpickling this runs a shell command."""

    def __init__(self, command: str):
        self.command = command

    def __reduce__(self):
        return os.system, (self.command,)


def _malicious_entry(marker):
    """A checkpoint that looks right on the outside, with code hidden in its metadata."""
    return {"format": FORMAT, "model": LeNet5().state_dict(),
            "meta": {"classes": list(CLASSES), "normalization": WALKTHROUGH_NORMALIZATION, "note": _Payload(f"touch {marker}")}}


WRITERS = {
    "torch.save": lambda entry, path: torch.save(entry, path),
    "torch.save legacy": lambda entry, path: torch.save(entry, path, _use_new_zipfile_serialization=False),
    "pickle": lambda entry, path: path.write_bytes(pickle.dumps(entry)),
    "bare payload": lambda entry, path: path.write_bytes(pickle.dumps(entry["meta"]["note"])),
}


def test_the_malicious_payload_is_real(tmp_path):
    # The control for the test below: an ordinary unpickling of the very same file does run the command.
    marker = tmp_path / "control-ran"
    path = tmp_path / "evil.pt"
    WRITERS["torch.save"](_malicious_entry(marker), path)
    torch.load(path, weights_only=False)
    assert marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")  # torch's remark on the plain pickles
@pytest.mark.parametrize("writer", WRITERS)
def test_loading_a_malicious_checkpoint_refuses_it_without_running_anything(tmp_path, writer):
    marker = tmp_path / "pwned"
    path = tmp_path / "model.pt"
    WRITERS[writer](_malicious_entry(marker), path)
    for load in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError) as caught:
            load(path)
        assert str(path) in str(caught.value)
    assert not marker.exists()


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("writer", WRITERS)
def test_a_refused_pickle_says_why_in_one_line_and_never_advises_the_unsafe_load(tmp_path, writer):
    path = tmp_path / "model.pt"
    WRITERS[writer](_malicious_entry(tmp_path / "pwned"), path)
    with pytest.raises(CheckpointError) as caught:
        load_checkpoint(path)
    message = str(caught.value)
    assert "\n" not in message and len(message) < 400
    assert "weights_only" not in message and "False" not in message  # torch's advice to load it unsafely is not passed on
    if writer.startswith("torch.save"):
        assert "code" in message and "system" in message  # names what it tried to load


# -- everything that is not LeNet-5 on CIFAR-10 --------------------------------------------------------------


def _other_architecture():
    state = LeNet5().state_dict()
    state["conv1.weight"], state["conv1.bias"] = torch.randn(12, 3, 5, 5), torch.randn(12)
    state["conv2.weight"] = torch.randn(16, 12, 5, 5)
    return state


def _nan_weights():
    state = LeNet5().state_dict()
    state["fc2.weight"][3, 7] = float("nan")
    return state


def _inf_bias():
    state = LeNet5().state_dict()
    state["conv2.bias"][0] = float("inf")
    return state


def _extra_layer():
    return {**LeNet5().state_dict(), "fc4.weight": torch.zeros(10, 10)}


def _missing_layer():
    state = LeNet5().state_dict()
    del state["fc3.bias"]
    return state


def _eleven_classes():
    return LeNet5(num_classes=11).state_dict()


BAD_WEIGHTS = {
    "conv1 with 12 channels": (_other_architecture, "conv1.weight"),
    "eleven outputs": (_eleven_classes, "fc3"),
    "NaN weights": (_nan_weights, "fc2.weight.*NaN"),
    "infinite bias": (_inf_bias, "conv2.bias"),
    "an extra layer": (_extra_layer, "fc4.weight"),
    "a missing layer": (_missing_layer, "fc3.bias"),
}


@pytest.mark.parametrize("case", BAD_WEIGHTS)
def test_weights_that_are_not_lenet5s_are_refused(tmp_path, case):
    make, complaint = BAD_WEIGHTS[case]
    path = _save(tmp_path / "model.pt", make())
    with pytest.raises(CheckpointError, match=complaint) as caught:
        load_model(path)
    assert str(path) in str(caught.value)


BAD_META = {
    "other classes": ({"classes": ["cat", "dog"]}, "classes"),
    "reordered classes": ({"classes": list(reversed(CLASSES))}, "classes"),
    "no normalization": ({"normalization": None}, "normalization"),
    "two channels": ({"normalization": {"mean": [0.5, 0.5], "std": [0.5, 0.5]}}, "normalization"),
    "zero std": ({"normalization": {"mean": [0.5] * 3, "std": [0.5, 0.0, 0.5]}}, "normalization"),
    "negative std": ({"normalization": {"mean": [0.5] * 3, "std": [0.5, -0.5, 0.5]}}, "normalization"),
    "NaN mean": ({"normalization": {"mean": [0.5, float("nan"), 0.5], "std": [0.5] * 3}}, "normalization"),
    "strings": ({"normalization": {"mean": ["0.5"] * 3, "std": [0.5] * 3}}, "normalization"),
    "no std": ({"normalization": {"mean": [0.5] * 3}}, "normalization"),
}


@pytest.mark.parametrize("case", BAD_META)
def test_metadata_for_other_classes_or_without_a_sound_normalization_is_refused(tmp_path, case):
    meta, complaint = BAD_META[case]
    path = _save(tmp_path / "model.pt", **meta)
    with pytest.raises(CheckpointError, match=complaint) as caught:
        load_model(path)
    assert str(path) in str(caught.value)


def test_a_missing_normalization_key_is_refused(tmp_path):
    path = tmp_path / "model.pt"
    save_checkpoint(path, LeNet5().state_dict(), {})
    with pytest.raises(CheckpointError, match="normalization"):
        load_checkpoint(path)


def test_other_torch_files_are_refused(tmp_path):
    cases = {
        "wrapped-state-dict.pt": {"model_state_dict": LeNet5().state_dict(), "epoch": 3},  # no format, not a bare state_dict
        "other-format.pt": {"format": "resnet/1", "model": LeNet5().state_dict(), "meta": {}},
        "no-meta.pt": {"format": FORMAT, "model": LeNet5().state_dict()},
        "a-list.pt": [1, 2, 3],
        "a-tensor.pt": torch.zeros(3),
        "string-weights.pt": {"format": FORMAT, "model": {k: "x" for k in LeNet5().state_dict()},
                              "meta": {"classes": list(CLASSES), "normalization": WALKTHROUGH_NORMALIZATION}},
    }
    for name, value in cases.items():
        path = tmp_path / name
        torch.save(value, path)
        with pytest.raises(CheckpointError) as caught:
            load_checkpoint(path)
        assert str(path) in str(caught.value), name


def _truncated(good, path):
    data = good.read_bytes()
    path.write_bytes(data[: len(data) // 2])


def _too_large(good, path):
    with open(path, "wb") as f:
        f.write(good.read_bytes())
        f.truncate(MAX_CHECKPOINT_BYTES + 1)  # sparse: costs no disk


NOT_CHECKPOINTS = {
    "truncated": (_truncated, "not a readable"),
    "text": (lambda good, path: path.write_text("just some notes, not weights\n"), "not a readable"),
    "random bytes": (lambda good, path: path.write_bytes(os.urandom(5000)), "not a readable"),
    "empty": (lambda good, path: path.write_bytes(b""), "not a readable"),
    "missing": (lambda good, path: None, "no such"),
    "a folder": (lambda good, path: path.mkdir(), "no such"),
    "too large": (_too_large, "too large"),
}


@pytest.mark.parametrize("case", NOT_CHECKPOINTS)
def test_files_that_are_not_checkpoints_are_refused_with_their_path(tmp_path, good_checkpoint, case):
    make, complaint = NOT_CHECKPOINTS[case]
    path = tmp_path / "suspect.pt"
    make(good_checkpoint, path)
    for load in (load_checkpoint, load_model):
        with pytest.raises(CheckpointError, match=complaint) as caught:
            load(path)
        message = str(caught.value)
        assert str(path) in message and "\n" not in message and len(message) < 500


def test_the_good_checkpoint_those_are_made_from_loads(good_checkpoint):
    # The control for the test above: the same file, untouched, is a checkpoint.
    model, meta = load_model(good_checkpoint)
    assert isinstance(model, LeNet5) and meta["normalization"] == WALKTHROUGH_NORMALIZATION


# -- atomic writes -------------------------------------------------------------------------------------------


def test_atomic_write_leaves_only_the_target(tmp_path):
    target = tmp_path / "sub" / "status.json"
    atomic_write(target, lambda tmp: tmp.write_text("one"))
    atomic_write(target, lambda tmp: tmp.write_text("two"))
    assert target.read_text() == "two"
    assert sorted(p.name for p in target.parent.iterdir()) == ["status.json"]


@pytest.mark.parametrize("wrote_before_failing", [False, True])
def test_a_failing_writer_keeps_the_old_file_and_leaves_no_temporary(tmp_path, wrote_before_failing):
    target = tmp_path / "metrics.json"
    target.write_text("old content")

    def writer(tmp):
        if wrote_before_failing:
            tmp.write_text("half of the new")
        raise RuntimeError("disk full")

    with pytest.raises(RuntimeError, match="disk full"):
        atomic_write(target, writer)
    assert target.read_text() == "old content"
    assert [p.name for p in tmp_path.iterdir()] == ["metrics.json"]


def test_a_failing_first_write_creates_nothing(tmp_path):
    target = tmp_path / "checkpoint.pt"
    with pytest.raises(ValueError):
        atomic_write(target, lambda tmp: (tmp.write_bytes(b"partial"), int("not a number")))
    assert list(tmp_path.iterdir()) == []


def test_save_checkpoint_that_fails_keeps_the_previous_checkpoint(tmp_path, good_checkpoint):
    before = good_checkpoint.read_bytes()
    with pytest.raises(Exception):  # noqa: B017 - torch refuses to pickle a lambda; which error does not matter
        save_checkpoint(good_checkpoint, LeNet5().state_dict(), {"normalization": WALKTHROUGH_NORMALIZATION, "bad": lambda: 0})
    assert good_checkpoint.read_bytes() == before
    assert [p.name for p in tmp_path.iterdir()] == [good_checkpoint.name]
    load_model(good_checkpoint)


def test_threads_writing_one_file_at_once_never_leave_it_half_written(tmp_path):
    # A server writes from several threads (status from a training thread, exports from sessions).
    target = tmp_path / "shared.txt"
    contents = [str(i) * 200_000 for i in range(8)]  # each large enough that a write is not instant
    errors = []

    def write_many(text):
        try:
            for _ in range(5):
                atomic_write(target, lambda tmp: tmp.write_text(text))
        except Exception as error:  # noqa: BLE001 - collected and reported below
            errors.append(error)

    threads = [threading.Thread(target=write_many, args=(c,)) for c in contents]
    for t in threads:
        t.start()
    seen = set()
    while any(t.is_alive() for t in threads):
        if target.exists():
            seen.add(target.read_text())
    for t in threads:
        t.join()
    assert errors == []
    assert target.read_text() in contents
    assert seen <= set(contents)  # readers only ever saw one whole content
    assert [p.name for p in tmp_path.iterdir()] == ["shared.txt"]


# -- the walkthrough's plain state_dict, from a file or from memory ------------------------------------------


def test_a_bare_state_dict_loads_with_the_walkthroughs_preprocessing_assumed_and_said(tmp_path, cifar, one_thread):
    model, _ = _trained(cifar)
    path = tmp_path / "cifar_net.pth"
    torch.save(model.state_dict(), path)  # the walkthrough's own save: no format, no metadata

    loaded, meta = load_model(path)
    assert meta["source"] == "state_dict" and "walkthrough" in meta["assumed"] and "0.5" in meta["assumed"]
    assert meta["normalization"] == WALKTHROUGH_NORMALIZATION and meta["classes"] == list(CLASSES)
    images = cifar.test.images[::100]
    assert torch.equal(predict_logits(loaded, images, meta["normalization"]), predict_logits(model, images, WALKTHROUGH_NORMALIZATION))
    entry = load_checkpoint(path)
    assert entry["format"] == FORMAT and "training" not in entry


def test_a_checkpoint_loads_from_bytes_and_from_file_objects_as_from_its_path(tmp_path, cifar, one_thread):
    model, optimizer = _trained(cifar)
    path = tmp_path / "model.pt"
    save_checkpoint(path, model.state_dict(), {"normalization": CIFAR10_NORMALIZATION, "recipe": preset("quick").to_dict()},
                    {"optimizer": optimizer.state_dict(), "step": 5})
    images = cifar.test.images[::100]
    expected = predict_logits(model, images, CIFAR10_NORMALIZATION)
    with open(path, "rb") as f:
        sources = {"bytes": lambda: load_model_bytes(path.read_bytes(), "upload.pt"),
                   "BytesIO": lambda: load_model(io.BytesIO(path.read_bytes()), name="upload.pt"),
                   "open file": lambda: load_model(f)}
        for how, load in sources.items():
            loaded, meta = load()
            assert torch.equal(predict_logits(loaded, images, meta["normalization"]), expected), how
    assert load_checkpoint(path.read_bytes())["training"]["step"] == 5


def _bytes_of(value) -> bytes:
    buffer = io.BytesIO()
    torch.save(value, buffer)
    return buffer.getvalue()


def _malicious_bytes(marker):
    return _bytes_of(_malicious_entry(marker))


UPLOADS = {
    "a pickle with code": (lambda marker: _malicious_bytes(marker), "code or objects other than weights.*system"),
    "a plain pickle with code": (lambda marker: pickle.dumps(_Payload(f"touch {marker}")), "refused unread.*system"),
    "another network": (lambda marker: _bytes_of(_other_architecture()), "conv1.weight has shape"),
    "another network's layers": (lambda marker: _bytes_of({"features.0.weight": torch.zeros(3), "classifier.weight": torch.zeros(2)}),
                                 "not LeNet-5's.*unexpected layers.*features.0.weight"),
    "a truncated file": (lambda marker: _bytes_of(LeNet5().state_dict())[:30_000], "damaged or truncated"),
    "NaN weights": (lambda marker: _bytes_of(_nan_weights()), "fc2.weight holds NaN"),
    "a text file": (lambda marker: b"conv1.weight = [0.1, 0.2]\n", "not a file torch.save writes"),
    "a JPEG photo": (lambda marker: b"\xff\xd8\xff\xe0" + os.urandom(2000), "not a file torch.save writes"),
    "nothing": (lambda marker: b"", "empty"),
    "too many bytes": (lambda marker: bytes(MAX_CHECKPOINT_BYTES + 1), "far too large"),
}


@pytest.mark.filterwarnings("ignore:Detected pickle protocol")
@pytest.mark.parametrize("case", UPLOADS)
def test_an_upload_that_is_not_a_lenet5_is_refused_in_one_line_naming_it_and_runs_nothing(tmp_path, case):
    make, complaint = UPLOADS[case]
    marker = tmp_path / "pwned"
    with pytest.raises(CheckpointError, match=complaint) as caught:
        load_model_bytes(make(marker), "photo-or-model.pth")
    message = str(caught.value)
    assert message.startswith("photo-or-model.pth: ") and "\n" not in message and len(message) < 400
    assert "weights_only" not in message
    assert not marker.exists()
    assert list(tmp_path.iterdir()) == []  # nothing written to disk


def test_the_upload_of_the_very_same_model_loads(tmp_path):
    # The control for the test above: a well-formed state_dict upload loads, so the refusals above are about content.
    model, meta = load_model_bytes(_bytes_of(LeNet5().state_dict()), "photo-or-model.pth")
    assert isinstance(model, LeNet5) and meta["source"] == "state_dict"


# -- size, tensors and answers --------------------------------------------------------------------------------


def _rezip_deflated(data: bytes) -> bytes:
    """The same archive with every entry compressed: what a hostile file does to look small."""
    out = io.BytesIO()
    with zipfile.ZipFile(io.BytesIO(data)) as source, zipfile.ZipFile(out, "w", zipfile.ZIP_DEFLATED) as target:
        for info in source.infolist():
            target.writestr(info.filename, source.read(info.filename))
    return out.getvalue()


def test_a_compressed_bomb_is_refused_from_its_zip_directory_before_loading(tmp_path):
    state = {**LeNet5().state_dict(), "fc1.weight": torch.zeros(2**23)}  # 32 MB of zeros, deflated to a few KB
    path = tmp_path / "small.pth"
    path.write_bytes(_rezip_deflated(_bytes_of(state)))
    assert path.stat().st_size < 100_000 < MAX_CHECKPOINT_BYTES  # the file itself passes the size check
    with pytest.raises(CheckpointError, match="unpacks to 32 MB.*before loading") as caught:
        load_model(path)
    assert str(path) in str(caught.value)


def test_a_deflated_archive_of_the_right_size_is_read(tmp_path):
    # The control: torch does read deflated archives, so the refusal above is the size guard's, not a format error.
    path = tmp_path / "deflated.pth"
    path.write_bytes(_rezip_deflated(_bytes_of(LeNet5().state_dict())))
    model, meta = load_model(path)
    assert isinstance(model, LeNet5) and meta["source"] == "state_dict"


def _tensor_case(change):
    def make():
        state = LeNet5().state_dict()
        change(state)
        return state
    return make


BAD_TENSORS = {
    "meta device": (_tensor_case(lambda s: s.update({"conv1.weight": torch.empty(6, 3, 5, 5, device="meta")})),
                    "conv1.weight is on the meta device"),
    "sparse": (_tensor_case(lambda s: s.update({"fc1.weight": s["fc1.weight"].to_sparse()})), "fc1.weight is a sparse_coo tensor"),
    "float64": (_tensor_case(lambda s: s.update({"fc2.bias": s["fc2.bias"].double()})), "fc2.bias is float64"),
    "float16": (_tensor_case(lambda s: s.update({"conv2.weight": s["conv2.weight"].half()})), "conv2.weight is float16"),
    "int64": (_tensor_case(lambda s: s.update({"fc3.bias": torch.zeros(10, dtype=torch.int64)})), "fc3.bias is int64"),
}


@pytest.mark.parametrize("case", BAD_TENSORS)
@pytest.mark.parametrize("as_checkpoint", [False, True], ids=["state_dict", "checkpoint"])
def test_weights_that_are_not_dense_float32_tensors_are_refused_with_what_they_are(tmp_path, case, as_checkpoint):
    make, complaint = BAD_TENSORS[case]
    path = tmp_path / "model.pt"
    if as_checkpoint:  # written as save_checkpoint would, without its copy (which cannot copy a meta tensor)
        torch.save({"format": FORMAT, "model": make(), "meta": {"classes": list(CLASSES), "normalization": WALKTHROUGH_NORMALIZATION}},
                   path)
    else:
        torch.save(make(), path)
    with pytest.raises(CheckpointError, match=complaint) as caught:
        load_model(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


def _shipped_state():
    return load_checkpoint(default_checkpoint())["model"]


def test_finite_weights_with_infinite_answers_are_refused(tmp_path):
    state = _shipped_state()
    state["fc3.weight"] = state["fc3.weight"] * 3e37
    assert all(torch.isfinite(t).all() for t in state.values())  # every weight is a finite float32
    path = _save(tmp_path / "huge.pt", state, normalization=CIFAR10_NORMALIZATION)
    with pytest.raises(CheckpointError, match="answers are not finite") as caught:
        load_model(path)
    assert str(path) in str(caught.value)


def test_a_tiny_std_that_divides_to_infinity_is_refused(tmp_path):
    path = _save(tmp_path / "tiny-std.pt", _shipped_state(), normalization={"mean": [0.5] * 3, "std": [1e-300] * 3})
    with pytest.raises(CheckpointError, match="answers are not finite"):
        load_model(path)


def test_the_shipped_weights_those_are_made_from_load(tmp_path):
    # The control for the two tests above: unscaled weights and a sound std answer in finite numbers.
    model, _ = load_model(_save(tmp_path / "fine.pt", _shipped_state(), normalization=CIFAR10_NORMALIZATION))
    assert torch.isfinite(predict_logits(model, probe_images(), CIFAR10_NORMALIZATION)).all()


def test_top_level_entries_outside_the_format_are_refused(tmp_path):
    path = tmp_path / "model.pt"
    torch.save({"format": FORMAT, "model": LeNet5().state_dict(), "meta": {"classes": list(CLASSES),
                "normalization": WALKTHROUGH_NORMALIZATION}, "hooks": [1, 2]}, path)
    with pytest.raises(CheckpointError, match="unexpected entries hooks"):
        load_model(path)


# -- the training state a resume reads ------------------------------------------------------------------------


def _training_state(cifar, optimizer_name: str) -> dict:
    torch.manual_seed(0)
    model = LeNet5()
    optimizer = make_optimizer(preset("quick", optimizer=optimizer_name), model)
    for i in range(2):
        loss = torch.nn.functional.cross_entropy(model(normalize(cifar.train.images[i * 8 : (i + 1) * 8], CIFAR10_NORMALIZATION)),
                                                 cifar.train.labels[i * 8 : (i + 1) * 8])
        optimizer.zero_grad()
        loss.backward()
        optimizer.step()
    return {"optimizer": optimizer.state_dict(), "step": 2, "train_seconds": 0.5, "running_loss": loss.item(), "running_count": 2}


@pytest.mark.parametrize("optimizer_name", ["sgd", "adam", "adamw", "muon"])
def test_real_training_states_pass_and_resume_into_the_optimizer(tmp_path, cifar, optimizer_name, one_thread):
    training = _training_state(cifar, optimizer_name)
    path = tmp_path / "run.pt"
    save_checkpoint(path, LeNet5().state_dict(), {"normalization": CIFAR10_NORMALIZATION,
                    "recipe": preset("quick", optimizer=optimizer_name).to_dict()}, training)
    entry = load_checkpoint(path)
    validate_training(entry["training"], optimizer=optimizer_name)
    model = LeNet5()
    model.load_state_dict(entry["model"])
    optimizer = make_optimizer(preset("quick", optimizer=optimizer_name), model)
    optimizer.load_state_dict(entry["training"]["optimizer"])
    model(normalize(cifar.train.images[:8], CIFAR10_NORMALIZATION)).sum().backward()
    optimizer.step()  # what a resume does next


def _edit(change):
    def make(training):
        change(training)
        return training
    return make


def _first_state(training):
    return training["optimizer"]["state"][0]


BAD_TRAINING = {
    "step as text": (_edit(lambda t: t.update(step="5")), "step must be a whole number"),
    "negative step": (_edit(lambda t: t.update(step=-1)), "step must be a whole number"),
    "step as a flag": (_edit(lambda t: t.update(step=True)), "step must be a whole number"),
    "absurd step": (_edit(lambda t: t.update(step=10**12)), "step must be a whole number"),
    "no step": (_edit(lambda t: t.pop("step")), "lacks its 'step'"),
    "no optimizer": (_edit(lambda t: t.pop("optimizer")), "lacks its 'optimizer'"),
    "optimizer as a list": (_edit(lambda t: t.update(optimizer=[1, 2])), "not an optimizer state"),
    "NaN seconds": (_edit(lambda t: t.update(train_seconds=float("nan"))), "train_seconds must be a finite number"),
    "negative seconds": (_edit(lambda t: t.update(train_seconds=-3.0)), "train_seconds must be a finite number of at least 0"),
    "infinite loss": (_edit(lambda t: t.update(running_loss=float("inf"))), "running_loss must be a finite number"),
    "fractional count": (_edit(lambda t: t.update(running_count=1.5)), "running_count must be a whole number"),
    "an unknown entry": (_edit(lambda t: t.update(scaler={})), "unexpected entries scaler"),
    "another network's groups": (_edit(lambda t: t["optimizer"]["param_groups"][0].update(params=[0, 1, 2])), "two parameter groups"),
    "lr as text": (_edit(lambda t: t["optimizer"]["param_groups"][1].update(lr="fast")), "setting 'lr'"),
    "NaN momentum": (_edit(lambda t: t["optimizer"]["param_groups"][0].update(momentum=float("nan"))), "setting 'momentum'"),
    "a buffer of the wrong shape": (_edit(lambda t: _first_state(t).update(momentum_buffer=torch.zeros(3))), "has shape \\(3,\\)"),
    "a NaN buffer": (_edit(lambda t: _first_state(t)["momentum_buffer"].fill_(float("nan"))), "holds NaN"),
    "a float64 buffer": (_edit(lambda t: _first_state(t).update(momentum_buffer=_first_state(t)["momentum_buffer"].double())),
                         "is float64"),
    "state for parameter 12": (_edit(lambda t: t["optimizer"]["state"].update({12: {}})), "holds state for 12"),
    "Adam's state for SGD": (_edit(lambda t: _first_state(t).update(exp_avg=torch.zeros(6, 3, 5, 5))), "recipe's optimizer 'sgd'"),
}


@pytest.mark.parametrize("case", BAD_TRAINING)
def test_a_training_state_that_would_break_a_resume_is_refused(tmp_path, cifar, case, one_thread):
    change, complaint = BAD_TRAINING[case]
    path = tmp_path / "run.pt"
    save_checkpoint(path, LeNet5().state_dict(), {"normalization": CIFAR10_NORMALIZATION, "recipe": preset("quick").to_dict()},
                    change(_training_state(cifar, "sgd")))
    with pytest.raises(CheckpointError, match=complaint) as caught:
        load_checkpoint(path)
    assert str(path) in str(caught.value) and "\n" not in str(caught.value)


@pytest.mark.parametrize("state_of, recipe_of, complaint", [
    ("muon", "sgd", "two parameter groups \\(weights 0-4, biases 5-9\\)"),
    ("sgd", "muon", "three parameter groups \\(weights 0-2, biases 3-7, Muon's weights 8-9\\)"),
])
def test_a_training_state_of_another_optimizers_groups_is_refused(tmp_path, cifar, state_of, recipe_of, complaint, one_thread):
    path = tmp_path / "run.pt"
    save_checkpoint(path, LeNet5().state_dict(), {"normalization": CIFAR10_NORMALIZATION,
                    "recipe": preset("quick", optimizer=recipe_of).to_dict()}, _training_state(cifar, state_of))
    with pytest.raises(CheckpointError, match=complaint):
        load_checkpoint(path)
    validate_training(_training_state(cifar, state_of))  # with no recipe to say, either layout is LeNet-5's


def test_validate_training_refuses_what_is_not_a_dict():
    with pytest.raises(CheckpointError, match="not a dict"):
        validate_training([("step", 5)], "run.pt")


def test_a_model_tested_with_flips_predicts_with_them_once_loaded(tmp_path, cifar, one_thread):
    model, _ = _trained(cifar, steps=20)
    images = cifar.test.images[::25]
    for recipe, expected in ((preset("best").to_dict(), True), (preset("quick").to_dict(), False), (None, False)):
        meta = {"normalization": CIFAR10_NORMALIZATION} | ({"recipe": recipe} if recipe else {})
        path = _save(tmp_path / f"{expected}-{recipe is None}.pt", model.state_dict(), **meta)
        loaded, meta = load_model(path)
        assert loaded.test_flips is expected
        alone = predict_logits(model, images, CIFAR10_NORMALIZATION)
        mirrored = predict_logits(model, images.flip(3), CIFAR10_NORMALIZATION)
        torch.testing.assert_close(predict_logits(loaded, images, meta["normalization"]), (alone + mirrored) / 2 if expected else alone)
