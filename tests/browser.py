"""Headless Chromium for the tests of the report and the app: a screenshot, and every request the page made.

Debian's ``chromium`` (``.ci/run`` installs it where absent). Host resolution is mapped away from
everything but loopback, so a page that reaches for the network gets nothing; the net log still
records that it tried, which is what the tests assert against.
"""

from __future__ import annotations

import json
import shutil
import subprocess
from pathlib import Path

import numpy as np
from PIL import Image

CHROMIUM_NAMES = ("chromium", "chromium-browser", "google-chrome")
# The browser's own background traffic (time sync, account checks) has no page origin.
BROWSER_INITIATED = "not an origin"


def find_chromium() -> str | None:
    return next((path for name in CHROMIUM_NAMES if (path := shutil.which(name))), None)


def visit(chromium: str, url: str, out_dir: Path, size: tuple[int, int] = (1200, 1600),
          wait_ms: int = 0) -> tuple[Image.Image, list[str]]:
    """Open ``url`` headless; return its screenshot and the URLs the page itself requested.

    ``wait_ms``: virtual time to let scripts run before the screenshot (a Gradio page builds itself in JS).
    """
    shot, net_log = out_dir / "screenshot.png", out_dir / "net_log.json"
    command = [chromium, "--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
               "--disable-component-update", "--disable-sync", "--no-first-run", "--hide-scrollbars",
               "--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1", f"--log-net-log={net_log}",
               f"--window-size={size[0]},{size[1]}", f"--screenshot={shot}",
               *([f"--virtual-time-budget={wait_ms}"] if wait_ms else []), url]
    subprocess.run(command, check=True, capture_output=True, timeout=120)
    return Image.open(shot).convert("RGB"), page_requests(net_log)


def page_requests(net_log: Path) -> list[str]:
    """The URLs requested by the page (not by the browser itself) in a Chromium net log."""
    text = net_log.read_text().rstrip()
    try:
        log = json.loads(text)
    except json.JSONDecodeError:  # the browser exits before closing the event list
        log = json.loads(text.rstrip(",") + "]}")
    urls = {event["params"]["url"] for event in log["events"]
            if "url" in event.get("params", {}) and event["params"].get("initiator", BROWSER_INITIATED)
            != BROWSER_INITIATED}
    return sorted(urls)


def distinct_colours(image: Image.Image) -> int:
    """How many distinct colours a screenshot has: a blank page has one."""
    pixels = np.asarray(image).reshape(-1, 3)
    return len(np.unique(pixels, axis=0))
