"""Gradients through black-box effects by simultaneous perturbation (SPSA).

``spsa_effect(params, audio, effect, ...)`` renders ``effect(audio, params)`` on the CPU with the real
(non-differentiable) effect and returns a tensor that autograd can pass through: in the backward pass the
vector-Jacobian product ``dL/dparams`` is estimated from ``K`` Rademacher perturbations ``delta`` per example as

    g = mean_k  < dL/dy , f(p + eps*delta_k) - f(p - eps*delta_k) > / (2*eps) * delta_k

(Spall 1992; 1/delta = delta for +-1 entries). All ``2*K*B`` renders of a backward pass, and the ``B`` renders of
the forward pass, run in one thread pool (pedalboard releases the GIL), so the network can stay on the GPU while
the effect calls use every core. Shared by the proposed model and DeepAFx-ST's SPSA variant.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import torch

from bench.effects import Effect


class EffectTimer:
    """Accumulates the seconds spent in effect calls (to report the SPSA step's split)."""

    def __init__(self) -> None:
        self.seconds = 0.0
        self.calls = 0


def render(effect: Effect, audio: np.ndarray, params: np.ndarray, sample_rate: int, pool: ThreadPoolExecutor | None,
           timer: EffectTimer | None = None) -> np.ndarray:
    """Render a batch ``(N, n)`` with params ``(N, P)`` on the pool (in order)."""
    t0 = time.perf_counter()
    if pool is None:
        out = np.stack([effect.process_one(a, sample_rate, p) for a, p in zip(audio, params, strict=True)])
    else:
        out = np.stack(list(pool.map(lambda ap: effect.process_one(ap[0], sample_rate, ap[1]),
                                     zip(audio, params, strict=True))))
    if timer is not None:
        timer.seconds += time.perf_counter() - t0
        timer.calls += len(audio)
    return out


class _SPSAEffect(torch.autograd.Function):
    @staticmethod
    def forward(ctx, params, audio, effect, sample_rate, eps, k, pool, rng, timer):
        p = params.detach().float().cpu().numpy().astype(np.float64)
        x = audio.detach().float().cpu().numpy()
        y = render(effect, x, p, sample_rate, pool, timer)
        ctx.save_for_backward(params)
        ctx.stuff = (x, effect, sample_rate, eps, k, pool, rng, timer)
        return torch.from_numpy(y).to(audio.device, audio.dtype)

    @staticmethod
    def backward(ctx, grad_out):
        (params,) = ctx.saved_tensors
        x, effect, sample_rate, eps, k, pool, rng, timer = ctx.stuff
        B, P = params.shape
        # centre the perturbation inside [0, 1] so that +-eps never gets clipped away
        p = np.clip(params.detach().float().cpu().numpy().astype(np.float64), eps, 1 - eps)
        delta = rng.choice([-1.0, 1.0], size=(k, B, P))
        plus = (p[None] + eps * delta).reshape(k * B, P)
        minus = (p[None] - eps * delta).reshape(k * B, P)
        xs = np.concatenate([np.tile(x, (k, 1)), np.tile(x, (k, 1))])
        ys = render(effect, xs, np.concatenate([plus, minus]), sample_rate, pool, timer)
        diff = (ys[: k * B] - ys[k * B :]).reshape(k, B, -1)  # f(p+) - f(p-)
        g = grad_out.detach().float().cpu().numpy()  # (B, n)
        dots = np.einsum("kbn,bn->kb", diff, g) / (2 * eps)  # directional derivatives
        grad = (dots[..., None] * delta).mean(axis=0)  # (B, P)
        return torch.from_numpy(grad).to(params.device, params.dtype), None, None, None, None, None, None, None, None


def spsa_effect(params: torch.Tensor, audio: torch.Tensor, effect: Effect, sample_rate: int, *, eps: float = 0.01,
                k: int = 1, pool: ThreadPoolExecutor | None = None, rng: np.random.Generator | None = None,
                timer: EffectTimer | None = None) -> torch.Tensor:
    """``effect(audio, params)`` as a differentiable op: params ``(B, P)`` in [0, 1], audio ``(B, n)``."""
    if params.dim() != 2 or params.shape[1] != effect.n_params:
        raise ValueError(f"spsa_effect: params must be (B, {effect.n_params}) for {effect.name}, got "
                         f"{tuple(params.shape)}")
    if not 0 < eps < 0.5:
        raise ValueError(f"spsa_effect: eps must be in (0, 0.5), got {eps}")
    return _SPSAEffect.apply(params, audio, effect, sample_rate, float(eps), int(k), pool,
                             rng or np.random.default_rng(), timer)
