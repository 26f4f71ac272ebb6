"""The one owner of per-sale state: the sale's row, its error entry, its escalation and the job items waiting on it.

Every use case reads a snapshot, decides a change from it (``shared.lifecycle.moves``) and asks ``SaleLifecycle`` to
write it. The lifecycle refuses a change that is not a row of the transition table (``table.py``), writes it on the
condition that the row is still at the version it was decided from, and settles the waiting jobs' items in the same
write when the sale settles. A write that loses the race is not retried blindly: ``run`` reads again and asks the
use case to decide again from what is there now.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

from shared import clock
from shared.jobs import Settlement, cart_note
from shared.lifecycle import moves, pause
from shared.lifecycle.change import Change, Decision, EntryWrite, waiting_item
from shared.lifecycle.dynamo import DynamoLifecycleStore, JobsGone, RowMoved
from shared.lifecycle.row import MAX_WAITING_JOBS, Snapshot
from shared.lifecycle.table import RERUNNERS, TABLE, Actor, State, Transition
from shared.models import SELLER_ACTIONS, ExecutionRef
from shared.stores.base import StateWriteFailed

T = TypeVar("T")
DECIDE_TRIES = 10  # re-reads after lost races before the caller is failed (its message or task runs again)


class IllegalTransition(RuntimeError):
    """A change that is not a row of the transition table: a programming error, never written."""


class TooManyWaiting(RuntimeError):
    """More jobs wait on one sale than one transaction can settle; the job's message is tried again later."""


@dataclass(frozen=True)
class Timing:
    """How long an owner is trusted and when the reaper looks (template.yaml sets them through Settings)."""

    execution_lease: timedelta  # an execution's time limit (the state machine's TimeoutSeconds) plus a margin
    start_check: timedelta  # after a claim: when the reaper checks the execution was started
    page_retry: timedelta  # after an escalation: when the reaper sends a page that could not be sent
    retry_base: timedelta  # the error list's backoff between automatic retries (doubles per attempt)
    retry_max: timedelta


class SaleLifecycle:
    def __init__(self, store: DynamoLifecycleStore, timing: Timing, *, now: Callable[[], datetime] = clock.now) -> None:
        self._store = store
        self.timing = timing
        self._now = now

    def now(self) -> datetime:
        return self._now()

    def read(self, connection_id: str, sale_id: str) -> Snapshot:
        return self._store.read(connection_id, sale_id)

    def read_many(self, connection_id: str, sale_ids: list[str]) -> dict[str, Snapshot]:
        return self._store.read_many(connection_id, sale_ids)

    def claim(self, seen: Snapshot, actor: Actor, execution: ExecutionRef, **extra: Any) -> Change:
        """The change that makes ``execution`` the owner of the sale's episode, with this lifecycle's lease and
        start check (``extra``: an Idempotency-Key, a bulk job's item, the failure that led here)."""
        return moves.claim(
            seen,
            actor,
            execution=execution,
            now=self.now(),
            lease=self.timing.execution_lease,
            start_check=self.timing.start_check,
            **extra,
        )

    def due(self, connection_id: str, *, limit: int = 500) -> list[str]:
        """Sales whose owner must be checked or whose page is still due."""
        return self._store.due(connection_id, self.now(), limit=limit)

    def apply(self, seen: Snapshot, change: Change) -> Snapshot | None:
        """Write ``change`` if the sale is still as ``seen``; the new snapshot, or None if someone wrote first."""
        rule = TABLE[change.transition]
        target = change.row.state
        if not rule.allows(seen.state, target, change.actor):
            raise IllegalTransition(
                f"{change.actor.value} may not {change.transition.value} a sale from {seen.state.value} "
                f"to {target.value} (sale {seen.sale_id})"
            )
        row = change.row
        now = self.now()
        # The guards the snapshot can prove: a live owner is never displaced, and nobody joins a dead one.
        if change.transition is Transition.CLAIM and seen.owner_live(now):
            raise IllegalTransition(f"{change.actor.value} may not claim sale {seen.sale_id}: its owner is live")
        if change.transition is Transition.ATTACH and not seen.owner_live(now):
            raise IllegalTransition(f"{change.actor.value} may not attach to sale {seen.sale_id}: no live owner")
        if seen.row.episode and row.episode > seen.row.episode and change.actor not in RERUNNERS:
            raise IllegalTransition(
                f"{change.actor.value} may not start episode {row.episode} of sale {seen.sale_id}: "
                "only a request reruns a settled sale"
            )
        waiting = list(seen.row.waiting_jobs)
        settlements: list[tuple[str, Settlement]] = []
        if target.settled:
            detail = SELLER_ACTIONS.get(row.reason) if row.reason is not None else None
            if row.pack_id is not None and row.sale_ids:  # a cart (or a sale following it): say which
                detail = cart_note(row.pack_id, row.sale_ids, row.blocking_sale_id, detail or row.detail)
            settlement = Settlement(
                sale_id=seen.sale_id,
                outcome=row.outcome,
                reason=row.reason,
                attempts=row.attempts,
                detail=detail or row.detail,
                episode=row.episode,
            )
            # A cart's sale waiting on its cart (``job@sale``) is settled under its own sale id.
            settlements = [
                (ref, settlement.model_copy(update={"sale_id": waiting_item(ref, seen.sale_id)[1]})) for ref in waiting
            ]
            waiting = []
        elif change.job is not None and change.job.waiting_ref not in waiting:
            waiting.append(change.job.waiting_ref)
            if len(waiting) > MAX_WAITING_JOBS:
                raise TooManyWaiting(f"{len(waiting)} jobs would wait on sale {seen.sale_id}; try again later")
        _check_shape(row.state, row.owner, row.lease_until)
        row = row.model_copy(update={"version": seen.row.version + 1, "updated_at": now, "waiting_jobs": waiting})
        entry_after = change.entry
        if entry_after is not None and moves.is_cart_row(row):  # a cart's entry says which pack and sales it is
            entry_after = entry_after.model_copy(update={"pack_id": row.pack_id, "sale_ids": row.sale_ids})
        written = Change(change.transition, change.actor, row, entry_after, change.entry_write, change.job)
        pause.before_write(change.transition.value, seen.connection_id, seen.sale_id)
        for _ in range(MAX_WAITING_JOBS + 1):
            try:
                self._store.write(seen, written, settlements)
                break
            except RowMoved:
                return None
            except JobsGone as gone:  # already settled or expired: nothing of theirs to settle any more
                settlements = [(job_id, s) for job_id, s in settlements if job_id not in gone.job_ids]
        entry = seen.entry
        if change.entry_write is EntryWrite.PUT:
            entry = entry_after
        elif change.entry_write is EntryWrite.DELETE:
            entry = None
        return Snapshot(row=row, entry=entry)

    def run(
        self,
        connection_id: str,
        sale_id: str,
        decide: Callable[[Snapshot], Decision[T]],
        *,
        seen: Snapshot | None = None,
    ) -> tuple[Snapshot, T]:
        """Read (or start from ``seen``), decide, write; after a lost race read again and decide again."""
        for _ in range(DECIDE_TRIES):
            snapshot = seen if seen is not None else self.read(connection_id, sale_id)
            seen = None
            decision = decide(snapshot)
            if decision.change is None:
                return snapshot, decision.result
            written = self.apply(snapshot, decision.change)
            if written is not None:
                return written, decision.result
        raise StateWriteFailed(f"sale {sale_id} of {connection_id} kept changing while being written; try again")


def _check_shape(state: State, owner: str | None, lease_until: datetime | None) -> None:
    """In progress always has an owner and a lease; nothing else has either."""
    in_progress = state is State.IN_PROGRESS
    if in_progress != (owner is not None) or in_progress != (lease_until is not None):
        raise IllegalTransition(f"a sale {state.value} must {'' if in_progress else 'not '}have an owner and lease")


__all__ = ["Change", "Decision", "IllegalTransition", "SaleLifecycle", "Snapshot", "Timing", "TooManyWaiting"]
