"""Samplers and pruners. Every sampler is seeded per trial number (:class:`TrialSeededSampler`): one worker's sweep
is reproducible, and parallel workers, which would otherwise share one random stream, explore different points."""

from __future__ import annotations

import functools
import warnings

from bench.config import ConfigError

SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "none")


def trial_seed(seed: int, number: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(number)]).generate_state(1)[0])


@functools.cache
def trial_seeded_class():
    """The class :class:`TrialSeededSampler`, made on first use (it subclasses optuna's ``BaseSampler``, and this
    module must not import optuna at import time)."""
    from optuna.samplers import BaseSampler

    class TrialSeededSampler(BaseSampler):
        """A fresh inner sampler per trial, seeded by (seed, trial number).

        A plain seeded sampler gives every worker the same random stream, so parallel workers would propose the
        same settings; seeding by trial number keeps one worker's sweep reproducible and makes workers differ.
        It also records the trials this process asked for, so an interrupt can fail any it left running."""

        def __init__(self, factory, seed: int):
            self._factory = factory
            self._seed = int(seed)
            self._inner: dict[int, BaseSampler] = {}
            self.asked: list[int] = []  # storage trial ids created by this process

        def __str__(self) -> str:
            return f"{type(self._factory(0)).__name__}(seed={self._seed}, per trial)"

        def _for(self, trial) -> BaseSampler:
            s = self._inner.get(trial.number)
            if s is None:
                s = self._inner[trial.number] = self._factory(trial_seed(self._seed, trial.number))
            return s

        def infer_relative_search_space(self, study, trial):
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial) -> None:
            self.asked.append(trial._trial_id)
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values) -> None:
            self._for(trial).after_trial(study, trial, state, values)
            self._inner.pop(trial.number, None)

        def reseed_rng(self) -> None:  # seeds come from trial numbers
            pass

    return TrialSeededSampler


def make_sampler(name: str, seed: int, fixed: dict | None = None):
    """``tpe`` | ``random`` | ``nsga2``, seeded per trial; ``fixed`` pins parameters (``PartialFixedSampler``)."""
    import optuna

    bases = {
        "tpe": lambda s: optuna.samplers.TPESampler(seed=s),
        "random": lambda s: optuna.samplers.RandomSampler(seed=s),
        "nsga2": lambda s: optuna.samplers.NSGAIISampler(seed=s),
    }
    if name not in bases:
        raise ConfigError(f"--sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    base = bases[name]

    def factory(s: int):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            inner = base(s)
            return optuna.samplers.PartialFixedSampler(dict(fixed), inner) if fixed else inner

    return trial_seeded_class()(factory, seed)


def make_pruner(name: str, startup: int, n_objectives: int):
    """Pruning needs one objective (Optuna cannot prune multi-objective studies): none otherwise."""
    import optuna

    if name not in PRUNERS:
        raise ConfigError(f"--pruner {name!r}; valid: {', '.join(PRUNERS)}")
    if name == "none" or n_objectives > 1:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
    return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)
