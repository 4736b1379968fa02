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
from bench.perf import harmonic_clips
from bench.systems import Estimate
from bench.tasks import Example

pytestmark = pytest.mark.perf

SR = 24000
SECONDS = 1.0
BATCH = 16
AC_CLIPS = 4 * max(1, len(os.sched_getaffinity(0)))  # outputs + targets: 8 clips on a 2-core machine


def _clips(n: int, seed: int = 0) -> list[np.ndarray]:
    return harmonic_clips(n, SECONDS, SR, seed)


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
    _record(benchmark, clips=len(examples))


def _record(benchmark, **info):
    benchmark.extra_info.update(info)
    if benchmark.stats:  # None under --benchmark-disable
        benchmark.extra_info["clips_per_s"] = info["clips"] / benchmark.stats.stats.mean


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
        _record(benchmark, workers=m.workers, clips=AC_CLIPS)
    finally:
        m.close()
        audiocommons.clear_memory_cache()


def test_ac_sequential(benchmark, tmp_path, monkeypatch):
    _ac(benchmark, 1, False, tmp_path, monkeypatch)


def test_ac_pool(benchmark, tmp_path, monkeypatch):
    _ac(benchmark, 0, False, tmp_path, monkeypatch)


def test_ac_cached(benchmark, tmp_path, monkeypatch):
    _ac(benchmark, 1, True, tmp_path, monkeypatch)


def ac_speedup(n_examples: int = 8, workers: int = 0) -> dict:
    """AudioCommons wall time on ``2 * n_examples`` distinct clips with empty caches: sequential in this process
    vs the worker pool (started beforehand), plus the load average around each, since other processes on the
    machine take cores from both. ``python bench/perf/test_metrics_perf.py [n_examples]`` prints it."""
    import tempfile
    import time

    from bench.metrics import audiocommons

    os.environ["AFX_BENCH_CACHE"] = tempfile.mkdtemp(prefix="afx-ac-perf-")
    estimates, examples = _batch(n_examples)
    out = {"clips": 2 * n_examples, "seconds_per_clip": SECONDS}
    for label, w in (("sequential", 1), ("pool", workers)):
        m = get_metric("ac", {"workers": w, "disk_cache": False}, sample_rate=SR)
        try:
            warm_e, warm_x = _batch(1)
            m.score_batch([Estimate(None, warm_e[0].output * 0.9)], warm_x)  # imports / starts the pool
            audiocommons.clear_memory_cache()
            load0 = os.getloadavg()[0]
            pids = getattr(m._pool, "pids", []) if m._pool is not None else []
            c0, w0, t0 = os.times(), _cpu_seconds(pids), time.perf_counter()
            m.score_batch(estimates, examples)
            wall, c1, w1 = time.perf_counter() - t0, os.times(), _cpu_seconds(pids)
            assert m.stats["computed"] >= 2 * n_examples
            cpu = (c1.user + c1.system) - (c0.user + c0.system) + (w1 - w0)
            out[label] = {"workers": m.workers, "wall_s": round(wall, 2), "clips_per_s": round(2 * n_examples / wall, 3),
                          "cpu_s": round(cpu, 2), "cpu_s_per_clip": round(cpu / (2 * n_examples), 3),
                          "loadavg_1min": [round(load0, 2), round(os.getloadavg()[0], 2)]}
        finally:
            m.close()
            audiocommons.clear_memory_cache()
    out["speedup"] = round(out["sequential"]["wall_s"] / out["pool"]["wall_s"], 2)
    return out


def _cpu_seconds(pids: list[int]) -> float:
    """User + system CPU seconds of the given (worker) processes, from /proc (0 where unreadable)."""
    total = 0.0
    for pid in pids:
        try:
            with open(f"/proc/{pid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
            total += (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")
        except (OSError, IndexError, ValueError):
            pass
    return total


if __name__ == "__main__":
    import json
    import sys

    print(json.dumps(ac_speedup(int(sys.argv[1]) if len(sys.argv) > 1 else 8), indent=1))
