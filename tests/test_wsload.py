"""The websocket load test, short, for CI: 30 sessions watch a live run and classify uploads on one server.

It runs tools/wsload (its README says how it plays the browser's part, and which Streamlit it speaks) with 30
sessions for 30 seconds against a real server on the real CIFAR-10; it takes a minute and a half on 2 cores. The
full runs, for the README's figures, are `python -m tools.wsload --sessions 30 --seconds 90`. The report is printed
(pytest -s shows it) and written to test-artifacts/ws-load-test.json."""


import pytest

from tests.loadtest import GOOD_RUN_STATES, REPO, REQUEST_KINDS, keep, problems
from tools.wsload import SPOKEN_STREAMLIT, UnsupportedStreamlit, WsReport, check_streamlit_version, run_ws_load_test, table

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SESSIONS, SECONDS = 30, 30
# Peak growth of the server's memory per session over the warm server with no session, as for the browser load
# test (tests/loadtest.py says where the bound comes from: a copy of the training split per session would be 154 MB).
MAX_MB_PER_SESSION = 50


def test_the_load_generator_speaks_the_installed_streamlit_and_refuses_another():
    """When Streamlit is upgraded, this fails first, naming what to check, instead of the load figures going wrong."""
    import streamlit

    check_streamlit_version()  # raises for a version the generator was not checked against
    assert streamlit.__version__.startswith(SPOKEN_STREAMLIT)
    with pytest.raises(UnsupportedStreamlit, match="1.68.0"):
        check_streamlit_version("1.68.0")


@pytest.fixture(scope="module")
def report(cifar_dir, tmp_path_factory) -> WsReport:
    report = run_ws_load_test(cifar_dir, sessions=SESSIONS, seconds=SECONDS, ramp=10, timeout_s=60, train_images=5000,
                              workdir=tmp_path_factory.mktemp("wsload"), log=print)
    keep(report, table(report), REPO / "test-artifacts" / "ws-load-test.json")
    return report


def test_every_request_is_answered_without_errors(report):
    assert report.errors == 0, report.error_samples
    assert REQUEST_KINDS <= set(report.by_kind), f"not every kind of request was made: {sorted(report.by_kind)}"


def test_every_session_completed_a_loop(report):
    assert report.sessions == SESSIONS
    assert report.loops_min >= 1  # Train page watched live, a photo classified, another page seen


def test_the_live_updates_came_from_the_fragment_timers(report):
    assert report.auto_reruns > 0 and report.fragment_runs > 0
    assert report.uploads >= SESSIONS


def test_training_kept_going_during_the_load(report):
    assert report.server_alive
    assert report.training_steps > 0
    assert report.run_state in GOOD_RUN_STATES


def test_memory_stays_bounded(report):
    assert report.mb_per_session < MAX_MB_PER_SESSION, table(report)
    # The server and its training process map the same torch libraries and the same dataset cache: counted once,
    # they take less than the two RSS figures added up.
    assert 0 < report.pss_before_mb < report.rss_before_mb, table(report)


def test_the_verdict_agrees(report):
    assert problems(report, MAX_MB_PER_SESSION) == []
