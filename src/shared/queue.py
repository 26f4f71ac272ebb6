"""The bulk queue: SendMessageBatch, 10 entries per call.

A call that succeeds may still fail some of its entries (its ``Failed`` list). Those go again after a jittered
back-off (``shared.backoff``: botocore retries only a call that fails whole), for a bounded number of rounds; an
entry failed for the sender's fault (``SenderFault``: the entry itself is wrong) is not sent again. Whatever did not
go out raises ``QueueSendError`` listing every such message (the failed ones and the later ones never tried).
"""

from __future__ import annotations

from typing import Any

from botocore.exceptions import BotoCoreError, ClientError

from shared.backoff import DEFAULT, Rounds
from shared.bulk import BulkMessage, QueueSendError

BATCH = 10  # SendMessageBatch limit


class SqsBulkQueue:
    def __init__(self, sqs_client: Any, queue_url: str, *, rounds: Rounds = DEFAULT) -> None:
        self._sqs = sqs_client
        self._url = queue_url
        self._rounds = rounds

    def send(self, messages: list[BulkMessage], *, lanes: list[str] | None = None) -> int:
        sent = 0
        lane_of = dict(enumerate(lanes or []))
        for start in range(0, len(messages), BATCH):
            pending = {str(i): m for i, m in enumerate(messages[start : start + BATCH], start)}
            refused: dict[str, BulkMessage] = {}  # failed for the sender's fault: sending them again cannot help
            failed: list[dict[str, Any]] = []
            for _ in self._rounds:
                try:
                    response = self._sqs.send_message_batch(
                        QueueUrl=self._url,
                        Entries=[_entry(key, m, lane_of.get(int(key))) for key, m in pending.items()],
                    )
                except (ClientError, BotoCoreError) as exc:  # nothing of this call went out
                    unsent = [*refused.values(), *pending.values(), *messages[start + BATCH :]]
                    raise QueueSendError(str(exc), unsent=unsent) from exc
                for ok in response.get("Successful", []):
                    if pending.pop(ok["Id"], None) is not None:
                        sent += 1
                failed = response.get("Failed", [])
                for entry in failed:
                    if entry.get("SenderFault") and entry["Id"] in pending:
                        refused[entry["Id"]] = pending.pop(entry["Id"])
                if not pending:
                    break
            if pending or refused:
                left = sorted({**refused, **pending}.items(), key=lambda kv: int(kv[0]))
                reasons = [(f["Id"], f.get("Code"), f.get("SenderFault", False)) for f in failed[:3]]
                raise QueueSendError(
                    f"{len(left)} bulk message(s) could not be queued ({len(refused)} refused for the sender's fault, "
                    f"{len(pending)} still failing after {self._rounds.tries} tries; last failures {reasons}); "
                    f"{max(0, len(messages) - start - BATCH)} later one(s) not tried",
                    unsent=[*(m for _, m in left), *messages[start + BATCH :]],
                )
        return sent


LANE_ATTRIBUTE = "lane"  # the message's lane ref (shared.lanes); the body keeps DESIGN §3's shape


def _entry(key: str, message: BulkMessage, lane: str | None) -> dict[str, Any]:
    entry: dict[str, Any] = {"Id": key, "MessageBody": message.model_dump_json()}
    if lane:
        entry["MessageAttributes"] = {LANE_ATTRIBUTE: {"DataType": "String", "StringValue": lane}}
    return entry
