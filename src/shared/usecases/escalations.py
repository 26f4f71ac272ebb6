"""Escalation is a transition, then a page: the sale moves to ``escalated`` (with its page due) in one conditional
write, and only a write that committed is followed by the page. A sale that is reflected or blocked by then, or
that another writer owns, is not escalated and nobody is paged. A page that could not be sent stays due: the
reaper sends it (``send_due_page``), so an escalation is never silently left without its page.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass

from shared.escalation import EscalationMessage
from shared.lifecycle import moves
from shared.lifecycle.change import Decision
from shared.lifecycle.moves import Failure
from shared.lifecycle.pause import before_write
from shared.lifecycle.row import Snapshot
from shared.lifecycle.table import Actor, State
from shared.models import SELLER_ACTIONS, Outcome, Reason, RecoveryResult
from shared.observability import logger
from shared.usecases.context import Context, result, stored

LAST_ERROR_CHARS = 500


@dataclass(frozen=True)
class _Escalation:
    answer: RecoveryResult
    wrote: bool


class Escalations:
    def __init__(self, context: Context) -> None:
        self._ctx = context

    def escalate(
        self,
        connection_id: str,
        sale_id: str,
        *,
        actor: Actor,
        reason: Reason,
        attempts: int | None,
        settled_by: str,
        may_escalate: Callable[[Snapshot], bool],
        failure: Failure | None = None,
        execution_id: str | None = None,
        seen: Snapshot | None = None,
    ) -> RecoveryResult:
        """Escalate the sale's episode if ``may_escalate`` says this writer may (and it is not reflected), then
        page. Otherwise answer where the sale stands, without a page. ``attempts`` None: as the row counts them."""
        answer, _ = self.escalate_if(
            connection_id,
            sale_id,
            actor=actor,
            reason=reason,
            attempts=attempts,
            settled_by=settled_by,
            may_escalate=may_escalate,
            failure=failure,
            execution_id=execution_id,
            seen=seen,
        )
        return answer

    def escalate_if(
        self,
        connection_id: str,
        sale_id: str,
        *,
        actor: Actor,
        reason: Reason,
        attempts: int | None,
        settled_by: str,
        may_escalate: Callable[[Snapshot], bool],
        failure: Failure | None = None,
        execution_id: str | None = None,
        seen: Snapshot | None = None,
    ) -> tuple[RecoveryResult, bool]:
        """``escalate``, and whether this call escalated the sale (False: someone else settled or owns it)."""
        lifecycle = self._ctx.lifecycle

        def decide(snap: Snapshot) -> Decision[_Escalation]:
            if snap.reflected or not may_escalate(snap):
                return Decision(_Escalation(self._current(snap, settled_by), wrote=False))
            counted = attempts if attempts is not None else snap.row.attempts
            change = moves.escalate(
                snap,
                actor,
                reason=reason,
                attempts=counted,
                settled_by=settled_by,
                now=lifecycle.now(),
                page_retry=lifecycle.timing.page_retry,
                failure=failure,
                backoff=self._ctx.backoff,
            )
            answer = result(
                connection_id, sale_id, Outcome.ESCALATED, reason=reason, attempts=counted, episode=change.row.episode
            )
            return Decision(_Escalation(answer, wrote=True), change)

        snap, decided = lifecycle.run(connection_id, sale_id, decide, seen=seen)
        if decided.wrote:
            self.page(snap, actor, execution_id=execution_id)
            return decided.answer.model_copy(update={"detail": snap.row.detail}), True
        return decided.answer, False

    def _current(self, snap: Snapshot, settled_by: str) -> RecoveryResult:
        if snap.state is State.NEVER_SEEN:
            return result(snap.connection_id, snap.sale_id, Outcome.PENDING)
        return stored(snap, by=settled_by)

    def page(self, snap: Snapshot, actor: Actor, *, execution_id: str | None = None) -> bool:
        """Send the page of the sale's escalated episode and record it; False if it could not be sent (it stays
        due, and the reaper sends it later)."""
        notifier = self._ctx.notifier
        if notifier is None:
            raise RuntimeError("no help-desk notifier configured")
        if not snap.row.page_due:
            return False
        episode = snap.row.episode
        before_write("page", snap.connection_id, snap.sale_id)
        # The escalation may have been overtaken since it was written (a resync reflected the sale, a rerun began):
        # the help desk is paged only for an episode that is still escalated.
        snap = self._ctx.lifecycle.read(snap.connection_id, snap.sale_id)
        row, entry = snap.row, snap.entry
        if snap.state is not State.ESCALATED or not row.page_due or row.episode != episode:
            return False
        if row.reason is None or entry is None:
            return False
        message = EscalationMessage(
            connection_id=row.connection_id,
            sale_id=row.sale_id,
            reason=row.reason,
            summary=f"Sale {row.sale_id} of connection {row.connection_id}: {SELLER_ACTIONS[row.reason]}",
            attempts=row.attempts,
            error_type=entry.error_type,
            last_error=entry.message,
            first_seen=entry.first_seen,
            episode=row.episode,
            history=entry.history,
            execution_id=execution_id or (row.latest_execution.execution_arn if row.latest_execution else None),
            dedup_key=f"{row.connection_id}#{row.sale_id}#{row.episode}",
        )
        try:
            notifier.publish(message)
        except Exception:  # SNS or KMS throttled, a network error: the page stays due for the reaper
            logger.exception("help-desk page not sent; the sweep sends it later", extra={"sale_id": row.sale_id})
            return False

        def decide(current: Snapshot) -> Decision[None]:
            if current.state is State.ESCALATED and current.row.page_due and current.row.episode == episode:
                return Decision(None, moves.page_sent(current, actor))
            return Decision(None)

        self._ctx.lifecycle.run(row.connection_id, row.sale_id, decide, seen=snap)
        return True


def readable_error(last_error: dict[str, object] | None) -> str | None:
    """A state machine Catch's ``{"Error", "Cause"}`` as a person reads it: the Lambda's error type and message,
    never its JSON payload or stack trace."""
    if not last_error:
        return None
    error, cause = str(last_error.get("Error") or ""), last_error.get("Cause")
    message = ""
    if isinstance(cause, str):
        try:
            payload = json.loads(cause)
        except ValueError:
            message = cause
        else:
            if isinstance(payload, dict):
                error = str(payload.get("errorType") or error)
                message = str(payload.get("errorMessage") or "")
            else:
                message = str(payload)
    text = f"{error}: {message}" if message else error
    return text[:LAST_ERROR_CHARS] or None
