"""SnapStart on the API function and ML's notification callback, as CloudFormation receives it (SAM's translation,
offline), within SnapStart's documented limits; and the local stack still deploys, routes and polices the function
behind its alias."""

from __future__ import annotations

import copy
import json
from typing import Any

import httpx
import pytest

from devstack.template import ROOT, load_template
from tests.security.test_template_policies import _NoManagedPolicyLoader, references, resources
from tests.stack.support import C, running_stack, stack_scenario

SNAPSTART = {"ApplyOn": "PublishedVersions"}
ALIAS = "live"
# The functions that answer someone who will not wait: people on the API, ML's callback (500 ms).
SNAPSTART_FUNCTIONS = {"ApiFunction", "NotificationsIntakeFunction"}
CALLBACK_PATH = "/notifications/mercadolibre"


def sam_functions() -> dict[str, dict[str, Any]]:
    return {k: r for k, r in load_template()["Resources"].items() if r["Type"] == "AWS::Serverless::Function"}


def test_snapstart_is_on_the_functions_that_answer_someone_who_does_not_wait() -> None:
    # The API answers people and the callback answers ML within 500 ms; the tasks, the worker and the schedules
    # answer machines that wait anyway.
    with_snapstart = {k for k, r in sam_functions().items() if "SnapStart" in r["Properties"]}
    assert with_snapstart == SNAPSTART_FUNCTIONS
    for function in SNAPSTART_FUNCTIONS:
        assert resources("AWS::Lambda::Function")[function]["Properties"]["SnapStart"] == SNAPSTART


@pytest.mark.parametrize("function", sorted(SNAPSTART_FUNCTIONS))
def test_each_snapstart_function_runs_within_snapstarts_limits(function: str) -> None:
    template = load_template()
    props = sam_functions()[function]["Properties"]
    runtime = props.get("Runtime", template["Globals"]["Function"]["Runtime"])
    assert runtime.startswith("python3.") and int(runtime.split(".")[1]) >= 12  # Python SnapStart: 3.12 and later
    assert "ProvisionedConcurrencyConfig" not in props  # not both on one function
    assert "FileSystemConfigs" not in props  # no EFS
    assert props.get("EphemeralStorage", {"Size": 512})["Size"] <= 512  # MB


def test_a_version_is_published_behind_the_alias_and_api_gateway_invokes_the_alias() -> None:
    # SnapStart applies to published versions only: $LATEST would start every sandbox from scratch.
    for function in SNAPSTART_FUNCTIONS:
        assert sam_functions()[function]["Properties"]["AutoPublishAlias"] == ALIAS
    versions = resources("AWS::Lambda::Version")
    aliases = resources("AWS::Lambda::Alias")
    assert {v["Properties"]["FunctionName"]["Ref"] for v in versions.values()} == SNAPSTART_FUNCTIONS
    assert sorted(aliases) == sorted(f"{f}Aliaslive" for f in SNAPSTART_FUNCTIONS)
    for alias in aliases.values():
        assert alias["Properties"]["Name"] == ALIAS
        assert alias["Properties"]["FunctionVersion"]["Fn::GetAtt"][0] in versions

    body = resources("AWS::ApiGateway::RestApi")["SalesRecoveryApi"]["Properties"]["Body"]
    integrations = {
        (name, method): operation["x-amazon-apigateway-integration"]
        for name, path in body["paths"].items()
        for method, operation in path.items()
        if isinstance(operation, dict) and "x-amazon-apigateway-integration" in operation
    }
    assert len(integrations) == sum(len(sam_functions()[f]["Properties"]["Events"]) for f in SNAPSTART_FUNCTIONS)
    for (name, _), integration in integrations.items():
        function = "NotificationsIntakeFunction" if name == CALLBACK_PATH else "ApiFunction"
        assert references(integration["uri"]) >= {f"{function}Aliaslive"}
        assert function not in references(integration["uri"])
    permissions = [
        p["Properties"]
        for p in resources("AWS::Lambda::Permission").values()
        if p["Properties"]["Principal"] == "apigateway.amazonaws.com"
    ]
    assert {p["FunctionName"]["Ref"] for p in permissions} == {f"{f}Aliaslive" for f in SNAPSTART_FUNCTIONS}


def published_versions(code: dict[str, str]) -> list[str]:
    """The API function's version resources when the template is translated with ``code`` (logical id -> S3 URI of
    its built code, as ``sam package`` writes it)."""
    from samtranslator.translator.transform import transform

    sam = copy.deepcopy(load_template())
    for logical_id, res in sam["Resources"].items():
        props = res.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = code.get(logical_id, f"s3://artifacts/{logical_id}.zip")
        if isinstance(props.get("DefinitionUri"), str) and res["Type"] == "AWS::Serverless::StateMachine":
            props["Definition"] = json.loads((ROOT / props.pop("DefinitionUri")).read_text())
    cfn = transform(sam, {}, _NoManagedPolicyLoader())
    return sorted(k for k, r in cfn["Resources"].items() if r["Type"] == "AWS::Lambda::Version")


def test_a_new_shared_layer_or_handler_publishes_a_new_version() -> None:
    # Most of the API's code is the shared layer: a layer-only change must publish (and snapshot) a new version too,
    # or the alias would keep serving the old snapshot.
    first = published_versions({})
    assert len(first) == len(SNAPSTART_FUNCTIONS)
    assert published_versions({"SharedLayer": "s3://artifacts/SharedLayer-2.zip"}) != first
    assert published_versions({"ApiFunction": "s3://artifacts/ApiFunction-2.zip"}) != first
    assert published_versions({}) == first  # nothing changed: no new version


@pytest.mark.stack
def test_the_local_stack_runs_polices_and_routes_the_api_function_behind_its_alias() -> None:
    with running_stack(stack_scenario()) as stack:
        translated = stack.aws.translated_template["Resources"]
        assert "ApiFunctionAliaslive" in translated  # moto's CloudFormation skips the alias; nothing routes by it
        assert stack.aws.iam is not None and "ApiFunction" in stack.aws.iam.functions()
        assert stack.aws.function_env("ApiFunction")["RELINK_STATE_MACHINE_ARN"]
        assert stack.api is not None
        with httpx.Client(base_url=stack.api.url, timeout=30) as http:
            answer = http.get(f"/connections/{C}")
        assert answer.status_code == 200, answer.text
        assert answer.json()["connection_id"] == C
