"""The local AWS stack (devstack.aws, devstack.lambdas, devstack.api_server) on a throw-away SAM application.

The application is minimal on purpose (one table, one secret, one topic, one function behind an API route, one state
machine with Retry and Catch), so these tests pin the devstack machinery, not the product.
"""

from __future__ import annotations

import json
import os
import textwrap
import threading
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from devstack.api_server import LocalApiServer, Route, build_proxy_event, template_routes
from devstack.aws import DeployError, LocalAws, instant_retries
from devstack.lambdas import LocalLambdaRuntime, environment_overlay
from tests.devstack.sam_app import write_sam_app

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage:
    Type: String
    Default: dev
  PauseLabel:
    Type: String
    Default: five
Globals:
  Function:
    Runtime: python3.12
    Timeout: 12
    MemorySize: 256
    Environment:
      Variables:
        STAGE: !Ref Stage
        THINGS_TABLE: !Ref ThingsTable
        APP_SECRET_ID: !Ref AppSecret
Resources:
  ThingsTable:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "things-${Stage}"
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: owner_id, AttributeType: S}
        - {AttributeName: thing_id, AttributeType: S}
      KeySchema:
        - {AttributeName: owner_id, KeyType: HASH}
        - {AttributeName: thing_id, KeyType: RANGE}
  AppSecret:
    Type: AWS::SecretsManager::Secret
    Properties:
      Name: !Sub "things/${Stage}/app"
      GenerateSecretString:
        SecretStringTemplate: '{"client_id": "set-me"}'
        GenerateStringKey: client_secret
        PasswordLength: 24
        ExcludePunctuation: true
  AlertsTopic:
    Type: AWS::SNS::Topic
    Properties:
      TopicName: !Sub "things-${Stage}-alerts"
  ThingsApi:
    Type: AWS::Serverless::Api
    Properties:
      StageName: !Ref Stage
      Auth:
        DefaultAuthorizer: AWS_IAM
  WorkerFunction:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub "things-${Stage}-worker"
      CodeUri: functions/worker/
      Handler: app.lambda_handler
      Policies:
        - DynamoDBCrudPolicy: {TableName: !Ref ThingsTable}
      Events:
        GetPart:
          Type: Api
          Properties:
            RestApiId: !Ref ThingsApi
            Path: /things/{thing_id}/parts/{part_id}
            Method: GET
        ListThings:
          Type: Api
          Properties:
            RestApiId: !Ref ThingsApi
            Path: /things
            Method: GET
  Machine:
    Type: AWS::Serverless::StateMachine
    Properties:
      Name: !Sub "things-${Stage}-machine"
      DefinitionUri: statemachine/machine.asl.json
      DefinitionSubstitutions:
        WorkerArn: !GetAtt WorkerFunction.Arn
        AlertsTopicArn: !Ref AlertsTopic
        PauseLabel: !Ref PauseLabel
      Policies:
        - LambdaInvokePolicy: {FunctionName: !Ref WorkerFunction}
Outputs:
  ApiUrl:
    Value: !Sub "https://${ThingsApi}.execute-api.${AWS::Region}.amazonaws.com/${Stage}"
  TableName:
    Value: !Ref ThingsTable
"""

HANDLER = """\
import json
import os
import threading

import boto3

TABLE = boto3.resource("dynamodb").Table(os.environ["THINGS_TABLE"])  # at import, like a real cold start
IMPORTED_WITH_STAGE = os.environ["STAGE"]


class FlakyError(Exception):
    pass


class FatalError(Exception):
    pass


CURRENT = {}  # per-request state at module level, as Powertools' resolver keeps it


def lambda_handler(event, context):
    if event.get("mode") == "sandbox":  # hold the request until its peers arrive: a sandbox serves one at a time
        import sys

        CURRENT["id"] = event["id"]
        sys.modules[event["barrier_module"]].SANDBOX_BARRIER.wait(timeout=10)
        return {"id": event["id"], "current": CURRENT["id"], "module": __name__}
    if "httpMethod" in event:
        body = {
            "event": event,
            "function_name": context.function_name,
            "stage": os.environ["STAGE"],
        }
        return {
            "statusCode": 200,
            "headers": {"Content-Type": "application/json", "X-Single": "one"},
            "multiValueHeaders": {"X-Multi": ["a", "b"]},
            "body": json.dumps(body),
        }
    calls = TABLE.update_item(
        Key={"owner_id": "owner", "thing_id": event["id"]},
        UpdateExpression="ADD calls :one",
        ExpressionAttributeValues={":one": 1},
        ReturnValues="UPDATED_NEW",
    )["Attributes"]["calls"]
    if event.get("mode") == "fatal":
        raise FatalError(f"cannot do {event['id']}")
    if event.get("mode") == "flaky" and calls < 2:
        raise FlakyError(f"try {event['id']} again")
    seen_in_thread = {}
    worker = threading.Thread(target=lambda: seen_in_thread.update(stage=os.environ.get("STAGE")))
    worker.start()
    worker.join()
    return {
        "id": event["id"],
        "calls": int(calls),
        "function_name": context.function_name,
        "function_version": context.function_version,
        "arn": context.invoked_function_arn,
        "memory": context.memory_limit_in_mb,
        "remaining_ms": context.get_remaining_time_in_millis(),
        "request_id": context.aws_request_id,
        "log_group": context.log_group_name,
        "stage": os.environ["STAGE"],
        "imported_with_stage": IMPORTED_WITH_STAGE,
        "thread_stage": seen_in_thread["stage"],
        "lambda_name_env": os.environ["AWS_LAMBDA_FUNCTION_NAME"],
        "secret": json.loads(
            boto3.client("secretsmanager").get_secret_value(SecretId=os.environ["APP_SECRET_ID"])["SecretString"]
        ),
    }
"""

ASL = {
    "Comment": "Work once; retry FlakyError; catch FatalError and alert",
    "StartAt": "Work",
    "States": {
        "Work": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "${WorkerArn}", "Payload.$": "$"},
            "OutputPath": "$.Payload",
            "Retry": [{"ErrorEquals": ["FlakyError"], "IntervalSeconds": 1, "MaxAttempts": 2, "BackoffRate": 1}],
            "Catch": [{"ErrorEquals": ["FatalError"], "ResultPath": "$.error", "Next": "Alert"}],
            "Next": "Label",
        },
        "Label": {"Type": "Pass", "Result": "${PauseLabel}", "ResultPath": "$.label", "Next": "Done"},
        "Done": {"Type": "Succeed"},
        "Alert": {
            "Type": "Task",
            "Resource": "arn:aws:states:::sns:publish",
            "Parameters": {"TopicArn": "${AlertsTopicArn}", "Message.$": "$.error.Error"},
            "Next": "Escalated",
        },
        "Escalated": {"Type": "Fail", "Error": "Escalated", "Cause": "the worker refused"},
    },
}


@pytest.fixture(scope="module")
def app_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("samapp")
    return write_sam_app(root, template=TEMPLATE, function="worker", handler=HANDLER, asl=ASL)


@pytest.fixture(scope="module")
def stack(app_root: Path) -> Iterator[LocalAws]:
    # IAM off (devstack.iam): the harness's WorkerFunction reads APP_SECRET_ID with a role that grants only its table,
    # which AWS would refuse too; these tests pin the devstack machinery, tests/devstack/test_iam_enforcement.py IAM.
    with (
        instant_retries(),
        LocalAws(app_root / "template.yaml", stack_name="things-local", enforce_iam=False) as aws,
    ):
        aws.deploy({"Stage": "local", "PauseLabel": "zero"})
        yield aws


def run_execution(aws: LocalAws, payload: dict[str, Any]) -> dict[str, Any]:
    sfn = aws.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=aws.state_machine_arn("Machine"), name=f"t-{uuid.uuid4().hex[:8]}", input=json.dumps(payload)
    )["executionArn"]
    deadline = time.monotonic() + 15
    while time.monotonic() < deadline:
        described: dict[str, Any] = sfn.describe_execution(executionArn=arn)
        if described["status"] != "RUNNING":
            described["history"] = sfn.get_execution_history(executionArn=arn)["events"]
            return described
        time.sleep(0.05)
    raise AssertionError(f"execution {arn} still running")


# -- deploy -----------------------------------------------------------------------------------------------------------


def test_deploy_failure_names_the_cause(tmp_path: Path) -> None:
    (tmp_path / "template.yaml").write_text(
        textwrap.dedent(
            """\
            Transform: AWS::Serverless-2016-10-31
            Resources:
              Machine:
                Type: AWS::Serverless::StateMachine
                Properties:
                  Definition: {StartAt: Nope, States: {Bad: {Type: Bogus}}}
            """
        )
    )
    with LocalAws(tmp_path / "template.yaml", stack_name="broken") as aws, pytest.raises(DeployError, match="Machine"):
        aws.deploy()


def test_stack_deploys_the_template_resources(stack: LocalAws) -> None:
    assert stack.deploy_seconds < 10
    table = stack.client("dynamodb").describe_table(TableName=stack.physical_id("ThingsTable"))["Table"]
    assert table["TableName"] == "things-local"
    assert table["KeySchema"] == [
        {"AttributeName": "owner_id", "KeyType": "HASH"},
        {"AttributeName": "thing_id", "KeyType": "RANGE"},
    ]
    assert stack.outputs == {"TableName": "things-local"}  # ApiUrl names the API that moto can't build: dropped
    assert stack.state_machine_arn("Machine").endswith(":stateMachine:things-local-machine")
    assert "ThingsApi" not in stack.resources

    env = stack.function_env("WorkerFunction")
    assert env["STAGE"] == "local"
    assert env["THINGS_TABLE"] == "things-local"
    assert env["APP_SECRET_ID"].startswith("arn:aws:secretsmanager:us-east-1:123456789012:secret:things/local/app")
    assert os.environ["MOTO_PORT"] == stack.endpoint_url.rsplit(":", 1)[1]


def test_state_machine_definition_has_substitutions(stack: LocalAws) -> None:
    sfn = stack.client("stepfunctions")
    definition = json.loads(
        sfn.describe_state_machine(stateMachineArn=stack.state_machine_arn("Machine"))["definition"]
    )
    work = definition["States"]["Work"]["Parameters"]["FunctionName"]
    assert work == "arn:aws:lambda:us-east-1:123456789012:function:things-local-worker"
    assert definition["States"]["Alert"]["Parameters"]["TopicArn"] == stack.physical_id("AlertsTopic")
    assert definition["States"]["Label"]["Result"] == "zero"


def test_unknown_parameter_is_refused(app_root: Path) -> None:
    aws = LocalAws(app_root / "template.yaml")
    with pytest.raises(ValueError, match="RelinkWaitSeconds"):
        aws.deploy({"RelinkWaitSeconds": "0"})


# -- Step Functions run the real handler in-process ------------------------------------------------------------------


def test_execution_runs_the_handler_in_process(stack: LocalAws) -> None:
    result = run_execution(stack, {"id": "ok-1"})

    assert result["status"] == "SUCCEEDED", result
    output = json.loads(result["output"])
    assert output["calls"] == 1
    assert output["label"] == "zero"
    assert output["function_name"] == "things-local-worker"
    assert output["function_version"] == "$LATEST"
    assert output["arn"] == "arn:aws:lambda:us-east-1:123456789012:function:things-local-worker"
    assert output["memory"] == 256
    assert 0 < output["remaining_ms"] <= 12_000
    assert output["log_group"] == "/aws/lambda/things-local-worker"
    assert output["stage"] == output["imported_with_stage"] == output["thread_stage"] == "local"
    assert output["lambda_name_env"] == "things-local-worker"
    assert output["secret"]["client_id"] == "set-me"
    assert len(output["secret"]["client_secret"]) == 24
    item = stack.client("dynamodb").get_item(
        TableName="things-local", Key={"owner_id": {"S": "owner"}, "thing_id": {"S": "ok-1"}}
    )["Item"]
    assert item["calls"] == {"N": "1"}
    # the function's environment never leaks into the process
    assert "THINGS_TABLE" not in os.environ
    assert "AWS_LAMBDA_FUNCTION_NAME" not in os.environ


def test_retry_matches_the_python_exception_class(stack: LocalAws) -> None:
    result = run_execution(stack, {"id": "flaky-1", "mode": "flaky"})

    assert result["status"] == "SUCCEEDED", result
    assert json.loads(result["output"])["calls"] == 2
    failures = [e["taskFailedEventDetails"] for e in result["history"] if e["type"] == "TaskFailed"]
    assert [f["error"] for f in failures] == ["FlakyError"]
    cause = json.loads(failures[0]["cause"])
    assert cause["errorType"] == "FlakyError"
    assert cause["errorMessage"] == "try flaky-1 again"
    assert any("raise FlakyError" in frame for frame in cause["stackTrace"])


def test_catch_matches_the_python_exception_class(stack: LocalAws) -> None:
    inbox = stack.help_desk_inbox()

    result = run_execution(stack, {"id": "fatal-1", "mode": "fatal"})

    assert result["status"] == "FAILED"
    assert result["error"] == "Escalated"
    assert inbox.messages() == [{"message": "FatalError"}]


def test_lambda_invoke_api_reports_function_errors(stack: LocalAws) -> None:
    response = stack.client("lambda").invoke(
        FunctionName="things-local-worker", Payload=json.dumps({"id": "fatal-2", "mode": "fatal"})
    )
    assert response["FunctionError"] == "Handled"
    payload = json.loads(response["Payload"].read())
    assert payload["errorType"] == "FatalError"
    assert payload["errorMessage"] == "cannot do fatal-2"


SANDBOX_BARRIER = threading.Barrier(3)


def test_concurrent_invocations_never_share_a_sandbox(stack: LocalAws) -> None:
    """Lambda runs one invocation per execution environment: three at once get three sandboxes, each with its own
    module state (the handler keeps the request's id at module level, then waits for the other two)."""
    results: dict[str, Any] = {}

    def call(n: int) -> None:
        event = {"id": f"sandbox-{n}", "mode": "sandbox", "barrier_module": __name__}
        results[event["id"]] = stack.runtime.invoke("WorkerFunction", event)

    threads = [threading.Thread(target=call, args=(n,)) for n in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=20)
    assert {r["id"]: r["current"] for r in results.values()} == {f"sandbox-{n}": f"sandbox-{n}" for n in range(3)}
    assert len({r["module"] for r in results.values()}) == 3
    assert stack.runtime.sandbox_count("WorkerFunction") >= 3
    # Idle sandboxes are reused: one more invocation initialises nothing new.
    before = stack.runtime.sandbox_count("WorkerFunction")
    stack.runtime.invoke("WorkerFunction", {"id": "sandbox-again"})
    assert stack.runtime.sandbox_count("WorkerFunction") == before


def test_direct_invoke_uses_the_deployed_environment(stack: LocalAws) -> None:
    output = stack.runtime.invoke("WorkerFunction", {"id": "direct-1"})
    assert output["function_name"] == "things-local-worker"
    assert output["stage"] == "local"

    class_name = stack.runtime.handler("WorkerFunction").__module__
    assert class_name == "functions_worker_app"
    with pytest.raises(Exception, match="cannot do direct-2") as raised:
        stack.runtime.invoke("things-local-worker", {"id": "direct-2", "mode": "fatal"})
    assert type(raised.value).__name__ == "FatalError"


# -- the API server ----------------------------------------------------------------------------------------------------


def test_api_server_sends_a_proxy_event_and_returns_the_response(stack: LocalAws) -> None:
    with LocalApiServer(stack, port=0) as api:
        response = httpx.get(
            f"{api.url}/things/t%201/parts/p-9?expand=a&expand=b&flag=",
            headers={"X-Trace": "abc", "User-Agent": "pytest"},
        )

    assert response.status_code == 200
    assert response.headers["x-single"] == "one"
    assert response.headers.get_list("x-multi") == ["a", "b"]
    assert response.headers["x-amzn-requestid"]
    body = response.json()
    assert body["function_name"] == "things-local-worker"
    assert body["stage"] == "local"
    event = body["event"]
    assert event["resource"] == "/things/{thing_id}/parts/{part_id}"
    assert event["path"] == "/things/t 1/parts/p-9"
    assert event["httpMethod"] == "GET"
    assert event["pathParameters"] == {"thing_id": "t 1", "part_id": "p-9"}
    assert event["queryStringParameters"] == {"expand": "b", "flag": ""}
    assert event["multiValueQueryStringParameters"] == {"expand": ["a", "b"], "flag": [""]}
    assert event["headers"]["X-Trace"] == "abc"
    assert event["multiValueHeaders"]["X-Trace"] == ["abc"]
    assert event["stageVariables"] is None
    assert event["body"] is None
    assert event["isBase64Encoded"] is False
    context = event["requestContext"]
    assert context["resourcePath"] == "/things/{thing_id}/parts/{part_id}"
    assert context["stage"] == "local"
    assert context["path"] == "/things/t 1/parts/p-9"  # served at the root, no /<stage> prefix (like sam local)
    assert context["accountId"] == "123456789012"
    assert context["protocol"] == "HTTP/1.1"
    assert context["identity"]["sourceIp"] == "127.0.0.1"
    assert context["identity"]["userAgent"] == "pytest"
    assert context["domainName"] == api.url.removeprefix("http://")
    assert isinstance(context["requestTimeEpoch"], int)
    uuid.UUID(context["requestId"])


def test_api_server_hands_unknown_paths_to_the_function(stack: LocalAws) -> None:
    with LocalApiServer(stack, port=0) as api:
        response = httpx.post(f"{api.url}/nowhere/here", json={"a": 1})

    event = response.json()["event"]
    assert event["resource"] == "/nowhere/here"
    assert event["pathParameters"] is None
    assert json.loads(event["body"]) == {"a": 1}


# -- pure helpers ------------------------------------------------------------------------------------------------------


def test_build_proxy_event_matches_routes_and_encodes_bodies(app_root: Path) -> None:
    routes = template_routes(app_root / "template.yaml", {"Stage": "qa"})
    assert routes[0] == Route("GET", "/things/{thing_id}/parts/{part_id}", "WorkerFunction", "qa")

    event = build_proxy_event("get", "/things/x/parts/y?q=1", routes=routes, headers={"Accept": "application/json"})
    assert event["resource"] == "/things/{thing_id}/parts/{part_id}"
    assert event["pathParameters"] == {"thing_id": "x", "part_id": "y"}
    assert event["queryStringParameters"] == {"q": "1"}
    assert event["requestContext"]["stage"] == "qa"

    posted = build_proxy_event("POST", "/things", body={"ids": [1]}, routes=routes, resource="/things")
    assert posted["headers"]["Content-Type"] == "application/json"
    assert json.loads(posted["body"]) == {"ids": [1]}
    assert posted["pathParameters"] is None

    binary = build_proxy_event("POST", "/things", body=b"\xff\x00", routes=routes)
    assert binary["isBase64Encoded"] is True


def test_environment_overlay_is_per_thread() -> None:
    runtime = LocalLambdaRuntime({"Resources": {}})
    seen: dict[str, str | None] = {}
    with runtime:  # installs the overlay-aware os.environ
        inside = threading.Event()
        release = threading.Event()

        def invocation() -> None:
            with environment_overlay({"ONLY_IN_THREAD": "1"}):
                seen["thread"] = os.environ.get("ONLY_IN_THREAD")
                inside.set()
                release.wait(5)

        worker = threading.Thread(target=invocation)
        worker.start()
        inside.wait(5)
        seen["main"] = os.environ.get("ONLY_IN_THREAD")
        release.set()
        worker.join()
    assert seen == {"thread": "1", "main": None}
