"""State machine task: escalate the sale (a transition of its own execution's episode), then page the help desk.

A sale reflected or blocked meanwhile, or owned by someone else, is not escalated and nobody is paged: the output
says where the sale stands.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.models import Reason
from shared.observability import logger, metrics, tracer
from shared.settings import Settings
from shared.tasks import parse_task, workflow_errors
from shared.wiring import build_service


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event)
    logger.append_keys(connection_id=task.connection_id, sale_id=task.sale_id, execution_id=task.execution_id)
    with workflow_errors():
        result = build_service(Settings.from_env(), notifier=True).tasks.escalate(
            task.connection_id,
            task.sale_id,
            execution_arn=task.execution_id,
            reason=task.reason or Reason.RETRIES_EXHAUSTED,
            attempts=task.attempts,
            last_error=task.last_error,
            cart=task.cart,
        )
    logger.info("escalation decided", extra={"outcome": result.outcome, "reason": result.reason})
    return result.to_output()
