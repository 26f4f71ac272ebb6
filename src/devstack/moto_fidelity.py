"""Makes moto keep two DynamoDB promises it does not keep by itself.

1. Real DynamoDB applies a conditional write atomically: of N concurrent ``attribute_not_exists`` writes to one
   item, exactly one succeeds. moto evaluates the condition and writes in two steps without a lock, so under
   threads several "win" (seen: 7 of 8). The product relies on DynamoDB's behaviour, so the local stack and the
   tests serialise moto's item writes to match it. Reads are untouched.
2. A DynamoDB transaction costs the same whatever the table's size. moto 5.2 snapshots, for its rollback, a deep
   copy of the *whole table once per item of the transaction*: a 2-item transaction on a 10,000-item jobs table
   copied 20,000 items (30 ms at 600 items, growing with the table), which made the local stack quadratic in the
   size of a bulk job. The rollback here snapshots only the items the transaction touches; moto's own code still
   evaluates every condition and applies every write, and a cancelled transaction still leaves nothing behind.
"""

from __future__ import annotations

import copy
import functools
import threading
from typing import Any

_LOCK = threading.RLock()
_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
_installed = False
_in_transaction = threading.local()


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.dynamodb import models
    from moto.dynamodb.models import DynamoDBBackend

    _snapshot_touched_items_only(models, DynamoDBBackend)
    for name in _WRITES:
        original = getattr(DynamoDBBackend, name, None)
        if original is None:
            continue

        def serialised(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with _LOCK:
                return __original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, functools.wraps(original)(serialised))
    _installed = True


class _TableCopyIsUs:
    """Stands in for the ``copy`` module inside moto's DynamoDB backend: during a transaction a deep copy of a
    whole table is skipped (the item snapshot below replaces it); every other copy is a real deep copy."""

    def __init__(self, table_type: type) -> None:
        self._table_type = table_type

    def deepcopy(self, value: Any, memo: Any = None) -> Any:
        if getattr(_in_transaction, "active", False) and isinstance(value, self._table_type):
            return value
        return copy.deepcopy(value, memo)

    def __getattr__(self, name: str) -> Any:
        return getattr(copy, name)


def _snapshot_touched_items_only(models: Any, backend_type: Any) -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType
    from moto.dynamodb.models.table import Table

    models.copy = _TableCopyIsUs(Table)
    original = backend_type.transact_write_items

    def locate(backend: Any, op_type: str, op: dict[str, Any]) -> tuple[Any, DynamoType, DynamoType | None] | None:
        table = backend.tables.get(op.get("TableName"))
        if table is None:
            return None  # moto answers "table not found" itself; nothing of it to restore
        key = op.get("Item") if op_type == "Put" else op.get("Key")
        if not key or table.hash_key_attr not in key:
            return None
        range_value = key.get(table.range_key_attr) if table.range_key_attr else None
        return table, DynamoType(key[table.hash_key_attr]), DynamoType(range_value) if range_value else None

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        snapshot = []
        for entry in transact_items:
            for op_type, op in entry.items():
                where = locate(self, op_type, op) if isinstance(op, dict) else None
                if where is not None:
                    table, hash_key, range_key = where
                    snapshot.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        _in_transaction.active = True
        try:
            original(self, transact_items)
        except BaseException:
            for table, hash_key, range_key, item in reversed(snapshot):
                if item is None:
                    table.delete_item(hash_key, range_key)
                elif range_key is not None:
                    table.items[hash_key][range_key] = item
                else:
                    table.items[hash_key] = item
            raise
        finally:
            _in_transaction.active = False

    backend_type.transact_write_items = functools.wraps(original)(transact_write_items)
