"""SigV4 signing of API requests (API Gateway with ``AWS_IAM`` auth), as an httpx Auth, with botocore alone."""

from __future__ import annotations

import ipaddress
import re
from collections.abc import Generator
from typing import Any
from urllib.parse import urlsplit

import httpx

_EXECUTE_API_HOST = re.compile(r"\.execute-api\.([a-z0-9-]+)\.amazonaws\.com(?:\.cn)?$")


def is_loopback(url: str) -> bool:
    """True for the local stack (``make serve``): it has no auth, so nothing is signed."""
    host = (urlsplit(url).hostname or "").strip("[]")
    if host == "localhost" or host.endswith(".localhost"):
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def region_from_url(url: str) -> str | None:
    """``us-east-1`` from ``https://abc123.execute-api.us-east-1.amazonaws.com/prod``; None for a custom domain."""
    found = _EXECUTE_API_HOST.search(urlsplit(url).hostname or "")
    return found.group(1) if found else None


class SigV4Auth(httpx.Auth):
    """Signs each request for ``execute-api`` with the given botocore credentials (or the standard chain's).

    Signed headers: ``host``, ``x-amz-date``, ``content-type`` when present, and ``x-amz-security-token`` for
    temporary credentials; the body's SHA-256 is part of the signature. Hop-by-hop headers are left out on purpose
    (a proxy may rewrite them).
    """

    requires_request_body = True

    def __init__(self, region: str, credentials: Any | None = None, service: str = "execute-api") -> None:
        if credentials is None:
            import boto3

            credentials = boto3.Session().get_credentials()
            if credentials is None:
                raise NoCredentials(
                    "No AWS credentials found (environment, ~/.aws/credentials, SSO, instance role...); "
                    "configure them, or point --api-url at the local stack."
                )
        self.credentials = credentials
        self.region = region
        self.service = service

    def auth_flow(self, request: httpx.Request) -> Generator[httpx.Request, httpx.Response, None]:
        from botocore.auth import SigV4Auth as BotocoreSigV4
        from botocore.awsrequest import AWSRequest

        headers = {"Host": request.headers.get("host") or request.url.netloc.decode()}
        if "content-type" in request.headers:
            headers["Content-Type"] = request.headers["content-type"]
        aws_request = AWSRequest(method=request.method, url=str(request.url), data=request.content, headers=headers)
        BotocoreSigV4(self.credentials, self.service, self.region).add_auth(aws_request)
        for name in ("Authorization", "X-Amz-Date", "X-Amz-Security-Token"):
            if name in aws_request.headers:
                request.headers[name] = aws_request.headers[name]
        yield request


class NoCredentials(RuntimeError):
    pass
