"""Identifiers that are not sale ids (tracking numbers) mapped to the sales the service saw them with: ML has no
look-up by tracking number, so this is how a later request can be answered."""

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
