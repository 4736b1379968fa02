"""Figures (matplotlib Agg + seaborn styling), each written as PNG and PDF.

Every plotted interval is the hierarchical bootstrap CI of :mod:`reports.tables`, so figures and tables agree exactly.
"""

from __future__ import annotations

import math
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from reports import stats as S
from reports.results import system_label

DPI = 110


@dataclass
class Figure:
    name: str
    png: str  # relative to the report directory
    pdf: str
    caption: str
    section: str


class Figures:
    """Draws into ``<report>/figures``; remembers what it wrote, in order."""

    def __init__(self, report_dir: Path, systems: list[str]):
        import matplotlib

        matplotlib.use("Agg", force=False)
        self.dir = Path(report_dir) / "figures"
        self.dir.mkdir(parents=True, exist_ok=True)
        self.items: list[Figure] = []
        import seaborn as sns

        pal = sns.color_palette("tab10", max(10, len(systems)))
        self.colors = {s: pal[i % len(pal)] for i, s in enumerate(systems)}
        self.systems = list(systems)

    def new(self, w: float, h: float, nrows: int = 1, ncols: int = 1, **kw):
        from matplotlib.figure import Figure as MplFigure

        fig = MplFigure(figsize=(w, h))  # no layout engine: 2-3x faster; saved with a tight bounding box
        axes = fig.subplots(nrows, ncols, squeeze=False, **kw)
        return fig, axes

    def save(self, fig, name: str, caption: str, section: str) -> Figure:
        png, pdf = self.dir / f"{name}.png", self.dir / f"{name}.pdf"
        box = fig.get_tightbbox().padded(0.05)  # computed once for both formats
        fig.savefig(png, dpi=DPI, bbox_inches=box, pil_kwargs={"compress_level": 2})  # zlib 6 is 2x slower
        with matplotlib_rc({"pdf.compression": 2}):
            fig.savefig(pdf, bbox_inches=box)
        item = Figure(name, f"figures/{png.name}", f"figures/{pdf.name}", caption, section)
        self.items.append(item)
        return item


def matplotlib_rc(params: dict):
    import matplotlib as mpl

    return mpl.rc_context(params)


def _safe(s: str) -> str:
    return "".join(ch if ch.isalnum() or ch in "-_" else "_" for ch in s)


def _pointplot(ax, sub: pd.DataFrame, columns: list[tuple[str, str]], systems: list[str], colors: dict,
               *, legend: bool = False) -> bool:
    """Means with CI error bars: x = columns (key, label), one dodged series per system. False: nothing drawn."""
    drawn = False
    k = max(1, len(systems))
    width = 0.8
    for i, s in enumerate(systems):
        d = sub[sub["system"] == s].set_index("column")
        xs, ys, lo, hi = [], [], [], []
        for j, (key, _) in enumerate(columns):
            if key in d.index and d.loc[key, "status"] == "ok":
                row = d.loc[key]
                xs.append(j - width / 2 + width * (i + 0.5) / k)
                ys.append(row["mean"])
                # max(0, .): a percentile interval may sit a rounding error beside the mean (a near-constant cell)
                lo.append(max(0.0, row["mean"] - row["ci_low"]) if np.isfinite(row["ci_low"]) else 0.0)
                hi.append(max(0.0, row["ci_high"] - row["mean"]) if np.isfinite(row["ci_high"]) else 0.0)
        if xs:
            ax.errorbar(xs, ys, yerr=[lo, hi], fmt="o", ms=4, capsize=2, lw=1, color=colors[s],
                        label=system_label(s, short=True))
            drawn = True
    ax.set_xticks(range(len(columns)), [lab for _, lab in columns])
    ax.set_xlim(-0.6, len(columns) - 0.4)
    if legend and drawn:
        ax.legend(fontsize=7, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    return drawn


def _ylabel(m: str) -> str:
    how = S.direction(m)
    return f"{m} ({'0' if how == 'signed' else how} is better)"


def _legend(F: Figures, fig, systems: list[str], anchor=(0.91, 0.89)) -> None:
    from matplotlib.lines import Line2D

    fig.legend([Line2D([], [], color=F.colors[s], marker="o", ls="") for s in systems],
               [system_label(s, short=True) for s in systems],
               loc="upper left", bbox_to_anchor=anchor, fontsize=7, frameon=False)


def metric_pointplots(F: Figures, stats: pd.DataFrame, metrics: list[str], set_cols,
                      single: tuple[str, ...] = ()) -> None:
    """One overview figure with a panel per metric (a figure costs more than a panel), plus a figure of its own
    for each metric in ``single``."""
    cols = [(c.key, c.label.replace(", ", "\n")) for c in set_cols]
    sets = stats[stats["level"] == "set"]
    shown = [m for m in metrics if ((sets["metric"] == m) & (sets["status"] == "ok")).any()]
    if not shown:
        return
    for m in [m for m in single if m in shown]:
        fig, ax = F.new(max(4.0, 1.3 * len(cols) + 2), 3.0)
        _pointplot(ax[0, 0], sets[sets["metric"] == m], cols, F.systems, F.colors, legend=True)
        ax[0, 0].set_ylabel(_ylabel(m))
        F.save(fig, f"metric_{_safe(m)}", f"{m}: mean and 95% bootstrap CI per system, by effect set.", "metrics")
    ncols = min(3, len(shown))
    nrows = math.ceil(len(shown) / ncols)
    panel_w = max(3.2, 0.9 * len(cols) + 1.2)
    fig, axes = F.new(panel_w * ncols + 1.2, 2.5 * nrows, nrows=nrows, ncols=ncols)
    fig.subplots_adjust(wspace=0.32, hspace=0.55)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(shown):
            ax.axis("off")
            continue
        m = shown[k]
        _pointplot(ax, sets[sets["metric"] == m], cols, F.systems, F.colors)
        ax.set_title(_ylabel(m), fontsize=8)
        ax.tick_params(labelsize=7)
        if k < len(shown) - ncols:
            ax.tick_params(labelbottom=False)
    _legend(F, fig, [s for s in F.systems if (sets["system"] == s).any()], (0.91, 0.89))
    F.save(fig, "metrics_by_set", "Every metric: mean and 95% bootstrap CI per system, by effect set (one panel "
           "per metric; the same numbers as the tables).", "metrics")


def relative_to_bypass(stats: pd.DataFrame, m: str, systems: list[str], effects: list[str]):
    """(rows, matrix) of % improvement of each system's mean over bypass's, per effect; None if no bypass."""
    sub = stats[(stats["metric"] == m) & (stats["level"] == "effect") & (stats["status"] == "ok")]
    byp = sub[sub["system"] == "bypass"].set_index("column")["mean"]
    if byp.empty:
        return None
    how = S.direction(m)
    rows = [s for s in systems if s != "bypass" and (sub["system"] == s).any()]
    mat = np.full((len(rows), len(effects)), np.nan)
    for i, s in enumerate(rows):
        d = sub[sub["system"] == s].set_index("column")["mean"]
        for j, e in enumerate(effects):
            if e in d.index and e in byp.index and byp[e] != 0 and np.isfinite(byp[e]):
                b, v = byp[e], d[e]
                if how == "higher":
                    mat[i, j] = 100 * (v - b) / abs(b)
                elif how == "signed":
                    mat[i, j] = 100 * (abs(b) - abs(v)) / abs(b)
                else:
                    mat[i, j] = 100 * (b - v) / abs(b)
    if not rows or not np.isfinite(mat).any():
        return None
    return rows, mat


def annotated_heatmap(ax, mat: np.ndarray, rows: list[str], cols: list[str], *, cmap: str, vmin: float,
                      vmax: float, fmt: str, fontsize: float = 6.5) -> None:
    """A matrix as coloured cells with its values written in them (NaN cells blank), rows top to bottom.

    Drawn directly rather than with seaborn's heatmap, which draws the whole figure once per call to decide
    whether tick labels overlap: on a tall figure of many panels that cost seconds and ~0.3 GB per panel."""
    import matplotlib as mpl

    mat = np.asarray(mat, dtype=float)
    cm = mpl.colormaps[cmap]
    norm = mpl.colors.Normalize(vmin, vmax)
    ax.pcolormesh(np.ma.masked_invalid(mat), cmap=cm, norm=norm, edgecolors="white", linewidth=0.5)
    for (i, j), v in np.ndenumerate(mat):
        if np.isfinite(v):
            r, g, b, _ = cm(norm(v))
            ink = "black" if 0.299 * r + 0.587 * g + 0.114 * b > 0.5 else "white"
            ax.text(j + 0.5, i + 0.5, format(v, fmt), ha="center", va="center", fontsize=fontsize, color=ink)
    ax.set_xlim(0, mat.shape[1])
    ax.set_ylim(mat.shape[0], 0)
    ax.set_xticks(np.arange(mat.shape[1]) + 0.5, cols, ha="right", rotation_mode="anchor")
    ax.set_yticks(np.arange(mat.shape[0]) + 0.5, rows)
    ax.grid(False)
    for spine in ax.spines.values():
        spine.set_visible(False)


def bypass_heatmaps(F: Figures, stats: pd.DataFrame, metrics: list[str], effects: list[str]) -> None:
    """Relative improvement over bypass per effect, in % (positive: better than leaving the input alone); one
    panel per metric, one figure."""
    panels = []
    for m in metrics:
        if not m.startswith("cost/"):
            rel = relative_to_bypass(stats, m, F.systems, effects)
            if rel is not None:
                panels.append((m, *rel))
    if not panels:
        return
    ncols = 1 if len(effects) > 6 else min(2, len(panels))
    nrows = math.ceil(len(panels) / ncols)
    nsys = max(len(p[1]) for p in panels)
    panel_h = 0.32 * nsys + 0.9
    fig, axes = F.new((0.62 * len(effects) + 2.2) * ncols + 0.8, panel_h * nrows, nrows=nrows, ncols=ncols)
    fig.subplots_adjust(hspace=0.45, wspace=0.3)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(panels):
            ax.axis("off")
            continue
        m, rows, mat = panels[k]
        labels = [system_label(s, short=True) for s in rows]
        annotated_heatmap(ax, mat, labels, list(effects), cmap="RdBu", vmin=-100, vmax=100, fmt=".0f")
        ax.set_title(f"{m}: % better than bypass", fontsize=8)
        ax.set(xlabel="", ylabel="")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7, labelbottom=k + ncols >= len(panels))
        ax.tick_params(axis="y", labelrotation=0, labelsize=7)
    import matplotlib as mpl

    sm = mpl.cm.ScalarMappable(norm=mpl.colors.Normalize(-100, 100), cmap="RdBu")
    fig.colorbar(sm, ax=axes.ravel().tolist(), shrink=min(1.0, 4.0 / (panel_h * nrows)), pad=0.02,
                 label="% better than bypass")
    F.save(fig, "vs_bypass", "Each metric relative to bypass, per effect: % improvement of each system's mean over "
           "bypass's (blue: better than doing nothing; blank: not applicable).", "effects")


def ac_profiles(F: Figures, stats: pd.DataFrame, set_cols) -> None:
    feats = [m for m in dict.fromkeys(stats["metric"]) if m.startswith("ac_signed/")]
    if not feats:
        return
    sub_all = stats[stats["metric"].isin(feats) & (stats["level"] == "set")]
    cols = [c for c in set_cols if (sub_all["column"] == c.key).any()]
    if not cols:
        return
    names = [(f, f.split("/", 1)[1]) for f in feats]
    fig, axes = F.new(max(5.0, 0.8 * len(feats) + 2.5), 2.6 * len(cols), nrows=len(cols), sharex=True)
    fig.subplots_adjust(hspace=0.35)
    for ax, c in zip(axes[:, 0], cols, strict=True):
        sub = sub_all[sub_all["column"] == c.key].rename(columns={"column": "set", "metric": "column"})
        _pointplot(ax, sub, names, F.systems, F.colors, legend=False)
        ax.axhline(0, color="0.3", lw=0.8)
        ax.set_title(c.label, fontsize=9)
        ax.set_ylabel("output - target")
    axes[0, 0].legend(fontsize=7, frameon=False, bbox_to_anchor=(1.01, 1), loc="upper left")
    F.save(fig, "ac_profiles", "AudioCommons timbral features: signed difference output - target per feature "
           "(mean, 95% CI); 0 means the output matches the target's timbre.", "metrics")


def param_errors(F: Figures, stats: pd.DataFrame, effects: list[str]) -> None:
    sub_all = stats[stats["metric"].str.startswith("param_mae/") & (stats["level"] == "effect")
                    & (stats["status"] == "ok")]
    effs = [e for e in effects if (sub_all["column"] == e).any()]
    if not effs:
        return
    ncols = min(3, len(effs))
    nrows = math.ceil(len(effs) / ncols)
    fig, axes = F.new(4.2 * ncols, 2.8 * nrows, nrows=nrows, ncols=ncols)
    fig.subplots_adjust(wspace=0.3, hspace=0.65)
    for k, ax in enumerate(axes.ravel()):
        if k >= len(effs):
            ax.set_visible(False)
            continue
        e = effs[k]
        sub = sub_all[sub_all["column"] == e]
        params = list(dict.fromkeys(sub["metric"]))
        s2 = sub.rename(columns={"column": "effect", "metric": "column"})
        _pointplot(ax, s2, [(p, p.split("/", 1)[1]) for p in params], F.systems, F.colors, legend=False)
        ax.set_title(e, fontsize=9)
        ax.set_ylabel("|error| (normalised)")
        ax.tick_params(axis="x", labelrotation=35, labelsize=7)
    handles = {s: F.colors[s] for s in F.systems if (sub_all["system"] == s).any()}
    from matplotlib.lines import Line2D

    fig.legend([Line2D([], [], color=c, marker="o", ls="") for c in handles.values()],
               [system_label(s, short=True) for s in handles],
               loc="upper left", bbox_to_anchor=(0.91, 0.89), fontsize=7, frameon=False)
    F.save(fig, "param_errors", "Parameter error per parameter, per effect: mean absolute error in the "
           "normalised [0, 1] space with 95% CI (systems that estimate no parameters are absent).", "params")


def param_scatter(F: Figures, params: pd.DataFrame, effects: list[str]) -> None:
    """Estimated vs true, one panel per parameter and one figure per effect. Panels share their axes (0..1) and
    only the outer ones carry tick labels: an effect can have two dozen parameters."""
    if params.empty:
        return
    p = params[np.isfinite(params["true"].astype(float)) & np.isfinite(params["estimate"].astype(float))]
    effs = [e for e in effects if (p["effect"] == e).any()] if "effect" in p else []
    for e in effs:
        sub = p[p["effect"] == e]
        names = list(dict.fromkeys(sub["param"]))
        ncols = min(6, len(names))
        nrows = math.ceil(len(names) / ncols)
        height = 1.75 * nrows + 0.5
        fig, axes = F.new(1.75 * ncols + 1.4, height, nrows=nrows, ncols=ncols, sharex=True, sharey=True)
        fig.subplots_adjust(wspace=0.08, hspace=0.08, top=1 - 0.45 / height)
        present = [s for s in F.systems if (sub["system"] == s).any()]
        for k, ax in enumerate(axes.ravel()):
            if k >= len(names):
                ax.axis("off")
                axes.ravel()[k - ncols].tick_params(labelbottom=True)  # the panel above ends its column
                continue
            ax.plot([0, 1], [0, 1], color="0.5", lw=0.7, ls="--")
            ax.set(xlim=(-0.03, 1.03), ylim=(-0.03, 1.03), xticks=[0, 0.5, 1], yticks=[0, 0.5, 1])
            ax.tick_params(labelsize=7)
            d = sub[sub["param"] == names[k]]  # one collection per panel: far cheaper to draw than one per system
            ax.scatter(d["true"], d["estimate"], s=8, alpha=0.7, c=[F.colors[s] for s in d["system"]], lw=0)
            ax.text(0.03, 0.97, names[k], transform=ax.transAxes, ha="left", va="top", fontsize=7)
        for ax in axes[-1, :]:
            ax.set_xlabel("true", fontsize=8)
        for ax in axes[:, 0]:
            ax.set_ylabel("estimate", fontsize=8)
        from matplotlib.lines import Line2D

        fig.legend([Line2D([], [], color=F.colors[s], marker="o", ls="") for s in present],
                   [system_label(s, short=True) for s in present],
                   loc="upper left", bbox_to_anchor=(0.91, 0.89), fontsize=7, frameon=False)
        fig.suptitle(f"{e}: estimated vs true (normalised)", fontsize=9, y=1 - 0.1 / height)
        F.save(fig, f"params_scatter_{_safe(e)}", f"{e}: estimated vs true parameters (normalised), every test "
               "example; the dashed line is a perfect estimate.", "params")


# --- spectrograms -------------------------------------------------------------------------------------------
_MEL_CACHE: dict = {}


def mel_db(x: np.ndarray, sr: int, n_mels: int = 80) -> np.ndarray:
    """Log-mel power spectrogram (dB, not yet referenced), Hann window, 1024-point FFT (scaled to the rate)."""
    import librosa
    from scipy.signal import stft

    n_fft = int(2 ** round(math.log2(1024 * sr / 24000)))
    key = (sr, n_fft, n_mels)
    if key not in _MEL_CACHE:
        _MEL_CACHE[key] = librosa.filters.mel(sr=sr, n_fft=n_fft, n_mels=n_mels)
    _, _, Z = stft(np.asarray(x, np.float64), nperseg=n_fft, noverlap=n_fft - n_fft // 4, window="hann")
    return 10 * np.log10(_MEL_CACHE[key] @ (np.abs(Z) ** 2) + 1e-12)


def mel_grid(F: Figures, name: str, clips: list[tuple[str, np.ndarray]], sr: int, title: str, caption: str,
             per_row: int = 4):
    """Spectrograms side by side on one dB scale. Each row of panels is one image on one axes (a gap of blank
    frames between panels), which draws several times faster than an axes per panel."""
    specs = [(label, mel_db(x, sr)) for label, x in clips]
    top = max(float(s.max()) for _, s in specs)
    dur = max(x.shape[-1] for _, x in clips) / sr
    frames = max(s.shape[1] for _, s in specs)
    gap = max(2, frames // 12)
    rows = [specs[i : i + per_row] for i in range(0, len(specs), per_row)]
    width = per_row * frames + (per_row - 1) * gap
    fig, axes = F.new(2.3 * per_row + 0.8, 1.75 * len(rows) + 0.5, nrows=len(rows))
    fig.subplots_adjust(hspace=0.45)
    im = None
    for ax, row in zip(axes[:, 0], rows, strict=True):
        img = np.full((specs[0][1].shape[0], width), np.nan)
        for k, (label, s) in enumerate(row):
            x0 = k * (frames + gap)
            img[:, x0 : x0 + s.shape[1]] = s
            ax.text(x0 + frames / 2, s.shape[0] * 1.04, label, ha="center", va="bottom", fontsize=8)
        cmap = __import__("matplotlib").colormaps["magma"].with_extremes(bad="white")
        im = ax.imshow(img, origin="lower", aspect="auto", cmap=cmap, vmin=top - 80, vmax=top,
                       interpolation="nearest", rasterized=True)
        ax.set_xlim(-0.5, width - 0.5)
        ax.set_xticks([])
        ax.set_ylabel("mel band", fontsize=8)
        ax.tick_params(labelsize=7)
        ax.grid(False)
        for side in ("top", "right", "bottom"):
            ax.spines[side].set_visible(False)
    fig.colorbar(im, ax=axes[:, 0].tolist(), shrink=0.9, pad=0.01, label="dB")
    fig.suptitle(f"{title}; each panel {dur:.2f} s", fontsize=9)
    return F.save(fig, name, caption, "examples")


# --- the wild set -------------------------------------------------------------------------------------------
def wild_picks(F: Figures, matrices: list[tuple[str, pd.DataFrame]]):
    """Heatmaps of kinds x controllers (examples per controller), one panel per chooser: the proposed model's
    auto rule, and the best pick made with the target when it was stored. None when nothing was picked."""
    panels = [(title, m) for title, m in matrices if not m.empty]
    if not panels:
        return None
    ncols = len(panels)
    width = max(m.shape[1] for _, m in panels)
    height = max(m.shape[0] for _, m in panels)
    fig, axes = F.new((0.55 * width + 1.8) * ncols + 0.4, 0.4 * height + 1.3, ncols=ncols)
    fig.subplots_adjust(wspace=0.45)
    vmax = max(int(m.to_numpy().max()) for _, m in panels)
    for ax, (title, m) in zip(axes[0], panels, strict=True):
        annotated_heatmap(ax, m.to_numpy(), [str(i) for i in m.index], [str(c) for c in m.columns], cmap="Blues",
                          vmin=0, vmax=max(1, vmax), fmt=".0f", fontsize=7)
        ax.set_title(title, fontsize=8)
        ax.set(xlabel="controller", ylabel="")
        ax.tick_params(axis="x", labelrotation=30, labelsize=7)
        ax.tick_params(axis="y", labelrotation=0, labelsize=7)
    return F.save(fig, "wild_picks", "Wild set: which controller the proposed model used, per kind (examples per "
                  "controller). Left: its auto rule, which never sees the target; right, when stored: the best "
                  "controller chosen with the target (an upper bound, proposed:best_pick).", "wild")
