"""`afx-bench list [KIND ...]`: every registered system, effect, metric, corpus, command and check, with where
it comes from: a built-in module of the harness, an installed distribution's entry point (group
``afx_bench.<kind>``), or a registration made at run time by an imported module.

Nothing is imported to answer but the registries themselves: entry points are read from the installed
distributions' metadata, never loaded, so a broken plugin is still listed (``afx-bench check`` loads it).
"""

from __future__ import annotations

import importlib
import json
import sys
from importlib.metadata import entry_points

from bench.commands import Command, register_command

# kind -> (module, attribute) of its registry; the entry-point group is afx_bench.<kind>
KINDS = {
    "systems": ("bench.systems", "SYSTEMS"),
    "effects": ("bench.effects", "EFFECTS"),
    "metrics": ("bench.metrics", "METRICS"),
    "corpora": ("bench.corpora", "CORPORA"),
    "commands": ("bench.commands", "COMMANDS"),
}


def registry(kind: str):
    module, attr = KINDS[kind]
    return getattr(importlib.import_module(module), attr)


def plugins(kind: str) -> dict[str, list]:
    """Entry points of the group ``afx_bench.<kind>`` by name (several when distributions disagree)."""
    found: dict[str, list] = {}
    for ep in entry_points(group=f"afx_bench.{kind}"):
        found.setdefault(ep.name, []).append(ep)
    return found


def _dist(ep) -> str:
    d = getattr(ep, "dist", None)
    return f"{d.name} {d.version}" if d is not None else "an installed distribution"


def describe(kind: str, name: str) -> dict:
    """Where ``name`` of ``kind`` comes from: ``{"source": "built-in" | "plugin" | "run time", "where": ...}``
    plus ``"note"`` when an entry point is shadowed or several distributions claim the name."""
    reg = registry(kind)
    eps = plugins(kind).get(name, [])
    module = reg.builtin_module(name)
    if module is not None:
        out = {"source": "built-in", "where": module}
        if eps:
            out["note"] = "shadows the entry point of " + ", ".join(_dist(ep) for ep in eps)
        return out
    if eps:
        out = {"source": "plugin", "where": f"{_dist(eps[0])} ({eps[0].value})"}
        if len(eps) > 1:
            out["note"] = "also claimed by " + ", ".join(f"{_dist(ep)} ({ep.value})" for ep in eps[1:])
        return out
    item = reg.registered(name)
    module = getattr(item, "__module__", None) or type(item).__module__
    return {"source": "run time", "where": f"registered by {module}" if item is not None else "unknown"}


def origin(kind: str, name: str) -> str:
    """One line: ``built-in (bench.systems)``, ``plugin: afx-bench-specmatch 0.1.0 (afx_specmatch:...)``..."""
    d = describe(kind, name)
    label = {"built-in": "built-in", "plugin": "plugin", "run time": "registered at run time"}[d["source"]]
    text = f"{label}: {d['where']}"
    return f"{text}; {d['note']}" if "note" in d else text


def checks() -> dict[str, dict]:
    from bench.checks import MODULES

    return {name: {"source": "built-in", "where": module} for name, module in MODULES.items()}


def listing(kinds: list[str]) -> dict[str, dict[str, dict]]:
    out = {}
    for kind in kinds:
        if kind == "checks":
            out[kind] = checks()
        else:
            out[kind] = {name: describe(kind, name) for name in registry(kind).names()}
    return out


@register_command("list")
class ListCommand(Command):
    help = "list the registered systems, effects, metrics, corpora, commands and checks, and where each comes from"
    description = (help + ". A plugin adds names through the entry-point groups afx_bench.systems, "
                   "afx_bench.effects, afx_bench.metrics, afx_bench.corpora and afx_bench.commands "
                   "(docs/plugins.md).")

    def add_arguments(self, p):
        p.add_argument("kinds", nargs="*", metavar="KIND",
                       help=f"what to list (default: all): {', '.join([*KINDS, 'checks'])}")
        p.add_argument("--plugins", action="store_true", help="only names that installed distributions add")
        p.add_argument("--json", action="store_true", help="print JSON: {kind: {name: {source, where}}}")

    def __call__(self, args) -> int:
        from bench.config import ConfigError

        valid = [*KINDS, "checks"]
        bad = [k for k in args.kinds if k not in valid]
        if bad:
            raise ConfigError(f"afx-bench list: unknown kind(s) {bad}; valid: {', '.join(valid)}")
        data = listing(args.kinds or valid)
        if args.plugins:
            data = {k: {n: d for n, d in v.items() if d["source"] != "built-in"} for k, v in data.items()}
        if args.json:
            json.dump(data, sys.stdout, indent=1)
            print()
            return 0
        for kind, names in data.items():
            print(f"{kind} ({len(names)})")
            width = max([len(n) for n in names] + [8])
            for name, d in names.items():
                label = {"built-in": "built-in", "plugin": "plugin", "run time": "run time"}[d["source"]]
                note = f"  [{d['note']}]" if "note" in d else ""
                print(f"  {name:<{width}}  {label:<9} {d['where']}{note}")
        if not any(d["source"] == "plugin" for v in data.values() for d in v.values()):
            print("(no plugins installed: see docs/plugins.md)")
        return 0
