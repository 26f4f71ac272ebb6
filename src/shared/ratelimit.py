"""The Mercado Libre request quota, shared by every worker of a connection.

ML answers 429 at a few requests per second per application (reference/meli-api.md §9): the quota, not the CPU,
bounds bulk throughput, and a 429 storm only makes it worse. So every ML request first takes a token from a
token bucket kept on the connection's row in the connections table, with an optimistic conditional write: all
concurrent Lambdas of a connection draw from the same bucket. The bucket holds at most one second of tokens
(``burst``), so no sliding one-second window sees much more than the configured rate.

Inside one process the threads queue on a local lock (they would only collide on the same item otherwise), and
at high rates one write takes a small batch of tokens (at most 1/20 s worth) that the process hands out locally,
so the bucket costs a fraction of a DynamoDB write per ML request rather than a read and a write.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from decimal import Decimal
from typing import Any, Protocol

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
        burst: float = 1.0,
        max_wait_seconds: float = 60.0,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive")
        self._table = table
        self._rate = rate
        self._burst = max(1.0, burst)
        self._max_wait = max_wait_seconds
        self._sleep = sleep
        self._clock = clock
        self.waited_seconds = 0.0
        self.conflicts = 0
        self._batch = max(1, int(rate / 20))
        self._local: dict[str, tuple[int, float]] = {}  # key -> (tokens taken but not used, taken at)
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
        while True:
            item = self._table.get_item(
                Key={"connection_id": key},
                ProjectionExpression="bucket_tokens, bucket_at",
                ConsistentRead=True,
            ).get("Item", {})
            now = self._clock()
            previous_at = item.get("bucket_at")
            tokens = float(item.get("bucket_tokens", self._burst))
            if previous_at is not None:
                tokens = min(self._burst, tokens + (now - float(previous_at)) * self._rate)
            if tokens >= 1.0:
                take = min(self._batch, int(tokens))
                if self._take(key, tokens - take, now, previous_at):
                    self._local[key] = (take - 1, now)
                    return
                self.conflicts += 1  # another worker took a token between our read and write: read again
                continue
            wait = (1.0 - tokens) / self._rate
            if now + wait > deadline:
                raise QuotaWaitTooLong(f"waited over {self._max_wait}s for Mercado Libre quota on {key}")
            self.waited_seconds += wait
            self._sleep(wait)

    def _take(self, key: str, remaining: float, now: float, previous_at: Any) -> bool:
        condition = "attribute_exists(connection_id) AND "
        values: dict[str, Any] = {":t": Decimal(str(round(remaining, 6))), ":now": Decimal(str(round(now, 6)))}
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
            )
        except ClientError as exc:
            if exc.response.get("Error", {}).get("Code") == "ConditionalCheckFailedException":
                return False
            raise
        return True
