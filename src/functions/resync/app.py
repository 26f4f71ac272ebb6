"""State machine task: resync a sale from the error list (seed step 3). Still failing → ResyncFailed → help desk."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.observability import logger, metrics, record_outcome, tracer
from shared.settings import Settings
from shared.tasks import EscalationRequired, ResyncFailed, parse_task, workflow_errors
from shared.wiring import build_service


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event)
    logger.append_keys(connection_id=task.connection_id, sale_id=task.sale_id, execution_id=task.execution_id)
    with workflow_errors():
        answer = build_service(Settings.from_env()).tasks.resync(
            task.connection_id, task.sale_id, execution_arn=task.execution_id, attempts=task.attempts, cart=task.cart
        )
    result = answer.result
    if answer.failed:
        logger.warning("resync failed", extra={"error_type": result.error_type, "retryable": result.retryable})
        raise (ResyncFailed if answer.retryable else EscalationRequired)(result.detail or result.error_type)
    record_outcome(result, operation="resync")
    return result.to_output()
