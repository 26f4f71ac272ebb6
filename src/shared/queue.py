"""The bulk queue: SendMessageBatch (10 entries per call), entries that fail are sent again, a few times."""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.bulk import BulkMessage, QueueSendError

BATCH = 10  # SendMessageBatch limit
TRIES = 3


class SqsBulkQueue:
    def __init__(self, sqs_client: Any, queue_url: str) -> None:
        self._sqs = sqs_client
        self._url = queue_url

    def send(self, messages: list[BulkMessage]) -> int:
        sent = 0
        for start in range(0, len(messages), BATCH):
            pending = {str(i): m for i, m in enumerate(messages[start : start + BATCH], start)}
            failed: list[Any] = []
            for _ in range(TRIES):
                try:
                    response = self._sqs.send_message_batch(
                        QueueUrl=self._url,
                        Entries=[{"Id": key, "MessageBody": m.model_dump_json()} for key, m in pending.items()],
                    )
                except (ClientError, BotoCoreError) as exc:  # nothing of this batch went out
                    raise QueueSendError(str(exc), unsent=[*pending.values(), *messages[start + BATCH :]]) from exc
                for ok in response.get("Successful", []):
                    pending.pop(ok["Id"], None)
                    sent += 1
                failed = response.get("Failed", [])
                if not pending:
                    break
            if pending:
                raise QueueSendError(
                    f"{len(pending)} bulk message(s) could not be queued: {failed[:3]}",
                    unsent=[*pending.values(), *messages[start + BATCH :]],
                )
        return sent
