"""AudioCommons timbral deltas (``ac``): timbral_models 0.4.0 features of the output minus those of the target.

Three parts:

**A compatibility adapter**, :func:`timbral_compat`. timbral_models 0.4.0 (2019, its only release) calls APIs that
have since gone: ``np.lib.pad`` (removed in numpy 2) and positional arguments to ``librosa.onset.onset_detect``,
``librosa.onset.onset_strength`` and ``librosa.resample`` (keyword-only since librosa 0.10). The adapter never
touches numpy, librosa or scipy themselves. While it is entered, it rebinds the module-level names ``np``,
``librosa`` (and, for speed, ``scipy`` and ``butter``) *inside timbral_models' own modules* to thin proxies that
forward every attribute to the real module except the few shims: ``np.lib.pad`` -> ``np.pad``; the three librosa
functions accept the old positional order and pass it on as keywords; ``scipy.signal.butter``/``cheby1`` are
memoised (timbral_models designs the same third-octave filters ~2000 times per clip, ~20 % of its CPU time; a
memoised design is the same arrays, bit for bit). On exit the original names are put back. Entering is counted
under a lock, so threads that use it at once share one installation and the last one out restores; each worker
process of a pool has its own modules and so its own installation. Code outside timbral_models sees the real
numpy/librosa/scipy at all times, inside the block too.

**Feature extraction**, :func:`timbral_features`: the eight features of one clip, each feature function called on
the clip at its own sample rate (each resamples to 44.1 kHz itself and loudness-normalises to -24 LUFS). That
differs from ``timbral_extractor`` in one respect: the extractor passes ``timbral_reverb`` the un-resampled
samples together with the resampled rate (a bug when the rate is below 44.1 kHz), which we avoid. A feature that
raises gives NaN (the error is logged); a silent (all-zero) clip gives NaN for all eight, as timbral_models
refuses silence.

**The metric**, :class:`AudioCommons`: features are computed only for clips whose content hash is not cached (in
memory for the process, and on disk under ``<cache dir>/audiocommons``), so a target's features are computed
once per run and reused across systems (and across runs); the clips still needed are computed in a process pool
of one process per core, each limited to one BLAS/OpenMP/numba thread.
"""

from __future__ import annotations

import functools
import hashlib
import json
import logging
import os
import sys
import threading
import types
from contextlib import contextmanager
from dataclasses import dataclass

from bench.cache import warm_librosa_numba
from bench.metrics import Metric, MetricConfig, register_metric

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
    warm_librosa_numba()
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


def _limit_threads() -> None:
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


def _serve() -> None:
    """A worker's main loop: read (clip, rate) jobs as pickles from stdin, write (status, result) to stdout.
    Anything a library prints goes to stderr, so it cannot corrupt the protocol."""
    import pickle

    out = os.fdopen(os.dup(1), "wb")
    os.dup2(2, 1)
    sys.stdout = sys.stderr
    inp = sys.stdin.buffer
    _limit_threads()
    warm_librosa_numba()  # read numba's cache only after one process has written it (see there)
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

        warm_librosa_numba()  # the workers must not race to write numba's cache (see there)
        env = dict(os.environ)
        env.update(dict.fromkeys(THREAD_VARS, "1"))
        root = str(Path(bench.__file__).resolve().parent.parent)
        env["PYTHONPATH"] = os.pathsep.join([root] + ([env["PYTHONPATH"]] if env.get("PYTHONPATH") else []))
        cmd = [sys.executable, "-c", "from bench.metrics.audiocommons import _serve; _serve()"]
        self.procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, env=env)
                      for _ in range(max(1, int(n)))]
        self._lock = threading.Lock()  # one map at a time: the pipes carry one job per worker
        self._submitter = None  # a thread that runs submitted maps in the background

    @property
    def size(self) -> int:
        return len(self.procs)

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


# --- the metric ---------------------------------------------------------------------------------------------

_MEMORY: dict[str, dict] = {}  # clip key -> {"features": {...}, "errors": {...}}, for this process


def clear_memory_cache() -> None:
    _MEMORY.clear()


@register_metric("ac")
class AudioCommons(Metric):
    """``ac/<feature>``: |feature(output) - feature(target)| for the eight timbral_models features;
    ``ac_signed/<feature>``: feature(output) - feature(target); ``ac_mean``: the mean of the seven 0-100 features'
    absolute deltas (reverb, a 0/1 classification, is left out of it; NaN if any of the seven is NaN)."""

    name = "ac"

    @dataclass
    class Config(MetricConfig):
        workers: int = 0  # processes; 0: one per available core; 1: in this process
        disk_cache: bool = True  # also keep features under <cache dir>/audiocommons
        signed: bool = True  # also report ac_signed/<feature>

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        import importlib.util

        if importlib.util.find_spec("timbral_models") is None:
            raise ImportError("metric ac needs timbral_models 0.4.0, installed without its dead dependencies: "
                              "pip install --no-deps timbral_models==0.4.0")
        self.workers = int(self.cfg.workers) or _available_cores()
        self._pool = None
        self._pending: dict[str, tuple] = {}  # clip key -> (Future of a background map, index in it)
        self.stats = {"computed": 0, "memory_hits": 0, "disk_hits": 0}

    # cache ---------------------------------------------------------------------------------------------------
    def _disk_path(self, key: str):
        from bench.cache import cache_dir

        return cache_dir() / "audiocommons" / f"v{ADAPTER_VERSION}" / key[:2] / f"{key}.json"

    def _lookup(self, key: str) -> dict | None:
        if key in _MEMORY:
            self.stats["memory_hits"] += 1
            return _MEMORY[key]
        if self.cfg.disk_cache:
            p = self._disk_path(key)
            if p.exists():
                try:
                    rec = json.loads(p.read_text())
                    rec = {"features": {f: float(rec["features"][f]) for f in FEATURES},
                           "errors": dict(rec.get("errors", {}))}
                except (OSError, ValueError, KeyError, TypeError):
                    p.unlink(missing_ok=True)
                    return None
                _MEMORY[key] = rec
                self.stats["disk_hits"] += 1
                return rec
        return None

    def _store(self, key: str, feats: dict, errors: dict) -> dict:
        rec = {"features": feats, "errors": errors}
        _MEMORY[key] = rec
        if self.cfg.disk_cache:
            from bench.cache import atomic_write_bytes

            atomic_write_bytes(self._disk_path(key), json.dumps(
                {**rec, "sample_rate": self.sample_rate, "adapter": ADAPTER_VERSION,
                 "timbral_models": timbral_models_version()}).encode())
        return rec

    # computing -----------------------------------------------------------------------------------------------
    def _executor(self) -> WorkerPool:
        if self._pool is None or not self._pool.procs:
            import weakref

            self._pool = WorkerPool(self.workers)
            weakref.finalize(self, self._pool.close)
        return self._pool

    def close(self) -> None:
        """Stop the worker processes (also done when the metric is garbage-collected, or at exit)."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None

    def features(self, clips: list) -> list[dict]:
        """Feature records of ``clips`` (float32 arrays at the metric's rate): cached ones looked up, each distinct
        missing clip computed once (in the pool when more than one is missing)."""
        keys = [clip_key(x, self.sample_rate) for x in clips]
        recs: dict[str, dict] = {}
        todo: dict[str, object] = {}
        for k, x in zip(keys, clips, strict=True):
            if k in recs or k in todo:
                continue
            if k in self._pending:
                recs[k] = self._collect(k)
                continue
            rec = self._lookup(k)
            if rec is None:
                todo[k] = x
            else:
                recs[k] = rec
        if todo:
            items = list(todo.items())
            if self.workers <= 1 or (len(items) == 1 and self._pool is None):
                results = [timbral_features(x, self.sample_rate) for _, x in items]
            else:
                results = self._executor().map([x for _, x in items], self.sample_rate)
            for (k, _), (feats, errors) in zip(items, results, strict=True):
                self.stats["computed"] += 1
                for f, err in errors.items():
                    if err != "silent clip":
                        log.warning("ac: timbral_models %s failed on a clip: %s", f, err)
                recs[k] = self._store(k, feats, errors)
        return [recs[k] for k in keys]

    def _collect(self, key: str) -> dict:
        """The record of a clip whose features a :meth:`prefetch` is computing (waits for it)."""
        fut, i = self._pending[key]
        try:
            results = fut.result()
        except BaseException:
            for k in [k for k, (f, _) in self._pending.items() if f is fut]:
                del self._pending[k]
            raise
        for k in [k for k, (f, _) in self._pending.items() if f is fut]:  # store the whole batch at once
            feats, errors = results[self._pending.pop(k)[1]]
            self.stats["computed"] += 1
            for f, err in errors.items():
                if err != "silent clip":
                    log.warning("ac: timbral_models %s failed on a clip: %s", f, err)
            self._store(k, feats, errors)
        return _MEMORY[key] if key in _MEMORY else self._lookup(key)

    def prefetch(self, estimates, examples) -> None:
        """Hand the clips whose features are not cached to the worker pool now, so that they are computed while
        the runner scores the cell's other metrics; :meth:`score_batch` collects them."""
        from bench.metrics._audio import audio_pairs

        if self.workers <= 1:
            return
        outs, tgts = audio_pairs(estimates, examples, self.name)
        todo: dict[str, object] = {}
        for x in outs + tgts:
            k = clip_key(x, self.sample_rate)
            if k not in todo and k not in self._pending and self._lookup(k) is None:
                todo[k] = x
        if todo:
            fut = self._executor().submit(list(todo.values()), self.sample_rate)
            for i, k in enumerate(todo):
                self._pending[k] = (fut, i)

    def score_batch(self, estimates, examples):
        from bench.metrics._audio import audio_pairs

        outs, tgts = audio_pairs(estimates, examples, self.name)
        recs = self.features(outs + tgts)
        n = len(outs)
        res = []
        for i in range(n):
            fo, ft = recs[i]["features"], recs[n + i]["features"]
            d = {}
            signed = {f: fo[f] - ft[f] for f in FEATURES}
            for f in FEATURES:
                d[f"ac/{f}"] = abs(signed[f])
            cont = [d[f"ac/{f}"] for f in CONTINUOUS]
            d["ac_mean"] = float(sum(cont) / len(cont))  # NaN if any is NaN
            if self.cfg.signed:
                d.update({f"ac_signed/{f}": signed[f] for f in FEATURES})
            res.append(d)
        return res

    def score(self, estimate, example):
        return self.score_batch([estimate], [example])[0]


def _available_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
