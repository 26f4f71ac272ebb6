"""ML's notifications, simulated (reference/meli-api.md §8): a POST to the application's callback URL for every order
created or changed, retried like ML does, and the ones never answered 200 kept for ``GET /missed_feeds``.

- A notification is ML's general model: ``{"_id", "resource": "/orders/<id>", "user_id", "topic", "application_id",
  "attempts", "sent", "received"}``; ``copies`` of it are sent per change (ML's duplicates), each with its own ``_id``.
- A try succeeds only on HTTP 200 within ``timeout_ms``; otherwise the next try follows after the next of
  ``retry_seconds`` (ML: eight tries within an hour, exponential), with ``attempts`` counted up. A try inside an
  ``outage`` window fails without reaching the callback (a refused connection).
- A notification whose tries are spent goes to the missed feeds, with ``request`` and ``response`` of its last try as
  ML shows them; they are kept two days and served to the tokens of the notification's seller.
- ``new_orders`` appear (and are notified) ``after_seconds`` after ``start``.
"""

from __future__ import annotations

import json
import threading
import time
import uuid
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import partial
from typing import Any

import httpx

from devstack.simulator.scenario import NewOrder, Notifications, Outage

KEPT = timedelta(days=2)  # "solo guarda las notificaciones perdidas de hasta 2 días atrás"


@dataclass
class Delivery:
    """One notification's tries, for tests and the demo."""

    notification: dict[str, Any]
    tries: list[int | None] = field(default_factory=list)  # HTTP status of each try; None: unreachable or too slow
    delivered: bool = False
    missed: bool = False


def _iso(moment: datetime) -> str:
    return moment.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")


class Notifier:
    def __init__(
        self,
        settings: Notifications,
        new_orders: list[NewOrder],
        *,
        upsert_order: Callable[[Mapping[str, Any], bool, int | None], None],
        stopping: threading.Event,
    ) -> None:
        self.settings = settings
        self._new_orders = list(new_orders)
        self._upsert_order = upsert_order
        self._stopping = stopping
        self._lock = threading.Lock()
        self._missed: list[dict[str, Any]] = []
        self.deliveries: list[Delivery] = []
        self.callback_url: str | None = None
        self.started_at: float | None = None  # time.monotonic() of start()
        self.appeared: dict[int, float] = {}  # order id -> time.time() it appeared (new_orders)
        self._threads: list[threading.Thread] = []
        self._http = httpx.Client(timeout=settings.timeout_ms / 1000.0)

    # --- control ------------------------------------------------------------------------------------------------------

    def start(self, callback_url: str) -> None:
        """Notifications go to ``callback_url`` from now on; ``new_orders`` count their seconds from now."""
        self.callback_url = self.settings.callback_url or callback_url
        self.started_at = time.monotonic()
        if self._new_orders:
            self._spawn(self._appear, "meli-new-orders")

    def stop(self) -> None:
        for thread in list(self._threads):
            thread.join(timeout=2)
        self._http.close()

    def outage(self, seconds: float) -> None:
        """The callback cannot be reached for the next ``seconds`` (a deploy gone wrong, a network cut)."""
        assert self.started_at is not None, "notifications have not started"
        elapsed = time.monotonic() - self.started_at
        with self._lock:
            self.settings.outages.append(Outage(from_seconds=elapsed, to_seconds=elapsed + seconds))

    def notify(self, order: Mapping[str, Any], copies: int | None = None) -> list[Delivery]:
        """ML notices an order created or changed: ``copies`` notifications, delivered in the background."""
        if self.callback_url is None:
            return []  # not started: the notifications of the scenario's own orders were delivered long ago
        now = datetime.now(UTC)
        deliveries = []
        for _ in range(copies or self.settings.copies):
            notification = {
                "_id": uuid.uuid4().hex[:24],
                "resource": f"/orders/{order['id']}",
                "user_id": order["seller"]["id"],
                "topic": self.settings.topic,
                "application_id": self.settings.application_id,
                "attempts": 1,
                "sent": _iso(now),
                "received": _iso(now),
            }
            delivery = Delivery(notification)
            with self._lock:
                self.deliveries.append(delivery)
            deliveries.append(delivery)
            self._spawn(partial(self._deliver, delivery), "meli-notification")
        return deliveries

    def missed_feeds(self, *, user_id: int, topic: str | None, offset: int, limit: int) -> list[dict[str, Any]]:
        cutoff = _iso(datetime.now(UTC) - KEPT)
        with self._lock:
            self._missed = [m for m in self._missed if m["sent"] >= cutoff]
            mine = [m for m in self._missed if m["user_id"] == user_id and (topic is None or m["topic"] == topic)]
        return mine[offset : offset + limit]

    def idle(self) -> bool:
        """Every delivery finished (delivered or missed) and every new order appeared."""
        with self._lock:
            return all(not t.is_alive() for t in self._threads)

    # --- work ---------------------------------------------------------------------------------------------------------

    def _spawn(self, target: Callable[[], None], name: str) -> None:
        thread = threading.Thread(target=target, name=name, daemon=True)
        with self._lock:
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
        thread.start()

    def _appear(self) -> None:
        assert self.started_at is not None
        for new in sorted(self._new_orders, key=lambda n: n.after_seconds):
            wait = self.started_at + new.after_seconds - time.monotonic()
            if wait > 0 and self._stopping.wait(wait):
                return
            self.appeared[new.order["id"]] = time.time()
            self._upsert_order(new.order, True, new.copies)

    def _in_outage(self) -> bool:
        assert self.started_at is not None
        elapsed = time.monotonic() - self.started_at
        with self._lock:
            return any(o.from_seconds <= elapsed < o.to_seconds for o in self.settings.outages)

    def _deliver(self, delivery: Delivery) -> None:
        waits = [*self.settings.retry_seconds, None]
        body = delivery.notification
        last: tuple[int, int | None, str] = (0, None, "")
        for attempt, wait in enumerate(waits, start=1):
            body["attempts"] = attempt
            status, elapsed_ms, text = self._try(body)
            delivery.tries.append(status)
            last = (elapsed_ms, status, text)
            if status == 200:
                delivery.delivered = True
                return
            if wait is None:
                break
            if self._stopping.wait(wait):
                return  # the simulator stops: nobody will read its missed feeds
        data = json.dumps(body, separators=(",", ":"))
        missed = {
            **body,
            "request": {
                "url": self.callback_url,
                "headers": {
                    "accept": "application/json",
                    "content-type": "application/json",
                    "content-length": len(data),
                },
                "data": data,
            },
            "response": {"req_time": last[0], "http_code": last[1] or 0, "body": last[2][:200], "headers": {}},
        }
        delivery.missed = True
        with self._lock:
            self._missed.append(missed)

    def _try(self, body: dict[str, Any]) -> tuple[int | None, int, str]:
        if self._in_outage() or self.callback_url is None:
            return None, 0, ""
        started = time.perf_counter()
        try:
            response = self._http.post(self.callback_url, json=body, headers={"accept": "application/json"})
        except httpx.HTTPError:
            return None, int((time.perf_counter() - started) * 1000), ""
        return response.status_code, int((time.perf_counter() - started) * 1000), response.text
