"""A function's ``Timeout`` on the local stack, and the SQS poller's ``BatchSize`` / ``MaximumConcurrency``.

A throw-away SAM application (one table, one queue with its DLQ, one function with a 1-second timeout that is both an
SQS event source's target and a state machine task) pins the devstack machinery: an invocation that overruns fails as
Lambda fails it for each kind of invoker (a direct invoke, the ``Invoke`` API, a Step Functions task, an SQS batch),
the overrunning handler can write nothing more, a parked invocation (``held()``) is not timed out, and the poller
hands batches of the template's size to as many concurrent invocations as the template says. The last test checks
the poller against template.yaml itself.
"""

from __future__ import annotations

import json
import time
import uuid
from typing import TYPE_CHECKING, Any

import httpx
import pytest

from devstack.aws import LocalAws
from devstack.lambdas import SFN_TIMEOUT_ERROR, TIMEOUT_ERROR_TYPE, LambdaTimedOut
from devstack.sqs_poller import SqsPoller
from devstack.template import load_template
from tests.devstack.sam_app import write_sam_app

if TYPE_CHECKING:
    from collections.abc import Iterator
    from pathlib import Path

TIMEOUT = 1  # SlowFunction's Timeout below, in seconds
VISIBILITY = 2  # SlowQueue's VisibilityTimeout: longer than the poller's 1-second redelivery of a failed batch

TEMPLATE = """\
AWSTemplateFormatVersion: "2010-09-09"
Transform: AWS::Serverless-2016-10-31
Parameters:
  Stage:
    Type: String
    Default: dev
  SlowConcurrency:
    Type: Number
    Default: 4
Globals:
  Function:
    Runtime: python3.12
    Timeout: 30
    MemorySize: 128
    Environment:
      Variables:
        CALLS_TABLE: !Ref CallsTable
Resources:
  CallsTable:
    Type: AWS::DynamoDB::Table
    Properties:
      TableName: !Sub "calls-${Stage}"
      BillingMode: PAY_PER_REQUEST
      AttributeDefinitions:
        - {AttributeName: call_id, AttributeType: S}
      KeySchema:
        - {AttributeName: call_id, KeyType: HASH}
  SlowQueue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "slow-${Stage}"
      VisibilityTimeout: 2
      RedrivePolicy:
        deadLetterTargetArn: !GetAtt SlowDeadLetterQueue.Arn
        maxReceiveCount: 2
  SlowDeadLetterQueue:
    Type: AWS::SQS::Queue
    Properties:
      QueueName: !Sub "slow-${Stage}-dlq"
  SlowFunction:
    Type: AWS::Serverless::Function
    Properties:
      FunctionName: !Sub "slow-${Stage}"
      CodeUri: functions/slow/
      Handler: app.lambda_handler
      Timeout: 1
      Policies:
        - DynamoDBCrudPolicy: {TableName: !Ref CallsTable}
      Events:
        Http:
          Type: Api
          Properties:
            Path: /slow
            Method: get
        Work:
          Type: SQS
          Properties:
            Queue: !GetAtt SlowQueue.Arn
            BatchSize: 3
            FunctionResponseTypes: [ReportBatchItemFailures]
            ScalingConfig:
              MaximumConcurrency: !Ref SlowConcurrency
  Machine:
    Type: AWS::Serverless::StateMachine
    Properties:
      Name: !Sub "slow-${Stage}-machine"
      DefinitionUri: statemachine/machine.asl.json
      DefinitionSubstitutions:
        SlowArn: !GetAtt SlowFunction.Arn
      Policies:
        - LambdaInvokePolicy: {FunctionName: !Ref SlowFunction}
"""

HANDLER = """\
import json
import os
import time

import boto3

from devstack.lambdas import held

TABLE = boto3.resource("dynamodb").Table(os.environ["CALLS_TABLE"])


def lambda_handler(event, context):
    if "httpMethod" in event:  # through the local API server
        time.sleep(float((event.get("queryStringParameters") or {}).get("sleep", 0)))
        return {"statusCode": 200, "body": "done"}
    if "Records" in event:  # an SQS batch: note each record's delivery, then take as long as the slowest asks
        for record in event["Records"]:
            body = json.loads(record["body"])
            TABLE.put_item(
                Item={
                    "call_id": f"{body['id']}#{record['attributes']['ApproximateReceiveCount']}",
                    "at": str(time.time()),
                    "batch": len(event["Records"]),
                }
            )
        time.sleep(max(json.loads(r["body"]).get("sleep", 0) for r in event["Records"]))
        return {"batchItemFailures": []}
    if event.get("hold"):  # parked on purpose, as tests/model parks an actor
        with held():
            time.sleep(event["hold"])
    time.sleep(event.get("sleep", 0))
    if event.get("write_after"):
        TABLE.put_item(Item={"call_id": event["write_after"]})
    return {"remaining_ms": context.get_remaining_time_in_millis()}
"""

ASL = {
    "StartAt": "Work",
    "States": {
        "Work": {
            "Type": "Task",
            "Resource": "arn:aws:states:::lambda:invoke",
            "Parameters": {"FunctionName": "${SlowArn}", "Payload.$": "$"},
            "OutputPath": "$.Payload",
            "Retry": [
                {
                    "ErrorEquals": ["Lambda.ServiceException", "Lambda.TooManyRequestsException"],
                    "IntervalSeconds": 1,
                    "MaxAttempts": 2,
                }
            ],
            "Catch": [
                {"ErrorEquals": ["Lambda.Unknown"], "ResultPath": "$.error", "Next": "TimedOut"},
                {"ErrorEquals": ["States.ALL"], "ResultPath": "$.error", "Next": "Other"},
            ],
            "Next": "Done",
        },
        "Done": {"Type": "Succeed"},
        "TimedOut": {"Type": "Pass", "Result": "timed out", "ResultPath": "$.path", "End": True},
        "Other": {"Type": "Fail", "Error": "Unexpected", "Cause": "another error"},
    },
}


@pytest.fixture(scope="module")
def app_root(tmp_path_factory: pytest.TempPathFactory) -> Path:
    root = tmp_path_factory.mktemp("slowapp")
    return write_sam_app(root, template=TEMPLATE, function="slow", handler=HANDLER, asl=ASL)


@pytest.fixture(scope="module")
def stack(app_root: Path) -> Iterator[LocalAws]:
    with LocalAws(app_root / "template.yaml", stack_name="slow-local", enforce_timeouts=True) as aws:
        aws.deploy({"Stage": "local", "SlowConcurrency": "2"})
        yield aws


def call(stack: LocalAws, call_id: str) -> dict[str, Any] | None:
    item: dict[str, Any] | None = (
        stack.client("dynamodb")
        .get_item(TableName=stack.physical_id("CallsTable"), Key={"call_id": {"S": call_id}}, ConsistentRead=True)
        .get("Item")
    )
    return item


# -- a direct invocation ----------------------------------------------------------------------------------------------


def test_a_direct_invocation_that_overruns_fails_at_its_timeout_as_lambda_reports_it(stack: LocalAws) -> None:
    before = stack.runtime.stats.get("SlowFunction")
    timeouts_before = before.timeouts if before else 0
    started = time.monotonic()
    with pytest.raises(LambdaTimedOut) as failure:
        stack.runtime.invoke("SlowFunction", {"sleep": 2.0, "write_after": "orphan-direct"})
    took = time.monotonic() - started
    assert TIMEOUT <= took < TIMEOUT + 0.5  # the invoker is answered at the timeout, not when the handler returns
    assert failure.value.payload["errorType"] == TIMEOUT_ERROR_TYPE == "Sandbox.Timedout"
    assert f"Task timed out after {TIMEOUT:.2f} seconds" in failure.value.payload["errorMessage"]
    stats = stack.runtime.stats["SlowFunction"]
    assert stats.timeouts == timeouts_before + 1 and stats.timeout == TIMEOUT
    assert any("SlowFunction: longest invocation" in line for line in stack.runtime.report())

    # The handler goes on in the background, but Lambda stopped its sandbox: its later write never lands.
    deadline = time.monotonic() + 5
    while stack.runtime.stats["SlowFunction"].orphans_finished < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert stack.runtime.stats["SlowFunction"].orphans_finished >= 1
    assert call(stack, "orphan-direct") is None


def test_the_local_api_answers_504_when_the_function_overruns_as_api_gateway_does(stack: LocalAws) -> None:
    from devstack.api_server import LocalApiServer

    with LocalApiServer(stack, port=0) as api:
        quick = httpx.get(f"{api.url}/slow", params={"sleep": "0"}, timeout=10)
        late = httpx.get(f"{api.url}/slow", params={"sleep": "2"}, timeout=10)
    assert (quick.status_code, quick.text) == (200, "done")
    assert late.status_code == 504
    assert late.json() == {"message": "Endpoint request timed out"}


def test_the_invoke_api_answers_a_function_error_with_lambdas_timeout_payload(stack: LocalAws) -> None:
    response = stack.client("lambda").invoke(
        FunctionName=stack.function_name("SlowFunction"), Payload=json.dumps({"sleep": 1.6})
    )
    assert response.get("FunctionError")
    payload = json.loads(response["Payload"].read())
    assert payload["errorType"] == "Sandbox.Timedout"
    assert "Task timed out after 1.00 seconds" in payload["errorMessage"]


def test_within_its_timeout_the_context_counts_down_the_real_time_left(stack: LocalAws) -> None:
    answer = stack.runtime.invoke("SlowFunction", {"sleep": 0.3})
    assert 400 < answer["remaining_ms"] <= 700


def test_a_parked_invocation_is_not_timed_out_and_its_clock_stands_still(stack: LocalAws) -> None:
    answer = stack.runtime.invoke("SlowFunction", {"hold": TIMEOUT + 0.5})  # parked longer than its whole timeout
    assert answer["remaining_ms"] > 800  # the park did not count


def test_enforcement_can_be_switched_off(stack: LocalAws) -> None:
    stack.runtime.enforce_timeouts = False
    try:
        answer = stack.runtime.invoke("SlowFunction", {"sleep": TIMEOUT + 0.3, "write_after": "unenforced"})
    finally:
        stack.runtime.enforce_timeouts = True
    assert answer["remaining_ms"] == 0
    assert call(stack, "unenforced") is not None


# -- a Step Functions task --------------------------------------------------------------------------------------------


def test_a_state_machine_task_that_overruns_fails_with_lambda_unknown_and_is_caught(stack: LocalAws) -> None:
    sfn = stack.client("stepfunctions")
    arn = sfn.start_execution(
        stateMachineArn=stack.state_machine_arn("Machine"),
        name=f"slow-{uuid.uuid4().hex[:8]}",
        input=json.dumps({"sleep": 1.6}),
    )["executionArn"]
    deadline = time.monotonic() + 20
    while (described := sfn.describe_execution(executionArn=arn))["status"] == "RUNNING":
        assert time.monotonic() < deadline, "the execution never ended"
        time.sleep(0.05)
    assert described["status"] == "SUCCEEDED", described
    output = json.loads(described["output"])
    assert output["path"] == "timed out"  # the Lambda.Unknown catcher, not States.ALL's
    assert output["error"]["Error"] == SFN_TIMEOUT_ERROR == "Lambda.Unknown"
    assert "Task timed out after 1.00 seconds" in output["error"]["Cause"]
    history = sfn.get_execution_history(executionArn=arn)["events"]
    failed = [e["taskFailedEventDetails"] for e in history if e["type"] == "TaskFailed"]
    assert [f["error"] for f in failed] == ["Lambda.Unknown"]  # not retried: no Lambda.*Exception retrier matches


# -- an SQS batch -----------------------------------------------------------------------------------------------------


def test_a_timed_out_sqs_batch_comes_back_after_the_visibility_timeout_and_then_rests_in_the_dlq(
    stack: LocalAws,
) -> None:
    sqs = stack.client("sqs")
    queue, dlq = stack.physical_id("SlowQueue"), stack.physical_id("SlowDeadLetterQueue")
    sqs.send_message(QueueUrl=queue, MessageBody=json.dumps({"id": "late", "sleep": 2.5}))
    poller = SqsPoller(stack).start()
    try:
        moved: list[dict[str, Any]] = []
        deadline = time.monotonic() + 20
        while not moved and time.monotonic() < deadline:
            moved = sqs.receive_message(QueueUrl=dlq, WaitTimeSeconds=1, AttributeNames=["All"]).get("Messages", [])
    finally:
        poller.stop()
    assert [json.loads(m["Body"])["id"] for m in moved] == ["late"]
    # maxReceiveCount (2) receives from the queue, both spent on timed-out invocations, then this one from the DLQ
    assert moved[0]["Attributes"]["ApproximateReceiveCount"] == "3"
    assert poller.timeouts == 2
    first, second = call(stack, "late#1"), call(stack, "late#2")
    assert first is not None and second is not None  # each delivery counted one receive
    gap = float(second["at"]["S"]) - float(first["at"]["S"])
    # Back after the queue's visibility timeout (from the first receive), not the poller's 1-second shortcut for a
    # handler error: the timed-out handler could still be running until then.
    assert gap >= VISIBILITY - 0.2, gap
    assert call(stack, "late#3") is None


# -- the poller honours the mapping ---------------------------------------------------------------------------------


def test_the_poller_hands_batches_of_batchsize_to_at_most_maximumconcurrency_invocations(stack: LocalAws) -> None:
    sqs = stack.client("sqs")
    queue = stack.physical_id("SlowQueue")
    poller = SqsPoller(stack)
    [mapping] = poller.mappings
    assert (mapping.function, mapping.queue, mapping.batch_size, mapping.partial_batch) == (
        "SlowFunction",
        "SlowQueue",
        3,
        True,
    )
    assert mapping.max_concurrency == 2 and poller.pollers(mapping) == 2  # the deployed parameter, not its default
    for start in range(0, 18, 9):
        sqs.send_message_batch(
            QueueUrl=queue,
            Entries=[
                {"Id": str(n), "MessageBody": json.dumps({"id": f"b{n}", "sleep": 0.4})}
                for n in range(start, start + 9)
            ],
        )
    poller.start()
    try:
        poller.wait_idle(timeout=30)
    finally:
        poller.stop()
    assert poller.largest_batch["SlowFunction"] == 3
    assert poller.peak_concurrency["SlowFunction"] == 2
    assert poller.timeouts == 0
    assert all(call(stack, f"b{n}#1") is not None for n in range(18))


def test_the_pollers_mapping_is_the_one_template_yaml_declares() -> None:
    """The bulk worker's mapping as the real template deploys it: BatchSize and ReportBatchItemFailures from the
    event, MaximumConcurrency from the BulkWorkerMaxConcurrency parameter (here overridden at deploy)."""
    event = load_template()["Resources"]["BulkWorkerFunction"]["Properties"]["Events"]["BulkMessages"]["Properties"]
    with LocalAws(enforce_iam=False) as aws:
        aws.deploy({"Stage": "local", "BulkWorkerMaxConcurrency": "3"})
        poller = SqsPoller(aws)
    [mapping] = [m for m in poller.mappings if m.function == "BulkWorkerFunction"]
    assert mapping.queue == event["Queue"]["Fn::GetAtt"][0] == "BulkQueue"
    assert mapping.batch_size == event["BatchSize"]
    assert mapping.partial_batch is ("ReportBatchItemFailures" in event["FunctionResponseTypes"])
    assert event["ScalingConfig"]["MaximumConcurrency"] == {"Ref": "BulkWorkerMaxConcurrency"}
    assert mapping.max_concurrency == 3 and mapping.reserved_concurrency == 3 and poller.pollers(mapping) == 3
