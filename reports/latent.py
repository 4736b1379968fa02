"""The report's latent-space study section, from the files a latent study writes under ``<out>/latent/`` (bench/study.py
through models/proposed/latent.py). Only those files are read: no model, no torch.

One study cell is one (system, effect); its files are named by ``<slug> = <effect>__<system>`` (every character
outside ``[A-Za-z0-9_.-]`` replaced by ``_``):

- ``<slug>_summary.csv``: one row: system, effect, space ("code": principal axes of the standardised encoder code
  the controller reads; "knobs": the bottleneck controller's knob dimensions), controller, feature_source, dims,
  n_axes, n_inputs, n_references, code_variance, output_r2, coverage, moves_nothing, verdict, trained_for,
  train_seconds, train_examples, train_steps, train_renders, mel_grid, trajectories;
- ``<slug>_axes.csv``: one row per axis: axis, code_variance, output_r2, change, moves, main_feature, selectivity,
  main_param, n_inputs, and per AudioCommons feature ``f``: ``slope/f``, ``slope_low/f``, ``slope_high/f`` (change
  of ``f`` per standard deviation along the axis, in units of the effect's spread of ``f``; 95% t-interval over the
  input clips) and ``share/f``, ``share_low/f``, ``share_high/f`` (``|slope/f|`` over the sum of ``|slope|``;
  bootstrap interval over the input clips);
- ``<slug>_probes.csv`` (raw probes, linked only), ``<slug>_mel_grid.png`` and ``<slug>_trajectories.png``.

:func:`build` copies every file of ``<out>/latent/`` into the report folder and returns the section: a summary
table, a plain statement for every cell whose latent moves nothing, each cell's axes, a selectivity comparison per
effect (the knob space against the code space), the figures and the links. A cell whose CSVs are missing,
unreadable or incomplete is skipped with a note; it never breaks the build. No ``*_summary.csv``: no section.
"""

from __future__ import annotations

import csv
import math
import re
import shutil
from dataclasses import dataclass, field
from pathlib import Path

import pandas as pd

from reports import budgets as B
from reports.tables import MISSING, NA

FEATURES = ("hardness", "depth", "brightness", "roughness", "warmth", "sharpness", "boominess", "reverb")
MOVES = 0.25  # an axis moves a feature when its change over the walk reaches this share of the effect's spread
# (the study's own threshold, models.proposed.latent.MOVES, is stored in each summary as moves_threshold)
FILES = (".png", ".csv", ".md", ".json", ".txt", ".pdf")  # copied into the report's latent/ folder
SUMMARY, AXES, PROBES = "_summary.csv", "_axes.csv", "_probes.csv"
SUMMARY_REQUIRED = ("system", "effect", "space", "dims", "n_axes", "n_inputs", "moves_nothing")
AXES_REQUIRED = ("axis", "change", "moves")
TOP = 3  # features shown per axis, by |slope|
SUMMARY_HEADER = [("system", "sys"), ("effect", "sys"), ("space", "sys"), ("dims", ""), ("axes", ""),
                  ("inputs (n)", ""), ("code variance in studied axes (%)", ""), ("output R² (%)", ""),
                  ("coverage", ""), ("verdict", "left"), ("training", "left")]


class Skip(Exception):
    """A cell whose files cannot be shown; the message says why."""


@dataclass
class Axis:
    axis: str
    code_variance: str  # % of the code's variance, n/a for knobs
    output_r2: str  # %
    change: str
    moves: bool
    main_param: str
    top: list[str]  # "brightness +0.42 [0.30, 0.55]", largest |slope| first
    selectivity: str  # "0.61 [0.50, 0.70] (brightness)" or "moves nothing"


@dataclass
class Cell:
    slug: str
    system: str
    effect: str
    space: str  # code | knobs
    summary: dict  # the summary row as read
    axes: pd.DataFrame  # the axes rows as read
    features: list[str]  # those with slope columns, FEATURES order first
    rows: list[Axis] = field(default_factory=list)
    figures: list[dict] = field(default_factory=list)  # {"src", "caption"}
    files: list[dict] = field(default_factory=list)  # {"name", "src"}: its CSVs
    notes: list[str] = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.system} on {self.effect}"

    @property
    def column(self) -> str:
        return f"{self.system} ({self.space})"

    @property
    def anchor(self) -> str:
        return "latent-" + re.sub(r"[^A-Za-z0-9_-]", "_", self.slug)

    @property
    def knobs(self) -> bool:
        return self.space == "knobs"

    @property
    def space_words(self) -> str:
        return {"knobs": "knob space", "vae": "VAE latent", "timbre": "timbre axes"}.get(self.space,
                                                                                         f"{self.space} space")

    @property
    def space_name(self) -> str:
        """What a sentence calls the space: the knobs, the VAE latent or the code."""
        return {"knobs": "knobs", "vae": "VAE latent", "timbre": "timbre axes"}.get(self.space, self.space)

    @property
    def moves_nothing(self) -> bool:
        return bool(_bool(self.summary.get("moves_nothing")))

    @property
    def threshold(self) -> float:
        v = _float(self.summary.get("moves_threshold"))
        return v if math.isfinite(v) else MOVES

    def text(self, key: str) -> str:
        v = self.summary.get(key)
        return "" if v is None or (isinstance(v, float) and math.isnan(v)) else str(v)


@dataclass
class Comparison:
    effect: str
    columns: list[str]  # "system (space)" per cell studied on the effect
    rows: list[tuple[str, list[tuple[str, bool]]]]  # feature, [(text, largest in the row)]
    best: dict[str, list[str]]  # feature -> the columns with the largest share (when two or more spaces)
    sentence: str

    @property
    def anchor(self) -> str:
        return "latent-selectivity-" + re.sub(r"[^A-Za-z0-9_-]", "_", self.effect)


@dataclass
class Section:
    intro: str
    cells: list[Cell]
    summary_header: list[tuple[str, str]]  # (header, css class)
    summary_rows: list[list[str]]
    nothing: list[str]  # one loud sentence per cell whose latent moves nothing
    comparisons: list[Comparison]
    notes: list[str]  # skipped cells
    files: list[dict]  # every copied file not shown as a figure: {"name", "src"}


# --- reading ------------------------------------------------------------------------------------------------
def build(out: Path, d: Path) -> Section | None:
    """The section from ``<out>/latent/``, its files copied to ``<d>/latent/``; None without a ``*_summary.csv``."""
    src = Path(out) / "latent"
    if not src.is_dir() or not any(p.is_file() for p in src.glob(f"*{SUMMARY}")):
        return None
    return read_section(src, copy_files(src, Path(d) / "latent"))


def read_section(src: Path, copied: list[str]) -> Section | None:
    """The section from the study files in ``src`` (``copied``: those the page can link to)."""
    slugs = sorted(p.name[: -len(SUMMARY)] for p in Path(src).glob(f"*{SUMMARY}") if p.is_file())
    if not slugs:
        return None
    cells, notes = [], []
    for slug in slugs:
        try:
            cells.append(read_cell(src, slug, copied))
        except Skip as e:
            notes.append(f"{slug}: not shown, {e}. Its files are linked below.")
    cells.sort(key=lambda c: (c.effect, c.knobs, c.system))
    shown = {f["src"] for c in cells for f in c.figures}
    files = [{"name": n, "src": f"latent/{n}"} for n in copied if f"latent/{n}" not in shown]
    return Section(intro(cells), cells, SUMMARY_HEADER, [summary_row(c) for c in cells],
                   [nothing_sentence(c) for c in cells if c.moves_nothing], comparisons(cells), notes, files)


def copy_files(src: Path, dst: Path) -> list[str]:
    """Every figure and table under ``src`` copied to ``dst``; their paths relative to ``src``."""
    names = []
    for p in sorted(src.rglob("*")):
        if not p.is_file() or p.suffix.lower() not in FILES or p.name.startswith("."):
            continue
        rel = p.relative_to(src)
        (dst / rel).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(p, dst / rel)
        names.append(rel.as_posix())
    return names


def _read(path: Path, required: tuple[str, ...]) -> pd.DataFrame:
    if not path.is_file():
        raise Skip(f"{path.name} is missing")
    try:
        df = pd.read_csv(path)
    except Exception as e:
        reason = str(e).strip().splitlines()[0][:160] if str(e).strip() else type(e).__name__
        raise Skip(f"{path.name} is unreadable ({reason})") from e
    with open(path, newline="", encoding="utf-8", errors="replace") as fh:  # a row cut short: a partial file
        lines = [r for r in csv.reader(fh) if r]
    short = next((i for i, r in enumerate(lines[1:], 1) if len(r) < len(lines[0])), None)
    if short is not None:
        raise Skip(f"{path.name} is incomplete (row {short} has {len(lines[short])} of {len(lines[0])} fields)")
    missing = [c for c in required if c not in df.columns]
    if missing:
        raise Skip(f"{path.name} lacks the column{'s' if len(missing) > 1 else ''} {', '.join(missing)}")
    if df.empty:
        raise Skip(f"{path.name} has no rows")
    return df


def read_cell(src: Path, slug: str, copied: list[str]) -> Cell:
    s = _read(src / f"{slug}{SUMMARY}", SUMMARY_REQUIRED)
    if len(s) != 1:
        raise Skip(f"{slug}{SUMMARY} has {len(s)} rows, expected one")
    summary = s.iloc[0].to_dict()
    for key in SUMMARY_REQUIRED:
        if _blank(summary[key]):
            raise Skip(f"{slug}{SUMMARY} is incomplete (no {key})")
    if _bool(summary["moves_nothing"]) is None:
        raise Skip(f"{slug}{SUMMARY}: moves_nothing is {summary['moves_nothing']!r}, not true or false")
    axes = _read(src / f"{slug}{AXES}", AXES_REQUIRED)
    for row in axes.to_dict("records"):
        if _blank(row["axis"]) or _bool(row["moves"]) is None:
            raise Skip(f"{slug}{AXES} is incomplete (a row without its axis or moves)")
    axes = axes.assign(axis=axes["axis"].astype(str), moves=[bool(_bool(v)) for v in axes["moves"]])
    named = [c.split("/", 1)[1] for c in axes.columns if c.startswith("slope/")]
    features = [f for f in FEATURES if f in named] + [f for f in named if f not in FEATURES]
    cell = Cell(slug, str(summary["system"]), str(summary["effect"]), str(summary["space"]), summary, axes, features)
    cell.rows = [axis_row(r, features) for r in axes.to_dict("records")]
    have = set(copied)
    cell.files = [{"name": f"{slug}{k}", "src": f"latent/{slug}{k}"} for k in (SUMMARY, AXES, PROBES)
                  if f"{slug}{k}" in have]
    for key, default, caption in (("mel_grid", "_mel_grid.png", mel_caption),
                                  ("trajectories", "_trajectories.png", trajectory_caption)):
        name = Path(cell.text(key)).name or f"{slug}{default}"  # never outside latent/
        if name in have:
            cell.figures.append({"src": f"latent/{name}", "caption": caption(cell)})
        else:
            cell.notes.append(f"The {key.replace('_', ' ')} figure ({name}) is missing.")
    if f"{slug}{PROBES}" not in have:
        cell.notes.append(f"The raw probes ({slug}{PROBES}) are missing.")
    return cell


def _blank(v) -> bool:
    return v is None or (isinstance(v, float) and math.isnan(v)) or (isinstance(v, str) and not v.strip())


def _bool(v) -> bool | None:
    """True, False, or None when ``v`` says neither (empty, NaN, other text)."""
    if isinstance(v, str):
        return {"true": True, "1": True, "1.0": True, "false": False, "0": False, "0.0": False}.get(
            v.strip().lower())
    try:
        x = float(v)
    except (TypeError, ValueError):
        return None
    return None if math.isnan(x) else bool(x)


def _float(v) -> float:
    try:
        return float(v)
    except (TypeError, ValueError):
        return math.nan


# --- words and numbers ----------------------------------------------------------------------------------------
def _pct(v) -> str:
    x = _float(v)
    return NA if not math.isfinite(x) else f"{100 * x:.1f}"


def _num(v, spec: str = ".2f") -> str:
    x = _float(v)
    return NA if not math.isfinite(x) else format(x, spec)


def _int(v) -> str:
    x = _float(v)
    return NA if not math.isfinite(x) else f"{x:,.0f}"


def _ci(lo, hi) -> str:
    lo, hi = _float(lo), _float(hi)
    return f" [{lo:.2f}, {hi:.2f}]" if math.isfinite(lo) and math.isfinite(hi) else ""


def slope_text(row: dict, f: str) -> str:
    """"brightness +0.42 [0.30, 0.55]": the change of f per standard deviation along the axis, with its interval."""
    return f"{f} {_float(row.get(f'slope/{f}')):+.2f}{_ci(row.get(f'slope_low/{f}'), row.get(f'slope_high/{f}'))}"


def top_features(row: dict, features: list[str], k: int = TOP) -> list[str]:
    slopes = [(abs(_float(row.get(f"slope/{f}"))), i, f) for i, f in enumerate(features)]
    ranked = sorted((s for s in slopes if math.isfinite(s[0])), key=lambda s: (-s[0], s[1]))
    return [slope_text(row, f) for _, _, f in ranked[:k]]


def selectivity_text(row: dict) -> str:
    if not row["moves"]:
        return "moves nothing"
    main = "" if _blank(row.get("main_feature")) else str(row["main_feature"])
    sel = _float(row.get("selectivity"))
    if not math.isfinite(sel) and main:
        sel = _float(row.get(f"share/{main}"))
    if not math.isfinite(sel):
        return NA
    ci = _ci(row.get(f"share_low/{main}"), row.get(f"share_high/{main}")) if main else ""
    return f"{sel:.2f}{ci}" + (f" ({main})" if main else "")


def axis_row(row: dict, features: list[str]) -> Axis:
    return Axis(row["axis"], _pct(row.get("code_variance")), _pct(row.get("output_r2")), _num(row.get("change")),
                row["moves"], "" if _blank(row.get("main_param")) else str(row["main_param"]),
                top_features(row, features), selectivity_text(row))


def training_text(c: Cell) -> str:
    what = c.text("trained_for")
    if not what:
        return NA
    if what == "grid":
        return "the grid's checkpoint"
    head, _, rest = what.partition(":")
    what = f"the {head.strip()} ({rest.strip()})" if rest.strip() else what
    s = c.summary
    return (f"trained for {what}: {B.fmt(s.get('train_seconds'), 'train_seconds')} s, "
            f"{B.fmt(s.get('train_examples'), 'train_examples')} examples, "
            f"{B.fmt(s.get('train_steps'), 'steps')} steps, {B.fmt(s.get('train_renders'), 'renders')} renders")


def summary_row(c: Cell) -> list[str]:
    s = c.summary
    return [c.system, c.effect, c.space, _int(s.get("dims")), _int(s.get("n_axes")), _int(s.get("n_inputs")),
            _pct(s.get("code_variance")), _pct(s.get("output_r2")), _num(s.get("coverage")), c.text("verdict"),
            training_text(c)]


def _source(c: Cell) -> str:
    return "librosa" if c.text("feature_source") == "librosa" else "AudioCommons"


def nothing_sentence(c: Cell) -> str:
    """proposed on chorus: the latent moves nothing — no axis changes any AudioCommons feature by 0.25 of the
    effect's spread (the largest change over a walk is 0.04 of it, on pc2)."""
    what = "the knobs move nothing — no knob" if c.knobs else "the latent moves nothing — no axis"
    change = pd.to_numeric(c.axes["change"], errors="coerce")
    largest = ""
    if change.notna().any():
        i = int(change.fillna(-math.inf).to_numpy().argmax())
        largest = f" (the largest change over a walk is {change.iloc[i]:.2f} of it, on {c.axes['axis'].iloc[i]})"
    return f"{c.label}: {what} changes any {_source(c)} feature by {c.threshold:g} of the effect's spread{largest}."


def _thresholds(cells: list[Cell]) -> str:
    ts = sorted({c.threshold for c in cells}) or [MOVES]
    return " / ".join(f"{t:g}" for t in ts)


def intro(cells: list[Cell]) -> str:
    ns = sorted({int(x) for c in cells if math.isfinite(x := _float(c.summary.get("n_inputs")))})
    n = f"n = {ns[0]}" if len(ns) == 1 else ("n = n_inputs, per cell in the table" if not ns else
                                             f"n = {ns[0]} to {ns[-1]} per cell (the table's inputs)")
    return ("What is studied: the controller's decoded settings, before any hedge (each cell says what it decoded), "
            "along the interpolation between two references' codes and along the principal axes of the reference's "
            "VAE latent (space \"vae\"; the rest of the code the controller reads held at the references' mean) or "
            "of the whole code (space \"code\"); for the bottleneck variant, along each of its knobs (space "
            "\"knobs\"). At each point of a walk the settings are decoded and the input clip is processed with them; "
            "the AudioCommons features of the output describe what moved. Slopes are the change of a feature per "
            "standard deviation along the axis, in units of the effect's own spread of that feature; an axis moves "
            f"something when its linear change of some feature over the whole walk (|slope| x the walk's length) "
            f"reaches {_thresholds(cells)} of that spread. Selectivity "
            "is the share of an axis's summed |slope| taken by one feature (1: it moves that feature alone; 1/8: all "
            "alike). Each walk is repeated on several input clips and the 95% intervals are over those clips "
            f"({n}): t-intervals for slopes, bootstrap for shares. Code variance: the share of the code's variance in "
            "the studied axes; output R²: the share of the variance of the controller's output features over the "
            "references that a linear fit on those axes explains; coverage: the spread of those features over the "
            "references in units of the effect's spread (about 0: the same answer whatever the reference). Reverb "
            "is timbral_models' yes/no classification, not a level: one flip along a walk reads as a large slope "
            "with a wide interval (\"flips on some inputs\", not a reverberation knob).")


def mel_caption(c: Cell) -> str:
    along = "each knob" if c.knobs else "each principal axis of the code"
    return (f"{c.label} ({c.space_words}): mel spectrograms of the processed input along the interpolation between two "
            f"references' codes and along {along}.")


def trajectory_caption(c: Cell) -> str:
    along = "each knob" if c.knobs else "each principal axis"
    n = _int(c.summary.get("n_inputs"))
    return (f"{c.label} ({c.space_words}): each {_source(c)} feature, in units of the effect's spread, against the "
            f"position along {along} (standard deviations); the mean over the {n} input clips with a band.")


# --- the selectivity comparison -----------------------------------------------------------------------------
def best_share(c: Cell, f: str) -> tuple[float, float, float, str] | None:
    """(share, low, high, axis): the largest share of ``f`` over the cell's moving axes; None where none of them
    moves ``f`` at all (a yes/no feature such as reverb that never flips has a share of exactly 0)."""
    best = None
    for row in c.axes.to_dict("records"):
        v = _float(row.get(f"share/{f}"))
        if row["moves"] and math.isfinite(v) and v > 0 and (best is None or v > best[0]):  # 0: it stays put
            best = (v, _float(row.get(f"share_low/{f}")), _float(row.get(f"share_high/{f}")), row["axis"])
    return best


def comparisons(cells: list[Cell]) -> list[Comparison]:
    out = []
    for effect in sorted({c.effect for c in cells}):
        group = [c for c in cells if c.effect == effect]
        named = {f for c in group for f in c.features}
        features = [f for f in FEATURES if f in named] + sorted(named - set(FEATURES))
        rows, best = [], {}
        for f in features:
            shares = [best_share(c, f) for c in group]
            values = [s[0] for s in shares if s is not None]
            top = max(values) if values and len(group) >= 2 else None  # a largest needs two spaces
            entries = [(MISSING if s is None else f"{s[0]:.2f}{_ci(s[1], s[2])} ({s[3]})",
                        s is not None and top is not None and s[0] == top) for s in shares]
            rows.append((f, entries))
            if top is not None:
                best[f] = [c.column for c, (_, b) in zip(group, entries, strict=True) if b]
        out.append(Comparison(effect, [c.column for c in group], rows, best,
                              knob_sentence(effect, group, features) + timbre_sentence(group)))
    return out


def knob_sentence(effect: str, group: list[Cell], features: list[str]) -> str:
    """For how many features the knob space is more selective than each code space studied on the effect."""
    knobs = [c for c in group if c.knobs]
    codes = [c for c in group if not c.knobs]
    if not knobs:
        return f"{effect}: no knob system was studied on {effect}, so there is no knob space to compare the code with."
    if not codes:
        return (f"{effect}: no code space was studied on {effect}, so the knobs of "
                f"{', '.join(c.system for c in knobs)} have nothing to be compared with.")
    parts = []
    for k in knobs:
        for c in codes:
            count = {"knobs": 0, "code": 0, "tie": 0, "neither": 0}
            for f in features:
                a, b = best_share(k, f), best_share(c, f)
                if a is None and b is None:
                    count["neither"] += 1
                elif b is None or (a is not None and a[0] > b[0]):
                    count["knobs"] += 1
                elif a is None or a[0] < b[0]:
                    count["code"] += 1
                else:
                    count["tie"] += 1
            extra = [f"the {c.space_name} is more selective for {count['code'] or 'none'}"]
            if count["tie"]:
                extra.append(f"tied on {count['tie']}")
            if count["neither"]:
                extra.append(f"neither space moves {count['neither']}")
            parts.append(f"the knobs of {k.system} are more selective than the {c.space_name} of {c.system} for "
                         f"{count['knobs']} of {len(features)} features ({'; '.join(extra)})")
    return f"{effect}: " + "; ".join(parts) + "."


def timbre_sentence(group: list[Cell]) -> str:
    """For a system with timbre axes: how many of its named axes move their own feature most (with the study's
    selectivity threshold), and which."""
    out = []
    for c in (c for c in group if c.space == "timbre" and "own_feature" in c.axes.columns):
        rows = c.axes.to_dict("records")
        good = [r["own_feature"] for r in rows if _bool(r.get("own_is_main")) and _float(r.get("own_share")) >= 0.6]
        out.append(f" {c.system}: {len(good)} of {len(rows)} timbre axes move their own feature most with a share of "
                   f"at least 0.6" + (f" ({', '.join(good)})" if good else "") + ".")
    return "".join(out)


# --- Markdown (docs/results/NAME/tables.md) -----------------------------------------------------------------------
def _md_row(cells: list[str]) -> str:
    return "| " + " | ".join(str(c).replace("|", "\\|") for c in cells) + " |"


def to_markdown(sec: Section) -> str:
    """The section's tables in Markdown: the summary, the cells whose latent moves nothing, each cell's axes and the
    selectivity comparison (no figures)."""
    lines = ["## Latent-space study", "", sec.intro, ""]
    header = [h for h, _ in sec.summary_header]
    lines += [_md_row(header), _md_row(["---"] * len(header))] + [_md_row(r) for r in sec.summary_rows] + [""]
    lines += [f"- **{n}**" for n in sec.nothing] + ([""] if sec.nothing else [])
    lines += [f"- {n}" for n in sec.notes] + ([""] if sec.notes else [])
    for c in sec.cells:
        lines += [f"### {c.label} ({c.space_words})", ""]
        head = ["axis", "code variance (%)", "output R² (%)", "change", "largest slopes (per sd, in effect spreads)",
                "selectivity", "main parameter"]
        lines += [_md_row(head), _md_row(["---"] * len(head))]
        lines += [_md_row([a.axis, a.code_variance, a.output_r2, a.change, "; ".join(a.top) or NA, a.selectivity,
                           a.main_param or NA]) for a in c.rows] + [""]
    for cmp in sec.comparisons:
        lines += [f"### Selectivity on {cmp.effect}: the largest share of each feature over a space's moving axes", ""]
        lines += [_md_row(["feature", *cmp.columns]), _md_row(["---"] * (1 + len(cmp.columns)))]
        lines += [_md_row([f, *[f"**{t}**" if b else t for t, b in entries]]) for f, entries in cmp.rows]
        lines += ["", cmp.sentence, ""]
    return "\n".join(lines)
