"""Latent-space exploration of a trained controller (the API behind ``afx-bench latent``, :mod:`bench.commands.latent`).

The object studied is the trained **controller before the hedge** (``hedged = False``, the default): the hedge
(``proposed``'s validated blend towards one constant setting) would pull every decoded setting the same share of the
way to that constant, and so flatten what the latent space encodes. ``hedged = True`` explores the answers as
``match`` gives them. ``proposed_paper`` (and any variant) has no hedge, so the two are the same there. Every row
and the command's output say which was used (``controller``).

Two probes, both on the test examples of one effect (first evaluated corpus), with one input clip held fixed:

* **Interpolation** between the codes of two references (the chosen example's and the one whose true settings
  differ most from it): at each point the controller's parameters are decoded and the input is processed with them.
* **Principal axes** of the references' codes (standardised per dimension): each of the first ``axes`` axes is
  walked from ``-span`` to ``+span`` standard deviations around the mean code.

Every processed clip is described by the AudioCommons timbral features (``bench.metrics`` ``ac``: hardness,
depth, brightness, roughness, warmth, sharpness, boominess, reverb) and the decoded parameters. Per axis, the slope
of each feature against the position (in units of that feature's spread over all probes) says what the axis
moves; *selectivity* = |largest slope| / sum of |slopes| says whether it moves one feature and leaves the rest
(1.0) or everything at once (1/8).

Written to ``DIR/latent/``: ``<effect>_latent.csv`` (one row per probe), ``<effect>_axes.csv`` (one row per axis)
and ``<effect>_mel_grid.png`` (mel spectrograms: one row per probe path, one column per position); for a system
other than ``proposed``, ``<effect>__<system>_...``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

AC_FEATURES = ("hardness", "depth", "brightness", "roughness", "warmth", "sharpness", "boominess", "reverb")


@dataclass
class Exploration:
    effect: str
    rows: list[dict] = field(default_factory=list)  # one per probe
    axes: list[dict] = field(default_factory=list)  # one per principal axis
    audio: dict[str, list[np.ndarray]] = field(default_factory=dict)  # path -> processed clips in order
    positions: dict[str, list[float]] = field(default_factory=dict)
    feature_names: tuple[str, ...] = ()
    feature_source: str = ""
    system: str = ""
    controller: str = ""  # which answers were decoded: see controller_kind()


def controller_kind(system, effect, hedged: bool) -> str:
    """What was explored, in words: the controller before the hedge, with it, or a controller that has none."""
    name = getattr(system, "name", "system")
    active = effect.name in getattr(system, "hedged_effects", [])
    if not active:
        return f"{name}: the controller as trained (no hedge is active for {effect.name})"
    if hedged:
        return f"{name}: the hedged answers (as match gives them: blended towards a constant setting)"
    return f"{name}: the controller before the hedge (its blend towards a constant setting left out)"


def ac_features(sample_rate: int):
    """A function clips -> list of feature dicts, using the AudioCommons metric's extractor (cached, pooled).
    Falls back to three librosa descriptors when the metric is not available, and says so."""
    try:
        from bench.metrics import get_metric

        metric = get_metric("ac", {"workers": 0}, sample_rate=sample_rate)
    except Exception as e:  # the metric or timbral_models missing: keep the tool usable
        import warnings

        warnings.warn(f"latent: AudioCommons features unavailable ({e}); using librosa descriptors", stacklevel=2)
        return _librosa_features(sample_rate), "librosa"

    def fn(clips):
        return [rec["features"] for rec in metric.features([np.asarray(c, np.float32) for c in clips])]

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


def _check_system(system) -> None:
    for attr in ("code", "predict_from_codes"):
        if not hasattr(system, attr):
            raise TypeError(f"latent: system {getattr(system, 'name', system)!r} has no latent codes "
                            f"(needs {attr}()); only the proposed model supports this command")


def explore(system, effect, examples: list, *, features, feature_source: str = "", steps: int = 7, axes: int = 4,
            span: float = 2.0, example: int = 0, hedged: bool = False) -> Exploration:
    """Run both probes (see the module docstring) and describe every processed clip with ``features``.
    ``hedged``: decode the hedged answers instead of the controller's own (the default)."""
    import torch

    _check_system(system)
    if effect.n_params == 0:
        raise ValueError(f"latent: {effect.name} has no parameters to decode")
    if len(examples) < 2:
        raise ValueError("latent: needs at least two examples (two references to interpolate)")
    steps = max(2, int(steps))
    sr = system.sample_rate
    ex = examples[int(example) % len(examples)]
    inputs = np.stack([e.input for e in examples])
    refs = np.stack([e.reference for e in examples])
    c_ref = system.code(refs).float().cpu().numpy().astype(np.float64)
    c_in = system.code(inputs[[examples.index(ex)]]).float()

    def decode(codes: np.ndarray) -> np.ndarray:
        t = torch.as_tensor(codes, dtype=torch.float32, device=c_in.device)
        return system.predict_from_codes(effect, c_in.expand(len(t), -1), t, hedged=hedged)

    res = Exploration(effect.name, feature_source=feature_source, system=getattr(system, "name", ""),
                      controller=controller_kind(system, effect, hedged))
    ia = examples.index(ex)
    if all(e.true_params01 is not None for e in examples):  # the reference whose settings differ most
        P = np.stack([e.true_params01 for e in examples])
        ib = int(np.argmax(np.abs(P - P[ia]).sum(axis=1)))
    else:
        ib = int(np.argmax(np.linalg.norm(c_ref - c_ref[ia], axis=1)))
    if ib == ia:
        ib = (ia + 1) % len(examples)
    alphas = np.linspace(0.0, 1.0, steps)
    paths: list[tuple[str, np.ndarray, np.ndarray, dict]] = [
        ("interpolation", alphas, (1 - alphas)[:, None] * c_ref[ia] + alphas[:, None] * c_ref[ib],
         {"from_example": examples[ia].index, "to_example": examples[ib].index}),
    ]
    mu, sd = c_ref.mean(axis=0), c_ref.std(axis=0) + 1e-8
    Z = (c_ref - mu) / sd
    _, s, vt = np.linalg.svd(Z, full_matrices=False)
    var = s**2 / max(len(Z) - 1, 1)
    ratio = var / max(var.sum(), 1e-12)
    ts = np.linspace(-span, span, steps)
    for k in range(min(int(axes), len(s))):
        codes = mu + sd * (ts[:, None] * np.sqrt(var[k]) * vt[k][None])
        paths.append((f"axis{k + 1}", ts, codes, {"explained_variance": float(ratio[k])}))

    all_params, all_audio = [], []
    for _, _, codes, _ in paths:
        p = decode(codes)
        all_params.append(p)
        all_audio.append(effect.process(np.repeat(ex.input[None], len(p), axis=0), sr, p))
    feats = features([y for a in all_audio for y in a])
    res.feature_names = tuple(feats[0].keys()) if feats else ()
    i = 0
    for (path, pos, _, info), p, ys in zip(paths, all_params, all_audio, strict=True):
        res.audio[path] = list(ys)
        res.positions[path] = [float(v) for v in pos]
        for j in range(len(p)):
            phys = effect.to_physical(p[j])
            row = {"effect": effect.name, "system": res.system, "controller": res.controller, "path": path,
                   "position": float(pos[j]), "example": ex.index, **info}
            row.update({f"param/{n}": float(v) for n, v in zip(effect.param_names, p[j], strict=True)})
            row.update({f"physical/{n}": float(v) for n, v in phys.items()})
            row.update({f"feature/{n}": float(v) for n, v in feats[i].items()})
            res.rows.append(row)
            i += 1
    res.axes = _axis_summary(res, effect.param_names)
    return res


def _axis_summary(res: Exploration, param_names: list[str]) -> list[dict]:
    import pandas as pd

    df = pd.DataFrame(res.rows)
    fcols = [f"feature/{n}" for n in res.feature_names]
    spread = {c: float(np.nanstd(df[c].to_numpy(dtype=float))) for c in fcols}
    out = []
    for path, g in df[df["path"].str.startswith("axis")].groupby("path", sort=False):
        t = g["position"].to_numpy(dtype=float)
        row = {"effect": res.effect, "system": res.system, "controller": res.controller, "axis": path,
               "explained_variance": float(g["explained_variance"].iloc[0])}
        slopes = {}
        for c in fcols:
            v = g[c].to_numpy(dtype=float)
            ok = np.isfinite(v)
            slope = np.polyfit(t[ok], v[ok], 1)[0] if ok.sum() >= 2 and np.ptp(t[ok]) > 0 else np.nan
            norm = slope / spread[c] if spread[c] > 1e-12 else 0.0
            slopes[c.split("/", 1)[1]] = float(norm)
            row[f"slope/{c.split('/', 1)[1]}"] = float(norm)
        finite = {k: abs(v) for k, v in slopes.items() if np.isfinite(v)}
        total = sum(finite.values())
        if finite and total > 0:
            main = max(finite, key=finite.get)
            row["main_feature"], row["selectivity"] = main, finite[main] / total
        else:
            row["main_feature"], row["selectivity"] = "", float("nan")
        pslopes = {n: float(np.polyfit(t, g[f"param/{n}"].to_numpy(dtype=float), 1)[0]) for n in param_names}
        row.update({f"param_slope/{n}": v for n, v in pslopes.items()})
        row["main_param"] = max(pslopes, key=lambda n: abs(pslopes[n])) if pslopes else ""
        out.append(row)
    return out


def mel_grid(res: Exploration, sample_rate: int, path: Path) -> Path:
    """One row per probe path, one column per position: mel spectrograms (dB) of the processed clips."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch

    from models.nn import LogMel

    mel = LogMel(sample_rate, n_fft=1024, hop=256, n_mels=64)
    names = list(res.audio)
    ncol = max(len(v) for v in res.audio.values())
    fig, axs = plt.subplots(len(names), ncol, figsize=(1.6 * ncol + 1, 1.5 * len(names) + 0.6), squeeze=False,
                            sharex=True, sharey=True)
    with torch.no_grad():
        specs = {n: mel(torch.as_tensor(np.stack(res.audio[n]), dtype=torch.float32))[:, 0].numpy() for n in names}
    vmax = max(float(s.max()) for s in specs.values())
    for r, n in enumerate(names):
        for j in range(ncol):
            ax = axs[r, j]
            ax.set_xticks([])
            ax.set_yticks([])
            if j >= len(specs[n]):
                ax.axis("off")
                continue
            ax.imshow(specs[n][j], origin="lower", aspect="auto", cmap="magma", vmin=vmax - 80, vmax=vmax)
            pos = res.positions[n][j]
            ax.set_title(f"a={pos:.2f}" if n == "interpolation" else f"{pos:+.1f} sd", fontsize=7)
        label = n
        summary = next((a for a in res.axes if a["axis"] == n), None)
        if summary is not None and summary.get("main_feature"):
            label += f"\n{summary['main_feature']} ({summary['selectivity']:.2f})"
        axs[r, 0].set_ylabel(label, fontsize=7)
    fig.suptitle(f"{res.effect}, {res.controller}: outputs along latent paths (mel spectrograms of the processed "
                 "input)", fontsize=8)
    fig.tight_layout()
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write(res: Exploration, out_dir: Path, sample_rate: int) -> dict[str, Path]:
    import pandas as pd

    out_dir = Path(out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    # proposed's files keep their names; another system's (proposed_paper, a variant) carry its name too
    name = res.effect if res.system in ("", "proposed") else f"{res.effect}__{res.system}"
    slug = re.sub(r"[^A-Za-z0-9_.-]+", "_", name)
    paths = {"table": out_dir / f"{slug}_latent.csv", "axes": out_dir / f"{slug}_axes.csv",
             "figure": out_dir / f"{slug}_mel_grid.png"}
    df = pd.DataFrame(res.rows)
    df.insert(1, "feature_source", res.feature_source)
    df.to_csv(paths["table"], index=False)
    pd.DataFrame(res.axes).to_csv(paths["axes"], index=False)
    mel_grid(res, sample_rate, paths["figure"])
    return paths
