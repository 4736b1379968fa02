"""`afx-bench sweep` (and ``python -m bench.sweep``): the command's options, Ctrl-C handling and summary.

Registered in :data:`bench.commands.COMMANDS`; like every command module it imports nothing heavy (optuna, torch,
mlflow) at module level, since `afx-bench --help` imports it.
"""

from __future__ import annotations

import argparse
import sys

from bench.commands import Command, config_args, csv_list, load, out_dir, register_command
from bench.config import ConfigError
from bench.executors import uses_ray
from bench.sweep.samplers import PRUNERS, SAMPLERS
from bench.sweep.storage import STORAGE_FORMS

DEFAULT_TRIALS = 20


def add_sweep_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sweep")
    g.add_argument("--system", action="append", default=[], metavar="NAME",
                   help="system(s) to sweep, comma-separated or repeated (or --systems)")
    g.add_argument("--all", action="store_true", help="every trainable system in the registry that imports")
    g.add_argument("--trials", type=int, help=f"trials this worker runs (default {DEFAULT_TRIALS}; per system)")
    g.add_argument("--max-trials", type=int, help="stop once the study holds this many trials (all workers)")
    g.add_argument("--timeout", type=float, help="seconds after which this worker starts no new trial")
    g.add_argument("--storage", help=f"Optuna storage (default sqlite:///<out>/optuna.db): {STORAGE_FORMS}")
    g.add_argument("--study", help="study name: workers with the same storage and name share it "
                                   "(default <system>-<preset>; with several systems, <study>-<system>)")
    g.add_argument("--objective", action="append", default=[], metavar="METRIC[:TASKS]",
                   help="validation objective, repeatable or comma-separated; several = a multi-objective study "
                        "(default mrstft over the seen effects' validation tasks)")
    g.add_argument("--directions", nargs="+", default=[], metavar="DIR",
                   help="minimize|maximize per objective (default: from each metric)")
    g.add_argument("--sampler", default="tpe", help=f"{' | '.join(SAMPLERS)} (default tpe, seeded)")
    g.add_argument("--pruner", default="median", help=f"{' | '.join(PRUNERS)} (default median)")
    g.add_argument("--pruner-startup", type=int, default=5, help="finished trials before median pruning starts")
    g.add_argument("--seed", type=int, help="sampler seed (default run.seed)")
    g.add_argument("--fix", action="append", default=[], metavar="PARAM=VALUE",
                   help="pin a search-space parameter (repeatable), e.g. --fix steps=20")
    g.add_argument("--workers", type=int, default=1,
                   help="with --executor ray: Ray tasks working each study at once, each running --trials "
                        "(default 1); they share --storage (PostgreSQL across machines)")


def split_values(values: list[str]) -> list[str]:
    """Repeated and comma-separated values, flattened: ``["a,b", "c"]`` -> ``["a", "b", "c"]``."""
    return [x for v in values for x in (csv_list(v) or [])]


def options_from_args(args):
    from bench.config import parse_value
    from bench.sweep.options import SweepOptions

    fix = {}
    for item in args.fix:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise ConfigError(f"--fix {item!r}: expected PARAM=VALUE, e.g. --fix lr=0.001")
        fix[k.strip()] = parse_value(v.strip())
    trials = args.trials
    if trials is None and args.max_trials is None and args.timeout is None:
        trials = DEFAULT_TRIALS
    return SweepOptions(trials=trials, max_trials=args.max_trials, timeout=args.timeout, study=args.study,
                        objectives=split_values(args.objective), directions=split_values(args.directions),
                        sampler=args.sampler, pruner=args.pruner, pruner_startup=args.pruner_startup, seed=args.seed,
                        fix=fix)


def cmd_sweep(args) -> int:
    from bench.plan import Plan
    from bench.sweep.interrupt import stop_signals
    from bench.sweep.options import SweepOptions, trainable_systems
    from bench.sweep.storage import open_storage, redact
    from bench.sweep.study import Sweep

    names = split_values(args.system) + (csv_list(args.systems) or [])
    if args.all:
        if names:
            raise ConfigError("sweep: give --system NAME(s) or --all, not both")
        names = trainable_systems()
        if not names:
            raise ConfigError("sweep --all: no trainable system with a search space imports")
    if not names:
        raise ConfigError("sweep: name the system(s) with --system NAME, or sweep them all with --all")
    names = list(dict.fromkeys(names))
    args.systems = ",".join(names)  # validated by the config (unknown names list the valid ones)
    cfg = load(args)
    out = out_dir(args)
    opts = options_from_args(args)
    opts.check()
    plan = Plan.build(cfg)
    sweeps = []
    for name in names:  # every check before any trial runs
        o = SweepOptions(**{**opts.__dict__, "study": (f"{opts.study}-{name}" if opts.study and len(names) > 1
                                                       else opts.study)})
        sweeps.append(Sweep(cfg, out, name, o, plan=plan))
    storage, url = open_storage(args.storage, out)
    for s in sweeps:
        s.storage, s.storage_url = storage, url
    if args.workers < 1:
        raise ConfigError(f"--workers: must be at least 1, got {args.workers}")
    if args.workers > 1 and not uses_ray(cfg):
        raise ConfigError("--workers N runs the workers as Ray tasks: add --executor ray (or start N `afx-bench "
                          "sweep` processes on one --storage, docs/sweeps.md)")
    results = []
    try:
        if uses_ray(cfg):
            from bench.executors.sweep import sweep_on_ray

            results = sweep_on_ray(cfg, out, sweeps, url, args.workers)
        else:
            with stop_signals():
                for s in sweeps:
                    results.append(s.run())
    except KeyboardInterrupt:
        print(f"\ninterrupted: the study is consistent in {redact(url)}; rerun the same command to resume",
              file=sys.stderr)
        return 130
    print()
    for r in results:
        states = ", ".join(f"{v} {k}" for k, v in sorted(r.states.items()))
        best = (f"best trial {r.best_trial}: {', '.join(f'{v:.5g}' for v in r.best_values)} {r.best_params}"
                if r.best_trial is not None else "no completed trial")
        print(f"{r.system}: study {r.study} ({states}; {r.mine} by this worker); {best}")
    if any(r.best_trial is not None for r in results):
        print(f"best params: {out / 'best_params.toml'} (afx-bench run --params-from {out / 'best_params.toml'})")
    if cfg.tracking.enabled:
        print(f"MLflow: afx-bench ui --out {out} (experiment {cfg.run.name}-sweeps)")
    return 0


@register_command("sweep")
class SweepCommand(Command):
    help = "Optuna sweep of trainable systems' hyper-parameters (trials in MLflow)"
    description = ("Optuna sweep over a system's declared search space; the objective is scored on the validation "
                   "split. See docs/sweeps.md.")

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        config_args(p)
        add_sweep_arguments(p)

    def __call__(self, args: argparse.Namespace) -> int:
        return cmd_sweep(args)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.sweep ...``: the same as ``afx-bench sweep ...``."""
    from bench.registry import UnknownName

    p = argparse.ArgumentParser(prog="python -m bench.sweep", description=SweepCommand.description)
    SweepCommand().add_arguments(p)
    args = p.parse_args(argv)
    try:
        return cmd_sweep(args)
    except (ConfigError, UnknownName) as e:
        print(f"afx-bench sweep: config error: {e}", file=sys.stderr)
        return 2
