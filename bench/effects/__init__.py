"""Effects: pedalboard plugins behind one interface, with parameters normalised to [0, 1] at every boundary.

An :class:`Effect` maps a normalised parameter vector ``params01`` (shape ``(P,)``, or ``(B, P)`` for a batch) to
physical units through its :class:`ParamSpec` list, builds a fresh pedalboard chain for each clip (so no state
leaks between calls) and processes numpy audio. ``sample(rng)`` draws the settings used to make data and rejects
those that silence the audio or barely change it.
"""

from __future__ import annotations

import dataclasses
import math
import os
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache

import numpy as np

from bench.registry import Registry

EFFECTS = Registry(
    "effects",
    {
        name: "bench.effects.builtin"
        for name in (
            "peq4", "peq_comp", "compressor", "distortion", "delay", "reverb", "chorus", "phaser",
            "bitcrush", "ladder_filter", "gain",
        )
    } | {name: "bench.effects.wild" for name in ("room", "pedal_chain", "lofi", "recorded")},
)
register_effect = EFFECTS.register


class EffectError(ValueError):
    """Bad parameters or a plugin failure; the message names the effect."""


@dataclass(frozen=True)
class ParamSpec:
    """One effect parameter: physical range, scale and unit. Values cross boundaries normalised to [0, 1]."""

    name: str
    minimum: float
    maximum: float
    scale: str = "linear"  # linear | log
    unit: str = ""
    default: float | None = None  # physical; None means the middle of the normalised range

    def __post_init__(self) -> None:
        if self.scale not in ("linear", "log"):
            raise ValueError(f"ParamSpec {self.name}: scale must be 'linear' or 'log', not {self.scale!r}")
        if not self.maximum > self.minimum:
            raise ValueError(f"ParamSpec {self.name}: maximum must exceed minimum")
        if self.scale == "log" and self.minimum <= 0:
            raise ValueError(f"ParamSpec {self.name}: a log scale needs a positive minimum")

    def to_physical(self, u: float | np.ndarray) -> float | np.ndarray:
        u = np.clip(u, 0.0, 1.0)
        if self.scale == "log":
            lo, hi = math.log(self.minimum), math.log(self.maximum)
            return np.exp(lo + u * (hi - lo))
        return self.minimum + u * (self.maximum - self.minimum)

    def to_unit(self, v: float | np.ndarray) -> float | np.ndarray:
        if self.scale == "log":
            lo, hi = math.log(self.minimum), math.log(self.maximum)
            u = (np.log(np.maximum(v, 1e-30)) - lo) / (hi - lo)
        else:
            u = (np.asarray(v, dtype=np.float64) - self.minimum) / (self.maximum - self.minimum)
        return np.clip(u, 0.0, 1.0)

    @property
    def default01(self) -> float:
        return 0.5 if self.default is None else float(self.to_unit(self.default))


@lru_cache(maxsize=8)
def probe_signal(sample_rate: int, seconds: float = 1.0) -> np.ndarray:
    """A fixed test clip (harmonic tone bursts over pink-ish noise) used to reject useless random settings."""
    rng = np.random.default_rng(1234)
    n = int(sample_rate * seconds)
    t = np.arange(n) / sample_rate
    white = rng.standard_normal(n)
    spec = np.fft.rfft(white)
    f = np.fft.rfftfreq(n, 1 / sample_rate)
    spec[1:] /= np.sqrt(f[1:])
    spec[0] = 0
    noise = np.fft.irfft(spec, n)
    noise /= np.max(np.abs(noise))
    tone = sum(np.sin(2 * np.pi * 220 * k * t) / k for k in range(1, 12))
    bursts = (np.sin(2 * np.pi * 3 * t) > 0).astype(float)
    x = 0.15 * noise + 0.25 * tone / np.max(np.abs(tone)) * bursts
    return (0.5 * x / np.max(np.abs(x))).astype(np.float32)


@lru_cache(maxsize=8)
def _band_matrix(sample_rate: int, frame: int) -> tuple[np.ndarray, np.ndarray]:
    """Hann window and the (bins x 24) matrix summing an rfft's power into log-spaced bands."""
    edges = np.geomspace(40, 0.45 * sample_rate, 25)
    f = np.fft.rfftfreq(frame, 1 / sample_rate)
    bands = np.stack([(f >= lo) & (f < hi) for lo, hi in zip(edges[:-1], edges[1:], strict=True)], axis=1)
    return np.hanning(frame), bands.astype(np.float64)


def _band_levels(x: np.ndarray, sample_rate: int, n_frames: int = 20) -> np.ndarray:
    """Log energy in 24 log-spaced bands and 20 time frames: a coarse picture of a clip's spectrum over time."""
    frame = len(x) // n_frames
    window, bands = _band_matrix(sample_rate, frame)
    frames = np.asarray(x[: frame * n_frames], dtype=np.float64).reshape(n_frames, frame) * window
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    return 10 * np.log10(power @ bands + 1e-10)


@lru_cache(maxsize=8)
def _probe_levels(sample_rate: int) -> np.ndarray:
    return _band_levels(probe_signal(sample_rate), sample_rate)


@dataclass(frozen=True)
class Setting:
    """One drawn setting of an effect: normalised parameters, or (hidden processing) a recipe."""

    params01: np.ndarray | None = None
    recipe: dict | None = None


class Effect:
    """Base class. Subclasses set ``name`` and ``params`` and implement :meth:`board`."""

    name: str = ""
    params: list[ParamSpec] = []
    # rejection thresholds used by sample(): output level floor and the minimum change a setting must make
    min_level_db: float = -50.0
    min_change_db: float = 0.75
    max_tries: int = 100

    # --- to implement -------------------------------------------------------------------------------------
    def board(self, values: dict[str, float], sample_rate: int):
        """A fresh pedalboard chain for the given physical parameter values."""
        raise NotImplementedError

    # --- provided -----------------------------------------------------------------------------------------
    @property
    def n_params(self) -> int:
        return len(self.params)

    @property
    def param_names(self) -> list[str]:
        return [p.name for p in self.params]

    def to_physical(self, params01: np.ndarray) -> dict[str, float]:
        params01 = self._check_params(params01)
        return {p.name: float(p.to_physical(u)) for p, u in zip(self.params, params01, strict=True)}

    def to_unit(self, values: dict[str, float]) -> np.ndarray:
        missing = [p.name for p in self.params if p.name not in values]
        if missing:
            raise EffectError(f"{self.name}: missing parameter values {missing}")
        return np.array([p.to_unit(values[p.name]) for p in self.params], dtype=np.float32)

    def default01(self) -> np.ndarray:
        return np.array([p.default01 for p in self.params], dtype=np.float32)

    def _check_params(self, params01: np.ndarray) -> np.ndarray:
        params01 = np.asarray(params01, dtype=np.float64)
        if params01.shape != (self.n_params,):
            raise EffectError(f"{self.name}: expected {self.n_params} parameters, got shape {params01.shape}")
        if not np.all(np.isfinite(params01)):
            raise EffectError(f"{self.name}: non-finite parameters {params01.tolist()}")
        return np.clip(params01, 0.0, 1.0)

    def process_one(self, audio: np.ndarray, sample_rate: int, params01: np.ndarray | None) -> np.ndarray:
        audio = np.asarray(audio, dtype=np.float32)
        values = self.to_physical(params01) if self.n_params else {}
        try:
            y = self.board(values, sample_rate)(audio[None, :], sample_rate, reset=True)[0]
        except Exception as e:  # a plugin error becomes an EffectError naming the effect and settings
            raise EffectError(f"{self.name}: processing failed with {values}: {e}") from e
        if y.shape[-1] != audio.shape[-1]:  # a plugin with latency: keep the clip length fixed
            y = np.pad(y, (0, max(0, audio.shape[-1] - y.shape[-1])))[: audio.shape[-1]]
        if not np.all(np.isfinite(y)):
            raise EffectError(f"{self.name}: non-finite output with {values}")
        return y.astype(np.float32)

    def process(
        self, audio: np.ndarray, sample_rate: int, params01: np.ndarray | None, *, workers: int = 1
    ) -> np.ndarray:
        """Process one clip ``(n,)`` with ``(P,)`` params, or a batch ``(B, n)`` with ``(B, P)`` (or shared
        ``(P,)``) params. ``workers > 1`` renders a batch on a thread pool (pedalboard releases the GIL)."""
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            return self.process_one(audio, sample_rate, params01)
        if audio.ndim != 2:
            raise EffectError(f"{self.name}: audio must be (n,) or (batch, n), got {audio.shape}")
        batch = audio.shape[0]
        if self.n_params:
            p = np.asarray(params01, dtype=np.float64)
            p = np.broadcast_to(p, (batch, self.n_params)) if p.ndim == 1 else p
            if p.shape[0] != batch:
                raise EffectError(f"{self.name}: {batch} clips but {p.shape[0]} parameter vectors")
        else:
            p = [None] * batch
        if workers <= 1 or batch == 1:
            return np.stack([self.process_one(a, sample_rate, q) for a, q in zip(audio, p, strict=True)])
        with ThreadPoolExecutor(workers) as pool:
            return np.stack(list(pool.map(lambda aq: self.process_one(aq[0], sample_rate, aq[1]), zip(audio, p, strict=True))))

    def acceptable(self, params01: np.ndarray, sample_rate: int) -> bool:
        """Whether a setting is useful for data: the probe must stay audible and change noticeably."""
        x = probe_signal(sample_rate)
        y = self.process_one(x, sample_rate, params01)
        if 10 * np.log10(np.mean(y.astype(np.float64) ** 2) + 1e-20) < self.min_level_db:
            return False
        change = np.mean(np.abs(_band_levels(y, sample_rate) - _probe_levels(sample_rate)))
        return bool(change >= self.min_change_db)

    # --- a setting: how examples are made and how the random system answers ---------------------------------
    def draw_setting(self, rng: np.random.Generator, sample_rate: int = 24000) -> Setting:
        """One setting from the data distribution: here, normalised parameters from :meth:`sample`."""
        return Setting(self.sample(rng, sample_rate))

    def apply(self, audio: np.ndarray, sample_rate: int, setting: Setting, *, workers: int = 1) -> np.ndarray:
        """Process a clip ``(n,)`` or a batch ``(B, n)`` with one setting from :meth:`draw_setting`."""
        return self.process(audio, sample_rate, setting.params01, workers=workers)

    def identity(self) -> list:
        """What cached examples of this effect depend on (its name and parameter ranges)."""
        return [self.name, [(p.name, p.minimum, p.maximum, p.scale) for p in self.params]]

    def sample_raw(self, rng: np.random.Generator) -> np.ndarray:
        """The data distribution before rejection: uniform in the normalised space (log-uniform on log scales)."""
        return rng.uniform(0.0, 1.0, self.n_params).astype(np.float32)

    def sample(self, rng: np.random.Generator, sample_rate: int = 24000) -> np.ndarray:
        for _ in range(self.max_tries):
            u = self.sample_raw(rng)
            if self.acceptable(u, sample_rate):
                return u
        raise EffectError(f"{self.name}: no acceptable setting in {self.max_tries} draws; check its ranges")

    def __repr__(self) -> str:
        return f"<Effect {self.name}: {', '.join(self.param_names) or 'no parameters'}>"


class HiddenEffect(Effect):
    """Processing with hidden settings (the `wild` set): no parameters to estimate; each example draws a
    JSON-able *recipe* (a room, a chain and its settings...) with :meth:`draw` and renders it with
    :meth:`render`. Tasks make examples through :meth:`draw_setting` / :meth:`apply`, so nothing downstream checks
    which kind of effect it has: a system sees an effect with ``n_params == 0``, and an example without true
    settings (its recipe stays with the harness)."""

    params: list = []
    version = 1  # bump when draw or render change, so cached examples are rebuilt

    def draw(self, rng: np.random.Generator, sample_rate: int) -> dict:
        """A hidden, JSON-able recipe for one example."""
        raise NotImplementedError

    def render(self, audio: np.ndarray, sample_rate: int, recipe: dict) -> np.ndarray:
        """Process one clip with a recipe from :meth:`draw`."""
        raise NotImplementedError

    def draw_setting(self, rng, sample_rate=24000):
        return Setting(None, self.draw(rng, sample_rate))

    def apply(self, audio, sample_rate, setting, *, workers=1):
        audio = np.asarray(audio, dtype=np.float32)
        if audio.ndim == 1:
            return self.render(audio, sample_rate, setting.recipe)
        return np.stack([self.render(a, sample_rate, setting.recipe) for a in audio])

    def identity(self):
        return [*super().identity(), self.version]

    def board(self, values, sample_rate):
        raise EffectError(f"{self.name}: has hidden settings; use draw() and render()")

    def sample(self, rng, sample_rate=24000):
        raise EffectError(f"{self.name}: has hidden settings; use draw()")


class Chain(Effect):
    """Known effects in series as one effect: the stages' parameters side by side, each named
    ``<stage>.<param>``; ``sample`` draws each stage from its own distribution. Used to search a fixed chain for
    processing whose recipe is hidden (ITO on the wild set)."""

    def __init__(self, stages: list[str | Effect]):
        self.stages = [get_effect(s) if isinstance(s, str) else s for s in stages]
        if not self.stages or any(s.n_params == 0 for s in self.stages):
            raise EffectError(f"chain: needs effects with parameters, got {[s.name for s in self.stages]}")
        self.name = "+".join(s.name for s in self.stages)
        self.params = [dataclasses.replace(p, name=f"{s.name}.{p.name}") for s in self.stages for p in s.params]
        self._cuts = np.cumsum([0] + [s.n_params for s in self.stages])

    def split(self, params01: np.ndarray) -> list[np.ndarray]:
        """The stages' own parameter vectors."""
        p = self._check_params(params01)
        return [p[a:b] for a, b in zip(self._cuts[:-1], self._cuts[1:], strict=True)]

    def process_one(self, audio, sample_rate, params01):
        y = np.asarray(audio, dtype=np.float32)
        for stage, p in zip(self.stages, self.split(params01), strict=True):
            y = stage.process_one(y, sample_rate, p)
        return y

    def sample(self, rng, sample_rate=24000):
        return np.concatenate([s.sample(rng, sample_rate) for s in self.stages]).astype(np.float32)


def get_effect(name: str, **options) -> Effect:
    """An effect instance by registry name (``vst3:<path>`` style names are resolved by the config)."""
    cls = EFFECTS.get(name)
    return cls(**options) if options else cls()


def default_workers() -> int:
    return max(1, len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1))
