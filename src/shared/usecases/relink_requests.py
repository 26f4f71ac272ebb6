"""POST .../sales/{s}/relink: start the relink state machine for one sale, once per episode.

The claim (the sale in progress, owned by the execution named after the sale and its next episode) is written
before the execution is started, conditionally on the sale as it was read: of ten concurrent clicks one claims and
the others find its execution. A request for a sale in progress answers that execution; a rerun of a settled sale
starts a new episode. An Idempotency-Key maps a retried request to the episode it started: once that episode is
settled, the retry answers its outcome and starts nothing. A sale of a connection that needs reauthorization is
settled at once (``not_reflectable`` / ``connection_needs_reauthorization``): no execution, no ML call.
"""

from __future__ import annotations

import uuid
from dataclasses import dataclass

from shared.lifecycle import moves
from shared.lifecycle.change import Decision
from shared.lifecycle.row import Snapshot, execution_name, request_key_digest
from shared.lifecycle.table import Actor
from shared.meli.errors import ConnectionNeedsReauthorization
from shared.models import ExecutionRef, Outcome, RecoveryResult, Trigger
from shared.usecases.context import Context, stored


@dataclass(frozen=True)
class RelinkStart:
    outcome: Outcome  # IN_PROGRESS (an execution runs), or the settled outcome of the request's episode
    execution: ExecutionRef | None = None
    settled: RecoveryResult | None = None  # the stored outcome, when the request maps to a settled episode
    start: bool = False  # the execution must be started (it was just claimed, or its starter died)


class RelinkRequests:
    def __init__(self, context: Context) -> None:
        self._ctx = context

    def start(self, connection_id: str, sale_id: str, *, request_key: str | None = None) -> RelinkStart:
        ctx = self._ctx
        workflow = ctx.require_workflow()
        ctx.verifier.connections.get(connection_id)
        sale_id = ctx.verifier.require_sale_id(connection_id, sale_id)
        digest = request_key_digest(connection_id, sale_id, request_key) if request_key else None
        lifecycle = ctx.lifecycle
        refusal: ConnectionNeedsReauthorization | None = None
        if ctx.gate is not None:
            try:
                ctx.gate.require_active(connection_id)
            except ConnectionNeedsReauthorization as refused:
                refusal = refused
        request = f"request:{uuid.uuid4().hex}"

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
            execution = ExecutionRef(execution_arn=workflow.arn_for(name), name=name, started_at=now)
            change = lifecycle.claim(snap, Actor.API_RELINK, execution, request_key=digest)
            return Decision(RelinkStart(Outcome.IN_PROGRESS, change.row.latest_execution, start=True), change)

        snap, started = lifecycle.run(connection_id, sale_id, decide)
        if refusal is not None and started.outcome is Outcome.NOT_REFLECTABLE and started.settled is None:
            return RelinkStart(Outcome.NOT_REFLECTABLE, None, settled=stored(snap, by=request))  # none started
        if started.start and started.execution is not None:
            # Started now, or found claimed by a starter that may have died before starting it: idempotent.
            running = workflow.ensure_started(connection_id, sale_id, started.execution)
            return RelinkStart(started.outcome, running)
        return started
