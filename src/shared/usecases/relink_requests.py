"""POST .../sales/{s}/relink: start the relink state machine for one sale, once per episode.

The claim (the sale in progress, owned by the execution named after the sale and its next episode) is written
before the execution is started, conditionally on the sale as it was read: of ten concurrent clicks one claims and
the others find its execution. A request for a sale in progress answers that execution; a rerun of a settled sale
starts a new episode. An Idempotency-Key maps a retried request to the episode it started: once that episode is
settled, the retry answers its outcome and starts nothing. A sale of a connection that needs reauthorization is
settled at once (``not_reflectable`` / ``connection_needs_reauthorization``): no execution, no ML call.

A cart is relinked whole (POST .../packs/{p}/relink, or the relink of any of its sales): its subject is the pack id,
its row is keyed by it and its execution takes ``{connection_id, pack_id}``; ten clicks on ten different sales of one
cart claim one row, so one execution runs.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass, replace

from shared.errors import NotACart
from shared.lifecycle import moves
from shared.lifecycle.change import Decision
from shared.lifecycle.row import Snapshot, execution_name, request_key_digest
from shared.lifecycle.table import Actor
from shared.meli.errors import ConnectionNeedsReauthorization, MeliError
from shared.models import ExecutionRef, Outcome, RecoveryResult, Trigger
from shared.usecases.context import Context, stored


@dataclass(frozen=True)
class RelinkStart:
    outcome: Outcome  # IN_PROGRESS (an execution runs), or the settled outcome of the request's episode
    execution: ExecutionRef | None = None
    settled: RecoveryResult | None = None  # the stored outcome, when the request maps to a settled episode
    start: bool = False  # the execution must be started (it was just claimed, or its starter died)
    pack_id: str | None = None  # a cart's relink: its pack (the subject) and its sales
    sale_ids: list[str] | None = None


class RelinkRequests:
    def __init__(self, context: Context) -> None:
        self._ctx = context

    def start(self, connection_id: str, sale_id: str, *, request_key: str | None = None) -> RelinkStart:
        """POST .../sales/{s}/relink; a cart's sale relinks its whole cart."""
        ctx = self._ctx
        ctx.verifier.connections.get(connection_id)
        sale_id = ctx.verifier.require_sale_id(connection_id, sale_id)
        refusal = self._refusal(connection_id)
        cart = None if refusal is not None else self._cart_of_sale(connection_id, sale_id)
        if cart is not None:
            return self._start(connection_id, cart[0], request_key=request_key, refusal=None, cart_sale_ids=cart[1])
        return self._start(connection_id, sale_id, request_key=request_key, refusal=refusal)

    def start_pack(self, connection_id: str, pack_id: str, *, request_key: str | None = None) -> RelinkStart:
        """POST .../packs/{p}/relink: the cart reprocessed whole. Asks ML that ``pack_id`` is a cart's pack (NotACart
        otherwise); a transient ML failure propagates (503: nothing was written)."""
        ctx = self._ctx
        ctx.verifier.connections.get(connection_id)
        pack_id = ctx.verifier.require_sale_id(connection_id, pack_id)
        refusal = self._refusal(connection_id)
        sale_ids = self.cart_sale_ids(connection_id, pack_id) if refusal is None else []
        return self._start(connection_id, pack_id, request_key=request_key, refusal=refusal, cart_sale_ids=sale_ids)

    def cart_sale_ids(self, connection_id: str, pack_id: str) -> list[str]:
        """The sales of the cart whose pack is ``pack_id`` (the row's, or asked to ML); NotACart if it is none."""
        ctx = self._ctx
        known = ctx.lifecycle.read(connection_id, pack_id).row
        if moves.is_cart_row(known) and known.sale_ids:
            return list(known.sale_ids)
        assessment = ctx.verifier.assess(connection_id, pack_id, reflected=False, entry=None)
        if not assessment.is_cart_subject or assessment.cart is None:
            raise NotACart(assessment.report.identifier)
        return assessment.cart.report.sale_ids

    def _refusal(self, connection_id: str) -> ConnectionNeedsReauthorization | None:
        if self._ctx.gate is not None:
            try:
                self._ctx.gate.require_active(connection_id)
            except ConnectionNeedsReauthorization as refused:
                return refused
        return None

    def _cart_of_sale(self, connection_id: str, sale_id: str) -> tuple[str, list[str]] | None:
        """The cart a sale belongs to: known from an earlier read, or asked to ML now (order, pack, the cart's
        orders). A sale already reflected or in progress on its own answers as it is. If ML fails transiently the
        sale's own execution starts: its Verify finds the cart (and says to relink the cart)."""
        ctx = self._ctx
        known = ctx.verifier.cart_of(connection_id, sale_id)
        if known is not None:
            return known
        snap = ctx.lifecycle.read(connection_id, sale_id)
        if snap.reflected or snap.owner_live(ctx.lifecycle.now()):
            return None
        try:
            assessment = ctx.verifier.assess(connection_id, sale_id, reflected=False, entry=None)
        except (MeliError, ConnectionNeedsReauthorization):
            return None
        if assessment.cart is None:
            return None
        return assessment.cart.pack_id, assessment.cart.report.sale_ids  # a cart's sale, or its pack id: the cart

    def _start(
        self,
        connection_id: str,
        sale_id: str,
        *,
        request_key: str | None,
        refusal: ConnectionNeedsReauthorization | None,
        cart_sale_ids: list[str] | None = None,
    ) -> RelinkStart:
        ctx = self._ctx
        workflow = ctx.require_workflow()
        digest = request_key_digest(connection_id, sale_id, request_key) if request_key else None
        lifecycle = ctx.lifecycle
        request = f"request:{uuid.uuid4().hex}"
        cart = cart_sale_ids is not None

        def decide(snap: Snapshot) -> Decision[RelinkStart]:
            now = lifecycle.now()
            if snap.reflected:
                return Decision(RelinkStart(Outcome.ALREADY_REFLECTED, snap.row.latest_execution))
            known_episode = snap.row.request_keys.get(digest) if digest else None
            if snap.owner_live(now):
                # The episode in progress answers: a double click, or a retry of the request that started it.
                new_key = digest if digest and known_episode is None else None
                change = moves.attach(snap, Actor.API_RELINK, request_key=new_key) if new_key else None
                return Decision(RelinkStart(Outcome.IN_PROGRESS, snap.row.latest_execution, start=True), change)
            if known_episode is not None:
                # A retry of a request whose episode is settled: its outcome, and nothing started or written.
                answer = stored(snap)
                return Decision(RelinkStart(answer.outcome, snap.row.latest_execution, settled=answer))
            if refusal is not None:
                # The seller must reconnect first: settled now, nothing started (the sweep retries it after).
                blocking = moves.reauthorization_blocking(str(refusal))
                event = moves.blocked_event(blocking, Trigger.API, f"{request}#relink")
                change = moves.block(
                    snap, Actor.API_RELINK, blocking=blocking, attempts=0, settled_by=request, event=event
                )
                return Decision(RelinkStart(Outcome.NOT_REFLECTABLE, snap.row.latest_execution), change)
            name = execution_name(connection_id, sale_id, snap.claim_episode)
            execution = ExecutionRef(execution_arn=workflow.arn_for(name), name=name, started_at=now, cart=cart)
            change = lifecycle.claim(snap, Actor.API_RELINK, execution, request_key=digest, cart_sale_ids=cart_sale_ids)
            return Decision(RelinkStart(Outcome.IN_PROGRESS, change.row.latest_execution, start=True), change)

        snap, started = lifecycle.run(connection_id, sale_id, decide)
        if cart:
            started = replace(started, pack_id=sale_id, sale_ids=snap.row.sale_ids or cart_sale_ids)
        if refusal is not None and started.outcome is Outcome.NOT_REFLECTABLE and started.settled is None:
            settled = stored(snap, by=request)  # none started
            return replace(started, execution=None, settled=settled)
        if started.start and started.execution is not None:
            # Started now, or found claimed by a starter that may have died before starting it: idempotent.
            running = workflow.ensure_started(connection_id, sale_id, started.execution)
            return replace(started, execution=running, start=False)
        return started
