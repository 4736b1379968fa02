"""`afx-bench ui` in a real browser: headless Chromium opens the address the command prints, on a copied results
folder, and sees the runs table of the experiment (MLflow 3's model-training view, not its GenAI traces), with
UI telemetry off; the artifacts are the copy's own; and stopping `afx-bench ui` stops every process it started.

Run with ``pytest -m browser tests/test_ui_browser.py`` (tox -e browser). Needs Debian's ``chromium``.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from pathlib import Path

import pytest

from reports.browser import Chromium, find_chromium

pytestmark = pytest.mark.browser
CHROMIUM = find_chromium()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def descendants(pid: int) -> set[int]:
    """Every process started (directly or not) by ``pid``, by walking /proc's parent links."""
    parents = {}
    for d in Path("/proc").iterdir():
        if d.name.isdigit():
            try:
                parents[int(d.name)] = int((d / "stat").read_text().rsplit(")", 1)[1].split()[1])
            except (OSError, ValueError, IndexError):
                continue
    out, todo = set(), [pid]
    while todo:
        p = todo.pop()
        kids = {c for c, parent in parents.items() if parent == p}
        todo += list(kids - out)
        out |= kids
    return out


def alive(pid: int) -> bool:
    try:
        return (Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]) != "Z"
    except OSError:
        return False


@pytest.fixture(scope="module")
def copied_results(tmp_path_factory) -> Path:
    from bench.config import load_config
    from bench.runner import run

    root = tmp_path_factory.mktemp("ui")
    cfg = load_config("smoke", systems=["bypass", "mean"], effects=["gain"], sets=[
        'data.seen_corpora=["tones"]', "data.unseen_corpora=[]", "run.report=false", "run.progress=false",
        "tasks.n_test=2", 'metrics.include=["mrstft"]', "systems.mean.n_draws=4"])
    run(cfg, root / "original", log=lambda *_: None)
    shutil.copytree(root / "original", root / "copy")
    shutil.rmtree(root / "original")  # the copy must stand alone
    return root / "copy"


@pytest.mark.skipif(CHROMIUM is None, reason="Chromium not found: apt-get install chromium (or set AFX_CHROMIUM)")
def test_ui_opens_the_runs_table_and_stops_its_server(copied_results, tmp_path):
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "bench", "ui", "--out", str(copied_results), "--port", str(port),
                             "--no-browser"], cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.STDOUT,
                            text=True, env={**os.environ, "PYTHONUNBUFFERED": "1"})
    started = []
    try:
        url = None
        deadline = time.time() + 180
        while time.time() < deadline and url is None:
            line = proc.stdout.readline()
            if not line and proc.poll() is not None:
                break
            if line.startswith("MLflow UI: "):
                url = line.split("MLflow UI: ", 1)[1].strip()
        assert url and url.startswith(f"http://127.0.0.1:{port}/#/experiments/") and "/runs?workflowType=machine_learning" in url, url
        started = sorted(descendants(proc.pid))
        assert started, "the server runs as a child of afx-bench ui"
        base = f"http://127.0.0.1:{port}"
        telemetry = json.loads(urllib.request.urlopen(f"{base}/ajax-api/3.0/mlflow/ui-telemetry", timeout=30).read())
        assert telemetry["disable_ui_telemetry"] is True
        exp_id = url.split("/experiments/")[1].split("/")[0]
        exp = json.loads(urllib.request.urlopen(f"{base}/ajax-api/2.0/mlflow/experiments/get?experiment_id={exp_id}",
                                                timeout=30).read())["experiment"]
        assert {"key": "mlflow.experimentKind", "value": "custom_model_development"} in exp["tags"]
        # a training run's checkpoint, served from the copy's own mlartifacts
        runs = json.loads(urllib.request.urlopen(urllib.request.Request(
            f"{base}/ajax-api/2.0/mlflow/runs/search", method="POST", headers={"Content-Type": "application/json"},
            data=json.dumps({"experiment_ids": [exp_id], "max_results": 100}).encode()), timeout=30).read())["runs"]
        names = {r["info"]["run_name"] for r in runs}
        [train] = [r for r in runs if r["info"]["run_name"] == "train/mean/seed-0"]
        listed = json.loads(urllib.request.urlopen(
            f"{base}/ajax-api/2.0/mlflow/artifacts/list?run_id={train['info']['run_id']}&path=checkpoint",
            timeout=30).read())
        assert any(f["path"].endswith("TRAINED") for f in listed.get("files", [])), listed
        with Chromium(CHROMIUM, timeout=90) as b:
            target = b.send("Target.createTarget", {"url": "about:blank"})["targetId"]
            s = b.send("Target.attachToTarget", {"targetId": target, "flatten": True})["sessionId"]
            b.send("Page.enable", session=s)
            b.send("Emulation.setDeviceMetricsOverride", {"width": 1600, "height": 1000, "deviceScaleFactor": 1,
                                                          "mobile": False}, session=s)
            b.send("Page.navigate", {"url": url}, session=s)
            b.wait_event("Page.loadEventFired", s, 90)
            parent = next(n for n in names if n.startswith("smoke-"))
            text, where = "", ""
            deadline = time.time() + 90
            while time.time() < deadline and parent not in text:
                time.sleep(1)
                got = b.send("Runtime.evaluate", {"expression": "JSON.stringify([document.body.innerText, "
                                                                "location.hash])", "returnByValue": True}, session=s)
                text, where = json.loads(got["result"]["value"])
            shot = b.send("Page.captureScreenshot", {"format": "png"}, session=s)
            if os.environ.get("AFX_SCREENSHOT_DIR"):
                import base64

                dst = Path(os.environ["AFX_SCREENSHOT_DIR"])
                dst.mkdir(parents=True, exist_ok=True)
                (dst / "mlflow-ui.png").write_bytes(base64.b64decode(shot["data"]))
        assert parent in text, f"the runs table does not list the run {parent}: {text[:2000]}"
        assert "/runs" in where, where  # still on the runs table, not moved to the traces view
        assert "0 traces" not in text
        # the UI's model-training mode: its side bar has the model registry, not GenAI's judges and prompts
        assert "Model registry" in text and "Judges" not in text and "Prompts" not in text, text[:2000]
    finally:
        started = sorted(set(started) | descendants(proc.pid))  # the server's workers and job runner included
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)  # `kill` of afx-bench ui
        code = proc.wait(timeout=60)
    deadline = time.time() + 30
    while time.time() < deadline and any(alive(p) for p in started):
        time.sleep(0.2)
    assert not [p for p in started if alive(p)], "afx-bench ui left its server's processes running"
    assert code == 0
    with socket.socket() as sock:
        assert sock.connect_ex(("127.0.0.1", port)) != 0, "the UI's port is still open"
    assert list(tmp_path.iterdir()) == []  # nothing written to the working directory
