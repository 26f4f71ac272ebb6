"""Headless Chromium driven over the DevTools protocol (a websocket), just enough for page tests.

No browser download: Debian's ``chromium`` (make venv installs it when root), started here with a fresh profile.
"""

from __future__ import annotations

import base64
import contextlib
import itertools
import json
import re
import shutil
import subprocess
import tempfile
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
from websockets.sync.client import ClientConnection, connect

CHROMIUM_CANDIDATES = ("/usr/bin/chromium", "/usr/bin/chromium-browser", "/usr/bin/google-chrome")
FLAGS = (
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--disable-dev-shm-usage",
    "--hide-scrollbars",
    "--remote-debugging-address=127.0.0.1",
    "--remote-debugging-port=0",
)


def find_chromium() -> str | None:
    for candidate in CHROMIUM_CANDIDATES:
        if Path(candidate).exists():
            return candidate
    return shutil.which("chromium")


class CdpError(RuntimeError):
    pass


class Page:
    """One tab: send commands, evaluate JavaScript, wait for conditions, take screenshots."""

    def __init__(self, ws: ClientConnection) -> None:
        self._ws = ws
        self._ids = itertools.count(1)

    def send(self, method: str, params: dict[str, Any] | None = None, timeout: float = 30.0) -> dict[str, Any]:
        message_id = next(self._ids)
        self._ws.send(json.dumps({"id": message_id, "method": method, "params": params or {}}))
        deadline = time.monotonic() + timeout
        while True:
            left = deadline - time.monotonic()
            if left <= 0:
                raise CdpError(f"{method}: no answer in {timeout}s")
            message = json.loads(self._ws.recv(timeout=left))
            if message.get("id") != message_id:
                continue  # an event
            if "error" in message:
                raise CdpError(f"{method}: {message['error']}")
            result: dict[str, Any] = message.get("result", {})
            return result

    def evaluate(self, expression: str) -> Any:
        result = self.send("Runtime.evaluate", {"expression": expression, "returnByValue": True, "awaitPromise": True})
        if "exceptionDetails" in result:
            raise CdpError(f"JavaScript failed: {result['exceptionDetails']}")
        return result.get("result", {}).get("value")

    def wait_for(self, expression: str, timeout: float = 20.0, what: str = "") -> Any:
        deadline = time.monotonic() + timeout
        while True:
            value = self.evaluate(expression)
            if value:
                return value
            if time.monotonic() > deadline:
                raise CdpError(f"timed out after {timeout}s waiting for {what or expression}")
            time.sleep(0.1)

    def navigate(self, url: str) -> None:
        self.send("Page.navigate", {"url": url})
        self.wait_for("document.readyState === 'complete'", what=f"{url} to load")

    def type_text(self, selector: str, text: str) -> None:
        """Focus the element, select what it holds and type ``text`` as key input (React sees real events)."""
        found = self.evaluate(
            f"(() => {{ const el = document.querySelector({json.dumps(selector)}); if (!el) return false;"
            " el.scrollIntoView(); el.focus(); el.select && el.select(); return true; })()"
        )
        if not found:
            raise CdpError(f"no element {selector}")
        self.send("Input.insertText", {"text": text})

    def press(self, key: str = "Enter") -> None:
        """Enter or Tab pressed on the focused element, as a keyboard user would (Enter submits a form)."""
        codes = {"Enter": 13, "Tab": 9}
        if key not in codes:
            raise ValueError(f"press() knows {sorted(codes)}, not {key!r}")
        for kind in ("keyDown", "keyUp"):
            params: dict[str, Any] = {"type": kind, "key": key, "code": key, "windowsVirtualKeyCode": codes[key]}
            if kind == "keyDown" and key == "Enter":
                params["text"] = "\r"
            self.send("Input.dispatchKeyEvent", params)

    def screenshot(self, path: Path, width: int = 1280) -> None:
        height = int(self.evaluate("Math.ceil(document.documentElement.scrollHeight)") or 800)
        self.send(
            "Emulation.setDeviceMetricsOverride",
            {"width": width, "height": min(height, 6000), "deviceScaleFactor": 1, "mobile": False},
        )
        data = self.send("Page.captureScreenshot", {"format": "png", "captureBeyondViewport": True})["data"]
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(base64.b64decode(data))


@contextlib.contextmanager
def chromium_page(executable: str, *, width: int = 1280, height: int = 900) -> Iterator[Page]:
    """A headless Chromium with a fresh profile and one blank tab, closed (and its profile removed) on exit."""
    profile = tempfile.mkdtemp(prefix="chromium-profile-")
    log_path = Path(tempfile.mkdtemp(prefix="chromium-log-")) / "stderr.txt"
    with log_path.open("w") as log:  # a file, not a pipe: nobody reads it while Chromium runs
        process = subprocess.Popen(
            [executable, *FLAGS, f"--user-data-dir={profile}", f"--window-size={width},{height}", "about:blank"],
            stdout=subprocess.DEVNULL,
            stderr=log,
        )
    try:
        port = _devtools_port(process, profile, log_path)
        targets = httpx.get(f"http://127.0.0.1:{port}/json/list", timeout=10).json()
        page = next(t for t in targets if t.get("type") == "page")
        with connect(page["webSocketDebuggerUrl"], max_size=None, open_timeout=10) as ws:
            tab = Page(ws)
            tab.send("Page.enable")
            tab.send("Runtime.enable")
            yield tab
    finally:
        process.terminate()
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait(timeout=10)
        shutil.rmtree(profile, ignore_errors=True)
        shutil.rmtree(log_path.parent, ignore_errors=True)


def _devtools_port(process: subprocess.Popen[bytes], profile: str, log_path: Path, timeout: float = 30.0) -> int:
    """The port Chromium chose (``--remote-debugging-port=0``), from its DevToolsActivePort file."""
    marker = Path(profile) / "DevToolsActivePort"
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise CdpError(f"chromium exited with {process.returncode}: {log_path.read_text()[-2000:]}")
        if marker.exists():
            first = marker.read_text().splitlines()[:1]
            if first and re.fullmatch(r"\d+", first[0]):
                return int(first[0])
        time.sleep(0.05)
    raise CdpError(f"chromium did not open its DevTools port in {timeout}s")
