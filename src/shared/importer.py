"""Reflecting a sale: the platform's copy of an ML order, linked to its products.

The copy is written with a conditional write keyed by (connection, sale): whoever imports it and however often,
it is stored once (``SaleStore.reflect`` answers whether this call stored it). A cart is one record keyed by
its pack id (``build_cart_record``), written by one conditional write on the cart's row: never half, never twice.
"""

from __future__ import annotations

from shared.meli.models import MeliOrder, MeliPack
from shared.models import ProductLineCheck, ReflectedSale, SaleLine, Trigger


def build_record(
    connection_id: str,
    order: MeliOrder,
    lines: list[ProductLineCheck],
    trigger: Trigger,
    import_key: str | None = None,
) -> ReflectedSale:
    sku_by_listing = {(line.item_id, line.variation_id): line.sku for line in lines}
    return ReflectedSale(
        connection_id=connection_id,
        sale_id=str(order.id),
        seller_id=order.seller.id,
        status=order.status,
        date_created=order.date_created,
        total_amount=order.total_amount,
        currency_id=order.currency_id,
        buyer_id=order.buyer.id if order.buyer else None,
        pack_id=str(order.pack_id) if order.pack_id else None,
        shipment_id=str(order.shipping.id) if order.shipping and order.shipping.id else None,
        lines=[
            SaleLine(
                item_id=item.item.id,
                variation_id=item.item.variation_id,
                title=item.item.title,
                sku=sku_by_listing.get((item.item.id, item.item.variation_id)) or item.item.seller_sku,
                quantity=item.quantity,
                unit_price=item.unit_price,
                currency_id=item.currency_id or order.currency_id,
            )
            for item in order.order_items
        ],
        imported_by=trigger,
        import_key=import_key,
    )


def build_cart_record(
    connection_id: str,
    pack: MeliPack,
    orders: list[MeliOrder],
    lines: dict[str, list[ProductLineCheck]],
    trigger: Trigger,
    import_key: str | None = None,
) -> ReflectedSale:
    """A cart as one platform sale keyed by its pack id, holding every sale of this seller in the pack; the shipment
    is the pack's (one shipment for the whole cart, reference/meli-api.md §3)."""
    singles = [build_record(connection_id, o, lines.get(str(o.id), []), trigger, import_key) for o in orders]
    first = orders[0]
    totals = [o.total_amount for o in orders]
    shipment = pack.shipment.id if pack.shipment and pack.shipment.id else None
    buyer = pack.buyer.id if pack.buyer and pack.buyer.id else (first.buyer.id if first.buyer else None)
    return ReflectedSale(
        connection_id=connection_id,
        sale_id=str(pack.id),
        seller_id=first.seller.id,
        status=pack.status,
        date_created=min((o.date_created for o in orders if o.date_created), default=None),
        total_amount=None if any(t is None for t in totals) else round(sum(t for t in totals if t is not None), 2),
        currency_id=first.currency_id,
        buyer_id=buyer,
        pack_id=str(pack.id),
        sale_ids=[str(o.id) for o in orders],
        shipment_id=str(shipment) if shipment else singles[0].shipment_id,
        lines=[line.model_copy(update={"sale_id": single.sale_id}) for single in singles for line in single.lines],
        imported_by=trigger,
        import_key=import_key,
    )
