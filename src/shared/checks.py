"""The help article's checks (DESIGN §1), as pure functions over ML's order and the platform's product links.

Seed step 1: every line's product exists, is active and is synced in the connection where the sale happened.
Seed step 2: the sale is not cancelled and its payment is verified. Cart sales follow another procedure: here, the
whole cart is checked (the pack released, every sale of it passing every check) and reflected as one.
"""

from __future__ import annotations

from shared.meli.models import MeliOrder, MeliPack
from shared.models import Check, ProductLineCheck, ProductLink, Reason
from shared.stores.base import ListingKey

CANCELLED_STATUSES = frozenset({"cancelled", "invalid", "pending_cancel"})
# partially_refunded: the money was credited, then part of it returned; the sale happened and is reflected.
PAID_STATUSES = frozenset({"paid", "partially_refunded"})
APPROVED_PAYMENT = "approved"
SPLIT_CANCEL_CODE = "pack_splitted"
# Pack statuses (reference/meli-api.md §3): released (paid), error (a recoverable failure: ML may still release it),
# pending_cancel (an unrecoverable error: being cancelled), cancelled (status_detail "splitted" after a split).
CANCELLED_PACK_STATUSES = frozenset({"cancelled", "pending_cancel"})
PACK_IN_ERROR = "error"
PACK_RELEASED = "released"


def listing_keys(order: MeliOrder) -> list[ListingKey]:
    """Each line's listing, and for a kit component's line also the kit listing it was sold through."""
    keys: list[ListingKey] = []
    for line in order.order_items:
        keys.append((line.item.id, line.item.variation_id))
        if line.parent_item_id:
            keys.append((line.parent_item_id, None))
    return list(dict.fromkeys(keys))


def is_kit_component(order: MeliOrder) -> bool:
    return "bundle_component" in order.tags


def is_split(order: MeliOrder) -> bool:
    """ML split the order's pack (shipment split): the order is cancelled with ``cancel_detail.code: pack_splitted``
    and new orders replace it (reference/meli-api.md §1.2 "Consideraciones post-Split")."""
    return order.cancel_detail is not None and order.cancel_detail.code == SPLIT_CANCEL_CODE


def check_not_cancelled(order: MeliOrder) -> Check:
    if is_split(order):
        return Check(
            name="sale_not_cancelled",
            ok=False,
            detail=(
                f"Sale status is {order.status} (pack_splitted): Mercado Libre split the sale's shipment and new "
                "sales replace this one."
            ),
            reason=Reason.SALE_SUPERSEDED_BY_SPLIT,
        )
    if order.status in CANCELLED_STATUSES or order.cancel_detail is not None:
        why = order.status
        if order.cancel_detail is not None:
            parts = [order.cancel_detail.group, order.cancel_detail.code, order.cancel_detail.description]
            why += " (" + ", ".join(p for p in parts if p) + ")"
        return Check(name="sale_not_cancelled", ok=False, detail=f"Sale status is {why}.", reason=Reason.SALE_CANCELLED)
    if "fraud_risk_detected" in order.tags:
        return Check(
            name="sale_not_cancelled",
            ok=False,
            detail="Mercado Libre flagged the sale as fraud risk (tag fraud_risk_detected); it must be cancelled.",
            reason=Reason.SALE_CANCELLED,
        )
    if "unfulfilled" in order.tags:
        # The refund-to-account flow of a cancelled sale: the buyer gets account money back, the order stays paid
        # (never cancelled; its payment is tagged refund_account_money) and is never fulfilled (meli-api.md §13).
        return Check(
            name="sale_not_cancelled",
            ok=False,
            detail=(
                f"Sale status is {order.status} but tagged unfulfilled: the sale was cancelled and Mercado Libre "
                "refunded the buyer in account money; it will never be fulfilled."
            ),
            reason=Reason.SALE_CANCELLED,
        )
    return Check(name="sale_not_cancelled", ok=True, detail=f"Sale status is {order.status}.")


def check_payment(order: MeliOrder) -> Check:
    """Only the order's status says it is paid. ``confirmed`` is ML's initial status "even if it is still unpaid",
    and a sale the seller marked "not completed" shows ``confirmed`` too while ML's UI says cancelled and the payment
    is returned (reference/meli-api.md §1.2, §13): an approved payment on a confirmed order proves nothing."""
    if order.status in PAID_STATUSES:
        return Check(name="payment_verified", ok=True, detail=f"Sale status is {order.status}.")
    if order.status == "confirmed" and any(p.status == APPROVED_PAYMENT for p in order.payments):
        return Check(
            name="payment_verified",
            ok=False,
            detail=(
                "Sale status is confirmed, not paid, although a payment shows approved: Mercado Libre has not "
                "credited it to the sale, or the seller marked the sale as not completed (Mercado Libre then shows it "
                "cancelled and returns the payment)."
            ),
            reason=Reason.PAYMENT_NOT_VERIFIED,
        )
    statuses = ", ".join(sorted({p.status or "unknown" for p in order.payments})) or "no payment"
    return Check(
        name="payment_verified",
        ok=False,
        detail=f"Sale status is {order.status}; payments: {statuses}.",
        reason=Reason.PAYMENT_NOT_VERIFIED,
    )


def check_pack(order: MeliOrder, pack: MeliPack | None) -> Check | None:
    """The pack's own status: a cancelled (or pending_cancel) pack cancels its sales, whatever the order shows. None
    when there is no pack to look at (single sale, or a pack ML does not show this seller)."""
    if pack is None:
        return None
    if pack.status in CANCELLED_PACK_STATUSES:
        detail = f"Pack {pack.id} status is {pack.status}"
        if pack.status_detail:
            detail += f" ({pack.status_detail})"
        return Check(name="pack_not_cancelled", ok=False, detail=detail + ".", reason=Reason.PACK_CANCELLED)
    return Check(name="pack_not_cancelled", ok=True, detail=f"Pack {pack.id} status is {pack.status or 'unknown'}.")


def cart_detail(order: MeliOrder, pack: MeliPack | None, kit_order_ids: set[str] | None = None) -> str | None:
    """Why the sale is part of a cart, or None when it is not. A cart is a pack with more than one sale. Every order
    has a pack id nowadays, so only the pack tells.

    A kit sold creates one order per component, all in one pack (tag ``bundle_component``; GET /orders/{id}/bundle
    lists them as ``kit_orders``). Only those sibling orders are exempt: a pack that also holds other orders is a
    cart (reference/meli-api.md §13, kits)."""
    if pack is None or len(pack.order_ids) <= 1:
        return None
    siblings = (kit_order_ids or set()) | {str(order.id)} if is_kit_component(order) else {str(order.id)}
    others = [i for i in pack.order_ids if i not in siblings]
    if not others:
        return None
    kit_orders = len(siblings & set(pack.order_ids)) if is_kit_component(order) else 1
    besides = f"besides this kit's {kit_orders} orders" if kit_orders > 1 else "besides this one"
    return (
        f"Cart sale: pack {pack.id} holds {len(pack.order_ids)} sales ({', '.join(others)} {besides}); "
        "the whole cart is reprocessed as one."
    )


def check_not_cart(order: MeliOrder, pack: MeliPack | None, kit_order_ids: set[str] | None = None) -> Check:
    """A single sale (not part of a cart). A cart sale's report carries the cart's checks instead (``cart``)."""
    if pack is not None and len(pack.order_ids) > 1 and is_kit_component(order):
        detail = f"Kit component in pack {pack.id}: the pack holds only this kit's orders."
    else:
        detail = "Single sale." if order.pack_id is None else f"Pack {order.pack_id} holds only this sale."
    return Check(name="not_cart_sale", ok=True, detail=detail)


def check_pack_released(pack: MeliPack) -> Check:
    """A cart is reflected only from a released pack (ML releases it once its orders and shipment are paid):
    cancelled or pending_cancel (an unrecoverable error) never will be; filling, filled or error not yet."""
    detail = f"Pack {pack.id} status is {pack.status or 'unknown'}"
    if pack.status_detail:
        detail += f" ({pack.status_detail})"
    if pack.status in CANCELLED_PACK_STATUSES:
        return Check(name="pack_released", ok=False, detail=detail + ".", reason=Reason.PACK_CANCELLED)
    if pack.status != PACK_RELEASED:
        return Check(
            name="pack_released",
            ok=False,
            detail=detail + ": Mercado Libre has not released it (its sales or shipment are not all paid).",
            reason=Reason.PACK_NOT_RELEASED,
        )
    return Check(name="pack_released", ok=True, detail=detail + ".")


def check_products(order: MeliOrder, links: dict[ListingKey, ProductLink]) -> tuple[Check, list[ProductLineCheck]]:
    lines: list[ProductLineCheck] = []
    for line in order.order_items:
        link = links.get((line.item.id, line.item.variation_id))
        if link is None and line.parent_item_id:
            # A kit component's line: the platform's product may be linked to the kit listing instead.
            link = links.get((line.parent_item_id, None))
        reason: Reason | None = None
        if link is None:
            reason = Reason.PRODUCT_NOT_FOUND
        elif not link.active:
            reason = Reason.PRODUCT_INACTIVE
        elif not link.synced:
            reason = Reason.PRODUCT_NOT_SYNCED
        lines.append(
            ProductLineCheck(
                item_id=line.item.id,
                variation_id=line.item.variation_id,
                sku=(link.sku if link else None) or line.item.seller_sku,
                linked=link is not None,
                active=bool(link and link.active),
                synced=bool(link and link.synced),
                reason=reason,
            )
        )
    if not lines:
        return Check(name="products", ok=False, detail="The sale has no lines.", reason=Reason.PRODUCT_NOT_FOUND), lines
    # Report the most fundamental problem first: a missing product before an inactive one before an unsynced one.
    for reason in (Reason.PRODUCT_NOT_FOUND, Reason.PRODUCT_INACTIVE, Reason.PRODUCT_NOT_SYNCED):
        bad = [line for line in lines if line.reason is reason]
        if bad:
            listings = ", ".join(_listing(line) for line in bad)
            words = {
                Reason.PRODUCT_NOT_FOUND: "has no product linked in this connection",
                Reason.PRODUCT_INACTIVE: "is linked to an inactive product",
                Reason.PRODUCT_NOT_SYNCED: "is linked to a product not synced with this connection",
            }[reason]
            return Check(name="products", ok=False, detail=f"Listing {listings} {words}.", reason=reason), lines
    return Check(name="products", ok=True, detail=f"{len(lines)} line(s) linked to active, synced products."), lines


def _listing(line: ProductLineCheck) -> str:
    return line.item_id if line.variation_id is None else f"{line.item_id} (variation {line.variation_id})"


def first_blocking(checks: list[Check]) -> Check | None:
    return next((c for c in checks if not c.ok), None)
