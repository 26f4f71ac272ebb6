"""IAM on the local stack (devstack.iam): the evaluator, the API-call mapping, the policies read from the translated
template, and, on the real stack, a function calling outside its role failing as it would in AWS.
"""

from __future__ import annotations

import copy
import json
import os
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
import pytest
from botocore.exceptions import ClientError

from devstack.aws import LocalAws
from devstack.iam import (
    ApiCall,
    Condition,
    FunctionIdentity,
    IamModelError,
    Request,
    Statement,
    UnmappedApiCall,
    access_denied,
    authorisations,
    evaluate,
    function_identities,
    parse_statements,
)
from devstack.stack import EmbeddedStack
from tests.stack.support import C, running_stack, stack_scenario

ACCOUNT = "123456789012"
REGION = "us-east-1"
TABLE = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/sales"
SQS_EXECUTION_ROLE = "AWSLambdaSQSQueueExecutionRole"


def allow(actions: str | list[str], resources: str | list[str], **extra: Any) -> Statement:
    (statement,) = parse_statements(
        {"Statement": {"Effect": "Allow", "Action": actions, "Resource": resources, **extra}}
    )
    return statement


def deny(actions: str | list[str], resources: str | list[str], **extra: Any) -> Statement:
    (statement,) = parse_statements(
        {"Statement": {"Effect": "Deny", "Action": actions, "Resource": resources, **extra}}
    )
    return statement


def allowed(statements: list[Statement], action: str, resource: str, **context: str) -> bool:
    request = Request(action, resource, {k.lower(): (v,) for k, v in context.items()})
    return evaluate(statements, request).allowed


# --- the evaluator ---------------------------------------------------------------------------------------------------


def test_actions_match_case_insensitively_with_wildcards() -> None:
    statements = [allow(["dynamodb:Get*", "sqs:SendMessage*", "states:Describe?xecution"], "*")]
    assert allowed(statements, "dynamodb:GetItem", TABLE)
    assert allowed(statements, "DynamoDB:getitem", TABLE)
    assert allowed(statements, "sqs:SendMessage", "arn:aws:sqs:us-east-1:123456789012:q")
    assert allowed(statements, "states:DescribeExecution", "arn:x")
    assert not allowed(statements, "dynamodb:PutItem", TABLE)
    assert not allowed(statements, "states:DescribeStateMachine", "arn:x")
    assert not allowed(statements, "dynamodbx:GetItem", TABLE)


def test_not_action_allows_everything_but_what_it_names() -> None:
    (statement,) = parse_statements({"Statement": [{"Effect": "Allow", "NotAction": "iam:*", "Resource": "*"}]})
    assert allowed([statement], "dynamodb:PutItem", TABLE)
    assert not allowed([statement], "iam:CreateUser", "*")
    assert not allowed([statement], "IAM:PassRole", "*")


def test_resources_match_per_arn_component_case_sensitively() -> None:
    statements = [allow("dynamodb:Query", [f"{TABLE}/index/*", "arn:aws:dynamodb:*:123456789012:table/jobs"])]
    assert allowed(statements, "dynamodb:Query", f"{TABLE}/index/DueIndex")
    assert not allowed(statements, "dynamodb:Query", TABLE)  # the table is not one of its indexes
    assert allowed(statements, "dynamodb:Query", "arn:aws:dynamodb:eu-west-1:123456789012:table/jobs")
    assert not allowed(statements, "dynamodb:Query", "arn:aws:dynamodb:us-east-1:123456789012:table/Jobs")
    # a "*" inside one component never spans a colon: this region component is "a:b", not a region
    assert not allowed(statements, "dynamodb:Query", "arn:aws:dynamodb:a:b:123456789012:table/jobs")
    secret = [allow("secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-??????")]
    assert allowed(
        secret, "secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-AbC123"
    )
    assert not allowed(
        secret, "secretsmanager:GetSecretValue", "arn:aws:secretsmanager:us-east-1:123456789012:secret:app-x"
    )


def test_not_resource_applies_to_every_other_resource() -> None:
    (statement,) = parse_statements(
        {"Statement": {"Effect": "Allow", "Action": "dynamodb:*", "NotResource": f"{TABLE}*"}}
    )
    assert allowed([statement], "dynamodb:GetItem", "arn:aws:dynamodb:us-east-1:123456789012:table/jobs")
    assert not allowed([statement], "dynamodb:GetItem", TABLE)
    assert not allowed([statement], "dynamodb:GetItem", f"{TABLE}/index/DueIndex")


def test_an_explicit_deny_wins_and_no_allow_denies() -> None:
    statements = [allow("dynamodb:*", "*"), deny("dynamodb:DeleteItem", TABLE)]
    decision = evaluate(statements, Request("dynamodb:DeleteItem", TABLE))
    assert not decision.allowed and decision.explicit_deny
    assert decision.statement is statements[1]
    assert allowed(statements, "dynamodb:PutItem", TABLE)
    nothing = evaluate([allow("sqs:SendMessage", "*")], Request("dynamodb:GetItem", TABLE))
    assert not nothing.allowed and not nothing.explicit_deny and nothing.statement is None
    assert not evaluate([], Request("dynamodb:GetItem", TABLE)).allowed


def test_string_equals_on_kms_via_service_as_the_template_writes_it() -> None:
    key = "arn:aws:kms:us-east-1:123456789012:key/k-1"
    via = ["dynamodb.us-east-1.amazonaws.com", "sqs.us-east-1.amazonaws.com"]
    statements = [
        allow(["kms:Decrypt", "kms:GenerateDataKey"], key, Condition={"StringEquals": {"kms:ViaService": via}})
    ]
    assert allowed(statements, "kms:Decrypt", key, **{"kms:ViaService": "sqs.us-east-1.amazonaws.com"})
    assert allowed(statements, "kms:Decrypt", key, **{"KMS:VIASERVICE": "dynamodb.us-east-1.amazonaws.com"})
    assert not allowed(statements, "kms:Decrypt", key, **{"kms:ViaService": "sns.us-east-1.amazonaws.com"})
    assert not allowed(statements, "kms:Decrypt", key)  # a direct call has no kms:ViaService: denied, as in AWS


def test_condition_operators() -> None:
    def holds(operator: str, values: Any, **context: str) -> bool:
        statement = allow("s3:GetObject", "*", Condition={operator: {"k": values}})
        return allowed([statement], "s3:GetObject", "arn:aws:s3:::b/o", **context)

    assert holds("StringLike", "sales-*", k="sales-recovery") and not holds("StringLike", "sales-*", k="Sales-x")
    assert holds("StringNotEquals", "a", k="b") and not holds("StringNotEquals", ["a", "b"], k="b")
    assert holds("StringNotEquals", "a")  # a missing key matches no value: the negated operator holds
    assert not holds("StringEquals", "a") and holds("StringEqualsIfExists", "a")
    assert holds("StringEqualsIgnoreCase", "ABC", k="abc")
    assert holds(
        "ArnLike", "arn:aws:states:*:*:stateMachine:relink", k="arn:aws:states:us-east-1:1:stateMachine:relink"
    )
    assert not holds("ArnLike", "arn:aws:states:*:*:stateMachine:relink", k="arn:aws:states:us-east-1:1:execution:x")
    assert holds("ArnNotLike", "arn:aws:sqs:*:*:other", k="arn:aws:sqs:us-east-1:1:bulk")
    assert holds("Bool", True, k="true") and not holds("Bool", "true", k="false")
    assert holds("Null", "true") and not holds("Null", "true", k="x") and holds("Null", "false", k="x")
    assert holds("NumericLessThan", 10, k="9") and not holds("NumericLessThan", "10", k="10")
    assert holds("NumericGreaterThanEquals", "10", k="10") and not holds("NumericEquals", "1", k="one")
    assert holds("ForAnyValue:StringEquals", ["a", "b"], k="b")
    assert holds("ForAllValues:StringEquals", ["a"])  # ForAllValues over no values: true
    conditions = {"StringEquals": {"a": "1", "b": "2"}}  # every key of every operator must hold
    both = allow("s3:GetObject", "*", Condition=conditions)
    assert allowed([both], "s3:GetObject", "x", a="1", b="2") and not allowed([both], "s3:GetObject", "x", a="1")


@pytest.mark.parametrize(
    "statement",
    [
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"DateLessThan": {"aws:CurrentTime": "x"}}},
        {"Effect": "Allow", "Action": "s3:*", "Resource": "*", "Condition": {"Whatever:StringEquals": {"k": "v"}}},
        {"Effect": "Allow", "Action": "s3:*", "Resource": {"Fn::GetAtt": ["Bucket", "Arn"]}},
        {"Effect": "Allow", "Action": "s3:*", "Resource": "arn:aws:s3:::${Bucket}/*"},
        {"Effect": "Allow", "Action": "s3:*"},
        {"Effect": "Maybe", "Action": "s3:*", "Resource": "*"},
        {"Effect": "Allow", "Action": "s3:*", "NotAction": "s3:Get*", "Resource": "*"},
    ],
)
def test_what_cannot_be_evaluated_faithfully_is_refused_when_read(statement: dict[str, Any]) -> None:
    with pytest.raises(IamModelError):
        parse_statements({"Statement": [statement]}, source="Role/Policy")


def test_conditions_are_read_with_lower_case_keys_and_string_values() -> None:
    statement = allow("s3:*", "*", Condition={"Bool": {"aws:SecureTransport": True}, "NumericLessThan": {"N": 3}})
    assert statement.conditions == (
        Condition("Bool", "aws:securetransport", ("true",)),
        Condition("NumericLessThan", "n", ("3",)),
    )


# --- the policies of a function, from a translated template ------------------------------------------------------


def translated(**extra_resources: Any) -> dict[str, Any]:
    """A translated template with what SAM writes: the function's role, a policy template expanded, managed ARNs."""
    return {
        "Resources": {
            "WorkerFunction": {
                "Type": "AWS::Lambda::Function",
                "Properties": {"Role": {"Fn::GetAtt": ["WorkerFunctionRole", "Arn"]}},
            },
            "WorkerFunctionRole": {
                "Type": "AWS::IAM::Role",
                "Properties": {
                    "ManagedPolicyArns": [
                        "arn:aws:iam::aws:policy/service-role/AWSLambdaBasicExecutionRole",
                        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/" + SQS_EXECUTION_ROLE},
                    ],
                    "Policies": [
                        {
                            "PolicyName": "WorkerFunctionRolePolicy0",
                            "PolicyDocument": {
                                "Statement": [
                                    {
                                        "Effect": "Allow",
                                        "Action": ["dynamodb:GetItem", "dynamodb:PutItem"],
                                        "Resource": [
                                            {
                                                "Fn::Sub": [
                                                    "arn:${AWS::Partition}:dynamodb:${AWS::Region}:"
                                                    "${AWS::AccountId}:table/${tableName}",
                                                    {"tableName": {"Ref": "Table"}},
                                                ]
                                            }
                                        ],
                                    }
                                ]
                            },
                        }
                    ],
                },
            },
            **extra_resources,
        }
    }


def fake_resolve(node: Any) -> Any:
    """Stands in for moto's clean_json on the deployed stack: the intrinsics above, resolved."""
    text = json.dumps(node)
    text = text.replace('{"Ref": "Table"}', '"sales"').replace('{"Ref": "WorkerFunctionRole"}', '"worker-role-X1"')
    resolved = json.loads(text)

    def visit(value: Any) -> Any:
        if isinstance(value, dict) and "Fn::Sub" in value:
            sub = value["Fn::Sub"]
            template, variables = (sub[0], sub[1]) if isinstance(sub, list) else (sub, {})
            for name, replacement in {
                **variables,
                "AWS::Partition": "aws",
                "AWS::Region": REGION,
                "AWS::AccountId": ACCOUNT,
            }.items():
                template = template.replace("${" + name + "}", replacement)
            return template
        if isinstance(value, dict):
            return {k: visit(v) for k, v in value.items()}
        if isinstance(value, list):
            return [visit(v) for v in value]
        return value

    return visit(resolved)


def identities(template: dict[str, Any]) -> dict[str, FunctionIdentity]:
    return function_identities(
        template,
        fake_resolve,
        physical_ids={"WorkerFunctionRole": "worker-role-X1", "WorkerFunction": "things-worker"},
        functions={"WorkerFunction": "things-worker"},
        account=ACCOUNT,
    )


def test_a_function_gets_its_roles_inline_and_managed_statements() -> None:
    worker = identities(translated())["WorkerFunction"]
    assert worker.role_name == "worker-role-X1"
    assert worker.principal_arn == f"arn:aws:sts::{ACCOUNT}:assumed-role/worker-role-X1/things-worker"
    assert allowed(list(worker.statements), "dynamodb:PutItem", TABLE)
    assert not allowed(list(worker.statements), "dynamodb:DeleteItem", TABLE)
    # AWSLambdaSQSQueueExecutionRole: what Lambda's SQS poller needs, on any queue; nothing else of SQS
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:bulk"
    assert allowed(list(worker.statements), "sqs:ReceiveMessage", queue)
    assert allowed(list(worker.statements), "sqs:DeleteMessage", queue)
    assert not allowed(list(worker.statements), "sqs:SendMessage", queue)
    assert allowed(list(worker.statements), "logs:PutLogEvents", "arn:aws:logs:us-east-1:1:log-group:x")


def test_a_stack_policy_attached_to_the_role_counts_too() -> None:
    policy = {
        "Type": "AWS::IAM::Policy",
        "Properties": {
            "PolicyName": "extra",
            "Roles": [{"Ref": "WorkerFunctionRole"}],
            "PolicyDocument": {"Statement": {"Effect": "Deny", "Action": "dynamodb:PutItem", "Resource": "*"}},
        },
    }
    worker = identities(translated(ExtraPolicy=policy))["WorkerFunction"]
    assert not allowed(list(worker.statements), "dynamodb:PutItem", TABLE)
    assert allowed(list(worker.statements), "dynamodb:GetItem", TABLE)


def test_an_unknown_managed_policy_or_an_outside_role_is_refused() -> None:
    template = translated()
    role = template["Resources"]["WorkerFunctionRole"]["Properties"]
    role["ManagedPolicyArns"].append("arn:aws:iam::aws:policy/AmazonS3FullAccess")
    with pytest.raises(IamModelError, match="AmazonS3FullAccess"):
        identities(template)
    template = translated()
    template["Resources"]["WorkerFunction"]["Properties"]["Role"] = "arn:aws:iam::123456789012:role/elsewhere"
    with pytest.raises(IamModelError, match="not a role of the stack"):
        identities(template)


def test_an_intrinsic_left_unresolved_is_refused() -> None:
    template = translated()
    statement = template["Resources"]["WorkerFunctionRole"]["Properties"]["Policies"][0]["PolicyDocument"]
    statement["Statement"][0]["Resource"].append({"Fn::GetAtt": ["Alarm", "Arn"]})  # moto leaves these as they are
    with pytest.raises(IamModelError, match="unresolved"):
        identities(template)


def test_without_drops_statements_in_a_copy() -> None:
    worker = identities(translated())["WorkerFunction"]
    reduced = worker.without(lambda s: "dynamodb:PutItem" in s.actions)
    assert not allowed(list(reduced.statements), "dynamodb:GetItem", TABLE)
    assert allowed(list(worker.statements), "dynamodb:GetItem", TABLE)


# --- API calls -> IAM actions and resources -----------------------------------------------------------------------


class FakeNames:
    account = ACCOUNT

    def secret_arn(self, secret_id: str, region: str) -> str:
        if secret_id.startswith("arn:"):
            return secret_id
        return f"arn:aws:secretsmanager:{region}:{ACCOUNT}:secret:{secret_id}-Ab12Cd"

    def kms_key_arn(self, key_id: str, region: str) -> str:
        return f"arn:aws:kms:{region}:{ACCOUNT}:key/{'k-1' if key_id == 'alias/data' else key_id}"


def mapped(service: str, operation: str, **params: Any) -> list[tuple[str, str]]:
    return authorisations(ApiCall(service, operation, params, REGION), FakeNames())


def test_dynamodb_calls_map_per_table_index_and_item_kind() -> None:
    jobs = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/jobs"
    assert mapped("dynamodb", "GetItem", TableName="sales", Key={}) == [("dynamodb:GetItem", TABLE)]
    assert mapped("dynamodb", "PutItem", TableName=TABLE, Item={}) == [("dynamodb:PutItem", TABLE)]
    assert mapped("dynamodb", "UpdateItem", TableName="sales") == [("dynamodb:UpdateItem", TABLE)]
    assert mapped("dynamodb", "DeleteItem", TableName="sales") == [("dynamodb:DeleteItem", TABLE)]
    assert mapped("dynamodb", "DescribeTable", TableName="sales") == [("dynamodb:DescribeTable", TABLE)]
    assert mapped("dynamodb", "Query", TableName="sales") == [("dynamodb:Query", TABLE)]
    assert mapped("dynamodb", "Query", TableName="sales", IndexName="DueIndex") == [
        ("dynamodb:Query", f"{TABLE}/index/DueIndex")
    ]
    assert mapped("dynamodb", "Scan", TableName="jobs", IndexName="Open") == [("dynamodb:Scan", f"{jobs}/index/Open")]
    assert mapped("dynamodb", "BatchGetItem", RequestItems={"sales": {}, "jobs": {}}) == [
        ("dynamodb:BatchGetItem", TABLE),
        ("dynamodb:BatchGetItem", jobs),
    ]
    assert mapped("dynamodb", "BatchWriteItem", RequestItems={"jobs": []}) == [("dynamodb:BatchWriteItem", jobs)]
    transact = [
        {"Put": {"TableName": "sales", "Item": {}}},
        {"Update": {"TableName": "jobs", "Key": {}}},
        {"Delete": {"TableName": "jobs", "Key": {}}},
        {"ConditionCheck": {"TableName": "sales", "Key": {}}},
    ]
    assert mapped("dynamodb", "TransactWriteItems", TransactItems=transact) == [
        ("dynamodb:PutItem", TABLE),
        ("dynamodb:UpdateItem", jobs),
        ("dynamodb:DeleteItem", jobs),
        ("dynamodb:ConditionCheckItem", TABLE),
    ]
    assert mapped("dynamodb", "TransactGetItems", TransactItems=[{"Get": {"TableName": "jobs"}}]) == [
        ("dynamodb:GetItem", jobs)
    ]


def test_sqs_calls_map_to_the_queue_arn_read_from_the_url() -> None:
    queue = f"arn:aws:sqs:{REGION}:{ACCOUNT}:bulk"
    local_url = f"http://127.0.0.1:5000/{ACCOUNT}/bulk"
    aws_url = f"https://sqs.eu-west-1.amazonaws.com/{ACCOUNT}/bulk"
    assert mapped("sqs", "SendMessage", QueueUrl=local_url) == [("sqs:SendMessage", queue)]
    assert mapped("sqs", "SendMessageBatch", QueueUrl=aws_url, Entries=[]) == [
        ("sqs:SendMessage", f"arn:aws:sqs:eu-west-1:{ACCOUNT}:bulk")
    ]
    assert mapped("sqs", "ReceiveMessage", QueueUrl=local_url) == [("sqs:ReceiveMessage", queue)]
    assert mapped("sqs", "DeleteMessageBatch", QueueUrl=local_url) == [("sqs:DeleteMessage", queue)]
    assert mapped("sqs", "ChangeMessageVisibility", QueueUrl=local_url) == [("sqs:ChangeMessageVisibility", queue)]
    assert mapped("sqs", "GetQueueAttributes", QueueUrl=local_url) == [("sqs:GetQueueAttributes", queue)]
    assert mapped("sqs", "GetQueueUrl", QueueName="bulk") == [("sqs:GetQueueUrl", queue)]


def test_sns_states_secrets_kms_and_lambda_calls() -> None:
    topic = f"arn:aws:sns:{REGION}:{ACCOUNT}:help-desk"
    assert mapped("sns", "Publish", TopicArn=topic, Message="m") == [("sns:Publish", topic)]
    assert mapped("sns", "PublishBatch", TopicArn=topic) == [("sns:Publish", topic)]
    machine = f"arn:aws:states:{REGION}:{ACCOUNT}:stateMachine:relink"
    execution = f"arn:aws:states:{REGION}:{ACCOUNT}:execution:relink:run-1"
    assert mapped("stepfunctions", "StartExecution", stateMachineArn=machine) == [("states:StartExecution", machine)]
    assert mapped("stepfunctions", "DescribeExecution", executionArn=execution) == [
        ("states:DescribeExecution", execution)
    ]
    assert mapped("stepfunctions", "StopExecution", executionArn=execution) == [("states:StopExecution", execution)]
    secret = f"arn:aws:secretsmanager:{REGION}:{ACCOUNT}:secret:app/connections/c-Ab12Cd"
    assert mapped("secretsmanager", "GetSecretValue", SecretId="app/connections/c") == [
        ("secretsmanager:GetSecretValue", secret)
    ]
    assert mapped("secretsmanager", "PutSecretValue", SecretId=secret, SecretString="s") == [
        ("secretsmanager:PutSecretValue", secret)
    ]
    assert mapped("secretsmanager", "DescribeSecret", SecretId=secret) == [("secretsmanager:DescribeSecret", secret)]
    key = f"arn:aws:kms:{REGION}:{ACCOUNT}:key/k-1"
    assert mapped("kms", "GenerateDataKey", KeyId="alias/data") == [("kms:GenerateDataKey", key)]
    assert mapped("kms", "Decrypt", KeyId="k-1", CiphertextBlob=b"x") == [("kms:Decrypt", key)]
    assert mapped("lambda", "Invoke", FunctionName="worker") == [
        ("lambda:InvokeFunction", f"arn:aws:lambda:{REGION}:{ACCOUNT}:function:worker")
    ]


def test_a_call_without_a_mapping_fails_loudly() -> None:
    with pytest.raises(UnmappedApiCall, match="ssm:GetParameter"):
        mapped("ssm", "GetParameter", Name="x")
    with pytest.raises(UnmappedApiCall, match="dynamodb:ExecuteStatement"):
        mapped("dynamodb", "ExecuteStatement", Statement="SELECT * FROM sales")
    with pytest.raises(UnmappedApiCall, match="kms:Decrypt"):
        mapped("kms", "Decrypt", CiphertextBlob=b"x")  # the key would have to be read off the blob


# --- the error, as each service answers it ---------------------------------------------------------------------------


WORKER = FunctionIdentity("WorkerFunction", "things-worker", "WorkerFunctionRole", "worker-role-X1", ACCOUNT, ())


@pytest.mark.parametrize(
    ("service", "action", "code", "status", "written", "exception"),
    [
        ("dynamodb", "dynamodb:PutItem", "AccessDeniedException", 400, "dynamodb:PutItem", "ClientError"),
        ("stepfunctions", "states:StartExecution", "AccessDeniedException", 400, "states:StartExecution", None),
        ("secretsmanager", "secretsmanager:GetSecretValue", "AccessDeniedException", 400, None, None),
        ("sqs", "sqs:SendMessage", "AccessDenied", 403, "sqs:sendmessage", None),
        ("sns", "sns:Publish", "AuthorizationError", 403, "SNS:Publish", "AuthorizationErrorException"),
    ],
)
def test_a_denial_is_the_client_error_the_service_answers(
    service: str, action: str, code: str, status: int, written: str | None, exception: str | None
) -> None:
    client = boto3.client(service, region_name=REGION)  # never called: only its error classes are used
    error = access_denied(client, WORKER, "Op", action, "arn:aws:x", explicit=False)
    assert isinstance(error, ClientError)
    if exception is not None:
        assert type(error).__name__ == exception
    assert error.response["Error"]["Code"] == code
    assert error.response["ResponseMetadata"]["HTTPStatusCode"] == status
    written = written or action
    assert error.response["Error"]["Message"] == (
        f"User: arn:aws:sts::{ACCOUNT}:assumed-role/worker-role-X1/things-worker is not authorized to perform: "
        f"{written} on resource: arn:aws:x because no identity-based policy allows the {written} action"
    )
    explicit = access_denied(client, WORKER, "Op", action, "arn:aws:x", explicit=True)
    assert str(explicit.response["Error"]["Message"]).endswith(  # type: ignore[attr-defined]
        "on resource: arn:aws:x with an explicit deny in an identity-based policy"
    )


# --- on the real local stack ---------------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def stack() -> Iterator[EmbeddedStack]:
    with running_stack(stack_scenario()) as running:
        yield running


def probe(calls: Callable[[], dict[str, Any]]) -> Callable[[Callable[[Any, Any], Any]], Callable[[Any, Any], Any]]:
    """An ``intercept`` wrapper: the function runs ``calls`` (in its own invocation) instead of its handler."""

    def wrap(_handler: Callable[[Any, Any], Any]) -> Callable[[Any, Any], Any]:
        return lambda _event, _context: calls()

    return wrap


def outcome(call: Callable[[], Any]) -> dict[str, str]:
    try:
        call()
    except ClientError as exc:
        return {"code": str(exc.response["Error"]["Code"]), "message": str(exc.response["Error"]["Message"])}
    return {"code": "ok", "message": ""}


def sale_key(sale_id: str = "2000009101000011") -> dict[str, Any]:
    return {"connection_id": {"S": C}, "sale_id": {"S": sale_id}}


@pytest.mark.stack
def test_every_function_is_checked_against_its_own_deployed_role(stack: EmbeddedStack) -> None:
    iam = stack.aws.iam
    assert iam is not None and stack.aws.enforce_iam
    functions = sorted(
        k for k, r in stack.aws.translated_template["Resources"].items() if r["Type"] == "AWS::Lambda::Function"
    )
    assert iam.functions() == functions
    for logical_id in functions:
        identity = iam.identity(logical_id)
        role = stack.aws.translated_template["Resources"][logical_id]["Properties"]["Role"]["Fn::GetAtt"][0]
        assert identity.role_name == stack.aws.physical_id(role)
        assert identity.function_name == stack.aws.function_name(logical_id)
        assert identity.statements
    # Intrinsics resolved to the deployed names: the app secret by its full ARN (created outside CloudFormation).
    api = iam.identity("ApiFunction")
    app_secret = stack.aws.function_env("ApiFunction")["MELI_APP_SECRET_ID"]
    assert any(app_secret in s.resources for s in api.statements)
    assert allowed(list(api.statements), "sqs:SendMessage", stack_queue_arn(stack))


def stack_queue_arn(stack: EmbeddedStack) -> str:
    sqs = stack.aws.client("sqs")
    url = stack.aws.physical_id("BulkQueue")
    return str(sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"])


@pytest.mark.stack
def test_a_function_calling_outside_its_policy_fails_as_in_aws(stack: EmbeddedStack) -> None:
    env = stack.aws.function_env("VerifyFunction")
    verify = stack.aws.iam.identity("VerifyFunction")  # type: ignore[union-attr]
    marker = f"iam-probe-{uuid.uuid4().hex[:8]}"
    product = f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{env['PRODUCT_LINKS_TABLE']}"

    def calls() -> dict[str, Any]:
        dynamodb, sns = boto3.client("dynamodb"), boto3.client("sns")
        return {
            # inside its policy: its own tables (read and write), its secrets by name
            "get_sale": outcome(lambda: dynamodb.get_item(TableName=os.environ["SALES_TABLE"], Key=sale_key())),
            "query_index": outcome(
                lambda: dynamodb.query(
                    TableName=os.environ["SALES_TABLE"],
                    IndexName="DueIndex",
                    KeyConditionExpression="connection_id = :c",
                    ExpressionAttributeValues={":c": {"S": C}},
                )
            ),
            "app_secret_by_name": outcome(
                lambda: boto3.client("secretsmanager").get_secret_value(SecretId="sales-recovery/local/meli-app")
            ),
            # outside it: Verify pages nobody, and only reads the product links
            "publish": outcome(lambda: sns.publish(TopicArn=os.environ["HELP_DESK_TOPIC_ARN"], Message=marker)),
            "write_product": outcome(
                lambda: dynamodb.put_item(
                    TableName=os.environ["PRODUCT_LINKS_TABLE"],
                    Item={"connection_id": {"S": C}, "listing_key": {"S": marker}},
                )
            ),
            "other_stage_secret": outcome(
                lambda: boto3.client("secretsmanager").get_secret_value(SecretId="sales-recovery/prod/connections/x")
            ),
            "thread": os.environ["AWS_LAMBDA_FUNCTION_NAME"],
        }

    with stack.aws.runtime.intercept("VerifyFunction", probe(calls)):
        answer = stack.aws.runtime.invoke("VerifyFunction", {})

    assert answer["thread"] == verify.function_name
    assert answer["get_sale"]["code"] == answer["query_index"]["code"] == "ok"
    assert answer["app_secret_by_name"]["code"] == "ok"
    assert answer["publish"] == {
        "code": "AuthorizationError",
        "message": f"User: {verify.principal_arn} is not authorized to perform: SNS:Publish on resource: "
        f"{env['HELP_DESK_TOPIC_ARN']} because no identity-based policy allows the SNS:Publish action",
    }
    assert answer["write_product"] == {
        "code": "AccessDeniedException",
        "message": f"User: arn:aws:sts::{ACCOUNT}:assumed-role/{verify.role_name}/sales-recovery-local-verify is not "
        f"authorized to perform: dynamodb:PutItem on resource: {product} because no identity-based policy allows "
        "the dynamodb:PutItem action",
    }
    assert answer["other_stage_secret"]["code"] == "AccessDeniedException"
    # nothing reached AWS: no page, no item
    assert not [m for m in stack.help_desk_messages() if marker in json.dumps(m)]
    got = stack.aws.client("dynamodb").get_item(
        TableName=env["PRODUCT_LINKS_TABLE"], Key={"connection_id": {"S": C}, "listing_key": {"S": marker}}
    )
    assert "Item" not in got


@pytest.mark.stack
def test_calls_outside_an_invocation_are_not_checked(stack: EmbeddedStack) -> None:
    # The test, the poller and the API server call as themselves: only functions are held to their roles.
    env = stack.aws.function_env("VerifyFunction")
    stack.aws.client("sns").publish(TopicArn=env["HELP_DESK_TOPIC_ARN"], Message="from the test")
    stack.aws.client("dynamodb").put_item(
        TableName=env["PRODUCT_LINKS_TABLE"], Item={"connection_id": {"S": "other"}, "listing_key": {"S": "x"}}
    )


@pytest.mark.stack
def test_threads_a_handler_starts_are_held_to_its_role(stack: EmbeddedStack) -> None:
    from concurrent.futures import ThreadPoolExecutor

    topic = stack.aws.function_env("VerifyFunction")["HELP_DESK_TOPIC_ARN"]

    def calls() -> dict[str, Any]:
        with ThreadPoolExecutor(max_workers=1) as pool:
            return pool.submit(
                lambda: outcome(lambda: boto3.client("sns").publish(TopicArn=topic, Message="t"))
            ).result()

    with stack.aws.runtime.intercept("VerifyFunction", probe(calls)):
        assert stack.aws.runtime.invoke("VerifyFunction", {})["code"] == "AuthorizationError"


@pytest.mark.stack
def test_an_explicit_deny_added_to_a_role_wins(stack: EmbeddedStack) -> None:
    iam = stack.aws.iam
    assert iam is not None
    verify = iam.identity("VerifyFunction")
    (no_deletes,) = parse_statements(
        {"Statement": {"Effect": "Deny", "Action": "dynamodb:Delete*", "Resource": "arn:aws:dynamodb:*:*:table/*"}}
    )
    stricter = FunctionIdentity(**{**verify.__dict__, "statements": (*verify.statements, no_deletes)})

    def calls() -> dict[str, Any]:
        table = os.environ["SALES_TABLE"]
        return outcome(lambda: boto3.client("dynamodb").delete_item(TableName=table, Key=sale_key("0")))

    with stack.aws.runtime.intercept("VerifyFunction", probe(calls)), iam.replaced(stricter):
        answer = stack.aws.runtime.invoke("VerifyFunction", {})
    assert answer["code"] == "AccessDeniedException"
    assert answer["message"].endswith("with an explicit deny in an identity-based policy")
    with stack.aws.runtime.intercept("VerifyFunction", probe(calls)):
        assert stack.aws.runtime.invoke("VerifyFunction", {})["code"] == "ok"  # the deployed role allows it


@pytest.mark.stack
def test_the_api_fails_when_its_role_loses_the_sales_table(stack: EmbeddedStack) -> None:
    iam, api = stack.aws.iam, stack.api
    assert iam is not None and api is not None
    sales = stack.aws.physical_id("SalesTable")
    without_sales = iam.identity("ApiFunction").without(lambda s: any(f"table/{sales}" in r for r in s.resources))
    path = f"/connections/{C}/sales/2000009101000011"
    before = len(iam.denials)
    with httpx.Client(base_url=api.url, timeout=30) as http:
        with iam.replaced(without_sales):
            refused = http.get(path)
        served = http.get(path)
    assert refused.status_code >= 500, refused.text
    denial = iam.denials[before]
    assert denial.function == "ApiFunction"
    assert denial.action.startswith("dynamodb:") and f"table/{sales}" in denial.resource
    assert served.status_code < 500, served.text  # with the deployed role: the sale's answer (never seen: 404)


@pytest.mark.stack
def test_suspended_lets_every_call_through(stack: EmbeddedStack) -> None:
    iam = stack.aws.iam
    assert iam is not None
    topic = stack.aws.function_env("VerifyFunction")["HELP_DESK_TOPIC_ARN"]

    def calls() -> dict[str, Any]:
        return outcome(lambda: boto3.client("sns").publish(TopicArn=topic, Message="suspended"))

    with stack.aws.runtime.intercept("VerifyFunction", probe(calls)):
        with iam.suspended():
            assert stack.aws.runtime.invoke("VerifyFunction", {})["code"] == "ok"
        assert stack.aws.runtime.invoke("VerifyFunction", {})["code"] == "AuthorizationError"


@pytest.mark.stack
def test_an_unmapped_call_inside_a_function_raises(stack: EmbeddedStack) -> None:
    iam = stack.aws.iam
    assert iam is not None

    def calls() -> dict[str, Any]:
        boto3.client("ssm").get_parameter(Name="/sales-recovery/anything")
        return {}

    with stack.aws.runtime.intercept("VerifyFunction", probe(calls)), pytest.raises(UnmappedApiCall) as raised:
        stack.aws.runtime.invoke("VerifyFunction", {})
    assert "ssm:GetParameter" in str(raised.value) and "VerifyFunction" in str(raised.value)
    assert iam.unmapped[-1] == "ssm:GetParameter"
    iam.unmapped.clear()  # reported once here; the stack's stop would log it again


_counter = iter(range(1, 10_000))


def new_sale(stack: EmbeddedStack) -> str:
    order = copy.deepcopy(stack.meli.order(2000009101000011))
    assert order is not None
    order["id"] = 2000009400000000 + next(_counter) * 10 + int(time.time()) % 7
    order["pack_id"] = None  # a sale of its own: a copy must not join the template's pack
    order["shipping"] = {"id": None}
    stack.meli.upsert_order(order)
    return str(order["id"])


@pytest.mark.stack
def test_a_relink_runs_with_every_task_checked_and_allowed(stack: EmbeddedStack) -> None:
    iam = stack.aws.iam
    assert iam is not None
    before = iam.checked()
    denials = len(iam.denials)
    sale = new_sale(stack)
    result = stack.run_execution({"connection_id": C, "sale_id": sale}, name=f"iam-{uuid.uuid4().hex[:12]}")
    assert result["status"] == "SUCCEEDED", result
    assert result["output"]["outcome"] == "reflected"
    during = iam.checked() - before
    assert {function for function, *_ in during} >= {"VerifyFunction", "RelinkFunction"}
    assert all(allowed for *_, allowed in during), [k for k in during if not k[3]]
    assert iam.denials[denials:] == []


@pytest.mark.stack
def test_an_escalation_runs_with_every_task_allowed(stack: EmbeddedStack) -> None:
    iam = stack.aws.iam
    assert iam is not None
    denials = len(iam.denials)
    sale = new_sale(stack)
    stack.meli.add_fault({"path": f"^/orders/{sale}$", "kind": "status", "status": 503, "times": None})
    result = stack.run_execution({"connection_id": C, "sale_id": sale}, name=f"iam-{uuid.uuid4().hex[:12]}")
    denied = [(d.function, d.action, d.resource, d.where) for d in iam.denials[denials:]]
    # Found by this enforcement: the Escalate task read the connection (dynamodb:GetItem on the connections table),
    # which EscalateFunction's role does not grant, so in AWS every escalation failed. Paging needs no connection:
    # the task no longer reads it (least privilege kept).
    assert denied == [], "a function called outside its role (see devstack.iam): " + repr(denied)
    assert result["status"] == "SUCCEEDED", result
    assert result["output"]["outcome"] == "escalated"


def test_enforcement_can_be_switched_off_per_stack_or_per_process(monkeypatch: pytest.MonkeyPatch) -> None:
    assert LocalAws().enforce_iam
    assert not LocalAws(enforce_iam=False).enforce_iam
    assert not EmbeddedStack(stack_scenario(), enforce_iam=False).aws.enforce_iam
    monkeypatch.setenv("DEVSTACK_ENFORCE_IAM", "0")
    assert not LocalAws().enforce_iam
    assert LocalAws(enforce_iam=True).enforce_iam


# --- issue #12, cases 1 and 2: the policies the template had, against the calls the code makes -------------------


def read_only_on(identity: FunctionIdentity, tables: list[str]) -> FunctionIdentity:
    """``identity`` with only DynamoDBReadPolicy's actions on ``tables`` (what Verify's role had before #12)."""
    arns = [f"arn:aws:dynamodb:{REGION}:{ACCOUNT}:table/{t}" for t in tables]
    kept = identity.without(lambda s: any(arn in r for r in s.resources for arn in arns))
    read = parse_statements(
        {
            "Statement": {
                "Effect": "Allow",
                "Action": [
                    "dynamodb:GetItem",
                    "dynamodb:Scan",
                    "dynamodb:Query",
                    "dynamodb:BatchGetItem",
                    "dynamodb:DescribeTable",
                ],
                "Resource": [*arns, *(f"{arn}/index/*" for arn in arns)],
            }
        }
    )
    return FunctionIdentity(**{**kept.__dict__, "statements": (*kept.statements, *read)})


def cancelled_sale(stack: EmbeddedStack) -> str:
    sale = new_sale(stack)
    order = stack.meli.order(int(sale))
    assert order is not None
    stack.meli.upsert_order({**order, "status": "cancelled", "cancel_detail": {"group": "buyer", "code": "buyer"}})
    return sale


@pytest.mark.stack
def test_case_1_a_blocked_sale_is_settled_by_verify_and_pages_nobody(stack: EmbeddedStack) -> None:
    iam = stack.aws.iam
    assert iam is not None
    before = len(iam.denials)
    sale = cancelled_sale(stack)
    result = stack.run_execution({"connection_id": C, "sale_id": sale}, name=f"iam-{uuid.uuid4().hex[:12]}")
    assert iam.denials[before:] == []
    assert result["status"] == "SUCCEEDED", result
    assert (result["output"]["outcome"], result["output"]["reason"]) == ("not_reflectable", "sale_cancelled")
    assert not [m for m in stack.help_desk_messages() if sale in json.dumps(m)]

    # With Verify's role as the template had it (read-only on sales and sale-errors), AWS refuses Verify's write of
    # the outcome; the catch-all then escalates a blocked sale: the page the design promises never to send.
    sales, errors = stack.aws.physical_id("SalesTable"), stack.aws.physical_id("SaleErrorsTable")
    old_role = read_only_on(iam.identity("VerifyFunction"), [sales, errors])
    sale = cancelled_sale(stack)
    with iam.replaced(old_role):
        result = stack.run_execution({"connection_id": C, "sale_id": sale}, name=f"iam-{uuid.uuid4().hex[:12]}")
    denied = {(d.function, d.action) for d in iam.denials[before:]}
    assert ("VerifyFunction", "dynamodb:TransactWriteItems") in denied or any(
        f == "VerifyFunction" and a in ("dynamodb:PutItem", "dynamodb:UpdateItem") for f, a in denied
    ), denied
    assert result["output"]["outcome"] != "not_reflectable", result
    iam.denials[before:] = []  # seen and asserted here


@pytest.mark.stack
def test_case_2_the_bulk_worker_may_describe_the_execution_it_finds_started(stack: EmbeddedStack) -> None:
    """A redelivered message whose first delivery started the execution: StartExecution answers
    ExecutionAlreadyExists once that execution closed, and the worker asks DescribeExecution how it ended."""
    from shared.models import ExecutionRef
    from shared.settings import Settings
    from shared.wiring import build_service

    iam = stack.aws.iam
    assert iam is not None
    sale = new_sale(stack)
    name = f"iam-{uuid.uuid4().hex[:12]}"
    ended = stack.run_execution({"connection_id": C, "sale_id": sale}, name=name)
    assert ended["status"] == "SUCCEEDED", ended

    def calls() -> dict[str, Any]:
        workflow = build_service(Settings.from_env(), workflow=True).workflow
        assert workflow is not None
        execution = ExecutionRef(execution_arn=workflow.arn_for(name), name=name)
        return outcome(lambda: workflow.ensure_started(C, sale, execution))

    before = len(iam.denials)
    with stack.aws.runtime.intercept("BulkWorkerFunction", probe(calls)):
        assert stack.aws.runtime.invoke("BulkWorkerFunction", {})["code"] == "ok"
    assert iam.denials[before:] == []

    # Without the DescribeExecution grant (StepFunctionsExecutionPolicy gives StartExecution only), AWS refuses it:
    # the message fails on every delivery and ends in the DLQ.
    start_only = iam.identity("BulkWorkerFunction").without(
        lambda s: any(a.lower() == "states:describeexecution" for a in s.actions)
    )
    with stack.aws.runtime.intercept("BulkWorkerFunction", probe(calls)), iam.replaced(start_only):
        answer = stack.aws.runtime.invoke("BulkWorkerFunction", {})
    assert answer["code"] == "AccessDeniedException", answer
    assert "states:DescribeExecution" in answer["message"]
    iam.denials[before:] = []
