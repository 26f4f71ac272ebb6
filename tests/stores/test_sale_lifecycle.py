"""The sale lifecycle against moto tables created from template.yaml: every write conditional on the version it
was decided from, the transition table enforced, waiting job items settled in the same write as the sale, bounded
entries, and writes that survive throttling or fail loudly."""

from __future__ import annotations

import threading
from datetime import timedelta
from typing import Any, cast

import pytest

from shared.jobs import Job
from shared.lifecycle import IllegalTransition, SaleLifecycle, moves
from shared.lifecycle.change import Decision, JobWrite
from shared.lifecycle.moves import Backoff, Blocking, Failure
from shared.lifecycle.row import Snapshot
from shared.lifecycle.table import Actor, State
from shared.models import (
    ErrorEntry,
    ErrorEvent,
    ErrorType,
    ExecutionRef,
    Outcome,
    Reason,
    ReflectedSale,
    Trigger,
)
from shared.stores.base import StateWriteFailed
from shared.stores.jobs import DynamoJobStore
from tests.stores.conftest import lifecycle_on
from tests.stores.conftest import table as _table

C = "mla-main"
BACKOFF = Backoff(timedelta(seconds=300), timedelta(hours=6))


@pytest.fixture
def lifecycle(tables: dict[str, str]) -> SaleLifecycle:
    return lifecycle_on(tables)


def _record(sale_id: str, buyer_id: int = 42) -> ReflectedSale:
    return ReflectedSale(connection_id=C, sale_id=sale_id, status="paid", buyer_id=buyer_id)


def _reflect(snap: Snapshot, buyer_id: int = 42, by: str = "job:j") -> moves.Change:
    return moves.reflect(snap, Actor.BULK_WORKER, record=_record(snap.sale_id, buyer_id), attempts=1, settled_by=by)


def _failure(key: str | None = None, message: str = "503") -> Failure:
    event = ErrorEvent(error_type=ErrorType.MARKETPLACE_UNAVAILABLE, message=message, attempt_key=key)
    return Failure(event=event, retryable=True)


def _claim(lifecycle: SaleLifecycle, snap: Snapshot, name: str = "exec-1", **extra: Any) -> moves.Change:
    execution = ExecutionRef(execution_arn=f"arn:aws:states:us-east-1:1:execution:relink:{name}", name=name)
    return lifecycle.claim(snap, Actor.API_RELINK, execution, **extra)


def test_a_sale_is_reflected_once_and_the_second_import_answers_reflected_already(lifecycle: SaleLifecycle) -> None:
    first = lifecycle.read(C, "1")
    written = lifecycle.apply(first, _reflect(first, buyer_id=1))
    assert written is not None and written.row.version == 1 and written.row.episode == 1
    # A second writer that read before the first wrote loses: nothing is written over the record.
    assert lifecycle.apply(first, _reflect(first, buyer_id=2)) is None
    again = lifecycle.read(C, "1")
    assert again.reflected and again.row.record is not None and again.row.record.buyer_id == 1
    # And nothing may move a reflected sale: the table has no transition out of reflected.
    with pytest.raises(IllegalTransition):
        lifecycle.apply(again, _reflect(again, buyer_id=3))


def test_threads_racing_to_reflect_store_the_sale_once(lifecycle: SaleLifecycle, tables: dict[str, str]) -> None:
    """8 threads, each deciding from its own read: exactly one record is written, every thread ends seeing it."""
    barrier = threading.Barrier(8)
    seen: dict[int, int] = {}
    errors: list[BaseException] = []

    def importer(n: int) -> None:
        barrier.wait()
        try:

            def decide(snap: Snapshot) -> Decision[int]:
                if snap.reflected:
                    assert snap.row.record is not None
                    return Decision(snap.row.record.buyer_id or 0)
                return Decision(n, _reflect(snap, buyer_id=n))

            _, seen[n] = lifecycle.run(C, "8", decide)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=importer, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert errors == []
    stored = lifecycle.read(C, "8")
    assert stored.row.record is not None
    assert set(seen.values()) == {stored.row.record.buyer_id}
    assert stored.row.version == 1
    assert len(_table(tables, "SALES_TABLE").scan()["Items"]) == 1


def test_the_table_refuses_what_it_does_not_list(lifecycle: SaleLifecycle) -> None:
    snap = lifecycle.read(C, "2")
    change = moves.reflect(snap, Actor.SWEEP, record=_record("2"), attempts=1, settled_by="sweep")
    with pytest.raises(IllegalTransition, match="sweep may not reflect"):
        lifecycle.apply(snap, change)
    # note_failure only happens to a sale in progress
    with pytest.raises(IllegalTransition):
        lifecycle.apply(snap, moves.Change(moves.Transition.NOTE_FAILURE, Actor.RELINK_TASK, snap.row))
    assert lifecycle.read(C, "2").state is State.NEVER_SEEN


def test_a_failure_is_recorded_once_per_attempt_key(lifecycle: SaleLifecycle) -> None:
    claimed = lifecycle.apply(lifecycle.read(C, "9"), _claim(lifecycle, lifecycle.read(C, "9")))
    assert claimed is not None
    first = moves.note_failure(
        claimed, Actor.RELINK_TASK, failure=_failure("exec-1#relink#1"), attempts=1, backoff=BACKOFF
    )
    assert first is not None
    noted = lifecycle.apply(claimed, first)
    assert noted is not None and noted.entry is not None and noted.entry.attempts == 1
    # A retried Lambda writes the same attempt: nothing to write.
    assert (
        moves.note_failure(noted, Actor.RELINK_TASK, failure=_failure("exec-1#relink#1"), attempts=1, backoff=BACKOFF)
        is None
    )
    second = moves.note_failure(
        noted, Actor.RELINK_TASK, failure=_failure("exec-1#relink#2", "timeout"), attempts=2, backoff=BACKOFF
    )
    assert second is not None
    twice = lifecycle.apply(noted, second)
    assert twice is not None and twice.entry is not None
    assert twice.entry.attempts == 2 and [e.message for e in twice.entry.history] == ["503", "timeout"]
    assert twice.entry.next_retry_at is not None and twice.row.attempts == 2


def test_escalation_happens_once_per_episode_and_a_rerun_may_escalate_again(lifecycle: SaleLifecycle) -> None:
    now = lifecycle.now()
    claimed = lifecycle.apply(lifecycle.read(C, "10"), _claim(lifecycle, lifecycle.read(C, "10")))
    assert claimed is not None and claimed.row.episode == 1

    def escalation(snap: Snapshot) -> moves.Change:
        return moves.escalate(
            snap,
            Actor.ESCALATE_TASK,
            reason=Reason.RETRIES_EXHAUSTED,
            attempts=3,
            settled_by="execution:exec-1",
            now=now,
            page_retry=timedelta(minutes=5),
            failure=_failure("k"),
            backoff=BACKOFF,
        )

    escalated = lifecycle.apply(claimed, escalation(claimed))
    assert (
        escalated is not None and escalated.row.page_due and escalated.entry is not None and escalated.entry.escalated
    )
    # A second escalation decided from the same (older) read loses the race: one page per episode.
    assert lifecycle.apply(claimed, escalation(claimed)) is None
    # A rerun claims a new episode: the entry's mark is cleared, and it may be escalated (and paged) again.
    rerun = lifecycle.apply(escalated, _claim(lifecycle, escalated, name="exec-2"))
    assert rerun is not None and rerun.row.episode == 2 and rerun.entry is not None and not rerun.entry.escalated
    again = lifecycle.apply(rerun, escalation(rerun))
    assert again is not None and again.row.episode == 2 and again.row.outcome is Outcome.ESCALATED


def test_a_blocked_sale_is_never_escalated_over(lifecycle: SaleLifecycle) -> None:
    """An owner that decided to escalate from an older read loses to a block written meanwhile."""
    claimed = lifecycle.apply(lifecycle.read(C, "11"), _claim(lifecycle, lifecycle.read(C, "11")))
    assert claimed is not None
    blocking = Blocking(reason=Reason.SALE_CANCELLED, detail="cancelled")
    event = moves.blocked_event(blocking, Trigger.BULK, "job:j#relink#1")
    blocked = lifecycle.apply(
        claimed, moves.block(claimed, Actor.BULK_WORKER, blocking=blocking, attempts=1, settled_by="job:j", event=event)
    )
    assert blocked is not None and blocked.row.outcome is Outcome.NOT_REFLECTABLE and blocked.row.owner is None
    late = moves.escalate(
        claimed,
        Actor.ESCALATE_TASK,
        reason=Reason.RETRIES_EXHAUSTED,
        attempts=3,
        settled_by="execution:exec-1",
        now=lifecycle.now(),
        page_retry=timedelta(minutes=5),
        failure=None,
        backoff=BACKOFF,
    )
    assert lifecycle.apply(claimed, late) is None
    assert lifecycle.read(C, "11").row.reason is Reason.SALE_CANCELLED


def _job(tables: dict[str, str], job_id: str, sale_ids: list[str]) -> tuple[DynamoJobStore, Job]:
    jobs = DynamoJobStore(_table(tables, "JOBS_TABLE"))
    job = Job(job_id=job_id, connection_id=C, accepted=len(sale_ids))
    jobs.create(job, sale_ids)
    return jobs, job


def test_waiting_job_items_are_settled_in_the_same_write_as_the_sale(
    lifecycle: SaleLifecycle, tables: dict[str, str]
) -> None:
    """Two jobs wait on one sale (one handed it over, one joined); reflecting it settles both items and counts them
    on both headers, in one transaction."""
    jobs, _ = _job(tables, "job-a", ["12"])
    _job(tables, "job-b", ["12", "13"])
    snap = lifecycle.read(C, "12")
    handed = lifecycle.apply(
        snap, _claim(lifecycle, snap, job=JobWrite(job_id="job-a", attempts=1, execution_arn="arn:exec-1"))
    )
    assert handed is not None and handed.row.waiting_jobs == ["job-a"]
    joined = lifecycle.apply(handed, moves.attach(handed, Actor.BULK_WORKER, job=JobWrite(job_id="job-b", attempts=1)))
    assert joined is not None and joined.row.waiting_jobs == ["job-a", "job-b"]
    header_b = jobs.get("job-b")
    assert header_b is not None and header_b.all_counts()["in_progress"] == 1
    reflected = lifecycle.apply(
        joined,
        moves.reflect(joined, Actor.RELINK_TASK, record=_record("12"), attempts=2, settled_by="execution:exec-1"),
    )
    assert reflected is not None and reflected.row.waiting_jobs == []
    for job_id in ("job-a", "job-b"):
        item = jobs.get_items(job_id, ["12"])["12"]
        assert (item.outcome, item.attempts, item.episode) == (Outcome.REFLECTED, 2, 1)
        header = jobs.get(job_id)
        assert header is not None and header.counts["reflected"] == 1 and header.handed_over == 0
    header_a = jobs.get("job-a")
    assert header_a is not None and header_a.status.value == "completed"
    assert not jobs.has_open_item(C, "12", updated_after=lifecycle.now() - timedelta(hours=1))
    assert jobs.has_open_item(C, "13", updated_after=lifecycle.now() - timedelta(hours=1))


def test_a_waiting_job_whose_item_is_gone_is_left_out(lifecycle: SaleLifecycle, tables: dict[str, str]) -> None:
    _job(tables, "job-c", ["14"])
    snap = lifecycle.read(C, "14")
    handed = lifecycle.apply(snap, _claim(lifecycle, snap, job=JobWrite(job_id="job-c", attempts=1)))
    assert handed is not None
    _table(tables, "JOBS_TABLE").delete_item(Key={"job_id": "job-c", "item_key": "14"})  # expired (TTL)
    reflected = lifecycle.apply(
        handed, moves.reflect(handed, Actor.RELINK_TASK, record=_record("14"), attempts=1, settled_by="x")
    )
    assert reflected is not None and reflected.row.outcome is Outcome.REFLECTED


def test_an_entry_keeps_a_bounded_history(lifecycle: SaleLifecycle) -> None:
    claimed = lifecycle.apply(lifecycle.read(C, "15"), _claim(lifecycle, lifecycle.read(C, "15")))
    assert claimed is not None
    snap = claimed
    for n in range(70):
        change = moves.note_failure(
            snap, Actor.RELINK_TASK, failure=_failure(f"k{n}", str(n)), attempts=n, backoff=BACKOFF
        )
        assert change is not None
        written = lifecycle.apply(snap, change)
        assert written is not None
        snap = written
    entry = lifecycle.read(C, "15").entry
    assert entry is not None and entry.attempts == 70
    assert len(entry.history) == 50 and entry.history[-1].message == "69"
    assert len(entry.attempt_keys) == 20 and entry.attempt_keys[-1] == "k69"


def test_due_rows_are_listed_for_the_reaper(lifecycle: SaleLifecycle) -> None:
    late = lifecycle_on_offset(lifecycle, seconds=-3600)
    snap = late.read(C, "16")
    assert late.apply(snap, _claim(late, snap)) is not None  # claimed an hour ago: its start check is due
    fresh = lifecycle.read(C, "17")
    assert lifecycle.apply(fresh, _claim(lifecycle, fresh, name="exec-17")) is not None
    assert lifecycle.due(C) == ["16"]


def lifecycle_on_offset(lifecycle: SaleLifecycle, *, seconds: float) -> SaleLifecycle:
    store = lifecycle._store
    return SaleLifecycle(store, lifecycle.timing, now=lambda: lifecycle.now() + timedelta(seconds=seconds))


def test_a_write_throttled_every_time_fails_loudly_and_writes_nothing(
    lifecycle: SaleLifecycle, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A transaction cancelled by throttling is written again after a back-off; throttled every time, the caller
    gets StateWriteFailed (its message or task runs again), never a silent "done"."""
    import shared.lifecycle.dynamo as lifecycle_dynamo
    from devstack.faults import dynamodb_throttling

    monkeypatch.setattr(lifecycle_dynamo, "back_off", lambda attempt: None)
    snap = lifecycle.read(C, "18")
    listed = lifecycle.apply(
        snap,
        moves.list_error(
            snap,
            Actor.PLATFORM,
            entry=ErrorEntry(
                connection_id=C, sale_id="18", error_type="marketplace_timeout", message="t", retryable=True
            ),
        ),
    )
    assert listed is not None
    with dynamodb_throttling(1.0, seed=1) as throttled, pytest.raises(StateWriteFailed):
        lifecycle.apply(listed, _reflect(listed))  # the row and its entry: one transaction, cancelled every time
    assert throttled.injected == 6  # WRITE_TRIES, each one cancelled
    assert lifecycle.read(C, "18").row.outcome is Outcome.PENDING
    # Throttled now and then, the same write goes through (written again after a back-off).
    with dynamodb_throttling(0.5, seed=3) as throttled:
        written = lifecycle.apply(listed, _reflect(listed))
    assert written is not None and lifecycle.read(C, "18").reflected


class _Pages:
    def __init__(self) -> None:
        self.sent: list[Any] = []

    def publish(self, message: Any) -> str:
        self.sent.append(message)
        return f"m-{len(self.sent)}"


def _escalations(lifecycle: SaleLifecycle, tables: dict[str, str], pages: _Pages) -> Any:
    from shared.stores.errors import DynamoErrorStore
    from shared.stores.products import DynamoProductStore
    from shared.usecases.context import Context
    from shared.usecases.escalations import Escalations

    context = Context(
        lifecycle=lifecycle,
        verifier=cast(Any, None),  # escalation never asks ML
        errors=DynamoErrorStore(_table(tables, "SALE_ERRORS_TABLE")),
        products=DynamoProductStore(_table(tables, "PRODUCT_LINKS_TABLE")),
        notifier=pages,
    )
    return Escalations(context)


def test_a_page_goes_out_only_for_an_episode_still_escalated(lifecycle: SaleLifecycle, tables: dict[str, str]) -> None:
    """The escalation commits, then, before its page goes out, a person's resync reflects the sale (the pause point
    lets the test put the resync there): no page. Without the interleaving: exactly one page, marked sent."""
    from shared.lifecycle import pause

    pages = _Pages()
    escalations = _escalations(lifecycle, tables, pages)

    def escalate(sale_id: str) -> Any:
        claimed = lifecycle.apply(lifecycle.read(C, sale_id), _claim(lifecycle, lifecycle.read(C, sale_id)))
        assert claimed is not None
        return escalations.escalate(
            C,
            sale_id,
            actor=Actor.ESCALATE_TASK,
            reason=Reason.RETRIES_EXHAUSTED,
            attempts=3,
            settled_by="execution:exec-1",
            may_escalate=lambda snap: snap.owned_by("exec-1"),
            failure=_failure("exec-1#relink#3"),
        )

    def reflect_before_the_page(write: pause.PendingWrite) -> None:
        if write.transition == "page":
            snap = lifecycle.read(C, write.sale_id)
            change = moves.reflect(
                snap, Actor.API_RESYNC, record=_record(write.sale_id), attempts=1, settled_by="request:r"
            )
            assert lifecycle.apply(snap, change) is not None

    pause.set_hook(reflect_before_the_page)
    try:
        overtaken = escalate("20")
    finally:
        pause.set_hook(None)
    assert overtaken.outcome is Outcome.ESCALATED  # it did escalate episode 1 ...
    assert pages.sent == [] and lifecycle.read(C, "20").reflected  # ... but the sale was reflected before its page
    escalate("21")
    assert [(p.sale_id, p.episode) for p in pages.sent] == [("21", 1)]
    assert lifecycle.read(C, "21").row.page_due is False

    # Overtaken by a rerun that escalated again (episode 2) before episode 1's page went out: the help desk gets the
    # rerun's page only, once, with the whole history.
    pages.sent.clear()

    def rerun_escalates_before_the_page(write: pause.PendingWrite) -> None:
        if write.transition == "page" and not pages.sent:
            pause.set_hook(None)  # the rerun's own page goes through
            escalations.escalate(
                C,
                write.sale_id,
                actor=Actor.API_RESYNC,
                reason=Reason.RESYNC_FAILED,
                attempts=1,
                settled_by="request:r2",
                may_escalate=lambda snap: not snap.owner_live(lifecycle.now()),
                failure=_failure("request:r2#resync"),
            )

    pause.set_hook(rerun_escalates_before_the_page)
    try:
        escalate("22")
    finally:
        pause.set_hook(None)
    assert [(p.sale_id, p.episode, p.reason) for p in pages.sent] == [("22", 2, Reason.RESYNC_FAILED)]
    assert len(pages.sent[0].history) == 2
