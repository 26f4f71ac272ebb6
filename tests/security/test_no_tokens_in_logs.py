"""No access token, refresh token or application secret in anything the service logs, at DEBUG.

A realistic flow through the real API handler: a verification whose access token has expired (so the token manager
refreshes it and stores the new pair), a resync, a relink after a second expiry, the sale state, the error list, a bulk
job and a Mercado Libre outage answered 503. Every app logger runs at DEBUG. botocore stays at INFO: at DEBUG it logs
whole Secrets Manager responses, tokens included, which is why production must never run botocore at DEBUG (README,
Security).
"""

from __future__ import annotations

import io
import json
import logging
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from devstack.simulator.server import MeliSimulator
from tests.conftest import SECRET_PREFIX, STAGE, Aws

C = "mla-main"
REFLECTABLE, CANCELLED = "2000009101000011", "2000009103000012"
LISTED_TIMEOUT, ALWAYS_503 = "2000009109000015", "2000009112000016"


@pytest.fixture
def powertools_output() -> Iterator[io.StringIO]:
    """What the Powertools logger prints (JSON lines on stdout in Lambda), at DEBUG."""
    from shared.observability import logger

    buffer = io.StringIO()
    handlers = [h for h in [logger.registered_handler] if isinstance(h, logging.StreamHandler)]
    saved_streams = [h.setStream(buffer) for h in handlers]
    saved_level = logger.log_level
    logger.setLevel(logging.DEBUG)
    yield buffer
    logger.setLevel(saved_level)
    for handler, stream in zip(handlers, saved_streams, strict=True):
        handler.setStream(stream)


def test_a_refresh_resync_relink_and_outage_log_no_token_or_secret(
    call_api: Any,
    aws: Aws,
    meli: MeliSimulator,
    caplog: pytest.LogCaptureFixture,
    capsys: pytest.CaptureFixture[str],
    powertools_output: io.StringIO,
) -> None:
    caplog.set_level(logging.INFO, logger="botocore")  # first: each call also sets the capturing handler's level
    caplog.set_level(logging.DEBUG)
    spent = list(meli.tokens(C))
    meli.expire_token(C)

    status, report, _ = call_api("GET", f"/connections/{C}/sales/{REFLECTABLE}/verification")
    assert status == 200 and report["next_action"] == "relink"
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{LISTED_TIMEOUT}/resync")
    assert status == 200 and body["outcome"] == "reflected"
    status, body, _ = call_api("POST", f"/connections/{C}/sales/{REFLECTABLE}/relink")
    assert status == 202, body
    spent += meli.tokens(C)
    meli.expire_token(C)
    status, report, _ = call_api("GET", f"/connections/{C}/sales/{CANCELLED}/verification")
    assert status == 200 and report["reason"] == "sale_cancelled"
    assert call_api("GET", f"/connections/{C}/sales/{REFLECTABLE}")[0] == 200
    assert call_api("GET", f"/connections/{C}/sale-errors")[0] == 200
    body_text = json.dumps({"sale_ids": [REFLECTABLE, "MEL44031010011FMXDF01"]})
    assert call_api("POST", f"/connections/{C}/reprocessing-jobs", body=body_text)[0] == 202
    assert call_api("GET", f"/connections/{C}/sales/{ALWAYS_503}/verification")[0] == 503

    assert meli.count(method="POST", path_regex="^/oauth/token$") == 2  # two refreshes really happened
    secrets = boto3.client("secretsmanager")
    stored = json.loads(secrets.get_secret_value(SecretId=f"{SECRET_PREFIX}{C}")["SecretString"])
    app = json.loads(secrets.get_secret_value(SecretId=f"sales-recovery/{STAGE}/meli-app")["SecretString"])
    forbidden = {*spent, *meli.tokens(C), stored["access_token"], stored["refresh_token"], app["client_secret"]}
    assert len(forbidden) == 7  # initial pair, pair after the first refresh, pair after the second, app secret

    captured = capsys.readouterr()
    haystack = "\n".join(
        [
            caplog.text,
            *(f"{r.getMessage()} {r.__dict__}" for r in caplog.records),
            captured.out,
            captured.err,
            powertools_output.getvalue(),
        ]
    )
    # The logs were there to scan: the app's JSON lines, and DEBUG records of the libraries (httpx, httpcore).
    assert any(json.loads(line)["message"] == "meli request" for line in powertools_output.getvalue().splitlines())
    assert any(r.levelno == logging.DEBUG for r in caplog.records)
    for secret in forbidden:
        assert secret not in haystack
