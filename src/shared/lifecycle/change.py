"""A requested transition: the row and entry as they must be after the write, and the job item that moves with them.

Changes are built by pure functions of a snapshot (``shared.lifecycle.moves``); the lifecycle checks them against
the transition table, fills in what every write carries (version, time, the waiting jobs) and writes them.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from enum import Enum
from typing import Generic, TypeVar

from shared.lifecycle.row import SaleRow
from shared.lifecycle.table import Actor, Transition
from shared.models import ErrorEntry

T = TypeVar("T")


class EntryWrite(Enum):
    KEEP = "keep"
    PUT = "put"
    DELETE = "delete"


@dataclass(frozen=True)
class JobWrite:
    """A job's item that moves with the sale: handed over to the owner's execution, or deferred to a later sweep.
    Its job joins the row's waiting jobs, so whoever settles the sale settles the item in the same write."""

    job_id: str
    attempts: int
    execution_arn: str | None = None
    detail: str | None = None
    retry_at: datetime | None = None
    deferred: bool = False
    item: str | None = None  # the job's item when it is not the row's sale: a cart's sale waiting on its cart

    @property
    def waiting_ref(self) -> str:
        """How the row's waiting_jobs names this item: the job id, or ``job_id@sale_id`` for a cart's sale."""
        return self.job_id if self.item is None else f"{self.job_id}@{self.item}"


def waiting_item(ref: str, sale_id: str) -> tuple[str, str]:
    """(job id, item key) of a waiting_jobs entry of the row of ``sale_id``."""
    job_id, _, item = ref.partition("@")
    return job_id, item or sale_id


@dataclass(frozen=True)
class Change:
    transition: Transition
    actor: Actor
    row: SaleRow  # the row after the write; version, updated_at and waiting_jobs are the lifecycle's to set
    entry: ErrorEntry | None = None  # the entry after the write, for EntryWrite.PUT
    entry_write: EntryWrite = EntryWrite.KEEP
    job: JobWrite | None = None


@dataclass(frozen=True)
class Decision(Generic[T]):
    """What a use case decided from one snapshot: the change to write (None: nothing) and what to answer."""

    result: T
    change: Change | None = None
