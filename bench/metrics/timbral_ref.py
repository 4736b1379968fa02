"""The reference AudioCommons features: timbral_models 0.4.0 run as published, through a compatibility adapter
and a pool of worker processes (the ``ac_ref`` metric of :mod:`bench.metrics.audiocommons` uses it; the batched
``ac`` is validated against it by ``afx-bench check ac``). See :mod:`bench.metrics.audiocommons` for the adapter's
account.
"""

from __future__ import annotations

import functools
import hashlib
import logging
import os
import sys
import threading
import types
from contextlib import contextmanager

from bench.cache import warm_librosa_numba

log = logging.getLogger(__name__)

FEATURES = ("hardness", "depth", "brightness", "roughness", "warmth", "sharpness", "boominess", "reverb")
CONTINUOUS = FEATURES[:-1]  # on timbral_models' 0-100 scale; reverb is a 0/1 classification
_FUNCTIONS = {"hardness": "timbral_hardness", "depth": "timbral_depth", "brightness": "timbral_brightness",
              "roughness": "timbral_roughness", "warmth": "timbral_warmth", "sharpness": "timbral_sharpness",
              "boominess": "timbral_booming", "reverb": "timbral_reverb"}
ADAPTER_VERSION = 1  # bump when the adapter or the feature extraction changes: it keys the cache
THREAD_VARS = ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS", "NUMBA_NUM_THREADS")


# --- compatibility adapter ------------------------------------------------------------------------------------


class _Proxy(types.ModuleType):
    """A stand-in for a module: the given overrides, and every other attribute from the real module."""

    def __init__(self, real: types.ModuleType, **overrides):
        super().__init__(real.__name__, getattr(real, "__doc__", None))
        self.__dict__.update(overrides)
        self.__dict__["_real_module"] = real

    def __getattr__(self, name):  # called only for names not overridden
        return getattr(self.__dict__["_real_module"], name)


def _keywords(fn, names: tuple[str, ...]):
    """``fn`` (keyword-only in current librosa) callable the old way: positionals become ``names`` keywords."""

    @functools.wraps(fn)
    def call(*args, **kwargs):
        if len(args) > len(names):
            raise TypeError(f"{fn.__name__}: at most {len(names)} positional arguments ({', '.join(names)})")
        kwargs.update(zip(names, args, strict=False))
        return fn(**kwargs)

    return call


def _hashable(v):
    import numpy as np

    if isinstance(v, np.ndarray | list | tuple):
        return tuple(_hashable(u) for u in v)
    if isinstance(v, np.generic):
        return v.item()
    hash(v)
    return v


@functools.lru_cache(maxsize=4096)
def _design(kind: str, args: tuple, kwargs: tuple):
    import scipy.signal

    return getattr(scipy.signal, kind)(*args, **dict(kwargs))


def _memoised(kind: str):
    import scipy.signal

    real = getattr(scipy.signal, kind)

    @functools.wraps(real)
    def design(*args, **kwargs):
        try:
            key = (kind, _hashable(args), tuple(sorted((k, _hashable(v)) for k, v in kwargs.items())))
        except TypeError:
            return real(*args, **kwargs)
        out = _design(*key)
        return tuple(a.copy() for a in out) if isinstance(out, tuple) else out.copy()

    return design


def _shims(memo_filters: bool) -> dict[str, object]:
    """Module-level name in timbral_models -> (real object it must be, replacement)."""
    import librosa
    import numpy as np
    import scipy
    import scipy.signal

    shims = {
        "np": (np, _Proxy(np, lib=_Proxy(np.lib, pad=np.pad))),
        "librosa": (librosa, _Proxy(
            librosa,
            onset=_Proxy(librosa.onset,
                         onset_detect=_keywords(librosa.onset.onset_detect, ("y", "sr")),
                         onset_strength=_keywords(librosa.onset.onset_strength, ("y", "sr"))),
            core=_Proxy(librosa.core, resample=_keywords(librosa.resample, ("y", "orig_sr", "target_sr"))),
        )),
    }
    if memo_filters:
        butter, cheby1 = _memoised("butter"), _memoised("cheby1")
        shims["scipy"] = (scipy, _Proxy(scipy, signal=_Proxy(scipy.signal, butter=butter, cheby1=cheby1)))
        shims["butter"] = (scipy.signal.butter, butter)
    return shims


_lock = threading.Lock()
_installed: dict = {"depth": 0, "memo": None, "saved": []}


def _timbral_modules():
    import timbral_models  # noqa: F401  (imports every submodule)

    return [m for n, m in sorted(sys.modules.items()) if n == "timbral_models" or n.startswith("timbral_models.")]


@contextmanager
def timbral_compat(memo_filters: bool = True):
    """Make timbral_models 0.4.0 run on current numpy/librosa for the duration of the block; yields the
    ``timbral_models`` module. Re-entrant and thread-safe (see the module docstring)."""
    with _lock:
        st = _installed
        if st["depth"] == 0:
            saved = []
            shims = _shims(memo_filters)
            for mod in _timbral_modules():
                for name, (real, shim) in shims.items():
                    if mod.__dict__.get(name) is real:
                        saved.append((mod, name, real))
                        setattr(mod, name, shim)
            st["saved"], st["memo"] = saved, memo_filters
        elif st["memo"] != memo_filters:
            raise RuntimeError(f"timbral_compat(memo_filters={memo_filters}) entered while another thread holds "
                               f"it with memo_filters={st['memo']}")
        st["depth"] += 1
    try:
        yield sys.modules["timbral_models"]
    finally:
        with _lock:
            st["depth"] -= 1
            if st["depth"] == 0:
                for mod, name, real in reversed(st["saved"]):
                    setattr(mod, name, real)
                st["saved"], st["memo"] = [], None


# --- features of one clip -----------------------------------------------------------------------------------


def timbral_features(x, sample_rate: int, *, memo_filters: bool = True) -> tuple[dict[str, float], dict[str, str]]:
    """The eight timbral_models features of mono clip ``x``, and the errors of those that failed (NaN)."""
    import warnings

    import numpy as np

    x = np.asarray(x, dtype=np.float64)
    if x.ndim != 1 or not np.all(np.isfinite(x)):
        raise ValueError("timbral_features: expects a finite mono clip")
    if not np.any(x):
        return dict.fromkeys(FEATURES, float("nan")), dict.fromkeys(FEATURES, "silent clip")
    warm_librosa_numba(onsets=True)
    feats, errors = {}, {}
    with timbral_compat(memo_filters) as tm, warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        for name in FEATURES:
            try:
                feats[name] = float(getattr(tm, _FUNCTIONS[name])(x, fs=int(sample_rate)))
            except Exception as e:  # one feature failing must not lose the others
                feats[name] = float("nan")
                errors[name] = f"{type(e).__name__}: {e}"
    return feats, errors


@functools.lru_cache(maxsize=1)
def timbral_models_version() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        return version("timbral_models")
    except PackageNotFoundError:
        return "unknown"


def clip_key(x, sample_rate: int) -> str:
    """Content hash of a clip (float32 samples, rate, adapter and timbral_models versions)."""
    import numpy as np

    h = hashlib.sha256(f"ac/{ADAPTER_VERSION}/{timbral_models_version()}/{int(sample_rate)}/".encode())
    h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
    return h.hexdigest()[:32]


# --- worker processes ---------------------------------------------------------------------------------------


def limit_threads() -> None:
    """One BLAS / OpenMP / numba thread in this (worker) process. The variables are already set in the worker's
    environment before it starts; this also limits libraries that were loaded some other way."""
    for v in THREAD_VARS:
        os.environ[v] = "1"
    try:
        from threadpoolctl import threadpool_limits

        threadpool_limits(1)
    except ImportError:
        pass
    if "numba" in sys.modules:
        try:
            sys.modules["numba"].set_num_threads(1)
        except Exception:
            pass


def serve_worker() -> None:
    """A worker's main loop: read (clip, rate) jobs as pickles from stdin, write (status, result) to stdout.
    Anything a library prints goes to stderr, so it cannot corrupt the protocol."""
    import pickle

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    limit_threads()
    warm_librosa_numba(onsets=True)  # read numba's cache only after one process has written it (see there)
    with timbral_compat():  # import timbral_models (and librosa, sklearn) before the first job
        pass
    while True:
        try:
            x, sample_rate = pickle.load(inp)
        except EOFError:
            return
        try:
            res = ("ok", timbral_features(x, sample_rate))
        except Exception as e:
            res = ("error", f"{type(e).__name__}: {e}")
        pickle.dump(res, out, protocol=pickle.HIGHEST_PROTOCOL)
        out.flush()


class WorkerPool:
    """``n`` long-lived worker processes (``python -c``, not fork: the parent may hold torch/OpenMP threads; not
    multiprocessing's spawn either, which re-runs the parent's main script). Each worker starts with
    OMP/OPENBLAS/MKL/NUMBA_NUM_THREADS=1 in its environment, so n workers use n cores. Jobs are handed out one
    at a time to whichever worker is free."""

    def __init__(self, n: int):
        import subprocess
        from pathlib import Path

        import bench

        warm_librosa_numba(onsets=True)  # the workers must not race to write numba's cache (see there)
        env = dict(os.environ)
        env.update(dict.fromkeys(THREAD_VARS, "1"))
        root = str(Path(bench.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        cmd = [sys.executable, "-c", "from bench.metrics.timbral_ref import serve_worker; serve_worker()"]
        self.procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
                      for _ in range(max(1, int(n)))]
        self._lock = threading.Lock()  # one map at a time: the pipes carry one job per worker
        self._submitter = None  # a thread that runs submitted maps in the background

    @property
    def size(self) -> int:
        return len(self.procs)

    @property
    def pids(self) -> list[int]:
        return [p.pid for p in self.procs]

    def map(self, clips: list, sample_rate: int) -> list:
        """timbral_features of every clip, in order."""
        with self._lock:
            return self._map(clips, sample_rate)

    def submit(self, clips: list, sample_rate: int):
        """:meth:`map` in the background: a Future of its result."""
        if self._submitter is None:
            from concurrent.futures import ThreadPoolExecutor

            self._submitter = ThreadPoolExecutor(1, thread_name_prefix="ac-pool")
        return self._submitter.submit(self.map, clips, sample_rate)

    def _map(self, clips: list, sample_rate: int) -> list:
        import pickle
        import queue

        jobs: queue.SimpleQueue = queue.SimpleQueue()
        for i in range(len(clips)):
            jobs.put(i)
        results: list = [None] * len(clips)
        failures: list[str] = []

        def drive(p):
            while not failures:
                try:
                    i = jobs.get_nowait()
                except queue.Empty:
                    return
                try:
                    pickle.dump((clips[i], int(sample_rate)), p.stdin, protocol=pickle.HIGHEST_PROTOCOL)
                    p.stdin.flush()
                    status, res = pickle.load(p.stdout)
                except (EOFError, OSError, pickle.UnpicklingError) as e:
                    failures.append(f"worker {p.pid} died (exit code {p.poll()}): {type(e).__name__}")
                    return
                if status != "ok":
                    failures.append(f"worker {p.pid}: {res}")
                    return
                results[i] = res

        threads = [threading.Thread(target=drive, args=(p,), daemon=True) for p in self.procs]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if failures:
            self.close()
            raise RuntimeError(f"ac: timbral_models worker failed: {failures[0]}")
        return results

    def close(self) -> None:
        import subprocess

        if self._submitter is not None:  # a failing background map closes the pool from the submitter's thread
            inside = threading.current_thread().name.startswith("ac-pool")
            self._submitter.shutdown(wait=not inside)
            self._submitter = None
        for p in self.procs:
            try:
                p.stdin.close()
            except OSError:
                pass
        for p in self.procs:
            try:
                p.wait(timeout=10)
            except subprocess.TimeoutExpired:
                p.kill()
                p.wait()
            p.stdout.close()
        self.procs = []
