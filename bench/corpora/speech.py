"""``speech``: English speech synthesised with libespeak-ng (from the ``espeakng-loader`` wheel).

A *voice* is an espeak-ng voice variant (``voices/!v/*`` in the wheel's data dir: ``f3``, ``m2``, ``klatt4``,
``whisper``...); it is the identity of a source. Each source is one voice reading generated sentences
(concatenated with short seeded pauses until the source is ``seconds`` long) with one accent (``en``, ``en-us``,
``en-gb-scotland``...), base pitch, pitch range, speaking rate and word gap.

Near-twin variants (one vocal tract with another glottal source, ``klatt`` ... ``klatt6``; a numbered series of
one voice, ``robosoft`` ... ``robosoft8``; ``whisper`` and ``whisperf``) form a *family* (:func:`voice_families`),
and a family sits in one split only. The test split takes at most one voice per family, so its sources are
independent identities, and only from families never heard in an earlier test set (:data:`SPENT_TEST_VOICES`); it
is drawn with ``data.test_seed``. Validation takes distinct voices; training cycles its voices (a voice heard
again is another *take* of the same identity, with other text, accent, pitch and rate). A split asked for more
distinct voices than its pool holds is a :class:`CorpusError` naming the count (docs/corpora.md).

Determinism. libespeak-ng keeps global state between utterances that its API cannot reset (a function-static
pitch-flutter index, the waveform phase and gain control of the wave generator, the echo buffer, and a random
generator), so in one long-lived process the same text comes out differently each time for most variants. Each
source is therefore rendered in a fresh, short-lived Python process (standard library only, about 30 ms to start)
that initialises the library once, seeds its random generator, speaks the sentences and streams 16-bit PCM back.
That makes the same recipe give identical samples in any order, in any thread, and lets sources render in
parallel without a lock around the library.
"""

from __future__ import annotations

import json
import math
import random
import re
import struct
import subprocess
import sys
from functools import lru_cache
from pathlib import Path

import numpy as np

from bench.cache import stable_hash
from bench.corpora import SPLITS, Corpus, CorpusError, SourceSpec, register_corpus

NATIVE_RATE = 22050
# Every voice of the held-out pool that test sets were drawn from before sources were identities (run.seed 0's
# 25 % pool of variants, shuffled from the seed: the design-time test set, test_seed 0, and the set of 2026-11-28,
# test_seed 1128, both came from it, and a larger preset would have cycled through all of it). Their families never
# enter a test set again; they train and validate.
SPENT_TEST_VOICES = frozenset({
    "adam", "UniRobot", "Gene2", "Lee", "Jacky", "Denis", "michel", "f2", "klatt5", "klatt3", "Tweaky", "Storm",
    "Andy", "Hugo", "anika", "klatt4", "m3", "steph3", "m6", "klatt6", "f1", "Alicia", "belinda", "antonio",
    "caleb", "steph2"})
TEST_SHARE = 0.6  # of the families never heard in a test set: the held-out test pool (the rest train)
VALID_SHARE = 0.4  # of the spent families: the validation pool (the rest train)
ACCENTS = ("en", "en-us", "en-gb-scotland", "en-gb-x-rp", "en-gb-x-gbclan", "en-gb-x-gbcwmd", "en-029", "en-us-nyc")
WORKER_TIMEOUT_S = 120.0

# --- the sentence generator ---------------------------------------------------------------------------------
# A small seeded grammar over word lists written for this benchmark; it yields plain, pronounceable English.

_NAMES = ("Mara", "Tobias", "Ines", "Colm", "Priya", "Otto", "Lena", "Rafael", "Yuki", "Dmitri", "Amara", "Hugo",
          "Sanne", "Kofi", "Beatrix", "Wendell", "Noor", "Felix", "Greta", "Arlo")
_NOUNS = ("lantern", "bicycle", "teapot", "ladder", "violin", "harbour", "notebook", "window", "garden", "kettle",
          "blanket", "compass", "orchard", "engine", "pebble", "umbrella", "carpet", "market", "bridge", "letter",
          "basket", "tower", "meadow", "mirror", "saddle", "cabinet", "postcard", "tractor", "pillow", "village",
          "chimney", "lighthouse", "parcel", "wagon", "furnace", "island", "ribbon", "barrel", "clock", "feather")
_ADJS = ("quiet", "rusty", "golden", "narrow", "heavy", "bright", "crooked", "gentle", "muddy", "ancient", "hollow",
         "shiny", "tired", "clever", "frozen", "crowded", "tiny", "enormous", "dusty", "silver", "wooden", "curious",
         "patient", "noisy", "striped", "broken", "lovely", "distant", "careful", "restless")
_VERBS_PAST = ("carried", "painted", "repaired", "borrowed", "noticed", "dropped", "polished", "followed", "opened",
               "counted", "wrapped", "measured", "washed", "delivered", "chased", "described", "collected",
               "discovered", "folded", "lifted", "pushed", "sold", "found", "built", "heard", "forgot", "brought",
               "moved", "hid", "left")
_VERBS_BASE = ("carry", "paint", "repair", "borrow", "notice", "polish", "follow", "open", "count", "wrap",
               "measure", "wash", "deliver", "describe", "collect", "fold", "lift", "push", "sell", "find", "build",
               "move", "hide", "check")
_INTRANS = ("laughed", "waited", "whistled", "hurried home", "fell asleep", "sat down", "looked around",
            "stood still", "kept walking", "sang softly", "changed their mind", "stayed inside")
_PREPS = ("across", "behind", "beside", "under", "near", "inside", "around", "beyond", "above", "towards")
_TIMES = ("this morning", "last winter", "after lunch", "before sunrise", "on Tuesday", "at midnight",
          "every evening", "in the spring", "yesterday", "a week ago", "later that day", "once again")
_ADVS = ("slowly", "quickly", "carefully", "quietly", "happily", "suddenly", "nearly", "finally", "gently",
         "proudly")
_OPENERS = ("Honestly", "Of course", "Luckily", "In the end", "Meanwhile", "As usual", "Strangely enough",
            "By the way", "To be fair", "Without a word")
_NUMWORDS = ("two", "three", "four", "five", "six", "seven", "eight", "nine", "ten", "eleven", "twelve", "twenty")


def _np(r: random.Random, plural: bool = False) -> str:
    det = r.choice(("the", "a", "my", "our", "that", "every")) if not plural else r.choice(_NUMWORDS)
    adj = r.choice(_ADJS) if r.random() < 0.7 else ""
    noun = r.choice(_NOUNS) + ("s" if plural else "")
    if det == "a" and (adj or noun)[0] in "aeiou":
        det = "an"
    return " ".join(w for w in (det, adj, noun) if w)


def _pp(r: random.Random) -> str:
    return f"{r.choice(_PREPS)} the {r.choice(_ADJS) + ' ' if r.random() < 0.5 else ''}{r.choice(_NOUNS)}"


def _clause(r: random.Random) -> str:
    subj = r.choice(_NAMES) if r.random() < 0.5 else _np(r)
    kind = r.random()
    if kind < 0.55:
        parts = [subj, r.choice(_ADVS) if r.random() < 0.3 else "", r.choice(_VERBS_PAST),
                 _np(r, plural=r.random() < 0.3), _pp(r) if r.random() < 0.6 else ""]
    elif kind < 0.8:
        parts = [subj, r.choice(_INTRANS), _pp(r) if r.random() < 0.5 else ""]
    else:
        parts = [subj, "said that", _np(r), "was", r.choice(("far too", "rather", "very", "not")), r.choice(_ADJS)]
    if r.random() < 0.35:
        parts.append(r.choice(_TIMES))
    return " ".join(p for p in parts if p)


def make_sentence(r: random.Random) -> str:
    """One sentence from the grammar: a statement, a compound, a question or a request."""
    kind = r.random()
    if kind < 0.45:
        s = _clause(r)
        if r.random() < 0.25:
            s = f"{r.choice(_OPENERS)}, {s}"
        end = "."
    elif kind < 0.65:
        s = f"{_clause(r)}, {r.choice(('and', 'but', 'so', 'while'))} {_clause(r)}"
        end = "."
    elif kind < 0.85:
        aux = r.choice(("Did", "Will", "Could", "Why did", "When will"))
        who = r.choice(_NAMES) if r.random() < 0.5 else _np(r)
        s = f"{aux} {who} {r.choice(_VERBS_BASE)} {_np(r)} {_pp(r)}"
        end = "?"
    else:
        s = f"{r.choice(('Please', 'Now', 'Just', 'Quickly'))} {r.choice(_VERBS_BASE)} {_np(r)} {_pp(r)}"
        end = r.choice((".", "!"))
    s = s[0].upper() + s[1:]
    return s + end


def make_sentences(seed: int, n: int) -> list[str]:
    r = random.Random(seed)
    return [make_sentence(r) for _ in range(n)]


# --- libespeak-ng ---------------------------------------------------------------------------------------------

# The worker runs with `python -I -S -c`: standard library only, job as JSON on stdin, PCM on stdout
# (uint32 sample rate, then per utterance a uint32 byte count and that many bytes of int16 little-endian PCM).
_WORKER = r"""
import ctypes, json, struct, sys

def fail(code, msg):
    sys.stderr.write(msg + "\n")
    sys.exit(code)

job = json.loads(sys.stdin.buffer.read().decode("utf-8"))
try:
    lib = ctypes.CDLL(job["lib"])
except OSError as e:
    fail(2, "cannot load libespeak-ng: %s" % e)
CB = ctypes.CFUNCTYPE(ctypes.c_int, ctypes.POINTER(ctypes.c_short), ctypes.c_int, ctypes.c_void_p)
lib.espeak_Initialize.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_char_p, ctypes.c_int]
lib.espeak_SetSynthCallback.argtypes = [CB]
lib.espeak_SetSynthCallback.restype = None
lib.espeak_SetVoiceByName.argtypes = [ctypes.c_char_p]
lib.espeak_SetParameter.argtypes = [ctypes.c_int, ctypes.c_int, ctypes.c_int]
lib.espeak_Synth.argtypes = [ctypes.c_void_p, ctypes.c_size_t, ctypes.c_uint, ctypes.c_int, ctypes.c_uint,
                             ctypes.c_uint, ctypes.c_void_p, ctypes.c_void_p]
AUDIO_OUTPUT_SYNCHRONOUS, INITIALIZE_DONT_EXIT, POS_CHARACTER, CHARS_UTF8 = 2, 0x8000, 1, 1
rate = lib.espeak_Initialize(AUDIO_OUTPUT_SYNCHRONOUS, 0, job["data"].encode(), INITIALIZE_DONT_EXIT)
if rate <= 0:
    fail(3, "espeak_Initialize failed (data path %s)" % job["data"])
chunks = []

def collect(wav, n, events):
    if wav and n > 0:
        chunks.append(ctypes.string_at(wav, 2 * n))
    return 0

callback = CB(collect)
lib.espeak_SetSynthCallback(callback)
if lib.espeak_SetVoiceByName(job["voice"].encode()) != 0:
    fail(4, "unknown voice %r" % job["voice"])
for param, value in job["params"]:
    if lib.espeak_SetParameter(param, value, 0) != 0:
        fail(5, "espeak_SetParameter(%d, %d) failed" % (param, value))
if hasattr(lib, "espeak_ng_SetRandSeed"):
    lib.espeak_ng_SetRandSeed.argtypes = [ctypes.c_long]
    lib.espeak_ng_SetRandSeed(job["seed"])
out = sys.stdout.buffer
out.write(struct.pack("<I", rate))
total, i, texts = 0, 0, job["texts"]
while total < job["target"] and i < job["max_utterances"]:
    chunks.clear()
    text = texts[i % len(texts)].encode("utf-8") + b"\0"
    err = lib.espeak_Synth(text, len(text), 0, POS_CHARACTER, 0, CHARS_UTF8, None, None)
    if err != 0:
        fail(6, "espeak_Synth failed with error %d on %r" % (err, texts[i % len(texts)]))
    lib.espeak_Synchronize()
    pcm = b"".join(chunks)
    out.write(struct.pack("<I", len(pcm)))
    out.write(pcm)
    total += len(pcm) // 2 + job["gap"]
    i += 1
out.write(struct.pack("<I", 0xFFFFFFFF))
out.flush()
"""

ESPEAK_RATE, ESPEAK_VOLUME, ESPEAK_PITCH, ESPEAK_RANGE, ESPEAK_WORDGAP = 1, 2, 3, 4, 7
DEFAULT_VOLUME = 30  # of 0-200 (espeak default 100, which clips for most variants)
CLIP_LEVEL = 32700


@lru_cache(maxsize=1)
def _espeak_paths() -> tuple[str, str, str]:
    """(library path, data path, engine label); CorpusError when the wheel is missing."""
    try:
        import espeakng_loader
    except ImportError as e:
        raise CorpusError("speech: the espeakng-loader package is not installed (pip install espeakng-loader)") from e
    lib = espeakng_loader.get_library_path()
    try:
        data = espeakng_loader.get_data_path()
    except RuntimeError as e:
        raise CorpusError(f"speech: espeakng-loader has no voice data ({e})") from e
    if not Path(lib).is_file():
        raise CorpusError(f"speech: libespeak-ng not found at {lib}")
    from importlib.metadata import PackageNotFoundError, version

    try:
        engine = f"espeakng-loader {version('espeakng-loader')}"
    except PackageNotFoundError:
        engine = "espeakng-loader"
    return lib, data, engine


@lru_cache(maxsize=1)
def speakers() -> tuple[str, ...]:
    """The voice variants shipped in the data dir (sorted; names with odd characters left out)."""
    _, data, _ = _espeak_paths()
    vdir = Path(data) / "voices" / "!v"
    if not vdir.is_dir():
        raise CorpusError(f"speech: no voice variants folder at {vdir}")
    names = sorted(p.name for p in vdir.iterdir() if p.is_file() and re.fullmatch(r"[A-Za-z0-9_-]+", p.name))
    if len(names) < len(SPLITS):
        raise CorpusError(f"speech: only {len(names)} voice variants in {vdir}; need at least {len(SPLITS)}")
    return tuple(names)


def _seed_int(*parts) -> int:
    return int(stable_hash(list(parts)), 16) & 0x7FFFFFFF


def _settings(path: Path) -> frozenset[str]:
    """A variant file's settings as normalised lines, without its name, language, gender or comments."""
    out = set()
    for line in path.read_text(encoding="utf-8", errors="replace").splitlines():
        line = line.split("//")[0].strip().lower()
        if line and line.split()[0] not in ("name", "language", "gender"):
            out.add(" ".join(line.split()))
    return frozenset(out)


def _vocal_tract(settings: frozenset[str]) -> tuple:
    """The formant table (9 formants x frequency, strength, width, in % of the default; unset = 100)."""
    table = [[100.0] * 3 for _ in range(9)]
    for line in settings:
        f = line.split()
        if f[0] == "formant" and len(f) >= 3 and f[1].isdigit() and int(f[1]) < 9:
            vals = [float(x) for x in f[2:5] if re.fullmatch(r"-?\d+(\.\d+)?", x)]
            table[int(f[1])][: len(vals)] = vals
    return tuple(map(tuple, table))


def _stem(name: str) -> str:
    return re.sub(r"\d+$", "", name.lower())


@lru_cache(maxsize=1)
def voice_families() -> dict[str, str]:
    """Variant -> its family's name (the family's first member, sorted). Two variants are near-twins, hence one
    family, when they share a vocal tract (the same formant table: ``klatt`` ... ``klatt6``, ``john``, ``adam``),
    when one name is the other's with a suffix or prefix (``steph2``, ``whisperf``, ``AnxiousAndy``; names of at
    least 4 letters), or when their settings differ in at most 2 lines; families are closed under these links."""
    _, data, _ = _espeak_paths()
    vdir = Path(data) / "voices" / "!v"
    names = speakers()
    settings = {n: _settings(vdir / n) for n in names}
    tract = {n: _vocal_tract(settings[n]) for n in names}
    parent = {n: n for n in names}

    def root(n: str) -> str:
        while parent[n] != n:
            n = parent[n]
        return n

    for i, a in enumerate(names):
        for b in names[i + 1 :]:
            sa, sb = _stem(a), _stem(b)
            if (tract[a] == tract[b] or (min(len(sa), len(sb)) >= 4 and (sa in sb or sb in sa))
                    or len(settings[a] ^ settings[b]) <= 2):
                parent[root(a)] = root(b)
    members: dict[str, list[str]] = {}
    for n in names:
        members.setdefault(root(n), []).append(n)
    return {n: sorted(ms, key=str.lower)[0] for ms in members.values() for n in ms}


def voice_pools(seed: int) -> dict[str, list[list[str]]]:
    """Per split, its voice families (each a sorted list of variants), in an order seeded by ``seed``: the test
    pool is ``TEST_SHARE`` of the families never heard in a test set (:data:`SPENT_TEST_VOICES`), the validation
    pool ``VALID_SHARE`` of the spent ones (at least one family, fresh ones when none is spent), and training
    the rest. No family is in two splits."""
    fam = voice_families()
    groups: dict[str, list[str]] = {}
    for n in speakers():
        groups.setdefault(fam[n], []).append(n)
    spent_roots = {fam[n] for n in SPENT_TEST_VOICES if n in fam}
    fresh = sorted(r for r in groups if r not in spent_roots)
    spent = sorted(spent_roots)
    random.Random(_seed_int("speech-families", seed, "fresh")).shuffle(fresh)
    random.Random(_seed_int("speech-families", seed, "spent")).shuffle(spent)
    n_test = max(1, round(TEST_SHARE * len(fresh)))
    test, train = fresh[:n_test], fresh[n_test:]
    pool = spent + train  # validation: spent families first
    n_valid = max(1, round(VALID_SHARE * len(spent)))
    if len(pool) <= n_valid:
        raise CorpusError(f"speech: {len(groups)} voice families cannot fill three disjoint splits")
    valid = pool[:n_valid]
    train = pool[n_valid:]
    return {split: [sorted(groups[r], key=str.lower) for r in roots]
            for split, roots in (("train", train), ("valid", valid), ("test", test))}


def capacity(seed: int) -> dict[str, int]:
    """How many distinct sources each split can give: test one voice per family, valid one per voice; training
    has no limit (its voices come round again as other takes)."""
    pools = voice_pools(seed)
    return {"train": 0, "valid": sum(map(len, pools["valid"])), "test": len(pools["test"])}


def synthesise(voice: str, texts: list[str], params: list[tuple[int, int]], *, seed: int, target: int,
               gap: int, max_utterances: int = 200) -> tuple[list[np.ndarray], int]:
    """Speak ``texts`` (cycled) with one voice in a fresh process until ``target`` samples (plus ``gap`` per
    utterance) are reached. Returns the int16 utterances and the sample rate."""
    lib, data, _ = _espeak_paths()
    job = {"lib": lib, "data": data, "voice": voice, "texts": list(texts), "params": [list(p) for p in params],
           "seed": int(seed), "target": int(target), "gap": int(gap), "max_utterances": int(max_utterances)}
    if not sys.executable:
        raise CorpusError("speech: no Python interpreter path (sys.executable) to run the espeak worker")
    try:
        proc = subprocess.run([sys.executable, "-I", "-S", "-c", _WORKER], input=json.dumps(job).encode(),
                              capture_output=True, timeout=WORKER_TIMEOUT_S, check=False)
    except subprocess.TimeoutExpired as e:
        raise CorpusError(f"speech: espeak-ng worker for voice {voice} timed out after {WORKER_TIMEOUT_S:.0f} s") from e
    if proc.returncode != 0:
        msg = proc.stderr.decode("utf-8", "replace").strip().splitlines()
        raise CorpusError(f"speech: espeak-ng failed for voice {voice} (exit {proc.returncode}): "
                          f"{msg[-1] if msg else 'no message'}")
    return _parse_pcm(proc.stdout, voice)


def _parse_pcm(blob: bytes, voice: str) -> tuple[list[np.ndarray], int]:
    if len(blob) < 8:
        raise CorpusError(f"speech: espeak-ng worker for voice {voice} returned no audio")
    (rate,) = struct.unpack_from("<I", blob, 0)
    pos, utts = 4, []
    while True:
        if pos + 4 > len(blob):
            raise CorpusError(f"speech: truncated output from the espeak-ng worker for voice {voice}")
        (n,) = struct.unpack_from("<I", blob, pos)
        pos += 4
        if n == 0xFFFFFFFF:
            return utts, rate
        utts.append(np.frombuffer(blob, dtype="<i2", count=n // 2, offset=pos).astype(np.int16))
        pos += n


def _trim(x: np.ndarray, threshold: float = 0.003, pad: int = 220) -> np.ndarray:
    """Drop leading and trailing near-silence, keeping ``pad`` samples (10 ms) around the speech."""
    idx = np.flatnonzero(np.abs(x) > threshold)
    if idx.size == 0:
        return x[:0]
    return x[max(0, idx[0] - pad) : idx[-1] + 1 + pad]


@register_corpus("speech")
class SpeechCorpus(Corpus):
    name = "speech"
    version = 1

    def plan(self) -> list[SourceSpec]:
        engine = _espeak_paths()[2]
        pools = voice_pools(self.seed)
        fam = voice_families()
        n_sentences = max(3, math.ceil(self.seconds / 1.2) + 2)
        specs = []
        for split in SPLITS:
            n = int(self.sources.get(split, 0))
            if n < 0:
                raise CorpusError(f"speech: negative source count {n} for split {split}")
            voices = self._voices(split, pools[split], n)
            for i, voice in enumerate(voices):
                r = random.Random(_seed_int("speech-source", self.split_seed(split), split, i))
                accent = r.choice(ACCENTS)
                text_seed = r.getrandbits(31)
                recipe = {
                    "voice": f"{accent}+{voice}", "accent": accent, "variant": voice,
                    "pitch": r.randint(25, 75), "range": r.randint(20, 90), "rate": r.randint(135, 215),
                    "wordgap": r.choice((0, 0, 0, 1, 2)), "volume": DEFAULT_VOLUME, "seed": r.getrandbits(31),
                    "seconds": self.seconds, "texts": make_sentences(text_seed, n_sentences), "engine": engine,
                }
                take = voices[:i].count(voice)  # training only: a voice heard again is another take of it
                specs.append(SourceSpec(source_id=voice if take == 0 else f"{voice}~{take + 1}",
                                        group=f"family:{fam[voice]}", split=split, recipe=recipe, identity=voice))
        return specs

    def _voices(self, split: str, families: list[list[str]], n: int) -> list[str]:
        """The voices of a split's ``n`` sources: test, one per family (families shuffled by ``data.test_seed``, a
        variant of each drawn with it); valid, distinct voices; train, its voices in turn."""
        if split == "test":
            order = list(families)
            random.Random(_seed_int("speech-test-families", self.split_seed(split))).shuffle(order)
            if n > len(order):
                raise CorpusError(
                    f"speech: {n} test sources asked for, but only {len(order)} voice families were never used in "
                    "training, validation or an earlier test set (one voice each, so that sources are "
                    f"independent); lower data.test_sources to at most {len(order)}")
            return [random.Random(_seed_int("speech-test-voice", self.split_seed(split), f[0])).choice(f)
                    for f in order[:n]]
        voices = [v for f in families for v in f]
        if split == "valid" and n > len(voices):
            raise CorpusError(f"speech: {n} validation sources asked for, but the validation pool has {len(voices)} "
                              f"distinct voices; lower data.valid_sources to at most {len(voices)}")
        return [voices[i % len(voices)] for i in range(n)]

    def capacity(self) -> dict[str, int]:
        return capacity(self.seed)

    def render(self, spec: SourceSpec) -> tuple[np.ndarray, int]:
        rc = spec.recipe
        target = round(rc["seconds"] * NATIVE_RATE)
        volume = rc["volume"]
        while True:
            params = [(ESPEAK_RATE, rc["rate"]), (ESPEAK_PITCH, rc["pitch"]), (ESPEAK_RANGE, rc["range"]),
                      (ESPEAK_WORDGAP, rc["wordgap"]), (ESPEAK_VOLUME, volume)]
            # Ask for half a second more than needed: each utterance loses its silent head and tail when trimmed.
            utts, rate = synthesise(rc["voice"], rc["texts"], params, seed=rc["seed"],
                                    target=target + NATIVE_RATE // 2, gap=int(0.25 * NATIVE_RATE))
            # libespeak-ng saturates at full scale; a few loud variants clip even at the low default volume.
            # Speak again, quieter (still a pure function of the recipe), rather than keep distorted audio.
            if volume <= 4 or not any(np.any(np.abs(u.astype(np.int32)) >= CLIP_LEVEL) for u in utts):
                break
            volume //= 2
        if rate != NATIVE_RATE:
            raise CorpusError(f"speech: libespeak-ng runs at {rate} Hz, expected {NATIVE_RATE}")
        rng = np.random.default_rng(rc["seed"])
        parts = [np.zeros(int(rng.uniform(0.05, 0.2) * rate), np.float32)]
        for u in utts:
            parts.append(_trim(u.astype(np.float32) / 32768.0))
            parts.append(np.zeros(int(rng.uniform(0.15, 0.45) * rate), np.float32))
        x = np.concatenate(parts)
        if len(x) >= target:
            x = x[:target].copy()
            fade = min(len(x), int(0.02 * rate))
            x[len(x) - fade :] *= np.linspace(1.0, 0.0, fade, dtype=np.float32)
        else:  # only when every utterance came out nearly empty: pad, and let the silence check judge it
            x = np.pad(x, (0, target - len(x)))
        return x.astype(np.float32), rate
