"""The simulator's connection-level behaviours (issue #13), over real HTTP: a revoked connection, tokens of another
user, status faults with ML's error body (403 access_denied, OAuth 429 local_rate_limited), and the new scenario keys
validated like the others."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from devstack.simulator.scenario import Scenario, ScenarioError, load_scenario
from devstack.simulator.server import MeliSimulator

ROOT = Path(__file__).resolve().parents[2]
SELLER, OTHER = 123456789, 987654321
ORDER, OTHER_ORDER = 2000000000000001, 2000000000000004


def _order(oid: int, seller: int) -> dict[str, Any]:
    return {"id": oid, "status": "paid", "seller": {"id": seller}, "order_items": [], "payments": []}


def _data(**connection: Any) -> dict[str, Any]:
    return {
        "connections": [
            {
                "connection_id": "c1",
                "seller_id": SELLER,
                "site_id": "MLA",
                "access_token": "APP_USR-1",
                "refresh_token": "TG-1",
                **connection,
            },
            {
                "connection_id": "c2",
                "seller_id": OTHER,
                "site_id": "MLB",
                "access_token": "APP_USR-2",
                "refresh_token": "TG-2",
            },
        ],
        "orders": [_order(ORDER, SELLER), _order(OTHER_ORDER, OTHER)],
    }


@pytest.fixture
def sim(request: pytest.FixtureRequest) -> Iterator[MeliSimulator]:
    extra = getattr(request, "param", {})
    with MeliSimulator(Scenario.model_validate(_data(**extra))) as running:
        yield running


def _get(sim: MeliSimulator, path: str, token: str) -> httpx.Response:
    return httpx.get(f"{sim.url}{path}", headers={"Authorization": f"Bearer {token}"})


def _refresh(sim: MeliSimulator, refresh_token: str) -> httpx.Response:
    form = {"grant_type": "refresh_token", "client_id": "1", "client_secret": "s", "refresh_token": refresh_token}
    return httpx.post(f"{sim.url}/oauth/token", data=form)


@pytest.mark.parametrize("sim", [{"revoked": True}], indirect=True)
def test_a_revoked_connection_answers_401_and_invalid_grant_until_reconnected(sim: MeliSimulator) -> None:
    assert _get(sim, f"/orders/{ORDER}", "APP_USR-1").status_code == 401
    refused = _refresh(sim, "TG-1")
    assert refused.status_code == 400 and refused.json()["error"] == "invalid_grant"
    assert _get(sim, f"/orders/{OTHER_ORDER}", "APP_USR-2").status_code == 200  # other connections unaffected

    access, refresh = sim.reconnect("c1")
    assert _get(sim, f"/orders/{ORDER}", access).status_code == 200
    assert _get(sim, f"/orders/{ORDER}", "APP_USR-1").status_code == 401  # the old pair stays dead
    assert _refresh(sim, refresh).status_code == 200

    sim.revoke("c1")
    assert _get(sim, f"/orders/{ORDER}", sim.tokens("c1")[0]).status_code == 401


@pytest.mark.parametrize("sim", [{"token_user_id": OTHER, "seller_id": 111}], indirect=True)
def test_tokens_of_another_user_reach_that_users_data(sim: MeliSimulator) -> None:
    assert _get(sim, f"/orders/{OTHER_ORDER}", "APP_USR-1").status_code == 200
    assert _refresh(sim, "TG-1").json()["user_id"] == OTHER


def test_a_status_fault_carries_mls_error_body(sim: MeliSimulator) -> None:
    sim.add_fault(
        {
            "path": f"^/orders/{ORDER}$",
            "kind": "status",
            "status": 403,
            "error": "access_denied",
            "message": "access to the requested resource is forbidden",
            "times": 1,
        }
    )
    sim.add_fault(
        {"method": "POST", "path": "^/oauth/token$", "kind": "status", "status": 429, "error": "local_rate_limited"}
    )
    denied = _get(sim, f"/orders/{ORDER}", "APP_USR-1")
    assert denied.status_code == 403
    assert denied.json() == {
        "message": "access to the requested resource is forbidden",
        "error": "access_denied",
        "status": 403,
        "cause": [],
        "code": "FORBIDDEN",
    }
    limited = _refresh(sim, "TG-1")
    assert limited.status_code == 429
    assert limited.json()["error"] == "local_rate_limited" and limited.json()["message"] == "Too Many Requests"
    sim.add_fault({"path": "^/orders/", "kind": "status", "status": 503})
    assert _get(sim, f"/orders/{ORDER}", "APP_USR-1").json()["error"] == "service_not_available"  # as before


@pytest.mark.parametrize(
    ("change", "problem"),
    [
        (lambda d: d["connections"][0].update(revoked="maybe"), "scenario.connections[0].revoked"),
        (
            lambda d: d.update(faults=[{"path": ".*", "kind": "timeout", "error": "x"}]),
            "'error' and 'message' apply only to a fault of kind 'status'",
        ),
        (
            lambda d: d.update(faults=[{"path": ".*", "kind": "status", "status": 403, "eror": "x"}]),
            "unknown key 'eror'",
        ),
    ],
)
def test_the_new_keys_are_validated(change: Any, problem: str) -> None:
    data = _data()
    change(data)
    with pytest.raises(ScenarioError, match=problem.replace("[", r"\[").replace("]", r"\]")):
        Scenario.model_validate(data)


def test_the_shipped_scenarios_load() -> None:
    connections = load_scenario(ROOT / "scenarios" / "connections.json").connections
    assert [(c.connection_id, c.revoked, c.token_user_id) for c in connections] == [
        ("mla-main", False, None),
        ("mla-revoked", True, None),
        ("mla-blocked-app", False, None),
        ("mla-wrong-account", False, SELLER),
    ]
    # The default scenario holds the same connection cases beside its others (scenarios/README.md, cases aa-ae).
    default = load_scenario(ROOT / "scenarios" / "default.json").connections
    assert {(c.connection_id, c.revoked, c.token_user_id) for c in connections} <= {
        (c.connection_id, c.revoked, c.token_user_id) for c in default
    }
