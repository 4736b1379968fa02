"""Pieces the trained systems share: devices, spectrogram front-ends, checkpoints and one small training loop.

The loop does what every system's training needs and nothing more: device placement, bf16 autocast on CUDA,
gradient clipping, a NaN/Inf guard that stops with the step number, progress, MLflow metrics, and optional
validation with pruning (Optuna sweeps pass ``ctx.report``).
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch import nn

from bench.systems import CheckpointError, SystemError_


@contextmanager
def torch_threads(n: int):
    """Run with ``n`` torch intra-op threads (0: leave torch's setting), then restore. A small net gains ~1.5x
    from a second thread on an idle 2-core CPU, but loses a lot when another process holds that core (OpenMP
    threads wait for it): systems expose it as config (``torch_threads``)."""
    old = torch.get_num_threads()
    if n > 0:
        torch.set_num_threads(n)
    try:
        yield
    finally:
        if n > 0:
            torch.set_num_threads(old)


class DivergedError(SystemError_):
    """Training produced a NaN/Inf loss; the message names the system and the step."""


def torch_device(device: str) -> torch.device:
    """The torch device of the run's device string (decided once, by :func:`bench.plan.resolve_device`)."""
    if device.startswith("cuda") and not torch.cuda.is_available():
        raise SystemError_(f"device {device!r} requested but torch sees no CUDA device")
    return torch.device(device)


def autocast(device: torch.device, enabled: bool = True):
    """bf16 autocast on CUDA (where it holds accuracy for these small nets); a no-op on the CPU."""
    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=enabled and device.type == "cuda")


# --- front-ends ---------------------------------------------------------------------------------------------


class Spectrogram(nn.Module):
    """STFT magnitude, compressed as ``|X| ** power`` (or log when ``power == 0``): (B, n) -> (B, 1, F, T)."""

    def __init__(self, n_fft: int = 1024, hop: int = 256, win: int | None = None, power: float = 0.3):
        super().__init__()
        self.n_fft, self.hop, self.win, self.power = n_fft, hop, win or n_fft, power
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        X = torch.stft(x.float(), self.n_fft, self.hop, self.win, self.window, center=True, return_complex=True)
        mag = X.abs()
        mag = torch.log(mag + 1e-5) if self.power == 0 else (mag + 1e-8) ** self.power
        return mag[:, None]


class LogMel(nn.Module):
    """Mel spectrogram (librosa's filterbank) in dB or linear magnitude: (B, n) -> (B, 1, mels, T)."""

    def __init__(self, sample_rate: int, n_fft: int, hop: int, n_mels: int = 128, db: bool = True,
                 win: int | None = None):
        super().__init__()
        import librosa

        fb = librosa.filters.mel(sr=sample_rate, n_fft=n_fft, n_mels=n_mels, fmin=0.0, fmax=sample_rate / 2)
        self.register_buffer("fb", torch.from_numpy(fb.astype(np.float32)), persistent=False)
        self.n_fft, self.hop, self.win, self.db = n_fft, hop, win or n_fft, db
        self.register_buffer("window", torch.hann_window(self.win), persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        X = torch.stft(x.float(), self.n_fft, self.hop, self.win, self.window, center=True, return_complex=True)
        mel = torch.matmul(self.fb, X.abs() ** 2)
        out = 10 * torch.log10(mel + 1e-8) if self.db else mel.sqrt()
        return out[:, None]


# --- checkpoints --------------------------------------------------------------------------------------------


def save_checkpoint(path: Path, system: str, state: dict, config: dict, extra: dict | None = None) -> Path:
    """``path/model.pt`` (tensors only) and ``path/meta.json`` (system name, config, extras)."""
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    torch.save(state, path / "model.pt")
    (path / "meta.json").write_text(json.dumps({"system": system, "config": config, **(extra or {})}, indent=1))
    return path


def load_checkpoint(path: Path, system: str, map_location="cpu") -> tuple[dict, dict]:
    """(state, meta) from :func:`save_checkpoint`; clear errors for a missing or foreign checkpoint."""
    path = Path(path)
    model, meta_path = path / "model.pt", path / "meta.json"
    if not model.is_file() or not meta_path.is_file():
        raise CheckpointError(f"{system}: no checkpoint at {path} (expected model.pt and meta.json)")
    meta = json.loads(meta_path.read_text())
    if meta.get("system") != system:
        raise CheckpointError(f"{system}: {path} is a checkpoint of {meta.get('system')!r}, not {system!r}")
    try:
        state = torch.load(model, map_location=map_location, weights_only=True)
    except Exception as e:
        raise CheckpointError(f"{system}: cannot read {model}: {e}") from e
    return state, meta


def load_state(module: nn.Module, state: dict, system: str, path: Path) -> None:
    try:
        module.load_state_dict(state)
    except RuntimeError as e:
        raise CheckpointError(f"{system}: checkpoint {path} does not fit this model's configuration: {e}") from e


# --- the training loop --------------------------------------------------------------------------------------


@dataclass
class LoopResult:
    steps: int
    seconds: float
    last: dict
    examples: int

    @property
    def examples_per_second(self) -> float:
        return self.examples / max(self.seconds, 1e-9)


def train_loop(
    *,
    name: str,
    params: Iterable[nn.Parameter],
    step: Callable[[dict], dict[str, torch.Tensor]],
    batches: Iterable[dict],
    steps: int,
    lr: float,
    ctx=None,
    clip: float = 1.0,
    log_every: int = 10,
    validate: Callable[[], float] | None = None,
    validate_every: int = 0,
    weight_decay: float = 0.0,
    optimizer: torch.optim.Optimizer | None = None,
) -> LoopResult:
    """Run ``steps`` optimisation steps of ``step(batch) -> {"loss": tensor, ...}`` over ``batches`` (cycled).

    Raises :class:`DivergedError` naming the step on a NaN/Inf loss. Logs every ``log_every`` steps to
    ``ctx.tracker`` with the key prefix ``name``; calls ``validate()`` every ``validate_every`` steps and passes
    the value to ``ctx.report(step, value)`` (Optuna pruning)."""
    from tqdm.auto import tqdm

    params = [p for p in params if p.requires_grad]
    opt = optimizer or torch.optim.AdamW(params, lr=lr, weight_decay=weight_decay)
    progress = bool(getattr(ctx, "progress", False))
    bar = tqdm(total=steps, desc=name, leave=False, disable=not progress)
    it = iter(batches)
    t0 = time.perf_counter()
    n_examples = 0
    last: dict = {}
    for i in range(1, steps + 1):
        try:
            batch = next(it)
        except StopIteration:
            it = iter(batches)
            batch = next(it)
        out = step(batch)
        loss = out["loss"]
        if not torch.isfinite(loss.detach()).all():
            bar.close()
            raise DivergedError(f"{name}: loss is {loss.item()} at step {i}; training diverged "
                                "(try a lower learning rate)")
        opt.zero_grad(set_to_none=True)
        loss.backward()
        if clip:
            torch.nn.utils.clip_grad_norm_(params, clip)
        opt.step()
        n_examples += len(next(iter(batch.values()))) if isinstance(batch, dict) else 0
        last = {k: float(v.detach()) for k, v in out.items() if torch.is_tensor(v) and v.numel() == 1}
        bar.update(1)
        if i % log_every == 0 or i == steps:
            bar.set_postfix(loss=f"{last['loss']:.4f}")
            if ctx is not None:
                ctx.log_metrics({f"{name}/{k}": v for k, v in last.items()}, step=i)
        if validate is not None and validate_every and (i % validate_every == 0 or i == steps):
            value = float(validate())
            if ctx is not None:
                ctx.log_metrics({f"{name}/valid": value}, step=i)
                if ctx.report is not None and math.isfinite(value):
                    ctx.report(i, value)
    bar.close()
    seconds = time.perf_counter() - t0
    if ctx is not None:
        ctx.log_metrics({f"{name}/examples_per_second": n_examples / max(seconds, 1e-9)})
    return LoopResult(steps, seconds, last, n_examples)
