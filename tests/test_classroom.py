"""The classroom: the teacher's PIN and what students may do, the record of who started and stopped a run, presentation
mode, links that restore a page, pruning and deleting runs, the Train page's live inside view and comparison of runs.

The app runs through AppTest (the real app.py router, two sessions sharing one server's registry, as two browsers
would); lenet.classroom is tested on real run folders, a real flock held as the trainer holds it.
"""

import base64
import fcntl
import io
import json
import re
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest
from PIL import Image
from streamlit.testing.v1 import AppTest

from lenet.classroom import (
    ACTIONS_FILE,
    RunBusy,
    delete_run,
    prune_runs,
    read_actions,
    record_action,
    runs_limit_bytes,
)
from lenet.runs import LIVE_STATES, STOPPED
from pages import _resources
from pages._classroom import PRESENTATION_ZOOM
from tests.waiting import wait_until

REPO = Path(__file__).resolve().parents[1]
APP = REPO / "app.py"
PIN = "2468"
SMALL_RUN = {"train_subset-quick": 2000, "epochs-quick": 200}  # long enough to be watched, stopped at once


@pytest.fixture
def env(monkeypatch, tmp_path, cifar_dir):
    """The real data, a fresh runs folder, a missing default model; the registry's run is stopped at the end."""
    values = {"LENET_DATA": str(cifar_dir), "LENET_RUNS": str(tmp_path / "runs"), "LENET_CHECKPOINT": str(tmp_path / "none.pt")}
    for name, value in values.items():
        monkeypatch.setenv(name, value)
    monkeypatch.delenv("LENET_TEACHER_PIN", raising=False)
    yield values


@pytest.fixture
def pin(env, monkeypatch):
    monkeypatch.setenv("LENET_TEACHER_PIN", PIN)
    return PIN


def session(page: str = "train", query: dict | None = None, theme: str | None = None) -> AppTest:
    """A browser session opening a page (with a URL query, in a light or dark theme), once the dataset is loaded."""
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.query_params.update(query or {})
    if theme:
        at.context["theme"] = theme
    at.run()
    wait_until(lambda: not _resources.dataset_service().status().busy)
    at.switch_page(f"pages/{page}.py").run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def sign_in(at: AppTest, entered: str) -> AppTest:
    at.text_input(key="teacher-pin").input(entered)
    next(b for b in at.button if b.label == "Sign in").click().run()
    assert not at.exception, [e.value for e in at.exception]
    return at


def button_keys(at: AppTest) -> set[str]:
    return {b.key for b in at.button if b.key}


def captions(at: AppTest) -> str:
    return "\n".join(str(c.value) for c in at.caption)


def start_small_run(at: AppTest):
    for key, value in SMALL_RUN.items():
        at.number_input(key=key).set_value(value)
    at.button(key="start").click().run()
    assert not at.exception and not at.error, [e.value for e in at.error]
    run = _resources.registry().active()
    assert run is not None and run.state in LIVE_STATES
    return run


# -- the teacher and the students ------------------------------------------------------------------


def test_a_wrong_pin_is_refused_and_guessing_is_slowed(pin):
    at = session()
    sign_in(at, "1111")
    assert [e.value for e in at.sidebar.error] == ["That PIN is not the teacher's."]
    assert "start" not in button_keys(at)  # still a student
    for _ in range(4):
        sign_in(at, "0000")
    sign_in(at, PIN)  # right, but after five wrong ones it must wait
    assert any("Too many wrong PINs" in e.value for e in at.sidebar.error), [e.value for e in at.sidebar.error]
    assert "start" not in button_keys(at)


def test_the_pin_may_come_from_streamlit_secrets(env):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.secrets["teacher_pin"] = "97531"
    at.run()
    at.switch_page("pages/train.py").run()
    assert "start" not in button_keys(at) and "The teacher controls the runs" in captions(at)
    sign_in(at, "97531")
    assert "start" in button_keys(at) and "You are the teacher" in captions(at)


def test_students_watch_the_teachers_run_live_without_its_controls(pin):
    teacher = sign_in(session(), PIN)
    assert "You are the teacher" in captions(teacher)
    run = start_small_run(teacher)
    registry = _resources.registry()
    wait_until(lambda: registry.snapshot(run.id).steps)

    student = session(theme="dark")
    assert "The teacher controls the runs" in captions(student)
    assert student.selectbox(key="run").value == run.id  # the run the teacher opened, without choosing
    assert "images/s" in student.get("progress")[0].proto.text  # live: the progress of a training run
    assert not button_keys(student) & {"start", "stop", "resume", "delete", "confirm-start"}
    assert not [b for b in student.button if b.label in ("Start training", "Stop", "Resume", "Delete…")]
    assert "stop" in button_keys(teacher)

    # The live inside view arrives within a few seconds: conv1's filters and the ten-image panel.
    wait_until(lambda: registry.snapshot(run.id).live_view is not None, timeout=30)
    student.run()
    inside = [h.proto.body for h in student.get("html") if "conv1" in h.proto.body]
    assert len(inside) == 1 and inside[0].count("<figure") == 10
    assert "#4ade80" in inside[0] or "#f87171" in inside[0]  # right and wrong in the dark theme's green and red
    # conv1's filters sit on the page's own background: the padding around them is transparent, not a white frame.
    encoded = re.search(r'lv-filters.*?src="data:image/png;base64,([^"]+)"', inside[0], re.S).group(1)
    filters = np.array(Image.open(io.BytesIO(base64.b64decode(encoded))))
    assert filters.shape[2] == 4 and filters[0, :, 3].max() == 0 and filters[:, 0, 3].max() == 0
    assert filters[..., 3].max() == 255
    teacher.run()
    in_light = [h.proto.body for h in teacher.get("html") if "conv1" in h.proto.body][0]
    assert "#15803d" in in_light or "#b91c1c" in in_light

    teacher.button(key="stop").click().run()
    assert registry.snapshot(run.id).state == STOPPED
    assert "resume" in button_keys(teacher)
    student.run()
    assert not button_keys(student) & {"start", "stop", "resume", "delete"}
    actions = read_actions(registry.runs_dir / run.id)
    assert [(a.action, a.who) for a in actions] == [("start", "teacher"), ("stop", "teacher")]
    shown = captions(student)
    assert "Started by teacher at" in shown and "stopped by teacher at" in shown


def test_without_a_pin_everyone_controls_and_the_session_is_recorded(env):
    at = session()
    assert "Single-user mode: no teacher PIN is set" in captions(at)
    assert "teacher-pin" not in {t.key for t in at.text_input}
    run = start_small_run(at)
    at.button(key="stop").click().run()
    actions = read_actions(_resources.registry().runs_dir / run.id)
    assert [a.action for a in actions] == ["start", "stop"]
    assert actions[0].who == actions[1].who and actions[0].who.startswith("session ") and len(actions[0].who) == len("session ") + 6
    assert f"Started by {actions[0].who}" in captions(at)


def test_the_teacher_deletes_an_ended_run_after_confirming(env):
    at = session()
    run = start_small_run(at)
    at.button(key="stop").click().run()
    at.button(key="delete").click().run()
    assert any("cannot be undone" in w.value for w in at.warning)
    assert (Path(env["LENET_RUNS"]) / run.id).is_dir()  # not before the yes
    at.button(key="delete-confirm").click().run()
    assert not (Path(env["LENET_RUNS"]) / run.id).exists()
    assert not at.exception and "No runs yet" in "".join(i.value for i in at.info)


# -- presentation mode and links -------------------------------------------------------------------


def test_presentation_mode_hides_the_form_and_the_code(env):
    at = session(query={"present": "1"})
    assert "start" not in button_keys(at) and "preset" not in {s.key for s in at.selectbox}
    assert not [e for e in at.expander if e.label == "PyTorch code"]
    assert any("font-size: 1.4rem" in h.proto.body for h in at.get("html"))  # the large type
    at.switch_page("pages/overview.py").run()  # a page switch clears the URL; presentation mode stays
    assert at.query_params.get("present") == "1" and not [e for e in at.expander if e.label == "PyTorch code"]

    normal = session()
    assert "start" in button_keys(normal) and any(e.label == "PyTorch code" for e in normal.expander)


def test_a_link_restores_the_preset_its_settings_and_the_run(env):
    at = session()
    first = start_small_run(at)
    at.button(key="stop").click().run()

    at.selectbox(key="preset").set_value("best").run()
    at.number_input(key="epochs-best").set_value(7).run()
    assert at.query_params.get("preset") == "best" and at.query_params.get("epochs") == "7"
    assert at.query_params.get("run") == first.id

    link = {key: at.query_params[key] for key in ("preset", "epochs", "run")}
    opened = session(query=link)
    assert opened.selectbox(key="preset").value == "best"
    assert opened.number_input(key="epochs-best").value == 7
    assert opened.selectbox(key="run").value == first.id
    # A broken value in a link is ignored, not an error.
    broken = session(query={"preset": "nonsense", "epochs": "many", "run": "../etc"})
    assert broken.selectbox(key="preset").value == "quick" and broken.number_input(key="epochs-quick").value == 3


def test_two_runs_are_compared_with_their_differences_first(env):
    at = session()
    at.number_input(key="lr-quick").set_value(0.05)
    first = start_small_run(at)
    at.button(key="stop").click().run()
    at.number_input(key="lr-quick").set_value(0.2)
    at.number_input(key="batch_size-quick").set_value(64)
    second = start_small_run(at)
    at.button(key="stop").click().run()

    assert set(at.multiselect(key="compare").value) == {first.id, second.id}
    assert any("2 settings differ" in str(c.value) for c in at.caption)
    table = at.dataframe[-1].value
    assert list(table.index[:2]) == ["batch_size", "lr"]
    assert len(at.get("arrow_vega_lite_chart")) >= 2 or len(at.get("vega_lite_chart")) >= 2
    at.toggle(key="compare-seconds").set_value(True).run()
    assert not at.exception


def test_presentation_mode_draws_the_charts_taller_with_type_as_large_as_the_page(env):
    at = session()
    run = start_small_run(at)
    registry = _resources.registry()
    wait_until(lambda: registry.snapshot(run.id).steps, timeout=60)
    at.button(key="stop").click().run()

    def charts(app: AppTest) -> list[dict]:
        return [json.loads(c.proto.spec) for c in app.get("vega_lite_chart")]  # the run's loss and accuracy

    normal, presented = charts(session(query={"run": run.id})), charts(session(query={"run": run.id, "present": "1"}))
    assert len(normal) == len(presented) >= 2
    for plain, large in zip(normal, presented, strict=True):
        assert large["height"] > plain.get("height", 0)
        assert large["config"]["axis"]["labelFontSize"] == round(plain["config"]["axis"]["labelFontSize"] * PRESENTATION_ZOOM)
        assert large["config"]["axis"]["titleFontSize"] > plain["config"]["axis"]["titleFontSize"]


def test_the_students_join_panel_shows_an_address_and_a_qr_code(env):
    at = AppTest.from_file(str(APP), default_timeout=60)
    at.run()
    code = [c.value for c in at.sidebar.code]
    assert len(code) == 1 and code[0].startswith("http://") and code[0].endswith("/")
    assert "127.0.0.1" not in code[0] and "localhost" not in code[0]  # an address other machines can use
    assert len(at.sidebar.get("image")) == 1


def test_the_overview_shows_the_class_how_to_join_when_a_pin_is_set(pin):
    at = session("overview")
    assert any(h.value == "Join from your phone or laptop" for h in at.header)
    assert len(at.main.get("image")) >= 1  # the large QR code


@pytest.mark.parametrize(
    "host, scheme, expected",
    [
        ("192.168.1.20:8501", "http", "http://192.168.1.20:8501/"),
        ("class.example.org", "https", "https://class.example.org/"),
        ("[fd00::5]:8501", "http", "http://[fd00::5]:8501/"),
    ],
)
def test_the_join_address_is_the_one_the_browser_used(host, scheme, expected):
    from pages._classroom import address_for

    assert address_for(host, 8501, scheme) == expected


def test_a_local_name_becomes_the_machines_network_address():
    from pages._classroom import address_for, lan_ip

    for host in ("localhost:8501", "127.0.0.1:8501", "[::1]:8501", ""):
        assert address_for(host, 8501) == f"http://{lan_ip()}:8501/"


# -- lenet.classroom -------------------------------------------------------------------------------


def make_run(runs_dir: Path, run_id: str, megabytes: float, state: str = "finished") -> Path:
    folder = runs_dir / run_id
    folder.mkdir(parents=True)
    (folder / "config.json").write_text(json.dumps({"config": {"epochs": 1}, "created": "2026-01-01T00:00:00+00:00"}))
    (folder / "status.json").write_text(json.dumps({"state": state}))
    (folder / "checkpoint.pt").write_bytes(b"\0" * int(megabytes * 2**20))
    return folder


def test_prune_keeps_a_training_run_the_newest_and_the_protected_and_deletes_the_oldest(tmp_path):
    runs_dir = tmp_path / "runs"
    ids = [f"2026010{i}-120000-quick" for i in range(1, 8)]
    folders = {run_id: make_run(runs_dir, run_id, 1.0) for run_id in ids}
    (runs_dir / "notes").mkdir()  # not a run: never touched
    # The oldest trains now: its trainer holds the run's flock, as lenet.runs does.
    lock = open(folders[ids[0]] / ".lock", "a+")  # noqa: SIM115
    fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
    try:
        protected_model = folders[ids[1]] / "checkpoint.pt"  # LENET_CHECKPOINT pointing into a run
        deleted = prune_runs(runs_dir, keep_bytes=int(3.5 * 2**20), keep_runs=2, protect=[protected_model])
    finally:
        lock.close()
    # 7 MB over a 3.5 MB limit: runs 3, 4 and 5 go (oldest first); 1 trains, 2 is protected, 6 and 7 are newest.
    assert deleted == ids[2:5]
    assert sorted(p.name for p in runs_dir.iterdir()) == sorted([*ids[:2], *ids[5:], "notes"])
    # Within the limit: nothing more.
    assert prune_runs(runs_dir, keep_bytes=10 * 2**20, keep_runs=0) == []
    # The newest are kept even over the limit; and nothing protected by id goes.
    assert prune_runs(runs_dir, keep_bytes=0, keep_runs=2, protect=[ids[0]]) == [ids[1]]


def test_delete_refuses_a_training_or_protected_run(tmp_path):
    runs_dir = tmp_path / "runs"
    training, shipped, ended = (make_run(runs_dir, f"2026010{i}-000000-quick", 0.1) for i in (1, 2, 3))
    with open(training / ".lock", "a+") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX | fcntl.LOCK_NB)
        with pytest.raises(RunBusy, match="is training"):
            delete_run(runs_dir, training.name)
    with pytest.raises(RunBusy, match="model"):
        delete_run(runs_dir, shipped.name, protect=[shipped / "checkpoint.pt"])
    with pytest.raises(FileNotFoundError):
        delete_run(runs_dir, "../runs")
    delete_run(runs_dir, ended.name)
    assert training.is_dir() and shipped.is_dir() and not ended.exists()


def test_actions_are_whole_lines_under_concurrent_appends_and_damage_is_skipped(tmp_path):
    threads = [threading.Thread(target=lambda n=n: [record_action(tmp_path, "stop", f"session {n:06d}") for _ in range(100)])
               for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    record_action(tmp_path, "start", "teacher")
    with open(tmp_path / ACTIONS_FILE, "a") as file:
        file.write('["not", "a record"]\n{"when": "yesterday", "action": "stop", "who": "x"}\nnot json at all\n')
        file.write('{"when": "2026-01-01T10:00:00+00:00", "action": "launch", "who": "x"}\n{"when": "2026-01-01T1')  # torn
    actions = read_actions(tmp_path)
    assert len(actions) == 801 and actions[-1].action == "start" and actions[-1].who == "teacher"
    assert {a.who for a in actions[:-1]} == {f"session {n:06d}" for n in range(8)}
    assert read_actions(tmp_path / "absent") == []
    with pytest.raises(ValueError):
        record_action(tmp_path, "explode", "teacher")


def test_the_runs_limit_comes_from_the_environment(monkeypatch):
    monkeypatch.setenv("LENET_RUNS_MAX_MB", "5")
    assert runs_limit_bytes() == 5 * 2**20
    monkeypatch.setenv("LENET_RUNS_MAX_MB", "lots")
    assert runs_limit_bytes() == 1024 * 2**20


@pytest.mark.parametrize("first_run", ["app.py", "a page"])
def test_the_training_process_does_not_run_the_app_again(first_run):
    """Streamlit runs each script run as a spec-less module __main__ whose file is app.py (a server's first run may be a
    page's code); multiprocessing's spawn re-runs such a main module by path in every child, so the training process
    used to import Streamlit and the app for nothing (and warn "missing ScriptRunContext" once per page)."""
    runs_first = ("code = open(APP).read().replace('    main()', '    pass')  # its top, without drawing\n"
                  "exec(compile(code, APP, 'exec'), main.__dict__)" if first_run == "app.py" else
                  "exec('from pages._router import mark_main_module\\nmark_main_module()', main.__dict__)  # as through_router")
    script = f"""
import multiprocessing, sys, types
sys.path.insert(0, {str(REPO)!r})
APP = {str(APP)!r}
main = types.ModuleType("__main__")  # as Streamlit's script runner makes it
main.__file__ = APP
sys.modules["__main__"] = main
{runs_first}
report = "import sys; print('MAIN IN CHILD:', getattr(sys.modules['__main__'], '__file__', None), flush=True)"
child = multiprocessing.get_context("spawn").Process(target=exec, args=(report,))
child.start()
child.join()
"""
    result = subprocess.run([sys.executable, "-c", script], capture_output=True, text=True, timeout=120, cwd=REPO)
    assert "MAIN IN CHILD: None" in result.stdout, result.stdout + result.stderr
