"""Classify: a photo in, the 32 x 32 image the network sees, and its ten probabilities out."""

import streamlit as st

from lenet.data import CLASSES
from lenet.predict import UNSURE_BELOW, Prediction
from pages import _charts, _code
from pages._code import pytorch_code
from pages._images import upscale
from pages._resources import ANY, choose_model, classify_upload, new_seed, predict_tensor, random_batch, require_data
from pages._router import through_router

through_router()

UPLOAD_TYPES = ["jpg", "jpeg", "png", "webp", "bmp", "gif"]
SOURCES = ["Upload a photo", "Take a photo", "A test image"]


def show(prediction: Prediction, truth: str | None = None) -> None:
    """The photo, what the network sees, and its answer."""
    photo, seen, answer = st.columns([2, 2, 3], gap="large")
    photo.image(upscale(prediction.image, 320) if truth else prediction.image, caption=f"test image: {truth}" if truth else "your photo",
                width=320)
    seen.image(upscale(prediction.model_input, 320), caption="what the network sees: 32 × 32 pixels", width=320)
    with answer:
        st.markdown(f"### It says: **{prediction.label}** ({prediction.confidence:.0%})")
        if truth is not None:
            verdict = ":green[:material/check_circle: **Right**]" if truth == prediction.label else ":red[:material/cancel: **Wrong**]"
            st.markdown(f"{verdict}: this is a **{truth}**.")
        if prediction.unsure:
            st.warning(
                f"The network is unsure: no class reaches {UNSURE_BELOW:.0%}. It knows only CIFAR-10's ten classes "
                f"({', '.join(CLASSES)}), so anything else still gets one of them.",
                icon=":material/help:",
            )
        _charts.draw_vega_lite(st, _charts.probabilities(prediction.probabilities))


st.title(":material/image_search: Classify")
st.markdown(
    "Give the network a picture: it is cropped to its centre square and shrunk to **32 × 32 pixels**, the size of "
    "CIFAR-10's images, then the network gives each of the ten classes a probability."
)

loaded = choose_model(key="classify-model")
if loaded is None:
    pytorch_code(_code.CLASSIFY)
    st.stop()

source = st.segmented_control("Picture", SOURCES, default=SOURCES[0], required=True, key="source")
if source == SOURCES[0]:
    upload = st.file_uploader("A photo (JPEG, PNG, WebP, BMP or GIF)", type=UPLOAD_TYPES, key="upload")
    prediction = classify_upload(loaded, upload) if upload is not None else None
    if prediction is not None:
        show(prediction)
elif source == SOURCES[1]:
    shot = st.camera_input("Take a photo", key="camera")
    prediction = classify_upload(loaded, shot) if shot is not None else None
    if prediction is not None:
        show(prediction)
elif (data := require_data()) is not None:
    with st.container(horizontal=True, vertical_alignment="bottom"):
        chosen = st.selectbox("Class", [ANY, *CLASSES], key="test-class", width=220)
        another = st.button("Another test image", icon=":material/shuffle:", type="primary")
    if another or st.session_state.get("test-pick", (None, 0))[0] != chosen:
        st.session_state["test-pick"] = (chosen, new_seed())
    picked = random_batch(data.test, chosen, 1, st.session_state["test-pick"][1])
    show(predict_tensor(loaded, picked.images[0]), truth=CLASSES[picked.labels[0]])

pytorch_code(_code.CLASSIFY)
