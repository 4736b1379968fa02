"""Benchmarks of the harness's own speed (pytest-benchmark files and ``python -m bench.perf``)."""

from __future__ import annotations

import numpy as np


def harmonic_clips(n: int, seconds: float, sample_rate: int, seed: int = 0, dtype=np.float32) -> list[np.ndarray]:
    """``n`` decaying harmonic tones with a little noise, peak 0.3: music-like test clips for the metric
    benchmarks (each a function of the seed alone)."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * sample_rate)) / sample_rate
    out = []
    for _ in range(n):
        f0 = rng.uniform(80, 400)
        x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 10)) * np.exp(-rng.uniform(1, 8) * (t % 0.3))
        x = x + 0.05 * rng.standard_normal(t.size)
        out.append((0.3 * x / np.max(np.abs(x))).astype(dtype))
    return out
