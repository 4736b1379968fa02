"""Timbre axes (``proposed_timbre``): a controller latent whose first axes are the AudioCommons timbral features.

With ``timbre_axes = true`` every effect's controller passes through an unbounded bottleneck of
``len(AC_FEATURES) + free_axes`` numbers (:class:`models.proposed.controller.Controller` with ``squash = False``)
and decodes the settings from it, as the knob controller does. Axis ``k < 8`` is trained (besides the usual
parameter and audio losses) to equal the change the reference's processing makes to AudioCommons feature ``k`` of
the input, ``AC_k(target) - AC_k(input)`` (target: the input processed with the reference's settings, so that the
change is the effect's alone and not the difference between two segments of the source), in units of the
effect's spread of that change: the standard deviation of it over the labelled training examples, kept with the
controller (``EffectHead.ac_unit``). The free axes carry whatever else the settings need. This is a perceptually
regularised latent in the sense of Esling et al. (ISMIR 2018), with the AudioCommons features as the perceptual
structure.

The labels cost one AudioCommons extraction per labelled clip (``timbre_examples`` inputs and targets per effect),
computed batched through the ``ac`` metric (:func:`models.proposed.latent.ac_features`), whose disk cache keeps
them for the next training.

Adjusting a match (``afx-bench match --adjust brightness=+10``, parsed by the command): the axes of the matched
answer are moved by the asked change divided by the effect's spread of that feature, and the settings decoded again
(:meth:`models.proposed.system.Proposed.adjusted_params`).
"""

from __future__ import annotations

import numpy as np

from models.proposed.latent import AC_FEATURES

LABEL_CLIP = 5.0  # labels beyond +-this many spreads (a near-silent clip's feature) are clipped
MIN_LABELLED = 4  # a feature with fewer finite labels than this has no unit for the effect


def feature_matrix(features, clips) -> np.ndarray:
    """(n, 8) AudioCommons features of ``clips`` through ``features`` (clips -> list of dicts); NaN where missing."""
    recs = features([np.asarray(c, np.float32) for c in clips])
    return np.array([[float(r.get(f, np.nan)) for f in AC_FEATURES] for r in recs], dtype=np.float64)


def labels(features, inputs: np.ndarray, targets: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Labels (n, 8) in units of the effect's spread, NaN where unlabelled, and the units (8; NaN: the effect does
    not change that feature measurably)."""
    both = feature_matrix(features, list(inputs) + list(targets))
    delta = both[len(inputs):] - both[: len(inputs)]
    with np.errstate(all="ignore"):
        finite = np.isfinite(delta).sum(axis=0)
        unit = np.where(finite >= MIN_LABELLED, np.nanstd(delta, axis=0, ddof=1), np.nan)
    unit = np.where(unit > 1e-6, unit, np.nan)
    lab = np.clip(delta / unit, -LABEL_CLIP, LABEL_CLIP)
    return lab, unit


def masked_mse(pred, target):
    """Mean squared error over the finite entries of ``target`` (a torch tensor with NaN where unlabelled); 0
    when nothing in the batch is labelled."""
    import torch

    ok = torch.isfinite(target)
    if not bool(ok.any()):
        return pred.sum() * 0.0
    diff = torch.where(ok, pred.float() - torch.nan_to_num(target), torch.zeros_like(pred, dtype=torch.float32))
    return (diff**2).sum() / ok.sum()


def _torch():
    import torch
    from torch import nn

    return torch, nn


def forward_model(n_params: int, n_features: int):
    """Settings (B, P) in [0, 1] -> predicted feature changes (B, n_features) in units of the effect's spread: a
    linear model (ridge regression on the labelled training examples, :func:`fit_forward`). A few dozen labels per
    effect cannot support more: an MLP fitted to them interpolates the noise (validation MSE far above training).
    It lets the controller's decoder be trained *off* the data's manifold: moving one timbre axis alone must
    change that feature alone as this model predicts it (:func:`consistency_loss`)."""
    _, nn = _torch()
    return nn.Linear(n_params, n_features)


def fit_forward(fwd, params, labels, ridge: float = 1.0) -> float:
    """Ridge regression of each feature's labels on the settings (its finite rows only; a feature with too few
    gets zero weights); returns the mean squared residual over the labelled entries. The model is frozen after."""
    torch, _ = _torch()
    x = params.double()
    X = torch.cat([x, torch.ones(len(x), 1, dtype=x.dtype)], dim=1)
    W = torch.zeros(X.shape[1], labels.shape[1], dtype=x.dtype)
    reg = ridge * torch.eye(X.shape[1], dtype=x.dtype)
    reg[-1, -1] = 0.0  # the intercept is not shrunk
    sse, count = 0.0, 0
    for f in range(labels.shape[1]):
        ok = torch.isfinite(labels[:, f])
        if int(ok.sum()) < MIN_LABELLED:
            continue
        Xf, yf = X[ok], labels[ok, f].double()
        W[:, f] = torch.linalg.solve(Xf.T @ Xf + reg, Xf.T @ yf)
        sse += float(((Xf @ W[:, f] - yf) ** 2).sum())
        count += int(ok.sum())
    with torch.no_grad():
        fwd.weight.copy_(W[:-1].T.float())
        fwd.bias.copy_(W[-1].float())
    fwd.eval()
    fwd.requires_grad_(False)  # frozen: the consistency loss trains the decoder, never the model
    return sse / count if count else float("nan")


def consistency_loss(head, axes, fwd, usable, generator=None):
    """``axes``: (B, knobs) where the controller's axes stand (the named ones first). Move one named axis of each row by a random step (N(0, 1) spreads) and decode: the forward model's predicted
    change of the features between the two decoded settings should be that step on that feature and 0 on the
    others (features the effect does not change, ``usable`` False, are left out)."""
    torch, _ = _torch()
    n = int(usable.numel())
    B = axes.shape[0]
    j = torch.randint(0, n, (B,), device=axes.device, generator=generator)
    step = torch.randn(B, device=axes.device, generator=generator)
    moved = axes.clone()
    moved[torch.arange(B), j] += step
    p0, p1 = head.from_knobs(axes, hedged=False), head.from_knobs(moved, hedged=False)
    want = torch.zeros(B, n, device=axes.device)
    want[torch.arange(B), j] = step
    got = fwd(p1.float()) - fwd(p0.float())
    keep = usable[None].expand(B, n) & usable[j][:, None]
    return ((got - want)[keep] ** 2).mean() if bool(keep.any()) else got.sum() * 0.0
