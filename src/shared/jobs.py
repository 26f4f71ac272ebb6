"""Reprocessing jobs: the ledger of a bulk request. One header, one item per accepted sale id.

Every accepted id has an item from the moment the job is accepted (outcome ``pending``), so nothing accepted can
be lost silently: an id that never settles stays visible. Settling an item is a transaction that moves the
item to its terminal outcome only if it was not terminal yet, and counts it on the header in the same write:
a duplicate SQS delivery or a retried task cannot count an id twice.
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol

from pydantic import Field

from shared.models import Model, Outcome, Reason, RecoveryResult, Trigger, utc_now
from shared.stores.base import Page

MESSAGE_SIZE = 50  # the seed's bulk box: at most 50 sale ids at a time, so one SQS message carries at most 50


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
    execution_arn: str | None = None
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

    @classmethod
    def of(cls, result: RecoveryResult) -> Settlement:
        return cls(
            sale_id=result.sale_id,
            outcome=result.outcome,
            reason=result.reason,
            attempts=result.attempts,
            detail=result.seller_action or result.detail,
        )


class SettleFailed(RuntimeError):
    """Outcomes the store could not write after every try (throttling, conflicts). The caller must fail, so its SQS
    message or state machine task runs again, rather than report them settled. The state machine retries it by
    this name (statemachine/relink.asl.json)."""

    def __init__(self, job_id: str, sale_ids: list[str]) -> None:
        super().__init__(f"could not settle {len(sale_ids)} item(s) of job {job_id}: {', '.join(sale_ids[:10])}")
        self.sale_ids = sale_ids


class Job(Model):
    job_id: str
    connection_id: str
    accepted: int
    rejected: list[RejectedId] = Field(default_factory=list)
    duplicates: int = 0
    messages: int = 0
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
        return JobStatus.IN_PROGRESS if self.started_at or self.settled else JobStatus.PENDING

    def all_counts(self) -> dict[str, int]:
        """Every outcome, terminal or not, adding up to the accepted ids."""
        counts = {o.value: 0 for o in Outcome}
        counts.update(self.counts)
        counts[Outcome.IN_PROGRESS.value] = self.handed_over
        counts[Outcome.PENDING.value] = max(0, self.accepted - self.settled - self.handed_over)
        return counts


class JobStore(Protocol):
    def create(self, job: Job, sale_ids: list[str]) -> None:
        """Write the header and one pending item per accepted id."""
        ...

    def set_messages(self, job_id: str, messages: int) -> None: ...

    def get(self, job_id: str) -> Job | None: ...

    def items(self, job_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[JobItem]: ...

    def get_items(self, job_id: str, sale_ids: list[str]) -> dict[str, JobItem]: ...

    def mark_started(self, job_id: str) -> Job | None:
        """Note that work on the job began (the first time only) and return its header; None if no such job."""
        ...

    def hand_over(self, job_id: str, sale_id: str, execution_arn: str, attempts: int) -> None:
        """The item continues in a relink state machine execution (not terminal yet)."""
        ...

    def defer(self, job_id: str, sale_id: str, *, attempts: int, retry_at: datetime | None, detail: str) -> None:
        """The item continues in a later error sweep (a schedule's retry failed transiently; not terminal yet)."""
        ...

    def settle(
        self,
        job_id: str,
        sale_id: str,
        outcome: Outcome,
        *,
        reason: Reason | None = None,
        attempts: int = 0,
        detail: str | None = None,
        handed_over: bool | None = None,
    ) -> bool:
        """Record the item's terminal outcome once. False if it was already terminal (nothing changed).
        ``handed_over`` says whether the item went to the state machine (saves a read when known)."""
        ...

    def settle_many(self, job: Job, settlements: list[Settlement]) -> int:
        """Record the terminal outcomes of items the worker has not handed over, in as few writes as the store
        allows (header counts summed). Items already terminal or handed over are left alone; returns how many
        were settled by this call."""
        ...


def settle_result(jobs: JobStore, job_id: str, result: RecoveryResult, *, handed_over: bool) -> bool:
    """Record a recovery result on its job item (the worker: not handed over; the state machine: handed over)."""
    settlement = Settlement.of(result)
    return jobs.settle(
        job_id,
        settlement.sale_id,
        settlement.outcome,
        reason=settlement.reason,
        attempts=settlement.attempts,
        detail=settlement.detail,
        handed_over=handed_over,
    )
