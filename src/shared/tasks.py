"""The boundary between the relink state machine and the domain: task input, and the errors ASL matches by name.

A Lambda's ``errorType`` is the Python exception class name, so these class names appear in
statemachine/relink.asl.json (Retry / Catch). Renaming one is a change to the state machine.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.errors import ConnectionNotFound
from shared.identifiers import InvalidConnectionId, InvalidIdentifier
from shared.meli.errors import MeliError, MeliTransientError
from shared.models import Reason

# Retried by name in the ASL: a write the stores could not make after their own tries (running the task again is
# safe: every task decides again from the sale as it is).
from shared.stores.base import StateWriteFailed as StateWriteFailed


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

    model_config = ConfigDict(extra="ignore", defer_build=True)

    connection_id: str = Field(min_length=1, max_length=64)
    sale_id: str = Field(min_length=1, max_length=64)
    execution_id: str = Field(min_length=1, max_length=256)  # the execution's ARN ($$.Execution.Id)
    attempts: int = Field(default=0, ge=0, le=100)
    attempt: int | None = Field(default=None, ge=1, le=100)
    # An execution started with {connection_id, pack_id}: the state machine passes the pack id as sale_id (the
    # subject: the cart's row is keyed by it) and sets cart.
    cart: bool = False
    reason: Reason | None = None
    last_error: dict[str, Any] | None = None


def parse_task(event: Any) -> TaskInput:
    try:
        return TaskInput.model_validate(event)
    except ValidationError as exc:
        raise InvalidTaskInput(
            f"execution input must be {{'connection_id', 'sale_id'}} or {{'connection_id', 'pack_id'}}: {exc}"
        ) from exc


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
