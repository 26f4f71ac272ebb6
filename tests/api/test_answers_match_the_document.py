"""Real answers of every contract route, successes and client errors, validate against the schema the API's own
OpenAPI document (GET /openapi.json, the /docs page) gives for that route and status: the page cannot promise a
shape the API does not send."""

from __future__ import annotations

import json
import re
from typing import Any

import pytest
from jsonschema import Draft202012Validator

from tests.api.test_single_sale import (
    ALREADY_REFLECTED,
    CANCELLED,
    CART_PACK,
    CART_SALE,
    LISTED_TIMEOUT,
    SHIPMENT,
    SINGLE_ORDER_PACK,
    UNKNOWN_ID,
)
from tests.bulk.test_bulk import queued, run_worker
from tests.conftest import Aws

C = "mla-main"
HEALTHY = "2000009101000011"  # default scenario: paid, linked products, never imported
SALE = f"/connections/{C}/sales"
PACKS = f"/connections/{C}/packs"


def _schema_for(doc: dict[str, Any], method: str, path: str, status: int) -> dict[str, Any]:
    for template, item in doc["paths"].items():
        pattern = "^" + re.sub(r"\{[^/]+\}", "[^/]+", template) + "$"
        if re.match(pattern, path) and method.lower() in item:
            response = item[method.lower()]["responses"].get(str(status))
            assert response is not None, f"{method} {template} does not document status {status}"
            schema = response["content"]["application/json"]["schema"]
            return {**schema, "components": doc["components"]}
    raise AssertionError(f"{method} {path} is not in the document")


def _check(doc: dict[str, Any], method: str, path: str, status: int, body: Any) -> None:
    validator = Draft202012Validator(_schema_for(doc, method, path, status))
    problems = [f"{'/'.join(map(str, e.absolute_path)) or '(body)'}: {e.message}" for e in validator.iter_errors(body)]
    assert not problems, f"{method} {path} -> {status} does not match the document: {problems}"


@pytest.fixture
def doc(call_api: Any) -> dict[str, Any]:
    status, body, _ = call_api("GET", "/openapi.json")
    assert status == 200
    return dict(body)


REQUESTS: list[tuple[str, str, str | None, int]] = [
    ("GET", f"{SALE}/{HEALTHY}/verification", None, 200),
    ("GET", f"{SALE}/{CANCELLED}/verification", None, 200),
    ("GET", f"{SALE}/{SHIPMENT}/verification", None, 200),  # a shipment id: not a sale, with its sales
    ("GET", f"{SALE}/not-a-sale!/verification", None, 400),
    ("GET", f"/connections/nope/sales/{HEALTHY}/verification", None, 404),
    ("POST", f"{SALE}/{LISTED_TIMEOUT}/resync", None, 200),
    ("POST", f"{SALE}/{HEALTHY}/resync", None, 409),
    ("POST", f"{SALE}/{HEALTHY}/resync", "[1, 2]", 400),
    ("POST", f"{SALE}/{ALREADY_REFLECTED}/relink", None, 200),
    ("POST", f"{SALE}/{HEALTHY}/relink", None, 202),
    ("GET", f"{SALE}/{ALREADY_REFLECTED}", None, 200),
    ("GET", f"{SALE}/{HEALTHY}", None, 200),  # relinked above: in progress, with its execution
    ("GET", f"{SALE}/{UNKNOWN_ID}", None, 404),
    # A cart (issue 15): its pack's relink, where it stands, a cart sale's relink and state, a pack that is no cart.
    ("GET", f"{PACKS}/{CART_PACK}", None, 404),  # never seen
    ("POST", f"{PACKS}/{CART_PACK}/relink", None, 202),
    ("GET", f"{PACKS}/{CART_PACK}", None, 200),
    ("POST", f"{SALE}/{CART_SALE}/relink", None, 202),  # the same execution, with the cart's pack and sales
    ("GET", f"{SALE}/{CART_SALE}", None, 200),
    ("POST", f"{PACKS}/{SINGLE_ORDER_PACK}/relink", None, 422),
    ("POST", f"{PACKS}/{CART_PACK}/relink", "[1]", 400),
    ("GET", f"/connections/{C}/sale-errors", None, 200),
    ("GET", f"/connections/{C}", None, 200),
    ("GET", "/connections/nope", None, 404),
    ("GET", f"/connections/{C}/sale-errors?limit=0", None, 422),
    ("POST", f"/connections/{C}/reprocessing-jobs", json.dumps({"sale_ids": "junk, x-1"}), 422),
    ("POST", f"/connections/{C}/reprocessing-jobs", json.dumps({"ids": []}), 400),
    ("GET", f"/connections/{C}/reprocessing-jobs/{'0' * 32}", None, 404),
    ("GET", f"/connections/{C}/reprocessing-jobs/not-a-job", None, 400),
]


def test_every_answer_matches_the_documented_schema(call_api: Any, aws: Aws, doc: dict[str, Any]) -> None:
    for method, target, body, expected in REQUESTS:
        path, _, query = target.partition("?")
        params = dict(part.split("=", 1) for part in query.split("&")) if query else None
        status, answer, _ = call_api(method, path, body=body, query=params)
        assert status == expected, (method, target, status, answer)
        _check(doc, method, path, status, answer)


def test_a_job_from_submission_to_completion_matches_the_document(call_api: Any, aws: Aws, doc: dict[str, Any]) -> None:
    jobs = f"/connections/{C}/reprocessing-jobs"
    status, accepted, _ = call_api("POST", jobs, body=json.dumps({"sale_ids": f"{HEALTHY}, {CANCELLED}, x1"}))
    assert status == 202 and accepted["rejected"], accepted
    _check(doc, "POST", jobs, status, accepted)
    status, pending, _ = call_api("GET", f"{jobs}/{accepted['job_id']}")
    _check(doc, "GET", f"{jobs}/{accepted['job_id']}", status, pending)
    run_worker(aws, queued(aws))
    status, done, _ = call_api("GET", f"{jobs}/{accepted['job_id']}", query={"limit": "1"})
    assert status == 200 and done["status"] == "completed" and done["next_cursor"], done
    _check(doc, "GET", f"{jobs}/{accepted['job_id']}", status, done)
