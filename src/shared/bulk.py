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
import uuid
from collections.abc import Iterable
from concurrent.futures import ThreadPoolExecutor
from typing import Any, Protocol

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from shared.identifiers import InvalidIdentifier, parse_identifier
from shared.jobs import MESSAGE_SIZE, Job, JobItem, JobStore, RejectedId, Settlement
from shared.lifecycle.row import Snapshot
from shared.models import Outcome, Reason, RecoveryResult, Trigger
from shared.recovery import RecoveryService
from shared.stores.base import Page
from shared.stores.memo import ProductLinkMemo

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


class QueueSendError(RuntimeError):
    """Messages that could not be queued; ``unsent`` are the ones that did not go out."""

    def __init__(self, message: str, *, unsent: list[BulkMessage]) -> None:
        super().__init__(message)
        self.unsent = unsent


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
        *,
        max_ids: int = 10_000,
        threads: int = 8,
    ) -> None:
        self._recovery = recovery
        self._jobs = jobs
        self._queue = queue
        self._max_ids = max_ids
        self._threads = max(1, threads)

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
        try:
            sent = self._queue.send(messages) if messages else 0
        except QueueSendError as exc:
            # The ids that never went out are withdrawn from the job (their items deleted, the header's accepted
            # count lowered; a job none of whose messages went out is deleted): the caller gets the failure, and
            # nobody (reconciliation, a retry) finds them held by a job that will never process them.
            self._jobs.withdraw(
                job, [s for m in exc.unsent for s in m.sale_ids], any_sent=len(exc.unsent) < len(messages)
            )
            raise
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

        What every id needs is read for the whole message first (sale rows and error entries: one BatchGetItem
        each; product links once per listing), and outcomes are settled on the job in batches (one transaction
        per ``SETTLE_BATCH`` items): a healthy sale costs its one ML request and one write of its own."""
        header = self._jobs.mark_started(message.job_id)
        if header is None:
            raise UnknownJob(message.job_id)
        report = MessageReport(ids=len(message.sale_ids))
        known = self._jobs.get_items(message.job_id, message.sale_ids)
        # An id the job never accepted is not this job's to settle; an item in progress waits on its sale already.
        todo = [s for s in message.sale_ids if s in known and known[s].outcome is Outcome.PENDING]
        waiting = [s for s in message.sale_ids if s in known and known[s].outcome is Outcome.IN_PROGRESS]
        recovery = self._recovery
        snapshots = recovery.lifecycle.read_many(message.connection_id, todo + waiting) if todo or waiting else {}
        for sale_id in waiting:
            self._start_if_claimed(snapshots[sale_id], known[sale_id])
        if todo:
            products = ProductLinkMemo(recovery.stores.products)
            settler = _Settler(self._jobs, header)

            def one(sale_id: str) -> None:
                result = recovery.bulk_sales.process(header, sale_id, snapshots[sale_id], products)
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

    def _start_if_claimed(self, snapshot: Snapshot, item: JobItem) -> None:
        """A redelivered message whose earlier delivery claimed an execution and died before starting it."""
        execution = snapshot.row.latest_execution
        if item.execution_arn is None or execution is None or execution.execution_arn != item.execution_arn:
            return
        workflow = self._recovery.workflow
        if snapshot.owned_by(execution.name) and workflow is not None:
            workflow.ensure_started(snapshot.connection_id, snapshot.sale_id, execution)
