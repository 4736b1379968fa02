"""Checks a user runs before a benchmark: `afx-bench check <what> ...`.

Each check lives in its own module, which defines ``CHECKS = {name: Check}``; a :class:`Check` has a one-line
``help``, ``add_arguments(parser)`` and ``__call__(args) -> exit code`` (non-zero on any failure). Modules are
imported only when their check is asked for (or when the help lists them).
"""

from __future__ import annotations

import argparse

# check name -> the module that defines it in its CHECKS
MODULES = {
    "system": "bench.checks.contract",
    "effect": "bench.checks.components",
    "metric": "bench.checks.components",
    "ac": "bench.checks.ac",
}


class Check:
    help: str = ""

    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        pass

    def __call__(self, args: argparse.Namespace) -> int:
        raise NotImplementedError


def get_check(name: str) -> Check:
    import importlib

    return importlib.import_module(MODULES[name]).CHECKS[name]
