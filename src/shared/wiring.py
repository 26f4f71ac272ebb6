"""Builds the service from configuration. Clients are created once per warm container, only those a function uses."""

from __future__ import annotations

from functools import lru_cache

from shared.recovery import RecoveryService, Stores
from shared.settings import Settings


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
