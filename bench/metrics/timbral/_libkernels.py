"""numba versions of the library routines the timbral models lean on (numpy's pairwise sum and means, scipy's
lfilter, librosa's HPSS median filters and soft mask, its overlap-add and mel bank), repeating each routine's
arithmetic operation for operation so that the values are the library's to the bit (the tests compare them), but
fused, without the temporary arrays, or over many rows or clips at once. Compiled once and cached on disk like
``_kernels`` (and, like them, never recursive: numba cannot reload a recursive function from its cache)."""

from __future__ import annotations

import numpy as np
from numba import njit


@njit(cache=True)
def _block_sum(a, lo, n):
    """numpy's pairwise summation of a run of at most 128 values: eight interleaved partial sums (under 8 values:
    one running sum). The run is read through a slice with ``range`` indices, which the compiler can prove
    non-negative: ~1.5x the speed of indexing ``a`` at ``lo + i`` (same additions, same order)."""
    if n < 8:
        res = 0.0
        for i in range(lo, lo + n):
            res += a[i]
        return res
    b = a[lo:lo + n]
    r0, r1, r2, r3 = b[0], b[1], b[2], b[3]
    r4, r5, r6, r7 = b[4], b[5], b[6], b[7]
    m = n - n % 8
    for i in range(8, m, 8):
        r0 += b[i]
        r1 += b[i + 1]
        r2 += b[i + 2]
        r3 += b[i + 3]
        r4 += b[i + 4]
        r5 += b[i + 5]
        r6 += b[i + 6]
        r7 += b[i + 7]
    res = ((r0 + r1) + (r2 + r3)) + ((r4 + r5) + (r6 + r7))
    for i in range(m, n):
        res += b[i]
    return res


# numpy's halving, unrolled: _pwK sums runs that need at most K halvings (every n up to 122,888 for K = 10), with
# no explicit stack to allocate (the stack version below allocated four arrays per call, and the kernels call this
# once per window, frame or sub-frame)
@njit(cache=True)
def _pw1(a, lo, n):
    if n <= 128:
        return _block_sum(a, lo, n)
    h = n // 2
    h -= h % 8
    return _block_sum(a, lo, h) + _block_sum(a, lo + h, n - h)

@njit(cache=True)
def _pw2(a, lo, n):
    if n <= 128:
        return _block_sum(a, lo, n)
    h = n // 2
    h -= h % 8
    return _pw1(a, lo, h) + _pw1(a, lo + h, n - h)

@njit(cache=True)
def _pw3(a, lo, n):
    if n <= 128:
        return _block_sum(a, lo, n)
    h = n // 2
    h -= h % 8
    return _pw2(a, lo, h) + _pw2(a, lo + h, n - h)

@njit(cache=True)
def _pw4(a, lo, n):
    if n <= 128:
        return _block_sum(a, lo, n)
    h = n // 2
    h -= h % 8
    return _pw3(a, lo, h) + _pw3(a, lo + h, n - h)

@njit(cache=True)
def _pw5(a, lo, n):
    if n <= 128:
        return _block_sum(a, lo, n)
    h = n // 2
    h -= h % 8
    return _pw4(a, lo, h) + _pw4(a, lo + h, n - h)

@njit(cache=True)
def _pw6(a, lo, n):
    if n <= 128:
        return _block_sum(a, lo, n)
    h = n // 2
    h -= h % 8
    return _pw5(a, lo, h) + _pw5(a, lo + h, n - h)

@njit(cache=True)
def _pw7(a, lo, n):
    if n <= 128:
        return _block_sum(a, lo, n)
    h = n // 2
    h -= h % 8
    return _pw6(a, lo, h) + _pw6(a, lo + h, n - h)

@njit(cache=True)
def _pw8(a, lo, n):
    if n <= 128:
        return _block_sum(a, lo, n)
    h = n // 2
    h -= h % 8
    return _pw7(a, lo, h) + _pw7(a, lo + h, n - h)

@njit(cache=True)
def _pw9(a, lo, n):
    if n <= 128:
        return _block_sum(a, lo, n)
    h = n // 2
    h -= h % 8
    return _pw8(a, lo, h) + _pw8(a, lo + h, n - h)

@njit(cache=True)
def _pw10(a, lo, n):
    if n <= 128:
        return _block_sum(a, lo, n)
    h = n // 2
    h -= h % 8
    return _pw9(a, lo, h) + _pw9(a, lo + h, n - h)


@njit(cache=True)
def pairwise_sum(a, lo, n):
    """``np.sum(a[lo:lo + n])`` for contiguous float64 ``a``, with numpy's pairwise summation (runs of up to 128
    values summed by :func:`_block_sum`, longer ones halved at a multiple of 8 and the halves' sums added), so
    the rounding is numpy's. Up to 122,888 values through the unrolled halvings ``_pw10``; longer runs walk the
    halving with an explicit stack: numba's cache cannot hold recursive functions (a cached one crashes the process
    that loads it)."""
    if n <= 122888:
        return _pw10(a, lo, n)
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
def frame_energy(x, nper, hop, win):
    """Energy of each frame of ``x`` (``nper`` samples every ``hop``) after removing its mean (numpy's) and applying
    ``win``: what a spectrogram's power spectrum of the frame sums to, divided by its length and scale."""
    T = (x.shape[0] - nper) // hop + 1
    out = np.empty(T)
    m = nper - nper % 8
    for t in range(T):
        s = t * hop
        mean = pairwise_sum(x, s, nper) / nper
        # eight interleaved partial sums (the energy stands in for a sum over the spectrum, so it agrees with the
        # reference to rounding whatever the order; one running sum would wait on each addition)
        e0 = e1 = e2 = e3 = e4 = e5 = e6 = e7 = 0.0
        for i in range(0, m, 8):
            v0 = win[i] * (x[s + i] - mean)
            v1 = win[i + 1] * (x[s + i + 1] - mean)
            v2 = win[i + 2] * (x[s + i + 2] - mean)
            v3 = win[i + 3] * (x[s + i + 3] - mean)
            v4 = win[i + 4] * (x[s + i + 4] - mean)
            v5 = win[i + 5] * (x[s + i + 5] - mean)
            v6 = win[i + 6] * (x[s + i + 6] - mean)
            v7 = win[i + 7] * (x[s + i + 7] - mean)
            e0 += v0 * v0
            e1 += v1 * v1
            e2 += v2 * v2
            e3 += v3 * v3
            e4 += v4 * v4
            e5 += v5 * v5
            e6 += v6 * v6
            e7 += v7 * v7
        e = ((e0 + e1) + (e2 + e3)) + ((e4 + e5) + (e6 + e7))
        for i in range(m, nper):
            v = win[i] * (x[s + i] - mean)
            e += v * v
        out[t] = e
    return out


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
def _lfilter8_pair(b, a, x0, x1, y0, y1):
    """:func:`_lfilter_row` of an 8th-order filter (``b``, ``a`` normalised) over two rows at once: the same
    operations per row, interleaved so that the two recursions' latencies overlap."""
    b0, b1, b2, b3, b4, b5, b6, b7, b8 = b[0], b[1], b[2], b[3], b[4], b[5], b[6], b[7], b[8]
    a1, a2, a3, a4, a5, a6, a7, a8 = a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]
    p0 = p1 = p2 = p3 = p4 = p5 = p6 = p7 = 0.0
    q0 = q1 = q2 = q3 = q4 = q5 = q6 = q7 = 0.0
    for k in range(x0.shape[0]):
        v = x0[k]
        w = x1[k]
        o = p0 + b0 * v
        r = q0 + b0 * w
        p0 = p1 + v * b1 - o * a1
        q0 = q1 + w * b1 - r * a1
        p1 = p2 + v * b2 - o * a2
        q1 = q2 + w * b2 - r * a2
        p2 = p3 + v * b3 - o * a3
        q2 = q3 + w * b3 - r * a3
        p3 = p4 + v * b4 - o * a4
        q3 = q4 + w * b4 - r * a4
        p4 = p5 + v * b5 - o * a5
        q4 = q5 + w * b5 - r * a5
        p5 = p6 + v * b6 - o * a6
        q5 = q6 + w * b6 - r * a6
        p6 = p7 + v * b7 - o * a7
        q6 = q7 + w * b7 - r * a7
        p7 = v * b8 - o * a8
        q7 = w * b8 - r * a8
        y0[k] = o
        y1[k] = r


@njit(cache=True)
def band_energy(b, a, x):
    """For each row of ``x`` filtered by (b, a) as :func:`lfilter_rows`: the sum of squares (numpy's pairwise sum
    of ``y ** 2``, to the bit) and the maximum, without keeping the filtered rows. 8th-order filters (the
    third-octave bands) run two rows at a time (~12 % faster, the same values)."""
    bn = b / a[0]
    an = a / a[0]
    rows, n = x.shape
    y = np.empty((2, n))
    ss = np.empty(rows)
    mx = np.empty(rows)
    r = 0
    while r < rows:
        two = r + 1 < rows and bn.shape[0] == 9
        if two:
            _lfilter8_pair(bn, an, x[r], x[r + 1], y[0], y[1])
        else:
            _lfilter_row(bn, an, x[r], y[0])
        for q in range(2 if two else 1):
            yq = y[q]
            top = -np.inf
            for k in range(n):
                top = max(top, yq[k])
                yq[k] = yq[k] * yq[k]
            ss[r + q] = pairwise_sum(yq, 0, n)
            mx[r + q] = top
        r += 2 if two else 1
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
def median_filter(x, out, k):
    """Median of every ``k``-sample window (``k`` odd, centred) along axis 0 of 2-D ``x`` into ``out``, edges
    mirrored as scipy.ndimage's mode 'reflect' (d c b a | a b c d): the values of scipy.ndimage.median_filter.

    The columns (lanes) are filtered 64 at a time, each keeping its window sorted: a step removes the sample that
    leaves and inserts the one that enters with a branch-free merge over the window (one compare-and-select pass),
    which the compiler vectorises across the lanes; the window starts as infinities, each insertion of a sample
    with nothing leaving pushing one out. The first window is x[h-1] .. x[0], x[0] .. x[h] (h = k // 2: the
    mirrored edge repeats the first h samples), so x[0] .. x[h-1] are sorted in a window of h, each value is
    doubled and x[h] merged in: a quarter of the work of inserting the k samples one by one (which is still done
    when the axis is not longer than h). ``x`` and ``out`` may be transposed views. The samples must not be NaN or
    infinite."""
    n, L = x.shape
    h = k // 2
    src = np.empty(n + 2 * h, np.int64)  # the mirrored index of every position of the extended axis
    for q in range(n + 2 * h):
        m = (q - h) % (2 * n)
        if m >= n:
            m = 2 * n - 1 - m
        src[q] = m
    pre = h if n > h else 0  # steps sorting x[0] .. x[h-1] in a half window
    first = k - 1 if pre else 0  # the first step of the whole window
    C = 64
    buf = np.empty((k, C))
    prev = np.empty(C)
    old = np.empty(C)
    new = np.empty(C)
    for l0 in range(0, L, C):
        c = min(C, L - l0)
        buf[:, :] = np.inf
        for it in range(pre + n + k - 1 - first):
            if it < pre:
                size = h
                step = -1
                for lane in range(c):
                    old[lane] = np.inf
                    new[lane] = x[it, l0 + lane]
            else:
                size = k
                step = first + it - pre
                if pre and step == first:  # x[0] .. x[h-1] sorted in buf[:h]: each doubled into buf[:2h]
                    for j in range(h - 1, -1, -1):
                        for lane in range(c):
                            v = buf[j, lane]
                            buf[2 * j, lane] = v
                            buf[2 * j + 1, lane] = v
                for lane in range(c):
                    old[lane] = np.inf if step < k else x[src[step - k], l0 + lane]
                    new[lane] = x[src[step], l0 + lane]
            for lane in range(c):
                prev[lane] = -np.inf
            # sorted window without `old` (d), then with `new` merged in: out[j] = max(d[j - 1], min(d[j], new))
            for j in range(size):
                bj = buf[j]
                if j + 1 < size:
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
def overlap_add(frames, hop, out):
    """Add the rows of ``frames`` into ``out`` every ``hop`` samples, in order (librosa's overlap-add)."""
    T, n = frames.shape
    L = out.shape[0]
    for t in range(T):
        s = t * hop
        for i in range(min(n, L - s)):
            out[s + i] += frames[t, i]


@njit(cache=True)
def mel_power(mag, basis, lo, hi):
    """The mel spectrograms (clips x mels x frames) of the power spectrograms ``mag ** 2`` of magnitude
    spectrograms ``mag`` (clips x frames x bins), squared as they are read (numpy's square is ``v * v``), for a mel
    filter bank whose row m is zero outside bins ``lo[m]:hi[m]``, summing only the nonzero weights."""
    C, T, _ = mag.shape
    M = basis.shape[0]
    out = np.zeros((C, M, T))
    for c in range(C):
        for t in range(T):
            row = mag[c, t]
            for m in range(M):
                acc = 0.0
                for f in range(lo[m], hi[m]):
                    v = row[f]
                    acc += basis[m, f] * (v * v)
                out[c, m, t] = acc
    return out


@njit(cache=True)
def mel_power_block(mag, basis, lo, hi, out, t0):
    """:func:`mel_power` of one clip's frames ``t0`` .. ``t0 + len(mag) - 1`` (``mag``: frames x bins) into the
    columns of its mel spectrogram ``out`` (mels x frames)."""
    M = basis.shape[0]
    for t in range(mag.shape[0]):
        row = mag[t]
        for m in range(M):
            acc = 0.0
            for f in range(lo[m], hi[m]):
                v = row[f]
                acc += basis[m, f] * (v * v)
            out[m, t0 + t] = acc


@njit(cache=True)
def detrended_frames(x, nper, hop, win, nfft):
    """The frames scipy's spectrogram transforms (``nper`` samples of ``x`` every ``hop``, each frame's mean removed
    as numpy's ``mean`` computes it, times ``win``), zero-padded to ``nfft`` columns: ``win * (fr - fr.mean(-1))``
    of the sliding frames, to the bit, written once into the array the FFT reads."""
    T = (x.shape[0] - nper) // hop + 1
    out = np.empty((T, nfft)) if nper == nfft else np.zeros((T, nfft))  # every entry written, or padded with zeros
    for t in range(T):
        s = t * hop
        mean = pairwise_sum(x, s, nper) / nper
        for i in range(nper):
            out[t, i] = win[i] * (x[s + i] - mean)
    return out


@njit(cache=True)
def one_sided_power(X, scale):
    """``(re * re + im * im) * scale`` of complex spectra ``X`` (rows x bins) with the inner bins (all but the first
    and the last) doubled afterwards, as scipy's spectrogram scales a one-sided power spectrum; ``X`` viewed as
    float64 (re, im) pairs."""
    T, nb = X.shape[0], X.shape[1] // 2
    out = np.empty((T, nb))
    for t in range(T):
        for b in range(nb):
            re = X[t, 2 * b]
            im = X[t, 2 * b + 1]
            v = (re * re + im * im) * scale
            if 0 < b < nb - 1:
                v = v * 2
            out[t, b] = v
    return out
