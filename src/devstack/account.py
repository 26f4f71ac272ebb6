"""A moto account holding what the handlers need, for the tests and benchmarks that call handlers directly rather
than through the whole local stack (``devstack.stack``): the template's tables, the help-desk topic with an SQS
inbox subscribed to it, the bulk queue with its dead-letter queue, the relink state machine from ``statemachine/``,
the Mercado Libre application secret, and the scenario seeded (connections, products, reflected sales, tokens).

It talks to whatever AWS boto3's default clients reach: ``mock_aws`` in-process, or moto's server through
``AWS_ENDPOINT_URL``. Names follow the template's ``sales-recovery-<stage>-…`` pattern; the answer carries the
environment the template would give the functions.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from devstack.seed import seed
from devstack.simulator.scenario import Scenario
from devstack.template import create_tables, parameter_default, queue_attributes, table_env

ROOT = Path(__file__).resolve().parents[2]
RELINK_ROLE = "arn:aws:iam::123456789012:role/relink-state-machine"  # moto does not check it


@dataclass(frozen=True)
class Account:
    env: dict[str, str]  # the functions' environment (tables, topic, queue, state machine, secrets, ML)
    topic_arn: str
    inbox_url: str  # an SQS queue subscribed to the help-desk topic: what the help desk would receive
    bulk_queue_url: str
    bulk_queue_arn: str


def secret_prefix(stage: str) -> str:
    return f"sales-recovery/{stage}/connections/"


def provision(stage: str, meli_url: str, scenario: Scenario, **overrides: str) -> Account:
    """Create the account's resources, seed ``scenario``, and return them with the functions' environment
    (``overrides`` replace or add variables: timeouts, bulk limits, the quota)."""
    import boto3

    create_tables(boto3.client("dynamodb"), stage)
    sns, sqs = boto3.client("sns"), boto3.client("sqs")
    topic_arn = sns.create_topic(Name=f"sales-recovery-{stage}-help-desk")["TopicArn"]
    inbox_url = sqs.create_queue(QueueName=f"sales-recovery-{stage}-help-desk-inbox")["QueueUrl"]
    sns.subscribe(
        TopicArn=topic_arn,
        Protocol="sqs",
        Endpoint=_queue_arn(sqs, inbox_url),
        Attributes={"RawMessageDelivery": "true"},
    )
    dlq_url = sqs.create_queue(QueueName=f"sales-recovery-{stage}-bulk-dlq")["QueueUrl"]
    bulk_url = sqs.create_queue(
        QueueName=f"sales-recovery-{stage}-bulk",
        Attributes=queue_attributes("BulkQueue", _queue_arn(sqs, dlq_url)),  # the template's, not restated
    )["QueueUrl"]
    secrets = boto3.client("secretsmanager")
    app_secret = secrets.create_secret(
        Name=f"sales-recovery/{stage}/meli-app",
        SecretString=json.dumps({"client_id": "5503910054141466", "client_secret": "local-app-secret"}),
    )["ARN"]
    state_machine_arn = boto3.client("stepfunctions").create_state_machine(
        name=f"sales-recovery-{stage}-relink",
        definition=(ROOT / "statemachine" / "relink.asl.json").read_text(),
        roleArn=RELINK_ROLE,
    )["stateMachineArn"]
    env = {
        **table_env(stage),
        "STAGE": stage,
        "MELI_API_URL": meli_url,
        "MELI_TIMEOUT_SECONDS": parameter_default("MeliTimeoutSeconds"),
        "MELI_MAX_TRIES": parameter_default("MeliMaxTries"),
        "MELI_APP_SECRET_ID": app_secret,
        "MELI_CONNECTION_SECRET_PREFIX": secret_prefix(stage),
        "HELP_DESK_TOPIC_ARN": topic_arn,
        "RELINK_STATE_MACHINE_ARN": state_machine_arn,
        "BULK_QUEUE_URL": bulk_url,
        **overrides,
    }
    _seed(scenario, env, secrets, secret_prefix(stage))
    return Account(
        env=env,
        topic_arn=topic_arn,
        inbox_url=inbox_url,
        bulk_queue_url=bulk_url,
        bulk_queue_arn=_queue_arn(sqs, bulk_url),
    )


def _queue_arn(sqs: Any, url: str) -> str:
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


def _seed(scenario: Scenario, env: dict[str, str], secrets: Any, prefix: str) -> None:
    from shared.settings import Settings
    from shared.wiring import build_service

    build_service.cache_clear()
    try:
        service = build_service(Settings.from_env(env))
        seed(scenario, service.stores, service.lifecycle, secrets_client=secrets, secret_prefix=prefix)
    finally:
        build_service.cache_clear()  # the callers build theirs from the environment they set
