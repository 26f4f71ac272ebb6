"""Delivers Step Functions "Execution Status Change" events locally, the way EventBridge does in the cloud.

moto neither emits these events nor invokes Lambda targets of rules (reference/aws-offline.md §2). For every
function of template.yaml with an ``EventBridgeRule`` event whose pattern is about Step Functions, this watcher
polls moto for executions that reached a status the pattern names, builds the event Step Functions would send
(``detail``: executionArn, stateMachineArn, name, status, startDate, stopDate, input, output, error, cause) and, if
the rule's pattern matches it, invokes the function's handler in-process once per execution and status.

The pattern matcher knows EventBridge's exact-value lists and nested objects, which is all the template uses; any
other content filter (prefix, numeric, exists...) is refused at start rather than matched wrongly.
"""

from __future__ import annotations

import logging
import threading
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from devstack.aws import LocalAws
from devstack.template import load_template

log = logging.getLogger(__name__)

DETAIL_TYPE = "Step Functions Execution Status Change"
STATUSES = ("SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED")


@dataclass(frozen=True)
class RuleTarget:
    function: str  # logical id
    pattern: dict[str, Any]  # with references resolved to the deployed physical ids


def execution_rules(aws: LocalAws) -> list[RuleTarget]:
    """The template's EventBridge rules about Step Functions executions, with ``!Ref`` resolved."""
    found = []
    for logical_id, res in load_template()["Resources"].items():
        if res["Type"] != "AWS::Serverless::Function":
            continue
        for event in res["Properties"].get("Events", {}).values():
            if event["Type"] != "EventBridgeRule":
                continue
            pattern = _resolve(event["Properties"]["Pattern"], aws)
            if pattern.get("source") == ["aws.states"]:
                _check_supported(pattern)
                found.append(RuleTarget(function=logical_id, pattern=pattern))
    return found


def _resolve(node: Any, aws: LocalAws) -> Any:
    if isinstance(node, dict):
        if set(node) == {"Ref"}:
            return (
                aws.state_machine_arn(node["Ref"])
                if node["Ref"] in _state_machines(aws)
                else aws.physical_id(node["Ref"])
            )
        return {k: _resolve(v, aws) for k, v in node.items()}
    if isinstance(node, list):
        return [_resolve(v, aws) for v in node]
    return node


def _state_machines(aws: LocalAws) -> set[str]:
    return {k for k, (kind, _) in aws.resources.items() if kind == "AWS::StepFunctions::StateMachine"}


def _check_supported(pattern: Any) -> None:
    for value in pattern.values():
        if isinstance(value, dict):
            _check_supported(value)
        elif not isinstance(value, list) or any(isinstance(v, dict) for v in value):
            raise ValueError(f"only exact-value patterns are supported locally, not {value!r}")


def matches(pattern: dict[str, Any], event: dict[str, Any]) -> bool:
    """EventBridge matching for exact-value lists and nested objects."""
    for key, wanted in pattern.items():
        if key not in event:
            return False
        if isinstance(wanted, dict):
            if not isinstance(event[key], dict) or not matches(wanted, event[key]):
                return False
        elif event[key] not in wanted:
            return False
    return True


class ExecutionEventsDelivery:
    def __init__(self, aws: LocalAws, *, poll_seconds: float = 0.2) -> None:
        self._aws = aws
        self._poll = poll_seconds
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self.delivered_events: set[tuple[str, str]] = set()  # (execution arn, status)
        self._lock = threading.Lock()
        self._rules: list[RuleTarget] = []
        self.delivered = 0
        self.failures: list[str] = []

    def start(self, *, poll: bool = True) -> ExecutionEventsDelivery:
        self._rules = execution_rules(self._aws)
        if self._rules and poll:
            self._thread = threading.Thread(target=self._run, name="execution-events", daemon=True)
            self._thread.start()
        return self

    def stop(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def deliver_now(self) -> int:
        """Deliver every event due so far (tests call this to not wait for the next poll); returns how many."""
        return self._deliver_due()

    def _run(self) -> None:
        while not self._stop.wait(self._poll):
            try:
                self._deliver_due()
            except Exception:  # the watcher must outlive one bad poll, like EventBridge outlives one bad target
                log.exception("execution status events: a poll failed")

    def _deliver_due(self) -> int:
        sfn = self._aws.client("stepfunctions")
        wanted = {s for rule in self._rules for s in rule.pattern.get("detail", {}).get("status", STATUSES)}
        count = 0
        for machine in {
            arn for rule in self._rules for arn in rule.pattern.get("detail", {}).get("stateMachineArn", [])
        }:
            for status in sorted(wanted):
                for execution in _executions(sfn, machine, status):
                    key = (execution["executionArn"], status)
                    with self._lock:
                        if key in self.delivered_events:
                            continue
                        self.delivered_events.add(key)
                    count += self._deliver(sfn, execution["executionArn"])
        return count

    def _deliver(self, sfn: Any, execution_arn: str) -> int:
        described = sfn.describe_execution(executionArn=execution_arn)
        event = status_change_event(described, account=execution_arn.split(":")[4], region=self._aws.region)
        delivered = 0
        for rule in self._rules:
            if not matches(rule.pattern, event):
                continue
            try:
                self._aws.runtime.invoke(rule.function, event)
            except Exception as exc:  # Lambda retries an async invocation twice; the sweep's reaper is the net
                self.failures.append(f"{rule.function}: {type(exc).__name__}: {exc}")
                log.warning("execution status event for %s failed in %s: %s", execution_arn, rule.function, exc)
            delivered += 1
        self.delivered += delivered
        return delivered


def _executions(sfn: Any, machine: str, status: str) -> list[dict[str, Any]]:
    found: list[dict[str, Any]] = []
    kwargs: dict[str, Any] = {"stateMachineArn": machine, "statusFilter": status, "maxResults": 1000}
    while True:
        page = sfn.list_executions(**kwargs)
        found += page.get("executions", [])
        if not page.get("nextToken"):
            return found
        kwargs["nextToken"] = page["nextToken"]


def _millis(value: Any) -> int | None:
    return int(value.timestamp() * 1000) if isinstance(value, datetime) else None


def status_change_event(described: dict[str, Any], *, account: str, region: str) -> dict[str, Any]:
    """The event EventBridge receives from Step Functions when an execution's status changes."""
    stopped = described.get("stopDate")
    return {
        "version": "0",
        "id": str(uuid.uuid4()),
        "detail-type": DETAIL_TYPE,
        "source": "aws.states",
        "account": account,
        "time": (stopped or datetime.now(UTC)).astimezone(UTC).strftime("%Y-%m-%dT%H:%M:%SZ"),
        "region": region,
        "resources": [described["executionArn"]],
        "detail": {
            "executionArn": described["executionArn"],
            "stateMachineArn": described["stateMachineArn"],
            "name": described["name"],
            "status": described["status"],
            "startDate": _millis(described.get("startDate")),
            "stopDate": _millis(stopped),
            "input": described.get("input"),
            "output": described.get("output"),
            "inputDetails": {"included": True},
            "outputDetails": {"included": True} if described.get("output") is not None else None,
            "error": described.get("error"),
            "cause": described.get("cause"),
        },
    }
