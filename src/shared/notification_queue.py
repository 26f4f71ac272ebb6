"""The notifications queue: one SQS message per queued notification (``QueuedNotification``), 10 per call."""

from __future__ import annotations

from typing import Any

from shared.notifications import QueuedNotification

BATCH = 10  # SendMessageBatch limit


class NotificationQueueError(RuntimeError):
    """Some notifications could not be queued: the callback answers 5xx (ML retries), the schedule fails its run."""


class SqsNotificationQueue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self._url = queue_url

    def send(self, notifications: list[QueuedNotification], *, delay_seconds: int = 0) -> None:
        delay = {"DelaySeconds": delay_seconds} if delay_seconds else {}
        if len(notifications) == 1:  # the callback's case: one call, the cheapest
            self._sqs.send_message(QueueUrl=self._url, MessageBody=notifications[0].model_dump_json(), **delay)
            return
        for start in range(0, len(notifications), BATCH):
            batch = notifications[start : start + BATCH]
            answer = self._sqs.send_message_batch(
                QueueUrl=self._url,
                Entries=[{"Id": str(i), "MessageBody": n.model_dump_json(), **delay} for i, n in enumerate(batch)],
            )
            failed = answer.get("Failed", [])
            if failed:
                raise NotificationQueueError(
                    f"{len(failed)} notification(s) could not be queued: {[f.get('Code') for f in failed[:3]]}"
                )
