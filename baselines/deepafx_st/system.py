"""DeepAFx-ST in the harness: ``deepafx_st_autodiff`` and ``deepafx_st_spsa``.

Both predict the 23 normalised settings of the harness's ``peq_comp`` (six-band EQ + compressor + make-up gain)
from an input and a reference, and both are evaluated the same way as every other system: the output is
pedalboard's ``peq_comp`` rendered on the input with the predicted settings. They differ in how training gets
gradients through the effect:

* ``deepafx_st_autodiff``: end to end through :class:`~baselines.deepafx_st.dsp.PEQComp`, a torch mirror of
  ``peq_comp`` (same bands, parameters, ranges and JUCE formulas; residual mismatch in docs/baselines.md);
* ``deepafx_st_spsa``: through pedalboard's ``peq_comp`` itself, with gradients estimated by SPSA (the shared
  :func:`models.proposed.spsa.spsa_effect`).

Training is self-supervised as in the paper: segment A of a source is the input, segment B of the same source
processed with random settings is the reference, A processed with the same settings is the target; the loss is a
multi-resolution STFT loss plus a weighted L1 in the time domain. Training uses the ``peq_comp`` training tasks
(or, when the run trains none, ``peq_comp`` tasks built on the same corpora).

``controls = {"peq_comp"}``. The EQ's ranges do not cover ``peq4``'s (its low shelf reaches 300 Hz and its high
shelf 2 kHz, ours 200 Hz and 4 kHz), so ``peq4`` is declared not applicable rather than mapped: for it, and for
every other effect, ``match`` returns the EQ + compressor output with ``params01 = None``.
"""

from __future__ import annotations

import math
import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch

from bench.effects import default_workers, get_effect
from bench.systems import CheckpointError, Estimate, FitContext, System, SystemError_, register_system
from bench.tasks import Task
from models.nn import torch_threads

EFFECT = "peq_comp"


@dataclass
class DeepAFxConfig:
    # encoder: STFT magnitude -> EfficientNet-style CNN (width/depth scale B0's stage table; stages keeps the first N)
    n_fft: int = 1024
    hop: int = 256
    spec_power: float = 0.3  # |X| ** power (0 = log)
    width: float = 1.0
    depth: float = 1.0
    stages: int = 7
    embed_dim: int = 1024
    hidden: int = 256  # controller MLP
    # training
    steps: int = 10000
    batch_size: int = 6
    lr: float = 1e-4
    weight_decay: float = 0.0
    clip: float = 4.0
    l1_weight: float = 100.0  # loss = MR-STFT + l1_weight * L1 (time domain)
    loss_fft_sizes: list = field(default_factory=lambda: [256, 1024, 4096])
    train_examples: int = 0  # 0: fresh examples every step (DataLoader workers); > 0: a fixed pool, reshuffled
    valid_examples: int = 8  # per validation task; scored with pedalboard's peq_comp, as at evaluation
    validate_every: int = 0  # steps; 0 = only at the end
    log_every: int = 10
    eval_batch: int = 16
    torch_threads: int = 0  # intra-op threads while fitting and matching (restored after); 0 = torch's default

    def validate(self, where: str) -> None:
        checks = {
            "n_fft": self.n_fft >= 64, "hop": 0 < self.hop <= self.n_fft, "spec_power": self.spec_power >= 0,
            "width": self.width > 0, "depth": self.depth > 0, "stages": 1 <= self.stages <= 7,
            "embed_dim": self.embed_dim >= 1, "hidden": self.hidden >= 1, "steps": self.steps >= 1,
            "batch_size": self.batch_size >= 1, "lr": self.lr > 0, "weight_decay": self.weight_decay >= 0,
            "clip": self.clip >= 0, "l1_weight": self.l1_weight >= 0,
            "loss_fft_sizes": bool(self.loss_fft_sizes) and all(isinstance(n, int) and n >= 16
                                                                for n in self.loss_fft_sizes),
            "train_examples": self.train_examples >= 0, "valid_examples": self.valid_examples >= 0,
            "validate_every": self.validate_every >= 0, "log_every": self.log_every >= 1,
            "eval_batch": self.eval_batch >= 1, "torch_threads": self.torch_threads >= 0,
        }
        bad = [k for k, ok in checks.items() if not ok]
        if bad:
            raise ValueError(f"{where}: invalid value(s) for {bad}: " + ", ".join(f"{k}={getattr(self, k)!r}"
                                                                                  for k in bad))


ARCH_KEYS = ("n_fft", "hop", "spec_power", "width", "depth", "stages", "embed_dim", "hidden")


class DeepAFxSTBase(System):
    controls = {EFFECT}
    trainable = True
    Config = DeepAFxConfig

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        from models.nn import torch_device

        self.effect = get_effect(EFFECT)
        self.torch_device = torch_device(self.device)
        self.model = self._build_model()
        self.train_stats: dict = {}

    def _build_model(self):
        from baselines.deepafx_st.model import DeepAFxST

        c = self.cfg
        return DeepAFxST(self.effect.n_params, **{k: getattr(c, k) for k in ARCH_KEYS}).to(self.torch_device)

    # --- data ---------------------------------------------------------------------------------------------
    @staticmethod
    def peq_comp_tasks(tasks: list, split: str) -> list[Task]:
        """The ``peq_comp`` tasks among ``tasks``; if there are none, ``peq_comp`` tasks on the same corpora."""
        own = [t for t in tasks if t.effect.name == EFFECT]
        if own or not tasks:
            return own
        out, seen = [], set()
        for t in tasks:
            if t.corpus.label in seen:
                continue
            seen.add(t.corpus.label)
            out.append(Task(t.corpus, get_effect(EFFECT), split, segment_samples=t.segment_samples, seed=t.seed,
                            effect_set="seen", corpus_set=t.corpus_set))
        return out

    def _batches(self, tasks: list[Task], ctx: FitContext):
        from bench.torchdata import loader

        c = self.cfg
        workers = int(ctx.workers) if ctx.workers and ctx.workers > 1 else 0  # 1 worker: render in-process
        if c.train_examples == 0:  # fresh examples each step, rendered by DataLoader workers
            return loader(tasks, c.steps * c.batch_size, c.batch_size, workers=workers, seed=ctx.seed)
        pool = list(loader(tasks, c.train_examples, c.batch_size, workers=workers, seed=ctx.seed))
        keys = ("input", "reference", "target")
        data = {k: torch.cat([b[k] for b in pool]) for k in keys}
        return _Reshuffled(data, c.batch_size, ctx.seed)

    # --- training -----------------------------------------------------------------------------------------
    def _loss_fn(self):
        import auraloss

        sizes = list(self.cfg.loss_fft_sizes)
        mr = auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=sizes, hop_sizes=[n // 4 for n in sizes],
                                                   win_lengths=sizes).to(self.torch_device)
        w = float(self.cfg.l1_weight)

        def loss(y: torch.Tensor, target: torch.Tensor) -> dict[str, torch.Tensor]:
            m = mr(y[:, None].float(), target[:, None].float())
            l1 = (y.float() - target.float()).abs().mean()
            return {"loss": m + w * l1, "mrstft": m.detach(), "l1": l1.detach()}

        return loss

    def _render(self, x: torch.Tensor, params01: torch.Tensor, ctx_state: dict) -> torch.Tensor:
        """The effect in the training graph: differentiable torch DSP or SPSA through pedalboard."""
        raise NotImplementedError

    def fit(self, tasks: list, ctx: FitContext) -> None:
        with torch_threads(self.cfg.torch_threads):
            self._fit(tasks, ctx)

    def _fit(self, tasks: list, ctx: FitContext) -> None:
        from models.nn import autocast, train_loop

        train = self.peq_comp_tasks(tasks, "train")
        if not train:
            raise SystemError_(f"{self.name}: no training tasks (it trains on {EFFECT} tasks of the seen corpora)")
        valid = self.peq_comp_tasks(ctx.valid_tasks, "valid")
        torch.manual_seed(ctx.seed)
        self.model = self._build_model()  # initialised from the run's seed
        dev = self.torch_device
        c = self.cfg
        loss_fn = self._loss_fn()
        state = self._train_state(ctx)
        self.model.train()

        def step(batch: dict) -> dict[str, torch.Tensor]:
            x = batch["input"].to(dev, non_blocking=True)
            r = batch["reference"].to(dev, non_blocking=True)
            t = batch["target"].to(dev, non_blocking=True)
            with autocast(dev):
                p = self.model(x, r)
            with torch.autocast(device_type=dev.type, enabled=False):
                y = self._render(x, p.float(), state)
                return loss_fn(y, t)

        validate = None
        if valid and c.valid_examples:
            examples = [e for t in valid for e in t.examples(c.valid_examples)]
            validate = lambda: self._validate(examples)  # noqa: E731
        batches = self._batches(train, ctx)
        try:
            res = train_loop(name=self.name, params=self.model.parameters(), step=step, batches=batches,
                             steps=c.steps, lr=c.lr, ctx=ctx, clip=c.clip, log_every=c.log_every,
                             validate=validate, validate_every=c.validate_every or (c.steps if validate else 0),
                             weight_decay=c.weight_decay)
        finally:
            self._close_train_state(state)
        self.model.eval()
        self.train_stats = {"steps": res.steps, "seconds": res.seconds, "examples": res.examples,
                            "examples_per_second": res.examples_per_second, **res.last}

    @classmethod
    def budget_overrides(cls, settings, *, n_effects, train_examples=None, train_renders=None):
        """Examples: ``steps`` x ``batch_size`` examples are seen. The autodiff variant renders nothing with
        pedalboard while training, so it cannot be matched to a render budget."""
        if train_examples is not None:
            return {"steps": max(1, math.ceil(train_examples / settings["batch_size"]))}
        return None

    def budget(self) -> dict:
        """Steps and examples seen from the training loop; the differentiable EQ + compressor renders nothing
        with pedalboard while training (the SPSA variant counts its renders)."""
        st = self.train_stats
        return {**super().budget(), "steps": st.get("steps", float("nan")),
                "train_examples": st.get("examples", float("nan")), "train_renders": 0}

    def _train_state(self, ctx: FitContext) -> dict:
        return {}

    def _close_train_state(self, state: dict) -> None:
        pass

    def _validate(self, examples: list) -> float:
        """Mean MR-STFT (the harness metric's settings) of pedalboard renders with the predicted settings."""
        import auraloss

        was = self.model.training
        self.model.eval()
        try:
            est = self.match_batch(np.stack([e.input for e in examples]), np.stack([e.reference for e in examples]),
                                   self.effect)
        finally:
            self.model.train(was)
        loss = auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=[256, 1024, 4096], hop_sizes=[64, 256, 1024],
                                                     win_lengths=[256, 1024, 4096])
        with torch.no_grad():
            vals = [float(loss(torch.from_numpy(e.output)[None, None], torch.from_numpy(x.target)[None, None]))
                    for e, x in zip(est, examples, strict=True)]
        return float(np.mean(vals))

    # --- inference ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def predict(self, inputs: np.ndarray, references: np.ndarray) -> np.ndarray:
        """Normalised ``peq_comp`` settings ``(B, 23)`` for a batch of inputs and references ``(B, n)``."""
        from models.nn import autocast

        self.model.eval()
        out = []
        dev = self.torch_device
        for i in range(0, len(inputs), self.cfg.eval_batch):
            x = torch.as_tensor(np.asarray(inputs[i: i + self.cfg.eval_batch]), dtype=torch.float32).to(dev)
            r = torch.as_tensor(np.asarray(references[i: i + self.cfg.eval_batch]), dtype=torch.float32).to(dev)
            with autocast(dev):
                out.append(self.model(x, r).float())
        p = torch.cat(out).cpu().numpy().astype(np.float32)
        if not np.all(np.isfinite(p)):
            raise SystemError_(f"{self.name}: the controller produced non-finite settings")
        return p

    def match_batch(self, inputs, references, effect):
        inputs = np.asarray(inputs, dtype=np.float32)
        t0 = time.perf_counter()
        with torch_threads(self.cfg.torch_threads):
            params = self.predict(inputs, np.asarray(references, dtype=np.float32))
        out = self.effect.process(inputs, self.sample_rate, params, workers=default_workers())
        sec = (time.perf_counter() - t0) / max(1, len(inputs))
        own = self.can_control(effect)
        return [Estimate(p if own else None, y, {"seconds": sec}) for p, y in zip(params, out, strict=True)]

    def match(self, input, reference, effect):
        return self.match_batch(np.asarray(input)[None], np.asarray(reference)[None], effect)[0]

    # --- persistence --------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        from models.nn import save_checkpoint

        save_checkpoint(Path(path), self.name, self.model.state_dict(), self.config_dict(),
                        {"sample_rate": self.sample_rate, "effect": EFFECT, "param_names": self.effect.param_names,
                         "train": self.train_stats})

    def load(self, path: Path) -> None:
        from models.nn import load_checkpoint, load_state

        state, meta = load_checkpoint(Path(path), self.name, map_location=self.torch_device)
        if meta.get("param_names") != self.effect.param_names:
            raise CheckpointError(f"{self.name}: {path} predicts {meta.get('effect')!r} settings "
                                  f"{meta.get('param_names')}, not {EFFECT}'s {self.effect.param_names}")
        load_state(self.model, state, self.name, Path(path))
        self.model.eval()
        self.train_stats = dict(meta.get("train", {}))

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            "width": trial.suggest_categorical("width", [0.25, 0.5, 1.0]),
            "depth": trial.suggest_categorical("depth", [0.25, 0.5, 1.0]),
            "embed_dim": trial.suggest_categorical("embed_dim", [128, 256, 1024]),
            "hidden": trial.suggest_categorical("hidden", [128, 256, 512]),
            "l1_weight": trial.suggest_float("l1_weight", 1.0, 300.0, log=True),
        }


class _Reshuffled:
    """A fixed pool of examples served as batches in a fresh random order each pass (train_loop cycles it)."""

    def __init__(self, data: dict[str, torch.Tensor], batch_size: int, seed: int):
        self.data, self.batch_size = data, batch_size
        self.gen = torch.Generator().manual_seed(seed)
        self.n = len(next(iter(data.values())))

    def __iter__(self):
        order = torch.randperm(self.n, generator=self.gen)
        size = min(self.batch_size, self.n)
        for i in range(0, self.n - size + 1, size):  # whole batches only
            idx = order[i: i + size]
            yield {k: v[idx] for k, v in self.data.items()}


@register_system("deepafx_st_autodiff")
class DeepAFxSTAutodiff(DeepAFxSTBase):
    """DeepAFx-ST trained end to end through a differentiable torch EQ + compressor."""

    name = "deepafx_st_autodiff"

    @dataclass
    class Config(DeepAFxConfig):
        lr: float = 1e-4

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        from baselines.deepafx_st.dsp import PEQComp

        self.dsp = PEQComp(self.sample_rate, self.effect).to(self.torch_device)

    def _render(self, x, params01, state):
        return self.dsp(x, params01)


@register_system("deepafx_st_spsa")
class DeepAFxSTSPSA(DeepAFxSTBase):
    """DeepAFx-ST trained through pedalboard's peq_comp with SPSA gradient estimates (shared estimator)."""

    name = "deepafx_st_spsa"

    @dataclass
    class Config(DeepAFxConfig):
        lr: float = 1e-5  # the paper's SPSA runs used a 10x lower learning rate than autodiff
        spsa_eps: float = 0.0005  # perturbation size in the normalised parameter space
        spsa_k: int = 1  # perturbations averaged per example and step

        def validate(self, where: str) -> None:
            super().validate(where)
            if not 0 < self.spsa_eps < 0.5 or self.spsa_k < 1:
                raise ValueError(f"{where}: spsa_eps must be in (0, 0.5) and spsa_k >= 1, got "
                                 f"{self.spsa_eps}, {self.spsa_k}")

    def _train_state(self, ctx):
        workers = max(1, int(ctx.workers or default_workers()))
        return {"pool": ThreadPoolExecutor(workers), "rng": np.random.default_rng([ctx.seed, 4])}

    def _close_train_state(self, state):
        state["pool"].shutdown(wait=True)

    @classmethod
    def budget_overrides(cls, settings, *, n_effects, train_examples=None, train_renders=None):
        """Renders: each step renders ``batch_size`` x (2 ``spsa_k`` + 1) times."""
        if train_renders is not None:
            per_step = settings["batch_size"] * (2 * settings["spsa_k"] + 1)
            return {"steps": max(1, math.ceil(train_renders / per_step))}
        return super().budget_overrides(settings, n_effects=n_effects, train_examples=train_examples)

    def budget(self) -> dict:
        c, st = self.cfg, self.train_stats
        # SPSA: per example and step, the forward render and 2 x spsa_k perturbed renders of pedalboard's peq_comp
        renders = st.get("examples", 0) * (2 * c.spsa_k + 1)
        return {**super().budget(), "train_renders": renders}

    def _render(self, x, params01, state):
        from models.proposed.spsa import spsa_effect

        return spsa_effect(params01, x, self.effect, self.sample_rate, eps=self.cfg.spsa_eps, k=self.cfg.spsa_k,
                           pool=state["pool"], rng=state["rng"])

    @classmethod
    def search_space(cls, trial) -> dict:
        space = super().search_space(trial)
        space["spsa_eps"] = trial.suggest_float("spsa_eps", 1e-4, 5e-2, log=True)
        return space

