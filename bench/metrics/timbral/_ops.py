"""The array work of the timbral models that a GPU can take over: librosa's STFT and its inverse, the harmonic /
percussive split, mel spectrograms, power and magnitude spectra of frames, and hardness's bandwidth spectrogram.

Two implementations with one interface, chosen per call of :func:`bench.metrics.timbral.extract`:

- :class:`NumpyOps` (numpy, scipy.fft, numba): the default, and the one ``afx-bench check ac`` validates against
  timbral_models. Its STFT, iSTFT and HPSS give librosa's values to the bit; its bandwidth gives the float64
  computation's to the bit (from float32 transforms with a certified error bound, see :func:`bandwidth`).
- :class:`TorchOps` (torch, float64, on any device): the same computations as tensor operations, for a GPU; the same
  numbers within float tolerance (different FFT and summation orders), which the tests check on the CPU.

Everything else (loudness normalisation and resampling, the IIR filters, Zwicker loudness, onsets, peak picking,
the per-clip regressions) is sequential or per clip and runs on the CPU whichever is chosen. Every method takes and
returns numpy arrays, except the STFT "handle" that :meth:`stft` returns and :meth:`percussive` and :meth:`mel`
take (a backend's own arrays, so that a GPU keeps them)."""

from __future__ import annotations

import functools

import numpy as np
import scipy.signal as sps
from numpy.lib.stride_tricks import sliding_window_view
from scipy import fft as sp_fft

from bench.metrics.timbral import _kernels as K
from bench.metrics.timbral import _libkernels as L

FS = 44100
N_FFT, HOP = 2048, 512  # librosa's STFT defaults (periodic Hann window, centred, zero padding)
MEDIAN = 31  # librosa's HPSS median filter length (frames and bins)
BANDWIDTH_FRAME, BANDWIDTH_HOP = 4096, 128
# Bound on the 2-norm of the float32 bandwidth magnitudes' errors, in units of sqrt(N) * ||frame|| (the 2-norm of
# the exact transform): a computed FFT's relative 2-norm error is at most ~ log2(N) * 6.7 u for the unit roundoff u
# (Higham, Accuracy and Stability of Numerical Algorithms, 2nd ed., Thm 24.2: 80 u for N = 4096 in float32);
# rounding the input to float32 and the magnitudes and their scaling add ~4 u. 256 u is three times that (and
# ~250 times the largest error seen on the quick preset's clips).
FFT32_ERR = 256 * 2.0 ** -24


@functools.lru_cache(maxsize=16)
def window(name, n: int) -> np.ndarray:
    return sps.get_window(name, n)


@functools.lru_cache(maxsize=8)
def _window_sumsquare(frames: int) -> np.ndarray:
    import librosa

    return librosa.filters.window_sumsquare(window="hann", n_frames=frames, win_length=N_FFT, n_fft=N_FFT,
                                            hop_length=HOP, dtype=np.float64)


@functools.lru_cache(maxsize=4)
def mel_basis(fs: float = FS) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """librosa's mel filter bank as melspectrogram builds it (128 bands up to Nyquist, float32 weights) in float64,
    with each filter's range of nonzero bins."""
    import librosa

    basis = librosa.filters.mel(sr=fs, n_fft=N_FFT, fmax=0.5 * fs).astype(np.float64)
    nz = [np.flatnonzero(row) for row in basis]
    lo = np.array([z[0] if len(z) else 0 for z in nz], dtype=np.int64)
    hi = np.array([z[-1] + 1 if len(z) else 0 for z in nz], dtype=np.int64)
    return basis, lo, hi


def istft_length(frames: int) -> int:
    return HOP * (frames - 1)


def bandwidth_freqs() -> np.ndarray:
    return np.fft.rfftfreq(BANDWIDTH_FRAME, 1.0 / FS)


# --- numpy ----------------------------------------------------------------------------------------------------


def stft(x: np.ndarray, block: int = 32) -> np.ndarray:
    """librosa.stft(x) of the rows of ``x``, to the bit, frames first: (rows, frames, bins). Transformed ``block``
    frames at a time along the contiguous axis (librosa's transform along the strided one is slower)."""
    frames = sliding_window_view(np.pad(x, ((0, 0), (N_FFT // 2, N_FFT // 2))), N_FFT, axis=-1)[:, ::HOP]
    C, T, _ = frames.shape
    out = np.empty((C, T, N_FFT // 2 + 1), dtype=np.complex128)
    w = window("hann", N_FFT)
    for c in range(C):
        for s in range(0, T, block):
            np.fft.rfft(w * frames[c, s:s + block], axis=-1, out=out[c, s:s + block])
    return out


def mel_spectrogram(x: np.ndarray, skip: int = 0, block: int = 32) -> np.ndarray:
    """The mel power spectrograms (rows, mels, frames) of :func:`stft`'s STFT of the rows of ``x`` (librosa's
    melspectrogram, as :meth:`NumpyOps.mel` of it), ``block`` frames at a time, so that neither the complex STFT
    nor its magnitudes are ever held whole (they would not stay in the caches). The first ``skip`` frames are
    known to be silent (all-zero samples): their transforms are zero, and so are their mel powers."""
    frames = sliding_window_view(np.pad(x, ((0, 0), (N_FFT // 2, N_FFT // 2))), N_FFT, axis=-1)[:, ::HOP]
    C, T, _ = frames.shape
    basis, lo, hi = mel_basis()
    out = np.zeros((C, basis.shape[0], T))
    w = window("hann", N_FFT)
    spec = np.empty((block, N_FFT // 2 + 1), dtype=np.complex128)
    mag = np.empty((block, N_FFT // 2 + 1))
    for c in range(C):
        for s in range(min(skip, T), T, block):
            n = min(block, T - s)
            np.fft.rfft(w * frames[c, s:s + n], axis=-1, out=spec[:n])
            np.abs(spec[:n], out=mag[:n])
            L.mel_power_block(mag[:n], basis, lo, hi, out[c], s)
    return out


def istft(X: np.ndarray) -> np.ndarray:
    """librosa.istft of the rows of ``X`` (rows, frames, bins) as :func:`stft` gives them, to the bit: the
    windowed inverse transforms overlap-added in frame order, divided by the window's sum of squares."""
    C, T, _ = X.shape
    full = np.zeros((C, N_FFT + HOP * (T - 1)))
    w = window("hann", N_FFT)
    for c in range(C):
        L.overlap_add(w * np.fft.irfft(X[c], n=N_FFT, axis=-1), HOP, full[c])
    y = full[:, N_FFT // 2:N_FFT // 2 + istft_length(T)]
    wss = _window_sumsquare(T)[N_FFT // 2:N_FFT // 2 + istft_length(T)]
    nz = wss > np.finfo(np.float64).tiny
    y[:, nz] /= wss[nz]
    return y


def percussive_stft(D: np.ndarray, mag: np.ndarray) -> np.ndarray:
    """The percussive part of librosa.decompose.hpss(D) with its defaults (median filters of 31 frames / 31 bins,
    soft masks of power 2): the same values, from :func:`~bench.metrics.timbral._libkernels.median_filter` and one
    fused mask kernel. ``D``, ``mag``: C-contiguous (clips, frames, bins)."""
    C, T, nb = mag.shape
    harm = np.empty_like(mag)
    perc = np.empty_like(mag)
    for c in range(C):
        L.median_filter(mag[c], harm[c], MEDIAN)  # along time, per bin
    L.median_filter(mag.reshape(C * T, nb).T, perc.reshape(C * T, nb).T, MEDIAN)  # along frequency, per frame
    P = np.empty_like(D)
    L.percussive_stft(D.view(np.float64), mag, harm, perc, P.view(np.float64))
    return P


def power(frames: np.ndarray, scale: float, nfft: int) -> np.ndarray:
    """One-sided power spectra (scaled by ``scale``, inner bins doubled, as scipy's spectrogram) of ``frames``:
    (..., frames, bins)."""
    X = sp_fft.rfft(frames, n=nfft, axis=-1)
    shape = X.shape
    X = np.ascontiguousarray(X.reshape(-1, shape[-1]))
    return L.one_sided_power(X.view(np.float64), float(scale)).reshape(shape)


def bandwidth(x: np.ndarray, thresh: float, exact: bool = False, block: int = 64) -> np.ndarray:
    """Per-frame bandwidth (roll-off at ``thresh`` minus the 5 % roll-on) of one signal's 4096-sample boxcar frames
    every 128 samples (scipy's spectrogram with mean removal, 'density' scaling and magnitudes). With a boxcar
    window, removing each frame's mean only zeroes its DC bin, which is set directly.

    The bandwidth depends on the magnitudes only through comparisons (which frames are loud enough, which bins
    cross the roll-on and roll-off thresholds), so the frames are transformed in float32 (twice as fast), with a
    bound on the magnitudes' error (:data:`FFT32_ERR`), and every frame whose comparisons are not clear of that
    bound, and the frames that decide the loudness floor, are transformed again in float64: the result is the
    float64 computation's, to the bit (``exact=True`` computes every frame in float64; the tests compare them)."""
    def framed(signal, writeable=False):
        return sliding_window_view(signal, BANDWIDTH_FRAME, writeable=writeable)[::BANDWIDTH_HOP]

    frames = framed(x)
    T, nb = len(frames), BANDWIDTH_FRAME // 2 + 1
    scale = np.sqrt(1.0 / (FS * BANDWIDTH_FRAME))

    def magnitudes(rows):
        spec = np.empty((len(rows), nb), dtype=rows.dtype)
        for s in range(0, len(rows), block):
            spec[s:s + block] = np.abs(sp_fft.rfft(rows[s:s + block], axis=-1)) * scale
        spec[:, 0] = 0.0
        return spec

    def edges64(idx):
        return K.spectral_edges(magnitudes(frames[idx]), np.zeros(len(idx)), thresh)[:3]

    if exact:
        lvl, on, off = edges64(np.arange(T))
    else:
        # frame energies from the energies of 128-sample blocks (a frame is 32 of them): a cumulative sum over 1/128
        # of the samples (its rounding, under 1e-13 of the total, is covered by the 1e-10)
        nblk = len(x) // BANDWIDTH_HOP
        per = BANDWIDTH_FRAME // BANDWIDTH_HOP
        xb = x[:nblk * BANDWIDTH_HOP].reshape(nblk, BANDWIDTH_HOP)
        blocks = np.einsum("ij,ij->i", xb, xb)
        sq = np.concatenate([[0.0], np.cumsum(blocks)])
        energy = np.maximum(sq[per:per + T] - sq[:T], 0.0)
        err = scale * FFT32_ERR * np.sqrt(BANDWIDTH_FRAME * (energy + 1e-10 * float(np.einsum("i,i->", x, x))))
        frames32 = framed(x.astype(np.float32), writeable=True)  # our own copy: torch reads it without a copy
        rfft32 = _rfft32()
        # each block's spectra reduced as they come out of the transform (no copy into one array of all of them)
        parts = [K.spectral_edges_complex(rfft32(frames32[s:s + block]), scale, err[s:s + block], thresh)
                 for s in range(0, T, block)]
        lvl, on, off, sure = (np.concatenate(p) for p in zip(*parts, strict=True))
        slack = np.sqrt(nb) * err + 1e-12 * lvl  # bound on |level - float64 level|; 0 once redone in float64
        # frames of zeros only (the padding, silent starts): their float32 transforms are exact zeros too, so their
        # level, roll-on and roll-off are the float64 ones already (otherwise they would all be redone as "unsure")
        live = np.concatenate([[0], np.cumsum(np.any(xb != 0.0, axis=1))])
        slack[live[per:per + T] == live[:T]] = 0.0

        def redo(mask):
            idx = np.flatnonzero(mask & (slack > 0))
            if len(idx):
                lvl[idx], on[idx], off[idx] = edges64(idx)
                slack[idx] = 0.0

        # the loudest and the quietest frame in float64 are among these; with them, the floor is exact
        extreme = (lvl + slack >= (lvl - slack).max()) | (lvl - slack <= (lvl + slack).min())
        redo(~sure | extreme)
        floor = 0.1 * (lvl[extreme].max() - lvl[extreme].min()) + lvl[extreme].min()
        redo(np.abs(lvl - floor) <= slack)  # too near the floor to tell
    return _bandwidth_values(lvl, on, off)


def rfft32_scipy(rows: np.ndarray) -> np.ndarray:
    """scipy's float32 transform of the rows, as (re, im) pairs: :func:`_rfft32`'s fallback."""
    return sp_fft.rfft(rows, axis=-1).view(np.float32)


@functools.lru_cache(maxsize=1)
def _rfft32():
    """The float32 transform of :func:`bandwidth`'s first pass: rows -> their spectra as (re, im) pairs, float32.
    torch's (MKL on x86) where torch is installed: 1.45x the speed of scipy's pocketfft on this project's 2-core VM
    (BENCHMARKS.md, fifth pass), with a 2-norm error ~100 times under :data:`FFT32_ERR` on the quick preset's clips.
    Which one runs cannot change a value: every comparison not clear of that bound is made again in float64."""
    try:
        import torch
    except ImportError:
        return rfft32_scipy

    def rfft(rows):
        spec = torch.fft.rfft(torch.from_numpy(rows), dim=-1)
        return torch.view_as_real(spec).numpy().reshape(len(rows), -1)

    return rfft


def _bandwidth_values(lvl, on, off):
    """timbral_models' bandwidth of each frame from its total magnitude, roll-on index and roll-off bin: 0 for frames
    at or under 10 % of the range of totals above the quietest, and for frames with no roll-off."""
    freq = bandwidth_freqs()
    floor = 0.1 * (lvl.max() - lvl.min()) + lvl.min()
    keep = (lvl > floor) & (off >= 0)
    return np.where(keep, freq[np.maximum(off, 0)] - freq[np.asarray(on) - 1], 0.0)


class NumpyOps:
    """numpy, scipy.fft and numba on the CPU (see the module docstring)."""

    name = "numpy"
    batch = 8  # clips per batch: small enough that every array stays in the caches and the allocator's reuse

    def stft(self, x: np.ndarray):
        D = stft(x)
        return D, np.abs(D)

    def percussive(self, spec) -> np.ndarray:
        """The time signal of the percussive part of librosa's HPSS of :meth:`stft`'s STFT."""
        return istft(percussive_stft(*spec))

    def mel(self, spec) -> np.ndarray:
        """Mel power spectrograms (clips, 128 mels, frames) of :meth:`stft`'s STFT, as librosa's melspectrogram."""
        return L.mel_power(spec[1], *mel_basis())

    def mel_of(self, x: np.ndarray, skip: int = 0) -> np.ndarray:
        """:meth:`mel` of :meth:`stft` of ``x`` (whose first ``skip`` frames are silent), without keeping the STFT."""
        return mel_spectrogram(x, skip)

    def power(self, frames: np.ndarray, scale: float, nfft: int) -> np.ndarray:
        return power(frames, scale, nfft)

    def magnitude(self, frames: np.ndarray, nfft: int) -> np.ndarray:
        """|rfft| of each frame (rows), zero-padded to ``nfft``."""
        return np.abs(np.fft.rfft(frames, n=nfft, axis=-1))

    def bandwidth(self, x: np.ndarray, thresh: float) -> np.ndarray:
        return bandwidth(x, thresh)


# --- torch ----------------------------------------------------------------------------------------------------


class TorchOps:
    """The same computations in torch (float64) on ``device``; the STFT handle stays on the device."""

    name = "torch"
    batch = 64  # a GPU wants many clips per call

    def __init__(self, device: str = "cpu"):
        import torch

        self.torch = torch
        self.device = torch.device(device)

    def _t(self, a) -> object:
        return self.torch.as_tensor(np.ascontiguousarray(a), dtype=self.torch.float64, device=self.device)

    @staticmethod
    def _np(t) -> np.ndarray:
        return t.detach().cpu().numpy()

    def stft(self, x: np.ndarray):
        torch = self.torch
        xt = torch.nn.functional.pad(self._t(x), (N_FFT // 2, N_FFT // 2))
        frames = xt.unfold(-1, N_FFT, HOP) * self._t(window("hann", N_FFT))
        D = torch.fft.rfft(frames, dim=-1)
        return D, D.abs()

    def _median(self, mag, dim: int):
        """Median of 31 along ``dim`` of (frames, bins) magnitudes, edges mirrored (scipy.ndimage 'reflect')."""
        n = mag.shape[dim]
        h = MEDIAN // 2
        q = np.arange(n + 2 * h) - h
        m = np.mod(q, 2 * n)
        src = np.where(m >= n, 2 * n - 1 - m, m)
        ext = mag.index_select(dim, self.torch.as_tensor(src, device=self.device))
        return ext.unfold(dim, MEDIAN, 1).median(dim=-1).values

    def percussive(self, spec) -> np.ndarray:
        torch = self.torch
        D, mag = spec
        out = []
        wss = self._t(_window_sumsquare(D.shape[1]))
        w = self._t(window("hann", N_FFT))
        tiny = np.finfo(np.float64).tiny
        for c in range(D.shape[0]):  # one clip at a time bounds the median filters' unfolded copies
            s = mag[c]
            harm, perc = self._median(s, 0), self._median(s, 1)
            z = torch.maximum(perc, harm)
            a, b = (perc / z) ** 2, (harm / z) ** 2
            mask = torch.where(z < tiny, torch.full_like(z, 0.5), a / (a + b))
            P = D[c] * mask  # = (|D| mask) * phase, librosa's product, to rounding
            frames = torch.fft.irfft(P, n=N_FFT, dim=-1) * w
            T = frames.shape[0]
            full = torch.nn.functional.fold(frames.T.unsqueeze(0), (1, N_FFT + HOP * (T - 1)), (1, N_FFT),
                                            stride=(1, HOP)).reshape(-1)
            nz = wss > tiny
            full = torch.where(nz, full / torch.where(nz, wss, torch.ones_like(wss)), full)
            out.append(full[N_FFT // 2:N_FFT // 2 + istft_length(T)])
        return self._np(torch.stack(out))

    def mel(self, spec) -> np.ndarray:
        basis = self._t(mel_basis()[0])
        return self._np((spec[1] ** 2 @ basis.T).transpose(-1, -2))

    def mel_of(self, x: np.ndarray, skip: int = 0) -> np.ndarray:
        return self.mel(self.stft(x))

    def power(self, frames: np.ndarray, scale: float, nfft: int) -> np.ndarray:
        X = self.torch.fft.rfft(self._t(frames), n=nfft, dim=-1)
        s = (X.real ** 2 + X.imag ** 2) * scale
        s[..., 1:-1] *= 2
        return self._np(s)

    def magnitude(self, frames: np.ndarray, nfft: int) -> np.ndarray:
        return self._np(self.torch.fft.rfft(self._t(frames), n=nfft, dim=-1).abs())

    def bandwidth(self, x: np.ndarray, thresh: float) -> np.ndarray:
        torch = self.torch
        frames = self._t(x).unfold(-1, BANDWIDTH_FRAME, BANDWIDTH_HOP)
        spec = torch.fft.rfft(frames, dim=-1).abs() * np.sqrt(1.0 / (FS * BANDWIDTH_FRAME))
        spec[:, 0] = 0.0
        lvl = spec.sum(dim=-1)
        # roll-on: the first c >= 1 whose sum of the bins below c reaches 5 % of the total (the last bin if none)
        reached = torch.cumsum(spec, dim=-1) >= (0.05 * lvl)[:, None]
        nb = spec.shape[1]
        on = torch.where(reached.any(dim=-1), reached.int().argmax(dim=-1) + 1, torch.full_like(lvl, nb, dtype=torch.int64))
        on = torch.clamp(on, min=1)
        above = spec >= thresh
        idx = torch.arange(nb, device=self.device)
        off = torch.where(above, idx, torch.full_like(idx, -1)).max(dim=-1).values
        return _bandwidth_values(self._np(lvl), self._np(on), self._np(off))


def get_ops(backend: str = "numpy", device: str = "cpu"):
    """The ops for ``backend`` ("numpy", "torch", or "auto": torch on a CUDA device, numpy otherwise)."""
    if backend == "auto":
        backend = "torch" if str(device).startswith("cuda") else "numpy"
    if backend == "numpy":
        return NumpyOps()
    if backend == "torch":
        return TorchOps(device)
    raise ValueError(f"timbral: unknown backend {backend!r}; valid: auto, numpy, torch")
