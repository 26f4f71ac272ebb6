"""Mercado Libre failures as typed exceptions.

ML answers errors as ``{"message", "error", "status", "cause"}`` (reference/meli-api.md §9). The client turns every
failure into one of these classes, so the domain decides on the class, never on status codes or strings.
Only the ``MeliTransientError`` family is ever retried.
"""

from __future__ import annotations

from typing import Any


class MeliError(Exception):
    """Any failure talking to Mercado Libre."""

    transient = False

    def __init__(
        self,
        message: str,
        *,
        status: int | None = None,
        error: str | None = None,
        cause: Any = None,
        path: str | None = None,
    ) -> None:
        super().__init__(message)
        self.message = message
        self.status = status
        self.error = error
        self.cause = cause
        self.path = path

    @classmethod
    def from_body(cls, status: int, body: Any, *, path: str | None = None) -> MeliError:
        """Build the right subclass from an HTTP status and ML's error body (which may be any JSON or none)."""
        message = error = None
        cause: Any = None
        if isinstance(body, dict):
            message = body.get("message") or body.get("error_description")
            error = body.get("error") or body.get("code")
            cause = body.get("cause")
        text = str(message or error or f"HTTP {status}")
        kind: type[MeliError]
        if status == 404:
            kind = MeliNotFound
        elif status == 401:
            kind = MeliUnauthorized
        elif status == 403:
            # Only not_owned_order is a fact about the resource (another seller's order); every other 403 (a blocked
            # application, missing scopes, an IP not allow-listed, an inactive user: access_denied, FORBIDDEN, ...)
            # is about the connection (reference/meli-api.md §9, §13).
            kind = MeliForbidden if _is_not_owned(error, message) else MeliAccessDenied
        elif status == 429:
            kind = MeliRateLimited
        elif status >= 500:
            kind = MeliUnavailable
        else:
            kind = MeliBadRequest
        return kind(text, status=status, error=str(error) if error else None, cause=cause, path=path)

    def __str__(self) -> str:
        where = f" on {self.path}" if self.path else ""
        code = f" ({self.status} {self.error})" if self.status else ""
        return f"{self.message}{code}{where}"


class MeliNotFound(MeliError):
    """404: the resource does not exist (or not for this seller)."""


class MeliBadRequest(MeliError):
    """4xx other than 401/403/404/429: ML refused the request as malformed."""


# The 403 error codes that say "this resource belongs to someone else" (ML's order errors, reference/meli-api.md §1.3).
NOT_OWNED_ERRORS = frozenset({"not_owned_order"})
# The packs resource documents its not-owned 403 as the generic code "forbidden" with this message (DOC-PACKS table,
# reference/meli-api.md §1.3, §3); the code alone would read as a connection-level refusal and block the seller.
NOT_OWNED_MESSAGE = "has not access to the order"


def _is_not_owned(error: Any, message: Any) -> bool:
    return error in NOT_OWNED_ERRORS or (isinstance(message, str) and NOT_OWNED_MESSAGE in message.lower())


class MeliForbidden(MeliError):
    """403 ``not_owned_order``: the resource exists but is not this connection's seller's (another seller's order)."""


class MeliAccessDenied(MeliError):
    """403 for any other reason (``access_denied``, ``FORBIDDEN``, ``Invalid scopes``, a policy): the application or
    the connection's user may not call ML at all. A fact about the connection, never about one sale: the client turns
    it into ``ConnectionNeedsReauthorization``."""


class ConnectionNeedsReauthorization(MeliError):
    """The connection may not call Mercado Libre until the seller authorises the application again: its refresh token
    was refused (``invalid_grant``: the seller revoked the app, changed password, ...), ML answered a connection-level
    403, or its tokens belong to another ML user. Not transient: no retry helps, and no ML call is made for the
    connection until new tokens are stored (``shared.connection_state``)."""

    def __init__(self, message: str, *, connection_id: str, cause_code: str, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.connection_id = connection_id
        self.cause_code = cause_code

    def __str__(self) -> str:
        return self.message


class MeliUnauthorized(MeliError):
    """401 that a token refresh did not cure."""


class MeliTransientError(MeliError):
    """A failure that may succeed if tried again later."""

    transient = True


class MeliTimeout(MeliTransientError):
    """No answer within the client's timeout (connect or read)."""


class MeliDeadlineReached(MeliTimeout):
    """No time left before the caller's deadline (shared.meli.deadline) for another try: none was sent."""


class MeliUnavailable(MeliTransientError):
    """5xx or a connection failure."""


class MeliRateLimited(MeliTransientError):
    """429: over the application's request quota."""

    def __init__(self, message: str, *, retry_after: float | None = None, **kwargs: Any) -> None:
        super().__init__(message, **kwargs)
        self.retry_after = retry_after


class TokenRefreshError(MeliTransientError):
    """The access token could not be refreshed for now (lock contention, OAuth endpoint down or rate limited:
    ``local_rate_limited``). An ``invalid_grant`` is not this: it is ``RefreshTokenRefused``."""


class RefreshTokenRefused(MeliError):
    """OAuth refused the refresh token itself (400 ``invalid_grant``, or a 403): spent, expired or revoked. Not
    transient; the token manager re-reads the stored tokens (another worker may have refreshed) before it concludes
    that the seller must authorise the application again."""
