"""Issue 15 on the whole local stack: a cart (a pack of several sales) reprocessed whole, all or nothing, through the
API over HTTP, the real relink state machine on moto (every task the real handler), the bulk worker driven by the
local poller, the error sweep and the reconciliation invoked with their scheduled events, the simulated Mercado
Libre serving packs, orders and shipments its way.

The rules as built: the pack must be `released` (`pack_cancelled` for cancelled / pending_cancel, `pack_not_released`
otherwise); only this seller's orders of the pack count (a multi-seller pack shows the others, which answer 403); every
seed check runs on every order, and the first failing order blocks the cart with its reason and its `sale_id`; a cart
that passes is one record keyed by the pack id, holding every order, its shipment the pack's. Whichever of its ids
starts it, and however many at once, it is written once.
"""

from __future__ import annotations

import copy
import json
import threading
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from devstack.schedules_demo import scheduled_event
from devstack.simulator.scenario import Scenario
from devstack.stack import EmbeddedStack
from tests.conftest import DEFAULT_SCENARIO, default_scenario_data
from tests.stack.support import list_sale, running_stack, wait_for_job

pytestmark = pytest.mark.stack

C = "mla-main"
TEMPLATE = 2000009101000011  # the default scenario's healthy sale: paid, its listing linked, active, synced
LINKED, LINKED_2 = "MLA1100000001", "MLA1100000002"
NOT_SYNCED = "MLA1100000006"  # linked to an active product that is not synced with mla-main
OTHER_SELLER = 987654321  # mlb-second's seller


def _carts() -> dict[str, tuple[int, list[int]]]:
    """name -> (pack id, order ids); each pack's orders are numbered after it."""
    base = {
        "two": 2000006401000010,
        "three": 2000006402000010,
        "blocked": 2000006403000010,
        "pending_cancel": 2000006404000010,
        "filling": 2000006405000010,
        "multi_seller": 2000006406000010,
        "concurrent": 2000006407000010,
        "bulk": 2000006408000010,
        "bulk_pack": 2000006409000010,
        "listed": 2000006410000010,
        "reconciled": 2000006411000010,
        "handed_over": 2000006412000010,
    }
    sizes = {"three": 3, "multi_seller": 3, "concurrent": 3}
    return {
        name: (pack, [2000009400000000 + (pack % 100000000) // 1000 * 10 + n for n in range(1, sizes.get(name, 2) + 1)])
        for name, pack in base.items()
    }


CARTS = _carts()


def _order(order_id: int, pack_id: int, item: str, *, seller: int | None = None, status: str = "paid") -> Any:
    data = json.loads(DEFAULT_SCENARIO.read_text())
    order = copy.deepcopy(next(o for o in data["orders"] if o["id"] == TEMPLATE))
    order["id"], order["pack_id"], order["status"] = order_id, pack_id, status
    order["shipping"] = {"id": 44040000000 + order_id % 100000}  # not the pack's: the record takes the pack's
    order["order_items"][0]["item"]["id"] = item
    order["tags"] = ["pack_order", "paid", "not_delivered"] if status == "paid" else ["pack_order"]
    for payment in order["payments"]:
        payment["order_id"] = order_id
        if status != "paid":
            payment["status"] = "pending"
        if seller is not None:
            payment["collector"] = {"id": seller}
    if seller is not None:
        order["seller"] = {"id": seller}
    return order


def shipment_of(pack_id: int | str) -> int:
    return 44050000000 + int(pack_id) % 100000


def _scenario() -> Scenario:
    data = default_scenario_data()
    for name, (pack_id, orders) in CARTS.items():
        status = {"pending_cancel": "pending_cancel", "filling": "filling"}.get(name, "released")
        for n, order_id in enumerate(orders):
            item = LINKED if n % 2 == 0 else LINKED_2
            seller = OTHER_SELLER if name == "multi_seller" and n == 2 else None
            paid = "payment_required" if name == "filling" and n == 1 else "paid"
            if name == "blocked" and n == 1:
                item = NOT_SYNCED
            data["orders"].append(_order(order_id, pack_id, item, seller=seller, status=paid))
        if name == "reconciled":
            continue  # ML's undeclared pack, derived from its orders (released: both paid)
        data["packs"].append(
            {
                "id": pack_id,
                "orders": [{"id": o} for o in orders],
                "status": status,
                "status_detail": None,
                "shipment": {"id": shipment_of(pack_id)},
                "buyer": {"id": 1944693001},
            }
        )
    return Scenario.model_validate(data)


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with running_stack(_scenario()) as running:
        yield running


@pytest.fixture
def http(stack: EmbeddedStack) -> Iterator[httpx.Client]:
    assert stack.api is not None
    with httpx.Client(base_url=stack.api.url, timeout=60) as client:
        yield client


def ids(name: str) -> tuple[str, list[str]]:
    pack_id, orders = CARTS[name]
    return str(pack_id), [str(o) for o in orders]


def records_holding(stack: EmbeddedStack, sale_id: str) -> list[dict[str, Any]]:
    ddb = stack.aws.client("dynamodb")
    pages = ddb.get_paginator("scan").paginate(TableName=stack.settings().sales_table)
    rows = [item for page in pages for item in page["Items"]]
    return [r for r in rows if "record" in r and sale_id in json.dumps(r["record"])]


def relinked(stack: EmbeddedStack, http: httpx.Client, path: str) -> dict[str, Any]:
    started = http.post(path)
    assert started.status_code == 202, started.text
    described = stack.wait(started.json()["execution_id"])
    assert described["status"] == "SUCCEEDED", described
    output: dict[str, Any] = described["output"]
    return output


def test_relinking_one_sale_of_a_cart_reflects_the_whole_cart_as_one_record(
    stack: EmbeddedStack, http: httpx.Client
) -> None:
    pack_id, sales = ids("three")
    started = http.post(f"/connections/{C}/sales/{sales[1]}/relink")
    assert started.status_code == 202, started.text
    body = started.json()
    assert (body["pack_id"], body["sale_ids"]) == (pack_id, sales)
    described = stack.wait(body["execution_id"])
    assert json.loads(described["input"]) == {"connection_id": C, "pack_id": pack_id}
    output = described["output"]
    assert (output["pack_id"], output["sale_ids"], output["outcome"]) == (pack_id, sales, "reflected")
    assert "sale_id" not in output
    pack = http.get(f"/connections/{C}/packs/{pack_id}").json()
    assert (pack["outcome"], pack["sale_ids"]) == ("reflected", sales)
    record = pack["record"]
    assert (record["sale_id"], record["pack_id"], record["sale_ids"]) == (pack_id, pack_id, sales)
    assert record["shipment_id"] == str(shipment_of(pack_id))  # the pack's shipment, not an order's
    assert [line["sale_id"] for line in record["lines"]] == sales
    assert record["total_amount"] == 3 * 24999.0
    for sale_id in sales:
        state = http.get(f"/connections/{C}/sales/{sale_id}").json()
        assert (state["outcome"], state["pack_id"], state["sale_ids"]) == ("reflected", pack_id, sales)
        assert len(records_holding(stack, sale_id)) == 1
    again = http.post(f"/connections/{C}/sales/{sales[2]}/relink")
    assert (again.status_code, again.json()["outcome"]) == (200, "already_reflected")
    report = http.get(f"/connections/{C}/sales/{sales[0]}/verification").json()
    assert (report["next_action"], report["reflected"]) == ("none", True)


def test_the_pack_route_refuses_a_sale_the_service_holds_as_a_sale_of_its_own(
    stack: EmbeddedStack, http: httpx.Client
) -> None:
    """GET .../packs/{id} of a sale's own row is not a cart's answer: 422 not_a_cart, pointing at the sale route."""
    sale = str(TEMPLATE)
    if http.get(f"/connections/{C}/sales/{sale}").status_code == 404:
        relinked(stack, http, f"/connections/{C}/sales/{sale}/relink")
    answer = http.get(f"/connections/{C}/packs/{sale}")
    assert answer.status_code == 422, answer.text
    body = answer.json()
    assert (body["error"], body["identifier_kind"], body["sale_ids"]) == ("not_a_cart", "sale", [sale])
    assert f"GET /connections/{C}/sales/{sale}" in body["message"]


def test_the_pack_route_relinks_a_cart_of_two_and_answers_where_it_stands(
    stack: EmbeddedStack, http: httpx.Client
) -> None:
    pack_id, sales = ids("two")
    assert http.get(f"/connections/{C}/packs/{pack_id}").status_code == 404  # never seen
    output = relinked(stack, http, f"/connections/{C}/packs/{pack_id}/relink")
    assert (output["pack_id"], output["outcome"], output["attempts"]) == (pack_id, "reflected", 1)
    pack = http.get(f"/connections/{C}/packs/{pack_id}").json()
    assert (pack["outcome"], pack["sale_ids"], pack["latest_execution"]["status"]) == ("reflected", sales, "SUCCEEDED")
    # One of its sales, asked as a pack: not a cart, and the answer names the cart it belongs to.
    as_pack = http.get(f"/connections/{C}/packs/{sales[0]}")
    assert (as_pack.status_code, as_pack.json()["error"]) == (422, "not_a_cart"), as_pack.text
    assert f"packs/{pack_id}" in as_pack.json()["message"]
    again = http.post(f"/connections/{C}/packs/{pack_id}/relink")
    assert (again.status_code, again.json()["outcome"]) == (200, "already_reflected")


def test_a_cart_blocked_by_one_sale_names_it_and_is_listed_once_under_its_pack(
    stack: EmbeddedStack, http: httpx.Client
) -> None:
    pack_id, sales = ids("blocked")
    report = http.get(f"/connections/{C}/sales/{sales[0]}/verification").json()
    assert (report["next_action"], report["reason"]) == ("blocked", "product_not_synced")
    assert report["cart"]["blocking_sale_id"] == sales[1]
    assert [o.get("reason") for o in report["cart"]["orders"]] == [None, "product_not_synced"]
    output = relinked(stack, http, f"/connections/{C}/packs/{pack_id}/relink")
    assert (output["outcome"], output["reason"], output["sale_id"]) == (
        "not_reflectable",
        "product_not_synced",
        sales[1],
    )
    pack = http.get(f"/connections/{C}/packs/{pack_id}").json()
    assert (pack["outcome"], pack["reason"], pack["sale_id"]) == ("not_reflectable", "product_not_synced", sales[1])
    assert pack["seller_action"] and sales[1] in pack["detail"]
    listed = http.get(f"/connections/{C}/sale-errors", params={"error_type": "product_not_synced"}).json()["items"]
    mine = [e for e in listed if e["sale_id"] in (pack_id, *sales)]
    assert [(e["sale_id"], e["pack_id"], e["sale_ids"]) for e in mine] == [(pack_id, pack_id, sales)]
    assert records_holding(stack, sales[0]) == []  # nothing of the cart reflected
    assert not [m for m in stack.help_desk_messages() if m.get("sale_id") in (pack_id, *sales)]  # never paged
    state = http.get(f"/connections/{C}/sales/{sales[0]}").json()
    assert (state["outcome"], state["reason"], state["blocking_sale_id"]) == (
        "not_reflectable",
        "product_not_synced",
        sales[1],
    )


@pytest.mark.parametrize(("name", "reason"), [("pending_cancel", "pack_cancelled"), ("filling", "pack_not_released")])
def test_a_pack_not_released_is_refused_whole(stack: EmbeddedStack, http: httpx.Client, name: str, reason: str) -> None:
    pack_id, sales = ids(name)
    output = relinked(stack, http, f"/connections/{C}/sales/{sales[0]}/relink")
    assert (output["pack_id"], output["outcome"], output["reason"]) == (pack_id, "not_reflectable", reason)
    assert "sale_id" not in output  # the pack blocks it, not one sale
    for sale_id in sales:
        assert http.get(f"/connections/{C}/sales/{sale_id}").json()["reason"] == reason
        assert records_holding(stack, sale_id) == []


def test_a_multi_seller_pack_reflects_only_this_sellers_orders(stack: EmbeddedStack, http: httpx.Client) -> None:
    pack_id, sales = ids("multi_seller")
    ours, theirs = sales[:2], sales[2]
    report = http.get(f"/connections/{C}/sales/{pack_id}/verification").json()
    assert report["cart"]["sale_ids"] == ours and report["cart"]["other_sellers_sale_ids"] == [theirs]
    output = relinked(stack, http, f"/connections/{C}/packs/{pack_id}/relink")
    assert (output["outcome"], output["sale_ids"]) == ("reflected", ours)
    record = http.get(f"/connections/{C}/packs/{pack_id}").json()["record"]
    assert record["sale_ids"] == ours and theirs not in json.dumps(record)


def test_ten_concurrent_relinks_of_a_carts_ids_reflect_it_exactly_once(
    stack: EmbeddedStack, http: httpx.Client
) -> None:
    pack_id, sales = ids("concurrent")
    paths = [f"/connections/{C}/sales/{sales[n % 3]}/relink" for n in range(8)]
    paths += [f"/connections/{C}/packs/{pack_id}/relink"] * 2
    assert stack.api is not None

    def post(path: str) -> httpx.Response:
        with httpx.Client(base_url=stack.api.url, timeout=60) as client:  # type: ignore[union-attr]
            return client.post(path)

    with ThreadPoolExecutor(max_workers=10) as pool:
        answers = list(pool.map(post, paths))
    executions = {a.json().get("execution_id") for a in answers if a.status_code == 202}
    assert all(a.status_code in (200, 202) for a in answers), [a.text for a in answers]
    assert len(executions) == 1, executions
    described = stack.wait(executions.pop())
    assert described["output"]["outcome"] == "reflected"
    for sale_id in sales:
        assert len(records_holding(stack, sale_id)) == 1
    assert not [m for m in stack.help_desk_messages() if m.get("sale_id") in (pack_id, *sales)]


def test_bulk_reprocesses_a_cart_once_and_settles_each_item_with_its_outcome(
    stack: EmbeddedStack, http: httpx.Client
) -> None:
    pack_id, sales = ids("bulk")
    other_pack, other_sales = ids("bulk_pack")
    before = stack.meli.count(path_regex=f"^/packs/{pack_id}$")
    submitted = http.post(f"/connections/{C}/reprocessing-jobs", json={"sale_ids": [*sales, other_pack]})
    assert submitted.status_code == 202, submitted.text
    assert submitted.json()["rejected"] == []  # a pack id is accepted as a cart
    view = wait_for_job(http, submitted.json()["job_id"])
    items = {i["sale_id"]: (i["outcome"], i.get("reason")) for i in view["items"]}
    assert items == {sales[0]: ("reflected", None), sales[1]: ("reflected", None), other_pack: ("reflected", None)}
    assert stack.meli.count(path_regex=f"^/packs/{pack_id}$") - before == 1  # the cart read once
    for sale_id in [*sales, *other_sales]:
        assert len(records_holding(stack, sale_id)) == 1
    assert http.get(f"/connections/{C}/packs/{other_pack}").json()["sale_ids"] == other_sales


def test_resync_of_a_listed_cart_sale_reprocesses_its_cart_and_it_leaves_the_list(
    stack: EmbeddedStack, http: httpx.Client
) -> None:
    pack_id, sales = ids("listed")
    list_sale(stack, sales[1], "marketplace_timeout", "Timeout reading order")
    answer = http.post(f"/connections/{C}/sales/{sales[1]}/resync")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["outcome"], body["pack_id"], body["sale_ids"]) == ("reflected", pack_id, sales)
    state = http.get(f"/connections/{C}/sales/{sales[1]}").json()
    assert state["outcome"] == "reflected" and "error_entry" not in state
    listed = http.get(f"/connections/{C}/sale-errors").json()["items"]
    assert not [e for e in listed if e["sale_id"] in (pack_id, *sales)]
    assert len(records_holding(stack, sales[0])) == 1


def test_a_sale_handed_over_before_its_cart_was_known_reprocesses_the_cart_in_its_execution(
    stack: EmbeddedStack,
) -> None:
    """The console (or a bulk hand-over after ML failed before the order was read) starts an execution for one sale
    of a cart: its attempt reprocesses the cart, and the sale follows the cart's outcome."""
    pack_id, sales = ids("handed_over")
    described = stack.run_execution({"connection_id": C, "sale_id": sales[0]}, name=f"console-{sales[0]}")
    assert described["status"] == "SUCCEEDED", described
    assert (described["output"]["outcome"], described["output"]["sale_id"]) == ("reflected", sales[0])
    cart, _ = stack.service().views.sale_state(C, sales[1])
    assert (cart.outcome, cart.pack_id) == ("reflected", pack_id)
    assert len(records_holding(stack, sales[0])) == 1
    own, entry = stack.service().lifecycle.read(C, sales[0]).row, None
    assert (own.outcome, own.pack_id, own.record, entry) == ("reflected", pack_id, None, None)


def test_both_ids_in_one_execution_input_is_an_invalid_input(stack: EmbeddedStack) -> None:
    pack_id, sales = ids("two")
    described = stack.run_execution({"connection_id": C, "sale_id": sales[0], "pack_id": pack_id}, name="both-ids")
    assert (described["status"], described.get("error")) == ("FAILED", "InvalidInput")


def test_reconciliation_finds_a_paid_cart_missing_here_and_reprocesses_it_once(stack: EmbeddedStack) -> None:
    pack_id, sales = ids("reconciled")
    now = datetime.now(UTC)
    for sale_id in sales:
        order = stack.meli.order(int(sale_id))
        assert order is not None
        order["last_updated"] = (now - timedelta(minutes=5)).strftime("%Y-%m-%dT%H:%M:%S.000+00:00")
        stack.meli.upsert_order(order)
    first = stack.aws.runtime.invoke("ReconcileFunction", scheduled_event(stack, "reconcile"))
    run = next(r for r in first["connections"] if r["connection_id"] == C)
    assert set(sales) <= set(run["sale_ids"])
    assert stack.poller is not None
    stack.poller.wait_idle(timeout=60)
    pack = stack.service().views.pack_state(C, pack_id)
    assert (pack.outcome, pack.sale_ids) == ("reflected", sales)
    assert len(records_holding(stack, sales[0])) == 1
    second = stack.aws.runtime.invoke("ReconcileFunction", scheduled_event(stack, "reconcile"))
    run = next(r for r in second["connections"] if r["connection_id"] == C)
    assert not set(sales) & set(run.get("sale_ids") or [])  # the cart is reflected: not queued again


_fresh = iter(range(1, 1000))


def fresh_cart(stack: EmbeddedStack, size: int = 3) -> tuple[str, list[str]]:
    """A new released cart of ``size`` healthy orders, added to the running simulator."""
    n = next(_fresh)
    pack_id = 2000006500000000 + n * 1000
    orders = [2000009500000000 + n * 1000 + k for k in range(1, size + 1)]
    for k, order_id in enumerate(orders):
        stack.meli.upsert_order(_order(order_id, pack_id, LINKED if k % 2 == 0 else LINKED_2))
    stack.meli.upsert_pack(
        {
            "id": pack_id,
            "orders": [{"id": o} for o in orders],
            "status": "released",
            "status_detail": None,
            "shipment": {"id": shipment_of(pack_id)},
            "buyer": {"id": 1944693001},
        }
    )
    return str(pack_id), [str(o) for o in orders]


@pytest.mark.parametrize("round_", range(3))
def test_every_starter_at_once_reflects_a_cart_exactly_once(stack: EmbeddedStack, round_: int) -> None:
    """Six starters of one cart at once, through every entry point: a sale's relink, the pack's relink, a bulk job with
    two of its sales and its pack id, the resync of a listed sale of it, a console execution by a sale id, and a
    verification. One record; every sale, item and answer the cart's outcome; nothing listed; no page."""
    pack_id, sales = fresh_cart(stack)
    list_sale(stack, sales[2], "marketplace_timeout", "Timeout reading order")
    assert stack.api is not None
    url = stack.api.url
    together = threading.Barrier(6)

    def go(which: int) -> Any:
        together.wait(30)
        with httpx.Client(base_url=url, timeout=60) as client:
            if which == 0:
                return client.post(f"/connections/{C}/sales/{sales[0]}/relink")
            if which == 1:
                return client.post(f"/connections/{C}/packs/{pack_id}/relink")
            if which == 2:
                return client.post(
                    f"/connections/{C}/reprocessing-jobs", json={"sale_ids": [sales[1], sales[2], pack_id]}
                )
            if which == 3:
                return client.post(f"/connections/{C}/sales/{sales[2]}/resync")
            if which == 4:
                return stack.run_execution(
                    {"connection_id": C, "sale_id": sales[1]}, name=f"console-{sales[1]}-{round_}"
                )
            return client.get(f"/connections/{C}/sales/{sales[0]}/verification")

    with ThreadPoolExecutor(max_workers=6) as pool:
        relink, pack_relink, job_post, resync, console, verified = pool.map(go, range(6))
    for answer in (relink, pack_relink):
        assert answer.status_code in (200, 202), answer.text
        if answer.status_code == 202:
            assert stack.wait(answer.json()["execution_id"])["status"] == "SUCCEEDED"
    assert resync.status_code == 200, resync.text
    assert resync.json()["outcome"] in ("reflected", "already_reflected", "in_progress"), resync.text
    assert console["status"] == "SUCCEEDED" and console["output"]["outcome"] in ("reflected", "already_reflected")
    assert verified.status_code == 200, verified.text
    with httpx.Client(base_url=url, timeout=60) as client:
        view = wait_for_job(client, job_post.json()["job_id"])
        assert view["status"] == "completed"
        assert {i["outcome"] for i in view["items"]} <= {"reflected", "already_reflected"}, view["items"]
        for sale_id in sales:
            state = client.get(f"/connections/{C}/sales/{sale_id}").json()
            assert (state["outcome"], state["pack_id"]) == ("reflected", pack_id), state
            assert "error_entry" not in state
        pack = client.get(f"/connections/{C}/packs/{pack_id}").json()
        assert (pack["outcome"], pack["sale_ids"]) == ("reflected", sales)
        listed = client.get(f"/connections/{C}/sale-errors", params={"limit": "100"}).json()["items"]
        assert not [e for e in listed if e["sale_id"] in (pack_id, *sales)]
    for sale_id in sales:
        assert len(records_holding(stack, sale_id)) == 1
    assert not [m for m in stack.help_desk_messages() if m.get("sale_id") in (pack_id, *sales)]


def test_a_cart_ml_keeps_failing_is_escalated_once_after_three_attempts(
    stack: EmbeddedStack, http: httpx.Client
) -> None:
    pack_id, sales = fresh_cart(stack, size=2)
    stack.meli.add_fault({"path": f"^/orders/{sales[1]}$", "kind": "status", "status": 503})
    # The API asks ML whether it is a cart before it writes anything: ML down answers 503 and nothing is kept.
    refused = http.post(f"/connections/{C}/packs/{pack_id}/relink")
    assert (refused.status_code, refused.json()["error"]) == (503, "marketplace_unavailable")
    assert http.get(f"/connections/{C}/packs/{pack_id}").status_code == 404
    # A run with the cart's input (the console's): three attempts, then the help desk, once, for the cart.
    described = stack.run_execution({"connection_id": C, "pack_id": pack_id}, name=f"console-{pack_id}")
    assert described["status"] == "SUCCEEDED", described
    output = described["output"]
    assert (output["pack_id"], output["outcome"], output["reason"], output["attempts"]) == (
        pack_id,
        "escalated",
        "retries_exhausted",
        3,
    )
    pack = http.get(f"/connections/{C}/packs/{pack_id}").json()
    assert (pack["outcome"], pack["reason"], pack["error_entry"]["escalated"]) == (
        "escalated",
        "retries_exhausted",
        True,
    )
    # The cart's orders were never read whole, so the service does not know them as this cart's sales yet (a limit:
    # the sale's own state is unknown until one read of the cart succeeds).
    assert http.get(f"/connections/{C}/sales/{sales[0]}").status_code == 404
    pages = [m for m in stack.help_desk_messages() if m.get("sale_id") in (pack_id, *sales)]
    assert [p["sale_id"] for p in pages] == [pack_id]  # one page, for the cart
    listed = http.get(f"/connections/{C}/sale-errors", params={"limit": "100"}).json()["items"]
    assert [(e["sale_id"], e["escalated"]) for e in listed if e["sale_id"] in (pack_id, *sales)] == [(pack_id, True)]
    assert records_holding(stack, sales[0]) == []
    # ML recovers; the help desk resyncs the listed cart by its pack id (the entry's key): reflected whole, delisted.
    stack.meli.clear_faults()
    resynced = http.post(f"/connections/{C}/sales/{pack_id}/resync")
    assert resynced.status_code == 200, resynced.text
    assert (resynced.json()["outcome"], resynced.json()["sale_ids"]) == ("reflected", sales)
    state = http.get(f"/connections/{C}/sales/{sales[1]}").json()
    assert (state["outcome"], state["pack_id"], "error_entry" in state) == ("reflected", pack_id, False)
    again = http.post(f"/connections/{C}/sales/{sales[0]}/resync")  # a sale of it: the cart's answer
    assert (again.status_code, again.json()["outcome"], again.json()["pack_id"]) == (200, "already_reflected", pack_id)
    assert len(records_holding(stack, sales[0])) == 1


def test_resync_of_a_sale_of_a_cart_listed_under_its_pack_resyncs_the_cart(
    stack: EmbeddedStack, http: httpx.Client
) -> None:
    pack_id, sales = ids("blocked")  # blocked by its second sale's unsynced product, listed under the pack
    relinked(stack, http, f"/connections/{C}/packs/{pack_id}/relink")
    answer = http.post(f"/connections/{C}/sales/{sales[0]}/resync")
    assert answer.status_code == 200, answer.text
    body = answer.json()
    assert (body["outcome"], body["reason"], body["pack_id"], body["blocking_sale_id"]) == (
        "not_reflectable",
        "product_not_synced",
        pack_id,
        sales[1],
    )


def test_the_sweep_heals_a_cart_once_its_blocking_product_is_fixed(stack: EmbeddedStack, http: httpx.Client) -> None:
    from shared.models import ProductLink

    listing = "MLA1190000001"
    products = stack.service().stores.products
    products.put(ProductLink(connection_id=C, item_id=listing, sku="SWEEP-1", synced=False))
    pack_id, sales = fresh_cart(stack, size=2)
    order = stack.meli.order(int(sales[1]))
    assert order is not None
    order["order_items"][0]["item"]["id"] = listing
    stack.meli.upsert_order(order)
    output = relinked(stack, http, f"/connections/{C}/sales/{sales[1]}/relink")
    assert (output["outcome"], output["reason"], output["sale_id"]) == (
        "not_reflectable",
        "product_not_synced",
        sales[1],
    )
    products.put(ProductLink(connection_id=C, item_id=listing, sku="SWEEP-1", synced=True))
    swept = stack.aws.runtime.invoke("ErrorSweepFunction", scheduled_event(stack, "error-sweep"))
    run = next(r for r in swept["connections"] if r["connection_id"] == C)
    assert pack_id in run["sale_ids"] and not set(sales) & set(run["sale_ids"])  # the cart, once, by its pack id
    assert stack.poller is not None
    stack.poller.wait_idle(timeout=60)
    pack = http.get(f"/connections/{C}/packs/{pack_id}").json()
    assert (pack["outcome"], pack["sale_ids"]) == ("reflected", sales)
    assert "error_entry" not in pack
    assert len(records_holding(stack, sales[0])) == 1


def test_an_order_the_pack_lists_but_ml_cannot_find_is_never_left_out_of_the_cart(
    stack: EmbeddedStack, http: httpx.Client
) -> None:
    """Only 403 not_owned_order makes an order another seller's. A 404 for an order the pack lists (ML's own data not
    yet consistent) fails the attempt instead: the cart is retried, never reflected without one of its orders."""
    pack_id, sales = fresh_cart(stack, size=3)
    stack.meli.add_fault({"path": f"^/orders/{sales[2]}$", "kind": "status", "status": 404, "times": 3})
    described = stack.run_execution({"connection_id": C, "pack_id": pack_id}, name=f"console-404-{pack_id}")
    assert described["status"] == "SUCCEEDED", described
    output = described["output"]
    assert (output["outcome"], output["sale_ids"]) == ("reflected", sales)  # every order, once ML found the third
    assert output["attempts"] >= 2  # the read that met the 404 was an attempt that failed
    record = http.get(f"/connections/{C}/packs/{pack_id}").json()["record"]
    assert record["sale_ids"] == sales and "other_sellers_sale_ids" not in record
    assert len(records_holding(stack, sales[2])) == 1
