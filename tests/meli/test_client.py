"""HttpMeliClient against the simulated ML over HTTP: reads, typed errors, retries, backoff and 401 refresh."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta, timezone
from typing import TYPE_CHECKING

import httpx
import pytest

from shared.meli.client import HttpMeliClient, HttpMeliClientFactory, format_meli_datetime
from shared.meli.deadline import MIN_TRY_SECONDS, meli_deadline
from shared.meli.errors import (
    MeliBadRequest,
    MeliForbidden,
    MeliNotFound,
    MeliRateLimited,
    MeliTimeout,
    MeliUnavailable,
)
from tests.meli.conftest import (
    CONNECTION_ID,
    ORDER_ID,
    OTHER_SELLER_ORDER_ID,
    PACK_ID,
    SELLER_ID,
    SHIPMENT_ID,
    count,
    order_json,
)

if TYPE_CHECKING:
    from devstack.simulator.server import MeliSimulator
    from shared.meli.tokens import TokenManager
    from shared.settings import Settings
    from tests.meli.conftest import Aws, ClientFactory, ManagerFactory, SleepRecorder

ORDER_PATH = f"^/orders/{ORDER_ID}$"


# --- Reads --------------------------------------------------------------------------------------------------------


def test_get_order_pack_and_shipment(simulator: MeliSimulator, make_client: ClientFactory) -> None:
    client = make_client()

    order = client.get_order(str(ORDER_ID))
    pack = client.get_pack(str(PACK_ID))
    shipment = client.get_shipment(str(SHIPMENT_ID))

    assert order.id == ORDER_ID
    assert order.status == "paid"
    assert order.seller.id == SELLER_ID
    assert order.order_items[0].item.id == "MLA1234567890"
    assert order.missing_sections == []
    assert pack.order_ids == [str(ORDER_ID)]
    assert shipment.tracking_number == "MEL44028792542FMXDF01"
    assert shipment.order_id == ORDER_ID
    assert client.request_count == 3
    assert client.retry_count == 0


def test_search_orders_sends_documented_params(simulator: MeliSimulator, make_client: ClientFactory) -> None:
    client = make_client()
    page = client.search_orders(
        seller_id=SELLER_ID,
        status="paid",
        updated_from=datetime(2024, 11, 1, 12, 0, tzinfo=UTC),
        updated_to=datetime(2024, 11, 1, 11, 0, tzinfo=timezone(timedelta(hours=-3))),
        offset=0,
        limit=50,
    )

    assert [o.id for o in page.results] == [ORDER_ID]
    assert page.paging.total == 1
    [recorded] = [r for r in simulator.requests if r.path == "/orders/search"]
    assert recorded.query == {
        "seller": str(SELLER_ID),
        "sort": "date_asc",
        "offset": "0",
        "limit": "50",
        "order.status": "paid",
        "order.date_last_updated.from": "2024-11-01T12:00:00.000-00:00",
        "order.date_last_updated.to": "2024-11-01T14:00:00.000-00:00",
    }


def test_format_meli_datetime() -> None:
    assert format_meli_datetime(datetime(2015, 7, 1, 0, 0, 0, 123456)) == "2015-07-01T00:00:00.123-00:00"
    assert format_meli_datetime(datetime(2015, 7, 1, 1, tzinfo=timezone(timedelta(hours=2)))) == (
        "2015-06-30T23:00:00.000-00:00"
    )


@pytest.mark.parametrize("bad_id", ["", "12a", "MEL44028792542FMXDF01", "²³", "١٢٣", " ", "1" * 21, "-1"])
def test_non_digit_ids_are_refused_without_a_request(
    simulator: MeliSimulator, make_client: ClientFactory, bad_id: str
) -> None:
    client = make_client()
    with pytest.raises(MeliBadRequest):
        client.get_order(bad_id)
    with pytest.raises(MeliBadRequest):
        client.get_pack(bad_id)
    with pytest.raises(MeliBadRequest):
        client.get_shipment(bad_id)
    assert client.request_count == 0
    assert simulator.requests == []


def test_search_paging_is_validated_before_any_request(simulator: MeliSimulator, make_client: ClientFactory) -> None:
    client = make_client()
    with pytest.raises(MeliBadRequest):
        client.search_orders(seller_id=SELLER_ID, limit=51)
    with pytest.raises(MeliBadRequest):
        client.search_orders(seller_id=SELLER_ID, offset=-1)
    assert simulator.requests == []


# --- Errors that are not retried --------------------------------------------------------------------------------------


def test_404_is_meli_not_found_with_path(simulator: MeliSimulator, make_client: ClientFactory) -> None:
    client = make_client()
    with pytest.raises(MeliNotFound) as caught:
        client.get_order("2000000000000001")
    assert caught.value.path == "/orders/2000000000000001"
    assert caught.value.status == 404
    assert caught.value.error == "order_not_found"
    assert not caught.value.transient
    assert client.request_count == 1

    with pytest.raises(MeliNotFound) as pack_missing:
        client.get_pack(str(ORDER_ID))  # an order id is not a pack id
    assert pack_missing.value.path == f"/packs/{ORDER_ID}"


def test_403_is_meli_forbidden(simulator: MeliSimulator, make_client: ClientFactory) -> None:
    client = make_client()
    with pytest.raises(MeliForbidden) as caught:
        client.get_order(str(OTHER_SELLER_ORDER_ID))
    assert caught.value.error == "not_owned_order"
    assert caught.value.path == f"/orders/{OTHER_SELLER_ORDER_ID}"
    assert client.request_count == 1
    assert client.retry_count == 0


def test_403_on_another_sellers_pack_is_meli_forbidden_not_a_connection_failure(
    simulator: MeliSimulator, make_client: ClientFactory
) -> None:
    """ML answers another seller's pack 403 with the order's message under the generic code ``forbidden`` (the
    DOC-PACKS table, meli-api.md §3, §13): a fact about the pack, not about the connection."""
    other_pack = 2000009876543227
    simulator.upsert_pack({"id": other_pack, "status": "released", "orders": [{"id": OTHER_SELLER_ORDER_ID}]})
    client = make_client()
    with pytest.raises(MeliForbidden) as caught:
        client.get_pack(str(other_pack))
    assert (caught.value.status, caught.value.error) == (403, "forbidden")
    assert caught.value.message == "The user has not access to the order"
    assert caught.value.path == f"/packs/{other_pack}"
    assert client.get_order(str(ORDER_ID)).id == ORDER_ID  # the connection still calls ML
    assert client.request_count == 2


def test_400_is_not_retried(simulator: MeliSimulator, make_client: ClientFactory) -> None:
    simulator.add_fault({"path": ORDER_PATH, "kind": "status", "status": 400})
    client = make_client()
    with pytest.raises(MeliBadRequest):
        client.get_order(str(ORDER_ID))
    assert count(simulator, "GET", ORDER_PATH, expect=1) == 1


# --- Transient failures -----------------------------------------------------------------------------------------------


def test_timeout_twice_then_success(
    simulator: MeliSimulator, make_client: ClientFactory, sleeps: SleepRecorder
) -> None:
    simulator.add_fault({"method": "GET", "path": ORDER_PATH, "kind": "timeout", "times": 2})
    client = make_client()

    order = client.get_order(str(ORDER_ID))

    assert order.id == ORDER_ID
    assert client.request_count == 3
    assert client.retry_count == 2
    assert count(simulator, "GET", ORDER_PATH, expect=3) == 3
    assert len(sleeps.delays) == 2
    # Full jitter: each delay is drawn in [0, base * 2^(n-1)].
    assert 0 <= sleeps.delays[0] <= 0.2
    assert 0 <= sleeps.delays[1] <= 0.4


def test_timeouts_exhaust_tries_as_meli_timeout(simulator: MeliSimulator, make_client: ClientFactory) -> None:
    simulator.add_fault({"method": "GET", "path": ORDER_PATH, "kind": "timeout"})
    client = make_client(max_tries=2)
    with pytest.raises(MeliTimeout) as caught:
        client.get_order(str(ORDER_ID))
    assert caught.value.transient
    assert caught.value.path == f"/orders/{ORDER_ID}"
    assert client.request_count == 2


def test_503_always_is_meli_unavailable_after_max_tries(
    simulator: MeliSimulator, make_client: ClientFactory, sleeps: SleepRecorder
) -> None:
    simulator.add_fault({"path": ORDER_PATH, "kind": "status", "status": 503})
    client = make_client(max_tries=3)

    with pytest.raises(MeliUnavailable) as caught:
        client.get_order(str(ORDER_ID))

    assert caught.value.status == 503
    assert caught.value.error == "service_not_available"
    assert count(simulator, "GET", ORDER_PATH, expect=3) == 3
    assert client.request_count == 3
    assert client.retry_count == 2
    assert len(sleeps.delays) == 2  # no sleep after the last try


def test_429_once_then_success(simulator: MeliSimulator, make_client: ClientFactory, sleeps: SleepRecorder) -> None:
    simulator.add_fault({"path": ORDER_PATH, "kind": "status", "status": 429, "times": 1})
    client = make_client(rng=random.Random(7))

    assert client.get_order(str(ORDER_ID)).id == ORDER_ID
    assert client.request_count == 2
    assert client.retry_count == 1
    assert count(simulator, "GET", ORDER_PATH, status=429, expect=1) == 1
    assert len(sleeps.delays) == 1 and 0 <= sleeps.delays[0] <= 0.2


def test_quota_429_is_typed_rate_limited(simulator: MeliSimulator, make_client: ClientFactory) -> None:
    simulator.set_quota(1)  # one request per second: the retries inside one call all meet the quota
    client = make_client()
    client.get_order(str(ORDER_ID))
    with pytest.raises(MeliRateLimited) as caught:
        client.get_order(str(ORDER_ID))
    assert caught.value.error == "too_many_requests"
    assert caught.value.transient


def test_connection_refused_is_meli_unavailable(
    settings: Settings, make_manager: ManagerFactory, http: httpx.Client, sleeps: SleepRecorder
) -> None:
    import socket

    with socket.socket() as probe:  # a loopback port nobody listens on
        probe.bind(("127.0.0.1", 0))
        port = probe.getsockname()[1]
    client = HttpMeliClient(
        CONNECTION_ID, base_url=f"http://127.0.0.1:{port}", tokens=make_manager(), http=http, sleep=sleeps
    )
    with pytest.raises(MeliUnavailable):
        client.get_order(str(ORDER_ID))
    assert client.request_count == 3


# --- What the simulator does not serve: Retry-After and 206 (in-process transport, same client code) ----------------


def _scripted_client(
    responses: list[httpx.Response], tokens: TokenManager, sleeps: SleepRecorder, seen: list[httpx.Request]
) -> HttpMeliClient:
    script = iter(responses)

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return next(script)

    return HttpMeliClient(
        CONNECTION_ID,
        base_url="http://meli.test",
        tokens=tokens,
        http=httpx.Client(transport=httpx.MockTransport(handler)),
        sleep=sleeps,
        backoff_cap=5.0,
    )


TOO_MANY = {"message": "Too Many Requests", "error": "too_many_requests", "status": 429, "cause": []}


def test_retry_after_is_honoured_and_capped(make_manager: ManagerFactory, sleeps: SleepRecorder) -> None:
    seen: list[httpx.Request] = []
    client = _scripted_client(
        [
            httpx.Response(429, json=TOO_MANY, headers={"Retry-After": "2"}),
            httpx.Response(429, json=TOO_MANY, headers={"Retry-After": "60"}),
            httpx.Response(200, json=order_json()),
        ],
        make_manager(),
        sleeps,
        seen,
    )
    assert client.get_order(str(ORDER_ID)).id == ORDER_ID
    assert sleeps.delays == [2.0, 10.0]  # 60 s capped at backoff_cap * 2
    assert client.request_count == 3


def test_rate_limited_error_carries_retry_after(make_manager: ManagerFactory, sleeps: SleepRecorder) -> None:
    seen: list[httpx.Request] = []
    limited = httpx.Response(429, json=TOO_MANY, headers={"Retry-After": "1.5"})
    client = _scripted_client([limited, limited, limited], make_manager(), sleeps, seen)
    with pytest.raises(MeliRateLimited) as caught:
        client.get_order(str(ORDER_ID))
    assert caught.value.retry_after == 1.5
    assert len(seen) == 3


def test_206_sets_missing_sections(make_manager: ManagerFactory, sleeps: SleepRecorder) -> None:
    seen: list[httpx.Request] = []
    partial = {k: v for k, v in order_json().items() if k != "buyer"}
    client = _scripted_client(
        [httpx.Response(206, json=partial, headers={"X-Content-Missing": "buyer, feedback"})],
        make_manager(),
        sleeps,
        seen,
    )
    order = client.get_order(str(ORDER_ID))
    assert order.missing_sections == ["buyer", "feedback"]
    assert order.buyer is None


def test_shipment_sends_x_format_new_and_bearer(make_manager: ManagerFactory, sleeps: SleepRecorder) -> None:
    seen: list[httpx.Request] = []
    client = _scripted_client(
        [httpx.Response(200, json={"id": SHIPMENT_ID, "status": "shipped"})], make_manager(), sleeps, seen
    )
    client.get_shipment(str(SHIPMENT_ID))
    assert seen[0].headers["x-format-new"] == "true"
    assert seen[0].headers["authorization"].startswith("Bearer APP_USR-")
    assert seen[0].url.path == f"/shipments/{SHIPMENT_ID}"


def test_unparseable_body_is_transient(make_manager: ManagerFactory, sleeps: SleepRecorder) -> None:
    seen: list[httpx.Request] = []
    client = _scripted_client([httpx.Response(200, text="<html>proxy</html>")], make_manager(), sleeps, seen)
    with pytest.raises(MeliUnavailable):
        client.get_order(str(ORDER_ID))


# --- Factory -------------------------------------------------------------------------------------------------------


def test_factory_shares_one_lazy_http_client(
    simulator: MeliSimulator, settings: Settings, make_manager: ManagerFactory, aws: Aws
) -> None:
    factory = HttpMeliClientFactory(settings, token_manager=make_manager())
    try:
        first = factory.for_connection(CONNECTION_ID)
        second = factory.for_connection(CONNECTION_ID)
        assert first._http is second._http
        assert first.get_order(str(ORDER_ID)).id == ORDER_ID
        assert CONNECTION_ID in repr(first) and "APP_USR" not in repr(first)
    finally:
        factory.close()


# --- The caller's deadline (shared.meli.deadline) ---------------------------------------------------------------------


def test_no_request_is_sent_without_time_left_before_the_callers_deadline(
    simulator: MeliSimulator, make_client: ClientFactory
) -> None:
    client = make_client()
    with meli_deadline(MIN_TRY_SECONDS / 2), pytest.raises(MeliTimeout, match="deadline") as caught:
        client.get_order(str(ORDER_ID))
    assert caught.value.transient  # the callers' own path for ML not answering
    assert count(simulator, "GET", ORDER_PATH, expect=0) == 0
    assert client.request_count == 0


def test_a_try_is_cut_to_the_time_left_and_not_retried_past_the_deadline(
    simulator: MeliSimulator, make_client: ClientFactory, sleeps: SleepRecorder
) -> None:
    """The simulator holds the answer for 1 s; the client would wait 5 s and try three times. With 0.8 s left, one
    try is sent, given 0.8 s, and neither a pause nor another try follows."""
    simulator.add_fault({"method": "GET", "path": ORDER_PATH, "kind": "timeout"})
    client = make_client(timeout=httpx.Timeout(5.0), max_tries=3)
    with meli_deadline(0.8), pytest.raises(MeliTimeout):
        client.get_order(str(ORDER_ID))
    assert count(simulator, "GET", ORDER_PATH, expect=1) == 1
    assert (client.request_count, client.retry_count, sleeps.delays) == (1, 0, [])


def test_without_a_deadline_the_same_slow_answer_is_waited_for(
    simulator: MeliSimulator, make_client: ClientFactory
) -> None:
    simulator.add_fault({"method": "GET", "path": ORDER_PATH, "kind": "latency", "ms": 600})
    client = make_client(timeout=httpx.Timeout(5.0))
    assert client.get_order(str(ORDER_ID)).id == ORDER_ID
    with meli_deadline(30.0):  # a deadline far enough away changes nothing
        assert client.get_order(str(ORDER_ID)).id == ORDER_ID
    assert client.request_count == 2
