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

# The documented IAM exceptions (Resource "*" statements and AWS-managed policies), read from the
# template itself so that the tests, the template and docs/SECURITY.md share one list.
IAM_EXCEPTIONS: dict[str, Any] = load_template()["Metadata"]["SeeklessIamExceptions"]
ALLOWED_MANAGED_POLICIES = {entry["Policy"] for entry in IAM_EXCEPTIONS["ManagedPolicies"]}
VPC_MANAGED_POLICY = "arn:aws:iam::aws:policy/service-role/AWSLambdaVPCAccessExecutionRole"
# What every store is encrypted with, and what a role that reads and writes them is granted on it.
DATA_KEY = {"Fn::GetAtt": ["DataKey", "Arn"]}
DATA_KEY_USE = {"kms:Decrypt", "kms:GenerateDataKey"}
# Every subnet reference: the stack's own private subnets, or the caller's.
PRIVATE_SUBNETS = {
    "Fn::If": ["CreateVpc", [{"Ref": "PrivateSubnet1"}, {"Ref": "PrivateSubnet2"}], {"Ref": "SubnetIds"}]
}
THE_VPC = {"Fn::If": ["CreateVpc", {"Ref": "Vpc"}, {"Ref": "VpcId"}]}
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


def cache_connect_grants() -> dict[str, set[str]]:
    """What a role that talks to Redis holds: IAM AUTH as the cache's app user, on that cache."""
    return {
        resource_key({"Fn::GetAtt": ["Cache", "ARN"]}): {"elasticache:Connect"},
        resource_key({"Fn::GetAtt": ["CacheAppUser", "Arn"]}): {"elasticache:Connect"},
    }


def walk(value: Any, trail: tuple[Any, ...] = ()) -> Iterator[tuple[Any, tuple[Any, ...]]]:
    """Every node of ``value`` with the chain of (container, key) pairs above it."""
    yield value, trail
    if isinstance(value, dict):
        for key, item in value.items():
            yield from walk(item, (*trail, (value, key)))
    elif isinstance(value, list):
        for index, item in enumerate(value):
            yield from walk(item, (*trail, (value, index)))
