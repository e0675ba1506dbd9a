"""Overview: what LeNet-5 and CIFAR-10 are, the walkthrough's five steps, and where the app stands right now."""

import streamlit as st

from lenet.checkpoint import CheckpointError, default_checkpoint
from lenet.data import CLASSES
from lenet.service import ABSENT, DOWNLOADING, ERROR, LOADING, READY
from pages import _code
from pages._classroom import pin_required, presenting, students_join_panel
from pages._code import pytorch_code
from pages._format import duration, number, percent
from pages._i18n import N_, _, class_name, engine_text
from pages._resources import NO_MODEL, dataset_service, loaded_model, registry, run_labels, stated_accuracy
from pages._router import link, through_router

through_router()

st.title(_("LeNet-5 on CIFAR-10"))
st.markdown(_(
    "A small **convolutional neural network** learns to tell ten kinds of things apart in tiny colour photos. "
    "This app follows the classic PyTorch walkthrough *Training a classifier*, one step per page: "
    "look at the data, build the network, train it, test it, and try it on your own photos."
))

left, right = st.columns(2, gap="large")
with left:
    st.subheader(":material/photo_library: CIFAR-10")
    st.markdown(_(
        "- **{images}** colour images of **32 × 32** pixels\n"
        "- **10 classes**: {classes}\n"
        "- **{train}** for training, **{test}** for testing ({per_class} per class)"
    ).format(images=number(60_000), classes=", ".join(class_name(name) for name in CLASSES), train=number(50_000),
             test=number(10_000), per_class=number(6_000)))
with right:
    st.subheader(":material/account_tree: LeNet-5")
    st.markdown(_(
        "- Yann LeCun's network from 1998, here as in the walkthrough\n"
        "- 2 convolution layers, each followed by max-pooling, then 3 fully connected layers\n"
        "- **{parameters}** learnable numbers (weights and biases); it trains in minutes on a laptop"
    ).format(parameters=number(62_006)))

st.header(_("The five steps"))
STEPS = [
    (N_("1. Import PyTorch and fix the seed"), N_("The same seed gives the same starting weights and shuffles: repeatable runs."),
     "train"),
    (N_("2. Get the data"), N_("Load CIFAR-10, turn pixels into numbers around zero (normalize), look at a batch."), "dataset"),
    (N_("3. Build the model"), N_("Layer by layer: shapes, parameters, the loss and the optimizer."), "model"),
    (N_("4. Train"), N_("Show the network batches of images, measure its loss, nudge every weight; watch it learn live."), "train"),
    (N_("5. Predict"), N_("Test accuracy on images it never saw, where it goes wrong, and your own photos."), "evaluate",
     "classify"),
]
for column, (title, text, *targets) in zip(st.columns(len(STEPS)), STEPS, strict=True):
    with column.container(border=True, height="stretch"):
        st.markdown(f"**{_(title)}**")
        st.caption(_(text))
        for target in targets:
            link(target)

DATASET_STATES = {READY: N_("available"), ABSENT: N_("not here yet"), LOADING: N_("loading"), DOWNLOADING: N_("downloading"),
                  ERROR: N_("error")}


@st.fragment(run_every=2.0)
def status() -> None:
    """Where things stand now, redrawn every two seconds: the dataset, the model, a training run."""
    data, model, training = st.columns(3)
    with data.container(border=True):
        dataset = dataset_service().status()
        st.metric(_("Dataset"), _(DATASET_STATES.get(dataset.state, dataset.state)))
        st.caption(engine_text(dataset.message))
    with model.container(border=True):
        path = default_checkpoint()
        try:
            accuracy = stated_accuracy(loaded_model(path)) if path.is_file() else None
            if not path.is_file():
                value = _("none")
            elif accuracy is None:
                value = _("loaded")
            else:
                value = _("{accuracy} test accuracy").format(accuracy=percent(accuracy))
            st.metric(_("Pretrained model"), value)
            st.caption(f"`{path}`" if path.is_file() else _(NO_MODEL))
        except CheckpointError as error:
            st.metric(_("Pretrained model"), _("unusable"))
            st.caption(engine_text(str(error)))
    with training.container(border=True):
        run = registry().active()
        if run is not None and run.live:
            progress = run.progress
            st.metric(_("Training"), _("epoch {epoch} of {epochs}").format(epoch=progress.epoch, epochs=progress.epochs))
            label = run_labels(registry().list_runs()).get(run.id, run.id)
            st.caption(_("{run} · about {left} left").format(run=label, left=duration(progress.seconds_left)))
            link("train", _("Watch it"))
        else:
            st.metric(_("Training"), _("no run in progress"))
            st.caption(_("Start one on the Train page."))


st.header(_("Right now"))
status()
if pin_required() or presenting():  # a class is here: show it the way in, large enough to scan from the back
    st.header(_("Join from your phone or laptop"))
    with st.container(border=True, width=380):
        students_join_panel(qr_width=320)
pytorch_code(_code.OVERVIEW)
