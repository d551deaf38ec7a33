"""template.yaml lints clean, transforms offline, and grants no more than the functions need."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file
from samtranslator.translator.transform import transform

from seekless.config import Settings
from seekless_local.events import event_files, load_event
from seekless_local.template import (
    TEMPLATE_PATH,
    FunctionSpec,
    function_specs,
    load_handler,
    load_template,
)

# The only Resource "*" grants a function may hold: X-Ray's write calls take no resource ARN.
XRAY_WRITE_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
# AWS-managed policies SAM attaches. Their Resource "*" statements are AWS's own and unavoidable:
# logs for every function, X-Ray for Tracing: Active, ENI management for VpcConfig.
ALLOWED_MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess",
    "service-role/AWSLambdaVPCAccessExecutionRole",
}
# Environment names that Powertools reads itself, not the settings model.
POWERTOOLS_ENV = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}


class OfflinePolicyLoader:
    """Stands in for ManagedPolicyLoader: the template names managed policies by ARN, never by name,
    so the translator must not need IAM's list of policies."""

    def load(self) -> dict[str, str]:
        raise AssertionError("the translator asked IAM for managed policy names")


@pytest.fixture(scope="module")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="module")
def transformed(template: dict[str, Any]) -> Iterator[dict[str, Any]]:
    packaged = copy.deepcopy(template)
    # What `sam package` does: local code folders become S3 URIs, which the translator requires.
    for resource in packaged["Resources"].values():
        props = resource.get("Properties", {})
        for key in ("CodeUri", "ContentUri"):
            if isinstance(props.get(key), str):
                props[key] = "s3://seekless-artifacts/code.zip"
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("AWS_DEFAULT_REGION", "us-east-1")
        yield transform(packaged, {}, OfflinePolicyLoader())  # type: ignore[arg-type]


def _resources(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == resource_type}


def _as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def _function_roles(transformed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    roles = {}
    for logical_id, function in _resources(transformed, "AWS::Lambda::Function").items():
        role_ref = function["Properties"]["Role"]
        assert role_ref.get("Fn::GetAtt", [None])[1] == "Arn", f"{logical_id} must use a role of this stack"
        roles[logical_id] = transformed["Resources"][role_ref["Fn::GetAtt"][0]]
    return roles


def _statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in role["Properties"].get("Policies", [])
        for statement in _as_list(policy["PolicyDocument"]["Statement"])
    ]


# ---------------------------------------------------------------- lint and transform


def test_cfn_lint_reports_nothing_at_any_level() -> None:
    matches = lint_file(Path(TEMPLATE_PATH), config=ManualArgs(include_checks=["I"]))
    assert [str(match) for match in matches] == []


def test_sam_transform_offline_yields_one_rest_function_behind_one_stage(transformed: dict[str, Any]) -> None:
    assert "Transform" not in transformed
    functions = _resources(transformed, "AWS::Lambda::Function")
    assert set(functions) == {"RestApiFunction"}
    props = functions["RestApiFunction"]["Properties"]
    assert props["Runtime"] == "python3.12"
    assert props["Architectures"] == ["arm64"]
    assert props["Handler"] == "app.handler"
    assert props["TracingConfig"] == {"Mode": "Active"}
    assert props["Timeout"] <= 29
    # Only the template's stage exists: no stray "Stage" stage without throttling or logs.
    assert [s["Properties"]["StageName"] for s in _resources(transformed, "AWS::ApiGateway::Stage").values()] == [
        {"Ref": "Stage"}
    ]
    for deployment in _resources(transformed, "AWS::ApiGateway::Deployment").values():
        assert "StageName" not in deployment["Properties"]


def test_rest_api_proxies_every_path_to_the_function_without_an_authorizer(transformed: dict[str, Any]) -> None:
    (api,) = _resources(transformed, "AWS::ApiGateway::RestApi").values()
    body = api["Properties"]["Body"]
    assert set(body["paths"]) == {"/", "/{proxy+}"}
    for path in body["paths"].values():
        assert set(path) == {"x-amazon-apigateway-any-method"}
        method = path["x-amazon-apigateway-any-method"]
        assert method["x-amazon-apigateway-integration"]["type"] == "aws_proxy"
        assert "security" not in method
    assert not _resources(transformed, "AWS::ApiGateway::Authorizer")
    assert "BinaryMediaTypes" not in api["Properties"]


def test_rest_stage_throttles_traces_and_logs_access(transformed: dict[str, Any]) -> None:
    (stage,) = _resources(transformed, "AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["TracingEnabled"] is True
    assert "DestinationArn" in props["AccessLogSetting"]
    (setting,) = props["MethodSettings"]
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(setting)
    assert setting["MetricsEnabled"] is True
    assert setting["DataTraceEnabled"] is False  # would log prompts and answers


# ---------------------------------------------------------------- least privilege


def test_function_roles_grant_no_wildcard_actions(transformed: dict[str, Any]) -> None:
    for logical_id, role in _function_roles(transformed).items():
        for statement in _statements(role):
            for action in _as_list(statement["Action"]):
                assert action != "*" and not action.endswith(":*"), f"{logical_id}: {action}"
                assert "NotAction" not in statement


def test_function_roles_use_resource_star_only_for_xray_writes(transformed: dict[str, Any]) -> None:
    for logical_id, role in _function_roles(transformed).items():
        for statement in _statements(role):
            if "*" in _as_list(statement["Resource"]):
                assert set(_as_list(statement["Action"])) <= XRAY_WRITE_ACTIONS, f"{logical_id}: {statement}"


def test_function_roles_attach_only_the_aws_managed_policies_sam_needs(transformed: dict[str, Any]) -> None:
    for logical_id, role in _function_roles(transformed).items():
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            assert isinstance(arn, str) and arn.startswith("arn:aws:iam::aws:policy/"), f"{logical_id}: {arn}"
            assert arn.removeprefix("arn:aws:iam::aws:policy/") in ALLOWED_MANAGED_POLICIES, f"{logical_id}: {arn}"


def test_rest_function_reads_keys_and_writes_only_sessions(transformed: dict[str, Any]) -> None:
    role = _function_roles(transformed)["RestApiFunction"]
    grants: dict[str, set[str]] = {}
    for statement in _statements(role):
        for resource in _as_list(statement["Resource"]):
            grants.setdefault(json.dumps(resource, sort_keys=True), set()).update(_as_list(statement["Action"]))

    def granted(resource: Any) -> set[str]:
        return grants.pop(json.dumps(resource, sort_keys=True), set())

    assert granted({"Fn::GetAtt": ["ApiKeysTable", "Arn"]}) == {"dynamodb:GetItem"}
    assert granted({"Fn::GetAtt": ["SessionsTable", "Arn"]}) == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:DeleteItem",
        "dynamodb:Query",
        "dynamodb:BatchWriteItem",
        "dynamodb:TransactWriteItems",
        "dynamodb:ConditionCheckItem",
    }
    assert granted({"Fn::Sub": "${SessionsTable.Arn}/index/by_tenant"}) == {"dynamodb:Query"}
    assert granted({"Ref": "DeepSeekApiKeySecret"}) == {"secretsmanager:GetSecretValue"}
    assert grants == {}, "grants beyond the two tables and the secret"


def test_cache_admits_only_the_functions_security_group(template: dict[str, Any]) -> None:
    cache = template["Resources"]["Cache"]["Properties"]
    (group_ref,) = cache["SecurityGroupIds"]
    group = template["Resources"][group_ref["Fn::GetAtt"][0]]["Properties"]
    assert group["SecurityGroupIngress"] == [
        {
            "IpProtocol": "tcp",
            "FromPort": 6379,
            "ToPort": 6379,
            "SourceSecurityGroupId": {"Fn::GetAtt": ["FunctionSecurityGroup", "GroupId"]},
            "Description": group["SecurityGroupIngress"][0]["Description"],
        }
    ]


# ---------------------------------------------------------------- stateful resources and packaging


def test_every_table_is_encrypted_recoverable_expiring_and_retained(template: dict[str, Any]) -> None:
    tables = _resources(template, "AWS::DynamoDB::Table")
    assert set(tables) == {"SessionsTable", "ApiKeysTable"}
    for logical_id, table in tables.items():
        props = table["Properties"]
        assert props["SSESpecification"]["SSEEnabled"] is True, logical_id
        assert props["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True, logical_id
        assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}, logical_id
        assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain", logical_id


def test_layer_is_built_by_sam_for_python_3_12_or_newer_on_arm64(template: dict[str, Any]) -> None:
    layer = template["Resources"]["CommonLayer"]
    build_method = layer["Metadata"]["BuildMethod"]
    assert build_method.startswith("python3.")
    assert int(build_method.removeprefix("python3.")) >= 12
    assert layer["Properties"]["CompatibleArchitectures"] == ["arm64"]
    assert build_method in layer["Properties"]["CompatibleRuntimes"]


def test_rest_url_output_is_the_openai_base_url(template: dict[str, Any]) -> None:
    url = template["Outputs"]["RestApiUrl"]["Value"]["Fn::Sub"]
    assert url.startswith("https://${RestApi}.execute-api.${AWS::Region}.")
    assert url.endswith("/${Stage}/v1")


# ---------------------------------------------------------------- environment


def _settings_env_names() -> set[str]:
    prefix = Settings.model_config.get("env_prefix", "")
    names = set()
    for name, field in Settings.model_fields.items():
        names.add(f"{prefix}{name}".upper())
        alias = field.validation_alias
        if isinstance(alias, str):
            names.add(alias.upper())
        elif alias is not None:
            names.update(str(choice).upper() for choice in getattr(alias, "choices", []))
    return names


def test_rest_function_environment_names_are_all_known_to_settings(template: dict[str, Any]) -> None:
    environment = function_specs(template)["RestApiFunction"].environment
    unknown = set(environment) - _settings_env_names() - POWERTOOLS_ENV
    assert unknown == set()
    # Everything the function needs on AWS is set by the template, not left to a default.
    assert {
        "SEEKLESS_SESSIONS_TABLE",
        "SEEKLESS_REDIS_CLUSTER",
        "SEEKLESS_KEYS_TABLE",
        "REDIS_URL",
        "SEEKLESS_DEEPSEEK_SECRET_NAME",
        "DEEPSEEK_BASE_URL",
        "SEEKLESS_MAX_TOKENS_CAP",
        "SEEKLESS_CACHE_TTL_SECONDS",
    } <= set(environment)


def test_redis_url_uses_tls_to_the_serverless_cache_endpoint(template: dict[str, Any]) -> None:
    text, variables = function_specs(template)["RestApiFunction"].environment["REDIS_URL"]["Fn::Sub"]
    assert text.startswith("rediss://")
    assert variables == {
        "Host": {"Fn::GetAtt": ["Cache", "Endpoint.Address"]},
        "Port": {"Fn::GetAtt": ["Cache", "Endpoint.Port"]},
    }


# ---------------------------------------------------------------- seekless_local.template


def test_loader_turns_every_short_tag_into_its_long_form(tmp_path: Path) -> None:
    path = tmp_path / "t.yaml"
    path.write_text(
        "\n".join(
            [
                "a: !Ref Stage",
                "b: !GetAtt Cache.Endpoint.Address",
                "c: !Sub '${AWS::Region}'",
                "d: !If [IsProd, !Base64 x, !ImportValue y]",
                "e: !Equals [!Select [0, !Split [',', !Join [',', [p, q]]]], p]",
                "f: !Not [!And [!Condition C1, !Or [!Condition C2, !Condition C3]]]",
                "g: !FindInMap [M, K, V]",
                "h: !Cidr [!GetAtt [Vpc, CidrBlock], 2, 8]",
                "i: !GetAZs ''",
            ]
        )
    )
    assert load_template(path) == {
        "a": {"Ref": "Stage"},
        "b": {"Fn::GetAtt": ["Cache", "Endpoint.Address"]},
        "c": {"Fn::Sub": "${AWS::Region}"},
        "d": {"Fn::If": ["IsProd", {"Fn::Base64": "x"}, {"Fn::ImportValue": "y"}]},
        "e": {"Fn::Equals": [{"Fn::Select": [0, {"Fn::Split": [",", {"Fn::Join": [",", ["p", "q"]]}]}]}, "p"]},
        "f": {"Fn::Not": [{"Fn::And": [{"Condition": "C1"}, {"Fn::Or": [{"Condition": "C2"}, {"Condition": "C3"}]}]}]},
        "g": {"Fn::FindInMap": ["M", "K", "V"]},
        "h": {"Fn::Cidr": [{"Fn::GetAtt": ["Vpc", "CidrBlock"]}, 2, 8]},
        "i": {"Fn::GetAZs": ""},
    }


def test_function_spec_merges_globals_and_points_at_the_handler_file(template: dict[str, Any]) -> None:
    spec = function_specs(template)["RestApiFunction"]
    repo_root = Path(TEMPLATE_PATH).parent
    assert spec.code_uri == repo_root / "functions" / "rest_api"
    assert spec.module_path == repo_root / "functions" / "rest_api" / "app.py"
    assert (spec.handler, spec.handler_attr, spec.timeout) == ("app.handler", "handler", 29)
    assert spec.environment["POWERTOOLS_SERVICE_NAME"] == "seekless"  # from Globals
    assert spec.environment["SEEKLESS_SESSIONS_TABLE"] == {"Ref": "SessionsTable"}  # intrinsic kept
    assert set(spec.events) == {"Root", "Proxy"}


def test_handlers_that_share_a_file_name_load_as_separate_modules(tmp_path: Path) -> None:
    specs = []
    for name in ("one", "two"):
        folder = tmp_path / name
        folder.mkdir()
        (folder / "helper.py").write_text(f"NAME = {name!r}\n")
        (folder / "app.py").write_text("from helper import NAME\n\ndef handler(event, context):\n    return NAME\n")
        specs.append(
            FunctionSpec(
                logical_id=f"Test{name.title()}Function{tmp_path.name.replace('-', '')}",
                code_uri=folder,
                handler="app.handler",
                module_path=folder / "app.py",
                handler_attr="handler",
            )
        )
    first = load_handler(specs[0])
    # helper.py is cached in sys.modules under its bare name, as it would be in one Lambda sandbox;
    # drop it so the second function imports its own.
    import sys

    sys.modules.pop("helper", None)
    second = load_handler(specs[1])
    sys.modules.pop("helper", None)
    assert (first({}, None), second({}, None)) == ("one", "two")
    assert load_handler(specs[0]) is first


# ---------------------------------------------------------------- events


REST_EVENT_KEYS = {
    "resource",
    "path",
    "httpMethod",
    "headers",
    "multiValueHeaders",
    "queryStringParameters",
    "multiValueQueryStringParameters",
    "pathParameters",
    "stageVariables",
    "requestContext",
    "body",
    "isBase64Encoded",
}
REQUEST_CONTEXT_KEYS = {
    "accountId",
    "apiId",
    "stage",
    "requestId",
    "identity",
    "resourcePath",
    "httpMethod",
    "path",
    "requestTimeEpoch",
}


@pytest.mark.parametrize("path", event_files("rest"), ids=lambda p: p.stem)
def test_rest_event_is_a_well_formed_v1_proxy_event(path: Path) -> None:
    event = load_event(path)
    assert set(event) >= REST_EVENT_KEYS
    assert event["body"] is None or isinstance(event["body"], str)
    assert event["isBase64Encoded"] is False
    assert event["resource"] == "/{proxy+}"
    assert event["pathParameters"] == {"proxy": event["path"].lstrip("/")}
    context = event["requestContext"]
    assert set(context) >= REQUEST_CONTEXT_KEYS
    assert "sourceIp" in context["identity"]
    assert context["httpMethod"] == event["httpMethod"]
    assert context["path"] == f"/{context['stage']}{event['path']}"
    assert {name: [value] for name, value in event["headers"].items()} == event["multiValueHeaders"]
    if event["queryStringParameters"] is None:
        assert event["multiValueQueryStringParameters"] is None


def test_rest_events_cover_every_scenario_by_name() -> None:
    assert {path.stem for path in event_files("rest")} >= {
        "get_healthz",
        "get_models",
        "post_chat",
        "post_chat_stream",
        "post_chat_session",
        "post_chat_bad_json",
        "post_chat_empty_messages",
        "post_chat_unknown_model",
        "post_chat_unauthenticated",
        "post_sessions",
        "get_sessions",
        "get_session",
        "delete_session",
    }
    assert load_event("rest/post_chat") == load_event("rest/post_chat.json")
    assert "Authorization" not in load_event("rest/post_chat_unauthenticated")["headers"]
    assert json.loads(load_event("rest/post_chat_stream")["body"])["stream"] is True
