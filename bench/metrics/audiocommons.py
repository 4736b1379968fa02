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

**The metrics.** ``ac`` (:class:`AudioCommons`) computes the features with the batched implementation in
:mod:`bench.metrics.timbral` (many clips per call; ``afx-bench check ac`` validates it against timbral_models),
taking any feature listed in its ``reference_features`` from timbral_models instead. ``ac_ref``
(:class:`AudioCommonsRef`) is timbral_models itself, through the adapter below: the reference, kept for validation
and for features that the batched code does not (yet) match. Both compute features only for clips whose content
hash is not cached (in memory for the process, and on disk under ``<cache dir>/audiocommons``), so a task's
inputs' and targets' features are computed once and reused by every system and seed (and later runs); a clip
another process is computing is waited for, not computed again (:class:`_Claims`). ``ac_ref`` computes the clips
still needed in a process pool of one process per core, each limited to one BLAS/OpenMP/numba thread; ``ac`` in
worker processes of the same kind (numpy backend) or in this process (torch backend, on the run's GPU), in the
background when the runner prefetches.

Scores are keyed by the metric's name: ``ac/<feature>``, ``ac_mean``, ``ac_signed/<feature>`` (and
``ac_ref/<feature>``, ``ac_ref_mean``, ``ac_ref_signed/<feature>`` for the reference). A value that is not finite
(a clip or feature the models refuse) is NaN, never Inf; the reason is logged and counted in ``stats["nan"]``.
"""

from __future__ import annotations

import hashlib
import json
import logging
import math
import os
import socket
import threading
import time
import weakref
from dataclasses import dataclass, field

from bench.metrics import Metric, MetricConfig, register_metric
from bench.metrics.timbral_ref import (  # noqa: F401  (FEATURES and CONTINUOUS are this metric's public names)
    ADAPTER_VERSION,
    CONTINUOUS,
    FEATURES,
    WorkerPool,
    clip_key,
    limit_threads,
    timbral_features,
    timbral_models_version,
)

log = logging.getLogger(__name__)

# --- the metric ---------------------------------------------------------------------------------------------

_MEMORY: dict[str, dict] = {}  # clip key -> {"features": {...}, "errors": {...}}, for this process


def _start_time(pid: int) -> str:
    """When process ``pid`` started (clock ticks since boot, from /proc; "" where there is no /proc)."""
    try:
        with open(f"/proc/{pid}/stat") as fh:
            return fh.read().rsplit(")", 1)[1].split()[19]
    except (OSError, IndexError):
        return ""


class _Claims:
    """Which process computes a clip: a file ``<key>.claim`` beside the clip's cached record, created exclusively by
    the process that will compute it (it holds the host and process id) and removed once the record is written.
    A process that finds another's claim waits for the record instead of computing the clip a second time (cells
    of one task scored in several worker processes share their inputs and targets). A claim whose process is gone
    (same host: no process with that id and start time), or older than ``STALE_S`` seconds, is taken over.
    Without a disk cache there is nothing to share and every claim succeeds."""

    STALE_S = 1800.0
    POLL_S = 0.05

    def __init__(self, record_path):
        self._record_path = record_path  # key -> Path of the cached record; None: no disk cache
        self._me = f"{socket.gethostname()}:{os.getpid()}:{_start_time(os.getpid())}"

    def _path(self, key: str):
        return self._record_path(key).with_suffix(".claim")

    def take(self, key: str) -> bool:
        """Claim ``key`` for this process: False when another live process holds it."""
        if self._record_path is None:
            return True
        path = self._path(key)
        path.parent.mkdir(parents=True, exist_ok=True)
        for _ in range(2):
            try:
                fd = os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY)
            except FileExistsError:
                if self._held_elsewhere(path):
                    return False
                path.unlink(missing_ok=True)  # stale: take it over
                continue
            with os.fdopen(fd, "w") as fh:
                fh.write(self._me)
            return True
        return not self._held_elsewhere(path)

    def _held_elsewhere(self, path) -> bool:
        try:
            owner = path.read_text()
            age = time.time() - path.stat().st_mtime
        except (OSError, ValueError):
            return False  # released meanwhile
        if owner == self._me:
            return False
        host, pid, start = (owner.split(":") + ["", ""])[:3]
        if age > self.STALE_S:
            return False
        if host == socket.gethostname() and pid.isdigit():
            try:
                os.kill(int(pid), 0)
            except ProcessLookupError:
                return False
            except PermissionError:
                pass
            if start and _start_time(int(pid)) != start:  # the id now belongs to another process
                return False
        return True

    def release(self, key: str) -> None:
        if self._record_path is None:
            return
        path = self._path(key)
        try:
            if path.read_text() == self._me:
                path.unlink(missing_ok=True)
        except OSError:
            pass

    def wait(self, key: str, lookup) -> dict | None:
        """The record of ``key`` once its claimer has written it; None if the claim goes away without a record
        (its process failed or died: the caller computes the clip)."""
        while True:
            rec = lookup(key)
            if rec is not None:
                return rec
            if not self._held_elsewhere(self._path(key)) and self.take(key):
                rec = lookup(key)  # written just before the claim was released
                if rec is not None:
                    self.release(key)
                return rec
            time.sleep(self.POLL_S)


def clear_memory_cache() -> None:
    _MEMORY.clear()


@register_metric("ac_ref")
class AudioCommonsRef(Metric):
    """``<name>/<feature>``: |feature(output) - feature(target)| for the eight timbral_models features;
    ``<name>_signed/<feature>``: feature(output) - feature(target); ``<name>_mean``: the mean of the seven 0-100
    features' absolute deltas (reverb, a 0/1 classification, is left out of it; NaN if any of the seven is NaN).
    This class computes them with timbral_models itself (the reference); :class:`AudioCommons` (``ac``) with the
    batched implementation."""

    name = "ac_ref"
    cache_tag = f"v{ADAPTER_VERSION}"  # the folder of this implementation's features in the disk cache

    @dataclass
    class Config(MetricConfig):
        workers: int = 0  # processes; 0: one per available core; 1: in this process
        disk_cache: bool = True  # also keep features under <cache dir>/audiocommons
        signed: bool = True  # also report ac_signed/<feature>

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        import importlib.util

        if self._needs_reference() and importlib.util.find_spec("timbral_models") is None:
            raise ImportError("metric ac needs timbral_models 0.4.0, installed without its dead dependencies: "
                              "pip install --no-deps timbral_models==0.4.0")
        self.workers = int(self.cfg.workers) or _available_cores()
        self._pool = None
        self._pending: dict[str, tuple] = {}  # clip key -> (Future of a background map, index in it)
        self._claims = _Claims(self._disk_path if self.cfg.disk_cache else None)
        self.stats = {"computed": 0, "memory_hits": 0, "disk_hits": 0, "nan": dict.fromkeys(FEATURES, 0)}

    def _needs_reference(self) -> bool:
        return True

    # cache ---------------------------------------------------------------------------------------------------
    def _disk_path(self, key: str):
        from bench.cache import cache_dir

        return cache_dir() / "audiocommons" / self.cache_tag / key[:2] / f"{key}.json"

    def clip_key(self, x) -> str:
        return clip_key(x, self.sample_rate)

    def _compute(self, clips: list) -> list:
        """(features, errors) of each clip, in this process."""
        return [timbral_features(x, self.sample_rate) for x in clips]

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
        """Stop the worker processes (also done when the metric is garbage-collected, or at exit) and give up the
        claims of clips still being computed."""
        if self._pool is not None:
            self._pool.close()
            self._pool = None
        for k in self._pending:
            self._claims.release(k)
        self._pending.clear()

    def features(self, clips: list) -> list[dict]:
        """Feature records of ``clips`` (float32 arrays at the metric's rate): cached ones looked up, each distinct
        missing clip computed once (in the pool when more than one is missing). A clip that another process is
        computing (its claim is on disk, see :class:`_Claims`) is waited for, not computed again."""
        keys = [self.clip_key(x) for x in clips]
        recs: dict[str, dict] = {}
        todo: dict[str, object] = {}
        elsewhere: list[str] = []
        for k, x in zip(keys, clips, strict=True):
            if k in recs or k in todo or k in elsewhere:
                continue
            if k in self._pending:
                recs[k] = self._collect(k)
                continue
            rec = self._lookup(k)
            if rec is not None:
                recs[k] = rec
            elif self._claims.take(k):
                todo[k] = x
            else:
                elsewhere.append(k)
        self._compute_claimed(todo, recs)
        for k in elsewhere:
            rec = self._claims.wait(k, self._lookup)
            if rec is None:  # its owner gave up: compute it here
                self._compute_claimed({k: clips[keys.index(k)]}, recs)
            else:
                recs[k] = rec
        return [recs[k] for k in keys]

    def _compute_claimed(self, todo: dict, recs: dict) -> None:
        """Compute the clips of ``todo`` (key -> clip, claimed by this process), store them, release the claims."""
        if not todo:
            return
        items = list(todo.items())
        try:
            if self.workers <= 1 or (len(items) == 1 and self._pool is None):
                results = self._compute([x for _, x in items])
            else:
                results = self._executor().map([x for _, x in items], self.sample_rate)
            for (k, _), (feats, errors) in zip(items, results, strict=True):
                recs[k] = self._record(k, feats, errors)
        finally:
            for k, _ in items:
                self._claims.release(k)

    def _record(self, key: str, feats: dict, errors: dict) -> dict:
        """Count, log and store one newly computed clip."""
        self.stats["computed"] += 1
        for f, err in errors.items():
            if err != "silent clip":
                log.warning("ac: timbral_models %s failed on a clip: %s", f, err)
        return self._store(key, feats, errors)

    def _collect(self, key: str) -> dict:
        """The record of a clip whose features a :meth:`prefetch` is computing (waits for it)."""
        fut, i = self._pending[key]
        batch = [k for k, (f, _) in self._pending.items() if f is fut]
        try:
            results = fut.result()
            for k in batch:  # store the whole batch at once
                feats, errors = results[self._pending[k][1]]
                self._record(k, feats, errors)
        finally:
            for k in batch:
                del self._pending[k]
                self._claims.release(k)
        return _MEMORY[key] if key in _MEMORY else self._lookup(key)

    def prefetch(self, estimates, examples) -> None:
        """Hand the clips whose features are not cached (nor being computed by another process) to the worker pool
        now, so that they are computed while the runner scores the cell's other metrics; :meth:`score_batch`
        collects them."""
        from bench.metrics._audio import audio_pairs

        if self.workers <= 1:
            return
        outs, tgts = audio_pairs(estimates, examples, self.name)
        todo: dict[str, object] = {}
        for x in outs + tgts:
            k = self.clip_key(x)
            if k not in todo and k not in self._pending and self._lookup(k) is None and self._claims.take(k):
                todo[k] = x
        if todo:
            try:
                fut = self._executor().submit(list(todo.values()), self.sample_rate)
            except BaseException:
                for k in todo:
                    self._claims.release(k)
                raise
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
            p = self.name
            signed = {}
            for f in FEATURES:
                v = fo[f] - ft[f]
                if not math.isfinite(v):  # a refused clip or feature: NaN (never Inf), counted
                    v = float("nan")
                    self.stats["nan"][f] += 1
                signed[f] = v
            for f in FEATURES:
                d[f"{p}/{f}"] = abs(signed[f])
            cont = [d[f"{p}/{f}"] for f in CONTINUOUS]
            d[f"{p}_mean"] = float(sum(cont) / len(cont))  # NaN if any is NaN
            if self.cfg.signed:
                d.update({f"{p}_signed/{f}": signed[f] for f in FEATURES})
            res.append(d)
        return res

    def score(self, estimate, example):
        return self.score_batch([estimate], [example])[0]


def _available_cores() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))


# --- the batched implementation -------------------------------------------------------------------------------


class _InProcess:
    """What :class:`AudioCommons` uses in place of a :class:`WorkerPool`: the same ``map``/``submit``/``close``,
    computing batches in this process (``submit``: in one background thread, so that a prefetch overlaps with the
    other metrics; numpy, scipy and numba release the GIL for most of the work)."""

    def __init__(self, compute):
        self._compute = compute
        self._thread = None
        self.procs = [self]  # non-empty while open (the metric checks it)

    @property
    def size(self) -> int:
        return 1

    def map(self, clips: list, sample_rate: int) -> list:
        return self._compute(clips)

    def submit(self, clips: list, sample_rate: int):
        if self._thread is None:
            from concurrent.futures import ThreadPoolExecutor

            self._thread = ThreadPoolExecutor(1, thread_name_prefix="ac-batched")
        return self._thread.submit(self._compute, clips)

    def close(self) -> None:
        if self._thread is not None:
            inside = threading.current_thread().name.startswith("ac-batched")
            self._thread.shutdown(wait=not inside)
            self._thread = None
        self.procs = []


def init_worker() -> None:
    """A worker process of the batched features: one thread per library, and an allocator that keeps memory."""
    from bench.metrics import timbral

    limit_threads()
    timbral.tune_allocator()


def batched_features(clips: list, sample_rate: int, features: tuple, batch_size: int, backend: str = "numpy",
                     device: str = "cpu") -> list:
    """``[(features, errors)]`` per clip from the batched implementation (a module-level function, so a worker
    process can run it)."""
    import numpy as np

    from bench.metrics import timbral

    timbral.warm()
    out = []
    for s in range(0, len(clips), batch_size):
        chunk = [np.asarray(x, dtype=np.float64) for x in clips[s:s + batch_size]]
        vals, reasons = timbral.extract(chunk, sample_rate, features, backend=backend, device=device)
        out += [({f: float(vals[r, j]) for j, f in enumerate(features)}, dict(reasons[r])) for r in range(len(chunk))]
    return out


class _Split:
    """The futures of a batch split over worker processes, as one future of the whole batch."""

    def __init__(self, futures: list):
        self._futures = futures

    def result(self) -> list:
        return [r for f in self._futures for r in f.result()]


class _Processes:
    """The batched features in ``n`` worker processes (each batch split evenly over them), with the ``map`` /
    ``submit`` / ``close`` of a :class:`WorkerPool`: on two cores the features of one cell are computed on both
    while this process goes on with the other metrics and the next system. Workers compile the numba kernels one at
    a time (``timbral.warm`` holds a file lock)."""

    def __init__(self, n: int, sample_rate: int, features: tuple, batch_size: int):
        import multiprocessing
        from concurrent.futures import ProcessPoolExecutor

        self.n = n
        self._args = (sample_rate, features, batch_size)
        self._pool = ProcessPoolExecutor(n, mp_context=multiprocessing.get_context("spawn"),
                                         initializer=init_worker)
        self.procs = [self]

    @property
    def pids(self) -> list[int]:
        """The worker processes' ids (those started so far)."""
        return list(getattr(self._pool, "_processes", None) or {})

    @property
    def size(self) -> int:
        return self.n

    def submit(self, clips: list, sample_rate: int) -> _Split:
        k = max(1, -(-len(clips) // self.n))
        return _Split([self._pool.submit(batched_features, clips[i:i + k], *self._args)
                       for i in range(0, len(clips), k)])

    def map(self, clips: list, sample_rate: int) -> list:
        return self.submit(clips, sample_rate).result()

    def close(self) -> None:
        self._pool.shutdown(wait=False, cancel_futures=True)
        self.procs = []


@register_metric("ac")
class AudioCommons(AudioCommonsRef):
    """The AudioCommons deltas (keys as :class:`AudioCommonsRef`, named ``ac``) from the batched implementation
    (:mod:`bench.metrics.timbral`); features listed in ``reference_features`` come from timbral_models instead
    (through an ``ac_ref`` metric and its cache). ``afx-bench check ac`` compares the two implementations."""

    name = "ac"

    @dataclass
    class Config(AudioCommonsRef.Config):
        # features taken from timbral_models rather than the batched code; default: none, as every feature meets
        # the validation targets (docs/metrics.md, "Validation against timbral_models")
        reference_features: list = field(default_factory=list)
        batch_size: int = 64  # clips per call of the batched code (each call works in batches of a few clips)
        # where the array work runs: "auto" (torch on the metric's device when that is a GPU, else numpy), "numpy"
        # (numpy/numba on the CPU, the implementation `afx-bench check ac` validates) or "torch" (on the device)
        backend: str = "auto"
        # workers: processes computing the batched features (numpy backend; the torch backend computes in this
        # process, which holds the device) and the reference pool for reference_features (0: one per core)

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        from bench.config import ConfigError
        from bench.metrics.timbral import VERSION

        ref = [str(f) for f in self.cfg.reference_features]
        bad = [f for f in ref if f not in FEATURES]
        if bad:
            raise ConfigError(f"metrics.ac.reference_features: unknown {bad}; valid: {', '.join(FEATURES)}")
        if int(self.cfg.batch_size) < 1:
            raise ConfigError(f"metrics.ac.batch_size: expected an integer >= 1, got {self.cfg.batch_size}")
        if self.cfg.backend not in ("auto", "numpy", "torch"):
            raise ConfigError(f"metrics.ac.backend: expected auto, numpy or torch, got {self.cfg.backend!r}")
        self.backend = self.cfg.backend
        if self.backend == "auto":
            self.backend = "torch" if str(self.device).startswith("cuda") else "numpy"
        self.reference = tuple(f for f in FEATURES if f in ref)
        self.own = tuple(f for f in FEATURES if f not in self.reference)
        # the torch backend's numbers equal numpy's within float tolerance, not to the bit: cached apart
        self.cache_tag = (f"batched-v{VERSION}" + ("-torch" if self.backend == "torch" else "")
                          + (f"-ref-{'+'.join(self.reference)}" if self.reference else ""))
        self._ref_metric = None

    def _needs_reference(self) -> bool:
        return bool(self.cfg.reference_features)

    def clip_key(self, x) -> str:
        import numpy as np

        h = hashlib.sha256(f"ac/{self.cache_tag}/{int(self.sample_rate)}/".encode())
        if self.reference:
            h.update(f"{ADAPTER_VERSION}/{timbral_models_version()}/".encode())
        h.update(np.ascontiguousarray(x, dtype=np.float32).tobytes())
        return h.hexdigest()[:32]

    def _executor(self):
        if self._pool is None or not self._pool.procs:
            if self.workers > 1 and not self.reference and self.backend == "numpy":  # worker processes
                self._pool = _Processes(self.workers, self.sample_rate, self.own, int(self.cfg.batch_size))
                weakref.finalize(self, self._pool.close)
            else:
                self._pool = _InProcess(self._compute)
        return self._pool

    def _compute(self, clips: list) -> list:
        out = [({}, {}) for _ in clips]
        if self.own:
            done = batched_features(clips, self.sample_rate, self.own, int(self.cfg.batch_size), self.backend,
                                    str(self.device))
            for (feats, errs), (f, e) in zip(out, done, strict=True):
                feats.update(f)
                errs.update(e)
        if self.reference:
            if self._ref_metric is None:
                self._ref_metric = AudioCommonsRef({"workers": self.cfg.workers, "disk_cache": self.cfg.disk_cache},
                                                   sample_rate=self.sample_rate)
            for (feats, errs), rec in zip(out, self._ref_metric.features(clips), strict=True):
                for f in self.reference:
                    feats[f] = rec["features"][f]
                    if f in rec["errors"]:
                        errs[f] = rec["errors"][f]
        return out

    def close(self) -> None:
        super().close()
        if self._ref_metric is not None:
            self._ref_metric.close()
            self._ref_metric = None
