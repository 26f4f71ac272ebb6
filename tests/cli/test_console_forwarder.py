"""``sales-recovery console``: the forwarder signs exactly like the CLI, and only for its own page, on loopback only.

The deployed API is an httpx MockTransport that records what arrives; signatures are checked against the SigV4 test
vectors of ``tests/cli/test_sigv4.py`` (fixed fake credentials and time, the expected value computed from the
specification) and against the CLI's own signing of the same call.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from unittest import mock

import httpx
import pytest

from sales_recovery_cli.auth import SigV4Auth
from sales_recovery_cli.client import USAGE, ApiClient
from sales_recovery_cli.forwarder import TOKEN_HEADER, ConsoleForwarder, NotLoopback, loopback_address
from sales_recovery_cli.main import main
from tests.cli.test_sigv4 import API, FAKE, NOW, _expected_signature

REGION = "sa-east-1"


class Upstream:
    """The deployed API: records each request it receives and answers like API Gateway would."""

    def __init__(self) -> None:
        self.seen: list[httpx.Request] = []

    def __call__(self, request: httpx.Request) -> httpx.Response:
        self.seen.append(request)
        if request.url.path.endswith("/reprocessing-jobs"):
            return httpx.Response(202, json={"job_id": "f" * 32}, headers={"Retry-After": "1", "X-Amzn-Trace": "x"})
        return httpx.Response(200, json={"items": [], "count": 0})


@pytest.fixture
def upstream() -> Upstream:
    return Upstream()


@pytest.fixture
def forwarder(upstream: Upstream) -> Iterator[ConsoleForwarder]:
    api = ApiClient(API, auth=SigV4Auth(REGION, FAKE), transport=httpx.MockTransport(upstream))
    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=NOW),
        ConsoleForwarder(api, port=0, connections=["mla-main"]) as running,
    ):
        yield running


def _browser(forwarder: ConsoleForwarder, **headers: str) -> httpx.Client:
    """What the console's page sends: its origin, and the token it read from config.json."""
    return httpx.Client(base_url=forwarder.origin, headers={TOKEN_HEADER: forwarder.token, **headers}, timeout=10)


def _signed_by_the_cli(method: str, path: str, **kwargs: object) -> httpx.Request:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=NOW),
        ApiClient(API, auth=SigV4Auth(REGION, FAKE), transport=httpx.MockTransport(handler)) as cli,
    ):
        cli.request(method, path, **kwargs)  # type: ignore[arg-type]
    return seen[0]


def test_a_forwarded_get_is_signed_as_the_sigv4_vectors_and_the_cli_sign_it(
    forwarder: ConsoleForwarder, upstream: Upstream
) -> None:
    with _browser(forwarder) as page:
        answer = page.get("/connections/mla-main/sale-errors", params={"limit": "20", "error_type": "x"})
    assert answer.status_code == 200 and answer.json() == {"items": [], "count": 0}
    request = upstream.seen[0]
    assert str(request.url) == f"{API}/connections/mla-main/sale-errors?limit=20&error_type=x"  # the stage kept
    authorization = request.headers["Authorization"]
    assert authorization.startswith(
        f"AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/{REGION}/execute-api/aws4_request"
    )
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert signed == ["host", "x-amz-date"]  # nothing of the browser's (cookies, token, origin) is signed or sent
    assert authorization.split("Signature=")[1] == _expected_signature(request, signed, REGION, FAKE.secret_key)
    by_cli = _signed_by_the_cli("GET", "/connections/mla-main/sale-errors", params={"limit": "20", "error_type": "x"})
    assert authorization == by_cli.headers["Authorization"]
    assert TOKEN_HEADER.lower() not in request.headers and "origin" not in request.headers


def test_a_forwarded_post_covers_its_body_and_answers_as_the_api_did(
    forwarder: ConsoleForwarder, upstream: Upstream
) -> None:
    body = {"sale_ids": ["2000009101000011", "2000009101000021"]}
    with _browser(forwarder, Origin=forwarder.origin) as page:
        answer = page.post("/connections/mla-main/reprocessing-jobs", json=body, headers={"Idempotency-Key": "t-1"})
    assert answer.status_code == 202 and answer.headers["Retry-After"] == "1"
    assert "X-Amzn-Trace" not in answer.headers
    request = upstream.seen[0]
    assert json.loads(request.content) == body and request.headers["Idempotency-Key"] == "t-1"
    authorization = request.headers["Authorization"]
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert signed == ["content-type", "host", "x-amz-date"]
    assert authorization.split("Signature=")[1] == _expected_signature(request, signed, REGION, FAKE.secret_key)


@pytest.mark.parametrize(
    ("headers", "path", "status", "error"),
    [
        ({TOKEN_HEADER: ""}, "/connections/c/sale-errors", 403, "missing_console_token"),
        ({TOKEN_HEADER: "guessed"}, "/connections/c/sale-errors", 403, "missing_console_token"),
        ({"Origin": "https://evil.example"}, "/connections/c/sale-errors", 403, "foreign_origin"),
        ({"Host": "evil.example:8765"}, "/connections/c/sale-errors", 421, "wrong_host"),  # DNS rebinding
        ({}, "/openapi.json", 404, "not_forwarded"),
        ({}, "/", 404, "not_forwarded"),
        ({}, "/connections/../openapi.json", 404, "not_forwarded"),
        ({}, "/connections/%2E%2E/openapi.json", 404, "not_forwarded"),
    ],
)
def test_nothing_is_signed_for_anybody_but_the_consoles_own_page(
    forwarder: ConsoleForwarder, upstream: Upstream, headers: dict[str, str], path: str, status: int, error: str
) -> None:
    with _browser(forwarder) as page:
        answer = page.get(path, headers=headers)
    assert (answer.status_code, answer.json()["error"]) == (status, error)
    assert upstream.seen == []


def test_an_absolute_request_line_is_still_sent_to_the_api_url_only(
    forwarder: ConsoleForwarder, upstream: Upstream
) -> None:
    """``GET http://elsewhere/connections/...`` (a proxy-style request line) is answered for --api-url's host."""
    status, _, _ = forwarder.handle(
        "GET",
        "http://169.254.169.254/connections/mla-main/sale-errors?limit=1",
        {"host": next(iter(forwarder.allowed_hosts())), TOKEN_HEADER.lower(): forwarder.token},
        b"",
    )
    assert status == 200
    assert str(upstream.seen[0].url) == f"{API}/connections/mla-main/sale-errors?limit=1"


def test_a_method_the_api_lacks_is_not_forwarded(forwarder: ConsoleForwarder, upstream: Upstream) -> None:
    with _browser(forwarder) as page:
        answer = page.delete("/connections/c/sales/1")
    assert answer.status_code == 405 and upstream.seen == []


def test_it_serves_the_console_with_this_runs_token(forwarder: ConsoleForwarder) -> None:
    with httpx.Client(base_url=forwarder.origin) as browser:
        page = browser.get("/console/")
        config = browser.get("/console/config.json").json()
        assert browser.get("/console").status_code == 308
        assert browser.get("/console/../README.md").status_code in (404, 308)
    assert page.status_code == 200 and "console.js" in page.text
    assert "script-src 'self'" in page.headers["Content-Security-Policy"]
    assert config == {"connections": ["mla-main"], "mode": "forwarder", "api_url": API, "token": forwarder.token}


@pytest.mark.parametrize("host", ["0.0.0.0", "::", "192.168.1.5", "10.0.0.1", "example.com", ""])
def test_it_refuses_to_listen_anywhere_but_loopback(host: str) -> None:
    with pytest.raises(NotLoopback):
        loopback_address(host)
    api = ApiClient(API, auth=SigV4Auth(REGION, FAKE))
    with pytest.raises(NotLoopback):
        ConsoleForwarder(api, host=host, port=0)


@pytest.mark.parametrize(
    ("host", "bound"),
    [("127.0.0.1", "127.0.0.1"), ("localhost", "127.0.0.1"), ("127.0.0.2", "127.0.0.2"), ("[::1]", "::1")],
)
def test_loopback_hosts(host: str, bound: str) -> None:
    assert loopback_address(host) == bound


def test_the_command_refuses_a_public_bind_with_a_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with mock.patch("sales_recovery_cli.client.SigV4Auth", return_value=SigV4Auth(REGION, FAKE)):
        code = main(["console", "--api-url", API, "--host", "0.0.0.0"])
    assert code == USAGE
    assert "loopback" in capsys.readouterr().err
