"""Issue 13, items 1, 2 and 6 on the whole local stack: the API over HTTP, the real relink state machine on moto with
every task running the real handler, the bulk worker driven by the local poller, the simulated Mercado Libre.

A partial order (206, `X-Content-Missing`) is a transient failure: the state machine retries it and imports the sale
whole once ML answers whole; if ML never does, the sale is escalated after three attempts like any transient failure,
its history saying `marketplace_partial_order`. A confirmed or never-to-be-fulfilled sale settles in Verify.
"""

from __future__ import annotations

import copy
import time
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from devstack.stack import EmbeddedStack
from tests.stack.support import running_stack, stack_scenario, wait_for_job

pytestmark = pytest.mark.stack

C = "mla-main"
TEMPLATE_ORDER = 2000009101000011  # a healthy paid sale whose product is linked, active and synced
CONFIRMED_APPROVED, UNFULFILLED, FRAUD_RISK = "2000009131000016", "2000009132000013", "2000009133000010"


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with running_stack(stack_scenario()) as running:
        yield running


@pytest.fixture
def http(stack: EmbeddedStack) -> Iterator[httpx.Client]:
    assert stack.api is not None
    with httpx.Client(base_url=stack.api.url, timeout=30) as client:
        yield client


_counter = iter(range(1, 10_000))


@pytest.fixture
def partial_sale(stack: EmbeddedStack) -> Callable[[int | None], str]:
    """A fresh healthy sale whose first ``times`` reads (every read: None) answer 206 without buyer and shipping."""

    def make(times: int | None) -> str:
        order = copy.deepcopy(stack.meli.order(TEMPLATE_ORDER))
        assert order is not None
        order["id"] = 2000009360000000 + next(_counter) * 10 + int(time.time()) % 7
        order["pack_id"] = None  # a sale of its own: a copy must not join the template's pack
        stack.meli.upsert_order(order)
        fault: dict[str, Any] = {
            "path": f"^/orders/{order['id']}$",
            "kind": "partial",
            "missing": ["buyer", "shipping"],
        }
        stack.meli.add_fault({**fault, "times": times} if times is not None else fault)
        return str(order["id"])

    return make


def pages_for(stack: EmbeddedStack, sale_id: str) -> list[dict[str, Any]]:
    return [m for m in stack.help_desk_messages() if m.get("sale_id") == sale_id]


def relink(stack: EmbeddedStack, http: httpx.Client, sale_id: str) -> dict[str, Any]:
    started = http.post(f"/connections/{C}/sales/{sale_id}/relink")
    assert started.status_code == 202, started.text
    stack.wait(started.json()["execution_id"])
    state: dict[str, Any] = http.get(f"/connections/{C}/sales/{sale_id}").json()
    return state


def assert_imported_whole(state: dict[str, Any]) -> None:
    record = state["record"]
    assert record["buyer_id"] == 1944693001 and record["shipment_id"] == "44031010011"


def test_a_relink_that_reads_a_partial_order_twice_imports_it_whole_on_attempt_two(
    stack: EmbeddedStack, http: httpx.Client, partial_sale: Callable[[int | None], str]
) -> None:
    # The API's relink reads it first (is it a cart's sale?), then Verify reads it partial, so does the first relink
    # attempt; the second reads it whole.
    sale = partial_sale(3)
    state = relink(stack, http, sale)
    assert (state["outcome"], state["attempts"]) == ("reflected", 2), state
    assert_imported_whole(state)
    assert stack.meli.count(path_regex=f"^/orders/{sale}$", status=206) == 3
    assert pages_for(stack, sale) == []


def test_an_order_ml_never_answers_whole_is_escalated_with_the_partial_history(
    stack: EmbeddedStack, http: httpx.Client, partial_sale: Callable[[int | None], str]
) -> None:
    sale = partial_sale(None)
    state = relink(stack, http, sale)
    assert (state["outcome"], state["reason"], state["attempts"]) == ("escalated", "retries_exhausted", 3), state
    assert "record" not in state
    (page,) = pages_for(stack, sale)
    assert [h["error_type"] for h in page["history"]] == ["marketplace_partial_order"] * 3
    assert "buyer, shipping" in page["history"][0]["message"]


def test_bulk_hands_a_partial_order_to_the_state_machine_which_imports_it_whole(
    stack: EmbeddedStack, http: httpx.Client, partial_sale: Callable[[int | None], str]
) -> None:
    sale = partial_sale(1)  # the worker's one read is partial; the state machine's reads are whole
    submitted = http.post(f"/connections/{C}/reprocessing-jobs", json={"sale_ids": [sale]}).json()
    view = wait_for_job(http, submitted["job_id"])
    assert view["status"] == "completed", view
    (item,) = view["items"]
    assert (item["outcome"], item["attempts"]) == ("reflected", 2), item
    state = http.get(f"/connections/{C}/sales/{sale}").json()
    assert_imported_whole(state)
    assert pages_for(stack, sale) == []


@pytest.mark.parametrize(
    ("sale_id", "reason"),
    [
        (CONFIRMED_APPROVED, "payment_not_verified"),
        (UNFULFILLED, "sale_cancelled"),
        (FRAUD_RISK, "sale_cancelled"),
    ],
)
def test_a_relink_of_a_sale_that_is_not_paid_or_never_fulfilled_settles_in_verify(
    stack: EmbeddedStack, http: httpx.Client, sale_id: str, reason: str
) -> None:
    state = relink(stack, http, sale_id)
    assert (state["outcome"], state["reason"], state["attempts"]) == ("not_reflectable", reason, 0), state
    assert "record" not in state and state["seller_action"]
    assert pages_for(stack, sale_id) == []
