"""IAM on the local stack: every AWS call a Lambda function makes is authorised against that function's own role.

In the cloud a function calling outside its role's policy gets ``AccessDenied``; without this module the local stack
lets it through, and the missing permission is found only after a deploy. ``IamEnforcer`` closes that gap.

How
---
* **Policies**: from ``LocalAws.translated_template`` (SAM policy templates are already expanded there): each
  function's ``Role`` (``Fn::GetAtt [<Role>, Arn]``) -> that ``AWS::IAM::Role`` -> its inline ``Policies``, plus
  ``AWS::IAM::Policy`` / ``AWS::IAM::ManagedPolicy`` resources of the stack attached to it, plus the AWS-managed
  policies of ``MANAGED_POLICIES``. Intrinsics are resolved by moto's own resolver (``clean_json``) against the
  deployed stack's resource map, as ``LocalAws._recreate_state_machines`` does, so table names, queue, topic and
  state machine ARNs are the deployed ones; secrets (created outside CloudFormation by
  ``LocalAws._create_unsupported``) are already inlined as their ARNs. A fragment moto leaves unresolved (an intrinsic
  still present, ``${...}`` left in a string) is an ``IamModelError`` at deploy, never a silent grant or denial.
* **Calls**: ``botocore.client.BaseClient._make_api_call`` is wrapped (every client of every session, boto3 resources
  included: ``Table.get_item`` ends in the client's ``GetItem``). A call is checked only when the calling thread runs
  a function invocation of the stack, i.e. its environment's ``AWS_LAMBDA_FUNCTION_NAME`` (set per invocation by
  ``devstack.lambdas``, inherited by the threads a handler starts) names a function of the template. Calls by tests,
  the SQS poller, the execution-events delivery, the API server and moto's Step Functions interpreter carry no such
  name and are not checked.
* **Mapping**: ``authorisations()`` turns one API call into the IAM (action, resource ARN) pairs AWS checks: DynamoDB
  per table and index (``Query``/``Scan`` with ``IndexName`` -> ``table/T/index/I``; ``BatchGetItem`` and
  ``BatchWriteItem`` per table; ``TransactWriteItems`` per item: Put -> ``PutItem``, Update -> ``UpdateItem``, Delete
  -> ``DeleteItem``, ConditionCheck -> ``ConditionCheckItem``; ``TransactGetItems`` -> ``GetItem``), SQS (the queue
  ARN from the ``QueueUrl``; ``SendMessageBatch`` -> ``sqs:SendMessage``, ``DeleteMessageBatch`` ->
  ``sqs:DeleteMessage``), SNS, Step Functions, Secrets Manager (a ``SecretId`` name or partial ARN is resolved to the
  secret's full ARN, with its ``-XXXXXX`` suffix, through moto), KMS (aliases resolved to the key ARN) and Lambda. A
  call with no mapping raises ``UnmappedApiCall`` naming the operation, so the mapping gets completed rather than the
  call silently allowed.
* **Evaluation**: ``evaluate()``: ``Allow``/``Deny``; ``Action`` and ``NotAction`` (``service:Action``,
  case-insensitive, ``*``/``?`` wildcards); ``Resource`` and ``NotResource`` (ARN matching per colon-separated
  component, case-sensitive, ``*``/``?`` wildcards); ``Condition`` with the operators of ``_OPERATORS`` (String*,
  Arn*, Numeric*, Bool, Null; the ``...IfExists`` suffix and the ``ForAnyValue:``/``ForAllValues:`` prefixes). An
  explicit Deny wins; no Allow is an implicit deny.
* **Failing as AWS fails**: a denied call raises botocore's ``ClientError`` (the client's modeled class for the code
  when it has one) before any request is sent, with the code and message shape each service answers:
  ``AccessDeniedException`` (DynamoDB, Step Functions, Secrets Manager, KMS, Lambda), ``AccessDenied`` (SQS, which also
  writes the action in lower case) and ``AuthorizationError`` (SNS, which writes ``SNS:Publish``). The message is
  "User: arn:aws:sts::<account>:assumed-role/<role name>/<function name> is not authorized to perform: <action> on
  resource: <arn> because no identity-based policy allows the <action> action" (or "... with an explicit deny in an
  identity-based policy").

Switches and records
--------------------
On for every ``LocalAws`` (hence every ``EmbeddedStack``) once deployed, as ``LocalAws.iam``. Off for one stack with
``enforce_iam=False``, for the whole process with ``DEVSTACK_ENFORCE_IAM=0``, for a block with ``aws.iam.suspended()``.
``aws.iam.replaced(aws.iam.identity("X").without(...))`` evaluates a function against a changed policy set (tests).
``aws.iam.checked()`` counts every (function, action, resource, allowed) checked; ``aws.iam.denials`` lists the
denials with the application frames that made the call; ``DEVSTACK_IAM_LOG=<file>`` appends each denial and unmapped
call as a JSON line (with the running test's name), to review what a whole test run was refused.

Why not moto's own IAM
----------------------
moto can authorise requests (``INITIAL_NO_AUTH_ACTION_COUNT``), but its evaluation is "very basic" (moto docs,
``iam.rst``; conditions only partly), and it authorises by access key: every function would need its own IAM role
and credentials in moto, and every boto3 client would have to sign with the credentials of whichever function is
running. Here the ``shared`` package's clients are built once per process and shared by all functions and threads
(``shared.wiring``), so the caller is known only per thread, which is exactly what a ``_make_api_call`` hook sees.

What is enforced, and what is not
---------------------------------
Enforced: the identity-based policies of each function's role (inline, stack-managed, and the AWS-managed ones
modelled below), for every call a function makes through botocore. Condition keys in the request context:
``aws:PrincipalArn``, ``aws:PrincipalAccount``, ``aws:PrincipalType``, ``aws:RequestedRegion``,
``aws:SecureTransport`` and, for KMS, ``kms:CallerAccount``; any other key is absent from the request (so
``kms:ViaService`` is absent for a direct KMS call, as in AWS).

Not modelled: resource-based policies (queue, topic, secret and key policies), KMS key policies and grants, the KMS
calls a service makes on the caller's behalf for encrypted tables, queues, topics and secrets (``kms:ViaService``),
permissions boundaries (a role with one is an ``IamModelError``), session policies, SCPs and RCPs, service-specific
condition keys (``dynamodb:LeadingKeys``...), policy variables (``${aws:username}``), date and IP operators (an
``IamModelError`` at deploy). The state machine's own role is not applied to its Lambda tasks (moto's interpreter
invokes them), nor is Lambda's SQS poller role (``devstack.sqs_poller`` polls for it).

AWS-managed policies are modelled by the actions they grant (``MANAGED_POLICIES``); a role with another one is an
``IamModelError`` until it is added there.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import re
import threading
import uuid
from collections import Counter
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field, replace
from functools import lru_cache
from typing import TYPE_CHECKING, Any, Protocol, Self
from urllib.parse import urlparse

if TYPE_CHECKING:
    from devstack.aws import LocalAws

log = logging.getLogger(__name__)

ENFORCE_ENV = "DEVSTACK_ENFORCE_IAM"  # "0" switches enforcement off for every local stack of the process
LOG_ENV = "DEVSTACK_IAM_LOG"  # a file path: every denial and unmapped call is appended there as a JSON line


class IamModelError(RuntimeError):
    """The template's policies cannot be modelled faithfully (unresolved intrinsic, unknown managed policy...)."""


class UnmappedApiCall(RuntimeError):
    """A function made an API call this module cannot map to IAM actions: add it to ``_MAPPERS``."""


# --------------------------------------------------------------------------------------------------------------------
# Policies


@dataclass(frozen=True)
class Condition:
    """One ``operator: {key: values}`` entry of a statement's ``Condition`` (keys lower-cased: IAM ignores case)."""

    operator: str  # as written, e.g. "StringEqualsIfExists" or "ForAnyValue:StringLike"
    key: str
    values: tuple[str, ...]


@dataclass(frozen=True)
class Statement:
    effect: str  # "Allow" | "Deny"
    actions: tuple[str, ...] = ()
    not_actions: tuple[str, ...] | None = None
    resources: tuple[str, ...] = ()
    not_resources: tuple[str, ...] | None = None
    conditions: tuple[Condition, ...] = ()
    sid: str = ""
    source: str = ""  # "<role>/<policy name>" or the managed policy's name

    def applies_to(self, request: Request) -> bool:
        if self.not_actions is not None:
            if any(_action_matches(p, request.action) for p in self.not_actions):
                return False
        elif not any(_action_matches(p, request.action) for p in self.actions):
            return False
        if self.not_resources is not None:
            if any(_arn_matches(p, request.resource) for p in self.not_resources):
                return False
        elif not any(_arn_matches(p, request.resource) for p in self.resources):
            return False
        return all(_condition_holds(c, request.context) for c in self.conditions)


def parse_statements(document: Mapping[str, Any], *, source: str = "") -> tuple[Statement, ...]:
    """A policy document (already resolved: strings only) -> statements. Raises ``IamModelError`` on anything this
    module would evaluate wrongly."""
    raw = document.get("Statement", [])
    return tuple(_parse_statement(s, f"{source}[{i}]") for i, s in enumerate(raw if isinstance(raw, list) else [raw]))


def _parse_statement(raw: Any, where: str) -> Statement:
    if not isinstance(raw, Mapping):
        raise IamModelError(f"{where}: a statement must be an object, got {raw!r}")
    _check_resolved(raw, where)
    effect = raw.get("Effect")
    if effect not in ("Allow", "Deny"):
        raise IamModelError(f"{where}: Effect must be Allow or Deny, got {effect!r}")
    if ("Action" in raw) == ("NotAction" in raw):
        raise IamModelError(f"{where}: exactly one of Action and NotAction")
    if ("Resource" in raw) == ("NotResource" in raw):
        raise IamModelError(f"{where}: exactly one of Resource and NotResource (identity policies name resources)")
    conditions = []
    for operator, entries in (raw.get("Condition") or {}).items():
        _operator_test(operator, where)  # unsupported operators fail now, not at the first call
        if not isinstance(entries, Mapping):
            raise IamModelError(f"{where}: Condition {operator} must map keys to values")
        for key, values in entries.items():
            conditions.append(
                Condition(operator, str(key).lower(), tuple(_condition_value(v) for v in _listed(values)))
            )
    return Statement(
        effect=effect,
        actions=_strings(raw.get("Action"), where) if "Action" in raw else (),
        not_actions=_strings(raw["NotAction"], where) if "NotAction" in raw else None,
        resources=_strings(raw.get("Resource"), where) if "Resource" in raw else (),
        not_resources=_strings(raw["NotResource"], where) if "NotResource" in raw else None,
        conditions=tuple(conditions),
        sid=str(raw.get("Sid", "")),
        source=where,
    )


def _listed(value: Any) -> list[Any]:
    return [v for v in (value if isinstance(value, list) else [value]) if v is not None]  # None: AWS::NoValue


def _strings(value: Any, where: str) -> tuple[str, ...]:
    items = _listed(value)
    if not all(isinstance(i, str) for i in items):
        raise IamModelError(f"{where}: expected strings, got {value!r}")
    return tuple(items)


def _condition_value(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float | str):
        return str(value)
    raise IamModelError(f"condition value {value!r} is not a string")


def _check_resolved(node: Any, where: str) -> None:
    """moto's ``clean_json`` leaves what it cannot resolve (a Ref to a resource it does not create, a GetAtt it does
    not know) as the intrinsic itself, or as a string with ``${...}`` still in it: refuse both."""
    if isinstance(node, Mapping):
        left = [k for k in node if k == "Ref" or str(k).startswith("Fn::")]
        if left:
            raise IamModelError(f"{where}: intrinsic {dict(node)!r} is unresolved on the deployed stack")
        for value in node.values():
            _check_resolved(value, where)
    elif isinstance(node, list):
        for value in node:
            _check_resolved(value, where)
    elif isinstance(node, str) and "${" in node:
        raise IamModelError(f"{where}: {node!r} still holds a substitution (policy variables are not modelled)")


# AWS-managed policies SAM attaches, by name: the statements they grant (their current documents, reduced to the
# actions and resources; every one of them is "Resource": "*").
MANAGED_POLICIES: dict[str, tuple[Statement, ...]] = {
    "AWSLambdaBasicExecutionRole": (
        Statement("Allow", ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"), resources=("*",)),
    ),
    "AWSXrayWriteOnlyAccess": (
        Statement(
            "Allow",
            (
                "xray:PutTraceSegments",
                "xray:PutTelemetryRecords",
                "xray:GetSamplingRules",
                "xray:GetSamplingTargets",
                "xray:GetSamplingStatisticSummaries",
            ),
            resources=("*",),
        ),
    ),
    "AWSLambdaSQSQueueExecutionRole": (
        Statement(
            "Allow",
            ("sqs:ReceiveMessage", "sqs:DeleteMessage", "sqs:GetQueueAttributes"),
            resources=("*",),
        ),
        Statement("Allow", ("logs:CreateLogGroup", "logs:CreateLogStream", "logs:PutLogEvents"), resources=("*",)),
    ),
    "AmazonAPIGatewayPushToCloudWatchLogs": (
        Statement(
            "Allow",
            (
                "logs:CreateLogGroup",
                "logs:CreateLogStream",
                "logs:DescribeLogGroups",
                "logs:DescribeLogStreams",
                "logs:PutLogEvents",
                "logs:GetLogEvents",
                "logs:FilterLogEvents",
            ),
            resources=("*",),
        ),
    ),
}
_AWS_MANAGED_ARN = re.compile(r"^arn:aws[\w-]*:iam::aws:policy/(?:.+/)?([^/]+)$")


@dataclass(frozen=True)
class FunctionIdentity:
    """A template function as IAM sees it while it runs: its role's session and that role's statements."""

    logical_id: str
    function_name: str
    role_logical_id: str
    role_name: str
    account: str
    statements: tuple[Statement, ...]

    @property
    def principal_arn(self) -> str:
        """The caller AWS names in an access-denied message: the role session Lambda opens for the function."""
        return f"arn:aws:sts::{self.account}:assumed-role/{self.role_name}/{self.function_name}"

    @property
    def role_arn(self) -> str:
        return f"arn:aws:iam::{self.account}:role/{self.role_name}"

    def without(self, drop: Callable[[Statement], bool]) -> FunctionIdentity:
        """A copy without the statements ``drop`` selects (tests: "what if the template lacked this grant")."""
        return replace(self, statements=tuple(s for s in self.statements if not drop(s)))


def function_identities(
    template: Mapping[str, Any],
    resolve: Callable[[Any], Any],
    *,
    physical_ids: Mapping[str, str],
    functions: Mapping[str, str],
    account: str,
) -> dict[str, FunctionIdentity]:
    """``functions`` (logical id -> deployed name) -> their identities, by logical id.

    ``template`` is the translated (CloudFormation) template; ``resolve`` resolves intrinsics against the deployed
    stack; ``physical_ids`` maps logical ids to physical ids (role names, managed policy ARNs).
    """
    resources: Mapping[str, Any] = template.get("Resources", {})
    identities = {}
    for logical_id, function_name in functions.items():
        props = resources.get(logical_id, {}).get("Properties", {})
        role_ref = props.get("Role")
        get_att = role_ref.get("Fn::GetAtt") if isinstance(role_ref, Mapping) else None
        if isinstance(get_att, str):
            get_att = get_att.split(".", 1)
        if not (isinstance(get_att, list) and len(get_att) == 2 and get_att[1] == "Arn"):
            raise IamModelError(f"{logical_id}: Role {role_ref!r} is not a role of the stack; its policies are unknown")
        role_id = str(get_att[0])
        role = resources.get(role_id, {})
        if role.get("Type") != "AWS::IAM::Role":
            raise IamModelError(f"{logical_id}: Role {role_id} is not an AWS::IAM::Role")
        role_name = physical_ids.get(role_id)
        if not role_name:
            raise IamModelError(f"{logical_id}: role {role_id} was not deployed")
        identities[logical_id] = FunctionIdentity(
            logical_id=logical_id,
            function_name=function_name,
            role_logical_id=role_id,
            role_name=role_name,
            account=account,
            statements=_role_statements(resources, role_id, role_name, resolve, physical_ids),
        )
    return identities


def _role_statements(
    resources: Mapping[str, Any],
    role_id: str,
    role_name: str,
    resolve: Callable[[Any], Any],
    physical_ids: Mapping[str, str],
) -> tuple[Statement, ...]:
    props = resources[role_id].get("Properties", {})
    if props.get("PermissionsBoundary"):
        raise IamModelError(f"{role_id}: permissions boundaries are not modelled")
    statements: list[Statement] = []
    for policy in props.get("Policies", []):
        name = policy.get("PolicyName", "?")
        statements += parse_statements(resolve(policy["PolicyDocument"]), source=f"{role_id}/{name}")
    stack_managed = {physical_ids.get(k): k for k, r in resources.items() if r.get("Type") == "AWS::IAM::ManagedPolicy"}
    attached: set[str] = set()
    for arn_fragment in props.get("ManagedPolicyArns", []):
        arn = resolve(arn_fragment)
        if isinstance(arn_fragment, Mapping) and arn_fragment.get("Ref") in resources:
            attached.add(str(arn_fragment["Ref"]))
        elif isinstance(arn, str) and arn in stack_managed:
            attached.add(str(stack_managed[arn]))
        elif isinstance(arn, str) and (match := _AWS_MANAGED_ARN.match(arn)):
            modelled = MANAGED_POLICIES.get(match.group(1))
            if modelled is None:
                raise IamModelError(
                    f"{role_id}: AWS-managed policy {arn} is not modelled; add what it grants to MANAGED_POLICIES"
                )
            statements += [replace(s, source=match.group(1)) for s in modelled]
        else:
            raise IamModelError(f"{role_id}: managed policy {arn_fragment!r} resolved to {arn!r}, which is unknown")
    # Policies of the stack that name the role (AWS::IAM::Policy always does; a managed policy may, by Roles).
    for logical_id, res in resources.items():
        if res.get("Type") not in ("AWS::IAM::Policy", "AWS::IAM::ManagedPolicy"):
            continue
        if "Condition" in res and logical_id not in physical_ids:
            continue  # its condition was false: not deployed
        roles = res.get("Properties", {}).get("Roles", [])
        if logical_id in attached or any(r == {"Ref": role_id} or resolve(r) == role_name for r in roles):
            document = resolve(res["Properties"]["PolicyDocument"])
            statements += parse_statements(document, source=logical_id)
    return tuple(statements)


# --------------------------------------------------------------------------------------------------------------------
# Evaluation


@dataclass(frozen=True)
class Request:
    """One authorisation question: may the caller do ``action`` on ``resource`` (in this context)?"""

    action: str  # "service:Action"
    resource: str  # an ARN, or "*" for actions without resource types
    context: Mapping[str, tuple[str, ...]] = field(default_factory=dict)  # condition keys, lower-cased


@dataclass(frozen=True)
class Decision:
    allowed: bool
    explicit_deny: bool = False
    statement: Statement | None = None  # the Deny that decided, or the first Allow that matched


def evaluate(statements: Sequence[Statement], request: Request) -> Decision:
    """IAM's identity-policy logic: an explicit Deny wins, then any Allow; otherwise the request is denied."""
    allow: Statement | None = None
    for statement in statements:
        if not statement.applies_to(request):
            continue
        if statement.effect == "Deny":
            return Decision(allowed=False, explicit_deny=True, statement=statement)
        allow = allow or statement
    return Decision(allowed=allow is not None, statement=allow)


@lru_cache(maxsize=4096)
def _wildcard(pattern: str, ignore_case: bool) -> re.Pattern[str]:
    body = "".join(".*" if c == "*" else "." if c == "?" else re.escape(c) for c in pattern)
    return re.compile(body, (re.IGNORECASE if ignore_case else 0) | re.DOTALL)


def _like(pattern: str, value: str, *, ignore_case: bool = False) -> bool:
    return _wildcard(pattern, ignore_case).fullmatch(value) is not None


def _action_matches(pattern: str, action: str) -> bool:
    return _like(pattern, action, ignore_case=True)


def _arn_matches(pattern: str, arn: str) -> bool:
    """IAM ARN matching: each of the six colon-separated components on its own (``*`` does not cross a colon before
    the resource part), case-sensitive."""
    if pattern == "*":
        return True
    wanted, actual = pattern.split(":", 5), arn.split(":", 5)
    if len(wanted) != 6 or len(actual) != 6:
        return _like(pattern, arn)
    return all(_like(p, a) for p, a in zip(wanted, actual, strict=True))


def _numeric(a: str, b: str, compare: Callable[[float, float], bool]) -> bool:
    try:
        return compare(float(a), float(b))
    except ValueError:
        return False


# operator -> (test(context value, policy value), negated?). Negated operators hold when no policy value matches.
_OPERATORS: dict[str, tuple[Callable[[str, str], bool], bool]] = {
    "StringEquals": (lambda v, p: v == p, False),
    "StringNotEquals": (lambda v, p: v == p, True),
    "StringEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), False),
    "StringNotEqualsIgnoreCase": (lambda v, p: v.lower() == p.lower(), True),
    "StringLike": (lambda v, p: _like(p, v), False),
    "StringNotLike": (lambda v, p: _like(p, v), True),
    "ArnEquals": (lambda v, p: _arn_matches(p, v), False),
    "ArnLike": (lambda v, p: _arn_matches(p, v), False),
    "ArnNotEquals": (lambda v, p: _arn_matches(p, v), True),
    "ArnNotLike": (lambda v, p: _arn_matches(p, v), True),
    "NumericEquals": (lambda v, p: _numeric(v, p, float.__eq__), False),
    "NumericNotEquals": (lambda v, p: _numeric(v, p, float.__eq__), True),
    "NumericLessThan": (lambda v, p: _numeric(v, p, float.__lt__), False),
    "NumericLessThanEquals": (lambda v, p: _numeric(v, p, float.__le__), False),
    "NumericGreaterThan": (lambda v, p: _numeric(v, p, float.__gt__), False),
    "NumericGreaterThanEquals": (lambda v, p: _numeric(v, p, float.__ge__), False),
    "Bool": (lambda v, p: v.lower() == p.lower(), False),
}


def _operator_test(operator: str, where: str = "") -> tuple[str, str, bool]:
    """'ForAnyValue:StringLikeIfExists' -> ('ForAnyValue', 'StringLike', if_exists); unknown operators raise."""
    qualifier, _, base = operator.rpartition(":")
    if qualifier not in ("", "ForAnyValue", "ForAllValues"):
        raise IamModelError(f"{where}: condition operator {operator!r} is not modelled")
    if_exists = base.endswith("IfExists") and base != "IfExists"
    base = base.removesuffix("IfExists") if if_exists else base
    if base not in _OPERATORS and base != "Null":
        raise IamModelError(f"{where}: condition operator {operator!r} is not modelled")
    return qualifier, base, if_exists


def _condition_holds(condition: Condition, context: Mapping[str, tuple[str, ...]]) -> bool:
    qualifier, base, if_exists = _operator_test(condition.operator)
    present = context.get(condition.key)
    if base == "Null":  # "true": the key must be absent; "false": present
        return all((v.lower() == "true") == (not present) for v in condition.values)
    if not present:
        if if_exists or qualifier == "ForAllValues":
            return True
        return _OPERATORS[base][1]  # a missing key matches nothing: only negated operators hold
    test, negated = _OPERATORS[base]

    def matches(value: str) -> bool:
        hit = any(test(value, p) for p in condition.values)
        return not hit if negated else hit

    if qualifier == "ForAllValues":
        return all(matches(v) for v in present)
    return any(matches(v) for v in present)  # single-valued keys, and ForAnyValue


# --------------------------------------------------------------------------------------------------------------------
# API call -> IAM actions and resources


class ResourceNames(Protocol):
    """What the mapping must look up in the account (moto's, on the local stack)."""

    account: str

    def secret_arn(self, secret_id: str, region: str) -> str: ...

    def kms_key_arn(self, key_id: str, region: str) -> str: ...


@dataclass(frozen=True)
class ApiCall:
    service: str  # botocore's service name: "dynamodb", "sqs", "sns", "stepfunctions", "secretsmanager", ...
    operation: str  # "PutItem"
    params: Mapping[str, Any]
    region: str


Authorisation = tuple[str, str]  # (IAM action, resource ARN)
_Mapper = Callable[[ApiCall, ResourceNames], list[Authorisation]]


def authorisations(call: ApiCall, names: ResourceNames) -> list[Authorisation]:
    """Every (action, resource) IAM checks for ``call``, in the order AWS would report a denial."""
    mapper = _MAPPERS.get(call.service)
    found = mapper(call, names) if mapper is not None else None
    if not found:
        raise UnmappedApiCall(
            f"devstack.iam has no IAM mapping for {call.service}:{call.operation}; "
            "add it to devstack/iam.py (_MAPPERS) so the call is authorised as in AWS"
        )
    return found


def _table_arn(call: ApiCall, names: ResourceNames, table: str) -> str:
    return table if table.startswith("arn:") else f"arn:aws:dynamodb:{call.region}:{names.account}:table/{table}"


_DYNAMODB_ONE_TABLE = {
    "GetItem",
    "PutItem",
    "UpdateItem",
    "DeleteItem",
    "DescribeTable",
    "DescribeTimeToLive",
    "DescribeContinuousBackups",
    "CreateTable",
    "UpdateTable",
    "DeleteTable",
}
_DYNAMODB_TRANSACT = {
    "Put": "PutItem",
    "Update": "UpdateItem",
    "Delete": "DeleteItem",
    "ConditionCheck": "ConditionCheckItem",
}


def _dynamodb(call: ApiCall, names: ResourceNames) -> list[Authorisation]:
    op, params = call.operation, call.params
    if op in _DYNAMODB_ONE_TABLE:
        return [(f"dynamodb:{op}", _table_arn(call, names, params["TableName"]))]
    if op in ("Query", "Scan"):
        arn = _table_arn(call, names, params["TableName"])
        index = params.get("IndexName")
        return [(f"dynamodb:{op}", f"{arn}/index/{index}" if index else arn)]
    if op in ("BatchGetItem", "BatchWriteItem"):
        return [(f"dynamodb:{op}", _table_arn(call, names, table)) for table in params["RequestItems"]]
    if op == "TransactWriteItems":
        found = []
        for item in params["TransactItems"]:
            ((kind, body),) = item.items()
            found.append((f"dynamodb:{_DYNAMODB_TRANSACT[kind]}", _table_arn(call, names, body["TableName"])))
        return found
    if op == "TransactGetItems":
        return [("dynamodb:GetItem", _table_arn(call, names, i["Get"]["TableName"])) for i in params["TransactItems"]]
    if op in ("ListTables", "DescribeLimits", "DescribeEndpoints"):
        return [(f"dynamodb:{op}", "*")]
    return []


def _queue_arn(call: ApiCall, url: str) -> str:
    """https://sqs.<region>.amazonaws.com/<account>/<name> (or moto's http://127.0.0.1:<port>/<account>/<name>)."""
    parsed = urlparse(url)
    account, _, name = parsed.path.strip("/").rpartition("/")
    host = parsed.hostname or ""
    region = host.split(".")[1] if host.startswith("sqs.") and host.count(".") >= 3 else call.region
    return f"arn:aws:sqs:{region}:{account}:{name}"


_SQS_BY_URL = {
    "SendMessage": "SendMessage",
    "SendMessageBatch": "SendMessage",
    "ReceiveMessage": "ReceiveMessage",
    "DeleteMessage": "DeleteMessage",
    "DeleteMessageBatch": "DeleteMessage",
    "ChangeMessageVisibility": "ChangeMessageVisibility",
    "ChangeMessageVisibilityBatch": "ChangeMessageVisibility",
    "GetQueueAttributes": "GetQueueAttributes",
    "SetQueueAttributes": "SetQueueAttributes",
    "PurgeQueue": "PurgeQueue",
    "DeleteQueue": "DeleteQueue",
    "ListQueueTags": "ListQueueTags",
    "TagQueue": "TagQueue",
    "UntagQueue": "UntagQueue",
    "ListDeadLetterSourceQueues": "ListDeadLetterSourceQueues",
}


def _sqs(call: ApiCall, names: ResourceNames) -> list[Authorisation]:
    op, params = call.operation, call.params
    if op in _SQS_BY_URL:
        return [(f"sqs:{_SQS_BY_URL[op]}", _queue_arn(call, params["QueueUrl"]))]
    if op in ("GetQueueUrl", "CreateQueue"):
        account = params.get("QueueOwnerAWSAccountId") or names.account
        return [(f"sqs:{op}", f"arn:aws:sqs:{call.region}:{account}:{params['QueueName']}")]
    if op == "ListQueues":
        return [("sqs:ListQueues", "*")]
    return []


def _sns(call: ApiCall, names: ResourceNames) -> list[Authorisation]:
    op, params = call.operation, call.params
    if op == "Publish":
        target = params.get("TopicArn") or params.get("TargetArn") or params.get("PhoneNumber")
        return [("sns:Publish", str(target))] if target else []
    if op == "PublishBatch":
        return [("sns:Publish", params["TopicArn"])]
    if op in ("GetTopicAttributes", "SetTopicAttributes", "Subscribe", "ListSubscriptionsByTopic", "DeleteTopic"):
        return [(f"sns:{op}", params["TopicArn"])]
    if op == "CreateTopic":
        return [("sns:CreateTopic", f"arn:aws:sns:{call.region}:{names.account}:{params['Name']}")]
    if op == "ListTopics":
        return [("sns:ListTopics", "*")]
    return []


_STATES_BY_PARAM = {
    "StartExecution": "stateMachineArn",
    "StartSyncExecution": "stateMachineArn",
    "ListExecutions": "stateMachineArn",
    "DescribeStateMachine": "stateMachineArn",
    "DescribeExecution": "executionArn",
    "StopExecution": "executionArn",
    "GetExecutionHistory": "executionArn",
    "DescribeStateMachineForExecution": "executionArn",
    "RedriveExecution": "executionArn",
}


def _states(call: ApiCall, names: ResourceNames) -> list[Authorisation]:
    param = _STATES_BY_PARAM.get(call.operation)
    if param is not None:
        return [(f"states:{call.operation}", call.params[param])]
    if call.operation == "ListStateMachines":
        return [("states:ListStateMachines", "*")]
    return []


_SECRETS_BY_ID = {
    "GetSecretValue",
    "PutSecretValue",
    "DescribeSecret",
    "UpdateSecret",
    "DeleteSecret",
    "RestoreSecret",
    "RotateSecret",
    "CancelRotateSecret",
    "UpdateSecretVersionStage",
    "ListSecretVersionIds",
    "GetResourcePolicy",
    "TagResource",
    "UntagResource",
}


def _secretsmanager(call: ApiCall, names: ResourceNames) -> list[Authorisation]:
    op, params = call.operation, call.params
    if op in _SECRETS_BY_ID:
        return [(f"secretsmanager:{op}", names.secret_arn(params["SecretId"], call.region))]
    if op == "CreateSecret":  # the ARN the new secret will have; its random suffix is not known before
        return [("secretsmanager:CreateSecret", names.secret_arn(params["Name"], call.region))]
    if op in ("ListSecrets", "GetRandomPassword"):
        return [(f"secretsmanager:{op}", "*")]
    return []


_KMS_BY_KEY = {
    "Encrypt",
    "Decrypt",
    "GenerateDataKey",
    "GenerateDataKeyWithoutPlaintext",
    "GenerateDataKeyPair",
    "DescribeKey",
    "GetPublicKey",
    "Sign",
    "Verify",
    "GenerateMac",
    "VerifyMac",
}


def _kms(call: ApiCall, names: ResourceNames) -> list[Authorisation]:
    op, params = call.operation, call.params
    if op in _KMS_BY_KEY and params.get("KeyId"):  # Decrypt without KeyId would need the key read off the blob
        return [(f"kms:{op}", names.kms_key_arn(params["KeyId"], call.region))]
    if op == "ReEncrypt" and params.get("SourceKeyId"):
        return [
            ("kms:ReEncryptFrom", names.kms_key_arn(params["SourceKeyId"], call.region)),
            ("kms:ReEncryptTo", names.kms_key_arn(params["DestinationKeyId"], call.region)),
        ]
    if op in ("ListKeys", "ListAliases", "GenerateRandom"):
        return [(f"kms:{op}", "*")]
    return []


def _lambda(call: ApiCall, names: ResourceNames) -> list[Authorisation]:
    action = {"Invoke": "InvokeFunction", "InvokeAsync": "InvokeFunction"}.get(call.operation)
    if action is None and call.operation in ("GetFunction", "GetFunctionConfiguration"):
        action = call.operation
    if action is None:
        return []
    name = str(call.params["FunctionName"])
    if not name.startswith("arn:"):
        name = f"arn:aws:lambda:{call.region}:{names.account}:function:{name.rsplit(':function:', 1)[-1]}"
    qualifier = call.params.get("Qualifier")
    return [(f"lambda:{action}", f"{name}:{qualifier}" if qualifier else name)]


_MAPPERS: dict[str, _Mapper] = {
    "dynamodb": _dynamodb,
    "sqs": _sqs,
    "sns": _sns,
    "stepfunctions": _states,
    "secretsmanager": _secretsmanager,
    "kms": _kms,
    "lambda": _lambda,
}


class MotoResourceNames:
    """Looks names up in moto's backends directly (never through a client: that call would be checked too)."""

    def __init__(self, account: str) -> None:
        self.account = account

    def secret_arn(self, secret_id: str, region: str) -> str:
        from moto.secretsmanager.models import secretsmanager_backends
        from moto.secretsmanager.utils import get_secret_name_from_partial_arn

        store = secretsmanager_backends[self.account][region].secrets
        for _ in range(3):  # other threads may add secrets meanwhile
            try:
                secrets = list(dict.values(store))
                break
            except RuntimeError:
                continue
        else:
            secrets = []
        name = get_secret_name_from_partial_arn(secret_id)
        for secret in secrets:
            if secret_id in (secret.arn, secret.name) or name == secret.name:
                return str(secret.arn)
        if secret_id.startswith("arn:"):
            return secret_id
        # No such secret: AWS checks the name's ARN without a suffix (and answers ResourceNotFound if allowed).
        return f"arn:aws:secretsmanager:{region}:{self.account}:secret:{secret_id}"

    def kms_key_arn(self, key_id: str, region: str) -> str:
        from moto.kms.models import kms_backends

        try:
            raw = kms_backends[self.account][region].any_id_to_key_id(key_id)
        except Exception:  # an unknown alias: AWS checks the alias's key, which does not exist
            raw = key_id
        if raw.startswith("arn:"):
            return raw
        return f"arn:aws:kms:{region}:{self.account}:{raw if raw.startswith('alias/') else 'key/' + raw}"


# --------------------------------------------------------------------------------------------------------------------
# Failing the way AWS fails

# botocore service name -> (IAM prefix, error code, HTTP status, how the service writes the action in its message)
_SERVICES: dict[str, tuple[str, str, int, Callable[[str], str]]] = {
    "dynamodb": ("dynamodb", "AccessDeniedException", 400, str),
    "stepfunctions": ("states", "AccessDeniedException", 400, str),
    "secretsmanager": ("secretsmanager", "AccessDeniedException", 400, str),
    "kms": ("kms", "AccessDeniedException", 400, str),
    "lambda": ("lambda", "AccessDeniedException", 403, str),
    "sqs": ("sqs", "AccessDenied", 403, str.lower),  # "... perform: sqs:sendmessage on resource ..."
    "sns": ("sns", "AuthorizationError", 403, lambda a: "SNS:" + a.split(":", 1)[1]),  # "SNS:Publish"
}


def denial_message(identity: FunctionIdentity, service: str, action: str, resource: str, *, explicit: bool) -> str:
    spell = _SERVICES.get(service, (service, "AccessDeniedException", 400, str))[3]
    written = spell(action)
    why = (
        "with an explicit deny in an identity-based policy"
        if explicit
        else f"because no identity-based policy allows the {written} action"
    )
    return f"User: {identity.principal_arn} is not authorized to perform: {written} on resource: {resource} {why}"


def access_denied(
    client: Any, identity: FunctionIdentity, operation: str, action: str, resource: str, *, explicit: bool
) -> Exception:
    """The ClientError botocore would raise for the service's access-denied answer (its modeled class if any)."""
    service = client.meta.service_model.service_name
    _, code, status, _ = _SERVICES.get(service, (service, "AccessDeniedException", 400, str))
    response: dict[str, Any] = {
        "Error": {"Code": code, "Message": denial_message(identity, service, action, resource, explicit=explicit)},
        "ResponseMetadata": {"HTTPStatusCode": status, "RequestId": str(uuid.uuid4()), "RetryAttempts": 0},
    }
    error_class = client.exceptions.from_code(code)
    error: Exception = error_class(response, operation)
    return error


# --------------------------------------------------------------------------------------------------------------------
# The enforcer and the botocore hook


@dataclass(frozen=True)
class Denial:
    function: str  # logical id
    operation: str  # "dynamodb:PutItem" as botocore names it: service:Operation
    action: str
    resource: str
    explicit: bool
    message: str
    where: str = ""  # the innermost application frames that made the call (file:line function)


class IamEnforcer:
    """Authorises every call made inside an invocation of one of ``identities`` (by deployed function name)."""

    def __init__(self, identities: Mapping[str, FunctionIdentity], names: ResourceNames) -> None:
        self._by_name = {i.function_name: i for i in identities.values()}
        self.names = names
        self.enabled = True
        self._lock = threading.Lock()
        self._checked: Counter[tuple[str, str, str, bool]] = Counter()
        self.denials: list[Denial] = []
        self.unmapped: list[str] = []

    @classmethod
    def for_stack(cls, aws: LocalAws) -> Self:
        """The identities of every function of ``aws``'s deployed stack, resolved by moto against that stack."""
        from moto.cloudformation.models import cloudformation_backends
        from moto.cloudformation.parsing import clean_json

        from devstack.lambdas import _account_id

        account = _account_id()
        stack = next(
            s
            for s in cloudformation_backends[account][aws.region].stacks.values()
            if s.name == aws.stack_name and s.status == "CREATE_COMPLETE"
        )
        deployed = aws.resources
        functions = {
            logical_id: physical
            for logical_id, (kind, physical) in deployed.items()
            if kind == "AWS::Lambda::Function" and logical_id in aws.runtime.specs
        }
        identities = function_identities(
            aws.translated_template,
            lambda node: clean_json(node, stack.resource_map),
            physical_ids={k: physical for k, (_, physical) in deployed.items()},
            functions=functions,
            account=account,
        )
        return cls(identities, MotoResourceNames(account))

    # -- what it knows --------------------------------------------------------------------------------------------

    def identity(self, logical_id: str) -> FunctionIdentity:
        for identity in self._by_name.values():
            if identity.logical_id == logical_id:
                return identity
        raise KeyError(f"{logical_id!r} is not a function of the stack (have: {sorted(self.functions())})")

    def functions(self) -> list[str]:
        return sorted(i.logical_id for i in self._by_name.values())

    def checked(self) -> Counter[tuple[str, str, str, bool]]:
        """(function logical id, action, resource, allowed?) -> how many times: every call checked so far."""
        with self._lock:
            return Counter(self._checked)

    # -- switches -------------------------------------------------------------------------------------------------

    def install(self) -> Self:
        with _hook_lock:
            if self not in _enforcers:
                if not _enforcers:
                    _install_hook()
                _enforcers.append(self)
        return self

    def uninstall(self) -> None:
        with _hook_lock:
            if self in _enforcers:
                _enforcers.remove(self)
                if not _enforcers:
                    _remove_hook()
        if self.unmapped:
            log.error("calls with no IAM mapping were refused: %s", sorted(set(self.unmapped)))

    @contextlib.contextmanager
    def suspended(self) -> Iterator[None]:
        """Let every call through while the block lasts (process-wide)."""
        self.enabled = False
        try:
            yield
        finally:
            self.enabled = True

    @contextlib.contextmanager
    def replaced(self, identity: FunctionIdentity) -> Iterator[FunctionIdentity]:
        """Evaluate the function's calls against ``identity`` (e.g. ``identity(...).without(...)``) in the block."""
        original = self._by_name[identity.function_name]
        self._by_name[identity.function_name] = identity
        try:
            yield identity
        finally:
            self._by_name[identity.function_name] = original

    # -- the check ------------------------------------------------------------------------------------------------

    def knows(self, function_name: str) -> bool:
        return function_name in self._by_name

    def authorize(self, client: Any, function_name: str, operation: str, params: Mapping[str, Any]) -> None:
        """Raise what AWS would answer if the function's role may not make this call."""
        if not self.enabled:
            return
        identity = self._by_name[function_name]
        service = client.meta.service_model.service_name
        call = ApiCall(service, operation, params, client.meta.region_name or "us-east-1")
        try:
            wanted = authorisations(call, self.names)
        except UnmappedApiCall as exc:
            self._record_unmapped(identity, f"{service}:{operation}", str(exc))
            raise UnmappedApiCall(f"{exc} (called by {identity.logical_id})") from None
        context = self._context(identity, service, call.region)
        for action, resource in wanted:
            decision = evaluate(identity.statements, Request(action, resource, context))
            with self._lock:
                self._checked[(identity.logical_id, action, resource, decision.allowed)] += 1
            if not decision.allowed:
                error = access_denied(client, identity, operation, action, resource, explicit=decision.explicit_deny)
                self._record_denial(identity, f"{service}:{operation}", action, resource, decision, str(error))
                raise error

    @staticmethod
    def _context(identity: FunctionIdentity, service: str, region: str) -> dict[str, tuple[str, ...]]:
        context: dict[str, tuple[str, ...]] = {
            "aws:principalarn": (identity.role_arn,),
            "aws:principalaccount": (identity.account,),
            "aws:principaltype": ("AssumedRole",),
            "aws:requestedregion": (region,),
            "aws:securetransport": ("true",),
        }
        if service == "kms":
            context["kms:calleraccount"] = (identity.account,)
        return context

    def _record_denial(
        self, identity: FunctionIdentity, operation: str, action: str, resource: str, decision: Decision, message: str
    ) -> None:
        denial = Denial(identity.logical_id, operation, action, resource, decision.explicit_deny, message, _caller())
        with self._lock:
            self.denials.append(denial)
        log.warning("IAM denied %s (%s): %s", identity.logical_id, denial.where, message)
        _append_log({"kind": "denied", **denial.__dict__})

    def _record_unmapped(self, identity: FunctionIdentity, operation: str, message: str) -> None:
        with self._lock:
            self.unmapped.append(operation)
        log.error("%s (called by %s)", message, identity.logical_id)
        _append_log({"kind": "unmapped", "function": identity.logical_id, "operation": operation})


def _caller(depth: int = 3) -> str:
    """The innermost frames of the project's own code (src/functions, src/shared...) on the current stack."""
    import traceback

    own = [
        f
        for f in traceback.extract_stack()
        if "/site-packages/" not in f.filename and "/devstack/iam.py" not in f.filename and "/src/" in f.filename
    ]
    return " <- ".join(f"{f.filename.rsplit('/src/', 1)[-1]}:{f.lineno} {f.name}" for f in reversed(own[-depth:]))


def _append_log(record: Mapping[str, Any]) -> None:
    path = os.environ.get(LOG_ENV)
    if not path:
        return
    test = os.environ.get("PYTEST_CURRENT_TEST", "")
    with open(path, "a", encoding="utf-8") as out:  # noqa: PTH123 - one line, appended from any thread
        out.write(json.dumps({**record, "test": test}) + "\n")


def enforcement_default() -> bool:
    """On unless ``DEVSTACK_ENFORCE_IAM=0`` (or false/off/no)."""
    return os.environ.get(ENFORCE_ENV, "1").strip().lower() not in ("0", "false", "off", "no")


_enforcers: list[IamEnforcer] = []
_hook_lock = threading.Lock()
_original_make_api_call: Any = None


def _authorising_make_api_call(self: Any, operation_name: str, api_params: Any) -> Any:
    function_name = os.environ.get("AWS_LAMBDA_FUNCTION_NAME")  # per thread: devstack.lambdas' overlay
    if function_name:
        for enforcer in reversed(_enforcers):
            if enforcer.knows(function_name):
                enforcer.authorize(self, function_name, operation_name, api_params)
                break
    return _original_make_api_call(self, operation_name, api_params)


def _install_hook() -> None:
    global _original_make_api_call
    from botocore.client import BaseClient

    _original_make_api_call = BaseClient.__dict__["_make_api_call"]
    BaseClient._make_api_call = _authorising_make_api_call


def _remove_hook() -> None:
    from botocore.client import BaseClient

    BaseClient._make_api_call = _original_make_api_call
