"""Public collections of recorded dry/wet pairs, read like ``pairs:DIR`` (tasks with the ``recorded`` effect, in
the wild set): ``daps_pairs:PATH`` (DAPS clean vs produced) and ``idmt_fx:PATH[@CLASS]`` (IDMT-SMT-Audio-Effects:
each effect class's processed notes paired with the unprocessed ``NoFX`` notes they were made from).

Both check every pair they take (files, sample rates, alignment: :meth:`PairsCorpus.pair_problem`) and leave bad
ones out with a warning. Groups are assigned to splits first (fixed DAPS speaker lists; a hash of the unprocessed
note for IDMT), then ``sources[split]`` pairs are taken per split in the order of a hash of (seed, pair id), each
checked as it is taken, so a bad pair never moves another.
"""

from __future__ import annotations

from pathlib import Path

from bench.corpora import SPLITS, CorpusError, SourceSpec, register_corpus
from bench.corpora.checks import assign_splits, ranked
from bench.corpora.pairs import MAX_LAG_MS, PairsCorpus
from bench.corpora.public import DAPS_SCRIPTS, DAPS_SPEAKERS, DAPS_SPLIT, RecipeCorpus, listing

# IDMT-SMT-Audio-Effects: instrument folders and effect classes (folder names under <instrument>/Samples/)
IDMT_INSTRUMENTS = ("Bass monophon", "Bass monophon2", "Gitarre monophon", "Gitarre monophon2", "Gitarre polyphon",
                    "Gitarre polyphon2")
IDMT_CLASSES = ("Chorus", "Distortion", "EQ", "FeedbackDelay", "Flanger", "Overdrive", "Phaser", "Reverb",
                "SlapbackDelay", "Tremolo", "Vibrato")
# the benchmark effects whose controller answers each class (for scoring an automatic controller choice);
# classes no built-in effect reproduces map to ()
CLASS_EFFECTS = {"Chorus": ("chorus",), "Distortion": ("distortion",), "Overdrive": ("distortion",),
                 "EQ": ("peq4", "peq_comp"), "FeedbackDelay": ("delay",), "SlapbackDelay": ("delay",),
                 "Reverb": ("reverb",), "Phaser": ("phaser",), "Flanger": ("chorus",), "Tremolo": (), "Vibrato": ()}
IDMT_PROPORTIONS = {"train": 0.6, "valid": 0.2, "test": 0.2}


def true_class(source_id: str) -> str:
    """The effect class of an ``idmt_fx`` pair from its id (``<Class>/<instrument>/<file stem>``)."""
    return source_id.split("/", 1)[0]


def pick_matches(source_id: str, picked: str) -> bool | None:
    """Whether an automatic controller choice (an effect name, e.g. the proposed model's ``picked``) matches the
    true class of an ``idmt_fx`` pair; None where no built-in effect reproduces the class."""
    effects = CLASS_EFFECTS.get(true_class(source_id), ())
    return (picked in effects) if effects else None


class RecordedRecipe(PairsCorpus, RecipeCorpus):
    """Pairs from a published layout: subclasses implement :meth:`pair_layout`."""

    version = 1
    pair_groups: dict[str, str]

    _root = RecipeCorpus._root
    _dir = RecipeCorpus._dir

    def pair_layout(self, root: Path) -> dict[str, tuple[str, str, str, str]]:
        """{pair id: (dry path, wet path, group, split)}."""
        raise NotImplementedError

    def pair_group(self, pid: str) -> str:
        return self.pair_groups[pid]

    def plan(self) -> list[SourceSpec]:
        root = self._root()
        layout = self.pair_layout(root)
        self.pair_groups = {pid: v[2] for pid, v in layout.items()}
        specs = []
        for split in SPLITS:
            want = self.sources.get(split, 0)
            ids = [pid for pid, v in layout.items() if v[3] == split]
            if want <= 0 or not ids:
                continue
            chosen = []
            for pid in ranked(ids, self.split_seed(split), salt=f"{self.name}-pick"):
                if len(chosen) >= want:
                    break
                dry, wet = layout[pid][:2]
                why = self.pair_problem(root, dry, wet)
                if why:
                    self.leave_out(pid, why)
                else:
                    chosen.append(pid)
            if not chosen:
                self._missing[split] = f"every pair checked ({len(ids)} in the split) was left out; see the warnings"
            for pid in sorted(chosen):
                dry, wet = layout[pid][:2]
                d, w = (root / dry).stat(), (root / wet).stat()
                recipe = {"root": str(root), "dry": dry, "wet": wet, "dry_size": d.st_size,
                          "dry_mtime_ns": d.st_mtime_ns, "wet_size": w.st_size, "wet_mtime_ns": w.st_mtime_ns,
                          "max_lag_ms": MAX_LAG_MS, **self.pair_meta(pid)}
                specs.append(SourceSpec(source_id=pid, group=self.pair_group(pid), split=split, recipe=recipe))
        return specs


@register_corpus("daps_pairs")
class DAPSPairs(RecordedRecipe):
    """DAPS ``clean/<spk>_<script>_clean.wav`` (dry) with ``produced/<spk>_<script>_produced.wav`` (wet); the
    speaker splits of ``daps``."""

    name = "daps_pairs"
    published = "daps/ with clean/<speaker>_<script>_clean.wav and produced/<speaker>_<script>_produced.wav"

    def pair_layout(self, root):
        for sub in ("clean", "produced"):
            if not (root / sub).is_dir():
                raise CorpusError(f"{self.label}: no {sub}/ folder under {root} ({self.published})")
        out, missing = {}, []
        for spk in DAPS_SPEAKERS:
            for k in DAPS_SCRIPTS:
                dry, wet = f"clean/{spk}_{k}_clean.wav", f"produced/{spk}_{k}_produced.wav"
                have = [(root / p).is_file() for p in (dry, wet)]
                if all(have):
                    out[f"{spk}_{k}"] = (dry, wet, spk, DAPS_SPLIT.get(spk, "train"))
                elif any(have):
                    missing.append(wet if have[0] else dry)
        if not out:
            raise CorpusError(f"{self.label}: no clean/produced pairs (e.g. clean/f1_script1_clean.wav with "
                              f"produced/f1_script1_produced.wav) under {root}")
        if missing:
            self.warn_layout(f"{len(missing)} partner file(s) missing, those pairs left out: {listing(missing)}")
        if len(out) < 100:
            self.warn_layout(f"{len(out)} of the 100 published clean/produced pairs found (a partial copy)")
        return out


@register_corpus("idmt_fx")
class IdmtFx(RecordedRecipe):
    """IDMT-SMT-Audio-Effects: ``<instrument>/Samples/<Class>/<code>-<note>-<fx>-<id>.wav`` paired with the
    ``NoFX`` note that has the same ``<code>-<note>`` (instrument, setting, play style; MIDI note, string, fret).
    ``idmt_fx:PATH@Chorus`` takes one class (a task per class: :meth:`expand`); ``idmt_fx:PATH`` takes all of them.
    A pair's id is ``<Class>/<instrument>/<processed file stem>``; its group is its unprocessed note, so a note
    and all its processed versions share a split (60/20/20% of the notes, by a hash)."""

    name = "idmt_fx"
    published = "IDMT-SMT-AUDIO-EFFECTS/ with 'Gitarre monophon/Samples/NoFX/*.wav' beside one folder per effect"

    def _split_arg(self) -> tuple[str, str | None]:
        path, _, cls = (self.arg or "").partition("@")
        if not cls:
            return path, None
        by_lower = {c.lower(): c for c in IDMT_CLASSES}
        if cls.lower() not in by_lower:
            raise CorpusError(f"idmt_fx:{self.arg}: unknown effect class {cls!r}; valid: {', '.join(IDMT_CLASSES)}")
        return path, by_lower[cls.lower()]

    def _root(self) -> Path:
        path, _ = self._split_arg()
        if not path:
            raise CorpusError(f"idmt_fx: no path given; use idmt_fx:PATH or idmt_fx:PATH@CLASS ({self.published})")
        root = Path(path).expanduser()
        if not root.is_dir():
            raise CorpusError(f"idmt_fx:{self.arg}: no such directory")
        return root.resolve()

    @classmethod
    def expand(cls, arg: str) -> list[str]:
        """``PATH`` -> one label per class present (``idmt_fx:PATH@Chorus``...); ``PATH@CLASS`` -> itself."""
        if "@" in arg or not Path(arg).expanduser().is_dir():
            return [f"idmt_fx:{arg}"]
        root = Path(arg).expanduser()
        present = [c for c in IDMT_CLASSES if any((root / i / "Samples" / c).is_dir() for i in IDMT_INSTRUMENTS)]
        return [f"idmt_fx:{arg}@{c}" for c in present] or [f"idmt_fx:{arg}"]

    def pair_meta(self, pid: str) -> dict:
        return {"fx_class": true_class(pid)}

    def pair_layout(self, root):
        _, only = self._split_arg()
        instruments = [i for i in IDMT_INSTRUMENTS if (root / i / "Samples").is_dir()]
        if not instruments:
            raise CorpusError(f"{self.label}: no <instrument>/Samples/ folder ({', '.join(IDMT_INSTRUMENTS)}) under "
                              f"{root} ({self.published})")
        nofx: dict[str, list[str]] = {}
        for inst in instruments:
            for p in sorted((root / inst / "Samples" / "NoFX").glob("*.wav")):
                parts = p.stem.split("-")
                if len(parts) == 4:
                    nofx.setdefault("-".join(parts[:2]), []).append(p.relative_to(root).as_posix())
        if not nofx:
            raise CorpusError(f"{self.label}: no unprocessed notes (<instrument>/Samples/NoFX/*.wav) under {root}")
        classes = [only] if only else list(IDMT_CLASSES)
        out, orphans, counts = {}, [], {}
        for inst in instruments:
            family = inst.rstrip("2")
            for cls in classes:
                for p in sorted((root / inst / "Samples" / cls).glob("*.wav")):
                    parts = p.stem.split("-")
                    cands = nofx.get("-".join(parts[:2]), []) if len(parts) == 4 else []
                    # the NoFX note of the same instrument folder, else of its family (monophon / monophon2)
                    same = [c for c in cands if c.startswith(inst + "/")] or \
                        [c for c in cands if c.split("/")[0].rstrip("2") == family]
                    rel = p.relative_to(root).as_posix()
                    if not same:
                        orphans.append(rel)
                        continue
                    counts[cls] = counts.get(cls, 0) + 1
                    out[f"{cls}/{inst}/{p.stem}"] = (same[0], rel, same[0], "")
        if not out:
            raise CorpusError(f"{self.label}: no processed note with its NoFX partner under {root} for "
                              f"{', '.join(classes)} (<instrument>/Samples/<Class>/<code>-<note>-<fx>-<id>.wav)")
        if orphans:
            self.warn_layout(f"{len(orphans)} processed note(s) without a NoFX partner left out: {listing(orphans)}")
        absent = [c for c in classes if c not in counts]
        if absent:
            self.warn_layout(f"no processed notes for class(es) {', '.join(absent)}")
        groups = sorted({v[2] for v in out.values()})
        split_of = assign_splits(groups, IDMT_PROPORTIONS, self.seed, self.label, salt="idmt-notes")
        return {pid: (d, w, g, split_of[g]) for pid, (d, w, g, _) in out.items()}
