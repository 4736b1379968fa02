"""The commands of `afx-bench`, in a lazy registry like systems and metrics, and the options they share.

A command is a module that registers a :class:`Command` (``@register_command("name")``): its one-line help, its
arguments and what it does. The registry knows which module registers each built-in name and imports it only
when asked; other packages add commands through the entry-point group ``afx_bench.commands``. Command modules
import nothing heavy (torch, mlflow) at module level, so `afx-bench --help` stays instant.
"""

from __future__ import annotations

import argparse
from pathlib import Path

from bench.registry import Registry

COMMANDS = Registry(
    "commands",
    {
        "run": "bench.commands.run",
        "data": "bench.commands.run",
        "report": "bench.commands.report",
        "ui": "bench.commands.report",
        "sweep": "bench.sweep.command",
        "study": "bench.commands.study",
        "check": "bench.commands.check",
        "list": "bench.commands.listing",
        "match": "bench.commands.match",
        "listen": "bench.commands.listen",
        "power": "bench.commands.stats",
        "compare": "bench.commands.stats",
    },
)


class Command:
    """Base of a command: ``help`` (one line), :meth:`add_arguments`, :meth:`__call__` (returns the exit code)."""

    help: str = ""
    description: str = ""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        pass

    def __call__(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def register_command(name: str):
    """Class decorator: register an instance of the :class:`Command` subclass under ``name``."""

    def deco(cls):
        COMMANDS.register(name)(cls())
        return cls

    return deco


# --- what the commands share ----------------------------------------------------------------------------------


def csv_list(s: str | None) -> list[str] | None:
    """``"a, b,c"`` -> ``["a", "b", "c"]``; empty or None -> None."""
    return [x.strip() for x in s.split(",") if x.strip()] if s else None


def config_args(p: argparse.ArgumentParser) -> None:
    """The options of every command that reads a config: preset, file, overrides and the narrowing options."""
    p.add_argument("--preset", default="quick", help="smoke | quick | record | full | gpu (default: quick)")
    p.add_argument("--config", help="a TOML file merged over the preset")
    p.add_argument("--out", help="results directory (default: results/<preset>)")
    p.add_argument("--systems", help="comma-separated systems (default: the preset's)")
    p.add_argument("--effects", help="comma-separated effects (default: the preset's seen + unseen sets)")
    p.add_argument("--corpora", help="comma-separated corpora: speech, music, folder:PATH, pairs:PATH")
    p.add_argument("--device", help="auto | cpu | cuda | cuda:N")
    p.add_argument("--split", choices=("test", "valid"),
                   help="the evaluated split: test (the record, default) or valid (development: tune here)")
    p.add_argument("--set", dest="sets", action="append", default=[], metavar="KEY=VALUE",
                   help="override any config key, e.g. --set tasks.n_test=32 (repeatable)")
    p.add_argument("--params-from", help="a best_params.toml written by `afx-bench sweep`")
    p.add_argument("--executor", help="where trainings and cells run: local (default) | ray (the cluster at RAY_ADDRESS, "
                                      "else a local one) | ray://HOST:PORT; sets run.executor (docs/scaling.md)")
    p.add_argument("--tracking-uri", help="MLflow tracking URI, e.g. http://HOST:5000 for a tracking server shared "
                                          "across machines (default: sqlite:///<out>/mlflow.db); sets tracking.uri")


def load(args):
    """The config the options of :func:`config_args` describe, its names checked by the plan (a
    :class:`bench.config.ConfigError` if bad)."""
    import json

    from bench.config import ConfigError, load_config, read_toml
    from bench.plan import check

    sets = list(args.sets)
    if getattr(args, "params_from", None):
        path = Path(args.params_from)
        if not path.is_file():
            raise ConfigError(f"--params-from: no such file {path}")
        best = read_toml(path, "--params-from")
        for system, params in best.get("systems", {}).items():
            for k, v in params.items():
                value = ("true" if v else "false") if isinstance(v, bool) else json.dumps(v)
                sets.insert(0, f"systems.{system}.{k}={value}")
    for option, key in (("executor", "run.executor"), ("tracking_uri", "tracking.uri")):
        if getattr(args, option, None):
            sets.append(f"{key}={json.dumps(getattr(args, option))}")
    cfg = load_config(args.preset, file=args.config, sets=sets, systems=csv_list(args.systems),
                      effects=csv_list(args.effects), corpora=csv_list(args.corpora), device=args.device,
                      split=getattr(args, "split", None))
    check(cfg)
    return cfg


def out_dir(args) -> Path:
    """``--out``, else ``results/<preset>`` (``results/<preset>-valid`` for a development run on valid)."""
    if args.out:
        return Path(args.out)
    return Path("results") / (args.preset + ("-valid" if getattr(args, "split", None) == "valid" else ""))
