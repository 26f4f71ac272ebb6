"""Mercado Libre as it really is (issue 13, items 1, 2 and 6): what an order's status, tags and HTTP status mean,
through the real API handler (whole API Gateway events) and the real bulk worker, the simulated Mercado Libre over
HTTP and moto tables created from template.yaml.

- `confirmed` is ML's initial status "even if it is still unpaid", and a sale the seller marked "not completed" shows
  `confirmed` while ML's UI says cancelled: an approved payment on it proves nothing. Only `paid` is paid.
- Tag `unfulfilled` (refund to account money): the order stays `paid` but will never be fulfilled; to the seller it
  is a cancelled sale. Tag `fraud_risk_detected`: the order must be cancelled.
- 206 with `X-Content-Missing`: the answer lacks those sections. Only a complete order is imported; a partial one
  is a transient failure (`marketplace_partial_order`), and the sale is imported whole once ML answers whole.

Sale ids are the default scenario's (scenarios/README.md, cases p to s).
"""

from __future__ import annotations

from typing import Any

import pytest

from devstack.simulator.scenario import Scenario
from devstack.simulator.server import MeliSimulator
from tests.api.reads import check, sale, verification
from tests.bulk.test_bulk import job, queued, run_worker, submit
from tests.conftest import Aws, default_scenario_data

C = "mla-main"
CONFIRMED_APPROVED = "2000009131000016"  # case p: status confirmed, payment approved
UNFULFILLED = "2000009132000013"  # case q: status paid, tag unfulfilled, payment tagged refund_account_money
FRAUD_RISK = "2000009133000010"  # case r: status paid, tag fraud_risk_detected
PARTIAL_ONCE = "2000009136000014"  # case s: GET /orders/{id} answers 206 without buyer and shipping, once
REFLECTABLE = "2000009101000011"
LISTED_TIMEOUT = "2000009109000015"  # case i: in the error list as marketplace_timeout

Api = Any


@pytest.fixture
def scenario() -> Scenario:
    """The default scenario without latency and quota, with cases p and q also in the platform's error list (the
    platform's own import failed), so that a person can resync them."""
    data = default_scenario_data()
    data["sale_errors"] += [
        {"connection_id": C, "sale_id": sale, "error_type": "import_failed", "message": "Import failed"}
        for sale in (CONFIRMED_APPROVED, UNFULFILLED)
    ]
    return Scenario.model_validate(data)


def table_items(aws: Aws) -> dict[str, int]:
    return {name: len(aws.table(name).scan()["Items"]) for name in ("SALES_TABLE", "SALE_ERRORS_TABLE")}


# --- 1. confirmed + an approved payment is not paid ------------------------------------------------------------------


def test_a_confirmed_sale_with_an_approved_payment_is_not_paid(call_api: Api, meli: MeliSimulator) -> None:
    order = meli.order(int(CONFIRMED_APPROVED))
    assert order is not None and order["status"] == "confirmed"
    assert [p["status"] for p in order["payments"]] == ["approved"]
    report = verification(call_api, CONFIRMED_APPROVED)
    assert (report["next_action"], report["reason"]) == ("blocked", "payment_not_verified")
    payment = check(report, "payment_verified")
    assert payment["ok"] is False
    assert "confirmed" in payment["detail"] and "not completed" in payment["detail"]
    assert "only status paid counts" in report["seller_action"]


def test_resync_of_a_confirmed_sale_never_imports_it(call_api: Api, aws: Aws) -> None:
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{CONFIRMED_APPROVED}/resync")
    assert status == 200, body
    assert (body["outcome"], body["reason"]) == ("not_reflectable", "payment_not_verified")
    state = sale(call_api, CONFIRMED_APPROVED)
    assert state["outcome"] == "not_reflectable" and "record" not in state
    assert aws.help_desk_messages() == []  # the seller (or ML) must act: never escalated


# --- 2. unfulfilled and fraud_risk_detected are cancelled sales ---------------------------------------------------


@pytest.mark.parametrize(
    ("sale_id", "words"),
    [(UNFULFILLED, "tagged unfulfilled"), (FRAUD_RISK, "fraud risk")],
)
def test_a_paid_sale_that_will_never_be_fulfilled_is_cancelled(
    call_api: Api, meli: MeliSimulator, sale_id: str, words: str
) -> None:
    order = meli.order(int(sale_id))
    assert order is not None and order["status"] == "paid"  # ML keeps it paid
    report = verification(call_api, sale_id)
    assert (report["next_action"], report["reason"]) == ("blocked", "sale_cancelled")
    cancelled = check(report, "sale_not_cancelled")
    assert cancelled["ok"] is False and words in cancelled["detail"]
    assert check(report, "payment_verified")["ok"] is True


def test_resync_of_an_unfulfilled_sale_never_imports_it(call_api: Api, aws: Aws) -> None:
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{UNFULFILLED}/resync")
    assert status == 200, body
    assert (body["outcome"], body["reason"]) == ("not_reflectable", "sale_cancelled")
    assert "record" not in sale(call_api, UNFULFILLED)
    assert aws.help_desk_messages() == []


def test_bulk_settles_confirmed_unfulfilled_and_fraud_sales_without_importing_them(call_api: Api, aws: Aws) -> None:
    ids = [CONFIRMED_APPROVED, UNFULFILLED, FRAUD_RISK, REFLECTABLE]
    _, submitted = submit(call_api, ids)
    assert run_worker(aws, queued(aws)) == {"batchItemFailures": []}
    view = job(call_api, submitted["job_id"])
    assert view["status"] == "completed"
    outcomes = {i["sale_id"]: (i["outcome"], i.get("reason")) for i in view["items"]}
    assert outcomes == {
        CONFIRMED_APPROVED: ("not_reflectable", "payment_not_verified"),
        UNFULFILLED: ("not_reflectable", "sale_cancelled"),
        FRAUD_RISK: ("not_reflectable", "sale_cancelled"),
        REFLECTABLE: ("reflected", None),
    }
    assert all(i["attempts"] == 0 for i in view["items"] if i["sale_id"] != REFLECTABLE)
    assert all("record" not in sale(call_api, s) for s in ids[:3])
    assert aws.help_desk_messages() == []


# --- 6. a 206 partial order is imported only whole ----------------------------------------------------------------


def test_a_partial_order_answers_503_naming_the_missing_sections_and_writes_nothing(
    call_api: Api, aws: Aws, meli: MeliSimulator
) -> None:
    before = table_items(aws)
    status, body, headers = call_api("GET", f"/connections/{C}/sales/{PARTIAL_ONCE}/verification")
    assert status == 503, body
    assert body["error"] == "marketplace_partial_order" and body["retryable"] is True
    assert "buyer, shipping" in body["message"] and "try again" in body["message"]
    assert headers["Retry-After"] == "30"
    assert meli.count(path_regex=f"^/orders/{PARTIAL_ONCE}$", status=206) == 1
    assert table_items(aws) == before
    # ML answers whole the next time: the sale is fine, and a relink will import it.
    report = verification(call_api, PARTIAL_ONCE)
    assert report["next_action"] == "relink" and all(c["ok"] for c in report["checks"])


def test_a_resync_that_reads_a_partial_order_fails_and_the_next_imports_it_whole(
    call_api: Api, aws: Aws, meli: MeliSimulator
) -> None:
    meli.add_fault(
        {"path": f"^/orders/{LISTED_TIMEOUT}$", "kind": "partial", "missing": ["buyer", "shipping"], "times": 1}
    )
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{LISTED_TIMEOUT}/resync")
    assert status == 200, body
    assert (body["outcome"], body["reason"]) == ("escalated", "resync_failed")  # seed step 3: still failing
    state = sale(call_api, LISTED_TIMEOUT)
    assert "record" not in state  # never a sale without its buyer and shipping
    entry = state["error_entry"]
    assert (entry["error_type"], entry["retryable"]) == ("marketplace_partial_order", True)
    assert "buyer, shipping" in entry["message"]
    (page,) = aws.help_desk_messages()
    assert [h["error_type"] for h in page["history"]] == ["marketplace_timeout", "marketplace_partial_order"]
    # The person resyncs again; ML answers whole now; the stored sale has its buyer and its shipment.
    status, again, _ = call_api("POST", f"/connections/{C}/sales/{LISTED_TIMEOUT}/resync")
    assert (status, again["outcome"]) == (200, "reflected"), again
    record = sale(call_api, LISTED_TIMEOUT)["record"]
    assert record["buyer_id"] == 1944693556 and record["shipment_id"] == "44031023180"


def test_bulk_hands_a_partial_order_over_and_a_later_complete_read_imports_it_whole(
    call_api: Api, aws: Aws, meli: MeliSimulator
) -> None:
    _, first = submit(call_api, [PARTIAL_ONCE])
    run_worker(aws, queued(aws))
    view = job(call_api, first["job_id"])
    (item,) = view["items"]
    # Transient: the relink state machine takes over with this attempt counted (it retries later).
    assert (item["outcome"], item["attempts"]) == ("in_progress", 1), view
    state = sale(call_api, PARTIAL_ONCE)
    assert "record" not in state
    assert state["error_entry"]["error_type"] == "marketplace_partial_order"
    assert state["error_entry"]["retryable"] is True
    assert meli.count(path_regex=f"^/orders/{PARTIAL_ONCE}$", status=206) == 1
    # A later read (here: the same sale in another job) gets the whole order and imports it whole.
    _, second = submit(call_api, [PARTIAL_ONCE])
    run_worker(aws, queued(aws))
    (again,) = job(call_api, second["job_id"])["items"]
    assert again["outcome"] == "reflected", again
    record = sale(call_api, PARTIAL_ONCE)["record"]
    assert record["buyer_id"] == 1944693926 and record["shipment_id"] == "44031036065"


def test_the_error_sweep_retries_a_partial_order_later_and_imports_it_whole(
    call_api: Api, aws: Aws, meli: MeliSimulator
) -> None:
    from tests.schedules.test_schedules import put_entry, run_of, sweep

    put_entry(PARTIAL_ONCE)  # listed by the platform (a timeout), due at once
    first = run_of(sweep())
    assert PARTIAL_ONCE in first["sale_ids"]
    run_worker(aws, queued(aws))
    # The sweep's retry read the order partial: deferred, with the failure recorded and a later retry due.
    _, view, _ = call_api("GET", f"/connections/{C}/reprocessing-jobs/{first['job_id']}")
    item = next(i for i in view["items"] if i["sale_id"] == PARTIAL_ONCE)
    assert (item["outcome"], item["deferred"]) == ("in_progress", True), item
    state = sale(call_api, PARTIAL_ONCE)
    assert "record" not in state
    entry = state["error_entry"]
    assert (entry["error_type"], entry["retryable"], entry["attempts"]) == ("marketplace_partial_order", True, 2)
    assert entry["next_retry_at"]
    # Its backoff passed: the next sweep retries it; ML answers whole now.
    aws.table("SALE_ERRORS_TABLE").update_item(
        Key={"connection_id": C, "sale_id": PARTIAL_ONCE},
        UpdateExpression="SET next_retry_at = :due",
        ExpressionAttributeValues={":due": "2000-01-01T00:00:00.000000+00:00"},
    )
    second = run_of(sweep())
    assert PARTIAL_ONCE in second["sale_ids"]
    run_worker(aws, queued(aws))
    state = sale(call_api, PARTIAL_ONCE)
    assert state["outcome"] == "reflected" and "error_entry" not in state
    assert state["record"]["buyer_id"] == 1944693926 and state["record"]["shipment_id"] == "44031036065"
