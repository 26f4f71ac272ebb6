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
- ``dynamodb_partial_batches``: BatchGetItem / BatchWriteItem carry out part of a call and hand the rest back in
  ``UnprocessedKeys`` / ``UnprocessedItems``, which botocore does not retry.
- ``sqs_partial_batches``: SendMessageBatch succeeds but lists some entries in ``Failed``.

Both DynamoDB faults decide once per API call, before moto runs it, and count what they injected once per call:
moto carries out one call with several of its own item operations (a transaction's items, the read before an
UpdateItem, a batch's puts), which are never drawn for nor counted separately. ``FaultCounter.calls`` is how many
calls a fault drew for; ``injected``, how many it failed.
"""

from __future__ import annotations

import random
import threading
from collections.abc import Collection, Iterator
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
    probability: float, *, seed: int = 7, single_item_writes: bool = True, tables: Collection[str] | None = None
) -> Iterator[FaultCounter]:
    """Make that fraction of DynamoDB writes meet an ongoing transaction on an item, repeatably by seed: a
    transaction is cancelled with ``TransactionConflict`` on one of its items (chosen by the seed), a PutItem,
    UpdateItem or DeleteItem fails with ``TransactionConflictException`` (only transactions when
    ``single_item_writes`` is False; only single writes to ``tables`` when given: the tables transactions write,
    since an item no transaction touches never meets one)."""

    def conflict(action: str, handler: Any, rng: random.Random) -> Exception | None:
        table = (getattr(handler, "body", None) or {}).get("TableName")
        if action != _TRANSACTION and tables is not None and table not in tables:
            return None
        if action == _TRANSACTION:
            items = _transaction_items(handler)
            return _cancelled(
                items, rng.randrange(max(1, items)), "TransactionConflict", "Transaction is ongoing for the item."
            )
        return _TransactionConflict()

    actions = (*_SINGLE_WRITES, _TRANSACTION) if single_item_writes else (_TRANSACTION,)
    with _dynamodb_calls(actions, probability, seed, conflict) as counter:
        yield counter


def _part(requests: int, processed: int | None, *, at_least: int) -> int:
    """How many of a call's ``requests`` the service carries out: ``processed`` if given, by default half (rounded
    up), never fewer than ``at_least`` nor more than there are."""
    wanted = (requests + 1) // 2 if processed is None else processed
    return min(requests, max(at_least, wanted))


@contextmanager
def dynamodb_partial_batches(
    probability: float = 1.0, *, seed: int = 7, processed: int | None = None
) -> Iterator[FaultCounter]:
    """On that fraction of BatchGetItem and BatchWriteItem calls (repeatably by seed) DynamoDB carries out only the
    first ``processed`` keys or write requests (by default half, rounded up) and answers the others in
    ``UnprocessedKeys`` / ``UnprocessedItems``, as it does when a batch meets the table's throughput or the 16 MB
    response limit. Nothing of those is read or written, and botocore does not retry them: the product's code must.
    At least one request of a call is carried out (DynamoDB answers a batch of which it can do nothing with
    ``ProvisionedThroughputExceededException``, which is ``dynamodb_throttling``)."""
    from moto.dynamodb.responses import DynamoHandler

    counter = FaultCounter()
    rng = random.Random(seed)
    lock = threading.Lock()

    def drawn() -> bool:
        with lock:
            counter.calls += 1
            return rng.random() < probability

    def partial(original: Any, answer: str, requests_of: Any, holding: Any) -> Any:
        """``original`` carrying out part of each drawn call, the rest in the answer's ``answer`` field (by table;
        ``requests_of`` a table's part of the call, ``holding`` that part again with only some of its requests)."""

        def call(self: Any) -> Any:
            if not drawn():
                return original(self)
            counter.hit()
            batches = self.body["RequestItems"]
            asked = [(table, request) for table, part in batches.items() for request in requests_of(part)]
            done = _part(len(asked), processed, at_least=1)
            split: tuple[dict[str, list[Any]], dict[str, list[Any]]] = ({}, {})
            for n, (table, request) in enumerate(asked):
                split[n >= done].setdefault(table, []).append(request)
            kept, left = ({table: holding(batches[table], some) for table, some in half.items()} for half in split)
            self.body = {**self.body, "RequestItems": kept}
            result = original(self)
            fields = result.result
            assert isinstance(fields, dict)
            fields[answer] = left
            return result

        return call

    batch_get_item = partial(
        DynamoHandler.batch_get_item, "UnprocessedKeys", lambda spec: spec["Keys"], lambda spec, k: {**spec, "Keys": k}
    )
    batch_write_item = partial(
        DynamoHandler.batch_write_item, "UnprocessedItems", lambda requests: requests, lambda _all, some: some
    )

    with (
        mock.patch.object(DynamoHandler, "batch_get_item", batch_get_item),
        mock.patch.object(DynamoHandler, "batch_write_item", batch_write_item),
    ):
        yield counter


@contextmanager
def sqs_partial_batches(
    probability: float = 1.0, *, seed: int = 7, sent: int | None = None, sender_fault: bool = False
) -> Iterator[FaultCounter]:
    """On that fraction of SendMessageBatch calls (repeatably by seed) SQS sends only the first ``sent`` entries (by
    default half, rounded up; 0 fails them all) and lists the others in ``Failed`` with ``SenderFault`` false and
    code ``InternalError`` (a failure on SQS's side: sending again may succeed), or with ``SenderFault`` true when
    ``sender_fault`` (the entry itself is wrong: sending it again cannot help). The call itself succeeds, so botocore
    retries nothing: the product's code must."""
    from moto.sqs.models import SQSBackend

    counter = FaultCounter()
    rng = random.Random(seed)
    lock = threading.Lock()
    original = SQSBackend.send_message_batch

    def send_message_batch(self: Any, queue_name: str, entries: dict[str, dict[str, Any]]) -> Any:
        with lock:
            counter.calls += 1
            fire = rng.random() < probability
        if not fire:
            return original(self, queue_name, entries)
        counter.hit()
        asked = list(entries.items())
        done = _part(len(asked), sent, at_least=0)
        messages, failed = original(self, queue_name, dict(asked[:done])) if done else ([], [])
        for _, entry in asked[done:]:
            failed.append(
                {
                    "Id": entry["Id"],
                    "SenderFault": sender_fault,
                    "Code": "InvalidParameterValue" if sender_fault else "InternalError",
                    "Message": "The entry was not sent (injected fault).",
                }
            )
        return messages, failed

    with mock.patch.object(SQSBackend, "send_message_batch", send_message_batch):
        yield counter
