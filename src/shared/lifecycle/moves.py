"""The changes each transition makes, as pure functions of a snapshot (no I/O: the lifecycle writes them).

Each function returns the row (and entry) as they must be after the write. The lifecycle adds the version, the
time and the waiting jobs, and checks the change against the transition table.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from shared.lifecycle.change import Change, EntryWrite, JobWrite
from shared.lifecycle.row import SaleRow, Snapshot, remember_key
from shared.lifecycle.table import Actor, Transition
from shared.models import (
    ErrorEntry,
    ErrorEvent,
    ErrorType,
    ExecutionRef,
    IdentifierKind,
    ListingRef,
    Outcome,
    Reason,
    ReflectedSale,
    Trigger,
    retry_delay_seconds,
)

# Blocked sales that stay in the error list, waiting for the seller to fix the product (self-heal picks them up).
WAITING_FOR_PRODUCT = frozenset({Reason.PRODUCT_NOT_FOUND, Reason.PRODUCT_INACTIVE, Reason.PRODUCT_NOT_SYNCED})
# Blocked sales that stay in the error list until the seller reconnects (the sweep retries them once it is active).
WAITING_FOR_RECONNECTION = frozenset({Reason.CONNECTION_NEEDS_REAUTHORIZATION})
# Settled for reasons ML may take back (it was unpaid, or ML did not know it yet): reconciliation and notifications
# relink such a sale again.
REQUEUE_REASONS = frozenset({Reason.PAYMENT_NOT_VERIFIED, Reason.SALE_NOT_FOUND, Reason.PACK_NOT_RELEASED})


@dataclass(frozen=True)
class Failure:
    """A failed attempt, as the error list records it."""

    event: ErrorEvent
    retryable: bool


@dataclass(frozen=True)
class Blocking:
    """Why a sale cannot be reflected until the seller (or ML) acts."""

    reason: Reason
    detail: str | None = None
    identifier_kind: IdentifierKind | None = None
    sale_ids: list[str] | None = None
    pack_id: str | None = None
    listings: list[ListingRef] | None = None  # the product links that block it (self-heal watches them)
    blocking_sale_id: str | None = None  # a cart blocked by one of its sales: that sale


@dataclass(frozen=True)
class Backoff:
    base: timedelta
    maximum: timedelta

    def next_retry(self, attempts: int, at: datetime) -> datetime:
        delay = retry_delay_seconds(
            attempts, base_seconds=self.base.total_seconds(), max_seconds=self.maximum.total_seconds()
        )
        return at + timedelta(seconds=delay)


def reauthorization_blocking(detail: str) -> Blocking:
    """The verdict for any sale of a connection that needs reauthorization (no ML call was made for it)."""
    return Blocking(reason=Reason.CONNECTION_NEEDS_REAUTHORIZATION, detail=detail)


def blocked_event(blocking: Blocking, trigger: Trigger, attempt_key: str | None) -> ErrorEvent:
    """The error list's event for a sale found blocked."""
    return ErrorEvent(
        error_type=blocking.reason.value,
        message=blocking.detail or blocking.reason.value,
        trigger=trigger,
        attempt_key=attempt_key,
    )


def recorded(entry: ErrorEntry | None, attempt_key: str | None) -> bool:
    """This attempt's failure is in the entry already (a retried task or a redelivered message)."""
    return bool(entry is not None and attempt_key and attempt_key in entry.attempt_keys)


def with_failure(
    snap: Snapshot,
    failure: Failure,
    *,
    episode: int,
    backoff: Backoff,
    count_attempt: bool = True,
    reason: Reason | None = None,
    listings: list[ListingRef] | None = None,
) -> ErrorEntry:
    """The entry after recording ``failure``: type, message, attempts, history, the next automatic retry."""
    event = failure.event
    entry = snap.entry or ErrorEntry(
        connection_id=snap.connection_id,
        sale_id=snap.sale_id,
        error_type=str(event.error_type),
        message=event.message,
        retryable=failure.retryable,
        first_seen=event.at,
        last_seen=event.at,
        episode=episode,
    )
    if recorded(entry, event.attempt_key):
        return entry
    attempts = entry.attempts + (1 if count_attempt else 0)
    next_retry = entry.next_retry_at
    if failure.retryable and count_attempt:
        next_retry = backoff.next_retry(attempts, event.at)
    return entry.model_copy(
        update={
            "error_type": str(event.error_type),
            "message": event.message,
            "retryable": failure.retryable,
            "last_seen": event.at,
            "attempts": attempts,
            "next_retry_at": next_retry if failure.retryable else None,
            "history": [*entry.history, event],
            "attempt_keys": [*entry.attempt_keys, event.attempt_key] if event.attempt_key else entry.attempt_keys,
            "episode": episode,
            "reason": reason,
            "listings": listings
            if listings is not None
            else (entry.listings if reason in WAITING_FOR_PRODUCT else None),
            "escalated": entry.escalated if entry.episode == episode else False,
            "escalated_at": entry.escalated_at if entry.episode == episode else None,
        }
    )


def _settled(snap: Snapshot, outcome: Outcome, *, settled_by: str, attempts: int, **fields: object) -> SaleRow:
    """The row of a settled episode: outcome and reason, no owner, nothing due (unless a page). A cart's row (keyed
    by its pack id) keeps saying which pack and sales it is."""
    cart = is_cart_row(snap.row)
    base = snap.row.model_copy(
        update={
            "episode": snap.next_episode,
            "outcome": outcome,
            "reason": None,
            "detail": None,
            "identifier_kind": IdentifierKind.PACK if cart else None,
            "sale_ids": snap.row.sale_ids if cart else None,
            "pack_id": snap.row.pack_id if cart else None,
            "blocking_sale_id": None,
            "attempts": attempts,
            "owner": None,
            "lease_until": None,
            "due_at": None,
            "settled_by": settled_by,
            "page_due": False,
        }
    )
    return base.model_copy(update=fields)


def is_cart_row(row: SaleRow) -> bool:
    """The row of a cart reprocessed whole: keyed by its pack id."""
    return row.pack_id is not None and row.pack_id == row.sale_id


def claim(
    snap: Snapshot,
    actor: Actor,
    *,
    execution: ExecutionRef,
    now: datetime,
    lease: timedelta,
    start_check: timedelta,
    request_key: str | None = None,
    job: JobWrite | None = None,
    failure: Failure | None = None,
    backoff: Backoff | None = None,
    cart_sale_ids: list[str] | None = None,
) -> Change:
    """The execution becomes the owner of the sale's episode (a new one unless the sale was pending). A cart's claim
    (``cart_sale_ids``: the row is keyed by the pack id) marks the row as the cart's."""
    episode = snap.claim_episode
    keys = remember_key(snap.row.request_keys, request_key, episode) if request_key else snap.row.request_keys
    cart: dict[str, object] = {}
    if cart_sale_ids is not None:
        cart = {"identifier_kind": IdentifierKind.PACK, "pack_id": snap.sale_id, "sale_ids": list(cart_sale_ids)}
    row = snap.row.model_copy(
        update={
            **cart,
            "episode": episode,
            "outcome": Outcome.IN_PROGRESS,
            "reason": None,
            "detail": None,
            "blocking_sale_id": None,
            "attempts": execution.start_attempts,
            "owner": execution.name,
            "lease_until": now + lease,
            "due_at": now + start_check,
            "settled_by": None,
            "page_due": False,
            "latest_execution": execution.model_copy(update={"episode": episode}),
            "request_keys": keys,
        }
    )
    entry, write = snap.entry, EntryWrite.KEEP
    if failure is not None:
        assert backoff is not None
        entry, write = with_failure(snap, failure, episode=episode, backoff=backoff), EntryWrite.PUT
    elif entry is not None and entry.escalated and episode != entry.episode:
        # A rerun is a new episode: the help desk may be paged again if it fails again.
        entry = entry.model_copy(update={"escalated": False, "escalated_at": None, "episode": episode})
        write = EntryWrite.PUT
    return Change(Transition.CLAIM, actor, row, entry, write, job)


def attach(snap: Snapshot, actor: Actor, *, request_key: str | None = None, job: JobWrite | None = None) -> Change:
    """A job's item (or a client's Idempotency-Key) joins the episode in progress."""
    keys = snap.row.request_keys
    if request_key:
        keys = remember_key(keys, request_key, snap.row.episode)
    return Change(Transition.ATTACH, actor, snap.row.model_copy(update={"request_keys": keys}), job=job)


def note_failure(snap: Snapshot, actor: Actor, *, failure: Failure, attempts: int, backoff: Backoff) -> Change | None:
    """The owner's attempt failed: the error list records it (nothing, if this attempt was recorded already)."""
    if recorded(snap.entry, failure.event.attempt_key):
        return None
    entry = with_failure(snap, failure, episode=snap.row.episode, backoff=backoff)
    row = snap.row.model_copy(update={"attempts": max(attempts, snap.row.attempts)})
    return Change(Transition.NOTE_FAILURE, actor, row, entry, EntryWrite.PUT)


def reflect(snap: Snapshot, actor: Actor, *, record: ReflectedSale, attempts: int, settled_by: str) -> Change:
    cart: dict[str, object] = {}
    if record.sale_ids is not None:  # a cart's record, keyed by its pack id
        cart = {"identifier_kind": IdentifierKind.PACK, "pack_id": record.pack_id, "sale_ids": record.sale_ids}
    row = _settled(snap, Outcome.REFLECTED, settled_by=settled_by, attempts=attempts, record=record, **cart)
    return Change(Transition.REFLECT, actor, row, None, EntryWrite.DELETE)


def block(
    snap: Snapshot, actor: Actor, *, blocking: Blocking, attempts: int, settled_by: str, event: ErrorEvent
) -> Change:
    row = _settled(
        snap,
        Outcome.NOT_REFLECTABLE,
        settled_by=settled_by,
        attempts=attempts,
        reason=blocking.reason,
        detail=blocking.detail,
        identifier_kind=blocking.identifier_kind,
        sale_ids=blocking.sale_ids,
        pack_id=blocking.pack_id,
        blocking_sale_id=blocking.blocking_sale_id,
    )
    if snap.entry is None and blocking.reason not in WAITING_FOR_PRODUCT | WAITING_FOR_RECONNECTION:
        return Change(Transition.BLOCK, actor, row)
    # The sale waits in the error list, not retryable, until the seller fixes what the reason names; for a product
    # reason the blocking listings are kept, so the sweep heals the sale when they are fixed; a sale of a connection
    # that needs reauthorization is retried by the sweep once the connection is active again.
    entry = with_failure(
        snap,
        Failure(event=event, retryable=False),
        episode=row.episode,
        backoff=Backoff(timedelta(0), timedelta(0)),
        count_attempt=False,
        reason=blocking.reason,
        listings=blocking.listings if blocking.reason in WAITING_FOR_PRODUCT else None,
    )
    return Change(Transition.BLOCK, actor, row, entry.model_copy(update={"escalated": False}), EntryWrite.PUT)


def escalate(
    snap: Snapshot,
    actor: Actor,
    *,
    reason: Reason,
    attempts: int,
    settled_by: str,
    now: datetime,
    page_retry: timedelta,
    failure: Failure | None,
    backoff: Backoff,
) -> Change:
    """Settle the episode as escalated, with the help desk's page due: sent after this write commits, and by the
    reaper at ``due_at`` if it could not be sent."""
    episode = snap.next_episode
    base = snap
    if failure is not None and not recorded(snap.entry, failure.event.attempt_key):
        entry = with_failure(snap, failure, episode=episode, backoff=backoff)
    elif snap.entry is not None:
        entry = snap.entry
    else:  # escalated without a recorded failure (an execution that died): the page still needs an entry
        event = ErrorEvent(at=now, error_type=ErrorType.IMPORT_FAILED, message=_REASON_TEXT.get(reason, reason.value))
        entry = with_failure(base, Failure(event=event, retryable=True), episode=episode, backoff=backoff)
    entry = entry.model_copy(update={"escalated": True, "escalated_at": now, "episode": episode})
    row = _settled(
        snap,
        Outcome.ESCALATED,
        settled_by=settled_by,
        attempts=attempts,
        reason=reason,
        detail=entry.message,
        page_due=True,
        due_at=now + page_retry,
    )
    return Change(Transition.ESCALATE, actor, row, entry, EntryWrite.PUT)


_REASON_TEXT = {
    Reason.EXECUTION_FAILED: "The relink execution ended without an outcome.",
    Reason.UNEXPECTED_ERROR: "An unexpected error stopped the recovery.",
}


def page_sent(snap: Snapshot, actor: Actor) -> Change:
    row = snap.row.model_copy(update={"page_due": False, "due_at": None})
    return Change(Transition.PAGE_SENT, actor, row)


def defer(
    snap: Snapshot, actor: Actor, *, job_id: str, failure: Failure, backoff: Backoff, item: str | None = None
) -> Change:
    """A sweep job's retry failed transiently: the sale waits for the next sweep, and so does the job's item."""
    episode = snap.next_episode
    entry = with_failure(snap, failure, episode=episode, backoff=backoff)
    row = snap.row.model_copy(
        update={
            "episode": episode,
            "outcome": Outcome.PENDING,
            "reason": None,
            "detail": None,
            "attempts": entry.attempts,
            "settled_by": None,
        }
    )
    job = JobWrite(
        job_id=job_id,
        attempts=entry.attempts,
        retry_at=entry.next_retry_at,
        deferred=True,
        detail=f"Still failing ({entry.error_type}); the error sweep retries it after its backoff.",
        item=item,
    )
    return Change(Transition.DEFER, actor, row, entry, EntryWrite.PUT, job)


def schedule_retry(snap: Snapshot, actor: Actor, *, until: datetime) -> Change:
    """The sweep claims a due entry for a retry: its next retry moves to ``until``, so no other sweep queues it."""
    assert snap.entry is not None
    episode = snap.next_episode
    row = snap.row.model_copy(
        update={"episode": episode, "outcome": Outcome.PENDING, "reason": None, "detail": None, "settled_by": None}
    )
    entry = snap.entry.model_copy(update={"next_retry_at": until, "episode": episode})
    return Change(Transition.SCHEDULE_RETRY, actor, row, entry, EntryWrite.PUT)


def renew(snap: Snapshot, actor: Actor, *, lease_until: datetime, due_at: datetime, status: str) -> Change:
    execution = snap.row.latest_execution
    updated = execution.model_copy(update={"status": status}) if execution is not None else None
    row = snap.row.model_copy(update={"lease_until": lease_until, "due_at": due_at, "latest_execution": updated})
    return Change(Transition.RENEW, actor, row)


def list_error(snap: Snapshot, actor: Actor, *, entry: ErrorEntry) -> Change:
    """The platform's own import of the sale failed: the sale is listed, waiting for a resync or the sweep (or,
    blocked for a reason the seller must fix, for the seller)."""
    episode = snap.next_episode
    blocked = not entry.retryable and entry.reason is not None
    row = snap.row.model_copy(
        update={
            "episode": episode,
            "outcome": Outcome.NOT_REFLECTABLE if blocked else Outcome.PENDING,
            "reason": entry.reason if blocked else None,
            "detail": entry.message if blocked else None,
            "attempts": entry.attempts,
            "settled_by": "platform" if blocked else None,
        }
    )
    return Change(Transition.LIST_ERROR, actor, row, entry.model_copy(update={"episode": episode}), EntryWrite.PUT)


def follow_cart(snap: Snapshot, actor: Actor, *, cart: SaleRow, settled_by: str) -> Change:
    """A sale of a cart takes the cart's settled outcome: the cart is reprocessed and stored whole under its pack id,
    so the sale keeps no record and no error entry of its own (the cart's entry is keyed by the pack)."""
    assert cart.outcome is not None and cart.outcome.terminal
    row = _settled(
        snap,
        cart.outcome,
        settled_by=settled_by,
        attempts=cart.attempts,
        reason=cart.reason,
        detail=cart.detail,
        identifier_kind=IdentifierKind.SALE,
        sale_ids=cart.sale_ids,
        pack_id=cart.sale_id,
        blocking_sale_id=cart.blocking_sale_id,
    )
    return Change(Transition.FOLLOW_CART, actor, row, None, EntryWrite.DELETE)
