"""Open a report in headless Chromium and check that it loads cleanly; save screenshots.

Chromium is driven through the DevTools protocol over ``--remote-debugging-pipe`` (JSON messages separated by
NUL bytes on file descriptors 3 and 4), so no extra Python package and no TCP port is needed. The check fails on:
a JavaScript exception or console error, a failed network request, a Log "error" entry (Chromium reports missing
files there), an image that did not decode, an audio element whose metadata did not load, a page without result
tables, and a relative link to a file that does not exist. Links to the MLflow UI (http://127.0.0.1:5000) are
not followed: that server runs only while someone looks at the runs.

    python -m reports.browser OUT [--screenshot PATH]     (OUT: a results dir, its report dir, or report.html)
"""

from __future__ import annotations

import fcntl
import json
import os
import shutil
import subprocess
import sys
import tempfile
import threading
import time
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import unquote, urlparse

CANDIDATES = ("chromium", "chromium-browser", "google-chrome", "google-chrome-stable")
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
         "--disable-component-update", "--disable-sync", "--no-first-run", "--mute-audio",
         "--disable-dev-shm-usage", "--remote-debugging-pipe"]  # small /dev/shm in containers
WIDTH, HEIGHT = 1400, 1000
MAX_FULL_HEIGHT = 12000  # the full-page screenshot is cut here
SECTION_SHOTS = ("significance", "wild", "figures", "audio")  # also one screen from the top of each (by id)


class BrowserError(RuntimeError):
    pass


def find_chromium() -> str | None:
    """``$AFX_CHROMIUM``, else the first of chromium / chromium-browser / google-chrome on PATH."""
    env = os.environ.get("AFX_CHROMIUM")
    if env:
        return env if Path(env).is_file() else shutil.which(env)
    for name in CANDIDATES:
        p = shutil.which(name)
        if p:
            return p
    return None


class Chromium:
    """A headless Chromium and one DevTools-protocol connection to it over a pipe."""

    def __init__(self, binary: str, *, timeout: float = 60.0):
        self.timeout = timeout
        self.profile = tempfile.mkdtemp(prefix="afx-chromium-")
        to_child_r, self._to_child = os.pipe()
        self._from_child, from_child_w = os.pipe()
        # high, close-on-exec copies, so that putting them at 3 and 4 in the child cannot clobber each other
        hi_r = fcntl.fcntl(to_child_r, fcntl.F_DUPFD_CLOEXEC, 10)
        hi_w = fcntl.fcntl(from_child_w, fcntl.F_DUPFD_CLOEXEC, 10)
        os.close(to_child_r)
        os.close(from_child_w)

        def fds():  # in the child, before exec: Chromium reads commands on 3 and writes replies on 4
            os.dup2(hi_r, 3)
            os.dup2(hi_w, 4)

        self.log_path = Path(self.profile) / "chromium.log"
        self._log = open(self.log_path, "wb")  # noqa: SIM115 - closed in close()
        try:
            self.proc = subprocess.Popen([binary, *FLAGS, f"--user-data-dir={self.profile}", "about:blank"],
                                         stdin=subprocess.DEVNULL, stdout=self._log, stderr=self._log,
                                         close_fds=False, preexec_fn=fds)
        finally:
            os.close(hi_r)
            os.close(hi_w)
        self._id = 0
        self._lock = threading.Lock()
        self._cv = threading.Condition()
        self._replies: dict[int, dict] = {}
        self.events: list[dict] = []
        self._closed = False
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()

    def _read(self) -> None:
        buf = b""
        while True:
            try:
                chunk = os.read(self._from_child, 1 << 16)
            except OSError:
                chunk = b""
            if not chunk:
                with self._cv:
                    self._closed = True
                    self._cv.notify_all()
                return
            buf += chunk
            *msgs, buf = buf.split(b"\0")
            with self._cv:
                for raw in msgs:
                    try:
                        msg = json.loads(raw)
                    except ValueError:
                        continue
                    if "id" in msg:
                        self._replies[msg["id"]] = msg
                    else:
                        self.events.append(msg)
                self._cv.notify_all()

    def send(self, method: str, params: dict | None = None, *, session: str | None = None,
             timeout: float | None = None) -> dict:
        with self._lock:
            self._id += 1
            mid = self._id
        msg = {"id": mid, "method": method, "params": params or {}}
        if session:
            msg["sessionId"] = session
        os.write(self._to_child, json.dumps(msg).encode() + b"\0")
        deadline = time.monotonic() + (timeout or self.timeout)
        with self._cv:
            while mid not in self._replies:
                left = deadline - time.monotonic()
                if self._closed:
                    raise BrowserError(f"Chromium exited during {method}; log: {self.log_tail()}")
                if left <= 0:
                    raise BrowserError(f"no answer to {method} within {timeout or self.timeout:.0f} s")
                self._cv.wait(left)
            reply = self._replies.pop(mid)
        if "error" in reply:
            raise BrowserError(f"{method}: {reply['error'].get('message', reply['error'])}")
        return reply.get("result", {})

    def wait_event(self, method: str, session: str | None, timeout: float) -> dict:
        deadline = time.monotonic() + timeout
        with self._cv:
            while True:
                for e in self.events:
                    if e.get("method") == method and (session is None or e.get("sessionId") == session):
                        return e
                left = deadline - time.monotonic()
                if left <= 0 or self._closed:
                    raise BrowserError(f"no {method} event within {timeout:.0f} s")
                self._cv.wait(left)

    def log_tail(self, n: int = 800) -> str:
        try:
            return self.log_path.read_text(errors="replace")[-n:]
        except OSError:
            return ""

    def close(self) -> None:
        try:
            if self.proc.poll() is None and not self._closed:
                self.send("Browser.close", timeout=10)
        except BrowserError:
            pass
        try:
            self.proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        for fd in (self._to_child, self._from_child):
            try:
                os.close(fd)
            except OSError:
                pass
        self._log.close()
        shutil.rmtree(self.profile, ignore_errors=True)

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


# in the page: wait for every audio element's metadata (or error), then describe what loaded
PAGE_CHECK = """
(async () => {
  const audios = Array.from(document.querySelectorAll('audio'));
  await Promise.all(audios.map(a => new Promise(resolve => {
    if (a.readyState >= 1 || a.error) return resolve();
    const done = () => resolve();
    a.addEventListener('loadedmetadata', done, {once: true});
    a.addEventListener('error', done, {once: true});
    if (a.preload === 'none') a.load();
    setTimeout(done, TIMEOUT_MS);
  })));
  const imgs = Array.from(document.images);
  await Promise.all(imgs.map(i => i.complete ? null : new Promise(r => { i.onload = i.onerror = r; })));
  return JSON.stringify({
    title: document.title,
    tables: Array.from(document.querySelectorAll('table.results')).map(t => ({
      id: t.id, rows: t.tBodies.length ? t.tBodies[0].rows.length : 0,
      cells: Array.from(t.querySelectorAll('tbody td')).map(td => td.innerText.trim())})),
    images: imgs.map(i => ({src: i.getAttribute('src'), ok: i.complete && i.naturalWidth > 0,
                           w: i.naturalWidth})),
    audio: audios.map(a => ({src: a.getAttribute('src'), ready: a.readyState,
                            error: a.error ? (a.error.message || String(a.error.code)) : null,
                            duration: a.duration})),
    links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')),
    height: document.documentElement.scrollHeight,
  });
})()
"""


@dataclass
class PageCheck:
    html: Path
    problems: list[str] = field(default_factory=list)
    tables: list[dict] = field(default_factory=list)
    images: list[dict] = field(default_factory=list)
    audio: list[dict] = field(default_factory=list)
    links: list[str] = field(default_factory=list)
    screenshots: list[Path] = field(default_factory=list)
    seconds: float = 0.0

    @property
    def ok(self) -> bool:
        return not self.problems


def resolve_report(path: Path) -> Path:
    path = Path(path)
    for p in (path, path / "report.html", path / "report" / "report.html"):
        if p.is_file():
            return p.resolve()
    raise FileNotFoundError(f"no report.html at {path}")


def check_report(path: Path, *, screenshot: Path | None = None, binary: str | None = None,
                 timeout: float = 60.0, audio_timeout: float = 20.0) -> PageCheck:
    """Load the report in headless Chromium and collect every problem (see the module docstring)."""
    t0 = time.monotonic()
    html = resolve_report(path)
    binary = binary or find_chromium()
    if not binary:
        raise BrowserError("no Chromium found (install Debian's `chromium`, or set AFX_CHROMIUM)")
    res = PageCheck(html)
    with Chromium(binary, timeout=timeout) as b:
        target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
        s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
        for domain in ("Page", "Runtime", "Log", "Network"):
            b.send(f"{domain}.enable", session=s)
        b.send("Emulation.setDeviceMetricsOverride",
               {"width": WIDTH, "height": HEIGHT, "deviceScaleFactor": 1, "mobile": False}, session=s)
        nav = b.send("Page.navigate", {"url": html.as_uri()}, session=s)
        if nav.get("errorText"):
            res.problems.append(f"navigation failed: {nav['errorText']}")
            return res
        b.wait_event("Page.loadEventFired", s, timeout)
        js = PAGE_CHECK.replace("TIMEOUT_MS", str(int(audio_timeout * 1000)))
        out = b.send("Runtime.evaluate", {"expression": js, "awaitPromise": True, "returnByValue": True},
                     session=s, timeout=timeout + audio_timeout)
        if "exceptionDetails" in out:
            res.problems.append(f"page check script failed: {out['exceptionDetails'].get('text')}")
            return res
        page = json.loads(out["result"]["value"])
        res.tables, res.images, res.audio, res.links = page["tables"], page["images"], page["audio"], page["links"]
        res.problems += _page_problems(page, html)
        with b._cv:
            events = list(b.events)
        res.problems += _event_problems(events, s)
        if screenshot is not None:
            res.screenshots = _screenshots(b, s, Path(screenshot), page["height"])
    res.seconds = time.monotonic() - t0
    return res


def _page_problems(page: dict, html: Path) -> list[str]:
    problems = []
    if not page["tables"]:
        problems.append("no result tables on the page")
    for t in page["tables"]:
        if t["rows"] == 0:
            problems.append(f"table {t['id']} has no rows")
    for i in page["images"]:
        if not i["ok"]:
            problems.append(f"image did not load: {i['src']}")
    for a in page["audio"]:
        if a["error"] or a["ready"] < 1:
            problems.append(f"audio did not load: {a['src']} (readyState {a['ready']}, error {a['error']})")
    for href in page["links"]:
        u = urlparse(href)
        if u.scheme in ("http", "https", "mailto", "data") or href.startswith("#"):
            continue
        target = (html.parent / unquote(u.path)).resolve() if u.scheme in ("", "file") else None
        if target is not None and not target.exists():
            problems.append(f"broken link: {href}")
    return problems


def _event_problems(events: list[dict], session: str) -> list[str]:
    problems = []
    for e in events:
        if e.get("sessionId") != session:
            continue
        m, p = e.get("method"), e.get("params", {})
        if m == "Runtime.exceptionThrown":
            d = p.get("exceptionDetails", {})
            problems.append(f"JavaScript exception: {d.get('exception', {}).get('description') or d.get('text')}")
        elif m == "Runtime.consoleAPICalled" and p.get("type") in ("error", "assert"):
            args = " ".join(str(a.get("value", a.get("description", ""))) for a in p.get("args", []))
            problems.append(f"console {p.get('type')}: {args}")
        elif m == "Log.entryAdded" and p.get("entry", {}).get("level") == "error":
            en = p["entry"]
            problems.append(f"log error ({en.get('source')}): {en.get('text')} {en.get('url', '')}".strip())
        elif m == "Network.loadingFailed" and not p.get("canceled"):
            problems.append(f"request failed: {p.get('errorText')} ({p.get('type')})")
        elif m == "Network.responseReceived":
            r = p.get("response", {})
            if int(r.get("status") or 0) >= 400:
                problems.append(f"HTTP {r.get('status')} for {r.get('url')}")
    return problems


def _screenshots(b: Chromium, s: str, path: Path, height: int) -> list[Path]:
    import base64

    path.parent.mkdir(parents=True, exist_ok=True)
    top = b.send("Page.captureScreenshot", {"format": "png"}, session=s)
    path.write_bytes(base64.b64decode(top["data"]))
    full_h = int(min(max(height, HEIGHT), MAX_FULL_HEIGHT))
    full = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                            "clip": {"x": 0, "y": 0, "width": WIDTH, "height": full_h,
                                                     "scale": 1}}, session=s)
    full_path = path.with_name(path.stem + "-full" + path.suffix)
    full_path.write_bytes(base64.b64decode(full["data"]))
    shots = [path, full_path]
    for section in SECTION_SHOTS:  # sections the full-page cut may miss on a long page
        got = b.send("Runtime.evaluate", {"expression": f"(() => {{ const e = document.getElementById('{section}');"
                                          " return e ? e.getBoundingClientRect().top + window.scrollY : -1; })()",
                                          "returnByValue": True}, session=s)
        top_y = got.get("result", {}).get("value", -1)
        if top_y is None or top_y < 0:
            continue
        shot = b.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True,
                                                 "clip": {"x": 0, "y": top_y, "width": WIDTH, "height": HEIGHT,
                                                          "scale": 1}}, session=s)
        p = path.with_name(f"{path.stem}-{section}{path.suffix}")
        p.write_bytes(base64.b64decode(shot["data"]))
        shots.append(p)
    return shots


def main(argv: list[str] | None = None) -> int:
    import argparse

    p = argparse.ArgumentParser(prog="python -m reports.browser", description=__doc__.splitlines()[0])
    p.add_argument("path", help="results dir, report dir or report.html")
    p.add_argument("--screenshot", help="PNG path (default: <report dir>/screenshot.png)")
    args = p.parse_args(argv)
    html = resolve_report(Path(args.path))
    shot = Path(args.screenshot) if args.screenshot else html.parent / "screenshot.png"
    res = check_report(html, screenshot=shot)
    print(f"{html}: {len(res.tables)} tables, {len(res.images)} images, {len(res.audio)} audio elements, "
          f"checked in {res.seconds:.1f} s; screenshots: {', '.join(map(str, res.screenshots))}")
    for prob in res.problems:
        print(f"problem: {prob}")
    return 0 if res.ok else 1


if __name__ == "__main__":
    sys.exit(main())
