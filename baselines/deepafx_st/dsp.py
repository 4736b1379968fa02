"""A differentiable mirror of the harness's ``peq_comp`` effect (bench/effects/builtin.py), in torch.

``peq_comp`` is pedalboard's six-band EQ (a low shelf, four peaks, a high shelf) followed by pedalboard's
Compressor and a Gain. pedalboard runs JUCE, so this module reproduces JUCE's formulas:

* the biquads: JUCE's ``IIR::Coefficients::makeLowShelf`` / ``makePeakFilter`` / ``makeHighShelf`` with
  ``A = sqrt(10 ** (gain_db / 20))`` and the centre frequency clamped to at least 2 Hz (and, as the harness does, to
  at most 0.45 x the sample rate). The cascade is applied by frequency sampling: its exact transfer function is
  evaluated (in float64) on the FFT grid of a transform 0.25 s longer than the clip, so the result is the causal
  IIR output up to the part of the impulse response longer than 0.25 s (below -100 dB for every band);
* the compressor: JUCE's ``dsp::Compressor``: a peak ballistics filter
  ``env[n] = |x[n]| + c * (env[n-1] - |x[n]|)`` with ``c = exp(-2 pi 1000 / (sr * t_ms))`` taken from the attack
  time while ``|x[n]| > env[n-1]`` and from the release time otherwise, then a hard-knee gain
  ``(env / thr) ** (1 / ratio - 1)`` above the threshold and 1 below it;
* the make-up gain: a plain ``10 ** (makeup_db / 20)``.

Parameters arrive normalised to [0, 1] in the effect's own order and are mapped to physical units through the
effect's own :class:`~bench.effects.ParamSpec` list, so a change of range in the harness is followed here.

The envelope follower is a sequential, data-dependent recursion; it runs as a numba kernel on the CPU (one
batched transfer each way when the rest lives on a GPU) with an exact adjoint: given which samples took the
attack branch, the recursion is linear and its gradient is a reverse recursion with the same coefficients.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from numba import njit
from torch import nn

from bench.effects import Effect, get_effect

BANDS = (("low_shelf", "low"), ("band1", "peak"), ("band2", "peak"), ("band3", "peak"), ("band4", "peak"),
         ("high_shelf", "high"))
COMP = ("threshold_db", "ratio", "attack_ms", "release_ms", "makeup_db")


# --- biquads -------------------------------------------------------------------------------------------------


def biquad(kind: str, freq: torch.Tensor, gain_db: torch.Tensor, q: torch.Tensor, sample_rate: int
           ) -> tuple[torch.Tensor, torch.Tensor]:
    """JUCE's shelf / peak coefficients, normalised by a0: ``b (..., 3)``, ``a (..., 3)`` with ``a[..., 0] = 1``."""
    A = torch.sqrt(10.0 ** (gain_db / 20.0))
    w = 2 * math.pi * torch.clamp(freq, min=2.0) / sample_rate
    cw, sw = torch.cos(w), torch.sin(w)
    if kind == "peak":
        alpha = sw / (2 * q)
        b = [1 + alpha * A, -2 * cw, 1 - alpha * A]
        a = [1 + alpha / A, -2 * cw, 1 - alpha / A]
    elif kind in ("low", "high"):
        beta = sw * torch.sqrt(A) / q
        am, ap = A - 1, A + 1
        s = 1.0 if kind == "low" else -1.0  # the high shelf is the low shelf with cos(w) negated
        b = [A * (ap - s * am * cw + beta), s * 2 * A * (am - s * ap * cw), A * (ap - s * am * cw - beta)]
        a = [ap + s * am * cw + beta, -s * 2 * (am + s * ap * cw), ap + s * am * cw - beta]
    else:
        raise ValueError(f"biquad: unknown kind {kind!r}")
    b, a = torch.stack(b, -1), torch.stack(a, -1)
    return b / a[..., :1], a / a[..., :1]


def cascade_polynomials(b: torch.Tensor, a: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Numerator and denominator polynomials (in z^-1) of a cascade of biquads ``b, a (B, S, 3)``: ``(B, 2S+1)``
    each, in float64 (the products are exact: a small FFT of size >= 2S+1)."""
    S = b.shape[-2]
    n = 1 << int(math.ceil(math.log2(2 * S + 1)))

    def prod(c: torch.Tensor) -> torch.Tensor:
        return torch.fft.irfft(torch.fft.rfft(c.double(), n=n).prod(-2), n=n)[..., : 2 * S + 1]

    return prod(b), prod(a)


def freq_response(b: torch.Tensor, a: torch.Tensor, n_fft: int) -> torch.Tensor:
    """``H(e^jw)`` of a cascade of biquads ``b, a (B, S, 3)`` on the ``n_fft // 2 + 1`` rfft bins, complex128:
    the low shelves put poles within 1e-2 of the unit circle, where float32 loses the response."""
    pb, pa = cascade_polynomials(b, a)
    return torch.fft.rfft(pb, n=n_fft) / torch.fft.rfft(pa, n=n_fft)


TAIL_SECONDS = 0.25  # impulse-response length kept exactly: every band has decayed by > 100 dB after it


def _smooth(n: int) -> int:
    """The smallest 2^a 3^b 5^c >= n (sizes pocketfft and cuFFT transform fast)."""
    best = 1 << int(math.ceil(math.log2(max(n, 1))))
    p5 = 1
    while p5 < best:
        p35 = p5
        while p35 < best:
            m = p35
            while m < n:
                m *= 2
            best = min(best, m)
            p35 *= 3
        p5 *= 5
    return best


def fft_size(n: int, sample_rate: int) -> int:
    return _smooth(n + int(TAIL_SECONDS * sample_rate))


def apply_filters(x: torch.Tensor, b: torch.Tensor, a: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """Filter ``x (B, n)`` with the biquad cascade ``b, a (B, S, 3)`` (zero initial state) by frequency sampling
    on a transform ``TAIL_SECONDS`` longer than the clip, so the circular wrap-around is negligible."""
    n = x.shape[-1]
    m = fft_size(n, sample_rate)
    H = freq_response(b, a, m).to(torch.complex64)
    return torch.fft.irfft(torch.fft.rfft(x.float(), n=m) * H, n=m)[..., :n]


# --- the compressor's envelope follower ---------------------------------------------------------------------


@njit(cache=True)
def _envelope_forward(a, ca, cr, env, attack):  # pragma: no cover - compiled
    B, N = a.shape
    for i in range(B):
        prev = a[i, 0] * 0  # zero of the array's dtype (float32 like JUCE, or float64 for gradcheck)
        for n in range(N):
            x = a[i, n]
            if x > prev:
                c = ca[i]
                attack[i, n] = True
            else:
                c = cr[i]
                attack[i, n] = False
            prev = x + c * (prev - x)
            env[i, n] = prev


@njit(cache=True)
def _envelope_backward(g, a, env, attack, ca, cr, ga, gca, gcr):  # pragma: no cover - compiled
    B, N = a.shape
    for i in range(B):
        lam = 0.0  # adjoint of env[n + 1]
        c_next = 0.0
        sa = 0.0
        sr = 0.0
        for n in range(N - 1, -1, -1):
            c = ca[i] if attack[i, n] else cr[i]
            lam = g[i, n] + c_next * lam
            ga[i, n] = (1.0 - c) * lam
            prev = env[i, n - 1] if n > 0 else 0.0
            d = lam * (prev - a[i, n])
            if attack[i, n]:
                sa += d
            else:
                sr += d
            c_next = c
        gca[i] = sa
        gcr[i] = sr


class _Envelope(torch.autograd.Function):
    """``env = ballistics(|x|)`` with per-example attack/release coefficients; exact gradients to all three."""

    @staticmethod
    def forward(ctx, a, ca, cr):
        dt = torch.float64 if a.dtype == torch.float64 else torch.float32
        an = np.ascontiguousarray(a.detach().to(dt).cpu().numpy())
        can = np.ascontiguousarray(ca.detach().to(dt).cpu().numpy())
        crn = np.ascontiguousarray(cr.detach().to(dt).cpu().numpy())
        env = np.empty_like(an)
        attack = np.empty(an.shape, dtype=np.bool_)
        _envelope_forward(an, can, crn, env, attack)
        ctx.saved = (an, can, crn, env, attack)
        return torch.from_numpy(env).to(a.device)

    @staticmethod
    def backward(ctx, grad):
        an, can, crn, env, attack = ctx.saved
        g = np.ascontiguousarray(grad.detach().double().cpu().numpy())
        ga = np.empty(an.shape, np.float64)
        gca = np.empty(an.shape[0], np.float64)
        gcr = np.empty(an.shape[0], np.float64)
        _envelope_backward(g, an.astype(np.float64), env.astype(np.float64), attack, can.astype(np.float64),
                           crn.astype(np.float64), ga, gca, gcr)
        dev, dt = grad.device, grad.dtype
        return (torch.from_numpy(ga).to(dev, dt), torch.from_numpy(gca).to(dev, dt),
                torch.from_numpy(gcr).to(dev, dt))


def envelope(x: torch.Tensor, attack_ms: torch.Tensor, release_ms: torch.Tensor, sample_rate: int) -> torch.Tensor:
    """JUCE's peak ``BallisticsFilter`` over ``x (B, n)`` with per-example times ``(B,)`` in ms."""
    k = -2.0 * math.pi * 1000.0 / sample_rate
    ca = torch.where(attack_ms < 1e-3, torch.zeros_like(attack_ms), torch.exp(k / attack_ms.clamp(min=1e-3)))
    cr = torch.where(release_ms < 1e-3, torch.zeros_like(release_ms), torch.exp(k / release_ms.clamp(min=1e-3)))
    dt = torch.float64 if x.dtype == torch.float64 else torch.float32
    return _Envelope.apply(x.abs().to(dt), ca.to(dt), cr.to(dt))


def compressor_gain(env: torch.Tensor, threshold_db: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Hard-knee gain: 1 below the threshold, ``(env / thr) ** (1 / ratio - 1)`` above (JUCE dsp::Compressor)."""
    thr = (10.0 ** (threshold_db / 20.0))[:, None]
    over = torch.clamp(env / thr, min=1.0)  # exactly 1 (and no gradient) below the threshold
    return over ** (1.0 / ratio[:, None] - 1.0)


def static_curve_db(level_db: torch.Tensor, threshold_db: torch.Tensor, ratio: torch.Tensor) -> torch.Tensor:
    """Output level (dB) of a steady input level (dB): the compressor's static curve."""
    return torch.where(level_db < threshold_db, level_db, threshold_db + (level_db - threshold_db) / ratio)


def compress(x: torch.Tensor, threshold_db, ratio, attack_ms, release_ms, makeup_db, sample_rate: int) -> torch.Tensor:
    env = envelope(x, attack_ms, release_ms, sample_rate)
    return x * compressor_gain(env, threshold_db, ratio) * (10.0 ** (makeup_db / 20.0))[:, None]


# --- the whole effect ----------------------------------------------------------------------------------------


class PEQComp(nn.Module):
    """``peq_comp`` in torch: ``forward(x (B, n), params01 (B, 23)) -> (B, n)``, differentiable in both."""

    def __init__(self, sample_rate: int, effect: Effect | None = None):
        super().__init__()
        effect = effect or get_effect("peq_comp")
        expected = [f"{b}_{k}" for b, _ in BANDS for k in ("gain_db", "freq_hz", "q")] + list(COMP)
        if effect.param_names != expected:
            raise ValueError(f"PEQComp mirrors peq_comp's parameters {expected}; {effect.name} has "
                             f"{effect.param_names}")
        self.sample_rate = int(sample_rate)
        self.names = list(effect.param_names)
        self.register_buffer("lo", torch.tensor([p.minimum for p in effect.params], dtype=torch.float32), False)
        self.register_buffer("hi", torch.tensor([p.maximum for p in effect.params], dtype=torch.float32), False)
        self.register_buffer("log", torch.tensor([p.scale == "log" for p in effect.params]), False)

    @property
    def n_params(self) -> int:
        return len(self.names)

    def physical(self, params01: torch.Tensor) -> dict[str, torch.Tensor]:
        """ParamSpec.to_physical, batched: clip to [0, 1], then linear or log-linear between the limits."""
        u = params01.float().clamp(0.0, 1.0)
        lin = self.lo + u * (self.hi - self.lo)
        lg = torch.exp(torch.log(self.lo.clamp(min=1e-30)) + u * (torch.log(self.hi.clamp(min=1e-30))
                                                                   - torch.log(self.lo.clamp(min=1e-30))))
        v = torch.where(self.log, lg, lin)
        return {n: v[:, i] for i, n in enumerate(self.names)}

    def eq_coefficients(self, v: dict[str, torch.Tensor]) -> tuple[torch.Tensor, torch.Tensor]:
        bs, as_ = [], []
        for band, kind in BANDS:
            f = torch.clamp(v[f"{band}_freq_hz"], max=0.45 * self.sample_rate)  # the harness's _nyq
            b, a = biquad(kind, f, v[f"{band}_gain_db"], v[f"{band}_q"], self.sample_rate)
            bs.append(b)
            as_.append(a)
        return torch.stack(bs, 1), torch.stack(as_, 1)  # (B, 6, 3)

    def eq(self, x: torch.Tensor, params01: torch.Tensor) -> torch.Tensor:
        b, a = self.eq_coefficients(self.physical(params01))
        return apply_filters(x, b, a, self.sample_rate)

    def forward(self, x: torch.Tensor, params01: torch.Tensor) -> torch.Tensor:
        if x.dim() != 2 or params01.shape != (x.shape[0], self.n_params):
            raise ValueError(f"PEQComp: expected x (B, n) and params01 (B, {self.n_params}), got "
                             f"{tuple(x.shape)} and {tuple(params01.shape)}")
        v = self.physical(params01)
        b, a = self.eq_coefficients(v)
        y = apply_filters(x, b, a, self.sample_rate)
        return compress(y, v["threshold_db"], v["ratio"], v["attack_ms"], v["release_ms"], v["makeup_db"],
                        self.sample_rate)


def mismatch(n: int = 32, *, sample_rate: int = 24000, seconds: float = 1.0, seed: int = 0,
             audio: np.ndarray | None = None) -> dict[str, float]:
    """MR-STFT (the harness metric's settings) and sample errors between this module and pedalboard's ``peq_comp``
    over ``n`` settings drawn from the effect's own data distribution (``Effect.sample``). ``audio``: one clip for
    all settings, or ``(n, samples)`` clips, one per setting; default the harness's probe signal."""
    import auraloss

    from bench.effects import probe_signal

    effect = get_effect("peq_comp")
    rng = np.random.default_rng(seed)
    x = probe_signal(sample_rate, seconds) if audio is None else np.asarray(audio, np.float32)
    xs = np.tile(x, (n, 1)) if x.ndim == 1 else x[:n]
    params = np.stack([effect.sample(rng, sample_rate) for _ in range(len(xs))])
    ref = effect.process(xs, sample_rate, params)
    with torch.no_grad():
        out = PEQComp(sample_rate, effect)(torch.from_numpy(xs), torch.from_numpy(params).float()).numpy()
    loss = auraloss.freq.MultiResolutionSTFTLoss(fft_sizes=[256, 1024, 4096], hop_sizes=[64, 256, 1024],
                                                 win_lengths=[256, 1024, 4096])

    def mr(a, b):
        return float(loss(torch.from_numpy(a)[None, None], torch.from_numpy(b)[None, None]))

    ours = [mr(o, r) for o, r in zip(out, ref, strict=True)]
    base = [mr(a, r) for a, r in zip(xs, ref, strict=True)]  # pedalboard's output vs the input, for scale
    err = np.abs(out - ref).max(axis=1) / np.abs(ref).max(axis=1)
    rel = np.sqrt(np.mean((out - ref) ** 2, 1) / np.mean(ref ** 2, 1))
    return {"n": len(xs), "mrstft_mean": float(np.mean(ours)), "mrstft_median": float(np.median(ours)),
            "mrstft_max": float(np.max(ours)), "mrstft_input_vs_pedalboard": float(np.mean(base)),
            "rel_peak_err_max": float(np.max(err)), "rel_rms_err_mean": float(np.mean(rel)),
            "rel_rms_err_max": float(np.max(rel))}


if __name__ == "__main__":  # python -m baselines.deepafx_st.dsp [n] [seconds] [corpus]
    import json
    import sys

    n = int(sys.argv[1]) if len(sys.argv) > 1 else 32
    sec = float(sys.argv[2]) if len(sys.argv) > 2 else 1.0
    clips = None
    if len(sys.argv) > 3:  # n segments of a corpus's test split (e.g. speech, music, folder:PATH)
        from bench.corpora import get_corpus

        corpus = get_corpus(sys.argv[3], sample_rate=24000, seed=0, sources={"train": 1, "valid": 1, "test": 8},
                            seconds=max(4.0, 2 * sec))
        L = int(sec * 24000)
        segs = [x[i: i + L] for _, x in corpus.split("test") for i in range(0, len(x) - L + 1, L)]
        clips = np.stack([segs[i % len(segs)] for i in range(n)])
    print(json.dumps({"audio": sys.argv[3] if clips is not None else "probe",
                      **mismatch(n, seconds=sec, audio=clips)}, indent=1))
