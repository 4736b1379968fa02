"""`afx-bench sweep`: Optuna studies over trainable systems' hyper-parameters, every trial a nested MLflow run.

Each trainable system declares its own search space (``System.search_space(trial)`` returns config overrides).
A trial builds the system with those overrides, fits it on the training tasks (``FitContext.report`` feeds the
pruner), then scores it on the *validation* split (never the test split) with the named objective(s). The study
lives in an Optuna storage (SQLite under the results dir by default, PostgreSQL/MySQL URLs, or a journal file),
so the same command started on several machines or processes joins one study. The best trial's overrides go to
``<out>/best_params.toml``, which ``afx-bench run --params-from`` reads. Usage and semantics: docs/sweeps.md.

Nothing heavy (optuna, torch, mlflow) is imported at module level: ``afx-bench --help`` imports this module.
"""

from __future__ import annotations

import argparse
import contextlib
import fnmatch
import functools
import gc
import json
import math
import os
import re
import signal
import socket
import sys
import tempfile
import time
import traceback
import warnings
from dataclasses import dataclass, field
from pathlib import Path

from bench.config import Config, ConfigError

DEFAULT_OBJECTIVE = "mrstft"
DEFAULT_TASKS = "seen"  # a bare metric is averaged over the validation tasks of the seen effects
SAMPLERS = ("tpe", "random", "nsga2")
PRUNERS = ("median", "hyperband", "none")
STORAGE_FORMS = ("sqlite:///PATH, postgresql://USER[:PASSWORD]@HOST[:PORT]/DB, mysql+pymysql://..., "
                 "journal:PATH (an Optuna journal file)")
HEARTBEAT_S = 60  # RDB storages: a running trial's heartbeat; stale after GRACE_S without one
GRACE_S = 300
READY_WAIT_S = 120.0  # how long a joining worker waits for the creating worker to finish setting the study up


# --- objectives ---------------------------------------------------------------------------------------------


@dataclass
class Objective:
    """One value to optimise: score key ``key`` of metric ``metric`` averaged over ``tasks`` (validation)."""

    key: str  # a score key: a metric name (mrstft) or one of its sub-keys (param_mae/gain_db)
    metric: str  # the registry name (the part of the key before the first "/")
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


def _direction(text: str, where: str) -> str:
    d = text.strip().lower()
    d = {"min": "minimize", "max": "maximize"}.get(d, d)
    if d not in ("minimize", "maximize"):
        raise ConfigError(f"{where}: {text!r}; valid: minimize, maximize")
    return d


def parse_objectives(specs: list[str] | None, directions: list[str] | None, valid_tasks: list) -> list[Objective]:
    """``KEY[:TASKS]`` specs -> objectives with their validation tasks; unknown metrics and filters that select
    no task fail here, with the valid choices."""
    from bench.metrics import METRICS

    specs = [s for s in (specs or [DEFAULT_OBJECTIVE]) if s.strip()]
    if directions and len(directions) != len(specs):
        raise ConfigError(f"--directions: {len(directions)} given for {len(specs)} objective(s) "
                          f"({', '.join(specs)}); give one per objective")
    if not valid_tasks:
        raise ConfigError("sweep: no validation tasks (the config has no training corpus or no trainable effect)")
    out: list[Objective] = []
    for i, spec in enumerate(specs):
        key, _, pattern = spec.strip().partition(":")
        key, pattern = key.strip(), pattern.strip()
        metric = key.split("/")[0]
        if not key or metric not in METRICS:
            raise ConfigError(f"--objective {spec!r}: unknown metric {metric!r}; valid: {', '.join(METRICS.names())} "
                              "(as METRIC or METRIC/SUBKEY, optionally :TASKS, e.g. mrstft:peq4)")
        cls = METRICS.get(metric)
        if directions:
            direction = _direction(directions[i], f"--directions (objective {spec!r})")
        else:
            direction = "maximize" if cls.higher_is_better else "minimize"
        tasks = [t for t in valid_tasks if task_matches(t, pattern or DEFAULT_TASKS)]
        if not tasks:
            ids = ", ".join(f"{t.id} ({t.effect_set})" for t in valid_tasks)
            what = f"filter {pattern!r}" if pattern else "the default (the validation tasks of the seen effects)"
            raise ConfigError(f"--objective {spec!r}: {what} selects no validation task; the tasks are: {ids}. "
                              "Filter by effect, corpus, task id or effect set, e.g. mrstft:peq4, mrstft:'*'")
        out.append(Objective(key, metric, pattern, direction, tasks))
    labels = [o.label for o in out]
    if len(set(labels)) != len(labels):
        raise ConfigError(f"--objective: named twice: {labels}")
    return out


# --- storage ------------------------------------------------------------------------------------------------


def redact(url: str) -> str:
    """The URL without its password, for logs and tags."""
    if "://" not in url or url.startswith("journal:"):
        return url
    try:
        from sqlalchemy.engine import make_url

        return make_url(url).render_as_string(hide_password=True)
    except Exception:
        return re.sub(r"//([^:/@]+):[^@]*@", r"//\1:***@", url)


class _StaleTrials:
    """RDB heartbeats: when a worker finds another's trial stale (its process died), that trial is failed in
    Optuna by the storage, and here in MLflow."""

    def __init__(self):
        self.tracker = None

    def __call__(self, study, trial) -> None:
        run_id = trial.user_attrs.get("mlflow_run_id")
        if self.tracker is None or not run_id:
            return
        from bench.tracking import Run

        with contextlib.suppress(Exception):
            run = Run(self.tracker, run_id)
            run.set_tags({"state": "failed", "error": "stale: its worker stopped sending heartbeats (killed?)"})
            run.end("FAILED")


def _stale_arg() -> str:
    """Optuna >= 4.9 renamed the callback for trials failed by the heartbeat check."""
    import inspect

    import optuna

    params = inspect.signature(optuna.storages.RDBStorage.__init__).parameters
    return "heartbeat_stale_trial_callback" if "heartbeat_stale_trial_callback" in params else "failed_trial_callback"


def open_storage(url: str | None, out: Path):
    """(storage, url): ``journal:PATH`` is a JournalStorage on a file; anything else an Optuna RDB URL; empty
    is ``sqlite:///<out>/optuna.db``. A URL that cannot be opened fails here with a clear message."""
    import optuna

    if not url:
        Path(out).mkdir(parents=True, exist_ok=True)
        url = f"sqlite:///{(Path(out) / 'optuna.db').resolve()}"
    if url.startswith("journal:"):
        path = url[len("journal:"):]
        if path.startswith("//"):
            path = path[2:]  # journal:///abs/path
        if not path:
            raise ConfigError(f"--storage {url!r}: journal needs a file, as journal:PATH")
        p = Path(path).expanduser()
        if not p.parent.is_dir():
            raise ConfigError(f"--storage {url!r}: no such directory {p.parent}")
        if p.is_dir():
            raise ConfigError(f"--storage {url!r}: {p} is a directory; name a file, e.g. journal:{p}/optuna.log")
        from optuna.storages import JournalStorage
        from optuna.storages.journal import JournalFileBackend

        try:
            return JournalStorage(JournalFileBackend(str(p))), url
        except Exception as e:
            raise ConfigError(f"--storage {url!r}: cannot open the journal file: {e}") from e
    if "://" not in url:
        raise ConfigError(f"--storage {url!r}: not a storage URL; valid forms: {STORAGE_FORMS}")
    stale = _StaleTrials()
    kwargs = {"connect_args": {"timeout": 60}} if url.startswith("sqlite") else {"pool_pre_ping": True}
    last: Exception | None = None
    for attempt in range(4):
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
                storage = optuna.storages.RDBStorage(url, engine_kwargs=kwargs, heartbeat_interval=HEARTBEAT_S,
                                                     grace_period=GRACE_S, **{_stale_arg(): stale})
            storage._afx_stale = stale  # the tracker is attached once the MLflow side is set up
            return storage, url
        except ImportError as e:
            raise ConfigError(f"--storage {redact(url)}: the database driver is not installed ({e}); for PostgreSQL "
                              "install psycopg (pip install 'psycopg[binary]'), for MySQL PyMySQL") from e
        except Exception as e:
            last = e
            text = str(e).lower()
            # several workers creating the tables of a fresh database at once: one wins, the others retry
            if attempt < 3 and any(s in text for s in ("already exists", "duplicate", "database is locked")):
                time.sleep(0.5 + attempt)
                continue
            break
    msg = str(last).strip().splitlines()[0] if str(last).strip() else type(last).__name__
    raise ConfigError(f"--storage {redact(url)}: cannot open it: {type(last).__name__}: {msg}. "
                      f"Valid forms: {STORAGE_FORMS}") from last


# --- samplers and pruners -----------------------------------------------------------------------------------


def trial_seed(seed: int, number: int) -> int:
    import numpy as np

    return int(np.random.SeedSequence([int(seed) & 0xFFFFFFFF, int(number)]).generate_state(1)[0])


@functools.cache
def _trial_seeded_class():
    from optuna.samplers import BaseSampler

    class TrialSeededSampler(BaseSampler):
        """A fresh inner sampler per trial, seeded by (seed, trial number).

        A plain seeded sampler gives every worker the same random stream, so parallel workers would propose the
        same settings; seeding by trial number keeps one worker's sweep reproducible and makes workers differ.
        It also records the trials this process asked for, so an interrupt can fail any it left running."""

        def __init__(self, factory, seed: int):
            self._factory = factory
            self._seed = int(seed)
            self._inner: dict[int, BaseSampler] = {}
            self.asked: list[int] = []  # storage trial ids created by this process

        def __str__(self) -> str:
            return f"{type(self._factory(0)).__name__}(seed={self._seed}, per trial)"

        def _for(self, trial) -> BaseSampler:
            s = self._inner.get(trial.number)
            if s is None:
                s = self._inner[trial.number] = self._factory(trial_seed(self._seed, trial.number))
            return s

        def infer_relative_search_space(self, study, trial):
            return self._for(trial).infer_relative_search_space(study, trial)

        def sample_relative(self, study, trial, search_space):
            return self._for(trial).sample_relative(study, trial, search_space)

        def sample_independent(self, study, trial, param_name, param_distribution):
            return self._for(trial).sample_independent(study, trial, param_name, param_distribution)

        def before_trial(self, study, trial) -> None:
            self.asked.append(trial._trial_id)
            self._for(trial).before_trial(study, trial)

        def after_trial(self, study, trial, state, values) -> None:
            self._for(trial).after_trial(study, trial, state, values)
            self._inner.pop(trial.number, None)

        def reseed_rng(self) -> None:  # seeds come from trial numbers
            pass

    return TrialSeededSampler


def make_sampler(name: str, seed: int, fixed: dict | None = None):
    import optuna

    bases = {
        "tpe": lambda s: optuna.samplers.TPESampler(seed=s),
        "random": lambda s: optuna.samplers.RandomSampler(seed=s),
        "nsga2": lambda s: optuna.samplers.NSGAIISampler(seed=s),
    }
    if name not in bases:
        raise ConfigError(f"--sampler {name!r}; valid: {', '.join(SAMPLERS)}")
    base = bases[name]

    def factory(s: int):
        with warnings.catch_warnings():
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            inner = base(s)
            return optuna.samplers.PartialFixedSampler(dict(fixed), inner) if fixed else inner

    return _trial_seeded_class()(factory, seed)


def make_pruner(name: str, startup: int, n_objectives: int):
    """Pruning needs one objective (Optuna cannot prune multi-objective studies): none otherwise."""
    import optuna

    if name not in PRUNERS:
        raise ConfigError(f"--pruner {name!r}; valid: {', '.join(PRUNERS)}")
    if name == "none" or n_objectives > 1:
        return optuna.pruners.NopPruner()
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=startup, n_warmup_steps=0)
    return optuna.pruners.HyperbandPruner(min_resource=1, reduction_factor=3)


# --- best params --------------------------------------------------------------------------------------------


def _toml_key(k: str) -> str:
    return k if re.fullmatch(r"[A-Za-z0-9_-]+", k) else json.dumps(k, ensure_ascii=False)


def toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int):
        return str(v)
    if isinstance(v, float):
        if math.isnan(v):
            return "nan"
        if math.isinf(v):
            return "inf" if v > 0 else "-inf"
        return repr(v)
    if isinstance(v, str):
        return json.dumps(v, ensure_ascii=False).replace("\x7f", "\\u007f")
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(toml_value(x) for x in v) + "]"
    if hasattr(v, "item"):  # numpy scalars
        return toml_value(v.item())
    raise TypeError(f"cannot write {v!r} ({type(v).__name__}) as a TOML value")


def dump_toml(tables: dict[str, dict[str, dict]], header: str = "") -> str:
    """``{"systems": {"proposed": {"lr": 1e-3}}}`` -> TOML with one ``[top.name]`` table per entry."""
    lines = [f"# {h}" for h in header.splitlines()] + ([""] if header else [])
    for top, entries in tables.items():
        for name, values in entries.items():
            lines.append(f"[{_toml_key(top)}.{_toml_key(name)}]")
            lines += [f"{_toml_key(k)} = {toml_value(v)}" for k, v in values.items()]
            lines.append("")
    return "\n".join(lines)


def write_best_params(path: Path, system: str, params: dict, provenance: dict) -> None:
    """Set ``[systems.<system>]`` (what ``--params-from`` applies) and ``[sweep.<system>]`` (where it came
    from) in ``path``, keeping the other systems' tables."""
    import tomllib

    from bench.cache import atomic_write_bytes

    path = Path(path)
    old: dict = {}
    if path.is_file():
        with contextlib.suppress(tomllib.TOMLDecodeError, OSError):
            old = tomllib.loads(path.read_text())
    tables = {"systems": dict(old.get("systems", {})), "sweep": dict(old.get("sweep", {}))}
    tables["systems"][system] = dict(params)
    tables["sweep"][system] = dict(provenance)
    header = ("Best hyper-parameters found by `afx-bench sweep`; apply with `afx-bench run --params-from FILE`.\n"
              "[systems.NAME] holds config overrides; [sweep.NAME] says which study and trial they come from.")
    atomic_write_bytes(path, dump_toml(tables, header).encode())


# --- the sweep ----------------------------------------------------------------------------------------------


@dataclass
class SweepOptions:
    trials: int | None = 20  # trials this worker runs (None: until --max-trials or --timeout)
    max_trials: int | None = None  # stop when the study holds this many trials (all workers together)
    timeout: float | None = None  # seconds this worker starts trials for
    study: str | None = None  # default: <system>-<preset>
    objectives: list[str] = field(default_factory=list)
    directions: list[str] = field(default_factory=list)
    sampler: str = "tpe"
    pruner: str = "median"
    pruner_startup: int = 5  # finished trials before the median pruner prunes
    seed: int | None = None  # default: run.seed
    fix: dict = field(default_factory=dict)  # search-space parameters pinned to a value

    def check(self) -> None:
        if self.trials is not None and self.trials < 1:
            raise ConfigError(f"--trials: must be at least 1, got {self.trials}")
        if self.max_trials is not None and self.max_trials < 1:
            raise ConfigError(f"--max-trials: must be at least 1, got {self.max_trials}")
        if self.timeout is not None and self.timeout <= 0:
            raise ConfigError(f"--timeout: must be positive, got {self.timeout}")
        if self.trials is None and self.max_trials is None and self.timeout is None:
            raise ConfigError("sweep: give --trials, --max-trials or --timeout, or it would never stop")
        if self.sampler not in SAMPLERS:
            raise ConfigError(f"--sampler {self.sampler!r}; valid: {', '.join(SAMPLERS)}")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"--pruner {self.pruner!r}; valid: {', '.join(PRUNERS)}")
        if self.pruner_startup < 0:
            raise ConfigError(f"--pruner-startup: must be >= 0, got {self.pruner_startup}")


@dataclass
class SweepResult:
    system: str
    study: str
    storage: str
    states: dict  # state -> count, over the whole study
    mine: int  # trials this worker ran
    best_params: dict | None
    best_values: list | None
    best_trial: int | None


def sweepable(cls) -> bool:
    """Trainable and declaring its own search space."""
    from bench.systems import System

    return bool(getattr(cls, "trainable", False)) and cls.search_space.__func__ is not System.search_space.__func__


def trainable_systems() -> list[str]:
    """Every registered system that imports, is trainable and declares a search space."""
    from bench.systems import SYSTEMS

    names = []
    for name in SYSTEMS.names():
        try:
            cls = SYSTEMS.get(name)
        except Exception:  # not written yet or a missing dependency: nothing to sweep
            continue
        if sweepable(cls):
            names.append(name)
    return names


def study_key(cfg: Config, system: str, objectives: list[Objective]) -> str:
    """What the trials' values depend on: data, effects, tasks, seed, the system's base config, the objectives.
    A study joined with different settings would mix incomparable trials."""
    from bench.cache import stable_hash

    d = cfg.to_dict()
    for k in ("name", "progress", "workers", "device", "report", "audio_examples"):
        d["run"].pop(k, None)
    for k in ("tracking", "preset", "systems", "metrics"):
        d.pop(k, None)
    metrics = sorted({o.metric for o in objectives})
    return stable_hash([d, system, cfg.system_config(system), [(o.key, o.pattern, o.direction) for o in objectives],
                        {m: cfg.metric_config(m) for m in metrics}])


@contextlib.contextmanager
def _file_lock(path: Path):
    import fcntl

    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path, "a") as f:
        fcntl.flock(f, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(f, fcntl.LOCK_UN)


def _short(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {text[0] if text else ''}"[:500]


class Sweep:
    """One system's study, as seen by one worker process."""

    def __init__(self, cfg: Config, out: Path, system: str, opts: SweepOptions, *, storage=None,
                 storage_url: str | None = None, grid=None, log=print):
        from bench.runner import Grid, resolve_device
        from bench.systems import SYSTEMS, parse_config

        opts.check()
        self.cfg, self.out, self.name, self.opts, self.log = cfg, Path(out), system, opts, log
        self.cls = SYSTEMS.get(system)
        if not sweepable(self.cls):
            raise ConfigError(f"sweep: {system!r} is not a trainable system with a search space; sweepable: "
                              f"{', '.join(trainable_systems()) or 'none'}")
        self.base_conf = cfg.system_config(system)
        self.base_conf.pop("checkpoint", None)  # a sweep trains every trial
        try:
            parse_config(self.cls.Config, self.base_conf, f"systems.{system}")
        except ValueError as e:
            raise ConfigError(str(e)) from e
        self.grid = grid or Grid.build(cfg)
        self.objectives = parse_objectives(opts.objectives, opts.directions, self.grid.valid)
        self.device = resolve_device(cfg.run.device)
        self.seed = cfg.run.seed if opts.seed is None else opts.seed
        self.study_name = opts.study or f"{system}-{cfg.preset}"
        self._examples: dict[str, list] = {}
        self._check_objectives()
        self.storage, self.storage_url = storage, storage_url or ""  # opened in run() unless given
        self.key = study_key(cfg, system, self.objectives)
        self.worker = f"{socket.gethostname()}:{os.getpid()}"
        self.tracker = None
        self.parent = None
        self.mine = 0

    # --- start-up checks ----------------------------------------------------------------------------------
    def examples(self, task) -> list:
        if task.id not in self._examples:
            self._examples[task.id] = task.examples(self.cfg.tasks.n_valid)
        return self._examples[task.id]

    def _check_objectives(self) -> None:
        """Parameter metrics need an effect the system controls; every score key must exist (checked by
        scoring a do-nothing estimate on one validation example)."""
        import numpy as np

        from bench.metrics import get_metric
        from bench.systems import Estimate

        self.metrics = {m: get_metric(m, self.cfg.metric_config(m), sample_rate=self.cfg.run.sample_rate,
                                      device=self.device)
                        for m in dict.fromkeys(o.metric for o in self.objectives)}
        controls = getattr(self.cls, "controls", set())
        for o in self.objectives:
            if "params" in self.metrics[o.metric].needs and controls != "any":
                if not any(t.effect.name in controls for t in o.tasks):
                    raise ConfigError(
                        f"--objective {o.label!r}: {o.metric} needs parameter estimates, and {self.name} controls "
                        f"none of its tasks' effects ({', '.join(sorted({t.effect.name for t in o.tasks}))}); "
                        f"{self.name} controls: {', '.join(sorted(controls)) or 'nothing'}")
            ex = self.examples(o.tasks[0])[0]
            est = Estimate(None, np.asarray(ex.input, dtype=np.float32))
            keys = self.metrics[o.metric].score_batch([est], [ex])[0]
            if o.key not in keys:
                raise ConfigError(f"--objective {o.label!r}: metric {o.metric} has no score {o.key!r}; "
                                  f"its scores: {', '.join(sorted(keys))}")

    # --- study and MLflow set-up ----------------------------------------------------------------------------
    def _open_study(self):
        import optuna

        directions = [o.direction for o in self.objectives]
        self.sampler = make_sampler(self.opts.sampler, self.seed, self.opts.fix)
        pruner = make_pruner(self.opts.pruner, self.opts.pruner_startup, len(self.objectives))
        try:
            study = optuna.create_study(storage=self.storage, sampler=self.sampler, pruner=pruner,
                                        study_name=self.study_name, directions=directions)
            created = True
        except optuna.exceptions.DuplicatedStudyError:
            study = optuna.load_study(study_name=self.study_name, storage=self.storage, sampler=self.sampler,
                                      pruner=pruner)
            created = False
        if created:
            return study, True
        if [d.name.lower() for d in study.directions] != directions:
            raise ConfigError(f"--study {self.study_name}: the study exists with directions "
                              f"{[d.name.lower() for d in study.directions]}, this sweep has {directions}; "
                              "use another --study name")
        deadline = time.monotonic() + READY_WAIT_S
        while ("afx_ready" not in study.user_attrs and not study.get_trials(deepcopy=False)
               and time.monotonic() < deadline):
            time.sleep(0.5)  # the creating worker is still setting the study up
        attrs = study.user_attrs
        if "afx_key" not in attrs:
            self.log(f"warning: study {self.study_name} was not created by afx-bench sweep (no settings recorded)")
        elif attrs.get("afx_system") != self.name:
            raise ConfigError(f"--study {self.study_name}: the study belongs to system {attrs.get('afx_system')!r}, "
                              f"not {self.name!r}; use another --study name")
        elif attrs.get("afx_key") != self.key:
            raise ConfigError(
                f"--study {self.study_name}: the study was created with other settings (objectives "
                f"{attrs.get('afx_objectives')}, config {attrs.get('afx_config_hash')}); its trials would not "
                "compare with this sweep's. Use the same config and objectives, or another --study name")
        return study, False

    def _start_tracking(self, study, created: bool) -> None:
        cfg = self.cfg
        if not cfg.tracking.enabled:
            if created:
                study.set_user_attr("afx_ready", True)
            return
        from bench.tracking import Run, Tracker, default_uri, git_sha

        uri = cfg.tracking.uri or default_uri(self.out)
        db = uri[len("sqlite:///"):] if uri.startswith("sqlite:///") else ""
        lock = _file_lock(Path(db + ".lock")) if db and Path(db).parent.is_dir() else contextlib.nullcontext()
        for attempt in range(3):
            try:
                with lock:  # two workers creating one fresh MLflow SQLite store at once would collide
                    self.tracker = Tracker(self.out, cfg.tracking.uri, f"{cfg.run.name}-sweeps")
                break
            except Exception:  # e.g. another worker created the experiment between our lookup and create
                if attempt == 2:
                    raise
                time.sleep(1.0 + attempt)
        stale = getattr(self.storage, "_afx_stale", None)
        if stale is not None:
            stale.tracker = self.tracker
        self.common = {"system": self.name, "study": self.study_name, "preset": cfg.preset,
                       "config_hash": cfg.hash(), "git_sha": git_sha(), "optuna_storage": redact(self.storage_url)}
        parent_id = study.user_attrs.get("mlflow_parent_run_id")
        if parent_id:
            try:
                self.tracker.client.get_run(parent_id)
                self.parent = Run(self.tracker, parent_id)
                self.tracker.client.update_run(parent_id, status="RUNNING")
            except Exception:  # a worker logging to another MLflow store than the creator's
                self.parent = None
        if self.parent is None:
            self.parent = self.tracker.start(
                f"sweep/{self.study_name}",
                {"kind": "sweep", **self.common, "objectives": ", ".join(o.label for o in self.objectives),
                 "directions": ", ".join(o.direction for o in self.objectives), "sampler": self.opts.sampler,
                 "pruner": self.opts.pruner if len(self.objectives) == 1 else "none (multi-objective)"})
            self.parent.log_params({"config": cfg.to_dict(), "sweep": {
                "system": self.name, "study": self.study_name, "storage": redact(self.storage_url),
                "objectives": [o.label for o in self.objectives], "directions": [o.direction for o in self.objectives],
                "sampler": self.opts.sampler, "pruner": self.opts.pruner, "pruner_startup": self.opts.pruner_startup,
                "seed": self.seed, "fixed": self.opts.fix,
                "valid_tasks": sorted({t.id for o in self.objectives for t in o.tasks})}})
            if created:
                study.set_user_attr("mlflow_parent_run_id", self.parent.id)
        if created:
            study.set_user_attr("afx_ready", True)

    # --- one trial ----------------------------------------------------------------------------------------
    def _reporter(self, trial, run):
        import optuna

        sign = -1.0 if self.objectives[0].direction == "maximize" else 1.0
        single = len(self.objectives) == 1

        def report(step: int, value: float) -> None:
            """Intermediate values are the system's own validation loss (lower is better)."""
            _check_stop()
            if run is not None:
                run.log_metrics({"intermediate": value}, step=int(step))
            if single and math.isfinite(value):
                trial.report(sign * float(value), int(step))
                if trial.should_prune():
                    raise optuna.TrialPruned(f"pruned at step {step} (intermediate value {value:.6g})")

        return report

    def evaluate(self, system) -> tuple[list[float], dict[str, float]]:
        """The objectives on the validation tasks: per task, the mean over examples; then the mean over tasks."""
        from bench.runner import check_estimates
        from bench.systems import SystemError_

        per_task: dict[tuple[str, str], float] = {}
        tasks = {t.id: t for o in self.objectives for t in o.tasks}
        for tid, task in tasks.items():
            wanted = [o for o in self.objectives if any(t.id == tid for t in o.tasks)]
            examples = self.examples(task)
            estimates = system.match_examples(examples, task.effect)
            check_estimates(self.name, estimates, examples, task.effect)
            for metric in dict.fromkeys(o.metric for o in wanted):
                scores = self.metrics[metric].score_batch(estimates, examples)
                for o in wanted:
                    if o.metric == metric:
                        vals = [float(s.get(o.key, math.nan)) for s in scores]
                        finite = [v for v in vals if math.isfinite(v)]
                        per_task[(o.key, tid)] = sum(finite) / len(finite) if finite else math.nan
        values = []
        for o in self.objectives:
            finite = [v for v in (per_task[(o.key, t.id)] for t in o.tasks) if math.isfinite(v)]
            if not finite:
                raise SystemError_(f"{self.name}: objective {o.label} is NaN on every selected validation task "
                                   "(not applicable there, or the system's output is broken)")
            values.append(sum(finite) / len(finite))
        details = {f"valid/{k}/{tid}": v for (k, tid), v in per_task.items()}
        return values, details

    def objective(self, trial):
        from bench.systems import FitContext, get_system

        t0 = time.perf_counter()
        run = system = None
        self.mine += 1
        try:
            _check_stop()
            trial.set_user_attr("worker", self.worker)
            if self.tracker is not None:
                run = self.tracker.start(f"trial-{trial.number:04d}",
                                         {"kind": "trial", **self.common, "trial": trial.number,
                                          "worker": self.worker, "state": "running"}, parent=self.parent)
                trial.set_user_attr("mlflow_run_id", run.id)
            overrides = dict(self.cls.search_space(trial))
            trial.set_user_attr("config", json.loads(json.dumps(overrides, default=str)))
            if run is not None:
                run.log_params({**trial.params, **overrides, "trial": trial.number})
            system = get_system(self.name, {**self.base_conf, **overrides}, sample_rate=self.cfg.run.sample_rate,
                                device=self.device)
            with tempfile.TemporaryDirectory(prefix=f"afx-trial{trial.number}-") as tmp:
                ctx = FitContext(valid_tasks=self.grid.valid, tracker=run, device=self.device, seed=self.cfg.run.seed,
                                 workers=self.cfg.run.workers or _workers(), progress=False,
                                 checkpoint_dir=Path(tmp), report=self._reporter(trial, run))
                system.fit(self.grid.train, ctx)
            t_fit = time.perf_counter() - t0
            values, details = self.evaluate(system)
            seconds = time.perf_counter() - t0
            if run is not None:
                run.log_metrics({**{f"objective/{o.label}": v for o, v in zip(self.objectives, values, strict=True)},
                                 **details, "fit_seconds": t_fit, "trial_seconds": seconds})
                run.set_tags({"state": "complete"})
                run.end()
            shown = ", ".join(f"{o.label} {v:.5g}" for o, v in zip(self.objectives, values, strict=True))
            self.log(f"[{self.study_name}] trial {trial.number}: complete, {shown} ({seconds:.1f} s) {overrides}")
            return values if len(values) > 1 else values[0]
        except KeyboardInterrupt:
            with contextlib.suppress(Exception):
                trial.set_user_attr("interrupted", True)
            self._end_run(run, "KILLED", {"state": "interrupted", "error": "KeyboardInterrupt (Ctrl-C or SIGTERM)"})
            raise
        except Exception as e:
            import optuna

            if isinstance(e, optuna.TrialPruned):
                self._end_run(run, "FINISHED", {"state": "pruned"},
                              {"trial_seconds": time.perf_counter() - t0})
                self.log(f"[{self.study_name}] trial {trial.number}: {e}")
                raise
            with contextlib.suppress(Exception):
                trial.set_user_attr("error", _short(e))
            self._end_run(run, "FAILED", {"state": "failed", "error": _short(e),
                                          "traceback": "".join(traceback.format_exception(e))[-4000:]},
                          {"trial_seconds": time.perf_counter() - t0})
            self.log(f"[{self.study_name}] trial {trial.number}: failed, {_short(e)}")
            raise
        finally:
            del system
            _release_memory(failed=sys.exc_info()[0] is not None)

    @staticmethod
    def _end_run(run, status: str, tags: dict, metrics: dict | None = None) -> None:
        if run is None:
            return
        try:  # MLflow trouble must not hide the trial's own error
            if metrics:
                run.log_metrics(metrics)
            run.set_tags(tags)
            run.end(status)
        except Exception as e:
            print(f"warning: MLflow: could not record the trial's end: {_short(e)}", file=sys.stderr)

    # --- the loop -----------------------------------------------------------------------------------------
    def _counted(self, study) -> int:
        return sum(1 for t in study.get_trials(deepcopy=False) if not t.user_attrs.get("interrupted"))

    def _after_trial(self, study, trial) -> None:
        _check_stop()
        if self.opts.max_trials and self._counted(study) >= self.opts.max_trials:
            study.stop()
        if trial.state.name == "COMPLETE":
            self.write_best(study)

    def best(self, study):
        """The best finished trial: for several objectives, the Pareto-optimal trial best on the first."""
        from optuna.trial import TrialState

        if not study.get_trials(deepcopy=False, states=(TrialState.COMPLETE,)):
            return None
        if len(self.objectives) == 1:
            return study.best_trial
        sign = 1.0 if self.objectives[0].direction == "minimize" else -1.0
        return min(study.best_trials, key=lambda t: (sign * t.values[0], t.number))

    def write_best(self, study) -> dict | None:
        best = self.best(study)
        if best is None:
            return None
        params = best.user_attrs.get("config")
        if params is None:  # a trial from before config overrides were recorded: derive them again
            import optuna

            params = dict(self.cls.search_space(optuna.trial.FixedTrial(best.params)))
        provenance = {"study": self.study_name, "trial": best.number, "storage": redact(self.storage_url),
                      "objectives": [o.label for o in self.objectives],
                      "directions": [o.direction for o in self.objectives], "values": list(best.values),
                      "written": time.strftime("%Y-%m-%dT%H:%M:%S")}
        write_best_params(self.out / "best_params.toml", self.name, params, provenance)
        return params

    def _fail_leftovers(self, study) -> None:
        """After an interrupt: any trial this process asked for and left RUNNING is failed (and marked), so the
        study holds no orphan and resumes cleanly."""
        from optuna.trial import TrialState

        for tid in getattr(self.sampler, "asked", []):
            with contextlib.suppress(Exception):
                if self.storage.get_trial(tid).state == TrialState.RUNNING:
                    self.storage.set_trial_user_attr(tid, "interrupted", True)
                    self.storage.set_trial_state_values(tid, TrialState.FAIL)

    def run(self) -> SweepResult:
        import optuna

        optuna.logging.set_verbosity(optuna.logging.WARNING)
        self.out.mkdir(parents=True, exist_ok=True)
        if self.storage is None:
            self.storage, self.storage_url = open_storage(self.storage_url, self.out)
        study, created = self._open_study()
        if created:
            for k, v in {"afx_system": self.name, "afx_key": self.key, "afx_config_hash": self.cfg.hash(),
                         "afx_objectives": [o.label for o in self.objectives], "afx_preset": self.cfg.preset}.items():
                study.set_user_attr(k, v)
        self._start_tracking(study, created)
        where = redact(self.storage_url)
        n_before = len(study.trials)
        self.log(f"sweep {self.name}: study {self.study_name!r} in {where} ({'new' if created else f'{n_before} trials'}"
                 f"), objectives {', '.join(f'{o.label} ({o.direction})' for o in self.objectives)} on "
                 f"{len({t.id for o in self.objectives for t in o.tasks})} validation task(s)")
        status = "FINISHED"
        try:
            if self.opts.max_trials and self._counted(study) >= self.opts.max_trials:
                self.log(f"sweep {self.name}: the study already holds {self._counted(study)} trials "
                         f"(--max-trials {self.opts.max_trials}); nothing to do")
            else:
                study.optimize(self.objective, n_trials=self.opts.trials, timeout=self.opts.timeout,
                               catch=(Exception,), callbacks=[self._after_trial])
        except KeyboardInterrupt:
            status = "KILLED"
            self._fail_leftovers(study)
            raise
        except BaseException:
            status = "FAILED"
            raise
        finally:
            best_params = self.write_best(study)
            self._finish(study, status)
        best = self.best(study)
        return SweepResult(self.name, self.study_name, where, self.states(study), self.mine, best_params,
                           list(best.values) if best else None, best.number if best else None)

    @staticmethod
    def states(study) -> dict:
        out: dict[str, int] = {}
        for t in study.get_trials(deepcopy=False):
            s = "interrupted" if t.user_attrs.get("interrupted") else t.state.name.lower()
            out[s] = out.get(s, 0) + 1
        return out

    def _finish(self, study, status: str) -> None:
        """Trials table under <out>/sweeps/<study>/, best values and counts on the parent run."""
        d = self.out / "sweeps" / _slug(self.study_name)
        try:
            d.mkdir(parents=True, exist_ok=True)
            df = study.trials_dataframe()
            tmp = d / f".trials.csv.{os.getpid()}.tmp"
            df.to_csv(tmp, index=False)
            os.replace(tmp, d / "trials.csv")
        except Exception as e:
            self.log(f"warning: trials table not written: {_short(e)}")
        if self.parent is None:
            return
        try:
            states = self.states(study)
            metrics = {f"trials/{k}": v for k, v in states.items()}
            best = self.best(study)
            if best is not None:
                metrics.update({f"best/{o.label}": v for o, v in zip(self.objectives, best.values, strict=True)})
                self.parent.set_tags({"best_trial": best.number})
            self.parent.log_metrics(metrics)
            if (self.out / "best_params.toml").is_file():
                self.parent.log_artifact(self.out / "best_params.toml")
            if (d / "trials.csv").is_file():
                self.parent.log_artifact(d / "trials.csv")
            self.parent.end(status)
        except Exception as e:
            self.log(f"warning: MLflow: the sweep's run was not updated: {_short(e)}")


def _slug(s: str) -> str:
    return re.sub(r"[^A-Za-z0-9_.-]+", "_", s).strip("_")[:80] or "study"


def _workers() -> int:
    from bench.effects import default_workers

    return default_workers()


def _release_memory(failed: bool) -> None:
    """Between trials on a GPU, or after a failure (whose traceback cycles hold tensors), free what is held."""
    torch = sys.modules.get("torch")
    cuda = torch is not None and torch.cuda.is_available()
    if failed or cuda:
        gc.collect()
    if cuda:
        torch.cuda.empty_cache()


def sweep(cfg: Config, out: Path, system: str, opts: SweepOptions | None = None, *, storage: str | None = None,
          log=print) -> SweepResult:
    """Run (or join) the study of ``system``: the Python entry point of ``afx-bench sweep``."""
    return Sweep(cfg, out, system, opts or SweepOptions(), storage_url=storage, log=log).run()


# --- command line -------------------------------------------------------------------------------------------


def add_arguments(p: argparse.ArgumentParser) -> None:
    g = p.add_argument_group("sweep")
    g.add_argument("--system", action="append", default=[], metavar="NAME",
                   help="system(s) to sweep, comma-separated or repeated (or --systems)")
    g.add_argument("--all", action="store_true", help="every trainable system in the registry that imports")
    g.add_argument("--trials", type=int, help="trials this worker runs (default 20; per system)")
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


def _split(values: list[str]) -> list[str]:
    return [x.strip() for v in values for x in v.split(",") if x.strip()]


def options_from_args(args) -> SweepOptions:
    from bench.config import parse_value

    fix = {}
    for item in args.fix:
        k, eq, v = item.partition("=")
        if not eq or not k.strip():
            raise ConfigError(f"--fix {item!r}: expected PARAM=VALUE, e.g. --fix lr=0.001")
        fix[k.strip()] = parse_value(v.strip())
    trials = args.trials
    if trials is None and args.max_trials is None and args.timeout is None:
        trials = 20
    return SweepOptions(trials=trials, max_trials=args.max_trials, timeout=args.timeout, study=args.study,
                        objectives=_split(args.objective), directions=_split(args.directions), sampler=args.sampler,
                        pruner=args.pruner, pruner_startup=args.pruner_startup, seed=args.seed, fix=fix)


_STOP: dict = {"signal": None}  # set by the Ctrl-C / SIGTERM handler, checked at safe points


def _on_stop_signal(signum, frame):
    """Ctrl-C and SIGTERM: remember, then interrupt. Python drops an exception raised while a weakref callback
    or ``__del__`` runs, so the flag is also checked at safe points (each report and between trials)."""
    _STOP["signal"] = signum
    raise KeyboardInterrupt


def _check_stop() -> None:
    if _STOP["signal"] is not None:
        raise KeyboardInterrupt


def cmd_sweep(args) -> int:
    from bench.cli import _csv, load, out_dir
    from bench.runner import Grid

    names = _split(args.system) + (_csv(args.systems) or [])
    if args.all:
        if names:
            raise ConfigError("sweep: give --system NAME(s) or --all, not both")
        names = trainable_systems()
        if not names:
            raise ConfigError("sweep --all: no trainable system with a search space imports")
    if not names:
        raise ConfigError("sweep: name the system(s) with --system NAME, or sweep them all with --all")
    args.systems = ",".join(dict.fromkeys(names))  # validated by the config (unknown names list the valid ones)
    cfg = load(args)
    out = out_dir(args)
    opts = options_from_args(args)
    opts.check()
    grid = Grid.build(cfg)
    sweeps = []
    for name in dict.fromkeys(names):  # every check before any trial runs
        o = SweepOptions(**{**opts.__dict__, "study": (f"{opts.study}-{name}" if opts.study and len(names) > 1
                                                       else opts.study)})
        sweeps.append(Sweep(cfg, out, name, o, grid=grid))
    storage, url = open_storage(args.storage, out)
    for s in sweeps:
        s.storage, s.storage_url = storage, url
    _STOP["signal"] = None
    handled = (signal.SIGINT, signal.SIGTERM) if _main_thread() else ()
    old = {sig: signal.signal(sig, _on_stop_signal) for sig in handled}
    results = []
    try:
        for s in sweeps:
            results.append(s.run())
    except KeyboardInterrupt:
        print(f"\ninterrupted: the study is consistent in {redact(url)}; rerun the same command to resume",
              file=sys.stderr)
        return 130
    finally:
        for sig, h in old.items():
            signal.signal(sig, h)
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


def _main_thread() -> bool:
    import threading

    return threading.current_thread() is threading.main_thread()


def add_command(sub, config_args) -> None:
    p = sub.add_parser("sweep", help="Optuna sweep of trainable systems' hyper-parameters (trials in MLflow)",
                       description="Optuna sweep over a system's declared search space; the objective is scored "
                                   "on the validation split. See docs/sweeps.md.")
    config_args(p)
    add_arguments(p)
    p.set_defaults(func=cmd_sweep)


def main(argv: list[str] | None = None) -> int:
    """``python -m bench.sweep ...``: the same as ``afx-bench sweep ...``."""
    from bench.cli import _config_args
    from bench.registry import UnknownName

    p = argparse.ArgumentParser(prog="python -m bench.sweep", description=__doc__.splitlines()[0])
    _config_args(p)
    add_arguments(p)
    args = p.parse_args(argv)
    try:
        return cmd_sweep(args)
    except (ConfigError, UnknownName) as e:
        print(f"afx-bench sweep: config error: {e}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
