"""PESQ (ITU-T P.862.2 wide-band) of the output against the target, for speech corpora only.

Optional: it needs the ``pesq`` package (``pip install pesq``; a C extension, not a dependency of the harness).
Without it, or on a corpus that is not speech, every value is NaN (not applicable). Definitions: docs/metrics.md.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.metrics import Metric, MetricConfig, register_metric
from bench.metrics._audio import audio_pairs, is_silent

PESQ_RATE = 16000
PESQ_WB_FLOOR = 1.043  # P.862.2's mapping of the lowest raw score (-0.5): what a silent output gets


def pesq_available() -> bool:
    try:
        import pesq  # noqa: F401
    except ImportError:
        return False
    return True


def corpus_label(task_id: str) -> str:
    """The corpus part of a task id '<corpus label>/<effect>/<split>' (a folder corpus's label holds slashes)."""
    return task_id.rsplit("/", 2)[0]


@register_metric("pesq")
class PESQ(Metric):
    """Wide-band PESQ (MOS-LQO, about 1.04 to 4.64, higher is better) with the target as reference and the output as
    degraded signal, both resampled to 16 kHz. NaN where not applicable: ``pesq`` not installed, a corpus not
    listed in ``speech_corpora``, or a target in which PESQ finds no utterance. A silent (all-zero) output gets
    the scale's floor, 1.043."""

    name = "pesq"
    higher_is_better = True

    @dataclass
    class Config(MetricConfig):
        # corpus labels (or corpus names, the part before ':') whose clips are speech
        speech_corpora: list = field(default_factory=lambda: ["speech"])

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        self.available = pesq_available()

    def is_speech(self, example) -> bool:
        label = corpus_label(example.task_id)
        return label in self.cfg.speech_corpora or label.split(":", 1)[0] in self.cfg.speech_corpora

    def score_batch(self, estimates, examples):
        outs, tgts = audio_pairs(estimates, examples, self.name)
        res = []
        for y, t, ex in zip(outs, tgts, examples, strict=True):
            res.append({"pesq": self.value(y, t) if self.available and self.is_speech(ex) else float("nan")})
        return res

    def value(self, y, t) -> float:
        import pesq

        from bench.audio import resample

        if is_silent(t):
            return float("nan")
        if is_silent(y):
            return PESQ_WB_FLOOR
        y16, t16 = resample(y, self.sample_rate, PESQ_RATE), resample(t, self.sample_rate, PESQ_RATE)
        try:
            return float(pesq.pesq(PESQ_RATE, t16, y16, "wb"))
        except pesq.NoUtterancesError:
            return float("nan")

    def score(self, estimate, example):
        return self.score_batch([estimate], [example])[0]
