"""``specmatch_eq``: a training-free spectral-matching EQ, packaged as an afx-bench plugin.

The harness finds it through the entry point in ``pyproject.toml`` (group ``afx_bench.systems``); nothing in
afx-bench names it. What it does, per example:

1. The *target curve*: the reference's long-term average spectrum over the input's (Welch estimates), both smoothed
   over an octave (``smoothing_octaves``) and compared on log-spaced frequencies, in dB, clamped to +-``max_gain_db``.
   Input and reference are different segments of the same source, so where both carry energy their spectra differ
   mostly by the effect's magnitude response. Frequencies where either is near silence get little weight.
2. On ``peq4`` (the only effect it controls): the four bands' settings whose summed dB response is nearest the
   curve. Each band's response is measured once per sample rate by rendering an impulse through the effect on a
   grid of its (gain, frequency, Q) settings (the other bands at 0 dB, which is the identity); a few rounds of
   coordinate descent pick the grid point per band, and a short bounded Powell search with real renders refines
   all twelve parameters. The output is the input through ``peq4`` with those settings; the labelled variant
   ``curve`` is the input filtered by the smoothed curve itself (a linear-phase FIR), scored as
   ``specmatch_eq:curve``.
3. On any other effect (hidden-setting ones included) it controls nothing: it returns the curve-filtered input with
   ``params01 = None``, so its parameter metrics are n/a and its audio metrics still count.

Deterministic (no randomness at all), no training, nothing to save.
"""

from __future__ import annotations

import json
from dataclasses import dataclass

import numpy as np
from scipy import optimize, signal

from bench.systems import Estimate, System

NAME = "specmatch_eq"
EFFECT = "peq4"
IMPULSE = 8192  # samples of each measured impulse response


@dataclass
class _Grid:
    """Per band: the normalised settings of the grid and their dB responses at the fit frequencies."""

    settings: list[np.ndarray]  # per band: (G, 3) normalised (gain, freq, q)
    responses: list[np.ndarray]  # per band: (G, F) dB


def _response_db(effect, params01: np.ndarray, sample_rate: int, freqs: np.ndarray) -> np.ndarray:
    """The dB magnitude response of ``effect`` with ``params01`` (one row or a batch) at ``freqs``."""
    params01 = np.atleast_2d(params01)
    impulse = np.zeros((len(params01), IMPULSE), np.float32)
    impulse[:, 0] = 1.0
    h = effect.process(impulse, sample_rate, params01)
    mag = np.abs(np.fft.rfft(h.astype(np.float64), axis=-1))
    bins = np.fft.rfftfreq(IMPULSE, 1 / sample_rate)
    db = 20 * np.log10(mag + 1e-9)
    return np.stack([np.interp(freqs, bins, d) for d in db])


_GRIDS: dict[str, _Grid] = {}  # measured once per (effect, sample rate, frequencies, grid) in a process


def _grid(effect, sample_rate: int, freqs: np.ndarray, steps: tuple[int, int, int]) -> _Grid:
    """The measured band responses of ``effect`` (bands of three parameters: gain, frequency, Q)."""
    key = json.dumps([effect.identity(), sample_rate, np.round(freqs, 6).tolist(), steps])
    if key not in _GRIDS:
        _GRIDS[key] = _measure(effect, sample_rate, freqs, steps)
    return _GRIDS[key]


def _measure(effect, sample_rate, f, steps) -> _Grid:
    flat = effect.default01()  # every *_gain_db defaults to 0 dB: a band at 0 dB is the identity
    axes = [np.linspace(0, 1, n) for n in steps]
    mesh = np.stack(np.meshgrid(*axes, indexing="ij"), axis=-1).reshape(-1, 3)
    settings, responses = [], []
    for b in range(effect.n_params // 3):
        p = np.repeat(flat[None, :], len(mesh), axis=0)
        p[:, 3 * b: 3 * b + 3] = mesh
        settings.append(mesh)
        responses.append(_response_db(effect, p, sample_rate, f))
    return _Grid(settings, responses)


class SpectralMatchEQ(System):
    """Training-free spectral matching: the reference's long-term spectrum over the input's, fitted with ``peq4``
    (or applied directly as a smooth linear-phase EQ on effects it does not control)."""

    name = NAME
    controls = {EFFECT}
    trainable = False

    @dataclass
    class Config:
        n_fft: int = 1024  # Welch segment length of the long-term spectra
        smoothing_octaves: float = 1.0  # width of the smoothing (short clips: wide bands are steadier)
        n_freqs: int = 64  # log-spaced frequencies the curve is compared on
        min_hz: float = 30.0
        max_gain_db: float = 12.0  # clamp of the curve (peq4's own gain range)
        dynamic_range_db: float = 50.0  # bins this far below the loudest get no weight
        fir_taps: int = 1023  # length of the curve's linear-phase FIR (odd)
        gain_steps: int = 9  # grid points per band: gain (9: 3 dB steps on peq4), frequency, Q
        freq_steps: int = 16
        q_steps: int = 5
        sweeps: int = 4  # rounds of coordinate descent over the bands
        refine_evals: int = 150  # renders of the Powell refinement (0: grid only)

        def validate(self, where):  # called by the harness's config parser; a ValueError names the key
            bad = {"n_fft": self.n_fft >= 64, "n_freqs": self.n_freqs >= 4, "smoothing_octaves":
                   self.smoothing_octaves > 0, "fir_taps": self.fir_taps >= 3 and self.fir_taps % 2 == 1,
                   "gain_steps": self.gain_steps >= 2, "freq_steps": self.freq_steps >= 2, "q_steps":
                   self.q_steps >= 2, "sweeps": self.sweeps >= 0, "refine_evals": self.refine_evals >= 0}
            for key, ok in bad.items():
                if not ok:
                    raise ValueError(f"{where}.{key}: out of range ({getattr(self, key)!r}); n_fft >= 64, "
                                     "n_freqs >= 4, smoothing_octaves > 0, odd fir_taps >= 3, *_steps >= 2, "
                                     "sweeps and refine_evals >= 0")

    def __init__(self, config=None, *, sample_rate=24000, device="cpu"):
        super().__init__(config, sample_rate=sample_rate, device=device)
        self.freqs = np.geomspace(self.cfg.min_hz, 0.45 * self.sample_rate, self.cfg.n_freqs)

    # --- the target curve ---------------------------------------------------------------------------------
    def _smoothed_db(self, x: np.ndarray) -> np.ndarray:
        """Long-term average power in dB, averaged over a fraction of an octave around each fit frequency."""
        n = min(self.cfg.n_fft, len(x))
        f, p = signal.welch(np.asarray(x, np.float64), fs=self.sample_rate, nperseg=n, noverlap=n // 2)
        half = 2 ** (self.cfg.smoothing_octaves / 2)
        out = np.empty(len(self.freqs))
        for i, fc in enumerate(self.freqs):
            sel = (f >= fc / half) & (f <= fc * half)
            out[i] = np.mean(p[sel]) if sel.any() else np.interp(fc, f, p)
        return 10 * np.log10(out + 1e-20)

    def curve(self, input: np.ndarray, reference: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """The target curve in dB at ``self.freqs`` and the weight of each frequency (0 where either is silent)."""
        li, lr = self._smoothed_db(input), self._smoothed_db(reference)
        rng = self.cfg.dynamic_range_db
        weight = np.clip(np.minimum(li - li.max(), lr - lr.max()) / rng + 1, 0, 1)
        curve = np.clip(lr - li, -self.cfg.max_gain_db, self.cfg.max_gain_db)
        if weight.sum() == 0:  # silence: no evidence, no change
            return np.zeros_like(curve), np.ones_like(curve)
        # where there is no evidence, hold the nearest trusted value rather than follow noise
        trusted = weight > 0.05
        curve = np.interp(np.log(self.freqs), np.log(self.freqs[trusted]), curve[trusted])
        return curve, weight

    def apply_curve(self, x: np.ndarray, curve_db: np.ndarray) -> np.ndarray:
        """``x`` through a linear-phase FIR whose magnitude follows ``curve_db`` (flat beyond its ends)."""
        taps = self.cfg.fir_taps
        grid = np.fft.rfftfreq(taps - 1, 1 / self.sample_rate)
        g = 10 ** (np.interp(np.log(np.maximum(grid, 1e-3)), np.log(self.freqs), curve_db) / 20)
        h = np.fft.irfft(g, taps - 1)
        h = np.roll(h, (taps - 1) // 2)
        h = np.append(h, h[0]) * np.hanning(taps)  # symmetric, centred: linear phase
        y = signal.fftconvolve(np.asarray(x, np.float64), h, mode="same")
        return y.astype(np.float32)

    # --- fitting peq4 -------------------------------------------------------------------------------------
    def fit_effect(self, effect, curve_db: np.ndarray, weight: np.ndarray) -> tuple[np.ndarray, int]:
        """The effect's normalised settings whose response is nearest ``curve_db``, and the renders spent."""
        c = self.cfg
        grid = _grid(effect, self.sample_rate, self.freqs, (c.gain_steps, c.freq_steps, c.q_steps))
        n_bands = len(grid.settings)
        # start flat: every band at its 0 dB grid point
        flat = [int(np.argmin(np.abs(r).sum(axis=1))) for r in grid.responses]
        pick = list(flat)
        total = sum(grid.responses[b][pick[b]] for b in range(n_bands))
        for _ in range(self.cfg.sweeps):
            for b in range(n_bands):
                rest = total - grid.responses[b][pick[b]]
                err = ((curve_db - rest)[None, :] - grid.responses[b]) ** 2 @ weight
                pick[b] = int(np.argmin(err))
                total = rest + grid.responses[b][pick[b]]
        x0 = np.concatenate([grid.settings[b][pick[b]] for b in range(n_bands)])
        if self.cfg.refine_evals <= 0:
            return x0.astype(np.float32), 0
        renders = 0

        def loss(u):
            nonlocal renders
            renders += 1
            r = _response_db(effect, np.clip(u, 0, 1), self.sample_rate, self.freqs)[0]
            return float(((curve_db - r) ** 2) @ weight / weight.sum())

        res = optimize.minimize(loss, x0, method="Powell", bounds=[(0.0, 1.0)] * len(x0),
                                options={"maxfev": self.cfg.refine_evals, "xtol": 1e-3, "ftol": 1e-4})
        best = res.x if res.fun <= loss(x0) else x0
        return np.clip(best, 0, 1).astype(np.float32), renders

    # --- the contract -------------------------------------------------------------------------------------
    def match(self, input, reference, effect):
        input = np.asarray(input, np.float32)
        curve_db, weight = self.curve(input, reference)
        matched = self.apply_curve(input, curve_db)
        if not self.can_control(effect):
            return Estimate(None, matched)
        params01, renders = self.fit_effect(effect, curve_db, weight)
        output = effect.process(input, self.sample_rate, params01)
        return Estimate(params01, output.astype(np.float32), {"renders": renders},
                        variants={"curve": Estimate(None, matched)})
