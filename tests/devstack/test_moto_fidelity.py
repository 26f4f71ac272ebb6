"""The moto fixes of devstack.moto_fidelity keep DynamoDB's semantics: a cancelled transaction leaves every item it
touched exactly as it was (created ones gone, updated ones restored), a successful one applies every write, and a
transaction no longer deep-copies whole tables (its cost does not grow with the table)."""

from __future__ import annotations

import copy
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.exceptions import ClientError
from moto import mock_aws

from devstack.template import create_tables, table_env


@pytest.fixture
def jobs() -> Iterator[Any]:
    with mock_aws():
        create_tables(boto3.client("dynamodb"), "fidelity")
        yield boto3.resource("dynamodb").Table(table_env("fidelity")["JOBS_TABLE"])


def _update(table: Any, key: str, expression: str, values: dict[str, Any], condition: str | None = None) -> Any:
    op: dict[str, Any] = {
        "TableName": table.name,
        "Key": {"job_id": "j", "item_key": key},
        "UpdateExpression": expression,
        "ExpressionAttributeValues": values,
    }
    if condition:
        op["ConditionExpression"] = condition
    return {"Update": op}


def test_a_cancelled_transaction_restores_updated_items_and_removes_created_ones(jobs: Any) -> None:
    jobs.put_item(Item={"job_id": "j", "item_key": "a", "outcome": "pending", "attempts": 0})
    with pytest.raises(ClientError) as raised:
        jobs.meta.client.transact_write_items(
            TransactItems=[
                _update(jobs, "a", "SET outcome = :o, attempts = :n", {":o": "reflected", ":n": 1}),
                _update(jobs, "new", "SET outcome = :o", {":o": "reflected"}),
                _update(jobs, "#", "ADD settled :one", {":one": 1, ":yes": True}, condition="closed = :yes"),
            ]
        )
    assert raised.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert jobs.get_item(Key={"job_id": "j", "item_key": "a"})["Item"] == {
        "job_id": "j",
        "item_key": "a",
        "outcome": "pending",
        "attempts": 0,
    }
    assert "Item" not in jobs.get_item(Key={"job_id": "j", "item_key": "new"})
    assert "Item" not in jobs.get_item(Key={"job_id": "j", "item_key": "#"})
    assert jobs.scan()["Count"] == 1


def test_a_transaction_that_succeeds_applies_every_write(jobs: Any) -> None:
    jobs.put_item(Item={"job_id": "j", "item_key": "#", "settled": 0})
    jobs.meta.client.transact_write_items(
        TransactItems=[
            _update(jobs, "a", "SET outcome = :o", {":o": "reflected"}),
            {"Put": {"TableName": jobs.name, "Item": {"job_id": "j", "item_key": "b", "outcome": "escalated"}}},
            _update(jobs, "#", "ADD settled :two", {":two": 2}),
        ]
    )
    items = {i["item_key"]: i for i in jobs.scan()["Items"]}
    assert items["a"]["outcome"] == "reflected"
    assert items["b"]["outcome"] == "escalated"
    assert items["#"]["settled"] == 2


def test_a_transaction_does_not_copy_whole_tables(jobs: Any, monkeypatch: pytest.MonkeyPatch) -> None:
    with jobs.batch_writer() as batch:
        for n in range(300):
            batch.put_item(Item={"job_id": "j", "item_key": f"{n:05}", "outcome": "pending"})
    copied: list[Any] = []
    real = copy.deepcopy

    def counting(value: Any, memo: Any = None) -> Any:
        copied.append(value)
        return real(value, memo)

    monkeypatch.setattr(copy, "deepcopy", counting)
    jobs.meta.client.transact_write_items(
        TransactItems=[
            _update(jobs, "00001", "SET outcome = :o", {":o": "reflected"}),
            _update(jobs, "00002", "SET outcome = :o", {":o": "reflected"}),
        ]
    )
    from moto.dynamodb.models.table import Table

    assert not [value for value in copied if isinstance(value, Table)]


def test_a_read_never_sees_an_item_half_written_by_another_thread(jobs: Any) -> None:
    """One thread keeps adding attributes to an item while another queries and scans its partition: moto copies the
    items it returns, and without the lock that copy met a dictionary changing size (seen in make test)."""
    import sys
    import threading

    from devstack import moto_fidelity

    assert {"query", "scan", "get_item", "batch_get_item"} <= set(moto_fidelity._READS)
    jobs.put_item(Item={"job_id": "j", "item_key": "i"})
    errors: list[BaseException] = []
    stop = threading.Event()

    def write() -> None:
        n = 0
        while not stop.is_set():
            n += 1
            jobs.update_item(
                Key={"job_id": "j", "item_key": "i"},
                UpdateExpression="SET #a = :v",
                ExpressionAttributeNames={"#a": f"a{n % 200}"},
                ExpressionAttributeValues={":v": n},
            )

    def read() -> None:
        try:
            for _ in range(150):
                jobs.query(KeyConditionExpression="job_id = :j", ExpressionAttributeValues={":j": "j"})
                jobs.scan()
        except BaseException as exc:
            errors.append(exc)
        finally:
            stop.set()

    before = sys.getswitchinterval()
    sys.setswitchinterval(1e-6)
    try:
        threads = [threading.Thread(target=write), threading.Thread(target=read)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(60)
    finally:
        sys.setswitchinterval(before)
    assert errors == []
