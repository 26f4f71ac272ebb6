"""The API gives Mercado Libre only the time API Gateway leaves it (``functions.api.app.ANSWER_SECONDS`` kept for the
writes and the answer, shared.meli.deadline): a request whose ML calls cannot end in time answers 503 with nothing
written, not API Gateway's bare 504 after 29 s. Through the real handler with a whole API Gateway event."""

from __future__ import annotations

import json
from typing import Any

from tests.conftest import Aws, api_event, lambda_context

C = "mla-main"
SALE = "2000009101000011"  # case a: paid, healthy, not in the platform


def call_with_time_left(method: str, path: str, seconds: float) -> tuple[int, Any]:
    from functions.api.app import lambda_handler

    context = lambda_context()
    context.get_remaining_time_in_millis = lambda: int(seconds * 1000)
    response = lambda_handler(api_event(method, path), context)
    return response["statusCode"], json.loads(response["body"])


def test_a_verification_with_no_time_left_for_ml_answers_503_and_writes_nothing(
    call_api: Any, aws: Aws, meli: Any
) -> None:
    from functions.api.app import ANSWER_SECONDS

    status, body = call_with_time_left("GET", f"/connections/{C}/sales/{SALE}/verification", ANSWER_SECONDS + 0.2)
    assert (status, body["error"], body["retryable"]) == (503, "marketplace_unavailable", True)
    assert body["message"].startswith("Mercado Libre did not answer in the time this request has")
    assert meli.count("GET", rf"^/orders/{SALE}$") == 0  # no request that could not be answered in time
    status, _, _ = call_api("GET", f"/connections/{C}/sales/{SALE}")
    assert status == 404  # nothing claimed, nothing started


def test_with_the_usual_time_the_same_verification_answers(aws: Aws, meli: Any) -> None:
    status, body = call_with_time_left("GET", f"/connections/{C}/sales/{SALE}/verification", 29.0)
    assert (status, body["sale_id"], body["next_action"]) == (200, SALE, "relink")
    assert meli.count("GET", rf"^/orders/{SALE}$") == 1
