"""A Gaussian prior over an effect's normalised settings, for maximum-a-posteriori search (``ito_cmaes`` with
``prior = "gaussian"``; after the preset prior of ITO for vocal effects, WASPAA 2025).

The prior is fitted to a collection of settings: by default draws of the effect's own data distribution
(``effect.sample``: the distribution the harness makes its training settings with), or a folder of JSON presets
(``prior_presets``). The search then minimises ``distance + weight * 0.5 * m^2 / P``, with ``m`` the Mahalanobis
distance of the settings from the prior's mean and ``P`` the number of parameters, and starts its first look at the
mean and at draws from the prior.

When it can help: a prior says something only where the settings of the data are concentrated. The harness's
training settings are close to uniform over each parameter's range, so the Gaussian fitted to them is nearly flat
over the box and the penalty only pulls gently towards the middle: it should not help there (docs/baselines.md).
A collection of real presets (a producer's vocal chains, a plugin's factory bank) is concentrated, and there it
may.

A preset file is JSON: one object or a list of objects, each ``{"effect": NAME, "params01": {PARAM: VALUE, ...}}``
(or ``params01`` a list in the effect's parameter order), values normalised to [0, 1]. Presets of other effects are
ignored; a parameter a preset leaves out takes the effect's default.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

RIDGE = 1e-3  # added to the covariance's diagonal: a few presets never make it singular


@dataclass
class GaussianPrior:
    mean: np.ndarray  # (P,)
    cov: np.ndarray  # (P, P)
    n: int  # the settings it was fitted to

    @classmethod
    def fit(cls, settings: np.ndarray) -> GaussianPrior:
        s = np.atleast_2d(np.asarray(settings, dtype=np.float64))
        if len(s) < 2:
            raise ValueError(f"a Gaussian prior needs at least 2 settings, got {len(s)}")
        cov = np.atleast_2d(np.cov(s, rowvar=False)) + RIDGE * np.eye(s.shape[1])
        return cls(s.mean(axis=0), cov, len(s))

    def mahalanobis2(self, params: np.ndarray) -> np.ndarray:
        d = np.atleast_2d(np.asarray(params, dtype=np.float64)) - self.mean
        return np.einsum("ij,ij->i", d, np.linalg.solve(self.cov, d.T).T)

    def penalty(self, params: np.ndarray, weight: float) -> np.ndarray:
        """``weight`` x the negative log density (up to a constant) per parameter: 0.5 m^2 / P."""
        return weight * 0.5 * self.mahalanobis2(params) / len(self.mean)


def read_presets(folder: str | Path, effect) -> np.ndarray:
    """The settings (N, P) of ``effect`` among the JSON presets in ``folder`` (recursively); a file that is not
    valid JSON or a preset with an unknown parameter or a value outside [0, 1] is a ValueError naming it."""
    root = Path(folder)
    if not root.is_dir():
        raise ValueError(f"prior_presets: no such folder {root}")
    names = list(effect.param_names)
    rows = []
    for path in sorted(root.rglob("*.json")):
        try:
            data = json.loads(path.read_text())
        except (json.JSONDecodeError, UnicodeDecodeError) as e:
            raise ValueError(f"prior_presets: {path} is not valid JSON ({e})") from e
        for i, preset in enumerate(data if isinstance(data, list) else [data]):
            if not isinstance(preset, dict) or preset.get("effect") != effect.name:
                continue
            where = f"prior_presets: {path} (preset {i})"
            values = preset.get("params01")
            row = effect.default01().astype(np.float64)
            if isinstance(values, dict):
                unknown = sorted(set(values) - set(names))
                if unknown:
                    raise ValueError(f"{where}: unknown parameter(s) {unknown} of {effect.name}; valid: {names}")
                for k, v in values.items():
                    row[names.index(k)] = float(v)
            elif isinstance(values, list) and len(values) == len(names):
                row[:] = [float(v) for v in values]
            else:
                raise ValueError(f"{where}: params01 must be an object {{param: value}} or a list of {len(names)} "
                                 "values")
            if not np.all((row >= 0) & (row <= 1)):
                raise ValueError(f"{where}: normalised values must lie in [0, 1], got {row.round(3).tolist()}")
            rows.append(row)
    return np.array(rows).reshape(-1, len(names))
