"""Issue #13 items 4, 5, 9 and 10 at the ML client and the token manager, against the simulated ML over HTTP:
which refusals are about the connection (and stop every ML call for it), which are not, and what is retried."""

from __future__ import annotations

import threading
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pytest

from shared.meli.errors import ConnectionNeedsReauthorization, MeliForbidden, TokenRefreshError
from shared.meli.tokens import OAuthRefresher, SecretsManagerAppCredentials, TokenManager
from shared.models import Connection
from tests.meli.conftest import (
    APP_SECRET_ID,
    CONNECTION_ID,
    ORDER_ID,
    OTHER_SELLER_ID,
    OTHER_SELLER_ORDER_ID,
    REFRESH_TOKEN,
    TOKEN_PREFIX,
    count,
    initial_tokens,
)

if TYPE_CHECKING:
    import httpx

    from devstack.simulator.server import MeliSimulator
    from shared.settings import Settings
    from tests.meli.conftest import Aws, ClientFactory, ManagerFactory, SleepRecorder

OAUTH = "^/oauth/token$"
ACCESS_DENIED = {
    "path": f"^/orders/{ORDER_ID}$",
    "kind": "status",
    "status": 403,
    "error": "access_denied",
    "message": "access to the requested resource is forbidden",
}


def expired() -> datetime:
    return datetime.now(UTC) - timedelta(minutes=5)


# --- item 4: a 403 is "another seller's order" only with not_owned_order ---------------------------------------------


def test_not_owned_order_is_about_the_order(
    simulator: MeliSimulator, aws: Aws, make_client: ClientFactory, make_manager: ManagerFactory
) -> None:
    manager = make_manager()
    with pytest.raises(MeliForbidden):
        make_client(tokens=manager).get_order(str(OTHER_SELLER_ORDER_ID))
    assert aws.lock_item().get("state", "active") == "active"
    make_client(tokens=manager).get_order(str(ORDER_ID))  # the connection goes on


def test_a_forbidden_that_says_the_order_is_not_ours_is_about_the_order(
    simulator: MeliSimulator, aws: Aws, make_client: ClientFactory, make_manager: ManagerFactory
) -> None:
    """The packs resource's not-owned 403 has the generic code (DOC-PACKS): its message, not its code, tells."""
    body = {"error": "forbidden", "message": "The user has not access to the order"}
    simulator.add_fault({"path": f"^/orders/{ORDER_ID}$", "kind": "status", "status": 403, **body, "times": 1})
    manager = make_manager()
    with pytest.raises(MeliForbidden):
        make_client(tokens=manager).get_order(str(ORDER_ID))
    assert aws.lock_item().get("state", "active") == "active"
    assert make_client(tokens=manager).get_order(str(ORDER_ID)).id == ORDER_ID


@pytest.mark.parametrize(
    "body",
    [
        {"error": "access_denied", "message": "access to the requested resource is forbidden"},
        {"error": "Invalid scopes"},
        {"error": "forbidden", "message": "The caller is not authorized; IP not allowed"},
    ],
)
def test_any_other_403_stops_the_connection(
    body: dict[str, str], simulator: MeliSimulator, aws: Aws, make_client: ClientFactory
) -> None:
    simulator.add_fault({"path": f"^/orders/{ORDER_ID}$", "kind": "status", "status": 403, **body})
    client = make_client()
    with pytest.raises(ConnectionNeedsReauthorization) as caught:
        client.get_order(str(ORDER_ID))
    assert caught.value.cause_code == body["error"] and not caught.value.transient
    row = aws.lock_item()
    assert row["state"] == "needs_reauthorization" and row["state_cause"] == body["error"]

    simulator.reset_log()
    with pytest.raises(ConnectionNeedsReauthorization):
        client.get_order(str(OTHER_SELLER_ORDER_ID))  # any other call of the connection: refused here
    assert simulator.requests == []


def test_a_request_that_waited_for_a_quota_token_is_not_sent_once_another_thread_met_a_refusal(
    simulator: MeliSimulator, aws: Aws, make_client: ClientFactory, make_manager: ManagerFactory
) -> None:
    """The gate is asked again after the wait for a token: while this thread waited, another one of the process
    met ML's refusal and wrote the verdict (here, inside the wait)."""
    manager = make_manager()
    make_client(tokens=manager).get_order(str(ORDER_ID))  # ML accepted the connection: requests run freely

    class RefusedWhileWaiting:
        def acquire(self, key: str) -> None:
            manager.gate.revoke(key, token_version=0, cause="invalid_grant", message="revoked (another thread)")

    client = make_client(tokens=manager, limiter=RefusedWhileWaiting())
    simulator.reset_log()
    with pytest.raises(ConnectionNeedsReauthorization):
        client.get_order(str(ORDER_ID))
    assert simulator.requests == []


def test_a_thread_asking_while_a_refusal_is_being_decided_waits_for_the_verdict(
    aws: Aws, make_manager: ManagerFactory
) -> None:
    gate = make_manager().gate
    gate.require_active(CONNECTION_ID)  # active, and cached as such
    entered, outcome = threading.Event(), []

    def ask() -> None:
        entered.set()
        try:
            gate.require_active(CONNECTION_ID)
            outcome.append("sent")
        except ConnectionNeedsReauthorization:
            outcome.append("refused")

    with gate.deciding(CONNECTION_ID):
        asker = threading.Thread(target=ask)
        asker.start()
        entered.wait(5)
        asker.join(0.3)
        assert asker.is_alive() and outcome == []  # it waits: the cached "active" is not trusted meanwhile
        gate.revoke(CONNECTION_ID, token_version=0, cause="invalid_grant", message="revoked")
    asker.join(5)
    assert outcome == ["refused"]


# --- item 5: invalid_grant after re-reading the stored tokens ------------------------------------------------------


def test_a_revoked_connection_makes_one_refresh_and_then_no_call(
    simulator: MeliSimulator, aws: Aws, make_client: ClientFactory, make_manager: ManagerFactory
) -> None:
    simulator.revoke(CONNECTION_ID)
    manager = make_manager()
    for _ in range(3):
        with pytest.raises(ConnectionNeedsReauthorization):
            make_client(tokens=manager).get_order(str(ORDER_ID))
    assert [(r.method, r.status) for r in simulator.requests] == [("GET", 401), ("POST", 400)]
    # Another container (its own manager and clients) reads the row: no call either.
    with pytest.raises(ConnectionNeedsReauthorization):
        make_client(tokens=make_manager(isolated=True)).get_order(str(ORDER_ID))
    assert len(simulator.requests) == 2


def test_invalid_grant_after_another_worker_refreshed_uses_its_tokens(
    simulator: MeliSimulator, aws: Aws, settings: Settings, http: httpx.Client
) -> None:
    """Our refresh token is refused because another worker refreshed between our read and our call (a lease that
    ran out under load): the tokens it stored are used, and the connection stays active."""
    aws.store_tokens(initial_tokens(expires_at=expired()))
    credentials = SecretsManagerAppCredentials(aws.secrets, APP_SECRET_ID)
    oauth = OAuthRefresher(http, base_url=settings.meli_api_url)

    def racing_refresher(refresh_token: str, app: Any) -> dict[str, Any]:
        other = oauth(REFRESH_TOKEN, app)  # the other worker spends the token first and stores the new pair
        aws.store_tokens(
            initial_tokens(version=1).model_copy(
                update={"access_token": other["access_token"], "refresh_token": other["refresh_token"]}
            )
        )
        return oauth(refresh_token, app)  # ours: invalid_grant

    manager = TokenManager(aws.token_store(), aws.connections, racing_refresher, credentials)
    got = manager.current(CONNECTION_ID)

    assert got.version == 1 and got.access_token == simulator.tokens(CONNECTION_ID)[0]
    assert count(simulator, "POST", OAUTH, status=400, expect=1) == 1
    assert aws.lock_item().get("state", "active") == "active"


# --- item 9: the tokens must belong to the connection's seller ---------------------------------------------------


def test_stored_tokens_of_another_user_are_never_used(
    simulator: MeliSimulator, aws: Aws, make_client: ClientFactory
) -> None:
    aws.store_tokens(initial_tokens().model_copy(update={"user_id": OTHER_SELLER_ID}))
    with pytest.raises(ConnectionNeedsReauthorization) as caught:
        make_client().get_order(str(ORDER_ID))
    assert caught.value.cause_code == "token_owner_mismatch"
    assert simulator.requests == []
    assert aws.lock_item()["state_cause"] == "token_owner_mismatch"


def test_a_refresh_answering_another_user_is_not_stored(
    simulator: MeliSimulator, aws: Aws, make_client: ClientFactory
) -> None:
    # The platform's row says seller 987654321; ML's refresh answer says the tokens are user 123456789's.
    aws.connections.put(
        Connection(
            connection_id=CONNECTION_ID,
            seller_id=OTHER_SELLER_ID,
            site_id="MLA",
            secret_id=f"{TOKEN_PREFIX}{CONNECTION_ID}",
        )
    )
    aws.store_tokens(initial_tokens(expires_at=expired()).model_copy(update={"user_id": None}))
    with pytest.raises(ConnectionNeedsReauthorization) as caught:
        make_client().get_order(str(OTHER_SELLER_ORDER_ID))
    assert caught.value.cause_code == "token_owner_mismatch"
    assert [(r.method, r.status) for r in simulator.requests] == [("POST", 200)]  # no order was read
    assert aws.stored_tokens().version == 0  # another user's tokens are never stored
    assert aws.lock_item()["state"] == "needs_reauthorization"


# --- item 10: OAuth's 429 local_rate_limited is transient ----------------------------------------------------------


def test_oauth_429_is_retried_with_backoff(
    simulator: MeliSimulator, aws: Aws, make_client: ClientFactory, make_manager: ManagerFactory
) -> None:
    aws.store_tokens(initial_tokens(expires_at=expired()))
    simulator.add_fault(
        {"method": "POST", "path": OAUTH, "kind": "status", "status": 429, "error": "local_rate_limited", "times": 2}
    )
    sleeps: list[float] = []
    manager = make_manager()
    manager._refresher._sleep = sleeps.append  # type: ignore[attr-defined]
    make_client(tokens=manager).get_order(str(ORDER_ID))
    assert [r.status for r in simulator.requests if r.path == "/oauth/token"] == [429, 429, 200]
    assert len(sleeps) == 2 and all(0 <= s <= 4 for s in sleeps)
    assert aws.stored_tokens().version == 1
    assert aws.lock_item().get("state", "active") == "active"


def test_oauth_429_that_persists_stays_transient(
    simulator: MeliSimulator, aws: Aws, make_client: ClientFactory, make_manager: ManagerFactory, sleeps: SleepRecorder
) -> None:
    aws.store_tokens(initial_tokens(expires_at=expired()))
    simulator.add_fault(
        {"method": "POST", "path": OAUTH, "kind": "status", "status": 429, "error": "local_rate_limited"}
    )
    manager = make_manager()
    manager._refresher._sleep = sleeps  # type: ignore[attr-defined]
    with pytest.raises(TokenRefreshError) as caught:
        make_client(tokens=manager).get_order(str(ORDER_ID))
    assert caught.value.transient and caught.value.error == "local_rate_limited"
    assert aws.lock_item().get("state", "active") == "active"
    assert aws.stored_tokens().refresh_token == REFRESH_TOKEN  # nothing spent
