"""Train: choose a recipe and start a run; watch its loss, accuracy and the network's inside live; stop, resume,
delete and compare runs.

The run trains in a child process that belongs to the server's registry, shared by every browser session: this page
only starts, stops and draws it, so reloading, switching pages or opening a second browser shows the same run going on.
With a teacher PIN set, only the teacher's session gets the controls; students see the same run, read-only.
The form is built from TrainConfig's own option metadata, as the command line's options are.
"""

import base64
import io
import time

import altair as alt
import pandas as pd
import streamlit as st

from lenet.checkpoint import default_checkpoint
from lenet.classroom import KEEP_NEWEST_RUNS, RunBusy, delete_run, prune_runs, read_actions, record_action, runs_limit_bytes
from lenet.events import LiveView
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
from lenet.train import MAX_EPOCHS, PRESETS, ConfigError, TrainConfig, estimated_seconds, preset
from pages import _charts, _code
from pages._classroom import (
    forget_in_url,
    is_teacher,
    pin_required,
    presentation_zoom,
    presenting,
    restore_from_url,
    show_run,
    shown_run,
    sync_to_url,
    teacher_controls_note,
    who,
)
from pages._code import pytorch_code
from pages._format import duration, local_time, number, percent, points
from pages._glossary import words_on_this_page
from pages._i18n import DEFAULT, N_, _, bound, class_name, engine_text, language, translate
from pages._images import stretched, to_pil, upscale
from pages._resources import dataset_service, registry, run_labels
from pages._router import through_router

through_router()

STATE_COLORS = {RUNNING: "blue", LOADING: "blue", FINISHED: "green", STOPPED: "orange", INTERRUPTED: "orange", FAILED: "red",
                DAMAGED: "red"}
CONFIRM_ABOVE_SECONDS = 5 * 60  # a run expected to take longer asks first: it holds the server's one training slot
DEFAULT_PRESET = "quick" if "quick" in PRESETS else next(iter(PRESETS))
PRESENTED_CHART_HEIGHT = 460  # charts on a projector
SETTING_PARAMS = [option.name for option in TrainConfig.options()]  # in the URL: ?preset=quick&epochs=5&lr=0.05
runs = registry()


def preset_note(name: str) -> str:
    notes = {
        "walkthrough": _("The walkthrough exactly: batches of 4, SGD, 2 epochs. About 55% test accuracy; minutes on a CPU."),
        "quick": _("A live demo: larger batches, a one-cycle learning rate and label smoothing. Seconds per epoch."),
        "best": _("The most LeNet-5 gives: augmentation, weight decay, 200 epochs, and each test image seen mirrored too. "
                  "About 78%; a quarter of an hour on a 2-core CPU."),
        "frugal": _("As much as possible from few images: 40,000 training images seen once, with the Muon optimizer for "
                    "the hidden layers; the test accuracy measured every 10,000 (each test image seen mirrored too). About 58%."),
    }
    return notes.get(name, "")


def setting_label(name: str) -> str:
    """A setting as a table names it: in English as the command line and run folders do ("batch_size"), in another
    language by its option's label ("배치 크기")."""
    if language() == DEFAULT:
        return name
    options = {option.name: option.metadata["label"] for option in TrainConfig.options()}
    return _(options[name]) if name in options else _("Preset") if name == "preset" else name


# The choices' words (the command line's, in the URL too) that read as English words; the others are names (sgd, adam).
CHOICE_WORDS = {"constant": N_("constant"), "onecycle": N_("one-cycle"), "cosine": N_("cosine"), "auto": N_("automatic")}


def choice_words(value: str, language_code: str | None = None) -> str:
    """A choice as the page shows it: as the command line writes it, followed in other languages by its meaning."""
    if (language_code or language()) == DEFAULT or value not in CHOICE_WORDS:
        return value
    return f"{translate(CHOICE_WORDS[value], language_code)} ({value})"


def setting_value(value) -> str:
    """A setting's value as a table shows it: as the run's config.json writes it in English; in another language
    switches as on/off and choices in words."""
    if language() == DEFAULT:
        return str(value)
    if isinstance(value, bool):
        return _("on") if value else _("off")
    return choice_words(value) if isinstance(value, str) else str(value)


def who_words(who: str) -> str:
    """Who acted, as the run's record keeps it ("teacher", "session 3fa2c1"), in the session's language."""
    if who == "teacher":
        return _("teacher")
    if who.startswith("session "):
        return _("session {tag}").format(tag=who.removeprefix("session "))
    return who


def state_word(state: str) -> str:
    words = {FINISHED: _("finished"), STOPPED: _("stopped"), FAILED: _("failed"), INTERRUPTED: _("interrupted"),
             RUNNING: _("running"), LOADING: _("loading data"), DAMAGED: _("damaged")}
    return words.get(state, state)


# -- who controls ----------------------------------------------------------------------------------


def controls() -> bool:
    """Whether this session starts, stops, resumes and deletes runs: everyone without a PIN, else only the teacher."""
    return is_teacher()


def mode_note() -> None:
    if not pin_required():
        st.caption(":material/group: " + _("Single-user mode: no teacher PIN is set, so everyone who opens this app can start, "
                     "stop and delete runs. Set `LENET_TEACHER_PIN` to give the controls to a teacher."))
    elif is_teacher():
        st.caption(":material/school: " + _("You are the teacher: only you start, stop, resume and delete runs, and the class "
                     "follows the run you open here."))
    else:
        teacher_controls_note()


def watch(run_id: str) -> None:
    st.session_state.run = run_id
    show_run(run_id)  # the teacher's pick is the class's


def following() -> bool:
    """A student who follows the teacher sees the run the teacher opened (the default, unless a link named a run)."""
    if controls():
        return False
    if "follow" not in st.session_state:
        st.session_state.follow = "run" not in st.query_params
    return st.session_state.follow


# -- a new run -------------------------------------------------------------------------------------


def option_widget(option, value, key: str):
    """The widget for one TrainConfig option, from its metadata. Numbers have no bounds in the widget: an
    out-of-range value reaches validation, which says in words what is wrong, instead of a silent red mark.
    Its value starts from the URL when a shared link sets it (the URL names the option: ?epochs=5)."""
    meta = option.metadata
    label, help_text = (_(text) for text in (meta["label"], meta["help"]))  # lenet's English, marked for the catalogs in lenet/train.py
    if option.type is bool:
        restore_from_url(key, bool(value), param=option.name)
        return st.checkbox(label, help=help_text, key=key)
    if meta["choices"]:
        choices = list(available_devices() if option.name == "device" else meta["choices"])  # never offer a missing GPU
        restore_from_url(key, value if value in choices else choices[0], options=choices, param=option.name)
        return st.selectbox(label, choices, format_func=bound(choice_words), help=help_text, key=key)
    if option.type is int:
        restore_from_url(key, int(value), param=option.name)
        return st.number_input(label, step=1, help=help_text, key=key)
    digits = 5 if option.name == "weight_decay" else 4 if option.name == "lr" else 3
    restore_from_url(key, float(value), param=option.name)
    return st.number_input(label, step=10 ** -min(digits, 3), format=f"%.{digits}f", help=help_text, key=key)


def hyperparameters(defaults: TrainConfig, preset_name: str) -> dict:
    """The form's fields, filled with the preset's values (each preset keeps its own widgets); every value that
    differs from the preset's goes into the URL, so a copied link opens the same settings."""
    basic = [o for o in TrainConfig.options() if not o.metadata["advanced"]]
    advanced = [o for o in TrainConfig.options() if o.metadata["advanced"]]
    values = {}
    columns = st.columns(2)
    for i, option in enumerate(basic):
        with columns[i % 2]:
            values[option.name] = option_widget(option, getattr(defaults, option.name), f"{option.name}-{preset_name}")
    with st.expander(_("Advanced")):
        columns = st.columns(2)
        for i, option in enumerate(advanced):
            with columns[i % 2]:
                values[option.name] = option_widget(option, getattr(defaults, option.name), f"{option.name}-{preset_name}")
    for option in TrainConfig.options():
        sync_to_url(f"{option.name}-{preset_name}", default=getattr(defaults, option.name), param=option.name)
    return values


def estimate(preset_name: str, values: dict) -> tuple[TrainConfig | None, float | None]:
    """The config these settings make and about how long it would train here; (None, None) while they are not valid."""
    try:
        config = preset(preset_name, **values)
    except ConfigError:
        return None, None
    if config.problems():
        return config, None
    return config, estimated_seconds(config, measured_rate(runs.list_runs(), config))


def start(preset_name: str, values: dict, confirmed: bool = False) -> None:
    """Check the settings and the data, then start the run in the background; say in words why when it cannot start."""
    try:
        config = preset(preset_name, **values)
    except ConfigError as error:
        st.error(_("Not started: {reason}").format(reason=engine_text(str(error))), icon=":material/error:")
        return
    problems = config.problems()
    if problems:
        st.error(_("Not started.") + " " + " ".join(engine_text(problem) for problem in problems.values()), icon=":material/error:")
        return
    seconds = estimated_seconds(config, measured_rate(runs.list_runs(), config))
    if seconds > CONFIRM_ABOVE_SECONDS and not confirmed:
        st.session_state["confirm"] = (preset_name, values)
        return
    service = dataset_service()
    if not service.start_loading():
        st.error(_("Not started: {reason}").format(reason=engine_text(service.status().message)), icon=":material/folder_off:")
        return
    prune()  # room for the new run's files
    try:
        run_id = runs.start(config)
    except RunInProgress as error:
        st.warning(_("Run {run_id} is in progress: only one run trains at a time. Watch it, or stop it first.").format(
            run_id=error.run_id), icon=":material/hourglass_top:")
        st.button(_("Watch it"), icon=":material/visibility:", on_click=watch, args=(error.run_id,))
        return
    except (ConfigError, RunError) as error:
        st.error(_("Not started: {reason}").format(reason=engine_text(str(error))), icon=":material/error:")
        return
    record(run_id, "start")
    watch(run_id)


def confirm_long_run() -> None:
    """A run expected to take more than a few minutes asks before it takes the server's one training slot."""
    preset_name, values = st.session_state["confirm"]
    config = preset(preset_name, **values)
    seconds = estimated_seconds(config, measured_rate(runs.list_runs(), config))
    st.warning(_("This run would take about **{time}** ({epochs} epochs), and while it trains nobody else on this server "
                 "can start one. Start it anyway?").format(time=duration(seconds), epochs=number(config.epochs)),
               icon=":material/schedule:")
    go, cancel = st.columns(2)
    if go.button(_("Start anyway"), key="confirm-start", icon=":material/play_arrow:", type="primary"):
        del st.session_state["confirm"]
        start(preset_name, values, confirmed=True)
    if cancel.button(_("Cancel"), key="confirm-cancel"):
        del st.session_state["confirm"]
        st.rerun()


def new_run_form() -> None:
    """The preset, its settings, the estimated time (redrawn as they change) and the Start button."""
    st.subheader(_("New run"))
    names = list(PRESETS)
    preset_name = restore_from_url("preset", DEFAULT_PRESET, options=names)
    # Another preset's settings leave the URL with it: they are not this one's.
    preset_name = st.selectbox(_("Preset"), names, key="preset", on_change=forget_in_url, args=(SETTING_PARAMS,))
    sync_to_url("preset", default=DEFAULT_PRESET)
    st.caption(preset_note(preset_name))
    with st.container(border=True):
        values = hyperparameters(PRESETS[preset_name], preset_name)
        config, seconds = estimate(preset_name, values)
        if seconds is not None:
            st.caption(":material/schedule: " + _("About **{time}** on this machine ({images} images × {epochs} epochs).").format(
                time=duration(seconds), images=number(min(config.train_subset or 50_000, 50_000 - config.validation_size)),
                epochs=number(config.epochs)))
        else:
            st.caption(":material/schedule: " + _("The time it takes shows here once the settings are valid."))
        clicked = st.button(_("Start training"), key="start", icon=":material/play_arrow:", type="primary")
    if clicked:
        start(preset_name, values)
    if "confirm" in st.session_state:
        confirm_long_run()
    st.caption(_("Limits: at most {epochs} epochs; a run expected to take over {minutes} minutes asks first; the runs "
                 "folder is kept under {megabytes} MB by deleting the oldest ended runs (never the newest {keep}, a "
                 "training run or the default model).").format(epochs=number(MAX_EPOCHS), minutes=CONFIRM_ABOVE_SECONDS // 60,
                                                                megabytes=number(runs_limit_bytes() // 2**20), keep=KEEP_NEWEST_RUNS))
    with st.expander(_("Compare the presets")):
        names = list(TrainConfig().to_dict())
        st.dataframe(pd.DataFrame({preset_name: [setting_value(config.to_dict()[name]) for name in names]
                                   for preset_name, config in PRESETS.items()}, index=[setting_label(name) for name in names]))


# -- one run ---------------------------------------------------------------------------------------


def record(run_id: str, action: str) -> None:
    """Keep who started or stopped a run, in the run's folder; a run that cannot be written to is said so elsewhere."""
    try:
        record_action(runs.runs_dir / run_id, action, who())
    except OSError:
        pass


def protected() -> list:
    """What pruning and deleting never touch: the model the app uses by default, and the run training now."""
    active = runs.active()
    return [default_checkpoint()] + ([active.id] if active is not None and active.live else [])


def prune() -> None:
    """Keep the runs folder within its limit; called when a run starts and when one ends."""
    prune_runs(runs.runs_dir, runs_limit_bytes(), KEEP_NEWEST_RUNS, protect=protected())


def progress_text(run: RunSnapshot) -> str:
    p = run.progress
    if run.state == LOADING:
        return _("Loading CIFAR-10…")
    if run.live:
        return _("Epoch {epoch} of {epochs} · step {step} of {steps} · {speed} images/s · about {left} left").format(
            epoch=p.epoch, epochs=p.epochs, step=number(p.step), steps=number(p.total_steps),
            speed=number(p.images_per_second), left=duration(p.seconds_left))
    return _("{state} at step {step} of {steps} after {time} of training").format(
        state=state_word(run.state).capitalize(), step=number(p.step), steps=number(p.total_steps), time=duration(p.train_seconds))


def history_text(run: RunSnapshot) -> str | None:
    """Who started and stopped the run and when, in one line: "Started by teacher at 14:02:11 · stopped by …"."""
    words = {"start": _("started by {who} at {when}"), "stop": _("stopped by {who} at {when}"),
             "resume": _("resumed by {who} at {when}")}
    parts = [words[a.action].format(who=who_words(a.who), when=local_time(a.when)) for a in read_actions(run.folder)]
    line = " · ".join(parts)
    return line[:1].upper() + line[1:] if parts else None


def presented(spec: dict) -> dict:
    """A chart as drawn on a projector: taller (its type is made larger where it is built, with presentation_zoom())."""
    return {**spec, "height": PRESENTED_CHART_HEIGHT} if presenting() else spec


def stop_run(run_id: str) -> None:
    record(run_id, "stop")
    runs.stop(timeout=2.0)  # the loop checks every step; its last checkpoint is kept


def draw_run(run: RunSnapshot, label: str) -> None:
    """One run: its state, progress, numbers and curves, what is inside the network, and the buttons for it."""
    with st.container(horizontal=True, vertical_alignment="center"):
        st.subheader(label)
        st.badge(state_word(run.state), color=STATE_COLORS.get(run.state, "gray"))
    if run.error:
        message = _("This run is damaged: {error}") if run.state == DAMAGED else _("This run failed: {error}")
        st.error(message.format(error=engine_text(run.error)), icon=":material/error:")
    if run.stalled_for is not None:
        st.warning(_("No progress for {time}: the training process may be stalled or starved of CPU.").format(
            time=duration(run.stalled_for)), icon=":material/hourglass_disabled:")
    st.progress(run.progress.fraction, text=progress_text(run))
    metrics(run)

    losses, accuracies = st.columns(2, gap="large")
    loss_spec, accuracy_spec = curves(run.id, curves_version(run), language(), presentation_zoom(), run)
    if run.steps:
        _charts.draw_vega_lite(losses, presented(loss_spec))
    else:
        losses.info(_("The loss curve appears with the first steps."), icon=":material/hourglass_top:")
    _charts.draw_vega_lite(accuracies, presented(accuracy_spec))
    if run.live or run.live_view is not None:
        inside_now(run)

    if controls():
        with st.container(horizontal=True):
            if run.live and st.button(_("Stop"), key="stop", icon=":material/stop_circle:", type="primary"):
                stop_run(run.id)
                st.rerun()
            resumable = run.state in (INTERRUPTED, STOPPED, FAILED) and run.checkpoint is not None
            if resumable and st.button(_("Resume"), key="resume", icon=":material/resume:"):
                try:
                    runs.resume(run.id)
                    record(run.id, "resume")
                    st.rerun()
                except RunError as error:
                    st.error(_("Cannot resume: {reason}").format(reason=engine_text(str(error))), icon=":material/error:")
    history = history_text(run)
    if history:
        st.caption(":material/history: " + history)
    if not presenting():
        with st.expander(_("Settings of this run")):
            st.dataframe(pd.DataFrame({_("setting"): [setting_label(name) for name in run.config],
                                       _("value"): [setting_value(v) for v in run.config.values()]}), hide_index=True)


def metrics(run: RunSnapshot) -> None:
    """Four numbers, each as wide as its text, wrapping onto a second line on a narrow screen rather than cut short."""
    measured = run.accuracies  # inside epochs too, when the run tests every N images
    latest = measured[-1].test_accuracy if measured else run.test_accuracy
    delta = points(latest - measured[-2].test_accuracy) if len(measured) > 1 else None
    with st.container(horizontal=True, gap="large"):
        st.metric(_("Test accuracy"), percent(latest), delta=delta, width="content")
        st.metric(_("Last loss"), number(run.steps[-1].loss, 3) if run.steps else "–", width="content",
                  help=_("The training loss at the last logged step"))
        st.metric(_("Images/s"), number(run.progress.images_per_second), width="content",
                  help=_("Training images per second"))
        st.metric(_("Training time"), duration(run.progress.train_seconds), width="content")


@st.cache_resource(max_entries=16, show_spinner=False)
def curves(run_id: str, version: tuple, language: str, zoom: float, _run: RunSnapshot) -> tuple[dict | None, dict]:
    """The run's loss and accuracy charts, built once per version and language for every session watching: a
    classroom watching a live run would otherwise build them once a second each, and slow the training down."""
    loss = _charts.vega_lite(_charts.loss_curve(_run.steps, _run.progress.steps_per_epoch or 1, zoom)) if _run.steps else None
    every = _run.config.get("test_every")
    every = every if isinstance(every, int) and not isinstance(every, bool) else 0
    return loss, _charts.vega_lite(_charts.accuracy_curve(_run.accuracies, epochs_on_the_charts(_run), every, zoom))


def epochs_on_the_charts(run: RunSnapshot) -> int:
    """The accuracy chart's epoch axis: the planned epochs while the run trains (its points fill the chart as it goes),
    only those it trained once it ended short (a run stopped at epoch 5 of 300 drew one point at the left edge, beside
    a loss chart whose axis ends at 5)."""
    return run.progress.epochs if run.live else max(1, min(run.progress.epochs, run.progress.epoch))


def curves_version(run: RunSnapshot) -> tuple:
    """A live run gains points many times a second, so its charts are rebuilt once a second (every session
    watching draws that second's); an ended run's charts, once."""
    return ("live", int(time.monotonic())) if run.live else (run.state, len(run.steps), len(run.epochs), len(run.tests))


# -- inside the network, live ----------------------------------------------------------------------


def png_uri(image) -> str:
    buffer = io.BytesIO()
    image.save(buffer, "PNG")
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode()


def dark_theme() -> bool:
    theme = getattr(st.context, "theme", None)
    return getattr(theme, "type", None) == "dark"


@st.cache_resource(max_entries=8, show_spinner=False)
def live_view_html(run_id: str, step: int, epoch: int, dark: bool, language: str, _view: LiveView) -> str:
    """conv1's filters and the panel with what the network says of each image, as one HTML block: built once per
    view (every 2 s) and theme for all the sessions watching, however many redraw it each second."""
    right, wrong = ("#4ade80", "#f87171") if dark else ("#15803d", "#b91c1c")
    filters_title, panel_title = _("conv1's 6 filters"), _("Ten test images: true class, and what the network says")
    filters = upscale(stretched(_view.filters, columns=6, padding=1), 360)
    tiles = []
    for image, label, probabilities in zip(_view.images, _view.labels, _view.probabilities, strict=True):
        said = int(probabilities.argmax())
        color = right if said == label else wrong
        true_name, said_name = class_name(int(label), language), class_name(said, language)
        tiles.append(
            f'<figure class="lv-tile"><img src="{png_uri(upscale(to_pil(image), 96))}" alt="{true_name}">'
            f'<figcaption>{true_name}<br><b style="color:{color}">{said_name} {percent(float(probabilities[said]), 0, language)}'
            "</b></figcaption></figure>"
        )
    return f"""
<style>
.lv {{ display: flex; flex-wrap: wrap; gap: 1.5rem; align-items: flex-start; }}
.lv h4 {{ margin: 0 0 .4rem 0; font-size: 1rem; }}
.lv-filters img {{ width: min(360px, 80vw); image-rendering: pixelated; }}
.lv-panel {{ display: flex; flex-wrap: wrap; gap: .5rem; max-width: 100%; }}
.lv-tile {{ margin: 0; width: 76px; text-align: center; font-size: .8rem; line-height: 1.25; }}
.lv-tile img {{ width: 72px; height: 72px; image-rendering: pixelated; display: block; margin: 0 auto .2rem auto; }}
</style>
<div class="lv">
 <div class="lv-filters"><h4>{filters_title}</h4><img src="{png_uri(filters)}" alt="{filters_title}"></div>
 <div><h4>{panel_title}</h4><div class="lv-panel">{"".join(tiles)}</div></div>
</div>"""


def inside_now(run: RunSnapshot) -> None:
    """What the network looks like inside right now, made by the training process every couple of seconds."""
    view = run.live_view
    st.markdown(_("**Inside the network now**"))
    if view is None:
        st.caption(_("The filters and the ten test images appear after the first seconds of training."))
        return
    st.html(live_view_html(run.id, view.step, view.epoch, dark_theme(), language(), view))
    st.caption(_("At step {step} (epoch {epoch}). Each filter is stretched to its own range. Green: the network is right; "
                 "red: wrong.").format(step=number(view.step), epoch=view.epoch))


@st.fragment(run_every=1.0)
def live_run(run_id: str, label: str) -> None:
    """The live run, redrawn every second from the registry; once it ends, the whole page is drawn again."""
    run = runs.snapshot(run_id)
    if not run.live:
        prune()
        st.rerun()
    draw_run(run, label)


@st.fragment(run_every=2.0)
def follow_teacher() -> None:
    """A following student's page changes run when the teacher opens another or starts one."""
    active = runs.active()
    target = shown_run() or (active.id if active is not None and active.live else None)
    deleted = target is not None and not (runs.runs_dir / target).is_dir()  # the page shows another: no rerun each time
    if target is not None and not deleted and target != st.session_state.get("run"):
        st.rerun()


# -- choosing a run --------------------------------------------------------------------------------


def choose_run(all_runs: list[RunSnapshot], labels: dict[str, str], live_id: str | None) -> RunSnapshot:
    """The run this session looks at: a follower's is the teacher's; anyone else's, their own pick (from a link too)."""
    ids = [run.id for run in all_runs]
    fallback = live_id or ids[0]
    if following():
        target = shown_run()
        st.session_state.run = target if target in ids else fallback
    else:
        restore_from_url("run", fallback, options=ids)
        if st.session_state.run not in ids:
            st.session_state.run = fallback
    if live_id and st.session_state.run != live_id and not following():
        st.info(_("{run} is training now.").format(run=labels.get(live_id, live_id)), icon=":material/hourglass_top:")
        st.button(_("Watch it"), icon=":material/visibility:", on_click=watch, args=(live_id,), key="watch-live")
    with st.container(horizontal=True, vertical_alignment="bottom"):
        run_id = st.selectbox(_("Run"), ids, key="run", format_func=lambda i: labels.get(i, i), disabled=following(),
                              help=_("Runs are numbered in the order they started; each shows its preset and test accuracy"))
        if pin_required() and not controls():
            st.toggle(_("Follow the teacher"), key="follow")
    sync_to_url("run")
    show_run(run_id)
    if following():
        follow_teacher()
    return next(run for run in all_runs if run.id == run_id)


# -- all runs: the table, deleting, comparing ------------------------------------------------------


def runs_table(all_runs: list[RunSnapshot], labels: dict[str, str]) -> None:
    def epochs(run: RunSnapshot) -> str:
        total = run.config.get("epochs")
        return _("{done} of {total}").format(done=len(run.epochs), total=total) if isinstance(total, int) else str(len(run.epochs))

    st.dataframe(
        pd.DataFrame(
            {
                _("run"): [labels[r.id] for r in all_runs],
                _("state"): [_("training") if r.live else state_word(r.state) for r in all_runs],  # its details, live, are above
                _("epochs"): [epochs(r) for r in all_runs],
                _("test accuracy"): [percent(r.test_accuracy) for r in all_runs],
                _("training time"): [duration(r.progress.train_seconds) if r.progress.train_seconds else "–" for r in all_runs],
                _("started"): [local_time(r.created) if r.created else "–" for r in all_runs],
                _("folder"): [r.id for r in all_runs],
            }
        ),
        hide_index=True,
    )


def delete_runs(all_runs: list[RunSnapshot], labels: dict[str, str]) -> None:
    """The teacher deletes an ended run, after saying yes to a question naming it."""
    ended = [run.id for run in all_runs if not run.live]
    if not ended:
        return
    with st.expander(_("Delete a run"), icon=":material/delete:"):
        chosen = st.selectbox(_("Run to delete"), ended, format_func=lambda i: labels.get(i, i), key="delete-choice")
        if st.button(_("Delete…"), key="delete"):
            st.session_state["confirm-delete"] = chosen
        asked = st.session_state.get("confirm-delete")
        if asked is None:
            return
        st.warning(_("Delete **{run}** and all its files (checkpoints, curves)? This cannot be undone.").format(
            run=labels.get(asked, asked)), icon=":material/delete_forever:")
        yes, no = st.columns(2)
        if yes.button(_("Delete it"), key="delete-confirm", type="primary"):
            del st.session_state["confirm-delete"]
            try:
                delete_run(runs.runs_dir, asked, protect=protected())
            except (RunBusy, OSError) as error:
                st.error(_("Not deleted: {reason}").format(reason=engine_text(str(error))), icon=":material/error:")
                return
            st.rerun()
        if no.button(_("Cancel"), key="delete-cancel"):
            del st.session_state["confirm-delete"]
            st.rerun()


def compare_runs(all_runs: list[RunSnapshot], labels: dict[str, str], selected: str) -> None:
    """Two or more runs side by side: loss curves overlaid, test accuracy per epoch, and what differs in their settings."""
    ids = [run.id for run in all_runs]
    if "compare" not in st.session_state:
        st.session_state.compare = [selected] + [i for i in ids if i != selected][:1]
    st.session_state.compare = [i for i in st.session_state.compare if i in ids]  # a deleted run leaves the choice
    chosen = st.multiselect(_("Runs to compare"), ids, key="compare", format_func=lambda i: labels.get(i, i))
    if len(chosen) < 2:
        st.info(_("Pick two or more runs to see what a learning rate or a batch size changes."), icon=":material/compare_arrows:")
        return
    compared = [run for run in all_runs if run.id in chosen]
    by_seconds = st.toggle(_("Loss against training time (seconds) instead of epochs"), key="compare-seconds")
    losses, accuracies = st.columns(2, gap="large")
    zoom = presentation_zoom()
    _charts.draw_vega_lite(losses, presented(_charts.vega_lite(compared_losses(compared, labels, by_seconds, zoom).properties(height=320))))
    _charts.draw_vega_lite(accuracies, presented(_charts.vega_lite(compared_accuracies(compared, labels, zoom).properties(height=320))))
    settings_table(compared, labels)


def compared_losses(compared: list[RunSnapshot], labels: dict[str, str], by_seconds: bool, zoom: float = 1.0) -> alt.Chart:
    rows = []
    for run in compared:
        per_epoch = run.progress.steps_per_epoch or 1
        smoothed = pd.Series([s.loss for s in run.steps], dtype=float).ewm(alpha=0.15).mean()
        every = max(1, len(run.steps) // 500)  # a few hundred points a run keep the chart light
        for step, loss in list(zip(run.steps, smoothed, strict=True))[::every]:
            rows.append({"run": labels[run.id], "x": step.train_seconds if by_seconds else step.step / per_epoch, "loss": loss})
    data = pd.DataFrame(rows, columns=["run", "x", "loss"])
    x_title = _("training time (s)") if by_seconds else _("epoch")
    return _charts.large(alt.Chart(data, title=_("Training loss (smoothed)")).mark_line(strokeWidth=2.5).encode(
        x=alt.X("x:Q", title=x_title), y=alt.Y("loss:Q", scale=alt.Scale(zero=False), title=_("cross-entropy loss")),
        color=alt.Color("run:N", title=None, legend=alt.Legend(orient="bottom", columns=1, labelLimit=400)),
        tooltip=[alt.Tooltip("run:N", title=_("run")), alt.Tooltip("x:Q", format=".2f", title=x_title),
                 alt.Tooltip("loss:Q", format=".3f", title=_("loss"))]), zoom)


def compared_accuracies(compared: list[RunSnapshot], labels: dict[str, str], zoom: float = 1.0) -> alt.Chart:
    rows = [{"run": labels[run.id], "epoch": e.epoch, "accuracy": e.test_accuracy} for run in compared for e in run.epochs]
    data = pd.DataFrame(rows, columns=["run", "epoch", "accuracy"])
    return _charts.large(alt.Chart(data, title=_("Test accuracy after each epoch")).mark_line(point=True, strokeWidth=2.5).encode(
        x=alt.X("epoch:Q", axis=alt.Axis(tickMinStep=1), title=_("epoch")),
        y=alt.Y("accuracy:Q", axis=alt.Axis(format="%"), title=_("test accuracy")),
        color=alt.Color("run:N", title=None, legend=alt.Legend(orient="bottom", columns=1, labelLimit=400)),
        tooltip=[alt.Tooltip("run:N", title=_("run")), alt.Tooltip("epoch:Q", title=_("epoch")),
                 alt.Tooltip("accuracy:Q", format=".1%", title=_("test accuracy"))]), zoom)


def settings_table(compared: list[RunSnapshot], labels: dict[str, str]) -> None:
    """Each setting in a row, one column per run; the rows where the runs differ come first, in bold and shaded."""
    names = list(dict.fromkeys(name for run in compared for name in run.config))
    table = pd.DataFrame({labels[run.id]: [setting_value(run.config.get(name, "–")) for name in names] for run in compared},
                         index=[setting_label(name) for name in names])
    differs = table.nunique(axis=1) > 1
    table = pd.concat([table[differs], table[~differs]])
    shade = "font-weight: bold; background-color: rgba(250, 200, 40, 0.25)"
    styled = table.style.apply(lambda row: [shade if differs[row.name] else ""] * len(row), axis=1)
    st.caption(_("{count} settings differ (in bold, first).").format(count=int(differs.sum())))
    st.dataframe(styled)


# -- the page --------------------------------------------------------------------------------------


st.title(":material/model_training: " + _("Train"))
st.markdown(_(
    "Training shows the network a **batch** of images, measures how wrong it is (the **loss**), and nudges all 62,006 "
    "weights to be a little less wrong. One pass over the training images is an **epoch**; after each, the network is "
    "tested on the 10,000 test images it never trains on."
))
words_on_this_page("batch", "epoch", "loss", "learning rate", "momentum")
mode_note()

show_form = controls() and not presenting()
if show_form:
    # The form at a width its fields fit (two side by side), the run beside it when there is room, else below: a third
    # of the page was 110 pixels on a projector at 1280 x 720 and 150%, where labels broke mid-word and the
    # optimizer's name did not show.
    row = st.container(horizontal=True, gap="large")
    with row:
        with st.container(width=340):
            new_run_form()
        run_column = st.container(width="stretch")
else:
    run_column = st.container()

with run_column:
    all_runs = runs.list_runs()
    labels = run_labels(all_runs)
    active = runs.active()
    live_id = active.id if active is not None and active.live else None
    selected = None
    if not all_runs:
        if controls():
            st.info(_("No runs yet: choose a preset and press **Start training**."), icon=":material/model_training:")
        else:
            st.info(_("No runs yet: the teacher's run shows here as soon as it starts."), icon=":material/model_training:")
    else:
        selected = choose_run(all_runs, labels, live_id)
        if selected.live:
            live_run(selected.id, labels[selected.id])
        else:
            draw_run(selected, labels[selected.id])

if not all_runs and pin_required() and not controls():
    follow_teacher()  # the teacher's first run shows up by itself

if all_runs:
    st.header(_("All runs"))
    runs_table(all_runs, labels)
    st.caption(_("Open a run with the **Run** box above; stopped and interrupted runs can be resumed from their last checkpoint."))
    if controls():
        delete_runs(all_runs, labels)
    if len(all_runs) >= 2:
        st.header(_("Compare runs"))
        compare_runs(all_runs, labels, selected.id)

pytorch_code(_code.TRAIN)
