"""Bulk reprocessing (the seed's "reprocesamiento masivo", without its 50-id chore).

``parse_sale_ids`` takes any list — JSON or the seed's comma-separated text — trims, de-duplicates and validates
each id, and says why each rejected one was rejected. ``BulkService.submit`` writes the job ledger and sends the
accepted ids in SQS messages of at most 50. ``BulkService.process`` is the worker's job for one message: for
each id, verify, then resync or relink as the seed says; a relink that fails for a transient cause continues in
the relink state machine with its attempt counted, so bulk and single requests obey the same three-attempt rule.
"""

from __future__ import annotations

import contextvars
import hashlib
import re
import threading
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from shared.identifiers import InvalidIdentifier, parse_identifier
from shared.jobs import MESSAGE_SIZE, Job, JobItem, JobStore, RejectedId, Settlement
from shared.models import Outcome, Reason, RecoveryResult, Trigger
from shared.recovery import KnownReads, RecoveryService
from shared.stores.base import Page
from shared.stores.memo import ProductLinkMemo
from shared.workflow import RelinkWorkflow

_SEPARATORS = re.compile(r"[,;\s]+")
MAX_ID_TEXT = 64  # longer entries are junk; echoing them back in full would bloat the answer
SETTLE_BATCH = 10  # results per settling transaction: progress every few sales, a tenth of the writes


class BulkMessage(BaseModel):
    """The SQS message body of DESIGN §3, exactly."""

    model_config = ConfigDict(extra="forbid")

    job_id: str = Field(min_length=1, max_length=64)
    connection_id: str = Field(min_length=1, max_length=64)
    sale_ids: list[str] = Field(min_length=1, max_length=MESSAGE_SIZE)


class UnknownJob(LookupError):
    """A message whose job has no header: not written by the API (a hand-made message) or expired. It fails, so
    after its receives it rests in the dead-letter queue for a person to look at, instead of vanishing."""

    def __init__(self, job_id: str) -> None:
        super().__init__(f"bulk message for job {job_id}, which does not exist (never written, or expired)")


class TooManyIds(ValueError):
    pass


class NoSaleIds(ValueError):
    pass


class NoValidSaleIds(NoSaleIds):
    """Every id of a request was rejected: nothing to queue, so no job is written (the answer lists each reason)."""

    def __init__(self, rejected: list[RejectedId]) -> None:
        super().__init__(
            f'No sale id among the {len(rejected)} value(s) sent; each one\'s reason is under "rejected". '
            "Nothing was queued: send the sale ids (digits only, e.g. 2000001234567890)."
        )
        self.rejected = rejected


class Selection(BaseModel):
    accepted: list[str]
    rejected: list[RejectedId]
    duplicates: int


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
    """What one run over a message did: settled now, continued elsewhere (state machine or a later sweep), or
    skipped because an earlier delivery already took care of them."""

    ids: int
    settled: int = 0
    continued: int = 0
    skipped: int = 0
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
    def send(self, messages: list[BulkMessage]) -> int:
        """Send every message (batched); returns how many were sent. Raises if any could not be sent."""
        ...


class BulkService:
    def __init__(
        self,
        recovery: RecoveryService,
        jobs: JobStore,
        queue: BulkQueue | None = None,
        workflow: RelinkWorkflow | None = None,
        *,
        max_ids: int = 10_000,
        threads: int = 8,
        max_attempts: int = 6,
    ) -> None:
        self._recovery = recovery
        self._jobs = jobs
        self._queue = queue
        self._workflow = workflow
        self._max_ids = max_ids
        self._threads = max(1, threads)
        self._max_attempts = max_attempts

    # --- submit (API) -----------------------------------------------------------------------------------------------

    def submit(self, connection_id: str, sale_ids: Any) -> Job:
        if self._queue is None:
            raise RuntimeError("no bulk queue configured")
        self._recovery.connection(connection_id)
        selection = parse_sale_ids(sale_ids, max_ids=self._max_ids)
        if not selection.accepted and selection.rejected:
            raise NoValidSaleIds(selection.rejected)
        return self._enqueue(connection_id, selection, Trigger.API)

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
        job = Job(
            job_id=uuid.uuid4().hex,
            connection_id=connection_id,
            accepted=len(selection.accepted),
            rejected=selection.rejected,
            duplicates=selection.duplicates,
            trigger=trigger,
        )
        self._jobs.create(job, selection.accepted)
        messages = [
            BulkMessage(job_id=job.job_id, connection_id=connection_id, sale_ids=batch)
            for batch in chunks(selection.accepted)
        ]
        sent = self._queue.send(messages) if messages else 0
        self._jobs.set_messages(job.job_id, sent)
        return job.model_copy(update={"messages": sent})

    def job(self, connection_id: str, job_id: str) -> Job | None:
        self._recovery.connection(connection_id)
        job = self._jobs.get(job_id)
        return job if job is not None and job.connection_id == connection_id else None

    def job_items(self, job_id: str, *, limit: int = 100, cursor: str | None = None) -> Page[JobItem]:
        return self._jobs.items(job_id, limit=limit, cursor=cursor)

    # --- process (worker) -------------------------------------------------------------------------------------------

    def process(self, message: BulkMessage) -> MessageReport:
        """Settle (or hand over) every id of one message. Safe to run again: settled ids are skipped.

        What every id needs is read for the whole message first (sale states and error entries: one BatchGetItem
        each; product links once per listing), and outcomes are settled on the job in batches (one transaction
        per ``SETTLE_BATCH`` items): a healthy sale costs its one ML request and one write of its own."""
        header = self._jobs.mark_started(message.job_id)
        if header is None:
            raise UnknownJob(message.job_id)
        report = MessageReport(ids=len(message.sale_ids))
        trigger = header.trigger
        known = self._jobs.get_items(message.job_id, message.sale_ids)
        todo = [
            sale_id
            for sale_id in message.sale_ids
            if sale_id in known  # an id the job never accepted is not this job's to settle
            and known[sale_id].outcome in (Outcome.PENDING, Outcome.IN_PROGRESS)
            and known[sale_id].execution_arn is None  # already continuing in the state machine
            and not known[sale_id].deferred  # already waiting for a later sweep
        ]
        if todo:
            stores = self._recovery.stores
            states = stores.sales.get_many(message.connection_id, todo)
            entries = stores.errors.get_many(message.connection_id, todo)
            products = ProductLinkMemo(stores.products)
            settler = _Settler(self._jobs, header)

            def one(sale_id: str) -> None:
                reads = KnownReads(state=states.get(sale_id), entry=entries.get(sale_id), products=products)
                result = self._process_one(message, sale_id, reads, trigger)
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
        report.skipped = len(message.sale_ids) - len(todo)
        return report

    def _process_one(
        self, message: BulkMessage, sale_id: str, reads: KnownReads, trigger: Trigger = Trigger.API
    ) -> RecoveryResult | None:
        """One attempt per id, reading the order once: it verifies and imports in one go (seed steps 1-4).
        Returns the terminal result to settle, or None when the sale continues elsewhere (recorded here)."""
        connection_id, job_id = message.connection_id, message.job_id
        if trigger is Trigger.SCHEDULE and reads.entry is not None:
            # An automatic retry (error sweep, self-heal): backoff between sweeps, the help desk only when spent.
            retried = self._recovery.retry_listed(
                connection_id, sale_id, attempt_key=f"{job_id}#retry", max_attempts=self._max_attempts
            )
            if retried.outcome.terminal:
                return retried
            # The job waits for the sale's outcome, however it comes: noted on the entry before the item is
            # deferred, so a crash in between leaves the item pending (done again), never deferred and forgotten.
            if not self._recovery.stores.errors.add_waiting_job(connection_id, sale_id, job_id):
                settled_meanwhile = self._recovery.stored_outcome(connection_id, sale_id)
                if settled_meanwhile is not None:  # it left the list since the retry: its outcome is the answer
                    return settled_meanwhile
            entry = self._recovery.stores.errors.get(connection_id, sale_id)
            self._jobs.defer(
                job_id,
                sale_id,
                attempts=retried.attempts,
                retry_at=entry.next_retry_at if entry is not None else None,
                detail=f"Still failing ({retried.error_type}); the error sweep retries it after its backoff.",
            )
            return None
        if reads.entry is not None:
            # Seed step 3: resync a listed sale; still failing -> the help desk.
            return self._recovery.resync(
                connection_id,
                sale_id,
                trigger=Trigger.BULK,
                attempt_key=f"{job_id}#resync",
                require_listed=False,
                known=reads,
            )
        result = self._recovery.relink_attempt(
            connection_id,
            sale_id,
            attempt=1,
            trigger=Trigger.SCHEDULE if trigger is Trigger.SCHEDULE else Trigger.BULK,
            attempt_key=f"{job_id}#relink#1",
            known=reads,
        )
        if result.outcome.terminal:
            return result
        if result.retryable:
            self._hand_over(message, sale_id, attempts=1)
            return None
        return self._recovery.escalate(
            connection_id, sale_id, reason=Reason.MARKETPLACE_REFUSED, attempts=1, last_error=result.detail
        )

    def _hand_over(self, message: BulkMessage, sale_id: str, *, attempts: int) -> None:
        if self._workflow is None:
            raise RuntimeError("no relink workflow configured")
        # Deterministic per job and sale: a redelivered message finds the same execution instead of a second one.
        digest = hashlib.sha256(f"{message.job_id}|{sale_id}".encode()).hexdigest()[:20]
        ref = self._workflow.start(
            f"bulk-{sale_id}-{digest}",
            {
                "connection_id": message.connection_id,
                "sale_id": sale_id,
                "attempts": attempts,
                "job_id": message.job_id,
            },
        )
        self._jobs.hand_over(message.job_id, sale_id, ref.execution_arn, attempts)
        self._recovery.track_execution(message.connection_id, sale_id, ref)
