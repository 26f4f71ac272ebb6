"""Fixtures for the ML client tests: the real simulated ML over HTTP, moto for Secrets Manager and DynamoDB."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import boto3
import httpx
import pytest
from moto import mock_aws  # imported before any boto3 client is created

from devstack.simulator.scenario import Scenario
from devstack.simulator.server import MeliSimulator
from devstack.template import create_tables
from shared.meli.client import HttpMeliClient, build_token_manager
from shared.meli.models import OAuthTokens
from shared.meli.tokens import SecretsManagerTokenStore, TokenManager, dump_tokens
from shared.models import Connection
from shared.settings import Settings
from shared.stores.connections import DynamoConnectionStore

CONNECTION_ID = "mla-main"
SELLER_ID = 123456789
OTHER_SELLER_ID = 987654321
ORDER_ID = 2000001234567890
OTHER_SELLER_ORDER_ID = 2000005555555555
PACK_ID = 2000009876543210
SHIPMENT_ID = 44028792542
ACCESS_TOKEN = "APP_USR-1234567890123456-010101-0123456789abcdef0123456789abcdef-123456789"
REFRESH_TOKEN = "TG-0123456789abcdef01234567-123456789"
APP_SECRET_ID = "sales-recovery/test/meli-app"
TOKEN_PREFIX = "sales-recovery/test/connections/"
CLIENT_TIMEOUT = 0.3
OAUTH_TIMEOUT = 10.0


def order_json(order_id: int = ORDER_ID, seller_id: int = SELLER_ID) -> dict[str, Any]:
    return {
        "id": order_id,
        "status": "paid",
        "status_detail": None,
        "date_created": "2024-11-01T09:34:59.000-04:00",
        "date_closed": "2024-11-01T09:35:43.000-04:00",
        "last_updated": "2024-11-01T09:37:20.000-04:00",
        "pack_id": PACK_ID,
        "seller": {"id": seller_id},
        "buyer": {"id": 6427433},
        "order_items": [
            {
                "item": {"id": "MLA1234567890", "title": "Widget", "variation_id": None, "seller_sku": "SKU-1"},
                "quantity": 2,
                "unit_price": 62.96,
                "currency_id": "ARS",
            }
        ],
        "payments": [{"id": 91776699099, "status": "approved", "status_detail": "accredited"}],
        "shipping": {"id": SHIPMENT_ID},
        "tags": ["pack_order", "paid"],
        "total_amount": 125.92,
        "currency_id": "ARS",
    }


def scenario_data() -> dict[str, Any]:
    return {
        "connections": [
            {
                "connection_id": CONNECTION_ID,
                "seller_id": SELLER_ID,
                "site_id": "MLA",
                "access_token": ACCESS_TOKEN,
                "refresh_token": REFRESH_TOKEN,
                "expires_in": 21600,
            }
        ],
        "orders": [order_json(), order_json(OTHER_SELLER_ORDER_ID, OTHER_SELLER_ID)],
        "packs": [{"id": PACK_ID, "status": "released", "orders": [{"id": ORDER_ID}], "shipment": {"id": SHIPMENT_ID}}],
        "shipments": [
            {
                "id": SHIPMENT_ID,
                "order_id": ORDER_ID,
                "status": "ready_to_ship",
                "substatus": "printed",
                "tracking_number": "MEL44028792542FMXDF01",
            }
        ],
    }


@pytest.fixture
def simulator() -> Iterator[MeliSimulator]:
    with MeliSimulator(Scenario.model_validate(scenario_data()), timeout_hold_seconds=1.0) as sim:
        yield sim


# DynamoDB applies a conditional write atomically; moto's in-process backend does not (check and write can interleave
# between threads: 8 threads racing for a free lease see two winners in about half the rounds). This lock restores
# DynamoDB's guarantee for the moto backend only; the TokenManager's own logic still races freely.
_MOTO_ATOMIC = threading.Lock()


class AtomicDynamoConnectionStore(DynamoConnectionStore):
    def acquire_refresh_lock(self, connection_id: str, owner: str, ttl_seconds: int) -> bool:
        with _MOTO_ATOMIC:
            return super().acquire_refresh_lock(connection_id, owner, ttl_seconds)

    def release_refresh_lock(self, connection_id: str, owner: str) -> None:
        with _MOTO_ATOMIC:
            super().release_refresh_lock(connection_id, owner)


@dataclass
class Aws:
    secrets: Any
    connections: DynamoConnectionStore
    connections_table: str

    def token_store(self) -> SecretsManagerTokenStore:
        return SecretsManagerTokenStore(self.secrets, TOKEN_PREFIX)

    def stored_tokens(self) -> OAuthTokens:
        return self.token_store().read(CONNECTION_ID)

    def store_tokens(self, tokens: OAuthTokens) -> None:
        self.token_store().write(CONNECTION_ID, tokens)

    def new_connection_store(self) -> DynamoConnectionStore:
        """A store with its own boto3 resource, as another Lambda container would have (resources are per thread)."""
        table = boto3.session.Session().resource("dynamodb").Table(self.connections_table)
        return AtomicDynamoConnectionStore(table)

    def new_secrets_client(self) -> Any:
        return boto3.session.Session().client("secretsmanager")

    def lock_item(self) -> dict[str, Any]:
        table = boto3.resource("dynamodb").Table(self.connections_table)
        item: dict[str, Any] = table.get_item(Key={"connection_id": CONNECTION_ID}, ConsistentRead=True)["Item"]
        return item


def initial_tokens(*, expires_at: datetime | None = None, version: int = 0) -> OAuthTokens:
    return OAuthTokens(
        access_token=ACCESS_TOKEN,
        refresh_token=REFRESH_TOKEN,
        expires_at=expires_at or datetime.now(UTC) + timedelta(hours=6),
        user_id=SELLER_ID,
        version=version,
    )


@pytest.fixture
def aws(monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    monkeypatch.delenv("AWS_PROFILE", raising=False)
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.setenv("AWS_SESSION_TOKEN", "testing")
    with mock_aws():
        names = create_tables(boto3.client("dynamodb"), stage="test")
        table_name = names["ConnectionsTable"]
        connections = AtomicDynamoConnectionStore(boto3.resource("dynamodb").Table(table_name))
        connections.put(
            Connection(
                connection_id=CONNECTION_ID,
                seller_id=SELLER_ID,
                site_id="MLA",
                secret_id=f"{TOKEN_PREFIX}{CONNECTION_ID}",
            )
        )
        secrets = boto3.client("secretsmanager")
        secrets.create_secret(
            Name=APP_SECRET_ID, SecretString=json.dumps({"client_id": "1234567890", "client_secret": "s3cr3t-app"})
        )
        secrets.create_secret(Name=f"{TOKEN_PREFIX}{CONNECTION_ID}", SecretString=dump_tokens(initial_tokens()))
        yield Aws(secrets=secrets, connections=connections, connections_table=table_name)


@pytest.fixture
def settings(simulator: MeliSimulator) -> Settings:
    return Settings(
        stage="test",
        meli_api_url=simulator.url,
        meli_timeout_seconds=CLIENT_TIMEOUT,
        meli_max_tries=3,
        meli_app_secret_id=APP_SECRET_ID,
        meli_connection_secret_prefix=TOKEN_PREFIX,
    )


@pytest.fixture
def http() -> Iterator[httpx.Client]:
    with httpx.Client(timeout=CLIENT_TIMEOUT) as client:
        yield client


@dataclass
class SleepRecorder:
    """Stands in for time.sleep: records the requested delays and does not wait, so backoff costs no test time."""

    delays: list[float] = field(default_factory=list)

    def __call__(self, seconds: float) -> None:
        self.delays.append(seconds)


@pytest.fixture
def sleeps() -> SleepRecorder:
    return SleepRecorder()


ManagerFactory = Callable[..., TokenManager]
ClientFactory = Callable[..., HttpMeliClient]


@pytest.fixture
def make_manager(settings: Settings, aws: Aws, http: httpx.Client) -> ManagerFactory:
    """A TokenManager as one Lambda container builds it. ``isolated=True`` gives it its own boto3 clients."""

    # The refresh's own timeout is generous: on a loaded 2-core machine a 0.3 s refresh can lose its answer, which
    # (single-use refresh tokens) really does cost the connection its tokens; no test here times a refresh out.
    oauth_settings = settings.model_copy(update={"meli_timeout_seconds": OAUTH_TIMEOUT})

    def make(*, isolated: bool = False, **kwargs: Any) -> TokenManager:
        # Generous waits: on a loaded 2-core CI machine eight pollers must not starve the lease holder.
        options: dict[str, Any] = {"poll_seconds": 0.05, "wait_seconds": 30.0, "sleep": time.sleep}
        options.update(kwargs)
        if isolated:
            return build_token_manager(
                oauth_settings,
                secrets_client=aws.new_secrets_client(),
                connections=aws.new_connection_store(),
                http=http,
                **options,
            )
        return build_token_manager(
            oauth_settings, secrets_client=aws.secrets, connections=aws.connections, http=http, **options
        )

    return make


@pytest.fixture
def make_client(
    settings: Settings, make_manager: ManagerFactory, http: httpx.Client, sleeps: SleepRecorder
) -> ClientFactory:
    def make(*, tokens: TokenManager | None = None, **kwargs: Any) -> HttpMeliClient:
        options: dict[str, Any] = {
            "base_url": settings.meli_api_url,
            "http": http,
            "max_tries": settings.meli_max_tries,
            "sleep": sleeps,
            "timeout": httpx.Timeout(settings.meli_timeout_seconds),
        }
        options.update(kwargs)
        return HttpMeliClient(CONNECTION_ID, tokens=tokens or make_manager(), **options)

    return make


def count(
    simulator: MeliSimulator,
    method: str | None = None,
    path_regex: str | None = None,
    status: int | None = None,
    *,
    expect: int,
    within: float = 2.0,
) -> int:
    """The simulator's request count, once it reaches ``expect`` (or after ``within`` seconds).

    The simulator appends to its log after it has written the answer, so a count read right after the client
    returns can miss the last request by a few microseconds.
    """
    deadline = time.monotonic() + within
    while True:
        seen = simulator.count(method, path_regex, status)
        if seen >= expect or time.monotonic() >= deadline:
            if seen == expect:
                time.sleep(0.02)  # a late extra request would show here
                seen = simulator.count(method, path_regex, status)
            return seen
        time.sleep(0.005)
