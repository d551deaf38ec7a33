"""The template as loaded and as the SAM translator turns it into CloudFormation, plus helpers to read
roles and grants out of it. Shared by the template tests (REST and WebSocket)."""

from __future__ import annotations

import copy
import json
from collections.abc import Iterator
from typing import Any

import pytest
from samtranslator.translator.transform import transform

from seekless.config import Settings
from seekless_local.template import load_template

# The only Resource "*" grants a function may hold: X-Ray's write calls take no resource ARN.
XRAY_WRITE_ACTIONS = {"xray:PutTraceSegments", "xray:PutTelemetryRecords"}
# AWS-managed policies SAM attaches. Their Resource "*" statements are AWS's own and unavoidable:
# logs for every function, X-Ray for Tracing: Active, ENI management for VpcConfig.
ALLOWED_MANAGED_POLICIES = {
    "service-role/AWSLambdaBasicExecutionRole",
    "AWSXrayWriteOnlyAccess",
    "service-role/AWSLambdaVPCAccessExecutionRole",
}
VPC_MANAGED_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
# Environment names that Powertools reads itself, not the settings model.
POWERTOOLS_ENV = {"POWERTOOLS_SERVICE_NAME", "POWERTOOLS_METRICS_NAMESPACE", "POWERTOOLS_LOG_LEVEL"}


class OfflinePolicyLoader:
    """Stands in for ManagedPolicyLoader: the template names managed policies by ARN, never by name,
    so the translator must not need IAM's list of policies."""

    def load(self) -> dict[str, str]:
        raise AssertionError("the translator asked IAM for managed policy names")


@pytest.fixture(scope="session")
def template() -> dict[str, Any]:
    return load_template()


@pytest.fixture(scope="session")
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


def resources(template: dict[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {k: v for k, v in template["Resources"].items() if v["Type"] == resource_type}


def as_list(value: Any) -> list[Any]:
    return value if isinstance(value, list) else [value]


def function_roles(transformed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """Lambda function logical id → the IAM role resource it runs as."""
    roles = {}
    for logical_id, function in resources(transformed, "AWS::Lambda::Function").items():
        role_ref = function["Properties"]["Role"]
        assert role_ref.get("Fn::GetAtt", [None])[1] == "Arn", f"{logical_id} must use a role of this stack"
        roles[logical_id] = transformed["Resources"][role_ref["Fn::GetAtt"][0]]
    return roles


def statements(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [
        statement
        for policy in role["Properties"].get("Policies", [])
        for statement in as_list(policy["PolicyDocument"]["Statement"])
    ]


def grants(role: dict[str, Any]) -> dict[str, set[str]]:
    """The role's inline grants as resource (JSON of the ARN or intrinsic) → actions."""
    granted: dict[str, set[str]] = {}
    for statement in statements(role):
        assert statement["Effect"] == "Allow", statement
        for resource in as_list(statement["Resource"]):
            granted.setdefault(resource_key(resource), set()).update(as_list(statement["Action"]))
    return granted


def resource_key(resource: Any) -> str:
    return json.dumps(resource, sort_keys=True)


def settings_env_names() -> set[str]:
    """Every environment name the settings model reads (prefixed field names and aliases)."""
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
