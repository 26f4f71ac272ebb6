"""The sample events in events/ (usable with `sam local invoke -e` where Docker exists) drive the real handlers."""

from __future__ import annotations

import importlib
import json
from pathlib import Path
from typing import Any

import pytest

from tests.conftest import EVENTS, Aws, lambda_context, load_event

API_EVENTS = sorted(p.name for p in (EVENTS / "api").glob("*.json"))


@pytest.mark.parametrize("name", API_EVENTS)
def test_api_sample_events_reach_their_route(aws: Aws, name: str) -> None:
    from functions.api.app import lambda_handler

    event = load_event(f"api/{name}")
    assert event["requestContext"]["identity"]["userArn"], "AWS_IAM-signed requests carry the caller"
    response = lambda_handler(event, lambda_context())
    body = json.loads(response["body"])
    # The sample sale is not in the default scenario: a route answers about it, it never answers "no route".
    assert response["statusCode"] in (200, 202, 404, 409), body
    assert body.get("error") != "not_found"


def _task(function: str, event_file: str) -> dict[str, Any]:
    handler = importlib.import_module(f"functions.{function}.app").lambda_handler
    result: dict[str, Any] = handler(load_event(event_file), lambda_context(f"sales-recovery-test-{function}"))
    return result


def test_verify_task_sample_settles_an_unknown_sale(aws: Aws) -> None:
    assert _task("verify", "tasks/verify.json") == {
        "next_action": "blocked",
        "output": {
            "connection_id": "mla-main",
            "sale_id": "2000009713473608",
            "outcome": "not_reflectable",
            "reason": "sale_not_found",
            "attempts": 0,
        },
    }


@pytest.mark.parametrize(("function", "attempts"), [("relink", 2), ("resync", 1)])
def test_attempt_task_samples(aws: Aws, function: str, attempts: int) -> None:
    output = _task(function, f"tasks/{function}.json")
    assert output["outcome"] == "not_reflectable" and output["reason"] == "sale_not_found"
    assert output["attempts"] == attempts


def test_escalate_task_sample_pages_once(aws: Aws) -> None:
    first = _task("escalate", "tasks/escalate.json")
    second = _task("escalate", "tasks/escalate.json")  # a Step Functions retry of the same task
    assert (
        first
        == second
        == {
            "connection_id": "mla-main",
            "sale_id": "2000009713473608",
            "outcome": "escalated",
            "reason": "retries_exhausted",
            "attempts": 3,
        }
    )
    pages = aws.help_desk_messages()
    assert len(pages) == 1 and "RelinkFailed" in pages[0]["last_error"]


@pytest.mark.parametrize("path", sorted((EVENTS / "statemachine").glob("*.json")), ids=lambda p: p.name)
def test_state_machine_inputs_have_the_contract_shape(path: Path) -> None:
    data = json.loads(path.read_text())
    assert {"connection_id", "sale_id"} <= set(data) <= {"connection_id", "sale_id", "attempts"}
