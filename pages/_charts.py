"""The app's Altair charts: plain data in, a chart out, with fonts large enough for a projector."""

import copy
import functools

import altair as alt
import pandas as pd
import torch

from lenet.data import CLASSES
from lenet.events import Epoch, Step

CHANCE = 1 / len(CLASSES)
MAX_POINTS = 1500
PERCENT = alt.Axis(format="%")
CHANNEL_COLORS = alt.Scale(domain=["red", "green", "blue"], range=["#d62728", "#2ca02c", "#1f77b4"])


def vega_lite(chart: alt.TopLevelMixin) -> dict:
    """The chart as a Vega-Lite spec with its data as DataFrames, for st.vega_lite_chart: a live chart built once
    a second and drawn by every session watching, instead of converted again by each of them."""
    spec = chart.to_dict()
    spec["datasets"] = {name: pd.DataFrame(values) for name, values in spec.get("datasets", {}).items()}
    view = spec.get("config", {}).get("view", {})
    for key in ("continuousWidth", "continuousHeight"):  # Altair's default theme; Streamlit sizes charts itself
        view.pop(key, None)
    if spec.get("config", {}).get("view") == {}:
        del spec["config"]["view"]
    return spec


def draw_vega_lite(container, spec: dict) -> None:
    """Draw a shared spec: Streamlit edits the spec it is given, so each session gets its own copy (the data shared)."""
    own = copy.deepcopy({key: value for key, value in spec.items() if key != "datasets"})
    container.vega_lite_chart({**own, "datasets": dict(spec["datasets"])}, width="stretch")


def large(chart: alt.TopLevelMixin) -> alt.TopLevelMixin:
    return chart.configure_axis(labelFontSize=14, titleFontSize=15).configure_legend(labelFontSize=14, titleFontSize=14)


def class_counts(counts: dict[str, list[int]]) -> alt.Chart:
    """Images per class, one bar per split: counts is split name -> 10 counts in CLASSES order."""
    rows = [{"class": c, "split": split, "images": n} for split, ns in counts.items() for c, n in zip(CLASSES, ns, strict=True)]
    data = pd.DataFrame(rows)
    chart = alt.Chart(data).mark_bar().encode(
        y=alt.Y("class:N", sort=list(CLASSES), title=None),
        x=alt.X("images:Q", title="images"),
        yOffset="split:N",
        color=alt.Color("split:N", title="split"),
        tooltip=["class:N", "split:N", alt.Tooltip("images:Q", format=",")],
    )
    return large(chart.properties(height=420))


def pixel_histogram(image: torch.Tensor, title: str) -> alt.Chart:
    """Overlaid histograms of a 3 x H x W image's values, one per colour channel, in 32 bins from its lowest to its highest value.

    The same bins relative to the range: an image and its normalized copy draw the same shapes when the change is linear.
    """
    pixels, low, high = image[0].numel(), float(image.min()), float(image.max())
    values = pd.DataFrame({"channel": [c for c in ("red", "green", "blue") for _ in range(pixels)], "value": image.flatten().tolist()})
    chart = alt.Chart(values, title=title).mark_bar(opacity=0.55, binSpacing=0).encode(
        x=alt.X("value:Q", bin=alt.Bin(extent=[low, high], step=max(high - low, 1e-6) / 32), title="value"),
        y=alt.Y("count():Q", stack=None, title="pixels"),
        color=alt.Color("channel:N", scale=CHANNEL_COLORS, title="channel"),
        tooltip=["channel:N", alt.Tooltip("value:Q", bin=True), "count()"],
    )
    return large(chart.properties(height=260))


def parameters(rows: list[dict]) -> alt.Chart:
    """Learnable parameters per layer (layers without any are left out)."""
    data = pd.DataFrame([r for r in rows if r["parameters"]])
    base = alt.Chart(data).encode(
        y=alt.Y("layer:N", sort=None, title=None),
        x=alt.X("parameters:Q", title="parameters"),
        tooltip=["layer:N", "operation:N", alt.Tooltip("parameters:Q", format=",")],
    )
    chart = base.mark_bar() + base.mark_text(align="left", dx=4, fontSize=14).encode(text=alt.Text("parameters:Q", format=","))
    return large(chart.properties(height=220))


def loss_curve(steps: list[Step], steps_per_epoch: int) -> alt.Chart:
    """Training loss per logged step, with an exponentially smoothed line over it."""
    data = pd.DataFrame({"step": [s.step for s in steps], "epoch": [s.epoch for s in steps], "loss": [s.loss for s in steps],
                         "lr": [s.lr for s in steps]})
    data["epochs"] = data["step"] / max(1, steps_per_epoch)
    data["smoothed"] = data["loss"].ewm(alpha=0.15).mean()
    data = data.iloc[:: max(1, len(data) // MAX_POINTS)]  # a long run redrawn every second stays light for the browser
    base = alt.Chart(data, title="Training loss").encode(
        x=alt.X("epochs:Q", title="epoch"),
        tooltip=[
            "step:Q",
            alt.Tooltip("epochs:Q", format=".2f", title="epoch"),
            alt.Tooltip("loss:Q", format=".4f"),
            alt.Tooltip("smoothed:Q", format=".4f"),
            alt.Tooltip("lr:Q", format=".5f", title="learning rate"),
        ],
    )
    raw = base.mark_line(opacity=0.35, color="#1f77b4").encode(y=alt.Y("loss:Q", scale=alt.Scale(zero=False), title="cross-entropy loss"))
    smooth = base.mark_line(strokeWidth=3, color="#ff7f0e").encode(y="smoothed:Q")
    points = base.mark_point(opacity=0, size=80).encode(y="loss:Q")  # invisible, for the tooltips
    return large((raw + smooth + points).properties(height=320))


def accuracy_curve(epochs: list[Epoch], total_epochs: int) -> alt.Chart:
    """Test (and validation, when held out) accuracy after each epoch, against chance."""
    rows = [{"epoch": e.epoch, "set": "test", "accuracy": e.test_accuracy} for e in epochs]
    held_out = [e for e in epochs if e.validation_accuracy is not None]
    rows += [{"epoch": e.epoch, "set": "validation", "accuracy": e.validation_accuracy} for e in held_out]
    data = pd.DataFrame(rows, columns=["epoch", "set", "accuracy"])
    line = alt.Chart(data, title="Accuracy after each epoch").mark_line(point=alt.OverlayMarkDef(size=90), strokeWidth=3).encode(
        x=alt.X("epoch:Q", scale=alt.Scale(domain=[0, max(1, total_epochs)]), axis=alt.Axis(tickMinStep=1), title="epoch"),
        y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=PERCENT, title="accuracy"),
        color=alt.Color("set:N", title=None),
        tooltip=["epoch:Q", "set:N", alt.Tooltip("accuracy:Q", format=".2%")],
    )
    return large((line + chance_rule()).properties(height=320))


def chance_rule() -> alt.Chart:
    """A dashed line at 10%, labelled: what guessing gets."""
    base = alt.Chart(pd.DataFrame({"chance": [CHANCE], "label": ["guessing"]})).encode(y="chance:Q")
    rule = base.mark_rule(strokeDash=[6, 4], color="gray").encode(tooltip=alt.Tooltip("chance:Q", format=".0%", title="guessing"))
    return rule + base.mark_text(align="left", baseline="bottom", x=4, dy=-2, color="gray", fontSize=13).encode(text="label:N")


def per_class_accuracy(per_class: dict[str, float], overall: float) -> alt.Chart:
    data = pd.DataFrame({"class": list(per_class), "accuracy": list(per_class.values())})
    base = alt.Chart(data, title="Accuracy per class").encode(
        y=alt.Y("class:N", sort=list(CLASSES), title=None),
        x=alt.X("accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=PERCENT, title="accuracy"),
        tooltip=["class:N", alt.Tooltip("accuracy:Q", format=".1%")],
    )
    bars = base.mark_bar().encode(color=alt.condition(alt.datum.accuracy >= overall, alt.value("#2ca02c"), alt.value("#ff7f0e")))
    text = base.mark_text(align="left", dx=4, fontSize=14).encode(text=alt.Text("accuracy:Q", format=".0%"))
    overall_rule = alt.Chart(pd.DataFrame({"overall": [overall]})).mark_rule(strokeDash=[6, 4]).encode(
        x="overall:Q", tooltip=alt.Tooltip("overall:Q", format=".1%", title="all classes")
    )
    return large((bars + text + overall_rule).properties(height=440))


CONFUSION_SELECTION = "cell"


def confusion_matrix(confusion: list[list[int]]) -> alt.Chart:
    """Counts of (true, predicted) pairs as a heatmap with the numbers written in; clicking a cell selects the pair."""
    rows = []
    for t, counts in enumerate(confusion):
        total = max(1, sum(counts))
        rows += [{"true": CLASSES[t], "predicted": CLASSES[p], "images": n, "share": n / total} for p, n in enumerate(counts)]
    data = pd.DataFrame(rows)
    cell = alt.selection_point(name=CONFUSION_SELECTION, fields=["true", "predicted"], on="click", clear="dblclick")
    base = alt.Chart(data, title="Confusion matrix (click a cell to see its images)").encode(
        x=alt.X("predicted:N", sort=list(CLASSES), title="predicted class", axis=alt.Axis(labelAngle=-40, labelOverlap=False)),
        y=alt.Y("true:N", sort=list(CLASSES), title="true class"),
        tooltip=[
            "true:N",
            "predicted:N",
            alt.Tooltip("images:Q", format=","),
            alt.Tooltip("share:Q", format=".1%", title="of this true class"),
        ],
    )
    rect = base.mark_rect().encode(
        color=alt.Color("share:Q", scale=alt.Scale(scheme="blues", domain=[0, 1]), legend=None),
        opacity=alt.condition(cell, alt.value(1.0), alt.value(0.35)),
    ).add_params(cell)
    text = base.mark_text(fontSize=14).encode(
        text="images:Q", color=alt.condition(alt.datum.share > 0.5, alt.value("white"), alt.value("black"))
    )
    return large((rect + text).properties(height=520))


def probabilities(values: list[float]) -> dict:
    """The ten class probabilities, most probable first, the top one highlighted: a Vega-Lite spec. Only the data
    change from one photo to the next, so the chart is built once and each photo's data put into it."""
    data = pd.DataFrame({"class": list(CLASSES), "probability": values})
    data["top"] = data["probability"] >= data["probability"].max()
    template = _probabilities_template()
    (name,) = template["datasets"]
    return {**template, "datasets": {name: data}}


@functools.cache
def _probabilities_template() -> dict:
    data = pd.DataFrame({"class": list(CLASSES), "probability": [0.1] * len(CLASSES), "top": [False] * len(CLASSES)})
    base = alt.Chart(data).encode(
        y=alt.Y("class:N", sort="-x", title=None),
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=PERCENT, title="probability"),
        tooltip=["class:N", alt.Tooltip("probability:Q", format=".2%")],
    )
    bars = base.mark_bar().encode(color=alt.condition(alt.datum.top, alt.value("#ff7f0e"), alt.value("#1f77b4")))
    text = base.mark_text(align="left", dx=4, fontSize=15).encode(text=alt.Text("probability:Q", format=".1%"))
    return vega_lite(large((bars + text).properties(height=400)))


def architecture(rows: list[dict]) -> str:
    """LeNet-5's layers (lenet.model.layer_summary) as a left-to-right Graphviz diagram with each output's shape."""
    nodes = []
    for i, row in enumerate(rows):
        shape = " × ".join(str(n) for n in row["output_shape"])
        params = f"\\n{row['parameters']:,} params" if row["parameters"] else ""
        fill = "#dbe9f6" if row["layer"].startswith("conv") else "#fde5cc" if row["layer"].startswith("fc") else "#eeeeee"
        nodes.append(f'n{i} [label="{row["layer"]}\\n{shape}{params}", fillcolor="{fill}"];')
    edges = " -> ".join(f"n{i}" for i in range(len(rows)))
    return (
        "digraph { rankdir=LR; ranksep=0.2; nodesep=0.2; pad=0.05; edge [arrowsize=0.6];\n"
        "node [shape=box, style=\"rounded,filled\", fontname=\"Helvetica\", fontsize=14, margin=\"0.08,0.04\"];\n"
        + "\n".join(nodes)
        + f"\n{edges}; }}"
    )
