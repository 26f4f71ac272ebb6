"""Issue #13 items 4, 5, 9, 10 and the connection state, through the real API handler (whole API Gateway events), the
state machine's task handlers and the error sweep's handler, on the simulated Mercado Libre over HTTP.

A connection whose refresh token ML refuses (``invalid_grant``), that ML answers a connection-level 403, or whose
tokens belong to another ML user needs the seller to authorise the application again: one state change and one
help-desk message, no ML call for it afterwards, its sales ``not_reflectable`` / ``connection_needs_reauthorization``
with what the seller must do, and everything resumes once newer tokens are stored. Each test fails on the code before
issue #13 (which answered 503, ``sale_not_found``, or imported with another user's tokens).
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import pytest

from devstack.seed import store_reconnected_tokens
from devstack.simulator.server import MeliSimulator
from shared.meli.tokens import SecretsManagerTokenStore
from tests.conftest import SECRET_PREFIX, Aws, lambda_context

C = "mla-main"
REFLECTABLE, OTHER_REFLECTABLE = "2000009101000011", "2000009101000021"
LISTED_TIMEOUT = "2000009109000015"
OTHER_SELLERS_SALE = "2000009120000013"
REASON = "connection_needs_reauthorization"
OAUTH = "/oauth/token"

Api = Any


def tokens() -> SecretsManagerTokenStore:
    return SecretsManagerTokenStore(boto3.client("secretsmanager"), SECRET_PREFIX)


def reconnect(meli: MeliSimulator) -> None:
    """The seller authorises the application again; the platform stores the new pair (a newer version)."""
    store_reconnected_tokens(tokens(), C, *meli.reconnect(C))


def alerts(aws: Aws) -> list[dict[str, Any]]:
    return [m for m in aws.help_desk_messages() if m.get("kind") == REASON]


def ml_calls(meli: MeliSimulator) -> list[tuple[str, str, int | None]]:
    return [(r.method, r.path, r.status) for r in meli.requests]


def connection(call_api: Api) -> dict[str, Any]:
    status, body, _ = call_api("GET", f"/connections/{C}")
    assert status == 200, body
    return dict(body)


def verification(call_api: Api, sale_id: str) -> dict[str, Any]:
    status, body, _ = call_api("GET", f"/connections/{C}/sales/{sale_id}/verification")
    assert status == 200, body
    return dict(body)


def assert_blocked_by_the_connection(report: dict[str, Any]) -> None:
    assert report["next_action"] == "blocked" and report["reason"] == REASON, report
    assert "reconnect the Mercado Libre account" in report["seller_action"]


# --- GET /connections/{connection_id} ------------------------------------------------------------------------------


def test_a_connection_answers_its_state(call_api: Api) -> None:
    assert connection(call_api) == {"connection_id": C, "seller_id": 123456789, "site_id": "MLA", "state": "active"}
    status, body, _ = call_api("GET", "/connections/nope")
    assert status == 404 and body["error"] == "unknown_connection"
    status, body, _ = call_api("GET", "/connections/bad%20id!")
    assert status == 400 and body["error"] == "invalid_connection_id"
    status, _, headers = call_api("POST", f"/connections/{C}", body="{}")
    assert status == 405 and headers["Allow"] == "GET"


# --- item 5: the seller revoked us (invalid_grant after re-reading the stored tokens) --------------------------------


def test_a_revoked_connection_is_one_state_change_one_alert_and_no_more_ml_calls(
    call_api: Api, aws: Aws, meli: MeliSimulator
) -> None:
    meli.revoke(C)
    meli.reset_log()

    assert_blocked_by_the_connection(verification(call_api, REFLECTABLE))
    assert ml_calls(meli) == [("GET", f"/orders/{REFLECTABLE}", 401), ("POST", OAUTH, 400)]
    state = connection(call_api)
    assert state["state"] == "needs_reauthorization" and state["reason"] == REASON
    assert state["cause"] == "invalid_grant" and "reconnect" in state["seller_action"]

    # Every route of every other sale of the connection answers the same, without calling ML.
    assert_blocked_by_the_connection(verification(call_api, OTHER_REFLECTABLE))
    status, relinked, _ = call_api("POST", f"/connections/{C}/sales/{OTHER_REFLECTABLE}/relink")
    assert status == 200 and relinked["outcome"] == "not_reflectable" and relinked["reason"] == REASON, relinked
    assert "execution_id" not in relinked  # nothing started
    status, resynced, _ = call_api("POST", f"/connections/{C}/sales/{LISTED_TIMEOUT}/resync")
    assert status == 200 and resynced["outcome"] == "not_reflectable" and resynced["reason"] == REASON, resynced
    status, sale, _ = call_api("GET", f"/connections/{C}/sales/{OTHER_REFLECTABLE}")
    assert status == 200 and sale["outcome"] == "not_reflectable" and sale["reason"] == REASON
    assert sale["error_entry"]["error_type"] == REASON and sale["error_entry"]["retryable"] is False
    assert len(meli.requests) == 2

    [alert] = alerts(aws)
    assert alert["connection_id"] == C and alert["cause"] == "invalid_grant" and "sale_id" not in alert


def test_after_reconnecting_the_sweep_retries_the_waiting_sales(call_api: Api, aws: Aws, meli: MeliSimulator) -> None:
    from functions.bulk_worker.app import lambda_handler as worker
    from functions.error_sweep.app import lambda_handler as sweep
    from tests.bulk.test_bulk import queued, worker_event

    meli.revoke(C)
    verification(call_api, REFLECTABLE)  # ML refuses the refresh token: the connection needs reauthorization
    for sale_id in (REFLECTABLE, OTHER_REFLECTABLE):
        status, body, _ = call_api("POST", f"/connections/{C}/sales/{sale_id}/relink")
        assert status == 200 and body["reason"] == REASON, body
    swept = sweep({"connection_id": C}, lambda_context("sales-recovery-test-error-sweep"))
    assert swept["connections"][0]["enqueued"] == 0  # still revoked: nothing retried, nothing asked to ML

    reconnect(meli)
    assert connection(call_api)["state"] == "active"
    swept = sweep({"connection_id": C}, lambda_context("sales-recovery-test-error-sweep"))
    run = swept["connections"][0]
    assert set(run["sale_ids"]) >= {REFLECTABLE, OTHER_REFLECTABLE} and run["resumed"] >= 2, run
    worker(worker_event(aws, queued(aws)), lambda_context("sales-recovery-test-bulk-worker"))
    for sale_id in (REFLECTABLE, OTHER_REFLECTABLE):
        _, sale, _ = call_api("GET", f"/connections/{C}/sales/{sale_id}")
        assert sale["outcome"] == "reflected", sale
    assert len(alerts(aws)) == 1


def test_state_machine_tasks_settle_a_revoked_connections_sale_without_ml(
    call_api: Api, aws: Aws, meli: MeliSimulator
) -> None:
    from functions.error_sweep.app import lambda_handler as sweep
    from functions.relink.app import lambda_handler as relink_task
    from functions.verify.app import lambda_handler as verify_task

    prefix = "arn:aws:states:us-east-1:123456789012:execution:sales-recovery-test-relink"
    owned = {
        "connection_id": C,
        "sale_id": OTHER_REFLECTABLE,
        "execution_id": f"{prefix}:relink-{OTHER_REFLECTABLE}-e1-a",
        "attempts": 0,
    }
    assert verify_task(owned, lambda_context("sales-recovery-test-verify"))["next_action"] == "relink"  # claimed

    meli.revoke(C)
    task = {"connection_id": C, "sale_id": REFLECTABLE, "execution_id": f"{prefix}:relink-{REFLECTABLE}-e1-b"}
    answer = verify_task({**task, "attempts": 0}, lambda_context("sales-recovery-test-verify"))
    assert answer["next_action"] == "blocked" and answer["output"]["reason"] == REASON, answer
    calls = len(meli.requests)
    # The relink attempt of the execution that owns the other sale: blocked too, and no ML call.
    relinked = relink_task({**owned, "attempt": 1}, lambda_context("sales-recovery-test-relink"))
    assert relinked["outcome"] == "not_reflectable" and relinked.get("reason") == REASON, relinked
    assert len(meli.requests) == calls
    assert alerts(aws) == []  # the tasks may not publish: the alert is due on the row, for the sweep
    sweep({"connection_id": C}, lambda_context("sales-recovery-test-error-sweep"))
    assert len(alerts(aws)) == 1
    sweep({"connection_id": C}, lambda_context("sales-recovery-test-error-sweep"))
    assert alerts(aws) == []  # sent once


def test_reconciliation_asks_ml_nothing_for_a_revoked_connection(call_api: Api, aws: Aws, meli: MeliSimulator) -> None:
    from functions.reconcile.app import lambda_handler as reconcile

    meli.revoke(C)
    verification(call_api, REFLECTABLE)  # finds it revoked
    meli.reset_log()
    result = reconcile({"connection_id": C}, lambda_context("sales-recovery-test-reconcile"))
    run = result["connections"][0]
    assert run["connection_state"] == "needs_reauthorization" and run["enqueued"] == 0 and "error" not in run
    assert meli.requests == []


# --- item 4: only not_owned_order is about the sale -----------------------------------------------------------------


def test_a_connection_level_403_is_not_a_fact_about_the_sale(call_api: Api, aws: Aws, meli: MeliSimulator) -> None:
    meli.add_fault(
        {
            "path": f"^/orders/{REFLECTABLE}$",
            "kind": "status",
            "status": 403,
            "error": "access_denied",
            "message": "access to the requested resource is forbidden",
        }
    )
    report = verification(call_api, REFLECTABLE)
    assert_blocked_by_the_connection(report)  # not sale_not_found ("another seller's order")
    state = connection(call_api)
    assert state["state"] == "needs_reauthorization" and state["cause"] == "access_denied"
    calls = len(meli.requests)
    assert_blocked_by_the_connection(verification(call_api, OTHER_REFLECTABLE))
    assert len(meli.requests) == calls
    [alert] = alerts(aws)
    assert alert["cause"] == "access_denied"


def test_not_owned_order_stays_another_sellers_sale(call_api: Api, aws: Aws, meli: MeliSimulator) -> None:
    report = verification(call_api, OTHER_SELLERS_SALE)
    assert report["reason"] == "sale_not_found"
    assert connection(call_api)["state"] == "active"
    assert verification(call_api, REFLECTABLE)["next_action"] == "relink"
    assert alerts(aws) == []


# --- item 9: the tokens must be the seller's -------------------------------------------------------------------------


def test_tokens_of_another_user_are_never_used(call_api: Api, aws: Aws, meli: MeliSimulator) -> None:
    stored = tokens().read(C)
    tokens().write(C, stored.model_copy(update={"user_id": 555000111}))
    meli.reset_log()
    report = verification(call_api, REFLECTABLE)
    assert_blocked_by_the_connection(report)
    assert meli.requests == []  # nothing of another seller was read
    assert connection(call_api)["cause"] == "token_owner_mismatch"
    assert len(alerts(aws)) == 1


# --- item 10: OAuth's 429 local_rate_limited is transient ----------------------------------------------------------


def test_an_oauth_429_is_retried_not_a_revocation(call_api: Api, aws: Aws, meli: MeliSimulator) -> None:
    stored = tokens().read(C)
    tokens().write(C, stored.model_copy(update={"expires_at": datetime.now(UTC) - timedelta(minutes=1)}))
    meli.add_fault(
        {
            "method": "POST",
            "path": f"^{OAUTH}$",
            "kind": "status",
            "status": 429,
            "error": "local_rate_limited",
            "message": "Inténtalo de nuevo en unos segundos",
            "times": 2,
        }
    )
    report = verification(call_api, REFLECTABLE)
    assert report["next_action"] == "relink", report
    assert [r.status for r in meli.requests if r.path == OAUTH] == [429, 429, 200]
    assert connection(call_api)["state"] == "active"
    assert alerts(aws) == []


@pytest.mark.parametrize("event_file", ["api/get-connection.json"])
def test_the_sample_event_reaches_the_route(aws: Aws, event_file: str) -> None:
    from functions.api.app import lambda_handler
    from tests.conftest import load_event

    response = lambda_handler(load_event(event_file), lambda_context())
    assert response["statusCode"] == 200 and json.loads(response["body"])["state"] == "active"
