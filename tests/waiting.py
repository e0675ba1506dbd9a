"""Waiting for something that happens in another thread or process: the one polling loop the tests share."""

import time


def wait_until(predicate, timeout: float = 60.0, what: str = "the condition", every: float = 0.05) -> None:
    """Return once predicate() is true; fail the test if it is not within timeout seconds."""
    deadline = time.monotonic() + timeout
    while not predicate():
        assert time.monotonic() < deadline, f"{what} did not happen within {timeout:g} s"
        time.sleep(every)
