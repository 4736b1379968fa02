"""Where jobs run: inline in this process (``run.executor = local``) or as tasks on a Ray cluster (``ray``).

An executor submits jobs (plain functions, :mod:`bench.jobs`), waits for them, resubmits a job whose worker was
lost and ends one that runs past its time limit; nothing else. It knows neither the runner nor what the jobs
make: the driver (:mod:`bench.runner`) gives it functions and arguments and writes what comes back.

``run.executor`` (``--executor``) is ``local`` (the default), ``ray`` (the cluster at ``RAY_ADDRESS``, else a
local one started for the run) or ``ray://HOST:PORT`` (a remote head, through Ray Client). On Ray every training is
a task with its system's ``resources`` and every cell a task with its ``cell_resources`` (both tables of the
system's config section, stripped before the system's own ``Config`` sees it; see :func:`task_options`). Nothing
here imports ray until a run asks for it (:mod:`bench.executors.cluster`). See docs/scaling.md.
"""

from __future__ import annotations

import re
from collections import deque
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

from bench.config import Config, ConfigError

EXECUTORS = "local | ray | ray://HOST:PORT"
RESOURCE_KEYS = ("num_cpus", "num_gpus", "memory", "accelerator_type", "resources", "max_retries")
DEFAULT_RETRIES = 3  # resubmissions of a task whose worker or node was lost (per system: resources.max_retries)


def check_executor(value: str) -> None:
    if value in ("local", "ray") or re.fullmatch(r"ray://[^\s/:]+:\d+", value or ""):
        return
    raise ConfigError(f"run.executor: {value!r}; valid: {EXECUTORS} (ray joins the cluster at RAY_ADDRESS or starts "
                      "a local one)")


def uses_ray(cfg: Config) -> bool:
    return cfg.run.executor != "local"


def check_resources(cfg: Config, name: str) -> None:
    """``systems.NAME.resources`` / ``cell_resources``: tables of Ray task options (see :data:`RESOURCE_KEYS`)."""
    conf = cfg.system_config(name)
    for key in ("resources", "cell_resources"):
        table = conf.get(key)
        if table is None:
            continue
        where = f"systems.{name}.{key}"
        if not isinstance(table, dict):
            raise ConfigError(f"{where}: expected a table such as {{num_gpus = 1, num_cpus = 4}}, got {table!r}")
        bad = sorted(set(table) - set(RESOURCE_KEYS))
        if bad:
            raise ConfigError(f"{where}: unknown key(s) {bad}; valid: {list(RESOURCE_KEYS)}")
        for k in ("num_cpus", "num_gpus", "memory", "max_retries"):
            v = table.get(k)
            if v is not None and (isinstance(v, bool) or not isinstance(v, (int, float)) or v < 0):
                raise ConfigError(f"{where}.{k}: expected a number >= 0, got {v!r}")
        if "resources" in table and not isinstance(table["resources"], dict):
            raise ConfigError(f"{where}.resources: expected a table of custom Ray resources, got {table['resources']!r}")


def task_options(cfg: Config, name: str, kind: str) -> tuple[dict, int]:
    """(Ray options, retries) of ``kind`` ("train" or "cell") tasks of system ``name``. Training uses
    ``resources`` (default one CPU, plus one GPU when ``run.device`` names CUDA); cells use ``cell_resources``
    (default one CPU, plus a quarter GPU when ``run.device`` names CUDA). ``max_retries`` (default
    :data:`DEFAULT_RETRIES`) bounds the resubmissions after a lost worker; the driver does them, not Ray."""
    conf = cfg.system_config(name)
    cuda = cfg.run.device.startswith("cuda")
    if kind == "train":
        table = dict(conf.get("resources") or {})
        defaults = {"num_cpus": 1, **({"num_gpus": 1} if cuda else {})}
    else:
        table = dict(conf.get("cell_resources") or {})
        defaults = {"num_cpus": 1, **({"num_gpus": 0.25} if cuda else {})}
    retries = int(table.pop("max_retries", DEFAULT_RETRIES))
    opts = {**defaults, **table}
    return opts, retries


# --- the executor: submit, wait, retry, time out; nothing else --------------------------------------------------


class JobTimeout(Exception):
    """What a job that ran past its time limit (``run.cell_timeout_s``) answers instead of its result."""


class _Expired(BaseException):  # raised inside the job by the alarm; a BaseException, so no job's handler eats it
    pass


REPEAT_S = 1.0  # past the limit, the alarm repeats this often until the job has ended


class _Limit:
    """A job's time limit: past ``seconds``, :class:`_Expired` is raised in the job's thread, again every
    :data:`REPEAT_S` until :meth:`disarm`. Repeating matters: a library's bare ``except:`` (cma has several, some
    around imports) swallows one raise, and a single alarm that lands there would leave the job unlimited. Where
    each swallowed raise landed is kept for the job's error."""

    def __init__(self, seconds: float):
        self.seconds = float(seconds)
        self.armed = False
        self.raised: list[str] = []  # where each raise landed, in the job's code

    def __enter__(self):
        self.armed = True
        self.start()
        return self

    def __exit__(self, *exc):
        try:
            self.disarm()
        finally:  # even when a last raise lands in disarm itself
            self.stop()

    def disarm(self) -> None:
        """From here on, a repeat raises nothing (the job has ended)."""
        self.armed = False

    def swallowed(self) -> str:
        """Where the raises that the job swallowed landed (all but the last), for its error."""
        if len(self.raised) < 2:
            return ""
        return f" (the first {len(self.raised) - 1} alarm(s) were swallowed, at {'; '.join(self.raised[:-1][:3])})"

    def _note(self, frame) -> None:
        if frame is not None and len(self.raised) < 100:
            self.raised.append(f"{frame.f_code.co_filename}:{frame.f_lineno} in {frame.f_code.co_name}")

    def start(self) -> None:
        raise NotImplementedError

    def stop(self) -> None:
        raise NotImplementedError


class _Alarm(_Limit):
    """On the process's main thread (the driver's, a pool worker's, a Ray task's): SIGALRM, which also breaks a
    sleep or a wait on a lock. The signal is unblocked for the job (a process may inherit it blocked) and the
    thread's signal mask and handler are restored afterwards."""

    def _expire(self, signum, frame):
        if self.armed:
            self._note(frame)
            raise _Expired()

    def start(self) -> None:
        import signal

        self.old = signal.signal(signal.SIGALRM, self._expire)
        self.mask = signal.pthread_sigmask(signal.SIG_UNBLOCK, [signal.SIGALRM])
        signal.setitimer(signal.ITIMER_REAL, self.seconds, REPEAT_S)

    def stop(self) -> None:
        import signal

        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.pthread_sigmask(signal.SIG_SETMASK, self.mask)
        signal.signal(signal.SIGALRM, self.old)


class _Watchdog(_Limit):
    """On any other thread (a signal handler runs only on the main thread): a watchdog thread raises the exception
    in the job's thread through CPython's ``PyThreadState_SetAsyncExc``; it lands at the job's next Python
    instruction, so a job blocked in one long C call ends when that call returns."""

    def _set(self, exc) -> None:
        import ctypes

        ctypes.pythonapi.PyThreadState_SetAsyncExc(ctypes.c_ulong(self.job), exc)

    def _watch(self) -> None:
        import ctypes

        wait = self.seconds
        while not self.stopped.wait(wait):
            with self.lock:
                if self.armed:
                    self.raised.append("(a thread's job: where it landed is not known)")
                    self._set(ctypes.py_object(_Expired))
            wait = REPEAT_S

    def start(self) -> None:
        import threading

        self.job = threading.get_ident()
        self.lock, self.stopped = threading.Lock(), threading.Event()
        self.thread = threading.Thread(target=self._watch, name="afx-cell-timeout", daemon=True)
        self.thread.start()

    def disarm(self) -> None:
        with self.lock:
            self.armed = False
            self._set(None)  # a raise set but not yet landed is dropped

    def stop(self) -> None:
        self.disarm()
        self.stopped.set()
        self.thread.join()


def timed(fn, timeout_s: float, on_timeout, *args):
    """``fn(*args)``, ended after ``timeout_s`` seconds (0: no limit) at its next Python instruction: then
    ``on_timeout()`` (if given) frees what the interrupted job held, and a :class:`JobTimeout` is returned. On the
    process's main thread the limit is SIGALRM (:class:`_Alarm`), on any other thread a watchdog
    (:class:`_Watchdog`); either way it repeats until the job has ended."""
    import threading

    if not timeout_s:
        return fn(*args)
    limit = (_Alarm if threading.current_thread() is threading.main_thread() else _Watchdog)(timeout_s)
    try:
        with limit:
            try:
                return fn(*args)
            finally:
                limit.disarm()
    except _Expired:
        if on_timeout is not None:
            on_timeout()
        return JobTimeout(f"ended after run.cell_timeout_s = {timeout_s:g} s{limit.swallowed()}")


@dataclass
class Outcome:
    key: Any
    value: Any  # what the job returned, or the exception that ended it (a lost worker past its retries)
    attempts: int = 1


class Executor:
    """Runs jobs inline, one after another, in this process (``run.executor = local``, ``run.processes = 1``).
    Subclasses run them elsewhere (:class:`bench.executors.pool.PoolExecutor`, worker processes on this machine;
    :class:`bench.executors.cluster.RayExecutor`); the driver sees the same calls either way."""

    name = "local"
    cpus_per_job = 0  # the cores a job may take (0: all of this machine's)

    def describe(self) -> str:
        return "inline" if self.name == "local" else f"executor {self.name}"

    def __init__(self, log=print):
        self.log = log
        self.queue: deque = deque()

    def put(self, data):
        """A handle on ``data`` that jobs receive as the data itself (Ray: in the object store, once)."""
        return data

    def submit(self, key, fn, *args, name: str = "", options: dict | None = None, retries: int = 0,
               timeout_s: float = 0.0, on_timeout=None) -> None:
        """Run ``fn(*args)`` (``options``: where it needs to run; ``retries``: resubmissions after a lost
        worker); its :class:`Outcome` comes back from :meth:`outcomes` under ``key``."""
        self.queue.append((key, fn, args, timeout_s, on_timeout))

    def outcomes(self) -> Iterator[Outcome]:
        """Each job's outcome as it finishes, until none is left (jobs may be submitted meanwhile)."""
        while self.queue:
            key, fn, args, timeout_s, on_timeout = self.queue.popleft()
            try:
                value = timed(fn, timeout_s, on_timeout, *args)
            except Exception as e:  # jobs return their failures; anything else still comes back as an outcome
                value = e
            yield Outcome(key, value)

    def on_every_node(self, fn, *args) -> dict[str, Any]:
        """``fn(*args)`` on every machine that runs jobs, by machine."""
        return {"this machine": fn(*args)}

    def cancel(self, wait_s: float = 0.0) -> None:
        self.queue.clear()

    def close(self) -> None:
        self.queue.clear()


def local_processes(cfg: Config) -> tuple[int, int]:
    """(worker processes, torch threads in each) of a local run: ``run.processes`` (0: one per core), each with
    an equal share of the cores (``run.torch_threads`` when given)."""
    from bench.effects import default_workers

    cores = default_workers()
    n = cfg.run.processes or cores
    return n, cfg.run.torch_threads or max(1, cores // n)


def make_executor(cfg: Config, log=print) -> Executor:
    if not uses_ray(cfg):
        n, threads = local_processes(cfg)
        if n <= 1:
            return Executor(log)
        from bench.executors.pool import PoolExecutor

        return PoolExecutor(n, threads, log)
    from bench.executors.cluster import RayExecutor

    return RayExecutor(cfg.run.executor, log)
