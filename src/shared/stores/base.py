"""The small interfaces the domain uses to reach its stores; DynamoDB implements them, one module per table."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from typing import Generic, Protocol, TypeVar

from shared.models import Connection, ErrorEntry, IdentifierKind, ProductLink

ListingKey = tuple[str, int | None]  # (item_id, variation_id)
T = TypeVar("T")


class StateWriteFailed(RuntimeError):
    """A write the store could not make after every try (throttling, transaction conflicts). The caller must fail,
    so that its SQS message or state machine task runs again, rather than report something it did not write. The
    state machine retries it by this name (statemachine/relink.asl.json)."""


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


class ErrorStore(Protocol):
    """The error list, read side (the sale lifecycle writes it together with the sale's state)."""

    def get(self, connection_id: str, sale_id: str) -> ErrorEntry | None: ...

    def get_many(self, connection_id: str, sale_ids: list[str]) -> dict[str, ErrorEntry]:
        """The error entries of many sales in one round trip (sales not listed are absent from the answer)."""
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

    def mark_needs_reauthorization(
        self, connection_id: str, *, token_version: int, cause: str, message: str, at: datetime
    ) -> bool:
        """Active -> needs_reauthorization (conditional: True for the one writer of this revocation)."""
        ...

    def mark_active(self, connection_id: str, *, token_version: int, at: datetime) -> bool:
        """needs_reauthorization -> active, when tokens newer than the refused ones are stored."""
        ...

    def claim_alert(self, connection_id: str) -> Connection | None:
        """Take the revocation's help-desk message if it is due (one taker)."""
        ...

    def restore_alert(self, connection_id: str) -> None: ...

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

    def remember_cart(self, connection_id: str, pack_id: str, sale_ids: list[str]) -> None:
        """Each sale of a cart points to its pack (a cart sale stands where its cart stands)."""
        ...

    def cart_of(self, connection_id: str, sale_id: str) -> tuple[str, list[str]] | None:
        """The pack of a cart sale the service has seen, and the cart's sale ids; None otherwise."""
        ...
