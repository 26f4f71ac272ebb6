"""State machine task: the seed's checks for one sale, and where the relink state machine goes next.

Claims the sale for this execution when nobody did (a run started from the console); settles at once what needs no
attempt (already reflected, or blocked by its product or ML status); follows another live execution of the sale.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.observability import logger, metrics, record_outcome, tracer
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
        triage = build_service(Settings.from_env()).tasks.triage(
            task.connection_id, task.sale_id, execution_arn=task.execution_id, attempts=task.attempts, cart=task.cart
        )
    answer: dict[str, Any] = {"next_action": triage.route.value}
    if triage.result is not None:
        settled = triage.result.model_copy(update={"attempts": task.attempts})  # this execution's attempts
        record_outcome(settled, operation="verify")
        answer["output"] = settled.to_output()
    logger.info("triaged", extra={"next_action": triage.route.value})
    return answer
