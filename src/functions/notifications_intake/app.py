"""Mercado Libre's notification callback, ``POST /notifications/mercadolibre`` (DESIGN §3.1; no IAM: ML cannot sign).

Thin and fast: parse the API Gateway proxy event, hand the body to the intake (check, queue), map the answer. ML wants
200 within 500 ms, so nothing but the seller look-up (remembered while warm) and one SendMessage happens here.

- 200 ``{"status": "queued", "notification_id"}``: an order of a known seller, queued for the processing;
- 200 ``{"status": "ignored", "reason", "notification_id"}``: well formed, but not ours to work on (another
  application, an unknown seller, another topic, a resource that is not an order); ML must not retry it;
- 400 / 413 / 415 ``{"message", "error"}``: not an ML notification at all (nothing ML sends);
- 500: the queue refused it; ML retries, and after an hour keeps it in the missed feeds.

Every answer is counted in the ``Notifications`` metric with its ``result`` (queued, or the reason).
"""

from __future__ import annotations

import base64
import binascii
import json
from typing import Any

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from aws_lambda_powertools.utilities.typing import LambdaContext
from snapshot_restore_py import register_after_restore, register_before_snapshot

from shared.notifications import MAX_NOTIFICATION_BYTES, BadNotification
from shared.observability import dimensioned_metrics_enabled, logger, metrics, tracer
from shared.settings import Settings
from shared.snapstart import after_restore, warm
from shared.wiring import build_notification_intake

# What the callback's first request would import (its two clients, the queue, the sellers' index).
INTAKE_LAZY_MODULES = ("boto3", "shared.notification_queue", "shared.stores.sellers")

JSON_TYPES = ("application/json", "text/json", "application/x-www-form-urlencoded")  # ML's documented: JSON


def _answer(status: int, body: dict[str, Any]) -> dict[str, Any]:
    return {"statusCode": status, "headers": {"Content-Type": "application/json"}, "body": json.dumps(body)}


def _count(result: str) -> None:
    if not dimensioned_metrics_enabled():
        return
    with single_metric(name="Notifications", unit=MetricUnit.Count, value=1, namespace=metrics.namespace) as metric:
        metric.add_dimension(name="result", value=result)


def _body(event: dict[str, Any]) -> str | bytes | None:
    body = event.get("body")
    if not event.get("isBase64Encoded") or body is None:
        return body
    if len(body) > MAX_NOTIFICATION_BYTES * 2:  # checked before decoding: never decode a huge body
        raise BadNotification(
            413, "too_large", f"A Mercado Libre notification has at most {MAX_NOTIFICATION_BYTES} bytes."
        )
    try:
        return base64.b64decode(body, validate=True)
    except (binascii.Error, ValueError):
        raise BadNotification(400, "malformed_body", "The body is not valid base64.") from None


def _content_type(event: dict[str, Any]) -> str | None:
    headers = event.get("headers") or {}
    value = next((v for k, v in headers.items() if k.lower() == "content-type"), None)
    return value.split(";", 1)[0].strip().lower() if isinstance(value, str) else None


@logger.inject_lambda_context(log_event=False, clear_state=True)
@tracer.capture_lambda_handler(capture_response=False)
def lambda_handler(event: dict[str, Any], context: LambdaContext) -> dict[str, Any]:
    try:
        kind = _content_type(event)
        if kind is not None and kind not in JSON_TYPES:
            raise BadNotification(
                415, "unsupported_media_type", f"Send JSON (Content-Type application/json), not {kind}."
            )
        answer = build_notification_intake(Settings.from_env()).accept(_body(event))
    except BadNotification as bad:
        _count(bad.reason)
        logger.warning("not a notification", extra={"error": bad.reason, "status": bad.status})
        return _answer(bad.status, {"message": str(bad), "error": bad.reason})
    _count(answer.reason.value if answer.reason is not None else answer.status)
    logger.info("notification", extra=answer.model_dump(mode="json", exclude_none=True))
    return _answer(200, answer.model_dump(mode="json", exclude_none=True))


# --- Lambda SnapStart (template.yaml: SnapStart on the published versions behind the `live` alias) ------------------


@register_before_snapshot
def _before_snapshot() -> None:
    """Once per published version: the modules, schemas and the two service models every sandbox starts with; no
    request is made, no client kept (the seller cache is per sandbox, empty in the snapshot)."""
    warmed = warm(modules=INTAKE_LAZY_MODULES, services=("dynamodb", "sqs"))
    logger.info("warmed before the snapshot", extra=warmed)


@register_after_restore
def _after_restore() -> None:
    """In every restored sandbox: its own clients, credentials and randomness."""
    after_restore()
