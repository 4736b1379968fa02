"""Jobs side by side on this machine: a pool of worker processes (``run.executor = local`` with ``run.processes``
other than 1).

Each worker is a fresh (spawned) Python process that runs one job at a time, with ``threads`` torch intra-op
threads (and as many OpenMP/BLAS threads), so that the processes share the cores instead of fighting over them.
The driver stays the only writer: a job returns what it made, as inline. A job past its time limit is ended in its
worker (the same alarm as inline, :func:`bench.executors.timed`); a worker that dies (killed, out of memory) breaks
the pool: the pool is made anew and the jobs it held are submitted again, each up to its ``retries``.
"""

from __future__ import annotations

import os
from collections.abc import Iterator

from bench.executors import Executor, Outcome, timed

_THREAD_VARS = ("OMP_NUM_THREADS", "MKL_NUM_THREADS", "OPENBLAS_NUM_THREADS", "NUMBA_NUM_THREADS")


def _init_worker(threads: int) -> None:
    """A worker's start: its thread counts set before torch or numpy's BLAS start their thread pools."""
    for var in _THREAD_VARS:
        os.environ[var] = str(threads)
    import torch

    torch.set_num_threads(threads)
    from bench.cache import warm_librosa_numba

    warm_librosa_numba()  # one process compiles numba's cache at a time (see there)


def _run(fn, timeout_s, on_timeout, args):
    return timed(fn, timeout_s, on_timeout, *args)


class PoolExecutor(Executor):
    """``processes`` worker processes of ``threads`` torch threads each; the jobs run in the order submitted, as
    many at a time as there are workers, and come back as they finish."""

    name = "local"

    def __init__(self, processes: int, threads: int, log=print):
        super().__init__(log)
        self.processes, self.threads = int(processes), int(threads)
        self.cpus_per_job = self.threads
        self.pool = None
        self.running: dict = {}  # future -> (key, fn, args, timeout_s, on_timeout, retries, attempts)

    def describe(self) -> str:
        return f"{self.processes} worker processes x {self.threads} threads"

    def _pool(self):
        if self.pool is None:
            import multiprocessing
            from concurrent.futures import ProcessPoolExecutor

            from bench.cache import warm_librosa_numba

            warm_librosa_numba()  # numba's cache written once, before the workers read it
            self.pool = ProcessPoolExecutor(self.processes, mp_context=multiprocessing.get_context("spawn"),
                                            initializer=_init_worker, initargs=(self.threads,))
        return self.pool

    def submit(self, key, fn, *args, name: str = "", options: dict | None = None, retries: int = 0,
               timeout_s: float = 0.0, on_timeout=None) -> None:
        self._start((key, fn, args, timeout_s, on_timeout, retries, 1))

    def _start(self, job) -> None:
        key, fn, args, timeout_s, on_timeout, _, _ = job
        self.running[self._pool().submit(_run, fn, timeout_s, on_timeout, args)] = job

    def outcomes(self) -> Iterator[Outcome]:
        from concurrent.futures import FIRST_COMPLETED, wait
        from concurrent.futures.process import BrokenProcessPool

        while self.running:
            done, _ = wait(list(self.running), return_when=FIRST_COMPLETED)
            broken = []
            for fut in done:
                job = self.running.pop(fut)
                try:
                    value = fut.result()
                except BrokenProcessPool as e:
                    broken.append((job, e))
                    continue
                except Exception as e:  # the job could not be sent or its result not received
                    value = e
                yield Outcome(job[0], value, job[6])
            if broken:
                yield from self._restart(broken)

    def _restart(self, broken: list) -> Iterator[Outcome]:
        """A worker died: every job the pool held fails at once. A new pool runs them again (up to their retries);
        a job past its retries comes back with the error."""
        from concurrent.futures import wait
        from concurrent.futures.process import BrokenProcessPool

        wait(list(self.running))  # the rest of the broken pool's jobs end at once too
        for fut, job in self.running.items():
            error = fut.exception()
            if isinstance(error, BrokenProcessPool):
                broken.append((job, error))
            else:  # finished before the pool broke
                yield Outcome(job[0], error if error is not None else fut.result(), job[6])
        self.running.clear()
        self.pool.shutdown(wait=False, cancel_futures=True)
        self.pool = None
        for job, error in broken:
            key, fn, args, timeout_s, on_timeout, retries, attempts = job
            if attempts <= retries:
                self.log(f"a worker process was lost; {key[0]} job {key[1:]} submitted again (attempt {attempts + 1})")
                self._start((key, fn, args, timeout_s, on_timeout, retries, attempts + 1))
            else:
                yield Outcome(key, RuntimeError(f"its worker process was lost ({error}) after {attempts} attempt(s)"),
                              attempts)

    def on_every_node(self, fn, *args) -> dict:
        return {"this machine": fn(*args)}

    def cancel(self, wait_s: float = 0.0) -> None:
        for fut in self.running:
            fut.cancel()
        self.running.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None

    def close(self) -> None:
        self.running.clear()
        if self.pool is not None:
            self.pool.shutdown(wait=True, cancel_futures=True)
            self.pool = None
