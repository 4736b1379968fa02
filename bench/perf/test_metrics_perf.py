"""Speed of every metric, in clips per second (pytest-benchmark).

    pytest -m perf bench/perf/test_metrics_perf.py -p no:cacheprovider

Each benchmark scores a batch of generated 1-second clips at 24 kHz (the quick preset's segment) and records
``clips_per_s`` in its extra_info; the spectral metrics run on the CPU and, where torch sees one, on the GPU.
AudioCommons runs three ways on the same clips with its caches emptied before each round: sequential in this
process, in the worker pool (one process per core, already started), and from the cache. The numbers in
BENCHMARKS.md ("## Metrics") come from this file.
"""

from __future__ import annotations

import os

import numpy as np
import pytest

from bench.metrics import get_metric
from bench.systems import Estimate
from bench.tasks import Example

pytestmark = pytest.mark.perf

SR = 24000
SECONDS = 1.0
BATCH = 16
AC_CLIPS = 4 * max(1, len(os.sched_getaffinity(0)))  # outputs + targets: 8 clips on a 2-core machine


def _clips(n: int, seed: int = 0) -> list[np.ndarray]:
    rng = np.random.default_rng(seed)
    t = np.arange(int(SECONDS * SR)) / SR
    out = []
    for _ in range(n):
        f0 = rng.uniform(80, 400)
        x = sum(np.sin(2 * np.pi * f0 * k * t) / k for k in range(1, 10)) * np.exp(-rng.uniform(1, 8) * (t % 0.3))
        x = x + 0.05 * rng.standard_normal(t.size)
        out.append((0.3 * x / np.max(np.abs(x))).astype(np.float32))
    return out


def _batch(n: int, task: str = "speech/peq4/test"):
    targets = _clips(n, 0)
    outputs = [(0.8 * t + 0.02 * o).astype(np.float32) for t, o in zip(targets, _clips(n, 1), strict=True)]
    return [Estimate(None, o) for o in outputs], [Example(task, i, f"s{i}", t, t, t, None)
                                                   for i, t in enumerate(targets)]


def _devices():
    import torch

    return ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


def _run(benchmark, metric, estimates, examples, rounds=5):
    metric.score_batch(estimates, examples)  # warm-up: imports, filterbanks, kernels
    benchmark.pedantic(metric.score_batch, args=(estimates, examples), rounds=rounds, iterations=1)
    benchmark.extra_info["clips"] = len(examples)
    benchmark.extra_info["clips_per_s"] = len(examples) / benchmark.stats.stats.mean


@pytest.mark.parametrize("device", _devices())
@pytest.mark.parametrize("name", ["mrstft", "mel_dist", "mfcc_dist", "centroid_err"])
def test_spectral(benchmark, name, device):
    estimates, examples = _batch(BATCH)
    _run(benchmark, get_metric(name, sample_rate=SR, device=device), estimates, examples)


@pytest.mark.parametrize("name", ["param_mae", "loudness", "rms_err", "crest_err", "pesq"])
def test_cheap(benchmark, name):
    estimates, examples = _batch(BATCH)
    if name == "param_mae":
        for e, x in zip(estimates, examples, strict=True):
            e.params01, x.true_params01, x.param_names = np.full(4, 0.4), np.full(4, 0.5), ("a", "b", "c", "d")
    _run(benchmark, get_metric(name, sample_rate=SR), estimates, examples)


def _ac(benchmark, workers: int, cached: bool, tmp_path, monkeypatch):
    from bench.metrics import audiocommons

    monkeypatch.setenv("AFX_BENCH_CACHE", str(tmp_path))
    estimates, examples = _batch(AC_CLIPS // 2)
    m = get_metric("ac", {"workers": workers, "disk_cache": False}, sample_rate=SR)
    try:
        m.score_batch(estimates[:1], examples[:1])  # start the pool (if any), import timbral_models here
        if not cached:
            audiocommons.clear_memory_cache()
            m.score_batch(estimates[:1], examples[:1])  # the pool's workers now have everything imported
        if cached:
            m.score_batch(estimates, examples)
        setup = None if cached else (lambda: audiocommons.clear_memory_cache())
        benchmark.pedantic(m.score_batch, args=(estimates, examples), setup=setup, rounds=3 if not cached else 20,
                           iterations=1)
        benchmark.extra_info.update(workers=m.workers, clips=AC_CLIPS,
                                    clips_per_s=AC_CLIPS / benchmark.stats.stats.mean)
    finally:
        m.close()
        audiocommons.clear_memory_cache()


def test_ac_sequential(benchmark, tmp_path, monkeypatch):
    _ac(benchmark, 1, False, tmp_path, monkeypatch)


def test_ac_pool(benchmark, tmp_path, monkeypatch):
    _ac(benchmark, 0, False, tmp_path, monkeypatch)


def test_ac_cached(benchmark, tmp_path, monkeypatch):
    _ac(benchmark, 1, True, tmp_path, monkeypatch)
