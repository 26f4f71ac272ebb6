"""The relink state machine as the domain sees it: name an execution, start it (once), read its status.

An execution's name is derived from the sale and its episode (``shared.lifecycle.row.execution_name``) and written
as the episode's owner *before* the execution is started, so whoever finds the claim (a retried request, a
redelivered message, the reaper) can start it if the first starter died in between: starting is idempotent.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from shared.lifecycle.pause import before_write
from shared.models import ExecutionRef

CLOSED = frozenset({"SUCCEEDED", "FAILED", "TIMED_OUT", "ABORTED"})


def start_payload(connection_id: str, sale_id: str, execution: ExecutionRef) -> dict[str, Any]:
    """The execution's input (DESIGN §3): the same for every start of one name, as Step Functions requires. A cart's
    execution (its subject is the pack id) takes ``pack_id`` instead of ``sale_id`` (DESIGN §3.1)."""
    payload: dict[str, Any] = {"connection_id": connection_id, "pack_id" if execution.cart else "sale_id": sale_id}
    if execution.start_attempts:
        payload["attempts"] = execution.start_attempts
    return payload


class RelinkWorkflow(Protocol):
    def arn_for(self, name: str) -> str:
        """The ARN an execution of this name has (or will have)."""
        ...

    def ensure_started(self, connection_id: str, sale_id: str, execution: ExecutionRef) -> ExecutionRef:
        """Start the execution unless it runs already; its current status either way."""
        ...

    def status(self, execution_arn: str) -> str | None:
        """RUNNING / SUCCEEDED / FAILED / TIMED_OUT / ABORTED, or None if no such execution was ever started."""
        ...


class StepFunctionsRelinkWorkflow:
    def __init__(self, sfn_client: Any, state_machine_arn: str) -> None:
        self._sfn = sfn_client
        self._arn = state_machine_arn

    def arn_for(self, name: str) -> str:
        return self._arn.replace(":stateMachine:", ":execution:") + f":{name}"

    def ensure_started(self, connection_id: str, sale_id: str, execution: ExecutionRef) -> ExecutionRef:
        before_write("start_execution", connection_id, sale_id)
        payload = json.dumps(start_payload(connection_id, sale_id, execution))
        try:
            started = self._sfn.start_execution(stateMachineArn=self._arn, name=execution.name, input=payload)
        except self._sfn.exceptions.ExecutionAlreadyExists:
            # Closed already (a name is kept 90 days), or running with another input: it exists, say how it is.
            described = self._sfn.describe_execution(executionArn=self.arn_for(execution.name))
            return execution.model_copy(update={"started_at": described["startDate"], "status": described["status"]})
        # A running execution of the same name and input answers as if started now: it is the same one.
        return execution.model_copy(update={"execution_arn": started["executionArn"], "status": "RUNNING"})

    def status(self, execution_arn: str) -> str | None:
        try:
            return str(self._sfn.describe_execution(executionArn=execution_arn)["status"])
        except self._sfn.exceptions.ExecutionDoesNotExist:
            return None
