"""Mercado Libre as it really is (issue 13, items 3 and 8): kits and shipments, through the real API handler (whole
API Gateway events) and the real bulk worker, the simulated Mercado Libre over HTTP and moto tables created from
template.yaml.

- Kits (reference/meli-api.md §1, §13, kits-virtuales): a kit sold creates one order per component, tagged
  ``bundle_component``, in one pack; ``order_items[].bundle.parent_item.id`` names the kit listing, and
  GET /orders/{id}/bundle lists the kit's orders. Only those sibling orders are exempt from "several orders in a
  pack = cart": a pack that also holds another order is a cart. A component's product link may be the kit listing's.
- Shipments (§4, §13): GET /shipments/{id}/items names every order a shipment carries (a cart's shipment carries
  several; an older shipment payload names only one ``order_id`` and no pack); ``logistic.type`` is kept on the
  identifier's answer.

The cases are this file's own scenario data (the default scenario plus the orders below), so ``make run``'s counts
do not change.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from devstack.simulator.scenario import Scenario
from devstack.simulator.server import MeliSimulator
from tests.api.reads import check, verification
from tests.bulk.test_bulk import job, queued, run_worker, submit
from tests.conftest import DEFAULT_SCENARIO, Aws, default_scenario_data

C = "mla-main"
TEMPLATE = 2000009101000011  # the default scenario's healthy sale: paid, its listing linked
LINKED = "MLA1100000001"  # linked to an active, synced product in mla-main

# A kit of two components, alone in its pack. The first component's listing is linked; the second's is not, but the
# kit listing is.
KIT_PACK, KIT_A, KIT_B = 2000006141000010, 2000009141000011, 2000009141000028
KIT_LISTING, KIT_B_LISTING = "MLA1141000099", "MLA1141000002"
# A kit of two components and an ordinary order in one pack: a cart.
MIXED_PACK, MIXED_KIT_A, MIXED_KIT_B, MIXED_PLAIN = (
    2000006142000017,
    2000009142000014,
    2000009142000021,
    2000009142000038,
)
MIXED_KIT_LISTING = "MLA1142000099"
# A cart of two orders whose shipment is an older payload: order_id names the first order only, no pack_id.
CART_PACK, CART_A, CART_B = 2000006143000012, 2000009143000011, 2000009143000028
CART_SHIPMENT, CART_TRACKING = 44031043001, "MEL44031043001FMXDF01"

Api = Any


def _order(order_id: int, pack_id: int, item_id: str, *, kit: str | None = None, shipment: int | None = None) -> Any:
    data = json.loads(DEFAULT_SCENARIO.read_text())
    order = copy.deepcopy(next(o for o in data["orders"] if o["id"] == TEMPLATE))
    order["id"], order["pack_id"] = order_id, pack_id
    order["shipping"] = {"id": shipment or int(str(pack_id)[-11:])}
    order["order_items"][0]["item"]["id"] = item_id
    order["order_items"][0]["item"]["seller_sku"] = None
    for payment in order["payments"]:
        payment["order_id"] = order_id
    order["tags"] = ["pack_order", "paid", "not_delivered"]
    if kit is not None:
        order["tags"].append("bundle_component")
        order["order_items"][0]["bundle"] = {"parent_item": {"id": kit, "user_product_id": None}, "components": None}
    return order


def _pack(pack_id: int, *order_ids: int) -> dict[str, Any]:
    return {"id": pack_id, "orders": [{"id": o} for o in order_ids], "status": "released", "status_detail": None}


@pytest.fixture
def scenario() -> Scenario:
    data = default_scenario_data()
    data["orders"] += [
        _order(KIT_A, KIT_PACK, LINKED, kit=KIT_LISTING),
        _order(KIT_B, KIT_PACK, KIT_B_LISTING, kit=KIT_LISTING),
        _order(MIXED_KIT_A, MIXED_PACK, LINKED, kit=MIXED_KIT_LISTING),
        _order(MIXED_KIT_B, MIXED_PACK, LINKED, kit=MIXED_KIT_LISTING),
        _order(MIXED_PLAIN, MIXED_PACK, LINKED),
        _order(CART_A, CART_PACK, LINKED, shipment=CART_SHIPMENT),
        _order(CART_B, CART_PACK, LINKED, shipment=CART_SHIPMENT),
    ]
    data["packs"] += [
        _pack(KIT_PACK, KIT_A, KIT_B),
        _pack(MIXED_PACK, MIXED_KIT_A, MIXED_KIT_B, MIXED_PLAIN),
        _pack(CART_PACK, CART_A, CART_B),
    ]
    data["products"].append({"connection_id": C, "item_id": KIT_LISTING, "sku": "KIT-AUR-2"})
    data["shipments"].append(
        {
            "id": CART_SHIPMENT,
            "status": "ready_to_ship",
            "substatus": "in_warehouse",
            "logistic": {"direction": "forward", "mode": "me2", "type": "fulfillment"},
            "tracking_number": CART_TRACKING,
            "order_id": CART_A,  # an older payload: one order and no pack_id
        }
    )
    return Scenario.model_validate(data)


# --- 3. kits ----------------------------------------------------------------------------------------------------------


def test_ml_lists_a_kits_orders(meli: MeliSimulator) -> None:
    token = meli.tokens(C)[0]
    answer = httpx.get(f"{meli.url}/orders/{KIT_B}/bundle", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 200
    (bundle,) = answer.json()["bundles"]
    assert bundle["pack_id"] == KIT_PACK
    assert [(k["order_id"], k["parent_item_id"]) for k in bundle["kit_orders"]] == [
        (KIT_A, KIT_LISTING),
        (KIT_B, KIT_LISTING),
    ]


def test_a_kit_alone_in_its_pack_is_not_a_cart_and_its_product_may_be_the_kit_listing(call_api: Api) -> None:
    report = verification(call_api, KIT_B)
    assert check(report, "not_cart_sale")["ok"] is True
    assert check(report, "products")["ok"] is True  # KIT_B_LISTING is not linked; the kit listing is
    assert report["lines"][0]["item_id"] == KIT_B_LISTING and report["lines"][0]["sku"] == "KIT-AUR-2"
    assert report["next_action"] == "relink"


@pytest.mark.parametrize("sale_id", [MIXED_KIT_A, MIXED_PLAIN])
def test_a_pack_holding_a_kit_and_another_order_is_a_cart(call_api: Api, sale_id: int) -> None:
    report = verification(call_api, sale_id)
    assert (report["next_action"], report.get("reason")) == ("relink", None)  # the cart, reprocessed whole
    cart = check(report, "cart")
    assert cart["ok"] is True and str(MIXED_PLAIN if sale_id != MIXED_PLAIN else MIXED_KIT_A) in cart["detail"]
    assert sorted(report["pack_sale_ids"]) == sorted(map(str, (MIXED_KIT_A, MIXED_KIT_B, MIXED_PLAIN)))
    assert [o["sale_id"] for o in report["cart"]["orders"]] == [str(MIXED_KIT_A), str(MIXED_KIT_B), str(MIXED_PLAIN)]


def test_bulk_imports_a_kit_alone_and_a_cart_holding_a_kit_as_one_record(call_api: Api, aws: Aws) -> None:
    ids = [str(s) for s in (KIT_A, KIT_B, MIXED_KIT_A, MIXED_KIT_B, MIXED_PLAIN)]
    _, submitted = submit(call_api, ids)
    assert run_worker(aws, queued(aws)) == {"batchItemFailures": []}
    view = job(call_api, submitted["job_id"])
    outcomes = {item["sale_id"]: (item["outcome"], item.get("reason")) for item in view["items"]}
    assert outcomes == {
        str(KIT_A): ("reflected", None),
        str(KIT_B): ("reflected", None),
        **dict.fromkeys(map(str, (MIXED_KIT_A, MIXED_KIT_B, MIXED_PLAIN)), ("reflected", None)),
    }
    status, state, _ = call_api("GET", f"/connections/{C}/sales/{KIT_B}")
    assert status == 200, state
    line = state["record"]["lines"][0]
    assert (line["item_id"], line["sku"]) == (KIT_B_LISTING, "KIT-AUR-2")  # linked through the kit listing
    # The cart with a kit inside: one record keyed by the pack id, holding the kit's components and the other order.
    status, pack, _ = call_api("GET", f"/connections/{C}/packs/{MIXED_PACK}")
    assert status == 200, pack
    assert (pack["outcome"], pack["sale_ids"]) == ("reflected", [str(MIXED_KIT_A), str(MIXED_KIT_B), str(MIXED_PLAIN)])
    record = pack["record"]
    assert (record["sale_id"], record["pack_id"]) == (str(MIXED_PACK), str(MIXED_PACK))
    assert [line["sale_id"] for line in record["lines"]] == [str(MIXED_KIT_A), str(MIXED_KIT_B), str(MIXED_PLAIN)]
    rows = [r for r in aws.table("SALES_TABLE").scan()["Items"] if r.get("record")]
    assert sum(str(MIXED_PLAIN) in str(r["record"]) for r in rows) == 1  # one record holds the cart


# --- 8. shipments -----------------------------------------------------------------------------------------------------


def test_a_shipment_id_names_every_order_it_carries_and_its_logistic_type(call_api: Api, meli: MeliSimulator) -> None:
    report = verification(call_api, CART_SHIPMENT)
    assert (report["next_action"], report["reason"]) == ("blocked", "not_a_sale_id")
    identifier = report["identifier"]
    assert identifier["kind"] == "shipment"
    assert identifier["sale_ids"] == [str(CART_A), str(CART_B)]
    assert identifier["logistic_type"] == "fulfillment"
    assert "fulfillment" in identifier["detail"]
    assert meli.count(path_regex=f"^/shipments/{CART_SHIPMENT}/items$", status=200) == 1
    # The tracking number it learnt names both sales too.
    tracking = verification(call_api, CART_TRACKING)["identifier"]
    assert tracking["kind"] == "tracking" and tracking["sale_ids"] == [str(CART_A), str(CART_B)]


def test_bulk_names_every_order_of_a_shipment(call_api: Api, aws: Aws) -> None:
    _, submitted = submit(call_api, [str(CART_SHIPMENT)])
    assert run_worker(aws, queued(aws)) == {"batchItemFailures": []}
    (item,) = job(call_api, submitted["job_id"])["items"]
    assert (item["outcome"], item["reason"]) == ("not_reflectable", "not_a_sale_id")
    status, state, _ = call_api("GET", f"/connections/{C}/sales/{CART_SHIPMENT}")
    assert status == 200, state
    assert (state["identifier_kind"], state["sale_ids"]) == ("shipment", [str(CART_A), str(CART_B)])
    assert "fulfillment" in state["detail"]


def test_a_shipment_without_items_falls_back_on_its_order_id(call_api: Api, meli: MeliSimulator) -> None:
    meli.add_fault({"method": "GET", "path": f"^/shipments/{CART_SHIPMENT}/items$", "kind": "status", "status": 404})
    identifier = verification(call_api, CART_SHIPMENT)["identifier"]
    assert (identifier["kind"], identifier["sale_ids"]) == ("shipment", [str(CART_A)])
