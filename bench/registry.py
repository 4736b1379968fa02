"""One small generic registry per kind (systems, effects, corpora, metrics).

Names are resolved lazily: a registry knows, for each built-in name, the module that registers it, and imports
that module only when the name is asked for. So `afx-bench --help` imports neither torch nor mlflow, and a
third-party package can add a name through the entry-point group ``afx_bench.<kind>`` without touching the
harness.
"""

from __future__ import annotations

import importlib
from collections.abc import Callable
from importlib.metadata import entry_points
from typing import Any


class UnknownName(KeyError):
    """An unknown registry name; the message lists the valid ones."""

    def __str__(self) -> str:  # KeyError quotes its argument; we want the plain message
        return str(self.args[0])


class Registry:
    def __init__(self, kind: str, builtin: dict[str, str]):
        self.kind = kind
        self._modules = dict(builtin)  # name -> module that registers it
        self._items: dict[str, Any] = {}

    def register(self, name: str) -> Callable[[Any], Any]:
        def deco(obj: Any) -> Any:
            self._items[name] = obj
            return obj

        return deco

    def builtin_module(self, name: str) -> str | None:
        """The harness module that registers a built-in ``name`` (None for a plugin or a run-time name)."""
        return self._modules.get(name)

    def registered(self, name: str):
        """What is registered under ``name`` in this process so far (None if nothing is, yet)."""
        return self._items.get(name)

    def names(self) -> list[str]:
        found = set(self._modules) | set(self._items)
        found |= {ep.name for ep in entry_points(group=f"afx_bench.{self.kind}")}
        return sorted(found)

    def get(self, name: str) -> Any:
        if name not in self._items:
            if name in self._modules:
                try:
                    importlib.import_module(self._modules[name])
                except ImportError as e:
                    raise ImportError(f"{self.kind} {name!r} needs {self._modules[name]}, which failed to "
                                      f"import: {e}") from e
            else:
                for ep in entry_points(group=f"afx_bench.{self.kind}"):
                    if ep.name == name:
                        self._items[name] = ep.load()
        if name not in self._items:
            raise UnknownName(f"unknown {self.kind} {name!r}; valid: {', '.join(self.names())}")
        return self._items[name]

    def __contains__(self, name: str) -> bool:
        return name in self.names()
