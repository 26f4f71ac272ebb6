"""Shared fixtures. AWS is moto (tables created from template.yaml), Mercado Libre is the simulator over HTTP,
and the handlers receive whole API Gateway / Step Functions events loaded from events/.
"""

from __future__ import annotations

import copy
import json
import os
import re
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from types import SimpleNamespace
from typing import Any

# Fake credentials and region before anything creates a boto3 client; never a real endpoint.
os.environ.update(
    {
        "AWS_DEFAULT_REGION": "us-east-1",
        "AWS_REGION": "us-east-1",
        "AWS_ACCESS_KEY_ID": "testing",
        "AWS_SECRET_ACCESS_KEY": "testing",
        "AWS_SECURITY_TOKEN": "testing",
        "AWS_SESSION_TOKEN": "testing",
        "POWERTOOLS_TRACE_DISABLED": "1",
        "POWERTOOLS_SERVICE_NAME": "sales-recovery",
        "POWERTOOLS_METRICS_NAMESPACE": "SalesRecoveryTest",
        "POWERTOOLS_DEV": "0",
    }
)
os.environ.pop("AWS_ENDPOINT_URL", None)

import boto3
import pytest
from moto import mock_aws

# Imported here, with the test process's environment: Powertools child loggers keep the level of their first import,
# and a lazy first import inside an in-process Lambda invocation of a local stack (LogLevel WARNING) would silence
# the ML client's INFO lines for every later test (tests/security/test_no_tokens_in_logs.py reads them).
import shared.meli.client  # noqa: F401
from devstack import moto_fidelity
from devstack.account import provision, secret_prefix
from devstack.simulator.scenario import Scenario, load_scenario
from devstack.simulator.server import MeliSimulator
from shared.wiring import build_bulk_service, build_job_store, build_service

moto_fidelity.install()

ROOT = Path(__file__).resolve().parents[1]
EVENTS = ROOT / "events"
DEFAULT_SCENARIO = ROOT / "scenarios" / "default.json"
STAGE = "test"
SECRET_PREFIX = secret_prefix(STAGE)


def load_event(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((EVENTS / name).read_text())
    return data


_API_EVENTS = {
    ("GET", r"^/connections/[^/]+$"): "api/get-connection.json",
    ("GET", r"^/connections/[^/]+/sales/[^/]+/verification$"): "api/get-verification.json",
    ("POST", r"^/connections/[^/]+/sales/[^/]+/resync$"): "api/post-resync.json",
    ("POST", r"^/connections/[^/]+/sales/[^/]+/relink$"): "api/post-relink.json",
    ("GET", r"^/connections/[^/]+/sales/[^/]+$"): "api/get-sale.json",
    ("GET", r"^/connections/[^/]+/sale-errors$"): "api/get-sale-errors.json",
}


def api_event(
    method: str,
    path: str,
    *,
    body: str | None = None,
    query: dict[str, str] | None = None,
    headers: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A whole API Gateway REST proxy event: the recorded sample for the route, re-aimed at ``path``."""
    template = next((f for (m, rx), f in _API_EVENTS.items() if re.match(rx, path) and m == method), None)
    template = template or next((f for (_, rx), f in _API_EVENTS.items() if re.match(rx, path)), "api/get-sale.json")
    event = copy.deepcopy(load_event(template))
    parts = path.split("/")
    resource_parts = event["resource"].split("/")
    params = {}
    if len(parts) == len(resource_parts):
        params = {r[1:-1]: p for r, p in zip(resource_parts, parts, strict=True) if r.startswith("{")}
    else:
        event["resource"] = path
    event["path"] = path
    event["httpMethod"] = method
    event["pathParameters"] = params or None
    event["requestContext"].update(
        {"path": f"/dev{path}", "httpMethod": method, "requestId": str(uuid.uuid4()), "resourcePath": event["resource"]}
    )
    event["queryStringParameters"] = query
    event["multiValueQueryStringParameters"] = {k: [v] for k, v in query.items()} if query else None
    event["body"] = body
    if body is not None:
        event["headers"].setdefault("Content-Type", "application/json")
    for key, value in (headers or {}).items():
        event["headers"][key] = value
    event["multiValueHeaders"] = {k: [v] for k, v in event["headers"].items()}
    return event


def lambda_context(function_name: str = "sales-recovery-test-api") -> Any:
    return SimpleNamespace(
        function_name=function_name,
        function_version="$LATEST",
        invoked_function_arn=f"arn:aws:lambda:us-east-1:123456789012:function:{function_name}",
        memory_limit_in_mb=256,
        aws_request_id=str(uuid.uuid4()),
        log_group_name=f"/aws/lambda/{function_name}",
        log_stream_name="2026/11/27/[$LATEST]0123456789abcdef",
        get_remaining_time_in_millis=lambda: 30_000,
    )


def default_scenario() -> Scenario:
    return load_scenario(DEFAULT_SCENARIO)


def is_global_fault(fault: dict[str, Any]) -> bool:
    """A rule every connection meets (the 20 ms latency, case aa's OAuth 429s on any refresh), not one sale's."""
    return fault.get("kind") == "latency" or "oauth" in fault.get("path", "")


def default_scenario_data() -> dict[str, Any]:
    """The shipped default scenario as JSON, without its global rules and quota (tests add faults themselves)."""
    data = json.loads(DEFAULT_SCENARIO.read_text())
    data["faults"] = [f for f in data.get("faults", []) if not is_global_fault(f)]
    data.pop("quota", None)
    return data


@pytest.fixture
def scenario() -> Scenario:
    """The shipped default scenario, without its global rules and quota (tests add faults themselves)."""
    return Scenario.model_validate(default_scenario_data())


@pytest.fixture
def meli(scenario: Scenario) -> Iterator[MeliSimulator]:
    with MeliSimulator(scenario, timeout_hold_seconds=1.0) as sim:
        yield sim


@dataclass
class Aws:
    """The moto account of one test, built from template.yaml."""

    env: dict[str, str]
    topic_arn: str
    inbox_url: str

    def help_desk_messages(self) -> list[dict[str, Any]]:
        sqs = boto3.client("sqs")
        out: list[dict[str, Any]] = []
        while True:
            got = sqs.receive_message(QueueUrl=self.inbox_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            messages = got.get("Messages", [])
            if not messages:
                return out
            for message in messages:
                out.append(json.loads(message["Body"]))
                sqs.delete_message(QueueUrl=self.inbox_url, ReceiptHandle=message["ReceiptHandle"])

    def table(self, logical_env: str) -> Any:
        return boto3.resource("dynamodb").Table(self.env[logical_env])


@pytest.fixture
def aws(meli: MeliSimulator, scenario: Scenario, monkeypatch: pytest.MonkeyPatch) -> Iterator[Aws]:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    with mock_aws():
        account = provision(
            STAGE,
            meli.url,
            scenario,
            MELI_TIMEOUT_SECONDS="0.5",  # under the simulator's 1 s hold, above a loaded CI's jitter
            BULK_MAX_IDS="10000",
            BULK_WORKER_THREADS="8",
        )
        env = account.env
        for key, value in env.items():
            monkeypatch.setenv(key, value)
        build_service.cache_clear()
        build_bulk_service.cache_clear()
        build_job_store.cache_clear()
        yield Aws(env=env, topic_arn=account.topic_arn, inbox_url=account.inbox_url)
        build_service.cache_clear()
        build_bulk_service.cache_clear()
        build_job_store.cache_clear()


def build_service_for_tests() -> Any:
    from shared.settings import Settings

    return build_service(Settings.from_env(), notifier=True, workflow=True)


@pytest.fixture
def call_api(aws: Aws) -> Any:
    """Send one whole API Gateway event through the real API handler; returns (status, json body, headers)."""
    from functions.api.app import lambda_handler

    def call(
        method: str,
        path: str,
        *,
        body: str | None = None,
        query: dict[str, str] | None = None,
        headers: dict[str, str] | None = None,
    ) -> tuple[int, Any, dict[str, str]]:
        response = lambda_handler(api_event(method, path, body=body, query=query, headers=headers), lambda_context())
        payload = json.loads(response["body"]) if response.get("body") else None
        headers_out = dict(response.get("headers") or {})
        headers_out |= {k: ", ".join(v) for k, v in (response.get("multiValueHeaders") or {}).items()}
        return response["statusCode"], payload, headers_out

    return call
