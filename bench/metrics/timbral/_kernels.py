"""numba kernels for the parts of the timbral models that are sequential by nature (a recursion over samples, a
state machine over critical bands or spectral peaks, a sliding window) or that numpy would do in several passes.
Each is compiled once (cached on disk, see :func:`bench.metrics.timbral.warm`) and called over many windows / clips
at a time. None may be recursive: numba cannot reload a recursive function from its cache (the process crashes).

They follow timbral_models 0.4.0's algorithms step for step, including its rounding and indexing conventions,
because the features are regressions on these intermediate values and small departures show up in the scores;
where they stand in for a library routine (scipy's lfilter, numpy's sum, librosa's overlap-add and soft mask) they
repeat its arithmetic operation for operation, so the values are the library's to the bit."""

from __future__ import annotations

import numpy as np
from numba import njit

from bench.metrics.timbral._libkernels import pairwise_sum


@njit(cache=True)
def _extent(x, base, down, n):
    """(maximum, minimum) of ``x[base::down][:n]``."""
    hi = -np.inf
    lo = np.inf
    for i in range(n):
        v = x[base + i * down]
        hi = max(hi, v)
        lo = min(lo, v)
    return hi, lo


@njit(cache=True)
def _variance(x, base, down, n, buf, sq):
    """The variance of ``x[base::down][:n]`` as numpy computes it."""
    for i in range(n):
        buf[i] = x[base + i * down]
    mean = pairwise_sum(buf, 0, n) / n
    for i in range(n):
        d = buf[i] - mean
        sq[i] = d * d
    return pairwise_sum(sq, 0, n) / n


@njit(cache=True)
def decay_runs(x, starts, down, ns, nsub):
    """For each frame of the blind RT60 estimate (frame ``f`` is ``x[starts[f]::down]``), how many of its
    ``nsub`` sub-frames in a row, from the first, are followed by one with a smaller variance (numpy's, to the bit),
    a smaller maximum and a larger minimum. The first sub-frame is ``ns`` samples, the others ``ns + 1`` (one
    sample of overlap), the k-th (from 0) starting at ``k * ns``. A frame's sub-frames are examined only until the
    first that does not decay (most frames stop after one or two), and the variances (two pairwise sums each) only
    where the maxima and minima already decay: the run counts are the same, with fewer variances computed."""
    F = starts.shape[0]
    run = np.zeros(F, dtype=np.int64)
    buf = np.empty(ns + 1)
    sq = np.empty(ns + 1)
    for f in range(F):
        b0, n0 = starts[f], ns
        h0, l0 = _extent(x, b0, down, n0)
        v0 = 0.0
        have_v0 = False
        for k in range(1, nsub):
            b1 = starts[f] + k * ns * down
            h1, l1 = _extent(x, b1, down, ns + 1)
            if not (h1 < h0 and l1 > l0):
                break
            if not have_v0:
                v0 = _variance(x, b0, down, n0, buf, sq)
            v1 = _variance(x, b1, down, ns + 1, buf, sq)
            if not v1 < v0:
                break
            run[f] += 1
            b0, n0, h0, l0, v0, have_v0 = b1, ns + 1, h1, l1, v1, True
    return run


@njit(cache=True)
def rt_histogram(ml, tq, limits, size):
    """The blind RT60 estimate's running mode, frame by frame: each frame's maximum-likelihood RT60 (``ml``; < 0:
    none) goes into a histogram over the quantised values ``tq`` that forgets entries older than ``size``
    estimates; the mode is smoothed over frames (0.995 / 0.005). Returns the smoothed estimate of every frame."""
    hist = np.zeros(tq.shape[0])
    ring = np.zeros(size, dtype=np.int64)  # the last ``size`` bins filled, oldest at ``head``
    head = 0
    counter = 0
    rt_last = 0.3
    rt_raw = 0.3
    est = np.empty(ml.shape[0])
    for f in range(ml.shape[0]):
        r = ml[f]
        if r >= 0:
            counter += 1
            index = 0
            for q in range(limits.shape[0] - 1):
                if r >= limits[q] and r <= limits[q + 1]:
                    index = q
                    break
            hist[index] += 1
            if counter > size + 1:
                hist[ring[head]] -= 1
            ring[head] = index
            head = (head + 1) % size
            rt_raw = tq[np.argmax(hist)]
        rt_last = 0.995 * rt_last + 0.005 * rt_raw
        est[f] = rt_last
    return est


@njit(cache=True)
def hold_envelope(a, decay, hold_samples):
    """Sample-and-hold envelope of |signal| ``a``: follows rises at once, holds a peak for ``hold_samples``, then
    decays linearly by ``decay`` per sample (never below the signal)."""
    out = np.empty_like(a)
    prev = 0.0
    counter = 0
    for i in range(a.shape[0]):
        s = a[i]
        if s >= prev:
            prev = s
            counter = 0
        elif counter < hold_samples:
            counter += 1
        else:
            o = prev - decay
            prev = o if o > s else s
        out[i] = prev
    return out


@njit(cache=True, error_model="numpy")
def attack(env, fs, fixed, max_attack, lin):
    """``_onsets.attack_time`` of one envelope segment, numpy's operations in numpy's order: (status, attack time
    t, start index) with status 0 when the peak is the first sample (or the segment is all zero, which numpy's
    division turns into NaN, whose argmax is 0), 1 when the attack ends outside the segment, 2 otherwise. ``lin``:
    ``np.linspace(0.1, 0.9, 9)``."""
    top = env.max()
    if not top > 0:
        return 0, 0.0, 0
    n = env.shape[0]
    v = env / top
    peak = 0
    for i in range(n):
        if v[i] > v[peak]:
            peak = i
    if peak == 0:
        return 0, 0.0, 0
    minpre = 0
    for i in range(peak):  # the last minimum before the peak
        if v[i] <= v[minpre]:
            minpre = i
    seg = v[minpre:peak + 1]
    m = seg.shape[0]
    lo = seg.min()
    dyn = seg.max() - lo
    if fixed:
        s = 0.0
        thr = 0.2 * dyn + lo
        for i in range(m):
            if seg[i] >= thr:
                s = float(i)
                break
        e = s
        thr = 0.9 * dyn + lo
        for i in range(int(s), m):
            if seg[i] >= thr:
                e = float(i)
                break
    else:
        idxs = np.zeros(9)
        for q in range(9):
            level = lin[q] * dyn + lo
            for i in range(m):
                if seg[i] >= level:
                    idxs[q] = float(i)
                    break
        effort = idxs[1:] - idxs[:-1]
        thr = effort.sum() / 8 * 3  # sums of whole numbers: exact in any order, as numpy's mean
        a = 0
        for i in range(8):
            if effort[i] <= thr:
                a = i
                break
        b = 0
        for i in range(a, 8):
            if effort[i] >= thr:
                b = i - a
                break
        if b == 0:
            b = 8 - a - 1
        b += a
        s, e = idxs[a], idxs[b]
        if s == e:
            s, e = idxs[0], idxs[8]
    t = 1.0 / fs if s == e else (e - s + 1.0) / fs
    if max_attack > 0 and t > max_attack:
        e = s + int(fs * max_attack)
        t = (e - s + 1.0) / fs
    if int(e) >= m:
        return 1, t, 0
    return 2, t, int(s) + minpre


@njit(cache=True)
def mirpeaks(array, unprocessed, freq, cthr):
    """Peaks of ``array`` in the manner of MIRtoolbox's mirpeaks (contrast threshold ``cthr``), strongest first:
    (indices, parabolically interpolated values of ``unprocessed`` and positions on ``freq``)."""
    n = array.shape[0]
    app = np.empty(n + 2)
    app[0] = -2.0
    app[n + 1] = -2.0
    app[1:n + 1] = array
    unp = np.empty(n + 2)
    unp[0] = -2.0
    unp[n + 1] = -2.0
    unp[1:n + 1] = unprocessed
    fr = np.empty(n + 2)
    fr[0] = -1.0
    fr[n + 1] = -1.0
    fr[1:n + 1] = freq
    # candidates: local maxima (rising into, not rising out of) above the threshold; indices into app
    mx = np.empty(n, dtype=np.int64)
    m = 0
    for i in range(n):
        if array[i] >= cthr and (app[i + 1] - app[i]) > 0 and (app[i + 2] - app[i + 1]) <= 0:
            mx[m] = i + 1
            m += 1
    final = np.empty(max(m, 1), dtype=np.int64)
    nf = 0
    if m > 0:
        j = 0
        mxj = mx[0]
        bufmin = 2.0
        bufmax = app[mxj]
        if mxj > 1:
            oldbufmin = app[:mxj - 1].min()
        else:
            oldbufmin = app[0]
        for jj in range(1, m):
            if mx[jj - 1] + 1 == mx[jj] - 1:
                bufmin = min(bufmin, app[mx[jj - 1]])
            else:
                bufmin = min(bufmin, app[mx[jj - 1]:mx[jj] - 1].min())
            if bufmax - bufmin < cthr:
                if app[mx[jj]] > bufmax:
                    j = jj
                    mxj = mx[j]
                    bufmax = app[mxj]
                    oldbufmin = min(oldbufmin, bufmin)
                    bufmin = 2.0
                elif app[mx[jj]] - bufmax <= 0:
                    bufmax = max(bufmax, app[mx[jj]])
                    oldbufmin = min(oldbufmin, bufmin)
            else:
                if bufmax - oldbufmin < cthr:
                    oldbufmin = min(oldbufmin, bufmin)
                else:
                    final[nf] = mxj
                    nf += 1
                    oldbufmin = bufmin
                bufmax = app[mx[jj]]
                j = jj
                mxj = mx[j]
                bufmin = 2.0
        if bufmax - oldbufmin >= cthr and (bufmax - app[mx[j] + 1:].min() >= cthr):
            final[nf] = mx[j]
            nf += 1
    final = final[:nf]
    order = np.argsort(app[final])[::-1]
    final = final[order]
    idx = final - 1
    val = np.empty(nf)
    pos = np.empty(nf)
    L = n + 2
    for q in range(nf):
        c = final[q]
        if 1 < c < L - 2:
            y0 = unp[c]
            ym = unp[c - 1]
            yp = unp[c + 1]
            p = (yp - ym) / (2 * (2 * y0 - yp - ym))
            val[q] = y0 - 0.25 * (ym - yp) * p
            if p >= 0:
                pos[q] = (1 - p) * fr[c] + p * fr[c + 1]
            else:
                pos[q] = (1 + p) * fr[c] - p * fr[c - 1]
        else:
            val[q] = unp[c]
            pos[q] = fr[c]
    return idx, val, pos


@njit(cache=True, error_model="numpy")
def roughness_frames(spec, frames, freq, cthr):
    """Vassilakis roughness of each of ``frames`` spectra: rows of the magnitude spectra ``spec`` (frames past its
    last row are silent), peaks picked on the spectra normalised to the range of all of them (silent frames
    included, ``(s - lo) / (hi - lo)`` as numpy computes it), summed over peak pairs with Plomp-Levelt dissonance
    curves. Per pair (a, b), ``(va vb)^0.1 (2 vb / (va + vb))^3.11 / 2`` is taken as one exponential of the
    peaks' logarithms (the same value to rounding, at a third of the cost of the two powers). The spectra are read
    as rows (no bins x frames copy, normalised or not)."""
    T, nb = spec.shape
    lo = spec.min()
    hi = spec.max()
    if frames > T:
        lo = min(lo, 0.0)
        hi = max(hi, 0.0)
    rng = hi - lo
    out = np.zeros(frames)
    log2 = np.log(2.0)
    row = np.zeros(nb)
    norm = np.empty(nb)
    for t in range(frames):
        if t < T:
            row[:] = spec[t]
        else:
            row[:] = 0.0
        for b in range(nb):
            norm[b] = (row[b] - lo) / rng
        _, lev, f = mirpeaks(norm, row, freq, cthr)
        P = lev.shape[0]
        if P <= 1:
            continue
        logv = np.log(lev)
        acc = 0.0
        for a in range(P):  # row a (f1, v1) against column b <= a (f2, v2): the lower triangle
            fa = f[a]
            va = lev[a]
            la = logv[a]
            for b in range(a + 1):
                fb = f[b]
                s = 0.24 / (0.0207 * min(fa, fb) + 18.96)
                d = abs(fb - fa)
                pd = np.exp(-3.51 * s * d) - np.exp(-5.75 * s * d)
                lb = logv[b]
                amp = np.exp(0.1 * (la + lb) + 3.11 * (log2 + lb - np.log(va + lev[b])))
                acc += 0.5 * amp * pd
        out[t] = acc
    return out


@njit(cache=True)
def look_back(loc, env, time_thresh, hyst_thresh, hyst_samples, nperseg):
    """Walk back from a detected onset to where the envelope stops falling: repeatedly jump to the minimum of the
    previous ``time_thresh`` samples; once nothing lower precedes, look ``hyst_samples`` further back and keep going
    only if the rise since the last lower point is under ``hyst_thresh``. 0 when the walk reaches the start."""
    while True:
        cur = env[loc]
        if loc - time_thresh > 0:
            lo = loc - time_thresh - 1
            hi = loc
        else:
            lo = 0
            hi = loc - 1
        seg = env[lo:hi]
        if seg.min() - cur <= 0:
            new = np.argmin(seg) + loc - time_thresh - 1  # offset as the reference computes it (also near the start)
            if new > nperseg:
                loc = new
            else:
                return 0
        else:
            if loc - hyst_samples - 1 > 0:
                hy = env[loc - hyst_samples - 1:loc]
            else:
                hy = env[:loc]
            last = -1
            for q in range(hy.shape[0]):
                if hy[q] < env[loc]:
                    last = q
            if last < 0:
                return loc
            last_idx = loc - hy.shape[0] + last
            tail = hy[last:]
            if tail.max() - tail.min() >= hyst_thresh:
                return loc
            if last_idx >= nperseg:
                loc = last_idx
            else:
                return 0


@njit(cache=True)
def _edges(row, e, thresh):
    """:func:`spectral_edges` of one row (float64 magnitudes, DC bin 0) with error bound ``e``."""
    return _edges_of(row, pairwise_sum(row, 0, row.shape[0]), e, thresh)  # numpy's sum, as timbral_models takes it


@njit(cache=True)
def _edges_of(row, s, e, thresh):
    """:func:`_edges` given the row's total ``s``."""
    nb = row.shape[0]
    target = s * 0.05
    slack_t = 0.05 * (np.sqrt(nb) * e + 1e-12 * s)  # the target's own uncertainty
    sure = True
    c = 1
    cum = row[0]
    before = cum
    while cum < target and c < nb:
        before = cum
        cum += row[c]
        c += 1
    if e > 0:
        # the crossing must be clear at c (unless the loop ran out of bins) and not yet at c - 1
        crossed = c == nb or cum - target > np.sqrt(c) * e + 1e-12 * cum + slack_t
        not_before = c == 1 or target - before > np.sqrt(c - 1) * e + 1e-12 * before + slack_t
        sure = c > 1 and crossed and not_before
    last = -1
    lim = thresh - e
    b = nb - 1
    while b >= 7:  # skip runs of 8 bins all under the limit (the empty top of clips resampled to 44.1 kHz)
        m = max(max(max(row[b], row[b - 1]), max(row[b - 2], row[b - 3])),
                max(max(row[b - 4], row[b - 5]), max(row[b - 6], row[b - 7])))
        if m >= lim:
            break
        b -= 8
    for q in range(b, -1, -1):
        if row[q] >= lim:
            last = q
            break
    if e > 0 and last >= 0 and not row[last] >= thresh + e:
        sure = False
    return s, c, last, sure


@njit(cache=True)
def spectral_edges(spec, err, thresh):
    """Per frame (rows of a magnitude spectrogram whose DC bin is 0): the total magnitude (numpy's sum, in float64),
    the roll-on index ``c`` (the first c >= 1 at which the magnitude summed over bins below c reaches 5 %
    of the total) and the roll-off bin (the last bin at or above ``thresh``; -1 if none), as timbral_models'
    bandwidth defines them.

    With ``err[t] > 0`` the magnitudes of row t are approximations whose errors have a 2-norm of at most
    ``err[t]`` (so each is within err[t] and a sum over m bins within sqrt(m) err[t]; see ``_ops.bandwidth``),
    and ``sure[t]`` says whether both indices are certainly those of the exact magnitudes: every comparison that
    decides them clears its threshold by more than that error. With ``err`` 0 the indices are exact and ``sure`` is
    all True."""
    T, nb = spec.shape
    lvl = np.zeros(T)
    on = np.ones(T, dtype=np.int64)
    off = np.full(T, -1, dtype=np.int64)
    sure = np.ones(T, dtype=np.bool_)
    row = np.empty(nb)
    for t in range(T):
        for b in range(nb):
            row[b] = spec[t, b]
        lvl[t], on[t], off[t], sure[t] = _edges(row, err[t], thresh)
    return lvl, on, off, sure


@njit(cache=True, fastmath={"reassoc"})
def _magnitudes32(R, t, sc, row):
    """``row[1:]`` = the magnitudes of row ``t`` of ``R`` (see :func:`spectral_edges_complex`), row[0] = 0; returns
    their sum in float64 in any order (reassociated, so that it vectorises): its rounding, under 3e-13 of the total
    for 2,049 bins, is within the 1e-12 relative slack the bandwidth allows each level (``_ops.bandwidth``)."""
    nb = row.shape[0]
    row[0] = 0.0
    tot = 0.0
    for b in range(1, nb):
        re = R[t, 2 * b]
        im = R[t, 2 * b + 1]
        v = np.float64(np.sqrt(re * re + im * im) * sc)
        row[b] = v
        tot += v
    return tot


@njit(cache=True)
def spectral_edges_complex(R, scale, err, thresh):
    """:func:`spectral_edges` of the magnitudes ``sqrt(re^2 + im^2) * scale`` of complex spectra ``R`` given as
    (re, im) pairs (rows x 2 bins), computed in ``R``'s precision, the DC bin set to 0. For approximate spectra
    (float32, ``err`` > 0) only: the totals are float64 sums in no fixed order (see :func:`_magnitudes32`), not
    numpy's pairwise sum."""
    T, nb = R.shape[0], R.shape[1] // 2
    lvl = np.zeros(T)
    on = np.ones(T, dtype=np.int64)
    off = np.full(T, -1, dtype=np.int64)
    sure = np.ones(T, dtype=np.bool_)
    row = np.empty(nb)
    sc = R.dtype.type(scale)
    for t in range(T):
        tot = _magnitudes32(R, t, sc, row)
        lvl[t], on[t], off[t], sure[t] = _edges_of(row, tot, err[t], thresh)
    return lvl, on, off, sure


@njit(cache=True)
def onset_envelope(db):
    """librosa's onset strength (lag 1, max_size 1, centred, mean over bands) of a dB spectrogram ``db`` (bands x
    frames, as ``power_to_db`` gives it), operation for operation: each band's positive frame-to-frame rise
    (``np.maximum(0.0, d)``), summed over the bands in band order (numpy's reduction along the outer axis) and
    divided by their number, then shifted three frames right behind zeros (lag 1 plus n_fft // (2 hop) = 2)."""
    M, T = db.shape
    out = np.zeros(T)
    acc = np.zeros(max(T - 1, 0))
    for m in range(M):
        for t in range(T - 1):
            d = db[m, t + 1] - db[m, t]
            acc[t] += 0.0 if 0.0 >= d else d
    for t in range(3, T):
        out[t] = acc[t - 3] / M
    return out


@njit(cache=True)
def _mean(x, lo, hi):
    """numba's ``x[lo:hi].mean()`` (one running sum, then a division), as librosa's compiled peak picker takes it."""
    c = 0.0
    for i in range(lo, hi):
        c += x[i]
    return c / (hi - lo)


@njit(cache=True)
def peak_backtrack(x, pre_max, post_max, pre_avg, post_avg, delta, wait):
    """librosa's peak picking (``util.peak_pick``, sparse) of the normalised onset strength ``x``, each peak then moved
    back to the last local minimum of ``x`` at or before it (``onset.onset_backtrack`` with ``x`` as the energy:
    frames m in 1 .. len - 2 with x[m] <= x[m - 1] and x[m] < x[m + 1], else frame 0). The frames, in order."""
    n = x.shape[0]
    peaks = np.zeros(n, np.bool_)
    peaks[0] = (x[0] >= _extent(x, 0, 1, min(post_max, n))[0]) & (x[0] >= _mean(x, 0, min(post_avg, n)) + delta)
    t = wait + 1 if peaks[0] else 1
    while t < n:
        lo = max(0, t - pre_max)
        if x[t] != _extent(x, lo, 1, min(t + post_max, n) - lo)[0]:
            t += 1
            continue
        if not x[t] >= _mean(x, max(0, t - pre_avg), min(t + post_avg, n)) + delta:
            t += 1
            continue
        peaks[t] = True
        t += wait + 1
    out = np.flatnonzero(peaks)
    for q in range(out.shape[0]):
        m = min(out[q], n - 2)
        while m >= 1 and not (x[m] <= x[m - 1] and x[m] < x[m + 1]):
            m -= 1
        out[q] = max(m, 0)
    return out
