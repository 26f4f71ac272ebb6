"""Loads a scenario's platform state (connections, tokens, product links, reflected sales, error list) into the
stores, through the same interfaces the product uses. The marketplace half of the scenario is the simulator's.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from devstack.simulator.scenario import Scenario
from shared.checks import check_products, listing_keys
from shared.importer import build_record
from shared.lifecycle import SaleLifecycle, moves
from shared.lifecycle.change import Decision
from shared.lifecycle.row import Snapshot
from shared.lifecycle.table import Actor, State
from shared.meli.models import MeliOrder, OAuthTokens
from shared.meli.tokens import SecretsManagerTokenStore
from shared.models import (
    Connection,
    ErrorEntry,
    ErrorEvent,
    ErrorType,
    ListingRef,
    ProductLink,
    Reason,
    ReflectedSale,
    Trigger,
)
from shared.recovery import WAITING_FOR_PRODUCT, Stores


def _retryable(error_type: str) -> bool:
    try:
        return ErrorType(error_type).retryable
    except ValueError:
        return True  # an unknown platform error type: let a retry tell


def _reason(error_type: str) -> Reason | None:
    try:
        return Reason(error_type)
    except ValueError:
        return None


def seed(
    scenario: Scenario,
    stores: Stores,
    lifecycle: SaleLifecycle,
    *,
    secrets_client: Any,
    secret_prefix: str,
    now: datetime | None = None,
) -> None:
    """The platform's state, written as the platform would: reflected sales and listed errors go through the sale
    lifecycle like every other write of per-sale state (actor ``platform``)."""
    now = now or datetime.now(UTC)
    tokens = SecretsManagerTokenStore(secrets_client, secret_prefix)
    for conn in scenario.connections:
        secret_id = tokens.secret_id(conn.connection_id)
        secrets_client.create_secret(Name=secret_id, SecretString="{}")
        tokens.write(
            conn.connection_id,
            OAuthTokens(
                access_token=conn.access_token,
                refresh_token=conn.refresh_token,
                expires_at=now + timedelta(seconds=conn.expires_in),
                # The ML user the OAuth exchange named (the platform stores it with the tokens).
                user_id=conn.token_user_id if conn.token_user_id is not None else conn.seller_id,
                version=0,
            ),
        )
        stores.connections.put(
            Connection(
                connection_id=conn.connection_id, seller_id=conn.seller_id, site_id=conn.site_id, secret_id=secret_id
            )
        )
    for product in scenario.products:
        stores.products.put(ProductLink.model_validate(product.model_dump()))

    orders = {str(order["id"]): MeliOrder.model_validate(order) for order in scenario.orders}
    for reflected in scenario.reflected_sales:
        order = orders.get(reflected.sale_id)
        if order is not None:
            links = stores.products.get_links(reflected.connection_id, listing_keys(order))
            _, lines = check_products(order, links)
            record = build_record(reflected.connection_id, order, lines, Trigger.SEED)
        else:
            record = ReflectedSale(
                connection_id=reflected.connection_id, sale_id=reflected.sale_id, imported_by=Trigger.SEED
            )
        _platform_write(
            lifecycle,
            record.connection_id,
            record.sale_id,
            lambda snap, r=record: moves.reflect(snap, Actor.PLATFORM, record=r, attempts=0, settled_by="platform"),
        )

    for error in scenario.sale_errors:
        retryable = error.retryable if error.retryable is not None else _retryable(error.error_type)
        reason = _reason(error.error_type)
        listings = _blocking_listings(stores, error.connection_id, orders.get(error.sale_id), reason)
        entry = ErrorEntry(
            connection_id=error.connection_id,
            sale_id=error.sale_id,
            error_type=error.error_type,
            message=error.message,
            retryable=retryable,
            attempts=error.attempts,
            first_seen=now,
            last_seen=now,
            history=[ErrorEvent(at=now, error_type=error.error_type, message=error.message, trigger=Trigger.SEED)],
            reason=reason if not retryable else None,
            listings=listings if not retryable else None,
        )
        _platform_write(
            lifecycle,
            error.connection_id,
            error.sale_id,
            lambda snap, e=entry: moves.list_error(snap, Actor.PLATFORM, entry=e),
        )


def _platform_write(lifecycle: SaleLifecycle, connection_id: str, sale_id: str, move: Any) -> None:
    """Write the platform's own state of a sale the service has not seen yet (a second listing of it is ignored)."""

    def decide(snap: Snapshot) -> Decision[None]:
        if snap.state is not State.NEVER_SEEN:
            return Decision(None)
        return Decision(None, move(snap))

    lifecycle.run(connection_id, sale_id, decide)


def _blocking_listings(
    stores: Stores, connection_id: str, order: MeliOrder | None, reason: Reason | None
) -> list[ListingRef] | None:
    """A listed sale blocked by its product keeps the listings that block it, as the service writes them: the error
    sweep heals it when they are fixed."""
    if order is None or reason not in WAITING_FOR_PRODUCT:
        return None
    _, lines = check_products(order, stores.products.get_links(connection_id, listing_keys(order)))
    return [ListingRef(item_id=line.item_id, variation_id=line.variation_id) for line in lines if line.reason]


def store_reconnected_tokens(store: SecretsManagerTokenStore, connection_id: str, access: str, refresh: str) -> None:
    """What the platform does when a seller authorises the application again: the new pair is stored as a newer
    version of the connection's secret (which moves a connection that needs reauthorization back to active)."""
    old = store.read(connection_id)
    update = {
        "access_token": access,
        "refresh_token": refresh,
        "expires_at": datetime.now(UTC) + timedelta(hours=6),
        "version": old.version + 1,
    }
    store.write(connection_id, old.model_copy(update=update))
