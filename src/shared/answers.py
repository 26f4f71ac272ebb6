"""The shapes of the API's answers, for its OpenAPI document (GET /openapi.json, the /docs page).

The routes build their answers from the domain models; these models describe what arrives on the wire, composed
from the same domain models so a field added there shows here. ``tests/api/test_answers_match_the_document.py``
validates real answers of every route against this document, so the two cannot drift apart.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field, create_model

from shared.connection_state import ConnectionView
from shared.jobs import Job, JobItem, JobStatus, RejectedId
from shared.models import ErrorEntry, Outcome, PackState, Reason, RecoveryResult, SaleState, VerificationReport


def _public(model: type[BaseModel], name: str, doc: str, hidden: set[str], **extra: Any) -> type[BaseModel]:
    """``model``'s fields as an answer shows them: without the ``hidden`` ones, plus ``extra`` fields."""
    fields = {key: (field.annotation, field) for key, field in model.model_fields.items() if key not in hidden}
    built: type[BaseModel] = create_model(  # type: ignore[call-overload]
        name, __doc__=doc, __config__=ConfigDict(defer_build=True), **fields, **extra
    )
    return built


RecoveryAnswer = _public(
    RecoveryResult, "RecoveryAnswer", "The outcome of one sale's resync (seed step 3).", {"record", "retryable"}
)


class RelinkAnswer(BaseModel):
    """202: the relink state machine runs (started now, or already running for this sale); follow ``status_url``.
    200: nothing started: already in the platform, or the request's Idempotency-Key maps to an episode that is
    settled (its outcome and reason)."""

    model_config = ConfigDict(defer_build=True)

    connection_id: str
    sale_id: str
    outcome: Outcome
    reason: Reason | None = None
    seller_action: str | None = None
    episode: int | None = Field(default=None, description="The sale's episode the settled outcome belongs to")
    execution_id: str | None = Field(default=None, description="The state machine execution's ARN")
    execution_name: str | None = None
    status_url: str | None = None
    pack_id: str | None = Field(default=None, description="A cart's sale: the cart (its pack) is relinked whole")
    sale_ids: list[str] | None = Field(default=None, description="A cart's sale: every sale of the cart")


class PackRelinkAnswer(BaseModel):
    """202: the relink state machine runs for the whole cart (started now, or already running); follow
    ``status_url``. 200: nothing started: the cart is already in the platform, or the request's Idempotency-Key maps
    to an episode that is settled (its outcome and reason)."""

    model_config = ConfigDict(defer_build=True)

    connection_id: str
    pack_id: str
    sale_ids: list[str] = Field(default_factory=list)
    outcome: Outcome
    reason: Reason | None = None
    seller_action: str | None = None
    episode: int | None = None
    execution_id: str | None = Field(default=None, description="The state machine execution's ARN")
    execution_name: str | None = None
    status_url: str | None = None


class PackAnswer(PackState):
    """Where a cart stands: one outcome for all its sales; ``sale_id`` names the sale that blocks it."""


class SaleAnswer(SaleState):
    """Where a sale stands, what the seller must do if it is blocked, and its error-list entry if it has one."""

    seller_action: str | None = None
    error_entry: ErrorEntry | None = None


class SaleErrorsPage(BaseModel):
    """One page of the connection's error list (seed step 3's list), newest filters applied."""

    model_config = ConfigDict(defer_build=True)

    connection_id: str
    error_type: str | None = None
    count: int
    items: list[ErrorEntry]
    next_cursor: str | None = Field(default=None, description="Pass as ?cursor= for the next page")


class JobAccepted(BaseModel):
    """The job is written and its ids are queued; rejected ids come back with their reason."""

    model_config = ConfigDict(defer_build=True)

    job_id: str
    connection_id: str
    status: JobStatus
    accepted: int
    rejected: list[RejectedId] = Field(description="Every rejected value, with its reason")
    rejected_count: int = Field(description="How many values were rejected (the job keeps a sample of them)")
    duplicates: int
    messages: int = Field(description="SQS messages sent (at most 50 ids each)")
    status_url: str


JobView = _public(
    Job,
    "JobView",
    "A reprocessing job: counts per outcome adding up to the accepted ids, and one page of per-sale items.",
    {"handed_over", "counts"},
    status=(JobStatus, ...),
    counts=(dict[str, int], Field(description="Every outcome, terminal or not; the values add up to accepted")),
    items=(list[JobItem], ...),
    next_cursor=(str | None, Field(default=None, description="Pass as ?cursor= for the next page")),
)


class ConnectionAnswer(ConnectionView):
    """A Mercado Libre connection and its state: ``active``, or ``needs_reauthorization`` (no ML call is made for it,
    its sales answer ``not_reflectable`` / ``connection_needs_reauthorization`` until the seller reconnects)."""


class ErrorAnswer(BaseModel):
    """Every 4xx: a stable code, a message a person can act on, and sometimes what to do next."""

    model_config = ConfigDict(extra="allow", defer_build=True)

    error: str
    message: str


def documented(ok: int, model: type[BaseModel], description: str, **errors: str) -> dict[int, Any]:
    """The ``responses`` of a route: its success answer, the client errors every route can give (400, 404, 422)
    and the route's own (``errors``: ``e409="..."``)."""
    responses: dict[int, Any] = {ok: {"description": description, "content": {"application/json": {"model": model}}}}
    client_errors = {
        400: "A malformed id, parameter or body; the message says which and how to fix it",
        404: "Unknown connection, sale or job",
        422: "A parameter does not validate; the message lists each problem",
        **{int(name[1:]): text for name, text in errors.items()},
    }
    for status, text in client_errors.items():
        responses[status] = {"description": text, "content": {"application/json": {"model": ErrorAnswer}}}
    return responses


BODY_ERRORS = {
    "e413": "The body is too large",
    "e415": "The body is not JSON (send Content-Type: application/json)",
}

__all__ = [
    "ConnectionAnswer",
    "ErrorAnswer",
    "JobAccepted",
    "JobView",
    "RecoveryAnswer",
    "RelinkAnswer",
    "SaleAnswer",
    "SaleErrorsPage",
    "VerificationReport",
    "documented",
]
