"""State machine task: the seed's checks for one sale, and where the relink state machine goes next.

Settles at once what needs no attempt: an already reflected sale, or one blocked by its product or ML status.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.models import Trigger
from shared.observability import logger, metrics, record_outcome, tracer
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
        action, result = build_service(Settings.from_env()).triage(
            task.connection_id, task.sale_id, trigger=Trigger.STATE_MACHINE
        )
    answer: dict[str, Any] = {"next_action": action.value}
    if result is not None:
        settled = result.model_copy(update={"attempts": task.attempts})
        record_outcome(settled, operation="verify")
        report_to_job(task, settled)
        answer["output"] = settled.to_output()
    logger.info("triaged", extra={"next_action": action.value})
    return answer
