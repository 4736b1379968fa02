"""A small synthetic results directory in the runner's format, for the report's tests and for trying the report
without running the benchmark (``python -m reports.synthetic OUT`` then ``afx-bench report --out OUT``).

Eight systems (the floors bypass, random, mean and constant, the oracle, proposed, a baseline that fails on one
cell, DeepAFx-ST; the three trained ones under every seed of :data:`SEEDS`, the others under the first seed only,
as the runner does), two corpora
(speech seen, music unseen), four effects (a seen EQ, an unseen delay, two "wild" kinds with hidden recipes),
metrics of every kind the report distinguishes: parameter error (n/a for bypass and for the wild kinds), spectral
distances, signed AudioCommons deltas, PESQ (higher is better, speech only), cost. Values are drawn so that the
proposed system is clearly better than bypass on the EQ, worse on the delay, clearly better than DeepAFx-ST on
the room and clearly worse on lofi (so the wild set's hypothesis test has a known answer per kind). Examples come
from the sources of :func:`source_of` (examples 0 and 1 of a task share one, every later example has its own),
``summary.csv`` is :func:`bench.results.summarise` of the scores, and ``budgets.csv`` has one row per trained
system and seed (one figure not recorded).

On the wild kinds, as the runner does: the oracle's scores are NaN (no oracle exists), the proposed model has a
labelled variant ``proposed:best_pick`` (better than everything: it chooses with the target), and
``info.parquet`` holds the controllers it picked (:data:`PICKS`, cycled over the examples).
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pandas as pd

from bench.results import BUDGET_COLUMNS, BUDGETS_FILE, INFO_COLUMNS, SCORE_COLUMNS, TASK_KEYS, summarise
from reports import store

SYSTEMS = ["bypass", "random", "mean", "constant", "oracle", "proposed", "oneshot_eq", "deepafx_st_autodiff"]
TRAINED = ("proposed", "oneshot_eq", "deepafx_st_autodiff")  # scored once per seed; the others under seeds[0]
SEEDS = (0, 1)
EFFECTS = {"peq": ("seen", ["gain_db", "freq_hz"]), "delay": ("unseen", ["time_ms", "mix"]),
           "room": ("wild", []), "lofi": ("wild", [])}
VARIANT = "proposed:best_pick"  # scored on the wild kinds only, like the runner's labelled variant answers
# info.parquet: the controller picked for example i of a wild kind is PICKS[kind][key][i % len]
PICKS = {"room": {"picked": ["reverb", "reverb", "delay"], "best_pick": ["reverb", "delay", "delay"]},
         "lofi": {"picked": ["peq", "distortion"], "best_pick": ["distortion", "distortion"]}}
RECIPES = {"room": {"kind": "room", "rt60_requested_s": 0.8, "room_m": [6.2, 4.1, 3.0], "absorption": 0.21,
                    "full_order": 60, "max_order": 12, "distance_m": 2.3, "tail_seed": 7, "rt60_measured_s": 0.79},
           "lofi": {"kind": "lofi", "style": "telephone", "drive_db": 6.0, "highpass_hz": 300.0,
                    "lowpass_hz": 3400.0, "resample_hz": 8000.0, "codec": "gsm", "mp3_vbr_quality": None}}
CORPORA = {"speech": "seen", "music": "unseen"}
FEATURES = ["brightness", "depth", "warmth"]
SR = 8000
FAILED = ("oneshot_eq", "music/delay/test")


def source_of(corpus: str, index: int) -> str:
    """Examples 0 and 1 share a source; every later example has its own (a task of n examples has n - 1)."""
    return f"{corpus}-{max(0, index - 1)}"


def make_results(out: Path, *, n: int = 8, n_audio: int = 3, seed: int = 0, mlflow: bool = False,
                 latent: bool = True, seeds: tuple[int, ...] = SEEDS, budgets: bool = True) -> Path:
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(seed)
    rows, params, info = [], [], []
    for corpus, cset in CORPORA.items():
        for effect, (eset, pnames) in EFFECTS.items():
            task = f"{corpus}/{effect}/test"
            tags = {"task": task, "effect": effect, "effect_set": eset, "corpus": corpus, "corpus_set": cset,
                    "split": "test"}
            examples = [_example(rng, i, pnames, hidden=not pnames) for i in range(n)]
            wild = eset == "wild"
            for system in SYSTEMS + ([VARIANT] if wild else []):
                if (system, task) == FAILED:
                    continue
                trained = system in TRAINED or system == VARIANT
                for sd in seeds if trained else seeds[:1]:
                    est = [_estimate(rng, system, ex, effect) for ex in examples]
                    if sd == seeds[0] and not (wild and system == "oracle"):  # no oracle output on the wild set
                        _save_audio(out, system, tags, examples[:n_audio], est[:n_audio])
                    if wild and system in ("proposed", VARIANT):  # as the runner: best_pick in both systems' info
                        for key in ("picked", "best_pick") if system == "proposed" else ("best_pick",):
                            info += [{"system": system, **tags, "seed": sd, "example": ex.index, "key": key,
                                      "value": PICKS[effect][key][ex.index % len(PICKS[effect][key])]}
                                     for ex in examples]
                        info += [{"system": system, **tags, "seed": sd, "example": ex.index, "key": "note",
                                  "value": "ignored"} for ex in examples[:1]]  # other keys are not picks
                    params += _param_rows(system, {**tags, "seed": sd}, examples, est)
                    for ex, e in zip(examples, est, strict=True):
                        for metric, value in _scores(rng, system, effect, corpus, ex, e).items():
                            rows.append({"system": system, **{k: tags[k] for k in TASK_KEYS}, "seed": sd,
                                         "example": ex.index, "source_id": source_of(corpus, ex.index),
                                         "metric": metric, "value": value})
    pd.DataFrame(params, columns=store.PARAM_COLUMNS).to_parquet(out / "params.parquet", index=False)
    pd.DataFrame(info, columns=INFO_COLUMNS).to_parquet(out / "info.parquet", index=False)
    scores = pd.DataFrame(rows, columns=SCORE_COLUMNS)
    scores.to_parquet(out / "scores.parquet", index=False)
    summarise(scores).to_csv(out / "summary.csv", index=False)
    if budgets:
        _budgets(rng, seeds).to_csv(out / BUDGETS_FILE, index=False)
    s, t = FAILED
    c, e, _ = t.split("/")
    pd.DataFrame([{"system": s, "task": t, "effect": e, "effect_set": EFFECTS[e][0], "corpus": c,
                   "corpus_set": CORPORA[c], "split": "test", "stage": "evaluate",
                   "error": "SystemError_: oneshot_eq: NaN/Inf in its output audio for music/delay/test#2"}]).to_csv(
        out / "failures.csv", index=False)
    config = {"preset": "synthetic", "run": {"seed": seed, "seeds": list(seeds), "sample_rate": SR},
              "systems": {"include": SYSTEMS},
              "effects": {k: [e for e, (es, _) in EFFECTS.items() if es == k] for k in ("seen", "unseen", "wild")},
              "data": {"seen_corpora": ["speech"], "unseen_corpora": ["music"]}, "tasks": {"n_test": n}}
    (out / "config.json").write_text(json.dumps(config, indent=1))
    if latent:
        _latent(out / "latent")
    if mlflow:
        _mlflow(out, scores, config)
    return out


def _budgets(rng, seeds: tuple[int, ...]) -> pd.DataFrame:
    """One row per trained system and seed; DeepAFx-ST records no device seconds (NaN: not recorded)."""
    size = {"proposed": (2000, 1000, 250_000), "oneshot_eq": (2000, 1000, 40_000),
            "deepafx_st_autodiff": (384, 120, 54_000)}
    rows = []
    for system in TRAINED:
        examples, steps, parameters = size[system]
        for sd in seeds:
            secs = float(round(30 + 10 * rng.random(), 2))
            rows.append({"system": system, "seed": sd, "train_examples": examples, "steps": steps,
                         "train_renders": examples if system != "deepafx_st_autodiff" else 2 * steps * 8,
                         "train_seconds": secs, "device": "cpu",
                         "device_seconds": np.nan if system == "deepafx_st_autodiff" else secs,
                         "parameters": parameters})
    return pd.DataFrame(rows, columns=BUDGET_COLUMNS)


def _save_audio(out: Path, system: str, tags: dict, examples: list, estimates: list) -> None:
    """The runner's layout (see reports/store.py): FLAC 24-bit, a clip above full scale scaled to 0.99."""
    import hashlib

    import soundfile as sf

    task = tags["task"]
    tdir = f"{store.slug(task)}-{hashlib.sha256(json.dumps(task).encode()).hexdigest()[:6]}"
    for ex, est in zip(examples, estimates, strict=True):
        d = out / store.AUDIO_DIR / tdir / f"{ex.index:04d}"
        d.mkdir(parents=True, exist_ok=True)
        for name, x in (("input", ex.input), ("reference", ex.reference), ("target", ex.target),
                        (store.slug(system), est.output)):
            peak = float(np.max(np.abs(x)))
            sf.write(str(d / f"{name}.flac"), x / peak * 0.99 if peak > 0.99 else x, SR, subtype="PCM_24")
        meta = {"recipe": RECIPES[tags["effect"]]} if tags["effect"] in RECIPES else {}
        (d / "example.json").write_text(json.dumps({**tags, "example": ex.index, "meta": meta}))


def _param_rows(system: str, tags: dict, examples: list, estimates: list) -> list[dict]:
    rows = []
    for ex, est in zip(examples, estimates, strict=True):
        if est.params01 is None or ex.true_params01 is None:
            continue
        for name, e, t in zip(ex.param_names, est.params01, ex.true_params01, strict=True):
            rows.append({"system": system, **{k: tags[k] for k in store.PARAM_COLUMNS[1:8]}, "example": ex.index,
                         "param": name, "estimate": float(e), "true": float(t)})
    return rows


def _example(rng, i: int, pnames: list[str], hidden: bool):
    t = np.arange(SR // 2) / SR
    x = (0.3 * np.sin(2 * np.pi * rng.uniform(110, 440) * t) + 0.05 * rng.standard_normal(t.size)).astype(
        np.float32)
    true = None if hidden else rng.uniform(0, 1, len(pnames))
    g = 1.0 + (true[0] if true is not None else 0.5)
    ref = np.roll(x, 100) * g
    return SimpleNamespace(index=i, input=x, reference=ref.astype(np.float32), target=(x * g).astype(np.float32),
                           true_params01=true, param_names=tuple(pnames))


def _estimate(rng, system: str, ex, effect: str):
    p = None
    if ex.true_params01 is not None and system != "bypass":
        noise = {"random": 0.4, "mean": 0.0, "constant": 0.0, "oracle": 0.0, "proposed": 0.08, "oneshot_eq": 0.15, "deepafx_st_autodiff": 0.2}[
            system]
        p = np.clip(ex.true_params01 + noise * rng.standard_normal(ex.true_params01.size), 0, 1)
        if system == "random":
            p = rng.uniform(0, 1, ex.true_params01.size)
        if system in ("mean", "constant"):  # one setting for every example
            p = np.full(ex.true_params01.size, 0.5 if system == "mean" else 0.4)
    if system == "bypass":
        y = ex.input
    elif system == "oracle":
        y = ex.target
    else:
        y = 0.6 * ex.target + 0.4 * ex.input + 0.01 * rng.standard_normal(ex.input.size)
        if system == "proposed" and effect == "peq" and ex.index == 0:
            y = y * 1.8  # one loud output
    return SimpleNamespace(params01=p, output=np.asarray(y, np.float32))


def _scores(rng, system, effect, corpus, ex, est) -> dict[str, float]:
    quality = {"bypass": 1.0, "random": 1.3, "mean": 0.95, "constant": 0.9, "oracle": 0.05, "proposed": 0.45, "oneshot_eq": 0.7,
               "deepafx_st_autodiff": 0.8, VARIANT: 0.3}[system]
    if system == "proposed" and effect == "delay":
        quality = 1.25  # worse than bypass on the unseen effect
    if effect == "room" and system == "deepafx_st_autodiff":
        quality = 1.0  # the proposed model (0.45) is clearly better on the room
    if effect == "lofi" and system == "proposed":
        quality = 1.4  # ... and clearly worse than DeepAFx-ST (0.8) on lofi
    d: dict[str, float] = {}
    if est.params01 is None or ex.true_params01 is None:
        d["param_mae"] = float("nan")
        for name in ex.param_names:
            d[f"param_mae/{name}"] = float("nan")
    else:
        err = np.abs(np.asarray(est.params01) - ex.true_params01)
        d["param_mae"] = float(err.mean())
        d.update({f"param_mae/{k}": float(v) for k, v in zip(ex.param_names, err, strict=True)})
    d["mrstft"] = float(quality * (1.0 + 0.15 * rng.standard_normal()) + 0.05)
    d["mfcc_dist"] = float(20 * quality * (1.0 + 0.1 * rng.standard_normal()) + 1)
    for f in FEATURES:
        delta = quality * (3 + 2 * rng.standard_normal())
        d[f"ac_signed/{f}"] = float(delta)
        d[f"ac/{f}"] = float(abs(delta))
    d["ac_mean"] = float(np.mean([d[f"ac/{f}"] for f in FEATURES]))
    d["pesq"] = float(np.clip(4.5 - 2.5 * quality + 0.2 * rng.standard_normal(), 1, 4.5)) if corpus == "speech" \
        else float("nan")
    d["cost/seconds"] = float({"bypass": 0.0, "oracle": 0.0}.get(system, 0.01 + 0.002 * rng.random()))
    if system == "oracle" and not ex.param_names:  # hidden processing: no oracle, every cell not applicable
        d = {k: float("nan") for k in d}
    return d


def _latent(d: Path) -> None:
    """A latent study of chorus in the schema of reports/latent.py: ``proposed`` in its code space, where the latent
    moves nothing, and ``proposed_knobs`` in its knob space, whose three knobs each move one feature most (depth,
    brightness, reverb); each with its summary, axes and probes CSVs and two tiny figures."""
    import matplotlib

    matplotlib.use("Agg", force=False)
    from matplotlib.figure import Figure

    features = ("hardness", "depth", "brightness", "roughness", "warmth", "sharpness", "boominess", "reverb")
    d.mkdir(parents=True, exist_ok=True)
    cells = {  # system -> (space, dims, axis names, slopes per axis (feature order), trained for)
        "proposed": ("code", 16, ["pc1", "pc2", "pc3"],
                     [[0.01, 0.02, -0.01, 0.0, 0.01, 0.0, 0.01, 0.0], [0.0, -0.01, 0.02, 0.01, 0.0, 0.01, 0.0, 0.0],
                      [0.01, 0.0, 0.0, 0.0, -0.01, 0.0, 0.0, 0.01]], "grid"),
        "proposed_knobs": ("knobs", 3, ["knob1", "knob2", "knob3"],
                           [[0.02, 0.45, 0.05, 0.02, 0.1, 0.03, 0.05, 0.02],
                            [0.05, 0.02, 0.6, 0.03, -0.12, 0.08, 0.02, 0.01],
                            [0.02, 0.1, 0.02, 0.01, 0.02, 0.01, 0.03, 0.5]], "study: peq4, delay, chorus")}
    for system, (space, dims, names, slopes, trained) in cells.items():
        slug = f"chorus__{system}"
        code = space == "code"
        axes = []
        for i, (name, sl) in enumerate(zip(names, slopes, strict=True)):
            sl = np.asarray(sl)
            share = np.abs(sl) / np.abs(sl).sum()
            change = float(2 * np.abs(sl).max())  # a walk of +-1 sd
            main = int(np.argmax(share)) if change >= 0.25 else -1
            row = {"system": system, "effect": "chorus", "space": space, "axis": name,
                   "code_variance": [0.31, 0.18, 0.09][i] if code else np.nan, "output_r2": 0.02 if code else 0.25,
                   "change": change, "moves": change >= 0.25, "main_feature": features[main] if main >= 0 else "",
                   "selectivity": float(share[main]) if main >= 0 else np.nan,
                   "main_param": ["rate_hz", "depth", "mix"][i], "n_inputs": 4}
            for f, s, sh in zip(features, sl, share, strict=True):
                row.update({f"slope/{f}": s, f"slope_low/{f}": s - 0.05, f"slope_high/{f}": s + 0.05,
                            f"share/{f}": sh, f"share_low/{f}": max(0.0, sh - 0.08),
                            f"share_high/{f}": min(1.0, sh + 0.08)})
            axes.append(row)
        pd.DataFrame(axes).to_csv(d / f"{slug}_axes.csv", index=False)
        verdict = ("The latent moves nothing: the controller gives nearly the same setting whatever the reference."
                   if code else "knob2 moves brightness most; 3 of 3 knobs move a feature.")
        budget = dict.fromkeys(("train_seconds", "train_examples", "train_steps", "train_renders"), np.nan) \
            if code else {"train_seconds": 95.2, "train_examples": 2000, "train_steps": 500, "train_renders": 2000}
        pd.DataFrame([{"system": system, "effect": "chorus", "space": space,
                       "controller": f"{system}: the controller before the hedge", "feature_source": "audiocommons",
                       "dims": dims, "n_axes": 3, "n_inputs": 4, "n_references": 8,
                       "code_variance": 0.58 if code else np.nan, "output_r2": 0.03 if code else 0.71,
                       "coverage": 0.02 if code else 0.64, "moves_nothing": code, "verdict": verdict,
                       "trained_for": trained, **budget, "mel_grid": f"{slug}_mel_grid.png",
                       "trajectories": f"{slug}_trajectories.png"}]).to_csv(d / f"{slug}_summary.csv", index=False)
        pd.DataFrame([{"system": system, "effect": "chorus", "path": name, "input": m, "position": t,
                       "feature/depth": 0.5 + t * slopes[0][1]} for name in names for m in range(2)
                      for t in (-1.0, 0.0, 1.0)]).to_csv(d / f"{slug}_probes.csv", index=False)
        for kind in ("mel_grid", "trajectories"):
            fig = Figure(figsize=(2, 1.5))
            ax = fig.subplots()
            ax.plot(np.linspace(-1, 1, 9), np.linspace(-1, 1, 9) * (0.0 if code else 0.5))
            ax.set_title(f"{system}: {kind}", fontsize=6)
            fig.savefig(d / f"{slug}_{kind}.png", dpi=40)


def _mlflow(out: Path, scores: pd.DataFrame, config: dict) -> None:
    from bench.tracking import Tracker, environment

    tr = Tracker(out, "", "afx-bench-synthetic")
    parent = tr.start("synthetic-run", {"kind": "benchmark", "preset": "synthetic", "git_sha": "0" * 40})
    parent.log_dict(config, "config.json")
    parent.log_dict(environment("cpu"), "environment.json")
    for (system, task), g in scores.groupby(["system", "task"]):
        run = tr.start(f"{system}/{task}", {"system": system, "kind": "cell", "task": task}, parent=parent)
        run.log_metrics(g.groupby("metric")["value"].mean().to_dict())
        run.end()
    failed = tr.start(f"{FAILED[0]}/{FAILED[1]}", {"system": FAILED[0], "kind": "cell", "task": FAILED[1]},
                      parent=parent)
    failed.set_tags({"error": "SystemError_: NaN output"})
    failed.end("FAILED")
    parent.end()


if __name__ == "__main__":
    print(make_results(Path(sys.argv[1]), mlflow="--mlflow" in sys.argv[2:]))
