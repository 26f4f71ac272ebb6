"""The simulated ML's notifications on their own: ML's retries against a callback that fails, the missed feeds' route
and shape, and the scenario keys' validation."""

from __future__ import annotations

import copy
import json
import threading
import time
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest

from devstack.simulator.scenario import Scenario, ScenarioError
from devstack.simulator.server import MeliSimulator
from tests.conftest import DEFAULT_SCENARIO, default_scenario_data

SALE = 2000009101000011


class Callback:
    """A callback that answers the statuses it is given, in order (then 200), and records what it got."""

    def __init__(self, statuses: list[int]) -> None:
        self.statuses = list(statuses)
        self.bodies: list[dict[str, Any]] = []
        owner = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                owner.bodies.append(body)
                status = owner.statuses.pop(0) if owner.statuses else 200
                self.send_response(status)
                self.send_header("Content-Length", "0")
                self.end_headers()

            def log_message(self, format: str, *args: Any) -> None:
                pass

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
        self.url = f"http://127.0.0.1:{self.server.server_address[1]}/notifications/mercadolibre"
        threading.Thread(target=self.server.serve_forever, daemon=True).start()

    def close(self) -> None:
        self.server.shutdown()
        self.server.server_close()


def _scenario(**notifications: Any) -> Scenario:
    data = default_scenario_data()
    data["faults"], data["new_orders"] = [], []
    data["notifications"] = {"retry_seconds": [0.05] * 7, **notifications}
    return Scenario.model_validate(data)


@pytest.fixture
def meli() -> Iterator[MeliSimulator]:
    with MeliSimulator(_scenario(copies=12)) as sim:
        yield sim


def _wait(sim: MeliSimulator) -> None:
    assert sim.notifier is not None
    deadline = time.monotonic() + 10
    while not sim.notifier.idle() and time.monotonic() < deadline:
        time.sleep(0.02)


def test_ml_retries_a_failing_callback_with_attempts_counted_until_200(meli: MeliSimulator) -> None:
    callback = Callback([500, 503])
    try:
        meli.start_notifications(callback.url)
        order = meli.order(SALE)
        assert order is not None
        meli.upsert_order(order, copies=1)
        _wait(meli)
    finally:
        callback.close()
    assert meli.notifier is not None
    (delivery,) = meli.notifier.deliveries
    assert delivery.tries == [500, 503, 200] and delivery.delivered and not delivery.missed
    assert [b["attempts"] for b in callback.bodies] == [1, 2, 3]
    assert {b["_id"] for b in callback.bodies} == {delivery.notification["_id"]}  # one notification, three tries
    first = callback.bodies[0]
    assert first["resource"] == f"/orders/{SALE}" and first["topic"] == "orders_v2" and first["user_id"] == 123456789


def test_spent_notifications_are_served_by_missed_feeds_in_mls_shape(meli: MeliSimulator) -> None:
    callback = Callback([500] * 200)
    try:
        meli.start_notifications(callback.url)
        order = meli.order(SALE)
        assert order is not None
        meli.upsert_order(order)  # 12 copies
        _wait(meli)
    finally:
        callback.close()
    token, _ = meli.tokens("mla-main")
    other, _ = meli.tokens("mlb-second")
    with httpx.Client(base_url=meli.url, timeout=5) as client:

        def get(params: dict[str, Any], bearer: str = token) -> httpx.Response:
            return client.get("/missed_feeds", params=params, headers={"Authorization": f"Bearer {bearer}"})

        first = get({"app_id": 5503910054141466, "topic": "orders_v2"})
        rest = get({"app_id": 5503910054141466, "topic": "orders_v2", "offset": 10})
        assert first.status_code == 200 and len(first.json()["messages"]) == 10  # ML's default page
        assert len(rest.json()["messages"]) == 2
        message = first.json()["messages"][0]
        assert message["attempts"] == 8 and message["resource"] == f"/orders/{SALE}"
        assert (
            message["response"]["http_code"] == 500 and json.loads(message["request"]["data"])["_id"] == message["_id"]
        )
        assert get({"app_id": 5503910054141466}, other).json() == {"messages": []}  # another seller's token
        assert get({"app_id": 5503910054141466, "topic": "items"}).json() == {"messages": []}
        assert get({}).status_code == 400
        assert get({"app_id": 3486171129139063}).status_code == 403
        assert client.get("/missed_feeds", params={"app_id": 5503910054141466}).status_code == 401


def test_a_change_ml_never_notified_sends_nothing(meli: MeliSimulator) -> None:
    callback = Callback([])
    try:
        meli.start_notifications(callback.url)
        order = meli.order(SALE)
        assert order is not None
        meli.upsert_order({**copy.deepcopy(order), "status": "cancelled"}, notify=False)
        _wait(meli)
    finally:
        callback.close()
    assert callback.bodies == [] and meli.notifier is not None and meli.notifier.deliveries == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"notifications": None}, "new_orders need 'notifications'"),
        (
            {"new_orders": [{"after_seconds": 1, "order": {"id": SALE, "seller": {"id": 1}}}]},
            "already one of the orders",
        ),
        ({"notifications": {"outages": [{"from_seconds": 3, "to_seconds": 1}]}}, "'to_seconds' must be after"),
        ({"notifications": {"retyr_seconds": [1]}}, "unknown key 'retyr_seconds'"),
        (
            {"new_orders": [{"after_seconds": 1, "order": {"id": 1, "seller": {"id": 1}}, "copy": 2}]},
            "unknown key 'copy'",
        ),
    ],
)
def test_the_scenario_keys_are_checked_and_name_the_problem(change: dict[str, Any], message: str) -> None:
    data = json.loads(DEFAULT_SCENARIO.read_text())
    data.update(change)
    if data.get("notifications") is None:
        data.pop("notifications", None)
    with pytest.raises(ScenarioError, match=message):
        Scenario.model_validate(data)
