"""Builds the service from configuration. Clients are created once per warm container, only those a function uses."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING

from shared.recovery import RecoveryService, Stores
from shared.settings import Settings

if TYPE_CHECKING:
    from shared.bulk import BulkService
    from shared.jobs import JobStore


@lru_cache(maxsize=8)
def build_service(settings: Settings, *, notifier: bool = False, workflow: bool = False) -> RecoveryService:
    import boto3

    from shared.meli.client import HttpMeliClientFactory, build_token_manager, new_http_client
    from shared.stores.dynamodb import (
        DynamoAliasStore,
        DynamoConnectionStore,
        DynamoErrorStore,
        DynamoProductStore,
        DynamoSaleStore,
    )

    dynamodb = boto3.resource("dynamodb")
    stores = Stores(
        sales=DynamoSaleStore(dynamodb.Table(settings.sales_table)),
        errors=DynamoErrorStore(dynamodb.Table(settings.sale_errors_table)),
        products=DynamoProductStore(dynamodb.Table(settings.product_links_table)),
        connections=DynamoConnectionStore(dynamodb.Table(settings.connections_table)),
        aliases=DynamoAliasStore(dynamodb.Table(settings.identifier_aliases_table)),
    )
    http = new_http_client(settings)  # one pool for API calls and token refreshes
    tokens = build_token_manager(
        settings, secrets_client=boto3.client("secretsmanager"), connections=stores.connections, http=http
    )
    marketplace = HttpMeliClientFactory(settings, token_manager=tokens, http=http)
    help_desk = None
    if notifier:
        from shared.escalation import SnsHelpDeskNotifier

        help_desk = SnsHelpDeskNotifier(boto3.client("sns"), settings.help_desk_topic_arn)
    relink = None
    if workflow:
        from shared.workflow import StepFunctionsRelinkWorkflow

        relink = StepFunctionsRelinkWorkflow(boto3.client("stepfunctions"), settings.relink_state_machine_arn)
    return RecoveryService(stores, marketplace, help_desk, relink)


@lru_cache(maxsize=8)
def build_bulk_service(settings: Settings, *, queue: bool = False) -> BulkService:
    """The bulk service: the API submits (queue), the worker processes (state machine hand-over)."""
    import boto3

    from shared.bulk import BulkService
    from shared.workflow import StepFunctionsRelinkWorkflow

    recovery = build_service(settings, notifier=True, workflow=bool(settings.relink_state_machine_arn))
    sqs_queue = None
    if queue:
        from shared.queue import SqsBulkQueue

        sqs_queue = SqsBulkQueue(boto3.client("sqs"), settings.bulk_queue_url)
    workflow = (
        StepFunctionsRelinkWorkflow(boto3.client("stepfunctions"), settings.relink_state_machine_arn)
        if settings.relink_state_machine_arn
        else None
    )
    return BulkService(
        recovery,
        build_job_store(settings),
        sqs_queue,
        workflow,
        max_ids=settings.bulk_max_ids,
        threads=settings.bulk_worker_threads,
    )


@lru_cache(maxsize=8)
def build_job_store(settings: Settings) -> JobStore:
    import boto3

    from shared.stores.dynamodb import DynamoJobStore

    return DynamoJobStore(boto3.resource("dynamodb").Table(settings.jobs_table))
