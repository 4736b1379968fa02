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

# ISO 532 B / DIN 45631 (Zwicker) tables, as the AudioCommons loudness model uses them
RAP = np.array([45, 55, 65, 71, 80, 90, 100, 120], dtype=np.float64)
DLL = np.array([[-32, -24, -16, -10, -5, 0, -7, -3, 0, -2, 0],
                [-29, -22, -15, -10, -4, 0, -7, -2, 0, -2, 0],
                [-27, -19, -14, -9, -4, 0, -6, -2, 0, -2, 0],
                [-25, -17, -12, -9, -3, 0, -5, -2, 0, -2, 0],
                [-23, -16, -11, -7, -3, 0, -4, -1, 0, -1, 0],
                [-20, -14, -10, -6, -3, 0, -4, -1, 0, -1, 0],
                [-18, -12, -9, -6, -2, 0, -3, -1, 0, -1, 0],
                [-15, -10, -8, -4, -2, 0, -3, -1, 0, -1, 0]], dtype=np.float64)
LTQ = np.array([30, 18, 12, 8, 7, 6, 5, 4, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3, 3], dtype=np.float64)
A0 = np.array([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, -0.5, -1.6, -3.2, -5.4, -5.6, -4, -1.5, 2, 5, 12], dtype=np.float64)
DCB = np.array([-0.25, -0.6, -0.8, -0.8, -0.5, 0, 0.5, 1.1, 1.5, 1.7, 1.8, 1.8, 1.7, 1.6, 1.4, 1.2, 0.8, 0.5, 0,
                -0.5], dtype=np.float64)
ZUP = np.array([0.9, 1.8, 2.8, 3.5, 4.4, 5.4, 6.6, 7.9, 9.2, 10.6, 12.3, 13.8, 15.2, 16.7, 18.1, 19.3, 20.6, 21.8,
                22.7, 23.6, 24], dtype=np.float64)
RNS = np.array([21.5, 18, 15.1, 11.5, 9, 6.1, 4.4, 3.1, 2.13, 1.36, 0.82, 0.42, 0.30, 0.22, 0.15, 0.10, 0.035, 0],
               dtype=np.float64)
USL = np.array([[13.0, 8.2, 6.3, 5.5, 5.5, 5.5, 5.5, 5.5], [9.0, 7.5, 6.0, 5.1, 4.5, 4.5, 4.5, 4.5],
                [7.8, 6.7, 5.6, 4.9, 4.4, 3.9, 3.9, 3.9], [6.2, 5.4, 4.6, 4.0, 3.5, 3.2, 3.2, 3.2],
                [4.5, 3.8, 3.6, 3.2, 2.9, 2.7, 2.7, 2.7], [3.7, 3.0, 2.8, 2.35, 2.2, 2.2, 2.2, 2.2],
                [2.9, 2.3, 2.1, 1.9, 1.8, 1.7, 1.7, 1.7], [2.4, 1.7, 1.5, 1.35, 1.3, 1.3, 1.3, 1.3],
                [1.95, 1.45, 1.3, 1.15, 1.1, 1.1, 1.1, 1.1], [1.5, 1.2, 0.94, 0.86, 0.82, 0.82, 0.82, 0.82],
                [0.72, 0.67, 0.64, 0.63, 0.62, 0.62, 0.62, 0.62], [0.59, 0.53, 0.51, 0.50, 0.42, 0.42, 0.42, 0.42],
                [0.40, 0.33, 0.26, 0.24, 0.24, 0.22, 0.22, 0.22], [0.27, 0.21, 0.20, 0.18, 0.17, 0.17, 0.17, 0.17],
                [0.16, 0.15, 0.14, 0.12, 0.11, 0.11, 0.11, 0.11], [0.12, 0.11, 0.10, 0.08, 0.08, 0.08, 0.08, 0.08],
                [0.09, 0.08, 0.07, 0.06, 0.06, 0.06, 0.06, 0.05], [0.06, 0.05, 0.03, 0.02, 0.02, 0.02, 0.02, 0.02]],
               dtype=np.float64)

_NS_MAX = 1024  # room for the specific-loudness pattern (240 values of 0.1 Bark are used)


@njit(cache=True)
def _arange_len(start, stop, step):
    n = int(np.ceil((stop - start) / step))
    return max(n, 0)


@njit(cache=True)
def _fill_ns(ns, iz, length, z, k, z2, level, z1, slope):
    """Specific loudness ``level - (k - z1) * slope`` into ``ns`` at the 0.1-Bark steps ``k`` from ``z`` to ``z2``
    (``slope`` 0: a flat stretch at ``level``; ``x - 0.0`` is ``x``, so that case is exact). Returns the updated
    (iz, length, z, k); ``k`` is passed in so that an empty stretch leaves it as it was."""
    cnt = _arange_len(z, z2 + 0.01, 0.1)
    delta = (z + 0.1) - z
    for q in range(cnt):
        k = z + q * delta
        v = level - (k - z1) * slope
        if iz == length and length < _NS_MAX:
            ns[iz] = v
            length += 1
        elif iz < length:
            ns[iz] = v
        if k < (z2 - 0.05):
            iz += 1
    return iz, length, np.rint(k * 10) * 0.1, k


@njit(cache=True)
def _zwicker_one(P, ns):
    """Total loudness (sone) of one window from its 28 third-octave levels ``P`` (dB, 25 Hz - 12.5 kHz); fills
    ``ns`` with the specific loudness pattern in 0.1-Bark steps and returns (N, number of values written)."""
    Ti = np.zeros(11)
    for i in range(11):
        j = 0
        while P[i] > (RAP[j] - DLL[j, i]) and j < 7:
            j += 1
        Ti[i] = 10.0 ** ((P[i] + DLL[j, i]) / 10.0)
    Gi = np.zeros(3)
    Gi[0] = Ti[0] + Ti[1] + Ti[2] + Ti[3] + Ti[4] + Ti[5]
    Gi[1] = Ti[6] + Ti[7] + Ti[8]
    Gi[2] = Ti[9] + Ti[10]
    LCB = np.zeros(3)
    for i in range(3):
        if Gi[i] > 0:
            LCB[i] = 10.0 * np.log10(Gi[i])
    Nm = np.zeros(21)
    for i in range(20):
        Le = P[i + 8]
        if i <= 2:
            Le = LCB[i]
        Lk = Le - A0[i]
        if Le > LTQ[i]:
            Le = Lk - DCB[i]
            mp1 = 0.0635 * 10.0 ** (0.025 * LTQ[i])
            mp2 = (1.0 - 0.25 + 0.25 * 10.0 ** (0.1 * (Le - LTQ[i]))) ** 0.25 - 1.0
            v = mp1 * mp2
            Nm[i] = v if v > 0 else 0.0
    korry = 0.4 + 0.32 * Nm[0] ** 0.2
    if korry > 1:
        korry = 1.0
    Nm[0] = Nm[0] * korry

    N = 0.0
    z1 = 0.0
    n1 = 0.0
    n2 = 0.0
    z2 = 0.0
    j = 17
    iz = 0
    z = 0.1
    k = np.nan
    length = 0
    for i in range(21):
        ig = i - 1
        if ig > 7:
            ig = 7
        if ig < 0:
            ig = 7  # the reference indexes the slope table with -1 here: its last column
        control = 1
        while z1 < ZUP[i] or control == 1:
            if n1 < Nm[i]:
                j = 0
                while RNS[j] > Nm[i]:
                    j += 1
            if n1 <= Nm[i]:
                z2 = ZUP[i]
                n2 = Nm[i]
                N += n2 * (z2 - z1)
                iz, length, z, k = _fill_ns(ns, iz, length, z, k, z2, n2, 0.0, 0.0)
            if n1 > Nm[i]:
                n2 = RNS[j]
                if n2 < Nm[i]:
                    n2 = Nm[i]
                slope = USL[j, ig]
                dz = np.rint((n1 - n2) / slope * 10) * 0.1
                if dz == 0:
                    dz = 0.1
                z2 = z1 + dz
                if z2 > ZUP[i]:
                    z2 = ZUP[i]
                    dz = z2 - z1
                    n2 = n1 - dz * slope
                N += dz * (n1 + n2) / 2.0
                iz, length, z, k = _fill_ns(ns, iz, length, z, k, z2, n1, z1, slope)
            if n2 == RNS[j]:
                j += 1
            if j > 17:
                j = 17
            n1 = n2
            z1 = np.rint(z2 * 10) * 0.1
            control += 1
    if N < 0:
        N = 0.0
    if N <= 16:
        N = np.floor(N * 1000 + 0.5) / 1000.0
    else:
        N = np.floor(N * 100 + 0.05) / 100.0
    return N, length


@njit(cache=True)
def zwicker(P):
    """:func:`_zwicker_one` over the rows of ``P`` (windows x 28): total loudness, the 240-value specific loudness
    patterns, and whether each pattern was complete (the reference fails on an incomplete one)."""
    W = P.shape[0]
    N = np.zeros(W)
    spec = np.zeros((W, 240))
    ok = np.ones(W, dtype=np.bool_)
    ns = np.zeros(_NS_MAX)
    for w in range(W):
        N[w], length = _zwicker_one(P[w], ns)
        if length < 240:
            ok[w] = False
        else:
            spec[w] = ns[:240]
    return N, spec, ok


@njit(cache=True)
def _block_sum(a, lo, n):
    """numpy's pairwise summation of a run of at most 128 values: eight interleaved partial sums (under 8 values:
    one running sum)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    r0, r1, r2, r3 = a[lo], a[lo + 1], a[lo + 2], a[lo + 3]
    r4, r5, r6, r7 = a[lo + 4], a[lo + 5], a[lo + 6], a[lo + 7]
    i = 8
    m = n - n % 8
    while i < m:
        j = lo + i
        r0 += a[j]
        r1 += a[j + 1]
        r2 += a[j + 2]
        r3 += a[j + 3]
        r4 += a[j + 4]
        r5 += a[j + 5]
        r6 += a[j + 6]
        r7 += a[j + 7]
        i += 8
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    while i < n:
        res += a[lo + i]
        i += 1
    return res


@njit(cache=True)
def pairwise_sum(a, lo, n):
    """``np.sum(a[lo:lo + n])`` for contiguous float64 ``a``, with numpy's pairwise summation (runs of up to 128
    values summed by :func:`_block_sum`, longer ones halved at a multiple of 8 and the halves' sums added), so
    the rounding is numpy's. The halving is walked with an explicit stack: numba's cache cannot hold recursive
    functions (a cached one crashes the process that loads it)."""
    if n <= 128:
        return _block_sum(a, lo, n)
    seg_lo = np.empty(64, np.int64)
    seg_n = np.empty(64, np.int64)
    stage = np.zeros(64, np.int64)  # 0: left half next, 1: right half next, 2: both summed
    sums = np.empty(64)
    top, ns = 0, 0
    seg_lo[0], seg_n[0] = lo, n
    while top >= 0:
        m = seg_n[top]
        if m <= 128:
            sums[ns] = _block_sum(a, seg_lo[top], m)
            ns += 1
            top -= 1
            continue
        half = m // 2
        half -= half % 8
        if stage[top] == 0:
            stage[top] = 1
            seg_lo[top + 1], seg_n[top + 1], stage[top + 1] = seg_lo[top], half, 0
            top += 1
        elif stage[top] == 1:
            stage[top] = 2
            seg_lo[top + 1], seg_n[top + 1], stage[top + 1] = seg_lo[top] + half, m - half, 0
            top += 1
        else:
            sums[ns - 2] = sums[ns - 2] + sums[ns - 1]
            ns -= 1
            top -= 1
    return sums[0]


@njit(cache=True)
def _subframe(x, base, down, n, buf, sq):
    """(variance as numpy computes it, maximum, minimum) of ``x[base::down][:n]``."""
    hi = -np.inf
    lo = np.inf
    for i in range(n):
        v = x[base + i * down]
        buf[i] = v
        hi = max(hi, v)
        lo = min(lo, v)
    mean = pairwise_sum(buf, 0, n) / n
    for i in range(n):
        d = buf[i] - mean
        sq[i] = d * d
    return pairwise_sum(sq, 0, n) / n, hi, lo


@njit(cache=True)
def rms_windows(x, step, hop):
    """See ``_onsets.rms_envelope``."""
    n = x.shape[0]
    sq = x * x
    count = 0
    while count * hop < n - step:
        count += 1
    out = np.empty(count + 1)
    for w in range(count):
        out[w] = np.sqrt(pairwise_sum(sq, w * hop, step) / step)
    last = count * hop
    out[count] = np.sqrt(pairwise_sum(sq, last, n - last) / (n - last)) if last < n else np.nan
    return out


@njit(cache=True)
def decay_runs(x, starts, down, ns, nsub):
    """For each frame of the blind RT60 estimate (frame ``f`` is ``x[starts[f]::down]``), how many of its
    ``nsub`` sub-frames in a row, from the first, are followed by one with a smaller variance (numpy's, to the bit),
    a smaller maximum and a larger minimum. The first sub-frame is ``ns`` samples, the others ``ns + 1`` (one
    sample of overlap), the k-th (from 0) starting at ``k * ns``. A frame's sub-frames are examined only until the
    first that does not decay (most frames stop after one or two)."""
    F = starts.shape[0]
    run = np.zeros(F, dtype=np.int64)
    buf = np.empty(ns + 1)
    sq = np.empty(ns + 1)
    for f in range(F):
        v0, h0, l0 = _subframe(x, starts[f], down, ns, buf, sq)
        for k in range(1, nsub):
            v1, h1, l1 = _subframe(x, starts[f] + k * ns * down, down, ns + 1, buf, sq)
            if not (v1 < v0 and h1 < h0 and l1 > l0):
                break
            run[f] += 1
            v0, h0, l0 = v1, h1, l1
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
def mel_power(S, basis, lo, hi):
    """The mel spectrograms (clips x mels x frames) of power spectrograms ``S`` (clips x frames x bins) for a mel
    filter bank whose row m is zero outside bins ``lo[m]:hi[m]``, summing only the nonzero weights."""
    C, T, _ = S.shape
    M = basis.shape[0]
    out = np.zeros((C, M, T))
    for c in range(C):
        for t in range(T):
            row = S[c, t]
            for m in range(M):
                acc = 0.0
                for f in range(lo[m], hi[m]):
                    acc += basis[m, f] * row[f]
                out[c, m, t] = acc
    return out


@njit(cache=True)
def overlap_add(frames, hop, out):
    """Add the rows of ``frames`` into ``out`` every ``hop`` samples, in order (librosa's overlap-add)."""
    T, n = frames.shape
    L = out.shape[0]
    for t in range(T):
        s = t * hop
        for i in range(min(n, L - s)):
            out[s + i] += frames[t, i]


@njit(cache=True)
def frame_energy(x, nper, hop, win):
    """Energy of each frame of ``x`` (``nper`` samples every ``hop``) after removing its mean (numpy's) and applying
    ``win``: what a spectrogram's power spectrum of the frame sums to, divided by its length and scale."""
    T = (x.shape[0] - nper) // hop + 1
    out = np.empty(T)
    for t in range(T):
        s = t * hop
        mean = pairwise_sum(x, s, nper) / nper
        e = 0.0
        for i in range(nper):
            v = win[i] * (x[s + i] - mean)
            e += v * v
        out[t] = e
    return out


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


@njit(cache=True)
def roughness_frames(norm_spec, spec, freq, cthr):
    """Vassilakis roughness of each column of a magnitude spectrogram: peaks picked on the normalised spectrogram,
    summed over peak pairs with Plomp-Levelt dissonance curves. Per pair (a, b), ``(va vb)^0.1 (2 vb / (va +
    vb))^3.11 / 2`` is taken as one exponential of the peaks' logarithms (the same value to rounding, at a third
    of the cost of the two powers)."""
    T = spec.shape[1]
    out = np.zeros(T)
    log2 = np.log(2.0)
    for t in range(T):
        _, lev, f = mirpeaks(np.ascontiguousarray(norm_spec[:, t]), np.ascontiguousarray(spec[:, t]), freq, cthr)
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
def median_filter(x, out, k):
    """Median of every ``k``-sample window (``k`` odd, centred) along axis 0 of 2-D ``x`` into ``out``, edges
    mirrored as scipy.ndimage's mode 'reflect' (d c b a | a b c d): the values of scipy.ndimage.median_filter.

    The columns (lanes) are filtered 64 at a time, each keeping its window sorted: a step removes the sample that
    leaves and inserts the one that enters with a branch-free merge over the window (one compare-and-select pass),
    which the compiler vectorises across the lanes; the first window is built the same way, from infinities. ``x``
    and ``out`` may be transposed views. The samples must not be NaN or infinite."""
    n, L = x.shape
    h = k // 2
    src = np.empty(n + 2 * h, np.int64)  # the mirrored index of every position of the extended axis
    for q in range(n + 2 * h):
        m = (q - h) % (2 * n)
        if m >= n:
            m = 2 * n - 1 - m
        src[q] = m
    C = 64
    buf = np.empty((k, C))
    prev = np.empty(C)
    old = np.empty(C)
    new = np.empty(C)
    for l0 in range(0, L, C):
        c = min(C, L - l0)
        buf[:, :] = np.inf  # the first k steps each replace an infinity with a sample: the first window, sorted
        for step in range(n + k - 1):
            for lane in range(c):
                old[lane] = np.inf if step < k else x[src[step - k], l0 + lane]
                new[lane] = x[src[step], l0 + lane]
                prev[lane] = -np.inf
            # sorted window without `old` (d), then with `new` merged in: out[j] = max(d[j - 1], min(d[j], new))
            for j in range(k):
                bj = buf[j]
                if j + 1 < k:
                    bj1 = buf[j + 1]
                    for lane in range(c):
                        a = bj[lane]
                        d = a if a < old[lane] else bj1[lane]
                        m = d if d < new[lane] else new[lane]
                        p = prev[lane]
                        bj[lane] = m if m > p else p
                        prev[lane] = d
                else:
                    for lane in range(c):
                        a = bj[lane]
                        d = a if a < old[lane] else np.inf
                        m = d if d < new[lane] else new[lane]
                        p = prev[lane]
                        bj[lane] = m if m > p else p
            if step >= k - 1:
                for lane in range(c):
                    out[step - k + 1, l0 + lane] = buf[h, lane]


@njit(cache=True, error_model="numpy")
def percussive_stft(D, mag, harm, perc, out):
    """The percussive part of an STFT as librosa's ``hpss`` gives it (soft mask of power 2, zeros split evenly):
    ``(mag * mask) * phase`` with librosa's magphase and softmask, operation for operation. ``D`` and ``out`` are
    complex arrays viewed as float64 (re, im pairs); ``mag``, ``harm``, ``perc`` the magnitudes and their
    harmonic (time) and percussive (frequency) medians, all C-contiguous and of one shape."""
    Dv = D.reshape(-1)
    ov = out.reshape(-1)
    s_ = mag.reshape(-1)
    h_ = harm.reshape(-1)
    p_ = perc.reshape(-1)
    tiny = 2.2250738585072014e-308  # np.finfo(float64).tiny
    for i in range(s_.shape[0]):
        s = s_[i]
        x = p_[i]
        r = h_[i]
        z = x if x > r else r
        a = x / z
        a = a * a
        b = r / z
        b = b * b
        m = 0.5 if z < tiny else a / (a + b)
        nz = 1.0 if s == 0 else 0.0
        re = Dv[2 * i] / (s + nz) + nz
        im = Dv[2 * i + 1] / (s + nz)
        sm = s * m
        ov[2 * i] = sm * re
        ov[2 * i + 1] = sm * im


@njit(cache=True)
def _lfilter_row(b, a, x, y):
    """``y = scipy.signal.lfilter(b, a, x)`` for one row, with scipy's operations in scipy's order (transposed direct
    form II; ``b`` and ``a`` already divided by ``a[0]``). Orders 2 and 8 (the models' filters) keep their state in
    registers; others use a state array."""
    n = x.shape[0]
    if b.shape[0] == 3:
        b0, b1, b2 = b[0], b[1], b[2]
        a1, a2 = a[1], a[2]
        z0 = z1 = 0.0
        for k in range(n):
            v = x[k]
            o = z0 + b0 * v
            z0 = z1 + v * b1 - o * a1
            z1 = v * b2 - o * a2
            y[k] = o
    elif b.shape[0] == 9:
        b0, b1, b2, b3, b4, b5, b6, b7, b8 = b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]
        a1, a2, a3, a4, a5, a6, a7, a8 = a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]
        z0 = z1 = z2 = z3 = z4 = z5 = z6 = z7 = 0.0
        for k in range(n):
            v = x[k]
            o = z0 + b0 * v
            z0 = z1 + v * b1 - o * a1
            z1 = z2 + v * b2 - o * a2
            z2 = z3 + v * b3 - o * a3
            z3 = z4 + v * b4 - o * a4
            z4 = z5 + v * b5 - o * a5
            z5 = z6 + v * b6 - o * a6
            z6 = z7 + v * b7 - o * a7
            z7 = v * b8 - o * a8
            y[k] = o
    else:
        m = b.shape[0]
        z = np.zeros(m)
        for k in range(n):
            v = x[k]
            o = z[0] + b[0] * v
            for j in range(m - 2):
                z[j] = z[j + 1] + v * b[j + 1] - o * a[j + 1]
            z[m - 2] = v * b[m - 1] - o * a[m - 1]
            y[k] = o


@njit(cache=True)
def lfilter_rows(b, a, x):
    """scipy.signal.lfilter(b, a, x, axis=-1) for 2-D C-contiguous ``x`` (its values, to the bit)."""
    bn = b / a[0]
    an = a / a[0]
    out = np.empty_like(x)
    for r in range(x.shape[0]):
        _lfilter_row(bn, an, x[r], out[r])
    return out


@njit(cache=True)
def band_energy(b, a, x):
    """For each row of ``x`` filtered by (b, a) as :func:`lfilter_rows`: the sum of squares (numpy's pairwise sum
    of ``y ** 2``, to the bit) and the maximum, without keeping the filtered rows."""
    bn = b / a[0]
    an = a / a[0]
    rows, n = x.shape
    y = np.empty(n)
    ss = np.empty(rows)
    mx = np.empty(rows)
    for r in range(rows):
        _lfilter_row(bn, an, x[r], y)
        top = -np.inf
        for k in range(n):
            top = max(top, y[k])
            y[k] = y[k] * y[k]
        ss[r] = pairwise_sum(y, 0, n)
        mx[r] = top
    return ss, mx


@njit(cache=True)
def biquad_cascade(b, a, x, passes):
    """``passes`` runs of the 2nd-order filter (b, a) along the rows of 2-D ``x``, as scipy.signal.lfilter computes
    each (transposed direct form II, coefficients divided by ``a[0]``, the same operations in the same order), the
    passes fused sample by sample. ``passes`` is 1 to 3."""
    rows, n = x.shape
    out = np.empty_like(x)
    b0, b1, b2 = b[0] / a[0], b[1] / a[0], b[2] / a[0]
    a1, a2 = a[1] / a[0], a[2] / a[0]
    for r in range(rows):
        p0 = p1 = q0 = q1 = s0 = s1 = 0.0
        for k in range(n):
            v = x[r, k]
            y = p0 + b0 * v
            p0 = p1 + v * b1 - y * a1
            p1 = v * b2 - y * a2
            v = y
            if passes > 1:
                y = q0 + b0 * v
                q0 = q1 + v * b1 - y * a1
                q1 = v * b2 - y * a2
                v = y
            if passes > 2:
                y = s0 + b0 * v
                s0 = s1 + v * b1 - y * a1
                s1 = v * b2 - y * a2
                v = y
            out[r, k] = v
    return out


@njit(cache=True)
def _edges(row, e, thresh):
    """:func:`spectral_edges` of one row (float64 magnitudes, DC bin 0) with error bound ``e``."""
    nb = row.shape[0]
    s = pairwise_sum(row, 0, nb)  # numpy's sum, as timbral_models takes it
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
    for b in range(nb - 1, -1, -1):
        if row[b] >= thresh - e:
            last = b
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


@njit(cache=True)
def spectral_edges_complex(R, scale, err, thresh):
    """:func:`spectral_edges` of the magnitudes ``sqrt(re^2 + im^2) * scale`` of complex spectra ``R`` given as
    (re, im) pairs (rows x 2 bins), computed in ``R``'s precision, the DC bin set to 0."""
    T, nb = R.shape[0], R.shape[1] // 2
    lvl = np.zeros(T)
    on = np.ones(T, dtype=np.int64)
    off = np.full(T, -1, dtype=np.int64)
    sure = np.ones(T, dtype=np.bool_)
    row = np.empty(nb)
    sc = R.dtype.type(scale)
    for t in range(T):
        row[0] = 0.0
        for b in range(1, nb):
            re = R[t, 2 * b]
            im = R[t, 2 * b + 1]
            row[b] = np.sqrt(re * re + im * im) * sc
        lvl[t], on[t], off[t], sure[t] = _edges(row, err[t], thresh)
    return lvl, on, off, sure


