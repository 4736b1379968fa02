"""The latent-space study of a trained controller (the API behind ``afx-bench study latent`` and the study that
``afx-bench run`` adds to the report: :mod:`models.proposed.study`).

**What is walked.** Two kinds of space, both decoded by the trained controller *before the hedge* (``hedged =
False``, the default: ``proposed``'s validated blend towards one constant setting would pull every decoded
setting the same share of the way to that constant and flatten what the latent encodes; ``proposed_paper`` and the
variants without a hedge are the same either way):

* ``vae`` (the default where the system has one): the beta-VAE's mean latent of the reference. Its principal axes
  are found over the references' latents (standardised per dimension); each of the first ``axes`` is walked from
  ``-span`` to ``+span`` standard deviations around the mean, the rest of the code the controller reads (the
  descriptors, where the system uses them) held at the references' mean and the input's own code held.
* ``code``: the same over the whole code the controller reads (latent and descriptors alike); the default of a
  system without a VAE latent.
* ``knobs``: a controller with a bottleneck (``knobs = k``: ``proposed_knobs``) gives every setting through ``k``
  numbers in [-1, 1]; each knob is walked from ``-span`` to ``+span`` of its standard deviation over the
  references (clipped to [-1, 1]), the others held at their mean.

* ``timbre``: a controller with timbre axes (``proposed_timbre``) gives every setting through one axis per
  AudioCommons feature plus free axes; each named axis is walked as a knob is (from ``-span`` to ``+span`` of its
  standard deviation over the references, unclipped: the axes are unbounded), the others held at their mean. Its
  rows also give the share of the axis's *own* feature (``own_share``, with its interval): the selectivity asks
  which feature moves most, the own share whether it is the one the axis is named after.

Plus an **interpolation** between two references' positions (the first example's and the one whose true settings
differ most from it), drawn for the mel-spectrogram figure.

**What is measured.** Every walk is repeated on ``inputs`` input clips (the unit of replication: the CIs are over
them). Each processed clip is described by the AudioCommons timbral features (hardness, depth, brightness,
roughness, warmth, sharpness, boominess, reverb; :mod:`bench.metrics` ``ac``). The unit of every feature is the
**effect's own spread** of it: the standard deviation of the feature over the same input processed with the
effect's settings drawn as the data draws them (``spread_params``). Per axis:

* ``slope/f``: change of feature ``f`` per standard deviation along the axis, in those units (mean over inputs,
  95 % t-interval over inputs);
* ``share/f`` = |slope/f| / sum of |slopes| (bootstrap CI over inputs); the largest is the axis's *selectivity*
  (1: it moves one feature and leaves the rest; 1/8: all alike);
* ``change``: the largest linear change of any feature over the whole walk (|slope| x the walk's length, in
  spreads); the axis *moves* something when it is at least ``MOVES`` (a quarter of the effect's spread);
* ``output_r2``: share of the variance of the features of the controller's answers over the references (the
  settings it decodes for each reference, applied to each input) that a linear fit on this axis explains.

Per space: ``output_r2`` of all studied axes together, ``coverage`` (the spread of the controller's answers' features
over the references in units of the effect's spread: near 0 when it gives the same answer whatever the reference)
and ``moves_nothing``, stated plainly in the verdict.

Files (see :func:`write`): ``<effect>__<system>_{summary,axes,probes}.csv``, ``..._mel_grid.png`` and
``..._trajectories.png``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AC_FEATURES = ("hardness", "depth", "brightness", "roughness", "warmth", "sharpness", "boominess", "reverb")
MOVES = 0.25  # an axis moves a feature when its walk changes it by this share of the effect's spread
BOOTSTRAP = 2000  # resamples of the inputs for the selectivity CIs
SELECTIVE = 0.6  # a named (timbre) axis is selective when its own feature moves most, with this share at least


@dataclass
class Exploration:
    effect: str
    system: str = ""
    space: str = "code"  # code | knobs
    controller: str = ""  # what was decoded, in words: see controller_kind()
    feature_source: str = ""
    feature_names: tuple[str, ...] = ()
    dims: int = 0
    n_inputs: int = 0
    n_references: int = 0
    rows: list[dict] = field(default_factory=list)  # one per processed clip
    axes: list[dict] = field(default_factory=list)  # one per axis
    summary: dict = field(default_factory=dict)
    unit: dict[str, float] = field(default_factory=dict)  # per feature: the effect's own spread (NaN: none)
    audio: dict[str, list[np.ndarray]] = field(default_factory=dict)  # path -> clips of input 0 in order
    positions: dict[str, list[float]] = field(default_factory=dict)


def controller_kind(system, effect, hedged: bool) -> str:
    """What was explored, in words: the controller before the hedge, with it, or a controller that has none."""
    name = getattr(system, "name", "system")
    active = effect.name in getattr(system, "hedged_effects", [])
    if not active:
        return f"{name}: the controller as trained (no hedge is active for {effect.name})"
    if hedged:
        return f"{name}: the hedged answers (as match gives them: blended towards a constant setting)"
    return f"{name}: the controller before the hedge (its blend towards a constant setting left out)"


def ac_features(sample_rate: int, config: dict | None = None):
    """A function clips -> list of feature dicts, using the AudioCommons metric's extractor (cached on disk,
    computed in worker processes as the metric's ``workers`` says). Falls back to three librosa descriptors when
    the metric is not available, and says so."""
    try:
        from bench.metrics import get_metric

        metric = get_metric("ac", dict(config or {}), sample_rate=sample_rate)
    except Exception as e:  # the metric or timbral_models missing: keep the tool usable
        import warnings

        warnings.warn(f"latent: AudioCommons features unavailable ({e}); using librosa descriptors", stacklevel=2)
        return _librosa_features(sample_rate), "librosa"

    def fn(clips):
        return [rec["features"] for rec in metric.features([np.asarray(c, np.float32) for c in clips])]

    fn.close = metric.close  # its worker processes, when the caller is done
    return fn, "audiocommons"


def _librosa_features(sample_rate: int):
    import librosa

    def fn(clips):
        out = []
        for c in clips:
            c = np.asarray(c, np.float32)
            out.append({
                "centroid_hz": float(np.mean(librosa.feature.spectral_centroid(y=c, sr=sample_rate))),
                "flatness": float(np.mean(librosa.feature.spectral_flatness(y=c))),
                "rms_db": float(10 * np.log10(np.mean(c.astype(np.float64) ** 2) + 1e-12)),
            })
        return out

    return fn


# --- the spaces ---------------------------------------------------------------------------------------------
@dataclass
class _Space:
    """Axes to walk, how to decode a position for input ``m``, and where each reference sits."""

    kind: str
    dims: int
    names: list[str]
    walks: list[tuple[np.ndarray, np.ndarray]]  # per axis: positions (sd units), points (steps, dims)
    variance: list[float]  # per axis: share of the space's variance (NaN for knobs)
    ref_points: list[np.ndarray]  # per input: (N, dims) the references' positions
    ref_scores: list[np.ndarray]  # per input: (N, axes) the references' positions along the axes, in sd units
    decode: object  # (points (n, dims), input index m) -> params01 (n, P)
    own: list[str] = field(default_factory=list)  # per axis: the feature it is named after ("" where none)


def _code_space(system, effect, c_in, c_ref: np.ndarray, *, axes: int, ts: np.ndarray, hedged: bool,
                dims: int = 0) -> _Space:
    """Principal axes of the references' codes; ``dims`` > 0: of their first ``dims`` dimensions only (the VAE
    latent), the rest of the code (the descriptors) held at the references' mean."""
    import torch

    def decode(points, m):
        t = torch.as_tensor(points, dtype=torch.float32, device=c_in.device)
        return system.predict_from_codes(effect, c_in[m : m + 1].expand(len(t), -1), t, hedged=hedged)

    part = slice(0, dims or c_ref.shape[1])
    mu, sd = c_ref.mean(axis=0), c_ref.std(axis=0) + 1e-8
    Z = (c_ref[:, part] - mu[part]) / sd[part]
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    var = s**2 / max(len(Z) - 1, 1)
    ratio = var / max(var.sum(), 1e-12)
    k = min(int(axes), int(np.sum(var > 1e-12 * max(var.max(), 1e-30))))
    walks = []
    for a in range(k):
        pts = np.repeat(mu[None], len(ts), axis=0)
        pts[:, part] += sd[part] * (ts[:, None] * np.sqrt(var[a]) * vt[a][None])
        walks.append((ts, pts))
    scores = (Z @ vt[:k].T) / np.sqrt(var[:k])[None]
    n_in = len(c_in)
    return _Space("vae" if dims else "code", Z.shape[1], [f"pc{a + 1}" for a in range(k)], walks,
                  [float(r) for r in ratio[:k]], [c_ref] * n_in, [scores] * n_in, decode)


def _knob_space(system, effect, c_in, c_ref: np.ndarray, *, ts: np.ndarray, hedged: bool,
                names: tuple[str, ...] = ()) -> _Space:
    """The knobs (bounded to [-1, 1]); ``names``: the timbre axes instead (the first ``len(names)`` knobs,
    unbounded, named after their features; the free axes held at their mean)."""
    import torch

    def decode(points, m):
        return system.predict_from_knobs(effect, points, hedged=hedged)

    ref = torch.as_tensor(c_ref, dtype=torch.float32, device=c_in.device)
    K = [system.knobs(effect, c_in[m : m + 1].expand(len(ref), -1), ref) for m in range(len(c_in))]
    allk = np.concatenate(K)
    mu, sd = allk.mean(axis=0), allk.std(axis=0) + 1e-8
    walks = []
    walked = len(names) or allk.shape[1]
    for j in range(walked):
        pts = np.repeat(mu[None], len(ts), axis=0)
        pts[:, j] = mu[j] + ts * sd[j] if names else np.clip(mu[j] + ts * sd[j], -1.0, 1.0)
        walks.append(((pts[:, j] - mu[j]) / sd[j], pts))
    labels = [f"{n}_axis" for n in names] if names else [f"knob{j + 1}" for j in range(walked)]
    return _Space("timbre" if names else "knobs", allk.shape[1], labels, walks, [float("nan")] * walked, K,
                  [((k - mu) / sd)[:, :walked] for k in K], decode, own=list(names))


# --- the probes ---------------------------------------------------------------------------------------------
def explore(system, effect, examples: list, *, features, feature_source: str = "", spread_params=None,
            steps: int = 7, axes: int = 4, span: float = 2.0, inputs: int = 4, references: int = 0,
            hedged: bool = False, space: str = "auto", seed: int = 0) -> Exploration:
    """Walk the system's latent space for ``effect`` (see the module docstring) and describe every processed clip
    with ``features`` (clips -> list of {name: value}). ``examples``: the effect's examples (input, reference and,
    for the harness's choices, true settings); the first ``references`` (0: all) give the references, the first
    ``inputs`` the input clips. ``spread_params`` (R, P): settings that show the effect's own spread (default: the
    examples' true settings). ``space``: auto (knobs where the controller has them, else code) | code | knobs."""
    for attr in ("code", "predict_from_codes"):
        if not hasattr(system, attr):
            raise TypeError(f"latent: system {getattr(system, 'name', system)!r} has no latent codes (needs "
                            f"{attr}()); only the proposed model and its variants support the latent study")
    if effect.n_params == 0:
        raise ValueError(f"latent: {effect.name} has no parameters to decode")
    refs = examples[: references or len(examples)]
    if len(refs) < 3:
        raise ValueError(f"latent: needs at least three references, got {len(refs)}")
    ins = examples[: max(1, min(int(inputs), len(examples)))]
    steps, sr = max(3, int(steps)), system.sample_rate
    knob_count = int(getattr(system, "knob_count", 0) or 0)
    vae_dims = int(getattr(system, "latent_dims", 0) or 0)
    timbre = tuple(getattr(system, "timbre_names", ()) or ())
    if space == "auto":
        space = "timbre" if timbre else ("knobs" if knob_count else ("vae" if vae_dims else "code"))
    if space not in ("code", "vae", "knobs", "timbre"):
        raise ValueError(f"latent: space {space!r}; valid: auto, code, vae, knobs, timbre")
    if ((space == "knobs" and not knob_count) or (space == "vae" and not vae_dims)
            or (space == "timbre" and not timbre)):
        raise ValueError(f"latent: {getattr(system, 'name', system)} has no {space} to walk")
    if spread_params is None:
        if any(e.true_params01 is None for e in refs):
            raise ValueError("latent: spread_params needed when the examples carry no true settings")
        spread_params = np.stack([e.true_params01 for e in refs])
    spread_params = np.asarray(spread_params, dtype=np.float64)

    c_ref = system.code(np.stack([e.reference for e in refs])).float().cpu().numpy().astype(np.float64)
    c_in = system.code(np.stack([e.input for e in ins])).float()
    ts = np.linspace(-span, span, steps)
    sp = (_knob_space(system, effect, c_in, c_ref, ts=ts, hedged=hedged, names=timbre if space == "timbre" else ())
          if space in ("knobs", "timbre")
          else _code_space(system, effect, c_in, c_ref, axes=axes, ts=ts, hedged=hedged,
                           dims=vae_dims if space == "vae" else 0))
    if not sp.names:
        raise ValueError(f"latent: the references' {sp.kind} does not vary: no axis to walk")

    # the interpolation (input 0): from the first reference to the one whose settings differ most from it
    P = np.stack([e.true_params01 for e in refs]) if all(e.true_params01 is not None for e in refs) else None
    ib = int(np.argmax(np.abs(P - P[0]).sum(axis=1))) if P is not None else int(
        np.argmax(np.linalg.norm(sp.ref_points[0] - sp.ref_points[0][0], axis=1)))
    ib = ib or 1
    alphas = np.linspace(0.0, 1.0, steps)
    a_pts = (1 - alphas)[:, None] * sp.ref_points[0][0] + alphas[:, None] * sp.ref_points[0][ib]

    # every probe: (path, input m, positions, params)
    probes: list[tuple[str, int, np.ndarray, np.ndarray]] = [("interpolation", 0, alphas, sp.decode(a_pts, 0))]
    for m in range(len(ins)):
        for name, (pos, pts) in zip(sp.names, sp.walks, strict=True):
            probes.append((name, m, pos, sp.decode(pts, m)))
        probes.append(("references", m, np.arange(len(refs), dtype=float), sp.decode(sp.ref_points[m], m)))
        probes.append(("range", m, np.arange(len(spread_params), dtype=float), spread_params))
    audio = [effect.process(np.repeat(ins[m].input[None], len(p), axis=0), sr, np.clip(p, 0, 1))
             for _, m, _, p in probes]
    feats = features([y for a in audio for y in a])
    res = Exploration(effect.name, system=getattr(system, "name", ""), space=sp.kind,
                      controller=controller_kind(system, effect, hedged), feature_source=feature_source,
                      feature_names=tuple(feats[0].keys()) if feats else (), dims=sp.dims, n_inputs=len(ins),
                      n_references=len(refs))
    i = 0
    for (path, m, pos, p), ys in zip(probes, audio, strict=True):
        if m == 0 and path not in ("references", "range"):
            res.audio[path], res.positions[path] = list(ys), [float(v) for v in pos]
        for j in range(len(p)):
            row = {"effect": effect.name, "system": res.system, "space": sp.kind, "path": path, "input": m,
                   "example": ins[m].index, "position": float(pos[j])}
            row.update({f"param/{n}": float(v) for n, v in zip(effect.param_names, p[j], strict=True)})
            row.update({f"feature/{n}": float(v) for n, v in feats[i].items()})
            res.rows.append(row)
            i += 1
    _summarise(res, sp, effect.param_names, span, seed)
    return res


# --- the statistics -----------------------------------------------------------------------------------------
def _matrix(df, path: str, m: int, names) -> np.ndarray:
    g = df[(df["path"] == path) & (df["input"] == m)]
    return g[[f"feature/{n}" for n in names]].to_numpy(dtype=float)


def _t_interval(x: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Mean and 95 % t-interval over axis 0 (NaN bounds with one input)."""
    from scipy import stats

    mean = np.nanmean(x, axis=0)
    n = np.sum(np.isfinite(x), axis=0)
    se = np.nanstd(x, axis=0, ddof=1) / np.sqrt(np.maximum(n, 1)) if len(x) > 1 else np.full_like(mean, np.nan)
    h = stats.t.ppf(0.975, np.maximum(n - 1, 1)) * se
    h = np.where(n > 1, h, np.nan)
    return mean, mean - h, mean + h


def _shares(slopes: np.ndarray) -> np.ndarray:
    a = np.abs(np.nan_to_num(slopes, nan=0.0))
    total = a.sum(axis=-1, keepdims=True)
    return np.where(total > 0, a / np.where(total > 0, total, 1), np.nan)


def _r2(F: list[np.ndarray], S: list[np.ndarray]) -> float:
    """Share of the variance of F (per input: (N, features), centred per input) explained by a linear fit on S."""
    ss_res = ss_tot = 0.0
    for f, s in zip(F, S, strict=True):
        ok = np.all(np.isfinite(f), axis=1)
        if ok.sum() < 3:
            continue
        f, s = f[ok] - f[ok].mean(axis=0), s[ok] - s[ok].mean(axis=0)
        coef, *_ = np.linalg.lstsq(s, f, rcond=None)
        ss_res += float(((f - s @ coef) ** 2).sum())
        ss_tot += float((f**2).sum())
    return 1.0 - ss_res / ss_tot if ss_tot > 0 else float("nan")


def _quiet(fn):
    """A feature that is NaN on every clip (silence, or no unit) stays NaN, without numpy's empty-slice warnings."""
    import functools

    @functools.wraps(fn)
    def wrapped(*args, **kwargs):
        import warnings

        with warnings.catch_warnings():
            warnings.simplefilter("ignore", RuntimeWarning)
            return fn(*args, **kwargs)

    return wrapped


@_quiet
def _summarise(res: Exploration, sp: _Space, param_names: list[str], span: float, seed: int) -> None:
    import pandas as pd

    df = pd.DataFrame(res.rows)
    names = list(res.feature_names)
    M = res.n_inputs
    spread = np.nanmean([np.nanstd(_matrix(df, "range", m, names), axis=0, ddof=1) for m in range(M)], axis=0)
    scale = np.where(spread > 1e-9, spread, np.nan)  # a feature the effect does not change has no unit
    res.unit = {n: float(u) for n, u in zip(names, scale, strict=True)}
    F = [(_matrix(df, "references", m, names)) / scale for m in range(M)]
    F_ok = [np.nan_to_num(f, nan=0.0) for f in F]  # a feature without a unit adds nothing to the variance
    rng = np.random.default_rng(seed)
    boot = rng.integers(0, M, size=(BOOTSTRAP, M))
    for a, name in enumerate(sp.names):
        slopes, lengths = np.full((M, len(names)), np.nan), np.zeros(M)
        for m in range(M):
            g = df[(df["path"] == name) & (df["input"] == m)]
            t = g["position"].to_numpy(dtype=float)
            lengths[m] = np.ptp(t)
            V = g[[f"feature/{n}" for n in names]].to_numpy(dtype=float) / scale
            for f in range(len(names)):
                ok = np.isfinite(V[:, f])
                if ok.sum() >= 2 and np.ptp(t[ok]) > 0:
                    slopes[m, f] = np.polyfit(t[ok], V[ok, f], 1)[0]
        mean, low, high = _t_interval(slopes)
        share = _shares(mean)
        bshare = _shares(np.stack([np.nanmean(slopes[b], axis=0) for b in boot]))
        change_f = np.abs(mean) * float(np.mean(lengths))
        change = float(np.nanmax(change_f)) if np.isfinite(change_f).any() else 0.0
        moves = bool(change >= MOVES)
        main = int(np.nanargmax(share)) if moves and np.isfinite(share).any() else -1
        g0 = df[(df["path"] == name)]
        pos = g0["position"].to_numpy(dtype=float)
        pslope = {p: float(np.polyfit(pos, g0[f"param/{p}"].to_numpy(dtype=float), 1)[0]) for p in param_names}
        row = {"system": res.system, "effect": res.effect, "space": res.space, "axis": name,
               "code_variance": sp.variance[a], "output_r2": _r2(F_ok, [s[:, [a]] for s in sp.ref_scores]),
               "change": change, "moves": moves, "main_feature": names[main] if main >= 0 else "",
               "selectivity": float(share[main]) if main >= 0 else float("nan"),
               "main_param": max(pslope, key=lambda p: abs(pslope[p])) if pslope else "", "n_inputs": M}
        own = sp.own[a] if a < len(sp.own) else ""
        if own in names:  # a named axis: the share of its own feature, and whether that moves most
            f = names.index(own)
            lo, hi = (np.nanpercentile(bshare[:, f], [2.5, 97.5]) if np.isfinite(bshare[:, f]).any()
                      else (np.nan, np.nan))
            row.update(own_feature=own, own_share=float(share[f]), own_share_low=float(lo), own_share_high=float(hi),
                       own_slope=float(mean[f]), own_is_main=bool(row["main_feature"] == own))
        for f, n in enumerate(names):
            row[f"slope/{n}"], row[f"slope_low/{n}"], row[f"slope_high/{n}"] = mean[f], low[f], high[f]
            lo, hi = (np.nanpercentile(bshare[:, f], [2.5, 97.5]) if np.isfinite(bshare[:, f]).any()
                      else (np.nan, np.nan))
            row[f"share/{n}"], row[f"share_low/{n}"], row[f"share_high/{n}"] = share[f], float(lo), float(hi)
        res.axes.append(row)
    k = len(sp.names)
    r2 = _r2(F_ok, sp.ref_scores)
    coverage = float(np.nanmean([np.nanmean(np.nanstd(f, axis=0, ddof=1)) for f in F]))
    nothing = not any(a["moves"] for a in res.axes)
    res.summary = {"system": res.system, "effect": res.effect, "space": res.space, "controller": res.controller,
                   "feature_source": res.feature_source, "dims": res.dims, "n_axes": k, "n_inputs": M,
                   "n_references": res.n_references,
                   "code_variance": float(np.nansum(sp.variance)) if res.space != "knobs" else float("nan"),
                   "output_r2": r2, "coverage": coverage, "moves_nothing": nothing, "moves_threshold": MOVES,
                   "verdict": _verdict(res, nothing, r2, coverage, span)}
    if sp.own:  # named axes: how many move their own feature most, with a share of at least SELECTIVE
        named = [a for a in res.axes if a.get("own_feature")]
        res.summary["own_selective"] = sum(bool(a["own_is_main"]) and a["own_share"] >= SELECTIVE for a in named)
        res.summary["own_share_median"] = float(np.nanmedian([a["own_share"] for a in named])) if named else np.nan


def _verdict(res: Exploration, nothing: bool, r2: float, coverage: float, span: float) -> str:
    what = {"knobs": "knob", "vae": "principal axis of the VAE latent", "timbre": "timbre axis"}.get(
        res.space, "principal axis of the code")
    if nothing:
        largest = max((a["change"] for a in res.axes), default=0.0)
        return (f"The latent moves nothing: walking each {what} over +-{span:g} sd changes no AudioCommons feature "
                f"by a quarter of {res.effect}'s own spread (largest change {largest:.2f} spreads); the controller's "
                f"answers over the references cover {coverage:.2f} of that spread.")
    best = max(res.axes, key=lambda a: a["change"])
    s = best[f"slope/{best['main_feature']}"]
    text = (f"{best['axis']} moves {best['main_feature']} most ({s:+.2f} spreads per sd, selectivity "
            f"{best['selectivity']:.2f}); {sum(a['moves'] for a in res.axes)} of {len(res.axes)} axes move a "
            f"feature; together they explain {r2:.0%} of the variance of the answers' features over the references")
    return text + (f"; those answers cover only {coverage:.2f} of the effect's spread." if coverage < MOVES else ".")


# --- figures and files --------------------------------------------------------------------------------------
def mel_grid(res: Exploration, sample_rate: int, path: Path) -> Path:
    """One row per path (interpolation, then each axis), its positions side by side: mel spectrograms (dB) of the
    first input processed with the decoded settings (one image per row: a grid of axes costs seconds to draw)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from models.nn import LogMel

    mel = LogMel(sample_rate, n_fft=1024, hop=256, n_mels=64)
    names = list(res.audio)
    with torch.no_grad():
        specs = {n: mel(torch.as_tensor(np.stack(res.audio[n]), dtype=torch.float32))[:, 0].numpy() for n in names}
    vmax = max(float(s.max()) for s in specs.values())
    ncol = max(len(v) for v in specs.values())
    frames = next(iter(specs.values())).shape[-1]
    gap = max(2, frames // 12)
    fig, axs = plt.subplots(len(names), 1, figsize=(1.5 * ncol + 1.2, 1.25 * len(names) + 0.6), squeeze=False)
    summaries = {a["axis"]: a for a in res.axes}
    for r, n in enumerate(names):
        ax = axs[r, 0]
        tiles = []
        for j in range(len(specs[n])):
            tiles += [specs[n][j], np.full((specs[n].shape[1], gap), np.nan)]
        ax.imshow(np.concatenate(tiles[:-1], axis=1), origin="lower", aspect="auto", cmap="magma",
                  vmin=vmax - 80, vmax=vmax, interpolation="nearest")
        ax.set_xticks([j * (frames + gap) + frames / 2 for j in range(len(specs[n]))])
        ax.set_xticklabels([f"a={t:.2f}" if n == "interpolation" else f"{t:+.1f} sd" for t in res.positions[n]],
                           fontsize=7)
        ax.set_yticks([])
        a = summaries.get(n)
        ax.set_ylabel(n if a is None else f"{n}\n{a['main_feature'] or 'moves nothing'}", fontsize=7)
    return _save(fig, f"{res.effect}, {res.controller}: the first input processed along each path", path)


@_quiet
def trajectories(res: Exploration, path: Path) -> Path:
    """Per axis: each feature's change from the walk's centre, in the effect's spreads, against the position
    (mean over inputs, band = min..max over inputs)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import pandas as pd

    df = pd.DataFrame(res.rows)
    names = list(res.feature_names)
    unit = np.array([res.unit[f] for f in names])
    n = len(res.axes)
    fig, axs = plt.subplots(1, n, figsize=(2.6 * n + 1.4, 2.6), squeeze=False, sharey=True)
    colours = plt.get_cmap("tab10")
    for k, a in enumerate(res.axes):
        ax = axs[0, k]
        curves = []
        for m in range(res.n_inputs):
            g = df[(df["path"] == a["axis"]) & (df["input"] == m)]
            V = g[[f"feature/{f}" for f in names]].to_numpy(dtype=float)
            V = (V - V[len(V) // 2]) / unit
            curves.append(V)
            t = g["position"].to_numpy(dtype=float)
        C = np.stack(curves)
        for f, name in enumerate(names):
            if not np.isfinite(C[..., f]).any():
                continue
            ax.plot(t, np.nanmean(C[..., f], axis=0), color=colours(f % 10), lw=1.2, label=name)
            ax.fill_between(t, np.nanmin(C[..., f], axis=0), np.nanmax(C[..., f], axis=0), color=colours(f % 10),
                            alpha=0.12, lw=0)
        ax.axhline(0, color="0.6", lw=0.6)
        means = np.abs(np.nanmean(C, axis=0))
        top = float(np.nanmax(means)) if np.isfinite(means).any() else 0.0
        ax.set_ylim(-max(0.5, 1.3 * top), max(0.5, 1.3 * top))  # the means decide; a wide band is clipped
        var = "" if not np.isfinite(a["code_variance"]) else f", {a['code_variance']:.0%} of code var."
        ax.set_title(f"{a['axis']}{var}" + ("" if a["moves"] else "\nmoves nothing"), fontsize=8)
        ax.set_xlabel("position (sd)", fontsize=7)
        ax.tick_params(labelsize=7)
    axs[0, 0].set_ylabel("feature change (effect spreads)", fontsize=7)
    axs[0, -1].legend(fontsize=6, loc="center left", bbox_to_anchor=(1.02, 0.5), frameon=False)
    return _save(fig, f"{res.system} on {res.effect}: AudioCommons features along each {res.space} axis (mean over "
                      f"{res.n_inputs} inputs; band: their range)", path)


def _save(fig, title: str, path: Path) -> Path:
    import matplotlib.pyplot as plt

    fig.suptitle(title, fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=100)
    plt.close(fig)
    return path


def file_slug(effect: str, system: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", f"{effect}__{system}")


def write(res: Exploration, out_dir: Path, sample_rate: int, extra: dict | None = None) -> dict[str, Path]:
    """Write the study of one (system, effect) under ``out_dir`` (figures first, the summary last: a summary on
    disk means the cell is complete). ``extra``: more summary columns (the harness's training budget)."""
    import pandas as pd

    from bench.cache import atomic_write_bytes

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    slug = file_slug(res.effect, res.system)
    paths = {k: out_dir / f"{slug}_{k}.{ext}" for k, ext in (("probes", "csv"), ("axes", "csv"), ("summary", "csv"),
                                                            ("mel_grid", "png"), ("trajectories", "png"))}
    mel_grid(res, sample_rate, paths["mel_grid"])
    trajectories(res, paths["trajectories"])
    for key, frame in (("probes", pd.DataFrame(res.rows)), ("axes", pd.DataFrame(res.axes)),
                       ("summary", pd.DataFrame([{**res.summary, **(extra or {}),
                                                  "mel_grid": paths["mel_grid"].name,
                                                  "trajectories": paths["trajectories"].name}]))):
        atomic_write_bytes(paths[key], frame.to_csv(index=False).encode())
    return paths
