"""A simulated Mercado Libre API on loopback, for tests, benchmarks and the embedded default.

It serves only routes ML really has, in ML's documented shapes (reference/meli-api.md §1-§4, §7, §9): a route ML lacks
must not exist here, or production would come to depend on it. Tests steer it through this Python object (faults,
quota, token expiry, order changes), never through extra HTTP routes.

Per request: quota, then fault rules in order, then route, then the bearer token, then the resource.
"""

from __future__ import annotations

import contextlib
import json
import re
import secrets
import socket
import threading
import time
import traceback
from collections import deque
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from http import HTTPStatus
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from random import Random
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qs, urlsplit

from devstack.simulator.notifications import Notifier
from devstack.simulator.scenario import Fault, Scenario, check_order, check_pack, check_shipment, load_scenario

if TYPE_CHECKING:
    from collections.abc import Callable, Mapping
    from pathlib import Path
    from types import TracebackType


def _is_id(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def ml_error(status: int, message: str, error: str, cause: Any = None) -> dict[str, Any]:
    """ML's standard error body (meli-api.md §9): ``{"message", "error", "status", "cause"}``."""
    return {"message": message, "error": error, "status": status, "cause": [] if cause is None else cause}


INVALID_TOKEN = ml_error(401, "invalid_token", "not_found")
EXPIRED_TOKEN = ml_error(401, "expired_token", "not_found")
NOT_OWNED_ORDER = ml_error(403, "The user has not access to the order", "not_owned_order")
# The packs resource documents the same refusal with the generic code (DOC-PACKS table; reference/meli-api.md §3).
NOT_OWNED_PACK = ml_error(403, "The user has not access to the order", "forbidden")
# ML's order 404 has "cause": null (fixture gpupo/mercadolivre-sdk notfound.json).
ORDER_NOT_FOUND = {"message": "Order not found.", "error": "order_not_found", "status": 404, "cause": None}
PACK_NOT_FOUND = ml_error(404, "Order do not exists", "not_found")
SHIPMENT_NOT_FOUND = ml_error(404, "Shipment not found", "not_found")
RESOURCE_NOT_FOUND = ml_error(404, "Resource not found", "not_found")
TOO_MANY_REQUESTS = ml_error(429, "Too Many Requests", "too_many_requests")
OAUTH_RATE_LIMITED = ml_error(429, "Inténtalo de nuevo en unos segundos", "local_rate_limited")
INVALID_GRANT = {
    "error_description": "Error validating grant. Your authorization code or refresh token may be expired or it was "
    "already used",
    "error": "invalid_grant",
    "status": 400,
    "cause": [],
}

# Status-fault bodies as ML documents them ([DOC-CLAIMS-ERR]); other statuses get a generic body.
_STATUS_BODIES: dict[int, dict[str, Any]] = {
    429: TOO_MANY_REQUESTS,
    500: ml_error(500, "Internal server error", "internal_server_error"),
    502: ml_error(502, "Bad Gateway", "bad_gateway"),
    503: ml_error(503, "Service unavailable", "service_not_available"),
    504: ml_error(504, "Gateway Timeout", "gateway_timeout"),
}

_SORTS = {"date_asc": "Date ascending", "date_desc": "Date descending"}
_SEARCH_DATES = ("order.date_created", "order.date_closed", "order.date_last_updated")


def status_body(status: int, error: str | None = None, message: str | None = None) -> dict[str, Any]:
    """ML's error body for a status fault; ``error`` / ``message`` as the fault gives them (e.g. 403 access_denied,
    429 local_rate_limited), else the status's documented body."""
    if error is not None or message is not None:
        base = status_body(status)
        body = ml_error(status, message or base["message"], error or base["error"])
        if status == 403:
            body["code"] = "FORBIDDEN"  # ML's 403 bodies carry it ([DOC-403], reference/meli-api.md §9)
        return body
    if status in _STATUS_BODIES:
        return _STATUS_BODIES[status]
    try:
        phrase = HTTPStatus(status).phrase
    except ValueError:
        phrase = f"HTTP {status}"
    return ml_error(status, phrase, re.sub(r"\W+", "_", phrase.lower()).strip("_"))


@dataclass(frozen=True)
class RecordedRequest:
    method: str
    path: str
    query: dict[str, str]
    status: int | None  # None: the request was held and closed without an answer (timeout fault)
    started_at: float  # time.time()
    duration_ms: float
    connection_id: str | None  # whose token (or refresh token) the request carried, if any


@dataclass
class _Answer:
    status: int
    body: Any
    connection_id: str | None = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass
class _Hold:
    """Answer nothing: hold the request, then close the connection."""

    connection_id: str | None = None


@dataclass
class _Rule:
    fault: Fault
    regex: re.Pattern[str]
    rng: Random
    fired: int = 0


@dataclass
class _TokenState:
    connection_id: str
    seller_id: int
    expires_in: int
    access_token: str
    refresh_token: str
    expires_at: float  # time.monotonic()
    expired: bool = False
    revoked: bool = False  # the seller removed the application: 401 on calls, invalid_grant on refresh


@dataclass
class _Request:
    method: str
    path: str
    query: dict[str, list[str]]
    headers: Mapping[str, str]
    body: bytes
    connection_id: str | None = field(default=None)
    missing: list[str] = field(default_factory=list)  # a "partial" fault fired: these sections are left out


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    simulator: MeliSimulator


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "MeliSimulator/1.0"
    timeout = 60  # an idle keep-alive connection is dropped after a minute
    disable_nagle_algorithm = True  # headers and body go out in two writes; Nagle would add ~40 ms per answer
    server: _Server

    def log_message(self, format: str, *args: Any) -> None:
        """Quiet: the request log on the simulator object replaces stderr lines."""

    def setup(self) -> None:
        super().setup()
        self.server.simulator._track(self.connection, open_=True)

    def finish(self) -> None:
        try:
            super().finish()
        finally:
            self.server.simulator._track(self.connection, open_=False)

    def do_GET(self) -> None:
        self._serve("GET")

    def do_POST(self) -> None:
        self._serve("POST")

    def do_PUT(self) -> None:
        self._serve("PUT")

    def do_DELETE(self) -> None:
        self._serve("DELETE")

    def do_PATCH(self) -> None:
        self._serve("PATCH")

    def _serve(self, method: str) -> None:
        sim = self.server.simulator
        started, t0 = time.time(), time.perf_counter()
        parts = urlsplit(self.path)
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length > 0 else b""
        headers = {k.lower(): v for k, v in self.headers.items()}  # HTTP header names are case-insensitive
        req = _Request(method, parts.path, parse_qs(parts.query, keep_blank_values=True), headers, body)
        try:
            result = sim._dispatch(req)
        except Exception:  # a bug here must still answer like a server would, not hang the client
            traceback.print_exc()
            result = _Answer(500, _STATUS_BODIES[500])
        query = {k: v[-1] for k, v in req.query.items()}
        elapsed = (time.perf_counter() - t0) * 1000.0
        # Recorded before the answer leaves, so a client that has its answer always finds the request in the log.
        if isinstance(result, _Hold):
            hold = sim.timeout_hold_seconds
            sim._record(
                RecordedRequest(method, parts.path, query, None, started, elapsed + hold * 1000.0, result.connection_id)
            )
            sim._stopping.wait(hold)
            self.close_connection = True
            return
        payload = json.dumps(result.body, ensure_ascii=False).encode("utf-8")
        sim._record(RecordedRequest(method, parts.path, query, result.status, started, elapsed, result.connection_id))
        self.send_response(result.status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(payload)))
        for name, value in result.headers.items():
            self.send_header(name, value)
        self.end_headers()
        self.wfile.write(payload)


class MeliSimulator:
    """The simulated ML API. ``with MeliSimulator(scenario) as ml: httpx.get(f"{ml.url}/orders/1", ...)``."""

    def __init__(
        self,
        scenario: Scenario,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        timeout_hold_seconds: float = 10.0,
    ) -> None:
        self.scenario = scenario
        self.host = host
        self.port = port
        self.timeout_hold_seconds = timeout_hold_seconds
        self._lock = threading.RLock()  # tokens, rules, quota, data, log
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        self._sockets: set[socket.socket] = set()
        self._log: list[RecordedRequest] = []
        self._orders: dict[int, dict[str, Any]] = scenario.orders_by_id()
        self._pack_orders: dict[int, set[int]] = {}  # pack id -> ids of the orders naming it (packs left implicit)
        for o in self._orders.values():
            self._index_pack(o)
        self._packs: dict[int, dict[str, Any]] = scenario.packs_by_id()
        self._shipments: dict[int, dict[str, Any]] = scenario.shipments_by_id()
        self._rules: list[_Rule] = []
        for f in scenario.faults:
            self.add_fault(f)
        self._rps: float | None = scenario.quota.requests_per_second if scenario.quota else None
        self._admitted: deque[float] = deque()
        now = time.monotonic()
        self._tokens: dict[str, _TokenState] = {
            c.connection_id: _TokenState(
                c.connection_id,
                c.token_user_id if c.token_user_id is not None else c.seller_id,  # whose data the tokens reach
                c.expires_in,
                c.access_token,
                c.refresh_token,
                now + c.expires_in,
                revoked=c.revoked,
            )
            for c in scenario.connections
        }
        # ML's notifications to the callback (scenario "notifications"; none without it), from start_notifications on.
        self.notifier: Notifier | None = (
            Notifier(
                scenario.notifications,
                scenario.new_orders,
                upsert_order=lambda order, notify, copies: self.upsert_order(order, notify=notify, copies=copies),
                stopping=self._stopping,
            )
            if scenario.notifications is not None
            else None
        )
        # Every token ever issued -> its connection, so the log can name the caller even for a stale token.
        self._token_owner: dict[str, str] = {}
        for t in self._tokens.values():
            self._token_owner[t.access_token] = t.connection_id
            self._token_owner[t.refresh_token] = t.connection_id

    @classmethod
    def from_file(cls, path: str | Path, **kwargs: Any) -> MeliSimulator:
        return cls(load_scenario(path), **kwargs)

    # ----------------------------------------------------------------- lifecycle

    @property
    def url(self) -> str:
        if self._server is None:
            raise RuntimeError("the simulator is not started")
        return f"http://{self.host}:{self.port}"

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("the simulator is already started")
        self._stopping.clear()
        server = _Server((self.host, self.port), _Handler)
        server.simulator = self
        self.port = server.server_address[1]
        self._server = server
        self._thread = threading.Thread(
            target=server.serve_forever, kwargs={"poll_interval": 0.05}, name="meli-simulator", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        server, self._server = self._server, None
        if server is None:
            return
        self._stopping.set()  # releases requests held by timeout faults (and notifications waiting for a retry)
        if self.notifier is not None:
            self.notifier.stop()
        server.shutdown()
        server.server_close()
        with self._lock:
            open_sockets = list(self._sockets)
        for s in open_sockets:  # idle keep-alive connections would otherwise linger in their threads
            with contextlib.suppress(OSError):
                s.shutdown(socket.SHUT_RDWR)
        if self._thread is not None:
            self._thread.join(timeout=5)
            self._thread = None

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(
        self, exc_type: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        self.stop()

    def _track(self, sock: socket.socket, *, open_: bool) -> None:
        with self._lock:
            if open_:
                self._sockets.add(sock)
            else:
                self._sockets.discard(sock)

    # ------------------------------------------------------------ control (Python only, never HTTP)

    @property
    def faults(self) -> list[Fault]:
        with self._lock:
            return [r.fault for r in self._rules]

    def add_fault(self, rule: Fault | Mapping[str, Any]) -> Fault:
        fault = rule if isinstance(rule, Fault) else Fault.model_validate(dict(rule))
        with self._lock:
            self._rules.append(_Rule(fault, re.compile(fault.path), Random(fault.seed)))
        return fault

    def clear_faults(self) -> None:
        with self._lock:
            self._rules.clear()

    def set_quota(self, requests_per_second: float | None) -> None:
        if requests_per_second is not None and requests_per_second <= 0:
            raise ValueError("requests_per_second must be > 0 (or None for no quota)")
        with self._lock:
            self._rps = requests_per_second
            self._admitted.clear()

    def expire_token(self, connection_id: str) -> None:
        """The connection's current access token answers 401 expired_token until a refresh replaces it."""
        with self._lock:
            self._tokens[connection_id].expired = True

    def revoke(self, connection_id: str) -> None:
        """The seller removes the application: the tokens answer 401 and the refresh token invalid_grant."""
        with self._lock:
            self._tokens[connection_id].revoked = True

    def reconnect(self, connection_id: str) -> tuple[str, str]:
        """The seller authorises the application again: a new (access_token, refresh_token), the old ones dead. The
        platform stores them (a newer version of the connection's secret)."""
        with self._lock:
            state = self._tokens[connection_id]
            state.access_token = _new_access_token(state.seller_id)
            state.refresh_token = f"TG-{secrets.token_hex(12)}-{state.seller_id}"
            state.expires_at = time.monotonic() + state.expires_in
            state.expired = False
            state.revoked = False
            self._token_owner[state.access_token] = state.connection_id
            self._token_owner[state.refresh_token] = state.connection_id
            return state.access_token, state.refresh_token

    def tokens(self, connection_id: str) -> tuple[str, str]:
        """The connection's current (access_token, refresh_token)."""
        with self._lock:
            t = self._tokens[connection_id]
            return t.access_token, t.refresh_token

    def upsert_order(self, order: Mapping[str, Any], *, notify: bool = True, copies: int | None = None) -> None:
        """Add or replace an order (e.g. paid -> cancelled in a test). Stored and served as given. Once notifications
        have started, ML notifies the change (``copies`` times; ``notify=False``: a change whose notification ML never
        sent, as when it has disabled the topic)."""
        o = check_order(dict(order))
        with self._lock:
            previous = self._orders.get(o["id"])
            if previous is not None and _is_id(previous.get("pack_id")):
                self._pack_orders.get(previous["pack_id"], set()).discard(o["id"])
            self._orders[o["id"]] = o
            self._index_pack(o)
        if notify and self.notifier is not None:
            self.notifier.notify(o, copies)

    def start_notifications(self, callback_url: str) -> None:
        """Notifications go to ``callback_url`` from now on, and the scenario's ``new_orders`` start to appear."""
        if self.notifier is None:
            raise RuntimeError("the scenario has no 'notifications'")
        self.notifier.start(callback_url)

    def _index_pack(self, order: dict[str, Any]) -> None:
        if _is_id(order.get("pack_id")):
            self._pack_orders.setdefault(order["pack_id"], set()).add(order["id"])

    def upsert_pack(self, pack: Mapping[str, Any]) -> None:
        p = check_pack(dict(pack))
        with self._lock:
            self._packs[p["id"]] = p

    def upsert_shipment(self, shipment: Mapping[str, Any]) -> None:
        s = check_shipment(dict(shipment))
        with self._lock:
            self._shipments[s["id"]] = s

    def order(self, order_id: int) -> dict[str, Any] | None:
        with self._lock:
            return self._orders.get(order_id)

    # ------------------------------------------------------------------------ observability

    @property
    def requests(self) -> list[RecordedRequest]:
        with self._lock:
            return list(self._log)

    def count(self, method: str | None = None, path_regex: str | None = None, status: int | None = None) -> int:
        pattern = re.compile(path_regex) if path_regex else None
        return sum(
            1
            for r in self.requests
            if (method is None or r.method == method.upper())
            and (pattern is None or pattern.search(r.path))
            and (status is None or r.status == status)
        )

    def reset_log(self) -> None:
        with self._lock:
            self._log.clear()

    def _record(self, entry: RecordedRequest) -> None:
        with self._lock:
            self._log.append(entry)

    # ------------------------------------------------------------------------------ dispatch

    def _dispatch(self, req: _Request) -> _Answer | _Hold:
        req.connection_id = self._caller(req)
        result = self._quota_or_faults(req)
        if result is None:
            result = self._route(req)
            if req.missing and result.status == 200 and isinstance(result.body, dict):
                result = _partial(result, req.missing)
        result.connection_id = req.connection_id
        return result

    def _caller(self, req: _Request) -> str | None:
        token = _bearer(req.headers)
        if token is None and req.path == "/oauth/token":
            token = _form(req.body).get("refresh_token")
        with self._lock:
            return self._token_owner.get(token) if token else None

    def _quota_or_faults(self, req: _Request) -> _Answer | _Hold | None:
        if not self._admit():
            # OAuth's own throttle answers local_rate_limited "try again in a few seconds" (DOC-AUTH; meli-api.md §7).
            return _Answer(429, OAUTH_RATE_LIMITED if req.path == "/oauth/token" else TOO_MANY_REQUESTS)
        with self._lock:
            rules = list(self._rules)
        for rule in rules:
            f = rule.fault
            if (f.method and f.method != req.method) or not rule.regex.search(req.path):
                continue
            if f.kind == "partial" and not (req.method == "GET" and _ORDER_PATH.fullmatch(req.path)):
                continue  # ML answers 206 only for an order
            with self._lock:  # counts and random draws in request order, so a seed replays the same way
                if f.times is not None and rule.fired >= f.times:
                    continue
                if f.probability is not None and rule.rng.random() >= f.probability:
                    continue
                rule.fired += 1
            if f.kind == "latency":
                self._stopping.wait((f.ms or 0) / 1000.0)
            elif f.kind == "timeout":
                return _Hold()
            elif f.kind == "status":
                assert f.status is not None  # guaranteed by Fault's validator
                return _Answer(f.status, status_body(f.status, f.error, f.message))
            elif f.kind == "partial":  # served by the route, then stripped of these sections (_partial)
                req.missing = list(dict.fromkeys([*req.missing, *(f.missing or [])]))
            else:  # token_expired: mark, then let the request meet its now-expired token
                target = f.connection_id or req.connection_id
                with self._lock:
                    if target in self._tokens:
                        self._tokens[target].expired = True
        return None

    def _admit(self) -> bool:
        """Sliding-window quota over all routes. Only admitted requests count, as a client backing off recovers."""
        with self._lock:
            if self._rps is None:
                return True
            window = max(1.0, 1.0 / self._rps)  # below 1 rps: one request per 1/rps seconds
            capacity = max(1, int(self._rps * window))
            now = time.monotonic()
            while self._admitted and now - self._admitted[0] >= window:
                self._admitted.popleft()
            if len(self._admitted) >= capacity:
                return False
            self._admitted.append(now)
            return True

    def _route(self, req: _Request) -> _Answer:
        path = req.path.rstrip("/") if req.path != "/orders/" else req.path
        routes: list[tuple[str, str, Callable[[_TokenState, str], _Answer]]] = [
            ("GET", r"/orders/search", lambda t, _: self._search(t, req.query)),
            ("GET", r"/orders/([^/]*)", self._get_order),
            ("GET", r"/orders/([^/]+)/bundle", self._get_order_bundle),
            ("GET", r"/packs/([^/]+)", self._get_pack),
            ("GET", r"/shipments/([^/]+)", self._get_shipment),
            ("GET", r"/shipments/([^/]+)/items", self._get_shipment_items),
            ("GET", r"/missed_feeds", lambda t, _: self._missed_feeds(t, req.query)),
        ]
        if req.method == "POST" and path == "/oauth/token":
            return self._oauth_token(_form(req.body))
        for method, pattern, handler in routes:
            m = re.fullmatch(pattern, path)
            if m and req.method == method:
                token, denied = self._authenticate(req.headers)
                if denied is not None:
                    return denied
                assert token is not None
                return handler(token, m.group(1) if m.groups() else "")
        return _Answer(404, RESOURCE_NOT_FOUND)

    def _authenticate(self, headers: Mapping[str, str]) -> tuple[_TokenState | None, _Answer | None]:
        token = _bearer(headers)
        with self._lock:
            state = next((t for t in self._tokens.values() if token and t.access_token == token), None)
            if state is None or state.revoked:
                return None, _Answer(401, INVALID_TOKEN)
            if state.expired or time.monotonic() >= state.expires_at:
                return None, _Answer(401, EXPIRED_TOKEN)
            return state, None

    # ------------------------------------------------------------------------------ resources

    def _owns(self, token: _TokenState, order_id: Any) -> bool:
        order = self._orders.get(order_id) if isinstance(order_id, int) else None
        return order is not None and order["seller"]["id"] == token.seller_id

    def _get_order(self, token: _TokenState, raw_id: str) -> _Answer:
        if raw_id == "":
            return _Answer(400, ml_error(400, "Order id is empty", "empty_order_id"))
        if not (raw_id.isascii() and raw_id.isdigit()):
            message = f"Invalid order id '{raw_id}', must be a integer number"
            return _Answer(400, ml_error(400, message, "invalid_order_id"))
        with self._lock:
            order = self._orders.get(int(raw_id))
            if order is None:
                return _Answer(404, ORDER_NOT_FOUND)
            if order["seller"]["id"] != token.seller_id:
                return _Answer(403, NOT_OWNED_ORDER)
            return _Answer(200, order)

    def _get_order_bundle(self, token: _TokenState, raw_id: str) -> _Answer:
        """The kit sale a kit component's order belongs to (kits-virtuales): every order of the seller tagged
        bundle_component in the same pack and sold through the same kit listing (order_items[].bundle.parent_item)."""
        answer = self._get_order(token, raw_id)
        if answer.status != 200:
            return answer
        with self._lock:
            order = self._orders[int(raw_id)]
            kit = _kit_listing(order)
            if kit is None:
                return _Answer(200, {"bundles": []})
            siblings = [
                o
                for o in self._orders.values()
                if o["seller"]["id"] == token.seller_id
                and o.get("pack_id") == order.get("pack_id")
                and _kit_listing(o) == kit
            ]
            shipment_id = (order.get("shipping") or {}).get("id")
            kit_orders = [
                {
                    "order_id": o["id"],
                    "item_id": (line.get("item") or {}).get("id"),
                    "variation_id": (line.get("item") or {}).get("variation_id"),
                    "pack_id": o.get("pack_id"),
                    "shipment_id": (o.get("shipping") or {}).get("id"),
                    "parent_item_id": kit,
                }
                for o in sorted(siblings, key=lambda o: o["id"])
                for line in (o.get("order_items") or [])[:1]
            ]
            bundle = {
                "pack_id": order.get("pack_id"),
                "shipment_id": shipment_id,
                "main_orders": [],
                "addons_orders": [],
                "kit_orders": kit_orders,
            }
            return _Answer(200, {"bundles": [bundle]})

    def _pack(self, pack_id: int) -> dict[str, Any] | None:
        """The scenario's pack, or the one ML would hold for a pack id its orders carry.

        Every order has a pack id nowadays (DOC-PACKS: "todas las órdenes estarán vinculadas a un pack_id"), so a
        scenario need not write out a pack for each single sale: an undeclared pack is built from the orders that
        name it, with the first one's shipment and buyer. Its status is ``released`` once every order is paid,
        ``cancelled`` when every order is, and ``filling`` before (DOC-GS-PACKS lists these)."""
        declared = self._packs.get(pack_id)
        if declared is not None:
            return declared
        orders = [self._orders[k] for k in sorted(self._pack_orders.get(pack_id, ()))]
        if not orders:
            return None
        statuses = {o.get("status") for o in orders}
        status = "released" if statuses == {"paid"} else "cancelled" if statuses == {"cancelled"} else "filling"
        first = orders[0]
        shipping: dict[str, Any] = first["shipping"] if isinstance(first.get("shipping"), dict) else {}
        buyer: dict[str, Any] = first["buyer"] if isinstance(first.get("buyer"), dict) else {}
        return {
            "shipment": {"id": shipping["id"]} if shipping.get("id") else None,
            "orders": [{"id": o["id"]} for o in orders],
            "id": pack_id,
            "status": status,
            "status_detail": None,
            "buyer": {"id": buyer.get("id")},
            "date_created": first.get("date_created"),
            "last_updated": max(str(o.get("last_updated") or o.get("date_created") or "") for o in orders) or None,
        }

    def _get_pack(self, token: _TokenState, raw_id: str) -> _Answer:
        with self._lock:
            pack = self._pack(int(raw_id)) if (raw_id.isascii() and raw_id.isdigit()) else None
            if pack is None:
                return _Answer(404, PACK_NOT_FOUND)
            if not any(self._owns(token, o.get("id")) for o in pack.get("orders", [])):
                # Another seller's pack: 403 forbidden "The user has not access to the order" (DOC-PACKS,
                # DOC-GS-PACKS; reference/meli-api.md §3, §13), the order's refusal under the generic code.
                return _Answer(403, NOT_OWNED_PACK)
            return _Answer(200, pack)

    def _shipment_orders(self, shipment_id: int) -> list[dict[str, Any]]:
        """Orders a shipment carries: its order_id, and every order whose shipping.id is the shipment."""
        shipment = self._shipments.get(shipment_id) or {}
        found = {
            o["id"]: o
            for o in self._orders.values()
            if isinstance(o.get("shipping"), dict) and o["shipping"].get("id") == shipment_id
        }
        order_id = shipment.get("order_id")
        first = self._orders.get(order_id) if isinstance(order_id, int) else None
        if first is not None:
            found.setdefault(first["id"], first)
        return [found[k] for k in sorted(found)]

    def _get_shipment(self, token: _TokenState, raw_id: str) -> _Answer:
        with self._lock:
            shipment = self._shipments.get(int(raw_id)) if (raw_id.isascii() and raw_id.isdigit()) else None
            if shipment is None or not any(
                o["seller"]["id"] == token.seller_id for o in self._shipment_orders(shipment["id"])
            ):
                return _Answer(404, SHIPMENT_NOT_FOUND)
            return _Answer(200, shipment)

    def _get_shipment_items(self, token: _TokenState, raw_id: str) -> _Answer:
        with self._lock:
            # "Cada vendedor sólo visualizará sus propios productos" (meli-api.md §4).
            orders = (
                [o for o in self._shipment_orders(int(raw_id)) if o["seller"]["id"] == token.seller_id]
                if (raw_id.isascii() and raw_id.isdigit())
                else []
            )
            if not orders:
                return _Answer(404, SHIPMENT_NOT_FOUND)
            items = [
                {
                    "item_id": (line.get("item") or {}).get("id"),
                    "description": (line.get("item") or {}).get("title"),
                    "quantity": line.get("quantity"),
                    "variation_id": (line.get("item") or {}).get("variation_id"),
                    "order_id": o["id"],
                    "sender_id": o["seller"]["id"],
                }
                for o in orders
                for line in o.get("order_items") or []
            ]
            return _Answer(200, items)

    def _missed_feeds(self, token: _TokenState, query: dict[str, list[str]]) -> _Answer:
        """GET /missed_feeds?app_id=..[&topic=..][&offset=..&limit=..]: the application's notifications never answered
        200, of the token's user (whether ML filters by user is not documented; serving only the token's is the
        narrower reading). Default page 10 (reference/meli-api.md §8)."""
        q = {k: v[-1] for k, v in query.items()}
        app_id = q.get("app_id", "")
        if not (app_id.isascii() and app_id.isdigit()):
            return _Answer(400, ml_error(400, "The parameter app_id is required and must be a number", "bad_request"))
        if self.notifier is None or int(app_id) != self.notifier.settings.application_id:
            return _Answer(403, ml_error(403, "The caller is not authorized to access this resource", "forbidden"))
        try:
            offset, limit = int(q.get("offset", "0")), int(q.get("limit", "10"))
        except ValueError:
            return _Answer(400, ml_error(400, "offset and limit must be integer numbers", "bad_request"))
        if offset < 0 or not 1 <= limit <= 50:
            return _Answer(400, ml_error(400, "offset must be >= 0 and limit between 1 and 50", "bad_request"))
        messages = self.notifier.missed_feeds(user_id=token.seller_id, topic=q.get("topic"), offset=offset, limit=limit)
        return _Answer(200, {"messages": messages})

    def _search(self, token: _TokenState, query: dict[str, list[str]]) -> _Answer:
        q = {k: v[-1] for k, v in query.items()}

        def bad(message: str, error: str = "bad_request") -> _Answer:
            return _Answer(400, ml_error(400, message, error))

        seller = q.get("seller")
        if seller is None:
            return bad("The parameter seller or buyer is required")
        if not (seller.isascii() and seller.isdigit()):
            return bad(f"Invalid seller '{seller}', must be a integer number", "invalid_seller_id")
        if int(seller) != token.seller_id:
            return _Answer(403, ml_error(403, "Invalid caller.id", "caller.id.invalid"))
        try:
            offset, limit = int(q.get("offset", "0")), int(q.get("limit", "50"))
        except ValueError:
            return bad("offset and limit must be integer numbers")
        if offset < 0:
            return bad("The offset must be greater than or equal to 0", "invalid_offset")
        if not 0 <= limit <= 50:
            return bad("The limit must be between 0 and 50", "invalid_limit")
        sort = q.get("sort", "date_asc")
        if sort not in _SORTS:
            return bad(f"Invalid sort '{sort}'; available sorts: {', '.join(_SORTS)}", "invalid_sort")

        bounds: list[tuple[str, datetime | None, datetime | None]] = []
        for name in _SEARCH_DATES:
            try:
                start, end = _hour(q.get(f"{name}.from")), _hour(q.get(f"{name}.to"))
            except ValueError as exc:
                return bad(str(exc), "invalid_date")
            if start or end:
                bounds.append((name, start, end))
        statuses = {s for s in q.get("order.status", "").split(",") if s}
        tags = {s for s in q.get("tags", "").split(",") if s}
        tags_not = {s for s in q.get("tags.not", "").split(",") if s}
        text, item = q.get("q"), q.get("item")

        def keep(o: dict[str, Any]) -> bool:
            # ML: "if you search as a seller, canceled orders will be filtered out" (meli-api.md §2).
            if o["seller"]["id"] != token.seller_id or o.get("status") == "cancelled":
                return False
            if statuses and o.get("status") not in statuses:
                return False
            order_tags = set(o.get("tags") or [])
            if not tags <= order_tags or tags_not & order_tags:
                return False
            items = [line.get("item") or {} for line in o.get("order_items") or []]
            if item and not any(i.get("id") == item for i in items):
                return False
            if text and not (
                text == str(o["id"])
                or any(text == i.get("id") or text.lower() in str(i.get("title") or "").lower() for i in items)
            ):
                return False
            for name, start, end in bounds:
                when = _order_date(o, name)
                if when is None or (start and when < start) or (end and when >= end + timedelta(hours=1)):
                    return False
            return True

        with self._lock:
            found = [o for o in self._orders.values() if keep(o)]
        # Sellers' searches sort by date_closed (meli-api.md §2); orders never closed fall back to date_created.
        found.sort(
            key=lambda o: (_parse(o.get("date_closed") or o.get("date_created")) or _EPOCH, o["id"]),
            reverse=sort == "date_desc",
        )
        applied = [(k, v) for k, v in q.items() if k not in ("offset", "limit", "sort")]
        return _Answer(
            200,
            {
                "query": q.get("q"),
                "results": found[offset : offset + limit],
                "sort": {"id": sort, "name": _SORTS[sort]},
                "available_sorts": [{"id": k, "name": v} for k, v in _SORTS.items() if k != sort],
                "filters": [{"id": k, "name": k, "type": "text", "values": [{"id": v, "name": v}]} for k, v in applied],
                "paging": {"total": len(found), "offset": offset, "limit": limit},
                "display": "complete",
            },
        )

    # ---------------------------------------------------------------------------------- OAuth

    def _oauth_token(self, form: dict[str, str]) -> _Answer:
        def err(error: str, description: str) -> _Answer:
            return _Answer(400, {"error_description": description, "error": error, "status": 400, "cause": []})

        grant = form.get("grant_type")
        if not grant:
            return err("invalid_request", "the parameter grant_type is required")
        if not form.get("client_id") or not form.get("client_secret"):
            return err("invalid_client", "invalid client_id or client_secret")
        if grant == "authorization_code":
            return _Answer(400, INVALID_GRANT)  # no authorization flow here, so no code is ever valid
        if grant != "refresh_token":
            return err("unsupported_grant_type", f"the grant_type '{grant}' is not supported")
        refresh = form.get("refresh_token")
        if not refresh:
            return err("invalid_request", "the parameter refresh_token is required")
        with self._lock:  # one winner per refresh token: the check and the rotation are one step
            state = next((t for t in self._tokens.values() if t.refresh_token == refresh), None)
            if state is None or state.revoked:
                return _Answer(400, INVALID_GRANT)
            # Single use: the old refresh token and the old access token both stop working now.
            state.access_token = _new_access_token(state.seller_id)
            state.refresh_token = f"TG-{secrets.token_hex(12)}-{state.seller_id}"
            state.expires_at = time.monotonic() + state.expires_in
            state.expired = False
            self._token_owner[state.access_token] = state.connection_id
            self._token_owner[state.refresh_token] = state.connection_id
            return _Answer(
                200,
                {
                    "access_token": state.access_token,
                    "token_type": "bearer",
                    "expires_in": state.expires_in,
                    "scope": "offline_access read write",
                    "user_id": state.seller_id,
                    "refresh_token": state.refresh_token,
                },
            )


_EPOCH = datetime.fromisoformat("1970-01-01T00:00:00+00:00")
_ORDER_PATH = re.compile(r"/orders/\d+/?")


def _kit_listing(order: dict[str, Any]) -> str | None:
    """The kit listing a kit component's order was sold through (tag bundle_component, bundle.parent_item.id)."""
    if "bundle_component" not in (order.get("tags") or []):
        return None
    for line in order.get("order_items") or []:
        parent = ((line.get("bundle") or {}).get("parent_item") or {}).get("id")
        if parent:
            return str(parent)
    return None


def _partial(answer: _Answer, missing: list[str]) -> _Answer:
    """ML's 206 Partial Content for an order: the sections it could not fetch are absent from the body and named in
    ``X-Content-Missing`` (reference/meli-api.md §1.2). The stored order stays whole: a later read may be complete."""
    body = {k: v for k, v in answer.body.items() if k not in missing}
    return _Answer(206, body, answer.connection_id, {"X-Content-Missing": ", ".join(missing)})


def _bearer(headers: Mapping[str, str]) -> str | None:
    value = headers.get("authorization") or ""
    scheme, _, token = value.partition(" ")
    return token.strip() or None if scheme.lower() == "bearer" else None


def _form(body: bytes) -> dict[str, str]:
    try:
        return {k: v[-1] for k, v in parse_qs(body.decode("utf-8"), keep_blank_values=True).items()}
    except UnicodeDecodeError:
        return {}


def _new_access_token(seller_id: int) -> str:
    # Same shape as ML's: APP_USR-<app id>-<MMDDHH>-<hex>-<user id>.
    return f"APP_USR-{secrets.randbelow(10**16):016d}-{time.strftime('%m%d%H')}-{secrets.token_hex(16)}-{seller_id}"


def _parse(value: Any) -> datetime | None:
    """ML dates: ``-04:00``, ``-0400`` or ``Z`` offsets (3.11's fromisoformat reads all three). Naive means UTC."""
    if not isinstance(value, str) or not value:
        return None
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        return None
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=_EPOCH.tzinfo)


def _hour(value: str | None) -> datetime | None:
    """A search date bound: ML keeps only the hour ("minutes, seconds and milliseconds are removed")."""
    if value is None or value == "":
        return None
    parsed = _parse(value)
    if parsed is None:
        raise ValueError(f"Invalid date '{value}', expected ISO 8601 like 2024-11-01T00:00:00.000-03:00")
    return parsed.replace(minute=0, second=0, microsecond=0)


def _order_date(order: dict[str, Any], name: str) -> datetime | None:
    if name == "order.date_last_updated":
        # Search payloads carry date_last_updated; order JSON has last_updated.
        return _parse(order.get("date_last_updated") or order.get("last_updated") or order.get("date_created"))
    return _parse(order.get(name.removeprefix("order.")))
