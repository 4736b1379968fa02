"""The Ray executor: each job a Ray task with its options, waited for, resubmitted after a lost worker, and ended
past its time limit (inside the task: :func:`bench.executors.timed`).

A task whose worker or node is lost is resubmitted by the driver (not by Ray: ``max_retries=0``), at most its
``retries`` times, with a log line; a job's own failure is its result and is never retried. Nothing here knows what
a job is: the driver (:mod:`bench.runner`, :mod:`bench.executors.sweep`) gives functions and arguments.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from typing import Any

from bench.config import ConfigError
from bench.executors import Executor, Outcome, timed

PREFLIGHT_S = 300.0  # how long a node may take to answer the preflight (its first task imports the harness)


def connect(executor: str, log=print):
    """Join (or start) the Ray cluster ``executor`` names; returns the ``ray`` module."""
    try:
        import ray
    except ImportError as e:
        raise ConfigError(f"run.executor = {executor!r} needs Ray: pip install 'afx-bench[ray]' ({e})") from e
    if ray.is_initialized():
        return ray
    os.environ.setdefault("RAY_DISABLE_USAGE_STATS", "1")
    address = executor if executor.startswith("ray://") else os.environ.get("RAY_ADDRESS") or None
    kwargs = {"logging_level": "warning", "log_to_driver": True}
    if address is None:
        kwargs["include_dashboard"] = False
    try:
        ray.init(address=address, **kwargs)
    except Exception as e:
        raise ConfigError(f"run.executor = {executor!r}: cannot join the Ray cluster at "
                          f"{address or 'a new local cluster'}: {type(e).__name__}: {e}") from e
    res = ray.cluster_resources()
    log(f"ray: {'joined ' + address if address else 'started a local cluster'}: {len(nodes(ray))} node(s), "
        f"{res.get('CPU', 0):g} CPUs, {res.get('GPU', 0):g} GPUs")
    return ray


def nodes(ray) -> list[dict]:
    """The live nodes that can run tasks (some CPU or GPU)."""
    return [n for n in ray.nodes() if n.get("Alive") and (n.get("Resources", {}).get("CPU", 0) > 0
                                                          or n.get("Resources", {}).get("GPU", 0) > 0)]


def lost_worker(ray, error: BaseException) -> bool:
    """True for the errors of a lost worker or node (retried), false for a task's own failure or a cancel."""
    ex = ray.exceptions
    if isinstance(error, (ex.RayTaskError, ex.TaskCancelledError)):
        return False
    return isinstance(error, ex.RayError)


@dataclass
class _Job:
    key: Any
    fn: Any
    args: tuple
    name: str
    options: dict
    retries: int
    timeout_s: float
    on_timeout: Any
    attempt: int = 0


class RayExecutor(Executor):
    name = "ray"

    def __init__(self, executor: str, log=print):
        super().__init__(log)
        self.ray = connect(executor, log)
        self.pending: dict = {}  # ObjectRef -> _Job
        self.retried = 0

    def put(self, data):
        return self.ray.put(data)

    def submit(self, key, fn, *args, name: str = "", options: dict | None = None, retries: int = 0,
               timeout_s: float = 0.0, on_timeout=None) -> None:
        self._submit(_Job(key, fn, args, name or str(key), dict(options or {}), retries, timeout_s, on_timeout))

    def _submit(self, job: _Job) -> None:
        job.attempt += 1
        task = self.ray.remote(timed).options(name=job.name, max_retries=0, **job.options)
        self.pending[task.remote(job.fn, job.timeout_s, job.on_timeout, *job.args)] = job

    def outcomes(self):
        ray = self.ray
        while self.pending:
            ready, _ = ray.wait(list(self.pending), num_returns=1)
            for ref in ready:
                job = self.pending.pop(ref)
                try:
                    value = ray.get(ref)
                except Exception as e:
                    if lost_worker(ray, e) and job.attempt <= job.retries:
                        self.retried += 1
                        self.log(f"ray: {job.name}: worker lost ({type(e).__name__}); retry {job.attempt}/"
                                 f"{job.retries}")
                        self._submit(job)
                        continue
                    value = getattr(e, "cause", None) or e  # a task's own exception, unwrapped
                yield Outcome(job.key, value, job.attempt)

    def on_every_node(self, fn, *args) -> dict[str, Any]:
        """``fn(*args)`` once on each live node (pinned there), by node (its address and id)."""
        from ray.util.scheduling_strategies import NodeAffinitySchedulingStrategy

        ray = self.ray
        refs = {}
        for n in nodes(ray):
            where = f"node {n['NodeManagerAddress']} ({n['NodeID'][:12]})"
            strategy = NodeAffinitySchedulingStrategy(n["NodeID"], soft=False)
            task = ray.remote(fn).options(name="preflight", num_cpus=0, max_retries=0, scheduling_strategy=strategy)
            refs[task.remote(*args)] = where
        ready, late = ray.wait(list(refs), num_returns=len(refs), timeout=PREFLIGHT_S)
        out = {}
        for ref in ready:
            try:
                out[refs[ref]] = ray.get(ref)
            except Exception as e:
                out[refs[ref]] = e
        for ref in late:
            ray.cancel(ref, force=True)
            out[refs[ref]] = TimeoutError(f"no answer within {PREFLIGHT_S:g} s")
        return out

    def cancel(self, wait_s: float = 0.0) -> None:
        """Cancel every pending task (each gets a KeyboardInterrupt) and give them ``wait_s`` to wind down."""
        import time

        for ref in list(self.pending):
            try:
                self.ray.cancel(ref, force=False)
            except Exception:
                pass
        deadline = time.monotonic() + wait_s
        while self.pending and time.monotonic() < deadline:
            ready, _ = self.ray.wait(list(self.pending), num_returns=len(self.pending), timeout=1.0)
            for ref in ready:
                self.pending.pop(ref, None)
        self.pending.clear()

    def close(self) -> None:
        if self.retried:
            self.log(f"ray: {self.retried} task(s) resubmitted after a lost worker")
        self.pending.clear()
