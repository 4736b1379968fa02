import os
import pwd
import shutil
import socket
import subprocess
import sys
import tempfile
import zlib
from pathlib import Path

import numpy as np
import pytest

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path:
    sys.path.insert(0, str(ROOT))


def pytest_configure(config):
    # never write into the user's cache from tests; CI points AFX_BENCH_CACHE at a reusable dir
    if not os.environ.get("AFX_BENCH_CACHE"):
        import tempfile

        os.environ["AFX_BENCH_CACHE"] = tempfile.mkdtemp(prefix="afx-test-cache-")
    os.environ.setdefault("MPLBACKEND", "Agg")
    # Tests that press Ctrl-C (a SIGINT to an afx-bench process, or to this one) need SIGINT's default handling. A
    # background job of a non-interactive shell (`cmd &`, as CI scripts and nohup runs start it) begins with SIGINT
    # ignored, and an ignored signal stays ignored in every child: the interrupted run would finish instead. With a
    # handler here, children start with the default again (exec resets handlers, not SIG_IGN)
    import signal

    if signal.getsignal(signal.SIGINT) == signal.SIG_IGN:
        signal.signal(signal.SIGINT, signal.default_int_handler)


from bench.corpora import Corpus, SourceSpec, register_corpus  # noqa: E402


@register_corpus("tones")
class Tones(Corpus):
    """A tiny synthetic corpus for tests: harmonic tones with vibrato and noise, one group per source."""

    name = "tones"

    def plan(self):
        specs = []
        for split in ("train", "valid", "test"):
            for i in range(self.sources.get(split, 0)):
                sid = f"{split}-{i}"
                specs.append(SourceSpec(sid, sid, split, {"f0": 110.0 * (1 + (zlib.crc32(sid.encode()) % 7) / 3)}))
        return specs

    def render(self, spec):
        sr = 24000
        rng = np.random.default_rng(zlib.crc32(spec.source_id.encode()))
        t = np.arange(int(self.seconds * sr)) / sr
        f0 = spec.recipe["f0"] * (1 + 0.01 * np.sin(2 * np.pi * 5 * t))
        phase = 2 * np.pi * np.cumsum(f0) / sr
        x = sum(np.sin(k * phase) / k for k in range(1, 10)) * (0.6 + 0.4 * np.sin(2 * np.pi * 1.5 * t) ** 2)
        x = x + 0.05 * rng.standard_normal(len(t))
        return (0.3 * x / np.max(np.abs(x))).astype(np.float32), sr


@pytest.fixture
def tones():
    return Tones(sample_rate=24000, seed=0, sources={"train": 3, "valid": 1, "test": 2}, seconds=1.5)


# --- a throwaway PostgreSQL server: the storage every process (or Ray node) of a sweep reaches ------------------


def _pg_bindir() -> Path | None:
    found = []
    if shutil.which("initdb"):
        found.append(Path(shutil.which("initdb")).resolve().parent)

    def version(p):
        return int(p.parent.name) if p.parent.name.isdigit() else 0

    found += sorted(Path("/usr/lib/postgresql").glob("*/bin"), key=version, reverse=True)
    return next((d for d in found if (d / "initdb").exists() and (d / "pg_ctl").exists()), None)


def _pg_driver() -> str | None:
    for module, dialect in (("psycopg", "postgresql+psycopg"), ("psycopg2", "postgresql+psycopg2")):
        try:
            __import__(module)
            return dialect
        except ImportError:
            continue
    return None


@pytest.fixture
def postgres_url():
    """A throwaway PostgreSQL server: initdb on a temp dir, pg_ctl on a free loopback port (as a non-root user
    when the tests run as root, since initdb refuses root)."""
    bindir = _pg_bindir()
    if bindir is None:
        pytest.skip("PostgreSQL server binaries (initdb, pg_ctl) not found; install the Debian package postgresql")
    dialect = _pg_driver()
    if dialect is None:
        pytest.skip("no PostgreSQL driver for SQLAlchemy; pip install 'psycopg[binary]'")
    base = Path(tempfile.mkdtemp(prefix="afx-pg-"))
    prefix: list[str] = []
    if os.geteuid() == 0:
        runuser = shutil.which("runuser")
        if runuser is None:
            shutil.rmtree(base)
            pytest.skip("running as root, and no runuser to start PostgreSQL as another user")
        try:
            user = pwd.getpwnam("postgres")
        except KeyError:
            user = pwd.getpwnam("nobody")
        os.chown(base, user.pw_uid, user.pw_gid)
        prefix = [runuser, "-u", user.pw_name, "--"]
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    data = base / "data"
    try:
        subprocess.run([*prefix, str(bindir / "initdb"), "-D", str(data), "-A", "trust", "-U", "postgres", "-E",
                        "UTF8", "--no-sync"], check=True, capture_output=True, timeout=120)
        opts = f"-p {port} -k {base} -c listen_addresses=127.0.0.1 -c fsync=off -c full_page_writes=off"
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-l", str(base / "server.log"), "-w",
                        "-t", "60", "-o", opts, "start"], check=True, capture_output=True, timeout=90)
    except subprocess.CalledProcessError as e:
        log = (base / "server.log").read_text() if (base / "server.log").exists() else ""
        shutil.rmtree(base, ignore_errors=True)
        pytest.fail(f"PostgreSQL did not start: {e.stderr!r} {e.stdout!r} {log}")
    try:
        yield f"{dialect}://postgres@127.0.0.1:{port}/postgres"
    finally:
        subprocess.run([*prefix, str(bindir / "pg_ctl"), "-D", str(data), "-m", "immediate", "stop"],
                       capture_output=True, timeout=60)
        shutil.rmtree(base, ignore_errors=True)
