"""Token refresh against the simulated ML (single-use refresh tokens) with moto Secrets Manager + DynamoDB leases."""

from __future__ import annotations

import logging
import threading
import traceback
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from shared.meli.errors import ConnectionNeedsReauthorization, MeliUnauthorized, TokenRefreshError
from shared.meli.tokens import TokensUnavailable, parse_tokens
from tests.meli.conftest import (
    ACCESS_TOKEN,
    CONNECTION_ID,
    ORDER_ID,
    REFRESH_TOKEN,
    count,
    initial_tokens,
)

if TYPE_CHECKING:
    from devstack.simulator.server import MeliSimulator
    from shared.meli.models import OAuthTokens
    from tests.meli.conftest import Aws, ClientFactory, ManagerFactory

OAUTH = "^/oauth/token$"
ORDER_PATH = f"^/orders/{ORDER_ID}$"


def test_current_reads_the_secret_and_caches_it(
    simulator: MeliSimulator, aws: Aws, make_manager: ManagerFactory
) -> None:
    manager = make_manager()
    first = manager.current(CONNECTION_ID)
    aws.secrets.delete_secret(
        SecretId=f"sales-recovery/test/connections/{CONNECTION_ID}", ForceDeleteWithoutRecovery=True
    )
    second = manager.current(CONNECTION_ID)  # served from memory: no Secrets Manager call per request
    assert first is second
    assert first.access_token == ACCESS_TOKEN
    assert first.version == 0


def test_expired_token_is_refreshed_once_and_persisted(
    simulator: MeliSimulator, aws: Aws, make_manager: ManagerFactory, make_client: ClientFactory
) -> None:
    simulator.expire_token(CONNECTION_ID)
    manager = make_manager()
    client = make_client(tokens=manager)

    assert client.get_order(str(ORDER_ID)).id == ORDER_ID

    assert count(simulator, "POST", OAUTH, expect=1) == 1
    assert manager.refresh_count == 1
    assert client.request_count == 3  # the 401, the OAuth refresh and the retry with the new token
    assert client.refresh_count == 1
    assert count(simulator, "GET", ORDER_PATH, status=401, expect=1) == 1
    new_access, new_refresh = simulator.tokens(CONNECTION_ID)
    stored = aws.stored_tokens()
    assert (stored.access_token, stored.refresh_token) == (new_access, new_refresh)
    assert stored.version == 1
    assert stored.user_id == 123456789
    assert stored.expires_at > datetime.now(UTC) + timedelta(hours=5)
    assert "refresh_lock_owner" not in aws.lock_item()  # the lease is released

    # The next call uses the cached new token: no more refreshes.
    client.get_order(str(ORDER_ID))
    assert count(simulator, "POST", OAUTH, expect=1) == 1


def test_token_past_expires_at_is_refreshed_before_the_request(
    simulator: MeliSimulator, aws: Aws, make_manager: ManagerFactory, make_client: ClientFactory
) -> None:
    aws.store_tokens(initial_tokens(expires_at=datetime.now(UTC) - timedelta(minutes=1), version=4))
    client = make_client(tokens=make_manager())

    client.get_order(str(ORDER_ID))

    assert count(simulator, "POST", OAUTH, expect=1) == 1
    assert count(simulator, "GET", ORDER_PATH, status=401, expect=0) == 0
    assert (client.request_count, client.refresh_count) == (2, 1)
    assert aws.stored_tokens().version == 5


def test_token_expired_fault_refreshes_once(
    simulator: MeliSimulator, make_manager: ManagerFactory, make_client: ClientFactory
) -> None:
    simulator.add_fault({"path": ORDER_PATH, "kind": "token_expired", "times": 1})
    client = make_client(tokens=make_manager())
    assert client.get_order(str(ORDER_ID)).id == ORDER_ID
    assert count(simulator, "POST", OAUTH, expect=1) == 1


def test_second_401_after_refresh_is_unauthorized(
    simulator: MeliSimulator, make_manager: ManagerFactory, make_client: ClientFactory
) -> None:
    simulator.add_fault({"path": ORDER_PATH, "kind": "status", "status": 401})
    client = make_client(tokens=make_manager())
    with pytest.raises(MeliUnauthorized) as caught:
        client.get_order(str(ORDER_ID))
    assert not caught.value.transient
    assert count(simulator, "POST", OAUTH, expect=1) == 1
    assert client.request_count == 3


def _race(count: int, make_manager: ManagerFactory, work: Any) -> list[Any]:
    """Run ``work(manager)`` in ``count`` threads at once, each with its own TokenManager (its own "container")."""
    managers = [make_manager(isolated=True) for _ in range(count)]
    barrier = threading.Barrier(count)
    results: list[Any] = [None] * count

    def run(i: int) -> None:
        barrier.wait()
        try:
            results[i] = work(managers[i])
        except Exception as exc:  # collected and asserted by the test
            results[i] = exc

    threads = [threading.Thread(target=run, args=(i,)) for i in range(count)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    return results


@pytest.mark.parametrize("threads", [2, 8])
def test_concurrent_refreshes_spend_the_refresh_token_once(
    threads: int, simulator: MeliSimulator, aws: Aws, make_manager: ManagerFactory
) -> None:
    stale = aws.stored_tokens()

    results = _race(threads, make_manager, lambda m: m.refresh(CONNECTION_ID, stale))

    assert count(simulator, "POST", OAUTH, expect=1) == 1, [(r.path, r.status) for r in simulator.requests]
    new_access, new_refresh = simulator.tokens(CONNECTION_ID)
    for result in results:
        assert not isinstance(result, Exception), "".join(traceback.format_exception(result))
        assert result.access_token == new_access
        assert result.refresh_token == new_refresh
        assert result.version == 1
    assert aws.stored_tokens().version == 1
    assert "refresh_lock_owner" not in aws.lock_item()


@pytest.mark.parametrize("threads", [2, 8])
def test_concurrent_401s_from_many_containers_refresh_once(
    threads: int, simulator: MeliSimulator, aws: Aws, make_manager: ManagerFactory, make_client: ClientFactory
) -> None:
    simulator.expire_token(CONNECTION_ID)

    def work(manager: Any) -> OAuthTokens:
        client = make_client(tokens=manager)
        client.get_order(str(ORDER_ID))
        tokens: OAuthTokens = manager.current(CONNECTION_ID)
        return tokens

    results = _race(threads, make_manager, work)

    assert count(simulator, "POST", OAUTH, expect=1) == 1
    assert count(simulator, "POST", OAUTH, status=400, expect=0) == 0
    new_access, _ = simulator.tokens(CONNECTION_ID)
    for result in results:
        assert not isinstance(result, Exception), "".join(traceback.format_exception(result))
        assert result.access_token == new_access
    assert count(simulator, "GET", ORDER_PATH, status=200, expect=threads) == threads


def test_threads_sharing_one_manager_refresh_once(
    simulator: MeliSimulator, aws: Aws, make_manager: ManagerFactory
) -> None:
    manager = make_manager()
    stale = aws.stored_tokens()
    results: list[Any] = []
    threads = [threading.Thread(target=lambda: results.append(manager.refresh(CONNECTION_ID, stale))) for _ in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=30)
    assert count(simulator, "POST", OAUTH, expect=1) == 1
    assert {r.version for r in results} == {1}
    assert manager.refresh_count == 1


def test_refresh_rotated_behind_our_back_needs_reauthorization(
    simulator: MeliSimulator, aws: Aws, make_manager: ManagerFactory, make_client: ClientFactory
) -> None:
    # Someone spends our refresh token and never stores the result (e.g. a script with a copy of the secret): the
    # stored refresh token is refused (invalid_grant) and nobody stored a newer one, so only the seller can help.
    # Before issue #13 this was a transient TokenRefreshError, retried (and escalated) sale by sale.
    stolen = httpx.post(
        f"{simulator.url}/oauth/token",
        data={"grant_type": "refresh_token", "client_id": "1", "client_secret": "x", "refresh_token": REFRESH_TOKEN},
    )
    assert stolen.status_code == 200
    client = make_client(tokens=make_manager())

    with pytest.raises(ConnectionNeedsReauthorization) as caught:
        client.get_order(str(ORDER_ID))

    assert not caught.value.transient
    assert caught.value.cause_code == "invalid_grant"
    assert caught.value.status == 400
    assert count(simulator, "POST", OAUTH, status=400, expect=1) == 1
    stored = aws.stored_tokens()
    assert stored.version == 0 and stored.refresh_token == REFRESH_TOKEN  # nothing half-written
    row = aws.lock_item()
    assert "refresh_lock_owner" not in row
    assert row["state"] == "needs_reauthorization" and row["revoked_token_version"] == 0
    assert row["alert_due"] is True  # no help desk configured here: the error sweep sends it


def test_waiting_for_a_held_lease_times_out(simulator: MeliSimulator, aws: Aws, make_manager: ManagerFactory) -> None:
    assert aws.connections.acquire_refresh_lock(CONNECTION_ID, "another-lambda", 60)
    manager = make_manager(wait_seconds=0.2)
    with pytest.raises(TokenRefreshError, match="waiting for another token refresh"):
        manager.refresh(CONNECTION_ID, aws.stored_tokens())
    assert count(simulator, "POST", OAUTH, expect=0) == 0


def test_waiter_uses_tokens_stored_by_the_lease_holder(
    simulator: MeliSimulator, aws: Aws, make_manager: ManagerFactory
) -> None:
    stale = aws.stored_tokens()
    assert aws.connections.acquire_refresh_lock(CONNECTION_ID, "another-lambda", 60)
    newer = initial_tokens(version=1).model_copy(update={"access_token": "APP_USR-from-the-other-lambda"})
    timer = threading.Timer(0.1, aws.store_tokens, args=(newer,))
    timer.start()
    try:
        got = make_manager(wait_seconds=5).refresh(CONNECTION_ID, stale)
    finally:
        timer.join()
    assert got.access_token == "APP_USR-from-the-other-lambda"
    assert count(simulator, "POST", OAUTH, expect=0) == 0


def test_unknown_connection_fails_fast(simulator: MeliSimulator, aws: Aws, make_manager: ManagerFactory) -> None:
    aws.secrets.create_secret(
        Name="sales-recovery/test/connections/ghost",
        SecretString=aws.secrets.get_secret_value(SecretId=f"sales-recovery/test/connections/{CONNECTION_ID}")[
            "SecretString"
        ],
    )
    stale = aws.token_store().read("ghost")
    with pytest.raises(TokensUnavailable):
        make_manager(wait_seconds=5).refresh("ghost", stale)


def test_missing_secret_is_tokens_unavailable(simulator: MeliSimulator, aws: Aws, make_manager: ManagerFactory) -> None:
    with pytest.raises(TokensUnavailable) as caught:
        make_manager().current("nobody")
    assert not caught.value.transient


def test_invalid_secret_never_echoes_its_content() -> None:
    with pytest.raises(TokensUnavailable) as caught:
        parse_tokens('{"access_token": "APP_USR-leak", "refresh_token": "TG-leak", "expires_at": "soon"}', "c1")
    text = str(caught.value) + repr(caught.value)
    assert "leak" not in text
    assert caught.value.__cause__ is None and caught.value.__suppress_context__


def test_no_token_in_logs_or_reprs(
    simulator: MeliSimulator,
    aws: Aws,
    make_manager: ManagerFactory,
    make_client: ClientFactory,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    # botocore's own DEBUG output prints whole Secrets Manager responses; production never runs it at DEBUG.
    caplog.set_level(logging.INFO, logger="botocore")
    simulator.expire_token(CONNECTION_ID)
    simulator.add_fault({"path": ORDER_PATH, "kind": "status", "status": 503, "times": 1})
    manager = make_manager()
    client = make_client(tokens=manager)

    client.get_order(str(ORDER_ID))
    # And a failing refresh, whose error must not quote the token it spent.
    simulator.expire_token(CONNECTION_ID)
    httpx.post(
        f"{simulator.url}/oauth/token",
        data={
            "grant_type": "refresh_token",
            "client_id": "1",
            "client_secret": "x",
            "refresh_token": simulator.tokens(CONNECTION_ID)[1],
        },
    )
    with pytest.raises(ConnectionNeedsReauthorization) as failed:
        client.get_order(str(ORDER_ID))

    new_access, new_refresh = aws.stored_tokens().access_token, aws.stored_tokens().refresh_token
    secrets = [ACCESS_TOKEN, REFRESH_TOKEN, new_access, new_refresh, *simulator.tokens(CONNECTION_ID), "s3cr3t-app"]
    captured = capsys.readouterr()
    records = " ".join(f"{r.getMessage()} {r.__dict__}" for r in caplog.records)
    haystack = "\n".join(
        [
            caplog.text,
            records,
            captured.out,
            captured.err,
            str(failed.value),
            repr(failed.value),
            repr(manager),
            repr(client),
            repr(aws.stored_tokens()),
            str(aws.stored_tokens()),
        ]
    )
    assert any("meli request" in r.getMessage() for r in caplog.records)  # the logs exist and were scanned
    for secret in secrets:
        assert secret not in haystack
