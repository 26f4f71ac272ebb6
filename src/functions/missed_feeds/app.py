"""EventBridge schedule: read Mercado Libre's missed feeds (``orders_v2`` notifications it could not deliver) of every
connection and queue what was never handled for the notification processing (``shared.missed_feeds``). A manual run
from the console may name one connection: ``{"connection_id": "mla-main"}``.
"""

from __future__ import annotations

from typing import Any

from aws_lambda_powertools.utilities.typing import LambdaContext

from shared.observability import logger, metrics, tracer
from shared.schedules import finish_run, parse_schedule_input
from shared.settings import Settings
from shared.wiring import build_missed_feeds


@logger.inject_lambda_context(log_event=False, clear_state=True)
@metrics.log_metrics
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    request = parse_schedule_input(event, windows=False)
    summaries = build_missed_feeds(Settings.from_env()).run(request)
    return finish_run("missed_feeds", summaries)
