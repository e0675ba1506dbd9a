"""Classify: a photo in, the network's answer first, then the 32 x 32 image it saw and its ten probabilities.

The answer is honest about what the network is: it knows ten classes and names one of them for anything, so the page
always says so, and calls an answer confident or unsure from the probabilities alone.
"""

import streamlit as st

from lenet.data import CLASSES
from lenet.predict import Prediction
from pages import _charts, _code
from pages._classroom import presenting
from pages._code import pytorch_code
from pages._format import percent, with_article
from pages._i18n import N_, _, bound, class_name, translate
from pages._images import pixelated_style, upscale, with_centre_square
from pages._resources import (
    ANY,
    choose_model,
    class_labels,
    classify_upload,
    new_seed,
    predict_tensor,
    random_batch,
    require_data,
    say_how_it_answers,
)
from pages._router import through_router

through_router()

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif"]
SOURCES = [N_("Upload a photo"), N_("Take a photo"), N_("A test image")]
# How sure the answer is, from the probabilities only: the top one, and its lead over the second.
CONFIDENT_TOP, CONFIDENT_LEAD = 0.7, 0.4
UNSURE_TOP, UNSURE_LEAD = 0.4, 0.15
CONFIDENT, LEANING, UNSURE = "confident", "leaning", "unsure"
# Presentation mode: the answer bigger than any other heading, readable from the back of a classroom.
HUGE_ANSWER = "<style>.st-key-classify-answer h1 { font-size: 4.5rem; line-height: 1.15; }</style>"


def certainty(prediction: Prediction) -> str:
    """CONFIDENT when one class has most of the probability and a clear lead, UNSURE when it is spread out or two
    classes are close, LEANING in between."""
    (_first, top), (_second, runner_up) = prediction.top(2)
    if top >= CONFIDENT_TOP and top - runner_up >= CONFIDENT_LEAD:
        return CONFIDENT
    if top < UNSURE_TOP or top - runner_up < UNSURE_LEAD:
        return UNSURE
    return LEANING


def answer(prediction: Prediction, truth: str | None) -> None:
    """The answer as a heading, huge when presenting, then how sure it is, and for a test image whether it is right."""
    said = _("It says: **{label}** — {probability}").format(label=class_name(prediction.label),
                                                            probability=percent(prediction.confidence, 0))
    with st.container(key="classify-answer"):
        if presenting():
            st.html(HUGE_ANSWER)
        st.markdown(f"{'#' if presenting() else '##'} {said}")
    if truth is not None:
        this_is = _("this is {thing}.").format(thing=with_article(class_name(truth)))
        if truth == prediction.label:
            st.markdown(_(":green[:material/check_circle: **Right**]: {this_is}").format(this_is=this_is))
        else:
            st.markdown(_(":red[:material/cancel: **Wrong**]: {this_is}").format(this_is=this_is))
    (first, top), (second, runner_up), (third, third_p) = prediction.top(3)
    how_sure = certainty(prediction)
    if how_sure == CONFIDENT:
        st.markdown(_(":green-badge[:material/verified: Confident] {top} for {first}; the next class, {second}, gets {runner_up}.").format(
            top=percent(top, 0), first=class_name(first), second=class_name(second), runner_up=percent(runner_up, 0)))
    elif how_sure == LEANING:
        st.markdown(_(":orange-badge[:material/balance: Fairly sure] {top} for {first}, but {second} still gets {runner_up}.").format(
            top=percent(top, 0), first=class_name(first), second=class_name(second), runner_up=percent(runner_up, 0)))
    else:
        st.warning(
            _("**Unsure**: the probability is spread out ({first} {top}, {second} {runner_up}, {third} {third_p}). "
              "Take the answer as a guess.").format(first=class_name(first), top=percent(top, 0), second=class_name(second),
                                                     runner_up=percent(runner_up, 0), third=class_name(third),
                                                     third_p=percent(third_p, 0)),
            icon=":material/help:",
        )
    st.caption(
        _(":material/info: This network knows only these ten classes: {classes}. It names one of them for anything it is "
          "shown, even a photo of something else.").format(classes=", ".join(class_labels()))
    )


def pictures(prediction: Prediction, truth: str | None) -> None:
    """The photo with the square the network used, the 32 x 32 view, the top three and the ten bars: boxes of fixed
    widths that wrap onto new rows where the page is narrow, instead of columns that squeeze their content."""
    big = presenting()
    side = 352 if big else 256  # a whole multiple of 32: the 32 x 32 view is sent at exactly this size
    with st.container(horizontal=True, gap="medium"):
        if truth is None:
            with st.container(width=side):
                st.image(with_centre_square(prediction.image), width="stretch",
                         caption=_("your photo: the network gets the square in the middle"))
        with st.container(width=side, key="pixels-seen"):
            caption = (_("what the network sees: 32 × 32 pixels") if truth is None
                       else _("test image, 32 × 32 pixels: what the network sees"))
            st.image(upscale(prediction.model_input, side), width="stretch", output_format="PNG", caption=caption)
        with st.container(width=520 if big else 400):
            ranked = enumerate(prediction.top(3), start=1)
            top = " · ".join(f"**{rank}.** {class_name(name)} {percent(p, 0)}" for rank, (name, p) in ranked)
            st.markdown(_("Top three: {top}").format(top=top))
            _charts.draw_vega_lite(st, _charts.probabilities(prediction.probabilities, class_labels(), zoom=1.3 if big else 1.0))


def show(prediction: Prediction, truth: str | None = None) -> None:
    answer(prediction, truth)
    pictures(prediction, truth)


st.title(":material/image_search: " + _("Classify"))
pixelated_style(st)
# When presenting, the answer goes straight under the title, above the controls.
answer_area = st.container() if presenting() else None
if not presenting():
    st.markdown(_(
        "Give the network a picture: it is cropped to its centre square and shrunk to **32 × 32 pixels**, the size of "
        "CIFAR-10's images, then the network gives each of the ten classes a probability."
    ))

loaded = choose_model(key="classify-model")
if loaded is None:
    pytorch_code(_code.CLASSIFY)
    st.stop()
say_how_it_answers(loaded)

source = st.segmented_control(_("Picture"), SOURCES, default=SOURCES[0], required=True, format_func=bound(translate), key="source")
prediction, truth = None, None
if source == SOURCES[0]:
    upload = st.file_uploader(_("A photo (JPEG, PNG, WebP, BMP or GIF)"), type=UPLOAD_TYPES, key="upload")
    prediction = classify_upload(loaded, upload) if upload is not None else None
elif source == SOURCES[1]:
    shot = st.camera_input(_("Take a photo"), key="camera")
    prediction = classify_upload(loaded, shot) if shot is not None else None
elif (data := require_data()) is not None:
    with st.container(horizontal=True, vertical_alignment="bottom"):
        chosen = st.selectbox(_("Class"), [ANY, *CLASSES], format_func=bound(class_name), key="test-class", width=220)
        another = st.button(_("Another test image"), icon=":material/shuffle:", type="primary")
    if another or st.session_state.get("test-pick", (None, 0))[0] != chosen:
        st.session_state["test-pick"] = (chosen, new_seed())
    picked = random_batch(data.test, chosen, 1, st.session_state["test-pick"][1])
    prediction, truth = predict_tensor(loaded, picked.images[0]), CLASSES[picked.labels[0]]

if prediction is not None:
    with answer_area if answer_area is not None else st.container():
        show(prediction, truth)

pytorch_code(_code.CLASSIFY)
