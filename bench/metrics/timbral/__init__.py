"""Batched AudioCommons timbral models: the eight features of timbral_models 0.4.0 (hardness, depth, brightness,
roughness, warmth, sharpness, boominess, reverb) for many clips per call.

Written from timbral_models' algorithms, not its code: the work that dominates the reference's time is done once
per batch of clips of one length and shared between models (one resampling and loudness normalisation per clip,
one third-octave filter bank and Zwicker loudness for all 4096-sample windows, which four models read, one STFT of
the clips for hardness and warmth); the sequential parts (the IIR filters, Zwicker's loudness slopes, HPSS's median
filters, mirpeaks' peak picking, the envelopes, the onset look-back, the RT60 decay runs) are numba kernels
(``_kernels``; ``_libkernels`` for the library routines, whose arithmetic they reproduce); the array work that a GPU
can take (STFTs, HPSS, mel, spectra, the bandwidth spectrogram) goes through ``_ops``, in numpy/numba or in torch.
Per-clip decisions (onset pruning, attack segments) stay in Python, as cheap bookkeeping around those kernels.

Values are the reference's, unclipped (its default ``clip_output=False``), and ``reverb`` is its 0/1 decision.
``afx-bench check ac`` compares the two on a run's clips; docs/metrics.md has the results.

    values, reasons = extract(clips, sample_rate)   # values: (n, 8) float, NaN where a feature failed
"""

from __future__ import annotations

import numpy as np

FEATURES = ("hardness", "depth", "brightness", "roughness", "warmth", "sharpness", "boominess", "reverb")
VERSION = 4  # bump when any model's output can change, even by rounding: it keys the metric's cache
_WARM = False


def extract(clips: list, sample_rate: int, features=FEATURES, *, backend: str = "numpy",
            device: str = "cpu") -> tuple[np.ndarray, list[dict[str, str]]]:
    """The ``features`` of each mono clip (float arrays at ``sample_rate``): an (n, len(features)) array, and per
    clip the reasons of its NaN values (feature -> reason). A clip the reference refuses as a whole (silent, empty,
    too quiet to measure) gets NaN for every feature with that reason; a feature that fails on one clip gets NaN
    for that clip only; a non-finite result is reported as NaN with a reason, so NaN/Inf never reaches a mean.
    ``backend``: "numpy" (the validated default), "torch" (the array work in torch on ``device``, e.g. a GPU), or
    "auto" (torch on a CUDA device, else numpy); see :mod:`bench.metrics.timbral._ops`."""
    from bench.metrics.timbral import _front
    from bench.metrics.timbral._ops import get_ops

    features = tuple(features)
    ops = get_ops(backend, device)
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"timbral: unknown features {unknown}; valid: {', '.join(FEATURES)}")
    n = len(clips)
    values = np.full((n, len(features)), np.nan)
    reasons: list[dict[str, str]] = [{} for _ in range(n)]
    xs = [np.asarray(x, dtype=np.float64) for x in clips]
    by_length: dict[int, list[int]] = {}
    for i, x in enumerate(xs):
        refused = _front.refusal(x)
        if refused:
            reasons[i] = dict.fromkeys(features, refused)
        else:
            by_length.setdefault(len(x), []).append(i)
    # batches of clips of one length, as many as the ops take at once (numpy: few, so that every intermediate array
    # stays within the CPU's caches and the allocator's reuse; large ones cost more in page faults than they save)
    size = ops.batch
    for idx in (g[s:s + size] for g in by_length.values() for s in range(0, len(g), size)):
        prepared, refused = _front.prepare([xs[i] for i in idx], sample_rate)
        for i, r in zip(idx, refused, strict=True):
            if r is not None:
                reasons[i] = dict.fromkeys(features, r)
        live = [i for i, c in zip(idx, prepared, strict=True) if c is not None]
        if live:
            _scores(_front.Batch([c for c in prepared if c is not None], ops), features, live, values, reasons)
    return values, reasons


def _scores(batch, features: tuple, rows: list[int], values: np.ndarray, reasons: list[dict]) -> None:
    """Every feature of the batch's clips into ``values[rows]`` (NaN with a reason in ``reasons`` where one fails)."""
    from bench.metrics.timbral import models

    for j, f in enumerate(features):
        for c in batch.clips:
            c.cache["errors"] = []
        try:
            with np.errstate(all="ignore"):
                out = np.asarray(getattr(models, f)(batch), dtype=np.float64)
        except Exception as e:  # a whole-batch failure: mark every clip (one-by-one would tell them apart)
            for i in rows:
                reasons[i][f] = f"{type(e).__name__}: {e}"
            continue
        for c, i, v in zip(batch.clips, rows, out, strict=True):
            errs = c.cache.get("errors") or []
            if errs:
                reasons[i][f] = errs[0]
            elif not np.isfinite(v):
                reasons[i][f] = "non-finite result"
            values[i, j] = v if np.isfinite(v) else np.nan


def tune_allocator() -> None:
    """Have glibc's malloc keep freed memory for reuse (no mmap below 64 MB, no trimming below 256 MB) in this
    process. The models allocate and free arrays of ~0.1-10 MB all the time; by default glibc hands large ones back
    to the kernel and every reuse page-faults again (~500 faults per clip, ~8 % of the time on a VM). Meant for the
    metric's dedicated worker processes, not for a process that does other work; a no-op off glibc."""
    import ctypes
    import ctypes.util

    name = ctypes.util.find_library("c")
    try:
        libc = ctypes.CDLL(name) if name else None
        mallopt = libc.mallopt if libc is not None else None
    except (OSError, AttributeError):
        return
    if mallopt is None:
        return
    m_trim_threshold, m_mmap_threshold = -1, -3
    mallopt(m_mmap_threshold, 64 << 20)
    mallopt(m_trim_threshold, 256 << 20)


def warm() -> None:
    """Compile (or load from numba's on-disk cache) the kernels, holding the lock that librosa's numba warm-up uses,
    so that processes starting together do not write the cache at once."""
    import fcntl
    import os
    import tempfile
    from pathlib import Path

    from bench.cache import warm_librosa_numba

    global _WARM
    if _WARM:
        return
    warm_librosa_numba()
    lock = Path(tempfile.gettempdir()) / f"afx-bench-numba-{os.getuid() if hasattr(os, 'getuid') else 0}.lock"
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            rng = np.random.default_rng(0)
            t = np.arange(24000) / 24000.0
            x = (0.3 * np.sin(2 * np.pi * 220 * t) * np.exp(-3 * t) + 0.01 * rng.standard_normal(t.size))
            extract([x], 24000)
            _WARM = True
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
