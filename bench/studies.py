"""Studies: analyses a run adds after its grid, registered like systems and metrics (``@register_study``).

A study is configured by its own section, ``[studies.NAME]`` (parsed by its ``Config``), runs after the grid of
`afx-bench run` when that section is given, and by hand with `afx-bench study NAME`. The harness knows studies, not
what one studies: the latent-space study of the proposed model is registered by ``models/proposed``. A study
gets a :class:`StudyContext`: the run's config and plan, its own folder (``<out>/<study>/``, where it writes and
the report reads), and the driver's :meth:`~StudyContext.system`, which loads a system this run trained (or trains
one for the study alone, through the run's training job), so that checkpoints and MLflow stay the driver's.
"""

from __future__ import annotations

import argparse
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.config import Config, ConfigError, parse_section
from bench.registry import Registry

STUDIES = Registry("studies", {"latent": "models.proposed.study"})


def register_study(name: str):
    """Class decorator: register an instance of the :class:`Study` subclass under ``name``."""

    def deco(cls):
        study = cls()
        study.name = name
        STUDIES.register(name)(study)
        return cls

    return deco


@dataclass
class Prepared:
    """A system a study asked for: the system, the key of what it was trained under, and what its training cost
    when it was trained for this request (None when it was loaded)."""

    system: Any
    key: str
    budget: dict | None = None


class NotTrained(Exception):
    """The run holds no training of the system under the present settings (and the study may not train it)."""


@dataclass
class StudyContext:
    cfg: Config
    folder: Path  # the study's own folder, <out>/<study>/
    device: str
    # (name, cfg, train) -> Prepared: the system as the run trained (or, with train, trains) it under cfg
    prepare: Callable[..., Prepared]
    log: Callable[[str], None] = print
    standalone: bool = False  # `afx-bench study NAME` (by hand), not after a run's grid
    warnings: list[str] = field(default_factory=list)

    def system(self, name: str, cfg: Config | None = None, *, train: bool = False) -> Prepared:
        """``name`` as this run trained it under ``cfg`` (default: the run's config), loaded from its checkpoint;
        ``train``: train it (through the driver, which writes its checkpoint) if the run holds none. Raises
        :class:`NotTrained` otherwise."""
        return self.prepare(name, cfg or self.cfg, train)

    def warn(self, msg: str) -> None:
        self.warnings.append(msg)
        self.log(f"{self.name_prefix}{msg}")

    @property
    def name_prefix(self) -> str:
        return f"{self.folder.name} study: "


class Study:
    """Base of a study. ``Config``: its section's dataclass; :meth:`run` does the study; the rest serves
    `afx-bench study NAME`."""

    name: str = ""
    help: str = ""
    Config: type = object

    def settings(self, cfg: Config):
        """The study's parsed section of ``cfg``."""
        return parse_section(self.Config, dict(cfg.studies.get(self.name, {})), f"studies.{self.name}")

    def check(self, cfg: Config) -> None:
        """Parse the section and check the names it gives (systems, effects): a :class:`ConfigError` if bad."""
        self.settings(cfg)

    def run(self, ctx: StudyContext) -> None:
        """Do the study (warnings through ``ctx.warn``); never raises but KeyboardInterrupt."""
        raise NotImplementedError

    def trainings(self, cfg: Config) -> list[tuple[str, Config]]:
        """The systems :meth:`run` will train for itself, each with the config it trains under: the run trains
        them beside its grid (on a worker the grid would leave idle at its end) and :meth:`run` then finds their
        checkpoints. Default: none."""
        return []

    # --- by hand -----------------------------------------------------------------------------------------
    def add_arguments(self, p: argparse.ArgumentParser) -> None:
        pass

    def by_hand(self, cfg: Config, args: argparse.Namespace) -> tuple[Config, list[str]]:
        """The config `afx-bench study NAME` runs the study under (its section narrowed by the options), and the
        grid systems to train or load first (as `run` would)."""
        return cfg, []

    def show(self, ctx: StudyContext, args: argparse.Namespace) -> int:
        """Print what the study found by hand; the exit code."""
        return 1 if ctx.warnings else 0


def get_study(name: str) -> Study:
    study = STUDIES.get(name)
    if not isinstance(study, Study):
        raise ConfigError(f"studies.{name}: {study!r} is not a Study")
    return study
