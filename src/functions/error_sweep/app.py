"""EventBridge schedule: sweep the error list. Retries what is due (through the bulk queue), escalates what is spent,
heals what a fixed product unblocked. A scheduled event sweeps every connection; a manual run from the console may
name one: ``{"connection_id": "mla-main"}``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.observability import logger, metrics, tracer
from shared.schedules import finish_run, parse_schedule_input
from shared.settings import Settings
from shared.wiring import build_schedule_service


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_schedule_input(event, windows=False)
    summaries = build_schedule_service(Settings.from_env()).sweep(request)
    return finish_run("error_sweep", summaries)
