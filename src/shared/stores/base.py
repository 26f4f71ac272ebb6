"""The small interfaces the domain uses to reach its stores. DynamoDB implements them in ``dynamodb.py``."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from shared.models import (
    Connection,
    ErrorEntry,
    ErrorEvent,
    ExecutionRef,
    IdentifierKind,
    ListingRef,
    Outcome,
    ProductLink,
    Reason,
    ReflectedSale,
    SaleState,
)

ListingKey = tuple[str, int | None]  # (item_id, variation_id)
T = TypeVar("T")


@dataclass(frozen=True)
class Page(Generic[T]):
    items: list[T]
    next_cursor: str | None


@dataclass(frozen=True)
class ReconcileCursor:
    """Where a connection's reconciliation stands: every order updated before ``watermark`` was fully paged, and
    the hour starting at ``watermark`` was paged up to ``offset``."""

    watermark: datetime | None
    offset: int = 0


class SaleStore(Protocol):
    def get(self, connection_id: str, sale_id: str) -> SaleState | None: ...

    def get_many(self, connection_id: str, sale_ids: list[str]) -> dict[str, SaleState]:
        """The states of many sales in one round trip (sales never seen are absent from the answer)."""
        ...

    def reflect(self, record: ReflectedSale, *, attempts: int = 1, row_absent: bool = False) -> bool:
        """Store the platform's copy of a sale. True if this call stored it, False if it was already there.
        ``row_absent``: the caller read no state for the sale (a cheaper write is tried first)."""
        ...

    def set_outcome(
        self,
        connection_id: str,
        sale_id: str,
        outcome: Outcome,
        *,
        reason: Reason | None = None,
        detail: str | None = None,
        attempts: int | None = None,
        identifier_kind: IdentifierKind | None = None,
        sale_ids: list[str] | None = None,
        pack_id: str | None = None,
    ) -> None:
        """Record a non-reflected outcome. Never overwrites a sale that is already reflected."""
        ...

    def set_execution(self, connection_id: str, sale_id: str, execution: ExecutionRef) -> None: ...

    def claim_pending(self, connection_id: str, sale_id: str, *, owner: str, stale_before: datetime) -> bool:
        """Mark a sale ``pending`` for a reconciliation run, once: only a sale the service never saw, one whose
        pending / in-progress mark is older than ``stale_before``, or one that was not paid when last checked.
        False when someone else already owns it (or it is reflected or settled)."""
        ...

    def release_pending(self, connection_id: str, sale_id: str, *, owner: str) -> None:
        """Undo ``claim_pending`` (the sale could not be queued): the next run may claim it again."""
        ...


class ErrorStore(Protocol):
    def get(self, connection_id: str, sale_id: str) -> ErrorEntry | None: ...

    def get_many(self, connection_id: str, sale_ids: list[str]) -> dict[str, ErrorEntry]:
        """The error entries of many sales in one round trip (sales not listed are absent from the answer)."""
        ...

    def add_waiting_job(self, connection_id: str, sale_id: str, job_id: str) -> bool:
        """Note that ``job_id`` waits for this sale's outcome. False if the sale is no longer in the list."""
        ...

    def put_if_absent(self, entry: ErrorEntry) -> bool: ...

    def record_failure(
        self,
        connection_id: str,
        sale_id: str,
        event: ErrorEvent,
        *,
        retryable: bool,
        reason: Reason | None = None,
        count_attempt: bool = True,
        listings: list[ListingRef] | None = None,
    ) -> ErrorEntry:
        """Open or update the sale's entry: type, message, attempts and history. The same ``attempt_key`` twice
        (a retried Lambda) changes nothing the second time. A counted retryable failure sets ``next_retry_at``
        (exponential backoff from the attempts); ``listings`` records the listings that block the sale."""
        ...

    def claim_retry(self, connection_id: str, sale_id: str, *, now: datetime, until: datetime) -> bool:
        """Claim a due entry for an automatic retry: ``next_retry_at`` absent or <= ``now`` moves to ``until``.
        False if it is not due (another sweep claimed it, or its backoff has not elapsed)."""
        ...

    def resolve(self, connection_id: str, sale_id: str) -> ErrorEntry | None:
        """Remove the sale from the error list (it was reflected). Returns what was removed."""
        ...

    def claim_escalation(self, connection_id: str, sale_id: str, episode: str) -> bool:
        """Mark the entry escalated for this failure episode. False if that episode was escalated already."""
        ...

    def release_escalation(self, connection_id: str, sale_id: str, episode: str) -> None:
        """Undo a claim whose page could not be sent, so the next try pages."""
        ...

    def list(
        self, connection_id: str, *, error_type: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[ErrorEntry]: ...


class ProductStore(Protocol):
    def get_links(self, connection_id: str, keys: list[ListingKey]) -> dict[ListingKey, ProductLink]:
        """Links for the given listings, exact (item, variation) key or the item-level link (variation None)."""
        ...

    def put(self, link: ProductLink) -> None: ...


class ConnectionStore(Protocol):
    def get(self, connection_id: str) -> Connection | None: ...

    def put(self, connection: Connection) -> None: ...

    def acquire_refresh_lock(self, connection_id: str, owner: str, ttl_seconds: int) -> bool:
        """Take the per-connection token-refresh lock (a lease). False if someone else holds a live lease."""
        ...

    def release_refresh_lock(self, connection_id: str, owner: str) -> None: ...

    def list_ids(self) -> list[str]:
        """Every connection id (the schedules visit them all)."""
        ...

    def acquire_reconcile_lease(self, connection_id: str, owner: str, ttl_seconds: int) -> ReconcileCursor | None:
        """Take the per-connection reconciliation lease; returns the stored cursor, or None if a live lease is
        someone else's (another run is reconciling this connection)."""
        ...

    def advance_reconcile_cursor(self, connection_id: str, owner: str, cursor: ReconcileCursor) -> bool:
        """Store the cursor if ``owner`` still holds the lease and it does not move backwards."""
        ...

    def release_reconcile_lease(self, connection_id: str, owner: str) -> None: ...


class AliasStore(Protocol):
    """Identifiers that are not sale ids (tracking numbers) mapped to the sales the service saw them with."""

    def sale_ids_for(self, connection_id: str, alias: str) -> list[str]: ...

    def remember(self, connection_id: str, alias: str, kind: IdentifierKind, sale_ids: list[str]) -> None: ...
