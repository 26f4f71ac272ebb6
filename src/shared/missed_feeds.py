"""The missed-feeds schedule: ML's ``/missed_feeds`` read per connection, fed to the notification processing.

A notification that ML could not deliver (no 200 after eight tries in an hour: our callback was down, slow or
throttled) is kept by ML for two days in the application's missed feeds (reference/meli-api.md §8). Each run pages
``/missed_feeds?app_id=<ours>&topic=orders_v2`` with each active connection's token, classifies every message with the
callback's own rules (``shared.notifications.classify``), and queues the orders of that connection's seller on the
notifications queue, where the processing collapses them with any other notification of the same sale.

What a run queued is remembered by the notification's ``_id`` (``DynamoHandledFeeds``, three days): ML may list a
feed again on the next run, and it is not handled twice. The mark is written after the send, so a run that dies
between the two sends that feed again on the next run, where the processing finds its sale reflected or held.

Whether ML filters ``/missed_feeds`` by the token's user is not documented: a message of another seller is left for
that seller's connection (its own run reads it), so both readings of the API handle every feed once.
"""

from __future__ import annotations

from typing import Protocol

from pydantic import ValidationError

from shared.meli.errors import ConnectionNeedsReauthorization
from shared.models import ConnectionState
from shared.notifications import (
    IgnoredReason,
    Notification,
    NotificationQueue,
    NotificationSource,
    QueuedNotification,
    classify,
)
from shared.recovery import RecoveryService
from shared.schedules import RunSummary, ScheduleRequest

TOPIC = "orders_v2"
PAGE_SIZE = 50


class HandledFeeds(Protocol):
    def handled(self, notification_ids: list[str]) -> set[str]: ...

    def mark(self, notification_id: str) -> bool: ...


class _OneSeller:
    """The seller directory of one connection's run: only its own seller is known to it."""

    def __init__(self, seller_id: int, connection_id: str) -> None:
        self._seller_id = seller_id
        self._connection_id = connection_id

    def connection_for(self, seller_id: int) -> str | None:
        return self._connection_id if seller_id == self._seller_id else None


class MissedFeedsService:
    def __init__(
        self,
        recovery: RecoveryService,
        handled: HandledFeeds,
        queue: NotificationQueue,
        *,
        application_id: int | None,
        max_pages: int = 20,
    ) -> None:
        self._recovery = recovery
        self._handled = handled
        self._queue = queue
        self._application_id = application_id
        self._max_pages = max_pages

    def run(self, request: ScheduleRequest) -> list[RunSummary]:
        if request.connection_id is not None:
            self._recovery.connection(request.connection_id)  # ConnectionNotFound before anything is read
            ids = [request.connection_id]
        else:
            ids = self._recovery.stores.connections.list_ids()
        summaries = []
        for connection_id in ids:
            try:
                summaries.append(self._run_one(connection_id))
            except Exception as exc:  # one connection's trouble must not stop the others; reported at the end
                summaries.append(
                    RunSummary(
                        schedule="missed_feeds", connection_id=connection_id, error=f"{type(exc).__name__}: {exc}"
                    )
                )
        return summaries

    def _run_one(self, connection_id: str) -> RunSummary:
        summary = RunSummary(schedule="missed_feeds", connection_id=connection_id)
        if self._application_id is None:
            summary.note = "MeliApplicationId is not set: there are no missed feeds to read"
            return summary
        connection = self._recovery.connection(connection_id)
        row = self._recovery.gate.current(connection_id)
        if row is not None and row.state is not ConnectionState.ACTIVE:
            summary.connection_state = row.state
            summary.note = "the connection needs reauthorization: nothing was read (no Mercado Libre call)"
            return summary
        sellers = _OneSeller(connection.seller_id, connection_id)
        found: dict[str, QueuedNotification] = {}
        offset = 0
        try:
            client = self._recovery.marketplace.for_connection(connection_id)
            while summary.pages < self._max_pages:
                page = client.missed_feeds(app_id=self._application_id, topic=TOPIC, offset=offset, limit=PAGE_SIZE)
                summary.pages += 1
                for message in page.messages:
                    queued = self._classify(message, sellers)
                    if queued is None:
                        summary.skipped += 1
                    else:
                        summary.found += 1
                        found.setdefault(queued.notification_id, queued)
                offset += len(page.messages)
                if len(page.messages) < PAGE_SIZE:
                    break
            else:
                summary.complete = False  # the rest is read by the next run
        except ConnectionNeedsReauthorization as refusal:
            summary.connection_state = ConnectionState.NEEDS_REAUTHORIZATION
            summary.note = f"stopped: {refusal}"
        handled = self._handled.handled(list(found))
        fresh = [n for notification_id, n in found.items() if notification_id not in handled]
        summary.skipped += len(found) - len(fresh)
        if fresh:
            self._queue.send(fresh)
            for n in fresh:
                self._handled.mark(n.notification_id)
        summary.enqueued = len(fresh)
        summary.sale_ids = list(dict.fromkeys(n.sale_id for n in fresh))
        return summary

    def _classify(self, message: dict[str, object], sellers: _OneSeller) -> QueuedNotification | None:
        try:
            notification = Notification.model_validate(message)
        except ValidationError:
            return None  # not a notification we can read; ML's sample itself is not valid JSON (§8)
        assert self._application_id is not None
        verdict = classify(
            notification, application_id=self._application_id, sellers=sellers, source=NotificationSource.MISSED_FEEDS
        )
        return None if isinstance(verdict, IgnoredReason) else verdict
