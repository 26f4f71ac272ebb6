"""The simulated Mercado Libre API, over real HTTP: shapes, ownership, search rules, OAuth rotation, faults, quota."""

from __future__ import annotations

import copy
import json
import threading
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from devstack.simulator.scenario import Scenario, ScenarioError, load_scenario
from devstack.simulator.server import MeliSimulator

if TYPE_CHECKING:
    from collections.abc import Iterator

ROOT = Path(__file__).resolve().parents[2]
SELLER, OTHER = 123456789, 987654321


def _order(oid: int, *, seller: int = SELLER, status: str = "paid", **extra: Any) -> dict[str, Any]:
    order: dict[str, Any] = {
        "id": oid,
        "status": status,
        "date_created": "2024-11-01T09:34:59.000-04:00",
        "date_closed": "2024-11-01T09:35:43.000-04:00",
        "last_updated": "2024-11-01T09:37:20.000-04:00",
        "seller": {"id": seller},
        "buyer": {"id": 6427433},
        "order_items": [{"item": {"id": "MLA1234567890", "title": "Termo", "variation_id": None}, "quantity": 2}],
        "payments": [{"id": 91776699099, "status": "approved", "status_detail": "accredited"}],
        "shipping": {"id": None},
        "pack_id": None,
        "tags": ["paid"],
        "x_unknown_ml_field": {"kept": True},
    }
    order.update(extra)
    return order


def _scenario_data() -> dict[str, Any]:
    orders = [
        _order(2000000000000001, shipping={"id": 44000000001}, pack_id=2000000000000900, tags=["pack_order", "paid"]),
        _order(2000000000000002, shipping={"id": 44000000001}, pack_id=2000000000000900, tags=["pack_order", "paid"]),
        _order(2000000000000003, status="cancelled", cancel_detail={"group": "buyer", "code": "x"}),
        _order(2000000000000004, seller=OTHER, shipping={"id": 44000000009}),
        # For the hour-granularity test: updated at 10:45 on 2024-11-02 (UTC-3).
        _order(
            2000000000000005,
            date_created="2024-11-02T10:10:00.000-03:00",
            date_closed="2024-11-02T10:11:00.000-03:00",
            last_updated="2024-11-02T10:45:31.000-03:00",
        ),
        _order(
            2000000000000006,
            status="payment_required",
            date_created="2024-11-03T08:00:00.000-03:00",
            date_closed=None,
            last_updated="2024-11-03T08:01:00.000-03:00",
        ),
    ]
    return {
        "connections": [
            {
                "connection_id": "main",
                "seller_id": SELLER,
                "site_id": "MLA",
                "access_token": "APP_USR-1-main",
                "refresh_token": "TG-1-main",
            },
            {
                "connection_id": "other",
                "seller_id": OTHER,
                "site_id": "MLB",
                "access_token": "APP_USR-1-other",
                "refresh_token": "TG-1-other",
            },
        ],
        "products": [{"connection_id": "main", "item_id": "MLA1234567890", "sku": "S1", "status": "active"}],
        "orders": orders,
        "packs": [
            {
                "id": 2000000000000900,
                "status": "released",
                "orders": [{"id": 2000000000000001}, {"id": 2000000000000002}],
                "shipment": {"id": 44000000001},
            }
        ],
        "shipments": [
            {"id": 44000000001, "order_id": 2000000000000001, "tracking_number": "MEL44000000001FMXDF01", "x": 1},
            {"id": 44000000009, "order_id": 2000000000000004, "tracking_number": "MEL44000000009FMXDF01"},
        ],
        "reflected_sales": [{"connection_id": "main", "sale_id": 2000000000000005}],
    }


@pytest.fixture
def data() -> dict[str, Any]:
    return _scenario_data()


@pytest.fixture
def sim(data: dict[str, Any]) -> Iterator[MeliSimulator]:
    with MeliSimulator(Scenario.model_validate(data), timeout_hold_seconds=1.0) as s:
        yield s


def _client(sim: MeliSimulator, connection_id: str = "main", timeout: float = 2.0) -> httpx.Client:
    token, _ = sim.tokens(connection_id)
    return httpx.Client(base_url=sim.url, headers={"Authorization": f"Bearer {token}"}, timeout=timeout)


def _refresh(sim: MeliSimulator, refresh_token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "client_id": "123", "client_secret": "s", "refresh_token": refresh_token}
    return httpx.post(f"{sim.url}/oauth/token", data=form, timeout=2.0)


# ------------------------------------------------------------------------------------- resources


def test_resources_are_served_exactly_as_stored(sim: MeliSimulator, data: dict[str, Any]) -> None:
    with _client(sim) as c:
        r = c.get("/orders/2000000000000001")
        assert r.status_code == 200
        assert r.headers["content-type"].startswith("application/json")
        assert r.json() == data["orders"][0]
        assert c.get("/packs/2000000000000900").json() == data["packs"][0]
        # x-format-new is what ML wants for shipments; accepted with or without.
        assert c.get("/shipments/44000000001", headers={"x-format-new": "true"}).json() == data["shipments"][0]
        assert c.get("/shipments/44000000001").json() == data["shipments"][0]


def test_shipment_items_cover_every_order_of_a_cart(sim: MeliSimulator) -> None:
    with _client(sim) as c:
        items = c.get("/shipments/44000000001/items").json()
    assert [i["order_id"] for i in items] == [2000000000000001, 2000000000000002]
    assert items[0] == {
        "item_id": "MLA1234567890",
        "description": "Termo",
        "quantity": 2,
        "variation_id": None,
        "order_id": 2000000000000001,
        "sender_id": SELLER,
    }


def test_other_sellers_resources_are_refused(sim: MeliSimulator) -> None:
    with _client(sim) as c:
        r = c.get("/orders/2000000000000004")
        assert r.status_code == 403
        assert r.json() == {
            "message": "The user has not access to the order",
            "error": "not_owned_order",
            "status": 403,
            "cause": [],
        }
        assert c.get("/shipments/44000000009").status_code == 404
        assert c.get("/shipments/44000000009/items").status_code == 404
    with _client(sim, "other") as c:
        assert c.get("/orders/2000000000000004").status_code == 200
        # Another seller's pack: 403 with the order's message under the generic code, as ML's packs documentation
        # answers (meli-api.md §3, §13).
        r = c.get("/packs/2000000000000900")
        assert r.status_code == 403
        assert r.json() == {
            "message": "The user has not access to the order",
            "error": "forbidden",
            "status": 403,
            "cause": [],
        }
        r = c.get("/packs/2000000000000999")
        assert r.status_code == 404
        assert r.json() == {"message": "Order do not exists", "error": "not_found", "status": 404, "cause": []}


def test_error_bodies(sim: MeliSimulator) -> None:
    with _client(sim) as c:
        r = c.get("/orders/2000000000000999")
        assert (r.status_code, r.json()) == (
            404,
            {"message": "Order not found.", "error": "order_not_found", "status": 404, "cause": None},
        )
        r = c.get("/orders/MEL44000000001FMXDF01")
        assert r.status_code == 400
        assert r.json()["error"] == "invalid_order_id"
        assert "must be a integer number" in r.json()["message"]
        r = c.get("/items/MLA1234567890")  # a real ML route, but not one this simulator serves
        assert (r.status_code, r.json()["error"]) == (404, "not_found")
        assert c.post("/orders/2000000000000001").status_code == 404
    r = httpx.get(f"{sim.url}/orders/2000000000000001", timeout=2.0)
    assert (r.status_code, r.json()) == (
        401,
        {"message": "invalid_token", "error": "not_found", "status": 401, "cause": []},
    )
    r = httpx.get(f"{sim.url}/orders/2000000000000001", headers={"Authorization": "Bearer nope"}, timeout=2.0)
    assert r.json()["message"] == "invalid_token"


def test_upsert_order_changes_what_is_served(sim: MeliSimulator, data: dict[str, Any]) -> None:
    cancelled = copy.deepcopy(data["orders"][0]) | {"status": "cancelled"}
    sim.upsert_order(cancelled)
    with _client(sim) as c:
        assert c.get("/orders/2000000000000001").json()["status"] == "cancelled"
        ids = [o["id"] for o in c.get("/orders/search", params={"seller": SELLER}).json()["results"]]
    assert 2000000000000001 not in ids


# ---------------------------------------------------------------------------------------- search


def test_search_shape_paging_and_cancelled_filtered(sim: MeliSimulator) -> None:
    with _client(sim) as c:
        body = c.get("/orders/search", params={"seller": SELLER}).json()
        assert set(body) == {"query", "results", "sort", "available_sorts", "filters", "paging", "display"}
        assert body["sort"] == {"id": "date_asc", "name": "Date ascending"}
        assert body["display"] == "complete"
        ids = [o["id"] for o in body["results"]]
        # Sellers never see cancelled orders, nor other sellers' orders; sorted by date_closed (else date_created).
        assert ids == [2000000000000001, 2000000000000002, 2000000000000005, 2000000000000006]
        assert body["paging"] == {"total": 4, "offset": 0, "limit": 50}

        page = c.get("/orders/search", params={"seller": SELLER, "offset": 1, "limit": 2}).json()
        assert [o["id"] for o in page["results"]] == [2000000000000002, 2000000000000005]
        assert page["paging"] == {"total": 4, "offset": 1, "limit": 2}

        desc = c.get("/orders/search", params={"seller": SELLER, "sort": "date_desc"}).json()
        assert [o["id"] for o in desc["results"]] == ids[::-1]

        paid = c.get("/orders/search", params={"seller": SELLER, "order.status": "paid,cancelled"}).json()
        assert paid["paging"]["total"] == 3
        assert c.get("/orders/search", params={"seller": SELLER, "order.status": "cancelled"}).json()["results"] == []


def test_search_date_filters_keep_only_the_hour(sim: MeliSimulator) -> None:
    def ids(**params: str) -> list[int]:
        with _client(sim) as c:
            r = c.get("/orders/search", params={"seller": str(SELLER), **params})
        assert r.status_code == 200, r.text
        return [o["id"] for o in r.json()["results"]]

    five = 2000000000000005  # last_updated 2024-11-02T10:45:31-03:00
    key = "order.date_last_updated"
    # `from` 10:59 is truncated to 10:00, so 10:45 is inside.
    assert five in ids(**{f"{key}.from": "2024-11-02T10:59:59.999-03:00", f"{key}.to": "2024-11-02T12:00:00.000-03:00"})
    # `to` 10:01 is truncated to 10:00 and covers the whole hour.
    assert five in ids(**{f"{key}.from": "2024-11-02T09:00:00.000-03:00", f"{key}.to": "2024-11-02T10:01:00.000-03:00"})
    assert five not in ids(**{f"{key}.to": "2024-11-02T09:59:59.000-03:00"})
    assert five not in ids(**{f"{key}.from": "2024-11-02T11:00:00.000-03:00"})
    # Same instant written in UTC.
    assert five in ids(**{f"{key}.from": "2024-11-02T13:30:00.000Z", f"{key}.to": "2024-11-02T13:30:00.000Z"})
    assert ids(**{"order.date_created.from": "2024-11-03T08:00:00.000-03:00"}) == [2000000000000006]


def test_search_refusals(sim: MeliSimulator) -> None:
    with _client(sim) as c:
        r = c.get("/orders/search", params={"seller": SELLER, "limit": 51})
        assert r.status_code == 400
        assert set(r.json()) == {"message", "error", "status", "cause"}
        assert c.get("/orders/search", params={"seller": OTHER}).status_code == 403
        assert c.get("/orders/search").status_code == 400
        bad_date: dict[str, str | int] = {"seller": SELLER, "order.date_last_updated.from": "yesterday"}
        assert c.get("/orders/search", params=bad_date).status_code == 400


# ----------------------------------------------------------------------------------------- OAuth


def test_refresh_tokens_are_single_use(sim: MeliSimulator) -> None:
    old_access, old_refresh = sim.tokens("main")
    r = _refresh(sim, old_refresh)
    assert r.status_code == 200
    body = r.json()
    assert body["token_type"] == "bearer"
    assert body["user_id"] == SELLER
    assert body["scope"] == "offline_access read write"
    assert body["expires_in"] == 21600
    assert body["access_token"].startswith("APP_USR-")
    assert body["refresh_token"].startswith("TG-")
    assert sim.tokens("main") == (body["access_token"], body["refresh_token"])

    again = _refresh(sim, old_refresh)
    assert (again.status_code, again.json()["error"]) == (400, "invalid_grant")
    assert "already used" in again.json()["error_description"]

    stale = httpx.get(f"{sim.url}/orders/2000000000000001", headers={"Authorization": f"Bearer {old_access}"})
    assert stale.json()["message"] == "invalid_token"
    with _client(sim) as c:
        assert c.get("/orders/2000000000000001").status_code == 200


def test_concurrent_refresh_with_one_token_has_one_winner(sim: MeliSimulator) -> None:
    _, refresh = sim.tokens("main")
    barrier = threading.Barrier(8)
    statuses: list[int] = []

    def go() -> None:
        barrier.wait()
        statuses.append(_refresh(sim, refresh).status_code)

    threads = [threading.Thread(target=go) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert sorted(statuses) == [200] + [400] * 7


def test_oauth_refusals(sim: MeliSimulator) -> None:
    _, refresh = sim.tokens("main")
    url = f"{sim.url}/oauth/token"
    r = httpx.post(url, data={"grant_type": "password", "client_id": "1", "client_secret": "s"})
    assert r.json()["error"] == "unsupported_grant_type"
    r = httpx.post(url, data={"grant_type": "refresh_token", "refresh_token": refresh})
    assert (r.status_code, r.json()["error"]) == (400, "invalid_client")
    assert sim.tokens("main")[1] == refresh  # a refused request does not spend the token


def test_token_expired_until_refresh(sim: MeliSimulator) -> None:
    sim.add_fault({"path": "^/orders/2000000000000001$", "kind": "token_expired", "times": 1})
    expired = {"message": "expired_token", "error": "not_found", "status": 401, "cause": []}
    with _client(sim) as c:
        r = c.get("/orders/2000000000000001")
        assert (r.status_code, r.json()) == (401, expired)
        # The rule fired once, but the token stays expired for every route until a refresh replaces it.
        r = c.get("/orders/2000000000000002")
        assert (r.status_code, r.json()) == (401, expired)
    assert _refresh(sim, sim.tokens("main")[1]).status_code == 200
    with _client(sim) as c:
        assert c.get("/orders/2000000000000001").status_code == 200

    sim.expire_token("other")
    with _client(sim, "other") as c:
        assert c.get("/orders/2000000000000004").json()["message"] == "expired_token"


def test_token_expired_fault_for_another_connection(sim: MeliSimulator) -> None:
    sim.add_fault({"path": "^/packs/", "kind": "token_expired", "connection_id": "other", "times": 1})
    with _client(sim) as c:
        assert c.get("/packs/2000000000000900").status_code == 200
    with _client(sim, "other") as c:
        assert c.get("/orders/2000000000000004").json()["message"] == "expired_token"


# ---------------------------------------------------------------------------------------- faults


def test_timeout_fault_holds_then_stops_after_times(sim: MeliSimulator) -> None:
    sim.add_fault({"method": "GET", "path": "^/orders/2000000000000001$", "kind": "timeout", "times": 2})
    with _client(sim, timeout=0.3) as c:
        for _ in range(2):
            with pytest.raises(httpx.ReadTimeout):
                c.get("/orders/2000000000000001")
        assert c.get("/orders/2000000000000001").status_code == 200
        assert c.get("/orders/2000000000000002").status_code == 200
    # A held request is in the log as soon as it is held, with no status (no answer was sent).
    assert [r.status for r in sim.requests] == [None, None, 200, 200]


def test_status_faults_answer_ml_bodies(sim: MeliSimulator) -> None:
    sim.add_fault({"path": "^/orders/2000000000000001$", "kind": "status", "status": 503})
    sim.add_fault({"method": "GET", "path": "^/packs/", "kind": "status", "status": 429, "times": 1})
    sim.add_fault({"method": "POST", "path": "^/packs/", "kind": "status", "status": 500})
    with _client(sim) as c:
        for _ in range(3):
            r = c.get("/orders/2000000000000001")
            assert (r.status_code, r.json()) == (
                503,
                {"message": "Service unavailable", "error": "service_not_available", "status": 503, "cause": []},
            )
        r = c.get("/packs/2000000000000900")
        assert (r.status_code, r.json()) == (
            429,
            {"message": "Too Many Requests", "error": "too_many_requests", "status": 429, "cause": []},
        )
        assert c.get("/packs/2000000000000900").status_code == 200
    sim.clear_faults()
    with _client(sim) as c:
        assert c.get("/orders/2000000000000001").status_code == 200


def test_latency_fault_delays_then_answers(sim: MeliSimulator) -> None:
    sim.add_fault({"path": ".*", "kind": "latency", "ms": 150})
    with _client(sim) as c:
        t0 = time.perf_counter()
        assert c.get("/orders/2000000000000001").status_code == 200
        assert time.perf_counter() - t0 >= 0.15
    assert sim.requests[-1].duration_ms >= 150


def test_probability_with_seed_is_repeatable(data: dict[str, Any]) -> None:
    data["faults"] = [{"path": "^/orders/", "kind": "status", "status": 500, "probability": 0.5, "seed": 7}]

    def run() -> list[int]:
        with MeliSimulator(Scenario.model_validate(data)) as s, _client(s) as c:
            return [c.get("/orders/2000000000000001").status_code for _ in range(20)]

    first, second = run(), run()
    assert first == second
    assert set(first) == {200, 500}


def test_quota_answers_429_above_the_rate(sim: MeliSimulator) -> None:
    sim.set_quota(5)
    with _client(sim) as c:
        statuses = [c.get("/orders/2000000000000001").status_code for _ in range(12)]
    assert statuses.count(200) == 5
    assert statuses.count(429) == 7
    assert sim.count(status=429) == 7
    sim.set_quota(None)
    with _client(sim) as c:
        assert all(c.get("/orders/2000000000000001").status_code == 200 for _ in range(12))


def test_oauth_over_the_quota_answers_local_rate_limited(sim: MeliSimulator) -> None:
    """OAuth's throttle has its own body (DOC-AUTH: 429 local_rate_limited "Inténtalo de nuevo en unos segundos")."""
    sim.set_quota(1)
    with _client(sim) as c:
        c.get("/orders/2000000000000001")  # the second's one request
        answer = _refresh(sim, sim.tokens("main")[1])
    assert answer.status_code == 429
    assert answer.json()["error"] == "local_rate_limited" and "segundos" in answer.json()["message"]
    sim.set_quota(None)


def test_request_log(sim: MeliSimulator) -> None:
    with _client(sim) as c:
        c.get("/orders/2000000000000001")
        c.get("/orders/search", params={"seller": SELLER, "limit": 2})
        c.get("/orders/2000000000000004")
    assert sim.count() == 3
    assert sim.count(method="GET", path_regex=r"^/orders/\d+$") == 2
    assert sim.count(status=403) == 1
    entry = next(r for r in sim.requests if r.path == "/orders/search")
    assert entry.query == {"seller": str(SELLER), "limit": "2"}
    assert entry.connection_id == "main"
    assert entry.status == 200
    sim.reset_log()
    assert sim.requests == []


# -------------------------------------------------------------------------------------- scenario


@pytest.mark.parametrize(
    ("mutate", "expected"),
    [
        (
            lambda d: d.update(faults=[{"path": "x", "kind": "latency", "ms": 1}] * 2 + [{"path": "x", "tims": 2}]),
            "scenario.faults[2]: unknown key 'tims'",
        ),
        (lambda d: d["connections"][1].update(sellerid=1), "scenario.connections[1]: unknown key 'sellerid'"),
        (lambda d: d.update(order=[]), "scenario: unknown key 'order'"),
        (lambda d: d.update(quota={"rps": 3}), "scenario.quota: unknown key 'rps'"),
        (lambda d: d["orders"][2].pop("seller"), "scenario.orders[2]"),
        (lambda d: d["products"][0].update(connection_id="mian"), "'mian' is not one of the connections"),
        (lambda d: d.update(faults=[{"path": "x", "kind": "status"}]), "needs 'status'"),
    ],
)
def test_scenario_errors_name_the_place(data: dict[str, Any], mutate: Any, expected: str) -> None:
    mutate(data)
    with pytest.raises(ScenarioError) as err:
        Scenario.model_validate(data)
    assert expected in str(err.value)


def test_scenario_file_errors(tmp_path: Path) -> None:
    with pytest.raises(ScenarioError, match="not found"):
        load_scenario(tmp_path / "missing.json")
    bad = tmp_path / "bad.json"
    bad.write_text('{\n  "orders": [\n    {"id": 1,}\n  ]\n}\n')
    with pytest.raises(ScenarioError, match="line 3 column"):
        load_scenario(bad)
    typo = tmp_path / "typo.json"
    typo.write_text(json.dumps({"faults": [{"path": ".*", "kind": "latency", "ms": 1, "tims": 1}]}))
    with pytest.raises(ScenarioError, match=r"scenario\.faults\[0\]: unknown key 'tims'"):
        load_scenario(typo)


def test_the_shipped_default_scenario_loads_and_is_consistent() -> None:
    scenario = load_scenario(ROOT / "scenarios" / "default.json")
    orders = scenario.orders_by_id()
    main = scenario.connection("mla-main")
    assert main.seller_id == 123456789
    assert {c.connection_id for c in scenario.connections} == {
        "mla-main",
        "mlb-second",
        "mla-revoked",
        "mla-blocked-app",
        "mla-wrong-account",
    }
    assert all(int(e.sale_id) in orders for e in scenario.sale_errors)
    assert all(int(r.sale_id) in orders for r in scenario.reflected_sales)
    for pack in scenario.packs:
        assert all(o["id"] in orders for o in pack["orders"])
    shipments = scenario.shipments_by_id()
    for order in orders.values():
        if order["status"] == "paid" and order["shipping"]["id"]:
            assert order["shipping"]["id"] in shipments
    assert scenario.quota is not None
    # Every order carries a pack id, as ML's do since 2024 (DOC-PACKS); a single sale's pack holds only it.
    assert all(order["pack_id"] for order in orders.values())
    with MeliSimulator(scenario) as sim:
        cart = sim.tokens("mla-main")[0]
        r = httpx.get(f"{sim.url}/packs/2000006105000019", headers={"Authorization": f"Bearer {cart}"})
        assert len(r.json()["orders"]) == 2
        single = orders[2000009101000011]
        r = httpx.get(f"{sim.url}/packs/{single['pack_id']}", headers={"Authorization": f"Bearer {cart}"})
        assert r.status_code == 200 and r.json()["orders"] == [{"id": single["id"]}]


def test_a_pack_id_its_orders_name_is_served_without_a_declared_pack(data: dict[str, Any]) -> None:
    """ML holds a pack for every pack id; a scenario may leave single sales' packs implicit."""
    data["orders"] += [
        _order(2000000000000101, pack_id=2000000000000910, shipping={"id": 44000000101}),
        _order(2000000000000102, pack_id=2000000000000911, status="cancelled"),
        _order(2000000000000103, pack_id=2000000000000912, status="payment_required"),
    ]
    with MeliSimulator(Scenario.model_validate(data)) as sim, _client(sim) as c:
        r = c.get("/packs/2000000000000910")
        assert r.status_code == 200
        assert r.json() == {
            "shipment": {"id": 44000000101},
            "orders": [{"id": 2000000000000101}],
            "id": 2000000000000910,
            "status": "released",
            "status_detail": None,
            "buyer": {"id": 6427433},
            "date_created": "2024-11-01T09:34:59.000-04:00",
            "last_updated": "2024-11-01T09:37:20.000-04:00",
        }
        assert c.get("/packs/2000000000000911").json()["status"] == "cancelled"
        assert c.get("/packs/2000000000000912").json()["status"] == "filling"
        assert c.get("/packs/2000000000000913").status_code == 404
