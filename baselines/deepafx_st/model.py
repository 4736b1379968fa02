"""DeepAFx-ST's networks: an EfficientNet-style CNN on the STFT magnitude that embeds input and reference with
shared weights, and a controller MLP that maps the two embeddings to normalised effect parameters.

The encoder follows EfficientNet's recipe (Tan and Le, 2019): a stride-2 stem, stages of mobile inverted
bottleneck blocks (1x1 expansion, depthwise convolution, squeeze-and-excitation, 1x1 projection, residual when
the shape allows), a 1x1 head, global average pooling. ``width`` and ``depth`` scale the B0 stage table's
channels and repeats, and ``stages`` keeps the first few stages, so the smoke preset can run a tiny one.
"""

from __future__ import annotations

import math

import torch
from torch import nn

from models.nn import Spectrogram

# EfficientNet-B0's stages: (expansion, output channels, repeats, stride, kernel)
B0_STAGES = ((1, 16, 1, 1, 3), (6, 24, 2, 2, 3), (6, 40, 2, 2, 5), (6, 80, 3, 2, 3), (6, 112, 3, 1, 5),
             (6, 192, 4, 2, 5), (6, 320, 1, 1, 3))
B0_STEM, B0_HEAD = 32, 1280


def _channels(c: float, width: float) -> int:
    """Scale channels by ``width`` and round to a multiple of 8 (never below 8, never 10 % under the target)."""
    v = c * width
    out = max(8, int(v + 4) // 8 * 8)
    return out + 8 if out < 0.9 * v else out


class SqueezeExcite(nn.Module):
    def __init__(self, channels: int, reduced: int):
        super().__init__()
        self.fc = nn.Sequential(nn.AdaptiveAvgPool2d(1), nn.Conv2d(channels, reduced, 1), nn.SiLU(),
                                nn.Conv2d(reduced, channels, 1), nn.Sigmoid())

    def forward(self, x):
        return x * self.fc(x)


class MBConv(nn.Module):
    """Mobile inverted bottleneck with squeeze-and-excitation (ratio 0.25 of the block's input channels)."""

    def __init__(self, cin: int, cout: int, expand: int, kernel: int, stride: int):
        super().__init__()
        hidden = cin * expand
        layers: list[nn.Module] = []
        if expand != 1:
            layers += [nn.Conv2d(cin, hidden, 1, bias=False), nn.BatchNorm2d(hidden), nn.SiLU()]
        layers += [nn.Conv2d(hidden, hidden, kernel, stride, kernel // 2, groups=hidden, bias=False),
                   nn.BatchNorm2d(hidden), nn.SiLU(), SqueezeExcite(hidden, max(1, cin // 4)),
                   nn.Conv2d(hidden, cout, 1, bias=False), nn.BatchNorm2d(cout)]
        self.block = nn.Sequential(*layers)
        self.residual = stride == 1 and cin == cout

    def forward(self, x):
        y = self.block(x)
        return x + y if self.residual else y


class Encoder(nn.Module):
    """(B, n) audio -> (B, embed_dim): STFT magnitude (compressed) through an EfficientNet-style CNN."""

    def __init__(self, *, n_fft: int, hop: int, spec_power: float, width: float, depth: float, stages: int,
                 embed_dim: int):
        super().__init__()
        self.spec = Spectrogram(n_fft, hop, power=spec_power)
        stem = _channels(B0_STEM, width)
        layers: list[nn.Module] = [nn.Conv2d(1, stem, 3, 2, 1, bias=False), nn.BatchNorm2d(stem), nn.SiLU()]
        cin = stem
        for expand, c, repeats, stride, kernel in B0_STAGES[:stages]:
            cout = _channels(c, width)
            for i in range(int(math.ceil(repeats * depth))):
                layers.append(MBConv(cin, cout, expand, kernel, stride if i == 0 else 1))
                cin = cout
        head = _channels(B0_HEAD, width)
        layers += [nn.Conv2d(cin, head, 1, bias=False), nn.BatchNorm2d(head), nn.SiLU(), nn.AdaptiveAvgPool2d(1),
                   nn.Flatten(), nn.Linear(head, embed_dim)]
        self.net = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.net(self.spec(x))


class Controller(nn.Module):
    """MLP on the concatenated input and reference embeddings -> parameters in [0, 1] (sigmoid)."""

    def __init__(self, embed_dim: int, hidden: int, n_params: int):
        super().__init__()
        self.net = nn.Sequential(nn.Linear(2 * embed_dim, hidden), nn.LeakyReLU(0.01), nn.Linear(hidden, hidden),
                                 nn.LeakyReLU(0.01), nn.Linear(hidden, n_params), nn.Sigmoid())

    def forward(self, e_input: torch.Tensor, e_reference: torch.Tensor) -> torch.Tensor:
        return self.net(torch.cat([e_input, e_reference], -1))


class DeepAFxST(nn.Module):
    """Encoder (shared by input and reference) + controller: ``forward(input, reference) -> params01 (B, P)``."""

    def __init__(self, n_params: int, *, n_fft: int, hop: int, spec_power: float, width: float, depth: float,
                 stages: int, embed_dim: int, hidden: int):
        super().__init__()
        self.encoder = Encoder(n_fft=n_fft, hop=hop, spec_power=spec_power, width=width, depth=depth,
                               stages=stages, embed_dim=embed_dim)
        self.controller = Controller(embed_dim, hidden, n_params)

    def forward(self, x: torch.Tensor, r: torch.Tensor) -> torch.Tensor:
        e = self.encoder(torch.cat([x, r], 0))  # one pass: the same weights embed both
        e_x, e_r = e.split(x.shape[0])
        return self.controller(e_x.float(), e_r.float()).float()
