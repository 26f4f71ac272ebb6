"""Bad input: a clear 4xx a person can act on, and nothing written anywhere."""

from __future__ import annotations

import json
from typing import Any

import boto3
import pytest

from devstack.simulator.server import MeliSimulator
from tests.conftest import Aws

C = "mla-main"
GOOD = "2000009101000011"


def snapshot(aws: Aws) -> dict[str, list[Any]]:
    names = ("SALES_TABLE", "SALE_ERRORS_TABLE", "IDENTIFIER_ALIASES_TABLE", "CONNECTIONS_TABLE", "JOBS_TABLE")
    return {name: sorted(map(str, aws.table(name).scan()["Items"])) for name in names}


def queued(aws: Aws) -> int:
    attributes = boto3.client("sqs").get_queue_attributes(
        QueueUrl=aws.env["BULK_QUEUE_URL"], AttributeNames=["ApproximateNumberOfMessages"]
    )
    return int(attributes["Attributes"]["ApproximateNumberOfMessages"])


@pytest.mark.parametrize(
    ("method", "path", "status", "error", "words"),
    [
        ("GET", f"/connections/{C}/sales/abc/verification", 400, "invalid_sale_id", "digits only"),
        ("GET", f"/connections/{C}/sales/-2000009101000011/verification", 400, "invalid_sale_id", "negative"),
        ("GET", f"/connections/{C}/sales/{'9' * 25}/verification", 400, "invalid_sale_id", "digits"),
        ("GET", f"/connections/{C}/sales/0123/verification", 400, "invalid_sale_id", "starts with 0"),
        ("GET", f"/connections/{C}/sales/%EF%BC%91%EF%BC%92/verification", 400, "invalid_sale_id", "not a sale id"),
        ("GET", f"/connections/{C}/sales/\uff11\uff12\uff13/verification", 400, "invalid_sale_id", "not a sale id"),
        ("GET", f"/connections/{C}/sales/1;DROP TABLE/verification", 400, "invalid_sale_id", "not a sale id"),
        ("POST", f"/connections/{C}/sales/abc/resync", 400, "invalid_sale_id", "digits only"),
        ("POST", f"/connections/{C}/sales/abc/relink", 400, "invalid_sale_id", "digits only"),
        ("GET", f"/connections/{C}/sales/abc", 400, "invalid_sale_id", "digits only"),
        ("GET", f"/connections/nope/sales/{GOOD}/verification", 404, "unknown_connection", "Unknown connection"),
        ("POST", f"/connections/nope/sales/{GOOD}/relink", 404, "unknown_connection", "Unknown connection"),
        ("GET", "/connections/nope/sale-errors", 404, "unknown_connection", "Unknown connection"),
        ("GET", f"/connections/{'x' * 70}/sales/{GOOD}", 400, "invalid_connection_id", "1-64 letters"),
        ("GET", f"/connections/a$b/sales/{GOOD}/verification", 400, "invalid_connection_id", "1-64 letters"),
        ("DELETE", f"/connections/{C}/sales/{GOOD}", 405, "method_not_allowed", "use GET"),
        ("GET", f"/connections/{C}/sales/{GOOD}/relink", 405, "method_not_allowed", "use POST"),
        ("PUT", f"/connections/{C}/sale-errors", 405, "method_not_allowed", "use GET"),
        ("GET", "/connections", 404, "not_found", "No route"),
        ("GET", f"/connections/{C}/sales/{GOOD}/../../secrets", 404, "not_found", "No route"),
        # empty segments
        ("GET", f"/connections/{C}/sales//verification", 400, "missing_path_parameter", "sale id in"),
        ("POST", f"/connections/{C}/sales//resync", 400, "missing_path_parameter", "sale id in"),
        ("GET", "/connections//sale-errors", 400, "missing_path_parameter", "connection id in"),
        # path traversal, encoded
        ("GET", f"/connections/{C}/sales/..%2F..%2Fsecrets/verification", 400, "invalid_sale_id", "digits only"),
        ("GET", f"/connections/..%2F{C}/sales/{GOOD}/verification", 400, "invalid_connection_id", "1-64 letters"),
        ("GET", f"/connections/{C}/sales/{GOOD}/..%2F..%2Fsecrets", 404, "not_found", "No route"),
        # injection strings
        ("GET", f"/connections/{C}/sales/' OR 1=1 --/verification", 400, "invalid_sale_id", "digits only"),
        ("GET", f"/connections/{C}/sales/<script>alert(1)<%2Fscript>/verification", 400, "invalid_sale_id", "digits"),
        ("GET", f"/connections/<script>/sales/{GOOD}/verification", 400, "invalid_connection_id", "1-64 letters"),
        ("GET", "/connections/' OR 1=1 --/sale-errors", 400, "invalid_connection_id", "1-64 letters"),
        ("GET", f"/connections/ /sales/{GOOD}/verification", 400, "invalid_connection_id", "1-64 letters"),
        # numbers that are not sale ids
        ("GET", f"/connections/{C}/sales/1e16/verification", 400, "invalid_sale_id", "digits only"),
        ("GET", f"/connections/{C}/sales/0x1F/verification", 400, "invalid_sale_id", "digits only"),
        ("GET", f"/connections/{C}/sales/{GOOD}.0/verification", 400, "invalid_sale_id", "digits only"),
        ("GET", f"/connections/{C}/sales/{GOOD}%00/verification", 400, "invalid_sale_id", "digits only"),
        # unknown routes and methods
        ("GET", f"/connections/{C}/sales/{GOOD}/verification/extra", 404, "not_found", "No route"),
        ("GET", "/", 404, "not_found", "No route"),
        ("GET", "/admin", 404, "not_found", "No route"),
        ("PATCH", f"/connections/{C}/sales/{GOOD}/resync", 405, "method_not_allowed", "use POST"),
        ("GET", f"/connections/{C}/reprocessing-jobs", 405, "method_not_allowed", "use POST"),
        ("DELETE", f"/connections/{C}/reprocessing-jobs/{'0' * 32}", 405, "method_not_allowed", "use GET"),
    ],
)
def test_bad_paths_answer_a_clear_4xx_and_write_nothing(
    call_api: Any, aws: Aws, meli: MeliSimulator, method: str, path: str, status: int, error: str, words: str
) -> None:
    before = snapshot(aws)
    meli.reset_log()
    got_status, body, _ = call_api(method, path)
    assert got_status == status, body
    assert body["error"] == error
    assert words in body["message"]
    assert snapshot(aws) == before
    assert queued(aws) == 0
    assert meli.count() == 0  # rejected before anyone asked Mercado Libre


@pytest.mark.parametrize(
    ("body", "headers", "status", "words"),
    [
        ("{not json", None, 400, "not valid JSON"),
        ('["a list"]', None, 400, "JSON object"),
        ('"text"', None, 400, "JSON object"),
        ("sale_ids=1,2", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "Send JSON"),
        ("{" + '"x": "' + "y" * 70_000 + '"}', None, 413, "larger than"),
    ],
)
def test_bad_bodies_on_post_routes(
    call_api: Any, aws: Aws, body: str, headers: dict[str, str] | None, status: int, words: str
) -> None:
    before = snapshot(aws)
    for route in ("relink", "resync"):
        got, answer, _ = call_api("POST", f"/connections/{C}/sales/{GOOD}/{route}", body=body, headers=headers)
        assert got == status, answer
        assert words in answer["message"]
    assert snapshot(aws) == before


@pytest.mark.parametrize(
    ("query", "status", "words"),
    [
        ({"limit": "0"}, 422, "limit"),
        ({"limit": "1000"}, 422, "limit"),
        ({"limit": "ten"}, 422, "limit"),
        ({"error_type": "DROP TABLE"}, 422, "error_type"),
        ({"cursor": "bm90LWEtY3Vyc29y"}, 400, "cursor"),
    ],
)
def test_bad_error_list_queries(call_api: Any, query: dict[str, str], status: int, words: str) -> None:
    got, body, _ = call_api("GET", f"/connections/{C}/sale-errors", query=query)
    assert got == status, body
    assert words in body["message"]


JOBS = f"/connections/{C}/reprocessing-jobs"
TEN_THOUSAND_AND_ONE = ", ".join(str(2000009400000000 + n) for n in range(10_001))


# The bulk route. tests/bulk/test_bulk.py has the empty list and text, a bare number, 10,001 ids as a JSON list, a
# missing "sale_ids" and an unknown field; these are the others. Nothing may be written and nothing queued.
@pytest.mark.parametrize(
    ("path", "body", "headers", "status", "error", "words"),
    [
        # JSON numbers and other scalars where the list or text belongs
        (JOBS, {"sale_ids": 2000009101000011.0}, None, 422, "no_sale_ids", "list of sale ids"),
        (JOBS, {"sale_ids": True}, None, 422, "no_sale_ids", "list of sale ids"),
        (JOBS, {"sale_ids": None}, None, 422, "no_sale_ids", "list of sale ids"),
        (JOBS, {"sale_ids": [1.5, -2000009101000011, 10**25]}, None, 422, "no_valid_sale_ids", "No sale id among"),
        # nested junk
        (JOBS, {"sale_ids": {"ids": [GOOD]}}, None, 422, "no_sale_ids", "list of sale ids"),
        (JOBS, {"sale_ids": [[[GOOD]]]}, None, 422, "no_valid_sale_ids", "Nothing was queued"),
        (JOBS, {"sale_ids": [{"id": GOOD}, [1], None, {}]}, None, 422, "no_valid_sale_ids", "Nothing was queued"),
        # unicode digits (fullwidth, Arabic-Indic, Devanagari), as a list and as text
        (JOBS, {"sale_ids": ["\uff11\uff12\uff13", "\u0661\u0662\u0663"]}, None, 422, "no_valid_sale_ids", "digits"),
        (JOBS, {"sale_ids": "\u0967\u0968\u0969, \uff14\uff15"}, None, 422, "no_valid_sale_ids", "digits"),
        # injection strings
        (JOBS, {"sale_ids": ["' OR 1=1 --", "<script>alert(1)</script>"]}, None, 422, "no_valid_sale_ids", "rejected"),
        (JOBS, {"sale_ids": "'; DROP TABLE sales; --"}, None, 422, "no_valid_sale_ids", "rejected"),
        # too many, too big, wrong type of body
        (JOBS, {"sale_ids": TEN_THOUSAND_AND_ONE}, None, 422, "too_many_sale_ids", "the most is 10000"),
        (JOBS, {"sale_ids": "1" * (1024 * 1024)}, None, 413, "invalid_body", "larger than"),
        (JOBS, TEN_THOUSAND_AND_ONE, {"Content-Type": "text/plain"}, 415, "invalid_body", "Send JSON"),
        (JOBS, "sale_ids=1", {"Content-Type": "application/x-www-form-urlencoded"}, 415, "invalid_body", "Send JSON"),
        (JOBS, "{not json", None, 400, "invalid_body", "not valid JSON"),
        (JOBS, [GOOD], None, 400, "invalid_body", "JSON object"),
        (JOBS, "", None, 400, "invalid_body", "sale_ids"),
        # the connection
        ("/connections/nope/reprocessing-jobs", {"sale_ids": [GOOD]}, None, 404, "unknown_connection", "Unknown"),
        (f"/connections/{'x' * 65}/reprocessing-jobs", {"sale_ids": [GOOD]}, None, 400, "invalid_connection_id", "64"),
    ],
)
def test_bad_bulk_requests_answer_a_clear_4xx_and_queue_nothing(
    call_api: Any,
    aws: Aws,
    meli: MeliSimulator,
    path: str,
    body: Any,
    headers: dict[str, str] | None,
    status: int,
    error: str,
    words: str,
) -> None:
    before = snapshot(aws)
    meli.reset_log()
    text = body if isinstance(body, str) else json.dumps(body)
    got, answer, _ = call_api("POST", path, body=text, headers=headers)
    assert (got, answer["error"]) == (status, error), answer
    assert words in answer["message"]
    if error == "no_valid_sale_ids":  # every value is listed with its own reason
        assert answer["rejected"] and all(r["reason"] and r["message"] for r in answer["rejected"])
    assert snapshot(aws) == before
    assert queued(aws) == 0
    assert meli.count() == 0
