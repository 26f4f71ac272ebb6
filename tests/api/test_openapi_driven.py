"""Cases generated FROM the API's own OpenAPI document (GET /openapi.json, produced by the Powertools resolver):
for every documented operation, hypothesis draws each parameter from its schema — valid values (by type,
pattern, bounds) and values just outside it — and sends the request through the real API handler.

Whatever arrives: never a 5xx; a 4xx carries an error code and a message and writes nothing; every documented
operation is exercised. Derandomized, so CI sees the same examples every run.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.api.test_bad_input import queued, snapshot
from tests.api.test_fuzz_handler import NASTY, SETTINGS, check
from tests.conftest import Aws

C = "mla-main"


def document(call_api: Any) -> dict[str, Any]:
    status, body, _ = call_api("GET", "/openapi.json")
    assert status == 200
    return dict(body)


def operations(doc: dict[str, Any]) -> list[tuple[str, str, dict[str, Any]]]:
    return [
        (method.upper(), path, operation)
        for path, item in doc["paths"].items()
        for method, operation in item.items()
        if method in ("get", "post", "put", "delete", "patch")
    ]


def from_schema(schema: dict[str, Any]) -> st.SearchStrategy[str]:
    """Values a client could send for this parameter: inside the schema and just outside it, as text."""
    kind = schema.get("type")
    for option in schema.get("anyOf", []):  # Optional[...] parameters
        if option.get("type") != "null":
            return from_schema(option)
    if kind == "integer":
        low, high = schema.get("minimum", -(10**6)), schema.get("maximum", 10**6)
        return st.integers(min_value=low - 2, max_value=high + 2).map(str) | st.sampled_from(["ten", "1.5", ""])
    if "pattern" in schema:
        return st.from_regex(re.compile(schema["pattern"]), fullmatch=True) | st.sampled_from(NASTY)
    return st.sampled_from(NASTY) | st.from_regex(r"[0-9]{1,20}", fullmatch=True) | st.text(max_size=30)


def request_strategy(method: str, path: str, operation: dict[str, Any]) -> st.SearchStrategy[dict[str, Any]]:
    path_params: dict[str, st.SearchStrategy[str]] = {}
    query: dict[str, st.SearchStrategy[str]] = {}
    for parameter in operation.get("parameters", []):
        strategy = from_schema(parameter.get("schema", {}))
        if parameter["name"] == "connection_id":
            strategy = st.just(C) | strategy  # mostly a real connection, so the deeper paths are reached
        (path_params if parameter["in"] == "path" else query)[parameter["name"]] = strategy
    return st.fixed_dictionaries(
        {
            "path": st.fixed_dictionaries(path_params),
            "query": st.fixed_dictionaries({}, optional=query),
            "body": st.none()
            if method == "GET"
            else st.one_of(
                st.none(),
                st.builds(lambda ids: json.dumps({"sale_ids": ids}), st.lists(st.sampled_from(NASTY), max_size=5)),
            ),
        }
    )


def test_the_document_lists_every_contract_operation(call_api: Any) -> None:
    listed = {(m, p) for m, p, _ in operations(document(call_api))}
    assert {
        ("GET", "/connections/{connection_id}/sales/{sale_id}/verification"),
        ("POST", "/connections/{connection_id}/sales/{sale_id}/resync"),
        ("POST", "/connections/{connection_id}/sales/{sale_id}/relink"),
        ("GET", "/connections/{connection_id}/sales/{sale_id}"),
        ("GET", "/connections/{connection_id}/sale-errors"),
        ("POST", "/connections/{connection_id}/reprocessing-jobs"),
        ("GET", "/connections/{connection_id}/reprocessing-jobs/{job_id}"),
    } <= listed


def test_cases_generated_from_the_openapi_document(call_api: Any, aws: Aws) -> None:
    ops = operations(document(call_api))
    exercised: set[tuple[str, str]] = set()
    # Each operation gets its share of the examples, so every one is exercised however many the document has.
    share = settings(SETTINGS, max_examples=max(5, SETTINGS.max_examples // len(ops)))

    def exercise(method: str, template: str, request: dict[str, Any]) -> None:
        path = template
        for name, value in request["path"].items():
            path = path.replace("{" + name + "}", value.replace("/", "%2F"))
        before, messages = snapshot(aws), queued(aws)
        status, body, _ = call_api(method, path, query=request["query"] or None, body=request["body"])
        exercised.add((method, template))
        check(aws, status, body, before, messages)

    def case(method: str, template: str) -> Callable[[dict[str, Any]], None]:
        def run(request: dict[str, Any]) -> None:
            exercise(method, template, request)

        return run

    for method, template, operation in ops:
        share(given(request=request_strategy(method, template, operation))(case(method, template)))()
    assert exercised == {(m, p) for m, p, _ in ops}, "every documented operation was exercised"
