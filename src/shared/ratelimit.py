"""The Mercado Libre request quota, shared by every worker of a connection.

ML answers 429 at a few requests per second per application (reference/meli-api.md §9): the quota, not the CPU,
bounds bulk throughput, and a 429 storm only makes it worse. So every ML request first takes a token from a
token bucket kept on the connection's row in the connections table, with an optimistic conditional write: all
concurrent Lambdas of a connection draw from the same bucket. The bucket saves up at most 1/20 s of tokens
(``burst``, at least one), so no sliding one-second window sees more than about 1.05 x the configured rate.

Inside one process the threads queue on a local lock (they would only collide on the same item otherwise), and
at high rates one write takes a small batch of tokens (at most 1/20 s worth) that the process hands out locally.
Each process remembers the bucket as it last wrote it and writes against that; only a write that lost to another
worker learns the bucket, from the failed condition's answer. So the bucket costs one conditional write per
batch of ML requests, and a read only when a process first meets the bucket.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

from boto3.dynamodb.types import TypeDeserializer
from botocore.exceptions import ClientError


class RateLimiter(Protocol):
    def acquire(self, key: str) -> None:
        """Block until one request may be sent for ``key``."""
        ...


class QuotaWaitTooLong(RuntimeError):
    pass


class DynamoTokenBucket:
    def __init__(
        self,
        table: Any,
        *,
        rate: float,
        burst: float | None = None,
        max_wait_seconds: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._table = table
        self._rate = rate
        # At most 1/20 s of tokens saved up: no one-second window sees more than 1.05 x the rate.
        self._burst = max(1.0, burst if burst is not None else rate / 20)
        self._max_wait = max_wait_seconds
        self._sleep = sleep
        self._clock = clock
        self.waited_seconds = 0.0
        self.conflicts = 0
        self.reads = 0
        self.writes = 0
        self._batch = max(1, int(rate / 20))
        self._local: dict[str, tuple[int, float]] = {}  # key -> (tokens taken but not used, taken at)
        # key -> the bucket as this process last saw it (tokens, bucket_at as stored): the next take writes against
        # it directly, and only a write that lost to another worker learns the bucket from DynamoDB's answer.
        self._seen: dict[str, tuple[float, Any]] = {}
        self._lock = threading.Lock()

    def acquire(self, key: str) -> None:
        with self._lock:
            spare, taken_at = self._local.get(key, (0, 0.0))
            # A local batch is only good for the moment it was taken in, so it cannot pile up into a burst.
            if spare > 0 and self._clock() - taken_at < 1.0 / 20:
                self._local[key] = (spare - 1, taken_at)
                return
            self._acquire_from_table(key)

    def _acquire_from_table(self, key: str) -> None:
        deadline = self._clock() + self._max_wait
        seen = self._seen.get(key)
        while True:
            if seen is None:
                seen = self._read(key)
            saved, previous_at = seen
            now = self._clock()
            tokens = saved if previous_at is None else min(self._burst, saved + (now - float(previous_at)) * self._rate)
            if tokens >= 1.0 - _EPSILON:  # 0.99999999999 is a whole token that float arithmetic lost
                take = max(1, min(self._batch, int(tokens + _EPSILON)))
                written_at = Decimal(str(round(now, 6)))
                current = self._take(key, tokens - take, written_at, previous_at)
                if current is None:
                    self._seen[key] = (tokens - take, written_at)
                    self._local[key] = (take - 1, now)
                    return
                self.conflicts += 1  # another worker took tokens since we last saw the bucket: use what it left
                seen = current
                continue
            wait = max((1.0 - tokens) / self._rate, _MIN_WAIT)  # never a sleep too short to move the clock
            if now + wait > deadline:
                raise QuotaWaitTooLong(f"waited over {self._max_wait}s for Mercado Libre quota on {key}")
            self.waited_seconds += wait
            self._sleep(wait)

    def _read(self, key: str) -> tuple[float, Any]:
        self.reads += 1
        item = self._table.get_item(
            Key={"connection_id": key}, ProjectionExpression="bucket_tokens, bucket_at", ConsistentRead=True
        ).get("Item", {})
        return float(item.get("bucket_tokens", self._burst)), item.get("bucket_at")

    def _take(self, key: str, remaining: float, now: Decimal, previous_at: Any) -> tuple[float, Any] | None:
        """Write the bucket if nobody else did since ``previous_at``. None when written; otherwise the bucket as
        the winner left it (DynamoDB returns it with the failed condition, so no extra read)."""
        self.writes += 1
        condition = "attribute_exists(connection_id) AND "
        values: dict[str, Any] = {":t": Decimal(str(round(remaining, 6))), ":now": now}
        if previous_at is None:
            condition += "attribute_not_exists(bucket_at)"
        else:
            condition += "bucket_at = :prev"
            values[":prev"] = previous_at
        try:
            self._table.update_item(
                Key={"connection_id": key},
                UpdateExpression="SET bucket_tokens = :t, bucket_at = :now",
                ConditionExpression=condition,
                ExpressionAttributeValues=values,
                ReturnValuesOnConditionCheckFailure="ALL_OLD",
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") != "ConditionalCheckFailedException":
                raise
            old = exc.response.get("Item")
            if not old:
                raise LookupError(f"no connection row '{key}' to keep its Mercado Libre quota on") from exc
            item = _DESERIALIZE({"M": old})
            return float(item.get("bucket_tokens", self._burst)), item.get("bucket_at")
        return None


_DESERIALIZE = TypeDeserializer().deserialize
_EPSILON = 1e-9
_MIN_WAIT = 0.001
