"""The eight AudioCommons timbral models (timbral_models 0.4.0's definitions), each over a batch of prepared clips.

Each ``<feature>(batch)`` takes a :class:`~bench.metrics.timbral._front.Batch` (clips of one length) and returns one
float per clip, unclipped (timbral_models' default ``clip_output=False``). A model that cannot score a clip raises
:class:`FeatureError` for that clip through :func:`per_clip`, so that one bad clip costs only its own value."""

from __future__ import annotations

import functools

import numpy as np

from bench.metrics.timbral import _front as F
from bench.metrics.timbral import _kernels as K
from bench.metrics.timbral import _libkernels as L
from bench.metrics.timbral import _ops as W


class FeatureError(Exception):
    pass


def _wavg(values, weights) -> float:
    values, weights = np.asarray(values, float), np.asarray(weights, float)
    ws = weights.sum()
    if values.size == 0 or ws == 0:
        raise FeatureError("weights sum to zero")
    return float(np.sum(values * weights) / ws)


# --- loudness-based models ------------------------------------------------------------------------------------

_SHARP_G = None


def _sharp_weights():
    global _SHARP_G
    if _SHARP_G is None:
        z = np.arange(141, 241) / 10.0
        g = np.concatenate((np.ones(140), 0.00012 * z ** 4 - 0.0056 * z ** 3 + 0.1 * z ** 2 - 0.81 * z + 3.5))
        bark = np.arange(0.1, 240 / 10.0 + 0.1, 0.1)
        _SHARP_G = (g, bark)
    return _SHARP_G


def _loud(c):
    if not c.cache["loud_ok"]:
        raise FeatureError("specific loudness pattern incomplete")
    return c.cache


def sharpness(batch):
    """Fastl's sharpness of each window's specific loudness, averaged with the windows' energy as weights; log10
    and a linear map."""
    clips = batch.clips
    F.loudness_windows(clips)
    g, bark = _sharp_weights()
    out = []
    for c in clips:
        d = _loud(c)
        Ns = d["Nspec"]
        with np.errstate(all="ignore"):
            s = 0.11 * np.sum(Ns * g * bark * 0.1, axis=1) / np.sum(Ns * 0.1, axis=1)
        s = np.where(d["N"] > 0, s, 0.0)
        v = np.log10(_wavg(s, d["rms"] ** 2))
        out.append(v * 102.50508921364404 + 34.432655185001735)
    return out


_BOOM = None


def _boom_weights():
    global _BOOM
    if _BOOM is None:
        z = np.arange(0.1, 24.05, 0.1)
        f = 600 * np.sinh(z / 6.0)
        fr = np.log10([25, 31.5])
        idx = (np.log10(f) - fr[0]) / float(fr[1] - fr[0]) + 1
        w = 2.13 * np.exp(-0.151 * idx)
        w[:4] = [0.8, 1.05, 1.10, 1.18]
        below = int(np.where(f >= 280)[0][0])
        _BOOM = (w, below)
    return _BOOM


def boominess(batch):
    """Hatano and Hashimoto's booming index per window (a log-sum of weighted specific loudness scaled by the share
    of loudness under 280 Hz), energy-weighted over windows, with the low-Bark level; log10 and a linear map."""
    clips = batch.clips
    F.loudness_windows(clips)
    w, below = _boom_weights()
    lw = F.normal_weights(0, 70)
    out = []
    for c in clips:
        d = _loud(c)
        Ns = d["Nspec"]
        with np.errstate(all="ignore"):
            bandsum = 10 * np.log10(np.sum(10 ** (Ns * w / 10.0), axis=1))
            bi = bandsum * (np.sum(Ns[:, :below], axis=1) / np.sum(Ns, axis=1))
        bi = np.where(d["N"] > 0, bi, 0.0)
        ll = np.log10(np.mean(Ns @ lw))
        rb = np.log10(_wavg(bi, d["rms"] ** 2))
        out.append(rb * 43.67402696195865 + ll * -10.90054738389845 + 26.836530575185435)
    return out


# --- spectral models ------------------------------------------------------------------------------------------


def _frames(x: np.ndarray, nfft: int, window="hamming", overlap: float = 0.75) -> tuple[np.ndarray, np.ndarray]:
    """What scipy.signal.spectrogram(x, FS, window, nfft, overlap * nfft, nfft, 'constant') Fourier transforms:
    windowed frames of ``nfft`` samples every ``(1 - overlap) * nfft``, each frame's mean removed first (a clip
    shorter than ``nfft`` is one frame of its own length), as (frames, nfft) zero-padded on the right (what the
    transform pads them to); and the window. ``x``: one signal."""
    n = x.shape[-1]
    nper, hop = (nfft, nfft - int(overlap * nfft)) if n >= nfft else (n, max(1, n - int(overlap * n)))
    win = W.window(window, nper)
    return L.detrended_frames(np.ascontiguousarray(x, dtype=np.float64), nper, hop, win, nfft), win


def _frame_power(x: np.ndarray, nfft: int) -> np.ndarray:
    """The sum over frequency of each power spectrum of :func:`_frames` (x) and :func:`_power`, from the frames'
    energy (Parseval: the one-sided spectrum with its inner bins doubled sums to the whole spectrum's power,
    ``nfft`` times the frame's energy)."""
    n = x.shape[-1]
    nper, hop = (nfft, nfft // 4) if n >= nfft else (n, 1)
    win = W.window("hamming", nper)
    return L.frame_energy(np.ascontiguousarray(x), nper, hop, win) * (nfft / win.sum() ** 2)


def _highpassed(batch) -> np.ndarray:
    """The clips through the 20 Hz high-pass cascade that brightness and depth both start from: once per batch."""
    return batch.shared("highpass20", lambda: F.cascade(batch.a, 20, "high"))


def brightness(batch):
    """The energy ratio above 2 kHz and the spectral centroid above 100 Hz, per frame, weighted by frame power; log10
    of both and a linear map."""
    nfft = 2048
    out = [np.nan] * len(batch)
    x = _highpassed(batch)
    ratio_hp = F.cascade(x, 2000, "high")
    cent_hp = F.cascade(x, 100, "high")
    peak = np.max(np.abs(x), axis=1, keepdims=True)
    freq = np.fft.rfftfreq(nfft, 1.0 / F.FS)
    for r in range(len(batch)):
        tp = _frame_power(x[r] / peak[r], nfft)
        hp = _frame_power(ratio_hp[r] / peak[r], nfft)
        fc, win = _frames(cent_hp[r] / peak[r], nfft)
        s_c = batch.ops.power(fc, 1.0 / win.sum() ** 2, nfft)
        ctp = s_c.sum(axis=-1)
        csum = s_c @ freq
        m = tp > 0
        mc = ctp > 0
        try:
            ratio = _wavg(hp[m] / tp[m], tp[m])
            cent = _wavg(csum[mc] / ctp[mc], ctp[mc])
        except FeatureError:
            continue
        out[r] = 4.613128018020465 * np.log10(ratio) + 17.378889309312974 * np.log10(cent) + 17.434733750553022
    return out


def roughness(batch):
    """Vassilakis roughness: 50-ms Hamming frames (half overlap, FFT 4096), peaks picked on the spectrogram
    normalised to its global range, pairwise roughness summed per frame and averaged over frames; log10 and a linear
    map (0 below a mean roughness of 0.01)."""
    clips = batch.clips
    step = int(F.FS * 0.05)
    win = np.hamming(step + 2)[1:-1]
    olap = step / 2
    nfft = 2 ** int(np.log(step) / np.log(2) + 1)
    spec_len = nfft // 2 + 1
    freq = F.FS / 2 * np.linspace(0, 1, spec_len)
    out = [np.nan] * len(clips)
    x = np.pad(batch.a, ((0, 0), (512, 0)))
    n = x.shape[1]
    if n > step:
        starts = []
        i = 0
        while int(i * (step / 2.0)) + step <= n:
            starts.append(int(i * (step / 2.0)))
            i += 1
        idx = np.array(starts)[:, None] + np.arange(step)
    num_frames = int(n / (step - olap))  # the reference's frame count: frames past the last full one are silent
    for r in range(len(clips)):  # one clip at a time: its frames and spectra (~2 MB) stay in the caches
        frames = x[r, idx] * win if n > step else x[r, None, :]  # zero-padded to nfft by the transform
        spec = batch.ops.magnitude(frames, nfft)  # (frames, bins)
        mean_r = float(np.mean(K.roughness_frames(spec, num_frames, freq, 0.01)))
        out[r] = 0.0 if mean_r < 0.01 else np.log10(mean_r) * 13.98779569 + 48.97606571545886
    return out


# --- reverb -----------------------------------------------------------------------------------------------------


def _rt_params(fs: float):
    no = fs / 24000.0
    down = 2 if fs > 8e3 else 1
    p = {"down": down, "N_sub": int(round(no * 700 / down)), "N_shift": int(round(no * 200 / down)),
         "nos_min": 3, "nos_max": 7, "buffer_size": int(round(no * 800 / down))}
    p["N"] = p["nos_max"] * p["N_sub"]
    p["Tquant"] = np.arange(0.2, 1.1 + 0.1 / 2, 0.1)
    p["a"] = np.exp(-3.0 * np.log(10) / (p["Tquant"] * (fs / down)))
    return p


def _rt60(x: np.ndarray, fs: float = F.FS) -> float:
    """Blind RT60 estimate (Loellmann et al.; Jan and Wang's Laplacian likelihood), frame by frame: a frame whose
    sub-frames decay steadily (falling variance and shrinking range) for at least ``nos_min`` sub-frames gets a
    maximum-likelihood decay rate; these feed a histogram whose mode, smoothed over frames, is the estimate. The
    decay runs and the histogram are numba kernels; the likelihoods are computed for all frames with one run length
    at once."""
    p = _rt_params(fs)
    Ns, down = p["N_sub"], p["down"]
    BL = p["N"] * down
    L = len(x)
    tq = p["Tquant"]
    if BL >= L:
        return float(tq[0])
    starts = np.arange(0, L - BL + 1, p["N_shift"])
    nsub = p["nos_max"] - 1
    run = K.decay_runs(x, starts, down, Ns, nsub)  # consecutive decays from the first sub-frame
    # the reference only scores a run that stops (a break) at >= nos_min
    scored = (run >= p["nos_min"]) & (run < nsub - 1)
    ml = np.full(len(starts), -1.0)
    a = p["a"]
    for cnt in np.unique(run[scored]):
        rows = np.where(scored & (run == cnt))[0]
        n = int(cnt * Ns)
        h = np.abs(x[starts[rows, None] + np.arange(0, n * down, down)])  # the frames' first n samples
        sum1 = h @ _decay_powers(fs, n)  # (rows, rates)
        sigma = sum1 / n
        ll = -n * np.log(2) - n * np.log(sigma) - np.log(a)[None, :] * (n * (n - 1) / 2.0) - sum1 / sigma
        ml[rows] = tq[np.argmax(ll, axis=1)]
    limits = np.arange(0.2 - 0.1 / 2.0, 1.1 + 0.1, 0.1)
    est = K.rt_histogram(ml, tq, limits, p["buffer_size"])
    keep = ml > 0
    return float(np.mean(est[keep])) if keep.any() else float(tq[0])


@functools.lru_cache(maxsize=16)
def _decay_powers(fs: float, n: int) -> np.ndarray:
    """a^-k for the candidate decay rates a (columns) and k = 0..n-1 (rows)."""
    a = _rt_params(fs)["a"]
    return a[None, :] ** (-1.0 * np.arange(n)[:, None])


def reverb(batch):
    """1 if the logistic model of the estimated RT60 gives a probability of at least 0.5 (reverberant), else 0."""
    out = []
    for rt in (_rt60(c.raw) for c in batch.clips):
        logit = 2.97126461 * rt - 1.45082989
        prob = np.exp(logit) / (1.0 + np.exp(logit))
        out.append(0 if prob < 0.5 else 1)
    return out


# --- onset-based models ---------------------------------------------------------------------------------------

from bench.metrics.timbral import _onsets as O  # noqa: E402


def _stft(batch):
    """The STFT of the batch's clips (librosa's): shared by the harmonic/percussive split (hardness) and the onset
    strength of the clips (warmth)."""
    return batch.shared("stft", lambda: batch.ops.stft(batch.a))


def _strengths_of(batch, signals: np.ndarray | None = None, skip: int = 0) -> list[np.ndarray]:
    """librosa's onset strength of each row of ``signals`` (default: the batch's clips, from the shared STFT;
    ``skip``: how many of the signals' first STFT frames are all zero samples)."""
    mel = batch.ops.mel(_stft(batch)) if signals is None else batch.ops.mel_of(signals, skip)
    return O.onset_strengths(mel, F.FS)


def _segments(arr, marks):
    """arr split at ``marks`` (the last segment runs to the end; a mark equal to the last one does too)."""
    for q, m in enumerate(marks):
        yield q, (arr[m:] if m == marks[-1] else arr[m:marks[q + 1]])


def _r2(x, y) -> float:
    """R^2 of the least-squares line through (x, y) (what sklearn's LinearRegression.score gives): for a line with
    an intercept, the squared correlation, from centred sums."""
    if not (np.all(np.isfinite(x)) and np.all(np.isfinite(y))):
        raise FeatureError("non-finite values in the decay fit")
    dx, dy = x - x.mean(), y - y.mean()
    syy = np.dot(dy, dy)
    if syy == 0:
        return 1.0
    sxx = np.dot(dx, dx)
    return float(np.dot(dx, dy) ** 2 / (sxx * syy)) if sxx > 0 else 0.0


@functools.lru_cache(maxsize=1)
def _warmth_freqs() -> tuple[np.ndarray, np.ndarray, int]:
    """The 8192-point spectra's bin frequencies, their log10, and the first bin above 260 Hz."""
    freq = np.fft.rfftfreq(8192, 1.0 / F.FS)
    with np.errstate(divide="ignore"):
        log_freq = np.log10(freq)
    return freq, log_freq, int(np.where(freq > 260)[0][0])


def _warmth_one(c, oenv) -> float:
    d = _loud(c)
    Ns, rms = d["Nspec"], d["rms"]
    mean_wr = float(np.mean(Ns @ F.normal_weights(10, 40)))
    weighted_hf = _wavg(Ns @ F.normal_weights(80, 240), rms)
    x = c.a
    env = O.envelope(x, F.FS, decay_time=0.1)
    ons = O.onsets(env, oenv, F.FS, nperseg=4096)
    if len(ons) == 1:
        ons = [0]
    rmss, ratios, scs, decays = [], [], [], []
    freq, log_freq, top = _warmth_freqs()
    for _, seg in _segments(x, ons):
        rmss.append(np.sqrt(np.mean(seg * seg)))
        # scipy.signal.spectrogram(seg, FS, nperseg=min(len, 8192), nfft=8192): its Tukey window, 1/8 overlap and
        # density scaling; the frames' spectra summed
        frames, win = _frames(seg, 8192, ("tukey", 0.25), overlap=0.125)
        spec = W.power(frames, 1.0 / (F.FS * (win * win).sum()), 8192).sum(axis=0)
        spec = spec / np.max(np.abs(spec))
        pidx, _, px = K.mirpeaks(spec, spec, freq, 0.2)
        if len(px) == 0:
            raise FeatureError("no spectral peak in a segment")
        fund, fidx = float(np.min(px)), int(np.min(pidx))
        upper = min(fund * 3.5, 12000)
        up_idx = int(np.searchsorted(freq, upper, side="right"))  # the first bin above ``upper`` (freq is sorted)
        if up_idx == len(freq):
            raise IndexError("no bin above the warm region")  # (as indexing an empty np.where would)
        if fund < 260:
            ratios.append(np.sum(spec[fidx:top]) / float(np.sum(spec)))
        else:
            ratios.append(0)
        scs.append(np.sum(freq * spec) / float(np.sum(spec)))
        with np.errstate(divide="ignore"):
            decays.append(_r2(log_freq[up_idx:], np.log10(spec[up_idx:])))
    feats = np.array([np.log10(np.mean(scs)), weighted_hf, mean_wr, np.mean(decays), _wavg(ratios, rmss), 1.0])
    coef = np.array([-4.464258317026696, -0.08819320850778556, 0.29156539973575546, 17.274733561081554,
                     8.403340066029507, 45.21212125085579])
    return float(np.sum(feats * coef))


def warmth(batch):
    """Spectral centroid, warm-region and high-frequency loudness, the fit of the spectrum's decay above the warm
    region and the low-frequency energy ratio, per onset segment; a linear map."""
    F.loudness_windows(batch.clips)
    strengths = _strengths_of(batch)
    return per_clip(batch.clips, lambda i, c: _warmth_one(c, strengths[i]))


def _depth_one(ops, x, lpc, lpr, oenv) -> float:
    peak = np.max(np.abs(x))
    x, lpc, lpr = x / peak, lpc / peak, lpr / peak
    nfft = 4096
    fx, win = _frames(x, nfft)
    scale = 1.0 / win.sum() ** 2
    spec = ops.power(fx, scale, nfft)  # (frames, bins)
    fc, _ = _frames(lpc, nfft)
    sc = ops.power(fc, scale, nfft)
    freq = np.fft.rfftfreq(nfft, 1.0 / F.FS)
    thr = 10 ** (-60 / 20.0)
    tp = spec.sum(axis=1)
    m = tp > thr
    with np.errstate(all="ignore"):
        cent = np.where(m, (sc @ freq) / sc.sum(axis=1), 0.0)
        ratio = np.where(m, _frame_power(lpr, nfft) / tp, 0.0)
    m1 = min(_wavg(cent, tp), 2000.0)
    m2 = _wavg(ratio, tp)
    env = O.envelope(x, F.FS)
    ons = O.onsets(env, oenv, F.FS)
    rms = O.rms_envelope(x, 256, 256)
    rms = rms * (1.0 / np.max(np.abs(rms)))
    decay_thr = 10 ** (-40 / 20.0)
    tc = F.FS / 256.0
    marks = list((np.array(ons) / 256.0).astype(int))
    durs = []
    for _, seg in _segments(rms, marks):
        if seg.size == 0:
            raise FeatureError("empty envelope segment")
        post = seg[int(np.argmax(seg)):]
        durs.append(len(post) / tc if post.min() >= decay_thr else np.where(post < decay_thr)[0][0] / tc)
    m3 = np.log10(np.mean(durs))
    alls = spec.sum(axis=0)
    norm = (alls - alls.min()) / (alls.max() - alls.min())
    _, _, pf = K.mirpeaks(norm, norm, freq, 0.01)
    if len(pf) == 0:
        raise FeatureError("no spectral peak")
    m4 = np.log10(np.min(pf)) if pf[0] > 0 else 0
    sig = m2 ** 10 / (m2 ** 10 + 0.2)
    feats = np.array([m1, m2, m3, m4, m2 * m3, sig * m3, 1.0])
    coef = np.array([-0.0043703565847874465, 32.83743202462131, 4.750862716905235, -14.217438690256062,
                     3.8782339862813924, -0.8544826091735516, 66.69534393444391])
    return float(np.sum(feats * coef))


def depth(batch):
    """Low-pass centroid and low-frequency energy ratio (per frame, power-weighted), decay duration after each
    onset and the lowest spectral peak; a linear map."""
    hp = _highpassed(batch)
    lpc = F.cascade(hp, 2000, "low")
    lpr = F.cascade(hp, 500, "low")
    strengths = _strengths_of(batch, hp / np.max(np.abs(hp), axis=1, keepdims=True))
    return per_clip(batch.clips, lambda i, c: _depth_one(batch.ops, hp[i], lpc[i], lpr[i], strengths[i]))


def _hp_ratio(batch) -> list:
    """Share of the percussive part's frame energy (librosa's harmonic/percussive separation, default settings).
    The harmonic part's signal is the clip minus the percussive part's: librosa's iSTFT reconstructs the clip from
    its STFT (to ~1e-16), the two masks sum to one and the iSTFT is linear, so this equals iSTFT(H) to rounding
    and saves an iSTFT."""
    if batch.a.shape[1] < HPSS_MIN:
        return [None] * len(batch)
    p = batch.ops.percussive(_stft(batch))
    h = batch.a[:, :p.shape[1]] - p
    out = []
    for r in range(len(batch)):
        pe = O.rms_envelope(p[r], 1024, 512)
        he = O.rms_envelope(h[r], 1024, 512)
        m = (pe != 0) | (he != 0)
        out.append(_wavg(pe[m] / (pe[m] + he[m]), pe[m] + he[m]) if m.any() else None)
    return out


@functools.lru_cache(maxsize=16)
def _centroid_freqs(bins: int) -> tuple[np.ndarray, int]:
    """The centroid's bin frequencies from 20 Hz up, and the index of the first, for spectra of ``bins`` bins."""
    freq = np.arange(bins) * (F.FS / (2.0 * (bins - 1)))
    k = int(np.where(freq >= 20)[0][0])
    return freq[k:], k


def _centroid(seg: np.ndarray) -> float | None:
    n2 = int(2 ** np.ceil(np.log2(len(seg))))
    spec = np.abs(np.fft.rfft(seg, n2))
    if np.sum(spec) <= 0:
        return None
    freq, k = _centroid_freqs(len(spec))
    return float(np.sum(spec[k:] * freq) / float(np.sum(spec[k:])))


HPSS_MIN = 2048  # librosa's default n_fft
PAD = 4097  # zeros hardness puts before each clip (for its onsets and bandwidth)


def _hardness_one(c, x, hp_ratio, oenv, bw) -> float:
    d = _loud(c)
    mid = np.log10(_wavg(d["Nspec"] @ F.normal_weights(70, 140), d["rms"]))
    if hp_ratio is None:
        raise FeatureError("no harmonic or percussive energy")
    log_hp = np.log10(hp_ratio)
    env = O.envelope(x, F.FS, decay_time=0.1)
    ons = O.onsets(env, oenv, F.FS, nperseg=4096)
    if len(ons) == 1:
        ons = [0]
    shifted = np.array(ons) - 4096
    shifted[shifted < 0] = 0
    bfs = F.FS / 128.0
    bmarks = list(np.array(shifted / 128.0).astype(int))
    bw_max, attacks, strengths, strengths_bw, cents = [], [], [], [], []
    for q, seg in _segments(bw, bmarks):
        if seg.size == 0:
            raise FeatureError("empty bandwidth segment")
        have = False
        if seg.max() > 0:
            att = O.attack_time(seg, bfs, fixed=True, max_attack=0.1)
            if att is not None:
                have = True
                s = att[1]
                span = int(0.1 * bfs)
                bw_max.append(seg[s:s + span].max() if len(seg[s:]) > s + span else seg[s:].max())
        on = ons[q]
        if on == ons[-1]:
            aseg, sseg, xseg = env[on:], oenv[int(on / 512):], x[on:]
        else:
            nxt = ons[q + 1]
            aseg, sseg, xseg = env[on:nxt], oenv[int(on / 512):int(nxt / 512)], x[on:nxt]
        att = O.attack_time(aseg, F.FS, max_attack=0.1)
        if att is None:
            raise FeatureError("attack peak at the segment start")
        attacks.append(att[0])
        if sseg.size == 0:
            raise FeatureError("empty onset-strength segment")
        strengths.append(sseg.max())
        if have:
            strengths_bw.append(sseg.max())
        s = att[1]
        n = int(0.125 * F.FS)
        xseg = xseg[s:] if s + n >= len(xseg) else xseg[s:s + n]
        if len(xseg) > 512:
            ce = _centroid(xseg)
            if ce is not None:
                cents.append(ce)
    bwm = _wavg(bw_max, strengths_bw) if bw_max else F.FS / 512.0
    if bwm <= 512.0:
        bwm = F.FS / 512.0
    ac = np.mean(cents) if cents else 200.0
    ac = max(ac, 200.0)
    feats = np.array([np.log10(bwm), np.log10(ac), mid, log_hp, np.log10(np.mean(strengths)), np.mean(attacks), 1.0])
    coef = np.array([12.079781720638145, 18.52100377170042, 14.139883645260355, 5.567690321917516,
                     3.9346817690405635, -4.326890461087848, -85.60352209068202])
    return float(np.sum(feats * coef))


def hardness(batch):
    """Bandwidth reached during each onset's attack, attack centroid and time, mid-Bark loudness, percussive energy
    share and onset strength; a linear map."""
    clips = batch.clips
    F.loudness_windows(clips)
    hp = _hp_ratio(batch)
    padded = np.pad(batch.a, ((0, 0), (PAD, 0)))
    # STFT frames (centred, 2048 samples every 512) that lie wholly in the zero padding
    silent = (PAD - W.N_FFT // 2) // W.HOP + 1
    strengths = _strengths_of(batch, padded, silent)

    def one(i, c):
        if len(c.a) < HPSS_MIN:
            # timbral_models' harmonic/percussive ratio of a clip shorter than one STFT frame comes out different on
            # each call (librosa reads memory it never wrote): there is no reference value to match
            raise FeatureError(f"clip shorter than {HPSS_MIN} samples at 44.1 kHz (no defined harmonic/percussive "
                               "ratio)")
        if len(padded[i]) < W.BANDWIDTH_FRAME:
            raise FeatureError("clip shorter than the bandwidth frame")
        return _hardness_one(c, padded[i], hp[i], strengths[i], batch.ops.bandwidth(padded[i], 10 ** (-75 / 20.0)))

    return per_clip(clips, one)


# --- per-clip error handling ------------------------------------------------------------------------------------

_ERRORS: dict = {}


def per_clip(clips, fn) -> list:
    """``fn(i, clip)`` for every clip; a clip whose computation fails gets NaN and its error is kept (see
    :func:`take_errors`)."""
    out = []
    for i, c in enumerate(clips):
        try:
            with np.errstate(all="ignore"):
                out.append(float(fn(i, c)))
        except (FeatureError, O.OnsetError, ValueError, IndexError, ZeroDivisionError, FloatingPointError) as e:
            c.cache.setdefault("errors", []).append(f"{type(e).__name__}: {e}")
            out.append(float("nan"))
    return out
