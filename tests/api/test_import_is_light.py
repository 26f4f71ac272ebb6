"""What a cold start imports: each handler module, imported alone in a fresh interpreter as Lambda does, leaves out
what only some requests need (README, cold start). Structural, not timed: the timings are benchmarks/cold_start.py's.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from tests.conftest import ROOT

SRC = ROOT / "src"
FUNCTIONS = sorted(p.name for p in (SRC / "functions").iterdir() if (p / "app.py").exists())
# boto3 and its DynamoDB helpers: imported by the first AWS call, not by the import (every function).
EVERY_FUNCTION = ("boto3",)
# The API: the OpenAPI models and Swagger UI (/docs and /openapi.json), Powertools' idempotency (a keyed job
# submission), the bulk service (the job routes).
API_ONLY = (
    "aws_lambda_powertools.event_handler.openapi.models",
    "aws_lambda_powertools.event_handler.openapi.swagger_ui",
    "aws_lambda_powertools.utilities.idempotency",
    "shared.bulk",
)


def imported_by(function: str, modules: tuple[str, ...]) -> list[str]:
    code = f"import sys, json; import app; print(json.dumps([m for m in {list(modules)!r} if m in sys.modules]))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC / "functions" / function), str(SRC)])}
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, check=True).stdout
    found: list[str] = json.loads(out.splitlines()[-1])
    return found


@pytest.mark.parametrize("function", FUNCTIONS)
def test_importing_a_handler_does_not_import_boto3(function: str) -> None:
    assert imported_by(function, EVERY_FUNCTION) == []


def test_importing_the_api_leaves_out_what_only_some_routes_need() -> None:
    assert imported_by("api", API_ONLY) == []
