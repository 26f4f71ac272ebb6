"""Security by default, checked on the template as CloudFormation will receive it: SAM's translation, done offline.

Least privilege (no wildcard grants; every function statement names this stack's resources), IAM auth on every API
method, encryption with the stack's key everywhere data rests, reserved concurrency on every function, and the alarms.
"""

from __future__ import annotations

import copy
import json
import os
import re
from collections.abc import Iterator
from datetime import UTC, datetime
from functools import lru_cache
from typing import Any

import pytest

from devstack.template import ROOT, load_template

# Managed policies a role may carry. Each has statements with Resource "*" because AWS requires it there
# (X-Ray segments and CloudWatch Logs streams of a function's own log group are not known in advance) or because SAM
# attaches it for an event source and offers no scoped alternative.
ALLOWED_MANAGED_POLICIES = {
    "AWSLambdaBasicExecutionRole": "logs:CreateLogGroup/CreateLogStream/PutLogEvents for the function's own logs",
    "AWSXrayWriteOnlyAccess": "xray:PutTraceSegments/PutTelemetryRecords/GetSampling*: X-Ray has no resource ARNs",
    "AWSLambdaSQSQueueExecutionRole": "attached by SAM to the SQS-driven bulk worker only",
}
SQS_MANAGED_POLICY_HOLDERS = {"BulkWorkerFunctionRole", "NotificationsFunctionRole"}
# Actions AWS accepts only with Resource "*"; none is granted inline today, and none may be without being listed here.
ACTIONS_REQUIRING_STAR = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}


class _NoManagedPolicyLoader:
    def load(self) -> dict[str, str]:
        return {}


@lru_cache(maxsize=1)
def translated() -> dict[str, Any]:
    """template.yaml through aws-sam-translator, offline: local code paths become S3 URIs, the ASL is inlined."""
    from samtranslator.translator.transform import transform

    os.environ.setdefault("AWS_DEFAULT_REGION", "us-east-1")
    sam = copy.deepcopy(load_template())
    for logical_id, res in sam["Resources"].items():
        props = res.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = f"s3://artifacts/{logical_id}.zip"
        if isinstance(props.get("DefinitionUri"), str) and res["Type"] == "AWS::Serverless::StateMachine":
            props["Definition"] = json.loads((ROOT / props.pop("DefinitionUri")).read_text())
    cfn: dict[str, Any] = transform(sam, {}, _NoManagedPolicyLoader())
    return cfn


def resources(kind: str) -> dict[str, dict[str, Any]]:
    return {k: r for k, r in translated()["Resources"].items() if r["Type"] == kind}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def policy_statements() -> Iterator[tuple[str, dict[str, Any]]]:
    """(owner, statement) for every identity policy of the translated template: role inline policies,
    AWS::IAM::Policy and AWS::IAM::ManagedPolicy."""
    for logical_id, res in resources("AWS::IAM::Role").items():
        for policy in res["Properties"].get("Policies", []):
            for statement in as_list(policy["PolicyDocument"]["Statement"]):
                yield f"{logical_id}/{policy['PolicyName']}", statement
    for kind in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
        for logical_id, res in resources(kind).items():
            for statement in as_list(res["Properties"]["PolicyDocument"]["Statement"]):
                yield logical_id, statement


def function_roles() -> dict[str, str]:
    """Lambda function logical id -> its role's logical id."""
    out = {}
    for logical_id, res in resources("AWS::Lambda::Function").items():
        role = res["Properties"]["Role"]
        assert isinstance(role, dict) and "Fn::GetAtt" in role, f"{logical_id}: role not created by the stack"
        out[logical_id] = role["Fn::GetAtt"][0]
    return out


def references(node: Any) -> set[str]:
    """Logical ids and parameters a fragment refers to (Ref, GetAtt, ${X} and ${X.Attr} in Sub)."""
    found: set[str] = set()
    if isinstance(node, dict):
        if isinstance(node.get("Ref"), str):
            found.add(node["Ref"])
        if isinstance(node.get("Fn::GetAtt"), list):
            found.add(str(node["Fn::GetAtt"][0]))
        sub = node.get("Fn::Sub")
        text = sub[0] if isinstance(sub, list) else sub
        if isinstance(text, str):
            found |= {m.split(".", 1)[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", text)}
        for value in node.values():
            found |= references(value)
    elif isinstance(node, list):
        for value in node:
            found |= references(value)
    return found


# --- least privilege -----------------------------------------------------------------------------------------------


def test_the_translation_has_the_roles_to_check() -> None:
    statements = list(policy_statements())
    assert len(statements) > 40
    assert set(function_roles()) >= {
        "ApiFunction",
        "BulkWorkerFunction",
        "VerifyFunction",
        "ResyncFunction",
        "RelinkFunction",
        "EscalateFunction",
    }


def test_no_statement_grants_every_action_or_a_whole_service_on_every_resource() -> None:
    for owner, statement in policy_statements():
        if statement.get("Effect") != "Allow":
            continue
        actions = as_list(statement.get("Action", []))
        assert "NotAction" not in statement and "NotResource" not in statement, owner
        assert "*" not in actions, f"{owner}: Action '*'"
        if "*" in as_list(statement.get("Resource")):
            whole = [a for a in actions if a.endswith(":*")]
            assert not whole, f"{owner}: {whole} on Resource '*'"


def test_every_function_statement_names_this_stacks_resources() -> None:
    logical_ids = set(translated()["Resources"])
    roles = set(function_roles().values())
    checked = 0
    for owner, statement in policy_statements():
        role = owner.split("/", 1)[0]
        if role not in roles:
            continue
        for resource in as_list(statement["Resource"]):
            checked += 1
            if resource == "*":
                extra = set(as_list(statement["Action"])) - ACTIONS_REQUIRING_STAR
                assert not extra, f"{owner}: {sorted(extra)} on Resource '*'"
                continue
            named = references(resource) & logical_ids
            # The per-connection token secrets are created at onboarding: scoped by the stage's name prefix.
            stage_prefix = "secret:sales-recovery/${Stage}/connections/*" in json.dumps(resource)
            assert named or stage_prefix, f"{owner}: {resource} names no resource of the stack"
    assert checked > 40


def test_managed_policies_are_only_the_allowed_ones() -> None:
    for logical_id, res in resources("AWS::IAM::Role").items():
        for arn in res["Properties"].get("ManagedPolicyArns", []):
            name = json.dumps(arn).rsplit("/", 1)[-1].strip('"}')
            assert name in ALLOWED_MANAGED_POLICIES, f"{logical_id}: managed policy {name} is not allowed"
            if name == "AWSLambdaSQSQueueExecutionRole":
                assert logical_id in SQS_MANAGED_POLICY_HOLDERS, logical_id


def test_kms_usage_is_limited_to_the_stack_key_and_its_services() -> None:
    for owner, statement in policy_statements():
        kms_actions = [a for a in as_list(statement.get("Action", [])) if a.startswith("kms:")]
        if not kms_actions:
            continue
        assert as_list(statement["Resource"]) == [{"Fn::GetAtt": ["DataKey", "Arn"]}], owner
        via = statement["Condition"]["StringEquals"]["kms:ViaService"]
        assert via and all("${AWS::Region}.amazonaws.com" in json.dumps(v) for v in via), owner


def test_the_key_rotates_and_its_policy_has_no_wildcards() -> None:
    key = resources("AWS::KMS::Key")
    assert list(key) == ["DataKey"]
    props = key["DataKey"]["Properties"]
    assert props["EnableKeyRotation"] is True
    for statement in props["KeyPolicy"]["Statement"]:
        assert statement["Principal"] != "*" and statement["Principal"].get("AWS") != "*", statement["Sid"]
        assert "kms:*" not in as_list(statement["Action"]) and "*" not in as_list(statement["Action"]), statement["Sid"]
    use = next(s for s in props["KeyPolicy"]["Statement"] if "kms:Decrypt" in s["Action"] and "AWS" in s["Principal"])
    assert use["Condition"]["StringEquals"]["kms:ViaService"], "account principals must use the key via services"


# --- API: IAM auth on every method ---------------------------------------------------------------------------------


def resources_of_the_stack() -> dict[str, Any]:
    return dict(translated()["Resources"])


CALLBACK = ("/notifications/mercadolibre", "POST")  # ML's notifications: ML cannot sign requests


def test_every_api_method_requires_aws_iam_but_the_notification_callback() -> None:
    from functions.api.app import ROUTES

    (api,) = resources("AWS::ApiGateway::RestApi").values()
    body = api["Properties"]["Body"]
    schemes = body["components"]["securitySchemes"]  # OpenAPI 3 (Globals.Api.OpenApiVersion)
    assert schemes["AWS_IAM"]["x-amazon-apigateway-authtype"] == "awsSigv4"
    methods = {(path, m.upper()): op for path, ops in body["paths"].items() for m, op in ops.items()}
    # Nothing exposed that a handler lacks: the API function's routes, and the callback.
    assert {(p, m) for p, ms in ROUTES.items() for m in ms} | {CALLBACK} == set(methods)
    for (path, method), operation in methods.items():
        expected: list[dict[str, list[str]]] = [{"NONE": []}] if (path, method) == CALLBACK else [{"AWS_IAM": []}]
        assert operation.get("security") == expected, f"{method} {path}"
    callback = methods[CALLBACK]["x-amazon-apigateway-integration"]["uri"]
    # Its own function (its published version's alias: SnapStart), with its own small role.
    assert references(callback) - {"AWS::Region"} == {"NotificationsIntakeFunctionAliaslive"}
    assert not resources("AWS::ApiGateway::Method")  # none outside the OpenAPI body, which is checked above


def test_the_notification_callback_is_throttled_and_limited_to_the_configured_sources() -> None:
    (api,) = resources("AWS::ApiGateway::RestApi").values()
    policy = api["Properties"]["Body"]["x-amazon-apigateway-policy"]
    statements = {s["Effect"]: s for s in policy["Statement"]}
    assert set(statements) == {"Allow", "Deny"}
    for statement in statements.values():  # about the callback only: every other route stays AWS_IAM alone
        assert statement["Resource"] == "execute-api:/*/POST/notifications/mercadolibre"
    # SAM resolves the parameter (here to its default) and CloudFormation splits the list.
    default = translated()["Parameters"]["NotificationSourceIps"]["Default"]
    assert statements["Deny"]["Condition"]["NotIpAddress"]["aws:SourceIp"] in (
        {"Fn::Split": [",", {"Ref": "NotificationSourceIps"}]},
        {"Fn::Split": [",", default]},
    )
    (stage,) = resources("AWS::ApiGateway::Stage").values()
    (setting,) = stage["Properties"]["MethodSettings"]
    assert setting["ResourcePath"] == "/~1notifications~1mercadolibre" and setting["HttpMethod"] == "POST"
    assert setting["ThrottlingRateLimit"] == {"Ref": "NotificationsThrottleRate"}
    assert setting["ThrottlingBurstLimit"] == {"Ref": "NotificationsThrottleBurst"}


def test_the_notification_callbacks_role_may_only_find_sellers_and_queue() -> None:
    granted = [
        (action, resource)
        for owner, statement in policy_statements()
        if owner.startswith("NotificationsIntakeFunctionRole")
        for action in as_list(statement["Action"])
        for resource in as_list(statement["Resource"])
        if not action.startswith(("kms:", "logs:", "xray:"))
    ]
    actions = {action for action, _ in granted}
    assert actions <= {"dynamodb:Query", "sqs:SendMessage*"}, actions  # SAM's SQSSendMessagePolicy
    for action, resource in granted:
        named = references(resource) & set(resources_of_the_stack())
        assert named == ({"ConnectionsTable"} if action == "dynamodb:Query" else {"NotificationsQueue"}), action
    query = next(r for a, r in granted if a == "dynamodb:Query")
    assert json.dumps(query).endswith('/index/SellerIndex"}')  # the index only, never the table's items


def test_api_access_logs_go_to_an_encrypted_log_group() -> None:
    (stage,) = resources("AWS::ApiGateway::Stage").values()
    setting = stage["Properties"]["AccessLogSetting"]
    assert setting["DestinationArn"] == {"Fn::GetAtt": ["ApiAccessLogGroup", "Arn"]}
    assert "$context.identity.userArn" in setting["Format"]  # who called, as IAM knows them
    assert stage["Properties"]["TracingEnabled"] is True


# --- encryption at rest, recovery, concurrency -------------------------------------------------------------------

KEY_REF = {"Ref": "DataKey"}


def test_every_table_is_encrypted_with_the_stack_key_and_has_pitr() -> None:
    tables = resources("AWS::DynamoDB::Table")
    assert len(tables) >= 7
    for logical_id, res in tables.items():
        props = res["Properties"]
        sse = {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": KEY_REF}
        assert props["SSESpecification"] == sse, logical_id
        assert props["PointInTimeRecoverySpecification"] == {"PointInTimeRecoveryEnabled": True}, logical_id


@pytest.mark.parametrize(
    ("kind", "key"),
    [
        ("AWS::SQS::Queue", "KmsMasterKeyId"),
        ("AWS::SNS::Topic", "KmsMasterKeyId"),
        ("AWS::SecretsManager::Secret", "KmsKeyId"),
        ("AWS::Logs::LogGroup", "KmsKeyId"),
    ],
)
def test_every_queue_topic_secret_and_log_group_is_encrypted_with_the_stack_key(kind: str, key: str) -> None:
    found = resources(kind)
    assert found, kind
    for logical_id, res in found.items():
        assert references(res["Properties"].get(key)) == {"DataKey"}, f"{logical_id}: {key}"


def test_every_function_has_reserved_concurrency() -> None:
    parameters = translated()["Parameters"]
    for logical_id, res in resources("AWS::Lambda::Function").items():
        reserved = res["Properties"].get("ReservedConcurrentExecutions")
        if isinstance(reserved, dict):  # a parameter: its floor must keep the function on (0 would switch it off)
            assert reserved.get("Ref") in parameters and parameters[reserved["Ref"]]["MinValue"] >= 1, logical_id
        else:
            assert isinstance(reserved, int) and reserved >= 1, logical_id


def test_the_bulk_worker_reserves_what_its_queue_may_drive() -> None:
    worker = resources("AWS::Lambda::Function")["BulkWorkerFunction"]["Properties"]
    (mapping,) = (
        m
        for m in resources("AWS::Lambda::EventSourceMapping").values()
        if references(m["Properties"]["FunctionName"]) == {"BulkWorkerFunction"}
    )
    assert mapping["Properties"]["ScalingConfig"]["MaximumConcurrency"] == worker["ReservedConcurrentExecutions"]


# --- alarms ----------------------------------------------------------------------------------------------------------


def alarms() -> dict[str, dict[str, Any]]:
    return {k: r["Properties"] for k, r in resources("AWS::CloudWatch::Alarm").items()}


def test_the_alarms_watch_the_dlq_escalations_worker_errors_and_failed_executions() -> None:
    def subject(alarm: dict[str, Any]) -> str:
        (dimension,) = alarm["Dimensions"]
        value = dimension["Value"]
        return value if isinstance(value, str) else references(value).pop()

    watched = {(a["Namespace"], a["MetricName"], subject(a)) for a in alarms().values()}
    assert watched == {
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "BulkDeadLetterQueue"),
        ("AWS/SQS", "ApproximateNumberOfMessagesVisible", "NotificationsDeadLetterQueue"),
        ("SalesRecovery", "SalesEscalated", "sales-recovery"),
        ("AWS/Lambda", "Errors", "BulkWorkerFunction"),
        ("AWS/States", "ExecutionsFailed", "RelinkStateMachine"),
    }
    for logical_id, alarm in alarms().items():
        assert alarm["AlarmActions"] == [{"Ref": "OpsTopic"}], logical_id
        assert alarm["TreatMissingData"] == "notBreaching", logical_id


def test_the_escalations_alarm_matches_what_a_page_emits(
    monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    """The alarm's namespace and dimensions must be exactly those of the EMF line a help-desk page writes."""
    from shared.escalation import EscalationMessage, SnsHelpDeskNotifier
    from shared.models import Reason
    from shared.observability import metrics

    env = load_template()["Globals"]["Function"]["Environment"]["Variables"]
    monkeypatch.setattr(metrics, "namespace", env["POWERTOOLS_METRICS_NAMESPACE"])
    monkeypatch.setattr(metrics, "service", env["POWERTOOLS_SERVICE_NAME"])
    monkeypatch.setenv("POWERTOOLS_SERVICE_NAME", env["POWERTOOLS_SERVICE_NAME"])

    class Sns:
        def publish(self, **_: Any) -> dict[str, str]:
            return {"MessageId": "m-1"}

    message = EscalationMessage(
        connection_id="mla-main",
        sale_id="2000009101000011",
        reason=Reason.RETRIES_EXHAUSTED,
        summary="Three relink attempts failed.",
        attempts=3,
        error_type="marketplace_unavailable",
        last_error="503",
        first_seen=datetime.now(UTC),
        episode=1,
        history=[],
    )
    capsys.readouterr()
    SnsHelpDeskNotifier(Sns(), "arn:aws:sns:us-east-1:123456789012:help-desk").publish(message)
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if '"_aws"' in line]
    (emf,) = [line for line in lines if "SalesEscalated" in line]
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    alarm = alarms()["EscalationsAlarm"]
    assert alarm["Namespace"] == directive["Namespace"]
    assert directive["Dimensions"] == [[d["Name"] for d in alarm["Dimensions"]]]
    assert all(emf[d["Name"]] == d["Value"] for d in alarm["Dimensions"])
