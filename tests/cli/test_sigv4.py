"""SigV4 signing of the CLI's requests to a deployed API (AWS_IAM auth), with fixed fake credentials and time.

The expected signature is computed here from the SigV4 specification (hashlib/hmac), not with botocore.
"""

from __future__ import annotations

import datetime as dt
import hashlib
import hmac
import json
from unittest import mock

import httpx
import pytest
from botocore.credentials import Credentials

from sales_recovery_cli.auth import SigV4Auth, is_loopback, region_from_url
from sales_recovery_cli.client import USAGE, ApiClient, CliError

API = "https://abc123defg.execute-api.sa-east-1.amazonaws.com/prod"
NOW = dt.datetime(2026, 11, 27, 12, 30, 45)
FAKE = Credentials("AKIDEXAMPLE", "wJalrXUtnFEMI/K7MDENG+bPxRfiCYEXAMPLEKEY")


def _send(auth: httpx.Auth, method: str, url: str, **kwargs: object) -> httpx.Request:
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={"ok": True})

    with (
        mock.patch("botocore.auth.get_current_datetime", return_value=NOW),
        httpx.Client(transport=httpx.MockTransport(handler), auth=auth) as client,
    ):
        client.request(method, url, **kwargs)  # type: ignore[arg-type]
    return seen[0]


def _expected_signature(request: httpx.Request, signed: list[str], region: str, secret: str) -> str:
    amz_date = NOW.strftime("%Y%m%dT%H%M%SZ")
    canonical_headers = "".join(f"{name}:{request.headers[name].strip()}\n" for name in signed)
    query = "&".join(
        sorted(f"{k}={v}" for k, v in (p.split("=", 1) for p in request.url.query.decode().split("&") if p))
    )
    canonical = "\n".join(
        [
            request.method,
            request.url.path,
            query,
            canonical_headers,
            ";".join(signed),
            hashlib.sha256(request.content).hexdigest(),
        ]
    )
    scope = f"{amz_date[:8]}/{region}/execute-api/aws4_request"
    to_sign = "\n".join(["AWS4-HMAC-SHA256", amz_date, scope, hashlib.sha256(canonical.encode()).hexdigest()])
    key = f"AWS4{secret}".encode()
    for part in (amz_date[:8], region, "execute-api", "aws4_request"):
        key = hmac.new(key, part.encode(), hashlib.sha256).digest()
    return hmac.new(key, to_sign.encode(), hashlib.sha256).hexdigest()


def test_a_signed_get_carries_a_valid_sigv4_authorization_and_date() -> None:
    request = _send(
        SigV4Auth("sa-east-1", FAKE), "GET", f"{API}/connections/mla-main/sale-errors?limit=10&error_type=x"
    )
    authorization = request.headers["Authorization"]
    assert authorization.startswith(
        "AWS4-HMAC-SHA256 Credential=AKIDEXAMPLE/20261127/sa-east-1/execute-api/aws4_request"
    )
    assert request.headers["x-amz-date"] == "20261127T123045Z"
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert signed == ["host", "x-amz-date"]
    signature = authorization.split("Signature=")[1]
    assert signature == _expected_signature(request, signed, "sa-east-1", FAKE.secret_key)


def test_a_signed_post_covers_its_body_and_content_type_and_the_session_token() -> None:
    temporary = Credentials("ASIAEXAMPLE", "secret", token="session-token-value")
    body = {"sale_ids": ["2000009101000011"]}
    request = _send(
        SigV4Auth("us-east-1", temporary), "POST", f"{API}/connections/mla-main/reprocessing-jobs", json=body
    )
    assert request.headers["x-amz-security-token"] == "session-token-value"
    authorization = request.headers["Authorization"]
    signed = authorization.split("SignedHeaders=")[1].split(",")[0].split(";")
    assert signed == ["content-type", "host", "x-amz-date", "x-amz-security-token"]
    assert authorization.split("Signature=")[1] == _expected_signature(request, signed, "us-east-1", "secret")
    assert json.loads(request.content) == body


def test_the_client_signs_only_non_loopback_urls_with_the_region_of_the_url(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "AKIDFROMCHAIN")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "secret-from-chain")
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    monkeypatch.delenv("AWS_SECURITY_TOKEN", raising=False)
    seen: list[httpx.Request] = []

    def handler(request: httpx.Request) -> httpx.Response:
        seen.append(request)
        return httpx.Response(200, json={})

    transport = httpx.MockTransport(handler)
    with ApiClient(API, transport=transport) as remote:  # credentials from the standard chain (here: environment)
        remote.request("GET", "/connections/c/sale-errors")
    with ApiClient("http://127.0.0.1:3000", transport=transport) as local:
        local.request("GET", "/connections/c/sale-errors")
    assert seen[0].headers["Authorization"].startswith("AWS4-HMAC-SHA256 Credential=AKIDFROMCHAIN/")
    assert "/sa-east-1/execute-api/" in seen[0].headers["Authorization"]
    assert "Authorization" not in seen[1].headers and "x-amz-date" not in seen[1].headers


def test_a_custom_domain_needs_a_region() -> None:
    with mock.patch("sales_recovery_cli.client._session_region", return_value=None), pytest.raises(CliError) as error:
        ApiClient("https://api.example.com")
    assert error.value.code == USAGE and "--region" in str(error.value)


@pytest.mark.parametrize(
    ("url", "loopback"),
    [
        ("http://127.0.0.1:3000", True),
        ("http://localhost:3000", True),
        ("http://[::1]:3000", True),
        ("http://127.1.2.3", True),
        ("https://abc.execute-api.us-east-1.amazonaws.com/prod", False),
        ("http://10.0.0.5:3000", False),
    ],
)
def test_loopback_urls(url: str, loopback: bool) -> None:
    assert is_loopback(url) is loopback


def test_region_from_url() -> None:
    assert region_from_url(API) == "sa-east-1"
    assert region_from_url("https://api.example.com/v1") is None
