"""The DynamoDB faults of devstack.faults: the shape of what they inject (as DynamoDB reports it), what botocore
does with it, nothing written by a failed call, and one draw and at most one fault per API call however many item
operations moto carries the call out with (a transaction's items, the read before an UpdateItem, a batch's puts)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from botocore.config import Config
from botocore.exceptions import ClientError
from moto import mock_aws

from devstack.faults import FaultCounter, dynamodb_throttling, dynamodb_transaction_conflicts
from devstack.template import create_tables, table_env

NO_RETRIES = Config(retries={"mode": "standard", "total_max_attempts": 1})


@pytest.fixture
def jobs() -> Iterator[tuple[Any, str]]:
    with mock_aws():
        client = boto3.client("dynamodb")
        create_tables(client, "faults")
        yield client, table_env("faults")["JOBS_TABLE"]


def _key(item_key: str) -> dict[str, Any]:
    return {"job_id": {"S": "j"}, "item_key": {"S": item_key}}


def _update(table: str, item_key: str) -> dict[str, Any]:
    return {
        "Update": {
            "TableName": table,
            "Key": _key(item_key),
            "UpdateExpression": "SET outcome = :o",
            "ExpressionAttributeValues": {":o": {"S": "reflected"}},
        }
    }


def _stored(client: Any, table: str) -> dict[str, dict[str, Any]]:
    items = client.scan(TableName=table, ConsistentRead=True)["Items"]
    return {i["item_key"]["S"]: i for i in items}


def _one_call_of_each_kind(client: Any, table: str) -> int:
    """Nine API calls, several of which moto carries out with more than one item operation of its own."""
    client.put_item(TableName=table, Item={**_key("a"), "outcome": {"S": "pending"}}, ReturnValues="ALL_OLD")
    client.update_item(  # moto reads the item, then updates it
        TableName=table,
        Key=_key("a"),
        UpdateExpression="SET attempts = :n",
        ExpressionAttributeValues={":n": {"N": "1"}},
        ReturnValues="ALL_NEW",
    )
    client.get_item(TableName=table, Key=_key("a"))
    client.query(TableName=table, KeyConditionExpression="job_id = :j", ExpressionAttributeValues={":j": {"S": "j"}})
    client.batch_write_item(  # moto puts each item
        RequestItems={
            table: [{"PutRequest": {"Item": {**_key(f"b{n}"), "outcome": {"S": "pending"}}}} for n in range(25)]
        }
    )
    client.batch_get_item(RequestItems={table: {"Keys": [_key(f"b{n}") for n in range(10)]}})  # moto gets each key
    client.transact_write_items(TransactItems=[_update(table, k) for k in ("b1", "b2", "b3", "b4")])  # reads + writes
    client.delete_item(TableName=table, Key=_key("b0"))
    client.scan(TableName=table)  # not a call the DynamoDB faults draw for
    return 8


def test_each_call_is_drawn_for_once_however_moto_carries_it_out(jobs: tuple[Any, str]) -> None:
    client, table = jobs
    with dynamodb_throttling(0.0) as throttled, dynamodb_transaction_conflicts(0.0) as conflicts:
        drawn = _one_call_of_each_kind(client, table)
    assert throttled.calls == drawn and throttled.injected == 0
    assert conflicts.calls == 4  # PutItem, UpdateItem, the transaction, DeleteItem


@pytest.mark.parametrize("fault", ["throttling", "conflicts"])
def test_every_failed_call_is_counted_once(jobs: tuple[Any, str], fault: str) -> None:
    client, table = jobs
    client = boto3.client("dynamodb", config=NO_RETRIES)
    client.put_item(TableName=table, Item={**_key("a"), "outcome": {"S": "pending"}})
    counter: FaultCounter
    failed = 0
    injector = dynamodb_throttling(1.0) if fault == "throttling" else dynamodb_transaction_conflicts(1.0)
    with injector as counter:
        for call in (
            lambda: client.update_item(
                TableName=table,
                Key=_key("a"),
                UpdateExpression="SET attempts = :n",
                ExpressionAttributeValues={":n": {"N": "1"}},
                ReturnValues="ALL_NEW",
            ),
            lambda: client.put_item(TableName=table, Item={**_key("b"), "outcome": {"S": "x"}}, ReturnValues="ALL_OLD"),
            lambda: client.transact_write_items(TransactItems=[_update(table, k) for k in ("a", "c", "d", "e", "f")]),
            lambda: client.delete_item(TableName=table, Key=_key("a")),
        ):
            with pytest.raises(ClientError):
                call()
            failed += 1
    assert counter.injected == counter.calls == failed
    assert _stored(client, table) == {"a": {**_key("a"), "outcome": {"S": "pending"}}}  # nothing written


def test_a_throttled_transaction_is_cancelled_and_a_throttled_batch_writes_nothing(jobs: tuple[Any, str]) -> None:
    client, table = jobs
    client = boto3.client("dynamodb", config=NO_RETRIES)
    with dynamodb_throttling(1.0) as throttled:
        with pytest.raises(ClientError) as cancelled:
            client.transact_write_items(TransactItems=[_update(table, k) for k in ("a", "b", "c")])
        with pytest.raises(ClientError) as refused:
            client.batch_write_item(
                RequestItems={table: [{"PutRequest": {"Item": {**_key(f"b{n}"), "o": {"S": "p"}}}} for n in range(25)]}
            )
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert [r["Code"] for r in cancelled.value.response["CancellationReasons"]] == ["ThrottlingError", "None", "None"]
    assert refused.value.response["Error"]["Code"] == "ProvisionedThroughputExceededException"
    assert throttled.injected == 2
    assert _stored(client, table) == {}


def test_botocore_absorbs_throttling_of_single_calls(jobs: tuple[Any, str]) -> None:
    client, table = jobs  # botocore's default retry policy for DynamoDB
    with dynamodb_throttling(0.5, seed=3) as throttled:
        for n in range(20):
            client.put_item(TableName=table, Item={**_key(f"i{n}"), "outcome": {"S": "pending"}})
    assert throttled.injected > 0 and throttled.calls == 20 + throttled.injected
    assert len(_stored(client, table)) == 20


def test_a_conflicted_transaction_is_cancelled_with_transaction_conflict_on_one_item(jobs: tuple[Any, str]) -> None:
    client, table = jobs
    client.put_item(TableName=table, Item={**_key("a"), "outcome": {"S": "pending"}})
    with dynamodb_transaction_conflicts(1.0, seed=5) as conflicts, pytest.raises(ClientError) as cancelled:
        client.transact_write_items(TransactItems=[_update(table, k) for k in ("a", "b", "c", "d")])
    error = cancelled.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    reasons = [(r["Code"], r.get("Message")) for r in error["CancellationReasons"]]
    assert sorted(reasons, key=str) == sorted(
        [
            ("TransactionConflict", "Transaction is ongoing for the item."),
            ("None", None),
            ("None", None),
            ("None", None),
        ],
        key=str,
    )
    assert "TransactionConflict" in error["Error"]["Message"]  # "... specific reasons [None, TransactionConflict, ...]"
    assert conflicts.calls == conflicts.injected == 1  # a cancelled transaction is not retried by botocore
    assert _stored(client, table) == {"a": {**_key("a"), "outcome": {"S": "pending"}}}


@pytest.mark.parametrize("retry_mode", ["legacy", "standard", "adaptive"])
def test_a_single_write_meeting_a_transaction_fails_with_transaction_conflict_and_is_not_retried(
    jobs: tuple[Any, str], retry_mode: str
) -> None:
    _, table = jobs
    client = boto3.client("dynamodb", config=Config(retries={"mode": retry_mode}))  # botocore's own retries
    with dynamodb_transaction_conflicts(1.0) as conflicts, pytest.raises(ClientError) as rejected:
        client.update_item(
            TableName=table,
            Key=_key("a"),
            UpdateExpression="SET outcome = :o",
            ConditionExpression="attribute_not_exists(outcome)",
            ExpressionAttributeValues={":o": {"S": "reflected"}},
        )
    assert rejected.value.response["Error"]["Code"] == "TransactionConflictException"
    assert "ongoing transaction" in rejected.value.response["Error"]["Message"]
    assert rejected.value.response["ResponseMetadata"]["HTTPStatusCode"] == 400
    assert conflicts.calls == conflicts.injected == 1
    assert _stored(client, table) == {}


def test_conflicts_on_transactions_only_leave_single_writes_alone(jobs: tuple[Any, str]) -> None:
    client, table = jobs
    with dynamodb_transaction_conflicts(1.0, single_item_writes=False) as conflicts:
        client.put_item(TableName=table, Item={**_key("a"), "outcome": {"S": "pending"}})
        with pytest.raises(ClientError):
            client.transact_write_items(TransactItems=[_update(table, "a")])
    assert conflicts.calls == conflicts.injected == 1


def _pattern(client: Any, table: str, seed: int) -> list[str]:
    seen = []
    with dynamodb_transaction_conflicts(0.3, seed=seed):
        for n in range(40):
            try:
                client.transact_write_items(TransactItems=[_update(table, f"{n}-{k}") for k in range(3)])
                seen.append("ok")
            except ClientError as exc:
                reasons = exc.response["CancellationReasons"]
                seen.append(next(str(i) for i, r in enumerate(reasons) if r["Code"] == "TransactionConflict"))
    return seen


def test_conflicts_are_repeatable_by_seed(jobs: tuple[Any, str]) -> None:
    client, table = jobs
    first = _pattern(client, table, seed=11)
    assert first == _pattern(client, table, seed=11)
    assert first != _pattern(client, table, seed=12)
    assert 0 < first.count("ok") < 40 and {"0", "1", "2"} <= set(first)  # the conflicted item varies


def test_both_faults_at_once_count_a_transaction_once_each(jobs: tuple[Any, str]) -> None:
    client, table = jobs
    # The conflicts fault is entered first: the throttling fault, outermost, draws for the call and lets it through.
    with (
        dynamodb_transaction_conflicts(1.0) as conflicts,
        dynamodb_throttling(0.0) as throttled,
        pytest.raises(ClientError) as cancelled,
    ):
        client.transact_write_items(TransactItems=[_update(table, k) for k in ("a", "b")])
    assert cancelled.value.response["Error"]["Code"] == "TransactionCanceledException"
    assert (throttled.calls, throttled.injected, conflicts.calls, conflicts.injected) == (1, 0, 1, 1)


def test_the_faults_reach_calls_through_the_moto_server() -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        client = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1", config=NO_RETRIES)
        tables = create_tables(client, "faults-server")
        table = table_env("faults-server")["JOBS_TABLE"]
        with dynamodb_transaction_conflicts(1.0) as conflicts, pytest.raises(ClientError) as rejected:
            client.put_item(TableName=table, Item=_key("a"))
        assert rejected.value.response["Error"]["Code"] == "TransactionConflictException"
        with dynamodb_throttling(1.0) as throttled, pytest.raises(ClientError) as cancelled:
            client.transact_write_items(TransactItems=[_update(table, "a"), _update(table, "b")])
        assert [r["Code"] for r in cancelled.value.response["CancellationReasons"]] == ["ThrottlingError", "None"]
        assert (conflicts.injected, throttled.injected) == (1, 1)
        assert client.scan(TableName=table)["Items"] == []
        for name in tables.values():
            client.delete_table(TableName=name)
    finally:
        server.stop()
