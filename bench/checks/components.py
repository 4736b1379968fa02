"""`afx-bench check effect NAME` and `afx-bench check metric NAME`: the contract an effect or a metric must keep,
on the same small data as the system check (:mod:`bench.checks.contract`); every rule printed as PASS, FAIL (with
the reason) or n/a."""

from __future__ import annotations

import dataclasses
import json

import numpy as np

from bench.checks.contract import (
    TOLERANCE,
    ContractCheck,
    error_text,
    make_plan,
    max_abs_diff,
    name_list,
    short_text,
)


class EffectCheck(ContractCheck):
    help = "run the effect contract: parameters, settings, batch-aware deterministic processing, examples"
    kind = "effects"

    def run(self, name, cls, cfg, device, args, tmp, report):
        from bench.effects import Effect, HiddenEffect, ParamSpec, Setting
        from bench.plan import make_effect
        from bench.tasks import Task

        sr = cfg.run.sample_rate
        try:
            effect = make_effect(cfg, name)
        except Exception as e:
            report.fail("construct", error_text(e))
            return
        hidden = isinstance(effect, HiddenEffect)
        if not report.check("construct", [f"{type(effect).__name__} is not a bench.effects.Effect"] if not isinstance(
                effect, Effect) else [f"its name is {effect.name!r}, registered as {name!r}"] if effect.name != name
                else [], f"{type(effect).__name__}: " + ("hidden settings" if hidden else f"{effect.n_params} parameters")):
            return
        specs, problems = list(effect.params), []
        if hidden == bool(specs):
            problems.append("a HiddenEffect has no parameters" if hidden else
                            "no parameters: processing without parameters is a HiddenEffect")
        problems += [f"not a ParamSpec: {p!r}" for p in specs if not isinstance(p, ParamSpec)]
        names = [getattr(p, "name", "") for p in specs]
        if len(set(names)) != len(names):
            problems.append(f"duplicate parameter names {sorted({n for n in names if names.count(n) > 1})}")
        if not problems and specs:
            d = effect.default01()
            if d.shape != (len(specs),) or not np.all((d >= 0) & (d <= 1)):
                problems.append(f"default01() is {d!r}, expected {len(specs)} values in [0, 1]")
        report.check("parameters", problems, ", ".join(f"{p.name} [{p.minimum:g}, {p.maximum:g}] {p.unit}".rstrip()
                                                       for p in specs[:3]) + (" ..." if len(specs) > 3 else "")
                     if specs else "none (hidden settings)")
        try:
            s1, s2 = (effect.draw_setting(np.random.default_rng(7), sr) for _ in range(2))
            keys = [json.dumps([None if x.params01 is None else np.asarray(x.params01).tolist(), x.recipe])
                    for x in (s1, s2)]
        except Exception as e:
            report.fail("settings", f"draw_setting: {error_text(e)} (a recipe must be JSON-able: examples store it)")
            return
        p = np.asarray(s1.params01 if s1.params01 is not None else np.nan, np.float64)
        problems = [msg for bad, msg in (
            (not isinstance(s1, Setting), f"draw_setting returned a {type(s1).__name__}, not a bench.effects.Setting"),
            (hidden and (s1.params01 is not None or s1.recipe is None), "hidden processing draws a recipe, no params01"),
            (not hidden and (p.shape != (effect.n_params,) or not np.all((p >= 0) & (p <= 1))),
             f"params01 must be {effect.n_params} values in [0, 1], got {s1.params01!r}"),
            (keys[0] != keys[1], "the same generator seed drew different settings")) if bad]
        if not report.check("settings", problems, ("a JSON-able recipe" if hidden else "params01 in [0, 1]") +
                            ", reproducible from the generator"):
            return
        plan = make_plan(args, [name], device)
        corpus = plan.corpora[args.corpus]
        clips = [audio[: cfg.segment_samples] for _, audio in corpus.split("test")][:2]
        x = np.stack(clips if len(clips) == 2 else [clips[0], clips[0][::-1]]).astype(np.float32)
        try:
            rng = np.random.default_rng(11)
            s_a, s_b = effect.draw_setting(rng, sr), effect.draw_setting(rng, sr)
            y1, _, y1_again, yb = (effect.apply(a, sr, s) for a, s in ((x[0], s_a), (x[1], s_b), (x[0], s_a), (x, s_a)))
        except Exception as e:
            report.fail("process", f"apply raised {error_text(e)}")
            return
        problems = [f"{what}: {x_.shape} in, {np.shape(y)} {getattr(y, 'dtype', type(y).__name__)} out"
                    + ("" if np.shape(y) != x_.shape or np.all(np.isfinite(y)) else " with NaN/Inf")
                    for what, y, x_ in (("a clip", y1, x[0]), ("a batch", yb, x))
                    if np.shape(y) != x_.shape or getattr(y, "dtype", None) != np.float32 or not np.all(np.isfinite(y))]
        if not report.check("process", problems, "(n,) and (batch, n) in, the same shape out, float32, finite"):
            return
        d, b = max_abs_diff(y1, y1_again), max_abs_diff(yb[0], y1)
        report.check("determinism", [f"the same clip and setting differ by {d:.3g} after another clip: state leaks "
                                     "between calls (build a fresh chain per clip)"] if d > TOLERANCE else [],
                     "the same output for the same clip and setting, whatever ran before")
        report.check("batch", [f"a batch's first clip differs from the clip alone by {b:.3g}"] if b > TOLERANCE
                     else [], "a batch is processed clip by clip")
        change = float(np.sqrt(np.mean((y1.astype(np.float64) - x[0]) ** 2) / (np.mean(x[0] ** 2) + 1e-20)))
        report.check("changes the audio", [f"the output equals the input (relative difference {change:.2g}): reject "
                                           "settings that do nothing"] if change < 1e-3 else [],
                     f"relative difference {change:.2f} on a drawn setting")
        try:
            same = json.dumps(effect.identity()) == json.dumps(make_effect(cfg, name).identity())
            a, b = (Task(corpus, make_effect(cfg, name), "test", segment_samples=cfg.segment_samples,
                         seed=cfg.run.seed).examples(args.examples, cache=False) for _ in range(2))
        except Exception as e:
            report.fail("examples", f"identity() (JSON-able) and Task.examples: {error_text(e)}")
            return
        report.check("identity", [] if same else ["two instances differ: cached examples would never be reused"],
                     "JSON-able and stable (the cache key of its examples)")
        report.check("examples", [f"example {i} differs between two tasks with the same seed" for i, (p, q) in
                                  enumerate(zip(a, b, strict=True)) if max_abs_diff(p.reference, q.reference) > TOLERANCE],
                     f"{len(a)} reproducible examples from {corpus.label}")



class MetricCheck(ContractCheck):
    help = "run the metric contract: one value per key and example, NaN when n/a, the target scoring best"
    kind = "metrics"

    def add_arguments(self, p):
        super().add_arguments(p)
        p.add_argument("--effects", default="peq4,room", help="effects of the scored examples (default: peq4,room)")

    def run(self, name, cls, cfg, device, args, tmp, report):
        from bench.metrics import Metric, MetricConfig
        from bench.systems import Estimate

        if not (isinstance(cls, type) and issubclass(cls, Metric)):
            report.fail("class", f"{cls!r} is not a subclass of bench.metrics.Metric")
            return
        if not report.check("class", [msg for bad, msg in (
                (cls.name != name, f"its name attribute is {cls.name!r} but it is registered as {name!r}"),
                (not isinstance(cls.higher_is_better, bool), f"higher_is_better is {cls.higher_is_better!r}, not a bool"),
                (not (set(cls.needs) and set(cls.needs) <= {"audio", "params"}), f"needs {set(cls.needs)!r}: expected "
                 "{'audio'} or {'params'}"), (not (dataclasses.is_dataclass(cls.Config) and issubclass(
                    cls.Config, MetricConfig)), "its Config must derive from bench.metrics.MetricConfig")) if bad],
                f"needs {sorted(cls.needs)}, "
                                               f"{'higher' if cls.higher_is_better else 'lower'} is better"):
            return
        try:
            cls(None, sample_rate=cfg.run.sample_rate, device=device)
            metric = cls(cfg.metric_config(name), sample_rate=cfg.run.sample_rate, device=device)
            report.ok("construct", f"default config, then metrics.{name} of preset {args.preset}: "
                                   f"{short_text(cfg.metric_config(name))}")
        except Exception as e:
            report.fail("construct", error_text(e))
            return
        plan = make_plan(args, name_list(args.effects), device)
        for task in plan.test:
            exs, rng = task.examples(args.examples, cache=False), np.random.default_rng(3)
            report.section(task.effect.name, f"{task.effect.name}: the target, the input and a random setting scored")
            answers = {"target": [Estimate(ex.true_params01, ex.target.copy()) for ex in exs],
                       "input": [Estimate(None, ex.input.copy()) for ex in exs],
                       "random": [Estimate(s.params01, task.effect.apply(ex.input, task.sample_rate, s)) for ex in exs
                                  for s in [task.effect.draw_setting(rng, task.sample_rate)]]}
            copies = [(ex.input.copy(), ex.reference.copy(), ex.target.copy()) for ex in exs]
            scores, problems, keys = {}, [], None
            for k, ests in answers.items():
                try:
                    rows = scores[k] = metric.score_batch(ests, exs)
                    assert isinstance(rows, list) and len(rows) == len(exs) and all(isinstance(r, dict) and r and all(
                        isinstance(v, (int, float, np.number)) and not isinstance(v, bool) for v in r.values())
                        for r in rows), f"expected {len(exs)} non-empty dicts of numbers, got {rows!r:.100}"
                except Exception as e:
                    problems.append(f"score_batch on the {k} as an estimate: {error_text(e)}")
                    continue
                keys = keys or sorted(rows[0])
                problems += [f"{k}, example {i}: keys {sorted(r)}, elsewhere {keys} (the same keys for every estimate "
                             "and example)" for i, r in enumerate(rows) if sorted(r) != keys]
            if not report.check("scores", problems, f"keys {keys}, one dict of numbers per example"):
                continue
            report.check("inputs untouched", [f"example {i}: changed the {w} in place" for i, (ex, c) in
                                              enumerate(zip(exs, copies, strict=True)) for w, a in
                                              zip(("input", "reference", "target"), c, strict=True)
                                              if not np.array_equal(getattr(ex, w), a)], "examples unchanged")
            arr = {k: np.array([[float(r[a]) for a in keys] for r in rows]) for k, rows in scores.items()}
            problems = []
            if "params" in cls.needs:
                if np.isfinite(arr["input"]).any():
                    problems.append("an estimate without params01 scored a number, not NaN (n/a is NaN, never 0)")
                if exs[0].true_params01 is None and np.isfinite(arr["target"]).any():
                    problems.append("examples without true settings scored a number, not NaN")
            elif not (np.isfinite(arr["target"]).all() and np.isfinite(arr["input"]).all()):
                problems.append("NaN/Inf for audio estimates it should score")
            report.check("not applicable", problems, "NaN exactly where it does not apply")
            ok = np.isfinite(arr["target"]) & np.isfinite(arr["input"])  # both scored: compare their means
            mt, mb = (np.where(ok, v, 0).sum(0) / np.maximum(ok.sum(0), 1) for v in (arr["target"], arr["input"]))
            sign = -1 if cls.higher_is_better else 1
            report.check("target scores best", [f"{k}: the target itself scores {t:.4g}, the untouched input {b:.4g} "
                                                f"(higher_is_better = {cls.higher_is_better})" for k, t, b in
                                                zip(keys, mt, mb, strict=True) if sign * (t - b) > 1e-6],
                         "the target scores at least as well as the input")
            try:
                again = metric.score_batch(answers["random"], exs) + metric.score_batch(answers["random"][:1], exs[:1])
                d = [max_abs_diff([r[a] for a in keys], arr["random"][i % len(exs)]) for i, r in enumerate(again)]
            except Exception as e:
                report.fail("determinism", error_text(e))
                continue
            report.check("determinism", [f"scoring twice differs by {max(d[:-1]):.3g}"] * (max(d[:-1]) > 1e-4) +
                         [f"example 0 alone differs by {d[-1]:.3g} from in its batch (max_examples slices batches)"]
                         * (d[-1] > 1e-4), "the same values twice, and alone as in a batch")


CHECKS = {"effect": EffectCheck(), "metric": MetricCheck()}
