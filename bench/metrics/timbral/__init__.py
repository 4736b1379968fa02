"""Batched AudioCommons timbral models: the eight features of timbral_models 0.4.0 (hardness, depth, brightness,
roughness, warmth, sharpness, boominess, reverb) for many clips per call.

Written from timbral_models' algorithms, not its code: the work that dominates the reference's time is done once
per batch and shared between models (one resampling and loudness normalisation per clip, one third-octave filter
bank and Zwicker loudness for all 4096-sample windows of all clips, which four models read; spectrograms, filters
and librosa's mel/onset and HPSS front ends over stacked clips of equal length), and its sequential parts (Zwicker's
loudness slopes, mirpeaks' peak picking, the sample-and-hold envelope, the onset look-back) are compiled with numba.
Per-clip decisions (onset pruning, attack segments) stay in Python, as cheap bookkeeping around those kernels.

Values are the reference's, unclipped (its default ``clip_output=False``), and ``reverb`` is its 0/1 decision.
``afx-bench check ac`` compares the two on a run's clips; docs/metrics.md has the results.

    values, reasons = extract(clips, sample_rate)   # values: (n, 8) float, NaN where a feature failed
"""

from __future__ import annotations

import numpy as np

FEATURES = ("hardness", "depth", "brightness", "roughness", "warmth", "sharpness", "boominess", "reverb")
VERSION = 1  # bump when any model's output can change: it keys the metric's cache
_WARM = False


def extract(clips: list, sample_rate: int, features=FEATURES) -> tuple[np.ndarray, list[dict[str, str]]]:
    """The ``features`` of each mono clip (float arrays at ``sample_rate``): an (n, len(features)) array, and per
    clip the reasons of its NaN values (feature -> reason). A clip the reference refuses as a whole (silent, empty,
    too quiet to measure) gets NaN for every feature with that reason; a feature that fails on one clip gets NaN
    for that clip only; a non-finite result is reported as NaN with a reason, so NaN/Inf never reaches a mean."""
    from bench.metrics.timbral import _front, models

    features = tuple(features)
    unknown = [f for f in features if f not in FEATURES]
    if unknown:
        raise ValueError(f"timbral: unknown features {unknown}; valid: {', '.join(FEATURES)}")
    n = len(clips)
    values = np.full((n, len(features)), np.nan)
    reasons: list[dict[str, str]] = [{} for _ in range(n)]
    prepared, rejected = _front.prepare(clips, sample_rate)
    for i, r in enumerate(rejected):
        if r is not None:
            reasons[i] = dict.fromkeys(features, r)
    live = [i for i in range(n) if prepared[i] is not None]
    cl = [prepared[i] for i in live]
    for j, f in enumerate(features):
        if not cl:
            break
        for c in cl:
            c.cache["errors"] = []
        try:
            with np.errstate(all="ignore"):
                out = np.asarray(getattr(models, f)(cl), dtype=np.float64)
        except Exception as e:  # a whole-batch failure: mark every clip (one-by-one would tell them apart)
            for i in live:
                reasons[i][f] = f"{type(e).__name__}: {e}"
            continue
        for k, i in enumerate(live):
            v = out[k]
            errs = cl[k].cache.get("errors") or []
            if errs:
                reasons[i][f] = errs[0]
            elif not np.isfinite(v):
                reasons[i][f] = "non-finite result"
            values[i, j] = v if np.isfinite(v) else np.nan
    return values, reasons


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
