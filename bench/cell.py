"""One system on one task: build or fit the system, have it answer, score the answers. Shared by the jobs of `run`
(:mod:`bench.jobs`) and by `sweep`.

The flow of a cell:

1. :func:`build_system` constructs a system from its config section (plus a sweep trial's overrides) on the
   plan's device; :func:`fit_system` trains it (a training job, :func:`bench.jobs.train`, saves it; a cell job
   loads it from that checkpoint).
2. :meth:`Evaluator.answers`: the system sees one :class:`bench.tasks.Query` per example (ids, input,
   reference), never the target or the true settings. The oracle is answered by the harness from the true
   settings (:func:`oracle_estimates`). Every answer is checked (shape, finite audio, parameters). Labelled
   variants become answers ``<system>:<variant>``; labelled candidates become ``<system>:best_pick``, the
   candidate nearest the target by MR-STFT, chosen here, where the target is.
3. :meth:`Evaluator.scores`: every metric scores every answer (its ``max_examples`` option read here, once),
   plus the costs a system reports (``cost/seconds``, ``cost/renders``...).
"""

from __future__ import annotations

import dataclasses
import time
from collections.abc import Callable
from contextlib import nullcontext
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from bench.config import Config
from bench.metrics import Metric, get_metric
from bench.results import is_number
from bench.systems import Estimate, FitContext, System, SystemError_, get_system

BEST_PICK = "best_pick"  # the label of the harness's upper bound among a system's candidates


class NotApplicable(Exception):
    """A system that is undefined on a task (the oracle on hidden processing): its cell is NaN, not a failure."""


# --- systems and metrics ------------------------------------------------------------------------------------


def build_metrics(cfg: Config, device: str, names: list[str] | None = None) -> list[Metric]:
    return [get_metric(n, cfg.metric_config(n), sample_rate=cfg.run.sample_rate, device=device)
            for n in (names if names is not None else cfg.metric_names())]


def build_system(name: str, cfg: Config, device: str, overrides: dict | None = None) -> System:
    """The system ``name`` with its config section (without ``checkpoint`` and the Ray task options) and
    ``overrides`` on top. A labelled variant (``[systems.LABEL] base = "proposed"``, then any of the base's keys) is
    its base system, built with the base's section and its own keys over it, and named by its label."""
    conf = cfg.system_settings(name)
    conf.update(matched_budget(name, cfg, conf))
    system = get_system(cfg.system_base(name), {**conf, **(overrides or {})}, sample_rate=cfg.run.sample_rate,
                        device=device)
    system.name = name
    return system


def fit_system(system: System, plan, *, run=None, checkpoint_dir: Path | None = None, report=None,
               progress: bool | None = None, seed: int | None = None,
               dependencies: dict[str, Path] | None = None) -> float:
    """Train ``system`` on the plan's training tasks (validation tasks in its context) with training seed
    ``seed`` (default ``run.seed``) and the checkpoint folders of the systems it ``needs``; returns the seconds."""
    cfg = plan.cfg
    from bench.effects import default_workers

    ctx = FitContext(valid_tasks=plan.valid, tracker=run, seed=cfg.run.seed if seed is None else int(seed),
                     workers=cfg.run.workers or default_workers(),
                     progress=cfg.run.progress if progress is None else progress, checkpoint_dir=checkpoint_dir,
                     report=report, dependencies=dict(dependencies or {}))
    t0 = time.perf_counter()
    system.fit(plan.train, ctx)
    return time.perf_counter() - t0


def matched_budget(name: str, cfg: Config, settings: dict) -> dict:
    """The overrides that give a trainable system the run's matched budget (``run.budget``), or {} (no budget
    asked for, a system that does not train, or one that cannot be matched: warned, it keeps its own)."""
    from bench.systems import SYSTEMS

    if not cfg.run.budget:
        return {}
    cls = SYSTEMS.get(cfg.system_base(name))
    if not getattr(cls, "trainable", False):
        return {}
    n_effects = sum(1 for _, eset in cfg.effect_sets() if eset != "wild")
    base = {f.name: getattr(cls.Config(), f.name) for f in dataclasses.fields(cls.Config)}
    over = cls.budget_overrides({**base, **settings}, n_effects=n_effects, **cfg.run.budget)
    if over is None:
        import warnings

        warnings.warn(f"{name}: cannot be matched to run.budget {cfg.run.budget}; it keeps its own budget "
                      "(budgets.csv says what it spent)", stacklevel=2)
        return {}
    return over


def system_key(cfg: Config, name: str, seed: int | None = None) -> str:
    """What a trained system depends on: its section, the data seed and training seed, the audio format, the data
    and the effects."""
    from bench.cache import stable_hash

    section = {k: v for k, v in cfg.system_config(name).items() if k not in ("resources", "cell_resources")}
    parts = [name, section, cfg.run.seed, cfg.run.sample_rate, cfg.segment_samples,
             cfg.to_dict()["data"], [e for e, _ in cfg.effect_sets()]]
    if seed is not None and seed != cfg.run.seed:
        parts.append(["training seed", int(seed)])
    if cfg.run.budget:
        parts.append(["matched budget", dict(cfg.run.budget)])
    for dep in needs_of(cfg, name):  # a system built on another is retrained when that one would be
        parts.append(["needs", dep, system_key(cfg, dep, seed)])
    return stable_hash(parts)


def needs_of(cfg: Config, name: str) -> list[str]:
    """The systems whose checkpoints ``name``'s training builds on (its class's ``needs``), in training order."""
    from bench.systems import SYSTEMS

    return list(getattr(SYSTEMS.get(cfg.system_base(name)), "needs", ()))


def seeds_of(cfg: Config, name: str) -> list[int]:
    """The training seeds a system is run with: every one of ``run.seeds`` if it trains, else the first only
    (a system that does not train, or loads a given checkpoint, is the same under every training seed)."""
    from bench.systems import SYSTEMS

    seeds = cfg.training_seeds()
    cls = SYSTEMS.get(cfg.system_base(name))
    trains = getattr(cls, "trainable", False) and not cfg.system_config(name).get("checkpoint")
    return seeds if trains else seeds[:1]


def budget_of(system: System, seconds: float, device: str) -> dict:
    """What training cost: the system's own count (examples, steps, renders, parameters) and the harness's
    (wall seconds, and device seconds when the device is a GPU)."""
    b = {k: float("nan") for k in ("train_examples", "steps", "train_renders", "parameters")}
    b.update({k: v for k, v in system.budget().items() if k in b})
    b.update(train_seconds=float(seconds), device=device,
             device_seconds=float(seconds) if device.startswith("cuda") else 0.0)
    return b


# --- answers ------------------------------------------------------------------------------------------------


def oracle_estimates(examples: list) -> list[Estimate]:
    """The true settings and the target: the oracle's answers, made by the harness, which holds them."""
    if any(ex.true_params01 is None for ex in examples):
        raise NotApplicable("no true settings exist for hidden processing, so there is no oracle")
    return [Estimate(ex.true_params01, ex.target.copy()) for ex in examples]


def check_estimates(system: str, estimates: list[Estimate], examples: list, effect) -> None:
    """One finite output of the input's shape per example, and finite parameters of the effect's count."""
    if len(estimates) != len(examples):
        raise SystemError_(f"{system}: returned {len(estimates)} estimates for {len(examples)} examples")
    for est, ex in zip(estimates, examples, strict=True):
        out = np.asarray(est.output)
        if out.shape != ex.input.shape:
            raise SystemError_(f"{system}: output shape {out.shape} for {ex.example_id}, expected {ex.input.shape}")
        if not np.all(np.isfinite(out)):
            raise SystemError_(f"{system}: NaN/Inf in its output audio for {ex.example_id}")
        if est.params01 is not None:
            p = np.asarray(est.params01)
            if p.shape != (effect.n_params,) or not np.all(np.isfinite(p)):
                raise SystemError_(f"{system}: bad parameter estimate {p.tolist()} for {ex.example_id} "
                                   f"(expected {effect.n_params} finite values)")


def _same_labels(system: str, what: str, labels: list) -> list:
    first = list(labels[0]) if labels else []
    if any(set(lab) != set(first) for lab in labels):
        raise SystemError_(f"{system}: its estimates do not all carry the same {what} ({first} on the first)")
    return first


@dataclass
class Cell:
    """One system's answers on one task's examples, and their scores."""

    system: str
    examples: list
    answers: dict[str, list[Estimate]] = field(default_factory=dict)  # "<system>[:<variant>]" -> estimates
    scores: dict[str, list[dict[str, float]]] = field(default_factory=dict)  # the same keys -> per example
    seconds: float = 0.0  # the system's time to answer the cell
    not_applicable: str = ""  # why the system is undefined here (then every score is NaN)


class Evaluator:
    """Answers and scores of cells, with one set of metrics."""

    def __init__(self, metrics: list[Metric], *, sample_rate: int, device: str, warn: Callable = print):
        self.metrics = metrics
        self.sample_rate, self.device, self.warn = sample_rate, device, warn
        self._ranker: Metric | None = None
        self.parts = None  # a bench.perf.profile.Parts that times answers and each metric, when a job sets one

    def _part(self, name: str):
        return self.parts.part(name) if self.parts is not None else nullcontext()

    def ranker(self) -> Metric:
        """MR-STFT, which chooses a system's best candidate: the run's own metric when it has one."""
        if self._ranker is None:
            own = [m for m in self.metrics if m.name == "mrstft"]
            self._ranker = own[0] if own else get_metric("mrstft", sample_rate=self.sample_rate, device=self.device)
        return self._ranker

    def answers(self, name: str, system: System, task, examples: list) -> tuple[dict[str, list[Estimate]], float]:
        """Every answer of ``system`` on ``examples``, checked, and the seconds it took."""
        t0 = time.perf_counter()
        with self._part("answers"):
            if system.sees_truth:
                estimates = oracle_estimates(examples)
            else:
                estimates = system.match_examples([ex.query() for ex in examples], task.effect)
        seconds = time.perf_counter() - t0
        check_estimates(name, estimates, examples, task.effect)
        answers = {name: estimates}
        for v in _same_labels(name, "variants", [e.variants for e in estimates]):
            answers[f"{name}:{v}"] = [e.variants[v] for e in estimates]
            check_estimates(f"{name}:{v}", answers[f"{name}:{v}"], examples, task.effect)
        if _same_labels(name, "candidates", [e.candidates for e in estimates]):
            answers[f"{name}:{BEST_PICK}"] = self.best_pick(name, estimates, examples)
        return answers, seconds

    def best_pick(self, name: str, estimates: list[Estimate], examples: list) -> list[Estimate]:
        """Per example, the candidate output nearest the target (MR-STFT): a labelled upper bound on the
        system's own choice among its candidates. The pick is recorded in both answers' info."""
        ranker = self.ranker()
        out = []
        for est, ex in zip(estimates, examples, strict=True):
            labels = list(est.candidates)
            cands = [Estimate(None, np.asarray(est.candidates[k], dtype=np.float32)) for k in labels]
            check_estimates(f"{name}:{BEST_PICK}", cands, [ex] * len(cands), None)
            losses = [s[ranker.name] for s in ranker.score_batch(cands, [ex] * len(cands))]
            best = labels[int(np.argmin(losses))]
            est.info[BEST_PICK] = best
            out.append(Estimate(None, cands[labels.index(best)].output.copy(), {BEST_PICK: best}))
        return out

    def scores(self, estimates: list[Estimate], examples: list, seconds: float, where: str) -> list[dict]:
        """Per example: every metric's scores (on its first ``max_examples``), then the reported costs."""
        per_example: list[dict[str, float]] = [{} for _ in examples]
        for m in self.metrics:  # slow metrics (AudioCommons' worker pool) start now and run while the others score
            k = m.limit(len(examples))
            try:
                with self._part(f"metric {m.name}"):
                    m.prefetch(estimates[:k], examples[:k])
            except Exception as e:  # score_batch will meet the same problem and record it
                self.warn(f"metric {m.name} could not start early on {where}: {type(e).__name__}: {e}")
        for m in self.metrics:
            k = m.limit(len(examples))
            try:
                with self._part(f"metric {m.name}"):
                    scored = m.score_batch(estimates[:k], examples[:k])
            except Exception as e:  # one metric failing must not lose the others
                self.warn(f"metric {m.name} failed on {where}: {type(e).__name__}: {e}")
                continue
            for d, s in zip(per_example[:k], scored, strict=True):
                d.update(s)
        for d, est in zip(per_example, estimates, strict=True):
            d.setdefault("cost/seconds", est.info.get("seconds", seconds / max(1, len(examples))))
            for key, v in est.info.items():
                if key != "seconds" and is_number(v):
                    d[f"cost/{key}"] = float(v)
        return per_example

    def evaluate(self, name: str, system: System, task, examples: list) -> Cell:
        """The whole cell: answers, then scores. A system undefined on the task gives NaN for every metric."""
        cell = Cell(name, examples)
        try:
            cell.answers, cell.seconds = self.answers(name, system, task, examples)
        except NotApplicable as e:
            cell.not_applicable = str(e)
            cell.scores = {name: [{m.name: float("nan") for m in self.metrics} for _ in examples]}
            return cell
        for n, ests in cell.answers.items():
            cell.scores[n] = self.scores(ests, examples, cell.seconds, f"{n} / {task.id}")
        return cell

