"""Train: choose a recipe and start a run; watch its loss and accuracy live; open, stop and resume runs.

The run trains in a child process that belongs to the server's registry, shared by every browser session: this page
only starts, stops and draws it, so reloading, switching pages or opening a second browser shows the same run going on.
The form is built from TrainConfig's own option metadata, as the command line's options are.
"""

import time

import pandas as pd
import streamlit as st

from lenet.inference import available_devices
from lenet.runs import (
    DAMAGED,
    FAILED,
    FINISHED,
    INTERRUPTED,
    LOADING,
    RUNNING,
    STOPPED,
    RunError,
    RunInProgress,
    RunSnapshot,
    measured_rate,
)
from lenet.train import PRESETS, ConfigError, TrainConfig, estimated_seconds, preset
from pages import _charts, _code
from pages._code import pytorch_code
from pages._format import duration, percent
from pages._resources import dataset_service, registry, run_labels
from pages._router import through_router

through_router()

PRESET_NOTES = {
    "walkthrough": "The walkthrough exactly: batches of 4, SGD, 2 epochs. About 55% test accuracy; minutes on a CPU.",
    "quick": "A live demo: larger batches, a one-cycle learning rate and label smoothing. Seconds per epoch.",
    "best": "The most LeNet-5 gives: augmentation, weight decay, 60 epochs. Around 75%; takes a while on a CPU.",
}
STATE_COLORS = {RUNNING: "blue", LOADING: "blue", FINISHED: "green", STOPPED: "orange", INTERRUPTED: "orange", FAILED: "red",
                DAMAGED: "red"}
CONFIRM_ABOVE_SECONDS = 5 * 60  # a run expected to take longer asks first: it holds the server's one training slot
runs = registry()


def watch(run_id: str) -> None:
    st.session_state.run = run_id


def option_widget(option, value, key: str):
    """The widget for one TrainConfig option, from its metadata. Numbers have no bounds in the widget: an
    out-of-range value reaches validation, which says in words what is wrong, instead of a silent red mark."""
    meta = option.metadata
    if option.type is bool:
        return st.checkbox(meta["label"], value=value, help=meta["help"], key=key)
    if meta["choices"]:
        choices = available_devices() if option.name == "device" else meta["choices"]  # never offer a missing GPU
        index = choices.index(value) if value in choices else 0
        return st.selectbox(meta["label"], choices, index=index, help=meta["help"], key=key)
    if option.type is int:
        return st.number_input(meta["label"], value=int(value), step=1, help=meta["help"], key=key)
    digits = 5 if option.name == "weight_decay" else 4 if option.name == "lr" else 3
    return st.number_input(meta["label"], value=float(value), step=10 ** -min(digits, 3), format=f"%.{digits}f",
                           help=meta["help"], key=key)


def hyperparameters(defaults: TrainConfig, preset_name: str) -> dict:
    """The form's fields, filled with the preset's values (each preset keeps its own widgets)."""
    basic = [o for o in TrainConfig.options() if not o.metadata["advanced"]]
    advanced = [o for o in TrainConfig.options() if o.metadata["advanced"]]
    values = {}
    columns = st.columns(2)
    for i, option in enumerate(basic):
        with columns[i % 2]:
            values[option.name] = option_widget(option, getattr(defaults, option.name), f"{option.name}-{preset_name}")
    with st.expander("Advanced"):
        columns = st.columns(2)
        for i, option in enumerate(advanced):
            with columns[i % 2]:
                values[option.name] = option_widget(option, getattr(defaults, option.name), f"{option.name}-{preset_name}")
    return values


def start(preset_name: str, values: dict, confirmed: bool = False) -> None:
    """Check the settings and the data, then start the run in the background; say in words why when it cannot start."""
    try:
        config = preset(preset_name, **values)
    except ConfigError as error:
        st.error(f"Not started: {error}", icon=":material/error:")
        return
    problems = config.problems()
    if problems:
        st.error("Not started. " + " ".join(problems.values()), icon=":material/error:")
        return
    seconds = estimated_seconds(config, measured_rate(runs.list_runs(), config))
    if seconds > CONFIRM_ABOVE_SECONDS and not confirmed:
        st.session_state["confirm"] = (preset_name, values)
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


def confirm_long_run() -> None:
    """A run expected to take more than a few minutes asks before it takes the server's one training slot."""
    preset_name, values = st.session_state["confirm"]
    config = preset(preset_name, **values)
    seconds = estimated_seconds(config, measured_rate(runs.list_runs(), config))
    st.warning(f"This run would take about **{duration(seconds)}** ({config.epochs:,} epochs), and while it trains nobody "
               "else on this server can start one. Start it anyway?", icon=":material/schedule:")
    go, cancel = st.columns(2)
    if go.button("Start anyway", key="confirm-start", icon=":material/play_arrow:", type="primary"):
        del st.session_state["confirm"]
        start(preset_name, values, confirmed=True)
    if cancel.button("Cancel", key="confirm-cancel"):
        del st.session_state["confirm"]
        st.rerun()


def progress_text(run: RunSnapshot) -> str:
    p = run.progress
    if run.state == LOADING:
        return "Loading CIFAR-10…"
    if run.live:
        return (f"Epoch {p.epoch} of {p.epochs} · step {p.step:,} of {p.total_steps:,} · "
                f"{p.images_per_second:,.0f} images/s · about {duration(p.seconds_left)} left")
    return f"{run.state.capitalize()} at step {p.step:,} of {p.total_steps:,} after {duration(p.train_seconds)} of training"


def draw_run(run: RunSnapshot, label: str) -> None:
    """One run: its state, progress, numbers and curves, and the buttons that apply to it."""
    with st.container(horizontal=True, vertical_alignment="center"):
        st.subheader(label)
        st.badge(run.state, color=STATE_COLORS.get(run.state, "gray"))
    if run.error:
        st.error(f"This run {'is damaged' if run.state == DAMAGED else 'failed'}: {run.error}", icon=":material/error:")
    if run.stalled_for is not None:
        st.warning(f"No progress for {duration(run.stalled_for)}: the training process may be stalled or starved of CPU.",
                   icon=":material/hourglass_disabled:")
    st.progress(run.progress.fraction, text=progress_text(run))

    accuracy, loss, speed, elapsed = st.columns(4)
    previous = run.epochs[-2].test_accuracy if len(run.epochs) > 1 else None
    accuracy.metric("Test accuracy", percent(run.test_accuracy),
                    delta=f"{(run.test_accuracy - previous) * 100:+.1f} points" if previous is not None else None)
    loss.metric("Loss (last logged)", f"{run.steps[-1].loss:.3f}" if run.steps else "–")
    speed.metric("Images per second", f"{run.progress.images_per_second:,.0f}")
    elapsed.metric("Training time", duration(run.progress.train_seconds))

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
        resumable = run.state in (INTERRUPTED, STOPPED, FAILED) and run.checkpoint is not None
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
    loss = _charts.vega_lite(_charts.loss_curve(_run.steps, _run.progress.steps_per_epoch or 1)) if _run.steps else None
    return loss, _charts.vega_lite(_charts.accuracy_curve(_run.epochs, _run.progress.epochs))


def curves_version(run: RunSnapshot) -> tuple:
    """A live run gains points many times a second, so its charts are rebuilt once a second (every session
    watching draws that second's); an ended run's charts, once."""
    return ("live", int(time.monotonic())) if run.live else (run.state, len(run.steps), len(run.epochs))


@st.fragment(run_every=1.0)
def live_run(run_id: str, label: str) -> None:
    """The live run, redrawn every second from the registry; once it ends, the whole page is drawn again."""
    run = runs.snapshot(run_id)
    if not run.live:
        st.rerun()
    draw_run(run, label)


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
    if "confirm" in st.session_state:
        confirm_long_run()
    with st.expander("Compare the presets"):
        st.dataframe(pd.DataFrame({name: config.to_dict() for name, config in PRESETS.items()}).astype(str))

with run_column:
    all_runs = runs.list_runs()
    labels = run_labels(all_runs)
    active = runs.active()
    live_id = active.id if active is not None and active.live else None
    if not all_runs:
        st.info("No runs yet: choose a preset and press **Start training**.", icon=":material/model_training:")
    else:
        ids = [run.id for run in all_runs]
        if st.session_state.get("run") not in ids:
            watch(live_id or all_runs[0].id)
        if live_id and st.session_state.run != live_id:
            st.info(f"{labels.get(live_id, live_id)} is training now.", icon=":material/hourglass_top:")
            st.button("Watch it", icon=":material/visibility:", on_click=watch, args=(live_id,), key="watch-live")
        run_id = st.selectbox("Run", ids, key="run", format_func=lambda i: labels.get(i, i),
                              help="Runs are numbered in the order they started; each shows its preset and test accuracy")
        selected = next(run for run in all_runs if run.id == run_id)
        if selected.live:
            live_run(run_id, labels[run_id])
        else:
            draw_run(selected, labels[run_id])

if all_runs:
    st.header("All runs")
    st.dataframe(
        pd.DataFrame(
            {
                "run": [labels[r.id] for r in all_runs],
                "state": ["training" if r.live else r.state for r in all_runs],  # its details, live, are above
                "epochs": [f"{len(r.epochs)} of {r.config.get('epochs')}" for r in all_runs],
                "test accuracy": [percent(r.test_accuracy) for r in all_runs],
                "training time": [duration(r.progress.train_seconds) if r.progress.train_seconds else "–" for r in all_runs],
                "started": [r.created.replace("T", " ")[:16] for r in all_runs],
                "folder": [r.id for r in all_runs],
            }
        ),
        hide_index=True,
    )
    st.caption("Open a run with the **Run** box above; stopped and interrupted runs can be resumed from their last checkpoint.")

pytorch_code(_code.TRAIN)
