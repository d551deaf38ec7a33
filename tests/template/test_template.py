"""template.yaml lints clean, transforms offline, and grants no more than the functions need."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
from cfnlint.api import ManualArgs, lint_file

from seekless_local.events import event_files, load_event
from seekless_local.template import (
    TEMPLATE_PATH,
    FunctionSpec,
    function_specs,
    load_handler,
    load_template,
    references,
)
from tests.template.conftest import (
    DATA_KEY,
    DATA_KEY_USE,
    POWERTOOLS_ENV,
    as_list,
    cache_connect_grants,
    function_roles,
    resources,
    settings_env_names,
    statements,
    walk,
)

FUNCTIONS = {
    "RestApiFunction",
    "WsAuthorizerFunction",
    "WsConnectFunction",
    "WsDisconnectFunction",
    "WsMessageFunction",
    "GeneratorFunction",
    "JobSweeperFunction",
    "BatchIngestFunction",
    "RequestsFunction",
}
# Durable tables: recoverable and retained. ConnectionsTable is ephemeral (see
# test_websocket_template.py for what it must be instead).
DURABLE_TABLES = {
    "SessionsTable",
    "ApiKeysTable",
    "JobsTable",
    "BatchesTable",
    "UsageTable",
    "RulesetsTable",
    "DecisionsTable",
}
# Tables whose items never expire: a ruleset version stays as long as any decision may cite it.
NEVER_EXPIRING = {"RulesetsTable"}


# ---------------------------------------------------------------- lint and transform


def test_cfn_lint_reports_nothing_at_any_level() -> None:
    matches = lint_file(Path(TEMPLATE_PATH), config=ManualArgs(include_checks=["I"]))
    assert [str(match) for match in matches] == []


def test_every_reference_names_a_parameter_resource_or_condition(template: dict[str, Any]) -> None:
    # cfn-lint does not follow references inside SAM function properties (a misspelt !Ref in a
    # function's environment lints clean), so every Ref, GetAtt, ${} and condition name is checked here.
    names = set(template["Parameters"]) | set(template["Resources"])
    conditions = set(template["Conditions"])
    for section in ("Resources", "Outputs", "Conditions"):
        for logical_id, body in template[section].items():
            assert references(body) <= names, (section, logical_id, references(body) - names)
            named = [body.get("Condition")] if section != "Conditions" else []
            for node, trail in walk(body):
                if isinstance(node, dict) and set(node) == {"Condition"}:  # !Condition X
                    named.append(node["Condition"])
                if trail and trail[-1][1] == "Fn::If":
                    named.append(node[0])
            assert set(named) - {None} <= conditions, (section, logical_id, set(named) - conditions)


def test_sam_transform_offline_yields_every_function_and_one_rest_stage(transformed: dict[str, Any]) -> None:
    assert "Transform" not in transformed
    functions = resources(transformed, "AWS::Lambda::Function")
    assert set(functions) == FUNCTIONS
    for logical_id, function in functions.items():
        props = function["Properties"]
        assert props["Runtime"] == "python3.12", logical_id
        assert props["Architectures"] == ["arm64"], logical_id
        assert props["Handler"] == "app.handler", logical_id
        assert props["TracingConfig"] == {"Mode": "Active"}, logical_id
    # Behind API Gateway's 29 s integration timeout; only the generator (no API in front) runs longer.
    assert functions["RestApiFunction"]["Properties"]["Timeout"] <= 29
    # Only the template's stage exists: no stray "Stage" stage without throttling or logs.
    assert [s["Properties"]["StageName"] for s in resources(transformed, "AWS::ApiGateway::Stage").values()] == [
        {"Ref": "Stage"}
    ]
    for deployment in resources(transformed, "AWS::ApiGateway::Deployment").values():
        assert "StageName" not in deployment["Properties"]


def test_rest_api_proxies_every_path_to_the_function_without_an_authorizer(transformed: dict[str, Any]) -> None:
    (api,) = resources(transformed, "AWS::ApiGateway::RestApi").values()
    body = api["Properties"]["Body"]
    assert set(body["paths"]) == {"/", "/{proxy+}"}
    for path in body["paths"].values():
        assert set(path) == {"x-amazon-apigateway-any-method"}
        method = path["x-amazon-apigateway-any-method"]
        assert method["x-amazon-apigateway-integration"]["type"] == "aws_proxy"
        assert "security" not in method
    assert not resources(transformed, "AWS::ApiGateway::Authorizer")
    assert "BinaryMediaTypes" not in api["Properties"]


def test_rest_stage_throttles_traces_and_logs_access(transformed: dict[str, Any]) -> None:
    (stage,) = resources(transformed, "AWS::ApiGateway::Stage").values()
    props = stage["Properties"]
    assert props["TracingEnabled"] is True
    assert "DestinationArn" in props["AccessLogSetting"]
    (setting,) = props["MethodSettings"]
    assert {"ThrottlingRateLimit", "ThrottlingBurstLimit"} <= set(setting)
    assert setting["MetricsEnabled"] is True
    assert setting["DataTraceEnabled"] is False  # would log prompts and answers


# ---------------------------------------------------------------- least privilege
# (wildcards, Resource "*" and managed policies of every role: test_hardening.py)


def test_rest_function_reads_keys_and_writes_only_sessions(transformed: dict[str, Any]) -> None:
    role = function_roles(transformed)["RestApiFunction"]
    grants: dict[str, set[str]] = {}
    for statement in statements(role):
        for resource in as_list(statement["Resource"]):
            grants.setdefault(json.dumps(resource, sort_keys=True), set()).update(as_list(statement["Action"]))

    def granted(resource: Any) -> set[str]:
        return grants.pop(json.dumps(resource, sort_keys=True), set())

    # GetItem to authenticate; UpdateItem for the key's daily/monthly token budget items; PutItem,
    # UpdateItem and Scan for the admin routes (create, rotate, revoke, list every tenant's keys).
    assert granted({"Fn::GetAtt": ["ApiKeysTable", "Arn"]}) == {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:PutItem",
        "dynamodb:Scan",
    }
    assert granted({"Fn::Sub": "${ApiKeysTable.Arn}/index/by_tenant"}) == {"dynamodb:Query"}
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
    # Usage: every chat adds to its tenant's counters; GET /v1/usage queries the tenant's partition.
    assert granted({"Fn::GetAtt": ["UsageTable", "Arn"]}) == {"dynamodb:UpdateItem", "dynamodb:Query"}
    assert granted({"Ref": "AdminApiKeySecret"}) == {"secretsmanager:GetSecretValue"}
    # Jobs: see test_jobs_template.py for what each grant is for.
    for resource in (
        {"Fn::GetAtt": ["JobsTable", "Arn"]},
        {"Fn::Sub": "${JobsTable.Arn}/index/by_tenant"},
        {"Fn::Sub": "${JobsTable.Arn}/index/by_tenant_status"},
        {"Fn::GetAtt": ["JobsQueue", "Arn"]},
        {"Fn::Sub": "${JobsBucket.Arn}/jobs/*"},
    ):
        assert granted(resource), resource
    # Batches: reserve, read, cancel; sign uploads into batches/input/ and downloads of results.
    assert granted({"Fn::GetAtt": ["BatchesTable", "Arn"]}) == {
        "dynamodb:GetItem",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
    }
    assert granted({"Fn::Sub": "${BatchesTable.Arn}/index/by_tenant"}) == {"dynamodb:Query"}
    assert granted({"Fn::Sub": "${JobsBucket.Arn}/batches/input/*"}) == {"s3:PutObject"}
    for results in ("output", "errors"):
        assert granted({"Fn::Sub": f"${{JobsBucket.Arn}}/batches/{results}/*"}) == {"s3:GetObject"}
    # Decisions: see test_decisions_template.py for what each grant is for.
    for table in ("RulesetsTable", "DecisionsTable"):
        assert granted({"Fn::GetAtt": [table, "Arn"]}) == {"dynamodb:GetItem", "dynamodb:PutItem", "dynamodb:Query"}
    # The key its stores are encrypted with (presigned uploads and downloads included), and Redis.
    assert granted(DATA_KEY) == DATA_KEY_USE
    for resource, actions in cache_connect_grants().items():
        assert grants.pop(resource) == actions
    assert grants == {}, "grants beyond the tables, the jobs queue and bucket, the secret, the key and the cache"


def test_the_admin_key_is_generated_and_only_the_rest_function_reads_it(
    template: dict[str, Any], transformed: dict[str, Any]
) -> None:
    secret = template["Resources"]["AdminApiKeySecret"]
    assert secret["Type"] == "AWS::SecretsManager::Secret"
    generated = secret["Properties"]["GenerateSecretString"]
    # Long, and only letters and digits: it goes in a Bearer header as it is.
    assert generated["PasswordLength"] >= 32 and generated["ExcludePunctuation"] is True
    assert "SecretString" not in secret["Properties"]
    readers = {
        logical_id
        for logical_id, role in function_roles(transformed).items()
        for statement in statements(role)
        if {"Ref": "AdminApiKeySecret"} in as_list(statement["Resource"])
    }
    assert readers == {"RestApiFunction"}
    environment = function_specs(template)["RestApiFunction"].environment
    assert environment["SEEKLESS_ADMIN_KEY_SECRET_NAME"] == {"Ref": "AdminApiKeySecret"}
    output = template["Outputs"]["AdminApiKeySecretArn"]
    assert output["Value"] == {"Ref": "AdminApiKeySecret"}
    assert "aws secretsmanager get-secret-value" in output["Description"]


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


def test_every_table_is_encrypted_on_demand_and_expiring(template: dict[str, Any]) -> None:
    tables = resources(template, "AWS::DynamoDB::Table")
    assert set(tables) == DURABLE_TABLES | {"ConnectionsTable"}
    for logical_id, table in tables.items():
        props = table["Properties"]
        assert props["SSESpecification"]["SSEEnabled"] is True, logical_id  # with DataKey: test_hardening.py
        assert props["BillingMode"] == "PAY_PER_REQUEST", logical_id
        if logical_id in NEVER_EXPIRING:
            assert "TimeToLiveSpecification" not in props, logical_id
            continue
        assert props["TimeToLiveSpecification"] == {"AttributeName": "expires_at", "Enabled": True}, logical_id
        # Set explicitly either way, so the choice is visible (and cfn-lint's I3011 stays quiet).
        assert {"DeletionPolicy", "UpdateReplacePolicy"} <= set(table), logical_id


@pytest.mark.parametrize("logical_id", sorted(DURABLE_TABLES))
def test_durable_tables_are_recoverable_and_retained(template: dict[str, Any], logical_id: str) -> None:
    table = template["Resources"][logical_id]
    assert table["Properties"]["PointInTimeRecoverySpecification"]["PointInTimeRecoveryEnabled"] is True
    assert table["DeletionPolicy"] == table["UpdateReplacePolicy"] == "Retain"


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


@pytest.mark.parametrize("logical_id", sorted(FUNCTIONS))
def test_function_environment_names_are_all_known_to_settings(template: dict[str, Any], logical_id: str) -> None:
    # A misspelt name would be ignored silently and the function would run on a default.
    environment = function_specs(template)[logical_id].environment
    unknown = set(environment) - settings_env_names() - POWERTOOLS_ENV
    assert unknown == set()


def test_rest_function_environment_sets_everything_it_needs(template: dict[str, Any]) -> None:
    environment = function_specs(template)["RestApiFunction"].environment
    # Everything the function needs on AWS is set by the template, not left to a default.
    assert {
        "SEEKLESS_SESSIONS_TABLE",
        "SEEKLESS_REDIS_CLUSTER",
        "SEEKLESS_KEYS_TABLE",
        "REDIS_URL",
        "SEEKLESS_DEEPSEEK_SECRET_NAME",
        "SEEKLESS_ADMIN_KEY_SECRET_NAME",
        "DEEPSEEK_BASE_URL",
        "SEEKLESS_MAX_TOKENS_CAP",
        "SEEKLESS_CACHE_TTL_SECONDS",
    } <= set(environment)


def test_redis_url_uses_tls_to_the_serverless_cache_endpoint_in_cluster_mode(template: dict[str, Any]) -> None:
    users = {
        logical_id: spec for logical_id, spec in function_specs(template).items() if "REDIS_URL" in spec.environment
    }
    assert set(users) == {
        "RestApiFunction",
        "WsAuthorizerFunction",
        "WsMessageFunction",
        "GeneratorFunction",
        "JobSweeperFunction",
    }
    for logical_id, spec in users.items():
        text, variables = spec.environment["REDIS_URL"]["Fn::Sub"]
        assert text.startswith("rediss://"), logical_id
        assert variables == {
            "Host": {"Fn::GetAtt": ["Cache", "Endpoint.Address"]},
            "Port": {"Fn::GetAtt": ["Cache", "Endpoint.Port"]},
        }, logical_id
        assert spec.environment["SEEKLESS_REDIS_CLUSTER"] == "true", logical_id


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
