"""Parameter error in the normalised [0, 1] space."""

from __future__ import annotations

import numpy as np

from bench.metrics import Metric, register_metric


@register_metric("param_mae")
class ParamMAE(Metric):
    """Mean absolute error between estimated and true normalised parameters (``param_mae``) and the absolute error
    of each parameter (``param_mae/<name>``). Estimates are clipped to [0, 1] first, as an effect would.

    NaN (not applicable), under the same keys, when the system estimated no parameters (it does not control the
    effect) or the effect's settings are hidden; never 0."""

    name = "param_mae"
    needs = frozenset({"params"})

    def score(self, estimate, example):
        names = tuple(example.param_names or ())
        if estimate.params01 is None or example.true_params01 is None:
            return {"param_mae": float("nan"), **{f"param_mae/{n}": float("nan") for n in names}}
        est = np.asarray(estimate.params01, dtype=np.float64).reshape(-1)
        true = np.asarray(example.true_params01, dtype=np.float64).reshape(-1)
        if est.shape != true.shape:
            raise ValueError(f"param_mae: estimate has {est.shape[0]} parameters, the effect {true.shape[0]} "
                             f"({example.example_id})")
        if not np.all(np.isfinite(est)):
            raise ValueError(f"param_mae: non-finite estimated parameters for {example.example_id}")
        if names and len(names) != true.shape[0]:
            raise ValueError(f"param_mae: {len(names)} parameter names for {true.shape[0]} values "
                             f"({example.example_id})")
        if true.size == 0:
            return {"param_mae": float("nan")}
        err = np.abs(np.clip(est, 0, 1) - true)
        out = {"param_mae": float(err.mean())}
        out.update({f"param_mae/{n}": float(e) for n, e in zip(names, err, strict=True)})
        return out
