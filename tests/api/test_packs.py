"""Mercado Libre as it really is (issue 13, item 7): what a pack's status says about its sales, another seller's pack,
and shipment splits, through the real API handler (whole API Gateway events) and the real bulk worker, the simulated
Mercado Libre over HTTP and moto tables created from template.yaml.

- Pack status (reference/meli-api.md §3): `released` (paid), `error` (a recoverable failure), `pending_cancel` (an
  unrecoverable error), `cancelled`. A sale whose pack is cancelled or pending_cancel is `pack_cancelled`; one whose
  pack is in error is a transient failure, retried later.
- Another seller's pack answers 403 `forbidden` "The user has not access to the order" (the DOC-PACKS table: the
  order's refusal under the generic code): a fact about the pack, never a connection-level failure.
- Shipment split: the original order is cancelled with `cancel_detail.code: pack_splitted` and its pack cancelled
  with `status_detail: splitted`; new orders (in child packs whose `family_pack_id` names the old one) replace it.
  The old sale is `sale_superseded_by_split`, not `sale_cancelled`.

The cases are built on top of the default scenario here; scenarios/default.json is unchanged.
"""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from devstack.simulator.scenario import Scenario
from devstack.simulator.server import MeliSimulator
from tests.api.reads import check, sale, verification
from tests.bulk.test_bulk import job, queued, run_worker, submit
from tests.conftest import DEFAULT_SCENARIO, Aws, default_scenario_data

C = "mla-main"
OTHER_SELLER = 987654321  # mlb-second's seller
TEMPLATE = 2000009101000011  # the default scenario's healthy sale: paid, its listing linked
LINKED = "MLA1100000001"

CANCELLED_PACK, IN_CANCELLED_PACK = 2000006171000014, 2000009171000011
PENDING_CANCEL_PACK, IN_PENDING_CANCEL_PACK = 2000006172000011, 2000009172000018
ERROR_PACK, IN_ERROR_PACK = 2000006173000018, 2000009173000015
# A split: the old order (and its pack) cancelled, a new order in a child pack.
SPLIT_PACK, SPLIT_OLD = 2000006154000015, 2000009154000012
CHILD_PACK, SPLIT_NEW = 2000006155000012, 2000009155000019
OTHERS_PACK, OTHERS_ORDER = 2000006156000019, 2000009156000016

Api = Any


def _order(order_id: int, pack_id: int, *, seller: int | None = None) -> Any:
    data = json.loads(DEFAULT_SCENARIO.read_text())
    order = copy.deepcopy(next(o for o in data["orders"] if o["id"] == TEMPLATE))
    order["id"], order["pack_id"] = order_id, pack_id
    order["shipping"] = {"id": int(str(pack_id)[-11:])}
    order["order_items"][0]["item"]["id"] = LINKED
    for payment in order["payments"]:
        payment["order_id"] = order_id
    if seller is not None:
        order["seller"] = {"id": seller}
        for payment in order["payments"]:
            payment["collector"] = {"id": seller}
    return order


def _pack(pack_id: int, *order_ids: int, status: str = "released", detail: str | None = None) -> dict[str, Any]:
    return {
        "id": pack_id,
        "orders": [{"id": o} for o in order_ids],
        "status": status,
        "status_detail": detail,
        "family_pack_id": None,
    }


@pytest.fixture
def scenario() -> Scenario:
    data = default_scenario_data()
    split_old = _order(SPLIT_OLD, SPLIT_PACK)
    split_old["status"] = "cancelled"
    split_old["cancel_detail"] = {"group": None, "code": "pack_splitted", "description": None, "requested_by": None}
    child = _pack(CHILD_PACK, SPLIT_NEW)
    child["family_pack_id"] = SPLIT_PACK
    data["orders"] += [
        _order(IN_CANCELLED_PACK, CANCELLED_PACK),
        _order(IN_PENDING_CANCEL_PACK, PENDING_CANCEL_PACK),
        _order(IN_ERROR_PACK, ERROR_PACK),
        split_old,
        _order(SPLIT_NEW, CHILD_PACK),
        _order(OTHERS_ORDER, OTHERS_PACK, seller=OTHER_SELLER),
    ]
    data["packs"] += [
        _pack(CANCELLED_PACK, IN_CANCELLED_PACK, status="cancelled"),
        _pack(PENDING_CANCEL_PACK, IN_PENDING_CANCEL_PACK, status="pending_cancel"),
        _pack(ERROR_PACK, IN_ERROR_PACK, status="error"),
        _pack(SPLIT_PACK, SPLIT_OLD, status="cancelled", detail="splitted"),
        child,
        _pack(OTHERS_PACK, OTHERS_ORDER),
    ]
    # The platform's own import of these failed: a person can resync them.
    data["sale_errors"] += [
        {"connection_id": C, "sale_id": str(sale), "error_type": "import_failed", "message": "Import failed"}
        for sale in (IN_CANCELLED_PACK, SPLIT_OLD)
    ]
    return Scenario.model_validate(data)


# --- pack status --------------------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("sale_id", "pack_id", "status"),
    [(IN_CANCELLED_PACK, CANCELLED_PACK, "cancelled"), (IN_PENDING_CANCEL_PACK, PENDING_CANCEL_PACK, "pending_cancel")],
)
def test_a_sale_whose_pack_is_cancelled_is_not_reflectable(
    call_api: Api, meli: MeliSimulator, sale_id: int, pack_id: int, status: str
) -> None:
    order = meli.order(sale_id)
    assert order is not None and order["status"] == "paid"  # the order itself still shows paid
    report = verification(call_api, sale_id)
    assert (report["next_action"], report["reason"]) == ("blocked", "pack_cancelled")
    pack = check(report, "pack_not_cancelled")
    assert pack["ok"] is False and status in pack["detail"] and str(pack_id) in pack["detail"]
    assert "pack is cancelled" in report["seller_action"]


def test_resync_of_a_sale_in_a_cancelled_pack_never_imports_it(call_api: Api, aws: Aws) -> None:
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{IN_CANCELLED_PACK}/resync")
    assert status == 200, body
    assert (body["outcome"], body["reason"]) == ("not_reflectable", "pack_cancelled")
    state = sale(call_api, IN_CANCELLED_PACK)
    assert (state["outcome"], state["reason"]) == ("not_reflectable", "pack_cancelled")
    assert "record" not in state
    assert aws.help_desk_messages() == []  # the seller (or ML) decided: never escalated


def test_a_sale_whose_pack_is_in_error_is_retried_later_not_imported(call_api: Api, meli: MeliSimulator) -> None:
    status, body, headers = call_api("GET", f"/connections/{C}/sales/{IN_ERROR_PACK}/verification")
    assert status == 503, body  # ML's recoverable failure: answer later
    assert "status error" in json.dumps(body)
    assert "retry-after" in {k.lower() for k in headers}
    meli.upsert_pack(_pack(ERROR_PACK, IN_ERROR_PACK, status="released"))
    report = verification(call_api, IN_ERROR_PACK)
    assert (report["next_action"], report.get("reason")) == ("relink", None)
    assert check(report, "pack_not_cancelled")["ok"] is True


def test_bulk_hands_a_sale_of_a_pack_in_error_over_and_imports_it_once_the_pack_is_released(
    call_api: Api, aws: Aws, meli: MeliSimulator
) -> None:
    _, first = submit(call_api, [str(IN_ERROR_PACK)])
    assert run_worker(aws, queued(aws)) == {"batchItemFailures": []}
    (item,) = job(call_api, first["job_id"])["items"]
    # ML's recoverable failure: the attempt counts, the relink state machine retries later; nothing is imported.
    assert (item["outcome"], item["attempts"]) == ("in_progress", 1), item
    state = sale(call_api, IN_ERROR_PACK)
    assert "record" not in state
    assert state["error_entry"]["retryable"] is True and str(ERROR_PACK) in state["error_entry"]["message"]
    assert aws.help_desk_messages() == []
    meli.upsert_pack(_pack(ERROR_PACK, IN_ERROR_PACK, status="released"))
    _, second = submit(call_api, [str(IN_ERROR_PACK)])
    run_worker(aws, queued(aws))
    (again,) = job(call_api, second["job_id"])["items"]
    assert again["outcome"] == "reflected", again
    assert sale(call_api, IN_ERROR_PACK)["record"]["sale_id"] == str(IN_ERROR_PACK)


# --- another seller's pack ------------------------------------------------------------------------------------------


def test_ml_answers_403_not_owned_for_another_sellers_pack(meli: MeliSimulator) -> None:
    token = meli.tokens(C)[0]
    answer = httpx.get(f"{meli.url}/packs/{OTHERS_PACK}", headers={"Authorization": f"Bearer {token}"})
    assert answer.status_code == 403
    assert answer.json() == {
        "message": "The user has not access to the order",
        "error": "forbidden",
        "status": 403,
        "cause": [],
    }
    unknown = httpx.get(f"{meli.url}/packs/2000006199999999", headers={"Authorization": f"Bearer {token}"})
    assert unknown.status_code == 404


def test_another_sellers_pack_is_not_this_sellers_and_the_connection_stays_active(
    call_api: Api, meli: MeliSimulator, aws: Aws
) -> None:
    report = verification(call_api, OTHERS_PACK)
    assert (report["next_action"], report["reason"]) == ("blocked", "sale_not_found")
    assert meli.count("GET", rf"^/packs/{OTHERS_PACK}$", status=403) == 1
    status, body, _ = call_api("GET", f"/connections/{C}")
    assert status == 200 and body["state"] == "active", body
    assert aws.help_desk_messages() == []
    assert verification(call_api, TEMPLATE)["next_action"] in ("relink", "resync", "none")  # calls still made


def test_bulk_settles_another_sellers_order_and_pack_as_not_found_and_the_connection_stays_active(
    call_api: Api, aws: Aws, meli: MeliSimulator
) -> None:
    """Both 403s of another seller's resources (the order's not_owned_order, the pack's forbidden) are facts about
    those ids: each is settled sale_not_found, the connection stays active and the healthy sale beside them is
    reflected in the same job."""
    mlb_order = "2000009120000013"  # mlb-second's: ML answers mla-main 403 not_owned_order
    ids = [mlb_order, str(OTHERS_PACK), str(TEMPLATE)]
    _, submitted = submit(call_api, ids)
    assert run_worker(aws, queued(aws)) == {"batchItemFailures": []}
    outcomes = {i["sale_id"]: (i["outcome"], i.get("reason")) for i in job(call_api, submitted["job_id"])["items"]}
    assert outcomes == {
        mlb_order: ("not_reflectable", "sale_not_found"),
        str(OTHERS_PACK): ("not_reflectable", "sale_not_found"),
        str(TEMPLATE): ("reflected", None),
    }
    assert meli.count("GET", rf"^/packs/{OTHERS_PACK}$", status=403) == 1
    status, body, _ = call_api("GET", f"/connections/{C}")
    assert status == 200 and body["state"] == "active", body
    assert aws.help_desk_messages() == []


# --- shipment splits ------------------------------------------------------------------------------------------------


def test_a_split_sale_is_superseded_not_cancelled(call_api: Api) -> None:
    report = verification(call_api, SPLIT_OLD)
    assert (report["next_action"], report["reason"]) == ("blocked", "sale_superseded_by_split")
    cancelled = check(report, "sale_not_cancelled")
    assert cancelled["ok"] is False and "pack_splitted" in cancelled["detail"]
    assert "Reprocess the new sale ids" in report["seller_action"]
    assert verification(call_api, SPLIT_NEW)["next_action"] == "relink"  # the new sale is reflectable


def test_resync_of_a_split_sale_says_to_reprocess_the_new_sales(call_api: Api, aws: Aws) -> None:
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{SPLIT_OLD}/resync")
    assert status == 200, body
    assert (body["outcome"], body["reason"]) == ("not_reflectable", "sale_superseded_by_split")
    assert "Reprocess the new sale ids" in body["seller_action"]
    assert "record" not in sale(call_api, SPLIT_OLD)
    assert aws.help_desk_messages() == []


def test_bulk_settles_cancelled_packs_and_splits_and_reflects_the_new_sale(call_api: Api, aws: Aws) -> None:
    ids = [str(i) for i in (IN_CANCELLED_PACK, IN_PENDING_CANCEL_PACK, SPLIT_OLD, SPLIT_NEW)]
    _, submitted = submit(call_api, ids)
    assert run_worker(aws, queued(aws)) == {"batchItemFailures": []}
    view = job(call_api, submitted["job_id"])
    assert view["status"] == "completed"
    outcomes = {i["sale_id"]: (i["outcome"], i.get("reason")) for i in view["items"]}
    assert outcomes == {
        str(IN_CANCELLED_PACK): ("not_reflectable", "pack_cancelled"),
        str(IN_PENDING_CANCEL_PACK): ("not_reflectable", "pack_cancelled"),
        str(SPLIT_OLD): ("not_reflectable", "sale_superseded_by_split"),
        str(SPLIT_NEW): ("reflected", None),
    }
    split = sale(call_api, SPLIT_OLD)
    assert split["reason"] == "sale_superseded_by_split" and "record" not in split
    assert "Reprocess the new sale ids" in split["seller_action"]
    assert aws.help_desk_messages() == []
