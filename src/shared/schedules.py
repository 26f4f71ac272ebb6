"""Scheduled work that needs no human (DESIGN §1 "EventBridge schedules", §6 "our edge").

- **Error sweep**: every retryable error-list entry whose backoff has elapsed is retried through the bulk path
  (a job, 50-id SQS messages); an entry whose retries are spent is escalated once; an entry blocked by its product
  is retried as soon as every listing that blocked it is linked to an active, synced product (self-heal).
  Entries blocked by the sale itself (cancelled, unpaid, cart, ...) are left alone: the seller must act. A connection
  that needs reauthorization is looked at first (reading its stored tokens notices a reconnection): while it does, none
  of its sales is retried (no ML call is made for it) and its one help-desk message is sent if still due; once it is
  active again, the sales that waited for it are retried.
- **Reconciliation**: pages through ML's ``orders/search`` (status paid, ``order.date_last_updated`` in hour
  slices) for each connection's seller and relinks, through the bulk path, every paid sale the platform has not
  reflected, not listed and not settled (a cart's sale: its cart, keyed by the pack id). A per-connection lease
  keeps two runs apart, a sale that a job already holds (an open item, found through the jobs table's open-items
  index) is not queued again, and a per-connection cursor (watermark + offset) on the connection's row makes runs
  resumable.
- **Reaper** (first, in every sweep): sales whose owner's execution ended or never started, and escalations whose
  page is still due (``shared.usecases.reaper``).

The handlers parse the event; this module takes and returns models.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import AwareDatetime, BaseModel, ConfigDict, Field, ValidationError, model_validator

from shared.bulk import BulkService
from shared.checks import PAID_STATUSES, check_not_cancelled
from shared.identifiers import validate_connection_id
from shared.jobs import JobStore
from shared.lifecycle import moves
from shared.lifecycle.change import Decision
from shared.lifecycle.moves import REQUEUE_REASONS, WAITING_FOR_RECONNECTION
from shared.lifecycle.row import Snapshot
from shared.lifecycle.table import TABLE, Actor, State, Transition
from shared.meli.errors import ConnectionNeedsReauthorization
from shared.meli.models import MeliOrder
from shared.models import Connection, ConnectionState, ErrorEntry, Reason, Trigger
from shared.observability import record_schedule_run
from shared.recovery import WAITING_FOR_PRODUCT, RecoveryService
from shared.settings import Settings
from shared.stores.base import ReconcileCursor

HOUR = timedelta(hours=1)
PAGE_SIZE = 50  # ML's documented default and the most clients use (reference/meli-api.md §2)


class InvalidScheduleInput(ValueError):
    """A manual run's input is not one the schedule understands. Nothing was read or written."""


class InvalidWindow(InvalidScheduleInput):
    """A manual reconciliation window that cannot be searched (inverted, empty, too old)."""


class ScheduleRunFailed(RuntimeError):
    """At least one connection's run failed; the others completed. The message names each failure."""


# --- input ------------------------------------------------------------------------------------------------------------


class Window(BaseModel):
    """A manual reconciliation window, ``{"from": ISO, "to": ISO}`` with a UTC offset."""

    model_config = ConfigDict(extra="forbid", populate_by_name=True, defer_build=True)

    start: AwareDatetime = Field(alias="from")
    end: AwareDatetime = Field(alias="to")


class ScheduleRequest(BaseModel):
    """What a run works on. A scheduled event means every connection; a manual run may name one (and a window)."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    connection_id: str | None = Field(default=None, min_length=1, max_length=64)
    window: Window | None = None

    @model_validator(mode="after")
    def _window_order(self) -> ScheduleRequest:
        if self.window is not None and self.window.start >= self.window.end:
            raise InvalidWindow(
                f"window.from ({self.window.start.isoformat()}) must be before window.to "
                f"({self.window.end.isoformat()}); swap them or widen the window."
            )
        return self


class ScheduledEvent(BaseModel):
    """An EventBridge scheduled event (rule with a schedule expression and no Input)."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    version: str
    id: str
    detail_type: str = Field(alias="detail-type", pattern="^Scheduled Event$")
    source: str = Field(pattern="^aws\\.events$")
    account: str
    time: datetime
    region: str
    resources: list[str]
    detail: dict[str, Any] = Field(default_factory=dict)


def parse_schedule_input(event: Any, *, windows: bool) -> ScheduleRequest:
    """A real scheduled event -> every connection; a plain JSON object (a manual run from the console) ->
    ``{"connection_id"?, "window"?: {"from", "to"}}``. Raises InvalidScheduleInput / InvalidWindow."""
    example = '{"connection_id": "mla-main"' + (
        ', "window": {"from": "2024-11-04T00:00:00-03:00", "to": "2024-11-05T00:00:00-03:00"}}' if windows else "}"
    )
    if not isinstance(event, dict):
        raise InvalidScheduleInput(f"The input must be a JSON object, for example {example}.")
    if event.get("source") == "aws.events" or "detail-type" in event:
        try:
            ScheduledEvent.model_validate(event)
        except ValidationError as exc:
            raise InvalidScheduleInput(f"Not an EventBridge scheduled event: {_problems(exc)}.") from None
        return ScheduleRequest()
    try:
        request = ScheduleRequest.model_validate(event)
    except InvalidWindow:
        raise
    except ValidationError as exc:
        cause = exc.errors()[0].get("ctx", {}).get("error") if exc.errors() else None
        if isinstance(cause, InvalidWindow):
            raise cause from None
        raise InvalidScheduleInput(f"Invalid manual run input ({_problems(exc)}). Use {example}.") from None
    if request.window is not None and not windows:
        raise InvalidScheduleInput(f'The error sweep takes no "window". Use {example}.')
    if request.connection_id is not None:
        validate_connection_id(request.connection_id)
    return request


def _problems(exc: ValidationError) -> str:
    parts = []
    for err in exc.errors()[:5]:
        where = ".".join(str(p) for p in err["loc"]) or "(input)"
        parts.append(f"{where}: {err['msg']}")
    return "; ".join(parts)


# --- output -----------------------------------------------------------------------------------------------------------


class RunSummary(BaseModel):
    """One connection's run: what was found, queued, left alone and escalated. Logged and turned into metrics."""

    model_config = ConfigDict(defer_build=True)

    schedule: str
    connection_id: str
    found: int = 0
    enqueued: int = 0
    skipped: int = 0
    escalated: int = 0
    healed: int = 0  # of ``enqueued``: sales blocked by a product that is now active and synced
    resumed: int = 0  # of ``enqueued``: sales that waited for their connection to be reconnected
    connection_state: ConnectionState | None = None
    reaped: int = 0  # sales the reaper looked at: an owner that ended or never started, a page still due
    # The connection's bulk lane (shared.lanes): slots freed that a dead worker or a lost message left taken, and held
    # messages sent (a release that failed, or a releaser that died).
    lane_freed: int = 0
    lane_released: int = 0
    job_id: str | None = None
    messages: int = 0
    sale_ids: list[str] = Field(default_factory=list)
    pages: int = 0
    window_from: datetime | None = None
    window_to: datetime | None = None
    complete: bool = True  # the whole window was paged (reconciliation)
    watermark: datetime | None = None
    note: str | None = None
    error: str | None = None

    def log_view(self) -> dict[str, Any]:
        return self.model_dump(mode="json", exclude_none=True, exclude={"sale_ids"})


def floor_hour(value: datetime) -> datetime:
    return value.astimezone(UTC).replace(minute=0, second=0, microsecond=0)


def hours(first: datetime, last: datetime) -> Iterator[datetime]:
    slot = floor_hour(first)
    while slot <= last:
        yield slot
        slot += HOUR


class ScheduleService:
    def __init__(
        self,
        recovery: RecoveryService,
        bulk: BulkService,
        jobs: JobStore,
        settings: Settings,
        *,
        clock: Callable[[], datetime] | None = None,
    ) -> None:
        self._recovery = recovery
        self._stores = recovery.stores
        self._lifecycle = recovery.lifecycle
        self._bulk = bulk
        self._jobs = jobs
        self._settings = settings
        self._now = clock or recovery.lifecycle.now

    def connection_ids(self, request: ScheduleRequest) -> list[str]:
        if request.connection_id is not None:
            self._recovery.connection(request.connection_id)  # ConnectionNotFound before anything is written
            return [request.connection_id]
        return self._stores.connections.list_ids()

    def _each(self, request: ScheduleRequest, run: Callable[[str], RunSummary], schedule: str) -> list[RunSummary]:
        summaries = []
        for connection_id in self.connection_ids(request):
            try:
                summaries.append(run(connection_id))
            except Exception as exc:  # one connection's trouble must not stop the others; reported at the end
                summaries.append(
                    RunSummary(schedule=schedule, connection_id=connection_id, error=f"{type(exc).__name__}: {exc}")
                )
        return summaries

    # --- error sweep ------------------------------------------------------------------------------------------------

    def sweep(self, request: ScheduleRequest) -> list[RunSummary]:
        return self._each(request, self._sweep_one, "error_sweep")

    def _sweep_one(self, connection_id: str) -> RunSummary:
        settings, errors = self._settings, self._stores.errors
        summary = RunSummary(schedule="error_sweep", connection_id=connection_id)
        # The reaper first: owners that ended or never started, pages still due.
        for sale_id in self._lifecycle.due(connection_id):
            self._recovery.reaper.reap(connection_id, sale_id)
            summary.reaped += 1
        lane = self._bulk.repair_lane(connection_id)
        if lane is not None:
            summary.lane_freed = lane.freed_done + lane.freed_lost
            summary.lane_released = lane.resent + lane.released
        # The connection's state, read now with its stored tokens (a reconnection is noticed here).
        gate = self._recovery.gate
        row = gate.current(connection_id, check_tokens=True)
        active = row is None or row.state is ConnectionState.ACTIVE
        summary.connection_state = row.state if row is not None else None
        if not active:
            gate.send_due_alert(connection_id)  # left due by a function that may not publish (a task, reconcile)
            summary.note = "the connection needs reauthorization: its sales wait for the seller to reconnect"
        now = self._now()
        due: list[ErrorEntry] = []
        waiting: list[ErrorEntry] = []
        resumable: list[ErrorEntry] = []
        cursor: str | None = None
        while len(due) + len(waiting) < settings.sweep_max_ids:
            page = errors.list(connection_id, limit=100, cursor=cursor)
            for entry in page.items:
                summary.found += 1
                if entry.escalated:
                    summary.skipped += 1  # the help desk has it
                elif entry.retryable and entry.attempts >= settings.error_max_attempts:
                    summary.escalated += self._escalate_spent(entry)
                elif entry.retryable:
                    if not active or (entry.next_retry_at is not None and entry.next_retry_at > now):
                        summary.skipped += 1  # backoff not elapsed, or no ML call for the connection now
                    else:
                        due.append(entry)
                elif entry.reason in WAITING_FOR_RECONNECTION:
                    if active:
                        resumable.append(entry)  # reconnected: retried now
                    else:
                        summary.skipped += 1
                elif entry.reason in WAITING_FOR_PRODUCT and entry.listings:
                    waiting.append(entry)
                else:
                    summary.skipped += 1  # blocked by the sale itself: the seller must act
            cursor = page.next_cursor
            if cursor is None:
                break
        healable = self._healable(connection_id, waiting)
        summary.skipped += len(waiting) - len(healable)
        claim_until = now + timedelta(seconds=settings.sweep_claim_seconds)
        chosen = (due + healable + resumable)[: settings.sweep_max_ids]
        claimed = [e for e in chosen if self._claim_retry(connection_id, e.sale_id, now, claim_until)]
        summary.skipped += len(due) + len(healable) + len(resumable) - len(claimed)
        if claimed:
            job = self._bulk.submit_ids(connection_id, [e.sale_id for e in claimed], trigger=Trigger.SCHEDULE)
            summary.job_id, summary.messages = job.job_id, job.messages
            summary.sale_ids = [e.sale_id for e in claimed]
            summary.enqueued = len(claimed)
            summary.resumed = sum(1 for e in claimed if e.reason in WAITING_FOR_RECONNECTION)
            summary.healed = sum(1 for e in claimed if not e.retryable) - summary.resumed
        return summary

    def _escalate_spent(self, entry: ErrorEntry) -> int:
        """Retries spent: the help desk, once, unless a live owner works on the sale or it moved meanwhile."""
        now = self._now()
        max_attempts = self._settings.error_max_attempts

        def spent(snap: Snapshot) -> bool:
            current = snap.entry
            return (
                current is not None
                and current.retryable
                and not current.escalated
                and current.attempts >= max_attempts
                and not snap.owner_live(now)
            )

        answer = self._recovery.escalations.escalate(
            entry.connection_id,
            entry.sale_id,
            actor=Actor.SWEEP,
            reason=Reason.RETRIES_EXHAUSTED,
            attempts=entry.attempts,
            settled_by="sweep",
            may_escalate=spent,
        )
        return int(answer.reason is Reason.RETRIES_EXHAUSTED)

    def _claim_retry(self, connection_id: str, sale_id: str, now: datetime, until: datetime) -> bool:
        """Claim a due entry for a retry: its next retry moves to ``until``, so one sweep queues it once."""
        sources = TABLE[Transition.SCHEDULE_RETRY].sources

        def decide(snap: Snapshot) -> Decision[bool]:
            entry = snap.entry
            if entry is None or entry.escalated or snap.reflected or snap.state not in sources:
                return Decision(False)
            if entry.next_retry_at is not None and entry.next_retry_at > now:
                return Decision(False)  # not due (another sweep claimed it, or its backoff has not elapsed)
            return Decision(True, moves.schedule_retry(snap, Actor.SWEEP, until=until))

        _, claimed = self._lifecycle.run(connection_id, sale_id, decide)
        return claimed

    def _healable(self, connection_id: str, entries: list[ErrorEntry]) -> list[ErrorEntry]:
        """Entries every blocking listing of which is now linked to an active, synced product."""
        if not entries:
            return []
        keys = sorted({(ref.item_id, ref.variation_id) for e in entries for ref in e.listings or []}, key=str)
        links = self._stores.products.get_links(connection_id, keys)

        def fixed(entry: ErrorEntry) -> bool:
            for ref in entry.listings or []:
                link = links.get((ref.item_id, ref.variation_id))
                if link is None or not link.active or not link.synced:
                    return False
            return True

        return [e for e in entries if fixed(e)]

    # --- reconciliation ---------------------------------------------------------------------------------------------

    def reconcile(self, request: ScheduleRequest) -> list[RunSummary]:
        window = request.window
        return self._each(request, lambda cid: self._reconcile_one(cid, window), "reconcile")

    def _reconcile_one(self, connection_id: str, window: Window | None) -> RunSummary:
        connection = self._recovery.connection(connection_id)
        connections = self._stores.connections
        row = self._recovery.gate.current(connection_id)
        if row is not None and row.state is not ConnectionState.ACTIVE:
            return RunSummary(
                schedule="reconcile",
                connection_id=connection_id,
                connection_state=row.state,
                note="the connection needs reauthorization: nothing was searched (no Mercado Libre call)",
            )
        owner = uuid.uuid4().hex
        ttl = int(self._settings.reconcile_max_seconds) + 120
        cursor = connections.acquire_reconcile_lease(connection_id, owner, ttl)
        if cursor is None:
            return RunSummary(
                schedule="reconcile",
                connection_id=connection_id,
                note="another reconciliation of this connection is running; this run did nothing",
            )
        try:
            return self._reconcile_leased(connection, owner, cursor, window)
        except ConnectionNeedsReauthorization as refusal:
            # Found now (the refresh token was refused, a connection-level 403): the cursor stays where it was.
            return RunSummary(
                schedule="reconcile",
                connection_id=connection_id,
                connection_state=ConnectionState.NEEDS_REAUTHORIZATION,
                note=f"stopped: {refusal}",
            )
        finally:
            connections.release_reconcile_lease(connection_id, owner)

    def _reconcile_leased(
        self, connection: Connection, owner: str, cursor: ReconcileCursor, window: Window | None
    ) -> RunSummary:
        settings, stores = self._settings, self._stores
        connection_id = connection.connection_id
        now = self._now()
        current = floor_hour(now)
        resume: dict[datetime, int] = {}
        if window is not None:
            primary = list(hours(window.start, min(window.end, now)))
            overlap: list[datetime] = []
        else:
            start = floor_hour(cursor.watermark or now - timedelta(hours=settings.reconcile_lookback_hours))
            primary = list(hours(start, current))
            # ML keeps only the hour of a date filter: re-read the hour(s) before the watermark, last.
            overlap = (
                [start - HOUR * n for n in range(settings.reconcile_overlap_hours, 0, -1)] if cursor.watermark else []
            )
            resume = {start: cursor.offset}
        summary = RunSummary(
            schedule="reconcile",
            connection_id=connection_id,
            window_from=(overlap or primary)[0] if (overlap or primary) else None,
            window_to=(primary[-1] + HOUR) if primary else None,
        )
        client = self._recovery.marketplace.for_connection(connection_id)
        deadline = time.monotonic() + settings.reconcile_max_seconds
        stale = now - timedelta(seconds=settings.reconcile_claim_seconds)
        seen: set[str] = set()
        claimed: list[str] = []
        stopped: tuple[datetime, int] | None = None
        for slot in [*primary, *overlap]:
            offset = resume.get(slot, 0)
            while True:
                if (
                    summary.pages >= settings.reconcile_max_pages
                    or len(claimed) >= settings.reconcile_max_ids
                    or time.monotonic() > deadline
                ):
                    stopped = (slot, offset)
                    break
                page = client.search_orders(
                    seller_id=connection.seller_id,
                    status="paid",
                    updated_from=slot,
                    updated_to=slot + HOUR,  # overlaps the next slot: a superset, whatever ML rounds to
                    offset=offset,
                    limit=PAGE_SIZE,
                )
                summary.pages += 1
                full = True
                for order in page.results:
                    if len(claimed) >= settings.reconcile_max_ids:
                        full = False  # the rest of this page is read again next run (claims skip the done)
                        break
                    self._consider(connection_id, order, stale, seen, claimed, summary)
                if not full:
                    stopped = (slot, offset)
                    break
                offset += len(page.results)
                if not page.results or offset >= page.paging.total:
                    break
            if stopped is not None:
                break
        if claimed:
            job = self._bulk.submit_ids(connection_id, claimed, trigger=Trigger.SCHEDULE)
            summary.job_id, summary.messages = job.job_id, job.messages
        summary.enqueued = len(claimed)
        summary.sale_ids = claimed
        summary.skipped = summary.found - summary.enqueued
        summary.complete = stopped is None
        if window is None:
            # Only after the enqueue succeeded, and only as far as the primary hours were fully paged.
            if stopped is not None and stopped[0] in primary:
                advanced = ReconcileCursor(watermark=stopped[0], offset=stopped[1])
            else:
                advanced = ReconcileCursor(watermark=current, offset=0)
            if stores.connections.advance_reconcile_cursor(connection_id, owner, advanced):
                summary.watermark = advanced.watermark
            else:
                summary.watermark = cursor.watermark
        return summary

    def _consider(
        self,
        connection_id: str,
        order: MeliOrder,
        stale: datetime,
        seen: set[str],
        claimed: list[str],
        summary: RunSummary,
    ) -> None:
        sale_id = str(order.id)
        if sale_id in seen:
            return  # overlapping hours: the same order twice
        seen.add(sale_id)
        if order.status not in PAID_STATUSES or not check_not_cancelled(order).ok:
            return  # ML filters these for sellers; never relink one that slipped through
        summary.found += 1
        snap = self._lifecycle.read(connection_id, sale_id)
        if snap.entry is not None:
            return  # the error sweep owns listed sales
        if snap.state is State.NEVER_SEEN and order.pack_id is not None and order.pack_id != order.id:
            cart = self._lifecycle.read(connection_id, str(order.pack_id))
            if moves.is_cart_row(cart.row):
                # A cart's sale stands where its cart stands (reprocessed whole, keyed by the pack id): a cart
                # reflected, in progress or blocked is not queued again for each of its sales.
                snap = cart
                if snap.entry is not None:
                    return
        state = snap.state
        if state is State.REFLECTED or snap.owner_live(self._now()) or state is State.ESCALATED:
            return  # reflected, being worked on, or with the help desk
        if state is State.NOT_REFLECTABLE and snap.row.reason not in REQUEUE_REASONS:
            return  # blocked by the sale itself: the seller must act
        if self._jobs.has_open_item(connection_id, sale_id, updated_after=stale):
            return  # a job holds it already (a bulk request, an earlier run): queued once
        claimed.append(sale_id)


def finish_run(schedule: str, summaries: list[Any]) -> dict[str, Any]:
    """The end of every scheduled run: its metrics and summary log line, then the answer — or, when a connection
    failed, an error naming each failure (so the invocation fails and its alarm sees it)."""
    record_schedule_run(schedule, summaries)
    failed = [s for s in summaries if s.error]
    if failed:
        raise ScheduleRunFailed("; ".join(f"{s.connection_id}: {s.error}" for s in failed))
    return {"schedule": schedule, "connections": [s.model_dump(mode="json", exclude_none=True) for s in summaries]}
