"""The app's Altair charts: plain data in, a chart out, with fonts large enough for a projector.

Colours that sit on the page's background (value labels, reference lines) come from the session's theme, light or
dark: Vega's own default for text and rules is black, unreadable on the dark theme's near-black. `zoom` scales the
fonts and heights for presentation mode.
"""

import copy
import functools
from collections.abc import Sequence

import altair as alt
import pandas as pd
import torch

from lenet.data import CLASSES
from lenet.events import Epoch, Step, Test
from pages._format import number
from pages._i18n import N_, _

CHANCE = 1 / len(CLASSES)
MAX_POINTS = 1500
PERCENT = alt.Axis(format="%")
CHANNEL_COLORS = ["#d62728", "#2ca02c", "#1f77b4"]  # red, green, blue
# Text and lines drawn on the page's background: Streamlit's own text colours, and a grey readable on both.
INK = {"light": "#31333F", "dark": "#FAFAFA"}
MUTED = {"light": "#6B6F80", "dark": "#A3A8B8"}
ABOVE, BELOW = "#2ca02c", "#ff7f0e"  # per-class bars at or above the overall accuracy, and below it


def current_theme() -> str:
    """The session's theme, "light" or "dark" (light until the browser has said, and outside a script run)."""
    import streamlit as st

    try:
        return "dark" if st.context.theme.type == "dark" else "light"
    except Exception:  # noqa: BLE001 - no session: the light theme
        return "light"


def _theme(theme: str | None) -> str:
    return theme if theme in INK else current_theme()


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


def large(chart: alt.TopLevelMixin, zoom: float = 1.0) -> alt.TopLevelMixin:
    return (
        chart.configure_axis(labelFontSize=round(14 * zoom), titleFontSize=round(15 * zoom), labelLimit=round(180 * zoom))
        .configure_legend(labelFontSize=round(14 * zoom), titleFontSize=round(14 * zoom))
        .configure_title(fontSize=round(16 * zoom))
    )


def class_counts(counts: dict[str, list[int]], names: Sequence[str] = CLASSES, zoom: float = 1.0) -> alt.Chart:
    """Images per class, one bar per split: counts is split name -> 10 counts in CLASSES order; names: how to call the classes."""
    rows = [{"class": c, "split": split, "images": n} for split, ns in counts.items() for c, n in zip(names, ns, strict=True)]
    data = pd.DataFrame(rows)
    chart = alt.Chart(data).mark_bar().encode(
        y=alt.Y("class:N", sort=list(names), title=None),
        x=alt.X("images:Q", title=_("images")),
        yOffset="split:N",
        color=alt.Color("split:N", title=_("split")),
        tooltip=[alt.Tooltip("class:N", title=_("class")), alt.Tooltip("split:N", title=_("split")),
                 alt.Tooltip("images:Q", format=",", title=_("images"))],
    )
    return large(chart.properties(height=round(420 * zoom)), zoom)


def pixel_histogram(image: torch.Tensor, title: str, zoom: float = 1.0) -> alt.Chart:
    """Overlaid histograms of a 3 x H x W image's values, one per colour channel, in 32 bins from its lowest to its highest value.

    The same bins relative to the range: an image and its normalized copy draw the same shapes when the change is linear.
    """
    pixels, low, high = image[0].numel(), float(image.min()), float(image.max())
    channels = [_(name) for name in (N_("red"), N_("green"), N_("blue"))]  # the legend's words, in the reader's language
    values = pd.DataFrame({"channel": [c for c in channels for _pixel in range(pixels)], "value": image.flatten().tolist()})
    chart = alt.Chart(values, title=title).mark_bar(opacity=0.55, binSpacing=0).encode(
        x=alt.X("value:Q", bin=alt.Bin(extent=[low, high], step=max(high - low, 1e-6) / 32), title=_("value")),
        y=alt.Y("count():Q", stack=None, title=_("pixels")),
        color=alt.Color("channel:N", scale=alt.Scale(domain=channels, range=CHANNEL_COLORS), title=_("channel")),
        tooltip=[alt.Tooltip("channel:N", title=_("channel")), alt.Tooltip("value:Q", bin=True, title=_("value")),
                 alt.Tooltip("count():Q", title=_("pixels"))],
    )
    return large(chart.properties(height=round(260 * zoom)), zoom)


def parameters(rows: list[dict], theme: str | None = None, zoom: float = 1.0) -> alt.Chart:
    """Learnable parameters per layer (layers without any are left out), each bar labelled with its count."""
    data = pd.DataFrame([r for r in rows if r["parameters"]])
    base = alt.Chart(data).encode(
        y=alt.Y("layer:N", sort=None, title=None),
        # Room on the right for the largest bar's label.
        x=alt.X("parameters:Q", title=_("parameters"), scale=alt.Scale(domain=[0, float(data["parameters"].max()) * 1.3]),
                axis=alt.Axis(tickCount=4)),
        tooltip=[alt.Tooltip("layer:N", title=_("layer")), alt.Tooltip("operation:N", title=_("operation")),
                 alt.Tooltip("parameters:Q", format=",", title=_("parameters"))],
    )
    text = base.mark_text(align="left", dx=4, fontSize=round(14 * zoom), color=INK[_theme(theme)])
    chart = base.mark_bar() + text.encode(text=alt.Text("parameters:Q", format=","))
    return large(chart.properties(height=round(220 * zoom)), zoom)


def loss_curve(steps: list[Step], steps_per_epoch: int, zoom: float = 1.0) -> alt.Chart:
    """Training loss per logged step, with an exponentially smoothed line over it."""
    data = pd.DataFrame({"step": [s.step for s in steps], "epoch": [s.epoch for s in steps], "loss": [s.loss for s in steps],
                         "lr": [s.lr for s in steps]})
    data["epochs"] = data["step"] / max(1, steps_per_epoch)
    data["smoothed"] = data["loss"].ewm(alpha=0.15).mean()
    data = data.iloc[:: max(1, len(data) // MAX_POINTS)]  # a long run redrawn every second stays light for the browser
    base = alt.Chart(data, title=_("Training loss")).encode(
        x=alt.X("epochs:Q", title=_("epoch")),
        tooltip=[
            alt.Tooltip("step:Q", title=_("step")),
            alt.Tooltip("epochs:Q", format=".2f", title=_("epoch")),
            alt.Tooltip("loss:Q", format=".4f", title=_("loss")),
            alt.Tooltip("smoothed:Q", format=".4f", title=_("smoothed")),
            alt.Tooltip("lr:Q", format=".5f", title=_("learning rate")),
        ],
    )
    raw = base.mark_line(opacity=0.35, color="#1f77b4").encode(
        y=alt.Y("loss:Q", scale=alt.Scale(zero=False), title=_("cross-entropy loss")))
    smooth = base.mark_line(strokeWidth=3, color="#ff7f0e").encode(y="smoothed:Q")
    points = base.mark_point(opacity=0, size=80).encode(y="loss:Q")  # invisible, for the tooltips
    return large((raw + smooth + points).properties(height=320), zoom)


def accuracy_curve(measured: list[Epoch | Test], total_epochs: int, test_every: int = 0, zoom: float = 1.0) -> alt.Chart:
    """Test (and validation, when held out) accuracy after each epoch, and every test_every training images inside
    epochs when the run tests that often (at fractional epochs), against chance."""
    test, validation = _("test"), _("validation")  # the legend's words
    rows = [{"epoch": e.epoch, "set": test, "accuracy": e.test_accuracy} for e in measured]
    held_out = [e for e in measured if e.validation_accuracy is not None]
    rows += [{"epoch": e.epoch, "set": validation, "accuracy": e.validation_accuracy} for e in held_out]
    data = pd.DataFrame(rows, columns=["epoch", "set", "accuracy"])
    # Short, whatever the language: a title wider than a narrow column squeezes the plot to nothing.
    title = _("Accuracy while training") if test_every else _("Accuracy after each epoch")
    line = alt.Chart(data, title=title).mark_line(point=alt.OverlayMarkDef(size=90), strokeWidth=3).encode(
        x=alt.X("epoch:Q", scale=alt.Scale(domain=[0, max(1, total_epochs)]), axis=alt.Axis(tickMinStep=1), title=_("epoch")),
        y=alt.Y("accuracy:Q", scale=alt.Scale(domain=[0, 1]), axis=PERCENT, title=_("accuracy")),
        color=alt.Color("set:N", title=None),
        tooltip=[alt.Tooltip("epoch:Q", format=".2~f", title=_("epoch")), alt.Tooltip("set:N", title=_("split")),
                 alt.Tooltip("accuracy:Q", format=".2%", title=_("accuracy"))],
    )
    return large((line + chance_rule()).properties(height=320), zoom)


def true_class_over_epochs(probabilities: dict[str, list[float]], epochs: list[int], zoom: float = 1.0) -> alt.Chart:
    """One line per test image (named by its true class, as shown): the probability each epoch gives that class."""
    rows = [{"class": name, "epoch": epoch, "probability": p} for name, values in probabilities.items()
            for epoch, p in zip(epochs, values, strict=True)]
    data = pd.DataFrame(rows, columns=["class", "epoch", "probability"])
    chart = alt.Chart(data).mark_line(point=True, strokeWidth=2.5).encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1), title=_("epoch")),
        y=alt.Y("probability:Q", scale=alt.Scale(domain=[0, 1]), axis=PERCENT, title=_("probability of the true class")),
        color=alt.Color("class:N", sort=list(probabilities), title=_("class")),
        tooltip=[alt.Tooltip("class:N", title=_("class")), alt.Tooltip("epoch:Q", title=_("epoch")),
                 alt.Tooltip("probability:Q", format=".1%", title=_("probability"))],
    )
    return large(chart.properties(height=round(320 * zoom)), zoom)


def chance_rule() -> alt.Chart:
    """A dashed line at 10%, labelled under it: what guessing gets. Under, because a network's first accuracy points
    sit on or above that line (a label above it was drawn over them)."""
    guessing = _("guessing")
    base = alt.Chart(pd.DataFrame({"chance": [CHANCE], "label": [guessing]})).encode(y="chance:Q")
    rule = base.mark_rule(strokeDash=[6, 4], color="gray").encode(tooltip=alt.Tooltip("chance:Q", format=".0%", title=guessing))
    return rule + base.mark_text(align="left", baseline="top", x=4, dy=3, color="gray", fontSize=13).encode(text="label:N")


def per_class_accuracy(per_class: dict[str, float], overall: float, names: Sequence[str] | None = None, theme: str | None = None,
                       zoom: float = 1.0) -> alt.Chart:
    """Accuracy per class (per_class: CLASSES name -> accuracy), green at or above the overall accuracy, orange below,
    each bar labelled, with a dashed line at the overall accuracy; names: how to call the classes (CLASSES order)."""
    theme = _theme(theme)
    shown = list(names or CLASSES)
    data = pd.DataFrame({"class": [shown[CLASSES.index(c)] for c in per_class], "accuracy": list(per_class.values())})
    base = alt.Chart(data, title=_("Accuracy per class")).encode(
        y=alt.Y("class:N", sort=shown, title=None),
        x=alt.X("accuracy:Q", scale=alt.Scale(domain=[0, 1.12]), axis=alt.Axis(format="%", values=[0, 0.25, 0.5, 0.75, 1]),
                title=_("accuracy")),
        tooltip=[alt.Tooltip("class:N", title=_("class")), alt.Tooltip("accuracy:Q", format=".1%", title=_("accuracy"))],
    )
    bars = base.mark_bar().encode(color=alt.condition(alt.datum.accuracy >= overall, alt.value(ABOVE), alt.value(BELOW)))
    text = base.mark_text(align="left", dx=4, fontSize=round(14 * zoom), color=INK[theme]).encode(text=alt.Text("accuracy:Q", format=".0%"))
    line = alt.Chart(pd.DataFrame({"overall": [overall], "label": [_("all classes")]})).encode(
        x="overall:Q", tooltip=alt.Tooltip("overall:Q", format=".1%", title=_("all classes"))
    )
    rule = line.mark_rule(strokeDash=[6, 4], strokeWidth=2, color=MUTED[theme])
    return large((bars + text + rule).properties(height=round(440 * zoom)), zoom)


CONFUSION_SELECTION = "cell"


def confusion_matrix(confusion: list[list[int]], names: Sequence[str] | None = None, theme: str | None = None,
                     zoom: float = 1.0) -> alt.Chart:
    """Counts of (true, predicted) pairs as a heatmap with the numbers written in; clicking a cell selects the pair
    (the selection holds the pair's names, as given in names).

    On the dark theme the colour scale runs the other way, so empty cells are dark like the page, not white blocks.
    """
    theme = _theme(theme)
    shown = list(names or CLASSES)
    rows = []
    for t, counts in enumerate(confusion):
        total = max(1, sum(counts))
        rows += [{"true": shown[t], "predicted": shown[p], "images": n, "share": n / total} for p, n in enumerate(counts)]
    data = pd.DataFrame(rows)
    cell = alt.selection_point(name=CONFUSION_SELECTION, fields=["true", "predicted"], on="click", clear="dblclick")
    base = alt.Chart(data, title=_("Confusion matrix (click a cell to see its images)")).encode(
        x=alt.X("predicted:N", sort=shown, title=_("predicted class"), axis=alt.Axis(labelAngle=-40, labelOverlap=False)),
        y=alt.Y("true:N", sort=shown, title=_("true class")),
        tooltip=[
            alt.Tooltip("true:N", title=_("true class")),
            alt.Tooltip("predicted:N", title=_("predicted class")),
            alt.Tooltip("images:Q", format=",", title=_("images")),
            alt.Tooltip("share:Q", format=".1%", title=_("of this true class")),
        ],
    )
    dark = theme == "dark"
    rect = base.mark_rect().encode(
        color=alt.Color("share:Q", scale=alt.Scale(scheme="blues", domain=[0, 1], reverse=dark), legend=None),
        opacity=alt.condition(cell, alt.value(1.0), alt.value(0.35)),
    ).add_params(cell)
    # Light text on dark cells: the full cells on the light theme, the nearly empty ones on the dark theme.
    light_text = alt.datum.share > 0.5 if not dark else alt.datum.share <= 0.5
    text = base.mark_text(fontSize=round(14 * zoom)).encode(
        text=alt.Text("images:Q", format="d"), color=alt.condition(light_text, alt.value("white"), alt.value("black"))
    )
    return large((rect + text).properties(height=round(520 * zoom)), zoom)


def probabilities(values: list[float], names: Sequence[str] | None = None, theme: str | None = None, zoom: float = 1.0) -> dict:
    """The ten class probabilities, most probable first, the top one highlighted: a Vega-Lite spec. Only the data
    change from one photo to the next, so the chart is built once (per theme, size and language) and each photo's
    data put into it."""
    data = pd.DataFrame({"class": list(names or CLASSES), "probability": values})
    data["top"] = data["probability"] >= data["probability"].max()
    template = _probabilities_template(_theme(theme), zoom, _("probability"))
    (name,) = template["datasets"]
    return {**template, "datasets": {name: data}}


@functools.cache
def _probabilities_template(theme: str, zoom: float, title: str) -> dict:
    data = pd.DataFrame({"class": list(CLASSES), "probability": [0.1] * len(CLASSES), "top": [False] * len(CLASSES)})
    base = alt.Chart(data).encode(
        y=alt.Y("class:N", sort="-x", title=None),
        x=alt.X("probability:Q", scale=alt.Scale(domain=[0, 1.15]), axis=alt.Axis(format="%", values=[0, 0.25, 0.5, 0.75, 1]),
                title=title),
        tooltip=[alt.Tooltip("class:N", title=" "), alt.Tooltip("probability:Q", format=".2%", title=title)],
    )
    bars = base.mark_bar().encode(color=alt.condition(alt.datum.top, alt.value("#ff7f0e"), alt.value("#1f77b4")))
    text = base.mark_text(align="left", dx=4, fontSize=round(15 * zoom), color=INK[theme])
    labelled = text.encode(text=alt.Text("probability:Q", format=".1%"))
    return vega_lite(large((bars + labelled).properties(height=round(400 * zoom)), zoom))


# The layer diagram: boxes that wrap onto more rows on a narrow screen, their text in the page's own colour and
# their fills translucent, so the same diagram reads on the light and the dark theme.
ARCHITECTURE_CSS = """
<style>
.lenet-layers { display: flex; flex-wrap: wrap; align-items: center; gap: 0.5rem 0.35rem; margin: 0.25rem 0 1rem; }
.lenet-layers .layer { display: flex; flex-direction: column; align-items: center; padding: 0.35rem 0.65rem; border-radius: 0.5rem;
  border: 1px solid rgba(128, 128, 128, 0.45); line-height: 1.35; font-size: %(size)s; white-space: nowrap; }
.lenet-layers .layer b { font-size: 1.05em; }
.lenet-layers .layer small { opacity: 0.8; font-size: 0.85em; }
.lenet-layers .conv { background: rgba(31, 119, 180, 0.22); }
.lenet-layers .fc { background: rgba(255, 127, 14, 0.22); }
.lenet-layers .other { background: rgba(128, 128, 128, 0.14); }
.lenet-layers .arrow { opacity: 0.7; font-size: %(size)s; }
</style>
"""


def architecture(rows: list[dict], zoom: float = 1.0) -> str:
    """LeNet-5's layers (lenet.model.layer_summary) as HTML for st.html: one box per layer with its output's shape and
    parameters, joined by arrows, wrapping onto more rows where the page is narrow."""
    boxes = []
    for row in rows:
        kind = "conv" if row["layer"].startswith("conv") else "fc" if row["layer"].startswith("fc") else "other"
        shape = " × ".join(str(n) for n in row["output_shape"])
        words = _("{count} parameters").format(count=number(row["parameters"]))  # outside the f-string: pybabel finds it
        params = f"<small>{_html(words)}</small>" if row["parameters"] else ""
        boxes.append(f'<div class="layer {kind}"><b>{_html(row["layer"])}</b><span>{shape}</span>{params}</div>')
    size = f"{0.95 * zoom:.2f}rem"
    return ARCHITECTURE_CSS % {"size": size} + '<div class="lenet-layers">' + '<span class="arrow">→</span>'.join(boxes) + "</div>"


def _html(text: str) -> str:
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")
