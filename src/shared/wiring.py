"""Builds the service from configuration. Clients are created once per warm container, only those a function uses."""

from __future__ import annotations

import os
import threading
from collections.abc import Callable
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Generic, TypeVar, cast

from shared.settings import Settings

if TYPE_CHECKING:
    from shared.bulk import BulkService
    from shared.jobs import JobStore
    from shared.meli.port import MarketplaceClient, MarketplaceClientFactory
    from shared.missed_feeds import MissedFeedsService
    from shared.notifications import NotificationIntake
    from shared.recovery import RecoveryService
    from shared.schedules import ScheduleService
    from shared.usecases.notified_sales import NotifiedSales

T = TypeVar("T")

# boto3's default session is not thread-safe: lazy builds (bulk runs the service on threads) go one at a time.
_BUILD_LOCK = threading.RLock()


class _Once(Generic[T]):
    """A value built on first use, once."""

    def __init__(self, build: Callable[[], T]) -> None:
        self._build: Callable[[], T] | None = build
        self._value: T | None = None

    def get(self) -> T:
        if self._build is not None:
            with _BUILD_LOCK:
                if self._build is not None:
                    self._value = self._build()
                    self._build = None  # after the value is set: readers without the lock see both or neither
        return cast(T, self._value)


class _LazyClient:
    """A boto3 client created on its first call: a cold start pays only for the clients its invocation uses."""

    def __init__(self, service: str) -> None:
        self._client: _Once[Any] = _Once(lambda: _boto3_client(service))

    def __getattr__(self, name: str) -> Any:
        if name == "_client":  # not set yet (copy, pickle): no recursion
            raise AttributeError(name)
        return getattr(self._client.get(), name)


class _LazyMarketplace:
    """The ML client (httpx pool, TLS context, token manager, Secrets Manager client), built on the first ML call.

    Escalation and the state reads never call Mercado Libre, so they never pay for it.
    """

    def __init__(self, build: Callable[[], MarketplaceClientFactory]) -> None:
        self._factory = _Once(build)

    def for_connection(self, connection_id: str) -> MarketplaceClient:
        return self._factory.get().for_connection(connection_id)


def _boto3_client(service: str) -> Any:
    import boto3

    return boto3.client(service)


# Connections of the shared DynamoDB client: every thread of the process uses it (the bulk worker's threads, for the
# stores, the job store and the quota bucket at once), and botocore's default of 10 would open and drop a connection
# per call past that.
DYNAMODB_MAX_CONNECTIONS = 50


@lru_cache(maxsize=1)
def _dynamodb_resource(session: Any, endpoint: str | None) -> Any:
    from botocore.config import Config

    return session.resource("dynamodb", config=Config(max_pool_connections=DYNAMODB_MAX_CONNECTIONS))


def dynamodb_resource() -> Any:
    """The process's one DynamoDB resource: the service, the job store and the quota bucket share it (each
    ``boto3.resource`` builds a client of its own and reads the resource model again: ~30 ms of a cold start).
    Keyed by boto3's default session and the endpoint: a new session or another local stack gets its own."""
    import boto3

    with _BUILD_LOCK:
        if boto3.DEFAULT_SESSION is None:
            boto3.setup_default_session()
        return _dynamodb_resource(boto3.DEFAULT_SESSION, os.environ.get("AWS_ENDPOINT_URL"))


@lru_cache(maxsize=8)
def build_service(settings: Settings, *, notifier: bool = False, workflow: bool = False) -> RecoveryService:
    from datetime import timedelta

    import boto3

    from shared.lifecycle import SaleLifecycle, Timing
    from shared.lifecycle.dynamo import DynamoLifecycleStore
    from shared.recovery import RecoveryService, Stores
    from shared.stores.aliases import DynamoAliasStore
    from shared.stores.connections import DynamoConnectionStore
    from shared.stores.errors import DynamoErrorStore
    from shared.stores.products import DynamoProductStore

    dynamodb = dynamodb_resource()  # every operation reads the tables: no point deferring it
    errors_table = dynamodb.Table(settings.sale_errors_table)
    stores = Stores(
        errors=DynamoErrorStore(errors_table),
        products=DynamoProductStore(dynamodb.Table(settings.product_links_table)),
        connections=DynamoConnectionStore(dynamodb.Table(settings.connections_table)),
        aliases=DynamoAliasStore(dynamodb.Table(settings.identifier_aliases_table)),
    )
    lifecycle = SaleLifecycle(
        DynamoLifecycleStore(dynamodb.Table(settings.sales_table), errors_table, settings.jobs_table),
        Timing(
            execution_lease=timedelta(seconds=settings.execution_lease_seconds),
            start_check=timedelta(seconds=settings.start_check_seconds),
            page_retry=timedelta(seconds=settings.page_retry_seconds),
            retry_base=timedelta(seconds=settings.error_retry_base_seconds),
            retry_max=timedelta(seconds=settings.error_retry_max_seconds),
        ),
    )

    from shared.connection_state import ConnectionGate, SnsConnectionAlerts
    from shared.meli.tokens import SecretsManagerTokenStore

    # Whether each connection may call ML (its state on the connection's row). Built eagerly and cheaply (no client
    # until used): the sweep and the API read it without ever calling ML. It reads the stored tokens' version to
    # notice a reconnection, and sends the help desk's one message per revocation where the function may publish.
    token_store = SecretsManagerTokenStore(_LazyClient("secretsmanager"), settings.meli_connection_secret_prefix)
    gate = ConnectionGate(
        stores.connections,
        token_version=lambda connection_id: token_store.read(connection_id).version,
        alerts=SnsConnectionAlerts(_LazyClient("sns"), settings.help_desk_topic_arn) if notifier else None,
    )

    def marketplace() -> MarketplaceClientFactory:
        from shared.meli.client import HttpMeliClientFactory, build_token_manager, new_http_client

        http = new_http_client(settings)  # one pool for API calls and token refreshes
        tokens = build_token_manager(
            settings,
            secrets_client=boto3.client("secretsmanager"),
            connections=stores.connections,
            http=http,
            gate=gate,
        )
        limiter = None
        if settings.meli_requests_per_second > 0:
            from shared.ratelimit import DynamoTokenBucket

            # Every worker of a connection draws from one bucket on the connection's row (ML's quota is shared).
            limiter = DynamoTokenBucket(
                dynamodb.Table(settings.connections_table), rate=settings.meli_requests_per_second
            )
        return HttpMeliClientFactory(settings, token_manager=tokens, http=http, limiter=limiter)

    help_desk = None
    if notifier:
        from shared.escalation import SnsHelpDeskNotifier

        help_desk = SnsHelpDeskNotifier(_LazyClient("sns"), settings.help_desk_topic_arn)
    relink = None
    if workflow:
        from shared.workflow import StepFunctionsRelinkWorkflow

        relink = StepFunctionsRelinkWorkflow(_LazyClient("stepfunctions"), settings.relink_state_machine_arn)
    return RecoveryService(
        stores,
        lifecycle,
        _LazyMarketplace(marketplace),
        help_desk,
        relink,
        jobs=build_job_store(settings),
        max_attempts=settings.error_max_attempts,
        gate=gate,
    )


@lru_cache(maxsize=8)
def build_bulk_service(settings: Settings, *, queue: bool = False) -> BulkService:
    """The bulk service: the API submits (queue), the worker processes (state machine hand-over; with the queue, it
    hands back the ids its invocation has no time left for)."""
    import boto3

    from shared.bulk import BulkService, id_budget_seconds

    recovery = build_service(settings, notifier=True, workflow=bool(settings.relink_state_machine_arn))
    sqs_queue = None
    lanes = None
    if queue:
        import time

        from shared.lanes import Lanes
        from shared.queue import SqsBulkQueue
        from shared.stores.lanes import DynamoLaneStore

        sqs_queue = SqsBulkQueue(boto3.client("sqs"), settings.bulk_queue_url)
        lane_store = DynamoLaneStore(dynamodb_resource().Table(settings.jobs_table))
        lanes = Lanes(lane_store, sqs_queue, limit=settings.bulk_lane_messages, clock=time.time)
    return BulkService(
        recovery,
        build_job_store(settings),
        sqs_queue,
        max_ids=settings.bulk_max_ids,
        threads=settings.bulk_worker_threads,
        seconds_per_id=id_budget_seconds(settings.meli_timeout_seconds, settings.meli_max_tries),
        lanes=lanes,
    )


@lru_cache(maxsize=8)
def build_schedule_service(settings: Settings) -> ScheduleService:
    """The schedules (error sweep, reconciliation): they find work and hand it to the bulk path (queue)."""
    from shared.schedules import ScheduleService

    bulk = build_bulk_service(settings, queue=True)
    recovery = build_service(settings, notifier=True, workflow=bool(settings.relink_state_machine_arn))
    return ScheduleService(recovery, bulk, build_job_store(settings), settings)


@lru_cache(maxsize=8)
def build_notification_intake(settings: Settings) -> NotificationIntake:
    """The notification callback: a DynamoDB and an SQS client, nothing else (it must answer ML within 500 ms)."""
    from shared.notification_queue import SqsNotificationQueue
    from shared.notifications import NotificationIntake
    from shared.stores.sellers import DynamoSellerDirectory

    application_id = settings.application_id or 0  # 0: no application is ours, every notification is foreign
    return NotificationIntake(
        lambda: application_id,
        DynamoSellerDirectory(_LazyClient("dynamodb"), settings.connections_table),
        SqsNotificationQueue(_LazyClient("sqs"), settings.notifications_queue_url),
    )


@lru_cache(maxsize=8)
def build_notified_sales(settings: Settings) -> NotifiedSales:
    """The notification processing: it reads the service's state and hands work to the bulk path (queue)."""
    from shared.notification_queue import SqsNotificationQueue
    from shared.stores.sale_claims import DynamoSaleClaims
    from shared.usecases.notified_sales import NotifiedSales

    bulk = build_bulk_service(settings, queue=True)
    recovery = build_service(settings)
    return NotifiedSales(
        recovery.lifecycle,
        bulk,
        build_job_store(settings),
        DynamoSaleClaims(_LazyClient("dynamodb"), settings.idempotency_table),
        open_item_seconds=settings.reconcile_claim_seconds,
        requeue=SqsNotificationQueue(_LazyClient("sqs"), settings.notifications_queue_url),
        defer_seconds=settings.notification_defer_seconds,
    )


@lru_cache(maxsize=8)
def build_missed_feeds(settings: Settings) -> MissedFeedsService:
    """The missed-feeds schedule: ML with each connection's token, the handled ids, the notifications queue."""
    from shared.missed_feeds import MissedFeedsService
    from shared.notification_queue import SqsNotificationQueue
    from shared.stores.handled_feeds import DynamoHandledFeeds

    recovery = build_service(settings, notifier=True)
    return MissedFeedsService(
        recovery,
        DynamoHandledFeeds(_LazyClient("dynamodb"), settings.idempotency_table),
        SqsNotificationQueue(_LazyClient("sqs"), settings.notifications_queue_url),
        application_id=settings.application_id,
    )


@lru_cache(maxsize=8)
def build_job_store(settings: Settings) -> JobStore:
    from shared.stores.jobs import DynamoJobStore

    return DynamoJobStore(dynamodb_resource().Table(settings.jobs_table))


def forget_clients() -> None:
    """Drop every service, client, connection pool and credential built so far; the next request builds new ones.

    For a sandbox restored from a SnapStart snapshot: what was built before the snapshot is shared by every sandbox
    restored from it. botocore's loaded service models (read-only JSON) are kept: a new client then costs a few ms,
    not the ~55 ms of a fresh session's first one.
    """
    import boto3

    with _BUILD_LOCK:
        for built in (
            build_notification_intake,
            build_notified_sales,
            build_missed_feeds,
            build_schedule_service,
            build_bulk_service,
            build_service,
            build_job_store,
            _dynamodb_resource,
        ):
            built.cache_clear()
        old = boto3.DEFAULT_SESSION
        boto3.DEFAULT_SESSION = None  # its credentials and the clients' pools go with it
        if old is not None:
            session = boto3.Session()
            session._session.register_component("data_loader", old._session.get_component("data_loader"))
            boto3.DEFAULT_SESSION = session
