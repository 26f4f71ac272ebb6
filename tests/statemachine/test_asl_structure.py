"""Structural checks of statemachine/relink.asl.json that neither cfn-lint nor moto make (aws-offline.md §1, §5):
dangling transitions, unreachable states, the Lambda service-exception retry on every task, substitutions that
the template defines, and error names that exist as Python exception classes.
"""

from __future__ import annotations

import json
import re
from pathlib import Path
from typing import Any

import pytest

from devstack.template import load_template
from shared import tasks

ROOT = Path(__file__).resolve().parents[2]
ASL = json.loads((ROOT / "statemachine" / "relink.asl.json").read_text())
STATES: dict[str, dict[str, Any]] = ASL["States"]
# https://docs.aws.amazon.com/step-functions/latest/dg/bp-lambda-serviceexception.html
LAMBDA_SERVICE_ERRORS = {
    "Lambda.ServiceException",
    "Lambda.AWSLambdaException",
    "Lambda.SdkClientException",
    "Lambda.TooManyRequestsException",
    "Lambda.ClientExecutionTimeoutException",
}


def transitions(state: dict[str, Any]) -> list[str]:
    targets = [state[k] for k in ("Next", "Default") if k in state]
    targets += [choice["Next"] for choice in state.get("Choices", [])]
    targets += [catch["Next"] for catch in state.get("Catch", [])]
    return targets


def test_every_transition_targets_an_existing_state() -> None:
    assert ASL["StartAt"] in STATES
    for name, state in STATES.items():
        for target in transitions(state):
            assert target in STATES, f"{name} -> {target}"


def test_every_state_is_reachable_and_every_path_ends() -> None:
    seen, todo = set(), [ASL["StartAt"]]
    while todo:
        name = todo.pop()
        if name not in seen:
            seen.add(name)
            todo += transitions(STATES[name])
    assert seen == set(STATES)
    for name, state in STATES.items():
        ends = state.get("End") or state["Type"] in ("Succeed", "Fail")
        assert ends or transitions(state), f"{name} neither ends nor moves on"


def lambda_tasks() -> dict[str, dict[str, Any]]:
    return {n: s for n, s in STATES.items() if s["Type"] == "Task" and "lambda:invoke" in s["Resource"]}


def test_there_is_a_task_per_function() -> None:
    functions = {t["Parameters"]["FunctionName"] for t in lambda_tasks().values()}
    assert functions == {
        "${VerifyFunctionArn}",
        "${ResyncFunctionArn}",
        "${RelinkFunctionArn}",
        "${EscalateFunctionArn}",
    }


@pytest.mark.parametrize("name", sorted(lambda_tasks()))
def test_every_lambda_task_retries_the_lambda_service_exceptions(name: str) -> None:
    retriers = lambda_tasks()[name].get("Retry", [])
    covered = {error for retrier in retriers for error in retrier["ErrorEquals"]}
    assert covered >= LAMBDA_SERVICE_ERRORS
    for retrier in retriers:
        assert retrier["MaxAttempts"] >= 2 and retrier["BackoffRate"] >= 1.5


def test_states_all_stands_alone_and_last() -> None:
    for name, state in STATES.items():
        for i, catcher in enumerate(state.get("Catch", [])):
            if "States.ALL" in catcher["ErrorEquals"]:
                assert catcher["ErrorEquals"] == ["States.ALL"], name
                assert i == len(state["Catch"]) - 1, f"{name}: States.ALL must be the last catcher"


def test_business_error_names_are_python_exception_classes() -> None:
    names = {
        error
        for state in STATES.values()
        for rule in [*state.get("Retry", []), *state.get("Catch", [])]
        for error in rule["ErrorEquals"]
        if not error.startswith(("States.", "Lambda."))
    }
    assert names, "the state machine routes on named business errors"
    for error in names:
        assert isinstance(getattr(tasks, error, None), type), f"{error} is not a class in shared.tasks"
        assert issubclass(getattr(tasks, error), Exception)


def test_every_substitution_is_defined_in_the_template() -> None:
    used = set(re.findall(r"\$\{(\w+)\}", json.dumps(ASL)))
    machine = load_template()["Resources"]["RelinkStateMachine"]["Properties"]
    assert machine["DefinitionUri"] == "statemachine/relink.asl.json"
    assert used == set(machine["DefinitionSubstitutions"])


def test_at_most_three_relink_attempts() -> None:
    assert STATES["Configure"]["Parameters"]["max_attempts"] == 3
    loop = STATES["AttemptsLeft"]["Choices"][0]
    assert loop["NumericLessThanPath"] == "$.config.max_attempts" and loop["Next"] == "WaitBeforeRelink"
    assert STATES["WaitBeforeRelink"]["Next"] == "Relink"


@pytest.mark.parametrize("name", sorted(lambda_tasks()))
def test_every_lambda_task_retries_a_write_it_could_not_make(name: str) -> None:
    """A state the task could not write (StateWriteFailed, after the store's own tries) runs the task again rather
    than falling to the catch-all (escalation); every task decides again from the sale as it is, so running it
    again changes nothing else."""
    retriers = [r for r in lambda_tasks()[name].get("Retry", []) if "StateWriteFailed" in r["ErrorEquals"]]
    assert len(retriers) == 1 and retriers[0]["MaxAttempts"] >= 2
    assert issubclass(tasks.StateWriteFailed, Exception)


@pytest.mark.parametrize("name", sorted(lambda_tasks()))
def test_every_lambda_task_catches_what_its_retries_do_not_cure(name: str) -> None:
    """No task failure ends the execution uncaught: an execution that fails leaves the sale to its status event,
    and Escalate, which has nothing left to escalate to, fails the execution on purpose (EscalationFailed)."""
    catchers = lambda_tasks()[name].get("Catch", [])
    assert catchers and catchers[-1]["ErrorEquals"] == ["States.ALL"]
    if name == "Escalate":
        failed = STATES[catchers[-1]["Next"]]
        assert failed["Type"] == "Fail" and failed["Error"] == "EscalationFailed"


def test_a_run_that_finds_another_live_execution_follows_it() -> None:
    follow = next(c for c in STATES["Route"]["Choices"] if c["StringEquals"] == "follow")
    wait = STATES[follow["Next"]]
    assert wait["Type"] == "Wait" and wait["SecondsPath"] == "$.config.follow_seconds" and wait["Next"] == "Verify"


def test_the_execution_time_limit_is_within_the_owner_lease() -> None:
    """An execution owns its sale for ``execution_lease_seconds``: it must end (TIMED_OUT at the latest) before the
    lease runs out, or a second owner could take the sale over while it still runs."""
    from shared.settings import Settings

    lease = Settings().execution_lease_seconds
    assert 0 < ASL["TimeoutSeconds"] < lease
    wait_max = load_template()["Parameters"]["RelinkWaitSeconds"]["MaxValue"]
    assert 2 * wait_max < ASL["TimeoutSeconds"], "two waits between three attempts fit in the time limit"
