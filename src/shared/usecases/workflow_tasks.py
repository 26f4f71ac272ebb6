"""The relink state machine's tasks, each writing only for its own execution.

An execution owns the sale's episode from its claim (written by whoever started it: the API, a bulk hand-over)
or, for a run started from the console, from its Verify task's claim. Every task checks that its execution still
owns the episode before it writes: an execution whose sale was reflected, blocked or taken over meanwhile writes
nothing and answers where the sale stands. A run that finds another live execution on the sale follows it
(waits, then verifies again) instead of working on the sale twice. Reflecting is the exception: a fresh import is
written whoever owns the sale (the import is stored once).

A cart's execution (input ``{connection_id, pack_id}``) runs the same tasks on the cart's row, keyed by the pack id;
its output has the cart's shape (``pack_id``, ``sale_ids``, and ``sale_id`` of the sale that blocks it). An execution
started for one sale of a cart (by the console, or handed over before the cart was known) reprocesses the cart in
its attempts (the cart's row is written) and its sale follows the cart's outcome.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

from shared.identifiers import parse_identifier
from shared.lifecycle import moves
from shared.lifecycle.change import Decision
from shared.lifecycle.moves import Failure
from shared.lifecycle.row import Snapshot
from shared.lifecycle.table import Actor, State
from shared.meli.errors import ConnectionNeedsReauthorization
from shared.models import (
    ErrorEvent,
    ErrorType,
    ExecutionRef,
    Outcome,
    Reason,
    RecoveryResult,
    Trigger,
    VerificationReport,
)
from shared.usecases import carts
from shared.usecases.context import Context, result, stored
from shared.usecases.escalations import Escalations, readable_error
from shared.verification import Verdict, blocking_of


class Route(StrEnum):
    """Where the state machine goes after Verify (statemachine/relink.asl.json, state Route)."""

    NONE = "none"  # settled: already reflected, or this execution's episode ended
    BLOCKED = "blocked"
    RESYNC = "resync"
    RELINK = "relink"
    FOLLOW = "follow"  # another execution owns the sale: wait and verify again


@dataclass(frozen=True)
class Triage:
    route: Route
    result: RecoveryResult | None = None


@dataclass(frozen=True)
class TaskAnswer:
    result: RecoveryResult
    failed: bool = False  # the attempt failed: the state machine counts it and retries or escalates
    retryable: bool = False


def execution_name_of(execution_arn: str) -> str:
    return execution_arn.rsplit(":", 1)[-1]


def as_cart(answer: RecoveryResult, cart: bool) -> RecoveryResult:
    """A cart execution's answer in the cart's shape (its subject, ``sale_id`` here, is the pack id)."""
    if not cart or answer.is_cart:
        return answer
    return answer.model_copy(update={"pack_id": answer.sale_id, "sale_ids": answer.sale_ids or []})


class WorkflowTasks:
    def __init__(self, context: Context, escalations: Escalations) -> None:
        self._ctx = context
        self._escalations = escalations

    def _check(self, connection_id: str, sale_id: str) -> str:
        self._ctx.verifier.connections.get(connection_id)
        return parse_identifier(sale_id).raw

    # --- Verify -------------------------------------------------------------------------------------------------------

    def triage(
        self, connection_id: str, sale_id: str, *, execution_arn: str, attempts: int, cart: bool = False
    ) -> Triage:
        triage = self._triage(connection_id, sale_id, execution_arn=execution_arn, attempts=attempts, cart=cart)
        if triage.result is None:
            return triage
        return Triage(triage.route, as_cart(triage.result, cart))

    def _triage(self, connection_id: str, sale_id: str, *, execution_arn: str, attempts: int, cart: bool) -> Triage:
        sale_id = self._check(connection_id, sale_id)
        ctx, lifecycle = self._ctx, self._ctx.lifecycle
        name = execution_name_of(execution_arn)
        me = f"execution:{name}"

        def decide(snap: Snapshot) -> Decision[Triage | None]:
            now = lifecycle.now()
            if snap.reflected:
                return Decision(Triage(Route.NONE, stored(snap, by=me)))
            if snap.owned_by(name):
                return Decision(None)
            if snap.owner_live(now):
                return Decision(Triage(Route.FOLLOW))
            if snap.episode_of(name) and snap.state.settled:  # this execution's episode ended (a retried task)
                return Decision(Triage(Route.NONE, stored(snap, by=me)))
            # Started from the console (nobody claimed it), or the owner's lease ran out: this execution owns it.
            execution = ExecutionRef(
                execution_arn=execution_arn, name=name, started_at=now, start_attempts=attempts, cart=cart
            )
            return Decision(None, lifecycle.claim(snap, Actor.VERIFY_TASK, execution))

        snap, triage = lifecycle.run(connection_id, sale_id, decide)
        if triage is not None:
            return triage
        try:
            report = ctx.verifier.assess(connection_id, sale_id, reflected=False, entry=snap.entry).report
        except ConnectionNeedsReauthorization as refusal:  # no ML call was made: the seller must reconnect
            blocking = moves.reauthorization_blocking(str(refusal))
        else:
            if report.cart is not None and report.cart.pack_id != sale_id:
                return self._cart_sale_triage(connection_id, sale_id, report, name=name, attempts=attempts)
            if not report.blocked:
                return Triage(Route.RESYNC if report.in_error_list else Route.RELINK)
            blocking = blocking_of(report)

        def decide_blocked(snap: Snapshot) -> Decision[None]:
            if not snap.owned_by(name):
                return Decision(None)
            change = moves.block(
                snap,
                Actor.VERIFY_TASK,
                blocking=blocking,
                attempts=attempts,
                settled_by=me,
                event=moves.blocked_event(blocking, Trigger.STATE_MACHINE, f"{name}#verify"),
            )
            return Decision(None, change)

        snap, _ = lifecycle.run(connection_id, sale_id, decide_blocked, seen=snap)
        answer = stored(snap, by=me)
        return Triage(Route.BLOCKED if answer.outcome is Outcome.NOT_REFLECTABLE else Route.NONE, answer)

    def _cart_sale_triage(
        self, connection_id: str, sale_id: str, report: VerificationReport, *, name: str, attempts: int
    ) -> Triage:
        """This execution's sale is part of a cart (found only now): the sale follows its cart. A cart settled
        already (reflected, or blocked as verified just now) settles the sale; another execution reprocessing the
        cart is followed; otherwise this execution's attempts reprocess the cart."""
        assert report.cart is not None
        pack_id = report.cart.pack_id
        me = f"execution:{name}"
        lifecycle = self._ctx.lifecycle
        if report.blocked:
            blocking = blocking_of(report)

            def decide_blocked(snap: Snapshot) -> Decision[None]:
                if snap.reflected or snap.owner_live(lifecycle.now()):
                    return Decision(None)
                event = moves.blocked_event(blocking, Trigger.STATE_MACHINE, f"{name}#verify")
                change = moves.block(snap, Actor.VERIFY_TASK, blocking=blocking, attempts=0, settled_by=me, event=event)
                return Decision(None, change)

            lifecycle.run(connection_id, pack_id, decide_blocked)
        cart_snap = lifecycle.read(connection_id, pack_id)
        if cart_snap.reflected or (report.blocked and cart_snap.state.settled):
            followed = carts.follow(
                self._ctx, connection_id, sale_id, pack_id, actor=Actor.VERIFY_TASK, settled_by=me, owner=name
            )
            if followed is not None and followed.state.settled:
                answer = carts.for_sale(stored(followed, by=me), sale_id, pack_id, report.cart.sale_ids)
                route = Route.BLOCKED if answer.outcome is Outcome.NOT_REFLECTABLE else Route.NONE
                return Triage(route, answer)
        if cart_snap.owner_live(lifecycle.now()):
            return Triage(Route.FOLLOW)
        return Triage(Route.RELINK)

    # --- Relink / Resync ----------------------------------------------------------------------------------------------

    def relink_attempt(
        self, connection_id: str, sale_id: str, *, execution_arn: str, attempt: int, cart: bool = False
    ) -> TaskAnswer:
        name = execution_name_of(execution_arn)
        answer = self._attempt(connection_id, sale_id, name, Actor.RELINK_TASK, f"{name}#relink#{attempt}", attempt)
        return TaskAnswer(as_cart(answer.result, cart), answer.failed, answer.retryable)

    def resync(
        self, connection_id: str, sale_id: str, *, execution_arn: str, attempts: int, cart: bool = False
    ) -> TaskAnswer:
        name = execution_name_of(execution_arn)
        answer = self._attempt(connection_id, sale_id, name, Actor.RESYNC_TASK, f"{name}#resync", attempts + 1)
        return TaskAnswer(as_cart(answer.result, cart), answer.failed, answer.retryable)

    def _attempt(
        self, connection_id: str, sale_id: str, name: str, actor: Actor, key: str, attempts: int
    ) -> TaskAnswer:
        sale_id = self._check(connection_id, sale_id)
        ctx, lifecycle = self._ctx, self._ctx.lifecycle
        me = f"execution:{name}"
        first = lifecycle.read(connection_id, sale_id)
        if not first.owned_by(name):
            return TaskAnswer(self._current(first, me))
        verdict = ctx.verifier.attempt(
            connection_id, sale_id, entry=first.entry, trigger=Trigger.STATE_MACHINE, attempt_key=key
        )
        if verdict.cart is not None and verdict.whole is not None:
            # This execution's sale is part of a cart: the attempt reprocesses the cart, the sale follows it.
            done = self._cart_attempt(connection_id, sale_id, verdict, name=name, actor=actor, attempts=attempts)
            if isinstance(done, TaskAnswer):
                return done
            verdict = done

        def decide(snap: Snapshot) -> Decision[TaskAnswer | None]:
            if snap.reflected:
                return Decision(TaskAnswer(stored(snap, by=me, import_key=key)))
            if verdict.record is not None and not snap.state.settled:
                # Written whoever owns the sale (the import is stored once); a sale settled meanwhile is not
                # reopened by a task: only a request starts a new episode.
                return Decision(
                    None, moves.reflect(snap, actor, record=verdict.record, attempts=attempts, settled_by=me)
                )
            if not snap.owned_by(name):
                return Decision(TaskAnswer(self._current(snap, me)))
            if verdict.blocking is not None:
                event = moves.blocked_event(verdict.blocking, Trigger.STATE_MACHINE, key)
                change = moves.block(
                    snap, actor, blocking=verdict.blocking, attempts=attempts, settled_by=me, event=event
                )
                return Decision(None, change)
            failure = verdict.failure
            assert failure is not None
            failed = TaskAnswer(
                result(
                    connection_id,
                    sale_id,
                    Outcome.IN_PROGRESS,
                    detail=failure.event.message,
                    attempts=attempts,
                    episode=snap.row.episode,
                    retryable=failure.retryable,
                    error_type=str(failure.event.error_type),
                ),
                failed=True,
                retryable=failure.retryable,
            )
            return Decision(
                failed, moves.note_failure(snap, actor, failure=failure, attempts=attempts, backoff=ctx.backoff)
            )

        snap, answer = lifecycle.run(connection_id, sale_id, decide, seen=first)
        return answer if answer is not None else TaskAnswer(stored(snap, by=me, import_key=key))

    def _cart_attempt(
        self, connection_id: str, sale_id: str, verdict: Verdict, *, name: str, actor: Actor, attempts: int
    ) -> TaskAnswer | Verdict:
        """The cart's row written from the cart's verdict (unless another execution works on it, or it is settled),
        then this execution's sale follows it. A verdict (a failure) when the sale's attempt must count as failed."""
        ctx, lifecycle = self._ctx, self._ctx.lifecycle
        pack_id, whole = verdict.cart, verdict.whole
        assert pack_id is not None and whole is not None
        if whole.failure is not None:
            return whole
        me = f"execution:{name}"

        def decide(snap: Snapshot) -> Decision[None]:
            if snap.state.settled or snap.owner_live(lifecycle.now()):
                return Decision(None)  # a settled cart is not reopened by a task; a live owner finishes it
            if whole.record is not None:
                return Decision(None, moves.reflect(snap, actor, record=whole.record, attempts=attempts, settled_by=me))
            assert whole.blocking is not None
            event = moves.blocked_event(whole.blocking, Trigger.STATE_MACHINE, f"{name}#cart#{attempts}")
            change = moves.block(snap, actor, blocking=whole.blocking, attempts=attempts, settled_by=me, event=event)
            return Decision(None, change)

        cart_snap, _ = lifecycle.run(connection_id, pack_id, decide)
        if cart_snap.state.settled:
            followed = carts.follow(ctx, connection_id, sale_id, pack_id, actor=actor, settled_by=me, owner=name)
            if followed is not None:
                answer = carts.for_sale(stored(followed, by=me), sale_id, pack_id, verdict.cart_sale_ids)
                return TaskAnswer(answer)
        running = cart_snap.row.latest_execution
        message = f"Cart {pack_id} of this sale is being reprocessed by execution {running.name if running else '?'}"
        event = ErrorEvent(
            error_type=ErrorType.IMPORT_FAILED,
            message=message,
            trigger=Trigger.STATE_MACHINE,
            attempt_key=f"{name}#cart#{attempts}",
        )
        return Verdict(failure=Failure(event=event, retryable=True))

    def _current(self, snap: Snapshot, me: str) -> RecoveryResult:
        """Where the sale stands, for an execution that does not own it (any more)."""
        if snap.state is State.NEVER_SEEN:
            return result(snap.connection_id, snap.sale_id, Outcome.PENDING)
        return stored(snap, by=me)

    # --- Escalate -----------------------------------------------------------------------------------------------------

    def escalate(
        self,
        connection_id: str,
        sale_id: str,
        *,
        execution_arn: str,
        reason: Reason,
        attempts: int,
        last_error: dict[str, object] | None,
        cart: bool = False,
    ) -> RecoveryResult:
        return as_cart(
            self._escalate(
                connection_id,
                sale_id,
                execution_arn=execution_arn,
                reason=reason,
                attempts=attempts,
                last_error=last_error,
            ),
            cart,
        )

    def _escalate(
        self,
        connection_id: str,
        sale_id: str,
        *,
        execution_arn: str,
        reason: Reason,
        attempts: int,
        last_error: dict[str, object] | None,
    ) -> RecoveryResult:
        # No connection look-up: the execution was started for a known connection, and paging needs no
        # marketplace access, so the escalate role reads no connections (least privilege).
        sale_id = parse_identifier(sale_id).raw
        name = execution_name_of(execution_arn)
        me = f"execution:{name}"
        snap = self._ctx.lifecycle.read(connection_id, sale_id)
        if snap.state is State.ESCALATED and snap.row.settled_by == me:
            # This task ran before (a Lambda retry): the escalation stands; send its page if it is still due.
            self._escalations.page(snap, Actor.ESCALATE_TASK, execution_id=execution_arn)
            return stored(snap, by=me)
        failure = None
        text = readable_error(last_error)
        if reason is Reason.UNEXPECTED_ERROR or snap.entry is None:
            # The failing task may not have written the failure (it failed unexpectedly): record what it said.
            error_type = (
                ErrorType.MARKETPLACE_REFUSED if reason is Reason.MARKETPLACE_REFUSED else ErrorType.IMPORT_FAILED
            )
            event = ErrorEvent(
                error_type=error_type,
                message=text or reason.value,
                trigger=Trigger.STATE_MACHINE,
                attempt_key=f"{name}#escalate",
            )
            failure = Failure(event=event, retryable=reason is not Reason.MARKETPLACE_REFUSED)
        return self._escalations.escalate(
            connection_id,
            sale_id,
            actor=Actor.ESCALATE_TASK,
            reason=reason,
            attempts=attempts,
            settled_by=me,
            may_escalate=lambda current: current.owned_by(name),
            failure=failure,
            execution_id=execution_arn,
            seen=snap,
        )
