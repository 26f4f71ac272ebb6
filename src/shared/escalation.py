"""Paging the help desk: one SNS message per escalated sale and failure episode."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any, Protocol

from aws_lambda_powertools.metrics import MetricUnit, single_metric
from pydantic import BaseModel, ConfigDict, Field

from shared.models import ErrorEvent, Reason, utc_now
from shared.observability import dimensioned_metrics_enabled, metrics


class EscalationMessage(BaseModel):
    """What the help desk receives: enough to act without opening another tool."""

    model_config = ConfigDict(defer_build=True)

    connection_id: str
    sale_id: str
    reason: Reason
    summary: str
    attempts: int
    error_type: str
    last_error: str
    first_seen: datetime
    episode: int
    history: list[ErrorEvent]
    execution_id: str | None = None
    escalated_at: datetime = Field(default_factory=utc_now)
    # One page per sale and episode; a help-desk tool that sees the same key twice (the page was sent, and the
    # process died before recording it) can drop the second.
    dedup_key: str = ""


class HelpDeskNotifier(Protocol):
    def publish(self, message: EscalationMessage) -> str:
        """Send the page; returns the message id."""
        ...


class SnsHelpDeskNotifier:
    def __init__(self, sns_client: Any, topic_arn: str) -> None:
        self._sns = sns_client
        self._topic_arn = topic_arn

    def publish(self, message: EscalationMessage) -> str:
        body = message.model_dump(mode="json")
        response = self._sns.publish(
            TopicArn=self._topic_arn,
            Subject=f"Sale {message.sale_id} needs the help desk"[:100],
            Message=json.dumps(body),
            MessageAttributes={
                "connection_id": {"DataType": "String", "StringValue": message.connection_id},
                "reason": {"DataType": "String", "StringValue": message.reason.value},
                "dedup_key": {"DataType": "String", "StringValue": message.dedup_key},
            },
        )
        # One per page actually sent (whichever path escalated: state machine, API resync, bulk, schedules); the
        # EscalationsAlarm of template.yaml watches it with the service dimension alone.
        if dimensioned_metrics_enabled():
            with single_metric(name="SalesEscalated", unit=MetricUnit.Count, value=1, namespace=metrics.namespace):
                pass
        return str(response["MessageId"])
