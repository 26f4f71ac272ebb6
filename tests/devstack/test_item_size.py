"""DynamoDB's 400 KB item limit, counted by DynamoDB's rules ("Item sizes and formats") and enforced on moto by
devstack.moto_fidelity: the size function against the documented rules and the reference's job header (3,000 rejected
ids: about 393 KB for moto's own count, about 417 KB for DynamoDB's); every write over 409,600 bytes refused the way
DynamoDB refuses it (PutItem, UpdateItem on the resulting item, BatchWriteItem, a transaction's Put and Update), with
nothing written, in-process (mock_aws) and through the moto server alike."""

from __future__ import annotations

import base64
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from boto3.dynamodb.types import TypeSerializer
from botocore.exceptions import ClientError
from moto import mock_aws

from devstack.moto_fidelity import MAX_ITEM_BYTES, dynamodb_item_size, number_size
from devstack.template import create_tables, table_env

PUT_TOO_LARGE = "Item size has exceeded the maximum allowed size"
UPDATE_TOO_LARGE = "Item size to update has exceeded the maximum allowed size"


# --- the rules --------------------------------------------------------------------------------------------------------


def test_strings_count_utf8_bytes_of_the_name_and_the_value() -> None:
    assert dynamodb_item_size({"a": {"S": "hello"}}) == 1 + 5
    assert dynamodb_item_size({"año": {"S": "ñandú"}}) == 4 + 7  # ñ and ú are two bytes each
    assert dynamodb_item_size({"k": {"S": ""}}) == 1


@pytest.mark.parametrize(
    ("number", "size"),
    [
        ("0", 1),  # no significant digit
        ("1", 2),  # one byte per two significant digits (an odd one rounds up), plus one
        ("12", 2),
        ("123", 3),
        ("1234", 3),
        ("12345678901234567890123456789012345678", 20),  # 38 digits, DynamoDB's precision
        ("0042", 2),  # leading zeros trimmed
        ("100", 2),  # trailing zeros trimmed
        ("1010", 3),  # a zero between significant digits is significant
        ("0.0000001", 2),
        ("1.200", 2),  # the fraction's trailing zeros too
        ("1E125", 2),  # the exponent is not a digit
        ("-42", 2),  # nor is the sign
        ("1900000000", 2),  # a timestamp of the jobs table's TTL
    ],
)
def test_numbers_count_one_byte_per_two_significant_digits_plus_one(number: str, size: int) -> None:
    assert number_size(number) == size
    assert dynamodb_item_size({"n": {"N": number}}) == 1 + size


def test_binary_counts_raw_bytes_whether_bytes_or_base64_text() -> None:
    raw = bytes(range(200))
    assert dynamodb_item_size({"b": {"B": raw}}) == 1 + 200
    assert dynamodb_item_size({"b": {"B": base64.b64encode(raw).decode()}}) == 1 + 200  # as on the wire and in moto


def test_booleans_and_nulls_are_one_byte() -> None:
    assert dynamodb_item_size({"ok": {"BOOL": True}, "none": {"NULL": True}}) == (2 + 1) + (4 + 1)


def test_lists_and_maps_cost_three_bytes_plus_one_per_element() -> None:
    assert dynamodb_item_size({"l": {"L": []}}) == 1 + 3  # an empty list: its name + 3
    assert dynamodb_item_size({"m": {"M": {}}}) == 1 + 3
    assert dynamodb_item_size({"l": {"L": [{"S": "ab"}, {"N": "7"}]}}) == 1 + 3 + (1 + 2) + (1 + 2)
    # A map's elements are name-value pairs: each counts its name as an attribute does.
    assert dynamodb_item_size({"m": {"M": {"key": {"S": "v"}, "ok": {"BOOL": False}}}}) == (
        1 + 3 + (1 + 3 + 1) + (1 + 2 + 1)
    )
    nested = {"L": [{"M": {"a": {"L": [{"NULL": True}]}}}]}
    assert dynamodb_item_size({"x": nested}) == 1 + 3 + 1 + (3 + 1 + 1 + (3 + 1 + 1))


def test_sets_are_the_sum_of_their_elements() -> None:
    assert dynamodb_item_size({"ss": {"SS": ["a", "bc"]}}) == 2 + 1 + 2
    assert dynamodb_item_size({"ns": {"NS": ["1", "123", "100"]}}) == 2 + 2 + 3 + 2
    assert dynamodb_item_size({"bs": {"BS": [b"\x00", b"\x01\x02"]}}) == 2 + 1 + 2


def test_moto_values_measure_the_same_as_dynamodb_json() -> None:
    from moto.dynamodb.models.dynamo_type import DynamoType, Item

    item: dict[str, Any] = {
        "job_id": {"S": "j"},
        "item_key": {"S": "#"},
        "rejected": {"L": [{"M": {"sale_id": {"S": "x"}, "attempts": {"N": "12"}}}] * 3},
        "tags": {"SS": ["a", "b"]},
        "blob": {"B": base64.b64encode(b"abc").decode()},
    }
    expected = dynamodb_item_size(item)
    assert dynamodb_item_size({k: DynamoType(v) for k, v in item.items()}) == expected
    assert dynamodb_item_size(Item(DynamoType(item["job_id"]), DynamoType(item["item_key"]), item)) == expected


def _job_header_with_rejected_ids(rejected: list[str]) -> dict[str, Any]:
    """A job header as the product wrote it before issue 12 (shared.stores.jobs.DynamoJobStore.create, with every
    rejection on the header; it now keeps a sample and counts: tests/bulk/test_job_limits.py), in DynamoDB JSON."""
    from shared.bulk import parse_sale_ids
    from shared.jobs import Job
    from shared.stores.dynamo import to_dynamo
    from shared.stores.jobs import _TERMINAL, HEADER_KEY

    selection = parse_sale_ids(["2000009101000011", *rejected], max_ids=10_000)
    job = Job(
        job_id="5b0c9d3e-1f2a-4b5c-8d7e-0123456789ab",
        connection_id="mla-main",
        accepted=len(selection.accepted),
        rejected=selection.rejected,
        messages=1,
    )
    header = job.model_dump(mode="json", exclude={"counts", "rejected_count", "rejected_reasons"}, exclude_none=True)
    header.update({"item_key": HEADER_KEY, "expires_at": 1_900_000_000})
    header.update({f"count_{outcome}": 0 for outcome in _TERMINAL})
    serializer = TypeSerializer()
    return {name: serializer.serialize(value) for name, value in to_dynamo(header).items()}


def test_a_job_header_with_3000_rejected_ids_is_393_kb_for_moto_and_417_kb_for_dynamodb() -> None:
    """The reference's example (aws-offline.md, "Round two"): 3,000 rejected ids (here tracking numbers of 32
    characters, each rejected with its kind) as a list of maps on the header. moto's own count (no list or map
    overhead) stays under its 405,000-byte limit; DynamoDB's adds 8 bytes per rejected id (1 as a list element, 3 as
    a map, 1 for each of its 4 elements), which takes the header over 409,600: DynamoDB refuses it."""
    from moto.dynamodb.models.dynamo_type import DynamoType

    header = _job_header_with_rejected_ids([f"LP{n:028d}BR" for n in range(3000)])
    rejected = header["rejected"]["L"]
    assert len(rejected) == 3000 and set(rejected[0]["M"]) == {"sale_id", "reason", "message", "identifier_kind"}
    motos_count = sum(len(name) + DynamoType(value).size() for name, value in header.items())
    size = dynamodb_item_size(header)
    assert motos_count == 393_274  # "393 KB" (384.1 KiB): moto 5.2 would have stored it
    assert size == 417_271  # "about 417 KB" (407.5 KiB): 7,671 bytes over DynamoDB's limit
    assert motos_count < 405_000 < MAX_ITEM_BYTES < size
    each = 1 + 3 + 4 + len("sale_id") + 32 + len("reason") + len("not_a_sale_id")
    each += (
        len("message") + len("This looks like a shipment tracking number.") + len("identifier_kind") + len("tracking")
    )
    assert dynamodb_item_size({"rejected": header["rejected"]}) == len("rejected") + 3 + 3000 * each


# --- enforced on every write ------------------------------------------------------------------------------------------


def _padded(key: dict[str, Any], size: int, name: str = "p") -> dict[str, Any]:
    """``key`` plus one string attribute, the whole item exactly ``size`` bytes by DynamoDB's rules."""
    item = {**key, name: {"S": ""}}
    item[name] = {"S": "x" * (size - dynamodb_item_size(item))}
    assert dynamodb_item_size(item) == size
    return item


@pytest.fixture
def jobs() -> Iterator[tuple[Any, str]]:
    with mock_aws():
        client = boto3.client("dynamodb")
        create_tables(client, "size")
        yield client, table_env("size")["JOBS_TABLE"]


def _key(item_key: str) -> dict[str, Any]:
    return {"job_id": {"S": "j"}, "item_key": {"S": item_key}}


def _refused(error: ClientError, code: str, message: str) -> None:
    assert error.response["Error"]["Code"] == code
    assert message in error.response["Error"]["Message"]


def _all_items(client: Any, table: str) -> list[dict[str, Any]]:
    return sorted(client.scan(TableName=table, ConsistentRead=True)["Items"], key=lambda i: i["item_key"]["S"])


def test_put_item_accepts_exactly_400_kb_and_refuses_one_byte_more(jobs: tuple[Any, str]) -> None:
    client, table = jobs
    client.put_item(TableName=table, Item=_padded(_key("at"), MAX_ITEM_BYTES))
    with pytest.raises(ClientError) as refused:
        client.put_item(TableName=table, Item=_padded(_key("over"), MAX_ITEM_BYTES + 1))
    _refused(refused.value, "ValidationException", PUT_TOO_LARGE)
    assert [i["item_key"]["S"] for i in _all_items(client, table)] == ["at"]


def test_moto_no_longer_refuses_what_dynamodb_accepts(jobs: tuple[Any, str]) -> None:
    """moto's own check refused a 406,000-byte item of plain strings (its limit is 405,000); DynamoDB stores it."""
    client, table = jobs
    client.put_item(TableName=table, Item=_padded(_key("a"), 406_000))
    assert dynamodb_item_size(_all_items(client, table)[0]) == 406_000


def test_put_item_measures_list_and_map_overheads_moto_does_not_count(jobs: tuple[Any, str]) -> None:
    client, table = jobs
    header = {**_job_header_with_rejected_ids([f"LP{n:028d}BR" for n in range(3000)]), **_key("#")}
    with pytest.raises(ClientError) as refused:
        client.put_item(TableName=table, Item=header, ConditionExpression="attribute_not_exists(job_id)")
    _refused(refused.value, "ValidationException", PUT_TOO_LARGE)
    assert _all_items(client, table) == []


def test_an_update_is_measured_on_the_item_it_would_leave_and_refused_whole(jobs: tuple[Any, str]) -> None:
    client, table = jobs
    before = _padded(_key("a"), 300_000)
    client.put_item(TableName=table, Item=before)
    big = "y" * 110_000  # alone well under the limit: the item it would leave is not
    with pytest.raises(ClientError) as refused:
        client.update_item(
            TableName=table,
            Key=_key("a"),
            UpdateExpression="SET more = :big, touched = :t",
            ExpressionAttributeValues={":big": {"S": big}, ":t": {"BOOL": True}},
        )
    _refused(refused.value, "ValidationException", UPDATE_TOO_LARGE)
    assert _all_items(client, table) == [before]  # not one of the update's attributes was kept
    # Growing a list element by element: refused at the element that crosses the limit, the list left as it was.
    element = {"M": {"sale_id": {"S": "z" * 1000}}}
    appended = 0
    with pytest.raises(ClientError) as refused:
        for _ in range(200):
            client.update_item(
                TableName=table,
                Key=_key("a"),
                UpdateExpression="SET rejected = list_append(if_not_exists(rejected, :empty), :one)",
                ExpressionAttributeValues={":empty": {"L": []}, ":one": {"L": [element]}},
            )
            appended += 1
    _refused(refused.value, "ValidationException", UPDATE_TOO_LARGE)
    (stored,) = _all_items(client, table)
    assert len(stored["rejected"]["L"]) == appended
    assert dynamodb_item_size(stored) <= MAX_ITEM_BYTES < dynamodb_item_size(stored) + 1 + 3 + 1 + 7 + 1000


def test_an_update_that_would_create_a_too_large_item_creates_nothing(jobs: tuple[Any, str]) -> None:
    client, table = jobs
    with pytest.raises(ClientError) as refused:
        client.update_item(
            TableName=table,
            Key=_key("new"),
            UpdateExpression="SET p = :big",
            ExpressionAttributeValues={":big": {"S": "x" * MAX_ITEM_BYTES}},
        )
    _refused(refused.value, "ValidationException", UPDATE_TOO_LARGE)
    assert _all_items(client, table) == []


def test_a_batch_with_one_item_too_large_is_refused_whole(jobs: tuple[Any, str]) -> None:
    client, table = jobs
    client.put_item(TableName=table, Item={**_key("gone"), "outcome": {"S": "pending"}})
    with pytest.raises(ClientError) as refused:
        client.batch_write_item(
            RequestItems={
                table: [
                    {"PutRequest": {"Item": {**_key("a"), "outcome": {"S": "pending"}}}},
                    {"PutRequest": {"Item": _padded(_key("b"), MAX_ITEM_BYTES + 1)}},
                    {"DeleteRequest": {"Key": _key("gone")}},
                ]
            }
        )
    _refused(refused.value, "ValidationException", PUT_TOO_LARGE)
    assert [i["item_key"]["S"] for i in _all_items(client, table)] == ["gone"]


def test_a_transaction_with_a_too_large_put_is_refused_before_it_starts(jobs: tuple[Any, str]) -> None:
    client, table = jobs
    client.put_item(TableName=table, Item={**_key("#"), "settled": {"N": "0"}})
    with pytest.raises(ClientError) as refused:
        client.transact_write_items(
            TransactItems=[
                {
                    "Update": {
                        "TableName": table,
                        "Key": _key("#"),
                        "UpdateExpression": "ADD settled :one",
                        "ExpressionAttributeValues": {":one": {"N": "1"}},
                    }
                },
                {"Put": {"TableName": table, "Item": _padded(_key("a"), MAX_ITEM_BYTES + 1)}},
            ]
        )
    _refused(refused.value, "ValidationException", PUT_TOO_LARGE)
    assert _all_items(client, table) == [{**_key("#"), "settled": {"N": "0"}}]
    client.transact_write_items(  # exactly the limit is fine
        TransactItems=[{"Put": {"TableName": table, "Item": _padded(_key("a"), MAX_ITEM_BYTES)}}]
    )


def test_a_transaction_whose_update_grows_an_item_too_large_is_cancelled_with_validation_error(
    jobs: tuple[Any, str],
) -> None:
    client, table = jobs
    big = _padded(_key("big"), 400_000)
    client.put_item(TableName=table, Item=big)
    with pytest.raises(ClientError) as cancelled:
        client.transact_write_items(
            TransactItems=[
                {"Put": {"TableName": table, "Item": {**_key("new"), "outcome": {"S": "reflected"}}}},
                {
                    "Update": {
                        "TableName": table,
                        "Key": _key("big"),
                        "UpdateExpression": "SET more = :more",
                        "ExpressionAttributeValues": {":more": {"S": "m" * 10_000}},
                    }
                },
            ]
        )
    error = cancelled.value.response
    assert error["Error"]["Code"] == "TransactionCanceledException"
    assert [(r["Code"], r.get("Message")) for r in error["CancellationReasons"]] == [
        ("None", None),
        ("ValidationError", UPDATE_TOO_LARGE),
    ]
    assert _all_items(client, table) == [big]  # the other item's Put was not kept either


def test_the_moto_server_enforces_it_too() -> None:
    from moto.server import ThreadedMotoServer

    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    try:
        url = f"http://127.0.0.1:{server.get_host_and_port()[1]}"
        client = boto3.client("dynamodb", endpoint_url=url, region_name="us-east-1")
        tables = create_tables(client, "size-server")
        table = table_env("size-server")["JOBS_TABLE"]
        with pytest.raises(ClientError) as refused:
            client.put_item(TableName=table, Item=_padded(_key("over"), MAX_ITEM_BYTES + 1))
        _refused(refused.value, "ValidationException", PUT_TOO_LARGE)
        client.put_item(TableName=table, Item=_padded(_key("a"), 409_000))
        with pytest.raises(ClientError) as refused:
            client.update_item(
                TableName=table,
                Key=_key("a"),
                UpdateExpression="SET more = :m",
                ExpressionAttributeValues={":m": {"S": "m" * 1000}},
            )
        _refused(refused.value, "ValidationException", UPDATE_TOO_LARGE)
        assert "more" not in client.get_item(TableName=table, Key=_key("a"), ConsistentRead=True)["Item"]
        for name in tables.values():
            client.delete_table(TableName=name)
    finally:
        server.stop()
