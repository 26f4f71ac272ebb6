"""SQS worker: one record is one bulk message of at most 50 sale ids (DESIGN §3).

Powertools batch processing with partial batch responses: a record that fails (a poison body, or a store error
mid-message) is reported alone and comes back later, then goes to the DLQ after three receives; its siblings are
deleted. Reprocessing a redelivered message settles nothing twice: the job ledger skips settled ids.

The records of one invocation (up to the event source's BatchSize) are processed at the same time, each in a
thread of its own (``AsyncBatchProcessor`` + ``asyncio.to_thread``): the work is waiting on Mercado Libre, so an
invocation lasts as long as its slowest message rather than the sum of them, and the shared quota bucket still
bounds the requests of all of them together.
"""

from __future__ import annotations

import asyncio
import threading
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import Json

from shared.bulk import BulkMessage, MessageReport
from shared.observability import logger, metrics, tracer
from shared.settings import Settings
from shared.wiring import build_bulk_service

_metrics_lock = threading.Lock()  # the records' threads add to one metric set


class BulkRecord(SqsRecordModel):
    body: Json[BulkMessage]


async def record_handler(record: BulkRecord) -> None:
    await asyncio.to_thread(process_message, record.body)


@tracer.capture_method(capture_response=False)
def process_message(message: BulkMessage) -> MessageReport:
    # Per-thread log keys (a context variable): the records of one invocation run side by side.
    logger.thread_safe_append_keys(job_id=message.job_id, connection_id=message.connection_id)
    report = build_bulk_service(Settings.from_env()).process(message)
    with _metrics_lock:
        # Counted by this run only: a redelivered message adds nothing to the totals for what it skipped.
        metrics.add_metric(name="BulkSalesSettled", unit=MetricUnit.Count, value=report.settled)
        metrics.add_metric(name="BulkSalesHandedOver", unit=MetricUnit.Count, value=report.continued)
    logger.info("bulk message processed", extra=report.model_dump())
    return report


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Built here, before the records' threads start: on a cold start they would otherwise each build their own
    # (lru_cache does not make concurrent first calls wait for one another).
    build_bulk_service(Settings.from_env())
    # One processor per invocation: it holds the batch's state.
    processor = AsyncBatchProcessor(event_type=EventType.SQS, model=BulkRecord, raise_on_entire_batch_failure=False)
    response = async_process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
