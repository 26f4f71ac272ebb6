"""Bad input: a clear 4xx a person can act on, and nothing written anywhere."""

from __future__ import annotations

from typing import Any

import pytest

from devstack.simulator.server import MeliSimulator
from tests.conftest import Aws

C = "mla-main"
GOOD = "2000009101000011"


def snapshot(aws: Aws) -> dict[str, list[Any]]:
    names = ("SALES_TABLE", "SALE_ERRORS_TABLE", "IDENTIFIER_ALIASES_TABLE", "CONNECTIONS_TABLE")
    return {name: sorted(map(str, aws.table(name).scan()["Items"])) for name in names}


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
