"""``pairs:DIR``: recorded dry/wet pairs. ``DIR/dry/`` and ``DIR/wet/`` hold recordings with matching relative paths
(the suffix may differ: ``dry/a/take1.wav`` pairs with ``wet/a/take1.flac``); the wet one is the dry one processed
by whatever the user did (a real pedal, a real room, a mastering chain). Documented in docs/wild.md.

Files are found as for ``folder:PATH``; one pair is one source and its own group, and its split comes from a hash
of its id (:func:`bench.corpora.checks.assign_splits`). Structural problems are errors; a bad pair is left out:

- a dry file without a wet partner, or the reverse, or two files that would pair with the same partner: error
  when the corpus is planned, listing them (the layout is wrong, not one recording);
- when the corpus is planned, every pair is checked and a bad one is *left out* (named once in a warning with
  its reason, listed in the manifest), before splits are assigned: either file unreadable, silent, non-finite or
  too short for two segments; dry and wet at different sample rates (resample one side yourself, knowingly);
  dry and wet misaligned by more than :data:`MAX_LAG_MS` (5 ms), as :func:`estimate_lag` measures it (onset
  envelopes for the candidates, the waveform to place them; robust to delay, modulation, reverb and
  distortion). A pair within the tolerance is used as it is (not shifted);
- different lengths: both are cut to the shorter one (the end of the longer one, typically a reverb or delay tail,
  is dropped).

Both sides are mixed to mono and resampled to the working rate, and they share one gain: the one that brings the
dry side to the corpus loudness (-23 LUFS), lowered if either side would peak above 0.99. So the level change of
the processing is kept.
"""

from __future__ import annotations

import io
from pathlib import Path, PurePosixPath

import numpy as np

from bench import audio as A
from bench.cache import atomic_write_bytes, stable_hash
from bench.corpora import Corpus, CorpusError, SourceSpec, register_corpus
from bench.corpora.checks import assign_splits
from bench.corpora.folder import AUDIO_SUFFIXES, find_audio

MAX_LAG_MS = 5.0  # the largest dry/wet offset accepted (see estimate_lag for the accuracy)
SEARCH_SECONDS = 0.5  # lags are searched within +/- this
ALIGN_SECONDS = 30.0  # at most this much of each file is analysed
PREFER_ZERO = 0.9  # lag 0 wins when its score is at least this share of the best candidate's
WAVE_FLOOR = 0.05  # waveform correlations below this count as this (so the envelope still ranks candidates)
REFINE_MS = 5.0  # each envelope candidate is placed by the waveform correlation within +/- this
ENV_RATE = 16000  # the onset envelope is computed at this rate, one frame every 0.5 ms
_SHOW = 8  # names listed in an error


def onset_envelope(x: np.ndarray, sample_rate: int, *, hop_ms: float = 0.5, win_ms: float = 16.0,
                   lag_ms: float = 8.0) -> np.ndarray:
    """Spectral flux in 16 log-spaced bands (50 Hz - 8 kHz): the positive change of each band's log energy over
    ``lag_ms``, summed over bands, one value every ``hop_ms``. Onsets and note changes survive gain, EQ,
    distortion, modulation and reverb, which change the waveform far more than where events start."""
    x = A.resample(np.asarray(x, dtype=np.float32), sample_rate, ENV_RATE).astype(np.float64)
    hop, win = max(1, int(ENV_RATE * hop_ms / 1000)), int(ENV_RATE * win_ms / 1000)
    if len(x) < win + hop:
        return np.zeros(1)
    frames = np.lib.stride_tricks.sliding_window_view(x, win)[::hop] * np.hanning(win)
    power = np.abs(np.fft.rfft(frames, axis=1)) ** 2
    freqs = np.fft.rfftfreq(win, 1 / ENV_RATE)
    edges = np.geomspace(50, ENV_RATE / 2, 17)
    band = np.stack([power[:, (freqs >= lo) & (freqs < hi)].sum(axis=1)
                     for lo, hi in zip(edges[:-1], edges[1:], strict=True)], axis=1)
    # a floor 40 dB below each band's mean: silence (digital zeros before a late start, gaps) sits on the floor,
    # so the jump out of it is no larger than a loud onset's
    logb = np.log(np.maximum(band, 1e-4 * np.mean(band, axis=0) + 1e-20))
    k = max(1, int(lag_ms / hop_ms))
    flux = np.maximum(logb[k:] - logb[:-k], 0.0).sum(axis=1)
    return np.concatenate([np.zeros(k), flux])


def _xcorr(a: np.ndarray, b: np.ndarray, max_lag: int) -> tuple[np.ndarray, np.ndarray]:
    """Normalised cross-correlation ``c[l] ~ sum b[t] a[t - l]`` for |l| <= max_lag (mean removed)."""
    from scipy.signal import correlate, correlation_lags

    n = min(len(a), len(b))
    a, b = a[:n] - np.mean(a[:n]), b[:n] - np.mean(b[:n])
    c = correlate(b, a, mode="full", method="fft")
    lags = correlation_lags(n, n, mode="full")
    keep = np.abs(lags) <= max_lag
    norm = float(np.sqrt(np.sum(a * a) * np.sum(b * b))) or 1.0
    return lags[keep], c[keep] / norm


def estimate_lag(dry: np.ndarray, wet: np.ndarray, sample_rate: int, *, search_seconds: float = SEARCH_SECONDS,
                 max_seconds: float = ALIGN_SECONDS) -> tuple[int, float]:
    """(lag, score): ``wet[t] ~ dry[t - lag]``; positive: the wet file is late. ``score`` is the onset-envelope
    correlation at that lag (1 = the same events at the same times).

    (1) The onset envelopes (:func:`onset_envelope`) of both files are cross-correlated within
    +/- ``search_seconds``; every local peak (5 ms apart at least) within 70% of the highest is a candidate (12 at most), and so is zero.
    (2) Each candidate is placed to the sample by the waveform cross-correlation (either polarity) within
    +/- :data:`REFINE_MS` of it (of the peaks there within :data:`PREFER_ZERO` of the strongest, the one nearest
    the candidate), and scored by envelope correlation x waveform correlation (the latter at least
    :data:`WAVE_FLOOR`). Envelopes alone cannot tell one bar of a steady rhythm from the next, and waveforms alone
    cannot tell one period of a tone from the next; together they can, and where the waveforms are unalike (heavy
    modulation, a fully wet reverb) the envelope still ranks the candidates. (3) Zero wins whenever its score is
    at least :data:`PREFER_ZERO` of the best (a delay or a chorus adds later copies of the events, a reverb smears
    them; the direct sound stays at lag 0).

    Accuracy, measured on legato harmonic melodies and on noise bursts through pedalboard distortion, chorus,
    phaser, delay, reverb and a compressor-distortion-chorus-reverb chain (tests/test_corpora.py): within 0.2 ms
    where some of the waveform survives the processing; within 4 ms for a mostly wet reverb (10% dry) on legato
    tonal material. Hence the tolerance :data:`MAX_LAG_MS` of 5 ms; shifts of 10 ms and more are caught.
    A pair that is mostly a delayed copy (a 100% wet delay) still measures as late by its delay time."""
    from scipy.signal import find_peaks

    n = min(len(dry), len(wet), int(max_seconds * sample_rate))
    d = np.asarray(dry[:n], dtype=np.float64)
    w = np.asarray(wet[:n], dtype=np.float64)
    hop_s = 0.0005
    lags, c = _xcorr(onset_envelope(d, sample_rate), onset_envelope(w, sample_rate), int(search_seconds / hop_s))
    top = float(np.max(c))
    peaks, _ = find_peaks(c, distance=int(REFINE_MS / 1000 / hop_s))  # distinct candidates, not ripples
    peaks = [int(p) for p in peaks if c[p] >= 0.7 * top] or [int(np.argmax(c))]
    peaks = sorted(peaks, key=lambda p: -c[p])[:12]
    near = np.flatnonzero(np.abs(lags) <= 2)
    zero = int(near[np.argmax(c[near])])
    span = int(REFINE_MS * sample_rate / 1000)
    reach = int(search_seconds * sample_rate) + span
    wl, wc = _xcorr(d, w, reach)
    wc = np.abs(wc)

    def refine(coarse: int) -> tuple[int, float]:
        inside = np.abs(wl - coarse) <= span
        ll, cc = wl[inside], wc[inside]
        close = cc >= PREFER_ZERO * np.max(cc)
        return int(ll[close][np.argmin(np.abs(ll[close] - coarse))]), float(np.max(cc))

    to_samples = hop_s * sample_rate
    cands = {p: refine(int(round(lags[p] * to_samples))) for p in [*peaks, zero]}
    cands[zero] = refine(0)
    score = {p: max(float(c[p]), 0.0) * max(cands[p][1], WAVE_FLOOR) for p in cands}
    best = max(score, key=score.__getitem__)
    pick = zero if score[zero] >= PREFER_ZERO * score[best] else best
    return cands[pick][0], float(c[pick])


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


@register_corpus("pairs")
class PairsCorpus(Corpus):
    name = "pairs"
    version = 2
    paired = True  # tasks with the `recorded` effect read (dry, wet) through load_pair

    def _root(self) -> Path:
        if not self.arg:
            raise CorpusError("pairs: no path given; use pairs:DIR (DIR/dry and DIR/wet with matching file names)")
        root = Path(self.arg).expanduser()
        if not root.is_dir():
            raise CorpusError(f"pairs:{self.arg}: no such directory")
        for side in ("dry", "wet"):
            if not (root / side).is_dir():
                raise CorpusError(f"pairs:{self.arg}: no {side}/ folder; DIR/dry and DIR/wet must hold the "
                                  "recordings with matching relative paths")
        return root.resolve()

    def _dir(self) -> Path:  # keep each folder's cache apart
        return self.cache / self.name / stable_hash(str(self._root()))

    @staticmethod
    def _by_stem(files: list[str], side: str, label: str) -> dict[str, str]:
        out: dict[str, str] = {}
        clashes = []
        for rel in files:
            stem = str(PurePosixPath(rel).with_suffix(""))
            if stem in out:
                clashes.append(f"{out[stem]} / {rel}")
            out[stem] = rel
        if clashes:
            raise CorpusError(f"{label}: {side}/ has files that differ only by suffix, so their partner is "
                              f"ambiguous: {_listing(clashes)}")
        return out

    def pair_files(self, root: Path) -> dict[str, tuple[str, str]]:
        """{pair id: (dry path, wet path)}, paths relative to ``root``; raises CorpusError for unmatched files."""
        dry = self._by_stem(find_audio(root / "dry"), "dry", self.label)
        wet = self._by_stem(find_audio(root / "wet"), "wet", self.label)
        if not dry:
            raise CorpusError(f"{self.label}: no audio files ({', '.join(AUDIO_SUFFIXES)}) under {root / 'dry'}")
        no_wet = sorted(dry[s] for s in set(dry) - set(wet))
        no_dry = sorted(wet[s] for s in set(wet) - set(dry))
        if no_wet or no_dry:
            parts = []
            if no_wet:
                parts.append(f"{len(no_wet)} dry file(s) without a wet partner: {_listing(no_wet)}")
            if no_dry:
                parts.append(f"{len(no_dry)} wet file(s) without a dry partner: {_listing(no_dry)}")
            raise CorpusError(f"{self.label}: unmatched files; every dry/<path> needs a wet/<path> with the same "
                              f"relative path (any audio suffix). {'; '.join(parts)}")
        return {stem: (f"dry/{dry[stem]}", f"wet/{wet[stem]}") for stem in dry}

    def pair_split(self, pairs: dict[str, tuple[str, str]]) -> dict[str, str]:
        """Each usable pair's split (``pairs:``: a hash of its id, in proportion to the source counts)."""
        return assign_splits(list(pairs), self.sources, self.seed, self.label, salt="pairs-split")

    def pair_problem(self, root: Path, dry: str, wet: str) -> str | None:
        """Why a pair cannot be used (either file bad, different rates, misaligned); None if it can. Cached."""
        for side, rel in (("dry", dry), ("wet", wet)):
            why = self.problem(root / rel)
            if why:
                return f"{side} file {rel}: {why}"
        self.problem(root / dry)  # makes the check cache
        return self._checks.lookup([root / dry, root / wet], "pair",
                                   lambda: self._pair_mismatch(root / dry, root / wet))

    def _pair_mismatch(self, dry: Path, wet: Path) -> str | None:
        try:
            self.read_pair_paths(dry, wet, "pair")
        except (CorpusError, A.AudioError) as e:
            return str(e).removeprefix("pair: ")
        return None

    def plan(self) -> list[SourceSpec]:
        root = self._root()
        pairs = self.pair_files(root)
        good = {}
        for pid in sorted(pairs):
            why = self.pair_problem(root, *pairs[pid])
            if why:
                self.leave_out(pid, why)
            else:
                good[pid] = pairs[pid]
                self.note_rate(root / pairs[pid][0], pid)
        if not good:
            raise CorpusError(f"{self.label}: none of the {len(pairs)} pairs is usable (see the warnings)")
        split_of = self.pair_split(good)
        specs = []
        for pid in sorted(split_of):
            dry, wet = good[pid]
            d, w = (root / dry).stat(), (root / wet).stat()
            recipe = {"root": str(root), "dry": dry, "wet": wet, "dry_size": d.st_size,
                      "dry_mtime_ns": d.st_mtime_ns, "wet_size": w.st_size, "wet_mtime_ns": w.st_mtime_ns,
                      "max_lag_ms": MAX_LAG_MS, **self.pair_meta(pid)}
            specs.append(SourceSpec(source_id=pid, group=self.pair_group(pid), split=split_of[pid], recipe=recipe))
        return specs

    def pair_group(self, pid: str) -> str:
        return pid

    def pair_meta(self, pid: str) -> dict:
        return {}

    # --- audio --------------------------------------------------------------------------------------------
    def read_pair(self, spec: SourceSpec) -> tuple[np.ndarray, np.ndarray, int]:
        """Dry and wet, mono, at their common native rate, checked for alignment and cut to the same length."""
        root = Path(spec.recipe["root"])
        return self.read_pair_paths(root / spec.recipe["dry"], root / spec.recipe["wet"],
                                    f"{self.label}/{spec.source_id}")

    def read_pair_paths(self, dry_path: Path, wet_path: Path, where: str) -> tuple[np.ndarray, np.ndarray, int]:
        import soundfile as sf

        rates = {}
        for side, p in (("dry", dry_path), ("wet", wet_path)):
            try:
                rates[side] = int(sf.info(str(p)).samplerate)
            except Exception as e:
                raise A.AudioError(f"{p}: cannot be decoded ({e})") from e
        if rates["dry"] != rates["wet"]:
            raise CorpusError(f"{where}: dry is {rates['dry']} Hz but wet is {rates['wet']} Hz; a pair must share "
                              "its sample rate (resample one side so they match)")
        sr = rates["dry"]
        dry, wet = A.load(dry_path, sr), A.load(wet_path, sr)
        lag, score = estimate_lag(dry, wet, sr)
        if abs(lag) > MAX_LAG_MS * sr / 1000:
            side = "behind" if lag > 0 else "ahead of"
            raise CorpusError(
                f"{where}: wet is {abs(lag)} samples ({abs(lag) / sr * 1000:.2f} ms) {side} dry (onset-envelope "
                f"correlation {score:.2f}); pairs must be aligned within {MAX_LAG_MS:g} ms. Trim the start of the "
                "later file or check that these two files belong together")
        n = min(len(dry), len(wet))
        return dry[:n], wet[:n], sr

    def render(self, spec: SourceSpec) -> tuple[np.ndarray, int]:
        dry, _, sr = self.read_pair(spec)
        return dry, sr

    def load_pair(self, spec: SourceSpec) -> tuple[np.ndarray, np.ndarray]:
        """(dry, wet) at the working rate, equal length, sharing one gain (dry at the corpus loudness); cached."""
        path = self._dir() / f"{self._key(spec)}-pair.npy"
        if path.exists():
            try:
                both = np.load(path)
                return both[0], both[1]
            except (ValueError, OSError, IndexError):
                path.unlink(missing_ok=True)  # a torn write from an interrupted run: render again
        dry, wet, sr = self.read_pair(spec)
        where = f"{self.label}/{spec.source_id}"
        dry = A.resample(A.check(dry, where + " (dry)"), sr, self.sample_rate)
        wet = A.resample(A.check(wet, where + " (wet)"), sr, self.sample_rate)
        n = min(len(dry), len(wet))  # resampling may round the two lengths apart by a sample
        dry, wet = dry[:n], wet[:n]
        gain = _loudness_gain(dry, self.sample_rate, self.loudness_lufs, where)
        peak = gain * max(float(np.max(np.abs(dry))), float(np.max(np.abs(wet))))
        if peak > 0.99:
            gain *= 0.99 / peak
        both = (np.stack([dry, wet]) * gain).astype(np.float32)
        buf = io.BytesIO()
        np.save(buf, both)
        atomic_write_bytes(path, buf.getvalue())
        return both[0], both[1]

    def load_source(self, spec: SourceSpec) -> np.ndarray:
        """The dry side (what effects other than `recorded` process)."""
        return self.load_pair(spec)[0]


def _loudness_gain(x: np.ndarray, sample_rate: int, lufs: float, what: str) -> float:
    import pyloudnorm

    meter = pyloudnorm.Meter(sample_rate, block_size=min(0.4, len(x) / sample_rate))
    loud = meter.integrated_loudness(np.asarray(x, dtype=np.float64))
    if not np.isfinite(loud):
        raise A.AudioError(f"{what}: loudness undefined (too quiet or too short)")
    return float(10 ** ((lufs - loud) / 20))
