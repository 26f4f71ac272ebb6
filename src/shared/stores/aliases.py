"""Identifiers that are not sale ids (tracking numbers) mapped to the sales the service saw them with: ML has no
look-up by tracking number, so this is how a later request can be answered. Also each cart sale's pack, once the
service has read the cart: a cart sale's state is its cart's, kept on the row keyed by the pack id."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

from shared.models import IdentifierKind


class DynamoAliasStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    @staticmethod
    def _alias(alias: str) -> str:
        return alias.strip().upper()

    def sale_ids_for(self, connection_id: str, alias: str) -> list[str]:
        item = self._table.get_item(Key={"connection_id": connection_id, "alias": self._alias(alias)})
        return [str(s) for s in item.get("Item", {}).get("sale_ids", [])]

    def remember(self, connection_id: str, alias: str, kind: IdentifierKind, sale_ids: list[str]) -> None:
        self._table.put_item(
            Item={
                "connection_id": connection_id,
                "alias": self._alias(alias),
                "kind": kind.value,
                "sale_ids": sorted(set(sale_ids)),
                "updated_at": datetime.now(UTC).isoformat(),
            }
        )

    def remember_cart(self, connection_id: str, pack_id: str, sale_ids: list[str]) -> None:
        if not sale_ids or self.cart_of(connection_id, sale_ids[-1]) == (pack_id, list(sale_ids)):
            return  # known already (its last sale points to it): one read instead of a write per sale
        at = datetime.now(UTC).isoformat()
        with self._table.batch_writer() as batch:
            for sale_id in sale_ids:
                batch.put_item(
                    Item={
                        "connection_id": connection_id,
                        "alias": _cart_key(sale_id),
                        "kind": "cart_sale",
                        "pack_id": pack_id,
                        "sale_ids": list(sale_ids),
                        "updated_at": at,
                    }
                )

    def cart_of(self, connection_id: str, sale_id: str) -> tuple[str, list[str]] | None:
        item = self._table.get_item(Key={"connection_id": connection_id, "alias": _cart_key(sale_id)}).get("Item")
        if not item:
            return None
        return str(item["pack_id"]), [str(s) for s in item.get("sale_ids", [])]


def _cart_key(sale_id: str) -> str:
    return f"CART-SALE#{sale_id}"
