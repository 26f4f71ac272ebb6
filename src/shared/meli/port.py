"""What the domain needs from Mercado Libre. The httpx client implements it; tests use the simulated ML over HTTP."""

from __future__ import annotations

from datetime import datetime
from typing import Protocol

from shared.meli.models import (
    MeliOrder,
    MeliOrderBundles,
    MeliPack,
    MeliShipment,
    MeliShipmentItems,
    MissedFeedsPage,
    OrderSearchPage,
)


class MarketplaceClient(Protocol):
    """A client bound to one connection (one seller's tokens)."""

    def get_order(self, order_id: str) -> MeliOrder:
        """GET /orders/{id}. Raises MeliNotFound, MeliTransientError subclasses, MeliForbidden, ..."""
        ...

    def get_pack(self, pack_id: str) -> MeliPack:
        """GET /packs/{id}."""
        ...

    def get_shipment(self, shipment_id: str) -> MeliShipment:
        """GET /shipments/{id} (with ``x-format-new: true``)."""
        ...

    def get_shipment_items(self, shipment_id: str) -> MeliShipmentItems:
        """GET /shipments/{id}/items: the shipment's lines with their order ids (this seller's only)."""
        ...

    def get_order_bundles(self, order_id: str) -> MeliOrderBundles:
        """GET /orders/{id}/bundle: the kit sale a kit component's order belongs to, with all its orders."""
        ...

    def search_orders(
        self,
        *,
        seller_id: int,
        status: str | None = None,
        updated_from: datetime | None = None,
        updated_to: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> OrderSearchPage:
        """GET /orders/search?seller=..&order.status=..&order.date_last_updated.from/.to (hour granularity)."""
        ...

    def missed_feeds(self, *, app_id: int, topic: str, offset: int = 0, limit: int = 10) -> MissedFeedsPage:
        """GET /missed_feeds?app_id=..&topic=..&offset=..&limit=.. (ML's default page is 10)."""
        ...


class MarketplaceClientFactory(Protocol):
    def for_connection(self, connection_id: str) -> MarketplaceClient: ...
