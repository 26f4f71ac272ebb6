"""The error list ("sales with errors", seed step 3): one entry per listed sale, read here, written only by the sale
lifecycle (``shared.lifecycle``), which moves the entry together with the sale's state."""

from __future__ import annotations

from typing import Any

from shared.models import ErrorEntry
from shared.stores.base import Page
from shared.stores.dynamo import (
    InvalidCursor,
    decode_cursor,
    encode_cursor,
    from_dynamo,
    get_sale_row,
    iso,
    key_condition,
    sale_rows,
    to_dynamo,
)

HISTORY_KEPT = 50  # newest events of an entry's history; older ones are summarised by the counters
ATTEMPT_KEYS_KEPT = 20  # newest attempt keys: enough to recognise a retried write of a recent attempt


def entry_item(entry: ErrorEntry) -> dict[str, Any]:
    """The stored shape of an entry: bounded history and keys, the type index's key, comparable retry time."""
    data = entry.model_dump(mode="json", exclude_none=True)
    data["history"] = data.get("history", [])[-HISTORY_KEPT:]
    data["attempt_keys"] = entry.attempt_keys[-ATTEMPT_KEYS_KEPT:]
    data["error_type_sale_id"] = f"{entry.error_type}#{entry.sale_id}"
    if entry.next_retry_at is not None:
        data["next_retry_at"] = iso(entry.next_retry_at)  # compared as a string by the sweep
    item: dict[str, Any] = to_dynamo(data)
    return item


def entry_from_item(item: dict[str, Any]) -> ErrorEntry:
    data = from_dynamo(item)
    data.pop("error_type_sale_id", None)
    return ErrorEntry.model_validate(data)


class DynamoErrorStore:
    def __init__(self, table: Any, *, index_name: str = "ErrorTypeIndex") -> None:
        self._table = table
        self._index = index_name

    @property
    def table(self) -> Any:
        return self._table

    def get(self, connection_id: str, sale_id: str) -> ErrorEntry | None:
        item = get_sale_row(self._table, connection_id, sale_id)
        return entry_from_item(item) if item is not None else None

    def get_many(self, connection_id: str, sale_ids: list[str]) -> dict[str, ErrorEntry]:
        return {e.sale_id: e for e in map(entry_from_item, sale_rows(self._table, connection_id, sale_ids))}

    def list(
        self, connection_id: str, *, error_type: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[ErrorEntry]:
        kwargs: dict[str, Any] = {"Limit": limit}
        if error_type:
            kwargs["IndexName"] = self._index
            kwargs |= key_condition(
                "connection_id", connection_id, "error_type_sale_id", "begins_with", f"{error_type}#"
            )
            start = decode_cursor(cursor, required_keys={"connection_id", "sale_id", "error_type_sale_id"})
        else:
            kwargs |= key_condition("connection_id", connection_id)
            start = decode_cursor(cursor, required_keys={"connection_id", "sale_id"})
        if start:
            if start["connection_id"] != connection_id:
                raise InvalidCursor("the cursor belongs to another connection; start again without it")
            kwargs["ExclusiveStartKey"] = start
        result = self._table.query(**kwargs)
        return Page(
            items=[entry_from_item(item) for item in result.get("Items", [])],
            next_cursor=encode_cursor(result.get("LastEvaluatedKey")),
        )
