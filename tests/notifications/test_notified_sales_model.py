"""A hypothesis state machine over the notification processing on the real stores (moto's tables and SQS queue from
template.yaml) and the simulated ML: it chooses how ML's duplicate notifications are split across processor
invocations, processors that die after claiming a sale, redelivered batches, the clock passing a claim's expiry, a
person's bulk job for the same sales, and the order in which the bulk worker receives (and receives again) the jobs'
messages. After every step: no sale has two open notification job items, and a reflected sale's record never
changes. At the end, with everything drained: every notified paid sale is reflected with one record, every job is
completed, and no sale cost more than one ML read per job that held it.
"""

from __future__ import annotations

import copy
import itertools
import os
import time
from datetime import UTC, datetime
from typing import Any

import boto3
from hypothesis import HealthCheck, Phase, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, rule, run_state_machine_as_test

from devstack.simulator.server import MeliSimulator
from shared.bulk import BulkMessage
from shared.models import Trigger
from shared.notifications import NotificationSource, QueuedNotification
from shared.settings import Settings
from shared.stores.sale_claims import DynamoSaleClaims
from shared.usecases.notified_sales import CLAIM_SECONDS, NotifiedSales
from shared.wiring import build_bulk_service, build_job_store, build_service
from tests.conftest import Aws

PHASES = [Phase.explicit, Phase.reuse, Phase.generate, Phase.target, Phase.shrink]
CONNECTION = "mla-main"
VISIBILITY_SECONDS = 360  # NotificationsQueue's VisibilityTimeout
TEMPLATE_SALE = 2000009101000011
_IDS = itertools.count(2000009600000017, 1000)
_WORLD: dict[str, Any] = {}


class NotificationMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        aws: Aws = _WORLD["aws"]
        self.meli: MeliSimulator = _WORLD["meli"]
        self.settings = Settings.from_env()
        self.bulk = build_bulk_service(self.settings, queue=True)
        self.jobs = build_job_store(self.settings)
        self.service = build_service(self.settings, notifier=True, workflow=True)
        self.clock = time.time()  # the job store stamps items with the real time: the processor's clock starts there
        self.claims = DynamoSaleClaims(boto3.client("dynamodb"), aws.env["IDEMPOTENCY_TABLE"], clock=lambda: self.clock)
        # The model's clock runs ahead of the job store's real timestamps: an open item never counts as stuck here.
        self.notified = NotifiedSales(
            self.service.lifecycle, self.bulk, self.jobs, self.claims, open_item_seconds=10**6, clock=self._now
        )
        self.sqs = boto3.client("sqs")
        self.queue_url = aws.env["BULK_QUEUE_URL"]
        self.sales = [str(next(_IDS)) for _ in range(3)]
        template = self.meli.order(TEMPLATE_SALE)
        assert template is not None
        for sale_id in self.sales:
            order = copy.deepcopy(template)
            order.update(id=int(sale_id), pack_id=int(sale_id) - 3_000_000_000_000)
            self.meli.upsert_order(order, notify=False)
        self.pending: list[QueuedNotification] = []  # on the notifications queue
        self.invisible: list[QueuedNotification] = []  # received by a processor that died: back after the timeout
        self.delivered: list[list[QueuedNotification]] = []  # batches a processor finished (SQS may deliver again)
        self.messages: list[BulkMessage] = []  # bulk messages the worker received at least once
        self.records: dict[str, str] = {}  # sale -> the import key of its record, once reflected
        self.notes = itertools.count()
        self.job_ids: list[str] = []  # this example's jobs (notification and person), oldest first

    def _now(self) -> datetime:
        return datetime.fromtimestamp(self.clock, UTC)

    # --- ML notifies ---

    @rule(sale=st.integers(0, 2), copies=st.integers(1, 5), missed=st.booleans())
    def ml_notifies(self, sale: int, copies: int, missed: bool) -> None:
        source = NotificationSource.MISSED_FEEDS if missed else NotificationSource.CALLBACK
        for _ in range(copies):
            self.pending.append(
                QueuedNotification(
                    connection_id=CONNECTION,
                    sale_id=self.sales[sale],
                    notification_id=f"n{next(self.notes)}",
                    source=source,
                )
            )

    # --- the processor ---

    @rule(size=st.integers(1, 6))
    def a_processor_takes_a_batch(self, size: int) -> None:
        batch, self.pending = self.pending[:size], self.pending[size:]
        if batch:
            self._processed(batch)
            self.delivered.append(batch)

    @rule(size=st.integers(1, 6))
    def a_processor_dies_after_claiming(self, size: int) -> None:
        """It claimed its batch's first sale and died before writing the job: the batch stays invisible on the queue
        until the visibility timeout, then comes back (other notifications of the sale may be processed meanwhile)."""
        batch, self.pending = self.pending[:size], self.pending[size:]
        if batch:
            self.claims.claim(CONNECTION, batch[0].sale_id, seconds=CLAIM_SECONDS)
            self.invisible += batch

    @rule()
    def the_visibility_timeout_passes(self) -> None:
        self.clock += VISIBILITY_SECONDS
        self.pending += self.invisible
        self.invisible = []

    @rule(pick=st.integers(0, 50))
    def sqs_delivers_a_batch_again(self, pick: int) -> None:
        if self.delivered:
            self._processed(self.delivered[pick % len(self.delivered)])

    def _processed(self, batch: list[QueuedNotification]) -> None:
        report = self.notified.process_connection(CONNECTION, batch)
        if report.job_id is not None:
            self.job_ids.append(report.job_id)

    @rule(seconds=st.sampled_from([1, CLAIM_SECONDS + 1]))
    def time_passes(self, seconds: int) -> None:
        self.clock += seconds

    # --- a person and the bulk worker ---

    @rule(sale=st.integers(0, 2))
    def a_person_submits_a_bulk_job(self, sale: int) -> None:
        self.job_ids.append(self.bulk.submit(CONNECTION, [self.sales[sale]]).job.job_id)

    @rule(count=st.integers(1, 3))
    def the_worker_receives(self, count: int) -> None:
        got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=count).get("Messages", [])
        for message in got:
            body = BulkMessage.model_validate_json(message["Body"])
            self.bulk.process(body)
            self.messages.append(body)
            self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])

    @rule(pick=st.integers(0, 50))
    def sqs_delivers_a_bulk_message_again(self, pick: int) -> None:
        if self.messages:
            self.bulk.process(self.messages[pick % len(self.messages)])

    # --- invariants ---

    def _items(self, sale_id: str, *, notification_only: bool = True) -> list[tuple[str, str]]:
        found = []
        for job_id in self.job_ids:
            job = self.jobs.get(job_id)
            if job is None or (notification_only and job.trigger is not Trigger.NOTIFICATION):
                continue
            item = self.jobs.get_items(job_id, [sale_id]).get(sale_id)
            if item is not None:
                found.append((job_id, item.outcome.value))
        return found

    @invariant()
    def no_sale_has_two_open_notification_items(self) -> None:
        for sale_id in self.sales:
            open_items = [o for _, o in self._items(sale_id) if o in ("pending", "in_progress")]
            assert len(open_items) <= 1, (sale_id, open_items)

    @invariant()
    def a_record_never_changes(self) -> None:
        for sale_id in self.sales:
            snap = self.service.lifecycle.read(CONNECTION, sale_id)
            if snap.row.record is not None:
                key = snap.row.record.import_key or ""
                assert self.records.setdefault(sale_id, key) == key, sale_id

    def teardown(self) -> None:
        self.the_visibility_timeout_passes()  # a dead processor's batch is back, its claim expired long ago
        while self.pending:
            batch, self.pending = self.pending[:6], self.pending[6:]
            self._processed(batch)
        for _ in range(20):
            got = self.sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10).get("Messages", [])
            if not got:
                break
            for message in got:
                self.bulk.process(BulkMessage.model_validate_json(message["Body"]))
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        for sale_id in self.sales:
            items = self._items(sale_id, notification_only=False)
            assert all(o in ("reflected", "already_reflected") for _, o in items), (sale_id, items)
            assert sum(o == "reflected" for _, o in items) <= 1, (sale_id, items)  # one job reflected it
            snap = self.service.lifecycle.read(CONNECTION, sale_id)
            notified = any(sale_id == n.sale_id for batch in self.delivered for n in batch) or any(
                sale_id == n.sale_id for n in self.pending
            )
            assert snap.reflected or not (notified or items), sale_id  # every notified (or submitted) sale
            # One ML read per job that held the sale at most (a job that found it reflected reads nothing).
            assert self.meli.count("GET", rf"^/orders/{sale_id}$") <= len(items), sale_id
        for job_id in self.job_ids:
            job = self.jobs.get(job_id)
            assert job is not None and job.status.value == "completed", job_id


def test_notified_sales_under_every_interleaving(aws: Aws, meli: MeliSimulator, monkeypatch: Any) -> None:
    monkeypatch.setenv("BULK_LANE_MESSAGES", "0")  # lanes have their own model (tests/bulk/test_lanes.py)
    for built in (build_bulk_service, build_service, build_job_store):
        built.cache_clear()
    _WORLD.update(aws=aws, meli=meli)
    run_state_machine_as_test(
        NotificationMachine,
        settings=settings(
            # A few seconds an example on this machine; more with NOTIFICATION_MODEL_EXAMPLES (a soak). No shrinking
            # unless NOTIFICATION_MODEL_SHRINK=1: each replay is whole examples on moto.
            max_examples=int(os.environ.get("NOTIFICATION_MODEL_EXAMPLES", "8")),
            phases=PHASES if os.environ.get("NOTIFICATION_MODEL_SHRINK") == "1" else PHASES[:-1],
            stateful_step_count=20,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture],
        ),
    )
