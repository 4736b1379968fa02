"""The System protocol, its registry, and the reference systems every table needs (bypass, random, oracle).

A system is constructed with its own config section (a dict of hyper-parameters), the working sample rate and the
run's device (resolved once, by :mod:`bench.plan`); ``fit`` trains it on the training tasks, ``save``/``load``
persist it, and ``match`` estimates the settings of ``effect`` that make ``input`` sound like ``reference``. A
system that cannot control an effect still returns its best output audio, with ``params01 = None`` (parameter
metrics are then not applicable).

What a system sees at match time is a :class:`bench.tasks.Query` per example: ids, input and reference. Never the
target, the true settings or a hidden recipe. The oracle is the one exception, and it is not a system that
matches: the harness builds its answers from the true settings (:mod:`bench.cell`).
"""

from __future__ import annotations

import dataclasses
import zlib
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from bench.config import parse_section
from bench.effects import Effect
from bench.registry import Registry

SYSTEMS = Registry(
    "systems",
    {
        "bypass": "bench.systems",
        "random": "bench.systems",
        "oracle": "bench.systems",
        "mean": "bench.floors",
        "constant": "bench.floors",
        "proposed": "models.proposed.system",
        "proposed_paper": "models.proposed.system",
        "deepafx_st_autodiff": "baselines.deepafx_st.system",
        "deepafx_st_spsa": "baselines.deepafx_st.system",
        "oneshot_eq": "baselines.oneshot_eq.system",
        "ito_cmaes": "baselines.ito.system",
        "proposed_ito": "baselines.ito.hybrid",
    },
)
register_system = SYSTEMS.register


class SystemError_(RuntimeError):
    """A system that failed (diverged, bad checkpoint, NaN output); the message names the system."""


class CheckpointError(SystemError_):
    """A missing or incompatible checkpoint; the message names the file and the system expected."""


# An answer to hidden processing (an effect with no parameters) may name the effect the system chose in its
# place and that effect's settings: ``info[PICKED]`` (an effect name, or "bypass") and ``info[PICKED_PARAMS]``
# (its normalised settings). `afx-bench match --effect auto` applies them to the whole file.
PICKED, PICKED_PARAMS = "picked", "picked_params01"


@dataclass
class Estimate:
    params01: np.ndarray | None  # None when the system does not control the effect
    output: np.ndarray
    info: dict = field(default_factory=dict)  # per-example extras: renders, seconds, picked controller...
    # labelled alternative answers scored as systems of their own, "<system>:<name>"; every estimate of a cell
    # has the same names
    variants: dict[str, Estimate] = field(default_factory=dict)
    # labelled candidate outputs the system chose among (e.g. one per controller of the proposed model's auto
    # rule). The harness, which alone sees the target, scores the candidate nearest it as "<system>:best_pick":
    # an upper bound on the system's own choice, labelled as such
    candidates: dict[str, np.ndarray] = field(default_factory=dict)


@dataclass
class FitContext:
    """What ``fit`` gets besides its tasks."""

    valid_tasks: list = field(default_factory=list)
    tracker: Any = None  # bench.tracking.Run or None
    seed: int = 0
    workers: int = 1
    progress: bool = True
    checkpoint_dir: Path | None = None
    report: Any = None  # callable(step, value) -> None; raises optuna.TrialPruned in sweeps
    # the checkpoints of the systems this one builds on (``System.needs``), trained with the same seed: name -> folder
    dependencies: dict[str, Path] = field(default_factory=dict)

    def log_metrics(self, metrics: dict[str, float], step: int | None = None) -> None:
        if self.tracker is not None:
            self.tracker.log_metrics(metrics, step=step)


class System:
    """Base class. ``Config`` is a dataclass of hyper-parameters; unknown keys are refused by name."""

    name: str = ""
    controls: set[str] | str = set()  # effect names, or "any"
    trainable: bool = False
    sees_truth: bool = False  # only the oracle: the harness answers for it from the true settings
    # systems (config names) whose checkpoints, trained with the same seed, ``fit`` builds on: the driver trains
    # them first and hands their folders over as ``FitContext.dependencies`` (proposed_ito refines proposed)
    needs: tuple[str, ...] = ()

    @dataclass
    class Config:
        pass

    def __init__(self, config: dict | None = None, *, sample_rate: int = 24000, device: str = "cpu"):
        self.cfg = parse_section(self.Config, config or {}, f"systems.{self.name}")
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

    def match_examples(self, queries: list, effect: Effect) -> list[Estimate]:
        """What the harness calls, with one :class:`bench.tasks.Query` per example (ids, input, reference)."""
        return self.match_batch(np.stack([q.input for q in queries]), np.stack([q.reference for q in queries]),
                                effect)

    def budget(self) -> dict:
        """What the last ``fit`` spent, as far as the system counts it: ``train_examples`` (examples seen, with
        repeats), ``steps`` (optimiser steps or search iterations), ``train_renders`` (effect renders) and
        ``parameters`` (trainable numbers). The default counts the parameters of the torch modules it holds;
        systems that train say the rest (the harness adds wall and device seconds)."""
        return {"parameters": count_parameters(self)}

    @classmethod
    def budget_overrides(cls, settings: dict, *, n_effects: int, train_examples: int | None = None,
                         train_renders: int | None = None) -> dict | None:
        """Config overrides that make ``fit`` spend the given budget (``run.budget``), counted as
        :meth:`budget` counts it, with ``settings`` the system's section and ``n_effects`` the effects it trains
        on; None when the system cannot be matched to it (it then keeps its own budget, and the run says so)."""
        return None

    @classmethod
    def search_space(cls, trial) -> dict:
        """Hyper-parameters an Optuna sweep explores (``trial.suggest_*``); empty for untrainable systems."""
        return {}

    def config_dict(self) -> dict:
        return dataclasses.asdict(self.cfg)


def count_parameters(obj) -> int:
    """The numbers in the torch modules an object holds as attributes (0 without torch or modules)."""
    import sys

    torch = sys.modules.get("torch")
    if torch is None:
        return 0
    seen, total = set(), 0
    for v in vars(obj).values():
        if isinstance(v, torch.nn.Module):
            for p in v.parameters():
                if id(p) not in seen:
                    seen.add(id(p))
                    total += p.numel()
    return total


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
    """Random settings drawn from the same distribution as the data (the effect's setting: parameters, or a
    random recipe of hidden processing).

    Each example's draw is seeded by (seed, example id), so a resumed run gives the same numbers."""

    name = "random"
    controls = "any"

    @dataclass
    class Config:
        seed: int = 12345

    def _draw(self, input, effect, rng) -> Estimate:
        setting = effect.draw_setting(rng, self.sample_rate)
        info = {"recipe": setting.recipe} if setting.recipe is not None else {}
        return Estimate(setting.params01, effect.apply(input, self.sample_rate, setting), info)

    def match(self, input, reference, effect):
        return self._draw(input, effect, np.random.default_rng(self.cfg.seed))

    def match_examples(self, queries, effect):
        return [self._draw(q.input, effect, np.random.default_rng([self.cfg.seed, zlib.crc32(q.example_id.encode())]))
                for q in queries]


@register_system("oracle")
class Oracle(System):
    """The true settings: the lower bound of every error. The harness answers for it from each example's true
    settings and target (:func:`bench.cell.oracle_estimates`); it is not applicable where there are none
    (hidden processing)."""

    name = "oracle"
    controls = "any"
    sees_truth = True

    def match(self, input, reference, effect):
        raise SystemError_("oracle: needs the examples' true settings, which only the harness holds")
