"""Each connection's lane on the bulk queue: at most ``limit`` of its messages in flight, the rest held in the ledger.

Every seller has a Mercado Libre quota of its own, so a seller's work cannot go faster than its quota however many
workers take it. Left alone, one seller's 10,000-id job puts 200 messages on the shared queue, and every other
seller's work waits behind them for the workers (issue 14). A lane keeps the queue fair by keeping it short: a job's
messages are written to the job ledger as *held* (``JobStore.create``), and only ``limit`` per connection are on the
queue or in a worker at any time. When a message finishes, its worker releases the connection's next held message,
oldest first (schedules' jobs before people's: a sweep's retries are small and already waited). So the queue holds at
most ``limit`` messages of each connection, and another seller's first message has at most ``limit`` messages of
each active connection ahead of it, whatever their backlogs.

The slots are a map on one lane row per connection (``inflight``: message ref -> when it was taken), changed only by
conditional writes: taking a slot is refused when the map is full or already holds the ref, so two releasers never
send one message twice on purpose and never overfill a lane. Sending is at least once: a releaser that dies between
taking a slot and marking the message sent leaves it for ``repair`` (run by every error sweep), which sends it again;
a duplicate delivery settles nothing twice (the ledger skips settled ids). ``repair`` also frees a slot whose message
finished (a worker that died between the two writes) or was lost: no lane stays blocked by a message that will never
finish. A message is *started* by each run that receives it (which renews its slot) and *sent* again by a hand-back;
one started and not heard of for longer than the queue's visibility timeout (plus a margin) was not received again,
so it rests in the dead-letter queue (the DLQ alarm calls a person); one sent and never received is lost only when
the queue's retention has dropped it. A message that merely waits its turn on a busy queue keeps its slot.

``limit`` 0 turns lanes off: every message is sent at submission, as a single-tenant deployment may prefer.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from enum import StrEnum
from typing import TYPE_CHECKING, Protocol

from aws_lambda_powertools import Logger

if TYPE_CHECKING:
    from shared.bulk import BulkQueue

logger = Logger(child=True)

# How long a slot may stay taken by a message still marked held before ``repair`` sends it: its releaser died between
# the two writes (a live one sends within a second or two).
SEND_GRACE_SECONDS = 120.0
# A started message not received again for this long went to the dead-letter queue: the queue's visibility timeout
# (720 s) plus a margin for a busy queue (tests/bulk/test_lanes.py reads the template).
STARTED_LOST_AFTER_SECONDS = 720 + 900.0
# A sent message never received is gone once the queue's retention (4 days) has passed.
SENT_LOST_AFTER_SECONDS = 345_600 + 900.0


class LaneState(StrEnum):
    HELD = "held"
    SENT = "sent"  # on the queue (released, or handed back)
    STARTED = "started"  # a run received it
    DONE = "done"


class Slot(StrEnum):
    TAKEN = "taken"
    FULL = "full"
    ALREADY = "already"  # another releaser holds this message's slot


@dataclass(frozen=True)
class LaneMessage:
    """One message of a job's ledger, as its lane knows it."""

    job_id: str
    number: int
    connection_id: str
    sale_ids: list[str]
    state: LaneState = LaneState.HELD

    @property
    def ref(self) -> str:
        return lane_ref(self.job_id, self.number)


def lane_ref(job_id: str, number: int) -> str:
    return f"{job_id}:{number:05d}"


def parse_lane_ref(ref: str) -> tuple[str, int] | None:
    job_id, _, number = ref.rpartition(":")
    if not job_id or not number.isdigit():
        return None
    return job_id, int(number)


class LaneStore(Protocol):
    def held(self, connection_id: str, *, limit: int) -> list[LaneMessage]:
        """The connection's held messages, in release order."""
        ...

    def take(self, connection_id: str, ref: str, *, limit: int, now: float) -> Slot: ...

    def mark_sent(self, message: LaneMessage) -> None:
        """Released: held -> sent (a message already started or done is left as it is)."""
        ...

    def mark(self, ref: str, state: LaneState) -> None:
        """started (a run received it) or sent (a hand-back), unless it is done."""
        ...

    def touch(self, connection_id: str, ref: str, *, now: float) -> None:
        """News of the message (a run started, a hand-back): its slot is renewed, if it still holds one."""
        ...

    def finish(self, ref: str) -> None:
        """Mark the message done (its ids are all settled or handed over)."""
        ...

    def free(self, connection_id: str, ref: str) -> None: ...

    def in_flight(self, connection_id: str) -> dict[str, float]: ...

    def message(self, ref: str) -> LaneMessage | None: ...


@dataclass
class RepairReport:
    freed_done: int = 0
    resent: int = 0
    freed_lost: int = 0
    released: int = 0


_LOST_AFTER = {LaneState.STARTED: STARTED_LOST_AFTER_SECONDS, LaneState.SENT: SENT_LOST_AFTER_SECONDS}


class Lanes:
    def __init__(self, store: LaneStore, queue: BulkQueue, *, limit: int, clock: Callable[[], float]) -> None:
        self._store = store
        self._queue = queue
        self.limit = limit
        self._now = clock

    @property
    def paced(self) -> bool:
        return self.limit > 0

    def release(self, connection_id: str) -> int:
        """Send the connection's next held messages while its lane has room; returns how many went out. A send the
        queue refuses frees its slot and raises (the message stays held: the next finish or sweep tries again)."""
        if not self.paced:
            return 0
        sent = 0
        while True:
            candidates = self._store.held(connection_id, limit=self.limit + 1)
            progressed = False
            for message in candidates:
                answer = self._store.take(connection_id, message.ref, limit=self.limit, now=self._now())
                if answer is Slot.FULL:
                    return sent
                if answer is Slot.ALREADY:
                    continue  # another releaser is sending it (or died doing so: repair sends it)
                self._send(message)
                sent += 1
                progressed = True
            if not progressed:
                return sent

    def finished(self, connection_id: str, ref: str) -> int:
        """A message's run ended with nothing handed back: its slot goes to the connection's next held message."""
        self._store.finish(ref)
        self._store.free(connection_id, ref)
        return self.release(connection_id)

    def started(self, connection_id: str, ref: str) -> None:
        self._store.mark(ref, LaneState.STARTED)
        self._store.touch(connection_id, ref, now=self._now())

    def handed_back(self, connection_id: str, ref: str) -> None:
        self._store.mark(ref, LaneState.SENT)
        self._store.touch(connection_id, ref, now=self._now())

    def repair(self, connection_id: str) -> RepairReport:
        """Free what a dead worker or a lost message left taken, send what a dead releaser left held, then release."""
        report = RepairReport()
        if not self.paced:
            return report
        now = self._now()
        for ref, taken_at in self._store.in_flight(connection_id).items():
            message = self._store.message(ref)
            if message is None or message.state is LaneState.DONE:
                self._store.free(connection_id, ref)  # finished (or its job expired) and the slot was never freed
                report.freed_done += 1
            elif message.state is LaneState.HELD and now - taken_at > SEND_GRACE_SECONDS:
                self._send(message)
                report.resent += 1
            elif now - taken_at > _LOST_AFTER.get(message.state, float("inf")):
                logger.warning(
                    "lane slot freed: no news of its message (see the dead-letter queue)",
                    extra={"lane_ref": ref, "seconds": round(now - taken_at)},
                )
                self._store.free(connection_id, ref)
                report.freed_lost += 1
        report.released = self.release(connection_id)
        return report

    def _send(self, message: LaneMessage) -> None:
        from shared.bulk import BulkMessage, QueueSendError

        body = BulkMessage(job_id=message.job_id, connection_id=message.connection_id, sale_ids=message.sale_ids)
        try:
            self._queue.send([body], lanes=[message.ref])
        except QueueSendError:
            self._store.free(message.connection_id, message.ref)
            raise
        self._store.mark_sent(message)
