"""What the pages share: the server-wide resources (dataset, models, run registry), the pages' names, and small drawing helpers.

Resources come from st.cache_resource, keyed by what identifies them (a folder, a checkpoint's path and
modification time), so every browser session of one server shares one dataset, one registry and one copy of
each model, and a changed setting or file gives a fresh one. Long work never runs in a script run: the dataset
service and the registry do it in their own threads, and pages poll them with fragments.
"""

import json
import os
from dataclasses import dataclass
from pathlib import Path

import streamlit as st
import torch
from PIL import Image, ImageDraw, ImageFont
from streamlit.runtime.pages_manager import PagesManager
from torchvision.utils import make_grid

from lenet.checkpoint import CheckpointError, default_checkpoint, load_model
from lenet.data import CIFAR10, CLASSES, Split, default_data_dir
from lenet.evaluate import Evaluation, evaluate
from lenet.predict import ImageError, Prediction, classify, probabilities
from lenet.runs import RunRegistry
from lenet.service import ABSENT, ERROR, DatasetService

ANY = "any class"
NO_MODEL = (
    "No pretrained model yet: train one on the Train page or run "
    "`python -m lenet train --preset best --export assets/lenet5-cifar10.pt`."
)

# name -> (script, title, icon); app.py builds the navigation from this, pages link with link(name).
PAGES = {
    "overview": ("pages/overview.py", "Overview", ":material/home:"),
    "dataset": ("pages/dataset.py", "Dataset", ":material/photo_library:"),
    "model": ("pages/model.py", "Model", ":material/account_tree:"),
    "train": ("pages/train.py", "Train", ":material/model_training:"),
    "evaluate": ("pages/evaluate.py", "Evaluate", ":material/fact_check:"),
    "classify": ("pages/classify.py", "Classify", ":material/image_search:"),
}


def page(name: str) -> st.Page:
    script, title, icon = PAGES[name]
    return st.Page(script, title=title, icon=icon, default=name == "overview")


def route() -> None:
    """The router, app.py's whole job: the page config and the navigation, then the chosen page."""
    st.set_page_config(page_title="LeNet-5 on CIFAR-10", page_icon=":material/neurology:", layout="wide")
    st.navigation([page(name) for name in PAGES]).run()


def through_router() -> None:
    """Make sure this page runs inside the router; every page calls it first.

    Because a pages/ folder sits beside app.py, Streamlit runs a server's very first script run in its old
    folder mode: a browser reconnecting to /train after a restart would run this file alone, without the page
    config and with every file of pages/ listed as a page. Then route from here instead: declaring the
    navigation ends that mode for the whole server (st.navigation's documented effect) and runs this page
    again inside it, with the same widget values; st.stop() ends the outer run.
    """
    if PagesManager.uses_pages_directory:
        route()
        st.stop()


def link(name: str, label: str | None = None) -> None:
    st.page_link(page(name), label=label)


def pytorch_code(code: str) -> None:
    """The page's "PyTorch code" expander: a few lines of plain PyTorch doing what the page shows."""
    with st.expander("PyTorch code", icon=":material/code:"):
        st.code(code, language="python")


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
    # One core stays free for the pages, so the app answers while it trains.
    threads = max(1, (os.cpu_count() or 1) - 1)
    return RunRegistry(runs_dir, load_data=service.wait, threads=threads, data_source=str(Path(data_dir).resolve()))


def registry() -> RunRegistry:
    """The server's run registry for LENET_RUNS (else ./runs): at most one training, shared by every session."""
    return _registry(os.environ.get("LENET_RUNS") or "runs", str(default_data_dir()))


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


def checkpoint_choices() -> dict[Path, str]:
    """Checkpoint -> label: the shipped (or LENET_CHECKPOINT) model first, then every run that saved one, newest first."""
    choices = {}
    shipped = default_checkpoint()
    if shipped.is_file():
        choices[shipped] = f"Pretrained model ({shipped.name})"
    for run in registry().list_runs():
        if run.checkpoint is not None:
            accuracy = f" · {run.test_accuracy:.1%}" if run.test_accuracy is not None else ""
            choices[run.checkpoint] = f"Run {run.id} · {run.state}{accuracy}"
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


def duration(seconds: float | None) -> str:
    if seconds is None:
        return "–"
    seconds = round(seconds)
    if seconds < 60:
        return f"{seconds} s"
    if seconds < 3600:
        return f"{seconds // 60} min {seconds % 60:02d} s"
    return f"{seconds // 3600} h {seconds % 3600 // 60:02d} min"


# -- images ----------------------------------------------------------------------------------------


def to_pil(image: torch.Tensor) -> Image.Image:
    """A uint8 3 x H x W tensor as a PIL image."""
    return Image.fromarray(image.permute(1, 2, 0).contiguous().numpy())


def displayable(values: torch.Tensor) -> torch.Tensor:
    """Float images (C x H x W, or N of them) stretched to 0..255 each, to show values that are not pixels (normalized, weights)."""
    low = values.amin(dim=(-3, -2, -1), keepdim=True)
    high = values.amax(dim=(-3, -2, -1), keepdim=True)
    return ((values - low) / (high - low).clamp(min=1e-8) * 255).round().to(torch.uint8)


def upscale(image: Image.Image, side: int) -> Image.Image:
    """Scaled up so its longer side is `side`, with nearest-neighbour: every pixel a sharp square, nothing blurred."""
    factor = max(1, side // max(image.size))
    return image.resize((image.width * factor, image.height * factor), Image.Resampling.NEAREST)


def walkthrough_grid(images: torch.Tensor, side: int = 1024) -> Image.Image:
    """torchvision.utils.make_grid of a uint8 batch, 8 per row, as the walkthrough shows its batch (scaled up)."""
    return upscale(to_pil(make_grid(images, nrow=8, padding=2, pad_value=255)), side)


def labelled_grid(
    images: torch.Tensor, captions: list[str], colors: list[str] | None = None, columns: int = 8, tile: int = 128
) -> Image.Image:
    """The images in rows of `columns`, each scaled up to tile x tile (nearest), with its caption (one or more lines) underneath."""
    gap = max(6, tile // 12)
    widest = max((line for caption in captions for line in caption.splitlines()), key=len, default="")
    size = max(12, tile // 8)
    while size > 10 and ImageFont.load_default(size=size).getlength(widest) > tile + gap - 4:
        size -= 1  # long captions get a smaller font rather than run into their neighbours
    font = ImageFont.load_default(size=size)
    lines = max((caption.count("\n") + 1 for caption in captions), default=1)
    strip = lines * (size + 4) + 6
    rows = -(-len(images) // columns)
    canvas = Image.new("RGB", (columns * (tile + gap) - gap, rows * (tile + strip + gap) - gap), "white")
    draw = ImageDraw.Draw(canvas)
    for i, (image, caption) in enumerate(zip(images, captions, strict=True)):
        x, y = (i % columns) * (tile + gap), (i // columns) * (tile + strip + gap)
        canvas.paste(to_pil(image).resize((tile, tile), Image.Resampling.NEAREST), (x, y))
        color = colors[i] if colors else "black"
        draw.multiline_text((x + tile / 2, y + tile + 4), caption, fill=color, font=font, anchor="ma", align="center", spacing=4)
    return canvas
