"""The small interfaces the domain uses to reach its stores. DynamoDB implements them in ``dynamodb.py``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Generic, Protocol, TypeVar

from shared.models import (
    Connection,
    ErrorEntry,
    ErrorEvent,
    ExecutionRef,
    IdentifierKind,
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


class SaleStore(Protocol):
    def get(self, connection_id: str, sale_id: str) -> SaleState | None: ...

    def reflect(self, record: ReflectedSale, *, attempts: int = 1) -> bool:
        """Store the platform's copy of a sale. True if this call stored it, False if it was already there."""
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
    ) -> None:
        """Record a non-reflected outcome. Never overwrites a sale that is already reflected."""
        ...

    def set_execution(self, connection_id: str, sale_id: str, execution: ExecutionRef) -> None: ...


class ErrorStore(Protocol):
    def get(self, connection_id: str, sale_id: str) -> ErrorEntry | None: ...

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
    ) -> ErrorEntry:
        """Open or update the sale's entry: type, message, attempts and history. The same ``attempt_key`` twice
        (a retried Lambda) changes nothing the second time."""
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


class AliasStore(Protocol):
    """Identifiers that are not sale ids (tracking numbers) mapped to the sales the service saw them with."""

    def sale_ids_for(self, connection_id: str, alias: str) -> list[str]: ...

    def remember(self, connection_id: str, alias: str, kind: IdentifierKind, sale_ids: list[str]) -> None: ...
