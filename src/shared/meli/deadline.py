"""How long the caller can still wait on Mercado Libre: the invocation's time left, less what it needs afterwards.

A request's own timeout and tries (5 s, 3 tries at the defaults: up to 17 s with the pauses) bound one request, not
a whole piece of work. The API must answer within API Gateway's 29 s, and a verification makes up to 4 requests (a
cart's relink, 2 + n). So the API sets a deadline for the request's context, and the client reads it before each try:

- a try gets no longer than the time left;
- no try is sent, and no pause is slept, past the deadline;
- past it, the request raises ``MeliTimeout``, which the API answers as 503 with nothing written.

The bulk worker does not use it (README, "Bulk": a cut id would have to go back in the hand-back message, not fail).
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from contextlib import contextmanager
from contextvars import ContextVar

# Less than this left: no try is sent (an answer that cannot arrive in time is a request spent on the quota for
# nothing).
MIN_TRY_SECONDS = 0.5

_until: ContextVar[float | None] = ContextVar("meli_deadline", default=None)


@contextmanager
def meli_deadline(seconds: float | None) -> Iterator[None]:
    """Mercado Libre calls of this context end within ``seconds`` from now (None: no deadline but each request's)."""
    token = _until.set(None if seconds is None else time.monotonic() + max(0.0, seconds))
    try:
        yield
    finally:
        _until.reset(token)


def seconds_left() -> float | None:
    """The time left before the context's deadline, or None without one."""
    until = _until.get()
    return None if until is None else until - time.monotonic()
