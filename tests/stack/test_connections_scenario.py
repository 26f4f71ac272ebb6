"""``scenarios/connections.json`` (issue #13's connection-level cases) as ``make run SCENARIO=...`` runs it: the main
job over HTTP on the whole local stack, every function held to its IAM role. scenarios/README.md lists the cases."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from rich.console import Console

from devstack.main_job import failing_sales, run_job
from devstack.simulator.scenario import load_scenario
from devstack.stack import EmbeddedStack
from tests.conftest import ROOT
from tests.stack.support import running_stack

pytestmark = pytest.mark.stack
REASON = "connection_needs_reauthorization"


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with running_stack(load_scenario(ROOT / "scenarios" / "connections.json")) as running:
        yield running


def test_the_connections_scenario_settles_as_its_readme_says(stack: EmbeddedStack) -> None:
    assert stack.api is not None
    report = run_job(stack.api.url, failing_sales(stack.scenario), console=Console(quiet=True), timeout_seconds=120)
    outcomes = {(r.connection_id, r.sale_id): (r.outcome, r.reason) for r in report.rows}
    assert outcomes == {
        ("mla-main", "2000009150000011"): ("reflected", None),  # OAuth answered 429 twice: retried, not a revocation
        ("mla-revoked", "2000009151000011"): ("not_reflectable", REASON),
        ("mla-revoked", "2000009151000021"): ("not_reflectable", REASON),
        ("mla-blocked-app", "2000009152000011"): ("not_reflectable", REASON),
        ("mla-blocked-app", "2000009152000021"): ("not_reflectable", REASON),
        ("mla-wrong-account", "2000009153000011"): ("not_reflectable", REASON),
    }
    alerts = {m["connection_id"]: m["cause"] for m in stack.help_desk_messages() if m.get("kind") == REASON}
    assert alerts == {
        "mla-revoked": "invalid_grant",
        "mla-blocked-app": "access_denied",
        "mla-wrong-account": "token_owner_mismatch",
    }
    # The revoked connection: its first read (401) and one refresh (invalid_grant); the blocked application: its
    # first read (403); another user's tokens: nothing at all. (The OAuth 429 rule matches any refresh: when the
    # revoked connection's refresh comes first it meets the 429s, which are retried, before its invalid_grant.)
    answered = [r for r in stack.meli.requests if r.connection_id in alerts and r.status != 429]
    calls = {c: sum(1 for r in answered if r.connection_id == c) for c in alerts}
    assert calls == {"mla-revoked": 2, "mla-blocked-app": 1, "mla-wrong-account": 0}, answered
    with httpx.Client(base_url=stack.api.url, timeout=30) as http:
        states = {
            c.connection_id: http.get(f"/connections/{c.connection_id}").json() for c in stack.scenario.connections
        }
    assert {c: s["state"] for c, s in states.items()} == {
        "mla-main": "active",
        "mla-revoked": "needs_reauthorization",
        "mla-blocked-app": "needs_reauthorization",
        "mla-wrong-account": "needs_reauthorization",
    }
    assert all("reconnect" in s["seller_action"] for c, s in states.items() if c != "mla-main")
