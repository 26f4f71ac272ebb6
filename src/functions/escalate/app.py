"""State machine task: page the help desk (once per sale and failure episode) and settle the sale as escalated."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.models import Reason
from shared.observability import logger, metrics, tracer
from shared.settings import Settings
from shared.tasks import parse_task, report_to_job, workflow_errors
from shared.wiring import build_service


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event)
    logger.append_keys(connection_id=task.connection_id, sale_id=task.sale_id, execution_id=task.execution_id)
    with workflow_errors():
        result = build_service(Settings.from_env(), notifier=True).escalate(
            task.connection_id,
            task.sale_id,
            reason=task.reason or Reason.RETRIES_EXHAUSTED,
            attempts=task.attempts,
            execution_id=task.execution_id,
            last_error=task.last_error_text,
        )
    logger.info("escalated", extra={"reason": result.reason, "attempts": result.attempts})
    report_to_job(task, result)
    return result.to_output()
