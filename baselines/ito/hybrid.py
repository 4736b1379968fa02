"""``proposed_ito``: the proposed model's answer refined by inference-time search (the hybrid of docs/baselines.md).

Per example, CMA-ES (the search of ``ito_cmaes``: the same style features, renders and answer rule) starts at the
proposed model's estimate of the settings instead of a first look at random settings, with a step size per
parameter taken from the model's error on the *validation* split: the root-mean-square difference between its
estimates and the true validation settings, clipped to [``sigma_min``, ``sigma_max``]. Where the model is precise
the search stays close to its answer; where it is not (a modulation rate), it looks further. The answer is the
candidate with the lowest feature distance, the model's own answer included, so the search can only move away
from it when the features say the move is closer to the reference.

Training: none of its own. The driver trains ``proposed`` first with the same seed (``needs``) and hands its
checkpoint to :meth:`fit`, which reads the validation examples (never a test example) to set the step sizes and
saves the model's checkpoint with them. Its training budget is therefore the proposed model's.

Budget: ``renders`` per example, the model's answer (one render) included. Hidden processing: the model's auto rule
(one render per controller) picks a controller, or leaving the input as it is; the search then refines the picked
controller's settings with what is left of the budget (nothing to refine when it picked the input).

The proposed model is reached through the system registry (``get_system("proposed")``), as ``ito_cmaes``'s encoder
feature reaches it: this package imports nothing from ``models``.
"""

from __future__ import annotations

import json
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from bench.effects import Effect, get_effect
from bench.systems import (
    PICKED,
    PICKED_PARAMS,
    CheckpointError,
    Estimate,
    SystemError_,
    get_system,
    register_system,
)

from .system import ItoCmaes, one_blas_thread

MODEL = "proposed"  # the system it builds on: its config name, and its registered name
STEPS_FILE = "steps.json"


@register_system("proposed_ito")
class ProposedIto(ItoCmaes):
    """CMA-ES from the proposed model's estimate, step sizes from its validation error."""

    name = "proposed_ito"
    controls = "any"
    trainable = True  # it "trains" by reading the proposed model's checkpoint and its validation error
    needs = (MODEL,)

    @dataclass
    class Config(ItoCmaes.Config):
        renders: int = 64  # per example, the model's answer included
        select: str = "best"  # the lowest distance: the model's answer stays unless a candidate beats it
        valid_examples: int = 16  # per validation task, for the step sizes
        sigma_min: float = 0.02  # the step sizes' range, in normalised units
        sigma_max: float = 0.5

        def validate(self, where: str) -> None:
            super().validate(where)
            if self.valid_examples < 1:
                raise ValueError(f"{where}.valid_examples: must be at least 1, got {self.valid_examples}")
            if not 0 < self.sigma_min <= self.sigma_max <= 1:
                raise ValueError(f"{where}: need 0 < sigma_min <= sigma_max <= 1, got {self.sigma_min}, "
                                 f"{self.sigma_max}")
            if self.prior != "sample" or self.encoder_checkpoint:
                raise ValueError(f"{where}: the search starts at the model's answer: prior and encoder_checkpoint "
                                 "are ito_cmaes's settings, not this system's")

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        self.model = None  # the proposed system, once fitted or loaded
        self.model_dir: Path | None = None
        self.steps: dict[str, list[float]] = {}  # effect name -> step size per parameter
        self.valid_error: dict[str, list[float]] = {}  # effect name -> RMS validation error per parameter

    # --- training: the model's checkpoint and its validation error --------------------------------------------
    def _load_model(self, path: Path) -> None:
        path = Path(path)
        if not path.exists():
            raise CheckpointError(f"{self.name}: the {MODEL} checkpoint {path} does not exist")
        model = get_system(MODEL, {}, sample_rate=self.sample_rate, device=self.device)
        model.load(path)
        self.model, self.model_dir = model, path

    def fit(self, tasks, ctx) -> None:
        path = ctx.dependencies.get(MODEL)
        if path is None:
            raise SystemError_(f"{self.name}: needs the checkpoint of {MODEL!r}, trained with the same seed (a run "
                               "trains it first; got none)")
        self._load_model(path)
        errors: dict[str, list[np.ndarray]] = {}
        for t in ctx.valid_tasks:  # the validation split only: its true settings are the model's error there
            if t.split != "valid":
                raise SystemError_(f"{self.name}: step sizes are read from validation tasks only, got {t.id}")
            if t.effect.n_params == 0 or t.effect.name not in self.model.effects:
                continue
            exs = t.examples(self.cfg.valid_examples, progress=False)
            p = self.model.predict(t.effect, np.stack([e.input for e in exs]), np.stack([e.reference for e in exs]))
            errors.setdefault(t.effect.name, []).append(p - np.stack([e.true_params01 for e in exs]))
        c = self.cfg
        for name, errs in errors.items():
            rms = np.sqrt((np.concatenate(errs) ** 2).mean(axis=0))
            self.valid_error[name] = [float(v) for v in rms]
            self.steps[name] = [float(v) for v in np.clip(rms, c.sigma_min, c.sigma_max)]

    def save(self, path: Path) -> None:
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        if self.model_dir is None:
            raise SystemError_(f"{self.name}: nothing to save before fit or load")
        shutil.copytree(self.model_dir, path / MODEL, dirs_exist_ok=True)
        (path / STEPS_FILE).write_text(json.dumps({"steps": self.steps, "valid_error": self.valid_error}, indent=1))

    def load(self, path: Path) -> None:
        path = Path(path)
        if not (path / STEPS_FILE).is_file():
            raise CheckpointError(f"{self.name}: {path} is not a checkpoint of {self.name} (no {STEPS_FILE})")
        meta = json.loads((path / STEPS_FILE).read_text())
        self._load_model(path / MODEL)
        self.steps, self.valid_error = meta["steps"], meta.get("valid_error", {})

    def budget(self) -> dict:
        """The proposed model's training (this system adds no training of its own, only validation passes)."""
        return self.model.budget() if self.model is not None else super().budget()

    @classmethod
    def budget_overrides(cls, settings, *, n_effects, train_examples=None, train_renders=None):
        """Nothing to set: its training is the proposed model's, which ``run.budget`` matches."""
        return {}

    def step_size(self, effect: Effect) -> np.ndarray:
        """The step size per parameter for ``effect``: its validation error, else ``sigma0`` (no validation data)."""
        s = self.steps.get(effect.name)
        return np.asarray(s, dtype=np.float64) if s and len(s) == effect.n_params else np.full(effect.n_params,
                                                                                                self.cfg.sigma0)

    # --- answers ------------------------------------------------------------------------------------------------
    def match(self, input, reference, effect):
        return self.match_batch(np.asarray(input)[None], np.asarray(reference)[None], effect)[0]

    def match_batch(self, inputs, references, effect):
        if self.model is None:
            raise SystemError_(f"{self.name}: not fitted or loaded (it needs the {MODEL} model's checkpoint)")
        x = np.asarray(inputs, dtype=np.float32)
        r = np.asarray(references, dtype=np.float32)
        with one_blas_thread():
            if effect.n_params == 0:
                return self._refine_auto(x, r)
            t0 = time.perf_counter()
            starts = self.model.predict(effect, x, r)  # the model's own answer (hedged, as it answers)
            share = (time.perf_counter() - t0) / max(1, len(x))
            return [self._refine(xi, ri, effect, s, self.cfg.renders, share) for xi, ri, s in zip(x, r, starts,
                                                                                                  strict=True)]

    def _refine(self, x: np.ndarray, reference: np.ndarray, effect: Effect, start: np.ndarray, renders: int,
                spent: float = 0.0) -> Estimate:
        """CMA-ES from ``start`` with the effect's step sizes, for ``renders`` renders (``start``'s included)."""
        t0, c0 = time.perf_counter() - spent, time.process_time()
        P = effect.n_params
        start = np.clip(np.asarray(start, dtype=np.float64), 0.0, 1.0)
        return self._search(effect, x, reference, start[None], np.zeros(P), np.ones(P), self.step_size(effect),
                            renders, self._seed(x, reference), self.cfg.select, t0, c0)

    def _refine_auto(self, x: np.ndarray, r: np.ndarray) -> list[Estimate]:
        """Hidden processing: the auto rule's pick, its settings refined with the rest of the budget."""
        t0 = time.perf_counter()
        picks, _ = self.model.match_auto(x, r)
        share = (time.perf_counter() - t0) / max(1, len(x))
        out = []
        for xi, ri, est in zip(x, r, picks, strict=True):
            used = int(est.info["renders"])
            pick = est.info.get(PICKED)
            info = {PICKED: pick}
            if PICKED_PARAMS not in est.info or self.cfg.renders - used < 1:  # the input itself, or no budget left
                out.append(Estimate(None, est.output, {**info, "renders": used, "seconds": share}))
                continue
            refined = self._refine(xi, ri, get_effect(pick), np.asarray(est.info[PICKED_PARAMS]),
                                   self.cfg.renders - used, share)
            info[PICKED_PARAMS] = [round(float(v), 5) for v in refined.params01]
            cost = {k: v for k, v in refined.info.items()}
            cost["renders"] = cost["renders"] + used
            out.append(Estimate(None, refined.output, {**info, **cost}))
        return out
