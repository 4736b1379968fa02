"""`afx-bench match`: apply a trained system to your own files: make ``--input`` sound like ``--reference``.

Files of any length, sample rate and channel count. Both are mixed to mono and resampled to the system's working
rate, cut into chunks of its segment length (the input's chunks overlap by up to 20 ms; a file shorter than one
segment is repeated to fill it), and each input chunk is matched against a reference chunk (in turn, cycling
through the reference). Then:

* a system that returns settings: the whole-file settings are the **median of the chunk estimates** (per
  parameter, normalised), printed in physical units and applied with the effect to every channel of the input at
  its own rate, so the output keeps the input's rate, channels and length;
* hidden-processing mode (``--effect auto``: an effect with no parameters, which the proposed model meets with its
  auto rule): the controller picked for most chunks, with the median of its settings over those chunks, applied
  the same way; a system that picks nothing answers with audio as below;
* a system that answers with audio only: each channel is processed chunk by chunk (crossfaded over the overlap)
  and resampled back.

``--adjust brightness=+10,depth=-5`` (a system with timbre axes, ``proposed_timbre``, and a named ``--effect``):
each chunk's answer is moved along those axes by the asked change in AudioCommons points (divided by the effect's
spread of that feature: the axes' unit), and the median of the moved settings is applied. What the move achieved
is measured on the input's chunks (processed with the moved settings against the unmoved ones, AudioCommons
features, mean over chunks) and corrected by what is still missing, ``ADJUST_ITERATIONS`` times (the axes are
entangled where the features are: a brighter EQ is also sharper); the try nearest the asked change is applied, and
its achieved change is printed beside the change asked. A system without such axes is a one-line error.

The settings, per-chunk estimates and choices are written as JSON beside the output (``<out-file>.json``).
"""

from __future__ import annotations

import json
import sys
from collections import Counter
from pathlib import Path

import numpy as np

from bench.commands import Command, register_command
from bench.metrics.timbral import FEATURES as AC_FEATURES

BATCH = 16
FADE_SECONDS = 0.02
ADJUST_ITERATIONS = 3  # corrections of an adjustment by what it achieved (see adjust_answer)


class AdjustError(ValueError):
    """A ``--adjust`` request that cannot be met: bad syntax, an unknown feature, a system without timbre axes."""


def parse_adjust(text: str) -> dict[str, float]:
    """``"brightness=+10,depth=-5"`` -> {"brightness": 10.0, "depth": -5.0} (AudioCommons points)."""
    out: dict[str, float] = {}
    for part in (p.strip() for p in str(text).split(",")):
        if not part:
            continue
        name, sep, value = part.partition("=")
        name = name.strip().lower()
        if not sep or name not in AC_FEATURES:
            raise AdjustError(f"--adjust: {part!r} is not FEATURE=CHANGE with FEATURE one of {', '.join(AC_FEATURES)}")
        try:
            out[name] = float(value)
        except ValueError:
            raise AdjustError(f"--adjust: {part!r}: the change must be a number of AudioCommons points") from None
        if not np.isfinite(out[name]):
            raise AdjustError(f"--adjust: {part!r}: the change must be finite")
    if not out:
        raise AdjustError("--adjust: nothing asked (e.g. --adjust brightness=+10,depth=-5)")
    return out


@register_command("match")
class Match(Command):
    help = "process your own input file to match a reference file with a trained system"

    def add_arguments(self, p):
        p.add_argument("--system", required=True, help="system name (as in the config, e.g. proposed)")
        p.add_argument("--checkpoint", help="a checkpoint folder or runs:/RUN_ID/checkpoint URI, resolved in --out's "
                                            "own MLflow store (default: the run's own checkpoint under --out, or "
                                            "systems.NAME.checkpoint)")
        p.add_argument("--preset", default="quick", help="the preset the system was trained with (default: quick)")
        p.add_argument("--config", help="a TOML file merged over the preset")
        p.add_argument("--out", help="the results directory of the run that trained it (default: results/<preset>)")
        p.add_argument("--tracking-uri", help="the MLflow store of a runs:/ checkpoint when it is not --out's own")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE")
        p.add_argument("--seed", type=int, help="the training seed whose checkpoint to load (default: run.seed)")
        p.add_argument("--device", help="auto | cpu | cuda")
        p.add_argument("--input", required=True, help="the audio to process")
        p.add_argument("--reference", required=True, help="the audio whose sound to match")
        p.add_argument("--effect", default="auto", help="an effect name, or auto: unknown processing (default)")
        p.add_argument("--out-file", required=True, help="where to write the processed audio (a .wav or .flac)")
        p.add_argument("--adjust", metavar="FEATURE=CHANGE,...",
                       help="move the answer along timbre axes, in AudioCommons points, e.g. brightness=+10,depth=-5 "
                            f"(features: {', '.join(AC_FEATURES)}; a system with timbre axes, e.g. proposed_timbre)")

    def __call__(self, args) -> int:
        from bench import audio as A
        from bench.corpora import CorpusError
        from bench.systems import SystemError_

        try:
            result = match_files(args)
        except (A.AudioError, CorpusError, SystemError_, AdjustError, OSError) as e:
            print(f"afx-bench match: error: {e}", file=sys.stderr)
            return 2
        print(render_settings(result))
        print(f"output:   {result['output']}\nsettings: {result['settings_file']}")
        return 0


def read_audio(path: str, what: str) -> tuple[np.ndarray, int]:
    """(channels, samples) float32 and the rate; a clear AudioError naming the file for anything unusable."""
    import soundfile as sf

    from bench import audio as A

    p = Path(path)
    if not p.is_file():
        raise A.AudioError(f"{what} {p}: no such file")
    try:
        data, sr = sf.read(str(p), dtype="float32", always_2d=True)
    except Exception as e:
        raise A.AudioError(f"{what} {p}: cannot be decoded ({e})") from e
    A.check(data.T, f"{what} {p}")
    return np.ascontiguousarray(data.T), int(sr)


def load_system(args, cfg, plan):
    """The system of ``--system``: from ``--checkpoint`` (a folder or a ``runs:/`` URI of ``--out``'s store), its
    configured checkpoint, or the checkpoint the run of ``--out`` trained (built as is if it does not train)."""
    from bench.cell import system_key
    from bench.jobs import load_system as build_and_load
    from bench.results import ResultStore
    from bench.systems import CheckpointError
    from bench.tracking import resolve_checkpoint

    name = args.system
    out = Path(args.out) if args.out else Path("results") / cfg.preset
    ckpt = args.checkpoint or cfg.system_config(name).get("checkpoint")
    if ckpt:
        path = resolve_checkpoint(ckpt, out, args.tracking_uri or cfg.tracking.uri)
        return build_and_load(cfg, name, plan.device, path), str(ckpt)
    system = build_and_load(cfg, name, plan.device)
    if not system.trainable:
        return system, None
    seed = cfg.run.seed if args.seed is None else args.seed
    store = ResultStore(out)
    folder, key = store.checkpoint_dir(name, seed), store.trained_key(name, seed)
    if key is None:
        raise CheckpointError(f"{name}: no trained checkpoint at {folder}; train it with `afx-bench run --preset "
                              f"{cfg.preset} --out {out} --systems {name}` or pass --checkpoint PATH|runs:/...")
    if key != system_key(cfg, name, seed):
        print(f"note: {folder} was trained under other settings than --preset {cfg.preset} gives now; loading it")
    system.load(folder)
    return system, str(folder)


def _chunks(n: int, length: int, hop: int) -> list[int]:
    if n <= length:
        return [0]
    starts = list(range(0, n - length, hop))
    return starts + [n - length]


def _fit(x: np.ndarray, length: int) -> np.ndarray:
    """``x`` repeated until it holds at least ``length`` samples."""
    return np.tile(x, int(np.ceil(length / len(x)))) if len(x) < length else x


def _answer(system, effect, inputs: np.ndarray, refs: np.ndarray) -> list:
    out = []
    for i in range(0, len(inputs), BATCH):
        out += system.match_batch(inputs[i : i + BATCH], refs[i : i + BATCH], effect)
    return out


def _overlap_add(chunks: list[np.ndarray], starts: list[int], n: int, fade: int) -> np.ndarray:
    y, weight = np.zeros(n, np.float64), np.zeros(n, np.float64)
    for k, (c, s) in enumerate(zip(chunks, starts, strict=True)):
        w = np.ones(len(c))
        if fade and k > 0:
            w[:fade] = np.linspace(0, 1, fade + 2)[1:-1]
        if fade and k < len(chunks) - 1:
            w[-fade:] = np.linspace(1, 0, fade + 2)[1:-1]
        y[s : s + len(c)] += c * w
        weight[s : s + len(c)] += w
    return (y / np.maximum(weight, 1e-9)).astype(np.float32)


def physical(effect, params01) -> dict:
    values = effect.to_physical(np.asarray(params01, dtype=np.float32))
    return {p.name: {"value": round(float(values[p.name]), 4), "unit": p.unit} for p in effect.params}


def match_files(args) -> dict:
    from bench import audio as A
    from bench.commands import csv_list
    from bench.config import load_config
    from bench.effects import get_effect
    from bench.plan import Plan, check, make_effect
    from bench.systems import PICKED, PICKED_PARAMS

    adjust = parse_adjust(args.adjust) if getattr(args, "adjust", None) else None
    if adjust and args.effect == "auto":
        raise AdjustError("--adjust: name the effect (--effect NAME): the timbre axes belong to one effect's controller")
    cfg = load_config(args.preset, file=args.config, sets=list(args.sets), systems=csv_list(args.system),
                      device=args.device)
    check(cfg)
    plan = Plan.build(cfg)
    x, sr_in = read_audio(args.input, "input")
    ref, sr_ref = read_audio(args.reference, "reference")
    effect = get_effect("room") if args.effect == "auto" else make_effect(cfg, args.effect)
    system, ckpt = load_system(args, cfg, plan)
    if adjust and not getattr(system, "timbre_names", ()):
        raise AdjustError(f"--adjust: {system.name} has no timbre axes (only a system trained with timbre_axes = true, "
                          "e.g. proposed_timbre, can be adjusted)")
    sr, L = cfg.run.sample_rate, cfg.segment_samples
    fade = min(L // 4, int(FADE_SECONDS * sr))
    mono = _fit(A.resample(x.mean(axis=0), sr_in, sr), L)
    rmono = _fit(A.resample(ref.mean(axis=0), sr_ref, sr), L)
    starts = _chunks(len(mono), L, L - fade)
    rstarts = _chunks(len(rmono), L, L)
    refs = np.stack([rmono[rstarts[i % len(rstarts)] :][:L] for i in range(len(starts))])
    chunks = np.stack([mono[s : s + L] for s in starts])
    est = _answer(system, effect, chunks, refs)
    result = {"system": system.name, "checkpoint": ckpt, "effect": args.effect, "input": str(args.input),
              "reference": str(args.reference), "input_rate": sr_in, "channels": int(x.shape[0]),
              "seconds": round(x.shape[1] / sr_in, 3), "system_rate": sr, "segment_samples": L,
              "chunks": len(starts)}
    applied = None
    if all(e.params01 is not None for e in est) and effect.n_params:
        p = np.median(np.stack([np.asarray(e.params01, np.float32) for e in est]), axis=0)
        applied, result["how"] = (effect, p), "median of the chunk estimates, applied to every channel"
        result["chunk_params01"] = [[round(float(v), 5) for v in e.params01] for e in est]
        if adjust:
            p = adjust_answer(system, effect, chunks, refs, adjust, result, cfg)
            applied, result["how"] = (effect, p), ("median of the chunk estimates moved along the timbre axes, "
                                                   "applied to every channel")
    elif all(PICKED in e.info for e in est):
        picks = [e.info[PICKED] for e in est]
        top = Counter(picks).most_common(1)[0][0]
        result["picked_per_chunk"] = picks
        if top != "bypass":
            ps = [e.info[PICKED_PARAMS] for e in est if e.info[PICKED] == top and PICKED_PARAMS in e.info]
            eff = get_effect(top)
            applied = (eff, np.median(np.asarray(ps, np.float32), axis=0) if ps else eff.default01())
        result["picked"] = top
        result["how"] = (f"controller picked for most chunks ({picks.count(top)} of {len(picks)}), median of its "
                         "settings over those chunks, applied to every channel")
    if applied is not None:
        eff, p = applied
        result["effect_applied"] = eff.name
        result["params01"] = [round(float(v), 5) for v in p]
        result["settings"] = physical(eff, p)
        y = eff.process(x, sr_in, p)
    elif result.get("picked") == "bypass":
        y = x.copy()
    else:
        result["how"] = "audio answered chunk by chunk per channel (no settings), crossfaded, resampled back"
        y = []
        for ch in x:
            c = _fit(A.resample(ch, sr_in, sr), L)
            outs = _answer(system, effect, np.stack([c[s : s + L] for s in starts]), refs)
            full = _overlap_add([np.asarray(o.output, np.float32) for o in outs], starts, len(c), fade)
            y.append(A.resample(full[: int(round(x.shape[1] * sr / sr_in))], sr, sr_in))
        n = min(len(c) for c in y)
        y = np.stack([c[:n] for c in y])
    y = np.asarray(y, np.float32)
    y = np.pad(y, ((0, 0), (0, max(0, x.shape[1] - y.shape[1]))))[:, : x.shape[1]]
    out = A.save(args.out_file, y if y.shape[0] > 1 else y[0], sr_in)
    result["output"] = str(out)
    result["settings_file"] = str(Path(out).with_suffix(".json"))
    Path(result["settings_file"]).write_text(json.dumps(result, indent=1))
    return result


def adjust_answer(system, effect, chunks: np.ndarray, refs: np.ndarray, adjust: dict[str, float], result: dict,
                  cfg, iterations: int = ADJUST_ITERATIONS) -> np.ndarray:
    """Move the chunks' answers along the timbre axes (``system.adjusted_params``) and return the median of the
    moved settings. What a move achieves is measured: the input's chunks processed with the moved median against
    the unmoved one, AudioCommons features, mean over chunks. Then ``iterations`` times the axes are moved again by
    what is still missing (asked minus achieved on the asked features, minus the achieved change on the others,
    which were asked to stay), and the move whose achieved change is nearest the asked one (in units of the
    effect's spread) is kept. ``result["adjust"]``: asked, achieved, every try and the unadjusted settings."""
    from bench.metrics import get_metric

    sr = cfg.run.sample_rate
    units = system.timbre_units(effect)
    movable = [f for f in AC_FEATURES if np.isfinite(units.get(f, np.nan))]
    ac_cfg = {k: v for k, v in (cfg.metric_config("ac") if "ac" in cfg.metric_names() else {}).items()
              if k != "max_examples"}
    metric = get_metric("ac", {**ac_cfg, "workers": 1}, sample_rate=sr)

    def settings(moves):
        base, moved = [], []
        for i in range(0, len(chunks), BATCH):
            b, m = system.adjusted_params(effect, chunks[i : i + BATCH], refs[i : i + BATCH], moves)
            base.append(b)
            moved.append(m)
        return (np.median(np.concatenate(base), axis=0).astype(np.float32),
                np.median(np.concatenate(moved), axis=0).astype(np.float32))

    def features(p):
        y = effect.process(chunks, sr, np.broadcast_to(p, (len(chunks), len(p))))
        recs = metric.features([np.asarray(c, np.float32) for c in y])
        return np.array([[float(r["features"].get(f, np.nan)) for f in AC_FEATURES] for r in recs])

    def miss(got):  # distance from the asked change, in spreads, over the features that can be measured
        return float(np.sqrt(np.nanmean([((got[f] - adjust.get(f, 0.0)) / units[f]) ** 2 for f in movable])))

    tries = []
    try:
        p0, _ = settings({})
        F0 = features(p0)
        moves = {f: float(v) for f, v in adjust.items()}
        for _ in range(max(0, int(iterations)) + 1):
            _, p1 = settings(moves)
            import warnings

            with warnings.catch_warnings():
                warnings.simplefilter("ignore", RuntimeWarning)
                delta = np.nanmean(features(p1) - F0, axis=0)
            got = {f: float(v) for f, v in zip(AC_FEATURES, delta, strict=True)}
            tries.append({"moves": {f: round(v, 3) for f, v in moves.items()}, "params01": p1,
                          "achieved": got, "miss": miss(got)})
            moves = {f: moves.get(f, 0.0) + adjust.get(f, 0.0) - got[f] for f in movable if np.isfinite(got[f])}
    finally:
        metric.close()
    best = min(tries, key=lambda t: t["miss"] if np.isfinite(t["miss"]) else np.inf)
    rnd = lambda d: {f: (round(v, 3) if np.isfinite(v) else None) for f, v in d.items()}  # noqa: E731
    result["adjust"] = {"asked": adjust, "achieved": rnd(best["achieved"]), "try": tries.index(best) + 1,
                        "tries": [{"moves": t["moves"], "achieved": rnd(t["achieved"]), "miss": round(t["miss"], 4),
                                   "params01": [round(float(v), 5) for v in t["params01"]]} for t in tries],
                        "params01_unadjusted": [round(float(v), 5) for v in p0],
                        "settings_unadjusted": physical(effect, p0),
                        "units": {f: (round(u, 4) if np.isfinite(u) else None) for f, u in units.items()}}
    return best["params01"]


def render_adjust(adj: dict) -> list[str]:
    lines = [f"AudioCommons change of the adjustment (points, and in units of the effect's spread of each feature; "
             f"on the input's chunks, mean over chunks; try {adj['try']} of {len(adj['tries'])}):",
             f"  {'feature':<10}  {'asked':>7}  {'achieved':>8}  {'in spreads':>10}"]
    for f in AC_FEATURES:
        got, unit = adj["achieved"].get(f), adj["units"].get(f)
        asked = f"{adj['asked'][f]:+7.1f}" if f in adj["asked"] else f"{'':>7}"
        spreads = f"{got / unit:+10.2f}" if got is not None and unit else f"{'n/a':>10}"
        lines.append(f"  {f:<10}  {asked}  {'n/a' if got is None else f'{got:+8.2f}':>8}  {spreads}")
    return lines


def render_settings(result: dict) -> str:
    lines = [f"{result['system']} on {result['input']} ({result['seconds']} s, {result['input_rate']} Hz, "
             f"{result['channels']} channel(s)): {result['chunks']} chunk(s) of {result['segment_samples']} samples "
             f"at {result['system_rate']} Hz"]
    if "picked" in result:
        lines.append(f"picked:   {result['picked']}")
    if "settings" in result:
        lines.append(f"settings of {result['effect_applied']} ({result['how']}):")
        width = max(len(k) for k in result["settings"]) if result["settings"] else 0
        for k, v in result["settings"].items():
            lines.append(f"  {k:<{width}}  {v['value']:>10.4g} {v['unit']}".rstrip())
    else:
        lines.append(f"no settings: {result['how']}")
    if "adjust" in result:
        lines += render_adjust(result["adjust"])
    return "\n".join(lines)
