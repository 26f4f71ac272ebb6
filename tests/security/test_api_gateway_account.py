"""Issue 12, cases 8 and 10: the API's stages and API Gateway's account-level logging role.

- ``AWS::ApiGateway::Account`` is one setting per account and region: in the application stack a dev and a prod stack
  overwrote each other's, and deleting either left the setting on a deleted role. It is the one-time stack
  ``account/api-gateway-logging.yaml`` now, linted and scanned with the application's template.
- Without ``OpenApiVersion`` SAM's Deployment also created a stage named ``Stage``, with no access logs or tracing.

Checked on the template as CloudFormation receives it: SAM's translation, done offline (as the local stack does).
"""

from __future__ import annotations

import json
import re
from typing import Any

from devstack.template import ROOT
from tests.security.test_template_policies import resources, translated

ACCOUNT_TEMPLATE = ROOT / "account" / "api-gateway-logging.yaml"
PUSH_LOGS_POLICY = "AmazonAPIGatewayPushToCloudWatchLogs"


def _account_stack() -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse  # understands !Ref, !Sub, !GetAtt

    parsed: dict[str, Any] = yaml_parse(ACCOUNT_TEMPLATE.read_text())
    return parsed


def test_sam_deploys_no_stage_but_ours() -> None:
    deployments = resources("AWS::ApiGateway::Deployment")
    assert deployments
    for logical_id, deployment in deployments.items():
        assert "StageName" not in deployment["Properties"], f"{logical_id} would create a stage of its own"
    (stage,) = resources("AWS::ApiGateway::Stage").values()
    assert stage["Properties"]["StageName"] == {"Ref": "Stage"}
    assert stage["Properties"]["AccessLogSetting"] and stage["Properties"]["TracingEnabled"] is True


def test_the_application_stack_leaves_the_account_setting_to_its_own_stack() -> None:
    assert not resources("AWS::ApiGateway::Account")
    assert PUSH_LOGS_POLICY not in json.dumps(translated())  # nor the role the setting points to
    assert ACCOUNT_TEMPLATE.name in (ROOT / "README.md").read_text()  # the one-time step is written down


def test_the_account_stack_sets_api_gateways_cloudwatch_role_and_keeps_it() -> None:
    stack = _account_stack()
    by_type = {res["Type"]: (logical_id, res) for logical_id, res in stack["Resources"].items()}
    assert sorted(by_type) == ["AWS::ApiGateway::Account", "AWS::IAM::Role"]
    role_id, role = by_type["AWS::IAM::Role"]
    _, account = by_type["AWS::ApiGateway::Account"]
    assert account["Properties"]["CloudWatchRoleArn"] == {"Fn::GetAtt": [role_id, "Arn"]}
    (statement,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
    assert statement["Principal"] == {"Service": "apigateway.amazonaws.com"}
    (managed,) = role["Properties"]["ManagedPolicyArns"]
    assert json.dumps(managed).endswith(f'service-role/{PUSH_LOGS_POLICY}"}}')
    assert "Policies" not in role["Properties"]  # AWS's managed policy only
    # Deleting or replacing the stack must not leave the region's setting on a deleted role.
    assert role["DeletionPolicy"] == "Retain" and role["UpdateReplacePolicy"] == "Retain"
    assert stack["Outputs"]["CloudWatchRoleArn"]["Value"] == {"Fn::GetAtt": [role_id, "Arn"]}


def test_make_lints_and_scans_both_templates() -> None:
    makefile = (ROOT / "Makefile").read_text()
    templates = re.search(r"^TEMPLATES := (.+)$", makefile, re.MULTILINE)
    assert templates and set(templates.group(1).split()) == {"template.yaml", "account/api-gateway-logging.yaml"}
    assert "cfn-lint $(TEMPLATES)" in makefile
    assert "$(addprefix -f ,$(TEMPLATES))" in makefile  # checkov
