"""The sale's stored row and a snapshot of everything per-sale the lifecycle decides from.

``SaleRow`` is what the sales table holds: the public state (``SaleState``) plus what the lifecycle needs to guard
its writes: a ``version`` every write moves (each write is conditional on the version it was decided from), the
``episode`` (a rerun of a settled sale starts a new one), the owner of an episode in progress and its lease, the
jobs waiting on the outcome, who settled the episode, and whether its help-desk page is still due.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from datetime import datetime

from pydantic import Field

from shared.lifecycle.table import State
from shared.models import (
    ErrorEntry,
    ExecutionRef,
    IdentifierKind,
    Model,
    Outcome,
    Reason,
    ReflectedSale,
    SaleState,
    utc_now,
)

MAX_NAME = 80  # Step Functions execution-name limit
REQUEST_KEYS_KEPT = 20  # Idempotency-Keys remembered per sale (newest); an older key is a new request
MAX_WAITING_JOBS = 40  # one transaction settles the sale, its entry and two writes per waiting job (100 at most)


class SaleRow(Model):
    connection_id: str
    sale_id: str
    version: int = 0  # 0: not stored
    episode: int = 0
    outcome: Outcome | None = None  # None: never seen
    reason: Reason | None = None
    detail: str | None = None
    identifier_kind: IdentifierKind | None = None
    sale_ids: list[str] | None = None
    pack_id: str | None = None
    blocking_sale_id: str | None = None  # a cart's row (keyed by its pack id) blocked by one of its sales
    attempts: int = 0
    owner: str | None = None  # in progress: the execution (name) that owns the episode
    lease_until: datetime | None = None  # in progress: the owner is live until then (its execution's time limit)
    due_at: datetime | None = None  # when the reaper must look: confirm the owner started, or send a due page
    settled_by: str | None = None  # settled: who wrote the outcome ("execution:<name>", "job:<id>", ...)
    page_due: bool = False  # escalated: the help desk's page of this episode is not sent yet
    waiting_jobs: list[str] = Field(default_factory=list)
    latest_execution: ExecutionRef | None = None
    request_keys: dict[str, int] = Field(default_factory=dict)  # Idempotency-Key digest -> episode
    record: ReflectedSale | None = None
    updated_at: datetime = Field(default_factory=utc_now)

    @property
    def state(self) -> State:
        return State.NEVER_SEEN if self.outcome is None else State(self.outcome.value)

    def view(self) -> SaleState:
        """The public state (GET /connections/{c}/sales/{s})."""
        assert self.outcome is not None
        return SaleState(
            connection_id=self.connection_id,
            sale_id=self.sale_id,
            outcome=self.outcome,
            reason=self.reason,
            detail=self.detail,
            identifier_kind=self.identifier_kind,
            sale_ids=self.sale_ids,
            pack_id=self.pack_id,
            blocking_sale_id=self.blocking_sale_id,
            attempts=self.attempts,
            episode=self.episode,
            updated_at=self.updated_at,
            latest_execution=self.latest_execution,
            record=self.record,
        )


@dataclass(frozen=True)
class Snapshot:
    """The sale's row and error entry as read together; every write is conditional on ``row.version``."""

    row: SaleRow
    entry: ErrorEntry | None

    @property
    def connection_id(self) -> str:
        return self.row.connection_id

    @property
    def sale_id(self) -> str:
        return self.row.sale_id

    @property
    def state(self) -> State:
        return self.row.state

    @property
    def reflected(self) -> bool:
        return self.row.record is not None

    def owner_live(self, now: datetime) -> bool:
        """In progress with an owner whose lease has not run out."""
        row = self.row
        return row.state is State.IN_PROGRESS and row.lease_until is not None and row.lease_until > now

    def owned_by(self, execution_name: str) -> bool:
        return self.row.state is State.IN_PROGRESS and self.row.owner == execution_name

    def episode_of(self, execution_name: str) -> bool:
        """The current episode was started by (or for) this execution."""
        execution = self.row.latest_execution
        return execution is not None and execution.name == execution_name

    @property
    def next_episode(self) -> int:
        """The episode a write that moves the sale belongs to: a settled sale starts a new one."""
        row = self.row
        if row.episode == 0 or row.state.settled:
            return row.episode + 1
        return row.episode

    @property
    def claim_episode(self) -> int:
        """The episode an execution claims: a new one unless the sale is waiting (pending). Taking over from an
        owner whose lease ran out abandons its episode, so the new execution never shares the dead one's name."""
        return self.row.episode + 1 if self.row.state is State.IN_PROGRESS else self.next_episode


def execution_name(connection_id: str, sale_id: str, episode: int) -> str:
    """One execution per sale and episode: a retried request or redelivered message finds the same one, a rerun
    (a new episode) never collides with a closed execution's name (Step Functions keeps names for 90 days)."""
    digest = hashlib.sha256(f"{connection_id}|{sale_id}|{episode}".encode()).hexdigest()[:12]
    return f"relink-{sale_id}-e{episode}-{digest}"[:MAX_NAME]


def request_key_digest(connection_id: str, sale_id: str, key: str) -> str:
    """What the row keeps of a client's Idempotency-Key (a digest: keys may be long or carry client data)."""
    return hashlib.sha256(f"{connection_id}|{sale_id}|{key}".encode()).hexdigest()[:24]


def remember_key(keys: dict[str, int], digest: str, episode: int) -> dict[str, int]:
    """``keys`` with ``digest`` -> ``episode`` added, the oldest forgotten past REQUEST_KEYS_KEPT."""
    kept = {k: v for k, v in keys.items() if k != digest}
    kept[digest] = episode
    return dict(list(kept.items())[-REQUEST_KEYS_KEPT:])
