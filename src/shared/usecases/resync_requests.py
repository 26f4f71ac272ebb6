"""POST .../sales/{s}/resync (seed step 3): re-run the import of a sale in the error list, now.

Reflected or blocked, the answer settles the sale, whoever owned it (an import or a verdict about ML is a fact).
Still failing: the help desk (seed step 3), unless a relink execution owns the sale, which escalates on its own
if it keeps failing; the failure is recorded either way. A listed sale of a cart resyncs its whole cart (the cart's
row, keyed by the pack id) and then follows the cart's outcome: its entry leaves the list.
"""

from __future__ import annotations

import uuid

from shared.errors import NotInErrorList
from shared.lifecycle import moves
from shared.lifecycle.change import Decision
from shared.lifecycle.row import Snapshot
from shared.lifecycle.table import Actor
from shared.models import Outcome, Reason, RecoveryResult, Trigger
from shared.usecases import carts
from shared.usecases.context import Context, result, stored
from shared.usecases.escalations import Escalations
from shared.verification import Verdict


class ResyncRequests:
    def __init__(self, context: Context, escalations: Escalations) -> None:
        self._ctx = context
        self._escalations = escalations

    def resync(self, connection_id: str, sale_id: str) -> RecoveryResult:
        ctx = self._ctx
        ctx.verifier.connections.get(connection_id)
        sale_id = ctx.verifier.require_sale_id(connection_id, sale_id)
        lifecycle = ctx.lifecycle
        first = lifecycle.read(connection_id, sale_id)
        if first.reflected:
            return stored(first)
        request = f"request:{uuid.uuid4().hex}"
        key = f"{request}#resync"
        if first.entry is None:
            # A cart's sale is listed through its cart (the entry is keyed by the pack id): resync the cart.
            cart = ctx.verifier.cart_of(connection_id, sale_id)
            cart_first = lifecycle.read(connection_id, cart[0]) if cart is not None else None
            if cart is None or cart_first is None or (cart_first.entry is None and not cart_first.reflected):
                raise NotInErrorList(connection_id, sale_id)
            pack_id, sale_ids = cart
            if cart_first.reflected:
                return carts.for_sale(stored(cart_first), sale_id, pack_id, sale_ids)
            cart_verdict = ctx.verifier.attempt(
                connection_id, pack_id, entry=cart_first.entry, trigger=Trigger.API, attempt_key=key
            )
            answer = self._resync(connection_id, pack_id, cart_first, cart_verdict, request)
            return carts.for_sale(answer, sale_id, pack_id, sale_ids)
        verdict = ctx.verifier.attempt(connection_id, sale_id, entry=first.entry, trigger=Trigger.API, attempt_key=key)
        if verdict.cart is not None and verdict.whole is not None:
            pack_id = verdict.cart
            cart_seen = lifecycle.read(connection_id, pack_id)
            answer = self._resync(connection_id, pack_id, cart_seen, verdict.whole, request)
            carts.follow(ctx, connection_id, sale_id, pack_id, actor=Actor.API_RESYNC, settled_by=request)
            return carts.for_sale(answer, sale_id, pack_id, verdict.cart_sale_ids)
        return self._resync(connection_id, sale_id, first, verdict, request)

    def _resync(
        self, connection_id: str, sale_id: str, first: Snapshot, verdict: Verdict, request: str
    ) -> RecoveryResult:
        """One resync write on the subject's row (a sale, or a cart keyed by its pack id); still failing: escalated."""
        ctx, lifecycle = self._ctx, self._ctx.lifecycle
        key = f"{request}#resync"
        if first.reflected:
            return stored(first)
        failure = verdict.failure

        def decide(snap: Snapshot) -> Decision[RecoveryResult | None]:
            if snap.reflected:
                return Decision(stored(snap, by=request))
            if verdict.record is not None:
                change = moves.reflect(snap, Actor.API_RESYNC, record=verdict.record, attempts=1, settled_by=request)
                return Decision(None, change)
            if verdict.blocking is not None:
                change = moves.block(
                    snap,
                    Actor.API_RESYNC,
                    blocking=verdict.blocking,
                    attempts=1,
                    settled_by=request,
                    event=moves.blocked_event(verdict.blocking, Trigger.API, key),
                )
                return Decision(None, change)
            assert failure is not None
            if snap.owner_live(lifecycle.now()):
                # A relink execution owns the episode: record the failure; the execution decides on escalation.
                noted = moves.note_failure(
                    snap, Actor.API_RESYNC, failure=failure, attempts=snap.row.attempts, backoff=ctx.backoff
                )
                running = snap.row.latest_execution
                detail = f"{failure.event.message}. A relink execution is working on the sale" + (
                    f" ({running.name}); it escalates to the help desk if it keeps failing." if running else "."
                )
                answer = result(
                    connection_id,
                    sale_id,
                    Outcome.IN_PROGRESS,
                    detail=detail,
                    attempts=snap.row.attempts,
                    episode=snap.row.episode,
                    retryable=failure.retryable,
                    error_type=str(failure.event.error_type),
                )
                return Decision(answer, noted)
            return Decision(None)  # escalate, below

        snap, answer = lifecycle.run(connection_id, sale_id, decide, seen=first)
        if answer is not None:
            return answer
        if failure is None:
            return stored(snap, by=request)
        now = lifecycle.now()
        return self._escalations.escalate(
            connection_id,
            sale_id,
            actor=Actor.API_RESYNC,
            reason=Reason.RESYNC_FAILED if failure.retryable else Reason.MARKETPLACE_REFUSED,
            attempts=1,
            settled_by=request,
            may_escalate=lambda current: not current.owner_live(now),
            failure=failure,
            seen=snap,
        )
