"""Model: LeNet-5 layer by layer, with the loss it minimizes and the optimizer that trains it."""

import pandas as pd
import streamlit as st

from lenet.model import layer_summary
from lenet.train import PRESETS
from pages import _charts, _code
from pages._code import pytorch_code
from pages._images import stretched, upscale
from pages._resources import choose_model
from pages._router import through_router

through_router()

st.title(":material/account_tree: Model")
st.markdown(
    "LeNet-5 turns a 32 × 32 colour image into **10 scores**, one per class. Two **convolutions** find small patterns "
    "(edges, colour blobs, then combinations of them), each followed by **max-pooling**, which halves the image. Three "
    "**fully connected** layers then weigh all these patterns into the scores."
)

rows = layer_summary()
st.graphviz_chart(_charts.architecture(rows), width="stretch")

table, chart = st.columns([3, 2], gap="large")
with table:
    st.subheader("Layer by layer")
    st.dataframe(
        pd.DataFrame(
            {
                "layer": [r["layer"] for r in rows],
                "operation": [r["operation"] for r in rows],
                "output shape": [" × ".join(str(n) for n in r["output_shape"]) for r in rows],
                "parameters": [r["parameters"] for r in rows],
            }
        ),
        hide_index=True,
        column_config={"parameters": st.column_config.NumberColumn(format="localized")},
    )
with chart:
    st.subheader("Where the parameters are")
    st.metric("Learnable parameters", f"{sum(r['parameters'] for r in rows):,}")
    st.altair_chart(_charts.parameters(rows), width="stretch")
    st.caption("A convolution reuses one small filter all over the image; fc1 connects each of its 400 inputs to each of its 120 outputs.")

walkthrough = PRESETS["walkthrough"]
loss, optimizer = st.columns(2, gap="large")
with loss:
    st.subheader("The loss: cross-entropy over 10 classes")
    st.markdown(
        "Softmax turns the 10 scores $z$ into probabilities; the loss is minus the log of the probability "
        "given to the true class $y$:"
    )
    st.latex(r"p_k = \frac{e^{z_k}}{\sum_{j=1}^{10} e^{z_j}} \qquad \text{loss} = -\log p_y")
    st.markdown("A sure and right answer costs 0; guessing (every $p_k = 0.1$) costs $\\ln 10 \\approx 2.30$, where training starts.")
with optimizer:
    st.subheader("The optimizer: SGD with momentum")
    st.markdown(
        f"After each batch, every weight $w$ moves a little against its gradient $g$. The walkthrough uses "
        f"**learning rate $\\eta$ = {walkthrough.lr}** and **momentum $\\mu$ = {walkthrough.momentum}**, with batches of "
        f"{walkthrough.batch_size} images; momentum keeps part of the previous step, which smooths the path:"
    )
    st.latex(r"v \leftarrow \mu\, v + g \qquad w \leftarrow w - \eta\, v")
    st.markdown("The Train page sets these, and offers faster recipes.")

st.header("What the first layer learned")
st.markdown("The six 5 × 5 filters of conv1, each scaled to show its range: a trained network's are edges and colour contrasts.")
loaded = choose_model(key="filters-model")
if loaded is not None:
    st.image(upscale(stretched(loaded.model.conv1.weight, columns=6, padding=1), 720), caption="Filters 1 to 6, left to right")

pytorch_code(_code.MODEL)
