"""Connections (a seller's ML account in the platform), with the leases kept on their rows: the token-refresh lock
(single-use refresh tokens) and the reconciliation lease and cursor."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from shared.models import Connection
from shared.stores.base import ReconcileCursor
from shared.stores.dynamo import applied, conditional_failed, from_dynamo, iso, to_dynamo


class DynamoConnectionStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, connection_id: str) -> Connection | None:
        item = self._table.get_item(Key={"connection_id": connection_id}, ConsistentRead=True)
        if "Item" not in item:
            return None
        data = from_dynamo(item["Item"])
        return Connection.model_validate({k: data[k] for k in Connection.model_fields if k in data})

    def put(self, connection: Connection) -> None:
        self._table.put_item(Item=to_dynamo(connection.model_dump(mode="json")))

    def acquire_refresh_lock(self, connection_id: str, owner: str, ttl_seconds: int) -> bool:
        now = datetime.now(UTC)
        return applied(
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
        applied(
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
        now = datetime.now(UTC)
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
                    ":until": iso(now + timedelta(seconds=ttl_seconds)),
                    ":now": iso(now),
                },
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if conditional_failed(exc):
                return None
            raise
        row = from_dynamo(result["Attributes"])
        watermark = row.get("reconcile_watermark")
        return ReconcileCursor(
            watermark=datetime.fromisoformat(watermark) if watermark else None,
            offset=int(row.get("reconcile_offset", 0)),
        )

    def advance_reconcile_cursor(self, connection_id: str, owner: str, cursor: ReconcileCursor) -> bool:
        watermark = cursor.watermark
        if watermark is None:
            return False
        return applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id},
                UpdateExpression="SET reconcile_watermark = :wm, reconcile_offset = :off",
                ConditionExpression=(
                    "reconcile_lease_owner = :owner AND (attribute_not_exists(reconcile_watermark) "
                    "OR reconcile_watermark < :wm "
                    "OR (reconcile_watermark = :wm AND (attribute_not_exists(reconcile_offset) "
                    "OR reconcile_offset <= :off)))"
                ),
                ExpressionAttributeValues={":owner": owner, ":wm": iso(watermark), ":off": cursor.offset},
            )
        )

    def release_reconcile_lease(self, connection_id: str, owner: str) -> None:
        applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id},
                UpdateExpression="REMOVE reconcile_lease_owner, reconcile_lease_until",
                ConditionExpression="reconcile_lease_owner = :owner",
                ExpressionAttributeValues={":owner": owner},
            )
        )
