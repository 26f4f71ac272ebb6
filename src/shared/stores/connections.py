"""Connections (a seller's ML account in the platform), with the leases kept on their rows: the token-refresh lock
(single-use refresh tokens) and the reconciliation lease and cursor; and the connection's state (active or needing
the seller to authorise the application again), changed only by conditional writes (shared.connection_state)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

from botocore.exceptions import ClientError

from shared.models import Connection, ConnectionState
from shared.stores.base import ReconcileCursor
from shared.stores.dynamo import applied, conditional_failed, from_dynamo, iso, to_dynamo


class DynamoConnectionStore:
    def __init__(self, table: Any) -> None:
        self._table = table

    def get(self, connection_id: str) -> Connection | None:
        item = self._table.get_item(Key={"connection_id": connection_id}, ConsistentRead=True)
        if "Item" not in item:
            return None
        return _connection(from_dynamo(item["Item"]))

    def put(self, connection: Connection) -> None:
        self._table.put_item(Item=to_dynamo(connection.model_dump(mode="json", exclude_none=True)))

    # The connection's state. Attribute names go through placeholders: STATE is a DynamoDB reserved word.

    def mark_needs_reauthorization(
        self, connection_id: str, *, token_version: int, cause: str, message: str, at: datetime
    ) -> bool:
        """Active -> needs_reauthorization, with the help desk's message due. Applied once per revocation: false when
        the connection needs reauthorization already, or when it was reconnected with tokens newer than the ones ML
        refused (a stale refusal)."""
        return applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id},
                UpdateExpression=(
                    "SET #state = :needs, state_cause = :cause, state_message = :message, state_changed_at = :at, "
                    "revoked_token_version = :version, alert_due = :true"
                ),
                ConditionExpression=(
                    "attribute_exists(connection_id) AND (attribute_not_exists(#state) OR #state = :active) AND "
                    "(attribute_not_exists(active_token_version) OR active_token_version <= :version)"
                ),
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":needs": ConnectionState.NEEDS_REAUTHORIZATION.value,
                    ":active": ConnectionState.ACTIVE.value,
                    ":cause": cause,
                    ":message": message[:1000],
                    ":at": iso(at),
                    ":version": token_version,
                    ":true": True,
                },
            )
        )

    def mark_active(self, connection_id: str, *, token_version: int, at: datetime) -> bool:
        """needs_reauthorization -> active, because tokens newer than the refused ones are stored (the seller
        reconnected). A message still due is dropped: there is nothing left for the help desk to do."""
        return applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id},
                UpdateExpression=(
                    "SET #state = :active, state_changed_at = :at, active_token_version = :version "
                    "REMOVE state_cause, state_message, alert_due"
                ),
                ConditionExpression=(
                    "#state = :needs AND (attribute_not_exists(revoked_token_version) "
                    "OR revoked_token_version < :version)"
                ),
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={
                    ":needs": ConnectionState.NEEDS_REAUTHORIZATION.value,
                    ":active": ConnectionState.ACTIVE.value,
                    ":at": iso(at),
                    ":version": token_version,
                },
            )
        )

    def claim_alert(self, connection_id: str) -> Connection | None:
        """Take the help desk's message of the current revocation (one taker); None if it is not due."""
        try:
            result = self._table.update_item(
                Key={"connection_id": connection_id},
                UpdateExpression="REMOVE alert_due",
                ConditionExpression="alert_due = :true AND #state = :needs",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":true": True, ":needs": ConnectionState.NEEDS_REAUTHORIZATION.value},
                ReturnValues="ALL_NEW",
            )
        except ClientError as exc:
            if conditional_failed(exc):
                return None
            raise
        return _connection(from_dynamo(result["Attributes"]))

    def restore_alert(self, connection_id: str) -> None:
        """The taken message could not be sent: due again (the error sweep sends it), unless reconnected meanwhile."""
        applied(
            lambda: self._table.update_item(
                Key={"connection_id": connection_id},
                UpdateExpression="SET alert_due = :true",
                ConditionExpression="#state = :needs",
                ExpressionAttributeNames={"#state": "state"},
                ExpressionAttributeValues={":true": True, ":needs": ConnectionState.NEEDS_REAUTHORIZATION.value},
            )
        )

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


def _connection(data: dict[str, Any]) -> Connection:
    """The row as a Connection: the leases and the quota bucket kept on the row are not part of it."""
    return Connection.model_validate({k: data[k] for k in Connection.model_fields if k in data})
