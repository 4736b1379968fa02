"""Metrics: each scores an Estimate against an Example and returns a dict of named values.

Keys are the same for every system on a task, so the MLflow UI and the tables compare systems side by side. A
value that does not apply (parameter error for a system that does not control the effect) is NaN, never 0.
Definitions, units and blind spots of every metric: docs/metrics.md.
"""

from __future__ import annotations

from dataclasses import dataclass

from bench.registry import Registry

METRICS = Registry(
    "metrics",
    {
        "param_mae": "bench.metrics.params",
        "mrstft": "bench.metrics.spectral",
        "mel_dist": "bench.metrics.spectral",
        "mfcc_dist": "bench.metrics.spectral",
        "centroid_err": "bench.metrics.spectral",
        "loudness": "bench.metrics.level",
        "rms_err": "bench.metrics.level",
        "crest_err": "bench.metrics.level",
        "pesq": "bench.metrics.speech",
        "ac": "bench.metrics.audiocommons",
        "ac_ref": "bench.metrics.audiocommons",
    },
)
register_metric = METRICS.register


@dataclass
class MetricConfig:
    """The options every metric has; a metric's own ``Config`` derives from this and adds its settings."""

    max_examples: int = 0  # score only the first N examples of each cell (0 = all of them)


class Metric:
    name: str = ""
    higher_is_better: bool = False
    needs: frozenset = frozenset({"audio"})

    @dataclass
    class Config(MetricConfig):
        pass

    def __init__(self, config: dict | None = None, *, sample_rate: int = 24000, device: str = "cpu"):
        from bench.config import ConfigError, parse_section

        self.cfg = parse_section(self.Config, config or {}, f"metrics.{self.name}")
        limit = getattr(self.cfg, "max_examples", 0)
        if limit < 0:
            raise ConfigError(f"metrics.{self.name}.max_examples: expected an integer >= 0 (0 = all), got {limit}")
        self.sample_rate = int(sample_rate)
        self.device = device

    def limit(self, n: int) -> int:
        """How many of a cell's ``n`` examples this metric scores (its ``max_examples``, 0 = all)."""
        k = getattr(self.cfg, "max_examples", 0)
        return min(n, k) if k else n

    def score(self, estimate, example) -> dict[str, float]:
        raise NotImplementedError

    def score_batch(self, estimates: list, examples: list) -> list[dict[str, float]]:
        """Scores per example; the default loops over :meth:`score`. Override to batch."""
        return [self.score(est, ex) for est, ex in zip(estimates, examples, strict=True)]

    def prefetch(self, estimates: list, examples: list) -> None:
        """Start slow work for these examples in the background; the runner calls it for every metric of a cell
        before scoring any, and :meth:`score_batch` collects it. Default: nothing."""


def get_metric(name: str, config: dict | None = None, **kwargs) -> Metric:
    return METRICS.get(name)(config, **kwargs)
