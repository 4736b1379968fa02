"""The `wild` set: processing with hidden settings that no system controls (documented in docs/wild.md).

Each effect exposes no parameters. ``draw(rng, sample_rate)`` returns a JSON-able *recipe* (the room, the chain and
its settings...) and ``render(audio, sample_rate, recipe)`` applies it; the same rng state gives the same recipe and
the same recipe gives bit-identical audio. Every render keeps the clip length and returns finite float32.

- ``room``: a shoebox room simulated with pyroomacoustics' image-source method up to a capped reflection order,
  continued by an exponentially decaying noise tail at the requested RT60 (see :func:`room_impulse_response`).
- ``pedal_chain``: 2-4 of the built-in pedalboard effects in random order, each with settings drawn by its own
  ``sample`` (the built-in ranges and rejection rule), then a level trim.
- ``lofi``: telephone or radio: light saturation, a band-pass, a crude resampler, a low-bit-rate codec (GSM
  full-rate or MP3), then make-up gain.
- ``recorded``: the processing of a ``pairs:DIR`` corpus (the wet recordings). Tasks never render it; its
  ``draw``/``render`` give a random recipe of one of the three kinds above, which is what the ``random`` system
  plays on recorded pairs.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict

import numpy as np

from bench import audio as A
from bench.effects import EffectError, HiddenEffect, get_effect, probe_signal, register_effect

SPEED_OF_SOUND = 343.0


def _f(x: float, nd: int = 4) -> float:
    """A plain, rounded Python float for recipes (JSON-able and stable to print)."""
    return round(float(x), nd)


def _finish(y: np.ndarray, n: int, what: str) -> np.ndarray:
    y = np.asarray(y, dtype=np.float32).reshape(-1)
    if y.shape[0] != n:
        y = np.pad(y, (0, max(0, n - y.shape[0])))[:n]
    if not np.all(np.isfinite(y)):
        raise EffectError(f"{what}: non-finite output")
    return y


class WildEffect(HiddenEffect):
    """Base of the wild set's effects: a recipe per example, checked by kind."""

    def _check_recipe(self, recipe: dict) -> dict:
        if not isinstance(recipe, dict) or recipe.get("kind") != self.name:
            kind = recipe.get("kind") if isinstance(recipe, dict) else type(recipe).__name__
            raise EffectError(f"{self.name}: not a {self.name} recipe (kind {kind!r})")
        return recipe


# --- room -------------------------------------------------------------------------------------------------------

ROOM_RT60 = (0.2, 1.5)  # s, requested (Sabine)
ROOM_DIMS = ((3.0, 12.0), (3.0, 10.0), (2.4, 4.5))  # m: length, width, height
ROOM_MAX_ABSORPTION = 0.5  # Sabine's formula (and so the requested RT60) is poor for more absorbing rooms
ROOM_MAX_ORDER = 12  # image-source reflection order cap; the rest of the decay is the noise tail
ROOM_WALL_MARGIN = 0.5  # m between a wall and the source or microphone
ROOM_MIN_DISTANCE = 1.0  # m between source and microphone
ROOM_PRE_SAMPLES = 8  # samples kept before the direct sound (the fractional-delay filter's onset)
ROOM_FADE_S = 0.01  # crossfade from the image sources to the tail


class _LRU:
    """A small thread-safe in-memory cache (one RIR serves both segments of an example)."""

    def __init__(self, size: int):
        self.size = size
        self._d: OrderedDict = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key):
        with self._lock:
            if key in self._d:
                self._d.move_to_end(key)
                return self._d[key]
        return None

    def put(self, key, value) -> None:
        with self._lock:
            self._d[key] = value
            self._d.move_to_end(key)
            while len(self._d) > self.size:
                self._d.popitem(last=False)


_RIRS = _LRU(64)


def room_impulse_response(recipe: dict, sample_rate: int) -> np.ndarray:
    """The unit-energy impulse response of a room recipe, its direct sound at sample ``ROOM_PRE_SAMPLES``.

    The image-source method (pyroomacoustics, frequency-independent absorption from Sabine's formula, no air
    absorption) runs up to ``recipe["max_order"]``. When that is below the order the full decay would need, the
    response is complete only up to about ``(max_order - 1) x the room's shortest side / c`` after emission; from
    there on an exponentially decaying Gaussian noise tail with the requested RT60 takes over (level matched to the
    image-source energy over the second half of the complete part, 10 ms raised-cosine crossfade). The response runs
    until the tail is 60 dB down, and the propagation delay of the direct sound is removed.
    """
    key = json.dumps([{k: v for k, v in recipe.items() if k != "rt60_measured_s"}, int(sample_rate)], sort_keys=True)
    hit = _RIRS.get(key)
    if hit is not None:
        return hit
    import pyroomacoustics as pra

    sr = int(sample_rate)
    dims, src, mic = recipe["room_m"], recipe["source_m"], recipe["mic_m"]
    rt60 = float(recipe["rt60_requested_s"])
    order = int(recipe["max_order"])
    room = pra.ShoeBox(dims, fs=sr, materials=pra.Material(float(recipe["absorption"])), max_order=order,
                       air_absorption=False, ray_tracing=False, use_rand_ism=False)
    room.add_source(src)
    room.add_microphone(mic)
    room.compute_rir()
    h = np.asarray(room.rir[0][0], dtype=np.float64)
    fdl_half = int(pra.constants.get("frac_delay_length")) // 2
    dist = float(np.linalg.norm(np.subtract(src, mic)))
    t_direct = dist / SPEED_OF_SOUND
    n = int(math.ceil((t_direct + rt60) * sr)) + fdl_half + 1
    h = np.pad(h, (0, max(0, n - len(h))))[:n]
    if order < int(recipe["full_order"]):
        t_c = max((order - 1) * min(dims) / SPEED_OF_SOUND, t_direct + 0.03)
        i_c = min(int(t_c * sr) + fdl_half, n - 1)
        i_w = max(int((t_direct + 0.005) * sr) + fdl_half, i_c // 2)
        t = (np.arange(n) - fdl_half) / sr
        env = np.exp(-3.0 * math.log(10.0) * t / rt60)  # amplitude: -60 dB after rt60
        noise = np.random.default_rng(int(recipe["tail_seed"])).standard_normal(n)
        level = math.sqrt(np.sum(h[i_w:i_c] ** 2) / np.sum(env[i_w:i_c] ** 2))
        fade = int(ROOM_FADE_S * sr)
        ramp = np.zeros(n)
        ramp[i_c:] = 1.0
        ramp[i_c - fade : i_c] = 0.5 - 0.5 * np.cos(np.linspace(0.0, np.pi, fade))
        h = h * np.sqrt(1.0 - ramp) + level * env * noise * np.sqrt(ramp)
    start = max(0, int(round(t_direct * sr)) + fdl_half - ROOM_PRE_SAMPLES)
    h = h[start:]
    energy = float(np.sum(h * h))
    if not (energy > 0 and np.isfinite(energy)):
        raise EffectError(f"room: degenerate impulse response for {recipe}")
    h = (h / math.sqrt(energy)).astype(np.float32)
    h.setflags(write=False)
    _RIRS.put(key, h)
    return h


def measure_rt60(h: np.ndarray, sample_rate: int) -> float:
    """RT60 from Schroeder backward integration, fitted from -5 to -35 dB and extrapolated (T30)."""
    import pyroomacoustics as pra

    return float(pra.experimental.measure_rt60(np.asarray(h, dtype=np.float64), fs=sample_rate, decay_db=30))


@register_effect("room")
class Room(WildEffect):
    """Convolution with a simulated shoebox-room impulse response (RT60 0.2-1.5 s)."""

    name = "room"

    def draw(self, rng: np.random.Generator, sample_rate: int) -> dict:
        import pyroomacoustics as pra

        rt60 = float(rng.uniform(*ROOM_RT60))
        for _ in range(1000):  # short RT60s need small rooms: about 1 in 20 draws fits at 0.2 s
            dims = [float(rng.uniform(lo, hi)) for lo, hi in ROOM_DIMS]
            try:
                absorption, full_order = pra.inverse_sabine(rt60, dims)
            except ValueError:  # too large a room for so short an RT60 (absorption above 1): draw another
                continue
            if absorption <= ROOM_MAX_ABSORPTION:
                break
        else:
            raise EffectError(f"room: no room found for RT60 {rt60:.2f} s")
        m = ROOM_WALL_MARGIN
        for _ in range(200):
            src = [float(rng.uniform(m, dims[0] - m)), float(rng.uniform(m, dims[1] - m)), float(rng.uniform(1.2, 1.9))]
            mic = [float(rng.uniform(m, dims[0] - m)), float(rng.uniform(m, dims[1] - m)), float(rng.uniform(1.0, 1.8))]
            if np.linalg.norm(np.subtract(src, mic)) >= ROOM_MIN_DISTANCE:
                break
        recipe = {
            "kind": "room",
            "rt60_requested_s": _f(rt60),
            "room_m": [_f(d, 3) for d in dims],
            "absorption": _f(absorption, 5),
            "full_order": int(full_order),
            "max_order": int(min(full_order, ROOM_MAX_ORDER)),
            "source_m": [_f(v, 3) for v in src],
            "mic_m": [_f(v, 3) for v in mic],
            "distance_m": _f(np.linalg.norm(np.subtract(src, mic)), 3),
            "tail_seed": int(rng.integers(2**31)),
        }
        recipe["rt60_measured_s"] = _f(measure_rt60(room_impulse_response(recipe, sample_rate), sample_rate))
        return recipe

    def render(self, audio: np.ndarray, sample_rate: int, recipe: dict) -> np.ndarray:
        from scipy.signal import fftconvolve

        self._check_recipe(recipe)
        x = np.asarray(audio, dtype=np.float32)
        h = room_impulse_response(recipe, sample_rate)
        return _finish(fftconvolve(x.astype(np.float64), h.astype(np.float64))[: len(x)], len(x), self.name)


# --- pedal chain ------------------------------------------------------------------------------------------------

PEDALS = ("distortion", "chorus", "phaser", "delay", "reverb", "compressor", "ladder_filter")
CHAIN_LENGTH = (2, 4)  # inclusive
CHAIN_MAX_LEVEL_CHANGE_DB = 6.0  # the probe's level change beyond this is trimmed back
MIN_LEVEL_DB = -50.0


def _rms_db(x: np.ndarray) -> float:
    return float(A.rms_db(x, None))


@register_effect("pedal_chain")
class PedalChain(WildEffect):
    """2-4 distinct built-in effects in random order, each with settings from its own ``sample``."""

    name = "pedal_chain"

    def _run(self, audio: np.ndarray, sample_rate: int, chain: list[dict]) -> np.ndarray:
        y = np.asarray(audio, dtype=np.float32)
        for stage in chain:
            y = get_effect(stage["effect"]).process_one(y, sample_rate, np.asarray(stage["params01"], np.float64))
        return y

    def draw(self, rng: np.random.Generator, sample_rate: int) -> dict:
        probe = probe_signal(sample_rate)
        for _ in range(20):
            k = int(rng.integers(CHAIN_LENGTH[0], CHAIN_LENGTH[1] + 1))
            names = [PEDALS[i] for i in rng.permutation(len(PEDALS))[:k]]
            chain = []
            for name in names:
                eff = get_effect(name)
                u = eff.sample(rng, sample_rate)
                chain.append({"effect": name, "params01": [_f(v, 6) for v in u],
                              "values": {p: _f(v) for p, v in eff.to_physical(np.asarray(u, np.float64)).items()}})
            y = self._run(probe, sample_rate, chain)
            out_db = _rms_db(y)
            if np.all(np.isfinite(y)) and out_db > MIN_LEVEL_DB:
                change = out_db - _rms_db(probe)
                trim = float(np.clip(change, -CHAIN_MAX_LEVEL_CHANGE_DB, CHAIN_MAX_LEVEL_CHANGE_DB) - change)
                return {"kind": "pedal_chain", "chain": chain, "trim_db": _f(trim, 3)}
        raise EffectError("pedal_chain: no audible chain in 20 draws")

    def render(self, audio: np.ndarray, sample_rate: int, recipe: dict) -> np.ndarray:
        self._check_recipe(recipe)
        x = np.asarray(audio, dtype=np.float32)
        y = self._run(x, sample_rate, recipe["chain"]) * np.float32(10 ** (recipe["trim_db"] / 20))
        return _finish(y, len(x), self.name)


# --- lo-fi ------------------------------------------------------------------------------------------------------

MP3_RATES = (8000, 11025, 12000, 16000, 22050, 24000, 32000, 44100, 48000)  # what the LAME encoder accepts
RESAMPLER_QUALITIES = ("ZeroOrderHold", "Linear", "CatmullRom", "WindowedSinc")
LOFI_STYLES = {
    # band-pass edges (Hz), resampler rates (Hz), codecs with their probability
    "telephone": {"highpass": (200.0, 400.0), "lowpass": (3000.0, 3600.0), "rate": (6000.0, 8000.0),
                  "codecs": {"gsm": 0.7, "mp3": 0.3}},
    "radio": {"highpass": (60.0, 200.0), "lowpass": (4000.0, 8000.0), "rate": (11025.0, 22050.0),
              "codecs": {"mp3": 1.0}},
}


def _mp3(x: np.ndarray, sample_rate: int, vbr_quality: float) -> np.ndarray:
    """MP3 round trip; at rates LAME refuses, resampled to the nearest accepted one and back."""
    import pedalboard as pb

    rate = sample_rate if sample_rate in MP3_RATES else min(MP3_RATES, key=lambda r: abs(r - sample_rate))
    z = A.resample(x, sample_rate, rate)
    z = pb.MP3Compressor(vbr_quality=vbr_quality)(z[None, :], rate, reset=True)[0]
    return A.resample(z, rate, sample_rate)


@register_effect("lofi")
class LoFi(WildEffect):
    """Telephone/radio-like processing: saturation, band-pass, crude resampling, low-bit-rate codec."""

    name = "lofi"

    def _run(self, audio: np.ndarray, sample_rate: int, r: dict) -> np.ndarray:
        import pedalboard as pb
        from scipy.signal import butter, sosfilt

        sr = int(sample_rate)
        x = np.asarray(audio, dtype=np.float32)
        y = pb.Distortion(drive_db=r["drive_db"])(x[None, :], sr, reset=True)[0].astype(np.float64)
        lo = min(r["highpass_hz"], 0.2 * sr)
        hi = min(r["lowpass_hz"], 0.45 * sr)
        y = sosfilt(butter(4, [lo, hi], btype="bandpass", fs=sr, output="sos"), y).astype(np.float32)
        if r["resample_hz"] < sr:  # down and back up through a crude interpolator: aliasing and imaging
            q = getattr(pb.Resample.Quality, r["resample_quality"])
            y = pb.Resample(target_sample_rate=float(r["resample_hz"]), quality=q)(y[None, :], sr, reset=True)[0]
        if r["codec"] == "gsm":
            y = pb.GSMFullRateCompressor()(np.asarray(y, np.float32)[None, :], sr, reset=True)[0]
        else:
            y = _mp3(np.asarray(y, np.float32), sr, r["mp3_vbr_quality"])
        return _finish(y, len(x), self.name) * np.float32(10 ** (r["makeup_db"] / 20))

    def draw(self, rng: np.random.Generator, sample_rate: int) -> dict:
        style = ["telephone", "radio"][int(rng.integers(2))]
        s = LOFI_STYLES[style]
        codecs = list(s["codecs"])
        codec = codecs[int(rng.choice(len(codecs), p=[s["codecs"][c] for c in codecs]))]
        r = {
            "kind": "lofi",
            "style": style,
            "drive_db": _f(rng.uniform(3.0, 15.0), 3),
            "highpass_hz": _f(math.exp(rng.uniform(*np.log(s["highpass"]))), 1),
            "lowpass_hz": _f(math.exp(rng.uniform(*np.log(s["lowpass"]))), 1),
            "resample_hz": _f(rng.uniform(*s["rate"]), 1),
            "resample_quality": RESAMPLER_QUALITIES[int(rng.integers(len(RESAMPLER_QUALITIES)))],
            "codec": codec,
            "mp3_vbr_quality": _f(rng.uniform(7.0, 9.5), 2) if codec == "mp3" else None,
            "makeup_db": 0.0,
        }
        probe = probe_signal(sample_rate)
        r["makeup_db"] = _f(_rms_db(probe) - _rms_db(self._run(probe, sample_rate, r)), 3)
        return r

    def render(self, audio: np.ndarray, sample_rate: int, recipe: dict) -> np.ndarray:
        self._check_recipe(recipe)
        return self._run(audio, sample_rate, recipe)


# --- recorded pairs ---------------------------------------------------------------------------------------------

SYNTHETIC_KINDS = ("room", "pedal_chain", "lofi")


@register_effect("recorded")
class Recorded(WildEffect):
    """The processing of a ``pairs:DIR`` corpus: its wet recordings. Tasks take the wet audio from the corpus and
    never render this effect; ``draw``/``render`` give a random recipe of a synthetic wild kind (what the
    ``random`` system plays)."""

    name = "recorded"
    recorded = True  # tasks read the wet side of a paired corpus instead of rendering

    def draw(self, rng: np.random.Generator, sample_rate: int) -> dict:
        kind = SYNTHETIC_KINDS[int(rng.integers(len(SYNTHETIC_KINDS)))]
        return get_effect(kind).draw(rng, sample_rate)

    def render(self, audio: np.ndarray, sample_rate: int, recipe: dict) -> np.ndarray:
        kind = recipe.get("kind") if isinstance(recipe, dict) else None
        if kind not in SYNTHETIC_KINDS:
            raise EffectError(f"recorded: cannot render a {kind!r} recipe; the recorded processing lives in the "
                              "wet files of a pairs: corpus")
        return get_effect(kind).render(audio, sample_rate, recipe)
