"""Loads a scenario's platform state (connections, tokens, product links, reflected sales, error list) into the
stores, through the same interfaces the product uses. The marketplace half of the scenario is the simulator's.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from typing import Any

from devstack.simulator.scenario import Scenario
from shared.checks import check_products, listing_keys
from shared.importer import build_record
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
    *,
    secrets_client: Any,
    secret_prefix: str,
    now: datetime | None = None,
) -> None:
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
                user_id=conn.seller_id,
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
        stores.sales.reflect(record, attempts=0)

    for error in scenario.sale_errors:
        retryable = error.retryable if error.retryable is not None else _retryable(error.error_type)
        reason = _reason(error.error_type)
        listings = _blocking_listings(stores, error.connection_id, orders.get(error.sale_id), reason)
        stores.errors.put_if_absent(
            ErrorEntry(
                connection_id=error.connection_id,
                sale_id=error.sale_id,
                error_type=error.error_type,
                message=error.message,
                retryable=retryable,
                attempts=error.attempts,
                first_seen=now,
                last_seen=now,
                history=[ErrorEvent(at=now, error_type=error.error_type, message=error.message, trigger=Trigger.SEED)],
                episode=uuid.uuid4().hex,
                reason=reason if not retryable else None,
                listings=listings if not retryable else None,
            )
        )


def _blocking_listings(
    stores: Stores, connection_id: str, order: MeliOrder | None, reason: Reason | None
) -> list[ListingRef] | None:
    """A listed sale blocked by its product keeps the listings that block it, as the service writes them: the error
    sweep heals it when they are fixed."""
    if order is None or reason not in WAITING_FOR_PRODUCT:
        return None
    _, lines = check_products(order, stores.products.get_links(connection_id, listing_keys(order)))
    return [ListingRef(item_id=line.item_id, variation_id=line.variation_id) for line in lines if line.reason]
