"""EventBridge rule target: a relink execution ended FAILED, TIMED_OUT or ABORTED ("Step Functions Execution Status
Change"). If the execution still owned its sale (it ended without settling it), the sale is escalated, its waiting
job items settled and the help desk paged: nothing stays in progress behind a dead execution.
"""

from __future__ import annotations

import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit
from aws_lambda_powertools.utilities.typing import LambdaContext
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.observability import logger, metrics, tracer
from shared.settings import Settings
from shared.wiring import build_service


class ExecutionStatus(BaseModel):
    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    execution_arn: str = Field(alias="executionArn")
    name: str
    status: str
    input: str | None = None


class ExecutionStatusChange(BaseModel):
    """The EventBridge event Step Functions sends when an execution's status changes."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    detail_type: str = Field(alias="detail-type", pattern="^Step Functions Execution Status Change$")
    source: str = Field(pattern="^aws\\.states$")
    detail: ExecutionStatus


class SaleInput(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)

    connection_id: str = Field(min_length=1, max_length=64)
    sale_id: str = Field(min_length=1, max_length=64)


class NotAnExecutionStatusChange(ValueError):
    """The event is not a Step Functions status change: the rule's pattern is wrong, or the event was hand-made."""


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        change = ExecutionStatusChange.model_validate(event)
    except ValidationError as exc:
        raise NotAnExecutionStatusChange(f"not a Step Functions execution status change: {exc}") from None
    execution = change.detail
    try:
        sale = SaleInput.model_validate(json.loads(execution.input or "{}"))
    except (ValueError, ValidationError):
        # An invalid console input fails the execution before it touches a sale: nothing to settle.
        logger.info("ended execution names no sale", extra={"execution": execution.name, "status": execution.status})
        return {"settled": False}
    logger.append_keys(connection_id=sale.connection_id, sale_id=sale.sale_id, execution=execution.name)
    settled = build_service(Settings.from_env(), notifier=True).reaper.execution_ended(
        sale.connection_id, sale.sale_id, execution_name=execution.name, status=execution.status
    )
    if settled:
        metrics.add_metric(name="AbandonedSalesSettled", unit=MetricUnit.Count, value=1)
    logger.info("execution ended", extra={"status": execution.status, "settled": settled})
    return {"settled": settled}
