"""Overview: what LeNet-5 and CIFAR-10 are, the walkthrough's five steps, and where the app stands right now."""

import streamlit as st

from lenet.checkpoint import CheckpointError, default_checkpoint
from lenet.data import CLASSES
from lenet.service import READY
from pages import _code
from pages._classroom import pin_required, presenting, students_join_panel
from pages._code import pytorch_code
from pages._format import duration
from pages._i18n import _
from pages._resources import NO_MODEL, dataset_service, loaded_model, registry, run_labels, stated_accuracy
from pages._router import link, through_router

through_router()

st.title("LeNet-5 on CIFAR-10")
st.markdown(
    "A small **convolutional neural network** learns to tell ten kinds of things apart in tiny colour photos. "
    "This app follows the classic PyTorch walkthrough *Training a classifier*, one step per page: "
    "look at the data, build the network, train it, test it, and try it on your own photos."
)

left, right = st.columns(2, gap="large")
with left:
    st.subheader(":material/photo_library: CIFAR-10")
    st.markdown(
        f"- **60,000** colour images of **32 × 32** pixels\n"
        f"- **10 classes**: {', '.join(CLASSES)}\n"
        "- **50,000** for training, **10,000** for testing (6,000 per class)"
    )
with right:
    st.subheader(":material/account_tree: LeNet-5")
    st.markdown(
        "- Yann LeCun's network from 1998, here as in the walkthrough\n"
        "- 2 convolution layers, each followed by max-pooling, then 3 fully connected layers\n"
        "- **62,006** learnable numbers (weights and biases); it trains in minutes on a laptop"
    )

st.header("The five steps")
STEPS = [
    ("1. Import PyTorch and fix the seed", "The same seed gives the same starting weights and shuffles: repeatable runs.", "train"),
    ("2. Get the data", "Load CIFAR-10, turn pixels into numbers around zero (normalize), look at a batch.", "dataset"),
    ("3. Build the model", "Layer by layer: shapes, parameters, the loss and the optimizer.", "model"),
    ("4. Train", "Show the network batches of images, measure its loss, nudge every weight; watch it learn live.", "train"),
    ("5. Predict", "Test accuracy on images it never saw, where it goes wrong, and your own photos.", "evaluate", "classify"),
]
for column, (title, text, *targets) in zip(st.columns(len(STEPS)), STEPS, strict=True):
    with column.container(border=True, height="stretch"):
        st.markdown(f"**{title}**")
        st.caption(text)
        for target in targets:
            link(target)


@st.fragment(run_every=2.0)
def status() -> None:
    """Where things stand now, redrawn every two seconds: the dataset, the model, a training run."""
    data, model, training = st.columns(3)
    with data.container(border=True):
        dataset = dataset_service().status()
        st.metric("Dataset", "available" if dataset.state == READY else dataset.state)
        st.caption(dataset.message)
    with model.container(border=True):
        path = default_checkpoint()
        try:
            accuracy = stated_accuracy(loaded_model(path)) if path.is_file() else None
            value = "none" if not path.is_file() else "loaded" if accuracy is None else f"{accuracy:.1%} test accuracy"
            st.metric("Pretrained model", value)
            st.caption(f"`{path}`" if path.is_file() else NO_MODEL)
        except CheckpointError as error:
            st.metric("Pretrained model", "unusable")
            st.caption(str(error))
    with training.container(border=True):
        run = registry().active()
        if run is not None and run.live:
            progress = run.progress
            st.metric("Training", f"epoch {progress.epoch} of {progress.epochs}")
            label = run_labels(registry().list_runs()).get(run.id, run.id)
            st.caption(_("{run} · about {left} left").format(run=label, left=duration(progress.seconds_left)))
            link("train", "Watch it")
        else:
            st.metric("Training", "no run in progress")
            st.caption("Start one on the Train page.")


st.header("Right now")
status()
if pin_required() or presenting():  # a class is here: show it the way in, large enough to scan from the back
    st.header(_("Join from your phone or laptop"))
    with st.container(border=True, width=380):
        students_join_panel(qr_width=320)
pytorch_code(_code.OVERVIEW)
