"""The Mercado Libre HTTP client (implements ``MarketplaceClient``, reference/meli-api.md §1-§4, §9).

Every request has a timeout. Only transient failures (timeouts, connection trouble, 5xx, 429) are retried, with
exponential backoff and full jitter, at most ``max_tries`` tries in all; a 401 refreshes the token once and retries
(that retry is not one of the ``max_tries``). Every failure leaves as a typed ``MeliError``. The Authorization header
and the tokens are never logged.

No request is sent for a connection that needs the seller to authorise the application again (its gate,
``shared.connection_state``); a connection-level 403 (anything but ``not_owned_order``) puts it in that state.
"""

from __future__ import annotations

import random
import re
import threading
import time
from datetime import UTC, datetime
from functools import partial
from typing import TYPE_CHECKING, Any, TypeVar

import httpx
from aws_lambda_powertools import Logger
from pydantic import BaseModel, ValidationError

from shared.meli.deadline import MIN_TRY_SECONDS, seconds_left
from shared.meli.errors import (
    ConnectionNeedsReauthorization,
    MeliAccessDenied,
    MeliBadRequest,
    MeliDeadlineReached,
    MeliError,
    MeliRateLimited,
    MeliTimeout,
    MeliUnauthorized,
    MeliUnavailable,
)
from shared.meli.models import (
    MeliOrder,
    MeliOrderBundles,
    MeliPack,
    MeliShipment,
    MeliShipmentItems,
    MissedFeedsPage,
    OAuthTokens,
    OrderSearchPage,
)
from shared.meli.tokens import (
    OAuthRefresher,
    SecretsManagerAppCredentials,
    SecretsManagerTokenStore,
    TokenManager,
)

if TYPE_CHECKING:
    from collections.abc import Callable

    from shared.ratelimit import RateLimiter
    from shared.settings import Settings
    from shared.stores.base import ConnectionStore

logger = Logger(child=True)

M = TypeVar("M", bound=BaseModel)

_DIGITS = re.compile(r"[0-9]{1,20}")
MAX_MISSED_FEEDS_LIMIT = 50  # not documented; ML's default page is 10 (reference/meli-api.md §8)
MAX_SEARCH_LIMIT = 50  # ML's documented default and the assumed maximum (reference/meli-api.md §2)


def _require_digits(value: str, what: str) -> str:
    # re.fullmatch on [0-9]: str.isdigit() would also accept non-ASCII digits such as "²" or "٣".
    text = str(value).strip()
    if not _DIGITS.fullmatch(text):
        raise MeliBadRequest(f"{what} must be ASCII digits (got {value!r:.40})", error="invalid_id")
    return text


def format_meli_datetime(moment: datetime) -> str:
    """``2015-07-01T00:00:00.000-00:00``, in UTC (naive datetimes are taken as UTC), as ML's search examples."""
    utc = moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
    return f"{utc:%Y-%m-%dT%H:%M:%S}.{utc.microsecond // 1000:03d}-00:00"


def _retry_after_seconds(response: httpx.Response) -> float | None:
    """``Retry-After`` in seconds (ML does not document it; honoured when a proxy or ML sends it). Dates are ignored."""
    value = response.headers.get("retry-after")
    if value is None:
        return None
    try:
        seconds = float(value.strip())
    except ValueError:
        return None
    return seconds if seconds >= 0 else None


def _json_or_none(response: httpx.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


class HttpMeliClient:
    """A ``MarketplaceClient`` bound to one connection."""

    def __init__(
        self,
        connection_id: str,
        *,
        base_url: str,
        tokens: TokenManager,
        http: httpx.Client,
        max_tries: int = 3,
        backoff_base: float = 0.2,
        backoff_cap: float = 5.0,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        timeout: httpx.Timeout | float | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self.connection_id = connection_id
        self._limiter = limiter
        self._base_url = base_url.rstrip("/")
        self._tokens = tokens
        self._http = http
        self._max_tries = max(1, max_tries)
        self._backoff_base = backoff_base
        self._backoff_cap = backoff_cap
        self._sleep = sleep
        self._rng = rng or random.Random()
        self._timeout = timeout
        self._counter_lock = threading.Lock()
        # Counters for benchmarks and logs: HTTP requests actually sent (retries, and OAuth refreshes this client
        # caused, included; ML's quota counts them all), retries after a transient failure, OAuth refreshes.
        self.request_count = 0
        self.retry_count = 0
        self.refresh_count = 0

    def __repr__(self) -> str:
        return f"HttpMeliClient(connection_id={self.connection_id!r}, base_url={self._base_url!r})"

    # --- MarketplaceClient ------------------------------------------------------------------------------------------

    def get_order(self, order_id: str) -> MeliOrder:
        path = f"/orders/{_require_digits(order_id, 'order id')}"
        return self._get_model(path, MeliOrder)

    def get_pack(self, pack_id: str) -> MeliPack:
        path = f"/packs/{_require_digits(pack_id, 'pack id')}"
        return self._get_model(path, MeliPack)

    def get_shipment(self, shipment_id: str) -> MeliShipment:
        path = f"/shipments/{_require_digits(shipment_id, 'shipment id')}"
        # Mandatory for the current shipment JSON (reference/meli-api.md §4).
        return self._get_model(path, MeliShipment, headers={"x-format-new": "true"})

    def get_shipment_items(self, shipment_id: str) -> MeliShipmentItems:
        path = f"/shipments/{_require_digits(shipment_id, 'shipment id')}/items"
        return self._get_model(path, MeliShipmentItems, headers={"x-format-new": "true"})

    def get_order_bundles(self, order_id: str) -> MeliOrderBundles:
        path = f"/orders/{_require_digits(order_id, 'order id')}/bundle"
        return self._get_model(path, MeliOrderBundles)

    def search_orders(
        self,
        *,
        seller_id: int,
        status: str | None = None,
        updated_from: datetime | None = None,
        updated_to: datetime | None = None,
        offset: int = 0,
        limit: int = 50,
    ) -> OrderSearchPage:
        if isinstance(seller_id, bool) or not isinstance(seller_id, int) or seller_id <= 0:
            raise MeliBadRequest("seller_id must be a positive integer", error="invalid_seller")
        if offset < 0 or not 1 <= limit <= MAX_SEARCH_LIMIT:
            raise MeliBadRequest(f"offset must be >= 0 and limit 1..{MAX_SEARCH_LIMIT}", error="invalid_paging")
        params: dict[str, str | int] = {"seller": seller_id, "sort": "date_asc", "offset": offset, "limit": limit}
        if status:
            params["order.status"] = status
        # ML keeps only the hour of these filters: callers overlap their windows and dedupe by order id.
        if updated_from is not None:
            params["order.date_last_updated.from"] = format_meli_datetime(updated_from)
        if updated_to is not None:
            params["order.date_last_updated.to"] = format_meli_datetime(updated_to)
        return self._get_model("/orders/search", OrderSearchPage, params=params)

    def missed_feeds(self, *, app_id: int, topic: str, offset: int = 0, limit: int = 10) -> MissedFeedsPage:
        if offset < 0 or not 1 <= limit <= MAX_MISSED_FEEDS_LIMIT:
            raise MeliBadRequest(f"offset must be >= 0 and limit 1..{MAX_MISSED_FEEDS_LIMIT}", error="invalid_paging")
        params: dict[str, str | int] = {"app_id": app_id, "topic": topic, "offset": offset, "limit": limit}
        return self._get_model("/missed_feeds", MissedFeedsPage, params=params)

    # --- Transport ----------------------------------------------------------------------------------------------------

    def _get_model(
        self,
        path: str,
        model: type[M],
        *,
        params: dict[str, str | int] | None = None,
        headers: dict[str, str] | None = None,
    ) -> M:
        response = self._request("GET", path, params=params, headers=headers)
        body = _json_or_none(response)
        try:
            parsed = model.model_validate(body)
        except ValidationError as exc:
            # A body that is not the documented shape: a proxy page or a truncated answer. Transient for the domain.
            fields = sorted({".".join(str(p) for p in err["loc"]) or "(root)" for err in exc.errors()})[:5]
            raise MeliUnavailable(
                f"unexpected response body (invalid: {', '.join(fields)})", status=response.status_code, path=path
            ) from None
        if response.status_code == 206 and isinstance(parsed, MeliOrder):
            # 206: ML could not fetch some sections; the header names them (reference/meli-api.md §1.2).
            missing = response.headers.get("x-content-missing", "")
            parsed.missing_sections = [s.strip() for s in missing.split(",") if s.strip()]
        return parsed

    def _with_refresh_count(self, get: Callable[[], OAuthTokens]) -> OAuthTokens:
        before = self._tokens.oauth_calls_in_thread()
        try:
            return get()
        finally:
            spent = self._tokens.oauth_calls_in_thread() - before
            with self._counter_lock:
                self.request_count += spent
                self.refresh_count += spent

    def _count(self, *, retry: bool = False) -> None:
        with self._counter_lock:
            if retry:
                self.retry_count += 1
            else:
                self.request_count += 1

    def _backoff(self, failures: int, error: MeliError) -> float:
        if isinstance(error, MeliRateLimited) and error.retry_after is not None:
            return min(error.retry_after, self._backoff_cap * 2)
        # Full jitter: uniform in [0, min(cap, base * 2^(n-1))] spreads the herd of retrying Lambdas.
        ceiling = min(self._backoff_cap, self._backoff_base * 2 ** (failures - 1))
        return self._rng.uniform(0, ceiling)

    def _request(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        # Until ML accepted a request of this connection here, one request at a time: a refused connection is
        # found out by the first, and the others make no call.
        with self._tokens.gate.first_calls(self.connection_id):
            return self._send(method, path, params=params, headers=headers)

    def _send(
        self,
        method: str,
        path: str,
        *,
        params: dict[str, str | int] | None = None,
        headers: dict[str, str] | None = None,
    ) -> httpx.Response:
        gate = self._tokens.gate
        gate.require_active(self.connection_id)  # a connection that needs reauthorization: no ML call at all
        tokens = self._with_refresh_count(partial(self._tokens.current, self.connection_id))
        refreshed = False
        reconnected = False
        failures = 0
        attempt = 0
        while True:
            attempt += 1
            request_headers = {"accept": "application/json", **(headers or {})}
            request_headers["authorization"] = f"Bearer {tokens.access_token}"
            self._require_time(path)  # no quota token for a try that could not end before the caller's deadline
            if self._limiter is not None:
                self._limiter.acquire(self.connection_id)  # the connection's share of ML's request quota
                # Asked again after the wait for a token (in memory): another thread may have met a refusal meanwhile.
                gate.require_active(self.connection_id)
            timeout = self._try_timeout(path)
            self._count()
            started = time.monotonic()
            error: MeliError
            try:
                response = self._http.request(
                    method, self._base_url + path, params=params, headers=request_headers, timeout=timeout
                )
            except httpx.TimeoutException as exc:
                error = MeliTimeout(f"no answer within the timeout ({type(exc).__name__})", path=path)
                self._log(method, path, None, attempt, started, error=type(exc).__name__)
            except httpx.TransportError as exc:  # connect, read, write, protocol errors
                error = MeliUnavailable(f"connection failure ({type(exc).__name__})", path=path)
                self._log(method, path, None, attempt, started, error=type(exc).__name__)
            else:
                status = response.status_code
                self._log(method, path, status, attempt, started)
                if status not in (401, 403):
                    gate.accepted(self.connection_id)
                if 200 <= status < 300:
                    return response
                body = _json_or_none(response)
                if status == 401 and not refreshed:
                    # The token expired or was revoked early: refresh once (serialized per connection) and retry.
                    refreshed = True
                    tokens = self._with_refresh_count(partial(self._tokens.refresh, self.connection_id, tokens))
                    continue
                if status == 401:
                    raise MeliUnauthorized(
                        "the token was rejected even after a refresh", status=401, error="unauthorized", path=path
                    )
                error = self._typed_error(response, body, path)
                if isinstance(error, MeliAccessDenied):
                    # Not about this resource: the application or the user may not call ML. The connection needs
                    # reauthorization (once), unless it was reconnected meanwhile with newer tokens: then retry once.
                    cause = error.error or "forbidden"
                    with gate.deciding(self.connection_id):
                        revoked = gate.revoke(
                            self.connection_id, token_version=tokens.version, cause=cause, message=error.message
                        )
                    if revoked:
                        raise ConnectionNeedsReauthorization(
                            f"Connection {self.connection_id} needs the seller to authorise the application again: "
                            f"Mercado Libre answered 403 {cause} ({error.message}). No Mercado Libre call is made "
                            "for it until it is reconnected.",
                            connection_id=self.connection_id,
                            cause_code=cause,
                            status=403,
                            error=error.error,
                            path=path,
                        )
                    if not reconnected:
                        reconnected = True
                        self._tokens.forget(self.connection_id)
                        tokens = self._with_refresh_count(partial(self._tokens.current, self.connection_id))
                        continue
                if not error.transient:
                    raise error
            failures += 1
            if failures >= self._max_tries:
                raise error
            delay = self._backoff(failures, error)
            left = seconds_left()
            if left is not None and left - delay < MIN_TRY_SECONDS:
                raise error  # the pause and another try would end past the caller's deadline
            self._count(retry=True)
            logger.info(
                "meli retry",
                extra={
                    "connection_id": self.connection_id,
                    "path": path,
                    "error": type(error).__name__,
                    "failures": failures,
                    "delay_s": round(delay, 3),
                },
            )
            self._sleep(delay)

    def _require_time(self, path: str) -> None:
        left = seconds_left()
        if left is not None and left < MIN_TRY_SECONDS:
            raise MeliDeadlineReached(
                f"no time left for a request before the caller's deadline ({max(left, 0.0):.1f} s left)", path=path
            )

    def _try_timeout(self, path: str) -> httpx.Timeout:
        """This try's timeout: the configured one (the HTTP client's if none), shortened to the time left before the
        caller's deadline."""
        self._require_time(path)  # the wait for a quota token may have used it
        configured = httpx.Timeout(self._timeout if self._timeout is not None else self._http.timeout)
        left = seconds_left()
        if left is None:
            return configured
        phases = (configured.connect, configured.read, configured.write, configured.pool)
        longest = max((phase for phase in phases if phase is not None), default=None)
        return httpx.Timeout(left) if longest is None or left < longest else configured

    @staticmethod
    def _typed_error(response: httpx.Response, body: Any, path: str) -> MeliError:
        status = response.status_code
        if status == 429:
            base = MeliError.from_body(status, body, path=path)
            return MeliRateLimited(
                base.message,
                retry_after=_retry_after_seconds(response),
                status=status,
                error=base.error,
                cause=base.cause,
                path=path,
            )
        if status == 408:
            return MeliTimeout("the server timed out the request", status=status, path=path)
        return MeliError.from_body(status, body, path=path)

    def _log(
        self, method: str, path: str, status: int | None, attempt: int, started: float, error: str | None = None
    ) -> None:
        # Method, path, status, attempt and duration only: headers carry the bearer token and are never logged.
        extra: dict[str, Any] = {
            "connection_id": self.connection_id,
            "method": method,
            "path": path,
            "status": status,
            "attempt": attempt,
            "duration_ms": round((time.monotonic() - started) * 1000, 1),
        }
        if error:
            extra["error"] = error
        logger.info("meli request", extra=extra)


# --- Wiring -----------------------------------------------------------------------------------------------------------


def new_http_client(settings: Settings) -> httpx.Client:
    """The one pooled ``httpx.Client`` a container shares between the API client and the OAuth refresher."""
    return httpx.Client(
        timeout=httpx.Timeout(settings.meli_timeout_seconds),
        limits=httpx.Limits(max_connections=20, max_keepalive_connections=10),
        headers={"accept": "application/json", "user-agent": "sales-recovery/0.1"},
        follow_redirects=False,
    )


def build_token_manager(
    settings: Settings,
    *,
    secrets_client: Any,
    connections: ConnectionStore,
    http: httpx.Client,
    **kwargs: Any,
) -> TokenManager:
    """A TokenManager over Secrets Manager (tokens + app credentials) and the connections table's lease.

    ``kwargs`` go to ``TokenManager`` (lock_ttl_seconds, wait_seconds, sleep, clock, ...).
    """
    app_credentials = SecretsManagerAppCredentials(secrets_client, settings.meli_app_secret_id)
    refresher = OAuthRefresher(
        http,
        base_url=settings.meli_api_url,
        timeout=httpx.Timeout(settings.meli_timeout_seconds),
        on_invalid_client=app_credentials.invalidate,
    )
    store = SecretsManagerTokenStore(secrets_client, settings.meli_connection_secret_prefix)
    return TokenManager(store, connections, refresher, app_credentials, **kwargs)


class HttpMeliClientFactory:
    """``MarketplaceClientFactory`` over one shared, lazily created ``httpx.Client`` (connection pooling)."""

    def __init__(
        self,
        settings: Settings,
        *,
        token_manager: TokenManager,
        http: httpx.Client | None = None,
        sleep: Callable[[float], None] = time.sleep,
        rng: random.Random | None = None,
        limiter: RateLimiter | None = None,
    ) -> None:
        self._settings = settings
        self._limiter = limiter
        self._tokens = token_manager
        self._http = http
        self._owns_http = http is None
        self._sleep = sleep
        self._rng = rng
        self._lock = threading.Lock()

    @property
    def http(self) -> httpx.Client:
        with self._lock:
            if self._http is None:
                self._http = new_http_client(self._settings)
            return self._http

    def for_connection(self, connection_id: str) -> HttpMeliClient:
        return HttpMeliClient(
            connection_id,
            base_url=self._settings.meli_api_url,
            tokens=self._tokens,
            http=self.http,
            max_tries=self._settings.meli_max_tries,
            sleep=self._sleep,
            rng=self._rng,
            timeout=httpx.Timeout(self._settings.meli_timeout_seconds),
            limiter=self._limiter,
        )

    def close(self) -> None:
        """Close the pooled client if this factory created it (a client passed in belongs to the caller)."""
        with self._lock:
            if self._http is not None and self._owns_http:
                self._http.close()
                self._http = None
