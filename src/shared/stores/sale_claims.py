"""A short claim per sale that the notification processing takes between "nobody holds this sale" and "my job holds
it": ML's duplicates of one sale reach several processor invocations at once (SQS hands a queue to several pollers),
and without it each would make a job of its own. Items of the idempotency table, ``notified#<connection>#<sale>``.

The claim is released as soon as the job is written (its open item holds the sale from then on); one left by a
processor that died expires after ``seconds``, before the queue redelivers that processor's notifications.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

from botocore.exceptions import ClientError

PREFIX = "notified#"


class DynamoSaleClaims:
    def __init__(self, dynamodb_client: Any, table_name: str, *, clock: Callable[[], float] = time.time) -> None:
        self._dynamodb = dynamodb_client
        self._table = table_name
        self._clock = clock

    def claim(self, connection_id: str, sale_id: str, *, seconds: int) -> bool:
        now = int(self._clock())
        try:
            self._dynamodb.put_item(
                TableName=self._table,
                Item={"id": {"S": f"{PREFIX}{connection_id}#{sale_id}"}, "expiration": {"N": str(now + seconds)}},
                ConditionExpression="attribute_not_exists(id) OR expiration < :now",
                ExpressionAttributeValues={":now": {"N": str(now)}},
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True

    def release(self, connection_id: str, sale_id: str) -> None:
        self._dynamodb.delete_item(TableName=self._table, Key={"id": {"S": f"{PREFIX}{connection_id}#{sale_id}"}})
