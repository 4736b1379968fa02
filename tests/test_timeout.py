"""``run.cell_timeout_s`` inside a job (:func:`bench.executors.timed`): the limit ends a job on the process's main
thread (SIGALRM) and on any other thread (a watchdog), even when the job swallows the first alarm with a bare
``except:`` (as cma does in places) or starts with SIGALRM blocked; a job that ends in time leaves no alarm behind."""

import signal
import threading
import time

import pytest

from bench.executors import REPEAT_S, JobTimeout, timed

LIMIT_S = 0.3


def busy(seconds: float = 20.0) -> str:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        sum(range(1000))
    return "finished"


def swallows_the_first_alarm(seconds: float = 20.0) -> str:
    """A job that eats one alarm in a bare ``except:`` and would then run ``seconds`` more."""
    try:
        busy(seconds)
    except:  # noqa: E722 - the point: a library's bare except
        pass
    return busy(seconds)


def in_a_thread(fn, *args):
    out = {}
    t = threading.Thread(target=lambda: out.setdefault("value", fn(*args)))
    t.start()
    t.join(60)
    assert not t.is_alive(), "the job was not ended"
    return out["value"]


@pytest.mark.parametrize("where", ["main thread", "another thread"])
@pytest.mark.parametrize("job", [busy, swallows_the_first_alarm])
def test_a_job_past_its_limit_is_ended(where, job):
    freed = []
    t0 = time.monotonic()
    call = (timed, job, LIMIT_S, lambda: freed.append(1))
    value = call[0](*call[1:]) if where == "main thread" else in_a_thread(*call)
    took = time.monotonic() - t0
    assert isinstance(value, JobTimeout), value
    assert "run.cell_timeout_s = 0.3 s" in str(value)
    assert freed == [1]  # on_timeout ran, once
    assert took < LIMIT_S + 2 * REPEAT_S + 1  # the job would have run 20 s (40 s when it swallows)
    if job is swallows_the_first_alarm:  # the swallowed alarm is named (on the main thread, where it landed)
        assert "the first 1 alarm(s) were swallowed" in str(value), value
        assert where != "main thread" or "in busy" in str(value), value


def test_a_blocked_alarm_is_unblocked_for_the_job_and_the_mask_restored():
    signal.pthread_sigmask(signal.SIG_BLOCK, [signal.SIGALRM])
    try:
        assert isinstance(timed(busy, LIMIT_S, None), JobTimeout)
        assert signal.SIGALRM in signal.pthread_sigmask(signal.SIG_BLOCK, [])
    finally:
        signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGALRM])


@pytest.mark.parametrize("where", ["main thread", "another thread"])
def test_a_job_within_its_limit_keeps_its_result_and_leaves_no_alarm(where):
    before = signal.getsignal(signal.SIGALRM)
    call = (timed, busy, LIMIT_S + 2, None, 0.05)
    assert (call[0](*call[1:]) if where == "main thread" else in_a_thread(*call)) == "finished"
    assert signal.getitimer(signal.ITIMER_REAL) == (0.0, 0.0) and signal.getsignal(signal.SIGALRM) is before
    time.sleep(LIMIT_S + 2 + REPEAT_S)  # past where the limit and a repeat would have landed: nothing is raised
    assert timed(lambda: 7, 0, None) == 7  # no limit: the job is just called
