"""What every DynamoDB store shares: attribute conversion, conditional writes, batched reads, cursors, transactions.

Table shapes come from template.yaml; each table has its own module (``sales`` lives with the lifecycle in
``shared.lifecycle.dynamo``, which owns every write of per-sale state).
"""

from __future__ import annotations

import base64
import binascii
import json
from collections.abc import Callable, Iterable
from datetime import UTC, datetime
from decimal import Decimal
from typing import Any, TypeVar

from botocore.exceptions import ClientError

from shared.backoff import DEFAULT as DEFAULT_ROUNDS
from shared.backoff import TRIES, Rounds
from shared.stores.base import StateWriteFailed

T = TypeVar("T")


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


# The comparisons a key condition may put on a sort key (besides BETWEEN, which no store uses).
SORT_KEY_OPERATORS = frozenset({"=", "<", "<=", ">", ">=", "begins_with"})


def key_condition(
    partition: str, value: Any, sort: str | None = None, operator: str | None = None, bound: Any = None
) -> dict[str, Any]:
    """A query's ``KeyConditionExpression`` as a string, with its own names and values.

    Not boto3's ``Key(...)`` conditions: a resource turns those into text with one ``ConditionExpressionBuilder``,
    which every request resets, so two threads sharing the resource (the process shares one: shared.wiring) can get
    each other's placeholders. DynamoDB then refuses the query ("Query condition missed key schema element"), or runs
    it with another value. boto3 says resources are not thread-safe; its builder is the part that bites here
    (tests/stores/test_resource_shared_by_threads.py)."""
    names = {"#pk": partition}
    values = {":pk": value}
    expression = "#pk = :pk"
    if sort is not None:
        if operator not in SORT_KEY_OPERATORS:
            raise ValueError(f"not a sort key comparison: {operator!r}")
        names["#sk"] = sort
        values[":sk"] = bound
        expression += " AND begins_with(#sk, :sk)" if operator == "begins_with" else f" AND #sk {operator} :sk"
    return {
        "KeyConditionExpression": expression,
        "ExpressionAttributeNames": names,
        "ExpressionAttributeValues": values,
    }


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


# --- batches ----------------------------------------------------------------------------------------------------------
# A batch call that succeeds may leave part of its keys or writes unprocessed (throughput, the 16 MB response): they
# go again after a jittered back-off (shared.backoff; botocore retries only a call that fails whole), at most
# ``rounds.tries`` calls per batch, and what is left then raises, naming it: nothing is dropped in silence.

BATCH_GET_KEYS = 100  # DynamoDB's limit of keys per BatchGetItem
BATCH_WRITE_ITEMS = 25  # DynamoDB's limit of requests per BatchWriteItem


class BatchReadIncomplete(RuntimeError):
    """Keys still unread after every round of BatchGetItem: ``keys`` (those DynamoDB left unprocessed and any later
    ones not asked yet); ``found`` is what was read."""

    def __init__(self, table: str, keys: list[dict[str, Any]], *, found: list[dict[str, Any]], tries: int) -> None:
        super().__init__(f"{len(keys)} key(s) of {table} left unread after {tries} tries: {keys[:3]}")
        self.keys = keys
        self.found = found


class BatchWriteIncomplete(StateWriteFailed):
    """Write requests still unwritten after every round of BatchWriteItem: ``requests`` (those DynamoDB left
    unprocessed and any later ones not sent yet, as ``{"PutRequest": {"Item"}}`` / ``{"DeleteRequest": {"Key"}}``);
    ``written`` requests went through. A ``StateWriteFailed``: the caller fails rather than report what is not so."""

    def __init__(self, table: str, requests: list[dict[str, Any]], *, written: int, tries: int) -> None:
        super().__init__(f"{len(requests)} write(s) to {table} left unwritten after {tries} tries ({written} written)")
        self.requests = requests
        self.written = written

    @property
    def puts(self) -> list[dict[str, Any]]:
        return [r["PutRequest"]["Item"] for r in self.requests if "PutRequest" in r]

    @property
    def deletes(self) -> list[dict[str, Any]]:
        return [r["DeleteRequest"]["Key"] for r in self.requests if "DeleteRequest" in r]


def batch_get(table: Any, keys: list[dict[str, Any]], *, rounds: Rounds = DEFAULT_ROUNDS) -> list[dict[str, Any]]:
    """Consistent BatchGetItem of any number of keys, 100 per call; unprocessed keys asked again after a back-off,
    ``BatchReadIncomplete`` if some are left after the last round."""
    client = table.meta.client  # the resource's client (de)serialises attribute values itself
    found: list[dict[str, Any]] = []
    for start in range(0, len(keys), BATCH_GET_KEYS):
        pending: dict[str, Any] | None = {"Keys": keys[start : start + BATCH_GET_KEYS], "ConsistentRead": True}
        for _ in rounds:
            response = client.batch_get_item(RequestItems={table.name: pending})
            found += response.get("Responses", {}).get(table.name, [])
            pending = (response.get("UnprocessedKeys") or {}).get(table.name)
            if not pending:
                break
        if pending:
            left = [*pending["Keys"], *keys[start + BATCH_GET_KEYS :]]
            raise BatchReadIncomplete(table.name, left, found=found, tries=rounds.tries)
    return found


def batch_write(
    table: Any,
    *,
    puts: Iterable[dict[str, Any]] = (),
    deletes: Iterable[dict[str, Any]] = (),
    rounds: Rounds = DEFAULT_ROUNDS,
) -> int:
    """BatchWriteItem of any number of puts (whole items) and deletes (keys), puts first, 25 per call: boto3's
    ``batch_writer`` (which re-sends unprocessed items at once, with no bound), with a back-off between rounds and
    ``BatchWriteIncomplete`` if some are left after the last one. As there, no key may appear twice in a call.
    Returns how many requests were written."""
    requests = [*({"PutRequest": {"Item": i}} for i in puts), *({"DeleteRequest": {"Key": k}} for k in deletes)]
    client = table.meta.client
    written = 0
    for start in range(0, len(requests), BATCH_WRITE_ITEMS):
        pending = requests[start : start + BATCH_WRITE_ITEMS]
        for _ in rounds:
            response = client.batch_write_item(RequestItems={table.name: pending})
            left = (response.get("UnprocessedItems") or {}).get(table.name) or []
            written += len(pending) - len(left)
            pending = left
            if not pending:
                break
        if pending:
            left = [*pending, *requests[start + BATCH_WRITE_ITEMS :]]
            raise BatchWriteIncomplete(table.name, left, written=written, tries=rounds.tries)
    return written


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
WRITE_TRIES = TRIES  # DynamoDB does not retry a cancelled transaction itself; ~1.6 s of backoff at most


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
    """The wait before re-write number ``attempt`` (0: the first): shared.backoff's, full jitter."""
    DEFAULT_ROUNDS.wait(attempt)


def met_a_transaction(exc: ClientError) -> bool:
    """A single-item write (PutItem, UpdateItem, DeleteItem) refused because a transaction was ongoing on its item
    (``TransactionConflictException``): nothing was written, and botocore does not retry it."""
    return exc.response.get("Error", {}).get("Code") == "TransactionConflictException"


def retry_conflicts(write: Callable[[], T], *, what: str, rounds: Rounds = DEFAULT_ROUNDS) -> T:
    """Run a single-item write; while it meets a transaction on its item, write it again after a jittered back-off
    (the transaction commits within milliseconds), and raise ``StateWriteFailed`` after the last round. Any other
    error, a failed condition included, propagates at once: the caller decides what a lost condition means."""
    conflict: ClientError | None = None
    for _ in rounds:
        try:
            return write()
        except ClientError as exc:
            if not met_a_transaction(exc):
                raise
            conflict = exc
    raise StateWriteFailed(f"{what}: a transaction held the item on each of {rounds.tries} tries") from conflict
