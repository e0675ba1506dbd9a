"""Train: choose a recipe and start a run; watch its loss and accuracy live; open, stop and resume runs.

The run trains in the registry's background thread, shared by every browser session: this page only starts,
stops and draws it, so reloading, switching pages or opening a second browser shows the same run going on.
"""

import time

import pandas as pd
import streamlit as st

from lenet.runs import INTERRUPTED, LOADING, STOPPED, RunError, RunInProgress, RunSnapshot
from lenet.train import NORMALIZATIONS, OPTIMIZERS, PRESETS, SCHEDULES, ConfigError, TrainConfig, preset
from pages import _charts, _code
from pages._shared import dataset_service, duration, pytorch_code, registry, through_router

through_router()

PRESET_NOTES = {
    "walkthrough": "The walkthrough exactly: batches of 4, SGD, 2 epochs. About 55% test accuracy; minutes on a CPU.",
    "quick": "A live demo: larger batches, a one-cycle learning rate and label smoothing. Seconds per epoch.",
    "best": "The most LeNet-5 gives: augmentation, weight decay, 60 epochs. Around 75%; takes a while on a CPU.",
}
STATE_COLORS = {"running": "blue", LOADING: "blue", "finished": "green", STOPPED: "orange", INTERRUPTED: "orange", "failed": "red"}
runs = registry()


def watch(run_id: str) -> None:
    st.session_state.run = run_id


def hyperparameters(defaults: TrainConfig, preset_name: str) -> dict:
    """The form's fields, filled with the preset's values (each preset keeps its own widgets)."""

    def key(field: str) -> str:
        return f"{field}-{preset_name}"

    left, right = st.columns(2)
    values = {
        "epochs": left.number_input("Epochs", min_value=1, value=defaults.epochs, step=1, key=key("epochs")),
        "batch_size": right.number_input("Batch size", min_value=1, value=defaults.batch_size, step=1, key=key("batch_size")),
        "lr": left.number_input("Learning rate", min_value=0.0, value=float(defaults.lr), step=0.001, format="%.4f", key=key("lr")),
        "momentum": right.number_input("Momentum", min_value=0.0, value=float(defaults.momentum), step=0.05, format="%.3f",
                                       key=key("momentum")),
        "optimizer": left.selectbox("Optimizer", OPTIMIZERS, index=OPTIMIZERS.index(defaults.optimizer), key=key("optimizer")),
        "seed": right.number_input("Seed", min_value=0, value=defaults.seed, step=1, key=key("seed")),
        "train_subset": st.number_input(
            "Training images (0: all 50,000)", min_value=0, value=defaults.train_subset, step=1000, key=key("train_subset"),
            help="Train on the first images of a fixed shuffle only: 5,000 make a demo of a few seconds per epoch.",
        ),
    }
    with st.expander("Advanced"):
        left, right = st.columns(2)
        values |= {
            "nesterov": left.checkbox("Nesterov momentum", value=defaults.nesterov, key=key("nesterov")),
            "augment": right.checkbox("Augment (crop + flip)", value=defaults.augment, key=key("augment")),
            "weight_decay": left.number_input("Weight decay", min_value=0.0, value=float(defaults.weight_decay), step=1e-4, format="%.5f",
                                              key=key("weight_decay")),
            "label_smoothing": right.number_input("Label smoothing", min_value=0.0, value=float(defaults.label_smoothing), step=0.05,
                                                  format="%.2f", key=key("label_smoothing")),
            "schedule": left.selectbox("Learning-rate schedule", SCHEDULES, index=SCHEDULES.index(defaults.schedule), key=key("schedule")),
            "warmup": right.number_input("Warm-up (share of steps)", min_value=0.0, value=float(defaults.warmup), step=0.05, format="%.2f",
                                         key=key("warmup")),
            "normalization": left.selectbox("Normalization", list(NORMALIZATIONS), index=list(NORMALIZATIONS).index(defaults.normalization),
                                            key=key("normalization")),
            "validation_size": right.number_input("Validation images held out", min_value=0, value=defaults.validation_size, step=1000,
                                                  key=key("validation_size")),
            "device": left.selectbox("Device", ["auto", "cpu", "cuda", "mps"], index=["auto", "cpu", "cuda", "mps"].index(defaults.device),
                                     key=key("device")),
        }
    return values


def start(preset_name: str, values: dict) -> None:
    """Check the settings and the data, then start the run in the background; say why when it cannot start."""
    try:
        config = preset(preset_name, **values).validate()
    except ConfigError as error:
        st.error(f"Not started: {error}", icon=":material/error:")
        return
    service = dataset_service()
    if not service.start_loading():
        st.error(f"Not started: {service.status().message}", icon=":material/folder_off:")
        return
    try:
        watch(runs.start(config))
    except RunInProgress as error:
        st.warning(f"Run {error.run_id} is in progress: only one run trains at a time. Watch it, or stop it first.",
                   icon=":material/hourglass_top:")
        st.button("Watch it", icon=":material/visibility:", on_click=watch, args=(error.run_id,))
    except (ConfigError, RunError) as error:
        st.error(f"Not started: {error}", icon=":material/error:")


def progress_text(run: RunSnapshot) -> str:
    p = run.progress
    epochs = run.config["epochs"]
    if run.state == LOADING:
        return "Loading CIFAR-10…"
    if run.live:
        return (f"Epoch {p.get('epoch', 1)} of {epochs} · step {p.get('step', 0):,} of {p.get('total_steps', 0):,} · "
                f"{p.get('images_per_second', 0):,.0f} images/s · about {duration(p.get('seconds_left'))} left")
    return (f"{run.state.capitalize()} at step {p.get('step', 0):,} of {p.get('total_steps', 0):,} "
            f"after {duration(p.get('train_seconds'))} of training")


def draw_run(run: RunSnapshot) -> None:
    """One run: its state, progress, numbers and curves, and the buttons that apply to it."""
    with st.container(horizontal=True, vertical_alignment="center"):
        st.subheader(f"Run {run.id}")
        st.badge(run.state, color=STATE_COLORS.get(run.state, "gray"))
    if run.error:
        st.error(f"This run failed: {run.error}", icon=":material/error:")
    total = run.progress.get("total_steps") or 1
    st.progress(min(1.0, run.progress.get("step", 0) / total), text=progress_text(run))

    accuracy, loss, speed, elapsed = st.columns(4)
    previous = run.epochs[-2]["test_accuracy"] if len(run.epochs) > 1 else None
    accuracy.metric("Test accuracy", f"{run.test_accuracy:.1%}" if run.test_accuracy is not None else "–",
                    delta=f"{run.test_accuracy - previous:+.1%}" if previous is not None else None)
    loss.metric("Loss (last logged)", f"{run.steps[-1]['loss']:.3f}" if run.steps else "–")
    speed.metric("Images per second", f"{run.progress.get('images_per_second', 0):,.0f}")
    elapsed.metric("Training time", duration(run.progress.get("train_seconds")))

    losses, accuracies = st.columns(2, gap="large")
    loss_spec, accuracy_spec = curves(run.id, curves_version(run), run)
    if run.steps:
        _charts.draw_vega_lite(losses, loss_spec)
    else:
        losses.info("The loss curve appears with the first steps.", icon=":material/hourglass_top:")
    _charts.draw_vega_lite(accuracies, accuracy_spec)

    with st.container(horizontal=True):
        if run.live and st.button("Stop", key="stop", icon=":material/stop_circle:", type="primary"):
            runs.stop(timeout=2.0)  # the loop checks every step; its last checkpoint is kept
            st.rerun()
        resumable = run.state in (INTERRUPTED, STOPPED) and run.checkpoint is not None
        if resumable and st.button("Resume", key="resume", icon=":material/resume:"):
            try:
                runs.resume(run.id)
                st.rerun()
            except RunError as error:
                st.error(f"Cannot resume: {error}", icon=":material/error:")
    with st.expander("Settings of this run"):
        st.dataframe(pd.DataFrame({"setting": list(run.config), "value": [str(v) for v in run.config.values()]}), hide_index=True)


@st.cache_resource(max_entries=16, show_spinner=False)
def curves(run_id: str, version: tuple, _run: RunSnapshot) -> tuple[dict | None, dict]:
    """The run's loss and accuracy charts, built once per version for every session watching: a classroom watching
    a live run would otherwise build them once a second each, and slow the training down."""
    loss = _charts.vega_lite(_charts.loss_curve(_run.steps, _run.progress.get("steps_per_epoch", 1))) if _run.steps else None
    return loss, _charts.vega_lite(_charts.accuracy_curve(_run.epochs, _run.config["epochs"]))


def curves_version(run: RunSnapshot) -> tuple:
    """A live run gains points many times a second, so its charts are rebuilt once a second (every session
    watching draws that second's); an ended run's charts, once."""
    return ("live", int(time.monotonic())) if run.live else (run.state, len(run.steps), len(run.epochs))


@st.fragment(run_every=1.0)
def live_run(run_id: str) -> None:
    """The live run, redrawn every second from the registry; once it ends, the whole page is drawn again."""
    run = runs.snapshot(run_id)
    if not run.live:
        st.rerun()
    draw_run(run)


st.title(":material/model_training: Train")
st.markdown(
    "Training shows the network a **batch** of images, measures how wrong it is (the **loss**), and nudges all 62,006 "
    "weights to be a little less wrong. One pass over the training images is an **epoch**; after each, the network is "
    "tested on the 10,000 test images it never trains on."
)

form_column, run_column = st.columns([1, 2], gap="large")
with form_column:
    st.subheader("New run")
    names = list(PRESETS)
    preset_name = st.selectbox("Preset", names, index=names.index("quick") if "quick" in names else 0, key="preset")
    st.caption(PRESET_NOTES.get(preset_name, ""))
    with st.form("new-run", border=True):
        values = hyperparameters(PRESETS[preset_name], preset_name)
        submitted = st.form_submit_button("Start training", key="start", icon=":material/play_arrow:", type="primary")
    if submitted:
        start(preset_name, values)
    with st.expander("Compare the presets"):
        st.dataframe(pd.DataFrame({name: config.to_dict() for name, config in PRESETS.items()}).astype(str))

with run_column:
    all_runs = runs.list_runs()
    active = runs.active()
    live_id = active.id if active is not None and active.live else None
    if not all_runs:
        st.info("No runs yet: choose a preset and press **Start training**.", icon=":material/model_training:")
    else:
        ids = [run.id for run in all_runs]
        if st.session_state.get("run") not in ids:
            watch(live_id or all_runs[0].id)
        if live_id and st.session_state.run != live_id:
            st.info(f"Run {live_id} is training now.", icon=":material/hourglass_top:")
            st.button("Watch it", icon=":material/visibility:", on_click=watch, args=(live_id,), key="watch-live")
        run_id = st.selectbox("Run", ids, key="run", help="Its name is when it started and its preset")
        selected = next(run for run in all_runs if run.id == run_id)
        if selected.live:
            live_run(run_id)
        else:
            draw_run(selected)

if all_runs:
    st.header("All runs")
    st.dataframe(
        pd.DataFrame(
            {
                "run": [r.id for r in all_runs],
                "state": ["training" if r.live else r.state for r in all_runs],  # its details, live, are above
                "preset": [r.config.get("preset") for r in all_runs],
                "epochs": [f"{len(r.epochs)} of {r.config.get('epochs')}" for r in all_runs],
                "test accuracy": [r.test_accuracy for r in all_runs],
                "training time": [duration(r.progress.get("train_seconds")) for r in all_runs],
                "created": [r.created for r in all_runs],
            }
        ),
        hide_index=True,
        column_config={"test accuracy": st.column_config.NumberColumn(format="percent")},
    )
    st.caption("Open a run with the **Run** box above; stopped and interrupted runs can be resumed from their last checkpoint.")

pytorch_code(_code.TRAIN)
