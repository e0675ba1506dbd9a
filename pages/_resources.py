"""The server's shared things, made once per server with st.cache_resource: the dataset, the run registry, models and
their evaluations, and the widgets that pick them.

Each is keyed by what identifies it (a folder, a checkpoint's path and modification time), so every browser session
of one server shares one dataset, one registry and one copy of each model, and a changed setting or file gives a
fresh one. Long work never runs in a script run: the dataset service and the registry do it in the background, and
pages poll them with fragments.
"""

import gc
import hashlib
import importlib.util
import json
import re
import threading
import time
from collections import OrderedDict
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch
from PIL import Image

from lenet import export
from lenet.checkpoint import MAX_CHECKPOINT_BYTES, CheckpointError, default_checkpoint, load_model, load_model_bytes
from lenet.data import CIFAR10, CLASSES, Split, default_data_dir
from lenet.evaluate import Evaluation, evaluate
from lenet.files import runs_dir
from lenet.predict import (
    ImageError,
    ModelError,
    Prediction,
    classify_image,
    classify_pixels,
    limit_malloc_arenas,
    load_image,
    release_memory,
)
from lenet.runs import RunRegistry, RunSnapshot
from lenet.service import ABSENT, ERROR, DatasetService
from lenet.train import default_threads
from pages._format import percent
from pages._i18n import N_, _, class_name, engine_text
from pages._router import link

ANY = N_("any class")
NO_MODEL = N_(
    "No pretrained model yet: train one on the Train page or run "
    "`python -m lenet train --preset best --export assets/lenet5-cifar10.pt`."
)
MODEL_UPLOAD_TYPES = ["pth", "pt"]
UPLOADED_MODELS = "uploaded-models"  # session state: sha256 -> LoadedModel, this browser session's own models
MAX_UPLOADED_MODELS = 4  # per session; the oldest goes first (each is 250 KB of weights)
STATE_DICT_ASSUMED = N_(
    "This is a plain `state_dict` without metadata, as the walkthrough saves it: its preprocessing was assumed "
    "(`ToTensor`, then `Normalize` with mean 0.5 and std 0.5), and CIFAR-10's class order."
)
TEST_FLIPS = N_(
    "This model answers from each image and its mirror image together (test-time flips: the two sets of logits are "
    "averaged), as it was tested: the app's evaluation and answers, its ONNX file and its script all predict that way."
)
SESSION_PHOTOS = 2  # decoded photos kept per browser session (Classify's and Inside's), each at most 1024 px a side
MEMORY_SWEEP_SECONDS = 15  # see .streamlit/config.toml's runner section
TRAINING_NICENESS = 10  # the training process yields the CPU to page rendering (os.nice)


# -- the dataset -----------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def memory_sweeper() -> threading.Thread:
    """One thread per server: closed sessions' uploads dropped, a full garbage collection, then freed memory back to
    the system, every MEMORY_SWEEP_SECONDS (a tenth of a second or so each time, instead of after every script run)."""

    def sweep() -> None:
        while True:
            time.sleep(MEMORY_SWEEP_SECONDS)
            shut_down_forgotten_sessions()
            gc.collect()
            release_memory()

    limit_malloc_arenas()  # the script threads of sessions to come share two arenas
    thread = threading.Thread(target=sweep, name="memory-sweeper", daemon=True)
    thread.start()
    return thread


def shut_down_forgotten_sessions() -> int:
    """Streamlit (1.67) keeps a closed tab's session for server.disconnectedSessionTTL seconds, then forgets it without
    shutting it down, so the files uploaded in it stay in the server's memory for good (121 MB after the stress
    suite's 30 sessions). Shut such sessions down as Streamlit shuts down a session it closes, and drop the uploads of
    any session it no longer knows; the number of sessions dropped. Streamlit's private parts: should they change,
    this does nothing rather than fail."""
    try:
        from streamlit.runtime import Runtime

        runtime = Runtime.instance()
        sessions, uploads, media = runtime._session_mgr, runtime.uploaded_file_mgr, runtime.media_file_mgr
        with sessions._storage_lock:  # the lock Streamlit's own reconnects and disconnects take around the storage
            # Sessions holding uploads first: one that connects after this is not among them, so its files stay.
            holders = list(uploads.file_storage)
            expired = sessions._session_storage._cache.expire()
            known = {info.session.id for info in sessions.list_sessions()}
        for _session_id, info in expired:
            info.session.shutdown()
        forgotten = [session_id for session_id in holders if session_id not in known]
        for session_id in forgotten:
            uploads.remove_session_files(session_id)
            media.clear_session_refs(session_id)
        media.remove_orphaned_files()
        return len(expired) + len(forgotten)
    except Exception:  # noqa: BLE001 - another Streamlit: its own clean-up only
        return 0


@st.cache_resource(show_spinner=False)
def _dataset_service(data_dir: str) -> DatasetService:
    service = DatasetService(data_dir)
    service.start_loading()
    return service


def dataset_service() -> DatasetService:
    """The server's dataset service for LENET_DATA (else ./data); it starts loading in the background at once."""
    memory_sweeper()  # every page asks for the dataset service: the sweeper starts with the first of them
    return _dataset_service(str(default_data_dir()))


def require_data(offer_download: bool = False) -> CIFAR10 | None:
    """The dataset when it is loaded; otherwise None, after saying where it stands and what to do."""
    service = dataset_service()
    data = service.get()
    if data is None:
        dataset_status(service, offer_download)
    return data


def class_labels() -> list[str]:
    """Every class as the pages call it (pages._i18n.class_name), in CLASSES order: for charts."""
    return [class_name(index) for index in range(len(CLASSES))]


def dataset_status(service: DatasetService, offer_download: bool) -> None:
    status = service.status()
    if status.busy:
        _dataset_progress()
        return
    if status.state == ERROR:
        st.error(engine_text(status.message), icon=":material/cloud_off:")
    else:
        st.info(engine_text(status.message), icon=":material/folder_off:")
    if not offer_download:
        link("dataset", _("Get CIFAR-10 on the Dataset page"))
        return
    with st.container(horizontal=True):
        st.button(_("Download CIFAR-10 (170 MB)"), icon=":material/download:", type="primary", on_click=service.start_download)
        if status.state in (ABSENT, ERROR):
            st.button(_("Look in the folder again"), icon=":material/refresh:", on_click=service.start_loading)


@st.fragment(run_every=1.0)
def _dataset_progress() -> None:
    """Redrawn every second while the dataset loads or downloads; reruns the whole page once it is done."""
    status = dataset_service().status()
    if not status.busy:
        st.rerun()
    if status.fraction is not None:
        st.progress(status.fraction, text=engine_text(status.message))
    else:
        st.info(engine_text(status.message), icon=":material/hourglass_top:")


# -- runs and models -------------------------------------------------------------------------------


# Released (st.cache_resource.clear(), or a test between its apps), a registry stops its run and lets its warm
# training process go: each holds ~700 MB of torch.
@st.cache_resource(show_spinner=False, on_release=RunRegistry.close)
def _registry(runs_dir: str, data_dir: str) -> RunRegistry:
    service = _dataset_service(data_dir)
    # Every core trains; the training process runs at a lower priority (nice), so pages still answer at once.
    return RunRegistry(runs_dir, load_data=service.wait, threads=default_threads(), data_source=str(Path(data_dir).resolve()),
                       data_dir=data_dir, nice=TRAINING_NICENESS, warm=True)


def registry() -> RunRegistry:
    """The server's run registry for LENET_RUNS (else ./runs): at most one training, shared by every session."""
    memory_sweeper()
    return _registry(str(runs_dir()), str(default_data_dir()))


@dataclass
class LoadedModel:
    path: Path  # the checkpoint file; for an upload, a name that is no file (see uploaded_model)
    model: torch.nn.Module
    meta: dict
    identity: str = ""  # what names these weights in caches and widget keys: the file and its version, or the upload's sha256
    label: str = ""  # how the model picker calls it
    digest: str | None = None  # the sha256 of an uploaded file's bytes; None for a checkpoint on disk

    @property
    def normalization(self) -> dict:
        return self.meta["normalization"]

    @property
    def uploaded(self) -> bool:
        return self.digest is not None

    @property
    def assumed(self) -> bool:
        """A bare state_dict: the walkthrough's preprocessing was assumed (lenet.checkpoint says so in meta)."""
        return bool(self.meta.get("assumed"))


@st.cache_resource(show_spinner=False, max_entries=8)
def _load_model(path: str, mtime_ns: int) -> tuple[torch.nn.Module, dict]:
    return load_model(path)


def loaded_model(path: Path) -> LoadedModel:
    """A checkpoint's model in eval mode, loaded once per file version; CheckpointError when unusable."""
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError as error:
        raise CheckpointError(f"{path}: {error.strerror or error}") from None
    resolved = str(path.resolve())
    model, meta = _load_model(resolved, mtime_ns)
    return LoadedModel(path, model, meta, identity=f"file:{resolved}:{mtime_ns}", label=path.name)


def uploaded_model(data: bytes, filename: str) -> LoadedModel:
    """A LeNet-5 from an uploaded file's bytes, held in memory only (nothing is written to disk); CheckpointError with
    one line naming the file when it is not one (torch.load with weights_only: a pickle that would run code is refused)."""
    name = shown_name(filename)
    if len(data) > MAX_CHECKPOINT_BYTES:  # before hashing or unpickling anything
        raise CheckpointError(f"{name}: {len(data) / 2**20:.0f} MB is far too large for a LeNet-5 checkpoint "
                              f"(at most {MAX_CHECKPOINT_BYTES // 2**20} MB)")
    digest = hashlib.sha256(data).hexdigest()
    model, meta = load_model_bytes(data, name)
    placeholder = Path("<uploaded>") / digest[:16] / name  # names no file: read_card and the epochs finder find nothing
    return LoadedModel(placeholder, model, meta, identity=f"upload:{digest}", label=name, digest=digest)


def shown_name(filename: str | None, longest: int = 80) -> str:
    """A file name a person gave, fit for a one-line message: printable characters only, at most `longest`."""
    clean = "".join(ch for ch in filename or "" if ch.isprintable()).strip() or _("the uploaded file")
    return clean if len(clean) <= longest else clean[: longest - 1] + "…"


_MARKDOWN_SPECIALS = re.compile(r"([\\`*_{}\[\]()#+!|<>~:$])")


def as_plain_text(text: str) -> str:
    """Text shown as typed where Streamlit renders Markdown (a message quoting a file's name or content)."""
    return _MARKDOWN_SPECIALS.sub(r"\\\1", text)


def session_models() -> dict[str, LoadedModel]:
    """This browser session's uploaded models, by sha256, oldest first (kept in its session state only)."""
    return st.session_state.setdefault(UPLOADED_MODELS, {})


def _model_uploaded(picker_key: str) -> None:
    """The upload widget's callback: load the file, keep it for the session, and choose it in the picker."""
    upload = st.session_state.get(f"{picker_key}-upload")
    st.session_state.pop(f"{picker_key}-upload-error", None)
    if upload is None:
        return
    try:
        loaded = uploaded_model(upload.getvalue(), upload.name)
    except CheckpointError as error:
        st.session_state[f"{picker_key}-upload-error"] = str(error)
        return
    models = session_models()
    models.pop(loaded.digest, None)
    models[loaded.digest] = loaded
    while len(models) > MAX_UPLOADED_MODELS:
        models.pop(next(iter(models)))
    st.session_state[picker_key] = loaded.identity


def run_labels(runs: list[RunSnapshot]) -> dict[str, str]:
    """Run id -> a name a class can say: "Run 3 · quick · 61.3%", numbered in the order the runs started."""
    labels = {}
    for number, run in enumerate(sorted(runs, key=lambda r: r.id), start=1):
        accuracy = f" · {percent(run.test_accuracy)}" if run.test_accuracy is not None else ""
        labels[run.id] = _("Run {number} · {preset}").format(number=number, preset=run.config.get("preset") or _("custom")) + accuracy
    return labels


def checkpoint_choices() -> dict[Path, str]:
    """Checkpoint -> label: the shipped (or LENET_CHECKPOINT) model first, then every run that saved one, newest first."""
    choices = {}
    shipped = default_checkpoint()
    if shipped.is_file():
        choices[shipped] = _("Pretrained model ({name})").format(name=shipped.name)
    all_runs = registry().list_runs()
    labels = run_labels(all_runs)
    for run in all_runs:
        if run.checkpoint is not None:
            choices[run.checkpoint] = f"{labels[run.id]} ({_(run.state)})"  # lenet's state words are the Train page's msgids
    return choices


def choose_model(key: str) -> LoadedModel | None:
    """A selectbox of checkpoints and this session's uploaded models, a way to upload one, and the chosen model;
    None, after saying what to do, when there is none to use."""
    files = {f"file:{path}": (path, label) for path, label in checkpoint_choices().items()}
    uploads = {loaded.identity: loaded for loaded in session_models().values()}
    labels = {identity: label for identity, (_path, label) in files.items()}
    labels.update({identity: _("Your model: {name}").format(name=loaded.label) for identity, loaded in uploads.items()})
    chosen = None
    with st.container(horizontal=True, vertical_alignment="bottom", key=f"{key}-row"):
        if labels:  # the options are identities: labels change as a run goes on, the choice must not
            chosen = st.selectbox(_("Model"), list(labels), format_func=labels.get, key=key, width=420,
                                  help=_("The pretrained model, a run's checkpoint, or a model you uploaded"))
        with st.popover(_("Your own model"), icon=":material/upload_file:"):
            st.markdown(_("A LeNet-5 saved by the walkthrough (`torch.save(net.state_dict(), PATH)`) or one of this app's "
                          "checkpoints. It stays in this browser session only: nothing is saved on the server."))
            st.file_uploader(_("A .pth or .pt file"), type=MODEL_UPLOAD_TYPES, key=f"{key}-upload", on_change=_model_uploaded,
                             args=(key,), max_upload_size=MAX_CHECKPOINT_BYTES // 2**20)
    problem = st.session_state.get(f"{key}-upload-error")
    if problem:
        st.error(as_plain_text(engine_text(problem)), icon=":material/error:")
    if chosen is None:
        st.info(_(NO_MODEL), icon=":material/model_training:")
        link("train", _("Train a model"))
        return None
    if chosen in uploads:
        return uploads[chosen]
    try:
        return loaded_model(files[chosen][0])
    except CheckpointError as error:
        st.error(as_plain_text(engine_text(str(error))), icon=":material/error:")
        return None


def say_how_it_answers(loaded: LoadedModel) -> None:
    """What a model's answers rest on beyond its weights: the preprocessing assumed for a bare state_dict; the mirror
    image for a model with test-time flips (its accuracy, and every answer the app gives with it, count both)."""
    if loaded.assumed:
        st.info(_(STATE_DICT_ASSUMED), icon=":material/info:")
    if loaded.model.test_flips:
        st.info(_(TEST_FLIPS), icon=":material/flip:")


def stated_accuracy(loaded: LoadedModel) -> float | None:
    """What the checkpoint says its test accuracy is: its card's, else the metrics saved with it."""
    card = read_card(loaded.path)
    value = card.get("test_accuracy") if card else None
    if value is None:
        value = (loaded.meta.get("metrics") or {}).get("test_accuracy")
    return value if isinstance(value, (int, float)) else None


def read_card(checkpoint: Path) -> dict | None:
    """The model card next to a checkpoint (same name, .json), when there is a readable one."""
    try:
        card = json.loads(checkpoint.with_suffix(".json").read_text())
    except (OSError, ValueError):
        return None
    return card if isinstance(card, dict) else None


@st.cache_resource(show_spinner=False, max_entries=8)
def _evaluation(identity: str, data_dir: str, _loaded: LoadedModel) -> Evaluation:
    return evaluate(_loaded.model, _dataset_service(data_dir).wait().test, _loaded.normalization)


def evaluation(loaded: LoadedModel) -> Evaluation:
    """The test-set evaluation of a model, computed once per file version or uploaded file's sha256 and shared by
    every session (call only once the data is loaded)."""
    with st.spinner(_("Evaluating on the 10,000 test images…")):
        return _evaluation(loaded.identity, str(default_data_dir()), loaded)


# -- the model as files to take away ---------------------------------------------------------------


def run_id(loaded: LoadedModel) -> str | None:
    """The run that trained the model, when its card or checkpoint says."""
    card = read_card(loaded.path) or {}
    value = card.get("run_id") or loaded.meta.get("run_id")
    return value if isinstance(value, str) else None


def walkthrough_file(loaded: LoadedModel) -> bytes:
    """The model as the walkthrough's own `torch.save(net.state_dict(), PATH)` for its Normalize(0.5, 0.5)."""
    return export.walkthrough_state_dict_bytes(loaded.model, loaded.meta)


def script_file(loaded: LoadedModel, accuracy: float | None, filename: str) -> bytes:
    """One plain PyTorch script that trains the model's recipe again."""
    return export.script_text(loaded.meta, run_id=run_id(loaded), accuracy=accuracy, filename=filename).encode()


def onnx_available() -> bool:
    """Whether this server can export ONNX (the onnx and onnxscript packages are optional)."""
    return all(importlib.util.find_spec(name) is not None for name in ("onnx", "onnxscript"))


_onnx_files: OrderedDict[str, bytes] = OrderedDict()
_onnx_lock = threading.Lock()
ONNX_FILES_KEPT = 4


def onnx_ready(loaded: LoadedModel) -> bytes | None:
    """The model's ONNX file when it has been exported already (by anyone on this server)."""
    with _onnx_lock:
        return _onnx_files.get(loaded.identity)


def onnx_file(loaded: LoadedModel) -> bytes:
    """The model as ONNX, exported once per model (about 3 s) and kept for the next person who asks; one export at a
    time, as torch.onnx.export is not made to run twice at once."""
    with _onnx_lock:
        if loaded.identity not in _onnx_files:
            _onnx_files[loaded.identity] = export.onnx_bytes(loaded.model, loaded.meta)  # exports a frozen copy
            while len(_onnx_files) > ONNX_FILES_KEPT:
                _onnx_files.popitem(last=False)
        _onnx_files.move_to_end(loaded.identity)
        return _onnx_files[loaded.identity]


def random_batch(split: Split, name: str, size: int, seed: int) -> Split:
    """`size` images of the class called name (any class for ANY): the class box's choice, as Split.sample takes it."""
    return split.sample(size, seed, label=None if name == ANY else CLASSES.index(name))


def new_seed() -> int:
    return int(torch.randint(0, 2**31 - 1, ()).item())


def decoded_photo(upload) -> Image.Image:
    """An uploaded or camera photo as load_image gives it (read only), decoded once per file: kept in the browser session
    that uploaded it (its last SESSION_PHOTOS files), so each rerun reuses it and it goes when the session goes. A
    server-wide cache would either decode a class's photos again at every rerun (30 students, 8 places: measured in the
    stress suite) or hold them all after everyone left. When two decodes already run, this one waits and says so.
    ImageError when the file is not a usable image (not kept: the next try reads it again)."""
    kept = st.session_state.setdefault("decoded-photos", OrderedDict())
    file_id = getattr(upload, "file_id", None)
    if file_id is not None and file_id in kept:
        kept.move_to_end(file_id)
        return kept[file_id]
    image = load_image(upload, getattr(upload, "name", None),
                       on_wait=lambda: st.info(_("Another photo is being decoded; yours is next…"), icon=":material/hourglass_top:"))
    if file_id is not None:
        kept[file_id] = image
        while len(kept) > SESSION_PHOTOS:
            kept.popitem(last=False)
    return image


def classify_upload(loaded: LoadedModel, upload) -> Prediction | None:
    """The prediction for an uploaded or camera photo; None, after a one-line error, when it is not a usable image."""
    try:
        return classify_image(loaded.model, loaded.normalization, decoded_photo(upload))
    except ImageError as error:
        st.error(engine_text(str(error)), icon=":material/broken_image:")
        return None
    except ModelError as error:
        st.error(engine_text(str(error)), icon=":material/error:")
        return None


def predict_tensor(loaded: LoadedModel, image: torch.Tensor) -> Prediction:
    """The prediction for one CIFAR-10 image (uint8 3 x 32 x 32), exactly as an upload's 32 x 32 input is classified."""
    return classify_pixels(loaded.model, loaded.normalization, image)


