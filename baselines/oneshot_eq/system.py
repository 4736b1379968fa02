"""The harness-facing one-shot EQ system: ``controls = {"peq4"}``, trained on the ``peq4`` training tasks.

Each of ``peq4``'s 12 normalised parameters is classified into ``n_classes`` values (class ``k`` is ``k / (D-1)``);
the prediction (argmax, expected value or median of each softmax) is an ordinary ``params01`` estimate, rendered
with the harness's pedalboard ``peq4``. For any other effect the system still returns its ``peq4`` output, with
``params01 = None`` (parameter metrics are then not applicable).
"""

from __future__ import annotations

import dataclasses
import math
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from baselines.oneshot_eq.model import DECODINGS, OneShotEQNet, decode, soft_targets
from bench.effects import Effect, default_workers, get_effect
from bench.systems import CheckpointError, Estimate, FitContext, System, register_system
from models.nn import (
    autocast,
    load_checkpoint,
    load_state,
    save_checkpoint,
    torch_device,
    torch_threads,
    train_loop,
)

NAME = "oneshot_eq"
EFFECT = "peq4"
LOSSES = ("ce", "expected_l1", "ce+l1")
# config keys that shape the network or its features: a checkpoint only loads into the same values
ARCHITECTURE = ("n_classes", "linear_mel", "n_mels", "window_ms", "hop_ms", "channels", "conv_layers", "kernel",
                "time_stride", "compare_kernel", "batch_norm", "hidden")


class PoolBatches:
    """Endless minibatches drawn uniformly at random (seeded) from tensors that already sit on the device."""

    def __init__(self, tensors: dict[str, torch.Tensor], batch_size: int, seed: int):
        self.tensors, self.batch_size, self.seed = tensors, batch_size, seed
        self.n = len(next(iter(tensors.values())))

    def __iter__(self):
        g = torch.Generator().manual_seed(self.seed)
        while True:
            idx = torch.randint(0, self.n, (self.batch_size,), generator=g)
            yield {k: v[idx.to(v.device)] for k, v in self.tensors.items()}


@register_system(NAME)
class OneShotEQ(System):
    """Siamese CNN over mel spectrograms -> per-parameter softmax over discrete ``peq4`` settings."""

    name = NAME
    controls = {EFFECT}
    trainable = True

    @dataclass
    class Config:
        # discretisation and decoding
        n_classes: int = 21  # D, the paper's number of discrete values per parameter
        decode: str = "expected"  # argmax | expected | median of each parameter's softmax
        # features: the paper's dB log-mel, or the Sheng and Fazekas-style linear mel (linear_mel = true)
        linear_mel: bool = False
        n_mels: int = 128
        window_ms: float = 20.0
        hop_ms: float = 3.0
        # network
        channels: int = 16
        conv_layers: int = 3
        kernel: int = 3
        time_stride: int = 3
        compare_kernel: int = 3
        compare_init: str = "difference"  # difference (reference minus input) | random (PyTorch's default)
        batch_norm: bool = False  # batch normalisation after each convolution (input and reference share batches)
        hidden: int = 256
        dropout: float = 0.1
        # training
        loss: str = "ce"  # ce (the paper's) | expected_l1 (L1 of the expected value) | ce+l1
        l1_weight: float = 1.0  # weight of the L1 term in ce+l1
        label_sigma: float = 0.0  # 0: one-hot targets; > 0: Gaussian soft targets, width in classes
        steps: int = 400
        batch_size: int = 16
        lr: float = 1e-3
        weight_decay: float = 0.0
        clip: float = 1.0
        valid_examples: int = 16  # per validation task
        validate_every: int = 0  # steps; 0 = once, at the end
        loader_workers: int = -1  # processes rendering training examples; -1 = the run's workers
        train_examples: int = 0  # 0: fresh examples every step; > 0: a pool rendered once, batches drawn from it
        eval_batch: int = 64
        torch_threads: int = 0  # intra-op threads while fitting and matching (restored after); 0: torch's default

        def validate(self, where: str) -> None:
            if self.decode not in DECODINGS:
                raise ValueError(f"{where}.decode: {self.decode!r}; valid: {', '.join(DECODINGS)}")
            if self.compare_init not in ("difference", "random"):
                raise ValueError(f"{where}.compare_init: {self.compare_init!r}; valid: difference, random")
            if self.loss not in LOSSES:
                raise ValueError(f"{where}.loss: {self.loss!r}; valid: {', '.join(LOSSES)}")
            for k in ("n_classes",):
                if getattr(self, k) < 2:
                    raise ValueError(f"{where}.{k}: must be at least 2, got {getattr(self, k)}")
            for k in ("train_examples", "torch_threads", "validate_every"):
                if getattr(self, k) < 0:
                    raise ValueError(f"{where}.{k}: must be >= 0, got {getattr(self, k)}")
            for k in ("n_mels", "channels", "conv_layers", "kernel", "time_stride", "compare_kernel", "hidden",
                      "steps", "batch_size", "eval_batch"):
                if getattr(self, k) < 1:
                    raise ValueError(f"{where}.{k}: must be positive, got {getattr(self, k)}")
            if self.kernel % 2 == 0 or self.compare_kernel % 2 == 0:
                raise ValueError(f"{where}: kernel and compare_kernel must be odd (same-size padding)")
            if not (self.window_ms > 0 and self.hop_ms > 0 and self.lr > 0):
                raise ValueError(f"{where}: window_ms, hop_ms and lr must be positive")
            if not 0.0 <= self.dropout < 1.0:
                raise ValueError(f"{where}.dropout: must be in [0, 1), got {self.dropout}")

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        self.effect = get_effect(EFFECT)
        self.dev = torch_device(self.device)
        self.model = self._build().to(self.dev)
        self.trained = False
        self.train_info: dict = {}

    def _build(self) -> OneShotEQNet:
        c = self.cfg
        return OneShotEQNet(sample_rate=self.sample_rate, n_params=self.effect.n_params, n_classes=c.n_classes,
                            n_mels=c.n_mels, window_ms=c.window_ms, hop_ms=c.hop_ms, db=not c.linear_mel,
                            channels=c.channels, conv_layers=c.conv_layers, kernel=c.kernel,
                            time_stride=c.time_stride, compare_kernel=c.compare_kernel, hidden=c.hidden,
                            dropout=c.dropout, batch_norm=c.batch_norm, compare_init=c.compare_init)

    # --- data ---------------------------------------------------------------------------------------------
    def peq4_tasks(self, tasks: list, split: str) -> list:
        """The tasks whose effect is peq4; if there are none, peq4 tasks over the same corpora."""
        from bench.tasks import Task

        own = [t for t in tasks if t.effect.name == EFFECT]
        if own or not tasks:
            return own
        by_corpus = {}
        for t in tasks:
            by_corpus.setdefault(t.corpus.label, t)
        return [Task(t.corpus, self.effect, split, segment_samples=t.segment_samples, seed=t.seed,
                     effect_set=t.effect_set, corpus_set=t.corpus_set) for t in by_corpus.values()]

    # --- training -----------------------------------------------------------------------------------------
    def loss(self, logits: torch.Tensor, params01: torch.Tensor) -> dict[str, torch.Tensor]:
        c = self.cfg
        logits = logits.float()
        out: dict[str, torch.Tensor] = {}
        if c.loss in ("ce", "ce+l1"):
            target = soft_targets(params01, c.n_classes, c.label_sigma)
            out["ce"] = -(target * torch.log_softmax(logits, -1)).sum(-1).mean()
        if c.loss in ("expected_l1", "ce+l1"):
            out["l1"] = (decode(logits, "expected") - params01).abs().mean()
        out["loss"] = (out.get("ce", 0.0) + (c.l1_weight if c.loss == "ce+l1" else 1.0) * out.get("l1", 0.0))
        with torch.no_grad():
            out["mae"] = (decode(logits.detach(), c.decode) - params01).abs().mean()
        return out

    def fit(self, tasks: list, ctx: FitContext) -> None:
        with torch_threads(self.cfg.torch_threads):
            self._fit(tasks, ctx)

    def _fit(self, tasks: list, ctx: FitContext) -> None:
        from bench.torchdata import loader

        c = self.cfg
        train = self.peq4_tasks(tasks, "train")
        if not train:
            raise ValueError(f"{NAME}: no training tasks to build peq4 examples from")
        valid = self.peq4_tasks(ctx.valid_tasks, "valid") if c.valid_examples > 0 else []
        torch.manual_seed(ctx.seed)
        self.model = self._build().to(self.dev)
        workers = c.loader_workers if c.loader_workers >= 0 else max(0, ctx.workers or default_workers())
        t0 = time.perf_counter()
        if c.train_examples:  # render a fixed pool once (in worker processes), then draw minibatches from it
            parts = list(loader(train, c.train_examples, 64, workers=workers, seed=ctx.seed))
            pool = {k: torch.cat([b[k] for b in parts]).to(self.dev, non_blocking=True)
                    for k in ("input", "reference", "params")}
            batches = PoolBatches(pool, c.batch_size, ctx.seed)
        else:  # a fresh example for every slot of every step, rendered by the loader's workers
            batches = loader(train, c.steps * c.batch_size, c.batch_size, workers=workers, seed=ctx.seed)
        pool_seconds = time.perf_counter() - t0  # the pool's rendering (0 with fresh examples)
        valid_sets = []
        for t in valid:
            exs = t.examples(c.valid_examples)
            valid_sets.append((np.stack([e.input for e in exs]), np.stack([e.reference for e in exs]),
                               np.stack([e.true_params01 for e in exs])))

        def step(batch: dict) -> dict:
            x = batch["input"].to(self.dev, non_blocking=True)
            r = batch["reference"].to(self.dev, non_blocking=True)
            p = batch["params"].to(self.dev, non_blocking=True)
            with autocast(self.dev):
                logits = self.model(x, r)
            return self.loss(logits, p)

        def validate() -> float:
            mae = float(np.mean([np.abs(self.predict(x, r) - p).mean() for x, r, p in valid_sets]))
            self.model.train()
            return mae

        self.model.train()
        result = train_loop(name=NAME, params=self.model.parameters(), step=step, batches=batches, steps=c.steps,
                            lr=c.lr, ctx=ctx, clip=c.clip, weight_decay=c.weight_decay,
                            validate=validate if valid_sets else None,
                            validate_every=(c.validate_every or c.steps) if valid_sets else 0)
        self.model.eval()
        self.trained = True
        self.train_info = {"steps": result.steps, "seconds": round(time.perf_counter() - t0, 3),
                           "loop_seconds": round(result.seconds, 3), "examples": result.examples,
                           "examples_per_second": round(result.examples_per_second, 2),
                           "train_examples": c.train_examples, "render_seconds": round(pool_seconds, 3),
                           "loader_workers": workers, "device": str(self.dev), **result.last}

    @classmethod
    def budget_overrides(cls, settings, *, n_effects, train_examples=None, train_renders=None):
        """Examples: ``steps`` x ``batch_size``; no renders in its loss, so no render budget."""
        if train_examples is not None:
            return {"steps": max(1, math.ceil(train_examples / settings["batch_size"]))}
        return None

    def budget(self) -> dict:
        """A supervised classifier: steps and examples seen; no effect renders in its loss."""
        info = self.train_info
        return {**super().budget(), "steps": info.get("steps", float("nan")),
                "train_examples": info.get("examples", float("nan")), "train_renders": 0}

    # --- checkpoints --------------------------------------------------------------------------------------
    def save(self, path: Path) -> None:
        state = {k: v.detach().cpu() for k, v in self.model.state_dict().items()}
        save_checkpoint(path, NAME, state, self.config_dict(),
                        {"sample_rate": self.sample_rate, "effect": EFFECT, "param_names": self.effect.param_names,
                         "train": self.train_info})

    def load(self, path: Path) -> None:
        state, meta = load_checkpoint(path, NAME, map_location=self.dev)
        if meta.get("sample_rate") != self.sample_rate:
            raise CheckpointError(f"{NAME}: checkpoint {path} was trained at {meta.get('sample_rate')} Hz, this run "
                                  f"works at {self.sample_rate} Hz")
        saved = meta.get("config", {})
        mine = dataclasses.asdict(self.cfg)
        differ = {k: (saved.get(k), mine[k]) for k in ARCHITECTURE if saved.get(k) != mine[k]}
        if differ:
            what = ", ".join(f"{k}={a!r} (config has {b!r})" for k, (a, b) in differ.items())
            raise CheckpointError(f"{NAME}: checkpoint {path} was trained with {what}; set the same values in "
                                  f"[systems.{NAME}] to load it")
        self.model = self._build().to(self.dev)
        load_state(self.model, state, NAME, path)
        self.model.eval()
        self.trained = True
        self.train_info = meta.get("train", {})

    # --- inference ----------------------------------------------------------------------------------------
    @torch.no_grad()
    def logits(self, inputs: np.ndarray, references: np.ndarray) -> torch.Tensor:
        """``(B, n)`` inputs and ``(B, m)`` references -> logits ``(B, P, D)`` on the model's device."""
        self.model.eval()
        x = torch.as_tensor(np.asarray(inputs, dtype=np.float32))
        r = torch.as_tensor(np.asarray(references, dtype=np.float32))
        out = []
        for i in range(0, len(x), self.cfg.eval_batch):
            xb = x[i:i + self.cfg.eval_batch].to(self.dev, non_blocking=True)
            rb = r[i:i + self.cfg.eval_batch].to(self.dev, non_blocking=True)
            with autocast(self.dev):
                out.append(self.model(xb, rb).float())
        return torch.cat(out)

    def predict(self, inputs: np.ndarray, references: np.ndarray) -> np.ndarray:
        """Normalised peq4 settings ``(B, 12)`` for batches of input and reference clips."""
        with torch_threads(self.cfg.torch_threads):
            return decode(self.logits(inputs, references), self.cfg.decode).cpu().numpy().astype(np.float32)

    def match_batch(self, inputs, references, effect: Effect) -> list[Estimate]:
        inputs = np.asarray(inputs, dtype=np.float32)
        t0 = time.perf_counter()
        params = self.predict(inputs, references)
        outputs = self.effect.process(inputs, self.sample_rate, params, workers=default_workers())
        per = (time.perf_counter() - t0) / max(1, len(inputs))
        controls = effect.name == EFFECT
        return [Estimate(p if controls else None, y, {"seconds": per})
                for p, y in zip(params, outputs, strict=True)]

    def match(self, input, reference, effect):
        return self.match_batch(np.asarray(input)[None], np.asarray(reference)[None], effect)[0]

    @classmethod
    def search_space(cls, trial) -> dict:
        return {
            "lr": trial.suggest_float("lr", 1e-4, 3e-3, log=True),
            "channels": trial.suggest_categorical("channels", [8, 16, 32]),
            "hidden": trial.suggest_categorical("hidden", [128, 256, 512]),
            "dropout": trial.suggest_float("dropout", 0.0, 0.3),
            "loss": trial.suggest_categorical("loss", list(LOSSES)),
            "label_sigma": trial.suggest_float("label_sigma", 0.0, 2.0),
            "decode": trial.suggest_categorical("decode", list(DECODINGS)),
        }
