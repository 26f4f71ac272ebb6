"""The stores' tests run against moto tables created from template.yaml."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws

from devstack.template import create_tables, table_env


@pytest.fixture
def tables(monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, str]]:
    """A moto account holding the template's tables; the answer maps each table's variable to its name."""
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        create_tables(boto3.client("dynamodb"), "unit")
        yield table_env("unit")


def table(env: dict[str, str], name: str) -> Any:
    return boto3.resource("dynamodb").Table(env[name])


def lifecycle_on(env: dict[str, str], **timing: float) -> Any:
    """The sale lifecycle over the moto tables of ``env`` (``timing`` in seconds overrides the defaults)."""
    from datetime import timedelta

    from shared.lifecycle import SaleLifecycle, Timing
    from shared.lifecycle.dynamo import DynamoLifecycleStore

    seconds = {
        "execution_lease": 3600.0,
        "start_check": 300.0,
        "page_retry": 300.0,
        "retry_base": 300.0,
        "retry_max": 21_600.0,
        **timing,
    }
    store = DynamoLifecycleStore(table(env, "SALES_TABLE"), table(env, "SALE_ERRORS_TABLE"), env["JOBS_TABLE"])
    return SaleLifecycle(store, Timing(**{k: timedelta(seconds=v) for k, v in seconds.items()}))
