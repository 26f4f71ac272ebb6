"""Makes moto keep a DynamoDB promise it does not keep by itself.

Real DynamoDB applies a conditional write atomically: of N concurrent ``attribute_not_exists`` writes to one item,
exactly one succeeds. moto evaluates the condition and writes in two steps without a lock, so under threads
several "win" (seen: 7 of 8). The product relies on DynamoDB's behaviour, so the local stack and the tests
serialise moto's item writes to match it. Reads are untouched.
"""

from __future__ import annotations

import functools
import threading
from typing import Any

_LOCK = threading.RLock()
_WRITES = ("put_item", "update_item", "delete_item", "transact_write_items", "batch_write_item")
_installed = False


def install() -> None:
    global _installed
    if _installed:
        return
    from moto.dynamodb.models import DynamoDBBackend

    for name in _WRITES:
        original = getattr(DynamoDBBackend, name, None)
        if original is None:
            continue

        def serialised(self: Any, *args: Any, __original: Any = original, **kwargs: Any) -> Any:
            with _LOCK:
                return __original(self, *args, **kwargs)

        setattr(DynamoDBBackend, name, functools.wraps(original)(serialised))
    _installed = True
