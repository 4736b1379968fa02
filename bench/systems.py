"""The System protocol, its registry, and the reference systems every table needs (bypass, random, oracle).

A system is constructed with its own config section (a dict of hyper-parameters), the working sample rate and a
device; ``fit`` trains it on the training tasks, ``save``/``load`` persist it, and ``match`` estimates the
settings of ``effect`` that make ``input`` sound like ``reference``. A system that cannot control an effect still
returns its best output audio, with ``params01 = None`` (parameter metrics are then not applicable).
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.effects import Effect
from bench.registry import Registry

SYSTEMS = Registry(
    "systems",
    {
        "bypass": "bench.systems",
        "random": "bench.systems",
        "oracle": "bench.systems",
        "proposed": "models.proposed.system",
        "deepafx_st_autodiff": "baselines.deepafx_st.system",
        "deepafx_st_spsa": "baselines.deepafx_st.system",
        "oneshot_eq": "baselines.oneshot_eq.system",
        "ito_cmaes": "baselines.ito.system",
    },
)
register_system = SYSTEMS.register


class SystemError_(RuntimeError):
    """A system that failed (diverged, bad checkpoint, NaN output); the message names the system."""


class CheckpointError(SystemError_):
    """A missing or incompatible checkpoint; the message names the file and the system expected."""


@dataclass
class Estimate:
    params01: np.ndarray | None  # None when the system does not control the effect
    output: np.ndarray
    info: dict = field(default_factory=dict)  # per-example extras: renders, seconds, picked controller...
    # labelled alternative answers scored as systems of their own, "<system>:<name>" (e.g. the proposed model's
    # best controller chosen with the target, an upper bound on its auto rule); every estimate of a cell has the
    # same names
    variants: dict[str, Estimate] = field(default_factory=dict)


@dataclass
class FitContext:
    """What ``fit`` gets besides its tasks."""

    valid_tasks: list = field(default_factory=list)
    tracker: Any = None  # bench.tracking.Tracker or None
    device: str = "cpu"
    seed: int = 0
    workers: int = 1
    progress: bool = True
    checkpoint_dir: Path | None = None
    report: Any = None  # callable(step, value) -> None; raises optuna.TrialPruned in sweeps

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step=step)


class System:
    """Base class. ``Config`` is a dataclass of hyper-parameters; unknown keys are refused by name."""

    name: str = ""
    controls: set[str] | str = set()  # effect names, or "any"
    trainable: bool = False
    hidden_ok: bool = True  # False: the system is undefined on hidden effects (cells are n/a, not failures)

    @dataclass
    class Config:
        pass

    def __init__(self, config: dict | None = None, *, sample_rate: int = 24000, device: str = "cpu"):
        self.cfg = parse_config(self.Config, config or {}, f"systems.{self.name}")
        self.sample_rate = int(sample_rate)
        self.device = device

    def can_control(self, effect: Effect) -> bool:
        return (self.controls == "any" and effect.n_params > 0) or effect.name in self.controls

    # --- to implement (trainable systems) -----------------------------------------------------------------
    def fit(self, tasks: list, ctx: FitContext) -> None:
        """Train on ``tasks`` (training split). Reference systems need no training."""

    def save(self, path: Path) -> None:
        """Write a checkpoint (a directory) that :meth:`load` reads."""
        Path(path).mkdir(parents=True, exist_ok=True)

    def load(self, path: Path) -> None:
        """Read a checkpoint written by :meth:`save`."""

    def match(self, input: np.ndarray, reference: np.ndarray, effect: Effect) -> Estimate:
        raise NotImplementedError

    # --- provided -----------------------------------------------------------------------------------------
    def match_batch(self, inputs: np.ndarray, references: np.ndarray, effect: Effect) -> list[Estimate]:
        """Batched matching; the default loops over :meth:`match`. Override for speed."""
        return [self.match(x, r, effect) for x, r in zip(inputs, references, strict=True)]

    def match_examples(self, examples: list, effect: Effect) -> list[Estimate]:
        """What the runner calls. Only the oracle looks past input and reference."""
        return self.match_batch(np.stack([e.input for e in examples]), np.stack([e.reference for e in examples]),
                                effect)

    @classmethod
    def search_space(cls, trial) -> dict:
        """Hyper-parameters an Optuna sweep explores (``trial.suggest_*``); empty for untrainable systems."""
        return {}

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.cfg)


def parse_config(cls, values: dict, where: str):
    """Build dataclass ``cls`` from ``values``; unknown keys and wrongly typed values fail with their name."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ValueError(f"{where}: unknown key(s) {unknown}; valid: {sorted(fields)}")
    out = {}
    for k, v in values.items():
        default = getattr(cls(), k)
        if isinstance(default, bool):
            if not isinstance(v, bool):
                raise ValueError(f"{where}.{k}: expected true/false, got {v!r}")
        elif isinstance(default, (int, float)) and not isinstance(default, bool):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ValueError(f"{where}.{k}: expected a number, got {v!r}")
            v = type(default)(v) if not (isinstance(default, int) and isinstance(v, float) and v != int(v)) else v
        elif isinstance(default, str) and not isinstance(v, str):
            raise ValueError(f"{where}.{k}: expected a string, got {v!r}")
        out[k] = v
    cfg = cls(**out)
    check = getattr(cfg, "validate", None)
    if check:
        check(where)
    return cfg


def get_system(name: str, config: dict | None = None, **kwargs) -> System:
    return SYSTEMS.get(name)(config, **kwargs)


def _render(effect: Effect, inputs: np.ndarray, params: np.ndarray | None, sample_rate: int) -> np.ndarray:
    return effect.process(inputs, sample_rate, params) if params is not None else inputs


# --- reference systems --------------------------------------------------------------------------------------


@register_system("bypass")
class Bypass(System):
    """Output = input: what doing nothing scores. Estimates no parameters."""

    name = "bypass"

    def match(self, input, reference, effect):
        return Estimate(None, np.asarray(input, dtype=np.float32))


@register_system("random")
class RandomSettings(System):
    """Random settings drawn from the same distribution as the data (the effect's ``sample``).

    Each example's draw is seeded by (seed, example id), so a resumed run gives the same numbers."""

    name = "random"
    controls = "any"

    @dataclass
    class Config:
        seed: int = 12345

    def _draw(self, input, effect, rng) -> Estimate:
        if effect.hidden:
            recipe = effect.draw(rng, self.sample_rate)
            return Estimate(None, effect.render(input, self.sample_rate, recipe), {"recipe": recipe})
        p = effect.sample(rng, self.sample_rate)
        return Estimate(p, effect.process(input, self.sample_rate, p))

    def match(self, input, reference, effect):
        return self._draw(input, effect, np.random.default_rng(self.cfg.seed))

    def match_examples(self, examples, effect):
        return [self._draw(e.input, effect, np.random.default_rng([self.cfg.seed, zlib.crc32(e.example_id.encode())]))
                for e in examples]


@register_system("oracle")
class Oracle(System):
    """The true settings: the lower bound of every error (not defined for hidden effects)."""

    name = "oracle"
    controls = "any"
    hidden_ok = False  # no oracle exists for hidden processing: its cells are recorded as not applicable

    def match(self, input, reference, effect):
        raise SystemError_("oracle: needs the examples' true settings; the runner calls match_examples")

    def match_examples(self, examples, effect):
        if effect.hidden:
            raise SystemError_(f"oracle: {effect.name} has hidden settings, so no oracle exists for it")
        return [Estimate(e.true_params01, e.target.copy()) for e in examples]
