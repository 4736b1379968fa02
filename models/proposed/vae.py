"""The spectrogram beta-VAE whose encoder gives the controller its view of input and reference.

Front-end (as the paper): STFT with n_fft 4096, window 2048, hop 1024, magnitude ** 0.3, standardised per
frequency bin with statistics measured on the pretraining audio (kept as buffers, so they travel with the
checkpoint). Encoder: four Conv2d(k3, s2) + ReLU + BatchNorm blocks (1 -> 8 -> 16 -> 32 -> 32 channels by
default), then an adaptive average pool to a fixed (frequency x time) grid so that one encoder serves any clip
length, then a linear layer to (mu, logvar). The decoder mirrors it (linear, four transposed convolutions, giving a
grid 16 times the pooled one); the reconstruction is scored on the coarser of that grid and the spectrogram's.

The loss is the reconstruction MSE of the standardised spectrogram plus ``beta`` x KL, with ``beta`` following a
cyclic schedule (:func:`cyclic_beta`) between ``beta_min`` and ``beta_max``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn

from models.nn import Spectrogram


def cyclic_beta(step: int, total: int, beta_min: float, beta_max: float, cycles: int = 4, ramp: float = 0.5) -> float:
    """Cyclic annealing (Fu et al. 2019): each of ``cycles`` equal cycles ramps ``beta`` linearly from
    ``beta_min`` to ``beta_max`` over its first ``ramp`` fraction, then holds ``beta_max``.

    Well defined for any ``total >= 1`` and ``cycles >= 1`` (no division by zero when a cycle is shorter than
    one step or the ramp is empty); ``step`` counts from 0."""
    total = max(int(total), 1)
    cycles = max(1, min(int(cycles), total))
    period = total / cycles
    pos = (step % period) / period if period > 0 else 1.0  # in [0, 1)
    frac = 1.0 if ramp <= 0 else min(1.0, pos / ramp)
    return float(beta_min + (beta_max - beta_min) * frac)


def _block(cin: int, cout: int) -> nn.Sequential:
    return nn.Sequential(nn.Conv2d(cin, cout, 3, stride=2, padding=1), nn.ReLU(), nn.BatchNorm2d(cout))


def _up_block(cin: int, cout: int, last: bool = False) -> nn.Sequential:
    conv = nn.ConvTranspose2d(cin, cout, 4, stride=2, padding=1)
    return nn.Sequential(conv) if last else nn.Sequential(conv, nn.ReLU(), nn.BatchNorm2d(cout))


class SpecFrontEnd(nn.Module):
    """(B, n) audio -> (B, 1, F, T) standardised compressed magnitude."""

    def __init__(self, n_fft: int = 4096, win: int = 2048, hop: int = 1024, power: float = 0.3):
        super().__init__()
        self.spec = Spectrogram(n_fft=n_fft, hop=hop, win=win, power=power)
        self.n_bins = n_fft // 2 + 1
        self.register_buffer("mean", torch.zeros(self.n_bins))
        self.register_buffer("std", torch.ones(self.n_bins))

    @torch.no_grad()
    def fit_stats(self, batches) -> None:
        """Per-bin mean and std of the compressed magnitude over ``batches`` of audio tensors."""
        s1 = torch.zeros(self.n_bins, dtype=torch.float64, device=self.mean.device)
        s2 = torch.zeros_like(s1)
        n = 0
        for x in batches:
            m = self.spec(x.to(self.mean.device))[:, 0].double()  # (B, F, T)
            s1 += m.sum(dim=(0, 2))
            s2 += (m**2).sum(dim=(0, 2))
            n += m.shape[0] * m.shape[2]
        mean = s1 / max(n, 1)
        std = (s2 / max(n, 1) - mean**2).clamp_min(0).sqrt()
        self.mean.copy_(mean.float())
        self.std.copy_(std.float().clamp_min(1e-3))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        m = self.spec(x)
        return (m - self.mean[None, None, :, None]) / self.std[None, None, :, None]


class SpecVAE(nn.Module):
    def __init__(self, latent: int = 128, width: int = 8, pool_freq: int = 32, pool_time: int = 2,
                 n_fft: int = 4096, win: int = 2048, hop: int = 1024, power: float = 0.3):
        super().__init__()
        ch = [1, width, 2 * width, 4 * width, 4 * width]
        self.latent = latent
        self.front = SpecFrontEnd(n_fft, win, hop, power)
        self.encoder = nn.Sequential(*[_block(a, b) for a, b in zip(ch[:-1], ch[1:], strict=True)])
        self.pool = nn.AdaptiveAvgPool2d((pool_freq, pool_time))
        self.grid = (ch[-1], pool_freq, pool_time)
        flat = ch[-1] * pool_freq * pool_time
        self.to_stats = nn.Linear(flat, 2 * latent)
        self.from_latent = nn.Linear(latent, flat)
        rev = ch[::-1]
        self.decoder = nn.Sequential(*[_up_block(a, b, last=(i == len(rev) - 2))
                                       for i, (a, b) in enumerate(zip(rev[:-1], rev[1:], strict=True))])

    def spectrogram(self, x: torch.Tensor) -> torch.Tensor:
        return self.front(x)

    def encode_spec(self, s: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        h = self.pool(self.encoder(s)).flatten(1)
        mu, logvar = self.to_stats(h).chunk(2, dim=1)
        return mu, logvar.clamp(-20.0, 10.0)

    def encode(self, x: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Audio (B, n) -> (mu, logvar), each (B, latent)."""
        return self.encode_spec(self.front(x))

    def decode_grid(self, z: torch.Tensor) -> torch.Tensor:
        """Latent (B, latent) -> (B, 1, 16 pool_freq, 16 pool_time): the decoder's own resolution."""
        return self.decoder(self.from_latent(z).view(-1, *self.grid))

    def decode(self, z: torch.Tensor, shape: tuple[int, int]) -> torch.Tensor:
        """Latent (B, latent) -> standardised spectrogram (B, 1, F, T) resized to the given (F, T)."""
        return F.interpolate(self.decode_grid(z), size=shape, mode="bilinear", align_corners=False)

    def forward(self, x: torch.Tensor) -> dict[str, torch.Tensor]:
        """Encode, sample, decode. The reconstruction is compared on a grid no finer than the decoder's own
        (the spectrogram is average-pooled down to it; the decoder output is pooled down to the spectrogram's
        frame count when that is smaller), which keeps the decoder cheap for long clips and fine FFTs."""
        s = self.front(x)
        mu, logvar = self.encode_spec(s)
        z = mu + torch.randn_like(mu) * torch.exp(0.5 * logvar) if self.training else mu
        rec = self.decode_grid(z)
        grid = (min(s.shape[-2], rec.shape[-2]), min(s.shape[-1], rec.shape[-1]))
        return {"spec": F.adaptive_avg_pool2d(s, grid), "rec": F.adaptive_avg_pool2d(rec, grid), "mu": mu,
                "logvar": logvar}


def vae_loss(out: dict[str, torch.Tensor], beta: float) -> dict[str, torch.Tensor]:
    """Reconstruction MSE + beta x KL(q(z|x) || N(0, I)) (KL summed over latent dims, averaged over the batch)."""
    rec = F.mse_loss(out["rec"].float(), out["spec"].float())
    mu, logvar = out["mu"].float(), out["logvar"].float()
    kl = (-0.5 * (1 + logvar - mu**2 - logvar.exp()).sum(dim=1)).mean()
    return {"loss": rec + beta * kl, "rec": rec, "kl": kl, "beta": torch.tensor(beta)}


def count_parameters(module: nn.Module) -> int:
    return sum(p.numel() for p in module.parameters())


__all__ = ["SpecVAE", "SpecFrontEnd", "cyclic_beta", "vae_loss", "count_parameters"]
