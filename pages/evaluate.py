"""Evaluate: how well a trained model does on the 10,000 test images, class by class, and where it goes wrong; and the
model as files to take away (the walkthrough's .pth, ONNX, a training script)."""

import functools
import hashlib
import re

import pandas as pd
import streamlit as st

from lenet.data import CLASSES
from pages import _charts, _code
from pages._classroom import presentation_zoom, presenting, restore_from_url, sync_to_url
from pages._code import pytorch_code
from pages._format import duration, number, percent, points
from pages._i18n import _, bound, class_name
from pages._images import pixelated_style, tiles
from pages._resources import (
    ANY,
    LoadedModel,
    as_plain_text,
    choose_model,
    class_labels,
    evaluation,
    onnx_available,
    onnx_file,
    onnx_ready,
    read_card,
    require_data,
    run_id,
    say_how_it_answers,
    script_file,
    walkthrough_file,
)
from pages._router import through_router

through_router()

COUNTS = [8, 16, 32, 64]
FILTERS = {"mistakes": True, "true": ANY, "predicted": ANY, "count": 16}  # the gallery's filters and their defaults
FILTER_OPTIONS = {"true": [ANY, *CLASSES], "predicted": [ANY, *CLASSES], "count": COUNTS}
GENERATION = "confusion-generation"  # bumped when a filter changes by hand: the chart comes back without a selection


# -- the model card --------------------------------------------------------------------------------


def card_of(loaded: LoadedModel) -> dict | None:
    """The model card next to the checkpoint, else what the checkpoint itself records (a run's recipe and metrics)."""
    card = read_card(loaded.path)
    if card is not None:
        return card
    recipe, metrics = loaded.meta.get("recipe"), loaded.meta.get("metrics") or {}
    if not isinstance(recipe, dict):
        return None
    return {"test_accuracy": metrics.get("test_accuracy"), "recipe": recipe, "run_id": loaded.meta.get("run_id"),
            "data_source": loaded.meta.get("data_source")}


def card_rows(card: dict) -> list[tuple[str, str]]:
    """The card as (what, value) rows a person reads: formatted numbers, words rather than raw JSON."""
    rows = []

    def add(label: str, value) -> None:
        if value not in (None, "", {}):
            rows.append((label, str(value)))

    add(_("Model"), card.get("model"))
    add(_("Parameters"), number(card["parameters"]) if isinstance(card.get("parameters"), int) else None)
    accuracy = card.get("test_accuracy")
    add(_("Test accuracy"), percent(accuracy) if isinstance(accuracy, (int, float)) else None)
    per_class = card.get("per_class_accuracy")
    if isinstance(per_class, dict):
        add(_("Per class"), ", ".join(f"{class_name(name)} {percent(value, 0)}" for name, value in per_class.items()
                                      if name in CLASSES and isinstance(value, (int, float))))
    recipe = card.get("recipe") if isinstance(card.get("recipe"), dict) else {}
    add(_("Recipe"), recipe.get("preset"))
    add(_("Epochs"), recipe.get("epochs"))
    add(_("Batch size"), recipe.get("batch_size"))
    add(_("Optimizer"), optimizer_words(recipe) if recipe.get("optimizer") else None)
    add(_("Learning rate schedule"), schedule_words(recipe) if recipe.get("schedule") else None)
    add(_("Weight decay"), f"{recipe['weight_decay']:g}" if isinstance(recipe.get("weight_decay"), (int, float)) else None)
    add(_("Label smoothing"), f"{recipe['label_smoothing']:g}" if isinstance(recipe.get("label_smoothing"), (int, float)) else None)
    if "augment" in recipe:
        add(_("Augmentation"), augmentation_words(recipe))
    add(_("Normalization"), {"cifar10": _("CIFAR-10's mean and standard deviation"),
                             "walkthrough": _("the walkthrough's: mean 0.5, std 0.5")}.get(recipe.get("normalization")))
    add(_("Seed"), recipe.get("seed"))
    seconds, speed = card.get("train_seconds"), card.get("images_per_second")
    if isinstance(seconds, (int, float)):
        rate = _(", {speed} images/s").format(speed=number(speed)) if isinstance(speed, (int, float)) else ""
        add(_("Training time"), duration(seconds) + rate)
    machine = card.get("machine") if isinstance(card.get("machine"), dict) else {}
    if machine:
        add(_("Machine"), _("{device}, {cores} cores, {threads} training threads").format(
            device=machine.get("device", "?"), cores=machine.get("cpu_count", "?"), threads=machine.get("threads", "?")))
    add(_("Data"), card.get("data_source"))
    versions = card.get("versions") if isinstance(card.get("versions"), dict) else {}
    add(_("Versions"), ", ".join(f"{name} {version}" for name, version in versions.items()))
    add(_("Command"), card.get("command"))
    add(_("Run"), card.get("run_id"))
    return rows


def optimizer_words(recipe: dict) -> str:
    name = {"sgd": "SGD", "adam": "Adam", "adamw": "AdamW", "muon": "SGD"}.get(recipe["optimizer"], str(recipe["optimizer"]))
    words = _("{name}, learning rate {lr:g}").format(name=name, lr=recipe.get("lr", 0))
    if recipe["optimizer"] in ("sgd", "muon") and recipe.get("momentum"):
        words += _(", momentum {momentum:g}").format(momentum=recipe["momentum"]) + (_(", Nesterov") if recipe.get("nesterov") else "")
    if recipe["optimizer"] == "muon":
        muon_lr = recipe.get("muon_lr", 0)
        words = _("Muon for fc1 and fc2 (learning rate {muon_lr:g}); {sgd} for the rest").format(muon_lr=muon_lr, sgd=words)
    return words


def schedule_words(recipe: dict) -> str:
    words = {"constant": _("constant"), "onecycle": _("one-cycle"), "cosine": _("cosine")}.get(recipe["schedule"], str(recipe["schedule"]))
    if recipe["schedule"] != "constant" and recipe.get("warmup"):
        words += _(", {warmup} warm-up").format(warmup=percent(recipe["warmup"], 0))
    return words


def augmentation_words(recipe: dict) -> str:
    if not recipe.get("augment"):
        return _("none")
    if recipe.get("crop_padding"):
        return _("random crops shifted by up to {pixels} pixels, and flips").format(pixels=recipe["crop_padding"])
    return _("random flips")


def model_card(loaded: LoadedModel) -> None:
    card = card_of(loaded)
    if card is None:
        return
    with st.expander(_("Model card: how this model was trained"), icon=":material/badge:"):
        st.table(pd.DataFrame(card_rows(card), columns=[_("What"), _("Value")]), hide_index=True, hide_header=True)


# -- the confusion matrix and the gallery's filters ------------------------------------------------


def chart_key(loaded: LoadedModel) -> str:
    """The confusion matrix's widget key: a new model or a hand-changed filter gives a new chart, which starts with no
    cell selected (a chart's selection cannot be set from the script, only dropped with the chart)."""
    model = hashlib.sha256(loaded.identity.encode()).hexdigest()[:12]
    return f"confusion-{model}-{st.session_state.get(GENERATION, 0)}"


def cell_clicked(key: str, names: list[str]) -> None:
    """A click on a cell chooses its pair in the filters (before they are drawn: a callback, so no widget is both given a
    default and set through the session state)."""
    state = st.session_state.get(key)
    cells = state.selection.get(_charts.CONFUSION_SELECTION) if state is not None else None
    if not cells:
        return  # a double click cleared the selection: the filters stay as they are
    true, predicted = (CLASSES[names.index(cells[0][field])] for field in ("true", "predicted"))
    st.session_state.update({"true": true, "predicted": predicted, "mistakes": true != predicted})


def filters_changed() -> None:
    st.session_state[GENERATION] = st.session_state.get(GENERATION, 0) + 1


def gallery_filters() -> tuple[bool, str, str, int]:
    for key, default in FILTERS.items():  # a shared link's filters, else this session's, else the defaults
        restore_from_url(key, default, options=FILTER_OPTIONS.get(key))
    with st.container(horizontal=True, vertical_alignment="bottom"):
        mistakes_only = st.toggle(_("Mistakes only"), key="mistakes", on_change=filters_changed)
        true_name = st.selectbox(_("True class"), [ANY, *CLASSES], format_func=bound(class_name), key="true", width=220,
                                 on_change=filters_changed)
        predicted_name = st.selectbox(_("Predicted class"), [ANY, *CLASSES], format_func=bound(class_name), key="predicted", width=220,
                                      on_change=filters_changed)
        count = st.select_slider(_("Images"), COUNTS, key="count", width=260, on_change=filters_changed)
    for key, default in FILTERS.items():
        sync_to_url(key, default)
    return mistakes_only, true_name, predicted_name, count


def gallery(result, data, mistakes_only: bool, true_name: str, predicted_name: str, count: int) -> None:
    true = None if true_name == ANY else CLASSES.index(true_name)
    predicted = None if predicted_name == ANY else CLASSES.index(predicted_name)
    indices = result.select(true, predicted, mistakes_only)
    if not len(indices):
        st.info(_("No test image matches these choices."), icon=":material/filter_alt_off:")
        return
    shown = indices[:count].tolist()
    st.caption(_("{matching} images match; the {shown} the network was most sure about come first.").format(
        matching=number(len(indices)), shown=len(shown)))
    captions = []
    for i in shown:
        said = _("said {label} {probability}").format(label=class_name(int(result.predicted[i])),
                                                      probability=percent(float(result.confidence[i]), 0))
        color = "green" if result.labels[i] == result.predicted[i] else "red"
        captions.append(f"**{class_name(int(result.labels[i]))}** :{color}[{said}]")
    side = 160 if presenting() else 128 if len(shown) <= 16 else 96
    with st.container(key="pixels-gallery"):
        st.image(tiles(data.test.images[shown], side), caption=captions, width=side, output_format="PNG")
    st.caption(_("Under each image: its true class, then what the network said and how sure it was (green: right, red: wrong)."))


# -- the model as files ----------------------------------------------------------------------------


def file_stem(loaded: LoadedModel) -> str:
    stem = run_id(loaded) or loaded.path.stem
    return re.sub(r"[^A-Za-z0-9._-]+", "-", stem).strip("-.") or "lenet5"


def downloads(loaded: LoadedModel, accuracy: float) -> None:
    """The chosen model for other code: the .pth and the script are made when their button is clicked; ONNX, which
    takes seconds, is exported by a button of its own first, so that a failure can be said on the page."""
    st.header(_("Take the model with you"))
    st.markdown(_("The same network, for the walkthrough's own code (`net.load_state_dict(torch.load(PATH))` with its "
                  "`Normalize(0.5, 0.5)`: any other normalization is folded into conv1), for any ONNX runtime, or as one "
                  "plain PyTorch script that trains it again."))
    if loaded.model.test_flips:
        st.caption(_("Its test-time flips travel in the ONNX file and the script; a .pth holds weights only, so the "
                     "walkthrough's own test loop sees each image alone and scores a little lower."))
    stem = file_stem(loaded)
    script_name = f"{stem.replace('-', '_').replace('.', '_')}_train.py"
    with st.container(horizontal=True):
        st.download_button(_("Walkthrough .pth"), data=functools.partial(walkthrough_file, loaded), file_name=f"{stem}-walkthrough.pth",
                           mime="application/octet-stream", icon=":material/download:", on_click="ignore", key="download-pth")
        onnx_download(loaded, f"{stem}.onnx")
        st.download_button(_("Training script .py"), data=functools.partial(script_file, loaded, accuracy, script_name),
                           file_name=script_name, mime="text/x-python", icon=":material/download:", on_click="ignore", key="download-py")


def one_line(text: str, longest: int = 200) -> str:
    """The first line of a message, without terminal colour codes (torch.onnx colours its own)."""
    lines = re.sub(r"\x1b\[[0-9;]*m", "", text).strip().splitlines()
    return "".join(ch for ch in lines[0] if ch.isprintable())[:longest] if lines else ""


def onnx_download(loaded: LoadedModel, filename: str) -> None:
    if not onnx_available():
        st.button(_("ONNX"), icon=":material/download:", disabled=True, key="download-onnx",
                  help=_("This server lacks the onnx and onnxscript packages: pip install onnx onnxscript"))
        return
    exported = onnx_ready(loaded)
    if exported is None and st.button(_("Export to ONNX"), icon=":material/build:", key="export-onnx",
                                      help=_("Converting the network takes a few seconds; then it downloads.")):
        with st.spinner(_("Exporting to ONNX…")):
            try:
                exported = onnx_file(loaded)
            except Exception as error:  # noqa: BLE001 - torch.onnx raises many kinds; the page says why in one line
                reason = one_line(str(error)) or type(error).__name__
                st.error(as_plain_text(_("The ONNX export failed: {reason}").format(reason=reason)), icon=":material/error:")
    if exported is not None:
        st.download_button(_("ONNX"), data=exported, file_name=filename, mime="application/octet-stream", icon=":material/download:",
                           on_click="ignore", key="download-onnx")


# -- the page --------------------------------------------------------------------------------------

st.title(":material/fact_check: " + _("Evaluate"))
pixelated_style(st)
if not presenting():
    st.markdown(_(
        "The walkthrough's last chapter: run the network on the **10,000 test images**, which it never saw while training, "
        "and count how often its top class is the true one. Guessing would be right 10% of the time."
    ))

loaded = choose_model(key="evaluate-model")
data = require_data()
if loaded is None or data is None:
    pytorch_code(_code.EVALUATE)
    st.stop()
say_how_it_answers(loaded)
model_card(loaded)

result = evaluation(loaded)
correct = int((result.predicted == result.labels).sum())
over_guessing = _("{points} over guessing").format(points=points(result.accuracy - _charts.CHANCE))
# Each figure as wide as it is, wrapping to the next line when the page is narrow: in three equal columns a projector
# at 150% zoom cut "7,809 of 10,000" and the delta short.
with st.container(horizontal=True, gap="large"):
    st.metric(_("Test accuracy"), percent(result.accuracy), delta=over_guessing, width="content")
    st.metric(_("Right"), _("{correct} of {total}").format(correct=number(correct), total=number(len(result.labels))), width="content")
    st.metric(_("Wrong"), number(len(result.labels) - correct), width="content")

names, zoom = class_labels(), presentation_zoom()
with st.container(horizontal=True, gap="medium"):
    with st.container(width=round(380 * zoom)):
        st.altair_chart(_charts.per_class_accuracy(result.per_class, result.accuracy, names, zoom=zoom), width="stretch")
        best, worst = max(result.per_class, key=result.per_class.get), min(result.per_class, key=result.per_class.get)
        st.caption(_("Easiest: **{best}** ({best_accuracy}). Hardest: **{worst}** ({worst_accuracy}). "
                     "The dashed line: all classes.").format(
            best=class_name(best), best_accuracy=percent(result.per_class[best], 0),
            worst=class_name(worst), worst_accuracy=percent(result.per_class[worst], 0)))
    with st.container(width=round(560 * zoom)):
        key = chart_key(loaded)
        st.altair_chart(_charts.confusion_matrix(result.confusion, names, zoom=zoom), width="stretch", key=key,
                        on_select=functools.partial(cell_clicked, key, names))
        st.caption(_("Row: the true class; column: what the network said. The diagonal holds the right answers."))

st.header(_("Test images and what the network said"))
gallery(result, data, *gallery_filters())
downloads(loaded, result.accuracy)

pytorch_code(_code.EVALUATE)
