"""``pairs:DIR``: recorded dry/wet pairs. ``DIR/dry/`` and ``DIR/wet/`` hold recordings with matching relative paths
(the suffix may differ: ``dry/a/take1.wav`` pairs with ``wet/a/take1.flac``); the wet one is the dry one processed
by whatever the user did (a real pedal, a real room, a mastering chain). Documented in docs/wild.md.

Files are found, shuffled and split exactly as for ``folder:PATH`` (one pair is one source and its own group).
Every problem with a pair is an error naming it, never a silent misalignment:

- a dry file without a wet partner, or the reverse, or two files that would pair with the same partner: error
  when the corpus is planned, listing them;
- dry and wet at different sample rates: error (resample one side yourself, knowingly);
- dry and wet misaligned by more than :data:`MAX_LAG_MS` (1 ms): error. The lag is the peak of the cross-
  correlation of the two files (up to their first :data:`ALIGN_SECONDS` seconds), searched within
  +/- :data:`SEARCH_SECONDS`; a pair within the tolerance is used as it is (not shifted);
- different lengths: both are cut to the shorter one (the end of the longer one, typically a reverb or delay tail,
  is dropped).

Both sides are mixed to mono and resampled to the working rate, and they share one gain: the one that brings the
dry side to the corpus loudness (-23 LUFS), lowered if either side would peak above 0.99. So the level change of
the processing is kept.
"""

from __future__ import annotations

import io
import random
from pathlib import Path, PurePosixPath

import numpy as np

from bench import audio as A
from bench.cache import atomic_write_bytes, stable_hash
from bench.corpora import SPLITS, Corpus, CorpusError, SourceSpec, register_corpus
from bench.corpora.folder import AUDIO_SUFFIXES, allocate, find_audio

MAX_LAG_MS = 1.0  # the largest dry/wet offset accepted
SEARCH_SECONDS = 0.5  # the cross-correlation peak is searched within +/- this lag
ALIGN_SECONDS = 60.0  # at most this much of each file is cross-correlated
_SHOW = 8  # names listed in an error


def estimate_lag(dry: np.ndarray, wet: np.ndarray, sample_rate: int, *, search_seconds: float = SEARCH_SECONDS,
                 max_seconds: float = ALIGN_SECONDS) -> tuple[int, float]:
    """(lag, peak): ``wet[t] ~ dry[t - lag]`` at the strongest cross-correlation within +/- ``search_seconds``
    (a polarity flip counts), and that peak normalised to [-1, 1]. Positive: the wet file is late."""
    from scipy.signal import correlate, correlation_lags

    n = min(len(dry), len(wet), int(max_seconds * sample_rate))
    d = np.asarray(dry[:n], dtype=np.float64)
    w = np.asarray(wet[:n], dtype=np.float64)
    c = correlate(w, d, mode="full", method="fft")
    lags = correlation_lags(n, n, mode="full")
    keep = np.abs(lags) <= int(search_seconds * sample_rate)
    c, lags = c[keep], lags[keep]
    i = int(np.argmax(np.abs(c)))
    norm = float(np.sqrt(np.sum(d * d) * np.sum(w * w))) or 1.0
    return int(lags[i]), float(c[i] / norm)


def _listing(names: list[str]) -> str:
    more = f" and {len(names) - _SHOW} more" if len(names) > _SHOW else ""
    return ", ".join(names[:_SHOW]) + more


@register_corpus("pairs")
class PairsCorpus(Corpus):
    name = "pairs"
    version = 1
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

    def plan(self) -> list[SourceSpec]:
        root = self._root()
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
        stems = sorted(dry)
        alloc = allocate(len(stems), self.sources, self.label)
        order = list(stems)
        random.Random(int(stable_hash(["pairs-split", self.seed]), 16)).shuffle(order)
        split_of: dict[str, str] = {}
        start = 0
        for split in SPLITS:
            for stem in order[start : start + alloc[split]]:
                split_of[stem] = split
            start += alloc[split]
        specs = []
        for stem in stems:
            if stem not in split_of:
                continue
            d, w = (root / "dry" / dry[stem]).stat(), (root / "wet" / wet[stem]).stat()
            recipe = {"root": str(root), "dry": dry[stem], "wet": wet[stem], "dry_size": d.st_size,
                      "dry_mtime_ns": d.st_mtime_ns, "wet_size": w.st_size, "wet_mtime_ns": w.st_mtime_ns,
                      "max_lag_ms": MAX_LAG_MS}
            specs.append(SourceSpec(source_id=stem, group=stem, split=split_of[stem], recipe=recipe))
        return specs

    # --- audio --------------------------------------------------------------------------------------------
    def read_pair(self, spec: SourceSpec) -> tuple[np.ndarray, np.ndarray, int]:
        """Dry and wet, mono, at their common native rate, checked for alignment and cut to the same length."""
        import soundfile as sf

        root = Path(spec.recipe["root"])
        paths = {side: root / side / spec.recipe[side] for side in ("dry", "wet")}
        rates = {}
        for side, p in paths.items():
            try:
                rates[side] = int(sf.info(str(p)).samplerate)
            except Exception as e:
                raise A.AudioError(f"{p}: cannot be decoded ({e})") from e
        where = f"{self.label}/{spec.source_id}"
        if rates["dry"] != rates["wet"]:
            raise CorpusError(f"{where}: dry is {rates['dry']} Hz but wet is {rates['wet']} Hz; a pair must share "
                              "its sample rate (resample one side so they match)")
        sr = rates["dry"]
        dry, wet = A.load(paths["dry"], sr), A.load(paths["wet"], sr)
        lag, peak = estimate_lag(dry, wet, sr)
        if abs(lag) > MAX_LAG_MS * sr / 1000:
            side = "behind" if lag > 0 else "ahead of"
            raise CorpusError(
                f"{where}: wet is {abs(lag)} samples ({abs(lag) / sr * 1000:.2f} ms) {side} dry (cross-correlation "
                f"peak {peak:.2f}); pairs must be aligned within {MAX_LAG_MS:g} ms. Trim the start of the later file "
                "or check that these two files belong together")
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
