"""Reprocessing jobs: the ledger of a bulk request. One header, one item per accepted sale id.

Every accepted id has an item from the moment the job is accepted (outcome ``pending``), so nothing accepted can
be lost silently: an id that never settles stays visible. Settling an item is a transaction that moves the
item to its terminal outcome only if it was not terminal yet, and counts it on the header in the same write:
a duplicate SQS delivery or a retried task cannot count an id twice. An item whose sale continues elsewhere (a
relink execution, a later sweep) waits on the sale: the sale lifecycle (``shared.lifecycle``) moves it to
``in_progress`` and settles it in the same write that settles the sale.
"""

from __future__ import annotations

from collections import Counter
from datetime import datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, Protocol

from pydantic import Field

from shared.models import Model, Outcome, Reason, RecoveryResult, Trigger, utc_now
from shared.stores.base import Page

if TYPE_CHECKING:
    from shared.lanes import LaneMessage

MESSAGE_SIZE = 50  # the seed's bulk box: at most 50 sale ids at a time, so one SQS message carries at most 50
# Rejections the job header keeps (the POST answer lists all of them): the header is one DynamoDB item, 400 KB at
# most, and 10,000 rejected values with their messages take about 3 MB. 50 rejections (a value is clipped to 64
# characters, its message quotes it) are tens of KB at most: 13.7 KB measured (tests/bulk/test_job_limits.py).
REJECTED_SAMPLE = 50


class JobStatus(StrEnum):
    PENDING = "pending"
    IN_PROGRESS = "in_progress"
    COMPLETED = "completed"


class RejectedId(Model):
    sale_id: str
    reason: str
    message: str
    identifier_kind: str | None = None


class JobItem(Model):
    sale_id: str
    outcome: Outcome = Outcome.PENDING
    reason: Reason | None = None
    attempts: int = 0
    detail: str | None = None
    execution_arn: str | None = None  # the relink execution the item waits for (it settles the item)
    episode: int | None = None  # the sale's episode whose outcome the item carries
    # A schedule's retry that failed transiently: the sale stays in the error list and a later sweep retries it.
    deferred: bool = False
    retry_at: datetime | None = None
    updated_at: datetime = Field(default_factory=utc_now)


class Settlement(Model):
    """One item's terminal outcome, as the worker records it."""

    sale_id: str
    outcome: Outcome
    reason: Reason | None = None
    attempts: int = 0
    detail: str | None = None
    episode: int | None = None

    @classmethod
    def of(cls, result: RecoveryResult) -> Settlement:
        detail = result.seller_action or result.detail
        if result.pack_id is not None and result.sale_ids:
            detail = cart_note(result.pack_id, result.sale_ids, result.blocking_sale_id, detail)
        return cls(
            sale_id=result.sale_id,
            outcome=result.outcome,
            reason=result.reason,
            attempts=result.attempts,
            detail=detail,
            episode=result.episode,
        )


def cart_note(pack_id: str, sale_ids: list[str], blocking_sale_id: str | None, detail: str | None) -> str:
    """A job item's detail for a sale of a cart: the cart's outcome, and the sale that blocks it."""
    note = f"Cart {pack_id} ({len(sale_ids)} sales)"
    if blocking_sale_id is not None:
        note += f", blocked by sale {blocking_sale_id}"
    return f"{note}: {detail}" if detail else note + "."


class Job(Model):
    job_id: str
    connection_id: str
    accepted: int
    rejected: list[RejectedId] = Field(
        default_factory=list,
        description=f"The first {REJECTED_SAMPLE} rejected values with their reasons (the POST answer lists all)",
    )
    rejected_count: int = Field(default=0, description="Every rejected value of the request")
    rejected_reasons: dict[str, int] = Field(default_factory=dict, description="Rejected values by reason")
    duplicates: int = 0
    messages: int = Field(default=0, description="SQS messages of at most 50 ids that carry the accepted ids")
    settled: int = 0
    handed_over: int = 0  # items waiting for a relink state machine execution
    trigger: Trigger = Trigger.API  # who asked: the API (a person) or a schedule (sweep, reconciliation)
    counts: dict[str, int] = Field(default_factory=dict)  # terminal outcome -> number of items
    created_at: datetime = Field(default_factory=utc_now)
    started_at: datetime | None = None
    completed_at: datetime | None = None

    @property
    def status(self) -> JobStatus:
        if self.settled >= self.accepted:
            return JobStatus.COMPLETED
        started = self.started_at or self.settled or self.handed_over
        return JobStatus.IN_PROGRESS if started else JobStatus.PENDING

    @staticmethod
    def rejections(rejected: list[RejectedId]) -> dict[str, Any]:
        """The header's account of a request's rejections: a bounded sample, the count, the count by reason."""
        return {
            "rejected": rejected[:REJECTED_SAMPLE],
            "rejected_count": len(rejected),
            "rejected_reasons": dict(Counter(r.reason for r in rejected)),
        }

    def all_counts(self) -> dict[str, int]:
        """Every outcome, terminal or not, adding up to the accepted ids."""
        counts = {o.value: 0 for o in Outcome}
        counts.update(self.counts)
        counts[Outcome.IN_PROGRESS.value] = self.handed_over
        counts[Outcome.PENDING.value] = max(0, self.accepted - self.settled - self.handed_over)
        return counts


class JobStore(Protocol):
    def create(self, job: Job, sale_ids: list[str], *, held: list[LaneMessage] | None = None) -> None:
        """Write the header (``messages`` already counted: written before any is sent) and one pending item per
        accepted id, and ``held`` messages for the connection's lane to release (``shared.lanes``). A create that
        fails leaves nothing behind."""
        ...

    def withdraw(self, job: Job, sale_ids: list[str], *, messages: int) -> None:
        """Take back ids whose ``messages`` never went out: their items go, and the header's ``accepted`` and
        ``messages`` shrink in one update (or the header goes too, when none of the job's messages went out)."""
        ...

    def get(self, job_id: str) -> Job | None: ...

    def items(self, job_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[JobItem]: ...

    def get_items(self, job_id: str, sale_ids: list[str]) -> dict[str, JobItem]: ...

    def mark_started(self, job_id: str) -> Job | None:
        """Note that work on the job began (the first time only) and return its header; None if no such job."""
        ...

    def settle_many(self, job: Job, settlements: list[Settlement]) -> int:
        """Record the terminal outcomes of items the worker has not handed over, in as few writes as the store
        allows (header counts summed). Items already terminal or handed over are left alone; returns how many
        were settled by this call."""
        ...

    def has_open_item(self, connection_id: str, sale_id: str, *, updated_after: datetime) -> bool:
        """Whether some job holds the sale in a pending or in-progress item written after ``updated_after``
        (reconciliation does not queue a sale a job already holds; an older open item belongs to a stuck job)."""
        ...
