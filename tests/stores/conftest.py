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
