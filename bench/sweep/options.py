"""What a sweep is asked to do (:class:`SweepOptions`), what it reports (:class:`SweepResult`), which systems can be
swept, and the key that says which settings a study's trials were made under."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.config import Config, ConfigError
from bench.sweep.samplers import PRUNERS, SAMPLERS


@dataclass
class SweepOptions:
    trials: int | None = 20  # trials this worker runs (None: until --max-trials or --timeout)
    max_trials: int | None = None  # stop when the study holds this many trials (all workers together)
    timeout: float | None = None  # seconds this worker starts trials for
    study: str | None = None  # default: <system>-<preset>
    objectives: list[str] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)
    sampler: str = "tpe"
    pruner: str = "median"
    pruner_startup: int = 5  # finished trials before the median pruner prunes
    seed: int | None = None  # default: run.seed
    fix: dict = field(default_factory=dict)  # search-space parameters pinned to a value

    def check(self) -> None:
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"--trials: must be at least 1, got {self.trials}")
        if self.max_trials is not None and self.max_trials < 1:
            raise ConfigError(f"--max-trials: must be at least 1, got {self.max_trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout: must be positive, got {self.timeout}")
        if self.trials is None and self.max_trials is None and self.timeout is None:
            raise ConfigError("sweep: give --trials, --max-trials or --timeout, or it would never stop")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"--sampler {self.sampler!r}; valid: {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"--pruner {self.pruner!r}; valid: {', '.join(PRUNERS)}")
        if self.pruner_startup < 0:
            raise ConfigError(f"--pruner-startup: must be >= 0, got {self.pruner_startup}")


@dataclass
class SweepResult:
    system: str
    study: str
    storage: str
    states: dict  # state -> count, over the whole study
    mine: int  # trials this worker ran
    best_params: dict | None
    best_values: list | None
    best_trial: int | None


def sweepable(cls) -> bool:
    """Trainable and declaring its own search space."""
    from bench.systems import System

    return bool(getattr(cls, "trainable", False)) and cls.search_space.__func__ is not System.search_space.__func__


def trainable_systems() -> list[str]:
    """Every registered system that imports, is trainable and declares a search space."""
    from bench.systems import SYSTEMS

    names = []
    for name in SYSTEMS.names():
        try:
            cls = SYSTEMS.get(name)
        except Exception:  # not written yet or a missing dependency: nothing to sweep
            continue
        if sweepable(cls):
            names.append(name)
    return names


def study_key(cfg: Config, system: str, objectives: list) -> str:
    """What the trials' values depend on: data, effects, tasks, seed, the system's base config, the objectives.
    A study joined with different settings would mix incomparable trials."""
    from bench.cache import stable_hash

    d = cfg.to_dict()
    # what the validation values do not depend on: how the run is shown and run, the evaluated split and the test
    # set (never touched by training or validation), the training seeds of `afx-bench run` (trials train with
    # run.seed), and the other systems and metrics
    for k in ("name", "progress", "workers", "device", "report", "audio_examples", "split", "seeds", "executor"):
        d["run"].pop(k, None)
    d["data"].pop("test_seed", None)
    for k in ("tracking", "preset", "systems", "metrics"):
        d.pop(k, None)
    metrics = sorted({o.metric for o in objectives})
    return stable_hash([d, system, cfg.system_settings(system), [(o.key, o.pattern, o.direction) for o in objectives],
                        {m: cfg.metric_config(m) for m in metrics}])
