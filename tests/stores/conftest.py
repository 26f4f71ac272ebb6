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


def list_sale(lifecycle: Any, connection_id: str, sale_id: str, error_type: Any, message: str) -> None:
    """The sale in the error list, as the platform lists a sale whose own import failed."""
    from shared.lifecycle import moves
    from shared.lifecycle.table import Actor
    from shared.models import ErrorEntry, ErrorEvent, Reason

    snap = lifecycle.read(connection_id, sale_id)
    entry = ErrorEntry(
        connection_id=connection_id,
        sale_id=sale_id,
        error_type=error_type.value,
        message=message,
        retryable=error_type.retryable,
        reason=Reason(error_type.value) if not error_type.retryable else None,
        history=[ErrorEvent(error_type=error_type, message=message)],
    )
    assert lifecycle.apply(snap, moves.list_error(snap, Actor.PLATFORM, entry=entry)) is not None
