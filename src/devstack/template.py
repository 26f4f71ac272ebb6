"""Reads template.yaml, the one source of truth for tables, functions and the state machine.

Tests that use moto's ``mock_aws`` create their tables from here; the local stack deploys the whole template.
"""

from __future__ import annotations

from functools import lru_cache
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[2]
TEMPLATE_PATH = ROOT / "template.yaml"


@lru_cache(maxsize=1)
def load_template(path: Path = TEMPLATE_PATH) -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse  # understands !Ref, !Sub, !GetAtt

    parsed: dict[str, Any] = yaml_parse(path.read_text())
    return parsed


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {name: res for name, res in load_template()["Resources"].items() if res["Type"] == kind}


def _substitute(value: Any, stage: str) -> str:
    """Resolve the only intrinsic table names use: !Sub "sales-recovery-${Stage}-x"."""
    if isinstance(value, dict) and "Fn::Sub" in value:
        return str(value["Fn::Sub"]).replace("${Stage}", stage)
    return str(value)


def table_definitions(stage: str = "test") -> dict[str, dict[str, Any]]:
    """``create_table`` keyword arguments for every DynamoDB table, by logical id."""
    tables = {}
    for logical_id, res in resources("AWS::DynamoDB::Table").items():
        props = res["Properties"]
        kwargs: dict[str, Any] = {
            "TableName": _substitute(props["TableName"], stage),
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": props.get("BillingMode", "PAY_PER_REQUEST"),
        }
        if "GlobalSecondaryIndexes" in props:
            kwargs["GlobalSecondaryIndexes"] = props["GlobalSecondaryIndexes"]
        tables[logical_id] = kwargs
    return tables


# The environment variable each function reads for each table (template.yaml Globals.Function.Environment).
def table_env(stage: str = "test") -> dict[str, str]:
    env_vars = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    names = {logical: kw["TableName"] for logical, kw in table_definitions(stage).items()}
    out = {}
    for var, value in env_vars.items():
        if isinstance(value, dict) and value.get("Ref") in names:
            out[var] = names[value["Ref"]]
    return out


def create_tables(dynamodb_client: Any, stage: str = "test") -> dict[str, str]:
    """Create every table of the template; returns logical id -> table name."""
    created = {}
    for logical_id, kwargs in table_definitions(stage).items():
        dynamodb_client.create_table(**kwargs)
        created[logical_id] = kwargs["TableName"]
    return created


def parameter_default(name: str) -> str:
    """A template parameter's default, as text (what CloudFormation passes when none is given)."""
    return str(load_template()["Parameters"][name]["Default"])


def queue_attributes(logical_id: str, dead_letter_arn: str | None = None) -> dict[str, str]:
    """``create_queue`` attributes of a template queue: its visibility timeout and, given the dead-letter queue's ARN,
    its redrive policy with the template's ``maxReceiveCount``."""
    import json

    props = resources("AWS::SQS::Queue")[logical_id]["Properties"]
    attributes = {"VisibilityTimeout": str(props.get("VisibilityTimeout", 30))}
    redrive = props.get("RedrivePolicy")
    if redrive and dead_letter_arn:
        policy = {"deadLetterTargetArn": dead_letter_arn, "maxReceiveCount": str(redrive["maxReceiveCount"])}
        attributes["RedrivePolicy"] = json.dumps(policy)
    return attributes
