"""Dataset: CIFAR-10 as the network gets it: batches of labelled 32 x 32 images, classes, and normalization."""

import pandas as pd
import streamlit as st

from lenet.data import CLASSES
from lenet.inference import NORMALIZATIONS, normalize
from pages import _charts, _code
from pages._code import pytorch_code
from pages._images import labelled_grid, stretched, to_pil, upscale, walkthrough_grid
from pages._resources import ANY, dataset_service, new_seed, random_batch, require_data
from pages._router import through_router

through_router()

st.title(":material/photo_library: Dataset")
st.markdown(
    "CIFAR-10 holds 60,000 photos of **32 × 32 pixels** in 10 classes. Each image here is scaled up with "
    "*nearest-neighbour*: every pixel stays a sharp square, so you see exactly what the network sees."
)

data = require_data(offer_download=True)
if data is None:
    pytorch_code(_code.DATASET)
    st.stop()
st.caption(dataset_service().status().message)

st.header("A random batch")
with st.container(horizontal=True, vertical_alignment="bottom"):
    split_name = st.segmented_control("Split", ["train", "test"], default="train", required=True, key="split")
    chosen = st.selectbox("Class", [ANY, *CLASSES], key="class", width=220)
    size = st.select_slider("Images", [4, 8, 16, 32, 64], value=16, key="size", width=300)
    if st.button("Shuffle", icon=":material/shuffle:", type="primary") or "batch_seed" not in st.session_state:
        st.session_state.batch_seed = new_seed()

batch = random_batch(data.train if split_name == "train" else data.test, chosen, size, st.session_state.batch_seed)
images, names = batch.images, [CLASSES[label] for label in batch.labels]

labelled, walkthrough = st.tabs(["With labels", "As in the walkthrough (make_grid)"])
with labelled:
    tile = 224 if size <= 4 else 160 if size <= 16 else 120
    st.image(labelled_grid(images, names, columns=min(size, 8), tile=tile))
with walkthrough:
    st.image(walkthrough_grid(images))
    st.code("\n".join(" ".join(f"{name:10s}" for name in names[row : row + 8]) for row in range(0, size, 8)), language=None)

st.header("Images per class")
st.markdown("Every class has the same number of images: a network that always guessed one class would be right 10% of the time.")
st.altair_chart(_charts.class_counts({"train": data.train.class_counts(), "test": data.test.class_counts()}), width="stretch")

st.header("Before and after normalization")
st.markdown(
    "The network does not get pixels from 0 to 255. `ToTensor()` divides by 255, then `Normalize(mean, std)` subtracts "
    "a mean and divides by a standard deviation, per colour channel. Values around zero make training faster and steadier. "
    "The picture stays the same: only its numbers change."
)
name = st.segmented_control(
    "Normalization",
    list(NORMALIZATIONS),
    default="walkthrough",
    required=True,
    format_func=lambda n: {"walkthrough": "walkthrough: mean 0.5, std 0.5", "cifar10": "CIFAR-10 statistics"}.get(n, n),
    key="normalization",
)
normalization = NORMALIZATIONS[name]
before = images[0]
after = normalize(before[None], normalization)[0]

original, normalized, ranges = st.columns([1, 1, 2], gap="large")
with original:
    st.image(upscale(to_pil(before), 256), caption=f"{names[0]}: pixels 0 to 255")
with normalized:
    st.image(upscale(stretched(after), 256), caption=f"normalized ({after.min():.2f} to {after.max():.2f}), rescaled to show")
with ranges:
    st.dataframe(
        pd.DataFrame(
            {
                "channel": ["red", "green", "blue"],
                "mean, std used": [f"{m:.4f}, {s:.4f}" for m, s in zip(normalization["mean"], normalization["std"], strict=True)],
                "before (0..255)": [f"{c.min()} to {c.max()}, mean {c.float().mean():.1f}" for c in before],
                "after": [f"{c.min():.3f} to {c.max():.3f}, mean {c.mean():.3f}" for c in after],
            }
        ),
        hide_index=True,
    )

histogram_before, histogram_after = st.columns(2, gap="large")
histogram_before.altair_chart(_charts.pixel_histogram(before, "Pixel values before"), width="stretch")
histogram_after.altair_chart(_charts.pixel_histogram(after, "Values after normalization"), width="stretch")

pytorch_code(_code.DATASET)
