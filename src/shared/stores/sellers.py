"""Which connection an ML seller is: the connections table's SellerIndex, remembered for a few minutes.

The notification callback asks this for every notification and must answer ML within 500 ms, so a warm function
remembers what it found: a known seller for ``FOUND_SECONDS`` (a removed connection is caught again by the
processing, which reads the connection itself), an unknown one for ``MISSING_SECONDS`` (a flood of notifications
for strangers costs one query per seller and minute, not one per request; a connection just added is found within
a minute). At most ``MAX_REMEMBERED`` sellers are kept; the oldest go first.
"""

from __future__ import annotations

import threading
import time
from collections import OrderedDict
from collections.abc import Callable
from typing import Any

SELLER_INDEX = "SellerIndex"
FOUND_SECONDS = 300.0
MISSING_SECONDS = 60.0
MAX_REMEMBERED = 10_000


class DynamoSellerDirectory:
    def __init__(self, dynamodb_client: Any, table_name: str, *, clock: Callable[[], float] = time.monotonic) -> None:
        self._dynamodb = dynamodb_client
        self._table = table_name
        self._clock = clock
        self._known: OrderedDict[int, tuple[str | None, float]] = OrderedDict()
        self._lock = threading.Lock()

    def connection_for(self, seller_id: int) -> str | None:
        now = self._clock()
        with self._lock:
            remembered = self._known.get(seller_id)
            if remembered is not None and remembered[1] > now:
                return remembered[0]
        answer = self._query(seller_id)
        with self._lock:
            self._known[seller_id] = (answer, now + (FOUND_SECONDS if answer is not None else MISSING_SECONDS))
            self._known.move_to_end(seller_id)
            while len(self._known) > MAX_REMEMBERED:
                self._known.popitem(last=False)
        return answer

    def _query(self, seller_id: int) -> str | None:
        page = self._dynamodb.query(
            TableName=self._table,
            IndexName=SELLER_INDEX,
            KeyConditionExpression="seller_id = :seller",
            ExpressionAttributeValues={":seller": {"N": str(seller_id)}},
            Limit=2,
        )
        ids = sorted(item["connection_id"]["S"] for item in page.get("Items", []))
        # Two connections of one seller would be a misconfiguration; the first by id takes its notifications.
        return ids[0] if ids else None
