"""Evaluate: how well a trained model does on the 10,000 test images, class by class, and where it goes wrong."""

import streamlit as st

from lenet.data import CLASSES
from pages import _charts, _code
from pages._code import pytorch_code
from pages._images import labelled_grid
from pages._resources import ANY, choose_model, evaluation, read_card, require_data
from pages._router import through_router

through_router()

st.title(":material/fact_check: Evaluate")
st.markdown(
    "The walkthrough's last chapter: run the network on the **10,000 test images**, which it never saw while training, "
    "and count how often its top class is the true one. Guessing would be right 10% of the time."
)

loaded = choose_model(key="evaluate-model")
data = require_data()
if loaded is None or data is None:
    pytorch_code(_code.EVALUATE)
    st.stop()

card = read_card(loaded.path)
if card is not None:
    with st.expander("Model card: how this model was trained", icon=":material/badge:"):
        st.json(card, expanded=1)

result = evaluation(loaded)
correct = int((result.predicted == result.labels).sum())
overall, right, wrong = st.columns(3)
overall.metric("Test accuracy", f"{result.accuracy:.1%}", delta=f"{result.accuracy - _charts.CHANCE:+.1%} over guessing")
right.metric("Right", f"{correct:,} of {len(result.labels):,}")
wrong.metric("Wrong", f"{len(result.labels) - correct:,}")

per_class, confusion = st.columns([2, 3], gap="large")
with per_class:
    st.altair_chart(_charts.per_class_accuracy(result.per_class, result.accuracy), width="stretch")
    best, worst = max(result.per_class, key=result.per_class.get), min(result.per_class, key=result.per_class.get)
    st.caption(f"Easiest: **{best}** ({result.per_class[best]:.0%}). Hardest: **{worst}** ({result.per_class[worst]:.0%}).")
with confusion:
    clicked = st.altair_chart(_charts.confusion_matrix(result.confusion), width="stretch", on_select="rerun", key="confusion")
    st.caption("Row: the true class; column: what the network said. The diagonal holds the right answers.")

# A click on a cell chooses that pair in the filters below (a new click only, so the boxes stay free to change).
cell = (clicked.selection.get(_charts.CONFUSION_SELECTION) or [None])[0] if clicked else None
if cell is not None and cell != st.session_state.get("last-cell"):
    st.session_state.update(
        {"last-cell": cell, "true": cell["true"], "predicted": cell["predicted"], "mistakes": cell["true"] != cell["predicted"]}
    )

st.header("Test images and what the network said")
with st.container(horizontal=True, vertical_alignment="bottom"):
    mistakes_only = st.toggle("Mistakes only", value=True, key="mistakes")
    true_name = st.selectbox("True class", [ANY, *CLASSES], key="true", width=220)
    predicted_name = st.selectbox("Predicted class", [ANY, *CLASSES], key="predicted", width=220)
    count = st.select_slider("Images", [8, 16, 32, 64], value=16, key="count", width=260)

true = None if true_name == ANY else CLASSES.index(true_name)
predicted = None if predicted_name == ANY else CLASSES.index(predicted_name)
indices = result.select(true, predicted, mistakes_only)
if len(indices):
    st.caption(f"{len(indices):,} images match; the {min(count, len(indices))} the network was most sure about come first.")
    shown = indices[:count]
    captions = [f"{CLASSES[result.labels[i]]}\nsaid {CLASSES[result.predicted[i]]} {result.confidence[i]:.0%}" for i in shown]
    colors = ["#1a7f37" if result.labels[i] == result.predicted[i] else "#cf222e" for i in shown]
    st.image(labelled_grid(data.test.images[shown], captions, colors, columns=8, tile=128))
    st.caption("Under each image: its true class, then what the network said and how sure it was (green: right, red: wrong).")
else:
    st.info("No test image matches these choices.", icon=":material/filter_alt_off:")

pytorch_code(_code.EVALUATE)
