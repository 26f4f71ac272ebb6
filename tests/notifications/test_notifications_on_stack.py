"""ML's notifications end to end on the whole local stack: the simulator POSTs to the template's callback route on the
local API Gateway, the intake queues, the SQS poller drives the processor and the bulk worker, and the missed-feeds
schedule's function is invoked with a real scheduled event (moto never fires rules).
"""

from __future__ import annotations

import copy
import time
from collections.abc import Iterator
from typing import Any

import httpx
import pytest

from devstack.schedules_demo import scheduled_event
from devstack.simulator.scenario import Scenario
from devstack.stack import CALLBACK_PATH, EmbeddedStack
from tests.conftest import default_scenario_data

pytestmark = pytest.mark.stack

TEMPLATE_SALE = 2000009101000011  # paid, products fine (default scenario, case a)
FAST_RETRIES = [0.2] * 7  # ML's eight tries, an hour apart in all, squeezed into 1.4 s


def _scenario() -> Scenario:
    data = default_scenario_data()
    data.pop("new_orders", None)
    # A generous timeout: a busy test machine must not turn a slow 200 into ML's retry (the benchmark measures speed).
    data["notifications"] = {"copies": 1, "retry_seconds": FAST_RETRIES, "timeout_ms": 5000}
    return Scenario.model_validate(data)


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with EmbeddedStack(_scenario(), timeout_hold_seconds=1.0, meli_timeout_seconds=0.5, notifications=True) as running:
        yield running


def _new_order(stack: EmbeddedStack, order_id: int, **changes: Any) -> dict[str, Any]:
    template = stack.meli.order(TEMPLATE_SALE)
    assert template is not None
    order = copy.deepcopy(template)
    order.update(id=order_id, pack_id=order_id - 3_000_000_000_000, **changes)
    for payment in order.get("payments", []):
        payment["order_id"] = order_id
    return order


def _outcome(stack: EmbeddedStack, sale_id: str, *, timeout: float = 30.0) -> str | None:
    deadline = time.monotonic() + timeout
    outcome = None
    while time.monotonic() < deadline:
        try:
            state, _ = stack.service().views.sale_state("mla-main", sale_id)
            outcome = state.outcome.value
        except LookupError:
            outcome = None
        if outcome in ("reflected", "already_reflected", "not_reflectable", "escalated"):
            return outcome
        time.sleep(0.1)
    return outcome


def _settle(stack: EmbeddedStack) -> None:
    notifier = stack.meli.notifier
    assert notifier is not None and stack.poller is not None
    deadline = time.monotonic() + 30
    while not notifier.idle() and time.monotonic() < deadline:
        time.sleep(0.05)
    stack.poller.wait_idle(timeout=30)


def _notification_jobs(stack: EmbeddedStack, sale_id: str) -> list[dict[str, Any]]:
    table = stack.aws.client("dynamodb")
    items = table.scan(TableName=stack.settings().jobs_table)["Items"]
    jobs = {i["job_id"]["S"]: i for i in items if i["item_key"]["S"] == "#"}
    return [
        jobs[i["job_id"]["S"]]
        for i in items
        if i["item_key"]["S"] == sale_id
        and jobs.get(i["job_id"]["S"], {}).get("trigger", {}).get("S") == "notification"
    ]


def test_five_notifications_of_a_new_sale_read_ml_once_and_reflect_it_once(stack: EmbeddedStack) -> None:
    sale_id = 2000009301000011
    stack.meli.upsert_order(_new_order(stack, sale_id), copies=5)
    assert _outcome(stack, str(sale_id)) == "reflected"
    _settle(stack)
    notifier = stack.meli.notifier
    assert notifier is not None
    mine = [d for d in notifier.deliveries if d.notification["resource"] == f"/orders/{sale_id}"]
    assert len(mine) == 5 and all(d.delivered and d.tries == [200] for d in mine)
    assert stack.meli.count("GET", rf"^/orders/{sale_id}$") == 1  # one ML read for five notifications
    state, entry = stack.service().views.sale_state("mla-main", str(sale_id))
    assert entry is None and state.record is not None and state.record.imported_by == "notification"
    assert len(_notification_jobs(stack, str(sale_id))) == 1  # one job item: one record


def test_a_reflected_sale_notified_again_costs_no_read_and_no_write(stack: EmbeddedStack) -> None:
    sale_id = 2000009302000018
    stack.meli.upsert_order(_new_order(stack, sale_id))
    assert _outcome(stack, str(sale_id)) == "reflected"
    _settle(stack)
    before, _ = stack.service().views.sale_state("mla-main", str(sale_id))
    reads = stack.meli.count("GET", rf"^/orders/{sale_id}$")
    cancelled = _new_order(stack, sale_id, status="cancelled")
    stack.meli.upsert_order(cancelled, copies=2)  # ML notifies the cancellation
    _settle(stack)
    after, _ = stack.service().views.sale_state("mla-main", str(sale_id))
    assert stack.meli.count("GET", rf"^/orders/{sale_id}$") == reads
    assert after.model_dump() == before.model_dump()
    assert len(_notification_jobs(stack, str(sale_id))) == 1


def test_an_unpaid_order_leaves_no_row_and_is_relinked_once_paid(stack: EmbeddedStack) -> None:
    sale_id = 2000009303000015
    stack.meli.upsert_order(_new_order(stack, sale_id, status="payment_required"))
    _settle(stack)
    with pytest.raises(LookupError):  # never seen: the service keeps nothing about an order that is not a sale
        stack.service().views.sale_state("mla-main", str(sale_id))
    stack.meli.upsert_order(_new_order(stack, sale_id))  # paid now: ML notifies the change
    assert _outcome(stack, str(sale_id)) == "reflected"


def test_a_notification_racing_a_bulk_job_gives_the_sale_one_outcome(stack: EmbeddedStack) -> None:
    sale_id = 2000009304000012
    order = _new_order(stack, sale_id)
    stack.meli.upsert_order(order, notify=False)
    assert stack.api is not None
    with httpx.Client(base_url=stack.api.url, timeout=10) as client:
        accepted = client.post("/connections/mla-main/reprocessing-jobs", json={"sale_ids": [str(sale_id)]})
        assert accepted.status_code == 202
        stack.meli.upsert_order(order, copies=3)  # the notifications arrive while the job runs
        _settle(stack)
        job = client.get(f"/connections/mla-main/reprocessing-jobs/{accepted.json()['job_id']}").json()
    assert job["status"] == "completed"
    assert job["items"][0]["outcome"] in ("reflected", "already_reflected")
    assert _outcome(stack, str(sale_id)) == "reflected"
    assert stack.meli.count("GET", rf"^/orders/{sale_id}$") <= 2  # the person's job, and at most one racing job
    assert len(_notification_jobs(stack, str(sale_id))) <= 1  # usually none: the person's job held the sale


def test_a_sale_whose_callback_was_down_is_recovered_from_missed_feeds_once(stack: EmbeddedStack) -> None:
    sale_id = 2000009305000019
    notifier = stack.meli.notifier
    assert notifier is not None
    notifier.outage(3.0)  # longer than the eight tries
    stack.meli.upsert_order(_new_order(stack, sale_id), copies=2)
    _settle(stack)
    mine = [d for d in notifier.deliveries if d.notification["resource"] == f"/orders/{sale_id}"]
    assert [d.missed for d in mine] == [True, True] and all(d.tries == [None] * 8 for d in mine)
    with pytest.raises(LookupError):
        stack.service().views.sale_state("mla-main", str(sale_id))
    first = stack.aws.runtime.invoke("MissedFeedsFunction", scheduled_event(stack, "missed-feeds"))
    runs = {run["connection_id"]: run for run in first["connections"]}
    assert runs["mla-main"]["enqueued"] == 2 and runs["mla-main"]["sale_ids"] == [str(sale_id)]
    assert _outcome(stack, str(sale_id)) == "reflected"
    _settle(stack)
    second = stack.aws.runtime.invoke("MissedFeedsFunction", scheduled_event(stack, "missed-feeds"))
    again = {run["connection_id"]: run for run in second["connections"]}
    assert again["mla-main"]["enqueued"] == 0 and again["mla-main"]["skipped"] >= 2  # never handled twice
    assert stack.meli.count("GET", rf"^/orders/{sale_id}$") == 1
    assert len(_notification_jobs(stack, str(sale_id))) == 1


def test_the_callback_on_the_local_api_answers_ml_and_strangers(stack: EmbeddedStack) -> None:
    assert stack.api is not None
    note = {
        "_id": "a1",
        "resource": "/orders/1",
        "user_id": 1,
        "topic": "orders_v2",
        "application_id": 5503910054141466,
        "attempts": 1,
    }
    with httpx.Client(base_url=stack.api.url, timeout=10) as client:
        stranger = client.post(CALLBACK_PATH, json=note)
        junk = client.post(CALLBACK_PATH, content=b"{not json", headers={"Content-Type": "application/json"})
    assert stranger.status_code == 200 and stranger.json() == {
        "status": "ignored",
        "reason": "unknown_seller",
        "notification_id": "a1",
    }
    assert junk.status_code == 400 and junk.json()["error"] == "malformed_json"
