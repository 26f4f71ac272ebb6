"""DynamoDB implementations of the store interfaces. Table shapes come from template.yaml.

Every write that must happen once is a conditional write, so concurrent Lambdas, Step Functions retries and
duplicate SQS deliveries cannot store a sale twice or page the help desk twice.
"""

from __future__ import annotations

import base64
import binascii
import json
import random
import time
import uuid
from collections import Counter
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

from botocore.exceptions import ClientError

from shared.jobs import Job, JobItem, SettleFailed, Settlement
from shared.models import (
    Connection,
    ErrorEntry,
    ErrorEvent,
    ExecutionRef,
    IdentifierKind,
    ListingRef,
    Outcome,
    ProductLink,
    Reason,
    ReflectedSale,
    SaleState,
    retry_delay_seconds,
)
from shared.stores.base import ListingKey, Page, ReconcileCursor


class InvalidCursor(ValueError):
    """A pagination cursor that this service did not issue."""


def _now() -> datetime:
    return datetime.now(UTC)


def _iso(value: datetime) -> str:
    """Fixed-width UTC timestamps for attributes that conditions compare as strings (next_retry_at, watermarks)."""
    return value.astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f+00:00")


def _to_dynamo(value: Any) -> Any:
    """JSON-compatible data -> DynamoDB attribute values (floats become Decimal, as boto3 requires)."""
    return json.loads(json.dumps(value, default=str), parse_float=Decimal)


def _from_dynamo(value: Any) -> Any:
    if isinstance(value, Decimal):
        return int(value) if value == value.to_integral_value() else float(value)
    if isinstance(value, dict):
        return {k: _from_dynamo(v) for k, v in value.items()}
    if isinstance(value, list | set):
        return [_from_dynamo(v) for v in value]
    return value


def _conditional_failed(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException"


def _applied(write: Callable[[], Any]) -> bool:
    """Run a conditional write: True if it was applied, False if its condition did not hold (a lost race, a lease
    held by someone else, an item already there). Any other error propagates."""
    try:
        write()
    except ClientError as exc:
        if _conditional_failed(exc):
            return False
        raise
    return True


def _batch_get(table: Any, keys: list[dict[str, Any]]) -> list[dict[str, Any]]:
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


def _get_sale_row(table: Any, connection_id: str, sale_id: str) -> dict[str, Any] | None:
    """One row of a table keyed by (connection_id, sale_id): sales and the error list."""
    answer = table.get_item(Key={"connection_id": connection_id, "sale_id": sale_id}, ConsistentRead=True)
    item: dict[str, Any] | None = answer.get("Item")
    return item


def _sale_rows(table: Any, connection_id: str, sale_ids: list[str]) -> list[dict[str, Any]]:
    """The rows of many sales of one connection (absent ones are left out), 100 keys per round trip."""
    return _batch_get(table, [{"connection_id": connection_id, "sale_id": s} for s in dict.fromkeys(sale_ids)])


def encode_cursor(key: dict[str, Any] | None) -> str | None:
    if not key:
        return None
    return base64.urlsafe_b64encode(json.dumps(_from_dynamo(key)).encode()).decode()


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


# --- Sales ------------------------------------------------------------------------------------------------------------


class DynamoSaleStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    @staticmethod
    def _state(item: dict[str, Any]) -> SaleState:
        data = _from_dynamo(item)
        data.pop("reflected_at", None)
        data.pop("claimed_by", None)
        return SaleState.model_validate(data)

    def get(self, connection_id: str, sale_id: str) -> SaleState | None:
        item = _get_sale_row(self._table, connection_id, sale_id)
        return self._state(item) if item is not None else None

    def get_many(self, connection_id: str, sale_ids: list[str]) -> dict[str, SaleState]:
        return {s.sale_id: s for s in map(self._state, _sale_rows(self._table, connection_id, sale_ids))}

    def reflect(self, record: ReflectedSale, *, attempts: int = 1, row_absent: bool = False) -> bool:
        now = _now().isoformat()
        if row_absent:
            # The caller saw no row: one conditional put (the whole row is ours to write). A row that appeared in
            # between makes it fail, and the update below then keeps that row's other attributes.
            try:
                self._table.put_item(
                    Item={
                        "connection_id": record.connection_id,
                        "sale_id": record.sale_id,
                        "record": _to_dynamo(record.model_dump(mode="json")),
                        "outcome": Outcome.REFLECTED.value,
                        "attempts": attempts,
                        "reflected_at": now,
                        "updated_at": now,
                    },
                    ConditionExpression="attribute_not_exists(sale_id)",
                )
                return True
            except ClientError as exc:
                if not _conditional_failed(exc):
                    raise
        return _applied(
            lambda: self._table.update_item(
                Key={"connection_id": record.connection_id, "sale_id": record.sale_id},
                UpdateExpression=(
                    "SET #record = :record, outcome = :outcome, attempts = :attempts, reflected_at = :now, "
                    "updated_at = :now "
                    "REMOVE reason, detail, identifier_kind, sale_ids"
                ),
                ConditionExpression="attribute_not_exists(#record)",
                ExpressionAttributeNames={"#record": "record"},
                ExpressionAttributeValues={
                    ":record": _to_dynamo(record.model_dump(mode="json")),
                    ":outcome": Outcome.REFLECTED.value,
                    ":attempts": attempts,
                    ":now": now,
                },
            )
        )

    def set_outcome(
        self,
        connection_id: str,
        sale_id: str,
        outcome: Outcome,
        *,
        reason: Reason | None = None,
        detail: str | None = None,
        attempts: int | None = None,
        identifier_kind: IdentifierKind | None = None,
        sale_ids: list[str] | None = None,
        pack_id: str | None = None,
    ) -> None:
        sets = {"outcome": outcome.value, "updated_at": _now().isoformat()}
        optional = {
            "reason": reason.value if reason else None,
            "detail": detail,
            "identifier_kind": identifier_kind.value if identifier_kind else None,
            "sale_ids": sale_ids,
            "pack_id": pack_id,
        }
        removes = [name for name, value in optional.items() if value is None]
        sets.update({name: value for name, value in optional.items() if value is not None})  # type: ignore[misc]
        if attempts is not None:
            sets["attempts"] = attempts  # type: ignore[assignment]
        expression = "SET " + ", ".join(f"#{k} = :{k}" for k in sets)
        if removes:
            expression += " REMOVE " + ", ".join(f"#{k}" for k in removes)
        names = {f"#{k}": k for k in [*sets, *removes]}
        _applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id, "sale_id": sale_id},
                UpdateExpression=expression,
                # A reflected sale keeps its outcome: nothing downgrades it.
                ConditionExpression="attribute_not_exists(#record)",
                ExpressionAttributeNames={**names, "#record": "record"},
                ExpressionAttributeValues={f":{k}": _to_dynamo(v) for k, v in sets.items()},
            )
        )

    def set_execution(self, connection_id: str, sale_id: str, execution: ExecutionRef) -> None:
        self._table.update_item(
            Key={"connection_id": connection_id, "sale_id": sale_id},
            UpdateExpression="SET latest_execution = :e, updated_at = :now, outcome = if_not_exists(outcome, :pending)",
            ExpressionAttributeValues={
                ":e": _to_dynamo(execution.model_dump(mode="json")),
                ":now": _now().isoformat(),
                ":pending": Outcome.PENDING.value,
            },
        )

    def claim_pending(self, connection_id: str, sale_id: str, *, owner: str, stale_before: datetime) -> bool:
        return _applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id, "sale_id": sale_id},
                UpdateExpression="SET outcome = :pending, updated_at = :now, claimed_by = :owner REMOVE reason, detail",
                ConditionExpression=(
                    "attribute_not_exists(#record) AND (attribute_not_exists(outcome) "
                    "OR ((outcome = :pending OR outcome = :in_progress) AND updated_at < :stale) "
                    "OR (outcome = :not_reflectable AND reason = :unpaid))"
                ),
                ExpressionAttributeNames={"#record": "record"},
                ExpressionAttributeValues={
                    ":pending": Outcome.PENDING.value,
                    ":in_progress": Outcome.IN_PROGRESS.value,
                    ":not_reflectable": Outcome.NOT_REFLECTABLE.value,
                    ":unpaid": Reason.PAYMENT_NOT_VERIFIED.value,
                    ":now": _now().isoformat(),
                    ":stale": stale_before.astimezone(UTC).isoformat(),
                    ":owner": owner,
                },
            )
        )

    def release_pending(self, connection_id: str, sale_id: str, *, owner: str) -> None:
        _applied(
            lambda: self._table.delete_item(
                Key={"connection_id": connection_id, "sale_id": sale_id},
                ConditionExpression=(
                    "claimed_by = :owner AND outcome = :pending AND attribute_not_exists(#record) "
                    "AND attribute_not_exists(latest_execution)"
                ),
                ExpressionAttributeNames={"#record": "record"},
                ExpressionAttributeValues={":owner": owner, ":pending": Outcome.PENDING.value},
            )
        )


# --- Error list -------------------------------------------------------------------------------------------------------


class DynamoErrorStore:
    def __init__(
        self,
        table: Any,
        *,
        index_name: str = "ErrorTypeIndex",
        retry_base_seconds: float = 300.0,
        retry_max_seconds: float = 21_600.0,
    ) -> None:
        self._table = table
        self._index = index_name
        self._retry_base = retry_base_seconds
        self._retry_max = retry_max_seconds

    @staticmethod
    def _entry(item: dict[str, Any]) -> ErrorEntry:
        data = _from_dynamo(item)
        for internal in ("error_type_sale_id", "attempt_keys"):
            data.pop(internal, None)
        return ErrorEntry.model_validate(data)

    def get(self, connection_id: str, sale_id: str) -> ErrorEntry | None:
        item = _get_sale_row(self._table, connection_id, sale_id)
        return self._entry(item) if item is not None else None

    def get_many(self, connection_id: str, sale_ids: list[str]) -> dict[str, ErrorEntry]:
        return {e.sale_id: e for e in map(self._entry, _sale_rows(self._table, connection_id, sale_ids))}

    def add_waiting_job(self, connection_id: str, sale_id: str, job_id: str) -> bool:
        return _applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id, "sale_id": sale_id},
                UpdateExpression="ADD waiting_jobs :job",
                ConditionExpression="attribute_exists(sale_id)",  # a resolved sale's entry is not recreated
                ExpressionAttributeValues={":job": {job_id}},
            )
        )

    def put_if_absent(self, entry: ErrorEntry) -> bool:
        item = entry.model_dump(mode="json", exclude_none=True)
        item["error_type_sale_id"] = f"{entry.error_type}#{entry.sale_id}"
        if entry.next_retry_at is not None:
            item["next_retry_at"] = _iso(entry.next_retry_at)  # compared as a string by claim_retry
        try:
            self._table.put_item(Item=_to_dynamo(item), ConditionExpression="attribute_not_exists(connection_id)")
        except ClientError as exc:
            if _conditional_failed(exc):
                return False
            raise
        return True

    def record_failure(
        self,
        connection_id: str,
        sale_id: str,
        event: ErrorEvent,
        *,
        retryable: bool,
        reason: Reason | None = None,
        count_attempt: bool = True,
        listings: list[ListingRef] | None = None,
    ) -> ErrorEntry:
        now = event.at.isoformat()
        error_type = str(event.error_type)
        values: dict[str, Any] = {
            ":type": error_type,
            ":type_sale": f"{error_type}#{sale_id}",
            ":message": event.message,
            ":retryable": retryable,
            ":now": now,
            ":episode": uuid.uuid4().hex,
            ":false": False,
            ":empty": [],
            ":event": [_to_dynamo(event.model_dump(mode="json", exclude_none=True))],
            ":attempt": 1 if count_attempt else 0,
        }
        expression = (
            "SET error_type = :type, error_type_sale_id = :type_sale, message = :message, "
            "retryable = :retryable, last_seen = :now, first_seen = if_not_exists(first_seen, :now), "
            "episode = if_not_exists(episode, :episode), escalated = if_not_exists(escalated, :false), "
            "history = list_append(if_not_exists(history, :empty), :event)"
        )
        if reason is not None:
            expression += ", reason = :reason"
            values[":reason"] = reason.value
        if listings is not None:
            expression += ", listings = :listings"
            values[":listings"] = [_to_dynamo(ref.model_dump(mode="json")) for ref in listings]
        expression += " ADD attempts :attempt"
        condition = None
        if event.attempt_key:
            expression += ", attempt_keys :keys"
            values[":keys"] = {event.attempt_key}
            values[":key"] = event.attempt_key
            condition = "attribute_not_exists(attempt_keys) OR NOT contains(attempt_keys, :key)"
        if reason is None:
            expression += " REMOVE reason"
        kwargs: dict[str, Any] = {
            "Key": {"connection_id": connection_id, "sale_id": sale_id},
            "UpdateExpression": expression,
            "ExpressionAttributeValues": values,
            "ReturnValues": "ALL_NEW",
        }
        if condition:
            kwargs["ConditionExpression"] = condition
        try:
            result = self._table.update_item(**kwargs)
        except ClientError as exc:
            if not _conditional_failed(exc):
                raise
            existing = self.get(connection_id, sale_id)  # this attempt was already recorded
            if existing is None:  # pragma: no cover - the condition only fails on an existing item
                raise
            return existing
        entry = self._entry(result["Attributes"])
        if retryable and count_attempt:
            entry = self._schedule_retry(entry, event.at)
        return entry

    def _schedule_retry(self, entry: ErrorEntry, failed_at: datetime) -> ErrorEntry:
        """Exponential backoff from the attempts: the error sweep retries the entry once ``next_retry_at`` passed."""
        delay = retry_delay_seconds(entry.attempts, base_seconds=self._retry_base, max_seconds=self._retry_max)
        at = failed_at + timedelta(seconds=delay)
        scheduled = _applied(
            lambda: self._table.update_item(
                Key={"connection_id": entry.connection_id, "sale_id": entry.sale_id},
                UpdateExpression="SET next_retry_at = :at",
                ConditionExpression="attempts = :attempts",  # a newer failure sets its own
                ExpressionAttributeValues={":at": _iso(at), ":attempts": entry.attempts},
            )
        )
        return entry.model_copy(update={"next_retry_at": at}) if scheduled else entry

    def claim_retry(self, connection_id: str, sale_id: str, *, now: datetime, until: datetime) -> bool:
        return _applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id, "sale_id": sale_id},
                UpdateExpression="SET next_retry_at = :until",
                ConditionExpression=(
                    "attribute_exists(sale_id) AND (attribute_not_exists(next_retry_at) OR next_retry_at <= :now)"
                ),
                ExpressionAttributeValues={":until": _iso(until), ":now": _iso(now)},
            )
        )

    def resolve(self, connection_id: str, sale_id: str) -> ErrorEntry | None:
        result = self._table.delete_item(
            Key={"connection_id": connection_id, "sale_id": sale_id}, ReturnValues="ALL_OLD"
        )
        return self._entry(result["Attributes"]) if result.get("Attributes") else None

    def claim_escalation(self, connection_id: str, sale_id: str, episode: str) -> bool:
        return _applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id, "sale_id": sale_id},
                UpdateExpression="SET escalated = :true, escalated_at = :now",
                ConditionExpression="episode = :episode AND (attribute_not_exists(escalated) OR escalated = :false)",
                ExpressionAttributeValues={
                    ":true": True,
                    ":false": False,
                    ":episode": episode,
                    ":now": _now().isoformat(),
                },
            )
        )

    def release_escalation(self, connection_id: str, sale_id: str, episode: str) -> None:
        """Undo a claim whose page could not be sent, so the next try pages."""
        _applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id, "sale_id": sale_id},
                UpdateExpression="SET escalated = :false REMOVE escalated_at",
                ConditionExpression="episode = :episode",
                ExpressionAttributeValues={":false": False, ":episode": episode},
            )
        )

    def list(
        self, connection_id: str, *, error_type: str | None = None, limit: int = 50, cursor: str | None = None
    ) -> Page[ErrorEntry]:
        from boto3.dynamodb.conditions import Key

        kwargs: dict[str, Any] = {"Limit": limit}
        if error_type:
            kwargs["IndexName"] = self._index
            kwargs["KeyConditionExpression"] = Key("connection_id").eq(connection_id) & Key(
                "error_type_sale_id"
            ).begins_with(f"{error_type}#")
            start = decode_cursor(cursor, required_keys={"connection_id", "sale_id", "error_type_sale_id"})
        else:
            kwargs["KeyConditionExpression"] = Key("connection_id").eq(connection_id)
            start = decode_cursor(cursor, required_keys={"connection_id", "sale_id"})
        if start:
            if start["connection_id"] != connection_id:
                raise InvalidCursor("the cursor belongs to another connection; start again without it")
            kwargs["ExclusiveStartKey"] = start
        result = self._table.query(**kwargs)
        return Page(
            items=[self._entry(item) for item in result.get("Items", [])],
            next_cursor=encode_cursor(result.get("LastEvaluatedKey")),
        )


# --- Product links ----------------------------------------------------------------------------------------------------


def listing_key(item_id: str, variation_id: int | None) -> str:
    return f"{item_id}#{variation_id if variation_id is not None else '-'}"


class DynamoProductStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def get_links(self, connection_id: str, keys: list[ListingKey]) -> dict[ListingKey, ProductLink]:
        wanted = {listing_key(item, var) for item, var in keys} | {listing_key(item, None) for item, _ in keys}
        found: dict[str, ProductLink] = {}
        requested = [{"connection_id": connection_id, "listing_key": key} for key in sorted(wanted)]
        for row in _batch_get(self._table, requested):
            data = _from_dynamo(row)
            stored_key = data.pop("listing_key")
            found[stored_key] = ProductLink.model_validate(data)
        result: dict[ListingKey, ProductLink] = {}
        for item_id, variation_id in keys:
            link = found.get(listing_key(item_id, variation_id)) or found.get(listing_key(item_id, None))
            if link is not None:
                result[(item_id, variation_id)] = link
        return result

    def put(self, link: ProductLink) -> None:
        item = link.model_dump(mode="json")
        item["listing_key"] = listing_key(link.item_id, link.variation_id)
        self._table.put_item(Item=_to_dynamo(item))


# --- Connections ------------------------------------------------------------------------------------------------------


class DynamoConnectionStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, connection_id: str) -> Connection | None:
        item = self._table.get_item(Key={"connection_id": connection_id}, ConsistentRead=True)
        if "Item" not in item:
            return None
        data = _from_dynamo(item["Item"])
        return Connection.model_validate({k: data[k] for k in Connection.model_fields if k in data})

    def put(self, connection: Connection) -> None:
        self._table.put_item(Item=_to_dynamo(connection.model_dump(mode="json")))

    def acquire_refresh_lock(self, connection_id: str, owner: str, ttl_seconds: int) -> bool:
        now = _now()
        return _applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id},
                UpdateExpression="SET refresh_lock_owner = :owner, refresh_lock_until = :until",
                ConditionExpression=(
                    "attribute_exists(connection_id) AND (attribute_not_exists(refresh_lock_until) "
                    "OR refresh_lock_until < :now OR refresh_lock_owner = :owner)"
                ),
                ExpressionAttributeValues={
                    ":owner": owner,
                    ":until": (now + timedelta(seconds=ttl_seconds)).isoformat(),
                    ":now": now.isoformat(),
                },
            )
        )

    def release_refresh_lock(self, connection_id: str, owner: str) -> None:
        _applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id},
                UpdateExpression="REMOVE refresh_lock_owner, refresh_lock_until",
                ConditionExpression="refresh_lock_owner = :owner",
                ExpressionAttributeValues={":owner": owner},
            )
        )

    def list_ids(self) -> list[str]:
        ids: list[str] = []
        kwargs: dict[str, Any] = {"ProjectionExpression": "connection_id"}
        while True:
            page = self._table.scan(**kwargs)
            ids += [str(item["connection_id"]) for item in page.get("Items", [])]
            if not page.get("LastEvaluatedKey"):
                return sorted(ids)
            kwargs["ExclusiveStartKey"] = page["LastEvaluatedKey"]

    # Reconciliation: a run lease (like the refresh lease) and the cursor, on the connection's row.

    def acquire_reconcile_lease(self, connection_id: str, owner: str, ttl_seconds: int) -> ReconcileCursor | None:
        now = _now()
        try:
            result = self._table.update_item(
                Key={"connection_id": connection_id},
                UpdateExpression="SET reconcile_lease_owner = :owner, reconcile_lease_until = :until",
                ConditionExpression=(
                    "attribute_exists(connection_id) AND (attribute_not_exists(reconcile_lease_until) "
                    "OR reconcile_lease_until < :now OR reconcile_lease_owner = :owner)"
                ),
                ExpressionAttributeValues={
                    ":owner": owner,
                    ":until": _iso(now + timedelta(seconds=ttl_seconds)),
                    ":now": _iso(now),
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        row = _from_dynamo(result["Attributes"])
        watermark = row.get("reconcile_watermark")
        return ReconcileCursor(
            watermark=datetime.fromisoformat(watermark) if watermark else None,
            offset=int(row.get("reconcile_offset", 0)),
        )

    def advance_reconcile_cursor(self, connection_id: str, owner: str, cursor: ReconcileCursor) -> bool:
        watermark = cursor.watermark
        if watermark is None:
            return False
        return _applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id},
                UpdateExpression="SET reconcile_watermark = :wm, reconcile_offset = :off",
                ConditionExpression=(
                    "reconcile_lease_owner = :owner AND (attribute_not_exists(reconcile_watermark) "
                    "OR reconcile_watermark < :wm "
                    "OR (reconcile_watermark = :wm AND (attribute_not_exists(reconcile_offset) "
                    "OR reconcile_offset <= :off)))"
                ),
                ExpressionAttributeValues={":owner": owner, ":wm": _iso(watermark), ":off": cursor.offset},
            )
        )

    def release_reconcile_lease(self, connection_id: str, owner: str) -> None:
        _applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id},
                UpdateExpression="REMOVE reconcile_lease_owner, reconcile_lease_until",
                ConditionExpression="reconcile_lease_owner = :owner",
                ExpressionAttributeValues={":owner": owner},
            )
        )


# --- Identifier aliases -----------------------------------------------------------------------------------------------


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
                "updated_at": _now().isoformat(),
            }
        )


# --- Reprocessing jobs ------------------------------------------------------------------------------------------------

HEADER_KEY = "#"  # sorts before every digit, so a query for items starts right after the header
JOB_TTL = timedelta(days=30)


def _expires_at(job: Job) -> int:
    """The TTL of a job's header and items: derived from the job, so a write that replaces an item keeps it."""
    return int((job.created_at + JOB_TTL).timestamp())


OPEN_OUTCOMES = (Outcome.PENDING.value, Outcome.IN_PROGRESS.value)


def _transaction_cancelled(exc: ClientError) -> bool:
    return exc.response.get("Error", {}).get("Code") == "TransactionCanceledException"


def _cancelled_by_conflict(exc: ClientError) -> bool:
    """Cancelled for a cause other than a failed condition (ThrottlingError, TransactionConflict, …): nothing moved."""
    codes = {why.get("Code") for why in exc.response.get("CancellationReasons") or []}
    return "ConditionalCheckFailed" not in codes


def _back_off(attempt: int) -> None:
    time.sleep(random.uniform(0, min(1.0, 0.05 * 2**attempt)))  # full jitter


SETTLE_TRIES = 6  # DynamoDB does not retry a cancelled transaction itself; ~1.6 s of backoff at most


class DynamoJobStore:
    def __init__(self, table: Any) -> None:
        self._table = table
        self._client = table.meta.client  # the resource's client (de)serialises attribute values itself

    def create(self, job: Job, sale_ids: list[str]) -> None:
        expires = _expires_at(job)
        header = job.model_dump(mode="json", exclude={"counts"})
        header.update({"item_key": HEADER_KEY, "expires_at": expires})
        header.update({f"count_{outcome}": 0 for outcome in _TERMINAL})
        # Items first: a header that exists promises that every accepted id has its item.
        now = _now().isoformat()
        with self._table.batch_writer() as batch:
            for sale_id in sale_ids:
                batch.put_item(
                    Item={
                        "job_id": job.job_id,
                        "item_key": sale_id,
                        "outcome": Outcome.PENDING.value,
                        "attempts": 0,
                        "updated_at": now,
                        "expires_at": expires,
                    }
                )
        self._table.put_item(Item=_to_dynamo(header), ConditionExpression="attribute_not_exists(job_id)")

    def set_messages(self, job_id: str, messages: int) -> None:
        self._table.update_item(
            Key={"job_id": job_id, "item_key": HEADER_KEY},
            UpdateExpression="SET messages = :m",
            ExpressionAttributeValues={":m": messages},
        )

    def get(self, job_id: str) -> Job | None:
        got = self._table.get_item(Key={"job_id": job_id, "item_key": HEADER_KEY}, ConsistentRead=True)
        return self._job(got["Item"]) if "Item" in got else None

    @staticmethod
    def _job(item: dict[str, Any]) -> Job:
        data = _from_dynamo(item)
        counts = {o: int(data.pop(f"count_{o}", 0)) for o in _TERMINAL}
        for internal in ("item_key", "expires_at"):
            data.pop(internal, None)
        return Job.model_validate({**data, "counts": counts})

    @staticmethod
    def _item(data: dict[str, Any]) -> JobItem:
        data = _from_dynamo(data)
        data["sale_id"] = data.pop("item_key")
        for internal in ("job_id", "expires_at"):
            data.pop(internal, None)
        return JobItem.model_validate(data)

    def items(self, job_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[JobItem]:
        from boto3.dynamodb.conditions import Key

        kwargs: dict[str, Any] = {
            "KeyConditionExpression": Key("job_id").eq(job_id) & Key("item_key").gt(HEADER_KEY),
            "Limit": limit,
            "ConsistentRead": True,
        }
        start = decode_cursor(cursor, required_keys={"job_id", "item_key"})
        if start:
            if start["job_id"] != job_id:
                raise InvalidCursor("the cursor belongs to another job; start again without it")
            kwargs["ExclusiveStartKey"] = start
        result = self._table.query(**kwargs)
        return Page(
            items=[self._item(item) for item in result.get("Items", [])],
            next_cursor=encode_cursor(result.get("LastEvaluatedKey")),
        )

    def get_items(self, job_id: str, sale_ids: list[str]) -> dict[str, JobItem]:
        keys = [{"job_id": job_id, "item_key": s} for s in dict.fromkeys(sale_ids)]
        return {item.sale_id: item for item in map(self._item, _batch_get(self._table, keys))}

    def mark_started(self, job_id: str) -> Job | None:
        try:
            answer = self._table.update_item(
                Key={"job_id": job_id, "item_key": HEADER_KEY},
                UpdateExpression="SET started_at = if_not_exists(started_at, :now)",
                ConditionExpression="attribute_exists(job_id)",  # no header is created for a job that is not there
                ExpressionAttributeValues={":now": _now().isoformat()},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if _conditional_failed(exc):
                return None
            raise
        return self._job(answer["Attributes"])

    def hand_over(self, job_id: str, sale_id: str, execution_arn: str, attempts: int) -> None:
        self._continue_elsewhere(job_id, sale_id, {"execution_arn": execution_arn, "attempts": attempts})

    def defer(self, job_id: str, sale_id: str, *, attempts: int, retry_at: datetime | None, detail: str) -> None:
        values: dict[str, Any] = {"attempts": attempts, "detail": detail}
        if retry_at is not None:
            values["retry_at"] = retry_at.isoformat()
        values["deferred"] = True
        self._continue_elsewhere(job_id, sale_id, values)

    def _continue_elsewhere(self, job_id: str, sale_id: str, fields: dict[str, Any]) -> None:
        """pending -> in_progress (a state machine execution or a later sweep continues the sale), counted once."""
        sets = ", ".join(f"#{k} = :{k}" for k in fields)
        try:
            self._client.transact_write_items(
                TransactItems=[
                    {
                        "Update": {
                            "TableName": self._table.name,
                            "Key": {"job_id": job_id, "item_key": sale_id},
                            "UpdateExpression": f"SET outcome = :ip, updated_at = :now, {sets}",
                            "ConditionExpression": "outcome = :pending",
                            "ExpressionAttributeNames": {f"#{k}": k for k in fields},
                            "ExpressionAttributeValues": {
                                ":ip": Outcome.IN_PROGRESS.value,
                                ":pending": Outcome.PENDING.value,
                                ":now": _now().isoformat(),
                                **{f":{k}": v for k, v in fields.items()},
                            },
                        }
                    },
                    {
                        "Update": {
                            "TableName": self._table.name,
                            "Key": {"job_id": job_id, "item_key": HEADER_KEY},
                            "UpdateExpression": "ADD handed_over :one",
                            "ExpressionAttributeValues": {":one": 1},
                        }
                    },
                ]
            )
        except ClientError as exc:
            if not _transaction_cancelled(exc):
                raise  # cancelled: handed over (or settled) already by an earlier delivery

    def settle(
        self,
        job_id: str,
        sale_id: str,
        outcome: Outcome,
        *,
        reason: Reason | None = None,
        attempts: int = 0,
        detail: str | None = None,
        handed_over: bool | None = None,
    ) -> bool:
        if not outcome.terminal:
            raise ValueError(f"{outcome} is not a terminal outcome")
        # The worker settles items it has not handed over (pending); the state machine settles handed-over ones
        # (in_progress). A caller that says which skips the read; a wrong guess falls back to reading.
        guess: str | None = None
        if handed_over is not None:
            guess = Outcome.IN_PROGRESS.value if handed_over else Outcome.PENDING.value
        for attempt in range(SETTLE_TRIES):
            previous = guess
            if previous is None:
                current = self._table.get_item(Key={"job_id": job_id, "item_key": sale_id}, ConsistentRead=True)
                if "Item" not in current or current["Item"]["outcome"] not in OPEN_OUTCOMES:
                    return False
                previous = str(current["Item"]["outcome"])
            guess = None
            try:
                self._client.transact_write_items(
                    TransactItems=self._settle_items(job_id, sale_id, outcome, previous, reason, attempts, detail)
                )
            except ClientError as exc:
                if not _transaction_cancelled(exc):
                    raise
                if _cancelled_by_conflict(exc):
                    _back_off(attempt)  # throttled or conflicting: the item is as it was, wait and write again
                continue  # or the item moved (its condition failed): read it again
            return True
        # Never "already settled" when it is not: the caller fails, and its message or task is tried again.
        raise SettleFailed(job_id, [sale_id])

    def settle_many(self, job: Job, settlements: list[Settlement]) -> int:
        # One transaction per 99 items plus the header, whose counts are the sums of the items it carries.
        if any(not s.outcome.terminal for s in settlements):
            raise ValueError("settle_many records terminal outcomes only")
        unique = list({s.sale_id: s for s in settlements}.values())
        step = _TRANSACTION_ITEMS - 1
        return sum(self._settle_chunk(job, unique[start : start + step]) for start in range(0, len(unique), step))

    def _settle_chunk(self, job: Job, chunk: list[Settlement]) -> int:
        conflicts = 0
        while chunk:
            counts = Counter(s.outcome.value for s in chunk)
            items = [self._pending_item_put(job, s) for s in chunk]
            try:
                self._client.transact_write_items(TransactItems=[*items, self._header_update(job.job_id, counts)])
                return len(chunk)
            except ClientError as exc:
                if not _transaction_cancelled(exc):
                    raise
                # Items settled or handed over meanwhile (a duplicate delivery of the message) fail their
                # condition: they are dropped, by the cancellation reasons, and the rest is written again.
                reasons = exc.response.get("CancellationReasons") or []
                done = {
                    s.sale_id
                    for s, why in zip(chunk, reasons, strict=False)
                    if why.get("Code") == "ConditionalCheckFailed"
                }
                chunk = [s for s in chunk if s.sale_id not in done]
                if done:
                    continue
                # Throttled or conflicting: nothing was written; wait and write again, and fail the caller (its
                # message comes back) rather than drop an outcome.
                if conflicts + 1 >= SETTLE_TRIES:
                    raise SettleFailed(job.job_id, [s.sale_id for s in chunk]) from exc
                _back_off(conflicts)
                conflicts += 1
        return 0

    def _settle_items(
        self,
        job_id: str,
        sale_id: str,
        outcome: Outcome,
        previous: str,
        reason: Reason | None,
        attempts: int,
        detail: str | None,
    ) -> list[dict[str, Any]]:
        settlement = Settlement(sale_id=sale_id, outcome=outcome, reason=reason, attempts=attempts, detail=detail)
        handed_back = 1 if previous == Outcome.IN_PROGRESS.value else 0
        return [
            self._item_update(job_id, settlement, previous),
            self._header_update(job_id, Counter({outcome.value: 1}), handed_back=handed_back),
        ]

    def _pending_item_put(self, job: Job, settlement: Settlement) -> dict[str, Any]:
        """A pending item holds nothing but its key, outcome, attempts and TTL, so settling it replaces it whole
        (a put is the cheaper write) under the condition that it is still pending."""
        item: dict[str, Any] = {
            "job_id": job.job_id,
            "item_key": settlement.sale_id,
            "outcome": settlement.outcome.value,
            "attempts": settlement.attempts,
            "updated_at": _now().isoformat(),
            "expires_at": _expires_at(job),
        }
        if settlement.reason is not None:
            item["reason"] = settlement.reason.value
        if settlement.detail is not None:
            item["detail"] = settlement.detail
        return {
            "Put": {
                "TableName": self._table.name,
                "Item": item,
                "ConditionExpression": "outcome = :pending",
                "ExpressionAttributeValues": {":pending": Outcome.PENDING.value},
            }
        }

    def _item_update(self, job_id: str, settlement: Settlement, previous: str) -> dict[str, Any]:
        sets = "SET outcome = :o, attempts = :a, updated_at = :now"
        values: dict[str, Any] = {
            ":o": settlement.outcome.value,
            ":a": settlement.attempts,
            ":now": _now().isoformat(),
            ":prev": previous,
        }
        removes = []
        reason = settlement.reason.value if settlement.reason else None
        for name, value in (("reason", reason), ("detail", settlement.detail)):
            if value is None:
                removes.append(name)
            else:
                sets += f", {name} = :{name}"
                values[f":{name}"] = value
        return {
            "Update": {
                "TableName": self._table.name,
                "Key": {"job_id": job_id, "item_key": settlement.sale_id},
                "UpdateExpression": sets + (" REMOVE " + ", ".join(removes) if removes else ""),
                "ConditionExpression": "outcome = :prev",
                "ExpressionAttributeValues": values,
            }
        }

    def _header_update(self, job_id: str, counts: Counter[str], *, handed_back: int = 0) -> dict[str, Any]:
        """settled and count_<outcome> grow by the items settled; handed_over shrinks by those that came back."""
        names = {f"#c{n}": f"count_{outcome}" for n, outcome in enumerate(counts)}
        values: dict[str, Any] = {":settled": sum(counts.values())}
        adds = ["settled :settled"]
        for n, outcome in enumerate(counts):
            adds.append(f"#c{n} :c{n}")
            values[f":c{n}"] = counts[outcome]
        if handed_back:
            adds.append("handed_over :back")
            values[":back"] = -handed_back
        return {
            "Update": {
                "TableName": self._table.name,
                "Key": {"job_id": job_id, "item_key": HEADER_KEY},
                "UpdateExpression": "ADD " + ", ".join(adds),
                "ExpressionAttributeNames": names,
                "ExpressionAttributeValues": values,
            }
        }


_TERMINAL = tuple(o.value for o in Outcome if o.terminal)
_TRANSACTION_ITEMS = 100  # DynamoDB's limit of items per TransactWriteItems
