"""The load test, short, for CI: a few browser sessions watch a live run and classify uploads on one server.

It runs tests/loadtest.py (which says how it measures) with 5 sessions for 30 seconds. The full test, for the
README's figures, is `python -m tests.loadtest --sessions 30 --seconds 90` (2 cores manage 10 sessions). The
report is printed (pytest -s shows it) and written to test-artifacts/load-test.json."""

import os

import pytest

from tests.loadtest import CHROMIUM, GOOD_RUN_STATES, REPO, REQUEST_KINDS, Report, keep, problems, run_load_test, table

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

SESSIONS, SECONDS = 5, 30
# Peak growth of the server's memory per session over the warm server with no session: see tests/loadtest.py
# (measured 2 to 20 MB; a copy of the training split per session would be 154 MB).
MAX_MB_PER_SESSION = 50


@pytest.fixture(scope="module")
def report(cifar_dir, tmp_path_factory) -> Report:
    if not CHROMIUM.exists():
        reason = f"{CHROMIUM} is missing: install Debian's chromium to run the browser tests"
        if os.environ.get("LENET_REQUIRE_BROWSER") == "1":
            pytest.fail(reason + " (LENET_REQUIRE_BROWSER=1)")
        pytest.skip(reason)
    report = run_load_test(cifar_dir, sessions=SESSIONS, seconds=SECONDS, timeout_s=60, train_images=5000,
                           workdir=tmp_path_factory.mktemp("load"), log=print)
    keep(report, table(report), REPO / "test-artifacts" / "load-test.json")
    return report


def test_every_request_is_answered_without_errors(report):
    assert report.errors == 0, report.error_samples
    assert REQUEST_KINDS <= set(report.by_kind), f"not every kind of request was made: {sorted(report.by_kind)}"


def test_every_session_completed_a_loop(report):
    assert report.loops_min >= 1  # Train page watched live, a photo classified, another page seen


def test_training_kept_going_during_the_load(report):
    assert report.server_alive
    assert report.training_steps > 0
    assert report.run_state in GOOD_RUN_STATES


def test_memory_stays_bounded(report):
    assert report.mb_per_session < MAX_MB_PER_SESSION, table(report)


def test_the_verdict_agrees(report):
    assert problems(report, MAX_MB_PER_SESSION) == []
