"""Dataset: CIFAR-10 as the network gets it: batches of labelled 32 x 32 images, classes, the trainer's augmentation,
and normalization."""

import pandas as pd
import streamlit as st
import torch

from lenet.data import CLASSES
from lenet.inference import NORMALIZATIONS, normalize
from lenet.train import PRESETS, augment
from pages import _charts, _code
from pages._classroom import presentation_zoom, restore_from_url, sync_to_url
from pages._code import pytorch_code
from pages._i18n import N_, _, bound, class_name, engine_text, translate
from pages._images import column_strip, pixelated_style, stretched, tiles, to_pil, upscale, walkthrough_grid
from pages._resources import ANY, class_labels, dataset_service, new_seed, random_batch, require_data
from pages._router import through_router

through_router()

SPLITS = [N_("train"), N_("test")]
SIZES = [4, 8, 16, 32, 64]
AUGMENTED = PRESETS["best"]  # the recipe whose augmentation the preview shows
DRAWS = 3  # augmented copies under each image
PREVIEW_IMAGES = 8


def trainer_draws(images: torch.Tensor, first_step: int) -> list[torch.Tensor]:
    """The batch as the trainer augments it at steps first_step, first_step + 1, ...: lenet.train.augment with a generator
    seeded as the trainer seeds it for each step, and the `best` preset's crop padding."""
    seed = AUGMENTED.seed * 1_000_003
    return [augment(images, torch.Generator().manual_seed(seed + step), pad=AUGMENTED.crop_padding)
            for step in range(first_step, first_step + DRAWS)]


def batch_section(data, zoom: float) -> tuple[torch.Tensor, list[str]]:
    """The batch's controls and its grids; the images shown and their class labels."""
    st.header(_("A random batch"))
    restore_from_url("split", SPLITS[0], options=SPLITS)
    restore_from_url("class", ANY, options=[ANY, *CLASSES])
    restore_from_url("size", 16, options=SIZES)
    with st.container(horizontal=True, vertical_alignment="bottom"):
        split_name = st.segmented_control(_("Split"), SPLITS, required=True, format_func=bound(translate), key="split")
        chosen = st.selectbox(_("Class"), [ANY, *CLASSES], format_func=bound(class_name), key="class", width=220)
        size = st.select_slider(_("Images"), SIZES, key="size", width=300)
        if st.button(_("Shuffle"), icon=":material/shuffle:", type="primary") or "batch_seed" not in st.session_state:
            st.session_state.batch_seed = new_seed()
    sync_to_url("split", SPLITS[0])
    sync_to_url("class", ANY)
    sync_to_url("size", 16)

    batch = random_batch(data.train if split_name == "train" else data.test, chosen, size, st.session_state.batch_seed)
    names = [class_name(int(label)) for label in batch.labels]
    labelled, walkthrough = st.tabs([_("With labels"), _("As in the walkthrough (make_grid)")])
    with labelled, st.container(key="pixels-batch"):
        # Tiles of one size: as many to a row as the page has room for, each sharp.
        side = round((192 if size <= 4 else 128 if size <= 16 else 96) * zoom)
        st.image(tiles(batch.images, side), caption=names, width=side, output_format="PNG")
    with walkthrough, st.container(key="pixels-walkthrough"):
        st.image(walkthrough_grid(batch.images), output_format="PNG")
        st.code("\n".join(" ".join(f"{name:10s}" for name in names[row : row + 8]) for row in range(0, size, 8)), language=None)
    return batch.images, names


def augmentation_section(data, zoom: float) -> None:
    st.header(_("What augmentation does"))
    st.markdown(_(
        "The `best` recipe never shows the network quite the same image twice: each time a training image comes round, it "
        "is shifted by up to **{pixels} pixels** in each direction (the edge filled with black, as zero padding does) and "
        "flipped left to right half the time. These are the trainer's own crops and flips (`lenet.train.augment`), drawn "
        "as it draws them."
    ).format(pixels=AUGMENTED.crop_padding))
    step = st.session_state.setdefault("augment-step", 0)
    if st.button(_("New draw"), icon=":material/casino:", key="augment-new"):
        step = st.session_state["augment-step"] = step + DRAWS
    images = random_batch(data.train, ANY, PREVIEW_IMAGES, st.session_state.batch_seed)
    side = round(96 * zoom)
    copies = trainer_draws(images.images, step)
    strips = [column_strip([upscale(to_pil(image), side) for image in (original, *(draw[i] for draw in copies))], gap=max(6, side // 12))
              for i, original in enumerate(images.images)]
    with st.container(key="pixels-augmented"):
        st.image(strips, caption=[class_name(int(label)) for label in images.labels], width=side, output_format="PNG")
    st.caption(_("Top: a training image. Under it: what the trainer made of it at steps {first} to {last} (seed {seed}).").format(
        first=step + 1, last=step + DRAWS, seed=AUGMENTED.seed))


def normalization_table(before: torch.Tensor, after: torch.Tensor, normalization: dict) -> pd.DataFrame:
    """Per colour channel: the mean and std used, and the values' range and mean before and after."""
    used = zip(normalization["mean"], normalization["std"], strict=True)
    return pd.DataFrame(
        {
            _("channel"): [_("red"), _("green"), _("blue")],
            _("mean, std used"): [f"{m:.4f}, {s:.4f}" for m, s in used],
            _("before (0..255)"): [_("{low} to {high}, mean {mean:.1f}").format(low=c.min(), high=c.max(), mean=c.float().mean())
                                   for c in before],
            _("after"): [_("{low:.3f} to {high:.3f}, mean {mean:.3f}").format(low=c.min(), high=c.max(), mean=c.mean()) for c in after],
        }
    )


def normalization_section(image: torch.Tensor, label: str, zoom: float) -> None:
    st.header(_("Before and after normalization"))
    st.markdown(_(
        "The network does not get pixels from 0 to 255. `ToTensor()` divides by 255, then `Normalize(mean, std)` subtracts "
        "a mean and divides by a standard deviation, per colour channel. Values around zero make training faster and steadier. "
        "The picture stays the same: only its numbers change."
    ))
    labels = {"walkthrough": _("walkthrough: mean 0.5, std 0.5"), "cifar10": _("CIFAR-10 statistics")}
    name = st.segmented_control(_("Normalization"), list(NORMALIZATIONS), default="walkthrough", required=True,
                                format_func=lambda n: labels.get(n, n), key="normalization")
    normalization = NORMALIZATIONS[name]
    before = image
    after = normalize(before[None], normalization)[0]
    side = round(256 * zoom)
    with st.container(horizontal=True, gap="medium"):
        with st.container(width=side, key="pixels-before"):
            st.image(upscale(to_pil(before), side), output_format="PNG", width="stretch",
                     caption=_("{name}: pixels 0 to 255").format(name=label))
        with st.container(width=side, key="pixels-after"):
            st.image(upscale(stretched(after), side), output_format="PNG", width="stretch",
                     caption=_("normalized ({low:.2f} to {high:.2f}), rescaled to show").format(low=after.min(), high=after.max()))
        with st.container(width=round(400 * zoom)):
            # A static table: each cell's whole text, wrapped where the page is narrow, never cut off.
            st.table(normalization_table(before, after, normalization), hide_index=True)
    with st.container(horizontal=True, gap="medium"):
        with st.container(width=round(470 * zoom)):
            st.altair_chart(_charts.pixel_histogram(before, _("Pixel values before"), zoom=zoom), width="stretch")
        with st.container(width=round(470 * zoom)):
            st.altair_chart(_charts.pixel_histogram(after, _("Values after normalization"), zoom=zoom), width="stretch")


st.title(":material/photo_library: " + _("Dataset"))
pixelated_style(st)
st.markdown(_(
    "CIFAR-10 holds 60,000 photos of **32 × 32 pixels** in 10 classes. Each image here is scaled up with "
    "*nearest-neighbour*: every pixel stays a sharp square, so you see exactly what the network sees."
))

data = require_data(offer_download=True)
if data is None:
    pytorch_code(_code.DATASET)
    st.stop()
st.caption(engine_text(dataset_service().status().message))
zoom = presentation_zoom()

images, names = batch_section(data, zoom)

st.header(_("Images per class"))
st.markdown(_("Every class has the same number of images: a network that always guessed one class would be right 10% of the time."))
counts = {_("train"): data.train.class_counts(), _("test"): data.test.class_counts()}
st.altair_chart(_charts.class_counts(counts, class_labels(), zoom=zoom), width="stretch")

augmentation_section(data, zoom)
normalization_section(images[0], names[0], zoom)

pytorch_code(_code.DATASET)
