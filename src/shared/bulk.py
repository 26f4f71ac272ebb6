"""Bulk reprocessing (the seed's "reprocesamiento masivo", without its 50-id chore).

``parse_sale_ids`` takes any list — JSON or the seed's comma-separated text — trims, de-duplicates and validates
each id, and says why each rejected one was rejected. ``BulkService.submit`` writes the job ledger and sends the
accepted ids in SQS messages of at most 50. ``BulkService.process`` is the worker's job for one message: for
each id, verify, then resync or relink as the seed says; a relink that fails for a transient cause continues in
the relink state machine with its attempt counted, so bulk and single requests obey the same three-attempt rule.
Each sale's decision and write are the sale lifecycle's (``shared.usecases.bulk_sales``).
"""

from __future__ import annotations

import contextvars
import re
import threading
import time
import uuid
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from aws_lambda_powertools import Logger
from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from shared.bulk_errors import (
    NOT_QUEUED,
    NOT_QUEUED_MESSAGE,
    NoSaleIds,
    NoValidSaleIds,
    PartlyQueued,
    QueueSendError,
    TooManyIds,
)
from shared.identifiers import InvalidIdentifier, parse_identifier
from shared.jobs import MESSAGE_SIZE, Job, JobItem, JobStore, RejectedId, Settlement
from shared.lanes import LaneMessage, Lanes, RepairReport
from shared.lifecycle.row import Snapshot
from shared.models import Outcome, Reason, RecoveryResult, Trigger
from shared.recovery import RecoveryService
from shared.stores.base import Page
from shared.stores.memo import ProductLinkMemo
from shared.verification import CartMemo

logger = Logger(child=True)

_SEPARATORS = re.compile(r"[,;\s]+")
MAX_ID_TEXT = 64  # longer entries are junk; echoing them back in full would bloat the answer
SETTLE_BATCH = 10  # results per settling transaction: progress every few sales, a tenth of the writes
# The worker's deadline (``BulkService.process`` with ``remaining``): what one more id may cost, and what the end of a
# run needs after its last id. See ``id_budget_seconds``.
# At most 4 ML requests per id (shared.identifiers.resolve, shared.verification): a found order costs 1, 2 with its
# pack, or 3 for a kit component in a pack of several orders (its kit's orders); an id ML does not know as an order
# is tried as a pack and as a shipment, and a found shipment's items are read (they name its orders).
ML_REQUESTS_PER_SALE = 4
RETRY_PAUSE_SECONDS = 1.0  # the ML client's jittered pause before a retry: under 0.2, 0.4, 0.8 s for the first three
HANDBACK_SECONDS = 2.0  # after the last id: one settling transaction and one SendMessage, with botocore's retries


def id_budget_seconds(meli_timeout_seconds: float, meli_max_tries: int) -> float:
    """The longest one id can keep a worker on Mercado Libre: each of its ``ML_REQUESTS_PER_SALE`` requests may take
    every try the client allows, each up to the client's timeout, with a pause between tries. At the template's
    defaults (5 s, 3 tries): 4 x (3 x 5 + 2 x 1) = 68 s; with ``HANDBACK_SECONDS`` a 120 s worker stops taking ids
    once 70 s are left, i.e. takes ids for its first 50 s. A worst case, not a typical id (one request of a few
    hundred ms): a run that stops early costs one more message, a run that overruns costs the whole batch a receive.
    Not in it: its own writes (milliseconds), a 429's Retry-After (the shared quota keeps workers under ML's) and the
    wait for a token of the connection's quota, which is measured instead (``Deadline``)."""
    per_request = meli_max_tries * meli_timeout_seconds + (meli_max_tries - 1) * RETRY_PAUSE_SECONDS
    return ML_REQUESTS_PER_SALE * per_request


class Deadline:
    """Whether a run over one message may take one more id: the time left (``remaining()``, in seconds, read on each
    call) must cover one more id plus ``HANDBACK_SECONDS``. One more id costs the larger of ``per_id`` (the worst case
    the ML client's settings allow) and the slowest id of this run so far, which includes the wait for a token of the
    connection's shared quota (with many workers on one connection, that wait is most of an id's time).

    The first id of a run is always taken, so a run always makes progress; once an id is refused, so is every later
    one (the ids left go back to the queue in one message)."""

    def __init__(self, remaining: Callable[[], float], *, per_id: float) -> None:
        self._remaining = remaining
        self._per_id = per_id
        self._slowest = 0.0
        self._taken = 0
        self._closed = False
        self._lock = threading.Lock()

    def needed(self) -> float:
        return max(self._per_id, self._slowest) + HANDBACK_SECONDS

    def take(self) -> bool:
        with self._lock:
            if self._closed:
                return False
            if self._taken and self._remaining() < self.needed():
                self._closed = True
                return False
            self._taken += 1
            return True

    def took(self, seconds: float) -> None:
        with self._lock:
            self._slowest = max(self._slowest, seconds)


class BulkMessage(BaseModel):
    """The SQS message body of DESIGN §3, exactly."""

    model_config = ConfigDict(extra="forbid", defer_build=True)

    job_id: str = Field(min_length=1, max_length=64)
    connection_id: str = Field(min_length=1, max_length=64)
    sale_ids: list[str] = Field(min_length=1, max_length=MESSAGE_SIZE)


class UnknownJob(LookupError):
    """A message whose job has no header: not written by the API (a hand-made message) or expired. It fails, so
    after its receives it rests in the dead-letter queue for a person to look at, instead of vanishing."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"bulk message for job {job_id}, which does not exist (never written, or expired)")


class Selection(BaseModel):
    model_config = ConfigDict(defer_build=True)

    accepted: list[str]
    rejected: list[RejectedId]
    duplicates: int


class Submitted(BaseModel):
    """A job as its POST answers it: every rejected value with its reason (the job's header keeps a sample)."""

    model_config = ConfigDict(defer_build=True)

    job: Job
    rejected: list[RejectedId]


def parse_sale_ids(value: Any, *, max_ids: int) -> Selection:
    """Validate a bulk request's ``sale_ids``: a JSON list of ids, or one text of ids separated by commas."""
    if isinstance(value, str):
        raw: list[Any] = [part for part in _SEPARATORS.split(value) if part]
    elif isinstance(value, list):
        raw = value
    else:
        raise NoSaleIds('"sale_ids" must be a list of sale ids or a text of ids separated by commas.')
    if not raw:
        raise NoSaleIds('"sale_ids" is empty: send at least one sale id.')
    if len(raw) > max_ids:
        raise TooManyIds(f"{len(raw)} ids in one request; the most is {max_ids}. Split the list into several jobs.")
    accepted: list[str] = []
    seen: set[str] = set()
    rejected: list[RejectedId] = []
    duplicates = 0
    for entry in raw:
        text, problem = _as_text(entry)
        if problem is not None:
            rejected.append(problem)
            continue
        try:
            parsed = parse_identifier(text)
        except InvalidIdentifier as exc:
            rejected.append(RejectedId(sale_id=_clip(text), reason="invalid_sale_id", message=str(exc)))
            continue
        if not parsed.numeric:
            rejected.append(
                RejectedId(
                    sale_id=_clip(text),
                    reason=Reason.NOT_A_SALE_ID.value,
                    message=parsed.detail or "Not a sale id.",
                    identifier_kind=parsed.kind.value,
                )
            )
            continue
        if parsed.raw in seen:
            duplicates += 1
            continue
        seen.add(parsed.raw)
        accepted.append(parsed.raw)
    return Selection(accepted=accepted, rejected=rejected, duplicates=duplicates)


def _as_text(entry: Any) -> tuple[str, RejectedId | None]:
    # JSON numbers are fine when they are whole (ML ids are integers); everything else is named as it came.
    if isinstance(entry, bool) or not isinstance(entry, str | int):
        shown = _clip(repr(entry))
        return shown, RejectedId(
            sale_id=shown, reason="invalid_sale_id", message="A sale id is a number or a text of digits."
        )
    return str(entry).strip(), None


def _clip(text: str) -> str:
    return text if len(text) <= MAX_ID_TEXT else text[: MAX_ID_TEXT - 1] + "…"


def chunks(ids: list[str], size: int = MESSAGE_SIZE) -> Iterable[list[str]]:
    for start in range(0, len(ids), size):
        yield ids[start : start + size]


class MessageReport(BaseModel):
    """What one run over a message did: settled now, continued elsewhere (state machine or a later sweep), skipped
    because an earlier delivery already took care of them, or handed back to the queue (in a new message) because the
    run's time would not cover them."""

    model_config = ConfigDict(defer_build=True)

    ids: int
    settled: int = 0
    continued: int = 0
    skipped: int = 0
    handed_back: int = 0
    released: int = 0  # the connection's held messages this run's end sent (its lane slot passed on)
    _lock: threading.Lock = PrivateAttr(default_factory=threading.Lock)

    def count_continued(self) -> None:
        with self._lock:
            self.continued += 1


class _Settler:
    """Collects a message's terminal results from its threads and settles them on the job in batches, so the
    job's progress moves every few sales while costing one transaction per batch rather than one per sale.
    A worker that dies with results not yet settled loses nothing: the message comes back, and each of those
    sales answers again from its stored state (its import key says this job imported it)."""

    def __init__(self, jobs: JobStore, job: Job, batch: int = SETTLE_BATCH) -> None:
        self._jobs = jobs
        self._job = job
        self._batch = batch
        self._waiting: list[Settlement] = []
        self._lock = threading.Lock()
        self.settled = 0

    def add(self, result: RecoveryResult) -> None:
        with self._lock:
            self._waiting.append(Settlement.of(result))
            if len(self._waiting) < self._batch:
                return
            ready, self._waiting = self._waiting, []
        self._settle(ready)

    def flush(self) -> None:
        with self._lock:
            ready, self._waiting = self._waiting, []
        if ready:
            self._settle(ready)

    def _settle(self, ready: list[Settlement]) -> None:
        done = self._jobs.settle_many(self._job, ready)
        with self._lock:
            self.settled += done


class BulkQueue(Protocol):
    def send(self, messages: list[BulkMessage], *, lanes: list[str] | None = None) -> int:
        """Send every message (batched), each with its lane ref when ``lanes`` gives one (a message attribute: the
        body keeps DESIGN §3's shape); returns how many were sent. Raises if any could not be sent."""
        ...


class BulkService:
    def __init__(
        self,
        recovery: RecoveryService,
        jobs: JobStore,
        queue: BulkQueue | None = None,
        *,
        max_ids: int = 10_000,
        threads: int = 8,
        seconds_per_id: float = 0.0,
        lanes: Lanes | None = None,
    ) -> None:
        self._recovery = recovery
        self._jobs = jobs
        self._queue = queue
        self._lanes = lanes if lanes is not None and lanes.paced else None
        self._max_ids = max_ids
        self._threads = max(1, threads)
        self._seconds_per_id = seconds_per_id  # id_budget_seconds(...) of the ML client's settings

    # --- submit (API) -----------------------------------------------------------------------------------------------

    def submit(self, connection_id: str, sale_ids: Any) -> Submitted:
        if self._queue is None:
            raise RuntimeError("no bulk queue configured")
        self._recovery.connection(connection_id)
        selection = parse_sale_ids(sale_ids, max_ids=self._max_ids)
        if not selection.accepted and selection.rejected:
            raise NoValidSaleIds(selection.rejected)
        try:
            job = self._enqueue(connection_id, selection, Trigger.API)
        except PartlyQueued as partly:
            # Some messages went out, so the job exists and runs: the request is answered, with the ids that did not
            # go out listed as rejected (``not_queued``). An error here would let a client's retry with the same
            # Idempotency-Key make a second job of the ids already queued; the client resubmits only these.
            unqueued = [RejectedId(sale_id=s, reason=NOT_QUEUED, message=NOT_QUEUED_MESSAGE) for s in partly.sale_ids]
            return Submitted(job=partly.job, rejected=[*selection.rejected, *unqueued])
        return Submitted(job=job, rejected=selection.rejected)

    def submit_ids(self, connection_id: str, sale_ids: list[str], *, trigger: Trigger) -> Job:
        """A job for ids the caller already validated (the schedules found them in the stores or in ML's search):
        the same ledger and 50-id messages as ``submit``, marked with who asked."""
        if self._queue is None:
            raise RuntimeError("no bulk queue configured")
        self._recovery.connection(connection_id)
        unique = list(dict.fromkeys(sale_ids))
        if any(not (s.isascii() and s.isdigit()) for s in unique):
            raise ValueError("submit_ids takes validated sale ids (ASCII digits) only; use submit for user input")
        if len(unique) > self._max_ids:
            raise TooManyIds(f"{len(unique)} ids in one job; the most is {self._max_ids}.")
        selection = Selection(accepted=unique, rejected=[], duplicates=len(sale_ids) - len(unique))
        return self._enqueue(connection_id, selection, trigger)

    def _enqueue(self, connection_id: str, selection: Selection, trigger: Trigger) -> Job:
        assert self._queue is not None
        job_id = uuid.uuid4().hex
        messages = [
            BulkMessage(job_id=job_id, connection_id=connection_id, sale_ids=batch)
            for batch in chunks(selection.accepted)
        ]
        # The header is written whole before any message goes out, its message count included: nothing is written
        # after the send, so a job whose messages went out is never failed afterwards by a write of its own (a
        # client retrying with its Idempotency-Key would have made a second job of the same ids).
        job = Job(
            job_id=job_id,
            connection_id=connection_id,
            accepted=len(selection.accepted),
            **Job.rejections(selection.rejected),
            duplicates=selection.duplicates,
            messages=len(messages),
            trigger=trigger,
        )
        if self._lanes is not None:
            return self._enqueue_in_lane(job, selection.accepted, messages)
        self._jobs.create(job, selection.accepted)
        try:
            if messages:
                self._queue.send(messages)
        except QueueSendError as exc:
            # The ids that never went out are withdrawn from the job (their items deleted, the header's accepted
            # and messages counts lowered; a job none of whose messages went out is deleted), so nobody
            # (reconciliation, a retry) finds them held by a job that will never process them.
            unsent = [s for m in exc.unsent for s in m.sale_ids]
            self._jobs.withdraw(job, unsent, messages=len(exc.unsent))
            if len(exc.unsent) >= len(messages):
                raise  # nothing went out: there is no job, the request failed whole
            left = job.model_copy(
                update={"accepted": job.accepted - len(unsent), "messages": len(messages) - len(exc.unsent)}
            )
            raise PartlyQueued(str(exc), unsent=exc.unsent, job=left, sale_ids=unsent) from exc
        return job

    def _enqueue_in_lane(self, job: Job, sale_ids: list[str], messages: list[BulkMessage]) -> Job:
        """Paced: every message is written held with the job, and the connection's lane sends what it has room for.
        The job is accepted once written: a send the queue refuses now leaves its message held, for the next message
        of the connection that finishes, or the next error sweep, to send (``shared.lanes``)."""
        assert self._lanes is not None
        held = [
            LaneMessage(job_id=job.job_id, number=n, connection_id=job.connection_id, sale_ids=m.sale_ids)
            for n, m in enumerate(messages)
        ]
        self._jobs.create(job, sale_ids, held=held)
        try:
            self._lanes.release(job.connection_id)
        except QueueSendError as exc:
            logger.warning("lane release failed; the job's messages stay held", extra={"error": str(exc)})
        return job

    def repair_lane(self, connection_id: str) -> RepairReport | None:
        return self._lanes.repair(connection_id) if self._lanes is not None else None

    def job(self, connection_id: str, job_id: str) -> Job | None:
        self._recovery.connection(connection_id)
        job = self._jobs.get(job_id)
        return job if job is not None and job.connection_id == connection_id else None

    def job_items(self, job_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[JobItem]:
        return self._jobs.items(job_id, limit=limit, cursor=cursor)

    # --- process (worker) -------------------------------------------------------------------------------------------

    def process(
        self, message: BulkMessage, *, remaining: Callable[[], float] | None = None, lane: str | None = None
    ) -> MessageReport:
        """Settle (or hand over) every id of one message. Safe to run again: settled ids are skipped.

        What every id needs is read for the whole message first (sale rows and error entries: one BatchGetItem
        each; product links once per listing), and outcomes are settled on the job in batches (one transaction
        per ``SETTLE_BATCH`` items): a healthy sale costs its one ML request and one write of its own.

        ``remaining`` (seconds left to the caller, e.g. the Lambda invocation's) makes the run stop taking ids when
        the time left cannot cover one more (``Deadline``): the ids not taken are sent back to the queue as a new
        message of the same shape, behind every message already waiting, and the run ends normally, so the message
        it was given is deleted without spending a receive toward the dead-letter queue. (Reporting them as a batch
        item failure would spend one: three runs out of time and they would rest in the DLQ.)

        ``lane`` is the message's lane ref (a message attribute): a run that hands nothing back gives the message's
        slot to the connection's next held message; one that hands ids back keeps it (the new message carries it)."""
        header = self._jobs.mark_started(message.job_id)
        if header is None:
            raise UnknownJob(message.job_id)
        if lane is not None and self._lanes is not None:
            self._lanes.started(message.connection_id, lane)  # news of it: its slot is not lost
        report = MessageReport(ids=len(message.sale_ids))
        known = self._jobs.get_items(message.job_id, message.sale_ids)
        # An id the job never accepted is not this job's to settle; an item in progress waits on its sale already.
        todo = [s for s in message.sale_ids if s in known and known[s].outcome is Outcome.PENDING]
        waiting = [s for s in message.sale_ids if s in known and known[s].outcome is Outcome.IN_PROGRESS]
        recovery = self._recovery
        snapshots = recovery.lifecycle.read_many(message.connection_id, todo + waiting) if todo or waiting else {}
        for sale_id in waiting:
            self._start_if_claimed(snapshots[sale_id], known[sale_id])
        left: set[str] = set()  # ids this run did not take: its time would not cover them
        if todo:
            products = ProductLinkMemo(recovery.stores.products)
            settler = _Settler(self._jobs, header)
            memo = CartMemo()  # several sales of one cart in the message: the cart is read once
            deadline = None
            if remaining is not None and self._queue is not None:
                deadline = Deadline(remaining, per_id=self._seconds_per_id)
            left_lock = threading.Lock()

            def one(sale_id: str) -> None:
                if deadline is not None and not deadline.take():
                    with left_lock:
                        left.add(sale_id)
                    return
                started = time.monotonic()
                result = recovery.bulk_sales.process(header, sale_id, snapshots[sale_id], products, memo)
                if deadline is not None:
                    deadline.took(time.monotonic() - started)
                if result is not None:
                    settler.add(result)
                else:
                    report.count_continued()

            try:
                with ThreadPoolExecutor(max_workers=min(self._threads, len(todo))) as pool:
                    # Each sale runs in a copy of this thread's context: the message's log keys come along.
                    futures = [pool.submit(contextvars.copy_context().run, one, sale_id) for sale_id in todo]
                    for future in futures:
                        future.result()
            finally:
                settler.flush()  # what did settle is recorded even when a sibling failed the message
            report.settled = settler.settled
        if left:
            self._hand_back(message, [s for s in todo if s in left], lane)
            report.handed_back = len(left)
        elif lane is not None and self._lanes is not None:
            report.released = self._release_after(message.connection_id, lane)
        report.skipped = len(message.sale_ids) - len(todo)
        return report

    def _release_after(self, connection_id: str, lane: str) -> int:
        assert self._lanes is not None
        try:
            return self._lanes.finished(connection_id, lane)
        except QueueSendError as exc:
            # This message is done: failing it would only run it again. What stays held goes with the next finish
            # of the connection, or the next error sweep.
            logger.warning("lane release failed; the next messages stay held", extra={"error": str(exc)})
            return 0

    def _hand_back(self, message: BulkMessage, sale_ids: list[str], lane: str | None) -> None:
        """The ids a run had no time for, back on the queue in a message of their own (same job, same connection,
        same lane slot): a fresh message, so no receive is spent, and at the back of the queue, so other sellers'
        messages go first. Should it be delivered twice, or after these ids settled some other way, they are
        skipped as settled."""
        assert self._queue is not None
        paced = lane is not None and self._lanes is not None
        self._queue.send([message.model_copy(update={"sale_ids": sale_ids})], lanes=[lane] if paced and lane else None)
        if paced and lane is not None and self._lanes is not None:
            self._lanes.handed_back(message.connection_id, lane)

    def _start_if_claimed(self, snapshot: Snapshot, item: JobItem) -> None:
        """A redelivered message whose earlier delivery claimed an execution and died before starting it."""
        execution = snapshot.row.latest_execution
        if item.execution_arn is None or execution is None or execution.execution_arn != item.execution_arn:
            return
        workflow = self._recovery.workflow
        if snapshot.owned_by(execution.name) and workflow is not None:
            workflow.ensure_started(snapshot.connection_id, snapshot.sale_id, execution)
