"""Notifications to work: ML's notifications of one batch, collapsed per sale, become one notification-triggered job.

ML sends several notifications per sale (creation, payment, shipping changes; five for one order is normal) and a
batch may also carry missed feeds of sales already handled. Per connection, each sale is looked at once, from the
service's own state and without calling ML:

- reflected: nothing to do, and nothing is written (a cancellation after the import is the seller's to handle in
  the platform; a notification never un-reflects a sale);
- an execution or a job holds it already (a person's relink or bulk request, an earlier notification): left to it,
  and the notification put back on the queue for later (1, 2, 4 ... 15 minutes, ``MAX_DEFERRALS`` times): the holder
  may have read the order before the change ML notifies (a job that found it unpaid settles it
  ``payment_not_verified``; the "paid" notification that raced it relinks it when it comes back);
- with the help desk, in the error list with automatic retries (the error sweep owns it), or blocked by its product
  or by itself for a reason ML does not take back: left alone, as reconciliation leaves it;
- anything else (never seen, or settled as unpaid / not found, which ML may take back): relinked through the bulk
  path in one job of trigger ``notification`` per connection and batch, paced by the connection's lane.

The job's worker reads the order once (the only ML read a notified sale costs) and settles it with the same
outcomes and the same three-attempt rule as any bulk job; an order that is not a paid sale and that the service
never saw leaves no row behind (``shared.usecases.bulk_sales``). Batches racing on one sale make one job item (a
short per-sale claim keeps ML's duplicates, spread over concurrent invocations, to one); the sale
lifecycle's conditional writes give the sale one outcome and one record whoever else works on it.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from enum import StrEnum
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

from shared.bulk import BulkService
from shared.errors import ConnectionNotFound
from shared.jobs import JobStore
from shared.lifecycle import SaleLifecycle
from shared.lifecycle.moves import REQUEUE_REASONS
from shared.lifecycle.row import Snapshot
from shared.lifecycle.table import State
from shared.models import Trigger
from shared.notifications import MAX_DEFER_SECONDS, MAX_DEFERRALS, NotificationQueue, QueuedNotification


class Skip(StrEnum):
    REFLECTED = "reflected"
    HELD = "held"  # an execution or a job works on it
    ESCALATED = "escalated"
    SWEEP_OWNS = "sweep_owns"  # listed with automatic retries
    BLOCKED = "blocked"  # waits for the seller (its product, a cancellation)


class ConnectionReport(BaseModel):
    """What one connection's notifications of a batch came to."""

    model_config = ConfigDict(defer_build=True)

    connection_id: str
    notifications: int
    sales: int  # distinct sales among them
    enqueued: list[str] = Field(default_factory=list)
    skipped: dict[str, int] = Field(default_factory=dict)
    deferred: list[str] = Field(default_factory=list)  # held sales whose notification comes back later
    given_up: list[str] = Field(default_factory=list)  # held through every deferral: reconciliation's now
    job_id: str | None = None
    note: str | None = None


CLAIM_SECONDS = 60  # covers one look-and-submit; shorter than the queue's visibility timeout (360 s)


class SaleClaims(Protocol):
    def claim(self, connection_id: str, sale_id: str, *, seconds: int) -> bool: ...

    def release(self, connection_id: str, sale_id: str) -> None: ...


class NotifiedSales:
    def __init__(
        self,
        lifecycle: SaleLifecycle,
        bulk: BulkService,
        jobs: JobStore,
        claims: SaleClaims,
        *,
        open_item_seconds: int,
        requeue: NotificationQueue | None = None,
        defer_seconds: int = 60,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._requeue = requeue
        self._defer_seconds = defer_seconds
        self._lifecycle = lifecycle
        self._bulk = bulk
        self._jobs = jobs
        self._claims = claims
        self._open_item = timedelta(seconds=open_item_seconds)
        self._now = clock or lifecycle.now

    def process(self, notifications: list[QueuedNotification]) -> list[ConnectionReport]:
        """One report per connection, in first-seen order. Raises what a connection's job could not survive (the
        caller retries that connection's notifications); ``ConnectionNotFound`` is a report, not a failure."""
        by_connection: dict[str, list[QueuedNotification]] = {}
        for n in notifications:
            by_connection.setdefault(n.connection_id, []).append(n)
        return [self.process_connection(cid, items) for cid, items in by_connection.items()]

    def process_connection(self, connection_id: str, notifications: list[QueuedNotification]) -> ConnectionReport:
        sale_ids = list(dict.fromkeys(n.sale_id for n in notifications))
        latest = {n.sale_id: n for n in sorted(notifications, key=lambda n: n.deferrals)}  # the most deferred
        held: list[QueuedNotification] = []
        report = ConnectionReport(connection_id=connection_id, notifications=len(notifications), sales=len(sale_ids))
        snapshots = self._lifecycle.read_many(connection_id, sale_ids)
        now = self._now()
        wanted: list[str] = []
        for sale_id in sale_ids:
            skip = self._skip(snapshots[sale_id], now)
            if skip is None and (
                self._jobs.has_open_item(connection_id, sale_id, updated_after=now - self._open_item)
                or not self._claims.claim(connection_id, sale_id, seconds=CLAIM_SECONDS)
            ):
                skip = Skip.HELD  # a job holds it, or another invocation is making one
            if skip is None:
                wanted.append(sale_id)
            else:
                report.skipped[skip.value] = report.skipped.get(skip.value, 0) + 1
                if skip is Skip.HELD:
                    held.append(latest[sale_id])
        self._defer(held, report)
        if not wanted:
            return report
        try:
            job = self._bulk.submit_ids(connection_id, wanted, trigger=Trigger.NOTIFICATION)
        except ConnectionNotFound:
            # Removed since the callback found it: nothing to relink for it.
            report.note = "the connection no longer exists: nothing was queued"
            return report
        finally:
            for sale_id in wanted:  # the job's open items hold them now (or nothing does, and the next may try)
                self._claims.release(connection_id, sale_id)
        report.enqueued = wanted
        report.job_id = job.job_id
        return report

    def _defer(self, held: list[QueuedNotification], report: ConnectionReport) -> None:
        """Put the held sales' notifications back for later, one per sale, each after its own backoff."""
        if self._requeue is None:
            return
        by_delay: dict[int, list[QueuedNotification]] = {}
        for n in held:
            if n.deferrals >= MAX_DEFERRALS:
                report.given_up.append(n.sale_id)
                continue
            delay = min(self._defer_seconds * 2**n.deferrals, MAX_DEFER_SECONDS)
            by_delay.setdefault(delay, []).append(n.model_copy(update={"deferrals": n.deferrals + 1}))
        for delay, batch in by_delay.items():
            self._requeue.send(batch, delay_seconds=delay)  # raises: the connection's records come back, collapsed
            report.deferred += [n.sale_id for n in batch]

    @staticmethod
    def _skip(snap: Snapshot, now: datetime) -> Skip | None:
        if snap.reflected:
            return Skip.REFLECTED
        if snap.owner_live(now):
            return Skip.HELD
        state = snap.state
        if state is State.ESCALATED:
            return Skip.ESCALATED
        entry = snap.entry
        if entry is not None:
            if entry.escalated:
                return Skip.ESCALATED
            if entry.retryable:
                return Skip.SWEEP_OWNS
            return None if entry.reason in REQUEUE_REASONS else Skip.BLOCKED
        if state is State.NOT_REFLECTABLE and snap.row.reason not in REQUEUE_REASONS:
            return Skip.BLOCKED
        return None
