"""Model: LeNet-5 layer by layer, with the loss it minimizes and the optimizer that trains it."""

import pandas as pd
import streamlit as st

from lenet.model import layer_summary
from lenet.train import PRESETS
from pages import _charts, _code
from pages._classroom import presentation_zoom
from pages._code import pytorch_code
from pages._format import number
from pages._glossary import words_on_this_page
from pages._i18n import _
from pages._images import pixelated_style, stretched, upscale
from pages._resources import as_plain_text, choose_model, say_how_it_answers
from pages._router import through_router

through_router()

st.title(":material/account_tree: " + _("Model"))
pixelated_style(st)
st.markdown(_(
    "LeNet-5 turns a 32 × 32 colour image into **10 scores**, one per class. Two **convolutions** find small patterns "
    "(edges, colour blobs, then combinations of them), each followed by **max-pooling**, which halves the image. Three "
    "**fully connected** layers then weigh all these patterns into the scores."
))

zoom = presentation_zoom()
rows = [{**row, "operation": _(row["operation"])} for row in layer_summary()]
# Boxes that wrap onto more rows on a narrow screen, in the theme's own text colour.
st.html(_charts.architecture(rows, zoom=zoom))

with st.container(horizontal=True, gap="medium"):
    with st.container(width=round(540 * zoom)):
        st.subheader(_("Layer by layer"))
        # A static table: every cell's text shown whole, wrapping on a phone rather than cut off.
        st.table(
            pd.DataFrame(
                {
                    _("layer"): [r["layer"] for r in rows],
                    _("operation"): [as_plain_text(r["operation"]) for r in rows],  # "16*5*5" is not Markdown
                    _("output shape"): [" × ".join(str(n) for n in r["output_shape"]) for r in rows],
                    _("parameters"): [number(r["parameters"]) for r in rows],
                }
            ),
            hide_index=True,
        )
    with st.container(width=round(400 * zoom)):
        st.subheader(_("Where the parameters are"))
        st.metric(_("Learnable parameters"), number(sum(r["parameters"] for r in rows)))
        st.altair_chart(_charts.parameters(rows, zoom=zoom), width="stretch")
        st.caption(_("A convolution reuses one small filter all over the image; fc1 connects each of its 400 inputs to each of its "
                     "120 outputs."))

walkthrough = PRESETS["walkthrough"]
words_on_this_page("logits", "loss", "batch", "learning rate", "momentum")
# The formulas are for the curious: the words above say the same for everyone else.
curious = st.toggle(_("For the curious: the formulas"), key="formulas", value=False)
with st.container(horizontal=True, gap="medium"):
    with st.container(width=round(470 * zoom)):
        st.subheader(_("The loss: cross-entropy over 10 classes"))
        st.markdown(_(
            "Softmax turns the 10 scores $z$ into probabilities; the loss is minus the log of the probability "
            "given to the true class $y$:"
        ))
        loss = _("loss")
        if curious:
            st.latex(r"p_k = \frac{e^{z_k}}{\sum_{j=1}^{10} e^{z_j}} \qquad \text{" + loss + r"} = -\log p_y")
        st.markdown(_("A sure and right answer costs 0; guessing (every $p_k = 0.1$) costs $\\ln 10 \\approx 2.30$, "
                      "where training starts."))
    with st.container(width=round(470 * zoom)):
        st.subheader(_("The optimizer: SGD with momentum"))
        st.markdown(_(
            "After each batch, every weight $w$ moves a little against its gradient $g$. The walkthrough uses "
            "**learning rate $\\eta$ = {lr}** and **momentum $\\mu$ = {momentum}**, with batches of "
            "{batch_size} images; momentum keeps part of the previous step, which smooths the path:"
        ).format(lr=walkthrough.lr, momentum=walkthrough.momentum, batch_size=walkthrough.batch_size))
        if curious:
            st.latex(r"v \leftarrow \mu\, v + g \qquad w \leftarrow w - \eta\, v")
        st.markdown(_("The Train page sets these, and offers faster recipes."))

st.header(_("What the first layer learned"))
st.markdown(_("The six 5 × 5 filters of conv1, each scaled to show its range: a trained network's are edges and colour contrasts."))
loaded = choose_model(key="filters-model")
if loaded is not None:
    say_how_it_answers(loaded)
    side = round(120 * zoom)
    filters = [upscale(stretched(weight), side) for weight in loaded.model.conv1.weight]
    with st.container(key="pixels-filters"):
        st.image(filters, caption=[_("filter {number}").format(number=i + 1) for i in range(len(filters))], width=side,
                 output_format="PNG")

pytorch_code(_code.MODEL)
