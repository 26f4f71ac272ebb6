"""The boundary between the relink state machine and the domain: task input, and the errors ASL matches by name.

A Lambda's ``errorType`` is the Python exception class name, so these class names appear in
statemachine/relink.asl.json (Retry / Catch). Renaming one is a change to the state machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.identifiers import InvalidConnectionId, InvalidIdentifier

# Retried by name in the ASL: a job item the task could not settle (running the task again is safe).
from shared.jobs import SettleFailed as SettleFailed
from shared.meli.errors import MeliError, MeliTransientError
from shared.models import Reason, RecoveryResult
from shared.recovery import ConnectionNotFound
from shared.settings import Settings


class MarketplaceUnavailable(Exception):
    """Mercado Libre failed transiently while verifying; the state machine retries, then goes on to relink."""


class RelinkFailed(Exception):
    """A relink attempt failed for a transient cause; another attempt may succeed."""


class ResyncFailed(Exception):
    """The resync of a listed sale failed; the seed says: the help desk."""


class EscalationRequired(Exception):
    """A failure no retry can cure (ML refused the request); the help desk must look."""


class InvalidTaskInput(Exception):
    """The execution input names no valid connection or sale id; nothing to retry, nothing to escalate."""


class TaskInput(BaseModel):
    """What every task receives. The state machine adds its own fields; unknown ones are ignored."""

    model_config = ConfigDict(extra="ignore")

    connection_id: str = Field(min_length=1, max_length=64)
    sale_id: str = Field(min_length=1, max_length=64)
    attempts: int = Field(default=0, ge=0, le=100)
    attempt: int | None = Field(default=None, ge=1, le=100)
    execution_id: str | None = None
    reason: Reason | None = None
    last_error: dict[str, Any] | None = None
    job_id: str | None = None  # set when a bulk job handed the sale over; the outcome goes back to its ledger

    @property
    def last_error_text(self) -> str | None:
        if not self.last_error:
            return None
        return f"{self.last_error.get('Error', '')}: {self.last_error.get('Cause', '')}".strip(": ")


def parse_task(event: Any) -> TaskInput:
    try:
        return TaskInput.model_validate(event)
    except ValidationError as exc:
        raise InvalidTaskInput(f"execution input must be {{'connection_id', 'sale_id'}}: {exc}") from exc


@contextmanager
def workflow_errors() -> Iterator[None]:
    """Turn domain failures into the named errors the state machine routes on."""
    try:
        yield
    except (InvalidIdentifier, InvalidConnectionId, ConnectionNotFound) as exc:
        raise InvalidTaskInput(str(exc)) from exc
    except MeliTransientError as exc:
        raise MarketplaceUnavailable(str(exc)) from exc
    except MeliError as exc:
        raise EscalationRequired(str(exc)) from exc


def report_to_job(task: TaskInput, result: RecoveryResult) -> None:
    """A sale handed over by a bulk job settles its job item when the state machine reaches its outcome."""
    if not task.job_id or not result.outcome.terminal:
        return
    from shared.jobs import settle_result
    from shared.wiring import build_job_store

    settle_result(build_job_store(Settings.from_env()), task.job_id, result, handed_over=True)
