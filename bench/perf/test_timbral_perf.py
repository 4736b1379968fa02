"""Speed of the AudioCommons features: the batched implementation (bench.metrics.timbral, metric ``ac``) against
timbral_models (``ac_ref``), in clips per second on one core (pytest-benchmark).

    pytest -m perf bench/perf/test_timbral_perf.py -p no:cacheprovider

Both run in this process with BLAS/OpenMP limited to one thread (threadpoolctl), on the same generated 1-second
clips at 24 kHz (the quick preset's segment), with no cache: the batched code on a batch of ``BATCH`` clips per
call, the reference one clip at a time (as its pool workers do, with the adapter's memoised filter designs). Each
records ``clips_per_s`` in its extra_info; ``test_speedup`` prints the ratio. BENCHMARKS.md ("## AudioCommons:
batched vs timbral_models") has the numbers.
"""

from __future__ import annotations

import time

import numpy as np
import pytest

from bench.perf import harmonic_clips

pytestmark = pytest.mark.perf

SR = 24000
BATCH = 32
REF_CLIPS = 4


def _clips(n: int, seed: int = 0) -> list[np.ndarray]:
    return harmonic_clips(n, 1.0, SR, seed, dtype=np.float64)


def _one_thread():
    try:
        from threadpoolctl import threadpool_limits

        return threadpool_limits(1)
    except ImportError:  # pragma: no cover
        import contextlib

        return contextlib.nullcontext()


def _record(benchmark, clips):
    benchmark.extra_info["clips"] = clips
    if benchmark.stats:
        benchmark.extra_info["clips_per_s"] = clips / benchmark.stats.stats.mean


def test_batched(benchmark):
    from bench.metrics.timbral import extract, warm

    warm()
    clips = _clips(BATCH)
    with _one_thread():
        extract(clips[:2], SR)
        benchmark.pedantic(extract, args=(clips, SR), rounds=3, iterations=1)
    _record(benchmark, BATCH)


@pytest.mark.parametrize("feature", ["hardness", "depth", "brightness", "roughness", "warmth", "sharpness",
                                     "boominess", "reverb"])
def test_batched_feature(benchmark, feature):
    """One feature at a time (the shared front end, resampling and loudness normalisation, included in each)."""
    from bench.metrics.timbral import extract, warm

    warm()
    clips = _clips(BATCH)
    with _one_thread():
        benchmark.pedantic(extract, args=(clips, SR, (feature,)), rounds=2, iterations=1)
    _record(benchmark, BATCH)


def test_reference(benchmark):
    pytest.importorskip("timbral_models")
    from bench.metrics.audiocommons import timbral_features

    clips = _clips(REF_CLIPS)
    with _one_thread():
        timbral_features(clips[0], SR)

        def run():
            for x in clips:
                timbral_features(x, SR)

        benchmark.pedantic(run, rounds=2, iterations=1)
    _record(benchmark, REF_CLIPS)


def test_speedup():
    """Both on the same clips, back to back: the ratio of clips per second (printed; asserts only that it is
    faster, as the absolute ratio depends on the machine's load)."""
    pytest.importorskip("timbral_models")
    from bench.metrics.audiocommons import timbral_features
    from bench.metrics.timbral import extract, warm

    warm()
    clips = _clips(BATCH)
    with _one_thread():
        extract(clips[:2], SR)
        t0 = time.process_time()
        extract(clips, SR)
        new = BATCH / (time.process_time() - t0)
        timbral_features(clips[0], SR)
        t0 = time.process_time()
        for x in clips[:REF_CLIPS]:
            timbral_features(x, SR)
        ref = REF_CLIPS / (time.process_time() - t0)
    print(f"\nbatched {new:.1f} clips/CPU-s, timbral_models {ref:.2f} clips/CPU-s: {new / ref:.1f}x")
    assert new > ref
