"""Speed of the AudioCommons features: the batched implementation (bench.metrics.timbral, metric ``ac``) against
timbral_models (``ac_ref``), per core, on the quick preset's clips (1-s clips at 24 kHz: the inputs, references and
targets of its test tasks).

    python tests/run_marked.py perf bench/perf/test_timbral_perf.py -s

``test_speed`` measures as ``afx-bench check ac --speed`` does (both implementations alternating in one
worker process set up as the metric's, CPU time with one thread; see bench.checks.ac.measure_speed) and prints its
line and the per-feature breakdown; ``test_backend`` times the batched code with each ops backend (numpy on the
CPU; torch on the GPU where there is one) in pytest-benchmark. BENCHMARKS.md ("AudioCommons: 20x") has the
numbers.
"""

from __future__ import annotations

import numpy as np
import pytest

pytestmark = pytest.mark.perf

CLIPS = 96  # of the quick preset's test clips, evenly selected
REF_CLIPS = 8


@pytest.fixture(scope="module")
def clips():
    from bench.checks.ac import generated_clips, select_evenly

    return select_evenly(generated_clips("quick", 4, []), CLIPS)


def test_speed(clips):
    from bench.checks.ac import measure_speed, speed_line

    pytest.importorskip("timbral_models")
    speed = measure_speed(clips, REF_CLIPS, per_feature=True)
    print(f"\nfront end {speed['front']:.2f} ms/clip; one feature at a time (with the front end), ms/clip: "
          + ", ".join(f"{f} {ms:.2f}" for f, ms in speed["features"].items()))
    print(speed_line(speed["batched"], speed["reference"]))
    assert speed["batched"] > speed["reference"]


def _devices():
    import torch

    return ["cuda"] if torch.cuda.is_available() else []


@pytest.mark.parametrize("backend,device", [("numpy", "cpu")] + [("torch", d) for d in _devices()])
def test_backend(benchmark, clips, backend, device):
    from bench.metrics.timbral import extract, warm

    warm()
    xs = [np.asarray(x, np.float64) for _, x, _ in clips]
    sr = clips[0][2]
    extract(xs[:2], sr, backend=backend, device=device)
    benchmark.pedantic(extract, args=(xs, sr), kwargs={"backend": backend, "device": device}, rounds=2,
                       iterations=1)
    benchmark.extra_info["clips"] = len(xs)
    if benchmark.stats:
        benchmark.extra_info["clips_per_s"] = len(xs) / benchmark.stats.stats.mean
