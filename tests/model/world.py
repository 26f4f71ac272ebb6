"""The world the model-based test drives: the whole local stack (template.yaml on moto, the real handlers, the real
ASL executed, the simulated Mercado Libre), with the scheduler of ``harness.py`` choosing who writes next, and the
invariants of issue #11 checked against what is stored.

Each example gets its own connection (a seller of its own) and two fresh sales with listings of their own, so an
example's sweep, reconciliation and due index see nothing but its sales. In a cart example (issue 15) the two sales
are one cart (a released pack of both): the cart's row, keyed by the pack id, is checked like a sale's, each job item
of a cart sale must carry the cart's settled outcome, and the sales' own rows (when a path wrote one) must follow it.
"""

from __future__ import annotations

import copy
import itertools
import json
import threading
import uuid
from collections import Counter
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta, timezone
from typing import Any
from unittest import mock

from devstack.sqs_poller import sqs_record
from devstack.stack import EmbeddedStack
from shared import clock
from shared.escalation import SnsHelpDeskNotifier
from shared.lifecycle.change import Change
from shared.lifecycle.dynamo import DynamoLifecycleStore, row_from_item
from shared.lifecycle.row import Snapshot
from shared.lifecycle.table import RERUNNERS, State
from shared.models import ProductLink
from shared.stores.errors import entry_from_item
from tests.conftest import api_event
from tests.model.harness import Actor, Scheduler, body_of

TEMPLATE_ORDER = 2000009101000011
ART = timezone(timedelta(hours=-3))
ENDED_BADLY = {"FAILED", "TIMED_OUT", "ABORTED"}
CONNECTIONS = [f"model-{n:02d}" for n in range(24)]
SELLER_BASE = 7_100_000_000


def model_scenario_data(default: dict[str, Any]) -> dict[str, Any]:
    """The default scenario plus one connection per example slot (its own seller), without faults or quota."""
    data = copy.deepcopy(default)
    template = data["connections"][0]
    for n, connection_id in enumerate(CONNECTIONS):
        data["connections"].append(
            {
                **template,
                "connection_id": connection_id,
                "seller_id": SELLER_BASE + n,
                "access_token": f"APP_USR-model-{n}",
                "refresh_token": f"TG-model-{n}",
            }
        )
    data["faults"] = []
    data["quota"] = None
    return data


@dataclass
class Commit:
    """One write of per-sale state that DynamoDB accepted."""

    sale_id: str
    transition: str
    before: Snapshot
    after: Change


@dataclass
class PageCheck:
    sale_id: str
    episode: int
    outcome_then: str | None
    episode_then: int


@dataclass
class Example:
    connection_id: str
    seller_id: int
    sales: list[str]
    modes: dict[str, str] = field(default_factory=dict)
    pack_id: str | None = None  # a cart example: the two sales are one cart

    @property
    def subjects(self) -> list[str]:
        """Every key a row of the example may have: its sales, and its cart's pack id."""
        return [*self.sales, self.pack_id] if self.pack_id else list(self.sales)


class World:
    def __init__(self, stack: EmbeddedStack) -> None:
        self.stack = stack
        self.aws = stack.aws
        self.sfn = stack.aws.client("stepfunctions")
        self.sqs = stack.aws.client("sqs")
        self.ddb = stack.aws.client("dynamodb")
        self.settings = stack.settings()
        self.queue_url = stack.aws.physical_id("BulkQueue")
        self.queue_arn = self.sqs.get_queue_attributes(QueueUrl=self.queue_url, AttributeNames=["QueueArn"])[
            "Attributes"
        ]["QueueArn"]
        self.scheduler = Scheduler(running_executions=self._running)
        self.commits: list[Commit] = []
        self.page_checks: list[PageCheck] = []
        self.pages: list[dict[str, Any]] = []
        self.pending: dict[str, str] = {}  # message id -> body: queued, not yet processed successfully
        self.delivered: list[str] = []  # bodies delivered at least once (SQS may deliver them again)
        self.jobs: set[str] = set()
        self.worker_messages: dict[int, str] = {}  # worker actor -> the message id it processes
        self.attributes: dict[str, dict[str, Any]] = {}  # body -> its message attributes (a message's lane ref)
        self.event_actors: list[Actor] = []
        self._lock = threading.Lock()
        self._slots = itertools.cycle(range(len(CONNECTIONS)))
        self._sale_numbers = itertools.count(1)
        self._console_runs = itertools.count(1)
        self._patches: list[Any] = []
        self.example: Example | None = None
        self.carts: dict[str, str] = {}  # every cart example's sale -> its pack id
        self.examples = 0
        self.stats: Counter[str] = Counter()  # every committed transition, every crash and page, over all examples

    # --- set-up -------------------------------------------------------------------------------------------------------

    def install(self) -> None:
        world = self
        original_write = DynamoLifecycleStore.write

        def write(store: DynamoLifecycleStore, seen: Snapshot, change: Change, waiting: Any) -> None:
            original_write(store, seen, change, waiting)
            with world._lock:
                world.commits.append(Commit(seen.sale_id, change.transition.value, seen, change))
                world.stats[change.transition.value] += 1
                world.stats["waiting items settled"] += len(waiting)

        original_publish = SnsHelpDeskNotifier.publish

        def publish(notifier: SnsHelpDeskNotifier, message: Any) -> str:
            row = world.row(message.connection_id, message.sale_id)
            with world._lock:
                world.page_checks.append(
                    PageCheck(
                        message.sale_id,
                        message.episode,
                        row.outcome.value if row.outcome else None,
                        row.episode,
                    )
                )
            world.stats["pages"] += 1
            return original_publish(notifier, message)

        self._patches = [
            mock.patch.object(DynamoLifecycleStore, "write", write),
            mock.patch.object(SnsHelpDeskNotifier, "publish", publish),
        ]
        for patch in self._patches:
            patch.start()
        self.scheduler.install()
        for task in ("VerifyFunction", "RelinkFunction", "ResyncFunction", "EscalateFunction"):
            runtime = self.aws.runtime
            runtime._intercepts[task] = self.scheduler.gate(task)(runtime.handler(task))  # every invocation, gated

    def uninstall(self) -> None:
        self.scheduler.uninstall()
        for patch in reversed(self._patches):
            patch.stop()
        clock.reset()

    def start_example(self, *, cart: bool = False) -> Example:
        """A connection of its own and two fresh healthy sales, each with a listing and product link of its own (a
        cart: both in one released pack)."""
        clock.reset()
        self.stack.meli.clear_faults()
        slot = next(self._slots)
        connection_id, seller_id = CONNECTIONS[slot], SELLER_BASE + slot
        self._reset_lane(connection_id)
        template = self.stack.meli.order(TEMPLATE_ORDER)
        assert template is not None
        sales = []
        products = self.stack.service().stores.products
        pack_id = 2_000_096_000_000_000 + next(self._sale_numbers) if cart else None
        for _ in range(2):
            number = next(self._sale_numbers)
            sale_id = 2_000_097_000_000_000 + number
            order = copy.deepcopy(template)
            now = datetime.now(UTC).astimezone(ART)
            order.update(
                id=sale_id, pack_id=pack_id, shipping={"id": None}, last_updated=f"{now:%Y-%m-%dT%H:%M:%S}.000-03:00"
            )
            order["seller"] = {**order["seller"], "id": seller_id}
            listing = f"MLA97{number:08d}"
            for line in order["order_items"]:
                line["item"] = {**line["item"], "id": listing, "variation_id": None}
            for payment in order.get("payments", []):
                payment["order_id"] = sale_id
            self.stack.meli.upsert_order(order)
            products.put(ProductLink(connection_id=connection_id, item_id=listing, sku=f"SKU-{number}"))
            sales.append(str(sale_id))
        if pack_id is not None:
            self.carts.update(dict.fromkeys(sales, str(pack_id)))
            self.stack.meli.upsert_pack(
                {"id": pack_id, "orders": [{"id": int(s)} for s in sales], "status": "released", "status_detail": None}
            )
        self.example = Example(
            connection_id, seller_id, sales, dict.fromkeys(sales, "healthy"), str(pack_id) if pack_id else None
        )
        self.examples += 1
        with self._lock:
            self.commits.clear()
            self.page_checks.clear()
        self.pages.clear()
        self.pending.clear()
        self.delivered.clear()
        self.jobs.clear()
        self.event_actors.clear()
        return self.example

    def _reset_lane(self, connection_id: str) -> None:
        """A connection slot comes round again every 24 examples: what an earlier example left in its bulk lane (a
        slot taken by a message it never delivered, messages still held) must not decide this one's."""
        table = self.settings.jobs_table
        held = self.ddb.query(
            TableName=table,
            IndexName="HeldMessagesIndex",
            KeyConditionExpression="held_lane = :c",
            ExpressionAttributeValues={":c": {"S": connection_id}},
        )["Items"]
        for item in held:
            self.ddb.delete_item(TableName=table, Key={"job_id": item["job_id"], "item_key": item["item_key"]})
        self.ddb.delete_item(TableName=table, Key={"job_id": {"S": f"lane#{connection_id}"}, "item_key": {"S": "lane"}})

    # --- reads --------------------------------------------------------------------------------------------------------

    @property
    def connection_id(self) -> str:
        assert self.example is not None
        return self.example.connection_id

    def _item(self, table: str, sale_id: str) -> dict[str, Any] | None:
        got = self.ddb.get_item(
            TableName=table,
            Key={"connection_id": {"S": self.connection_id}, "sale_id": {"S": sale_id}},
            ConsistentRead=True,
        )
        item = got.get("Item")
        if item is None:
            return None
        from boto3.dynamodb.types import TypeDeserializer

        deserializer = TypeDeserializer()
        return {k: deserializer.deserialize(v) for k, v in item.items()}

    def row(self, connection_id: str, sale_id: str) -> Any:
        item = self._item(self.settings.sales_table, sale_id) if connection_id == self.connection_id else None
        from shared.lifecycle.row import SaleRow

        return row_from_item(item) if item else SaleRow(connection_id=connection_id, sale_id=sale_id)

    def entry(self, sale_id: str) -> Any:
        item = self._item(self.settings.sale_errors_table, sale_id)
        return entry_from_item(item) if item else None

    def _running(self) -> set[str]:
        found: set[str] = set()
        kwargs: dict[str, Any] = {"stateMachineArn": self.stack.state_machine_arn, "statusFilter": "RUNNING"}
        while True:
            page = self.sfn.list_executions(**kwargs)
            found |= {e["executionArn"] for e in page["executions"]}
            if not page.get("nextToken"):
                return found
            kwargs["nextToken"] = page["nextToken"]

    def execution_status(self, name: str) -> str | None:
        arn = self.stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{name}"
        try:
            return str(self.sfn.describe_execution(executionArn=arn)["status"])
        except self.sfn.exceptions.ExecutionDoesNotExist:
            return None

    # --- actions ------------------------------------------------------------------------------------------------------

    def api(self, method: str, path: str, *, body: Any = None, headers: dict[str, str] | None = None) -> Actor:
        event = api_event(method, path, body=json.dumps(body) if body is not None else None, headers=headers)
        return self.scheduler.spawn(
            f"api {method} {path.rsplit('/', 2)[-2:]}", lambda: self._invoke("ApiFunction", event)
        )

    def _invoke(self, function: str, event: Any) -> Any:
        return self.aws.runtime.invoke(function, event)

    def sale_path(self, sale_id: str, what: str = "") -> str:
        return f"/connections/{self.connection_id}/sales/{sale_id}{what}"

    def deliver(self, message_id: str, body: str) -> Actor:
        message = {
            "MessageId": message_id,
            "ReceiptHandle": uuid.uuid4().hex,
            "Body": body,
            "Attributes": {"ApproximateReceiveCount": "1"},
            "MessageAttributes": self.attributes.get(body, {}),  # a redelivery carries them as SQS's does
        }
        event = {"Records": [sqs_record(message, self.queue_arn, self.aws.region)]}
        actor = self.scheduler.spawn("worker", lambda: self._invoke("BulkWorkerFunction", event))
        self.worker_messages[actor.id] = message_id
        if body not in self.delivered:
            self.delivered.append(body)
        return actor

    def console_run(self, sale_id: str) -> None:
        payload = {"connection_id": self.connection_id, "sale_id": sale_id}
        self.sfn.start_execution(
            stateMachineArn=self.stack.state_machine_arn,
            name=f"console-{sale_id}-{next(self._console_runs)}",  # stable across replays, unlike a random name
            input=json.dumps(payload),
        )
        self.scheduler.settle()

    def abort(self, pick: int) -> bool:
        """Support stops a running execution from the console (its task in flight, if any, still finishes)."""
        running = sorted(self._running(), key=lambda arn: arn.rsplit(":", 1)[-1])
        if not running:
            return False
        self.sfn.stop_execution(executionArn=running[pick % len(running)], error="Stopped", cause="stopped by support")
        self.scheduler.settle()
        return True

    def sweep(self) -> Actor:
        event = {"connection_id": self.connection_id}
        return self.scheduler.spawn("sweep", lambda: self._invoke("ErrorSweepFunction", event))

    def reconcile(self) -> Actor:
        event = {"connection_id": self.connection_id, "window": _real_window()}
        return self.scheduler.spawn("reconcile", lambda: self._invoke("ReconcileFunction", event))

    def deliver_events(self) -> Actor:
        events = self.stack.execution_events
        assert events is not None
        actor = self.scheduler.spawn("execution-events", events.deliver_now)
        self.event_actors.append(actor)
        return actor

    def list_error(self, sale_id: str) -> None:
        """The platform lists the sale (its own import failed), if the service never saw it."""
        from shared.lifecycle import moves
        from shared.lifecycle.change import Decision
        from shared.lifecycle.table import Actor as Who
        from shared.models import ErrorEntry, ErrorEvent

        entry = ErrorEntry(
            connection_id=self.connection_id,
            sale_id=sale_id,
            error_type="marketplace_timeout",
            message="Timeout importing the order (platform)",
            retryable=True,
            history=[ErrorEvent(error_type="marketplace_timeout", message="Timeout importing the order (platform)")],
        )

        def decide(snap: Snapshot) -> Decision[None]:
            if snap.state is not State.NEVER_SEEN:
                return Decision(None)
            return Decision(None, moves.list_error(snap, Who.PLATFORM, entry=entry))

        self.stack.service().lifecycle.run(self.connection_id, sale_id, decide)

    def flip(self, sale_id: str, mode: str) -> None:
        """Mercado Libre (or the platform's product link) changes under the sale."""
        assert self.example is not None
        self.example.modes[sale_id] = mode
        meli = self.stack.meli
        order = meli.order(int(sale_id))
        assert order is not None
        order = copy.deepcopy(order)
        if mode == "cancelled":
            order["status"] = "cancelled"
            order["cancel_detail"] = {"group": "buyer", "code": "buyer_cancel", "description": "Buyer cancelled"}
        else:
            order["status"] = "paid"
            order["cancel_detail"] = None
        meli.upsert_order(order)
        listing = order["order_items"][0]["item"]["id"]
        products = self.stack.service().stores.products
        products.put(
            ProductLink(
                connection_id=self.connection_id, item_id=listing, sku=f"SKU-{listing}", synced=mode != "unsynced"
            )
        )
        meli.clear_faults()
        for sale, sale_mode in self.example.modes.items():
            if sale_mode == "unavailable":
                meli.add_fault({"path": f"^/orders/{sale}$", "kind": "status", "status": 503})

    def after_step(self) -> None:
        """What happened in the step becomes visible to the model: queued messages, finished deliveries, pages."""
        while True:
            got = self.sqs.receive_message(
                QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0, MessageAttributeNames=["All"]
            )
            messages = got.get("Messages", [])
            if not messages:
                break
            for message in messages:
                self.pending[message["MessageId"]] = message["Body"]
                self.attributes[message["Body"]] = message.get("MessageAttributes", {})
                self.jobs.add(body_of(message)["job_id"])
                self.sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])
        for actor_id, message_id in list(self.worker_messages.items()):
            actor = self.scheduler.actors[actor_id]
            if not actor.done:
                continue
            del self.worker_messages[actor_id]
            failed = actor.error is not None or bool((actor.result or {}).get("batchItemFailures"))
            if not failed:
                self.pending.pop(message_id, None)
        assert self.example is not None
        sales = set(self.example.subjects)
        self.pages = [p for p in self.stack.help_desk_messages() if p.get("sale_id") in sales]

    # --- the invariants -----------------------------------------------------------------------------------------------

    def check(self, *, at_rest: bool = False) -> None:
        """Every invariant of issue #11 against what is stored now; raises listing each violation."""
        assert self.example is not None
        problems: list[str] = []
        with self._lock:
            commits = list(self.commits)
            page_checks = list(self.page_checks)
        for sale_id in self.example.subjects:
            problems += self._check_sale(sale_id, [c for c in commits if c.sale_id == sale_id], at_rest=at_rest)
        problems += self._check_cart()
        per_episode = Counter((p["sale_id"], p["episode"]) for p in self.pages)
        problems += [
            f"{sale} paged {n} times for episode {episode}" for (sale, episode), n in per_episode.items() if n > 1
        ]
        problems += [
            f"{c.sale_id} paged for episode {c.episode} while the sale was {c.outcome_then} (episode {c.episode_then})"
            for c in page_checks
            if c.outcome_then != "escalated" or c.episode_then != c.episode
        ]
        problems += self._check_jobs(commits, at_rest=at_rest)
        if at_rest and self.pending:
            problems.append(f"{len(self.pending)} message(s) never processed")
        if problems:
            raise AssertionError(
                "invariants violated:\n  "
                + "\n  ".join(problems)
                + "\nlast steps:\n  "
                + "\n  ".join(self.scheduler.log[-25:])
            )

    def _check_sale(self, sale_id: str, commits: list[Commit], *, at_rest: bool) -> list[str]:
        problems: list[str] = []
        row, entry = self.row(self.connection_id, sale_id), self.entry(sale_id)
        reflects = [c for c in commits if c.transition == "reflect"]
        if len(reflects) > 1:
            problems.append(f"{sale_id}: reflected {len(reflects)} times")
        if reflects:
            first = reflects[0].after.row.record
            if row.record != first or row.state is not State.REFLECTED:
                problems.append(f"{sale_id}: reflected, then changed to {row.state.value} / another record")
            if commits[-1] is not reflects[0]:
                problems.append(f"{sale_id}: written after it was reflected ({commits[-1].transition})")
        if row.record is not None and entry is not None:
            problems.append(f"{sale_id}: reflected but still in the error list")
        for commit in commits:
            old, new = commit.before.row, commit.after.row
            if new.version != old.version + 1 or new.episode < old.episode:
                problems.append(f"{sale_id}: {commit.transition} moved version {old.version}->{new.version}")
            displaced = commit.transition == "claim" and old.state is State.IN_PROGRESS
            if displaced and old.lease_until is not None and old.lease_until > new.updated_at:
                problems.append(f"{sale_id}: claimed while its owner {old.owner} was live")
            if old.episode and new.episode > old.episode and commit.after.actor not in RERUNNERS:
                problems.append(
                    f"{sale_id}: {commit.after.actor.value} started episode {new.episode} (only requests do)"
                )
            changed = new.state is not old.state or new.reason != old.reason
            if old.state.settled and changed and new.episode <= old.episode:
                problems.append(
                    f"{sale_id}: {old.state.value}/{old.reason} became {new.state.value}/{new.reason} in the same "
                    f"episode {new.episode} ({commit.transition})"
                )
        if row.state is State.IN_PROGRESS:
            problems += self._check_owner(sale_id, row)
            if at_rest:
                problems.append(f"{sale_id}: still in progress at rest")
        if at_rest and row.page_due:
            problems.append(f"{sale_id}: its page is still due at rest")
        return problems

    def _check_cart(self) -> list[str]:
        """A cart: its record (written once: ``_check_sale`` on the cart's row) holds both sales, and a sale's own row
        never holds a record of its own."""
        assert self.example is not None
        pack_id = self.example.pack_id
        if pack_id is None:
            return []
        problems: list[str] = []
        cart = self.row(self.connection_id, pack_id)
        if cart.record is not None and sorted(cart.record.sale_ids or []) != sorted(self.example.sales):
            problems.append(f"cart {pack_id}: its record holds {cart.record.sale_ids}, not both sales")
        for sale_id in self.example.sales:
            row = self.row(self.connection_id, sale_id)
            if row.record is not None:
                problems.append(f"{sale_id}: a cart's sale holds a record of its own")
        return problems

    def _check_owner(self, sale_id: str, row: Any) -> list[str]:
        """In progress implies a live owner: its execution runs, or its claim was not started yet (a request, a
        redelivered message or the reaper starts it), or it ended badly and its status event is on the way."""
        status = self.execution_status(row.owner)
        if status == "RUNNING" or (status is None and row.due_at is not None):
            return []
        if status in ENDED_BADLY:
            events = self.stack.execution_events
            arn = self.stack.state_machine_arn.replace(":stateMachine:", ":execution:") + f":{row.owner}"
            delivered = events is not None and (arn, status) in events.delivered_events
            if not delivered or any(not a.done for a in self.event_actors):
                return []
        return [f"{sale_id}: in progress, but its owner {row.owner} is {status}"]

    def _check_jobs(self, commits: list[Commit], *, at_rest: bool) -> list[str]:
        assert self.example is not None
        problems: list[str] = []
        settled: dict[tuple[str, int], set[tuple[str, Any]]] = {}
        for commit in commits:
            new = commit.after.row
            if new.state.settled:
                settled.setdefault((commit.sale_id, new.episode), set()).add((new.state.value, new.reason))
        for job_id in self.jobs:
            header, items = self._job(job_id)
            if header is None:
                continue  # withdrawn: none of its messages went out
            for item in items:
                sale_id, outcome = item["item_key"], item["outcome"]
                if outcome in ("pending", "in_progress"):
                    if at_rest:
                        problems.append(f"job {job_id}: item {sale_id} still {outcome} at rest")
                    continue
                episode = int(item.get("episode", 0))
                seen = settled.get((sale_id, episode), set())
                pack_id = self.carts.get(sale_id)
                if pack_id is not None:  # a cart's sale: the cart's outcome (an earlier example's cart too: a
                    # reconciliation of a reused connection finds its paid sales and reflects the cart now)
                    seen = seen | settled.get((pack_id, episode), set())
                state = "reflected" if outcome == "already_reflected" else outcome
                reason = item.get("reason")
                if not any(s == state and (r.value if r else None) == reason for s, r in seen):
                    problems.append(
                        f"job {job_id}: item {sale_id} says {outcome}/{reason} (episode {episode}); the sale's "
                        f"episode settled as {sorted(map(str, seen)) or 'nothing'}"
                    )
            counts = {k[6:]: int(v) for k, v in header.items() if k.startswith("count_")}
            accepted, settled_count = int(header["accepted"]), int(header.get("settled", 0))
            if sum(counts.values()) != settled_count:
                problems.append(f"job {job_id}: counts {counts} do not add up to settled {settled_count}")
            if at_rest and settled_count != accepted:
                problems.append(f"job {job_id}: {settled_count} of {accepted} settled at rest")
        return problems

    def _job(self, job_id: str) -> tuple[dict[str, Any] | None, list[dict[str, Any]]]:
        from boto3.dynamodb.types import TypeDeserializer

        deserializer = TypeDeserializer()
        rows = self.ddb.query(
            TableName=self.settings.jobs_table,
            KeyConditionExpression="job_id = :j",
            ExpressionAttributeValues={":j": {"S": job_id}},
            ConsistentRead=True,
        )["Items"]
        parsed = [{k: deserializer.deserialize(v) for k, v in row.items()} for row in rows]
        header = next((r for r in parsed if r["item_key"] == "#"), None)
        return header, [r for r in parsed if "outcome" in r]  # the items: not the header, nor the job's messages

    # --- draining -----------------------------------------------------------------------------------------------------

    def drain(self, *, rounds: int = 40) -> None:
        """Let everything finish without crashes, delivering every message and event and sweeping (with the clock
        moved past every backoff and lease) until the sales are at rest."""
        scheduler = self.scheduler
        for _ in range(rounds):
            # Bounded: an execution following an owner that cannot end before time passes or its status event is
            # delivered (both below) would otherwise follow it forever.
            scheduler.finish_all(steps=120)
            self.after_step()
            for message_id, body in list(self.pending.items()):
                self.deliver(message_id, body)
                scheduler.finish_all(steps=120)
                self.after_step()
            self.deliver_events()
            scheduler.finish_all(steps=120)
            self.after_step()
            self.check()  # every quiescent point of the drain must keep the invariants too
            if self.at_rest():
                return
            clock.advance(8 * 3600)
            self.sweep()
            scheduler.finish_all(steps=120)
            self.after_step()
        raise AssertionError(f"not at rest after {rounds} rounds of draining: {self.rest_report()}")

    def open_items(self) -> list[str]:
        jobs_table = self.settings.jobs_table
        found = []
        for job_id in self.jobs:
            items = self.ddb.query(
                TableName=jobs_table,
                KeyConditionExpression="job_id = :j",
                ExpressionAttributeValues={":j": {"S": job_id}},
                ConsistentRead=True,
            )["Items"]
            found += [
                f"{job_id}/{i['item_key']['S']}"
                for i in items
                if "outcome" in i and i["outcome"]["S"] in ("pending", "in_progress")  # items, not header or messages
            ]
        return found

    def at_rest(self) -> bool:
        assert self.example is not None
        rows = [self.row(self.connection_id, s) for s in self.example.subjects]
        return (
            not self.pending
            and not self.scheduler.parked()
            and not self._running()
            and not self.open_items()
            and all(r.state is not State.IN_PROGRESS and not r.page_due for r in rows)
        )

    def rest_report(self) -> str:
        assert self.example is not None
        rows = {s: self.row(self.connection_id, s) for s in self.example.subjects}
        return json.dumps(
            {
                "pending_messages": len(self.pending),
                "parked": [a.describe() for a in self.scheduler.parked()],
                "running": sorted(self._running()),
                "open_items": self.open_items(),
                "rows": {s: [r.state.value, r.episode, r.owner, r.page_due] for s, r in rows.items()},
            }
        )


def _real_window() -> dict[str, str]:
    """Reconciliation asks ML by its real clock (the orders' dates are real): the hour around now."""
    now = datetime.now(UTC)
    return {"from": (now - timedelta(hours=1)).isoformat(), "to": (now + timedelta(minutes=5)).isoformat()}
