"""Spectral distances between a system's output and the target, batched in torch on the metric's device.

All four compute their per-example values themselves from batched STFTs (torch.stft), so that a batch of clips
gives exactly what each clip gives alone. (auraloss's losses reduce over the whole batch: its spectral-convergence
term is one Frobenius norm over every clip of the batch, and its magnitude terms one mean; librosa's MFCC on a
(B, n) array clamps every clip at 80 dB below the loudest clip *of the batch*.) The tests check each metric
against auraloss / librosa on single clips. Definitions and settings: docs/metrics.md.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field

import numpy as np

from bench.metrics import Metric, MetricConfig, register_metric
from bench.metrics._audio import audio_pairs, grouped


class _TorchMetric(Metric):
    """Shared plumbing: check the batch, group clips by length, run ``_batch`` (torch tensors on the metric's
    device, shape (B, n)) without autograd, return one dict per example."""

    batch_size = 32

    def _batch(self, y, t):  # -> dict[key, tensor (B,)]
        raise NotImplementedError

    def score_batch(self, estimates, examples):
        import torch

        outs, tgts = audio_pairs(estimates, examples, self.name)

        def run(Y, T):
            with torch.inference_mode():
                y = torch.from_numpy(Y).to(self.device)
                t = torch.from_numpy(T).to(self.device)
                vals = {k: v.double().cpu().numpy() for k, v in self._batch(y, t).items()}
            return [{k: float(v[i]) for k, v in vals.items()} for i in range(Y.shape[0])]

        return grouped(outs, tgts, run, self.batch_size)

    def score(self, estimate, example):
        return self.score_batch([estimate], [example])[0]


def _magnitude(x, n_fft: int, hop: int, win: int, window, eps: float, pad_mode: str = "reflect"):
    """|STFT| as auraloss computes it: centred frames, sqrt(max(re^2 + im^2, eps)); shape (B, bins, frames)."""
    import torch

    if pad_mode == "reflect" and x.shape[-1] <= n_fft // 2:
        raise ValueError(f"clips of {x.shape[-1]} samples are too short for an FFT of {n_fft} (need more than "
                         f"{n_fft // 2}); use smaller FFT sizes for this segment length")
    X = torch.stft(x, n_fft, hop, win, window, center=True, pad_mode=pad_mode, return_complex=True)
    return torch.sqrt(torch.clamp(X.real**2 + X.imag**2, min=eps))


@register_metric("mrstft")
class MRSTFT(_TorchMetric):
    """auraloss's multi-resolution STFT loss between output and target, per example: for each resolution,
    w_sc * spectral convergence + w_log_mag * mean |log|Y| - log|T|| (+ w_lin_mag * mean ||Y| - |T||),
    averaged over resolutions. Equal to ``auraloss.freq.MultiResolutionSTFTLoss(...)(output, target)`` on one
    clip; lower is better, 0 for identical audio."""

    name = "mrstft"

    @dataclass
    class Config(MetricConfig):
        fft_sizes: list = field(default_factory=lambda: [256, 1024, 4096])
        hop_sizes: list = field(default_factory=lambda: [64, 256, 1024])
        win_lengths: list = field(default_factory=lambda: [256, 1024, 4096])
        window: str = "hann_window"
        w_sc: float = 1.0
        w_log_mag: float = 1.0
        w_lin_mag: float = 0.0
        eps: float = 1e-8

        def validate(self, where):
            n = len(self.fft_sizes)
            if n == 0 or len(self.hop_sizes) != n or len(self.win_lengths) != n:
                raise ValueError(f"{where}: fft_sizes, hop_sizes and win_lengths need the same, non-zero length")
            for f, h, w in zip(self.fft_sizes, self.hop_sizes, self.win_lengths, strict=True):
                if not (int(h) > 0 and 0 < int(w) <= int(f)):
                    raise ValueError(f"{where}: need hop > 0 and 0 < win_length <= fft_size, got {f}/{h}/{w}")
            if self.window not in ("hann_window", "hamming_window", "blackman_window", "bartlett_window"):
                raise ValueError(f"{where}.window: {self.window!r} is not a torch window function")

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        import torch

        c = self.cfg
        self.resolutions = [(int(f), int(h), int(w), getattr(torch, c.window)(int(w)).to(self.device))
                            for f, h, w in zip(c.fft_sizes, c.hop_sizes, c.win_lengths, strict=True)]

    def _batch(self, y, t):
        import torch

        c = self.cfg
        total = torch.zeros(y.shape[0], dtype=torch.float64, device=y.device)
        for n_fft, hop, win, window in self.resolutions:
            ym = _magnitude(y, n_fft, hop, win, window, c.eps)
            tm = _magnitude(t, n_fft, hop, win, window, c.eps)
            term = torch.zeros_like(total)
            if c.w_sc:
                sc = torch.linalg.vector_norm(tm - ym, dim=(-2, -1)) / torch.linalg.vector_norm(tm, dim=(-2, -1))
                term += c.w_sc * sc.double()
            if c.w_log_mag:
                term += c.w_log_mag * (torch.log(ym) - torch.log(tm)).abs().mean(dim=(-2, -1)).double()
            if c.w_lin_mag:
                term += c.w_lin_mag * (ym - tm).abs().mean(dim=(-2, -1)).double()
            total += term
        return {"mrstft": total / len(self.resolutions)}


@register_metric("mel_dist")
class MelDistance(_TorchMetric):
    """DeepAFx-ST's mel-spectral distance: auraloss's STFT loss on a 128-band mel magnitude spectrum with one very
    long window (65 536 samples, hop = window), log-magnitude L1 + linear-magnitude L1, no spectral convergence.
    For clips shorter than the window, the window is the largest power of two that fits the clip."""

    name = "mel_dist"
    batch_size = 16

    @dataclass
    class Config(MetricConfig):
        fft_size: int = 65536
        n_mels: int = 128
        w_log_mag: float = 1.0
        w_lin_mag: float = 1.0
        eps: float = 1e-8

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        self._fb: dict[int, object] = {}

    def window_for(self, n_samples: int) -> int:
        return min(int(self.cfg.fft_size), 2 ** int(math.floor(math.log2(max(2, n_samples)))))

    def _filterbank(self, n_fft: int):
        if n_fft not in self._fb:
            import librosa
            import torch

            fb = librosa.filters.mel(sr=self.sample_rate, n_fft=n_fft, n_mels=int(self.cfg.n_mels))
            self._fb[n_fft] = (torch.from_numpy(fb.astype(np.float32)).to(self.device),
                               torch.hann_window(n_fft).to(self.device))
        return self._fb[n_fft]

    def _batch(self, y, t):
        import torch

        c = self.cfg
        n = self.window_for(y.shape[-1])
        fb, window = self._filterbank(n)
        ym = torch.clamp(fb @ _magnitude(y, n, n, n, window, c.eps), min=c.eps)
        tm = torch.clamp(fb @ _magnitude(t, n, n, n, window, c.eps), min=c.eps)
        d = torch.zeros(y.shape[0], dtype=torch.float64, device=y.device)
        if c.w_log_mag:
            d += c.w_log_mag * (torch.log(ym) - torch.log(tm)).abs().mean(dim=(-2, -1)).double()
        if c.w_lin_mag:
            d += c.w_lin_mag * (ym - tm).abs().mean(dim=(-2, -1)).double()
        return {"mel_dist": d}


@register_metric("mfcc_dist")
class MFCCDistance(_TorchMetric):
    """Mean over frames of the L1 distance between the MFCC vectors c1..c(n_mfcc-1) (c0, the log-energy term,
    excluded) of output and target. The MFCCs are librosa's (``librosa.feature.mfcc`` defaults: 2048-point Hann
    STFT, hop 512, centred with zero padding, power spectrum, 128 Slaney mel bands, 10*log10 with an 80 dB floor
    below each clip's maximum, orthonormal DCT-II), computed in torch from librosa's mel filterbank so that a batch
    runs at once on the metric's device."""

    name = "mfcc_dist"

    @dataclass
    class Config(MetricConfig):
        n_mfcc: int = 20
        n_fft: int = 2048
        hop_length: int = 512
        n_mels: int = 128
        top_db: float = 80.0

        def validate(self, where):
            if not 2 <= self.n_mfcc <= self.n_mels:
                raise ValueError(f"{where}.n_mfcc: need 2 <= n_mfcc <= n_mels, got {self.n_mfcc}")

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        import librosa
        import scipy.fft
        import torch

        c = self.cfg
        fb = librosa.filters.mel(sr=self.sample_rate, n_fft=c.n_fft, n_mels=c.n_mels)
        dct = scipy.fft.dct(np.eye(c.n_mels), type=2, norm="ortho", axis=0)[1 : c.n_mfcc]  # rows c1..c(N)
        self.fb = torch.from_numpy(fb.astype(np.float32)).to(self.device)
        self.dct = torch.from_numpy(dct.astype(np.float32)).to(self.device)
        self.window = torch.hann_window(c.n_fft).to(self.device)

    def mfcc(self, x):
        """(B, n) -> (B, n_mfcc - 1, frames): coefficients c1..c(n_mfcc-1)."""
        import torch

        c = self.cfg
        X = torch.stft(x, c.n_fft, c.hop_length, c.n_fft, self.window, center=True, pad_mode="constant",
                       return_complex=True)
        mel = self.fb @ (X.real**2 + X.imag**2)
        db = 10.0 * torch.log10(torch.clamp(mel, min=1e-10))
        floor = db.amax(dim=(-2, -1), keepdim=True) - c.top_db
        return self.dct @ torch.maximum(db, floor)

    def _batch(self, y, t):
        d = (self.mfcc(y) - self.mfcc(t)).abs().sum(dim=-2).mean(dim=-1)
        return {"mfcc_dist": d}


@register_metric("centroid_err")
class CentroidError(_TorchMetric):
    """Absolute difference, in Hz, between the spectral centroids of output and target. A clip's centroid is the
    magnitude-weighted mean frequency over all its STFT frames and bins (2048-point Hann, hop 512, centred with
    zero padding): the frame centroids averaged with each frame's magnitude sum as weight, so quiet frames count
    little. NaN when either clip is silent (all zeros): its centroid is undefined."""

    name = "centroid_err"

    @dataclass
    class Config(MetricConfig):
        n_fft: int = 2048
        hop_length: int = 512

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        import torch

        n = int(self.cfg.n_fft)
        self.window = torch.hann_window(n).to(self.device)
        self.freqs = torch.linspace(0, self.sample_rate / 2, n // 2 + 1, dtype=torch.float64).to(self.device)

    def centroid(self, x):
        import torch

        c = self.cfg
        X = torch.stft(x, c.n_fft, c.hop_length, c.n_fft, self.window, center=True, pad_mode="constant",
                       return_complex=True)
        S = X.abs().double().sum(dim=-1)  # (B, bins): magnitude summed over frames
        total = S.sum(dim=-1)
        return torch.where(total > 0, (S * self.freqs).sum(dim=-1) / total, torch.nan)

    def _batch(self, y, t):
        return {"centroid_err": (self.centroid(y) - self.centroid(t)).abs()}
