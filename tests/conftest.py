import os
import sys
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    # never write into the user's cache from tests; CI points AFX_BENCH_CACHE at a reusable dir
    if not os.environ.get("AFX_BENCH_CACHE"):
        import tempfile

        os.environ["AFX_BENCH_CACHE"] = tempfile.mkdtemp(prefix="afx-test-cache-")
    os.environ.setdefault("MPLBACKEND", "Agg")


from bench.corpora import Corpus, SourceSpec, register_corpus  # noqa: E402


@register_corpus("tones")
class Tones(Corpus):
    """A tiny synthetic corpus for tests: harmonic tones with vibrato and noise, one group per source."""

    name = "tones"

    def plan(self):
        specs = []
        for split in ("train", "valid", "test"):
            for i in range(self.sources.get(split, 0)):
                sid = f"{split}-{i}"
                specs.append(SourceSpec(sid, sid, split, {"f0": 110.0 * (1 + (zlib.crc32(sid.encode()) % 7) / 3)}))
        return specs

    def render(self, spec):
        sr = 24000
        rng = np.random.default_rng(zlib.crc32(spec.source_id.encode()))
        t = np.arange(int(self.seconds * sr)) / sr
        f0 = spec.recipe["f0"] * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        x = sum(np.sin(k * phase) / k for k in range(1, 10)) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t) ** 2)
        x = x + 0.05 * rng.standard_normal(len(t))
        return (0.3 * x / np.max(np.abs(x))).astype(np.float32), sr


@pytest.fixture
def tones():
    return Tones(sample_rate=24000, seed=0, sources={"train": 3, "valid": 1, "test": 2}, seconds=1.5)
