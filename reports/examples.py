"""Audio examples: per task, the best, median and worst example of the focus system (by the primary metric,
among the examples whose audio the runner stored), copied into the report as 16-bit WAV for the page's players.

All clips of one example get the same gain, so their relative loudness is kept; the gain is below 0 dB only when
some clip would otherwise clip, and the page states it.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from reports import stats as S
from reports import store
from reports.results import Results

PRIMARY = ("mrstft", "mel_dist", "mfcc_dist", "ac_mean")
HEADROOM = 0.98


@dataclass
class Clip:
    label: str  # input | reference | target | system name
    kind: str  # "clip" or "output"
    src: str  # relative to the report directory
    score: float = math.nan  # the primary metric for outputs


@dataclass
class AudioExample:
    task: str
    example: int
    rank: str  # best | median | worst | stored
    metric: str
    value: float
    clips: list[Clip] = field(default_factory=list)
    gain_db: float = 0.0
    sample_rate: int = 0
    recipe: str = ""  # a wild example's hidden processing, in one line (example.json's meta.recipe)
    recipe_json: str = ""  # the same recipe in full
    arrays: dict[str, np.ndarray] = field(default_factory=dict, repr=False)  # label -> audio, for spectrograms


def primary_metric(r: Results) -> str | None:
    have = set(r.metrics)
    for m in PRIMARY:
        if m in have:
            return m
    for m in r.metrics:
        if "/" not in m and not m.startswith(("param_mae", "cost")):
            return m
    return None


def choose(values: dict[int, float], how: str) -> list[tuple[str, int]]:
    """(rank, example) for the best, median and worst of ``values`` (example -> score); fewer when fewer
    examples; examples without a finite score are not ranked."""
    items = [(v, e) for e, v in values.items() if np.isfinite(v)]
    if not items:
        return []
    sign = {"higher": -1.0}.get(how, 1.0)
    items.sort(key=lambda t: (abs(t[0]) if how == "signed" else sign * t[0], t[1]))
    picks = [("best", items[0][1]), ("median", items[(len(items) - 1) // 2][1]), ("worst", items[-1][1])]
    out, seen = [], set()
    for rank, e in picks:
        if e not in seen:
            seen.add(e)
            out.append((rank, e))
    return out


def collect(r: Results, report_dir: Path) -> list[AudioExample]:
    """Pick and copy the examples of every task that has stored audio."""
    metric = primary_metric(r)
    how = S.direction(metric) if metric else "lower"
    scores = r.scores[r.scores["metric"] == metric] if metric else r.scores.iloc[0:0]
    index = store.AudioIndex(r.out, r.tasks)
    result: list[AudioExample] = []
    for task in r.tasks:
        stored = index.examples(task)
        if not stored:
            continue
        per = scores[scores["task"] == task]
        focus = per[per["system"] == r.focus].groupby("example")["value"].mean().to_dict() if r.focus else {}
        with_focus = {e: focus.get(e, math.nan) for e in stored
                      if store.slug(r.focus or "") in index.clips(task, e)}
        picks = choose(with_focus, how)
        if not picks:  # the focus system has no stored output here: show the first stored example
            picks = [("stored", stored[0])]
        table = per.pivot_table(index="example", columns="system", values="value", aggfunc="mean")
        for rank, ex in picks:
            item = _copy(r, report_dir, index.clips(task, ex), task, ex, rank, metric, table)
            if item is not None:
                _add_recipe(item, index.meta(task, ex))
                result.append(item)
    return result


def _add_recipe(item: AudioExample, meta: dict) -> None:
    """Attach the hidden recipe of a wild example, so the page says what was done to the audio one hears."""
    from reports.wild import recipe_summary

    recipe = (meta.get("meta") or {}).get("recipe") if isinstance(meta.get("meta"), dict) else None
    if isinstance(recipe, dict) and recipe:
        item.recipe = recipe_summary(recipe)
        item.recipe_json = json.dumps(recipe, indent=1, default=str)


def _copy(r: Results, report_dir: Path, files: dict[str, Path], task: str, ex: int, rank: str, metric,
          table) -> AudioExample | None:
    import soundfile as sf

    order = [(name, "clip", name) for name in store.CLIPS]
    slugs = {store.slug(s): s for s in r.systems}
    known = [store.slug(s) for s in r.systems if store.slug(s) in files]
    extra = [k for k in files if k not in store.CLIPS and k not in known]  # outputs of systems not in the scores
    order += [(slugs.get(k, k), "output", k) for k in known + extra]
    arrays, rate = {}, 0
    for label, _, key in order:
        if key not in files:
            continue
        try:
            x, sr = sf.read(str(files[key]), dtype="float32", always_2d=True)
        except Exception:
            continue  # an unreadable clip is left out of the page, not a failed report
        if rate and sr != rate:
            continue
        rate = sr
        arrays[label] = x
    if not arrays:
        return None
    peak = max(float(np.max(np.abs(x))) if x.size else 0.0 for x in arrays.values())
    gain = min(1.0, HEADROOM / peak) if peak > 0 else 1.0
    rel = Path("audio") / task_dir(task) / f"{ex:04d}"
    (report_dir / rel).mkdir(parents=True, exist_ok=True)
    value = math.nan
    if metric is not None and r.focus in getattr(table, "columns", []) and ex in table.index:
        value = float(table.loc[ex, r.focus])
    item = AudioExample(task, ex, rank, metric or "", value, gain_db=20 * math.log10(gain), sample_rate=rate)
    for label, kind, _ in order:
        if label not in arrays:
            continue
        dst = rel / f"{store.slug(label)}.wav"
        sf.write(str(report_dir / dst), np.clip(arrays[label] * gain, -1, 1), rate, subtype="PCM_16")
        score = math.nan
        if kind == "output" and label in getattr(table, "columns", []) and ex in table.index:
            score = float(table.loc[ex, label])
        item.clips.append(Clip(label, kind, dst.as_posix(), score))
        item.arrays[label] = arrays[label].mean(axis=1)
    return item


def task_dir(task: str) -> str:
    """A file-name-safe, collision-free name for a task inside the report (the results store's own rule)."""
    from bench.results import task_slug

    return task_slug(task)
