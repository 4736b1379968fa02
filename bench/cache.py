"""Where generated data lives: a user cache dir, overridable with AFX_BENCH_CACHE."""

from __future__ import annotations

import os
from pathlib import Path


def cache_dir() -> Path:
    env = os.environ.get("AFX_BENCH_CACHE")
    if env:
        path = Path(env).expanduser()
    else:
        from platformdirs import user_cache_dir

        path = Path(user_cache_dir("afx-bench"))
    path.mkdir(parents=True, exist_ok=True)
    return path


def stable_hash(obj) -> str:
    """A short hash of any JSON-able object, stable across runs and machines."""
    import hashlib
    import json

    return hashlib.sha256(json.dumps(obj, sort_keys=True, default=str).encode()).hexdigest()[:16]


def atomic_write_bytes(path: Path, data: bytes) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_bytes(data)
    os.replace(tmp, path)


_NUMBA_WARM: set[str] = set()  # the parts warmed in this process


def warm_librosa_numba(onsets: bool = False) -> None:
    """Import librosa's numba-compiled parts once, in this process, while holding a lock shared by all processes.

    librosa's ``@guvectorize(cache=True)`` functions are compiled (or loaded from numba's on-disk cache) when their
    modules are imported or first called. numba writes each function's cache as several files, one at a time, so
    two processes compiling the same function at once can leave files from different processes side by side;
    every later load of that mix crashes the process (numba issue #10128). Call this before starting worker
    processes that use librosa, and in each worker before its first job: the first caller compiles and writes the
    cache alone, the others wait and then only read it.

    By default the parts every run uses: the gufuncs that ``librosa.util``, ``librosa.core.audio`` and
    ``librosa.core.pitch`` compile on import (the MFCC metric imports pitch) and ``istft``'s overlap-add and window
    sum-square: ~20 CPU-s on a cold cache, which the driver spends before its workers start, so a serial part of
    every fresh run (issue 28). ``onsets``: also librosa's onset and beat modules (~9 CPU-s more), which only
    timbral_models itself calls (the ``ac_ref`` metric, ``afx-bench check ac``); the batched AudioCommons code
    has onset kernels of its own."""
    wanted = {"core", "onsets"} if onsets else {"core"}
    if wanted <= _NUMBA_WARM:
        return
    import fcntl
    import tempfile

    lock = Path(tempfile.gettempdir()) / f"afx-bench-numba-{os.getuid() if hasattr(os, 'getuid') else 0}.lock"
    with open(lock, "a+") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            import librosa
            import librosa.core.audio
            import librosa.core.pitch
            import librosa.util.utils
            import numpy as np

            noise = np.random.default_rng(0).standard_normal(8192)
            for dtype in (np.float32, np.float64):
                librosa.zero_crossings(noise.astype(dtype))
                librosa.istft(librosa.stft(noise.astype(dtype), n_fft=512), n_fft=512)
            if onsets:
                import librosa.beat
                import librosa.onset

                for dtype in (np.float32, np.float64):
                    librosa.onset.onset_detect(y=noise.astype(dtype), sr=22050)
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)
    _NUMBA_WARM.update(wanted)
