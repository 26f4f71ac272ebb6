"""The relink state machine as the domain sees it: start one execution per sale and request, read its status."""

from __future__ import annotations

import hashlib
import json
from typing import Any, Protocol

from shared.models import ExecutionRef

MAX_NAME = 80  # Step Functions execution-name limit


def execution_name(connection_id: str, sale_id: str, request_key: str) -> str:
    """Deterministic per sale and request: a double click (same key) maps to the same execution."""
    digest = hashlib.sha256(f"{connection_id}|{sale_id}|{request_key}".encode()).hexdigest()[:16]
    return f"relink-{sale_id}-{digest}"[:MAX_NAME]


class RelinkWorkflow(Protocol):
    def start(self, name: str, payload: dict[str, Any]) -> ExecutionRef:
        """Start (or find, when the name was already used) the execution called ``name``."""
        ...

    def status(self, execution_arn: str) -> str: ...


class StepFunctionsRelinkWorkflow:
    def __init__(self, sfn_client: Any, state_machine_arn: str) -> None:
        self._sfn = sfn_client
        self._arn = state_machine_arn

    def start(self, name: str, payload: dict[str, Any]) -> ExecutionRef:
        try:
            response = self._sfn.start_execution(stateMachineArn=self._arn, name=name, input=json.dumps(payload))
        except self._sfn.exceptions.ExecutionAlreadyExists:
            arn = self._arn.replace(":stateMachine:", ":execution:") + f":{name}"
            described = self._sfn.describe_execution(executionArn=arn)
            return ExecutionRef(
                execution_arn=arn, name=name, started_at=described["startDate"], status=described["status"]
            )
        return ExecutionRef(execution_arn=response["executionArn"], name=name, started_at=response["startDate"])

    def status(self, execution_arn: str) -> str:
        return str(self._sfn.describe_execution(executionArn=execution_arn)["status"])
