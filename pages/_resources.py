"""The server's shared things, made once per server with st.cache_resource: the dataset, the run registry, models and
their evaluations, and the widgets that pick them.

Each is keyed by what identifies it (a folder, a checkpoint's path and modification time), so every browser session
of one server shares one dataset, one registry and one copy of each model, and a changed setting or file gives a
fresh one. Long work never runs in a script run: the dataset service and the registry do it in the background, and
pages poll them with fragments.
"""

import json
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch

from lenet.checkpoint import CheckpointError, default_checkpoint, load_model
from lenet.data import CIFAR10, CLASSES, Split, default_data_dir
from lenet.evaluate import Evaluation, evaluate
from lenet.files import runs_dir
from lenet.predict import ImageError, Prediction, classify, probabilities
from lenet.runs import RunRegistry, RunSnapshot
from lenet.service import ABSENT, ERROR, DatasetService
from lenet.train import default_threads
from pages._format import percent
from pages._images import to_pil
from pages._router import link

ANY = "any class"
NO_MODEL = (
    "No pretrained model yet: train one on the Train page or run "
    "`python -m lenet train --preset best --export assets/lenet5-cifar10.pt`."
)
TRAINING_NICENESS = 10  # the training process yields the CPU to page rendering (os.nice)


# -- the dataset -----------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _dataset_service(data_dir: str) -> DatasetService:
    service = DatasetService(data_dir)
    service.start_loading()
    return service


def dataset_service() -> DatasetService:
    """The server's dataset service for LENET_DATA (else ./data); it starts loading in the background at once."""
    return _dataset_service(str(default_data_dir()))


def require_data(offer_download: bool = False) -> CIFAR10 | None:
    """The dataset when it is loaded; otherwise None, after saying where it stands and what to do."""
    service = dataset_service()
    data = service.get()
    if data is None:
        dataset_status(service, offer_download)
    return data


def dataset_status(service: DatasetService, offer_download: bool) -> None:
    status = service.status()
    if status.busy:
        _dataset_progress()
        return
    if status.state == ERROR:
        st.error(status.message, icon=":material/cloud_off:")
    else:
        st.info(status.message, icon=":material/folder_off:")
    if not offer_download:
        link("dataset", "Get CIFAR-10 on the Dataset page")
        return
    with st.container(horizontal=True):
        st.button("Download CIFAR-10 (170 MB)", icon=":material/download:", type="primary", on_click=service.start_download)
        if status.state in (ABSENT, ERROR):
            st.button("Look in the folder again", icon=":material/refresh:", on_click=service.start_loading)


@st.fragment(run_every=1.0)
def _dataset_progress() -> None:
    """Redrawn every second while the dataset loads or downloads; reruns the whole page once it is done."""
    status = dataset_service().status()
    if not status.busy:
        st.rerun()
    if status.fraction is not None:
        st.progress(status.fraction, text=status.message)
    else:
        st.info(status.message, icon=":material/hourglass_top:")


# -- runs and models -------------------------------------------------------------------------------


@st.cache_resource(show_spinner=False)
def _registry(runs_dir: str, data_dir: str) -> RunRegistry:
    service = _dataset_service(data_dir)
    # Every core trains; the training process runs at a lower priority (nice), so pages still answer at once.
    return RunRegistry(runs_dir, load_data=service.wait, threads=default_threads(), data_source=str(Path(data_dir).resolve()),
                       data_dir=data_dir, nice=TRAINING_NICENESS)


def registry() -> RunRegistry:
    """The server's run registry for LENET_RUNS (else ./runs): at most one training, shared by every session."""
    return _registry(str(runs_dir()), str(default_data_dir()))


@dataclass
class LoadedModel:
    path: Path
    model: torch.nn.Module
    meta: dict

    @property
    def normalization(self) -> dict:
        return self.meta["normalization"]


@st.cache_resource(show_spinner="Loading the model…", max_entries=8)
def _load_model(path: str, mtime_ns: int) -> tuple[torch.nn.Module, dict]:
    return load_model(path)


def loaded_model(path: Path) -> LoadedModel:
    """A checkpoint's model in eval mode, loaded once per file version; CheckpointError when unusable."""
    try:
        mtime_ns = path.stat().st_mtime_ns
    except OSError as error:
        raise CheckpointError(f"{path}: {error.strerror or error}") from None
    model, meta = _load_model(str(path.resolve()), mtime_ns)
    return LoadedModel(path, model, meta)


def run_labels(runs: list[RunSnapshot]) -> dict[str, str]:
    """Run id -> a name a class can say: "Run 3 · quick · 61.3%", numbered in the order the runs started."""
    labels = {}
    for number, run in enumerate(sorted(runs, key=lambda r: r.id), start=1):
        accuracy = f" · {percent(run.test_accuracy)}" if run.test_accuracy is not None else ""
        labels[run.id] = f"Run {number} · {run.config.get('preset', 'custom')}{accuracy}"
    return labels


def checkpoint_choices() -> dict[Path, str]:
    """Checkpoint -> label: the shipped (or LENET_CHECKPOINT) model first, then every run that saved one, newest first."""
    choices = {}
    shipped = default_checkpoint()
    if shipped.is_file():
        choices[shipped] = f"Pretrained model ({shipped.name})"
    all_runs = registry().list_runs()
    labels = run_labels(all_runs)
    for run in all_runs:
        if run.checkpoint is not None:
            choices[run.checkpoint] = f"{labels[run.id]} ({run.state})"
    return choices


def choose_model(key: str) -> LoadedModel | None:
    """A selectbox of checkpoints and the chosen model; None, after saying what to do, when there is none to use."""
    choices = checkpoint_choices()
    if not choices:
        st.info(NO_MODEL, icon=":material/model_training:")
        link("train", "Train a model")
        return None
    # The options are the paths (labels change as a run goes on; the choice must not).
    path = st.selectbox("Model", list(choices), format_func=choices.get, key=key, help="The pretrained model or a run's checkpoint")
    try:
        return loaded_model(path)
    except CheckpointError as error:
        st.error(str(error), icon=":material/error:")
        return None


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


@st.cache_resource(show_spinner="Evaluating on the 10,000 test images…", max_entries=8)
def _evaluation(path: str, mtime_ns: int, data_dir: str) -> Evaluation:
    model, meta = _load_model(path, mtime_ns)
    return evaluate(model, _dataset_service(data_dir).wait().test, meta["normalization"])


def evaluation(loaded: LoadedModel) -> Evaluation:
    """The test-set evaluation of a checkpoint, computed once per file version (call only once the data is loaded)."""
    return _evaluation(str(loaded.path.resolve()), loaded.path.stat().st_mtime_ns, str(default_data_dir()))


def random_batch(split: Split, name: str, size: int, seed: int) -> Split:
    """`size` images of the class called name (any class for ANY), drawn at random but the same for the same seed."""
    pool = torch.arange(len(split)) if name == ANY else (split.labels == CLASSES.index(name)).nonzero().flatten()
    return split.subset(pool[torch.randperm(len(pool), generator=torch.Generator().manual_seed(seed))[:size]])


def new_seed() -> int:
    return int(torch.randint(0, 2**31 - 1, ()).item())


def classify_upload(loaded: LoadedModel, upload) -> Prediction | None:
    """The prediction for an uploaded or camera photo; None, after a one-line error, when it is not a usable image."""
    try:
        return classify(loaded.model, loaded.normalization, upload, name=getattr(upload, "name", None))
    except ImageError as error:
        st.error(str(error), icon=":material/broken_image:")
        return None


def predict_tensor(loaded: LoadedModel, image: torch.Tensor) -> Prediction:
    """The prediction for one CIFAR-10 image (uint8 3 x 32 x 32), exactly as an upload's 32 x 32 input is classified."""
    small = to_pil(image)
    return Prediction(image=small, model_input=small, probabilities=probabilities(loaded.model, loaded.normalization, small).tolist())


