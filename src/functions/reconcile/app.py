"""EventBridge schedule: reconcile paid Mercado Libre sales that never reached the platform, per connection, from
its watermark. A scheduled event reconciles every connection; a manual run from the console may name one and a
window: ``{"connection_id": "mla-main", "window": {"from": "2024-11-04T00:00:00-03:00", "to": "..."}}``
(a manual window does not move the watermark).
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
    request = parse_schedule_input(event, windows=True)
    summaries = build_schedule_service(Settings.from_env()).reconcile(request)
    return finish_run("reconcile", summaries)
