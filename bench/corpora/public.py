"""Recipes for public speech and music corpora, read from a local copy in its published layout (never downloaded).

``vctk:PATH``, ``daps:PATH``, ``libritts:PATH``, ``musdb:PATH`` (docs/corpora.md has the layouts, licences and
commands). Each recipe checks the layout it expects and names what is missing: a missing top-level folder is a
:class:`CorpusError`; a missing subset makes only the splits it feeds unusable (an error when such a split is
asked for); fewer files or speakers than published is a warning (a partial copy is fine). Splits follow the
corpus: published subsets where it has them (LibriTTS, MUSDB18), fixed speaker lists (DAPS), else a hash of the
speaker (VCTK). Within a split, ``sources[split]`` files are taken in the order of a hash of (seed, path) (the
test split with ``test_seed``), each checked as it is taken (:mod:`bench.corpora.checks`); a bad file is left out
and the next one taken, so a bad file never moves another.
"""

from __future__ import annotations

import warnings
from pathlib import Path

import numpy as np

from bench import audio as A
from bench.cache import stable_hash
from bench.corpora import SPLITS, Corpus, CorpusError, CorpusWarning, SourceSpec, register_corpus
from bench.corpora.checks import assign_splits, ranked

# DAPS: 10 female and 10 male speakers, 5 scripts each; fixed speaker-disjoint splits
DAPS_SPEAKERS = [f"{g}{i}" for g in "fm" for i in range(1, 11)]
DAPS_SPLIT = {"f9": "test", "f10": "test", "m9": "test", "m10": "test", "f8": "valid", "m8": "valid"}
DAPS_SCRIPTS = [f"script{i}" for i in range(1, 6)]
# MUSDB18's own validation tracks (musdb package, configs/mus.yaml): 14 tracks of its train folder
MUSDB_VALID = (
    "Actions - One Minute Smile", "Clara Berry And Wooldog - Waltz For My Victims", "Johnny Lokke - Promises & Lies",
    "Patrick Talbot - A Reason To Leave", "Triviul - Angelsaint", "Alexander Ross - Goodbye Bolero",
    "Fergessen - Nos Palpitants", "Leaf - Summerghost", "Skelpolu - Human Mistakes", "Young Griffo - Pennies",
    "ANiMAL - Rockshow", "James May - On The Line", "Meaxic - Take A Step", "Traffic Experiment - Sirens",
)
LIBRITTS_SUBSETS = {"train": ("train-clean-100", "train-clean-360"), "valid": ("dev-clean",), "test": ("test-clean",)}
VCTK_PROPORTIONS = {"train": 0.8, "valid": 0.1, "test": 0.1}


def listing(items, n: int = 6) -> str:
    items = list(items)
    return ", ".join(items[:n]) + (f" and {len(items) - n} more" if len(items) > n else "")


class RecipeCorpus(Corpus):
    """A public corpus at ``NAME:PATH``: subclasses implement :meth:`layout`."""

    version = 1
    published = ""  # what the layout looks like, for error messages

    def _root(self) -> Path:
        if not self.arg:
            raise CorpusError(f"{self.name}: no path given; use {self.name}:PATH ({self.published})")
        root = Path(self.arg).expanduser()
        if not root.is_dir():
            raise CorpusError(f"{self.name}:{self.arg}: no such directory")
        return root.resolve()

    def _dir(self) -> Path:
        return self.cache / self.name / stable_hash(str(self._root()))

    def layout(self, root: Path) -> dict[str, list[tuple[str, str]]]:
        """{split: [(relative path, group)]}; set ``self._missing[split]`` for a split whose subset is absent."""
        raise NotImplementedError

    def warn_layout(self, msg: str) -> None:
        warnings.warn(f"{self.label}: {msg}", CorpusWarning, stacklevel=3)

    def plan(self) -> list[SourceSpec]:
        root = self._root()
        layout = self.layout(root)
        specs, short = [], []
        for split in SPLITS:
            want, items = self.sources.get(split, 0), dict(layout.get(split, []))
            if want <= 0 or not items:
                continue
            chosen = []
            for rel in ranked(list(items), self.split_seed(split), salt=f"{self.name}-pick"):
                if len(chosen) >= want:
                    break
                why = self.problem(root / rel)
                if why and why.startswith("too short"):  # short utterances are common: one summary warning
                    from bench.corpora.checks import BadFile

                    self.left_out.append(BadFile(rel, why))
                    short.append(rel)
                elif why:
                    self.leave_out(rel, why)
                else:
                    chosen.append(rel)
                    self.note_rate(root / rel, rel)
            if not chosen:
                self._missing[split] = (f"every file checked ({len(items)} in the split) was left out; see the "
                                        "warnings and the manifest")
            for rel in sorted(chosen):
                st = (root / rel).stat()
                specs.append(SourceSpec(source_id=rel, group=items[rel], split=split,
                                        recipe={"root": str(root), "path": rel, "size": st.st_size,
                                                "mtime_ns": st.st_mtime_ns}))
        if short:
            self.warn_layout(f"{len(short)} file(s) shorter than {self.required_seconds:g} s (two segments) "
                             f"skipped: {listing(short, 4)} (all listed in the manifest)")
        return specs

    def render(self, spec: SourceSpec) -> tuple[np.ndarray, int]:
        return A.load(Path(spec.recipe["root"]) / spec.recipe["path"], self.sample_rate), self.sample_rate


def _audio(folder: Path, pattern: str) -> list[Path]:
    return sorted(p for p in folder.glob(pattern) if p.is_file() and not p.name.startswith("."))


@register_corpus("vctk")
class VCTK(RecipeCorpus):
    """VCTK 0.92 (``wav48_silence_trimmed/<spk>/<spk>_<nnn>_mic1.flac``; mic2 is not used) or 0.80
    (``wav48/<spk>/<spk>_<nnn>.wav``). Speaker-disjoint splits: 80/10/10% of the speakers by a hash of the
    speaker id (with the seed)."""

    name = "vctk"
    published = "VCTK-Corpus-0.92 with wav48_silence_trimmed/<speaker>/*_mic1.flac, or VCTK-Corpus with wav48/"

    def layout(self, root):
        if (root / "wav48_silence_trimmed").is_dir():
            audio, pattern, expected = root / "wav48_silence_trimmed", "*_mic1.flac", 110
        elif (root / "wav48").is_dir():
            audio, pattern, expected = root / "wav48", "*.wav", 109
        else:
            raise CorpusError(f"{self.label}: neither wav48_silence_trimmed/ (VCTK 0.92) nor wav48/ (VCTK 0.80) "
                              f"under {root}; point at the folder that holds it")
        files = {d.name: _audio(d, pattern) for d in sorted(audio.iterdir()) if d.is_dir()}
        empty = [s for s, f in files.items() if not f]
        if empty:
            self.warn_layout(f"speaker folder(s) without {pattern} files: {listing(empty)}")
        files = {s: f for s, f in files.items() if f}
        if not files:
            raise CorpusError(f"{self.label}: no speaker folders with {pattern} files under {audio}")
        if len(files) < expected:
            self.warn_layout(f"{len(files)} of the {expected} published speakers found (a partial copy)")
        split_of = assign_splits(list(files), VCTK_PROPORTIONS, self.seed, self.label, salt="vctk-speakers")
        out: dict[str, list] = {s: [] for s in SPLITS}
        for spk, paths in files.items():
            out[split_of[spk]] += [(p.relative_to(root).as_posix(), spk) for p in paths]
        return out


@register_corpus("daps")
class DAPS(RecipeCorpus):
    """DAPS clean studio speech, ``clean/<speaker>_<script>_clean.wav``. Fixed speaker-disjoint splits: test
    f9, f10, m9, m10; valid f8, m8; train the other 14 speakers."""

    name = "daps"
    published = "daps/ with clean/f1_script1_clean.wav ... m10_script5_clean.wav"

    def layout(self, root):
        clean = root / "clean"
        if not clean.is_dir():
            raise CorpusError(f"{self.label}: no clean/ folder under {root} (DAPS: clean/<speaker>_<script>_clean.wav)")
        want = [f"clean/{s}_{k}_clean.wav" for s in DAPS_SPEAKERS for k in DAPS_SCRIPTS]
        have = [w for w in want if (root / w).is_file()]
        if not have:
            raise CorpusError(f"{self.label}: none of the 100 published files (clean/f1_script1_clean.wav ...) "
                              f"under {root}")
        if len(have) < len(want):
            self.warn_layout(f"{len(want) - len(have)} of the 100 published files missing: "
                             f"{listing(sorted(set(want) - set(have)))}")
        out: dict[str, list] = {s: [] for s in SPLITS}
        for rel in have:
            spk = Path(rel).name.split("_")[0]
            out[DAPS_SPLIT.get(spk, "train")].append((rel, spk))
        return out


@register_corpus("libritts")
class LibriTTS(RecipeCorpus):
    """LibriTTS, ``<subset>/<speaker>/<chapter>/<speaker>_<chapter>_*.wav``: its published subsets are the splits
    (train: train-clean-100 and train-clean-360, whichever are present; valid: dev-clean; test: test-clean)."""

    name = "libritts"
    published = "LibriTTS/ with train-clean-100/, dev-clean/, test-clean/ (<speaker>/<chapter>/*.wav)"

    def layout(self, root):
        out: dict[str, list] = {s: [] for s in SPLITS}
        found = []
        for split, subsets in LIBRITTS_SUBSETS.items():
            present = [s for s in subsets if (root / s).is_dir()]
            if not present:
                self._missing[split] = f"no {' or '.join(s + '/' for s in subsets)} under {root} (LibriTTS's " \
                                       f"published subset for {split})"
            for sub in present:
                files = _audio(root / sub, "*/*/*.wav")
                if not files:
                    self.warn_layout(f"{sub}/ holds no <speaker>/<chapter>/*.wav files")
                found += [sub] if files else []
                out[split] += [(p.relative_to(root).as_posix(), p.relative_to(root / sub).parts[0]) for p in files]
        if not found:
            names = [s for v in LIBRITTS_SUBSETS.values() for s in v]
            raise CorpusError(f"{self.label}: none of LibriTTS's subsets ({', '.join(names)}) with "
                              f"<speaker>/<chapter>/*.wav files under {root}")
        return out


@register_corpus("musdb")
class MUSDB(RecipeCorpus):
    """MUSDB18-HQ mixtures, ``train|test/<Artist - Title>/mixture.wav``: test is its test folder, valid the 14
    tracks of musdb's own validation list, train the rest of its train folder. A track is a source (its whole
    mixture, mixed to mono). MUSDB18 as .stem.mp4 needs ffmpeg to decode and is refused with that advice."""

    name = "musdb"
    published = "musdb18hq/ with train/<Artist - Title>/mixture.wav and test/<Artist - Title>/mixture.wav"

    def layout(self, root):
        if list(root.glob("*/*.stem.mp4")) or list(root.glob("*.stem.mp4")):
            raise CorpusError(
                f"{self.label}: MUSDB18 stores tracks as .stem.mp4, which needs ffmpeg to decode (a system package "
                "this harness does not require). Use MUSDB18-HQ (wav), or convert with the musdb package's "
                "`musdbconvert` (which needs ffmpeg) into train|test/<track>/mixture.wav")
        out: dict[str, list] = {s: [] for s in SPLITS}
        counts = {"train": 100, "test": 50}
        if not any((root / f).is_dir() for f in counts):
            raise CorpusError(f"{self.label}: no train/ or test/ folder under {root} ({self.published})")
        for folder, expected in counts.items():
            if not (root / folder).is_dir():
                for split in (("train", "valid") if folder == "train" else ("test",)):
                    self._missing[split] = f"no {folder}/ folder under {root} (MUSDB18-HQ's {folder} tracks)"
                continue
            tracks = [d for d in sorted((root / folder).iterdir()) if d.is_dir() and not d.name.startswith(".")]
            no_mix = [d.name for d in tracks if not (d / "mixture.wav").is_file()]
            if no_mix:
                self.warn_layout(f"{folder}/ track(s) without mixture.wav left out: {listing(no_mix)}")
            tracks = [d for d in tracks if d.name not in no_mix]
            if len(tracks) < expected:
                self.warn_layout(f"{len(tracks)} of the {expected} published {folder} tracks found (a partial copy)")
            for d in tracks:
                split = "test" if folder == "test" else ("valid" if d.name in MUSDB_VALID else "train")
                out[split].append((f"{folder}/{d.name}/mixture.wav", d.name))
        return out

