"""Drives SQS-triggered functions locally, the way Lambda's event-source mapping does in the cloud.

The mappings are the ``AWS::Lambda::EventSourceMapping`` resources SAM generates from template.yaml's SQS events, as
the deployed stack has them (``LocalAws.event_source_mappings``, parameters resolved): nothing here restates a number.
For each mapping, ``ScalingConfig.MaximumConcurrency`` pollers (five when it is not set, where Lambda's SQS poller
starts; never more than the function's ``ReservedConcurrentExecutions``, past which Lambda throttles) each long-poll
the queue, hand a batch of up to ``BatchSize`` messages (gathered over ``MaximumBatchingWindowInSeconds`` when over 10)
to the function as one whole SQS event, and delete what succeeded, honouring ``ReportBatchItemFailures`` when the
mapping lists it in ``FunctionResponseTypes``. A mapping with ``Enabled: false`` is not polled.

When the invocation fails:

* The function timed out (``devstack.lambdas`` enforces its ``Timeout``): nothing is deleted and nothing is released
  early, exactly as in the cloud; every message of the batch comes back after the queue's visibility timeout (the
  handler may still be running as an orphan until then) and that receive counts toward ``maxReceiveCount``.
* The handler raised, or reported items failed: the failed records are made visible again after
  ``redelivery_seconds`` (the cloud waits for the queue's visibility timeout; locally nobody wants to wait 12 minutes
  for a failure the handler already finished with); the redrive policy moves a message to the DLQ after
  ``maxReceiveCount`` receives.

``peak_concurrency`` and ``largest_batch`` record, per function, the most invocations in flight at once and the
largest batch handed over; ``timeouts`` counts the batches whose invocation timed out.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from devstack.aws import LocalAws
from devstack.lambdas import LambdaTimedOut

SQS_DEFAULT_BATCH_SIZE = 10  # Lambda's default BatchSize for an SQS event source
DEFAULT_MAX_CONCURRENCY = 5  # Lambda's SQS poller starts with five concurrent batches when nothing caps it
RECEIVE_WAIT_SECONDS = 1  # long polling; Lambda's pollers wait 20 s, locally 1 s so that stop() is prompt


@dataclass(frozen=True)
class SqsMapping:
    function: str  # logical id
    queue: str  # logical id
    batch_size: int
    partial_batch: bool
    max_concurrency: int | None = None  # ScalingConfig.MaximumConcurrency; None when the mapping sets none
    batching_window: float = 0.0  # MaximumBatchingWindowInSeconds
    reserved_concurrency: int | None = None  # the function's ReservedConcurrentExecutions
    enabled: bool = True
    logical_id: str = ""  # the AWS::Lambda::EventSourceMapping

    @property
    def concurrency(self) -> int:
        """How many batches may be in the function at once."""
        wanted = self.max_concurrency or DEFAULT_MAX_CONCURRENCY
        return min(wanted, self.reserved_concurrency) if self.reserved_concurrency is not None else wanted


def sqs_mappings(aws: LocalAws) -> list[SqsMapping]:
    """The deployed stack's SQS event-source mappings (deploy first)."""
    resources: dict[str, Any] = aws.translated_template.get("Resources", {})
    found = []
    for logical_id, props in sorted(aws.event_source_mappings.items()):
        queue = _logical_id(props.get("EventSourceArn"))
        if resources.get(queue, {}).get("Type") != "AWS::SQS::Queue":
            continue  # streams (Kinesis, DynamoDB) are not polled locally
        function = _logical_id(props.get("FunctionName"))
        scaling = props.get("ScalingConfig") or {}
        reserved = resources.get(function, {}).get("Properties", {}).get("ReservedConcurrentExecutions")
        found.append(
            SqsMapping(
                function=function,
                queue=queue,
                batch_size=int(_value(props.get("BatchSize", SQS_DEFAULT_BATCH_SIZE), aws.parameters)),
                partial_batch="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
                max_concurrency=_optional_int(scaling.get("MaximumConcurrency"), aws.parameters),
                batching_window=float(_value(props.get("MaximumBatchingWindowInSeconds", 0), aws.parameters)),
                reserved_concurrency=_optional_int(reserved, aws.parameters),
                enabled=str(_value(props.get("Enabled", True), aws.parameters)).lower() != "false",
                logical_id=logical_id,
            )
        )
    return found


def _value(node: Any, parameters: dict[str, str]) -> Any:
    """A template value: a ``Ref`` to a parameter is the deployed parameter's value."""
    if isinstance(node, dict) and isinstance(node.get("Ref"), str) and node["Ref"] in parameters:
        return parameters[node["Ref"]]
    if isinstance(node, dict):
        raise ValueError(f"cannot resolve {node!r} in an event source mapping")
    return node


def _optional_int(node: Any, parameters: dict[str, str]) -> int | None:
    return None if node is None else int(_value(node, parameters))


def _logical_id(node: Any) -> str:
    """``{"Ref": X}`` or ``{"Fn::GetAtt": [X, "Arn"]}`` -> X."""
    if isinstance(node, dict) and isinstance(node.get("Ref"), str):
        return str(node["Ref"])
    if isinstance(node, dict) and "Fn::GetAtt" in node:
        get_att = node["Fn::GetAtt"]
        return str(get_att[0] if isinstance(get_att, list) else str(get_att).split(".", 1)[0])
    return str(node)


class SqsPoller:
    def __init__(self, aws: LocalAws, *, concurrency: int | None = None, redelivery_seconds: int = 1) -> None:
        self._aws = aws
        self._concurrency = concurrency  # None: each mapping's own (MaximumConcurrency); a number overrides it
        self._redelivery = redelivery_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight = 0
        self._busy: dict[str, int] = {}
        self._lock = threading.Lock()
        self.mappings = sqs_mappings(aws)
        self.invocations = 0
        self.timeouts = 0
        self.peak_concurrency: dict[str, int] = {}
        self.largest_batch: dict[str, int] = {}

    def start(self) -> SqsPoller:
        sqs = self._aws.client("sqs")
        for mapping in self.mappings:
            if not mapping.enabled:
                continue
            url = self._aws.physical_id(mapping.queue)
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            for n in range(self.pollers(mapping)):
                thread = threading.Thread(
                    target=self._poll, args=(mapping, url, arn), name=f"sqs-{mapping.function}-{n}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return self

    def pollers(self, mapping: SqsMapping) -> int:
        """Batches of this mapping in flight at most (one poller thread each)."""
        return self._concurrency if self._concurrency is not None else mapping.concurrency

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Until every mapped queue is empty and no batch is in flight."""
        sqs = self._aws.client("sqs")
        urls = [self._aws.physical_id(m.queue) for m in self.mappings if m.enabled]
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self._lock:
                busy = self._in_flight
            waiting = 0
            for url in urls:
                attrs = sqs.get_queue_attributes(
                    QueueUrl=url,
                    AttributeNames=["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"],
                )["Attributes"]
                waiting += int(attrs["ApproximateNumberOfMessages"]) + int(
                    attrs["ApproximateNumberOfMessagesNotVisible"]
                )
            if not busy and not waiting:
                return
            time.sleep(0.1)
        raise TimeoutError("SQS queues still busy")

    def _receive(self, sqs: Any, mapping: SqsMapping, url: str) -> list[dict[str, Any]]:
        """One batch: up to BatchSize messages (10 per ReceiveMessage), gathered over the batching window."""

        def receive(count: int, wait: int) -> list[dict[str, Any]]:
            got = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=count,
                WaitTimeSeconds=wait,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages: list[dict[str, Any]] = got.get("Messages", [])
            return messages

        messages = receive(min(10, mapping.batch_size), RECEIVE_WAIT_SECONDS)
        window_ends = time.monotonic() + mapping.batching_window
        while messages and len(messages) < mapping.batch_size and not self._stop.is_set():
            left = window_ends - time.monotonic()
            if left <= 0:
                break
            messages += receive(min(10, mapping.batch_size - len(messages)), 1 if left >= 1 else 0)
        return messages

    def _poll(self, mapping: SqsMapping, url: str, arn: str) -> None:
        sqs = self._aws.client("sqs")
        while not self._stop.is_set():
            messages = self._receive(sqs, mapping, url)
            if not messages:
                continue
            with self._lock:
                self._in_flight += 1
                self.invocations += 1
                busy = self._busy[mapping.function] = self._busy.get(mapping.function, 0) + 1
                self.peak_concurrency[mapping.function] = max(self.peak_concurrency.get(mapping.function, 0), busy)
                self.largest_batch[mapping.function] = max(self.largest_batch.get(mapping.function, 0), len(messages))
            try:
                self._deliver(sqs, mapping, url, arn, messages)
            finally:
                with self._lock:
                    self._in_flight -= 1
                    self._busy[mapping.function] -= 1

    def _deliver(self, sqs: Any, mapping: SqsMapping, url: str, arn: str, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [sqs_record(m, arn, self._aws.region) for m in messages]}
        try:
            response = self._aws.runtime.invoke(mapping.function, event)
        except LambdaTimedOut:
            # As in the cloud: the batch stays in flight until the visibility timeout, then every message comes back
            # (one receive spent). Releasing it early would hand it to a second invocation while the first still runs.
            with self._lock:
                self.timeouts += 1
            return
        except Exception:  # the whole batch failed: every record comes back
            failed = {m["MessageId"] for m in messages}
        else:
            failures = (response or {}).get("batchItemFailures", []) if mapping.partial_batch else []
            failed = {f["itemIdentifier"] for f in failures}
        done = [m for m in messages if m["MessageId"] not in failed]
        for start in range(0, len(done), 10):
            sqs.delete_message_batch(
                QueueUrl=url,
                Entries=[
                    {"Id": str(i), "ReceiptHandle": m["ReceiptHandle"]} for i, m in enumerate(done[start : start + 10])
                ],
            )
        for message in messages:
            if message["MessageId"] in failed:
                sqs.change_message_visibility(
                    QueueUrl=url, ReceiptHandle=message["ReceiptHandle"], VisibilityTimeout=self._redelivery
                )


def sqs_record(message: dict[str, Any], queue_arn: str, region: str) -> dict[str, Any]:
    """One record of an SQS event, in the shape Lambda delivers it."""
    attributes = message.get("Attributes", {})
    return {
        "messageId": message["MessageId"],
        "receiptHandle": message["ReceiptHandle"],
        "body": message["Body"],
        "attributes": {
            "ApproximateReceiveCount": attributes.get("ApproximateReceiveCount", "1"),
            "SentTimestamp": attributes.get("SentTimestamp", str(int(time.time() * 1000))),
            "SenderId": attributes.get("SenderId", "AROAEXAMPLEROLEID:sales-recovery-api"),
            "ApproximateFirstReceiveTimestamp": attributes.get(
                "ApproximateFirstReceiveTimestamp", str(int(time.time() * 1000))
            ),
        },
        "messageAttributes": {
            name: _event_attribute(value) for name, value in message.get("MessageAttributes", {}).items()
        },
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }


def _event_attribute(value: dict[str, Any]) -> dict[str, Any]:
    """A message attribute as ReceiveMessage answers it (``StringValue``, ``DataType``), in the event's shape."""
    attribute: dict[str, Any] = {
        "stringValue": value.get("StringValue"),
        "binaryValue": value.get("BinaryValue"),
        "stringListValues": value.get("StringListValues", []),
        "binaryListValues": value.get("BinaryListValues", []),
        "dataType": value["DataType"],
    }
    return {k: v for k, v in attribute.items() if v is not None}
