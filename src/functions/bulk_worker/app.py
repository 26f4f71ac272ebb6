"""SQS worker: one record is one bulk message of at most 50 sale ids (DESIGN §3).

Powertools batch processing with partial batch responses: a record that fails (a poison body, or a store error
mid-message) is reported alone and comes back later, then goes to the DLQ after three receives; its siblings are
deleted. Reprocessing a redelivered message settles nothing twice: the job ledger skips settled ids.

The records of one invocation (up to the event source's BatchSize) are processed at the same time, each in a
thread of its own (``AsyncBatchProcessor`` + ``asyncio.to_thread``): the work is waiting on Mercado Libre, so an
invocation lasts as long as its slowest message rather than the sum of them, and the shared quota bucket still
bounds the requests of all of them together.

The worker knows its deadline: each message's run gets the invocation's time left (``context``'s
``get_remaining_time_in_millis``, as a plain callable: the domain never sees the context) and stops taking ids when
that time cannot cover one more; the ids left go back to the queue in a new message and the record succeeds, so a
batch that the quota makes slow never times out and never spends a receive toward the DLQ (``BulkService.process``).
"""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Callable
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.batch import AsyncBatchProcessor, EventType, async_process_partial_response
from aws_lambda_powertools.utilities.parser.models import SqsRecordModel
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import ConfigDict, Json

from shared.bulk import BulkMessage, MessageReport
from shared.observability import logger, metrics, tracer
from shared.queue import LANE_ATTRIBUTE
from shared.settings import Settings
from shared.wiring import build_bulk_service

_metrics_lock = threading.Lock()  # the records' threads add to one metric set


class BulkRecord(SqsRecordModel):
    # Built by the first record parsed, as every model of shared/ and the handlers (README, cold start).
    model_config = ConfigDict(defer_build=True)

    body: Json[BulkMessage]


async def record_handler(record: BulkRecord, lambda_context: LambdaContext) -> None:
    # Powertools passes the invocation's context to a record handler that names a lambda_context parameter.
    await asyncio.to_thread(process_message, record.body, seconds_left(lambda_context), lane_of(record))


def lane_of(record: SqsRecordModel) -> str | None:
    """The message's lane ref (shared.lanes), a message attribute; None for a message sent without lanes."""
    attribute = record.messageAttributes.get(LANE_ATTRIBUTE)
    return attribute.stringValue if attribute is not None else None


def seconds_left(context: LambdaContext) -> Callable[[], float]:
    """The invocation's time left, in seconds, read afresh on each call."""
    return lambda: context.get_remaining_time_in_millis() / 1000


@tracer.capture_method(capture_response=False)
def process_message(
    message: BulkMessage, remaining: Callable[[], float] | None = None, lane: str | None = None
) -> MessageReport:
    # Per-thread log keys (a context variable): the records of one invocation run side by side.
    logger.thread_safe_append_keys(job_id=message.job_id, connection_id=message.connection_id)
    report = build_bulk_service(Settings.from_env(), queue=True).process(message, remaining=remaining, lane=lane)
    with _metrics_lock:
        # Counted by this run only: a redelivered message adds nothing to the totals for what it skipped.
        metrics.add_metric(name="BulkSalesSettled", unit=MetricUnit.Count, value=report.settled)
        metrics.add_metric(name="BulkSalesHandedOver", unit=MetricUnit.Count, value=report.continued)
        metrics.add_metric(name="BulkSalesHandedBack", unit=MetricUnit.Count, value=report.handed_back)
    logger.info("bulk message processed", extra=report.model_dump())
    return report


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    # Built here, before the records' threads start: on a cold start they would otherwise each build their own
    # (lru_cache does not make concurrent first calls wait for one another).
    build_bulk_service(Settings.from_env(), queue=True)
    # One processor per invocation: it holds the batch's state.
    processor = AsyncBatchProcessor(event_type=EventType.SQS, model=BulkRecord, raise_on_entire_batch_failure=False)
    response = async_process_partial_response(
        event=event, record_handler=record_handler, processor=processor, context=context
    )
    return dict(response)
