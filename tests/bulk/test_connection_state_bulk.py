"""Issue #13 items 4, 5, 9 and 10 through the bulk path: the real API handler submits, the real worker handler runs the
messages moto's queue holds, the simulated Mercado Libre answers over HTTP. A connection that needs reauthorization
settles every item of a job with ``connection_needs_reauthorization`` without calling ML (beyond the calls that found
it out), pages the help desk once, and its sales are reflected by the next sweep once new tokens are stored. Each
test fails on the code before issue #13."""

from __future__ import annotations

import copy
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3

from devstack.seed import store_reconnected_tokens
from devstack.simulator.server import MeliSimulator
from shared.meli.tokens import SecretsManagerTokenStore
from tests.bulk.test_bulk import job, queued, run_worker, submit
from tests.conftest import SECRET_PREFIX, Aws, lambda_context

C = "mla-main"
TEMPLATE_ORDER = 2000009101000011  # paid, its product linked, active and synced
REASON = "connection_needs_reauthorization"


def new_sales(meli: MeliSimulator, count: int, base: int = 2000009700000000) -> list[str]:
    template = meli.order(TEMPLATE_ORDER)
    assert template is not None
    ids = []
    for n in range(count):
        order = copy.deepcopy(template)
        order["id"] = base + n
        order["pack_id"] = base + n
        order["shipping"] = {"id": None}
        meli.upsert_order(order)
        ids.append(str(order["id"]))
    return ids


def tokens() -> SecretsManagerTokenStore:
    return SecretsManagerTokenStore(boto3.client("secretsmanager"), SECRET_PREFIX)


def run_job(call_api: Any, aws: Aws, ids: list[str]) -> dict[str, Any]:
    status, body = submit(call_api, ids)
    assert status == 202, body
    run_worker(aws, queued(aws))
    return job(call_api, body["job_id"], limit="1000")


def outcomes(view: dict[str, Any]) -> set[tuple[str, str | None]]:
    return {(i["outcome"], i.get("reason")) for i in view["items"]}


def alerts(aws: Aws) -> list[dict[str, Any]]:
    return [m for m in aws.help_desk_messages() if m.get("kind") == REASON]


def calls_after(meli: MeliSimulator, status: int, path: str) -> list[Any]:
    """ML requests that started after the first answer ``status`` on ``path`` was sent."""
    first = next(r for r in meli.requests if r.status == status and r.path == path)
    ended = first.started_at + first.duration_ms / 1000
    return [r for r in meli.requests if r.started_at > ended]


def test_a_revoked_connection_with_30_pending_sales(call_api: Any, aws: Aws, meli: MeliSimulator) -> None:
    """The issue's fault-table row, at the handlers: 0 ML calls after the first invalid_grant, exactly one alert,
    every item terminal with connection_needs_reauthorization; after new tokens are stored, the next sweep reflects
    them."""
    from functions.error_sweep.app import lambda_handler as sweep

    ids = new_sales(meli, 30)
    meli.revoke(C)
    meli.reset_log()

    view = run_job(call_api, aws, ids)

    assert view["status"] == "completed" and view["counts"]["not_reflectable"] == 30, view["counts"]
    assert outcomes(view) == {("not_reflectable", REASON)}
    assert [r.status for r in meli.requests if r.path == "/oauth/token"] == [400]
    assert calls_after(meli, 400, "/oauth/token") == []
    assert len(alerts(aws)) == 1

    store_reconnected_tokens(tokens(), C, *meli.reconnect(C))
    swept = sweep({"connection_id": C}, lambda_context("sales-recovery-test-error-sweep"))["connections"][0]
    assert swept["resumed"] == 30 and set(swept["sale_ids"]) >= set(ids), swept  # and the scenario's due entry
    run_worker(aws, queued(aws))
    retried = {i["sale_id"]: i for i in job(call_api, swept["job_id"], limit="1000")["items"]}
    assert {retried[s]["outcome"] for s in ids} == {"reflected"}
    assert alerts(aws) == []  # nothing more for the help desk


def test_a_connection_level_403_settles_the_job_without_more_calls(
    call_api: Any, aws: Aws, meli: MeliSimulator
) -> None:
    ids = new_sales(meli, 30)
    meli.add_fault(
        {"path": "^/orders/20000097", "kind": "status", "status": 403, "error": "access_denied", "message": "blocked"}
    )
    meli.reset_log()

    view = run_job(call_api, aws, ids)

    assert outcomes(view) == {("not_reflectable", REASON)}, view["counts"]  # not sale_not_found
    assert len(meli.requests) <= 8  # at most the worker's threads' first reads, in flight when ML refused
    assert calls_after(meli, 403, meli.requests[0].path) == []
    assert len(alerts(aws)) == 1


def test_tokens_of_another_user_settle_the_job_without_any_call(call_api: Any, aws: Aws, meli: MeliSimulator) -> None:
    ids = new_sales(meli, 30)
    tokens().write(C, tokens().read(C).model_copy(update={"user_id": 555000111}))
    meli.reset_log()

    view = run_job(call_api, aws, ids)

    assert outcomes(view) == {("not_reflectable", REASON)}, view["counts"]
    assert meli.requests == []
    [alert] = alerts(aws)
    assert alert["cause"] == "token_owner_mismatch"


def test_an_oauth_429_during_a_job_is_retried_in_place(call_api: Any, aws: Aws, meli: MeliSimulator) -> None:
    ids = new_sales(meli, 30)
    stored = tokens().read(C)
    tokens().write(C, stored.model_copy(update={"expires_at": datetime.now(UTC) - timedelta(minutes=1)}))
    meli.add_fault(
        {
            "method": "POST",
            "path": "^/oauth/token$",
            "kind": "status",
            "status": 429,
            "error": "local_rate_limited",
            "times": 2,
        }
    )

    view = run_job(call_api, aws, ids)

    # Every sale reflected by the worker's own attempt: nothing handed to the state machine, nothing revoked.
    assert view["status"] == "completed" and outcomes(view) == {("reflected", None)}, view["counts"]
    assert {i["attempts"] for i in view["items"]} == {1}
    assert [r.status for r in meli.requests if r.path == "/oauth/token"] == [429, 429, 200]
    assert alerts(aws) == []
