"""Drives SQS-triggered functions locally, the way Lambda's event-source mapping does in the cloud.

For every function with an SQS event in template.yaml: long-poll its queue, hand each batch (up to BatchSize) to
the handler as a whole SQS event, delete what succeeded, and honour ``ReportBatchItemFailures``. A failed record
is made visible again after ``redelivery_seconds`` (the cloud waits for the queue's visibility timeout; locally
nobody wants to wait 12 minutes); the queue's redrive policy moves it to the DLQ after maxReceiveCount receives.
"""

from __future__ import annotations

import hashlib
import threading
import time
from dataclasses import dataclass
from typing import Any

from devstack.aws import LocalAws
from devstack.template import load_template


@dataclass(frozen=True)
class SqsMapping:
    function: str  # logical id
    queue: str  # logical id
    batch_size: int
    partial_batch: bool


def sqs_mappings() -> list[SqsMapping]:
    found = []
    for logical_id, res in load_template()["Resources"].items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        for event in res["Properties"].get("Events", {}).values():
            if event["Type"] != "SQS":
                continue
            props = event["Properties"]
            queue = props["Queue"]["Fn::GetAtt"][0] if isinstance(props["Queue"], dict) else props["Queue"]
            found.append(
                SqsMapping(
                    function=logical_id,
                    queue=queue.split(".")[0],
                    batch_size=int(props.get("BatchSize", 10)),
                    partial_batch="ReportBatchItemFailures" in props.get("FunctionResponseTypes", []),
                )
            )
    return found


class SqsPoller:
    def __init__(self, aws: LocalAws, *, concurrency: int = 4, redelivery_seconds: int = 1) -> None:
        self._aws = aws
        self._concurrency = concurrency
        self._redelivery = redelivery_seconds
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []
        self._in_flight = 0
        self._lock = threading.Lock()
        self.invocations = 0

    def start(self) -> SqsPoller:
        sqs = self._aws.client("sqs")
        for mapping in sqs_mappings():
            url = self._aws.physical_id(mapping.queue)
            arn = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
            for n in range(self._concurrency):
                thread = threading.Thread(
                    target=self._poll, args=(mapping, url, arn), name=f"sqs-{mapping.function}-{n}", daemon=True
                )
                thread.start()
                self._threads.append(thread)
        return self

    def stop(self) -> None:
        self._stop.set()
        for thread in self._threads:
            thread.join(timeout=5)

    def wait_idle(self, timeout: float = 120.0) -> None:
        """Until every mapped queue is empty and no batch is in flight."""
        sqs = self._aws.client("sqs")
        urls = [self._aws.physical_id(m.queue) for m in sqs_mappings()]
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

    def _poll(self, mapping: SqsMapping, url: str, arn: str) -> None:
        sqs = self._aws.client("sqs")
        while not self._stop.is_set():
            got = sqs.receive_message(
                QueueUrl=url,
                MaxNumberOfMessages=min(10, mapping.batch_size),
                WaitTimeSeconds=1,
                AttributeNames=["All"],
                MessageAttributeNames=["All"],
            )
            messages = got.get("Messages", [])
            if not messages:
                continue
            with self._lock:
                self._in_flight += 1
                self.invocations += 1
            try:
                self._deliver(sqs, mapping, url, arn, messages)
            finally:
                with self._lock:
                    self._in_flight -= 1

    def _deliver(self, sqs: Any, mapping: SqsMapping, url: str, arn: str, messages: list[dict[str, Any]]) -> None:
        event = {"Records": [sqs_record(m, arn, self._aws.region) for m in messages]}
        try:
            response = self._aws.runtime.invoke(mapping.function, event)
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
        "messageAttributes": message.get("MessageAttributes", {}),
        "md5OfBody": message.get("MD5OfBody") or hashlib.md5(message["Body"].encode()).hexdigest(),
        "eventSource": "aws:sqs",
        "eventSourceARN": queue_arn,
        "awsRegion": region,
    }
