"""The one-shot EQ network and the discretisation of normalised parameters into classes.

Shapes: audio ``(B, n)`` -> mel spectrogram ``(B, 1, F, T)`` -> shared CNN -> embedding ``(B, 1, F)`` per clip;
input and reference embeddings stacked ``(B, 2, F)`` -> comparison convolution ``(B, 1, F)`` -> two feed-forward
layers -> logits ``(B, P, D)``, one softmax over ``D`` classes per parameter.
"""

from __future__ import annotations

import warnings

import torch
from torch import nn

from models.nn import LogMel

DECODINGS = ("argmax", "expected", "median")

# --- discretisation -----------------------------------------------------------------------------------------
# Class k of D stands for the normalised value k / (D - 1): the centres span [0, 1] with both ends included, so
# the extreme settings of every parameter are representable and a value is at most 1 / (2 (D - 1)) from its class.


def class_centres(n_classes: int, device=None) -> torch.Tensor:
    return torch.linspace(0.0, 1.0, n_classes, device=device)


def to_classes(params01: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Normalised values ``(..., P)`` -> the nearest class index ``(..., P)`` (int64)."""
    return torch.round(params01.clamp(0.0, 1.0) * (n_classes - 1)).long()


def from_classes(classes: torch.Tensor, n_classes: int) -> torch.Tensor:
    """Class indices -> their centres in [0, 1]."""
    return classes.float() / (n_classes - 1)


def soft_targets(params01: torch.Tensor, n_classes: int, sigma: float) -> torch.Tensor:
    """``(..., P)`` -> ``(..., P, D)``: one-hot on the nearest class when ``sigma == 0``, else a Gaussian over the
    classes centred on the exact value with ``sigma`` in class widths (neighbouring classes count as near misses)."""
    if sigma <= 0:
        return nn.functional.one_hot(to_classes(params01, n_classes), n_classes).float()
    centres = class_centres(n_classes, params01.device)
    d = (params01.clamp(0.0, 1.0)[..., None] - centres) * (n_classes - 1) / sigma
    w = torch.exp(-0.5 * d * d)
    return w / w.sum(-1, keepdim=True)


def decode(logits: torch.Tensor, how: str = "expected") -> torch.Tensor:
    """Logits ``(..., P, D)`` -> normalised values ``(..., P)``.

    argmax: the most likely class's centre; expected: the mean of the predicted distribution over the centres;
    median: its median (the value that minimises the expected absolute error, i.e. the paper's MAE)."""
    n = logits.shape[-1]
    centres = class_centres(n, logits.device)
    if how == "argmax":
        return from_classes(logits.argmax(-1), n)
    probs = torch.softmax(logits.float(), -1)
    if how == "expected":
        return probs @ centres
    if how == "median":
        cdf = probs.cumsum(-1)
        idx = (cdf < 0.5).sum(-1).clamp(max=n - 1)
        return from_classes(idx, n)
    raise ValueError(f"oneshot_eq: unknown decoding {how!r}; valid: {', '.join(DECODINGS)}")


# --- the network --------------------------------------------------------------------------------------------


class Features(nn.Module):
    """Mel spectrogram, dB-scaled (the paper's choice) or linear magnitude (the Sheng and Fazekas-style variant),
    with a fixed affine scaling shared by input and reference so that their level difference survives."""

    def __init__(self, sample_rate: int, window_ms: float, hop_ms: float, n_mels: int, db: bool):
        super().__init__()
        win = max(16, round(sample_rate * window_ms / 1000))
        hop = max(1, round(sample_rate * hop_ms / 1000))
        n_fft = 1 << (win - 1).bit_length()
        with warnings.catch_warnings():  # librosa warns about empty mel filters for short windows
            warnings.simplefilter("ignore", UserWarning)
            self.mel = LogMel(sample_rate, n_fft, hop, n_mels=n_mels, db=db, win=win)
        self.db = db

    def forward(self, audio: torch.Tensor) -> torch.Tensor:
        x = self.mel(audio)
        # dB: speech at -23 LUFS spans about -80..+20 dB per mel band; linear: magnitudes of order 0..10
        return (x + 40.0) / 20.0 if self.db else x / 2.0


class Encoder(nn.Module):
    """The shared CNN: ``(B, 1, F, T)`` -> ``(B, 1, F)``. Convolutions keep the frequency axis (strided in time
    only), are averaged over time, and a 1x1 convolution mixes the channels into one value per band."""

    def __init__(self, channels: int, layers: int, kernel: int, time_stride: int, batch_norm: bool = False):
        super().__init__()
        mods: list[nn.Module] = []
        c_in = 1
        for _ in range(layers):
            mods.append(nn.Conv2d(c_in, channels, kernel, stride=(1, time_stride), padding=kernel // 2))
            if batch_norm:
                mods.append(nn.BatchNorm2d(channels))
            mods.append(nn.ReLU())
            c_in = channels
        self.convs = nn.Sequential(*mods)
        self.mix = nn.Conv1d(channels, 1, 1)

    def forward(self, spec: torch.Tensor) -> torch.Tensor:
        return self.mix(self.convs(spec).mean(-1))


class OneShotEQNet(nn.Module):
    def __init__(self, *, sample_rate: int, n_params: int, n_classes: int, n_mels: int, window_ms: float,
                 hop_ms: float, db: bool, channels: int, conv_layers: int, kernel: int, time_stride: int,
                 compare_kernel: int, hidden: int, dropout: float, batch_norm: bool = False,
                 compare_init: str = "random"):
        super().__init__()
        self.n_params, self.n_classes = n_params, n_classes
        self.features = Features(sample_rate, window_ms, hop_ms, n_mels, db)
        self.encoder = Encoder(channels, conv_layers, kernel, time_stride, batch_norm)
        self.compare = nn.Conv1d(2, 1, compare_kernel, padding=compare_kernel // 2)
        if compare_init == "difference":  # start as (reference - input) per band: the EQ curve is a difference
            with torch.no_grad():
                self.compare.weight.zero_()
                self.compare.weight[0, 0, compare_kernel // 2] = -1.0
                self.compare.weight[0, 1, compare_kernel // 2] = 1.0
                self.compare.bias.zero_()
        self.ffn1 = nn.Sequential(nn.Linear(n_mels, hidden), nn.ReLU(), nn.Dropout(dropout))
        self.ffn2 = nn.Linear(hidden, n_params * n_classes)

    def embed(self, audio: torch.Tensor) -> torch.Tensor:
        return self.encoder(self.features(audio))

    def forward(self, inputs: torch.Tensor, references: torch.Tensor) -> torch.Tensor:
        """Audio ``(B, n)`` and ``(B, m)`` -> logits ``(B, P, D)``. Input and reference may differ in length."""
        if inputs.shape[-1] == references.shape[-1]:  # one pass through the shared encoder for both
            e = self.embed(torch.cat([inputs, references]))
            e_in, e_ref = e.chunk(2)
        else:
            e_in, e_ref = self.embed(inputs), self.embed(references)
        z = self.compare(torch.cat([e_in, e_ref], dim=1)).squeeze(1)
        return self.ffn2(self.ffn1(z)).view(-1, self.n_params, self.n_classes)
