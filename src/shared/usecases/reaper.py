"""Nothing stays open: an execution that ended without settling its sale, a claim whose execution was never
started, a page that could not be sent.

Three ways in, one decision: the Step Functions status-change event of an execution that ended FAILED, TIMED_OUT
or ABORTED (an EventBridge rule in the cloud; the local stack delivers the same event), the error sweep's pass over
the sales whose ``due_at`` passed, and a read of a sale that finds its owner's execution closed. An owner that
ended without an outcome leaves its sale escalated (a person must look); a claim nobody started is started; a
running owner past its check is looked at again when its lease ends.
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.lifecycle import moves
from shared.lifecycle.change import Decision
from shared.lifecycle.moves import Failure
from shared.lifecycle.row import Snapshot
from shared.lifecycle.table import Actor, State
from shared.models import ErrorEvent, Reason
from shared.usecases.context import Context
from shared.usecases.escalations import Escalations
from shared.workflow import CLOSED

ENDED_BADLY = frozenset({"FAILED", "TIMED_OUT", "ABORTED"})


@dataclass(frozen=True)
class _Look:
    status: str | None = None  # the owner's execution status, as Step Functions said
    start: bool = False
    ended: bool = False


class Reaper:
    def __init__(self, context: Context, escalations: Escalations) -> None:
        self._ctx = context
        self._escalations = escalations

    def execution_ended(self, connection_id: str, sale_id: str, *, execution_name: str, status: str) -> bool:
        """An execution ended (the status-change event). True if its sale was still its own and is now settled."""
        if status not in ENDED_BADLY:
            return False
        return self._settle_abandoned(connection_id, sale_id, execution_name, status, seen=None)

    def reap(self, connection_id: str, sale_id: str) -> str:
        """Look at a sale whose ``due_at`` passed; says what was done (for the sweep's summary and logs)."""
        ctx, lifecycle = self._ctx, self._ctx.lifecycle
        workflow = ctx.require_workflow()
        snap = lifecycle.read(connection_id, sale_id)
        now = lifecycle.now()
        due = snap.row.due_at is not None and snap.row.due_at <= now
        if snap.state is State.ESCALATED and snap.row.page_due and due:
            return "paged" if self._escalations.page(snap, Actor.REAPER) else "page still due"
        if snap.state is not State.IN_PROGRESS or not due:
            return "nothing due"
        execution = snap.row.latest_execution
        owner = snap.row.owner
        assert owner is not None
        status = workflow.status(workflow.arn_for(owner))
        if status in CLOSED:
            settled = self._settle_abandoned(connection_id, sale_id, owner, status or "", seen=snap)
            return f"owner {status}: escalated" if settled else "settled meanwhile"
        timing = lifecycle.timing

        def decide(current: Snapshot) -> Decision[_Look]:
            if not current.owned_by(owner):
                return Decision(_Look())
            if status is None:  # claimed, never started (its starter died): start it, check again soon
                lease_until = max(current.row.lease_until or now, now + timing.execution_lease)
                change = moves.renew(
                    current, Actor.REAPER, lease_until=lease_until, due_at=now + timing.start_check, status="RUNNING"
                )
                return Decision(_Look(start=True), change)
            # Running: nothing to do before its lease ends (the status event settles it if it ends badly).
            lease_until = current.row.lease_until or now + timing.execution_lease
            due_at = max(lease_until, now + timing.start_check)
            change = moves.renew(current, Actor.REAPER, lease_until=lease_until, due_at=due_at, status=status)
            return Decision(_Look(status=status), change)

        _, look = lifecycle.run(connection_id, sale_id, decide, seen=snap)
        if look.start and execution is not None:
            workflow.ensure_started(connection_id, sale_id, execution)
            return "claim started"
        return f"owner {look.status}: checked" if look.status else "settled meanwhile"

    def _settle_abandoned(
        self, connection_id: str, sale_id: str, execution_name: str, status: str, *, seen: Snapshot | None
    ) -> bool:
        _, escalated = self._escalations.escalate_if(
            connection_id,
            sale_id,
            actor=Actor.REAPER,
            reason=Reason.EXECUTION_FAILED,
            attempts=None,  # as many as the execution counted
            settled_by=f"reaper:{execution_name}:{status}",
            may_escalate=lambda current: current.owned_by(execution_name),
            failure=Failure(
                event=ErrorEvent(
                    error_type="execution_failed",
                    message=f"The relink execution {execution_name} ended {status} without settling the sale.",
                    attempt_key=f"{execution_name}#{status}",
                ),
                retryable=True,
            ),
            seen=seen,
        )
        return escalated
