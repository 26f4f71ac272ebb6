"""Every row of DESIGN §1 for one sale, through the real API handler with whole API Gateway proxy events,
the simulated Mercado Libre over HTTP and moto tables created from template.yaml.

Sale ids are the default scenario's (scenarios/README.md lists each case).
"""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from devstack.simulator.server import MeliSimulator
from tests.conftest import SECRET_PREFIX, Aws

C = "mla-main"
REFLECTABLE = "2000009101000011"
ALREADY_REFLECTED = "2000009102000015"
CANCELLED = "2000009103000012"
PAYMENT_REQUIRED = "2000009104000017"
PAYMENT_IN_PROCESS = "2000009104000024"
CART_SALE, CART_OTHER, CART_PACK, CART_SHIPMENT = (
    "2000009105000011",
    "2000009105000028",
    "2000006105000019",
    "44031019128",
)
NO_PRODUCT, INACTIVE, NOT_SYNCED = "2000009106000014", "2000009107000011", "2000009108000018"
LISTED_TIMEOUT, LISTED_NOT_SYNCED = "2000009109000015", "2000009110000012"
TIMEOUT_TWICE, ALWAYS_503, RATE_LIMITED_ONCE = "2000009111000019", "2000009112000016", "2000009113000013"
SINGLE_ORDER_PACK_SALE, SINGLE_ORDER_PACK = "2000009114000010", "2000006114000011"
OTHER_SELLERS_SALE = "2000009120000013"
CONFIRMED_APPROVED, UNFULFILLED, FRAUD_RISK = "2000009131000016", "2000009132000013", "2000009133000010"
SHIPMENT, TRACKING = "44031010011", "MEL44031010011FMXDF01"
UNKNOWN_ID = "2000009999999999"

Api = Any


def verification(call_api: Api, sale_id: str, connection_id: str = C) -> dict[str, Any]:
    status, body, _ = call_api("GET", f"/connections/{connection_id}/sales/{sale_id}/verification")
    assert status == 200, body
    return dict(body)


def checks(report: dict[str, Any]) -> dict[str, bool]:
    return {c["name"]: c["ok"] for c in report["checks"]}


def table_items(aws: Aws) -> dict[str, int]:
    return {name: len(aws.table(name).scan()["Items"]) for name in ("SALES_TABLE", "SALE_ERRORS_TABLE")}


# --- verification: seed steps 1 and 2 ---------------------------------------------------------------------------


def test_a_healthy_unreflected_sale_needs_a_relink(call_api: Api) -> None:
    report = verification(call_api, REFLECTABLE)
    assert report["next_action"] == "relink"
    assert all(checks(report).values())
    assert report["reflected"] is False and report["in_error_list"] is False
    assert report["identifier"]["kind"] == "sale"
    assert report["lines"][0] == {
        "item_id": "MLA1100000001",
        "sku": report["lines"][0]["sku"],
        "linked": True,
        "active": True,
        "synced": True,
    }


def test_an_already_reflected_sale_needs_nothing(call_api: Api) -> None:
    report = verification(call_api, ALREADY_REFLECTED)
    assert report["reflected"] is True and report["next_action"] == "none"


@pytest.mark.parametrize(
    ("sale_id", "reason", "failing_check"),
    [
        (CANCELLED, "sale_cancelled", "sale_not_cancelled"),
        (PAYMENT_REQUIRED, "payment_not_verified", "payment_verified"),
        (PAYMENT_IN_PROCESS, "payment_not_verified", "payment_verified"),
        (CONFIRMED_APPROVED, "payment_not_verified", "payment_verified"),
        (UNFULFILLED, "sale_cancelled", "sale_not_cancelled"),
        (FRAUD_RISK, "sale_cancelled", "sale_not_cancelled"),
        (NO_PRODUCT, "product_not_found", "products"),
        (INACTIVE, "product_inactive", "products"),
        (NOT_SYNCED, "product_not_synced", "products"),
        (UNKNOWN_ID, "sale_not_found", "sale_id"),
        (OTHER_SELLERS_SALE, "sale_not_found", "sale_id"),
    ],
)
def test_a_blocked_sale_says_why_and_what_the_seller_must_do(
    call_api: Api, sale_id: str, reason: str, failing_check: str
) -> None:
    report = verification(call_api, sale_id)
    assert report["next_action"] == "blocked"
    assert report["reason"] == reason
    assert checks(report)[failing_check] is False
    assert report["seller_action"]


def test_a_cart_sale_lists_the_other_sales_of_its_pack(call_api: Api) -> None:
    report = verification(call_api, CART_SALE)
    assert report["pack_id"] == CART_PACK
    assert sorted(report["pack_sale_ids"]) == sorted([CART_SALE, CART_OTHER])


@pytest.mark.parametrize("identifier", [CART_SALE, CART_OTHER, CART_PACK])
def test_a_cart_is_checked_whole_and_relinked_whole(call_api: Api, identifier: str) -> None:
    """A cart sale (or the cart's pack id) is no longer blocked as cart_sale: the report checks the pack and every
    sale of it, each with the seed's checks, and says relink (the whole cart)."""
    report = verification(call_api, identifier)
    assert (report["next_action"], report.get("reason")) == ("relink", None)
    assert checks(report)["pack_released"] is True and checks(report)["cart_sales"] is True
    cart = report["cart"]
    assert (cart["pack_id"], cart["status"], cart["shipment_id"]) == (CART_PACK, "released", CART_SHIPMENT)
    assert [o["sale_id"] for o in cart["orders"]] == sorted([CART_SALE, CART_OTHER])
    for order in cart["orders"]:
        assert {c["name"]: c["ok"] for c in order["checks"]} == {
            "sale_not_cancelled": True,
            "payment_verified": True,
            "products": True,
        }
        assert order["lines"]


def test_a_pack_holding_a_single_sale_is_not_a_cart(call_api: Api) -> None:
    report = verification(call_api, SINGLE_ORDER_PACK_SALE)
    assert checks(report)["not_cart_sale"] is True
    assert report["next_action"] == "relink"


@pytest.mark.parametrize(
    ("identifier", "kind", "sale_ids"),
    [
        (SINGLE_ORDER_PACK, "pack", [SINGLE_ORDER_PACK_SALE]),
        (SHIPMENT, "shipment", [REFLECTABLE]),
        (CART_SHIPMENT, "shipment", [CART_SALE, CART_OTHER]),
        ("MLA1100000001", "unknown", []),
    ],
)
def test_another_identifier_is_named_with_the_sales_it_holds(
    call_api: Api, identifier: str, kind: str, sale_ids: list[str]
) -> None:
    report = verification(call_api, identifier)
    assert report["next_action"] == "blocked" and report["reason"] == "not_a_sale_id"
    assert report["identifier"]["kind"] == kind
    assert sorted(report["identifier"]["sale_ids"]) == sorted(sale_ids)


def test_a_tracking_number_is_recognised_and_resolved_once_its_shipment_was_seen(call_api: Api) -> None:
    before = verification(call_api, TRACKING)
    assert before["identifier"]["kind"] == "tracking" and before["identifier"]["sale_ids"] == []
    verification(call_api, SHIPMENT)  # the service learns the shipment's tracking number
    after = verification(call_api, TRACKING.lower())
    assert after["identifier"]["kind"] == "tracking" and after["identifier"]["sale_ids"] == [REFLECTABLE]


# --- the marketplace misbehaving ----------------------------------------------------------------------------------


def test_ml_timeouts_then_success(call_api: Api, meli: MeliSimulator) -> None:
    report = verification(call_api, TIMEOUT_TWICE)
    assert report["next_action"] == "relink"
    assert meli.count(method="GET", path_regex=f"^/orders/{TIMEOUT_TWICE}$") == 3


def test_ml_rate_limit_then_success(call_api: Api, meli: MeliSimulator) -> None:
    report = verification(call_api, RATE_LIMITED_ONCE)
    assert report["next_action"] == "relink"
    assert meli.count(path_regex=f"^/orders/{RATE_LIMITED_ONCE}$", status=429) == 1


def test_ml_5xx_answers_503_and_writes_nothing(call_api: Api, aws: Aws, meli: MeliSimulator) -> None:
    before = table_items(aws)
    status, body, headers = call_api("GET", f"/connections/{C}/sales/{ALWAYS_503}/verification")
    assert status == 503
    assert body["error"] == "marketplace_unavailable" and "try again" in body["message"]
    assert headers["Retry-After"] == "30"
    assert meli.count(path_regex=f"^/orders/{ALWAYS_503}$", status=503) == 3
    assert table_items(aws) == before


def test_an_expired_token_is_refreshed_once_and_persisted(call_api: Api, meli: MeliSimulator) -> None:
    old_access, old_refresh = meli.tokens(C)
    meli.expire_token(C)
    report = verification(call_api, REFLECTABLE)
    assert report["next_action"] == "relink"
    assert meli.count(method="POST", path_regex="^/oauth/token$") == 1
    stored = json.loads(boto3.client("secretsmanager").get_secret_value(SecretId=f"{SECRET_PREFIX}{C}")["SecretString"])
    assert stored["version"] == 1
    assert (stored["access_token"], stored["refresh_token"]) == meli.tokens(C)
    assert stored["refresh_token"] != old_refresh and stored["access_token"] != old_access


# --- resync: seed step 3 --------------------------------------------------------------------------------------------


def test_resync_of_a_listed_sale_reflects_it_and_clears_the_entry(call_api: Api) -> None:
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{LISTED_TIMEOUT}/resync")
    assert status == 200 and body["outcome"] == "reflected"
    status, state, _ = call_api("GET", f"/connections/{C}/sales/{LISTED_TIMEOUT}")
    assert status == 200 and state["outcome"] == "reflected"
    assert state["record"]["lines"][0]["item_id"] == "MLA1100000002"
    assert "error_entry" not in state
    status, again, _ = call_api("POST", f"/connections/{C}/sales/{LISTED_TIMEOUT}/resync")
    assert status == 200 and again["outcome"] == "already_reflected"


def test_resync_of_a_sale_blocked_by_its_product_keeps_it_listed_and_never_escalates(call_api: Api, aws: Aws) -> None:
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{LISTED_NOT_SYNCED}/resync")
    assert status == 200
    assert (body["outcome"], body["reason"]) == ("not_reflectable", "product_not_synced")
    assert "Synchronise" in body["seller_action"]
    _, errors, _ = call_api("GET", f"/connections/{C}/sale-errors", query={"error_type": "product_not_synced"})
    assert [e["sale_id"] for e in errors["items"]] == [LISTED_NOT_SYNCED]
    assert errors["items"][0]["retryable"] is False
    assert aws.help_desk_messages() == []


def test_resync_still_failing_escalates_once_per_episode(call_api: Api, aws: Aws, meli: MeliSimulator) -> None:
    meli.add_fault({"path": f"^/orders/{LISTED_TIMEOUT}$", "kind": "status", "status": 503})
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{LISTED_TIMEOUT}/resync")
    assert status == 200 and (body["outcome"], body["reason"], body["episode"]) == ("escalated", "resync_failed", 1)
    pages = aws.help_desk_messages()
    assert len(pages) == 1
    page = pages[0]
    assert (page["connection_id"], page["sale_id"], page["reason"]) == (C, LISTED_TIMEOUT, "resync_failed")
    assert [h["error_type"] for h in page["history"]] == ["marketplace_timeout", "marketplace_unavailable"]
    _, entry, _ = call_api("GET", f"/connections/{C}/sales/{LISTED_TIMEOUT}")
    assert entry["outcome"] == "escalated" and entry["error_entry"]["escalated"] is True
    # A person resyncing the escalated sale again reruns it: a new episode, which pages once if it fails too.
    status, again, _ = call_api("POST", f"/connections/{C}/sales/{LISTED_TIMEOUT}/resync")
    assert (again["outcome"], again["episode"]) == ("escalated", 2)
    pages = aws.help_desk_messages()
    assert [p["episode"] for p in pages] == [2] and len(pages[0]["history"]) == 3


def test_resync_of_a_sale_not_in_the_error_list_says_use_relink(call_api: Api, aws: Aws) -> None:
    before = table_items(aws)
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{REFLECTABLE}/resync")
    assert status == 409 and body["next_action"] == "relink" and "relink" in body["message"]
    assert table_items(aws) == before


# --- relink: seed step 4 --------------------------------------------------------------------------------------------


def test_relink_starts_one_execution_per_sale_and_request(call_api: Api) -> None:
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{REFLECTABLE}/relink")
    assert status == 202 and body["outcome"] == "in_progress"
    assert body["execution_id"].startswith("arn:aws:states:") and body["execution_id"].endswith(body["execution_name"])
    status, double_click, _ = call_api("POST", f"/connections/{C}/sales/{REFLECTABLE}/relink")
    assert status == 202 and double_click["execution_id"] == body["execution_id"]
    _, state, _ = call_api("GET", f"/connections/{C}/sales/{REFLECTABLE}")
    assert state["outcome"] == "in_progress"
    assert state["latest_execution"]["execution_arn"] == body["execution_id"]


def test_relink_with_the_same_idempotency_key_maps_to_the_same_execution(call_api: Api) -> None:
    key = {"Idempotency-Key": "backoffice-click-42"}
    _, first, _ = call_api("POST", f"/connections/{C}/sales/{INACTIVE}/relink", headers=key)
    _, second, _ = call_api("POST", f"/connections/{C}/sales/{INACTIVE}/relink", headers=key)
    assert first["execution_name"] == second["execution_name"]


def test_relink_of_an_already_reflected_sale_answers_200(call_api: Api) -> None:
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{ALREADY_REFLECTED}/relink")
    assert status == 200 and body == {"connection_id": C, "sale_id": ALREADY_REFLECTED, "outcome": "already_reflected"}


def test_relink_of_a_tracking_number_is_refused_with_its_kind(call_api: Api) -> None:
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{TRACKING}/relink")
    assert status == 422
    assert (body["reason"], body["identifier_kind"], body["outcome"]) == (
        "not_a_sale_id",
        "tracking",
        "not_reflectable",
    )


# --- reads --------------------------------------------------------------------------------------------------------


def test_a_sale_never_seen_is_404(call_api: Api) -> None:
    status, body, _ = call_api("GET", f"/connections/{C}/sales/{REFLECTABLE}")
    assert status == 404 and body["error"] == "sale_not_seen" and "verification" in body["message"]


def test_a_listed_sale_is_seen_before_any_work(call_api: Api) -> None:
    status, body, _ = call_api("GET", f"/connections/{C}/sales/{LISTED_TIMEOUT}")
    assert status == 200 and body["outcome"] == "pending"
    assert body["error_entry"]["error_type"] == "marketplace_timeout"


def test_the_error_list_filters_and_paginates(call_api: Api) -> None:
    status, page1, _ = call_api("GET", f"/connections/{C}/sale-errors", query={"limit": "1"})
    assert status == 200 and page1["count"] == 1 and page1["next_cursor"]
    _, page2, _ = call_api("GET", f"/connections/{C}/sale-errors", query={"limit": "1", "cursor": page1["next_cursor"]})
    ids = {page1["items"][0]["sale_id"], page2["items"][0]["sale_id"]}
    assert ids == {LISTED_TIMEOUT, LISTED_NOT_SYNCED}
    _, timeouts, _ = call_api("GET", f"/connections/{C}/sale-errors", query={"error_type": "marketplace_timeout"})
    assert [e["sale_id"] for e in timeouts["items"]] == [LISTED_TIMEOUT]
    assert timeouts["items"][0]["retryable"] is True and timeouts["items"][0]["history"]
