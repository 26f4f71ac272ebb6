"""Faults on the AWS side of the local stack, for the fault-injection suite (ML faults are the simulator's).

- ``lambda_service_exceptions``: the Lambda Invoke API itself fails (HTTP 500 ``ServiceException``), which Step
  Functions reports as ``Lambda.ServiceException`` — the error every Lambda task must retry.
- ``dynamodb_throttling``: DynamoDB answers ``ProvisionedThroughputExceededException`` on a repeatable fraction
  of calls; botocore's retry policy for DynamoDB absorbs it, as it does in the cloud. A throttled transaction is
  cancelled the way DynamoDB cancels one (``TransactionCanceledException``, reason ``ThrottlingError`` on an
  item), which botocore does not retry: the product's own code must. A throttled ``BatchWriteItem`` or
  ``BatchGetItem`` is refused whole (DynamoDB's answer when none of a batch could be processed): nothing written.
- ``dynamodb_transaction_conflicts``: DynamoDB finds another transaction ongoing on an item, on a repeatable
  fraction of writes. A transaction is cancelled (``TransactionCanceledException``, reason ``TransactionConflict``
  "Transaction is ongoing for the item." on one of its items, ``None`` on the others); a PutItem, UpdateItem or
  DeleteItem fails with ``TransactionConflictException``. botocore retries neither: the product's own code must.
  Nothing of a conflicted call is written. (Batch writes and reads are left alone.)

Both DynamoDB faults decide once per API call, before moto runs it, and count what they injected once per call:
moto carries out one call with several of its own item operations (a transaction's items, the read before an
UpdateItem, a batch's puts), which are never drawn for nor counted separately. ``FaultCounter.calls`` is how many
calls a fault drew for; ``injected``, how many it failed.
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


_DYNAMODB_ERROR = "com.amazonaws.dynamodb.v20120810#"


class _Throttled(JsonRESTError):
    code = 400

    def __init__(self) -> None:
        super().__init__(
            _DYNAMODB_ERROR + "ProvisionedThroughputExceededException",
            "The level of configured provisioned throughput for the table was exceeded (injected fault).",
        )


class _TransactionConflict(JsonRESTError):
    code = 400

    def __init__(self) -> None:
        super().__init__(
            _DYNAMODB_ERROR + "TransactionConflictException",
            "Operation was rejected because there is an ongoing transaction for the item.",
        )


def _cancelled(items: int, at: int, code: str, message: str) -> Exception:
    """A transaction of ``items`` items cancelled because of item ``at``; every other item's reason is None."""
    from moto.dynamodb.exceptions import TransactionCanceledException

    reasons: list[tuple[str | None, str | None, None]] = [(None, None, None)] * max(1, items)
    reasons[min(at, len(reasons) - 1)] = (code, message, None)
    return TransactionCanceledException(reasons)


class FaultCounter:
    def __init__(self) -> None:
        self.injected = 0  # calls the fault failed
        self.calls = 0  # calls the fault drew for (DynamoDB faults)
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


_READS = ("get_item", "batch_get_item", "query")
_SINGLE_WRITES = ("put_item", "update_item", "delete_item")
_TRANSACTION = "transact_write_items"


@contextmanager
def _dynamodb_calls(actions: tuple[str, ...], probability: float, seed: int, fault: Any) -> Iterator[FaultCounter]:
    """Draw once for each call of ``actions`` (moto's request handlers, one per API call, in-process and in the
    server alike); a drawn call raises ``fault(action, handler, rng)`` before moto runs any of it."""
    from moto.dynamodb.responses import DynamoHandler

    counter = FaultCounter()
    rng = random.Random(seed)
    lock = threading.Lock()
    patches = []
    for action in actions:
        original = getattr(DynamoHandler, action)

        def call(self: Any, __original: Any = original, __action: str = action) -> Any:
            with lock:
                counter.calls += 1
                error = fault(__action, self, rng) if rng.random() < probability else None
            if error is not None:
                counter.hit()
                raise error
            return __original(self)

        patches.append(mock.patch.object(DynamoHandler, action, call))
    for patch in patches:
        patch.start()
    try:
        yield counter
    finally:
        for patch in reversed(patches):
            patch.stop()


def _transaction_items(handler: Any) -> int:
    return len((getattr(handler, "body", None) or {}).get("TransactItems") or [])


@contextmanager
def dynamodb_throttling(probability: float, *, seed: int = 7) -> Iterator[FaultCounter]:
    """Throttle that fraction of DynamoDB calls (reads, writes, batches, transactions), repeatably by seed."""

    def throttled(action: str, handler: Any, rng: random.Random) -> Exception:
        if action == _TRANSACTION:
            return _cancelled(
                _transaction_items(handler),
                0,
                "ThrottlingError",
                "Throughput exceeds the current capacity (injected fault).",
            )
        return _Throttled()

    actions = (*_READS, *_SINGLE_WRITES, "batch_write_item", _TRANSACTION)
    with _dynamodb_calls(actions, probability, seed, throttled) as counter:
        yield counter


@contextmanager
def dynamodb_transaction_conflicts(
    probability: float, *, seed: int = 7, single_item_writes: bool = True
) -> Iterator[FaultCounter]:
    """Make that fraction of DynamoDB writes meet an ongoing transaction on an item, repeatably by seed: a
    transaction is cancelled with ``TransactionConflict`` on one of its items (chosen by the seed), a PutItem,
    UpdateItem or DeleteItem fails with ``TransactionConflictException`` (only transactions when
    ``single_item_writes`` is False)."""

    def conflict(action: str, handler: Any, rng: random.Random) -> Exception:
        if action == _TRANSACTION:
            items = _transaction_items(handler)
            return _cancelled(
                items, rng.randrange(max(1, items)), "TransactionConflict", "Transaction is ongoing for the item."
            )
        return _TransactionConflict()

    actions = (*_SINGLE_WRITES, _TRANSACTION) if single_item_writes else (_TRANSACTION,)
    with _dynamodb_calls(actions, probability, seed, conflict) as counter:
        yield counter
