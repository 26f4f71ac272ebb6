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


def _claimed_by_the_samples_execution(event_file: str) -> None:
    """The samples' execution owns its sale, as it would after its Verify task: the Verify handler claims it for
    the execution (a run nobody claimed, as from the console), then fails on ML's 503 as the sale always does."""
    from shared.tasks import MarketplaceUnavailable

    event = load_event(event_file)
    verify = importlib.import_module("functions.verify.app").lambda_handler
    with pytest.raises(MarketplaceUnavailable):
        verify({**{k: event[k] for k in ("connection_id", "sale_id", "execution_id")}, "attempts": 0}, lambda_context())


@pytest.mark.parametrize(
    ("function", "error", "key"), [("relink", "RelinkFailed", "#relink#2"), ("resync", "ResyncFailed", "#resync")]
)
def test_attempt_task_samples_record_their_failure_once(aws: Aws, function: str, error: str, key: str) -> None:
    _claimed_by_the_samples_execution(f"tasks/{function}.json")
    for _ in range(2):  # a Step Functions retry of the same task records nothing twice
        with pytest.raises(Exception) as failed:
            _task(function, f"tasks/{function}.json")
        assert type(failed.value).__name__ == error
    entry = aws.table("SALE_ERRORS_TABLE").get_item(Key={"connection_id": "mla-main", "sale_id": "2000009112000016"})
    item = entry["Item"]
    assert item["attempts"] == 1 and [k for k in item["attempt_keys"] if k.endswith(key)] != []


def test_escalate_task_sample_pages_once(aws: Aws) -> None:
    _claimed_by_the_samples_execution("tasks/escalate.json")
    first = _task("escalate", "tasks/escalate.json")
    second = _task("escalate", "tasks/escalate.json")  # a Step Functions retry of the same task
    assert (
        first
        == second
        == {
            "connection_id": "mla-main",
            "sale_id": "2000009112000016",
            "outcome": "escalated",
            "reason": "retries_exhausted",
            "attempts": 3,
        }
    )
    pages = aws.help_desk_messages()
    assert len(pages) == 1
    # What the Catch handed over is read as a person reads it: no JSON payload, no stack trace.
    assert pages[0]["last_error"].startswith("RelinkFailed: Service Unavailable")
    assert "stackTrace" not in json.dumps(pages[0]) and "errorType" not in json.dumps(pages[0])


def test_escalate_for_an_execution_that_does_not_own_the_sale_pages_nobody(aws: Aws) -> None:
    """The sample's execution never claimed the sale (nothing ran before it): no escalation, no page."""
    answer = _task("escalate", "tasks/escalate.json")
    assert answer["outcome"] == "pending" and aws.help_desk_messages() == []


@pytest.mark.parametrize("path", sorted((EVENTS / "statemachine").glob("*.json")), ids=lambda p: p.name)
def test_state_machine_inputs_have_the_contract_shape(path: Path) -> None:
    data = json.loads(path.read_text())
    # {connection_id, sale_id} or, for a cart (DESIGN §3.1), {connection_id, pack_id}; attempts optional.
    subject = "pack_id" if "pack_id" in data else "sale_id"
    assert {"connection_id", subject} <= set(data) <= {"connection_id", subject, "attempts"}


def test_execution_failed_event_settles_the_sale_its_execution_owned(aws: Aws) -> None:
    """The status event of an execution that ended FAILED while it owned its sale: escalated, one page, once."""
    event = load_event("execution-events/execution-failed.json")
    handler = importlib.import_module("functions.execution_events.app").lambda_handler
    # Before its execution claimed the sale, the event settles nothing.
    assert handler(event, lambda_context("sales-recovery-test-execution-events")) == {"settled": False}
    _claimed_by_the_samples_execution("tasks/escalate.json")  # the same execution as the event's
    first = handler(event, lambda_context("sales-recovery-test-execution-events"))
    again = handler(event, lambda_context("sales-recovery-test-execution-events"))  # EventBridge delivers at least once
    assert (first, again) == ({"settled": True}, {"settled": False})
    row = aws.table("SALES_TABLE").get_item(Key={"connection_id": "mla-main", "sale_id": "2000009112000016"})["Item"]
    assert (row["outcome"], row["reason"]) == ("escalated", "execution_failed")
    pages = aws.help_desk_messages()
    assert len(pages) == 1 and pages[0]["reason"] == "execution_failed"


def test_an_event_that_is_not_a_status_change_is_refused(aws: Aws) -> None:
    from functions.execution_events.app import NotAnExecutionStatusChange, lambda_handler

    with pytest.raises(NotAnExecutionStatusChange):
        lambda_handler(load_event("schedules/reconcile.json"), lambda_context("sales-recovery-test-execution-events"))
