"""`afx-bench check system|effect|metric NAME`: the contract a system, effect or metric must keep, run on small
data in seconds; every rule is printed as PASS, FAIL (with the reason) or n/a (docs/plugins.md).

The data is a :class:`bench.plan.Plan` of the preset (smoke: tiny) narrowed to one corpus and a few effects; a
system is built, fitted and loaded as a run does it (``bench.cell``: build_system, fit_system; ``bench.jobs``:
loaded through ``systems.NAME.checkpoint``), gets guarded :class:`bench.tasks.Query` views that note any attempt to read a target,
true settings or a recipe, and its answers go through ``bench.cell.check_estimates``. Exit 0 when no rule failed.
"""

from __future__ import annotations

import dataclasses
import json
import math
import tempfile
import traceback
from collections.abc import Callable
from functools import partialmethod
from pathlib import Path

import numpy as np

from bench.checks import Check
from bench.tasks import Query

# what a Query never has: a system asking for it is reaching for what only the harness holds
FORBIDDEN = ("target", "true_params01", "params01", "meta", "recipe", "setting", "example", "examples")
TOLERANCE = 1e-5  # "the same answer": the largest absolute difference of outputs and parameters allowed
ROLES = {"controlled": "an effect it controls", "uncontrolled": "an effect it does not control",
         "hidden": "hidden settings (no parameters to estimate)"}


class Report:
    """Rules as they are decided, printed at once; rules after :meth:`section` carry its tag: ``length [peq4]``."""

    def __init__(self, out: Callable[[str], None] = print):
        self.out, self.tag = out, ""
        self.rows: list[tuple[str, str, str]] = []  # (status, rule [tag], detail)

    def section(self, tag: str, title: str) -> None:
        self.tag = tag
        self.out(f"  {title}")

    def _add(self, status: str, rule: str, detail: str = "") -> None:
        self.rows.append((status, f"{rule} [{self.tag}]" if self.tag else rule, detail))
        indent = "  " if self.tag else ""
        self.out(f"  {status:<4}  {indent}{rule:<{20 - len(indent)}}  {detail}".rstrip())

    ok = partialmethod(_add, "PASS")  # (rule, detail)
    fail = partialmethod(_add, "FAIL")  # (rule, reason)
    na = partialmethod(_add, "n/a")  # (rule, why)

    def check(self, rule: str, problems: list[str], detail: str = "") -> bool:
        """PASS with ``detail`` when there are no ``problems``, else FAIL naming the first few."""
        more = f" (and {len(problems) - 3} more)" if len(problems) > 3 else ""
        self._add("FAIL", rule, "; ".join(problems[:3]) + more) if problems else self.ok(rule, detail)
        return not problems

    def finish(self) -> int:
        n = {s: sum(1 for r in self.rows if r[0] == s) for s in ("PASS", "FAIL", "n/a")}
        self.out(f"{'FAILED' if n['FAIL'] else 'passed'}: {n['PASS']} passed, {n['FAIL']} failed, "
                 f"{n['n/a']} not applicable")
        return 1 if n["FAIL"] else 0


def error_text(e: BaseException) -> str:
    """An exception in one line, with the last frame outside this module."""
    frames = [f for f in traceback.extract_tb(e.__traceback__) if not f.filename.endswith("contract.py")]
    where = f" (at {Path(frames[-1].filename).name}:{frames[-1].lineno})" if frames else ""
    msg = str(e).strip().splitlines()[0] if str(e).strip() else ""
    return f"{type(e).__name__}{': ' + msg if msg else ''}{where}"



def make_plan(args, effects: list[str], device: str):
    """The harness's own plan (:meth:`bench.plan.Plan.build`) of the preset, narrowed to ``--corpus`` and
    ``effects``: a test task per effect; training and validation tasks for those that are not hidden processing."""
    from bench.config import load_config
    from bench.plan import Plan

    cfg = load_config(args.preset, file=args.config, sets=args.sets, device=args.device, corpora=[args.corpus],
                      effects=effects)
    return Plan.build(cfg, device)


class GuardedQuery(Query):
    """A :class:`Query` that notes every attempt to read what a system never sees, then refuses it."""

    touched: list[str] = []  # emptied by the check before each use

    def __getattr__(self, attr: str):  # only called for attributes a Query does not have
        if attr in FORBIDDEN:
            GuardedQuery.touched.append(attr)
            raise AttributeError(f"a system is never given an example's {attr!r}: a Query holds ids, input and "
                                 "reference only")
        raise AttributeError(attr)


def guarded(examples: list) -> list[GuardedQuery]:
    """Guarded views of ``examples``, each with its own copy of the audio."""
    return [GuardedQuery(**{**{f.name: getattr(q, f.name) for f in dataclasses.fields(Query)},
                            "input": q.input.copy(), "reference": q.reference.copy()})
            for q in (ex.query() for ex in examples)]


def max_abs_diff(a, b) -> float:
    """Largest absolute difference (inf for different shapes, or one None and the other not)."""
    if a is None or b is None:
        return 0.0 if a is None and b is None else math.inf
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    return math.inf if a.shape != b.shape else float(np.max(np.abs(a - b))) if a.size else 0.0


def _answers_diff(first: list, second: list) -> tuple[float, str]:
    """The largest difference between two lists of estimates (outputs, parameters, variants, candidates)."""
    if len(first) != len(second):
        return math.inf, f"{len(first)} vs {len(second)} estimates"
    worst, where = 0.0, ""
    for i, (a, b) in enumerate(zip(first, second, strict=True)):
        pairs = [("output", a.output, b.output), ("params01", a.params01, b.params01)]
        for k, v in a.variants.items():
            w = b.variants.get(k)
            pairs += [(f"variant {k}", v.output, w and w.output), (f"variant {k} params", v.params01, w and w.params01)]
        pairs += [(f"candidate {k}", v, b.candidates.get(k)) for k, v in a.candidates.items()]
        for what, x, y in pairs:
            if (d := max_abs_diff(x, y)) > worst:
                worst, where = d, f"{what} of example {i}"
    return worst, where



class ContractCheck(Check):
    """Shared by the three checks: the options, the name's lookup, the title line and the report."""

    kind = ""  # systems | effects | metrics

    def add_arguments(self, p):
        p.add_argument("name", help=f"the registered {self.kind[:-1]} name (afx-bench list {self.kind})")
        p.add_argument("--preset", default="smoke", help="preset whose sizes and sections are used (default: smoke)")
        p.add_argument("--config", help="a TOML file merged over the preset")
        p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                       help="override a config key, e.g. --set systems.mine.steps=4 (repeatable)")
        p.add_argument("--corpus", default="speech", help="corpus of the examples (default: speech): music, folder:PATH")
        p.add_argument("--examples", type=int, default=3, help="test examples per task (default: 3)")
        p.add_argument("--device", help="auto | cpu | cuda | cuda:N (default: the preset's run.device)")

    def __call__(self, args, out: Callable[[str], None] = print) -> int:
        from bench.commands.listing import origin, registry
        from bench.config import ConfigError, load_config
        from bench.plan import resolve_device
        from bench.registry import UnknownName

        if args.examples < 2:
            raise ConfigError(f"--examples: at least 2 (a batch of one hides batch bugs), got {args.examples}")
        cfg = load_config(args.preset, file=args.config, sets=args.sets, device=args.device)
        report, vst3 = Report(out), self.kind == "effects" and args.name in cfg.effects.vst3
        try:
            obj = None if vst3 else registry(self.kind).get(args.name)
            where = "effects.vst3 of the config" if vst3 else origin(self.kind, args.name)
        except UnknownName as e:
            raise ConfigError(str(e)) from e
        except ImportError as e:
            out(f"afx-bench check {self.kind[:-1]} {args.name}")
            report.fail("import", error_text(e))
            return report.finish()
        device = resolve_device(cfg.run.device)
        out(f"afx-bench check {self.kind[:-1]} {args.name}  [{where}; preset {args.preset}, corpus {args.corpus}, "
            f"{args.examples} examples per task, device {device}]")
        with tempfile.TemporaryDirectory(prefix="afx-check-") as tmp:
            self.run(args.name, obj, cfg, device, args, Path(tmp), report)
        return report.finish()

    def run(self, name, obj, cfg, device, args, tmp: Path, report: Report) -> None:
        raise NotImplementedError


def name_list(text: str | None) -> list[str]:
    return [x.strip() for x in (text or "").split(",") if x.strip()]


def short_text(d: dict, limit: int = 90) -> str:
    s = json.dumps(d, default=str)
    return s if len(s) <= limit else s[: limit - 3] + "..."



class SystemCheck(ContractCheck):
    help = "run the system contract on small generated data: construction, fit, answers, determinism, save/load"
    kind = "systems"

    def add_arguments(self, p):
        super().add_arguments(p)
        p.add_argument("--effects", help="comma-separated effects to answer (default: one it controls, one it does "
                                         "not, and a hidden-setting one: room)")

    def run(self, name, cls, cfg, device, args, tmp, report):
        from bench.cell import build_system, check_estimates, fit_system
        from bench.systems import Estimate, System

        if getattr(cls, "sees_truth", False):
            report.na("contract", "answered by the harness from each example's true settings and target "
                                  "(bench.cell.oracle_estimates), not by matching: nothing to check")
            return
        if not (isinstance(cls, type) and issubclass(cls, System)):
            report.fail("class", f"{cls!r} is not a subclass of bench.systems.System")
            return
        c = cls.controls
        problems = [msg for bad, msg in (
            (cls.name != name, f"its name attribute is {cls.name!r} but it is registered as {name!r}"),
            (not (c == "any" or (isinstance(c, (set, frozenset)) and all(isinstance(x, str) for x in c))),
             f"controls must be 'any' or a set of effect names, got {c!r}"),
            (not dataclasses.is_dataclass(cls.Config), "its Config is not a dataclass")) if bad]
        controls = "any effect with parameters" if c == "any" else "{" + ", ".join(sorted(c)) + "}" if c else "nothing"
        if not report.check("class", problems, f"{cls.__module__}.{cls.__qualname__}, controls {controls}, "
                                               f"{'trainable' if cls.trainable else 'training-free'}"):
            return
        try:
            default = cls(None, sample_rate=cfg.run.sample_rate, device=device)
            report.ok("construct", f"with its default config {short_text(default.config_dict())}")
            section = {k: v for k, v in cfg.system_config(name).items() if k != "checkpoint"}
            system = build_system(name, cfg, device)
            report.ok("config", f"systems.{name} of preset {args.preset}: {short_text(section) if section else 'defaults'}"
                                f"; device {system.device!r} given at construction")
        except Exception as e:
            report.fail("config" if report.rows[-1][1] == "construct" else "construct", error_text(e))
            return
        plan = make_plan(args, [e.name for _, e in _pick(system, args, cfg)], device)
        examples = {t.effect.name: t.examples(args.examples, cache=False) for t in plan.test}
        if system.trainable:
            try:
                deps = _dependencies(name, cfg, plan, tmp, report)
                seconds = fit_system(system, plan, progress=False, checkpoint_dir=tmp / "fit", dependencies=deps)
                report.ok("fit", f"on {', '.join(t.id for t in plan.train)} in {seconds:.1f} s")
            except Exception as e:
                report.fail("fit", error_text(e))
                return
        else:
            report.na("fit", "not trainable (trainable = False)")

        answered: dict[str, list[Estimate]] = {}
        for role, effect in _pick(system, args, cfg, plan.effects):
            exs, error = examples[effect.name], None
            report.section(effect.name, f"{effect.name}: {ROLES[role]}")
            queries, GuardedQuery.touched = guarded(exs), []
            try:
                ests = system.match_examples(queries, effect)
            except Exception as e:
                ests, error = None, e
            touched = sorted(set(GuardedQuery.touched))
            report.check("no target access", [f"tried to read {', '.join(touched)} of a Query (only ids, input and "
                                              "reference exist)"] if touched else [], "read only ids, input, reference")
            if error is not None:
                if role == "uncontrolled" and not touched and isinstance(error, (ValueError, RuntimeError)):
                    report.ok("answers", f"refuses with a clear error: {error_text(error)}")
                else:
                    report.fail("answers", f"match_examples raised {error_text(error)}")
                continue
            if not (isinstance(ests, list) and len(ests) == len(exs) and all(isinstance(e, Estimate) for e in ests)):
                got = f"{len(ests)} items" if isinstance(ests, list) else type(ests).__name__
                report.fail("answers", f"expected a list of {len(exs)} Estimate, got {got}")
                continue
            report.ok("answers", f"{len(ests)} estimates")
            report.check("inputs untouched", [f"changed the {w} of example {i} in place" for i, (q, ex) in
                                              enumerate(zip(queries, exs, strict=True)) for w in ("input", "reference")
                                              if not np.array_equal(getattr(q, w), getattr(ex, w))],
                         "input and reference unchanged")
            _rules_on_answers(report, role, effect, ests, exs)
            try:
                check_estimates(name, ests, exs, effect)
                answered[effect.name] = ests
                report.ok("harness accepts", "bench.cell.check_estimates")
            except Exception as e:
                report.fail("harness accepts", str(e))

        report.section("", "the same questions again")
        if not answered:
            report.fail("determinism", "no effect was answered, nothing to compare")
            return
        ename = next(iter(answered))
        first = answered[ename]

        def same(rule: str, make: Callable, why: str, ok: str) -> None:
            """``make()`` gives a system; its answers to the first answered effect must equal the first ones."""
            try:
                again = make().match_examples(guarded(examples[ename]), plan.effects[ename])
            except Exception as e:
                report.fail(rule, f"[{ename}] {error_text(e)}")
                return
            d, where = _answers_diff(first, again)
            report.check(rule, [f"[{ename}] {why}: the answers differ by {d:.3g} ({where})"] if d > TOLERANCE else [],
                         f"[{ename}] {ok}")

        same("determinism", lambda: system, "asked twice", "the same answers when asked twice")
        if not system.trainable:
            same("determinism (fresh instance)", lambda: build_system(name, cfg, device),
                 "a second instance with the same config (seed every random choice from the config)",
                 "a second instance answers the same")
            report.na("save/load", "training-free: a run never saves it (a configured checkpoint goes to its load)")
            return
        same("save/load", lambda: _saved_and_loaded(name, system, plan, tmp),
             "saved, then loaded through systems.NAME.checkpoint (save must hold every trained value)",
             f"saved, loaded through systems.{name}.checkpoint (as a run's cell job loads it), the same answers")


def _pick(system, args, cfg, made: dict | None = None) -> list[tuple[str, object]]:
    """(role, effect): one it controls, one it does not and one with hidden settings, or those of ``--effects``;
    the effects of ``made`` are reused."""
    from bench.effects import EFFECTS
    from bench.plan import make_effect

    def get(n):
        return made[n] if made and n in made else make_effect(cfg, n)

    c, names = system.controls, name_list(args.effects)
    if not names:
        names = ["peq4"] if c == "any" else [n for n in sorted(c) if n in EFFECTS or n in cfg.effects.vst3][:1]
        names += [n for n in ("delay", "gain", "peq4", "compressor") if not system.can_control(get(n))][:1]
        names.append(cfg.effects.wild[0] if cfg.effects.wild else "room")
    return [("hidden" if e.n_params == 0 else "controlled" if system.can_control(e) else "uncontrolled", e)
            for e in map(get, names)]


def _dependencies(name, cfg, plan, tmp: Path, report: Report) -> dict[str, Path]:
    """The systems ``name`` builds on (``System.needs``), each trained on the same plan and saved, as a run does
    before training it: name -> checkpoint folder."""
    from bench.cell import build_system, fit_system, needs_of

    out = {}
    for dep in needs_of(cfg, name):
        system = build_system(dep, cfg, plan.device)
        seconds = fit_system(system, plan, progress=False, checkpoint_dir=tmp / "needs" / dep / "fit",
                             dependencies=_dependencies(dep, cfg, plan, tmp, report))
        system.save(out.setdefault(dep, tmp / "needs" / dep / "checkpoint"))
        report.ok("needs", f"{dep} trained first ({seconds:.1f} s): its checkpoint goes to the fit")
    return out


def _saved_and_loaded(name, system, plan, tmp: Path):
    """Save ``system``, then load it through ``systems.NAME.checkpoint`` as a run does: the folder resolved and
    packed by the driver, unpacked and loaded by the cell job."""
    from bench.jobs import load_system, pack_dir
    from bench.tracking import resolve_checkpoint

    (ckpt := tmp / "checkpoint").mkdir()
    system.save(ckpt)
    cfg = dataclasses.replace(plan.cfg, systems={**plan.cfg.systems, name: {**plan.cfg.system_config(name),
                                                                              "checkpoint": str(ckpt)}})
    return load_system(cfg, name, plan.device, pack_dir(resolve_checkpoint(cfg.system_config(name)["checkpoint"])))


def _rules_on_answers(report: Report, role: str, effect, ests: list, exs: list) -> None:
    """Length, dtype, finiteness, parameters, labels, and what the effect's role requires of the parameters."""
    found: dict[str, list[str]] = {k: [] for k in ("length", "dtype", "finite", "params", "labels")}
    for i, (est, ex) in enumerate(zip(ests, exs, strict=True)):
        outs = [("output", est.output)] + [(f"variant {k}", v.output) for k, v in est.variants.items()]
        for what, o in outs + [(f"candidate {k}", v) for k, v in est.candidates.items()]:
            if not isinstance(o, np.ndarray):
                found["dtype"].append(f"example {i}: {what} is a {type(o).__name__}, not a numpy array")
                o = np.asarray(o)
            if o.shape != ex.input.shape:
                found["length"].append(f"example {i}: {what} has shape {o.shape}, the input {ex.input.shape}")
            if o.dtype.kind != "f":
                found["dtype"].append(f"example {i}: {what} is {o.dtype}, expected float32")
            elif o.size and not np.all(np.isfinite(o)):
                found["finite"].append(f"example {i}: {what} has {int(np.sum(~np.isfinite(o)))} NaN/Inf samples")
        for what, p in [("params01", est.params01)] + [(f"variant {k}", v.params01) for k, v in est.variants.items()]:
            p = None if p is None else np.asarray(p)
            if p is None:
                continue
            if p.shape != (effect.n_params,):
                found["params"].append(f"example {i}: {what} has shape {p.shape}, the effect {effect.n_params} "
                                       "parameters")
            elif not np.all((p >= 0) & (p <= 1)):  # NaN fails too
                bad = [f"{n}={v:.3g}" for n, v in zip(effect.param_names, p, strict=True) if not 0 <= v <= 1]
                found["params"].append(f"example {i}: {what} outside [0, 1]: {', '.join(bad)}")
        if set(est.variants) != set(ests[0].variants) or set(est.candidates) != set(ests[0].candidates):
            found["labels"].append(f"example {i} carries variants {sorted(est.variants)} and candidates "
                                   f"{sorted(est.candidates)}, unlike example 0")
    labels = ([f"variants {sorted(ests[0].variants)}"] if ests[0].variants else []) + \
             ([f"candidates {sorted(ests[0].candidates)} (scored as <system>:best_pick)"] if ests[0].candidates else [])
    given = [i for i, e in enumerate(ests) if e.params01 is not None]
    for rule, ok in (("length", f"every output {exs[0].input.shape}, as the input"),
                     ("dtype", "/".join(sorted({str(np.asarray(e.output).dtype) for e in ests}))),
                     ("finite", "no NaN/Inf"), ("params", "in [0, 1], one per parameter" if given else "None"),
                     ("labels", "; ".join(labels) or "no variants or candidates")):
        report.check(rule, found[rule], ok)
    if role in ("uncontrolled", "hidden"):
        report.check("uncontrolled effect" if role == "uncontrolled" else "hidden settings",
                     [f"params01 given for examples {given}, but {effect.name} is "
                      f"{'not one it controls' if role == 'uncontrolled' else 'hidden processing'}: return "
                      "its best audio with params01 None"] if given else [], "audio with params01 None")


CHECKS = {"system": SystemCheck()}
