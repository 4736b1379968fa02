"""Typed configuration: presets in bench/presets/{smoke,quick,record,full,gpu}.toml, then CLI overrides.

Every key is known: an unknown key or a wrongly typed value fails at start with a message that names the key and
the allowed values (names of systems, effects, corpora, metrics and studies are checked by the plan,
:func:`bench.plan.check`, against their registries: this module imports none of them). The fully resolved config is recorded with
every run (MLflow params and a config.json artifact), so any run can be repeated.
"""

from __future__ import annotations

import copy
import dataclasses
import tomllib
from dataclasses import dataclass, field
from importlib import resources
from pathlib import Path

from bench.cache import stable_hash

PRESETS = ("smoke", "quick", "record", "full", "gpu")
WILD_EFFECTS = ["room", "pedal_chain", "lofi"]  # what `--effects wild` means when effects.wild is empty
HIDDEN_EFFECTS = WILD_EFFECTS + ["recorded"]  # named in --effects, these join the wild set


HARNESS_KEYS = ("checkpoint", "resources", "cell_resources")  # in a system's section, read by the harness only


class ConfigError(ValueError):
    """A bad config value; the message names the key and what is allowed."""


@dataclass
class RunConfig:
    name: str = "afx-bench"  # the MLflow experiment
    seed: int = 0  # the data: corpora, splits, training and validation examples
    seeds: list = field(default_factory=list)  # training seeds: each trainable system once per seed (empty: [seed])
    split: str = "test"  # the evaluated split: test (the record) | valid (development)
    # a matched-budget comparison: {train_examples = N} or {train_renders = N}; each trainable system that can
    # sets its own step counts to spend that budget (bench.cell.build_system; budgets.csv records what was spent)
    budget: dict = field(default_factory=dict)
    sample_rate: int = 24000
    segment_seconds: float = 1.0
    device: str = "auto"  # auto | cpu | cuda | cuda:N
    workers: int = 0  # CPU workers for effect rendering and data loading; 0 = all cores
    progress: bool = True
    report: bool = True  # build the report at the end of `run`
    audio_examples: int = 4  # per task, the first N examples' audio (every system's output) kept for the report
    executor: str = "local"  # local | ray (RAY_ADDRESS, else a local cluster) | ray://HOST:PORT (docs/scaling.md)
    # local: jobs (trainings, cells) side by side in this many worker processes, each with its share of the cores as
    # torch threads (bench/executors/pool.py); 0: one per core (inline on a one-core machine); 1: inline, in the driver
    processes: int = 0
    cell_timeout_s: float = 0.0  # a cell still running after this many seconds is ended and recorded (0: never)
    # torch's intra-op threads in every training and cell job (0: torch's default: this machine's cores, or a Ray
    # task's CPUs). Float sums depend on it: give it for scores bit-identical across machines and executors
    torch_threads: int = 0


@dataclass
class DataConfig:
    seen_corpora: list = field(default_factory=lambda: ["speech"])  # trained on
    unseen_corpora: list = field(default_factory=lambda: ["music"])  # evaluated only
    train_corpora: list = field(default_factory=list)  # empty: the seen corpora
    source_seconds: float = 4.0
    test_seed: int = 1128  # the test set: its sources and examples, drawn from identities never used in training,
    # validation or an earlier test set (docs/corpora.md, "What a source is"); another value redraws it alone
    train_sources: int = 16
    valid_sources: int = 4
    test_sources: int = 8


@dataclass
class EffectsConfig:
    seen: list = field(default_factory=lambda: ["peq4", "peq_comp", "distortion", "delay", "reverb"])
    unseen: list = field(default_factory=lambda: ["compressor", "chorus", "phaser", "bitcrush", "ladder_filter"])
    wild: list = field(default_factory=list)  # hidden processing no system controls (room, pedal_chain, lofi)
    vst3: dict = field(default_factory=dict)  # name -> {path, params: [{name, minimum, maximum, scale}]}


@dataclass
class TasksConfig:
    n_valid: int = 16  # examples per validation task
    n_test: int = 16  # examples per test task


@dataclass
class TrackingConfig:
    uri: str = ""  # empty: sqlite:///<out>/mlflow.db
    enabled: bool = True


@dataclass
class AnalysisConfig:
    """The primary family, declared before the run (bench/stats.py, docs/report.md): ``focus`` against each system
    of ``against``, on each metric of ``metrics``, per effect set of ``effect_sets``, tested on per-source means
    pooled over the set's tasks, Holm over this family only. Parameter metrics are never compared on the wild set
    (it has no settings); a comparison whose system, set or metric the run lacks is skipped with a note."""

    focus: str = "proposed"
    against: list = field(default_factory=lambda: ["mean", "constant", "deepafx_st_autodiff", "oneshot_eq",
                                                   "ito_cmaes", "proposed_paper"])
    effect_sets: list = field(default_factory=lambda: ["seen", "unseen", "wild"])
    metrics: list = field(default_factory=lambda: ["mrstft", "param_mae"])
    alpha: float = 0.05  # family-wise error rate (Holm)
    power: float = 0.8  # for the smallest detectable effect and `afx-bench power`
    permutations: int = 20000  # sign flips of the paired permutation test: all of them up to 14 sources, else
    # this many drawn at random (seeded; scipy enumerates exactly only slowly, a second per 16-source test)

    def validate(self, where: str) -> None:
        never = [n for n in [self.focus, *self.against] if n == "oracle" or ":" in n]
        if never:
            raise ValueError(f"{where}: {never} cannot be in a test family (the oracle knows the true settings; a "
                             "labelled variant system:variant may use the target)")
        if not self.focus or not self.against or self.focus in self.against:
            raise ValueError(f"{where}: a focus system and at least one other to compare it against, got focus "
                             f"{self.focus!r}, against {self.against!r}")
        bad = [s for s in self.effect_sets if s not in ("seen", "unseen", "wild")]
        if bad or not self.effect_sets:
            raise ValueError(f"{where}.effect_sets: {self.effect_sets!r}; valid: seen, unseen, wild")
        if not self.metrics or any("/" in m for m in self.metrics):
            raise ValueError(f"{where}.metrics: base metric names (no '/'), got {self.metrics!r}")
        if not 0 < self.alpha < 0.5 or not 0 < self.power < 1:
            raise ValueError(f"{where}: alpha in (0, 0.5) and power in (0, 1), got {self.alpha}, {self.power}")
        if self.permutations < 1000:
            raise ValueError(f"{where}.permutations: at least 1000, got {self.permutations}")


@dataclass
class Config:
    preset: str = "quick"
    run: RunConfig = field(default_factory=RunConfig)
    data: DataConfig = field(default_factory=DataConfig)
    effects: EffectsConfig = field(default_factory=EffectsConfig)
    tasks: TasksConfig = field(default_factory=TasksConfig)
    tracking: TrackingConfig = field(default_factory=TrackingConfig)
    analysis: AnalysisConfig = field(default_factory=AnalysisConfig)
    # free-form sections, checked by the named system/metric/study (bench.plan.check): {"include": [...],
    # "<name>": {...}}; a study runs after the grid when its section is given ([studies.latent])
    systems: dict = field(default_factory=lambda: {"include": ["bypass", "random", "oracle"]})
    metrics: dict = field(default_factory=lambda: {"include": ["param_mae", "mrstft"]})
    studies: dict = field(default_factory=dict)

    # --- derived ------------------------------------------------------------------------------------------
    @property
    def segment_samples(self) -> int:
        return int(round(self.run.segment_seconds * self.run.sample_rate))

    def training_seeds(self) -> list[int]:
        """The seeds each trainable system is trained with (``run.seeds``, else ``[run.seed]``)."""
        return list(self.run.seeds) or [self.run.seed]

    def system_names(self) -> list[str]:
        return list(self.systems.get("include", []))

    def system_config(self, name: str) -> dict:
        """A system's section: for a labelled variant (``base = "<system>"``), the base's section, then its own
        keys over it (without ``base``)."""
        own = dict(self.systems.get(name, {}))
        base = own.pop("base", None)
        return {**dict(self.systems.get(base, {})), **own} if base else own

    def system_settings(self, name: str) -> dict:
        """A system's section without the keys the harness reads (``checkpoint``, and the Ray task options
        ``resources`` and ``cell_resources``): what the system's own ``Config`` dataclass parses."""
        return {k: v for k, v in self.system_config(name).items() if k not in HARNESS_KEYS}

    def system_base(self, name: str) -> str:
        """The registered system behind ``name`` (itself, or a labelled variant's ``base``)."""
        return str(self.systems.get(name, {}).get("base", name))

    def metric_names(self) -> list[str]:
        return list(self.metrics.get("include", []))

    def metric_config(self, name: str) -> dict:
        return dict(self.metrics.get(name, {}))

    def corpora(self) -> list[tuple[str, str]]:
        """(label, corpus_set) for every evaluated corpus."""
        return [(c, "seen") for c in self.data.seen_corpora] + [(c, "unseen") for c in self.data.unseen_corpora]

    def train_corpora(self) -> list[str]:
        return list(self.data.train_corpora or self.data.seen_corpora)

    def effect_sets(self) -> list[tuple[str, str]]:
        """(name, effect_set) for every evaluated effect."""
        e = self.effects
        return [(n, "seen") for n in e.seen] + [(n, "unseen") for n in e.unseen] + [(n, "wild") for n in e.wild]

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def hash(self) -> str:
        return stable_hash(self.to_dict())


def _merge(base: dict, over: dict) -> dict:
    out = copy.deepcopy(base)
    for k, v in over.items():
        if isinstance(v, dict) and isinstance(out.get(k), dict):
            out[k] = _merge(out[k], v)
        else:
            out[k] = v
    return out


def parse_section(cls, values: dict, where: str):
    """Build dataclass ``cls`` from ``values``: the one parser of every config section (the run's own, and each
    system's and metric's ``Config``). Unknown keys and wrongly typed values fail with the key and what is
    allowed; then the dataclass's own ``validate(where)``, if any, checks ranges. Every failure is a
    :class:`ConfigError`."""
    fields = {f.name: f for f in dataclasses.fields(cls)}
    unknown = sorted(set(values) - set(fields))
    if unknown:
        raise ConfigError(f"{where or 'config'}: unknown key(s) {unknown}; valid: {sorted(fields)}")
    defaults = cls()
    kwargs = {}
    for k, v in values.items():
        d = getattr(defaults, k)
        key = f"{where}.{k}" if where else k
        if dataclasses.is_dataclass(d):
            if not isinstance(v, dict):
                raise ConfigError(f"{key}: expected a table, got {v!r}")
            v = parse_section(type(d), v, key)
        elif isinstance(d, bool):
            if not isinstance(v, bool):
                raise ConfigError(f"{key}: expected true or false, got {v!r}")
        elif isinstance(d, int):
            if isinstance(v, float) and v.is_integer():
                v = int(v)
            if isinstance(v, bool) or not isinstance(v, int):
                raise ConfigError(f"{key}: expected an integer, got {v!r}")
        elif isinstance(d, float):
            if isinstance(v, bool) or not isinstance(v, (int, float)):
                raise ConfigError(f"{key}: expected a number, got {v!r}")
            v = float(v)
        elif isinstance(d, str):
            if not isinstance(v, str):
                raise ConfigError(f"{key}: expected a string, got {v!r}")
        elif isinstance(d, list):
            if not isinstance(v, (list, tuple)):
                raise ConfigError(f"{key}: expected a list, got {v!r}")
            v = list(v)
        elif isinstance(d, dict):
            if not isinstance(v, dict):
                raise ConfigError(f"{key}: expected a table, got {v!r}")
        kwargs[k] = v
    obj = cls(**kwargs)
    check = getattr(obj, "validate", None)
    if check is not None:
        try:
            check(where)
        except ConfigError:
            raise
        except ValueError as e:  # sections' own checks raise ValueError with the key in the message
            raise ConfigError(str(e)) from e
    return obj


def read_toml(path: Path, what: str) -> dict:
    """A TOML file's tables; a file that is not valid UTF-8 TOML is a :class:`ConfigError` naming it and where."""
    try:
        return tomllib.loads(Path(path).read_text())
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as e:
        raise ConfigError(f"{what} {path}: not valid TOML ({e})") from e


def preset_dict(preset: str) -> dict:
    if preset not in PRESETS:
        raise ConfigError(f"preset: unknown preset {preset!r}; valid: {', '.join(PRESETS)}")
    text = resources.files("bench.presets").joinpath(f"{preset}.toml").read_text()
    return tomllib.loads(text)


def parse_value(text: str, key: str = "--set"):
    """A --set value: TOML syntax (numbers, booleans, lists, tables, quoted strings), else a bare string. A value
    that opens a list, table or quoted string but is not valid TOML is an error, never a bare string."""
    try:
        return tomllib.loads(f"v = {text}")["v"]
    except tomllib.TOMLDecodeError as e:
        if text[:1] in "[{\"'":
            raise ConfigError(f"{key}: {text!r} is not a valid TOML value ({e}); e.g. [\"a\", \"b\"] for a list") from e
        return text


def apply_set(d: dict, assignment: str) -> dict:
    key, eq, value = assignment.partition("=")
    if not eq or not key.strip():
        raise ConfigError(f"--set {assignment!r}: expected key=value, e.g. run.seed=3")
    parts = key.strip().split(".")
    node = d
    for p in parts[:-1]:
        node = node.setdefault(p, {})
        if not isinstance(node, dict):
            raise ConfigError(f"--set {key}: {p} is not a table")
    node[parts[-1]] = parse_value(value.strip(), f"--set {key.strip()}")
    return d


def load_config(preset: str = "quick", *, file: str | Path | None = None, sets: list[str] | None = None,
                systems: list[str] | None = None, effects: list[str] | None = None,
                corpora: list[str] | None = None, device: str | None = None, split: str | None = None) -> Config:
    """Preset, then a TOML file, then ``--set`` assignments, then the narrowing options; then validated."""
    d = preset_dict(preset)
    if file:
        path = Path(file)
        if not path.is_file():
            raise ConfigError(f"--config: no such file {path}")
        d = _merge(d, read_toml(path, "--config"))
    for s in sets or []:
        d = apply_set(d, s)
    d["preset"] = preset
    cfg = parse_section(Config, d, "")
    if systems:
        cfg.systems["include"] = list(systems)
    if effects:  # "wild" stands for the wild set (effects.wild, else WILD_EFFECTS)
        e = cfg.effects
        names = [m for n in effects for m in ((e.wild or WILD_EFFECTS) if n == "wild" else [n])]
        wild = e.wild + [n for n in HIDDEN_EFFECTS if n not in e.wild]
        e.seen, e.unseen, e.wild = narrow(list(dict.fromkeys(names)), [e.seen, e.unseen, wild], default=1)
    if corpora:  # narrows what is evaluated; training keeps the configured seen corpora
        cfg.data.train_corpora = cfg.data.train_corpora or list(cfg.data.seen_corpora)
        cfg.data.seen_corpora, cfg.data.unseen_corpora = narrow(
            corpora, [cfg.data.seen_corpora, cfg.data.unseen_corpora], default=1)
    if device:
        cfg.run.device = device
    if split:
        cfg.run.split = split
    validate(cfg)
    return cfg


def narrow(names: list[str], groups: list[list[str]], default: int) -> list[list[str]]:
    """Split ``names`` over ``groups`` by membership; a name in none goes to ``groups[default]``."""
    out: list[list[str]] = [[] for _ in groups]
    for n in names:
        for i, g in enumerate(groups):
            if n in g:
                out[i].append(n)
                break
        else:
            out[default].append(n)
    return out


def validate(cfg: Config) -> None:
    """The values' own ranges and shapes. Names (systems, metrics, effects, corpora, studies, the executor) are
    checked against their registries by :func:`bench.plan.check`: the config parses, the plan knows the parts."""
    r = cfg.run
    if r.sample_rate < 8000 or r.sample_rate > 192000:
        raise ConfigError(f"run.sample_rate: {r.sample_rate} is outside 8000..192000")
    if r.segment_seconds <= 0:
        raise ConfigError(f"run.segment_seconds: must be positive, got {r.segment_seconds}")
    if r.audio_examples < 0:
        raise ConfigError(f"run.audio_examples: must be >= 0, got {r.audio_examples}")
    if r.workers < 0:
        raise ConfigError(f"run.workers: must be >= 0 (0 = all cores), got {r.workers}")
    if r.processes < 0:
        raise ConfigError(f"run.processes: must be >= 0 (0 = one per core, 1 = inline), got {r.processes}")
    if r.torch_threads < 0:
        raise ConfigError(f"run.torch_threads: must be >= 0 (0 = torch's default), got {r.torch_threads}")
    if r.cell_timeout_s < 0:
        raise ConfigError(f"run.cell_timeout_s: must be >= 0 (0 = no limit), got {r.cell_timeout_s}")
    bad = sorted(set(r.budget) - {"train_examples", "train_renders"})
    if bad:
        raise ConfigError(f"run.budget: unknown key(s) {bad}; valid: train_examples, train_renders")
    if len(r.budget) > 1:
        raise ConfigError("run.budget: give train_examples or train_renders, not both")
    for k, v in r.budget.items():
        if isinstance(v, bool) or not isinstance(v, int) or v < 1:
            raise ConfigError(f"run.budget.{k}: expected a positive integer, got {v!r}")
    if r.split not in ("test", "valid"):
        raise ConfigError(f"run.split: {r.split!r}; valid: test, valid")
    if not all(isinstance(x, int) and not isinstance(x, bool) for x in r.seeds) or len(set(r.seeds)) != len(r.seeds):
        raise ConfigError(f"run.seeds: a list of distinct integers (empty: [run.seed]), got {r.seeds!r}")
    if not (r.device in ("auto", "cpu", "cuda") or r.device.startswith("cuda:")):
        raise ConfigError(f"run.device: {r.device!r}; valid: auto, cpu, cuda, cuda:N")
    d = cfg.data
    for k in ("train_sources", "valid_sources", "test_sources"):
        if getattr(d, k) < 1:
            raise ConfigError(f"data.{k}: must be at least 1, got {getattr(d, k)}")
    if d.source_seconds < 2 * r.segment_seconds:
        raise ConfigError(f"data.source_seconds: {d.source_seconds} s cannot hold two segments of "
                          f"run.segment_seconds = {r.segment_seconds} s")
    for k in ("n_valid", "n_test"):
        if getattr(cfg.tasks, k) < 1:
            raise ConfigError(f"tasks.{k}: must be at least 1, got {getattr(cfg.tasks, k)}")
    for sec in ("systems", "metrics", "studies"):
        for k, v in getattr(cfg, sec).items():
            if k == "include":
                if not isinstance(v, list) or not all(isinstance(x, str) for x in v):
                    raise ConfigError(f"{sec}.include: expected a list of names, e.g. [\"a\", \"b\"], got {v!r}")
            elif not isinstance(v, dict):
                raise ConfigError(f"{sec}.{k}: expected a table of settings, got {v!r}")
