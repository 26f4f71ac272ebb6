"""The real statemachine/relink.asl.json, executed by moto with every Lambda task running the real handler
in-process, against the simulated Mercado Libre. Waits are 0 s by substitution and Retry sleeps are skipped.

The stack here sets MeliMaxTries=1 so that one injected ML failure fails exactly one task: the arithmetic of
attempts is then readable in each test.
"""

from __future__ import annotations

import copy
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import httpx
import pytest

from devstack.stack import EmbeddedStack
from tests.stack.support import list_sale, running_stack, stack_scenario

pytestmark = pytest.mark.stack

C = "mla-main"
TEMPLATE_ORDER = "2000009101000011"  # a healthy paid sale whose product is linked, active and synced
CANCELLED, PAYMENT_REQUIRED, CART_SALE, NO_PRODUCT = (
    "2000009103000012",
    "2000009104000017",
    "2000009105000011",
    "2000009106000014",
)
CART_PACK = "2000006105000019"
LISTED_TIMEOUT = "2000009109000015"


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with running_stack(stack_scenario(), meli_max_tries=1) as running:
        yield running


_counter = iter(range(1, 10_000))


@pytest.fixture
def new_sale(stack: EmbeddedStack) -> Callable[[], str]:
    """A fresh healthy sale in the simulator, so each test owns its sale."""

    def make() -> str:
        order = copy.deepcopy(stack.meli.order(int(TEMPLATE_ORDER)))
        assert order is not None
        order["id"] = 2000009300000000 + next(_counter) * 10 + int(time.time()) % 7
        order["pack_id"] = None  # a sale of its own: a copy must not join the template's pack
        order["shipping"] = {"id": None}
        stack.meli.upsert_order(order)
        return str(order["id"])

    return make


def run(stack: EmbeddedStack, sale_id: str, **extra: Any) -> dict[str, Any]:
    return stack.run_execution({"connection_id": C, "sale_id": sale_id, **extra}, name=f"t-{uuid.uuid4().hex[:12]}")


def task_names(stack: EmbeddedStack, execution_arn: str) -> list[str]:
    """The Lambda tasks the execution scheduled, in order."""
    sfn = stack.aws.client("stepfunctions")
    events = sfn.get_execution_history(executionArn=execution_arn, maxResults=1000)["events"]
    names = []
    for event in events:
        if event["type"] == "TaskStateEntered":
            names.append(event["stateEnteredEventDetails"]["name"])
    return names


def fail_orders(stack: EmbeddedStack, sale_id: str, times: int | None) -> None:
    stack.meli.add_fault({"path": f"^/orders/{sale_id}$", "kind": "status", "status": 503, "times": times})


def sales_items(stack: EmbeddedStack, sale_id: str) -> int:
    table = stack.aws.client("dynamodb")
    name = stack.settings().sales_table
    got = table.query(
        TableName=name,
        KeyConditionExpression="connection_id = :c AND sale_id = :s",
        ExpressionAttributeValues={":c": {"S": C}, ":s": {"S": sale_id}},
    )
    return int(got["Count"])


def pages_for(stack: EmbeddedStack, sale_id: str) -> list[dict[str, Any]]:
    """Every help-desk page sent so far for the sale."""
    return [m for m in stack.help_desk_messages() if m.get("sale_id") == sale_id]


# --- success on the first, second and third attempt ------------------------------------------------------------------


@pytest.mark.parametrize(("failures", "attempts"), [(0, 1), (2, 2), (3, 3)])
def test_relink_succeeds_on_attempt(
    stack: EmbeddedStack, new_sale: Callable[[], str], failures: int, attempts: int
) -> None:
    # Given a sale whose first `failures` reads fail (the first one fails verification, the rest fail relinks)
    sale = new_sale()
    if failures:
        fail_orders(stack, sale, failures)
    # When the state machine runs
    result = run(stack, sale)
    # Then it succeeds on the expected attempt, stores the sale once, and pages nobody
    assert result["status"] == "SUCCEEDED"
    assert result["output"] == {"connection_id": C, "sale_id": sale, "outcome": "reflected", "attempts": attempts}
    assert task_names(stack, result["executionArn"]).count("Relink") == attempts
    assert sales_items(stack, sale) == 1
    assert pages_for(stack, sale) == []


def test_three_transient_failures_escalate_once_with_the_history(
    stack: EmbeddedStack, new_sale: Callable[[], str]
) -> None:
    sale = new_sale()
    fail_orders(stack, sale, None)
    result = run(stack, sale)
    assert result["status"] == "SUCCEEDED"
    assert result["output"] == {
        "connection_id": C,
        "sale_id": sale,
        "outcome": "escalated",
        "reason": "retries_exhausted",
        "attempts": 3,
    }
    assert task_names(stack, result["executionArn"]).count("Relink") == 3
    pages = pages_for(stack, sale)
    assert len(pages) == 1
    page = pages[0]
    assert page["attempts"] == 3 and page["execution_id"] == result["executionArn"]
    assert [h["error_type"] for h in page["history"]] == ["marketplace_unavailable"] * 3
    assert page["episode"] == 1 and page["dedup_key"] == f"{C}#{sale}#1"
    # A console rerun of the settled sale is a new episode: still failing, it pages once more, for episode 2.
    rerun = run(stack, sale)
    assert rerun["output"]["outcome"] == "escalated"
    assert [p["episode"] for p in pages_for(stack, sale)] == [1, 2]  # the inbox keeps every page delivered so far
    # And once ML recovers, a rerun reflects it and clears the error entry.
    stack.meli.clear_faults()
    healed = run(stack, sale)
    assert healed["output"]["outcome"] == "reflected"
    assert stack.service().stores.errors.get(C, sale) is None


@pytest.mark.parametrize(
    ("sale_id", "reason"),
    [
        (CANCELLED, "sale_cancelled"),
        (PAYMENT_REQUIRED, "payment_not_verified"),
        (NO_PRODUCT, "product_not_found"),
        ("2000006114000011", "not_a_sale_id"),  # a single sale's pack (a cart's pack is the cart: below)
        ("2000009999999999", "sale_not_found"),
    ],
)
def test_blocked_sales_end_without_attempts_or_escalation(stack: EmbeddedStack, sale_id: str, reason: str) -> None:
    result = run(stack, sale_id)
    assert result["status"] == "SUCCEEDED"
    assert result["output"] == {
        "connection_id": C,
        "sale_id": sale_id,
        "outcome": "not_reflectable",
        "reason": reason,
        "attempts": 0,
    }
    tasks = task_names(stack, result["executionArn"])
    assert tasks == ["Verify"]
    assert pages_for(stack, sale_id) == []


def test_a_cart_sale_is_answered_with_its_pack_and_the_pack_s_sales(stack: EmbeddedStack) -> None:
    """A console run by one sale id of a cart reprocesses the whole cart (its attempt writes the cart's row, keyed by
    the pack id) and the sale follows the cart; a run by the pack id then finds the cart reflected."""
    cart_sales = sorted([CART_SALE, "2000009105000028"])
    result = run(stack, CART_SALE)
    assert result["status"] == "SUCCEEDED"
    assert (result["output"]["sale_id"], result["output"]["outcome"]) == (CART_SALE, "reflected")
    assert stack.api is not None
    state = httpx.get(f"{stack.api.url}/connections/{C}/sales/{CART_SALE}", timeout=10).json()
    assert (state["outcome"], state["pack_id"], sorted(state["sale_ids"])) == ("reflected", CART_PACK, cart_sales)
    assert state["record"]["sale_id"] == CART_PACK  # the cart's one record
    by_pack = stack.run_execution({"connection_id": C, "pack_id": CART_PACK}, name=f"t-{uuid.uuid4().hex[:12]}")
    assert by_pack["status"] == "SUCCEEDED"
    output = by_pack["output"]
    assert (output["pack_id"], sorted(output["sale_ids"]), output["outcome"]) == (
        CART_PACK,
        cart_sales,
        "already_reflected",
    )
    assert task_names(stack, by_pack["executionArn"]) == ["Verify"]


def test_a_listed_sale_is_resynced_once_then_escalated(stack: EmbeddedStack, new_sale: Callable[[], str]) -> None:
    # Given a listed sale whose verification passes but whose resync then hits ML failures
    sale = new_sale()
    list_sale(stack, sale, "marketplace_timeout", "Timeout reading order")

    def fail_after_verification(handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        def wrapped(event: Any, context: Any) -> Any:
            answer = handler(event, context)
            fail_orders(stack, sale, None)
            return answer

        return wrapped

    with stack.aws.runtime.intercept("VerifyFunction", fail_after_verification):
        result = run(stack, sale)
    stack.meli.clear_faults()
    assert result["output"] == {
        "connection_id": C,
        "sale_id": sale,
        "outcome": "escalated",
        "reason": "resync_failed",
        "attempts": 1,
    }
    assert task_names(stack, result["executionArn"]) == ["Verify", "Resync", "Escalate"]
    pages = pages_for(stack, sale)
    assert len(pages) == 1 and pages[0]["reason"] == "resync_failed"
    assert [h["error_type"] for h in pages[0]["history"]] == ["marketplace_timeout", "marketplace_unavailable"]


def test_a_listed_sale_resyncs_to_reflected(stack: EmbeddedStack) -> None:
    result = run(stack, LISTED_TIMEOUT)
    assert result["output"] == {"connection_id": C, "sale_id": LISTED_TIMEOUT, "outcome": "reflected", "attempts": 1}
    assert task_names(stack, result["executionArn"]) == ["Verify", "Resync"]


def test_a_console_rerun_after_success_is_already_reflected(stack: EmbeddedStack, new_sale: Callable[[], str]) -> None:
    sale = new_sale()
    first = run(stack, sale)
    again = run(stack, sale)
    assert first["output"]["outcome"] == "reflected"
    assert again["output"] == {"connection_id": C, "sale_id": sale, "outcome": "already_reflected", "attempts": 0}
    assert sales_items(stack, sale) == 1


def test_bulk_handover_counts_attempts_already_spent(stack: EmbeddedStack, new_sale: Callable[[], str]) -> None:
    sale = new_sale()
    fail_orders(stack, sale, None)
    result = run(stack, sale, attempts=2)
    assert result["output"]["outcome"] == "escalated" and result["output"]["attempts"] == 3
    assert task_names(stack, result["executionArn"]).count("Relink") == 1


def test_invalid_input_fails_the_execution_with_a_clear_cause(stack: EmbeddedStack) -> None:
    result = stack.run_execution({"connection_id": "nope", "sale_id": "123"}, name=f"t-{uuid.uuid4().hex[:8]}")
    assert result["status"] == "FAILED" and result["error"] == "InvalidInput"
    assert "Unknown connection 'nope'" in result["cause"]


# --- through the API, over HTTP ---------------------------------------------------------------------------------


def test_relink_over_http_reaches_a_terminal_outcome(stack: EmbeddedStack, new_sale: Callable[[], str]) -> None:
    sale = new_sale()
    assert stack.api is not None
    with httpx.Client(base_url=stack.api.url, timeout=10) as http:
        started = http.post(f"/connections/{C}/sales/{sale}/relink")
        assert started.status_code == 202, started.text
        execution = started.json()["execution_id"]
        stack.wait(execution)
        state = http.get(f"/connections/{C}/sales/{sale}").json()
        assert state["outcome"] == "reflected"
        assert state["latest_execution"]["execution_arn"] == execution
        assert state["latest_execution"]["status"] == "SUCCEEDED"
        again = http.post(f"/connections/{C}/sales/{sale}/relink")
        assert again.status_code == 200 and again.json()["outcome"] == "already_reflected"
