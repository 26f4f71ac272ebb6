"""AWS on loopback: moto's server in-process, with the stack deployed from ``template.yaml`` itself.

``LocalAws`` starts ``ThreadedMotoServer``, switches on Step Functions execution, runs the template's Lambda handlers
in-process (``devstack.lambdas``), translates the SAM template offline and creates it as a CloudFormation stack in
moto. Table names, function names, environment variables and ARNs are read back from the deployed stack; nothing
here restates the template.

moto gaps handled here (see reference/aws-offline.md section 4):

* API Gateway from SAM's OpenAPI body cannot be created -> the API Gateway resources (and the Lambda permissions that
  name them) are dropped; ``devstack.api_server`` plays API Gateway instead.
* ``AWS::SecretsManager::Secret`` has no moto CloudFormation support -> created through the Secrets Manager API
  (``GenerateSecretString`` honoured) and its ``Ref`` replaced by the ARN before the stack is created.
* State machines land in moto's non-executing backend and without ``DefinitionSubstitutions`` -> re-created through
  the Step Functions API (same name, hence same ARN) with the substitutions resolved from the deployed stack.
* Lambda must keep moto's default ``use_docker`` backend: ``use_docker: false`` selects "lambda simple", which never
  calls the ``_invoke_lambda`` patch point.
* moto does not apply the functions' roles -> ``devstack.iam`` authorises every call a function makes against its own
  role's policies from the translated template (on by default; ``enforce_iam=False`` or ``DEVSTACK_ENFORCE_IAM=0``).
* moto does not enforce a function's ``Timeout`` -> ``devstack.lambdas`` does (on by default; ``enforce_timeouts=False``
  or ``DEVSTACK_ENFORCE_TIMEOUTS=0``).
* moto's SQS event-source mappings invoke inside ``SendMessage`` -> they are dropped before the stack is created and
  kept, as translated, in ``event_source_mappings``, which ``devstack.sqs_poller`` reads (batch size, concurrency).
"""

from __future__ import annotations

import contextlib
import copy
import io
import json
import logging
import os
import re
import time
import uuid
import zipfile
from pathlib import Path
from typing import TYPE_CHECKING, Any, Self

import boto3
from botocore.config import Config

from devstack.iam import IamEnforcer, enforcement_default
from devstack.lambdas import LocalLambdaRuntime
from devstack.template import TEMPLATE_PATH

if TYPE_CHECKING:
    from collections.abc import Callable, Iterator, Mapping

log = logging.getLogger(__name__)

REGION = "us-east-1"
ARTIFACTS_BUCKET = "local-sam-artifacts"
_DROPPED_PREFIXES = ("AWS::ApiGateway::", "AWS::ApiGatewayV2::")
HELP_DESK_TOPIC = "HelpDeskTopic"  # the help desk's topic in template.yaml
# Access log lines; Fail states logged as errors; samtranslator's "Feature ... not available in Feature Toggle Config"
# (an Api with OpenApiVersion asks for a feature toggle; offline there is no toggle config, and off is the default).
_QUIET_LOGGERS = ("werkzeug", "moto.stepfunctions.parser", "samtranslator.feature_toggle")


class DeployError(RuntimeError):
    """The stack could not be created; the message carries CloudFormation's reasons."""


class _NoManagedPolicyLoader:
    """samtranslator consults this only for managed policy names missing from its bundled map (would call IAM)."""

    def load(self) -> dict[str, str]:
        return {}


class SnsInbox:
    """An SQS queue subscribed (raw delivery) to an SNS topic: what the help desk would receive."""

    def __init__(self, sqs: Any, queue_url: str, topic_arn: str) -> None:
        self._sqs = sqs
        self.queue_url = queue_url
        self.topic_arn = topic_arn
        self._received: list[dict[str, Any]] = []

    def messages(self) -> list[dict[str, Any]]:
        """Every message delivered so far (JSON messages parsed; other text as ``{"message": text}``)."""
        while True:
            batch = self._sqs.receive_message(QueueUrl=self.queue_url, MaxNumberOfMessages=10, WaitTimeSeconds=0)
            received = batch.get("Messages", [])
            if not received:
                return list(self._received)
            for message in received:
                self._received.append(_parse_message(message["Body"]))
                self._sqs.delete_message(QueueUrl=self.queue_url, ReceiptHandle=message["ReceiptHandle"])


def _parse_message(body: str) -> dict[str, Any]:
    try:
        parsed = json.loads(body)
    except ValueError:
        return {"message": body}
    return parsed if isinstance(parsed, dict) else {"message": parsed}


class LocalAws:
    """moto server on 127.0.0.1 + the SAM template deployed into it + in-process Lambda handlers.

    moto's state is process-wide and ``stop()`` resets it: run one ``LocalAws`` per process at a time.
    """

    def __init__(
        self,
        template_path: Path = TEMPLATE_PATH,
        *,
        repo_root: Path | None = None,
        stack_name: str = "sales-recovery-local",
        port: int = 0,
        runtime: LocalLambdaRuntime | None = None,
        enforce_iam: bool | None = None,
        enforce_timeouts: bool | None = None,
    ) -> None:
        self.template_path = template_path.resolve()
        self.repo_root = (repo_root or self.template_path.parent).resolve()
        self.stack_name = stack_name
        self.runtime = runtime or LocalLambdaRuntime(
            self.template_path, self.repo_root, enforce_timeouts=enforce_timeouts
        )
        self.region = REGION
        self.parameters: dict[str, str] = {}
        self.outputs: dict[str, str] = {}
        self.deploy_seconds = 0.0
        self._requested_port = port
        self._server: Any = None
        self._port = 0
        self._saved_env: dict[str, str | None] = {}
        self._saved_log_levels: dict[str, int] = {}
        self._saved_moto_config: Any = None
        self._resources: dict[str, tuple[str, str]] = {}  # logical id -> (type, physical id)
        self._translated: dict[str, Any] = {}
        # logical id -> Properties of each AWS::Lambda::EventSourceMapping SAM generated (not created in moto)
        self.event_source_mappings: dict[str, dict[str, Any]] = {}
        self._state_machines: dict[str, str] = {}
        self._inbox_count = 0
        self._session = boto3.session.Session()
        self._clients: dict[tuple[str, str], Any] = {}
        # IAM: each function's calls are authorised against its own role once deployed (devstack.iam). None = the
        # process default (on unless DEVSTACK_ENFORCE_IAM=0).
        self.enforce_iam = enforcement_default() if enforce_iam is None else enforce_iam
        self.iam: IamEnforcer | None = None

    # -- lifecycle ----------------------------------------------------------------------------------------------------

    @property
    def endpoint_url(self) -> str:
        if not self._port:
            raise RuntimeError("LocalAws is not started")
        return f"http://127.0.0.1:{self._port}"

    def __enter__(self) -> Self:
        return self.start()

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def start(self) -> Self:
        from moto.core.config import default_user_config
        from moto.server import ThreadedMotoServer

        for name in _QUIET_LOGGERS:
            logger = logging.getLogger(name)
            self._saved_log_levels[name] = logger.level
            logger.setLevel(logging.CRITICAL)  # executions report their own errors (describe_execution, history)
        self._server = ThreadedMotoServer(ip_address="127.0.0.1", port=self._requested_port, verbose=False)
        self._server.start()
        self._port = self._server.get_host_and_port()[1]
        self._set_env(self._process_env())
        self._saved_moto_config = copy.deepcopy(default_user_config["stepfunctions"])
        # Execution on; Lambda stays on moto's default (Docker) backend, whose _invoke_lambda the runtime replaces.
        self._moto_api("config", {"stepfunctions": {"execute_state_machine": True}})
        self.runtime.install()
        return self

    def stop(self) -> None:
        """Shut the server down, forget moto's state and restore the process environment."""
        if self.iam is not None:  # IAM hook off first: nothing of this stack is authorised any more
            self.iam.uninstall()
            self.iam = None
        self.runtime.uninstall()
        if self._server is not None:
            try:
                self._moto_api("reset", None)
            finally:
                self._server.stop()
                self._server = None
        if self._saved_moto_config is not None:
            from moto.core.config import default_user_config

            default_user_config["stepfunctions"] = self._saved_moto_config
            self._saved_moto_config = None
        for key, value in self._saved_env.items():
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value
        self._saved_env.clear()
        for name, level in self._saved_log_levels.items():
            logging.getLogger(name).setLevel(level)
        self._port = 0

    def _process_env(self) -> dict[str, str | None]:
        no_proxy = ",".join(p for p in (os.environ.get("NO_PROXY", ""), "127.0.0.1,localhost") if p)
        return {
            "AWS_ACCESS_KEY_ID": "testing",
            "AWS_SECRET_ACCESS_KEY": "testing",
            "AWS_SESSION_TOKEN": "testing",
            "AWS_PROFILE": None,  # a developer's profile must not leak into the local stack
            "AWS_DEFAULT_PROFILE": None,
            "AWS_CONFIG_FILE": os.devnull,
            "AWS_SHARED_CREDENTIALS_FILE": os.devnull,
            "AWS_DEFAULT_REGION": self.region,
            "AWS_REGION": self.region,
            "AWS_ENDPOINT_URL": self.endpoint_url,
            # moto's Step Functions interpreter calls http://localhost:$MOTO_PORT (default 5000) for its tasks
            "MOTO_PORT": str(self._port),
            "POWERTOOLS_TRACE_DISABLED": "1",
            "POWERTOOLS_METRICS_NAMESPACE": self._global_env_literal("POWERTOOLS_METRICS_NAMESPACE") or "Local",
            "NO_PROXY": no_proxy,
            "no_proxy": no_proxy,
        }

    def _global_env_literal(self, name: str) -> str | None:
        template = _load_sam(self.template_path)
        value = template.get("Globals", {}).get("Function", {}).get("Environment", {}).get("Variables", {}).get(name)
        return value if isinstance(value, str) else None

    def _set_env(self, values: Mapping[str, str | None]) -> None:
        for key, value in values.items():
            self._saved_env.setdefault(key, os.environ.get(key))
            if value is None:
                os.environ.pop(key, None)
            else:
                os.environ[key] = value

    def _moto_api(self, action: str, body: Any) -> None:
        import urllib.request

        data = json.dumps(body).encode() if body is not None else b""
        request = urllib.request.Request(f"{self.endpoint_url}/moto-api/{action}", data=data, method="POST")
        opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))  # loopback never goes via a proxy
        with opener.open(request, timeout=10) as response:
            response.read()

    # -- clients ------------------------------------------------------------------------------------------------------

    def client(self, service: str) -> Any:
        """A boto3 client bound to the local endpoint (works whatever the process environment says)."""
        endpoint = self.endpoint_url
        cached = self._clients.get((service, endpoint))
        if cached is None:  # one session: service models load once (a fresh session per client costs ~0.25 s)
            cached = self._session.client(
                service,
                endpoint_url=endpoint,
                region_name=self.region,
                aws_access_key_id="testing",
                aws_secret_access_key="testing",
                config=Config(retries={"max_attempts": 2, "mode": "standard"}),
            )
            self._clients[(service, endpoint)] = cached
        return cached

    # -- deploy -------------------------------------------------------------------------------------------------------

    def deploy(self, parameters: Mapping[str, str] | None = None) -> Self:
        """Translate the SAM template, create it as a stack in moto and wire what moto leaves out."""
        started = time.monotonic()
        sam = copy.deepcopy(_load_sam(self.template_path))
        declared = sam.get("Parameters", {})
        given = {k: str(v) for k, v in (parameters or {}).items()}
        unknown = sorted(set(given) - set(declared))
        if unknown:
            raise ValueError(f"unknown template parameter(s) {unknown}; the template declares {sorted(declared)}")
        self.parameters = {
            **{k: str(p["Default"]) for k, p in declared.items() if "Default" in p},
            **given,
        }

        s3 = self.client("s3")
        s3.create_bucket(Bucket=ARTIFACTS_BUCKET)
        self._localize_artifacts(sam, s3)
        from samtranslator.translator.transform import transform

        cfn: dict[str, Any] = transform(sam, dict(self.parameters), _NoManagedPolicyLoader())
        _drop_api_gateway(cfn)
        self.event_source_mappings = _drop_event_source_mappings(cfn)
        self._create_unsupported(cfn)
        self._translated = cfn
        self._create_stack(cfn, given)

        for logical_id, (kind, physical) in self._resources.items():
            if kind == "AWS::Lambda::Function" and logical_id in self.runtime.specs:
                self.runtime.bind(logical_id, physical)
        self._recreate_state_machines(cfn)
        if self.enforce_iam:  # from now on every call a function makes is checked against its role (devstack.iam)
            self.iam = IamEnforcer.for_stack(self).install()
        self.deploy_seconds = time.monotonic() - started
        log.info("stack %s deployed in %.1fs on %s", self.stack_name, self.deploy_seconds, self.endpoint_url)
        return self

    def _localize_artifacts(self, sam: dict[str, Any], s3: Any) -> None:
        """Local CodeUri/ContentUri -> dummy zips in moto S3 (the runtime loads the real code from disk);
        local DefinitionUri -> inline Definition."""
        globals_fn = sam.get("Globals", {}).get("Function", {})
        global_code = globals_fn.pop("CodeUri", None)
        for logical_id, res in sam.get("Resources", {}).items():
            props = res.setdefault("Properties", {})
            kind = res.get("Type")
            key = {"AWS::Serverless::Function": "CodeUri", "AWS::Serverless::LayerVersion": "ContentUri"}.get(kind)
            if key is not None:
                if kind == "AWS::Serverless::Function" and key not in props and global_code is not None:
                    props[key] = global_code
                if isinstance(props.get(key), str) and not props[key].startswith("s3://"):
                    s3.put_object(Bucket=ARTIFACTS_BUCKET, Key=f"{logical_id}.zip", Body=_dummy_zip(logical_id))
                    props[key] = f"s3://{ARTIFACTS_BUCKET}/{logical_id}.zip"
            elif kind == "AWS::Serverless::StateMachine" and isinstance(props.get("DefinitionUri"), str):
                path = self.repo_root / props.pop("DefinitionUri")
                props["Definition"] = _load_definition(path)
            elif kind in ("AWS::Serverless::Api", "AWS::Serverless::HttpApi"):
                props.pop("DefinitionUri", None)  # dropped after translation anyway; a local path fails translation

    def _create_unsupported(self, cfn: dict[str, Any]) -> None:
        """Create what moto's CloudFormation cannot, through the service API, and inline the references."""
        resources = cfn["Resources"]
        for logical_id, res in list(resources.items()):
            if res["Type"] != "AWS::SecretsManager::Secret":
                continue
            if "Condition" in res:
                raise DeployError(f"{logical_id}: conditional secrets are not supported locally")
            arn = self._create_secret(logical_id, res.get("Properties", {}))
            del resources[logical_id]
            _replace_references(cfn, logical_id, ref=arn, attributes={"Id": arn})

    def _create_secret(self, logical_id: str, props: Mapping[str, Any]) -> str:
        sm = self.client("secretsmanager")
        name = _resolve_static(props.get("Name", f"{self.stack_name}-{logical_id}"), self._pseudo_parameters())
        if "SecretString" in props:
            secret = str(_resolve_static(props["SecretString"], self._pseudo_parameters()))
        else:
            spec = props.get("GenerateSecretString", {})
            options = {
                k: spec[k]
                for k in ("PasswordLength", "ExcludeCharacters", "ExcludeNumbers", "ExcludePunctuation")
                if k in spec
            }
            options.update({k: spec[k] for k in ("ExcludeUppercase", "ExcludeLowercase", "IncludeSpace") if k in spec})
            password = sm.get_random_password(**options)["RandomPassword"]
            if "SecretStringTemplate" in spec:
                document = json.loads(spec["SecretStringTemplate"])
                document[spec.get("GenerateStringKey", "password")] = password
                secret = json.dumps(document)
            else:
                secret = password
        kwargs = {"Name": str(name), "SecretString": secret}
        if isinstance(props.get("Description"), str):
            kwargs["Description"] = props["Description"]
        return str(sm.create_secret(**kwargs)["ARN"])

    def _pseudo_parameters(self) -> dict[str, str]:
        from devstack.lambdas import _account_id

        return {
            **self.parameters,
            "AWS::Region": self.region,
            "AWS::AccountId": _account_id(),
            "AWS::Partition": "aws",
            "AWS::StackName": self.stack_name,
            "AWS::URLSuffix": "amazonaws.com",
        }

    def _create_stack(self, cfn: dict[str, Any], given: Mapping[str, str]) -> None:
        cloudformation = self.client("cloudformation")
        try:
            cloudformation.create_stack(
                StackName=self.stack_name,
                TemplateBody=json.dumps(cfn),
                Parameters=[{"ParameterKey": k, "ParameterValue": v} for k, v in given.items()],
                Capabilities=["CAPABILITY_IAM", "CAPABILITY_NAMED_IAM", "CAPABILITY_AUTO_EXPAND"],
            )
        except Exception as exc:  # moto raises while creating resources; say which stack and why
            raise DeployError(f"creating stack {self.stack_name} failed: {exc}") from exc
        deadline = time.monotonic() + 60
        while True:
            stack = cloudformation.describe_stacks(StackName=self.stack_name)["Stacks"][0]
            status = stack["StackStatus"]
            if status == "CREATE_COMPLETE":
                break
            if not status.endswith("IN_PROGRESS") or time.monotonic() > deadline:
                events = cloudformation.describe_stack_events(StackName=self.stack_name)["StackEvents"]
                reasons = [
                    f"{e.get('LogicalResourceId')}: {e.get('ResourceStatus')} {e.get('ResourceStatusReason', '')}"
                    for e in events
                    if "FAILED" in e.get("ResourceStatus", "")
                ]
                raise DeployError(f"stack {self.stack_name} ended {status}: {'; '.join(reasons) or 'no reason given'}")
            time.sleep(0.05)
        self.outputs = {o["OutputKey"]: o["OutputValue"] for o in stack.get("Outputs", [])}
        described = cloudformation.describe_stack_resources(StackName=self.stack_name)["StackResources"]
        self._resources = {
            r["LogicalResourceId"]: (r["ResourceType"], r["PhysicalResourceId"])
            for r in described
            if r.get("LogicalResourceId") and r.get("PhysicalResourceId")  # moto lists skipped types without ids
        }

    def _recreate_state_machines(self, cfn: Mapping[str, Any]) -> None:
        """Same name (so same ARN) in the executing backend, with DefinitionSubstitutions applied."""
        from moto.cloudformation.models import cloudformation_backends
        from moto.cloudformation.parsing import clean_json

        from devstack.lambdas import _account_id

        stack = next(
            s
            for s in cloudformation_backends[_account_id()][self.region].stacks.values()
            if s.name == self.stack_name and s.status == "CREATE_COMPLETE"
        )
        sfn = self.client("stepfunctions")
        for logical_id, res in cfn["Resources"].items():
            if res["Type"] != "AWS::StepFunctions::StateMachine" or logical_id not in self._resources:
                continue
            props = res["Properties"]
            # moto's own intrinsic resolver, against the deployed stack: exactly what CloudFormation would substitute
            definition = props.get("DefinitionString") or json.dumps(props.get("Definition", {}))
            definition = str(clean_json(definition, stack.resource_map))
            substitutions = clean_json(props.get("DefinitionSubstitutions", {}), stack.resource_map)
            definition = _substitute(definition, {k: _cfn_str(v) for k, v in substitutions.items()})
            arn = self._resources[logical_id][1]
            name = arn.rsplit(":", 1)[1]
            try:
                created = sfn.create_state_machine(
                    name=name,
                    definition=definition,
                    roleArn=str(clean_json(props["RoleArn"], stack.resource_map)),
                    type=props.get("StateMachineType", "STANDARD"),
                )
            except sfn.exceptions.ClientError as exc:  # moto's ASL parser rejects what AWS would reject
                message = str(exc).split(" in definition ", 1)[0]
                raise DeployError(f"state machine {logical_id} rejected: {message}") from None
            self._state_machines[logical_id] = created["stateMachineArn"]

    # -- what the stack holds -----------------------------------------------------------------------------------------

    @property
    def resources(self) -> dict[str, tuple[str, str]]:
        """logical id -> (CloudFormation type, physical id), as deployed (after SAM's translation)."""
        return dict(self._resources)

    @property
    def translated_template(self) -> dict[str, Any]:
        return self._translated

    def physical_id(self, logical_id: str) -> str:
        try:
            return self._resources[logical_id][1]
        except KeyError:
            raise KeyError(f"{logical_id!r} is not a deployed resource (have: {sorted(self._resources)})") from None

    def function_name(self, logical_id: str) -> str:
        return self.physical_id(logical_id)

    def function_env(self, logical_id: str) -> dict[str, str]:
        """A function's environment variables, as CloudFormation resolved them."""
        config = self.client("lambda").get_function_configuration(FunctionName=self.physical_id(logical_id))
        variables = config.get("Environment", {}).get("Variables", {})
        return {str(k): str(v) for k, v in variables.items()}  # moto keeps template numbers as numbers

    def state_machine_arn(self, logical_id: str) -> str:
        try:
            return self._state_machines[logical_id]
        except KeyError:
            raise KeyError(f"{logical_id!r} is not a state machine (have: {sorted(self._state_machines)})") from None

    def help_desk_inbox(self, topic_logical_id: str | None = None) -> SnsInbox:
        """Subscribe a fresh SQS queue (raw delivery) to the topic: by default ``HelpDeskTopic`` (the alarms have
        their own ops topic) or the template's only topic."""
        topics = sorted(k for k, (kind, _) in self._resources.items() if kind == "AWS::SNS::Topic")
        if topic_logical_id is None and HELP_DESK_TOPIC in topics:
            topic_logical_id = HELP_DESK_TOPIC
        if topic_logical_id is None:
            if len(topics) != 1:
                raise ValueError(f"say which topic: the stack has {topics}")
            topic_logical_id = topics[0]
        topic_arn = self.physical_id(topic_logical_id)
        sqs, sns = self.client("sqs"), self.client("sns")
        self._inbox_count += 1
        queue_url = sqs.create_queue(QueueName=f"{topic_logical_id}-inbox-{self._inbox_count}")["QueueUrl"]
        queue_arn = sqs.get_queue_attributes(QueueUrl=queue_url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        sns.subscribe(TopicArn=topic_arn, Protocol="sqs", Endpoint=queue_arn, Attributes={"RawMessageDelivery": "true"})
        return SnsInbox(sqs, queue_url, topic_arn)


# --------------------------------------------------------------------------------------------------------------------
# Template helpers


def _load_sam(path: Path) -> dict[str, Any]:
    from samtranslator.yaml_helper import yaml_parse  # understands !Ref, !Sub, !GetAtt

    parsed: dict[str, Any] = yaml_parse(path.read_text())
    return parsed


def _load_definition(path: Path) -> Any:
    from samtranslator.yaml_helper import yaml_parse

    text = path.read_text()
    return json.loads(text) if path.suffix == ".json" else yaml_parse(text)


def _dummy_zip(logical_id: str) -> bytes:
    buffer = io.BytesIO()
    with zipfile.ZipFile(buffer, "w") as archive:
        archive.writestr("README.txt", f"{logical_id}: code runs in-process from the repository (devstack.lambdas)\n")
    return buffer.getvalue()


def _walk(node: Any, visit: Callable[[Any], Any]) -> Any:
    """Rebuild ``node`` bottom-up, letting ``visit`` replace any dict or list."""
    if isinstance(node, dict):
        node = {k: _walk(v, visit) for k, v in node.items()}
    elif isinstance(node, list):
        node = [_walk(v, visit) for v in node]
    return visit(node)


def _references(node: Any) -> Iterator[str]:
    """Logical ids (and parameters) a template fragment refers to."""
    if isinstance(node, dict):
        if isinstance(node.get("Ref"), str):
            yield node["Ref"]
        get_att = node.get("Fn::GetAtt")
        if isinstance(get_att, list) and get_att:
            yield str(get_att[0])
        elif isinstance(get_att, str):
            yield get_att.split(".", 1)[0]
        sub = node.get("Fn::Sub")
        text = sub[0] if isinstance(sub, list) and sub else sub
        if isinstance(text, str):
            yield from (m.split(".", 1)[0] for m in re.findall(r"\$\{([^!}][^}]*)\}", text))
        for value in node.values():
            yield from _references(value)
    elif isinstance(node, list):
        for value in node:
            yield from _references(value)


def _drop_event_source_mappings(cfn: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """moto's SQS event-source mapping calls the function inside ``send_message``, one record at a time, and
    ignores partial batch responses (aws-offline.md §2): the API's send would block for the whole job. Locally
    ``devstack.sqs_poller`` polls the queues instead, as Lambda's own poller does in the cloud. Returns the dropped
    mappings' properties (as translated: intrinsics unresolved), by logical id."""
    resources: dict[str, Any] = cfn["Resources"]
    dropped = {}
    for logical_id in [k for k, r in resources.items() if r["Type"] == "AWS::Lambda::EventSourceMapping"]:
        dropped[logical_id] = dict(resources.pop(logical_id).get("Properties", {}))
    return dropped


def _drop_api_gateway(cfn: dict[str, Any]) -> None:
    """moto can't build API Gateway from SAM's OpenAPI body; the local API server stands in for it."""
    resources: dict[str, Any] = cfn["Resources"]
    dropped = {k for k, r in resources.items() if r["Type"].startswith(_DROPPED_PREFIXES)}
    changed = True
    while changed:  # e.g. the Lambda::Permission whose SourceArn names the RestApi
        changed = False
        for logical_id, res in resources.items():
            if logical_id not in dropped and set(_references(res.get("Properties", {}))) & dropped:
                if res["Type"] != "AWS::Lambda::Permission":
                    raise DeployError(f"{logical_id} ({res['Type']}) depends on API Gateway, which moto can't create")
                dropped.add(logical_id)
                changed = True
    for logical_id in dropped:
        del resources[logical_id]
    for res in resources.values():
        depends = res.get("DependsOn")
        if isinstance(depends, list):
            res["DependsOn"] = [d for d in depends if d not in dropped]
        elif isinstance(depends, str) and depends in dropped:
            del res["DependsOn"]
    outputs = cfn.get("Outputs", {})
    for key in [k for k, o in outputs.items() if set(_references(o)) & dropped]:
        del outputs[key]  # e.g. ApiUrl: the local API server has its own address


def _replace_references(cfn: dict[str, Any], logical_id: str, *, ref: str, attributes: Mapping[str, str]) -> None:
    def visit(node: Any) -> Any:
        if not isinstance(node, dict):
            return node
        if node.get("Ref") == logical_id:
            return ref
        get_att = node.get("Fn::GetAtt")
        if isinstance(get_att, str):
            get_att = get_att.split(".", 1)
        if isinstance(get_att, list) and get_att and get_att[0] == logical_id:
            if get_att[1] not in attributes:
                raise DeployError(f"Fn::GetAtt {logical_id}.{get_att[1]} is not supported locally")
            return attributes[get_att[1]]
        sub = node.get("Fn::Sub")
        if isinstance(sub, str):
            return {"Fn::Sub": sub.replace(f"${{{logical_id}}}", ref)}
        if isinstance(sub, list) and sub and isinstance(sub[0], str):
            return {"Fn::Sub": [sub[0].replace(f"${{{logical_id}}}", ref), *sub[1:]]}
        return node

    for key in ("Resources", "Outputs"):
        cfn[key] = _walk(cfn.get(key, {}), visit)
    for res in cfn["Resources"].values():
        depends = res.get("DependsOn")
        if isinstance(depends, list):
            res["DependsOn"] = [d for d in depends if d != logical_id]
        elif depends == logical_id:
            del res["DependsOn"]


def _resolve_static(value: Any, parameters: Mapping[str, str]) -> Any:
    """Resolve the intrinsics that need no deployed resource: Ref to parameters, Fn::Sub, Fn::Join."""
    if isinstance(value, dict):
        if "Ref" in value:
            return parameters[value["Ref"]]
        if "Fn::Sub" in value:
            sub = value["Fn::Sub"]
            text, extra = (sub[0], sub[1]) if isinstance(sub, list) else (sub, {})
            variables = {**parameters, **{k: str(_resolve_static(v, parameters)) for k, v in extra.items()}}
            return re.sub(r"\$\{([^!}][^}]*)\}", lambda m: variables[m.group(1)], text)
        if "Fn::Join" in value:
            separator, items = value["Fn::Join"]
            return separator.join(str(_resolve_static(i, parameters)) for i in items)
        raise DeployError(f"cannot resolve {value!r} before the stack exists")
    return value


def _cfn_str(value: Any) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def _substitute(definition: str, substitutions: Mapping[str, str]) -> str:
    """CloudFormation's DefinitionSubstitutions: ``${Key}`` for the keys given, anything else left as is."""
    return re.sub(r"\$\{([^}]+)\}", lambda m: substitutions.get(m.group(1), m.group(0)), definition)


@contextlib.contextmanager
def instant_retries() -> Iterator[None]:
    """Skip the sleeps of Step Functions ``Retry`` intervals (real sleeps in moto; aws-offline.md 1). For tests."""
    from unittest import mock

    import moto.stepfunctions.parser.asl.component.common.retry.retrier_decl as retrier

    with mock.patch.object(retrier, "time", _NoSleep()):
        yield


class _NoSleep:
    @staticmethod
    def sleep(_seconds: float) -> None:
        return None


def new_execution_name(prefix: str = "run") -> str:
    """Always name executions: moto's executing backend otherwise names every one ``None`` (aws-offline.md 1)."""
    return f"{prefix}-{uuid.uuid4().hex[:12]}"
