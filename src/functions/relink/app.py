"""State machine task: one relink attempt (fetch the sale from Mercado Libre by id and import it).

A transient failure raises RelinkFailed, which the state machine counts and retries (three attempts in all);
a failure no retry can cure raises EscalationRequired. Idempotent: the attempt key is execution + attempt, and
an execution that no longer owns the sale writes nothing and answers where the sale stands.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.observability import logger, metrics, record_outcome, tracer
from shared.settings import Settings
from shared.tasks import EscalationRequired, RelinkFailed, parse_task, workflow_errors
from shared.wiring import build_service


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    task = parse_task(event)
    attempt = task.attempt or task.attempts + 1
    logger.append_keys(connection_id=task.connection_id, sale_id=task.sale_id, attempt=attempt)
    with workflow_errors():
        answer = build_service(Settings.from_env()).tasks.relink_attempt(
            task.connection_id, task.sale_id, execution_arn=task.execution_id, attempt=attempt, cart=task.cart
        )
    result = answer.result
    if answer.failed:
        logger.warning("relink attempt failed", extra={"error_type": result.error_type, "retryable": result.retryable})
        raise (RelinkFailed if answer.retryable else EscalationRequired)(result.detail or result.error_type)
    record_outcome(result, operation="relink")
    return result.to_output()
