"""Spectral distances between a system's output and the target."""

from __future__ import annotations

from dataclasses import dataclass, field

from bench.metrics import Metric, register_metric


@register_metric("mrstft")
class MRSTFT(Metric):
    """auraloss's multi-resolution STFT loss (spectral convergence + log-magnitude L1, averaged over
    resolutions) between output and target. Batched; on the GPU when the run has one."""

    name = "mrstft"

    @dataclass
    class Config:
        fft_sizes: list = field(default_factory=lambda: [256, 1024, 4096])
        hop_sizes: list = field(default_factory=lambda: [64, 256, 1024])
        win_lengths: list = field(default_factory=lambda: [256, 1024, 4096])

    def __init__(self, config=None, **kw):
        super().__init__(config, **kw)
        import auraloss

        self.loss = auraloss.freq.MultiResolutionSTFTLoss(
            fft_sizes=list(self.cfg.fft_sizes), hop_sizes=list(self.cfg.hop_sizes),
            win_lengths=list(self.cfg.win_lengths),
        ).to(self.device)

    def score_batch(self, estimates, examples):
        # auraloss's spectral-convergence term is a norm over the whole batch, so each example is scored alone
        import torch

        out = []
        with torch.no_grad():
            for est, ex in zip(estimates, examples, strict=True):
                x = torch.as_tensor(est.output, dtype=torch.float32, device=self.device)[None, None]
                y = torch.as_tensor(ex.target, dtype=torch.float32, device=self.device)[None, None]
                out.append({"mrstft": float(self.loss(x, y))})
        return out

    def score(self, estimate, example):
        return self.score_batch([estimate], [example])[0]
