"""`afx-bench sweep`: Optuna studies over trainable systems' hyper-parameters, every trial a nested MLflow run.

Each trainable system declares its own search space (``System.search_space(trial)`` returns config overrides).
A trial builds the system with those overrides, fits it on the training tasks (``FitContext.report`` feeds the
pruner), then scores it on the *validation* split (never the test split) with the named objective(s), through the
runner's own code (:mod:`bench.cell`). The study lives in an Optuna storage (SQLite under the results dir by
default, PostgreSQL/MySQL URLs, or a journal file), so the same command started on several machines or processes
joins one study. The best trial's overrides go to ``<out>/best_params.toml``, which ``afx-bench run --params-from``
reads. Usage and semantics: docs/sweeps.md.

The modules, one job each:

- :mod:`~bench.sweep.objectives`: ``--objective KEY[:TASKS]`` -> :class:`Objective` (key, metric, tasks, direction)
- :mod:`~bench.sweep.storage`: :func:`open_storage` (RDB with heartbeats, or a journal file), :func:`redact`
- :mod:`~bench.sweep.samplers`: samplers seeded per trial number, pruners
- :mod:`~bench.sweep.best`: ``best_params.toml`` (a small TOML writer)
- :mod:`~bench.sweep.options`: :class:`SweepOptions`, :class:`SweepResult`, which systems are sweepable
- :mod:`~bench.sweep.study`: :class:`Sweep` (the study loop, one trial) and :func:`sweep`
- :mod:`~bench.sweep.tracking`: the MLflow runs of a study and its trials
- :mod:`~bench.sweep.interrupt`: Ctrl-C and SIGTERM
- :mod:`~bench.sweep.command`: the `afx-bench sweep` command and :func:`main` (``python -m bench.sweep``)

Importing this package imports nothing heavy: the names below load their module on first use.
"""

from __future__ import annotations

import importlib

_EXPORTS = {
    "Objective": "objectives", "parse_objectives": "objectives", "task_matches": "objectives",
    "parse_direction": "objectives", "DEFAULT_OBJECTIVE": "objectives",
    "open_storage": "storage", "redact": "storage", "STORAGE_FORMS": "storage",
    "make_sampler": "samplers", "make_pruner": "samplers", "trial_seed": "samplers", "SAMPLERS": "samplers",
    "PRUNERS": "samplers",
    "write_best_params": "best", "dump_toml": "best", "toml_value": "best",
    "SweepOptions": "options", "SweepResult": "options", "sweepable": "options", "trainable_systems": "options",
    "study_key": "options",
    "Sweep": "study", "sweep": "study",
    "main": "command", "cmd_sweep": "command", "options_from_args": "command",
}

__all__ = sorted(_EXPORTS)


def __getattr__(name: str):
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(f"{__name__}.{module}"), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted(set(globals()) | set(_EXPORTS))
