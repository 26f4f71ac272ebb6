"""``sales-recovery console``: the recovery console on 127.0.0.1, its API calls signed and sent to a deployed API.

The API keeps ``AWS_IAM``: nothing public is added and no identity store either. The operator's own AWS credentials
(the CLI's standard chain) sign each call exactly as the CLI signs it (the same ``ApiClient``, the same SigV4), so
CloudTrail and the API's access log name the person, and IAM decides what they may call.

A local server that signs with someone's credentials must not sign for anybody else:

* it binds to a loopback address only (refused otherwise, before anything listens);
* it forwards only the API's ``/connections/...`` routes, with GET and POST;
* every forwarded call must carry this run's random token (``X-Console-Token``), which only the console's own page can
  read (``/console/config.json``; another origin cannot read it, and a custom header cannot be sent cross-origin
  without a CORS preflight, which this server never grants) — so a web page open in the same browser cannot make the
  forwarder sign a request (CSRF);
* the ``Host`` must be this server's own loopback address (a DNS-rebinding page arrives with its own host name), and
  an ``Origin``, when present, must be this server's.
"""

from __future__ import annotations

import hmac
import ipaddress
import json
import logging
import secrets
import socket
import threading
from collections.abc import Sequence
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any, Self
from urllib.parse import urlsplit

import httpx

from sales_recovery_cli.client import ApiClient
from sales_recovery_cli.console_site import PREFIX, SECURITY_HEADERS, ConsoleSite

log = logging.getLogger(__name__)
TOKEN_HEADER = "X-Console-Token"
MAX_BODY = 1024 * 1024 + 4096  # the API's largest body (a 10,000-id job) and a little room
FORWARDED_REQUEST_HEADERS = ("Content-Type", "Accept", "Idempotency-Key")
FORWARDED_ANSWER_HEADERS = ("Content-Type", "Retry-After", "Allow")


class NotLoopback(ValueError):
    """The console's forwarder listens on a loopback address only."""


def loopback_address(host: str) -> str:
    """The loopback IP to bind for ``host`` (``localhost`` -> 127.0.0.1); NotLoopback for anything else."""
    name = host.strip().strip("[]")
    if name == "localhost":
        return "127.0.0.1"
    try:
        address = ipaddress.ip_address(name)
    except ValueError:
        raise NotLoopback(
            f"'{host}' is not a loopback address: the console signs with your AWS credentials, so it listens on "
            "127.0.0.1 (or ::1) only."
        ) from None
    if not address.is_loopback:
        raise NotLoopback(
            f"{host} is not a loopback address: the console signs with your AWS credentials, so it listens on "
            "127.0.0.1 (or ::1) only; open it on this machine (or through an SSH tunnel)."
        )
    return str(address)


class ConsoleForwarder:
    """Serves the console at ``/console`` and forwards its API calls, signed, through ``api``."""

    def __init__(
        self,
        api: ApiClient,
        *,
        host: str = "127.0.0.1",
        port: int = 8765,
        connections: Sequence[str] = (),
    ) -> None:
        address = loopback_address(host)
        self.api = api
        self.token = secrets.token_urlsafe(32)
        self.site = ConsoleSite(connections=connections, token=self.token, mode="forwarder", api_url=api.api_url)
        server_class = _Server6 if ":" in address else _Server
        self._httpd = server_class((address, port), _Handler)
        self._httpd.forwarder = self
        self._thread: threading.Thread | None = None

    @property
    def origin(self) -> str:
        return f"http://{self._host_and_port()}"

    def _host_and_port(self) -> str:
        host, port = str(self._httpd.server_address[0]), self._httpd.server_address[1]
        return f"[{host}]:{port}" if ":" in host else f"{host}:{port}"

    @property
    def url(self) -> str:
        return f"{self.origin}{PREFIX}/"

    def allowed_hosts(self) -> set[str]:
        names = {self._host_and_port()}
        if str(self._httpd.server_address[0]) == "127.0.0.1":
            names.add(f"localhost:{self._httpd.server_address[1]}")
        return names

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.1}, name="console", daemon=True
        )
        self._thread.start()
        return self

    def serve_forever(self) -> None:
        self._httpd.serve_forever(poll_interval=0.2)

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    # --- one request ------------------------------------------------------------------------------------------------

    def handle(
        self, method: str, raw_path: str, headers: dict[str, str], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        if headers.get("host", "").lower() not in self.allowed_hosts():
            return _refuse(421, "wrong_host", "This console answers only on its own loopback address.")
        origin = headers.get("origin")
        if origin is not None and origin not in {f"http://{name}" for name in self.allowed_hosts()}:
            return _refuse(403, "foreign_origin", "Requests from other sites are not forwarded.")
        target = urlsplit(raw_path)
        path = target.path
        page = self.site.answer(method, path)
        if page is not None:
            return page
        if not path.startswith("/connections/") or "/." in path or "%2e" in path.lower():
            return _refuse(404, "not_forwarded", "The console forwards only the API's /connections/... routes.")
        if method not in ("GET", "POST"):
            return _refuse(
                405, "method_not_allowed", "The console forwards GET and POST only.", [("Allow", "GET, POST")]
            )
        if not hmac.compare_digest(headers.get(TOKEN_HEADER.lower(), ""), self.token):
            return _refuse(
                403, "missing_console_token", "Open the console's own page; other callers are not signed for."
            )
        forwarded = {name: headers[name.lower()] for name in FORWARDED_REQUEST_HEADERS if name.lower() in headers}
        try:
            # Path and query only, joined to --api-url: an absolute request line can never pick another host.
            relative = path + (f"?{target.query}" if target.query else "")
            answer = self.api.send(method, relative, content=body, headers=forwarded)
        except httpx.TimeoutException:
            return _refuse(504, "api_timeout", f"The API at {self.api.api_url} did not answer in time.")
        except httpx.HTTPError as exc:
            return _refuse(502, "api_unreachable", f"Cannot reach the API at {self.api.api_url}: {exc}.")
        pairs = [(name, answer.headers[name]) for name in FORWARDED_ANSWER_HEADERS if name in answer.headers]
        return answer.status_code, [*pairs, ("Cache-Control", "no-store")], answer.content


def _refuse(
    status: int, error: str, message: str, extra: list[tuple[str, str]] | None = None
) -> tuple[int, list[tuple[str, str]], bytes]:
    body = json.dumps({"error": error, "message": message}).encode()
    return status, [("Content-Type", "application/json"), *(extra or []), *SECURITY_HEADERS], body


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    forwarder: ConsoleForwarder


class _Server6(_Server):
    address_family = socket.AF_INET6


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        if length > MAX_BODY:
            status, pairs, payload = _refuse(413, "body_too_large", f"The body is larger than {MAX_BODY} bytes.")
            self.close_connection = True
        else:
            body = self.rfile.read(length) if length else b""
            headers = {name.lower(): value for name, value in self.headers.items()}
            status, pairs, payload = self.server.forwarder.handle(self.command, self.path, headers, body)
        self.send_response(status)
        for key, value in pairs:
            self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)
