"""Makes moto keep three DynamoDB promises it does not keep by itself.

1. Real DynamoDB applies a conditional write atomically: of N concurrent ``attribute_not_exists`` writes to one
   item, exactly one succeeds. moto evaluates the condition and writes in two steps without a lock, so under
   threads several "win" (seen: 7 of 8). The product relies on DynamoDB's behaviour, so the local stack and the
   tests serialise moto's item writes to match it. Reads take the same lock: moto's query and scan deep-copy the
   items they return, and a write in another thread adding an attribute meanwhile failed the read with
   "dictionary changed size during iteration" (seen in ``make test``, tests/bulk/test_lanes.py). DynamoDB reads
   each item whole.
2. A DynamoDB transaction costs the same whatever the table's size. moto 5.2 snapshots, for its rollback, a deep
   copy of the *whole table once per item of the transaction*: a 2-item transaction on a 10,000-item jobs table
   copied 20,000 items (30 ms at 600 items, growing with the table), which made the local stack quadratic in the
   size of a bulk job. The rollback here snapshots only the items the transaction touches; moto's own code still
   evaluates every condition and applies every write, and a cancelled transaction still leaves nothing behind.
3. DynamoDB refuses an item over 400 KB (409,600 bytes) counted by its own rules ("Item sizes and formats"): every
   attribute name's UTF-8 length; a string's UTF-8 length; a number's significant digits, one byte per two, plus
   one; a binary's raw length; 1 byte for a boolean or a null; a list or map 3 bytes plus 1 per element plus its
   elements (a map's element names counted too); a set the sum of its elements. moto counts differently (no
   list/map overhead, a number as its text) against its own 405,000 limit: a job header with 3,000 rejected ids was
   393 KB for moto and about 417 KB for DynamoDB. Here moto's count is switched off and every write is measured by
   ``dynamodb_item_size`` instead, with DynamoDB's answers; a refused write changes nothing:

   - PutItem, a BatchWriteItem put (the whole batch is refused, nothing of it written), a transaction's Put (the
     request is refused before the transaction starts): ``ValidationException`` "Item size has exceeded the
     maximum allowed size";
   - UpdateItem, measured on the item as it results from the update: ``ValidationException`` "Item size to update
     has exceeded the maximum allowed size";
   - a transaction's Update: the transaction is cancelled (``TransactionCanceledException``), reason
     ``ValidationError`` with that message on the item, ``None`` on the others.

   A Put's size is known from the request, an Update's only once the stored item is read: DynamoDB's reference
   lists the update wording under the ``ValidationError`` cancellation reason, and a public conformance suite run
   against DynamoDB measured the same split (a transacted Put over the limit is a plain ``ValidationException``).
   Not covered: PartiQL statements, and UpdateItem's own ceiling in some regions (measured there on what the
   statement writes rather than on the resulting item), which no document describes.
"""

from __future__ import annotations

import base64
import binascii
import copy
import functools
import math
import threading
from collections.abc import Mapping
from typing import Any

MAX_ITEM_BYTES = 400 * 1024  # DynamoDB's KB is 1,024 bytes; an item of exactly this size is accepted

_LOCK = threading.RLock()
_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
_READS = ("get_item", "query", "scan", "batch_get_item", "transact_get_items")
_installed = False
_in_transaction = threading.local()


# --- item size by DynamoDB's rules ------------------------------------------------------------------------------------


def dynamodb_item_size(item: Any) -> int:
    """The size DynamoDB gives an item: ``{name: attribute value}`` in DynamoDB JSON (``{"S": "..."}``) or as moto's
    ``DynamoType`` values, or a moto ``Item``."""
    attributes: Mapping[str, Any] = item.attrs if hasattr(item, "attrs") else item
    return sum(_utf8(name) + attribute_value_size(value) for name, value in attributes.items())


def attribute_value_size(value: Any) -> int:
    """One value's bytes (without its name): DynamoDB JSON (``{"N": "12"}``) or a moto ``DynamoType``."""
    kind, inner = _typed(value)
    if kind == "S":
        return _utf8(inner)
    if kind == "N":
        return number_size(inner)
    if kind == "B":
        return _binary_size(inner)
    if kind in ("BOOL", "NULL"):
        return 1
    if kind == "SS":
        return sum(_utf8(element) for element in inner)
    if kind == "NS":
        return sum(number_size(element) for element in inner)
    if kind == "BS":
        return sum(_binary_size(element) for element in inner)
    if kind == "L":
        return 3 + sum(1 + attribute_value_size(element) for element in inner)
    if kind == "M":
        return 3 + sum(1 + _utf8(name) + attribute_value_size(element) for name, element in inner.items())
    raise ValueError(f"not a DynamoDB attribute value type: {kind!r}")


def number_size(text: Any) -> int:
    """A number: leading and trailing zeros trimmed, 1 byte per two significant digits (rounded up), plus 1. The
    sign, the decimal point and the exponent are not digits."""
    mantissa = str(text).strip().lstrip("+-").lower().split("e")[0]
    digits = mantissa.replace(".", "").strip("0")
    return math.ceil(len(digits) / 2) + 1


def _typed(value: Any) -> tuple[str, Any]:
    if isinstance(value, Mapping):
        if len(value) != 1:
            raise ValueError(f"an attribute value has exactly one type key, not {sorted(value)}")
        ((kind, inner),) = value.items()
        return str(kind), inner
    if hasattr(value, "type") and hasattr(value, "value"):  # moto's DynamoType
        return str(value.type), value.value
    raise ValueError(f"not a DynamoDB attribute value: {value!r}")


def _utf8(text: Any) -> int:
    return len(text.encode("utf-8")) if isinstance(text, str) else len(text)


def _binary_size(value: Any) -> int:
    if isinstance(value, bytes | bytearray | memoryview):
        return len(value)
    if hasattr(value, "value") and isinstance(value.value, bytes):  # boto3.dynamodb.types.Binary
        return len(value.value)
    try:  # on the wire, and in moto's tables, a binary is base64 text; its raw length is what counts
        return len(base64.b64decode(str(value), validate=True))
    except binascii.Error:
        return _utf8(str(value))


# --- install ----------------------------------------------------------------------------------------------------------


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.dynamodb import models
    from moto.dynamodb.models import DynamoDBBackend

    _snapshot_touched_items_only(models, DynamoDBBackend)
    _measure_items_as_dynamodb_does(DynamoDBBackend)
    for name in (*_WRITES, *_READS):
        original = getattr(DynamoDBBackend, name, None)
        if original is None:
            continue

        def serialised(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with _LOCK:
                return __original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, functools.wraps(original)(serialised))
    _installed = True


# --- transactions snapshot only what they touch -----------------------------------------------------------------------


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


def _locate(backend: Any, table_name: Any, key: Any) -> tuple[Any, Any, Any] | None:
    """(table, hash key, range key) of the item ``key`` (DynamoDB JSON, key attributes at least) names; None when
    moto will answer the request with an error of its own (no such table, no key)."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    table = backend.tables.get(table_name)
    if table is None or not isinstance(key, Mapping) or table.hash_key_attr not in key:
        return None
    if table.range_key_attr and table.range_key_attr not in key:
        return None
    range_value = key[table.range_key_attr] if table.range_key_attr else None
    return table, DynamoType(key[table.hash_key_attr]), DynamoType(range_value) if range_value else None


def _restore(table: Any, hash_key: Any, range_key: Any, item: Any) -> None:
    if item is None:
        table.delete_item(hash_key, range_key)
    elif range_key is not None:
        table.items[hash_key][range_key] = item
    else:
        table.items[hash_key] = item


def _snapshot_touched_items_only(models: Any, backend_type: Any) -> None:
    from moto.dynamodb.exceptions import ItemSizeTooLarge
    from moto.dynamodb.models.table import Table

    models.copy = _TableCopyIsUs(Table)
    original = backend_type.transact_write_items

    def transact_write_items(self: Any, transact_items: list[dict[str, Any]]) -> None:
        # A Put's size is known from the request: refused before the transaction starts, as DynamoDB does.
        for entry in transact_items:
            put = entry.get("Put") if isinstance(entry, dict) else None
            item = put.get("Item") if isinstance(put, dict) else None
            if isinstance(item, dict) and dynamodb_item_size(item) > MAX_ITEM_BYTES:
                raise ItemSizeTooLarge()
        snapshot = []
        for entry in transact_items:
            for op_type, op in entry.items():
                if not isinstance(op, dict):
                    continue
                where = _locate(self, op.get("TableName"), op.get("Item") if op_type == "Put" else op.get("Key"))
                if where is not None:
                    table, hash_key, range_key = where
                    snapshot.append((table, hash_key, range_key, copy.deepcopy(table.get_item(hash_key, range_key))))
        _in_transaction.active = True
        try:
            original(self, transact_items)
        except BaseException:
            for table, hash_key, range_key, item in reversed(snapshot):
                _restore(table, hash_key, range_key, item)
            raise
        finally:
            _in_transaction.active = False

    backend_type.transact_write_items = functools.wraps(original)(transact_write_items)


# --- item size --------------------------------------------------------------------------------------------------------


class ValidationError(Exception):
    """Raised by an Update inside moto's transaction loop, which records an unknown exception as a cancellation
    reason named after its class (``ValidationError``) with its message, and goes on with the other items."""


_UPDATE_TOO_LARGE = "Item size to update has exceeded the maximum allowed size"


def _measure_items_as_dynamodb_does(backend_type: Any) -> None:
    from moto.dynamodb.exceptions import ItemSizeTooLarge, ItemSizeToUpdateTooLarge
    from moto.dynamodb.models.dynamo_type import LimitedSizeDict
    from moto.dynamodb.responses import DynamoHandler

    # moto's own count (and its O(attributes) re-count on every attribute set) gives way to DynamoDB's.
    LimitedSizeDict.__setitem__ = dict.__setitem__  # type: ignore[method-assign]

    put_item = backend_type.put_item
    update_item = backend_type.update_item
    batch_write_item = DynamoHandler.batch_write_item

    def measured_put_item(self: Any, table_name: str, item_attrs: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        if dynamodb_item_size(item_attrs) > MAX_ITEM_BYTES:
            raise ItemSizeTooLarge()
        return put_item(self, table_name, item_attrs, *args, **kwargs)

    def measured_update_item(self: Any, table_name: str, key: dict[str, Any], *args: Any, **kwargs: Any) -> Any:
        with _LOCK:  # the item read, updated and (when too large) put back, with no other write in between
            where = _locate(self, table_name, key)
            before = copy.deepcopy(where[0].get_item(where[1], where[2])) if where else None
            try:
                item = update_item(self, table_name, key, *args, **kwargs)
            except BaseException:  # DynamoDB applies an update whole or not at all
                if where is not None:
                    _restore(*where, before)
                raise
            if item is None or dynamodb_item_size(item) <= MAX_ITEM_BYTES:
                return item
            if where is not None:
                _restore(*where, before)
            if getattr(_in_transaction, "active", False):
                raise ValidationError(_UPDATE_TOO_LARGE)
            raise ItemSizeToUpdateTooLarge()

    def measured_batch_write_item(self: Any) -> Any:
        # DynamoDB refuses the whole batch when one of its items is over the limit: nothing of it is written.
        for requests in (self.body.get("RequestItems") or {}).values():
            for request in requests:
                item = (request.get("PutRequest") or {}).get("Item")
                if isinstance(item, dict) and dynamodb_item_size(item) > MAX_ITEM_BYTES:
                    raise ItemSizeTooLarge()
        return batch_write_item(self)

    backend_type.put_item = functools.wraps(put_item)(measured_put_item)
    backend_type.update_item = functools.wraps(update_item)(measured_update_item)
    DynamoHandler.batch_write_item = functools.wraps(batch_write_item)(measured_batch_write_item)  # type: ignore[method-assign]
