"""The floors a learned system must clear before it may claim to read the reference: answers that ignore it.

- ``mean``: the mean of the training settings of each effect (the data distribution's mean in the normalised
  space, from ``n_draws`` draws of the effect's own ``sample``; for parameter MAE, a better bar than random).
- ``constant``: per effect, the single setting with the best mean MR-STFT on the validation examples, found by
  a search over the normalised space: ``candidates`` settings drawn from the data distribution plus the mean and
  the default, then ``refine_passes`` passes of coordinate search (each parameter tried at ``grid`` evenly
  spaced values, kept where it lowers the validation score). Never the test split.

Both answer every input of an effect with the same setting. On hidden processing (no settings) they return the
input, as bypass does. An effect without validation tasks (an effect of the test set only) gets the mean.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.effects import Effect
from bench.systems import CheckpointError, Estimate, FitContext, System, register_system


class _Floor(System):
    """A setting per effect name; the mean of the data distribution for any effect not fitted."""

    controls = "any"
    trainable = True

    @dataclass
    class Config:
        n_draws: int = 256  # settings drawn to estimate the distribution's mean

        def validate(self, where: str) -> None:
            if self.n_draws < 1:
                raise ValueError(f"{where}.n_draws: must be at least 1, got {self.n_draws}")

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        self.settings: dict[str, list[float]] = {}
        self.stats: dict = {"train_renders": 0, "steps": 0, "train_examples": 0}

    def distribution_mean(self, effect: Effect, seed: int = 0) -> np.ndarray:
        rng = np.random.default_rng([seed, effect.n_params, len(effect.name)])
        draws = np.stack([effect.sample(rng, self.sample_rate) for _ in range(self.cfg.n_draws)])
        return draws.mean(axis=0).astype(np.float32)

    def setting(self, effect: Effect) -> np.ndarray:
        if effect.name not in self.settings:
            self.settings[effect.name] = self.distribution_mean(effect).tolist()
        return np.asarray(self.settings[effect.name], dtype=np.float32)

    def match_batch(self, inputs, references, effect):
        inputs = np.asarray(inputs, dtype=np.float32)
        if effect.n_params == 0:  # hidden processing: nothing to set
            return [Estimate(None, x.copy()) for x in inputs]
        p = self.setting(effect)
        out = effect.process(inputs, self.sample_rate, p)
        return [Estimate(p.copy(), y) for y in out]

    def match(self, input, reference, effect):
        return self.match_batch(np.asarray(input)[None], np.asarray(reference)[None], effect)[0]

    @staticmethod
    def _effects(tasks: list) -> dict[str, Effect]:
        return {t.effect.name: t.effect for t in tasks if t.effect.n_params > 0}

    def fit(self, tasks, ctx: FitContext) -> None:
        self.settings = {name: self.distribution_mean(e, ctx.seed).tolist() for name, e in self._effects(tasks).items()}

    def budget(self) -> dict:
        return {"parameters": sum(len(v) for v in self.settings.values()), **self.stats}

    def save(self, path: Path) -> None:
        Path(path).mkdir(parents=True, exist_ok=True)
        (Path(path) / "settings.json").write_text(json.dumps({"name": self.name, "settings": self.settings,
                                                              "stats": self.stats}, indent=1))

    def load(self, path: Path) -> None:
        f = Path(path) / "settings.json"
        if not f.is_file():
            raise CheckpointError(f"{self.name}: no settings.json in {path}")
        data = json.loads(f.read_text())
        if data.get("name") != self.name:
            raise CheckpointError(f"{self.name}: {f} holds the settings of {data.get('name')!r}")
        self.settings, self.stats = dict(data["settings"]), dict(data.get("stats", {}))


@register_system("mean")
class MeanSetting(_Floor):
    """The mean of the training settings, whatever the reference."""

    name = "mean"


@register_system("constant")
class BestConstant(_Floor):
    """The single setting with the best validation MR-STFT, whatever the reference."""

    name = "constant"

    @dataclass
    class Config:
        n_draws: int = 256
        candidates: int = 32  # settings from the data distribution tried first (plus the mean and the default)
        refine_passes: int = 1  # coordinate-search passes over the parameters
        grid: int = 5  # values per parameter in a pass
        valid_examples: int = 16  # validation examples per task scored for each candidate

        def validate(self, where: str) -> None:
            for k in ("n_draws", "candidates", "grid", "valid_examples"):
                if getattr(self, k) < 1:
                    raise ValueError(f"{where}.{k}: must be at least 1, got {getattr(self, k)}")
            if self.refine_passes < 0:
                raise ValueError(f"{where}.refine_passes: must be >= 0, got {self.refine_passes}")

    def fit(self, tasks, ctx: FitContext) -> None:
        from bench.metrics import get_metric

        super().fit(tasks, ctx)
        metric = get_metric("mrstft", sample_rate=self.sample_rate, device=self.device)
        by_effect: dict[str, list] = {}
        for t in ctx.valid_tasks:
            if t.effect.n_params > 0:
                by_effect.setdefault(t.effect.name, []).append(t)
        for name, vtasks in by_effect.items():
            effect = vtasks[0].effect
            examples = [ex for t in vtasks for ex in t.examples(self.cfg.valid_examples)]
            self.settings[name] = self._search(effect, examples, metric, ctx).tolist()

    def _search(self, effect: Effect, examples: list, metric, ctx: FitContext) -> np.ndarray:
        rng = np.random.default_rng([ctx.seed, len(effect.name), effect.n_params])
        inputs = np.stack([ex.input for ex in examples])
        cache: dict[bytes, float] = {}

        def score(p: np.ndarray) -> float:
            p = np.clip(np.asarray(p, dtype=np.float32), 0.0, 1.0)
            key = p.tobytes()
            if key not in cache:
                out = effect.process(inputs, self.sample_rate, p, workers=max(1, ctx.workers))
                ests = [Estimate(p, y) for y in out]
                vals = [s["mrstft"] for s in metric.score_batch(ests, examples)]
                cache[key] = float(np.nanmean(vals))
                self.stats["train_renders"] += len(examples)
                self.stats["train_examples"] += len(examples)
                self.stats["steps"] += 1
            return cache[key]

        cands = [np.asarray(self.settings.get(effect.name, self.distribution_mean(effect, ctx.seed))), effect.default01()]
        cands += [effect.sample(rng, self.sample_rate) for _ in range(self.cfg.candidates)]
        best = min(cands, key=score).astype(np.float32)
        grid = np.linspace(0.0, 1.0, self.cfg.grid, dtype=np.float32)
        for _ in range(self.cfg.refine_passes):
            for j in range(effect.n_params):
                for v in grid:
                    trial = best.copy()
                    trial[j] = v
                    if score(trial) < score(best):
                        best = trial
        ctx.log_metrics({f"{effect.name}/valid_mrstft": score(best)})
        return best
