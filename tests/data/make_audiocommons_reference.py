"""Record the timbral_models features of a few generated clips, for tests/test_metrics.py.

Run from the repository root (it overwrites tests/data/audiocommons_reference.json):

    python tests/data/make_audiocommons_reference.py

The clips are made by :func:`clips` (deterministic: fixed seeds, plain numpy), and their features computed
through bench.metrics.audiocommons's compatibility adapter with filter memoisation *off*, so that the test, which
computes them with memoisation on, also checks that memoisation changes nothing. The file records the versions of
everything that could move the values.
"""

from __future__ import annotations

import json
import platform
import sys
import time
from importlib.metadata import version
from pathlib import Path

import numpy as np

SAMPLE_RATE = 24000
SECONDS = 0.75
OUT = Path(__file__).with_name("audiocommons_reference.json")


def clips() -> dict[str, np.ndarray]:
    """Three short clips with different timbres: a plucked harmonic tone, noise bursts, a low thumping tone."""
    sr, n = SAMPLE_RATE, int(SECONDS * SAMPLE_RATE)
    t = np.arange(n) / sr
    rng = np.random.default_rng(20240601)
    env = np.exp(-6.0 * (t % 0.25))  # four decaying notes
    pluck = sum(np.sin(2 * np.pi * 330 * k * t) / k for k in range(1, 9)) * env
    bursts = rng.standard_normal(n) * np.exp(-30.0 * (t % 0.125))
    thump = (np.sin(2 * np.pi * 55 * t) + 0.5 * np.sin(2 * np.pi * 110 * t)) * np.exp(-4.0 * (t % 0.375))
    out = {"pluck": pluck, "bursts": bursts, "thump": thump}
    return {k: (0.3 * v / np.max(np.abs(v))).astype(np.float32) for k, v in out.items()}


def main() -> None:
    from bench.metrics.audiocommons import ADAPTER_VERSION, timbral_features

    features = {}
    for name, x in clips().items():
        feats, errors = timbral_features(x, SAMPLE_RATE, memo_filters=False)
        if errors:
            raise SystemExit(f"{name}: {errors}")
        features[name] = feats
    pkgs = ["numpy", "scipy", "librosa", "soxr", "pyloudnorm", "scikit-learn", "timbral_models", "numba"]
    rec = {
        "provenance": {
            "script": "tests/data/make_audiocommons_reference.py",
            "created": time.strftime("%Y-%m-%d"),
            "adapter_version": ADAPTER_VERSION,
            "memo_filters": False,
            "python": sys.version.split()[0],
            "platform": platform.platform(),
            "versions": {p: version(p) for p in pkgs},
            "clips": f"clips() in the script: {SECONDS} s at {SAMPLE_RATE} Hz, float32, peak 0.3",
        },
        "sample_rate": SAMPLE_RATE,
        "features": features,
    }
    OUT.write_text(json.dumps(rec, indent=1) + "\n")
    print(json.dumps(features, indent=1))


if __name__ == "__main__":
    main()
