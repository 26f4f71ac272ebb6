"""What every DynamoDB store shares: attribute conversion, conditional writes, batched reads, cursors, transactions.

Table shapes come from template.yaml; each table has its own module (``sales`` lives with the lifecycle in
``shared.lifecycle.dynamo``, which owns every write of per-sale state).
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import time
from collections.abc import Callable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError


class InvalidCursor(ValueError):
    """A pagination cursor that this service did not issue."""


def iso(value: datetime) -> str:
    """Fixed-width UTC timestamps for attributes that conditions and key conditions compare as strings."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def to_dynamo(value: Any) -> Any:
    """JSON-compatible data -> DynamoDB attribute values (floats become Decimal, as boto3 requires)."""
    return json.loads(json.dumps(value, default=str), parse_float=Decimal)


def from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [from_dynamo(v) for v in value]
    return value


def conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def applied(write: Callable[[], Any]) -> bool:
    """Run a conditional write: True if it was applied, False if its condition did not hold (a lost race, a lease
    held by someone else, an item already there). Any other error propagates."""
    try:
        write()
    except ClientError as exc:
        if conditional_failed(exc):
            return False
        raise
    return True


def batch_get(table: Any, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Consistent BatchGetItem of any number of keys: 100 per call, unprocessed keys asked again."""
    client = table.meta.client  # the resource's client (de)serialises attribute values itself
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), 100):
        request: dict[str, Any] = {table.name: {"Keys": keys[start : start + 100], "ConsistentRead": True}}
        while request:
            response = client.batch_get_item(RequestItems=request)
            found += response.get("Responses", {}).get(table.name, [])
            request = response.get("UnprocessedKeys") or {}
    return found


def get_sale_row(table: Any, connection_id: str, sale_id: str) -> dict[str, Any] | None:
    """One row of a table keyed by (connection_id, sale_id): sales and the error list."""
    answer = table.get_item(Key={"connection_id": connection_id, "sale_id": sale_id}, ConsistentRead=True)
    item: dict[str, Any] | None = answer.get("Item")
    return item


def sale_rows(table: Any, connection_id: str, sale_ids: list[str]) -> list[dict[str, Any]]:
    """The rows of many sales of one connection (absent ones are left out), 100 keys per round trip."""
    return batch_get(table, [{"connection_id": connection_id, "sale_id": s} for s in dict.fromkeys(sale_ids)])


def encode_cursor(key: dict[str, Any] | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(from_dynamo(key)).encode()).decode()


def decode_cursor(cursor: str | None, *, required_keys: set[str]) -> dict[str, Any] | None:
    if not cursor:
        return None
    try:
        key = json.loads(base64.urlsafe_b64decode(cursor.encode()))
    except (binascii.Error, ValueError, UnicodeDecodeError) as exc:
        raise InvalidCursor("the cursor is not one this API issued; start again without it") from exc
    if not isinstance(key, dict) or set(key) != required_keys or not all(isinstance(v, str) for v in key.values()):
        raise InvalidCursor("the cursor is not one this API issued; start again without it")
    return key


# --- transactions -----------------------------------------------------------------------------------------------------

TRANSACTION_ITEMS = 100  # DynamoDB's limit of items per TransactWriteItems
WRITE_TRIES = 6  # DynamoDB does not retry a cancelled transaction itself; ~1.6 s of backoff at most


def transaction_cancelled(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "TransactionCanceledException"


def cancellation_codes(exc: ClientError) -> list[str | None]:
    """One code per transaction item, in order (None: that item was fine)."""
    return [
        why.get("Code") if why.get("Code") != "None" else None for why in exc.response.get("CancellationReasons") or []
    ]


def cancelled_by_conflict(exc: ClientError) -> bool:
    """Cancelled for a cause other than a failed condition (ThrottlingError, TransactionConflict, …): nothing moved,
    and writing the same again may succeed."""
    return "ConditionalCheckFailed" not in cancellation_codes(exc)


def back_off(attempt: int) -> None:
    time.sleep(random.uniform(0, min(1.0, 0.05 * 2**attempt)))  # full jitter
