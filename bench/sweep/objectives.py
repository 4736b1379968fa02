"""What a sweep optimises: ``--objective KEY[:TASKS]`` specs parsed into :class:`Objective` s, each a score key
averaged over a filtered set of validation tasks, with its direction (from the metric, or ``--directions``)."""

from __future__ import annotations

import fnmatch
from dataclasses import dataclass, field

from bench.config import ConfigError

DEFAULT_OBJECTIVE = "mrstft"
DEFAULT_TASKS = "seen"  # a bare metric is averaged over the validation tasks of the seen effects
SUMMARY_SUFFIX = "_mean"  # a metric that has no score of its own name stands for this one (ac -> ac_mean)


@dataclass
class Objective:
    """One value to optimise: score key ``key`` of metric ``metric`` averaged over ``tasks`` (validation)."""

    key: str  # a score key: a metric name (mrstft), one of its sub-keys (param_mae/gain_db) or derived keys (ac_mean)
    metric: str  # the registry name of the metric that scores the key
    pattern: str  # the task filter as given ("" = the default, the seen effects)
    direction: str  # minimize | maximize
    tasks: list = field(default_factory=list)

    @property
    def label(self) -> str:
        return f"{self.key}:{self.pattern}" if self.pattern else self.key


def task_matches(task, pattern: str) -> bool:
    """``pattern``: glob alternatives separated by ``|``, each matched against the task id (speech/peq4/valid),
    the effect name, the corpus label and the effect set (seen | unseen)."""
    names = (task.id, task.effect.name, task.corpus.label, task.effect_set)
    return any(fnmatch.fnmatchcase(n, alt.strip()) for alt in pattern.split("|") if alt.strip() for n in names)


def parse_direction(text: str, where: str) -> str:
    """``minimize``/``maximize`` (or ``min``/``max``), any case."""
    d = text.strip().lower()
    d = {"min": "minimize", "max": "maximize"}.get(d, d)
    if d not in ("minimize", "maximize"):
        raise ConfigError(f"{where}: {text!r}; valid: minimize, maximize")
    return d


def metric_of(key: str, names: list[str]) -> str | None:
    """The registered metric that scores ``key``: its part before the first "/" (``param_mae/gain_db`` ->
    ``param_mae``), else that part's prefix before the first "_" (``ac_mean`` -> ``ac``, as the report reads
    derived keys); None if neither is a metric."""
    base = key.split("/")[0]
    for name in dict.fromkeys([base, base.split("_", 1)[0]]):
        if name and name in names:
            return name
    return None


def resolve_key(o: Objective, keys) -> str | None:
    """The score key ``o`` stands for among the ``keys`` its metric emits: the key itself, or, for a bare metric
    name that is not one of its own scores, the metric's summary ``<metric>_mean`` (``ac`` -> ``ac_mean``)."""
    if o.key in keys:
        return o.key
    if o.key == o.metric and o.key + SUMMARY_SUFFIX in keys:
        return o.key + SUMMARY_SUFFIX
    return None


def parse_objectives(specs: list[str] | None, directions: list[str] | None, valid_tasks: list) -> list[Objective]:
    """``KEY[:TASKS]`` specs -> objectives with their validation tasks; unknown metrics and filters that select
    no task fail here, with the valid choices. Whether the metric emits the key is checked by the sweep, which
    scores one example (:meth:`bench.sweep.study.Sweep.check_objectives`)."""
    from bench.metrics import METRICS

    specs = [s for s in (specs or [DEFAULT_OBJECTIVE]) if s.strip()]
    if directions and len(directions) != len(specs):
        raise ConfigError(f"--directions: {len(directions)} given for {len(specs)} objective(s) "
                          f"({', '.join(specs)}); give one per objective")
    if not valid_tasks:
        raise ConfigError("sweep: no validation tasks (the config has no training corpus or no trainable effect)")
    names = METRICS.names()
    out: list[Objective] = []
    for i, spec in enumerate(specs):
        key, _, pattern = spec.strip().partition(":")
        key, pattern = key.strip(), pattern.strip()
        metric = metric_of(key, names) if key else None
        if metric is None:
            raise ConfigError(f"--objective {spec!r}: unknown metric {key.split('/')[0]!r}; valid: {', '.join(names)} "
                              "(as METRIC or METRIC/SUBKEY, optionally :TASKS, e.g. mrstft:peq4)")
        cls = METRICS.get(metric)
        if directions:
            direction = parse_direction(directions[i], f"--directions (objective {spec!r})")
        else:
            direction = "maximize" if cls.higher_is_better else "minimize"
        tasks = [t for t in valid_tasks if task_matches(t, pattern or DEFAULT_TASKS)]
        if not tasks:
            ids = ", ".join(f"{t.id} ({t.effect_set})" for t in valid_tasks)
            what = f"filter {pattern!r}" if pattern else "the default (the validation tasks of the seen effects)"
            raise ConfigError(f"--objective {spec!r}: {what} selects no validation task; the tasks are: {ids}. "
                              "Filter by effect, corpus, task id or effect set, e.g. mrstft:peq4, mrstft:'*'")
        out.append(Objective(key, metric, pattern, direction, tasks))
    check_unique(out)
    return out


def check_unique(objectives: list[Objective]) -> None:
    labels = [o.label for o in objectives]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--objective: named twice: {labels}")
