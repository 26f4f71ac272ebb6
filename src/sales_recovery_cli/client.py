"""HTTP access to the REST API of DESIGN §3, with the CLI's exit codes for every kind of failure."""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

import httpx

from sales_recovery_cli.auth import NoCredentials, SigV4Auth, is_loopback, region_from_url

# Exit codes a script can rely on (README "CLI").
OK = 0
NOT_OK = 1  # the sale or job ended not ok, or is blocked (escalated, not_reflectable, still running at --timeout)
USAGE = 2  # bad usage or a 4xx answer: unknown connection, not a sale id, not in the error list, ...
UNAVAILABLE = 3  # the service is unavailable: 5xx, network error, time-out


class CliError(Exception):
    """A failure the CLI reports on stderr and exits with ``code``; ``body`` is the API's answer, if any."""

    def __init__(self, message: str, code: int, body: Any = None, status: int | None = None) -> None:
        super().__init__(message)
        self.code = code
        self.body = body
        self.status = status


@dataclass
class Answer:
    status: int
    body: Any


class ApiClient:
    def __init__(
        self,
        api_url: str,
        *,
        region: str | None = None,
        timeout: float = 30.0,
        auth: httpx.Auth | None = None,
        transport: httpx.BaseTransport | None = None,
    ) -> None:
        self.api_url = api_url.rstrip("/")
        if auth is None and not is_loopback(api_url):
            signing_region = region or region_from_url(api_url) or _session_region()
            if not signing_region:
                raise CliError(
                    f"Cannot tell the AWS region of {api_url}; pass --region (or set AWS_REGION).", code=USAGE
                )
            try:
                auth = SigV4Auth(signing_region)
            except NoCredentials as exc:
                raise CliError(str(exc), code=USAGE) from exc
        self._http = httpx.Client(
            base_url=self.api_url,
            timeout=timeout,
            auth=auth,
            transport=transport,
            headers={"User-Agent": "sales-recovery-cli"},
        )

    def close(self) -> None:
        self._http.close()

    def __enter__(self) -> ApiClient:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.close()

    def send(
        self, method: str, path: str, *, content: bytes = b"", headers: dict[str, str] | None = None
    ) -> httpx.Response:
        """One call as it comes (the console's forwarder): signed like every other, any status returned as is."""
        return self._http.request(method, path, content=content or None, headers=headers)

    def request(
        self,
        method: str,
        path: str,
        *,
        json_body: Any = None,
        params: dict[str, str] | None = None,
        accept: tuple[int, ...] = (200, 202),
    ) -> Answer:
        """One call; an answer outside ``accept`` raises CliError with the API's message and the right exit code."""
        try:
            response = self._http.request(method, path, json=json_body, params=params)
        except httpx.TimeoutException as exc:
            raise CliError(f"{method} {self.api_url}{path}: no answer in time ({exc!s}).", code=UNAVAILABLE) from exc
        except httpx.HTTPError as exc:
            raise CliError(
                f"{method} {self.api_url}{path}: cannot reach the API ({exc!s}). "
                "Is the stack up (make serve) and --api-url right?",
                code=UNAVAILABLE,
            ) from exc
        try:
            body: Any = response.json() if response.content else None
        except json.JSONDecodeError:
            body = {"message": response.text[:500]}
        if response.status_code in accept:
            return Answer(response.status_code, body)
        message = body.get("message") if isinstance(body, dict) else None
        message = message or f"HTTP {response.status_code}"
        error = body.get("error") if isinstance(body, dict) else None
        text = f"{response.status_code} {error}: {message}" if error else f"{response.status_code}: {message}"
        if response.status_code == 403 and not is_loopback(self.api_url):
            text += " (is the request signed with credentials allowed execute-api:Invoke on this API?)"
        code = UNAVAILABLE if response.status_code >= 500 or response.status_code == 429 else USAGE
        raise CliError(text, code=code, body=body, status=response.status_code)


def _session_region() -> str | None:
    try:
        import boto3

        return boto3.Session().region_name
    except Exception:
        return None
