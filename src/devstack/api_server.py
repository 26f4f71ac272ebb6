"""API Gateway (REST, v1 proxy integration) on loopback, in front of the in-process API handler.

moto cannot create the template's API Gateway (aws-offline.md section 4), so this server plays its part: routes come
from the ``Api`` events of the template's functions; each HTTP request becomes the proxy event API Gateway would send
(``resource`` with its ``{path_parameters}``, ``pathParameters``, single and multi-value headers and query parameters,
``requestContext``), the matching function's handler runs in-process with its deployed environment, and its proxy
response (``statusCode``, ``headers``, ``multiValueHeaders``, ``body``, ``isBase64Encoded``) goes back over HTTP.

Differences from API Gateway, on purpose:

* no authorization (the cloud uses AWS_IAM; this server listens on loopback only) -> ``identity`` carries no caller;
* a request that matches no template route is still handed to the API function (the one serving most routes; the
  notification callback's function serves one) with ``resource`` = the request path and no ``pathParameters``, so
  the handler's router answers (Powertools: 404).
  API Gateway itself would answer 403 ``Missing Authentication Token`` without calling the function;
* ``/console`` serves the recovery console's files (``sales_recovery_cli.console_site``), on the API's origin so
  its calls need no CORS; in the cloud the operator runs it locally instead (``sales-recovery console``);
* a handler exception or a malformed response answers 502 ``{"message": "Internal server error"}`` like API Gateway,
  with the traceback in this process's log; an invocation past the function's ``Timeout`` (29 s, API Gateway's
  integration timeout, in the template) answers 504 ``{"message": "Endpoint request timed out"}`` as API Gateway does.
"""

from __future__ import annotations

import base64
import hashlib
import json
import logging
import re
import threading
import time
import uuid
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import lru_cache
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self
from urllib.parse import parse_qsl, unquote, urlsplit

from devstack.lambdas import LambdaTimedOut
from devstack.template import TEMPLATE_PATH
from sales_recovery_cli.console_site import ConsoleSite

if TYPE_CHECKING:
    from collections.abc import Iterable, Sequence

    from devstack.aws import LocalAws
    from devstack.lambdas import LocalLambdaRuntime

log = logging.getLogger(__name__)

ACCOUNT_ID = "123456789012"  # moto's default account
_INTERNAL_ERROR = 502, {"Content-Type": "application/json"}, b'{"message": "Internal server error"}'
_TIMED_OUT = 504, {"Content-Type": "application/json"}, b'{"message": "Endpoint request timed out"}'


@dataclass(frozen=True)
class Route:
    """One ``Api`` event of a template function."""

    method: str  # upper case; ANY matches every method
    resource: str  # e.g. /connections/{connection_id}/sales/{sale_id}
    function: str  # logical id of the function
    stage: str = "Prod"  # SAM's implicit API stage name

    @property
    def pattern(self) -> re.Pattern[str]:
        return _compile(self.resource)

    @property
    def literal_segments(self) -> int:
        return sum(1 for part in self.resource.split("/") if part and not part.startswith("{"))

    def match(self, method: str, path: str) -> dict[str, str] | None:
        if self.method not in ("ANY", method.upper()):
            return None
        found = self.pattern.fullmatch(path)
        return None if found is None else {k: unquote(v) for k, v in found.groupdict().items()}


@lru_cache(maxsize=256)
def _compile(resource: str) -> re.Pattern[str]:
    def path_parameter(m: re.Match[str]) -> str:
        name = m.group(1)
        if name.endswith("+"):  # greedy {proxy+}
            return f"(?P<{_group(name[:-1])}>.+)"
        return f"(?P<{_group(name)}>[^/]+)"

    parts = re.split(r"(\{[^}]+\})", resource)
    regex = "".join(path_parameter(re.match(r"\{([^}]+)\}", p)) if p.startswith("{") else re.escape(p) for p in parts)  # type: ignore[arg-type]
    return re.compile(regex)


def _group(name: str) -> str:
    return re.sub(r"\W", "_", name)


def template_routes(
    template: Mapping[str, Any] | Path = TEMPLATE_PATH, parameters: Mapping[str, str] | None = None
) -> list[Route]:
    """The ``Api`` events of every function, most specific first (literal segments beat path parameters)."""
    if isinstance(template, Path):
        from samtranslator.yaml_helper import yaml_parse

        template = yaml_parse(template.read_text())
    assert not isinstance(template, Path)
    resources: Mapping[str, Any] = template.get("Resources", {})
    defaults = {k: str(p["Default"]) for k, p in template.get("Parameters", {}).items() if "Default" in p}
    values = {**defaults, **(parameters or {})}
    routes = []
    for logical_id, res in resources.items():
        if res.get("Type") != "AWS::Serverless::Function":
            continue
        for event in res.get("Properties", {}).get("Events", {}).values():
            if event.get("Type") != "Api":
                continue
            props = event.get("Properties", {})
            api = props.get("RestApiId")
            stage = "Prod"
            if isinstance(api, dict) and api.get("Ref") in resources:
                stage = _static_str(resources[api["Ref"]].get("Properties", {}).get("StageName", "Prod"), values)
            routes.append(Route(str(props["Method"]).upper(), str(props["Path"]), logical_id, stage))
    return sorted(routes, key=lambda r: (-r.literal_segments, r.resource.count("{"), r.resource))


def _static_str(value: Any, values: Mapping[str, str]) -> str:
    if isinstance(value, dict) and "Ref" in value:
        return values.get(value["Ref"], str(value["Ref"]))
    return str(value)


def fallback_function(routes: Sequence[Route]) -> str | None:
    """The function unmatched paths go to: the one serving most routes (the REST API's), when one does."""
    counts: dict[str, int] = {}
    for route in routes:
        counts[route.function] = counts.get(route.function, 0) + 1
    ranked = sorted(counts.items(), key=lambda kv: -kv[1])
    if not ranked or (len(ranked) > 1 and ranked[0][1] == ranked[1][1]):
        return None
    return ranked[0][0]


def match_route(routes: Iterable[Route], method: str, path: str) -> tuple[Route, dict[str, str]] | None:
    for route in routes:
        params = route.match(method, path)
        if params is not None:
            return route, params
    return None


@lru_cache(maxsize=1)
def _default_routes() -> tuple[Route, ...]:
    try:
        return tuple(template_routes())
    except Exception:  # no template at hand: tests then pass resource/path_parameters themselves
        log.debug("no routes from %s", TEMPLATE_PATH, exc_info=True)
        return ()


def _short_id(*parts: str, length: int = 10) -> str:
    """Stable ids shaped like API Gateway's (lower-case alphanumerics)."""
    digest = hashlib.sha256("/".join(parts).encode()).digest()
    alphabet = "abcdefghijklmnopqrstuvwxyz0123456789"
    return "".join(alphabet[b % len(alphabet)] for b in digest[:length])


def build_proxy_event(
    method: str,
    path: str,
    *,
    headers: Mapping[str, str | Sequence[str]] | None = None,
    query: Mapping[str, str | Sequence[str]] | None = None,
    body: str | bytes | Mapping[str, Any] | list[Any] | None = None,
    resource: str | None = None,
    path_parameters: Mapping[str, str] | None = None,
    stage: str | None = None,
    routes: Sequence[Route] | None = None,
    source_ip: str = "127.0.0.1",
    domain_name: str = "127.0.0.1:3000",
    api_id: str | None = None,
    stage_in_path: bool = True,
) -> dict[str, Any]:
    """An API Gateway REST (v1) proxy event, as API Gateway would deliver it to the function.

    ``path`` may carry a query string. Without ``resource``, the template's routes are matched to fill ``resource``
    and ``pathParameters``; an unmatched path becomes its own ``resource``. A dict or list ``body`` is sent as JSON.
    ``stage_in_path``: ``requestContext.path`` starts with ``/<stage>`` as on the execute-api host; False for a host
    that serves the API at its root (a custom domain, the local server), as ``sam local start-api`` does.
    """
    split = urlsplit(path)
    path = unquote(split.path) or "/"
    method = method.upper()

    multi_query: dict[str, list[str]] = {}
    for key, value in parse_qsl(split.query, keep_blank_values=True):
        multi_query.setdefault(key, []).append(value)
    for name, values in (query or {}).items():
        multi_query.setdefault(name, []).extend([values] if isinstance(values, str) else list(values))

    multi_headers: dict[str, list[str]] = {}
    for name, values in (headers or {}).items():
        multi_headers.setdefault(name, []).extend([values] if isinstance(values, str) else list(values))
    lower = {k.lower() for k in multi_headers}

    is_base64 = False
    text: str | None
    if body is None:
        text = None
    elif isinstance(body, Mapping | list):
        text = json.dumps(body)
        if "content-type" not in lower:
            multi_headers["Content-Type"] = ["application/json"]
    elif isinstance(body, bytes):
        try:
            text = body.decode("utf-8")
        except UnicodeDecodeError:  # binary payloads arrive base64-encoded
            text, is_base64 = base64.b64encode(body).decode(), True
    else:
        text = body

    matched_stage = None
    if resource is None:
        found = match_route(routes if routes is not None else _default_routes(), method, path)
        if found is not None:
            route, params = found
            resource, matched_stage = route.resource, route.stage
            path_parameters = path_parameters if path_parameters is not None else params
        else:
            resource = path
    stage = stage or matched_stage or "local"

    host = domain_name
    defaults = {
        "Host": host,
        "X-Amzn-Trace-Id": f"Root=1-{int(time.time()):08x}-{uuid.uuid4().hex[:24]}",
        "X-Forwarded-For": source_ip,
        "X-Forwarded-Port": host.rsplit(":", 1)[1] if ":" in host else "443",
        "X-Forwarded-Proto": "http" if host.startswith(("127.", "localhost")) else "https",
    }
    for key, value in defaults.items():  # what API Gateway adds on the way in
        if key.lower() not in lower:
            multi_headers[key] = [value]
    user_agent = next((v[-1] for k, v in multi_headers.items() if k.lower() == "user-agent"), None)

    now = datetime.now(UTC)
    api = api_id or _short_id("api", stage)
    request_id = str(uuid.uuid4())
    return {
        "resource": resource,
        "path": path,
        "httpMethod": method,
        "headers": {k: v[-1] for k, v in multi_headers.items()} or None,
        "multiValueHeaders": multi_headers or None,
        "queryStringParameters": {k: v[-1] for k, v in multi_query.items()} or None,
        "multiValueQueryStringParameters": multi_query or None,
        "pathParameters": dict(path_parameters) if path_parameters else None,
        "stageVariables": None,
        "requestContext": {
            "resourceId": _short_id("resource", resource, length=6),
            "resourcePath": resource,
            "httpMethod": method,
            "extendedRequestId": base64.b64encode(uuid.uuid4().bytes[:12]).decode(),
            "requestTime": now.strftime("%d/%b/%Y:%H:%M:%S +0000"),
            "path": f"/{stage}{path}" if stage_in_path else path,
            "accountId": ACCOUNT_ID,
            "protocol": "HTTP/1.1",
            "stage": stage,
            "domainPrefix": host.split(".", 1)[0],
            "requestTimeEpoch": int(now.timestamp() * 1000),
            "requestId": request_id,
            "identity": {
                "cognitoIdentityPoolId": None,
                "accountId": None,
                "cognitoIdentityId": None,
                "caller": None,
                "sourceIp": source_ip,
                "principalOrgId": None,
                "accessKey": None,
                "cognitoAuthenticationType": None,
                "cognitoAuthenticationProvider": None,
                "userArn": None,
                "userAgent": user_agent,
                "user": None,
            },
            "domainName": host,
            "deploymentId": _short_id("deployment", api, length=6),
            "apiId": api,
        },
        "body": text,
        "isBase64Encoded": is_base64,
    }


def proxy_response_to_http(result: Any) -> tuple[int, list[tuple[str, str]], bytes]:
    """A Lambda proxy response -> (status, header pairs, body bytes), as API Gateway maps it; 502 if malformed."""
    if not isinstance(result, dict) or not isinstance(result.get("statusCode"), int | str):
        raise ValueError(f"malformed Lambda proxy response: {result!r:.200}")
    status = int(result["statusCode"])
    pairs: list[tuple[str, str]] = []
    multi: Mapping[str, Any] = result.get("multiValueHeaders") or {}
    for name, values in multi.items():
        pairs.extend((name, str(v)) for v in values)
    seen = {name.lower() for name in multi}
    pairs.extend((k, str(v)) for k, v in (result.get("headers") or {}).items() if k.lower() not in seen)
    raw = result.get("body")
    if raw is None:
        body = b""
    elif result.get("isBase64Encoded"):
        body = base64.b64decode(raw)
    else:
        body = str(raw).encode("utf-8")
    if not any(k.lower() == "content-type" for k, _ in pairs):
        pairs.append(("Content-Type", "application/json"))  # API Gateway's default
    return status, pairs, body


class LocalApiServer:
    """Serves the template's REST API on ``http://host:port`` (port 0 picks a free one)."""

    def __init__(
        self,
        local_aws: LocalAws,
        runtime: LocalLambdaRuntime | None = None,
        host: str = "127.0.0.1",
        port: int = 3000,
        console: ConsoleSite | None = None,
    ) -> None:
        self.local_aws = local_aws
        self.console = console or ConsoleSite()
        self.runtime = runtime or local_aws.runtime
        self.routes = template_routes(local_aws.template_path, local_aws.parameters)
        self.fallback_function = fallback_function(self.routes)
        self.default_stage = self.routes[0].stage if self.routes else "Prod"
        self._api_id = _short_id("api", local_aws.stack_name)
        self._httpd = _Server((host, port), _Handler)
        self._httpd.api = self
        self._thread: threading.Thread | None = None

    @property
    def url(self) -> str:
        host, port = self._httpd.server_address[:2]
        return f"http://{host!s}:{port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        self._thread = threading.Thread(
            target=self._httpd.serve_forever, kwargs={"poll_interval": 0.05}, name="local-api", daemon=True
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        self._httpd.shutdown()
        self._httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)

    def handle(
        self, method: str, raw_path: str, headers: list[tuple[str, str]], body: bytes
    ) -> tuple[int, list[tuple[str, str]], bytes]:
        path = unquote(urlsplit(raw_path).path) or "/"
        page = self.console.answer(method, path)
        if page is not None:
            return page
        found = match_route(self.routes, method, path)
        function = found[0].function if found else self.fallback_function
        if function is None:  # what API Gateway answers for a route it does not have
            return 403, [("Content-Type", "application/json")], b'{"message":"Missing Authentication Token"}'
        multi: dict[str, list[str]] = {}
        for key, value in headers:
            multi.setdefault(key, []).append(value)
        event = build_proxy_event(
            method,
            raw_path,
            headers=multi,
            body=body or None,
            resource=found[0].resource if found else path,
            path_parameters=found[1] if found else None,
            stage=found[0].stage if found else self.default_stage,
            domain_name=f"{self._httpd.server_address[0]!s}:{self._httpd.server_address[1]}",
            api_id=self._api_id,
            stage_in_path=False,  # this server has no /<stage> prefix: links the API builds (the /docs page) work
        )
        try:
            result = self.runtime.invoke(function, event)
            status, pairs, payload = proxy_response_to_http(result)
        except LambdaTimedOut:
            log.warning("%s %s: the API function timed out", method, raw_path)
            status, default_headers, payload = _TIMED_OUT
            pairs = list(default_headers.items())
        except Exception:
            log.exception("%s %s: the API function failed", method, raw_path)
            status, default_headers, payload = _INTERNAL_ERROR
            pairs = list(default_headers.items())
        context = event["requestContext"]
        pairs += [
            ("x-amzn-RequestId", context["requestId"]),
            ("x-amz-apigw-id", context["extendedRequestId"]),
            ("X-Amzn-Trace-Id", event["headers"]["X-Amzn-Trace-Id"]),
        ]
        return status, pairs, payload


class _Server(ThreadingHTTPServer):
    daemon_threads = True
    allow_reuse_address = True
    api: LocalApiServer


class _Handler(BaseHTTPRequestHandler):
    server: _Server
    protocol_version = "HTTP/1.1"

    def _serve(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(length) if length else b""
        status, pairs, payload = self.server.api.handle(self.command, self.path, list(self.headers.items()), body)
        self.send_response(status)
        for key, value in pairs:
            if key.lower() not in ("content-length", "connection", "transfer-encoding"):
                self.send_header(key, value)
        self.send_header("Content-Length", str(len(payload)))
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(payload)

    do_GET = do_POST = do_PUT = do_PATCH = do_DELETE = do_OPTIONS = do_HEAD = _serve

    def log_message(self, format: str, *args: Any) -> None:
        log.debug("%s - %s", self.address_string(), format % args)
