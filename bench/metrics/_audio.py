"""What the audio metrics share: checking a batch's outputs and targets, and running a batched function over
groups of equal-length clips.

A metric is given a list of estimates and a list of examples. Outputs and targets must be finite and of equal
length per example (the runner already refuses non-finite system output; a NaN/Inf here is a bug upstream, so it
raises a ValueError naming the metric and the example rather than producing a number). Clips of different lengths
may share a batch: they are scored in groups of equal length.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np


def audio_pairs(estimates: list, examples: list, metric: str) -> tuple[list[np.ndarray], list[np.ndarray]]:
    """The outputs and targets of a batch as float32 mono arrays, checked (finite, same length per example)."""
    outs, tgts = [], []
    for est, ex in zip(estimates, examples, strict=True):
        y = np.asarray(est.output, dtype=np.float32)
        t = np.asarray(ex.target, dtype=np.float32)
        if y.ndim != 1 or t.ndim != 1:
            raise ValueError(f"{metric}: expects mono clips, got output {y.shape} and target {t.shape} for "
                             f"{ex.example_id}")
        if y.shape != t.shape:
            raise ValueError(f"{metric}: output has {y.shape[0]} samples and target {t.shape[0]} for {ex.example_id}")
        if y.size == 0:
            raise ValueError(f"{metric}: empty audio for {ex.example_id}")
        for what, a in (("output", y), ("target", t)):
            if not np.all(np.isfinite(a)):
                raise ValueError(f"{metric}: NaN or Inf samples in the {what} of {ex.example_id}")
        outs.append(y)
        tgts.append(t)
    return outs, tgts


def is_silent(x: np.ndarray) -> bool:
    """All-zero audio: the definition of "silent" every metric uses (see docs/metrics.md)."""
    return not np.any(x)


def grouped(outs: list[np.ndarray], tgts: list[np.ndarray], fn: Callable, batch_size: int = 0) -> list:
    """Apply ``fn(Y, T) -> sequence of per-row results`` (Y, T: float32 arrays (B, n)) to groups of clips of
    equal length, at most ``batch_size`` rows at a time (0: no limit), and return the results in input order."""
    by_len: dict[int, list[int]] = {}
    for i, y in enumerate(outs):
        by_len.setdefault(y.shape[0], []).append(i)
    res: list = [None] * len(outs)
    for idx in by_len.values():
        step = batch_size if batch_size > 0 else len(idx)
        for k in range(0, len(idx), step):
            part = idx[k : k + step]
            vals = fn(np.stack([outs[i] for i in part]), np.stack([tgts[i] for i in part]))
            for i, v in zip(part, vals, strict=True):
                res[i] = v
    return res
