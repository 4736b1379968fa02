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


def timed(fn, timeout_s: float, on_timeout, *args):
    """``fn(*args)``, ended after ``timeout_s`` seconds (0: no limit) at its next Python instruction: then
    ``on_timeout()`` (if given) frees what the interrupted job held, and a :class:`JobTimeout` is returned. The
    alarm is SIGALRM, so the limit holds in a process's main thread (the driver's, a Ray worker's)."""
    import signal
    import threading

    if not timeout_s or threading.current_thread() is not threading.main_thread():
        return fn(*args)

    def expire(signum, frame):
        raise _Expired()

    old = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, float(timeout_s))
    try:
        return fn(*args)
    except _Expired:
        if on_timeout is not None:
            on_timeout()
        return JobTimeout(f"ended after run.cell_timeout_s = {timeout_s:g} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, old)


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
