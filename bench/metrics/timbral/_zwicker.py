"""numba kernels of Zwicker's loudness (ISO 532 B / DIN 45631) as the AudioCommons models use it: the specific
loudness pattern of every 4096-sample window from its third-octave levels (:func:`zwicker`), called by
:func:`bench.metrics.timbral._front.loudness_windows` for hardness, warmth, sharpness and boominess. Split from
:mod:`bench.metrics.timbral._kernels` (whose notes on caching and exactness hold here too) to keep both readable."""

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
