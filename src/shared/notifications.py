"""Mercado Libre's notifications (``orders_v2``): what the callback accepts, and what it queues.

ML POSTs a small JSON pointer to our callback URL for every order it creates or changes (reference/meli-api.md §8):
``{"_id", "resource": "/orders/<id>", "user_id", "topic", "application_id", "attempts", "sent", "received"}``. It
cannot sign the request, so the route has no IAM auth and defends itself here: a body of at most
``MAX_NOTIFICATION_BYTES``, JSON of that shape only (400/413/415 otherwise: nothing ML sends), and then, for a
well-formed notification, 200 always, because ML retries anything else for an hour and then disables the topic:

- an ``application_id`` that is not ours, a ``user_id`` that is no connection's seller, a topic other than orders or
  a resource that is not an order: acknowledged, ignored, counted (``IgnoredReason``);
- an order of a known seller: queued (``QueuedNotification``, one SQS message) and answered. Nothing else is done
  inline: ML wants the 200 within 500 ms, and reading the order is the processing's job
  (``shared.usecases.notified_sales``), which collapses ML's duplicates first.

The missed-feeds schedule (``shared.missed_feeds``) classifies what ``/missed_feeds`` returns with the same rules and
queues it the same way.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from enum import StrEnum
from typing import Any, Literal, Protocol

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

MAX_NOTIFICATION_BYTES = 4096  # ML's are ~250 bytes; anything near this is not one of them
# orders_v2 is the topic ML recommends; "orders" is its legacy name, with the same resource (reference §8).
ORDER_TOPICS = frozenset({"orders_v2", "orders"})
ORDER_RESOURCE = re.compile(r"/orders/(\d{1,20})")
# A notification of a sale some job or execution holds comes back after 1, 2, 4, ... 15 minutes, 8 times (~75 min, past
# the hourly reconciliation, which finds anything still missing after that).
MAX_DEFERRALS = 8
MAX_DEFER_SECONDS = 900  # SQS DelaySeconds' limit


class NotificationSource(StrEnum):
    CALLBACK = "callback"
    MISSED_FEEDS = "missed_feeds"


class IgnoredReason(StrEnum):
    """A well-formed notification acknowledged with 200 and no work."""

    FOREIGN_APPLICATION = "foreign_application"  # another application's notification
    UNKNOWN_SELLER = "unknown_seller"  # no connection has this seller
    OTHER_TOPIC = "other_topic"  # items, questions, payments, ... (not subscribed for, or not ours to handle)
    NOT_AN_ORDER = "not_an_order"  # an orders topic whose resource is not /orders/<digits>


class BadNotification(ValueError):
    """Not an ML notification at all (too big, not JSON, not its shape): a 4xx that says what is wrong."""

    def __init__(self, status: int, reason: str, message: str) -> None:
        super().__init__(message)
        self.status = status
        self.reason = reason


class Notification(BaseModel):
    """ML's notification, general model (reference §8). Fields ML may add later are ignored, not refused: a refusal
    would make ML retry it for an hour and then disable the topic."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True, defer_build=True)

    notification_id: str = Field(alias="_id", min_length=1, max_length=64)
    resource: str = Field(min_length=1, max_length=256)
    user_id: int = Field(gt=0)  # ML's examples use a number or a text of digits
    topic: str = Field(min_length=1, max_length=64)
    application_id: int = Field(gt=0)
    attempts: int = Field(default=1, ge=0, le=1000)
    # Kept as ML wrote them (only logged and passed on): a date format ML changes must not refuse a notification.
    sent: str | None = Field(default=None, max_length=64)
    received: str | None = Field(default=None, max_length=64)

    @field_validator("user_id", "application_id", mode="before")
    @classmethod
    def _digits(cls, value: Any) -> Any:
        if isinstance(value, bool) or not isinstance(value, int | str):
            raise ValueError("must be an integer or a text of digits")
        if isinstance(value, str) and not (value.isascii() and value.isdigit()):
            raise ValueError("must be an integer or a text of digits")
        return value

    @property
    def order_id(self) -> str | None:
        found = ORDER_RESOURCE.fullmatch(self.resource)
        return found.group(1) if found else None


class QueuedNotification(BaseModel):
    """The notifications queue's message body: one order of one connection that ML says was created or changed."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    connection_id: str = Field(min_length=1, max_length=64)
    sale_id: str = Field(pattern=r"^\d{1,20}$")
    notification_id: str = Field(min_length=1, max_length=64)
    source: NotificationSource = NotificationSource.CALLBACK
    sent: str | None = Field(default=None, max_length=64)  # ML's "sent", as ML wrote it
    # How many times the processing put it back because a job or an execution held its sale (shared.usecases
    # .notified_sales): the news may be newer than what that holder read.
    deferrals: int = Field(default=0, ge=0, le=MAX_DEFERRALS)


class IntakeAnswer(BaseModel):
    """The callback's 200 body: queued, or ignored with why."""

    model_config = ConfigDict(defer_build=True)

    status: Literal["queued", "ignored"]
    reason: IgnoredReason | None = None
    notification_id: str


class NotificationQueue(Protocol):
    def send(self, notifications: list[QueuedNotification], *, delay_seconds: int = 0) -> None:
        """Queue every notification (batched), visible after ``delay_seconds``; raises if any could not be queued."""
        ...


class SellerDirectory(Protocol):
    def connection_for(self, seller_id: int) -> str | None:
        """The connection of this ML seller, or None when no connection has it."""
        ...


def parse_notification(body: str | bytes | None) -> Notification:
    """The body as ML's notification, or BadNotification naming what is wrong."""
    if body is None or body == "" or body == b"":
        raise BadNotification(400, "empty_body", "The body is empty: send Mercado Libre's notification JSON.")
    raw = body.encode("utf-8") if isinstance(body, str) else body
    if len(raw) > MAX_NOTIFICATION_BYTES:
        raise BadNotification(
            413,
            "too_large",
            f"The body has {len(raw)} bytes; a Mercado Libre notification has at most {MAX_NOTIFICATION_BYTES}.",
        )
    try:
        data = json.loads(raw)
    except (UnicodeDecodeError, json.JSONDecodeError):
        raise BadNotification(
            400, "malformed_json", "The body is not JSON: send Mercado Libre's notification."
        ) from None
    if not isinstance(data, dict):
        raise BadNotification(
            400, "not_a_notification", "The body must be a JSON object (Mercado Libre's notification)."
        )
    try:
        return Notification.model_validate(data)
    except ValidationError as exc:
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc']) or '(body)'}: {err['msg']}" for err in exc.errors()[:5]
        )
        raise BadNotification(400, "not_a_notification", f"Not a Mercado Libre notification ({problems}).") from None


def classify(
    notification: Notification,
    *,
    application_id: int,
    sellers: SellerDirectory,
    source: NotificationSource = NotificationSource.CALLBACK,
) -> QueuedNotification | IgnoredReason:
    """What a well-formed notification asks for: an order of one of our connections, or nothing (and why)."""
    if notification.application_id != application_id:
        return IgnoredReason.FOREIGN_APPLICATION
    if notification.topic not in ORDER_TOPICS:
        return IgnoredReason.OTHER_TOPIC
    sale_id = notification.order_id
    if sale_id is None:
        return IgnoredReason.NOT_AN_ORDER
    connection_id = sellers.connection_for(notification.user_id)
    if connection_id is None:
        return IgnoredReason.UNKNOWN_SELLER
    return QueuedNotification(
        connection_id=connection_id,
        sale_id=sale_id,
        notification_id=notification.notification_id,
        source=source,
        sent=notification.sent,
    )


class NotificationIntake:
    """The callback's one job: check, queue, answer. ``application_id`` reads ours (cached by the caller)."""

    def __init__(self, application_id: Callable[[], int], sellers: SellerDirectory, queue: NotificationQueue) -> None:
        self._application_id = application_id
        self._sellers = sellers
        self._queue = queue

    def accept(self, body: str | bytes | None) -> IntakeAnswer:
        notification = parse_notification(body)
        verdict = classify(notification, application_id=self._application_id(), sellers=self._sellers)
        if isinstance(verdict, IgnoredReason):
            return IntakeAnswer(status="ignored", reason=verdict, notification_id=notification.notification_id)
        self._queue.send([verdict])
        return IntakeAnswer(status="queued", notification_id=notification.notification_id)
