"""Level and dynamics errors between a system's output and the target: loudness (LUFS), RMS level and crest
factor. Cheap, per clip in numpy. Definitions: docs/metrics.md.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from bench.metrics import Metric, MetricConfig, register_metric
from bench.metrics._audio import audio_pairs

LUFS_FLOOR = -70.0  # BS.1770's absolute gate: a clip with no block above it has no integrated loudness
RMS_FLOOR_DB = -120.0  # the RMS level given to silence, so that a silent output scores a large, finite error


def rms_dbfs(x: np.ndarray) -> float:
    """RMS level in dBFS (0 dBFS: a full-scale square wave), floored at RMS_FLOOR_DB."""
    rms = float(np.sqrt(np.mean(np.square(x, dtype=np.float64))))
    return max(RMS_FLOOR_DB, 20.0 * np.log10(rms)) if rms > 0 else RMS_FLOOR_DB


def crest_db(x: np.ndarray) -> float:
    """Peak-to-RMS ratio in dB; NaN for silence."""
    x = np.asarray(x, dtype=np.float64)
    rms = float(np.sqrt(np.mean(x * x)))
    return 20.0 * np.log10(float(np.max(np.abs(x))) / rms) if rms > 0 else float("nan")


class _PerClip(Metric):
    def value(self, x: np.ndarray) -> float:
        raise NotImplementedError

    def score_batch(self, estimates, examples):
        outs, tgts = audio_pairs(estimates, examples, self.name)
        return [{self.name: abs(self.value(y) - self.value(t))} for y, t in zip(outs, tgts, strict=True)]

    def score(self, estimate, example):
        return self.score_batch([estimate], [example])[0]


@register_metric("loudness")
class LoudnessError(_PerClip):
    """|integrated loudness(output) - integrated loudness(target)| in LU (ITU-R BS.1770-4 via pyloudnorm, K-weighted,
    gated). A clip below the absolute gate (silence) counts as -70 LUFS, so a silent output gets a large error
    rather than NaN. Clips must be longer than one 400 ms gating block."""

    name = "loudness"

    @dataclass
    class Config(MetricConfig):
        block_size: float = 0.4

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        import pyloudnorm

        self.meter = pyloudnorm.Meter(self.sample_rate, block_size=self.cfg.block_size)

    def value(self, x):
        if x.shape[0] <= self.cfg.block_size * self.sample_rate:
            raise ValueError(f"loudness: clips of {x.shape[0]} samples are shorter than one gating block "
                             f"({self.cfg.block_size} s at {self.sample_rate} Hz)")
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pyloudnorm warns about possible clipping above 0 dBFS
            lufs = float(self.meter.integrated_loudness(np.asarray(x, dtype=np.float64)))
        return float("nan") if np.isnan(lufs) else max(LUFS_FLOOR, lufs)


@register_metric("rms_err")
class RMSError(_PerClip):
    """|RMS level(output) - RMS level(target)| in dB. Silence counts as -120 dBFS."""

    name = "rms_err"

    def value(self, x):
        return rms_dbfs(x)


@register_metric("crest_err")
class CrestError(_PerClip):
    """|crest factor(output) - crest factor(target)| in dB (crest factor = 20 log10(peak / RMS)). NaN when either
    clip is silent (all zeros): its crest factor is undefined."""

    name = "crest_err"

    def value(self, x):
        return crest_db(x)
