"""Faults on the AWS side of the local stack, for the fault-injection suite (ML faults are the simulator's).

- ``lambda_service_exceptions``: the Lambda Invoke API itself fails (HTTP 500 ``ServiceException``), which Step
  Functions reports as ``Lambda.ServiceException`` — the error every Lambda task must retry.
- ``dynamodb_throttling``: DynamoDB answers ``ProvisionedThroughputExceededException`` on a repeatable fraction
  of calls; botocore's retry policy for DynamoDB absorbs it, as it does in the cloud. A throttled transaction is
  cancelled the way DynamoDB cancels one (``TransactionCanceledException``, reason ``ThrottlingError`` on an
  item), which botocore does not retry: the product's own code must.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any
from unittest import mock

from moto.core.exceptions import JsonRESTError


class _LambdaServiceException(JsonRESTError):
    code = 500

    def __init__(self) -> None:
        super().__init__("ServiceException", "Lambda was unable to process the request (injected fault).")


class _Throttled(JsonRESTError):
    code = 400

    def __init__(self) -> None:
        super().__init__(
            "com.amazonaws.dynamodb.v20120810#ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded (injected fault).",
        )


def _cancelled_by_throttling(items: int) -> Exception:
    from moto.dynamodb.exceptions import TransactionCanceledException

    reasons: list[tuple[str | None, str | None, None]] = [
        ("ThrottlingError", "Throughput exceeds the current capacity (injected fault).", None)
    ]
    reasons += [(None, None, None)] * max(0, items - 1)
    return TransactionCanceledException(reasons)


class FaultCounter:
    def __init__(self) -> None:
        self.injected = 0
        self._lock = threading.Lock()

    def hit(self) -> None:
        with self._lock:
            self.injected += 1


@contextmanager
def lambda_service_exceptions(times: int, *, function_name_contains: str = "") -> Iterator[FaultCounter]:
    """The first ``times`` invocations of matching functions fail in the Lambda service, before any code runs."""
    from moto.awslambda.models import LambdaBackend

    counter = FaultCounter()
    original = LambdaBackend.invoke
    remaining = [times]
    lock = threading.Lock()

    def invoke(self: Any, function_name: str, *args: Any, **kwargs: Any) -> Any:
        with lock:
            fire = function_name_contains in function_name and remaining[0] > 0
            if fire:
                remaining[0] -= 1
        if fire:
            counter.hit()
            raise _LambdaServiceException()
        return original(self, function_name, *args, **kwargs)

    with mock.patch.object(LambdaBackend, "invoke", invoke):
        yield counter


@contextmanager
def dynamodb_throttling(probability: float, *, seed: int = 7) -> Iterator[FaultCounter]:
    """Throttle that fraction of DynamoDB item operations (repeatably, by seed)."""
    from moto.dynamodb.models import DynamoDBBackend

    counter = FaultCounter()
    rng = random.Random(seed)
    lock = threading.Lock()
    inside = threading.local()  # moto's transaction calls its own item operations: throttle the transaction once
    patches = []
    for name in ("get_item", "put_item", "update_item", "delete_item", "query", "transact_write_items"):
        original = getattr(DynamoDBBackend, name)

        def throttled(self: Any, *args: Any, __original: Any = original, __name: str = name, **kwargs: Any) -> Any:
            if getattr(inside, "transaction", False):
                return __original(self, *args, **kwargs)
            with lock:
                fire = rng.random() < probability
            if fire:
                counter.hit()
                if __name == "transact_write_items":
                    raise _cancelled_by_throttling(len(args[0]) if args else len(kwargs.get("transact_items", [])))
                raise _Throttled()
            if __name != "transact_write_items":
                return __original(self, *args, **kwargs)
            inside.transaction = True
            try:
                return __original(self, *args, **kwargs)
            finally:
                inside.transaction = False

        patches.append(mock.patch.object(DynamoDBBackend, name, throttled))
    for patch in patches:
        patch.start()
    try:
        yield counter
    finally:
        for patch in reversed(patches):
            patch.stop()
