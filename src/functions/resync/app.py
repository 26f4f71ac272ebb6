"""State machine task: resync a sale from the error list (seed step 3). Still failing → ResyncFailed → help desk."""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.models import Outcome, Trigger
from shared.observability import logger, metrics, record_outcome, tracer
from shared.settings import Settings
from shared.tasks import EscalationRequired, ResyncFailed, parse_task, report_to_job, workflow_errors
from shared.wiring import build_service


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event)
    logger.append_keys(connection_id=task.connection_id, sale_id=task.sale_id, execution_id=task.execution_id)
    with workflow_errors():
        result = build_service(Settings.from_env()).resync(
            task.connection_id,
            task.sale_id,
            trigger=Trigger.STATE_MACHINE,
            attempt_key=f"{task.execution_id}#resync",
            escalate_on_failure=False,
            require_listed=False,
        )
    if result.outcome is Outcome.IN_PROGRESS:
        logger.warning("resync failed", extra={"error_type": result.error_type, "retryable": result.retryable})
        raise (ResyncFailed if result.retryable else EscalationRequired)(result.detail or result.error_type)
    settled = result.model_copy(update={"attempts": task.attempts + 1})
    record_outcome(settled, operation="resync")
    report_to_job(task, settled)
    return settled.to_output()
