"""The parts of Mercado Libre's payloads the service reads (reference/meli-api.md §1-§4, §7).

Every model allows extra fields: ML adds fields freely and a payload copied from its documentation must parse.
Ids arrive as JSON numbers; they are kept as ``int`` here and turned into strings at the domain boundary.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, RootModel


class MeliModel(BaseModel):
    model_config = ConfigDict(extra="allow", defer_build=True)


class MeliRef(MeliModel):
    id: int | None = None


class MeliItem(MeliModel):
    id: str
    title: str | None = None
    variation_id: int | None = None
    seller_sku: str | None = None
    seller_custom_field: str | None = None


class MeliParentItem(MeliModel):
    id: str | None = None  # the kit listing's item id
    user_product_id: str | None = None


class MeliLineBundle(MeliModel):
    """``order_items[].bundle`` of a kit component's order: the kit listing it was sold through (kits-virtuales)."""

    parent_item: MeliParentItem | None = None


class MeliOrderItem(MeliModel):
    item: MeliItem
    quantity: int = 1
    unit_price: float | None = None
    currency_id: str | None = None
    bundle: MeliLineBundle | None = None

    @property
    def parent_item_id(self) -> str | None:
        """The kit listing this line was sold through, when it is a kit component."""
        return self.bundle.parent_item.id if self.bundle and self.bundle.parent_item else None


class MeliPayment(MeliModel):
    id: int | None = None
    status: str | None = None
    status_detail: str | None = None
    transaction_amount: float | None = None
    total_paid_amount: float | None = None
    date_approved: str | None = None


class MeliCancelDetail(MeliModel):
    group: str | None = None
    code: str | None = None
    description: str | None = None
    requested_by: str | None = None


class MeliOrder(MeliModel):
    id: int
    status: str
    status_detail: Any = None
    date_created: str | None = None
    date_closed: str | None = None
    last_updated: str | None = None
    pack_id: int | None = None
    seller: MeliRef = Field(default_factory=MeliRef)
    buyer: MeliRef | None = None
    order_items: list[MeliOrderItem] = Field(default_factory=list)
    payments: list[MeliPayment] = Field(default_factory=list)
    shipping: MeliRef | None = None
    tags: list[str] = Field(default_factory=list)
    total_amount: float | None = None
    paid_amount: float | None = None
    currency_id: str | None = None
    cancel_detail: MeliCancelDetail | None = None
    # Sections ML could not fetch (HTTP 206 + X-Content-Missing); filled by the client, not by ML's body.
    missing_sections: list[str] = Field(default_factory=list)


class MeliPack(MeliModel):
    id: int
    status: str | None = None
    status_detail: Any = None
    orders: list[MeliRef] = Field(default_factory=list)
    shipment: MeliRef | None = None
    buyer: MeliRef | None = None

    @property
    def order_ids(self) -> list[str]:
        return [str(o.id) for o in self.orders if o.id is not None]


class MeliKitOrder(MeliModel):
    order_id: int | None = None
    item_id: str | None = None
    variation_id: int | None = None
    pack_id: int | None = None
    shipment_id: int | None = None
    parent_item_id: str | None = None


class MeliBundle(MeliModel):
    pack_id: int | None = None
    shipment_id: int | None = None
    kit_orders: list[MeliKitOrder] = Field(default_factory=list)


class MeliOrderBundles(MeliModel):
    """GET /orders/{id}/bundle: the orders of the same kit sale as this component order (kits-virtuales)."""

    bundles: list[MeliBundle] = Field(default_factory=list)

    def kit_order_ids(self) -> set[str]:
        return {str(k.order_id) for b in self.bundles for k in b.kit_orders if k.order_id is not None}


class MeliLogistic(MeliModel):
    mode: str | None = None  # me1, me2, custom, not_specified
    type: str | None = None  # drop_off, xd_drop_off, cross_docking, fulfillment, self_service, ...
    direction: str | None = None


class MeliShipment(MeliModel):
    id: int
    status: str | None = None
    substatus: str | None = None
    tracking_number: str | None = None
    order_id: int | None = None
    # Present in current payloads for pack shipments; older ones only carry order_id.
    pack_id: int | None = None
    logistic: MeliLogistic | None = None

    @property
    def logistic_type(self) -> str | None:
        return self.logistic.type if self.logistic else None


class MeliShipmentItem(MeliModel):
    """One line of GET /shipments/{id}/items: each seller sees only its own lines (reference/meli-api.md §4)."""

    item_id: str | None = None
    quantity: int | None = None
    variation_id: int | None = None
    order_id: int | None = None
    sender_id: int | None = None


class MeliShipmentItems(RootModel[list[MeliShipmentItem]]):
    model_config = ConfigDict(defer_build=True)

    def order_ids(self) -> list[str]:
        """The shipment's orders, each once, in the order ML lists them."""
        return list(dict.fromkeys(str(i.order_id) for i in self.root if i.order_id is not None))


class MeliPaging(MeliModel):
    total: int = 0
    offset: int = 0
    limit: int = 50


class OrderSearchPage(MeliModel):
    results: list[MeliOrder] = Field(default_factory=list)
    paging: MeliPaging = Field(default_factory=MeliPaging)


class MissedFeedsPage(MeliModel):
    """GET /missed_feeds: the notifications ML could not deliver (eight tries in an hour), kept two days (§8). Each
    message is ML's notification plus ``request`` / ``response`` of its last try; the caller validates each."""

    messages: list[dict[str, Any]] = Field(default_factory=list)


class OAuthTokens(BaseModel):
    """A connection's OAuth pair as stored in Secrets Manager. Never logged: repr hides the secrets."""

    model_config = ConfigDict(extra="ignore", defer_build=True)

    access_token: str = Field(repr=False)
    refresh_token: str = Field(repr=False)
    expires_at: datetime
    user_id: int | None = None
    # Bumped on every refresh; lets a waiter see that someone else refreshed while it queued.
    version: int = 0

    @classmethod
    def from_oauth_response(cls, body: dict[str, Any], *, version: int, now: datetime | None = None) -> OAuthTokens:
        now = now or datetime.now(UTC)
        return cls(
            access_token=body["access_token"],
            refresh_token=body["refresh_token"],
            expires_at=now + timedelta(seconds=int(body.get("expires_in", 21600))),
            user_id=body.get("user_id"),
            version=version,
        )

    def expired(self, *, now: datetime | None = None, margin_seconds: int = 60) -> bool:
        now = now or datetime.now(UTC)
        return now >= self.expires_at - timedelta(seconds=margin_seconds)
