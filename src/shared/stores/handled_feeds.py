"""The missed feeds already handled: one item per ML notification ``_id`` in the idempotency table, kept for three
days (ML keeps a missed feed for two), so a feed that ML lists again on the next run is not handled twice."""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

KEEP_SECONDS = 3 * 24 * 3600
PREFIX = "missed-feed#"  # Powertools' idempotency records in the same table are "<function>#<hash>"


class DynamoHandledFeeds:
    def __init__(self, dynamodb_client: Any, table_name: str, *, clock: Callable[[], float] = time.time) -> None:
        self._dynamodb = dynamodb_client
        self._table = table_name
        self._clock = clock

    def handled(self, notification_ids: list[str]) -> set[str]:
        """Which of these were handled already (BatchGetItem, 100 keys a call; unprocessed keys read again)."""
        found: set[str] = set()
        unique = list(dict.fromkeys(notification_ids))
        for start in range(0, len(unique), 100):
            keys: list[dict[str, Any]] = [{"id": {"S": PREFIX + n}} for n in unique[start : start + 100]]
            while keys:
                answer = self._dynamodb.batch_get_item(
                    RequestItems={self._table: {"Keys": keys, "ProjectionExpression": "id", "ConsistentRead": True}}
                )
                for item in answer.get("Responses", {}).get(self._table, []):
                    found.add(item["id"]["S"].removeprefix(PREFIX))
                keys = answer.get("UnprocessedKeys", {}).get(self._table, {}).get("Keys", [])
        return found

    def mark(self, notification_id: str) -> bool:
        """Remember one as handled; False when it already was (another run got there first)."""
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item={
                    "id": {"S": PREFIX + notification_id},
                    "expiration": {"N": str(int(self._clock()) + KEEP_SECONDS)},
                },
                ConditionExpression="attribute_not_exists(id)",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True
