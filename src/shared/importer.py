"""Reflecting a sale: the platform's copy of an ML order, linked to its products.

The copy is written with a conditional write keyed by (connection, sale): whoever imports it and however often,
it is stored once (``SaleStore.reflect`` answers whether this call stored it).
"""

from __future__ import annotations

from shared.meli.models import MeliOrder
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
