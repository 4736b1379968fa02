"""The controller (an MLP from the encodings of input and reference to normalised effect parameters) and the
optional descriptor features that can sit beside the VAE latents.

Controller (as the paper's code): an MLP 128 -> 128 -> 64 -> 32 -> ``n_params`` with LayerNorm and LeakyReLU between
layers and a sigmoid at the end, so every output is a parameter in [0, 1]. It sees the encodings of input and
reference as ``[code(reference) - code(input); code(input)]`` (the same information as the paper's
``[z_input; z_reference]``, arranged so that what the effect changed is one linear read-out away, and the source's
own character, which input and reference share, cancels in the first half).

Knobs (``knobs = k``, 2-8; the ``proposed_knobs`` variant): the hidden layers end in a k-dimensional code squashed
into [-1, 1] (tanh), and a small decoder (k -> 32 -> ``n_params``) turns it into the settings. Every setting the
controller gives then passes through those k numbers, so they are knobs a person can turn (``knobs_of`` reads them,
``from_knobs`` decodes any position); the latent study walks them (``models.proposed.latent``). With ``squash =
False`` the bottleneck is left unbounded: the timbre axes of ``proposed_timbre`` (one per AudioCommons feature, in
units of the effect's spread of it, plus free axes; :mod:`models.proposed.timbre`) are such a bottleneck.

Descriptor features (our addition, ``features = "latent+stats"``): a fixed, untrained encoder of what a small
beta-VAE trained for seconds tends to blur: per-band level statistics (mean and spread over time of the log power
in log-spaced bands) and the autocorrelation of the short-time log envelope over lags up to ``max_lag_s`` (echoes,
reverberant decay, modulation). They are computed for input and reference alike, with ``code = [z; descriptors]``.
"""

from __future__ import annotations

import math

import numpy as np
import torch
from torch import nn


class Controller(nn.Module):
    """MLP with LayerNorm + LeakyReLU (and optional dropout) between layers and a sigmoid output.

    :meth:`init_output` sets the last bias so that the untrained controller predicts a given setting (the mean
    of the training settings): it starts as the best constant guess and learns the departures from it.
    :meth:`init_paper` is the authors' initialisation instead (no training setting involved): Xavier-normal hidden
    weights, output weights N(0, 0.01), output bias 0 (every parameter starts at 0.5)."""

    KNOB_HIDDEN = 32  # the knob decoder's one hidden layer

    def __init__(self, n_in: int, n_params: int, hidden: tuple[int, ...] = (128, 128, 64, 32), dropout: float = 0.0,
                 slope: float = 0.2, knobs: int = 0, squash: bool = True):
        super().__init__()
        layers: list[nn.Module] = []
        prev = n_in
        for h in hidden:
            layers += [nn.Linear(prev, h), nn.LayerNorm(h), nn.LeakyReLU(slope)]
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            prev = h
        self.knobs = int(knobs)
        self.split = len(layers)  # net[:split] -> (knobs) -> net[split:]
        if self.knobs:
            layers += [nn.Linear(prev, self.knobs)] + ([nn.Tanh()] if squash else [])
            self.split = len(layers)
            layers += [nn.Linear(self.knobs, self.KNOB_HIDDEN), nn.LeakyReLU(slope)]
            prev = self.KNOB_HIDDEN
        self.net = nn.Sequential(*layers, nn.Linear(prev, n_params))

    @torch.no_grad()
    def init_paper(self) -> None:
        linears = [m for m in self.net if isinstance(m, nn.Linear)]
        for m in linears[:-1]:
            nn.init.xavier_normal_(m.weight)
        last = linears[-1]
        last.weight.normal_(0.0, 0.01)
        last.bias.zero_()  # -log((1 - 0.5) / 0.5): sigmoid(0) = 0.5

    @torch.no_grad()
    def init_output(self, params01: torch.Tensor) -> None:
        p = params01.float().clamp(0.02, 0.98)
        last = self.net[-1]
        last.bias.copy_(torch.log(p / (1 - p)))
        last.weight.mul_(0.1)

    def forward(self, feats: torch.Tensor) -> torch.Tensor:
        return torch.sigmoid(self.net(feats))

    def knobs_of(self, feats: torch.Tensor) -> torch.Tensor:
        """(B, n_in) -> (B, knobs) in [-1, 1]: where the knobs stand for these inputs."""
        if not self.knobs:
            raise ValueError("this controller has no knobs (knobs = 0)")
        return self.net[: self.split](feats)

    def from_knobs(self, knobs: torch.Tensor) -> torch.Tensor:
        """(B, knobs) -> (B, n_params) normalised settings."""
        if not self.knobs:
            raise ValueError("this controller has no knobs (knobs = 0)")
        return torch.sigmoid(self.net[self.split :](knobs))


class Descriptors(nn.Module):
    """(B, n) audio -> (B, D) descriptor vector (see the module docstring). No trainable weights."""

    def __init__(self, sample_rate: int, n_fft: int = 1024, hop: int = 256, bands: int = 32, max_lag_s: float = 0.6,
                 lags: int = 48, mod_groups: int = 4, mod_hz: tuple[float, ...] = (1, 1.5, 2, 3, 4, 6, 8, 12)):
        super().__init__()
        self.n_fft, self.hop = n_fft, hop
        freqs = np.fft.rfftfreq(n_fft, 1 / sample_rate)
        edges = np.geomspace(40.0, 0.5 * sample_rate, bands + 1)
        fb = np.zeros((bands, len(freqs)), np.float32)
        for b in range(bands):
            sel = (freqs >= edges[b]) & (freqs < edges[b + 1])
            if not sel.any():  # a band narrower than one bin: take the nearest bin
                sel = np.abs(freqs - math.sqrt(edges[b] * edges[b + 1])) == np.min(
                    np.abs(freqs - math.sqrt(edges[b] * edges[b + 1])))
            fb[b, sel] = 1.0 / sel.sum()
        self.register_buffer("fb", torch.from_numpy(fb), persistent=False)
        self.register_buffer("window", torch.hann_window(n_fft), persistent=False)
        frame_s = hop / sample_rate
        max_lag = max(1, int(round(max_lag_s / frame_s)))
        lag_idx = np.unique(np.round(np.geomspace(1, max_lag, lags)).astype(int))
        self.lags = [int(k) for k in lag_idx]
        self.frame_rate = sample_rate / hop
        self.mod_groups, self.mod_hz = mod_groups, tuple(float(f) for f in mod_hz)
        self.dim = 2 * bands + 2 + len(self.lags) + mod_groups * len(self.mod_hz)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        X = torch.stft(x.float(), self.n_fft, self.hop, self.n_fft, self.window, center=True, return_complex=True)
        power = X.real**2 + X.imag**2  # (B, F, T)
        band_db = 10 * torch.log10(torch.matmul(self.fb, power) + 1e-10)  # (B, bands, T)
        frame_db = 10 * torch.log10(power.sum(dim=1) + 1e-10)  # (B, T)
        level = frame_db.max(dim=1).values  # loudest frame: a level reference that ignores pauses
        # keep only frames within 40 dB of the loudest: silences say nothing about the processing
        w = (frame_db > level[:, None] - 40).float()
        wn = w / w.sum(dim=1, keepdim=True).clamp_min(1)
        mean = (band_db * wn[:, None]).sum(dim=2)
        std = (((band_db - mean[..., None]) ** 2 * wn[:, None]).sum(dim=2) + 1e-6).sqrt()
        rms_db = 10 * torch.log10((x.float() ** 2).mean(dim=1) + 1e-10)
        peak_db = 20 * torch.log10(x.float().abs().amax(dim=1) + 1e-10)
        env = frame_db - (frame_db * wn).sum(dim=1, keepdim=True)
        env = env * w
        T = env.shape[1]
        denom = (env**2).sum(dim=1) + 1e-6
        ac = torch.stack([(env[:, k:] * env[:, : T - k]).sum(dim=1) / denom for k in (min(k, T - 1) for k in self.lags)],
                         dim=1)
        return torch.cat([mean / 20, std / 10, (rms_db / 20)[:, None], ((peak_db - rms_db) / 20)[:, None], ac,
                          self._modulation(band_db, frame_db, w)], dim=1)

    def _modulation(self, band_db: torch.Tensor, frame_db: torch.Tensor, w: torch.Tensor) -> torch.Tensor:
        """Share of each band group's envelope fluctuation at the modulation rates ``mod_hz`` (LFO sweeps of
        phasers, choruses, tremolos), relative to the frame level so that loudness changes of speech cancel."""
        B, nb, T = band_db.shape
        rel = (band_db - frame_db[:, None]) * w[:, None]  # the band's share of the frame, voiced frames only
        rel = rel - rel.sum(dim=2, keepdim=True) / w.sum(dim=1).clamp_min(1)[:, None, None] * w[:, None]
        spec = torch.fft.rfft(rel * torch.hann_window(T, device=rel.device), dim=2).abs()  # (B, bands, T//2+1)
        spec = spec / (spec.sum(dim=2, keepdim=True) + 1e-6)
        groups = torch.stack([g.mean(dim=1) for g in spec.chunk(self.mod_groups, dim=1)], dim=1)  # (B, G, F)
        freqs = torch.arange(groups.shape[2], device=rel.device) * self.frame_rate / max(T, 1)
        pos = torch.tensor([min(f, float(freqs[-1])) for f in self.mod_hz], device=rel.device)
        idx = torch.searchsorted(freqs, pos).clamp(1, groups.shape[2] - 1)
        lo, hi = freqs[idx - 1], freqs[idx]
        frac = ((pos - lo) / (hi - lo).clamp_min(1e-9)).clamp(0, 1)
        out = groups[..., idx - 1] * (1 - frac) + groups[..., idx] * frac  # linear interpolation on the Hz grid
        return out.flatten(1) * 10
