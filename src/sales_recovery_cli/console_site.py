"""The recovery console's static site (``console/``: HTML, a small vanilla script, CSS, texts in Spanish and English).

Served under ``/console`` by whoever sits in front of the API on loopback: the local API server of ``make serve``
(``devstack/api_server.py``) and the operator's signing forwarder (``sales-recovery console``). The page calls the
API on its own origin, so the same files work behind both. ``/console/config.json`` tells the page which connections
to offer (the API has no route that lists them) and, behind the forwarder, the token its requests must carry.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

ASSETS = Path(__file__).resolve().parent / "console"
PREFIX = "/console"
_TYPES = {
    ".html": "text/html; charset=utf-8",
    ".js": "text/javascript; charset=utf-8",
    ".css": "text/css; charset=utf-8",
    ".json": "application/json; charset=utf-8",
    ".svg": "image/svg+xml",
}
# Only our own files run on the page: no inline script, no CDN, no framing (the forwarder signs what the page asks).
SECURITY_HEADERS = (
    (
        "Content-Security-Policy",
        "default-src 'none'; script-src 'self'; style-src 'self'; connect-src 'self'; img-src 'self' data:; "
        "base-uri 'none'; form-action 'self'; frame-ancestors 'none'",
    ),
    ("X-Content-Type-Options", "nosniff"),
    ("Referrer-Policy", "no-referrer"),
    ("Cache-Control", "no-store"),
)
Answer = tuple[int, list[tuple[str, str]], bytes]


@dataclass(frozen=True)
class ConsoleSite:
    """Answers ``GET /console...``; ``answer`` returns None for any other path (the API's)."""

    connections: Sequence[str] = ()
    token: str | None = None  # behind the forwarder: the header X-Console-Token every API call must carry
    mode: str = "local"  # "local" (make serve) or "forwarder" (a deployed API, signed by sales-recovery console)
    api_url: str | None = None  # the deployed API the forwarder signs for (shown on the page)
    assets: Path = field(default=ASSETS)

    @staticmethod
    def owns(path: str) -> bool:
        return path == PREFIX or path.startswith(PREFIX + "/")

    def answer(self, method: str, path: str) -> Answer | None:
        if not self.owns(path):
            return None
        if method not in ("GET", "HEAD"):
            return _text(405, "The console's files are read-only: use GET.", [("Allow", "GET, HEAD")])
        if path == PREFIX:  # relative links in the page need the trailing slash
            return 308, [("Location", PREFIX + "/"), *SECURITY_HEADERS], b""
        name = path[len(PREFIX) + 1 :] or "index.html"
        if name == "config.json":
            return self._config()
        file = self._file(name)
        if file is None:
            return _text(404, f"No console file {name}.")
        kind = _TYPES.get(file.suffix, "application/octet-stream")
        return 200, [("Content-Type", kind), *SECURITY_HEADERS], file.read_bytes()

    def _file(self, name: str) -> Path | None:
        root = self.assets.resolve()
        candidate = (root / name).resolve()
        if root not in candidate.parents or not candidate.is_file():  # no ../ walks out of the assets
            return None
        return candidate

    def _config(self) -> Answer:
        body = {"connections": list(self.connections), "mode": self.mode, "api_url": self.api_url}
        if self.token is not None:
            body["token"] = self.token
        return 200, [("Content-Type", _TYPES[".json"]), *SECURITY_HEADERS], json.dumps(body).encode()


def _text(status: int, message: str, extra: list[tuple[str, str]] | None = None) -> Answer:
    body = json.dumps({"error": "console", "message": message}).encode()
    return status, [("Content-Type", _TYPES[".json"]), *(extra or []), *SECURITY_HEADERS], body
