"""The simulator's `partial` fault (DESIGN §4, second round): GET /orders/{id} answers 206 Partial Content without the
named sections and names them in `X-Content-Missing`, as ML does when it cannot fetch parts of an order
(reference/meli-api.md §1.2). Only an order answers 206; the stored order stays whole."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.simulator.scenario import Scenario, ScenarioError, load_scenario
from devstack.simulator.server import MeliSimulator

ROOT = Path(__file__).resolve().parents[2]
ORDER, OTHER_SELLERS_ORDER, PACK = 2000009101000011, 2000009120000013, 2000006114000011
PARTIAL_ONCE = 2000009136000014  # the default scenario's case s


@pytest.fixture
def sim() -> Iterator[MeliSimulator]:
    with MeliSimulator(load_scenario(ROOT / "scenarios" / "default.json")) as running:
        running.clear_faults()
        yield running


def get(sim: MeliSimulator, path: str, **params: Any) -> httpx.Response:
    token = sim.tokens("mla-main")[0]
    return httpx.get(f"{sim.url}{path}", params=params, headers={"Authorization": f"Bearer {token}"})


def test_a_partial_fault_answers_206_without_the_sections_and_names_them() -> None:
    with MeliSimulator(load_scenario(ROOT / "scenarios" / "default.json")) as sim:
        first = get(sim, f"/orders/{PARTIAL_ONCE}")
        assert first.status_code == 206
        assert first.headers["X-Content-Missing"] == "buyer, shipping"
        body = first.json()
        assert "buyer" not in body and "shipping" not in body
        assert body["id"] == PARTIAL_ONCE and body["status"] == "paid" and body["order_items"]
        again = get(sim, f"/orders/{PARTIAL_ONCE}")  # "times": 1 in the scenario
        assert again.status_code == 200 and "X-Content-Missing" not in again.headers
        assert again.json()["buyer"]["id"] == 1944693926 and again.json()["shipping"]["id"] == 44031036065
        assert sim.count(path_regex=f"^/orders/{PARTIAL_ONCE}$", status=206) == 1


def test_only_an_order_of_the_caller_answers_206(sim: MeliSimulator) -> None:
    sim.add_fault({"path": ".*", "kind": "partial", "missing": ["feedback"]})
    assert get(sim, f"/packs/{PACK}").status_code == 200
    assert get(sim, "/orders/search", seller="123456789").status_code == 200
    assert get(sim, f"/orders/{OTHER_SELLERS_ORDER}").status_code == 403  # errors stay errors
    assert get(sim, "/orders/2000009999999999").status_code == 404
    partial = get(sim, f"/orders/{ORDER}")
    assert (partial.status_code, partial.headers["X-Content-Missing"]) == (206, "feedback")
    assert "feedback" not in partial.json() and partial.json()["buyer"]
    assert sim.order(ORDER) is not None and "feedback" in sim.order(ORDER)  # type: ignore[operator]


def test_times_counts_only_the_orders_a_partial_fault_answered(sim: MeliSimulator) -> None:
    sim.add_fault({"path": "^/(orders|packs)/", "kind": "partial", "missing": ["buyer"], "times": 1})
    assert get(sim, f"/packs/{PACK}").status_code == 200  # not an order: the rule does not fire
    assert get(sim, f"/orders/{ORDER}").status_code == 206
    assert get(sim, f"/orders/{ORDER}").status_code == 200


@pytest.mark.parametrize(
    ("fault", "words"),
    [
        ({"path": ".*", "kind": "partial"}, "needs 'missing'"),
        ({"path": ".*", "kind": "partial", "missing": []}, "needs 'missing'"),
        ({"path": ".*", "kind": "partial", "missing": ["buyer", "adress"]}, "'adress'"),
        ({"path": ".*", "kind": "status", "status": 503, "missing": ["buyer"]}, "only to a fault of kind 'partial'"),
    ],
)
def test_a_partial_fault_is_checked(fault: dict[str, Any], words: str) -> None:
    with pytest.raises(ScenarioError, match=words):
        Scenario.model_validate({"faults": [fault]})
