"""`python -m bench.perf.timbral_ab REV [--rounds N]`: the batched AudioCommons features of git revision ``REV``
against those of the working tree, and each against timbral_models, per core, on a shared machine.

On a machine that other work shares, CPU time still moves by +-10 % from one run to the next (caches, SMT
siblings), so a few per cent of gain cannot be read from two separate runs. This alternates one process of
``REV``'s code and one of the working tree's, ``--rounds`` times; each process measures, as its own CPU time
(``time.process_time``, one thread per library, the allocator tuned as in the metric's workers), the batched code
on ``--clips`` of the quick preset's test clips (64 per call) and timbral_models (``ac_ref``'s adapter) on
``--ref-clips``, in two interleaved halves. It prints each process's line and the medians of both codes.
"""

from __future__ import annotations

import argparse
import os
import pickle
import re
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

_CHILD = r"""
import pickle, sys, time
import numpy as np
sys.path.insert(0, {root!r})
from bench.checks.ac import one_thread
from bench.metrics.audiocommons import init_worker, timbral_features
init_worker()
from bench.metrics.timbral import extract, warm
clips = pickle.load(open({clips!r}, 'rb'))
xs = [np.asarray(x, np.float64) for _, x, _ in clips]
sr = clips[0][2]
warm()
n, m = {n}, {m}
with one_thread():
    extract(xs[:2], sr)
    timbral_features(xs[0], sr)
    b = r = 0.0
    for half in range(2):
        c0 = time.process_time()
        for s in range(0, n, 64):
            extract(xs[s:min(n, s + 64)], sr)
        b += (time.process_time() - c0) / n
        c0 = time.process_time()
        for x in xs[half * m:(half + 1) * m]:
            timbral_features(x, sr)
        r += (time.process_time() - c0) / m
print('MS', 1000 * b / 2, 1000 * r / 2)
"""


def main(argv=None) -> int:
    p = argparse.ArgumentParser(prog="python -m bench.perf.timbral_ab", description=__doc__.split("\n\n")[0])
    p.add_argument("rev", help="git revision to compare the working tree with (e.g. main)")
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--clips", type=int, default=128, help="clips for the batched code (per process)")
    p.add_argument("--ref-clips", type=int, default=3, help="clips for timbral_models per half (per process)")
    args = p.parse_args(argv)
    from bench.checks.ac import generated_clips, select_evenly

    here = Path(__file__).resolve().parents[2]
    with tempfile.TemporaryDirectory(prefix="timbral-ab-") as tmp:
        base = Path(tmp) / "base"
        base.mkdir()
        archive = subprocess.run(["git", "archive", args.rev, "bench"], cwd=here, check=True, capture_output=True)
        subprocess.run(["tar", "-x", "-C", str(base)], input=archive.stdout, check=True)
        clips = Path(tmp) / "clips.pkl"
        chosen = select_evenly(generated_clips("quick", 4, []), max(args.clips, 2 * args.ref_clips))
        clips.write_bytes(pickle.dumps(chosen))
        res: dict[str, list] = {args.rev: [], "working tree": []}
        for _ in range(args.rounds):
            for name, root in ((args.rev, base), ("working tree", here)):
                code = _CHILD.format(root=str(root), clips=str(clips), n=min(args.clips, len(chosen)),
                                     m=args.ref_clips)
                out = subprocess.run([sys.executable, "-c", code], cwd=root, capture_output=True, text=True)
                found = re.search(r"MS (\S+) (\S+)", out.stdout)
                if not found:
                    print(out.stderr[-3000:], file=sys.stderr)
                    return 1
                b, r = float(found.group(1)), float(found.group(2))
                res[name].append((b, r))
                print(f"{name}: batched {b:.2f} ms/clip, timbral_models {r:.1f} ms/clip, {r / b:.1f}x "
                      f"(load {os.getloadavg()[0]:.1f})", flush=True)
    for name, v in res.items():
        print(f"median {name}: batched {statistics.median(x[0] for x in v):.2f} ms/clip, "
              f"{statistics.median(x[1] / x[0] for x in v):.1f}x timbral_models")
    return 0


if __name__ == "__main__":
    sys.exit(main())
