"""OAuth tokens of each connection: stored in Secrets Manager, cached per warm container, refreshed one at a time.

ML refresh tokens are single-use (reference/meli-api.md §7): a refresh invalidates the refresh token it spent, so
two Lambdas refreshing the same seller at once lock that seller out. Refreshes are therefore serialized per
connection with the connection's lease in DynamoDB (``ConnectionStore.acquire_refresh_lock``), the stored tokens
are re-read under the lease, and the new pair is persisted (``version + 1``) before anybody uses it.

A refresh token that OAuth refuses (``invalid_grant``) after the stored tokens were re-read (another worker may have
refreshed) means the seller must authorise the application again, and so do tokens that belong to another ML user
than the connection's seller (the refresh answer's ``user_id``, or the stored one): the connection's gate
(``shared.connection_state``) moves it to ``needs_reauthorization``, once, and no refresh or call is made for it until
newer tokens are stored. OAuth's 429 (``local_rate_limited``) spends nothing and is retried with backoff.

Tokens never reach a log line, an exception message or a repr.
"""

from __future__ import annotations

import json
import random
import threading
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Protocol

import httpx
from aws_lambda_powertools import Logger
from botocore.exceptions import BotoCoreError, ClientError
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from shared.meli.errors import (
    ConnectionNeedsReauthorization,
    MeliError,
    MeliUnauthorized,
    RefreshTokenRefused,
    TokenRefreshError,
)
from shared.meli.models import OAuthTokens

if TYPE_CHECKING:
    from shared.connection_state import ConnectionGate
    from shared.stores.base import ConnectionStore

logger = Logger(child=True)

OAUTH_PATH = "/oauth/token"


def _utc_now() -> datetime:
    return datetime.now(UTC)


class TokensUnavailable(MeliUnauthorized):
    """The connection has no usable tokens (no secret, unreadable secret, unknown connection).

    Not transient: retrying cannot help until someone links the connection again.
    """


# --- Storage ----------------------------------------------------------------------------------------------------------


class TokenStore(Protocol):
    def read(self, connection_id: str) -> OAuthTokens:
        """The stored tokens. Raises TokensUnavailable (none stored) or TokenRefreshError (store trouble)."""
        ...

    def write(self, connection_id: str, tokens: OAuthTokens) -> None: ...


def _error_code(exc: ClientError) -> str:
    return str(exc.response.get("Error", {}).get("Code", ""))


class SecretsManagerTokenStore:
    """One secret per connection, ``{prefix}{connection_id}``, holding the JSON of ``OAuthTokens``."""

    def __init__(self, client: Any, prefix: str) -> None:
        self._client = client
        self._prefix = prefix

    def secret_id(self, connection_id: str) -> str:
        return f"{self._prefix}{connection_id}"

    def read(self, connection_id: str) -> OAuthTokens:
        secret_id = self.secret_id(connection_id)
        try:
            response = self._client.get_secret_value(SecretId=secret_id)
        except ClientError as exc:
            if _error_code(exc) == "ResourceNotFoundException":
                raise TokensUnavailable(f"no OAuth tokens stored for connection {connection_id}") from None
            raise TokenRefreshError(
                f"could not read the tokens of connection {connection_id}: {_error_code(exc)}"
            ) from exc
        except BotoCoreError as exc:
            raise TokenRefreshError(f"could not read the tokens of connection {connection_id}: {exc}") from exc
        return parse_tokens(response.get("SecretString") or "", connection_id)

    def write(self, connection_id: str, tokens: OAuthTokens) -> None:
        try:
            self._client.put_secret_value(SecretId=self.secret_id(connection_id), SecretString=dump_tokens(tokens))
        except ClientError as exc:
            raise TokenRefreshError(
                f"could not store the tokens of connection {connection_id}: {_error_code(exc)}"
            ) from exc
        except BotoCoreError as exc:
            raise TokenRefreshError(f"could not store the tokens of connection {connection_id}: {exc}") from exc


def dump_tokens(tokens: OAuthTokens) -> str:
    return json.dumps(
        {
            "access_token": tokens.access_token,
            "refresh_token": tokens.refresh_token,
            "expires_at": tokens.expires_at.isoformat(),
            "user_id": tokens.user_id,
            "version": tokens.version,
        }
    )


def parse_tokens(text: str, connection_id: str) -> OAuthTokens:
    # `from None` everywhere: pydantic and json errors quote their input, and the input is the secret.
    try:
        data = json.loads(text)
    except ValueError:
        raise TokensUnavailable(f"the token secret of connection {connection_id} is not JSON") from None
    try:
        tokens = OAuthTokens.model_validate(data)
    except ValidationError as exc:
        fields = sorted({".".join(str(p) for p in err["loc"]) or "(root)" for err in exc.errors()})
        raise TokensUnavailable(
            f"the token secret of connection {connection_id} is invalid in: {', '.join(fields)}"
        ) from None
    if tokens.expires_at.tzinfo is None:
        # A hand-written secret without an offset: read it as UTC rather than fail comparing with aware datetimes.
        tokens = tokens.model_copy(update={"expires_at": tokens.expires_at.replace(tzinfo=UTC)})
    return tokens


# --- Application credentials ------------------------------------------------------------------------------------------


class AppCredentials(BaseModel):
    """The ML application's client id and secret (one per platform, not per seller)."""

    model_config = ConfigDict(extra="ignore", frozen=True, defer_build=True)

    client_id: str = Field(min_length=1)
    client_secret: str = Field(min_length=1, repr=False)


class SecretsManagerAppCredentials:
    """Loads ``{"client_id", "client_secret"}`` from the app secret once per container; ``invalidate()`` re-reads."""

    def __init__(self, client: Any, secret_id: str) -> None:
        self._client = client
        self._secret_id = secret_id
        self._cached: AppCredentials | None = None
        self._lock = threading.Lock()

    def __call__(self) -> AppCredentials:
        with self._lock:
            if self._cached is None:
                self._cached = self._load()
            return self._cached

    def invalidate(self) -> None:
        with self._lock:
            self._cached = None

    def _load(self) -> AppCredentials:
        if not self._secret_id:
            raise TokenRefreshError("MELI_APP_SECRET_ID is not configured; cannot refresh tokens")
        try:
            text = self._client.get_secret_value(SecretId=self._secret_id).get("SecretString") or ""
        except (ClientError, BotoCoreError) as exc:
            raise TokenRefreshError(f"could not read the ML application credentials ({self._secret_id})") from exc
        try:
            return AppCredentials.model_validate_json(text)
        except ValidationError:
            raise TokenRefreshError(
                f"the ML application secret {self._secret_id} needs JSON {{client_id, client_secret}}"
            ) from None


# --- The OAuth call ---------------------------------------------------------------------------------------------------

# Spends a refresh token: (refresh_token, app credentials) -> ML's token response body. Raises TokenRefreshError.
Refresher = Callable[[str, AppCredentials], dict[str, Any]]


class OAuthRefresher:
    """POST {base_url}/oauth/token with grant_type=refresh_token (form-urlencoded, reference/meli-api.md §7).

    Not retried when the answer is lost (a timeout, a 5xx): the refresh may have spent the token; the caller re-reads
    the store and the domain retries the whole operation later. A 429 (``local_rate_limited``, "try again in a few
    seconds") refused the request before spending anything: it is retried here, up to ``rate_limit_tries`` tries in
    all, after a jittered backoff (or ML's Retry-After), and stays a transient ``TokenRefreshError`` if it persists.
    A refused refresh token (400 ``invalid_grant``) or a 403 is ``RefreshTokenRefused``.
    """

    def __init__(
        self,
        http: httpx.Client,
        *,
        base_url: str,
        timeout: httpx.Timeout | float | None = None,
        on_invalid_client: Callable[[], None] | None = None,
        rate_limit_tries: int = 3,
        backoff_base: float = 0.5,
        backoff_cap: float = 4.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
    ) -> None:
        self._http = http
        self._url = base_url.rstrip("/") + OAUTH_PATH
        self._timeout = timeout
        self._on_invalid_client = on_invalid_client
        self._rate_limit_tries = max(1, rate_limit_tries)
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._rng = rng or random.Random()
        self.request_count = 0

    def __call__(self, refresh_token: str, credentials: AppCredentials) -> dict[str, Any]:
        for attempt in range(1, self._rate_limit_tries + 1):
            try:
                return self._post(refresh_token, credentials)
            except _OAuthRateLimited as limited:
                if attempt == self._rate_limit_tries:
                    raise limited.error from None
                ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (attempt - 1))
                delay = limited.retry_after if limited.retry_after is not None else self._rng.uniform(0, ceiling)
                logger.info(
                    "meli oauth rate limited; retrying",
                    extra={"path": OAUTH_PATH, "attempt": attempt, "delay_s": round(min(delay, self._backoff_cap), 3)},
                )
                self._sleep(min(delay, self._backoff_cap))
        raise AssertionError("unreachable")  # pragma: no cover

    def _post(self, refresh_token: str, credentials: AppCredentials) -> dict[str, Any]:
        form = {
            "grant_type": "refresh_token",
            "client_id": credentials.client_id,
            "client_secret": credentials.client_secret,
            "refresh_token": refresh_token,
        }
        started = time.monotonic()
        self.request_count += 1
        try:
            response = self._http.post(
                self._url,
                data=form,
                headers={"accept": "application/json"},
                timeout=httpx.USE_CLIENT_DEFAULT if self._timeout is None else self._timeout,
            )
        except httpx.TimeoutException:
            raise TokenRefreshError("the OAuth token endpoint timed out", path=OAUTH_PATH) from None
        except httpx.HTTPError as exc:
            raise TokenRefreshError(
                f"the OAuth token endpoint is unreachable ({type(exc).__name__})", path=OAUTH_PATH
            ) from None
        duration_ms = round((time.monotonic() - started) * 1000, 1)
        logger.info(
            "meli oauth refresh",
            extra={"method": "POST", "path": OAUTH_PATH, "status": response.status_code, "duration_ms": duration_ms},
        )
        body: Any
        try:
            body = response.json()
        except ValueError:
            body = None
        if response.status_code != 200:
            failure = MeliError.from_body(response.status_code, body, path=OAUTH_PATH)
            if failure.error == "invalid_client" and self._on_invalid_client is not None:
                self._on_invalid_client()  # the app secret may have been rotated: read it again next time
            status, code = response.status_code, failure.error
            if status == 429:
                limited = TokenRefreshError(
                    f"token refresh rate limited: {failure.message}", status=status, error=code, path=OAUTH_PATH
                )
                raise _OAuthRateLimited(limited, _retry_after(response))
            if code == "invalid_grant" or status == 403:
                raise RefreshTokenRefused(
                    f"token refresh refused: {failure.message}", status=status, error=code, path=OAUTH_PATH
                )
            raise TokenRefreshError(
                f"token refresh refused: {failure.message}", status=status, error=code, path=OAUTH_PATH
            )
        if not (
            isinstance(body, dict)
            and isinstance(body.get("access_token"), str)
            and isinstance(body.get("refresh_token"), str)
        ):
            raise TokenRefreshError("the OAuth token endpoint answered 200 without a token pair", path=OAUTH_PATH)
        return body


class _OAuthRateLimited(Exception):
    def __init__(self, error: TokenRefreshError, retry_after: float | None) -> None:
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _retry_after(response: httpx.Response) -> float | None:
    try:
        seconds = float(response.headers.get("retry-after", "").strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


# --- The manager ------------------------------------------------------------------------------------------------------


class TokenManager:
    """Hands out a connection's current tokens and refreshes them safely across threads, containers and Lambdas."""

    def __init__(
        self,
        store: TokenStore,
        locks: ConnectionStore,
        refresher: Refresher,
        app_credentials: Callable[[], AppCredentials],
        *,
        lock_ttl_seconds: int = 30,
        wait_seconds: float = 10.0,
        poll_seconds: float = 0.2,
        write_tries: int = 3,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], datetime] = _utc_now,
        monotonic: Callable[[], float] = time.monotonic,
        gate: ConnectionGate | None = None,
    ) -> None:
        if gate is None:
            from shared.connection_state import ConnectionGate

            gate = ConnectionGate(locks, token_version=lambda connection_id: store.read(connection_id).version)
        # Whether each connection may call ML at all (its state), shared with the ML client.
        self.gate = gate
        gate.on_reactivated(self.forget)
        self._store = store
        self._locks = locks
        self._refresher = refresher
        self._app_credentials = app_credentials
        self._lock_ttl_seconds = lock_ttl_seconds
        self._wait_seconds = wait_seconds
        self._poll_seconds = poll_seconds
        self._write_tries = max(1, write_tries)
        self._sleep = sleep
        self._clock = clock
        self._monotonic = monotonic
        self._cache: dict[str, OAuthTokens] = {}
        self._local_locks: dict[str, threading.Lock] = {}
        self._guard = threading.Lock()
        self.refresh_count = 0  # OAuth calls this manager made (tests, benchmarks)
        self._per_thread = threading.local()

    def __repr__(self) -> str:
        return f"TokenManager(connections={sorted(self._cache)})"

    def _local_lock(self, connection_id: str) -> threading.Lock:
        with self._guard:
            return self._local_locks.setdefault(connection_id, threading.Lock())

    def oauth_calls_in_thread(self) -> int:
        """OAuth requests this manager sent from the calling thread; lets a client count the requests it caused."""
        return int(getattr(self._per_thread, "calls", 0))

    def forget(self, connection_id: str) -> None:
        """Drop the cached tokens (e.g. after the connection was relinked with new tokens)."""
        self._cache.pop(connection_id, None)

    def current(self, connection_id: str) -> OAuthTokens:
        cached = self._cache.get(connection_id)
        if cached is not None and not cached.expired(now=self._clock()):
            return cached
        # Cold cache or expired: the store may already hold a newer pair written by another container.
        stored = self._store.read(connection_id)
        if cached is not None and cached.version > stored.version:
            stored = cached  # never step back to an older pair (an eventually consistent read)
        self._check_owner(connection_id, stored.user_id, stored.version)
        if stored.expired(now=self._clock()):
            return self.refresh(connection_id, stored)
        self._cache[connection_id] = stored
        return stored

    def _check_owner(self, connection_id: str, user_id: Any, version: int) -> None:
        """Tokens of another ML user than the connection's seller are never used: that would import another
        seller's sales. The connection needs the seller to authorise the application again."""
        if user_id is None:
            return
        seller_id = self.gate.seller_id(connection_id)
        if seller_id is None or str(user_id) == str(seller_id):
            return
        message = f"the tokens belong to Mercado Libre user {user_id}, not to the connection's seller {seller_id}"
        self.gate.revoke(connection_id, token_version=version, cause="token_owner_mismatch", message=message)
        raise ConnectionNeedsReauthorization(
            f"Connection {connection_id} needs the seller to authorise the application again: {message}.",
            connection_id=connection_id,
            cause_code="token_owner_mismatch",
        )

    def refresh(self, connection_id: str, stale: OAuthTokens) -> OAuthTokens:
        """Replace ``stale`` (rejected or expired) with a newer pair, spending the refresh token at most once."""
        with self._local_lock(connection_id):
            cached = self._cache.get(connection_id)
            if cached is not None and cached.version > stale.version and not cached.expired(now=self._clock()):
                return cached  # another thread of this container refreshed while we queued
            # A connection found revoked while this thread queued (or by another container): no OAuth call.
            self.gate.require_active(connection_id)
            tokens = self._refresh_with_lease(connection_id, stale)
            self._cache[connection_id] = tokens
            return tokens

    def _refresh_with_lease(self, connection_id: str, stale: OAuthTokens) -> OAuthTokens:
        deadline = self._monotonic() + self._wait_seconds
        checked_connection = False
        while True:
            owner = uuid.uuid4().hex
            if self._acquire(connection_id, owner):
                try:
                    return self._refresh_holding_lease(connection_id, stale)
                finally:
                    self._release(connection_id, owner)
            if not checked_connection:
                # The lease is a conditional write on the connection's row: a missing row never frees up.
                checked_connection = True
                if self._locks.get(connection_id) is None:
                    raise TokensUnavailable(f"connection {connection_id} is not registered; cannot refresh its token")
            # Someone else holds the lease: their result is ours as soon as it is stored.
            stored = self._store.read(connection_id)
            if self._newer(stored, stale):
                logger.info("meli token refreshed by another holder", extra={"connection_id": connection_id})
                return stored
            self.gate.require_active(connection_id)  # the holder may have found the connection revoked
            if self._monotonic() >= deadline:
                raise TokenRefreshError(
                    f"timed out after {self._wait_seconds:g}s waiting for another token refresh of {connection_id}"
                )
            self._sleep(self._poll_seconds)

    def _newer(self, stored: OAuthTokens, stale: OAuthTokens) -> bool:
        return stored.version > stale.version and not stored.expired(now=self._clock())

    def _refresh_holding_lease(self, connection_id: str, stale: OAuthTokens) -> OAuthTokens:
        stored = self._store.read(connection_id)
        if self._newer(stored, stale):
            logger.info("meli token refreshed by another holder", extra={"connection_id": connection_id})
            return stored
        self.gate.require_active(connection_id, fresh=True)  # another container may have found it revoked
        # Spend the STORED refresh token: it is the latest one, whatever the caller held.
        self.refresh_count += 1
        self._per_thread.calls = self.oauth_calls_in_thread() + 1
        try:
            body = self._refresher(stored.refresh_token, self._app_credentials())
        except RefreshTokenRefused as refused:
            with self.gate.deciding(connection_id):  # the process's other threads wait for the verdict
                return self._refused(connection_id, stored, refused)
        try:
            fresh = OAuthTokens.from_oauth_response(body, version=stored.version + 1, now=self._clock())
        except (KeyError, TypeError, ValueError):
            raise TokenRefreshError("the OAuth token endpoint answered an unreadable token pair") from None
        # Never store (or use) tokens of another ML user: the spent pair is gone either way, and the connection
        # needs the seller to authorise the application again.
        self._check_owner(connection_id, fresh.user_id, stored.version)
        self._persist(connection_id, fresh)
        logger.info("meli token refreshed", extra={"connection_id": connection_id, "version": fresh.version})
        return fresh

    def _refused(self, connection_id: str, spent: OAuthTokens, refused: RefreshTokenRefused) -> OAuthTokens:
        """OAuth refused the stored refresh token. Another worker may have refreshed (or the seller reconnected) after
        we read it: newer stored tokens are used. Otherwise the seller revoked us: the connection needs
        reauthorization (one state change, one alert), and nothing retries it."""
        stored = self._store.read(connection_id)
        if self._newer(stored, spent):
            logger.info("meli token refreshed by another holder", extra={"connection_id": connection_id})
            return stored
        cause = refused.error or "invalid_grant"
        if not self.gate.revoke(connection_id, token_version=spent.version, cause=cause, message=refused.message):
            stored = self._store.read(connection_id)  # reconnected meanwhile with newer tokens
            if self._newer(stored, spent):
                return stored
        raise ConnectionNeedsReauthorization(
            f"Connection {connection_id} needs the seller to authorise the application again: Mercado Libre refused "
            f"its refresh token ({cause}). No Mercado Libre call is made for it until it is reconnected.",
            connection_id=connection_id,
            cause_code=cause,
            status=refused.status,
            error=refused.error,
            path=refused.path,
        )

    def _persist(self, connection_id: str, tokens: OAuthTokens) -> None:
        # The old refresh token is spent: losing the new pair locks the seller out, so insist before giving up.
        for attempt in range(1, self._write_tries + 1):
            try:
                self._store.write(connection_id, tokens)
                return
            except TokenRefreshError:
                logger.warning(
                    "could not store refreshed meli tokens",
                    extra={"connection_id": connection_id, "attempt": attempt},
                )
                if attempt == self._write_tries:
                    logger.error(
                        "refreshed meli tokens were NOT stored; the connection must be relinked if this persists",
                        extra={"connection_id": connection_id},
                    )
                    raise
                self._sleep(min(2.0, 0.2 * 2**attempt))

    def _acquire(self, connection_id: str, owner: str) -> bool:
        try:
            return self._locks.acquire_refresh_lock(connection_id, owner, self._lock_ttl_seconds)
        except (ClientError, BotoCoreError) as exc:
            raise TokenRefreshError(f"could not take the token-refresh lease of {connection_id}") from exc

    def _release(self, connection_id: str, owner: str) -> None:
        try:
            self._locks.release_refresh_lock(connection_id, owner)
        except (ClientError, BotoCoreError):
            # The lease expires by itself after lock_ttl_seconds; the refresh already succeeded or failed.
            logger.warning("could not release the token-refresh lease", extra={"connection_id": connection_id})
