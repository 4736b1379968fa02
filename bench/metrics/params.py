"""Parameter error in the normalised [0, 1] space."""

from __future__ import annotations

import numpy as np

from bench.metrics import Metric, register_metric


@register_metric("param_mae")
class ParamMAE(Metric):
    """Mean absolute error between estimated and true normalised parameters, overall and per parameter.

    NaN (not applicable) when the system estimated no parameters or the effect's settings are hidden."""

    name = "param_mae"
    needs = frozenset({"params"})

    def score(self, estimate, example):
        if estimate.params01 is None or example.true_params01 is None:  # not applicable: NaN under every key
            return {"param_mae": float("nan"), **{f"param_mae/{n}": float("nan") for n in example.param_names}}
        est = np.asarray(estimate.params01, dtype=np.float64)
        true = np.asarray(example.true_params01, dtype=np.float64)
        if est.shape != true.shape:
            raise ValueError(f"param_mae: estimate has {est.shape[0]} parameters, the effect {true.shape[0]}")
        if not np.all(np.isfinite(est)):
            raise ValueError(f"param_mae: non-finite estimated parameters for {example.example_id}")
        err = np.abs(np.clip(est, 0, 1) - true)
        out = {"param_mae": float(err.mean())}
        if example.param_names:
            out.update({f"param_mae/{n}": float(e) for n, e in zip(example.param_names, err, strict=True)})
        return out
