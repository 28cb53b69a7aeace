"""Headless Chromium for the browser tests: the binary, its flags, a run, and a
page measured inside a frame of an exact size (headless windows are never
narrower than 500 px, so a 390 px phone is an iframe of that size)."""
from __future__ import annotations

import html
import json
import re
import shutil
import subprocess
from pathlib import Path

CHROMIUM = next(filter(None, map(shutil.which, ("chromium", "chromium-browser", "google-chrome"))), None)
FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
         "--disable-background-networking", "--disable-component-update", "--disable-sync",
         "--disable-dev-shm-usage", "--hide-scrollbars"]


def chromium(tmp_path: Path, *args: str) -> str:
    """Run Chromium headless with a profile under ``tmp_path``; its stdout (``--dump-dom``)."""
    proc = subprocess.run([CHROMIUM, *FLAGS, f"--user-data-dir={tmp_path / 'profile'}", *args],
                          capture_output=True, text=True, timeout=180)
    assert proc.returncode == 0, proc.stderr[-2000:]
    return proc.stdout


def results_in_frame(tmp_path: Path, frame: Path, width: int, height: int) -> dict:
    """The JSON a probe left in ``<pre id="test-results">`` of ``frame`` (a page
    holding the page under test in a ``width`` x ``height`` iframe)."""
    dom = chromium(tmp_path, "--allow-file-access-from-files", f"--window-size={max(width, 500)},{height}",
                   "--dump-dom", frame.as_uri())
    found = re.search(r'<pre id="test-results">(.*?)</pre>', dom, re.S)
    assert found, dom[-2000:]
    return json.loads(html.unescape(found.group(1)))
