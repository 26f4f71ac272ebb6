"""One sale of a bulk message (API jobs, error-sweep and reconciliation jobs): one attempt, then one transition.

The worker decides from the sale as it read it for the whole message and writes conditionally on it, so it never
claims anything before its attempt: a healthy sale costs its ML read and one write. Reflected or blocked, the sale
settles (whoever owned it). Still failing: a sale that a live execution owns is joined (the job's item waits for
that execution's outcome); otherwise a transient failure is handed to the relink state machine (the claim, the
failure and the job's item in one write, then the execution is started), a listed sale is escalated (seed step
3), and a sweep's retry waits for the next sweep until its retries are spent.

A sale of a cart is worked on as its cart: the same steps on the cart's row (keyed by the pack id), the job's item
moving with the cart's row (``job@sale``) when it waits; its answer is the cart's outcome. Several sales of one cart
in a job reprocess it once: the first one's verdict serves the others of the message (``CartMemo``), and the
cart's row is written once (a second writer finds it settled by this job, and answers the same).
"""

from __future__ import annotations

from dataclasses import dataclass

from shared.jobs import Job
from shared.lifecycle import moves
from shared.lifecycle.change import Decision, JobWrite
from shared.lifecycle.dynamo import JobItemMoved
from shared.lifecycle.row import Snapshot, execution_name
from shared.lifecycle.table import Actor, State
from shared.models import ExecutionRef, Outcome, Reason, RecoveryResult, Trigger
from shared.stores.base import ProductStore
from shared.usecases import carts
from shared.usecases.context import Context, result, stored
from shared.usecases.escalations import Escalations
from shared.verification import CartMemo, Verdict

# What an order's ML status says about a sale not paid (yet), or not the seller's: a notification job writes nothing
# for such an order the service never saw.
NOT_A_SALE_YET = frozenset({Reason.PAYMENT_NOT_VERIFIED, Reason.SALE_CANCELLED, Reason.SALE_NOT_FOUND})


@dataclass(frozen=True)
class _Next:
    """What happens after the write: answer now, start the claimed execution, or escalate."""

    answer: RecoveryResult | None = None
    start: ExecutionRef | None = None
    escalate: Reason | None = None


class BulkSales:
    def __init__(self, context: Context, escalations: Escalations, *, max_attempts: int) -> None:
        self._ctx = context
        self._escalations = escalations
        self._max_attempts = max_attempts

    def process(
        self,
        job: Job,
        sale_id: str,
        seen: Snapshot,
        products: ProductStore,
        memo: CartMemo | None = None,
    ) -> RecoveryResult | None:
        """The sale's terminal outcome for the job's item, or None when the item waits on the sale (moved in the
        same write as the sale: handed over to an execution, joined to one, or deferred to the next sweep)."""
        me = f"job:{job.job_id}"
        if seen.reflected or (seen.state.settled and seen.row.settled_by == me):
            return stored(seen, by=me)  # a redelivered message: what this job decided already stands
        sweep_retry = job.trigger is Trigger.SCHEDULE and seen.entry is not None
        if sweep_retry and seen.state.settled:
            # Settled since the sweep queued it (a person's resync, an execution): an automatic retry never reruns a
            # settled sale; the job's item takes the sale's outcome.
            return stored(seen, by=me)
        trigger = job.trigger if job.trigger in (Trigger.SCHEDULE, Trigger.NOTIFICATION) else Trigger.BULK
        known = memo.cart_of(sale_id) if memo is not None else None
        if known is not None and known[0] != sale_id:
            return self._cart_sale(job, sale_id, seen, *known, me=me, trigger=trigger)
        listed = seen.entry is not None
        key = f"{job.job_id}#retry" if sweep_retry else f"{job.job_id}#resync" if listed else f"{job.job_id}#relink#1"
        verdict = self._ctx.verifier.attempt(
            job.connection_id,
            sale_id,
            entry=seen.entry,
            trigger=trigger,
            attempt_key=key,
            products=products,
            memo=memo,
        )
        if verdict.cart is not None and verdict.whole is not None:
            sale_ids = verdict.cart_sale_ids or []
            return self._cart_sale(job, sale_id, seen, verdict.cart, sale_ids, verdict.whole, me=me, trigger=trigger)
        return self._settle(job, sale_id, seen, verdict, me=me, key=key, sweep_retry=sweep_retry, trigger=trigger)

    def _cart_sale(
        self,
        job: Job,
        sale_id: str,
        seen: Snapshot,
        pack_id: str,
        sale_ids: list[str],
        whole: Verdict,
        *,
        me: str,
        trigger: Trigger,
    ) -> RecoveryResult | None:
        """A sale of a cart: the cart is worked on (its row, keyed by the pack id) and the item takes its outcome; a
        sale with a row of its own follows the cart once it is settled."""
        ctx = self._ctx
        cart_seen = ctx.lifecycle.read(job.connection_id, pack_id)
        if cart_seen.reflected or (cart_seen.state.settled and cart_seen.row.settled_by == me):
            answer: RecoveryResult | None = stored(cart_seen, by=me)
        else:
            answer = self._settle(
                job,
                pack_id,
                cart_seen,
                whole,
                me=me,
                key=f"{job.job_id}#relink#1",
                sweep_retry=False,
                trigger=trigger,
                item=sale_id,
                cart_sale_ids=sale_ids,
            )
        if answer is None:
            return None  # the item waits on the cart's row (handed over with it, or joined to its execution)
        if seen.state is not State.NEVER_SEEN:
            carts.follow(ctx, job.connection_id, sale_id, pack_id, actor=Actor.BULK_WORKER, settled_by=me, seen=seen)
        return carts.for_sale(answer, sale_id, pack_id, sale_ids)

    def _settle(
        self,
        job: Job,
        sale_id: str,
        seen: Snapshot,
        verdict: Verdict,
        *,
        me: str,
        key: str,
        sweep_retry: bool,
        trigger: Trigger,
        item: str | None = None,
        cart_sale_ids: list[str] | None = None,
    ) -> RecoveryResult | None:
        """One write on the subject's row (a sale, or a cart keyed by its pack id: ``item`` is then the job's item)
        from the verdict; then start, escalate or answer."""
        if verdict.failure is None and verdict.record is None and verdict.blocking is None:
            raise AssertionError(f"a verdict without an outcome for {sale_id}")
        try:
            snap, then = self._ctx.lifecycle.run(
                job.connection_id,
                sale_id,
                lambda snap: self._decide(
                    snap,
                    job,
                    verdict,
                    me=me,
                    key=key,
                    sweep_retry=sweep_retry,
                    trigger=trigger,
                    item=item,
                    cart_sale_ids=cart_sale_ids,
                ),
                seen=seen,
            )
        except JobItemMoved:
            return None  # another delivery of this message handed the item over first
        if then.start is not None:
            self._ctx.require_workflow().ensure_started(job.connection_id, sale_id, then.start)
            return None
        if then.escalate is not None:
            failure = verdict.failure
            now = self._ctx.lifecycle.now()
            return self._escalations.escalate(
                job.connection_id,
                sale_id,
                actor=Actor.BULK_WORKER,
                reason=then.escalate,
                attempts=(snap.entry.attempts if snap.entry else 0) + 1 if sweep_retry else 1,
                settled_by=me,
                may_escalate=lambda current: not current.owner_live(now),
                failure=failure,
                seen=snap,
            )
        if then.answer is not None:
            return then.answer
        if snap.state.settled:  # this job reflected or blocked it
            return stored(snap, by=me)
        return None  # handed over, joined or deferred: the item moved with the sale

    def _decide(
        self,
        snap: Snapshot,
        job: Job,
        verdict: Verdict,
        *,
        me: str,
        key: str,
        sweep_retry: bool,
        trigger: Trigger,
        item: str | None = None,
        cart_sale_ids: list[str] | None = None,
    ) -> Decision[_Next]:
        lifecycle = self._ctx.lifecycle
        if snap.reflected or (snap.state.settled and (snap.row.settled_by == me or sweep_retry)):
            return Decision(_Next(answer=stored(snap, by=me, import_key=key)))
        if verdict.record is not None:
            return Decision(
                _Next(), moves.reflect(snap, Actor.BULK_WORKER, record=verdict.record, attempts=1, settled_by=me)
            )
        if verdict.blocking is not None:
            if (
                job.trigger is Trigger.NOTIFICATION
                and snap.state is State.NEVER_SEEN
                and (verdict.blocking.reason in NOT_A_SALE_YET)
            ):
                # ML notifies every order it creates or changes, unpaid and cancelled ones too: one the service never
                # saw and that is not a paid sale gets no row and no error-list entry (the job's item says why). Its
                # next notification, once paid, relinks it.
                blocking = verdict.blocking
                return Decision(
                    _Next(
                        answer=result(
                            job.connection_id,
                            snap.sale_id,
                            Outcome.NOT_REFLECTABLE,
                            reason=blocking.reason,
                            detail=blocking.detail,
                        )
                    )
                )
            event = moves.blocked_event(verdict.blocking, trigger, key)
            # A blocked sale took no import attempt (the seller must act first): attempts stay 0.
            change = moves.block(
                snap, Actor.BULK_WORKER, blocking=verdict.blocking, attempts=0, settled_by=me, event=event
            )
            return Decision(_Next(), change)
        failure = verdict.failure
        assert failure is not None
        now = lifecycle.now()
        if snap.owner_live(now):
            # A relink execution works on the sale: the job's item waits for its outcome instead of a second run.
            owner = snap.row.latest_execution
            waiting = JobWrite(
                job_id=job.job_id,
                attempts=snap.row.attempts,
                execution_arn=owner.execution_arn if owner else None,
                detail="A relink execution is working on this sale; its outcome settles this item.",
                item=item,
            )
            return Decision(_Next(), moves.attach(snap, Actor.BULK_WORKER, job=waiting))
        if sweep_retry:
            entry = snap.entry
            spent = entry is not None and entry.attempts + 1 >= self._max_attempts
            if failure.retryable and not spent:
                change = moves.defer(
                    snap, Actor.BULK_WORKER, job_id=job.job_id, failure=failure, backoff=self._ctx.backoff, item=item
                )
                return Decision(_Next(), change)
            return Decision(
                _Next(escalate=Reason.RETRIES_EXHAUSTED if failure.retryable else Reason.MARKETPLACE_REFUSED)
            )
        if snap.entry is not None or not failure.retryable:
            return Decision(_Next(escalate=Reason.RESYNC_FAILED if failure.retryable else Reason.MARKETPLACE_REFUSED))
        # A transient failure: the relink state machine takes over with this attempt counted (three in all).
        workflow = self._ctx.require_workflow()
        name = execution_name(job.connection_id, snap.sale_id, snap.claim_episode)
        cart = item is not None  # the subject is a cart: its execution takes {connection_id, pack_id}
        execution = ExecutionRef(
            execution_arn=workflow.arn_for(name), name=name, started_at=now, start_attempts=1, cart=cart
        )
        handed = JobWrite(job_id=job.job_id, attempts=1, execution_arn=execution.execution_arn, item=item)
        change = lifecycle.claim(
            snap,
            Actor.BULK_WORKER,
            execution,
            job=handed,
            failure=failure,
            backoff=self._ctx.backoff,
            cart_sale_ids=cart_sale_ids,
        )
        return Decision(_Next(start=change.row.latest_execution), change)
