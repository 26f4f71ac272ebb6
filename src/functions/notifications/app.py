"""SQS worker of the notifications queue: a batch of queued ML notifications, collapsed per sale, becomes at most one
notification-triggered job per connection on the bulk path (``shared.usecases.notified_sales``).

A connection whose job could not be written or queued fails its own records only (partial batch response): they
come back and are collapsed again, and after five receives rest in the DLQ (its alarm calls a person). A record
whose body is not a queued notification fails alone the same way.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.parser.models import SqsModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ValidationError

from shared.notifications import QueuedNotification
from shared.observability import logger, metrics, tracer
from shared.settings import Settings
from shared.wiring import build_notified_sales


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    batch = SqsModel.model_validate(event)
    failures: list[dict[str, str]] = []
    by_connection: dict[str, list[tuple[str, QueuedNotification]]] = {}
    for record in batch.Records:
        try:
            queued = QueuedNotification.model_validate_json(str(record.body))
        except ValidationError as exc:
            logger.error("not a queued notification", extra={"message_id": record.messageId, "error": str(exc)[:500]})
            failures.append({"itemIdentifier": record.messageId})
            continue
        by_connection.setdefault(queued.connection_id, []).append((record.messageId, queued))
    service = build_notified_sales(Settings.from_env())
    for connection_id, records in by_connection.items():
        try:
            report = service.process_connection(connection_id, [q for _, q in records])
        except Exception:
            logger.exception("notifications of a connection failed", extra={"connection_id": connection_id})
            failures += [{"itemIdentifier": message_id} for message_id, _ in records]
            continue
        metrics.add_metric(name="NotifiedSalesEnqueued", unit=MetricUnit.Count, value=len(report.enqueued))
        metrics.add_metric(name="NotifiedSalesSkipped", unit=MetricUnit.Count, value=sum(report.skipped.values()))
        metrics.add_metric(name="NotifiedSalesDeferred", unit=MetricUnit.Count, value=len(report.deferred))
        logger.info("notifications processed", extra=report.model_dump(mode="json", exclude_none=True))
    return {"batchItemFailures": failures}
