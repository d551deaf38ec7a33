"""The deployable template's security posture, read statically (docs/SECURITY.md says why each holds).

One role per function; no wildcard action and no Resource "*" outside the documented exception list
(template Metadata SeeklessIamExceptions, explained in docs/SECURITY.md); every store encrypted with the
stack's key; buckets private and TLS-only; the cache closed to anything but IAM-authenticated users;
alarms on every dead-letter queue, every function and the breaker; WAF only when asked for; and every
VPC or subnet reference choosing between the stack's own network and the caller's.
"""

from __future__ import annotations

import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from seekless.adapters.breaker import OPEN_METRIC

# Imported here, not in the test that uses it: importing it builds Powertools' Logger, whose handler keeps
# the sys.stdout of that moment. Under a test's capsys that stream is closed when the test ends, and every
# later in-process log record (a local stack's REST function) prints "--- Logging error ---" on stderr,
# into the output the CLI tests compare.
from seekless.observability import PowertoolsTelemetry
from seekless_local.template import TEMPLATE_PATH, function_specs
from tests.template.conftest import (
    DATA_KEY,
    IAM_EXCEPTIONS,
    PRIVATE_SUBNETS,
    THE_VPC,
    as_list,
    function_roles,
    grants,
    resource_key,
    resources,
    statements,
    walk,
)

SECURITY_DOC = Path(TEMPLATE_PATH).parent / "docs" / "SECURITY.md"
MANAGED_POLICY_PREFIXES = ("arn:aws:iam::aws:policy/", "arn:${AWS::Partition}:iam::aws:policy/")
# Actions that put data into a store: their roles need GenerateDataKey on the key, readers only Decrypt.
WRITE_ACTIONS = {
    "sqs:SendMessage",
    "s3:PutObject",
    "dynamodb:PutItem",
    "dynamodb:UpdateItem",
    "dynamodb:DeleteItem",
    "dynamodb:BatchWriteItem",
    "dynamodb:TransactWriteItems",
}
# The services that encrypt with the key on a caller's behalf, by IAM action prefix.
KEYED_SERVICES = {"dynamodb", "sqs", "s3", "secretsmanager"}
TLS_ONLY = {"Bool": {"aws:SecureTransport": "false"}}


def roles(transformed: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return resources(transformed, "AWS::IAM::Role")


def alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    return {k: v["Properties"] for k, v in resources(template, "AWS::CloudWatch::Alarm").items()}


def notifying_alarms(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    """The alarms that tell people (the worker's scaling alarms act on scaling policies instead)."""
    return {k: p for k, p in alarms(template).items() if {"Ref": "AlarmTopic"} in p.get("AlarmActions", [])}


def role_uses_redis(logical_id: str) -> bool:
    return logical_id == "WorkerTaskRole" or logical_id.removesuffix("Role") in REDIS_FUNCTIONS


REDIS_FUNCTIONS = {logical_id for logical_id, spec in function_specs().items() if "REDIS_URL" in spec.environment}


def create_vpc_branch(trail: tuple[Any, ...]) -> int | None:
    """The branch of the innermost !If above a node when that !If is CreateVpc's: 1 (the stack's own
    network) or 2 (the caller's); None when the innermost !If is another's, or there is none."""
    for depth in range(len(trail) - 1, -1, -1):
        container, key = trail[depth]
        if key == "Fn::If":
            if container[key][0] != "CreateVpc" or depth + 1 == len(trail):
                return None
            branch: int = trail[depth + 1][1]  # the step into the !If's argument list
            return branch
    return None


# ---------------------------------------------------------------- one role per function


def test_every_function_runs_as_a_role_of_its_own(template: dict[str, Any], transformed: dict[str, Any]) -> None:
    # A Role property would be shared or external; with Policies SAM generates one role per function.
    for logical_id, function in resources(template, "AWS::Serverless::Function").items():
        assert "Role" not in function["Properties"], logical_id
        assert function["Properties"].get("Policies"), logical_id
    functions = resources(transformed, "AWS::Lambda::Function")
    role_ids = {function["Properties"]["Role"]["Fn::GetAtt"][0] for function in functions.values()}
    assert len(role_ids) == len(functions) == len(resources(template, "AWS::Serverless::Function"))
    by_function = function_roles(transformed)
    for role in by_function.values():
        (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": ["lambda.amazonaws.com"]}
    # The worker's task, its execution and its instances: three roles of their own.
    worker_roles = {
        "WorkerTaskRole": "ecs-tasks.amazonaws.com",
        "WorkerExecutionRole": "ecs-tasks.amazonaws.com",
        "WorkerInstanceRole": "ec2.amazonaws.com",
    }
    for logical_id, service in worker_roles.items():
        role = transformed["Resources"][logical_id]
        assert role not in by_function.values()
        (trust,) = role["Properties"]["AssumeRolePolicyDocument"]["Statement"]
        assert trust["Principal"] == {"Service": service}, logical_id


# ---------------------------------------------------------------- no wildcards beyond the exceptions


def test_no_role_grants_a_wildcard_action(transformed: dict[str, Any]) -> None:
    for logical_id, role in roles(transformed).items():
        for statement in statements(role):
            assert statement["Effect"] == "Allow", logical_id
            assert "NotAction" not in statement and "NotResource" not in statement, logical_id
            for action in as_list(statement["Action"]):
                assert "*" not in action, f"{logical_id}: {action}"


def test_resource_star_only_where_the_exception_list_allows_it(transformed: dict[str, Any]) -> None:
    used: set[int] = set()
    for logical_id, role in roles(transformed).items():
        for statement in statements(role):
            if "*" not in as_list(statement["Resource"]):
                continue
            allowed = [
                index
                for index, entry in enumerate(IAM_EXCEPTIONS["ResourceStar"])
                if logical_id in entry["Roles"] and set(as_list(statement["Action"])) <= set(entry["Actions"])
            ]
            assert allowed, f"{logical_id}: Resource '*' for {statement['Action']} is not a documented exception"
            used.update(allowed)
    # A stale exception is an invitation: every entry must still be needed.
    assert used == set(range(len(IAM_EXCEPTIONS["ResourceStar"])))


def _managed_policy_name(arn: Any) -> str:
    text = arn["Fn::Sub"] if isinstance(arn, dict) else arn
    assert isinstance(text, str) and text.startswith(MANAGED_POLICY_PREFIXES), arn
    for prefix in MANAGED_POLICY_PREFIXES:
        text = text.removeprefix(prefix)
    return text


def test_managed_policies_are_exactly_the_documented_ones_on_exactly_their_roles(transformed: dict[str, Any]) -> None:
    attached: dict[str, set[str]] = {}
    for logical_id, role in roles(transformed).items():
        for arn in role["Properties"].get("ManagedPolicyArns", []):
            attached.setdefault(_managed_policy_name(arn), set()).add(logical_id)
    documented = {entry["Policy"]: set(entry["Roles"]) for entry in IAM_EXCEPTIONS["ManagedPolicies"]}
    assert attached == documented


def test_every_exception_is_explained_in_the_security_doc() -> None:
    doc = SECURITY_DOC.read_text(encoding="utf-8")
    assert "SeeklessIamExceptions" in doc
    for entry in IAM_EXCEPTIONS["ResourceStar"]:
        assert entry["Why"].strip()
        for action in entry["Actions"]:
            assert f"`{action}`" in doc, action
    for entry in IAM_EXCEPTIONS["ManagedPolicies"]:
        assert entry["Why"].strip()
        assert f"`{entry['Policy'].rpartition('/')[2]}`" in doc, entry["Policy"]


# ---------------------------------------------------------------- the key


def test_the_data_key_rotates_outlives_the_stack_and_admits_services_only_under_conditions(
    template: dict[str, Any],
) -> None:
    key = template["Resources"]["DataKey"]
    assert key["Properties"]["EnableKeyRotation"] is True
    assert key["DeletionPolicy"] == key["UpdateReplacePolicy"] == "Retain"  # retained stores need it
    (alias,) = resources(template, "AWS::KMS::Alias").values()
    assert alias["Properties"]["TargetKeyId"] == {"Ref": "DataKey"}
    administrators, services = [], []
    for statement in key["Properties"]["KeyPolicy"]["Statement"]:
        assert statement["Effect"] == "Allow"
        assert statement["Resource"] == "*"  # in a key policy: this key
        (administrators if "AWS" in statement["Principal"] else services).append(statement)
    # Administration through IAM for this account only: the one kms:*.
    (admin,) = administrators
    assert admin["Principal"] == {"AWS": {"Fn::Sub": "arn:${AWS::Partition}:iam::${AWS::AccountId}:root"}}
    assert admin["Action"] == "kms:*"
    # Each service principal: named actions, bound to this account's or this stack's requests.
    principals = set()
    for statement in services:
        principals.add(json.dumps(statement["Principal"]["Service"]))
        for action in as_list(statement["Action"]):
            assert "*" not in action, statement["Sid"]
        bound = json.dumps(statement.get("Condition", {}))
        assert "aws:SourceAccount" in bound or "kms:EncryptionContext:aws:logs:arn" in bound, statement["Sid"]
    assert principals == {
        '"s3.amazonaws.com"',  # notifications to the encrypted uploads queue
        '"cloudwatch.amazonaws.com"',  # alarms to the encrypted topic
        json.dumps({"Fn::Sub": "logs.${AWS::Region}.amazonaws.com"}),  # encrypted log groups
    }


STORES: dict[str, Callable[[dict[str, Any]], Any]] = {
    "AWS::DynamoDB::Table": lambda p: (
        p["SSESpecification"] == {"SSEEnabled": True, "SSEType": "KMS", "KMSMasterKeyId": DATA_KEY}
    ),
    "AWS::SQS::Queue": lambda p: p.get("KmsMasterKeyId") == DATA_KEY and "SqsManagedSseEnabled" not in p,
    "AWS::S3::Bucket": lambda p: (
        p["BucketEncryption"]["ServerSideEncryptionConfiguration"]
        == [
            {
                "ServerSideEncryptionByDefault": {"SSEAlgorithm": "aws:kms", "KMSMasterKeyID": DATA_KEY},
                "BucketKeyEnabled": True,
            }
        ]
    ),
    "AWS::SecretsManager::Secret": lambda p: p.get("KmsKeyId") == DATA_KEY,
    "AWS::SNS::Topic": lambda p: p.get("KmsMasterKeyId") == DATA_KEY,
    "AWS::Logs::LogGroup": lambda p: p.get("KmsKeyId") == DATA_KEY and p.get("RetentionInDays"),
}


@pytest.mark.parametrize("resource_type", sorted(STORES))
def test_every_store_is_encrypted_with_the_data_key(template: dict[str, Any], resource_type: str) -> None:
    found = resources(template, resource_type)
    assert found, resource_type
    for logical_id, resource in found.items():
        assert STORES[resource_type](resource.get("Properties", {})), logical_id


def test_every_function_logs_to_an_encrypted_group_of_its_own(template: dict[str, Any]) -> None:
    # Lambda's own /aws/lambda/<name> group would be unencrypted by this key and never expire.
    groups = []
    for logical_id, function in resources(template, "AWS::Serverless::Function").items():
        group = function["Properties"]["LoggingConfig"]["LogGroup"]["Ref"]
        assert template["Resources"][group]["Type"] == "AWS::Logs::LogGroup", logical_id
        groups.append(group)
    assert len(set(groups)) == len(groups)


def _key_grants(role: dict[str, Any]) -> list[dict[str, Any]]:
    return [s for s in statements(role) if any(a.startswith("kms:") for a in as_list(s["Action"]))]


def test_each_role_may_use_the_key_only_through_the_stores_it_uses(transformed: dict[str, Any]) -> None:
    checked = 0
    for logical_id, role in roles(transformed).items():
        actions = {action for statement in statements(role) for action in as_list(statement["Action"])}
        services = {action.partition(":")[0] for action in actions} & KEYED_SERVICES
        key_grants = _key_grants(role)
        if not services:
            assert not key_grants, logical_id
            continue
        checked += 1
        (statement,) = key_grants
        assert as_list(statement["Resource"]) == [DATA_KEY], logical_id
        via = {entry["Fn::Sub"] for entry in statement["Condition"]["StringEquals"]["kms:ViaService"]}
        assert via == {f"{service}.${{AWS::Region}}.amazonaws.com" for service in services}, logical_id
        expected = {"kms:Decrypt", "kms:GenerateDataKey"} if actions & WRITE_ACTIONS else {"kms:Decrypt"}
        assert set(as_list(statement["Action"])) == expected, logical_id
    assert checked == len(function_roles(transformed)) + 1  # every function and the worker's task


# ---------------------------------------------------------------- buckets and queues


def test_every_bucket_blocks_public_access_and_refuses_plain_http(template: dict[str, Any]) -> None:
    policies = [p["Properties"] for p in resources(template, "AWS::S3::BucketPolicy").values()]
    for logical_id, bucket in resources(template, "AWS::S3::Bucket").items():
        block = bucket["Properties"]["PublicAccessBlockConfiguration"]
        assert block == dict.fromkeys(
            ("BlockPublicAcls", "BlockPublicPolicy", "IgnorePublicAcls", "RestrictPublicBuckets"), True
        ), logical_id
        assert bucket["Properties"]["OwnershipControls"]["Rules"] == [{"ObjectOwnership": "BucketOwnerEnforced"}]
        (policy,) = [p for p in policies if p["Bucket"] == {"Ref": logical_id}]
        denials = [s for s in policy["PolicyDocument"]["Statement"] if s["Effect"] == "Deny"]
        assert any(
            s["Principal"] == "*"
            and s["Action"] == "s3:*"
            and s["Condition"] == TLS_ONLY
            and {"Fn::GetAtt": [logical_id, "Arn"]} in s["Resource"]
            and {"Fn::Sub": f"${{{logical_id}.Arn}}/*"} in s["Resource"]
            for s in denials
        ), logical_id


def test_every_queue_refuses_plain_http(template: dict[str, Any]) -> None:
    covered = set()
    for policy in resources(template, "AWS::SQS::QueuePolicy").values():
        for statement in policy["Properties"]["PolicyDocument"]["Statement"]:
            if (
                statement["Effect"] == "Deny"
                and statement.get("Condition") == TLS_ONLY
                and statement["Action"] == "sqs:*"
            ):
                covered |= {arn["Fn::GetAtt"][0] for arn in as_list(statement["Resource"])}
    assert covered == set(resources(template, "AWS::SQS::Queue"))


# ---------------------------------------------------------------- the cache


def test_the_cache_admits_only_iam_authenticated_users(template: dict[str, Any]) -> None:
    cache = template["Resources"]["Cache"]["Properties"]
    group = template["Resources"][cache["UserGroupId"]["Ref"]]
    assert group["Type"] == "AWS::ElastiCache::UserGroup"
    users = {ref["Ref"]: template["Resources"][ref["Ref"]]["Properties"] for ref in group["Properties"]["UserIds"]}
    engines = {cache["Engine"], group["Properties"]["Engine"]} | {user["Engine"] for user in users.values()}
    assert engines == {"valkey"}
    defaults = {logical_id: user for logical_id, user in users.items() if user["UserName"] == "default"}
    # The group must hold a "default" user, which unauthenticated connections become: off, no commands.
    assert len(defaults) == 1, "the user group needs exactly one user named default"
    ((_, default),) = defaults.items()
    assert default["AccessString"].split()[:1] == ["off"] and "-@all" in default["AccessString"].split()
    assert default["UserId"] != "default"  # never the account's built-in, password-less default user
    for logical_id, user in users.items():
        if logical_id in defaults:
            continue
        assert user["AuthenticationMode"] == {"Type": "iam"}, logical_id
        assert user["UserId"] == user["UserName"], logical_id  # IAM authentication requires it
        assert "-@dangerous" in user["AccessString"].split(), logical_id


def test_every_redis_client_authenticates_as_the_user_its_role_may_connect_as(
    template: dict[str, Any], transformed: dict[str, Any]
) -> None:
    environments = {logical_id: function_specs(template)[logical_id].environment for logical_id in REDIS_FUNCTIONS}
    worker = template["Resources"]["WorkerTaskDefinition"]["Properties"]["ContainerDefinitions"]
    (container,) = [c for c in worker if c["Name"] == "worker"]
    environments["WorkerTask"] = {pair["Name"]: pair["Value"] for pair in container["Environment"]}
    assert len(environments) >= 5
    for owner, environment in environments.items():
        assert environment["SEEKLESS_REDIS_IAM_USER"] == {"Ref": "CacheAppUser"}, owner
        assert environment["SEEKLESS_REDIS_CACHE_NAME"] == {"Ref": "Cache"}, owner
    connect = {
        resource_key({"Fn::GetAtt": ["Cache", "ARN"]}): {"elasticache:Connect"},
        resource_key({"Fn::GetAtt": ["CacheAppUser", "Arn"]}): {"elasticache:Connect"},
    }
    for logical_id, role in roles(transformed).items():
        granted = {resource: actions for resource, actions in grants(role).items() if "elasticache:Connect" in actions}
        assert granted == (connect if role_uses_redis(logical_id) else {}), logical_id


# ---------------------------------------------------------------- alarms


def _alarmed(template: dict[str, Any], namespace: str, metric: str) -> list[dict[str, Any]]:
    return [
        p for p in notifying_alarms(template).values() if p.get("Namespace") == namespace and p["MetricName"] == metric
    ]


def test_every_dead_letter_queue_alarms_on_its_first_message(template: dict[str, Any]) -> None:
    queues = resources(template, "AWS::SQS::Queue").values()
    redrives = [q["Properties"]["RedrivePolicy"] for q in queues if "RedrivePolicy" in q["Properties"]]
    dead_letter = {redrive["deadLetterTargetArn"]["Fn::GetAtt"][0] for redrive in redrives}
    assert len(dead_letter) == 3
    watched = {}
    for alarm in _alarmed(template, "AWS/SQS", "ApproximateNumberOfMessagesVisible"):
        ((dimension),) = alarm["Dimensions"]
        assert dimension["Name"] == "QueueName"
        watched[dimension["Value"]["Fn::GetAtt"][0]] = alarm
    assert set(watched) == dead_letter
    for alarm in watched.values():
        assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanThreshold", 0)


@pytest.mark.parametrize("metric", ["Errors", "Throttles"])
def test_every_function_alarms_on_errors_and_throttles(template: dict[str, Any], metric: str) -> None:
    watched = {alarm["Dimensions"][0]["Value"]["Ref"] for alarm in _alarmed(template, "AWS/Lambda", metric)}
    assert watched == set(resources(template, "AWS::Serverless::Function"))


def test_the_breaker_alarm_watches_the_metric_the_breaker_emits(
    template: dict[str, Any], monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    # The EMF line the functions write, with the template's own Powertools settings.
    for name, value in template["Globals"]["Function"]["Environment"]["Variables"].items():
        if isinstance(value, str):
            monkeypatch.setenv(name, value)
    monkeypatch.delenv("POWERTOOLS_METRICS_DISABLED", raising=False)
    telemetry = PowertoolsTelemetry()
    telemetry.count(OPEN_METRIC)
    telemetry.flush()
    emf = json.loads(capsys.readouterr().out.strip().splitlines()[-1])
    (directive,) = emf["_aws"]["CloudWatchMetrics"]
    (dimension_names,) = directive["Dimensions"]
    (alarm,) = _alarmed(template, directive["Namespace"], OPEN_METRIC)
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {name: emf[name] for name in dimension_names}
    assert (alarm["Statistic"], alarm["ComparisonOperator"], alarm["Threshold"]) == (
        "Sum",
        "GreaterThanOrEqualToThreshold",
        1,
    )


def test_rest_5xx_alarm_watches_this_api_and_stage(template: dict[str, Any]) -> None:
    (alarm,) = _alarmed(template, "AWS/ApiGateway", "5XXError")
    api_name = template["Resources"]["RestApi"]["Properties"]["Name"]
    assert {d["Name"]: d["Value"] for d in alarm["Dimensions"]} == {"ApiName": api_name, "Stage": {"Ref": "Stage"}}


def test_alarms_notify_the_encrypted_topic_and_treat_silence_as_fine(template: dict[str, Any]) -> None:
    for logical_id, alarm in notifying_alarms(template).items():
        assert alarm["AlarmActions"] == alarm["OKActions"] == [{"Ref": "AlarmTopic"}], logical_id
        assert alarm["TreatMissingData"] == "notBreaching", logical_id
    for logical_id, alarm in alarms(template).items():
        # Everything else is the worker's scaling: those act, they do not notify.
        if logical_id not in notifying_alarms(template):
            (action,) = alarm["AlarmActions"]
            assert template["Resources"][action["Ref"]]["Type"] == "AWS::ApplicationAutoScaling::ScalingPolicy"
    (subscription,) = resources(template, "AWS::SNS::Subscription").values()
    assert subscription["Condition"] == "HasAlarmEmail"
    assert template["Parameters"]["AlarmEmail"]["Default"] == ""


# ---------------------------------------------------------------- edge: WAF, throttling, access logs


def test_waf_exists_only_when_enabled_and_limits_each_ip_on_the_rest_stage(template: dict[str, Any]) -> None:
    assert template["Parameters"]["EnableWaf"]["Default"] == "false"
    assert template["Conditions"]["WafEnabled"] == {"Fn::Equals": [{"Ref": "EnableWaf"}, "true"]}
    waf = {k: v for k, v in template["Resources"].items() if v["Type"].startswith("AWS::WAFv2::")}
    assert set(waf) == {"WebAcl", "WebAclAssociation"}
    assert {v.get("Condition") for v in waf.values()} == {"WafEnabled"}
    assert template["Outputs"]["WebAclArn"]["Condition"] == "WafEnabled"
    acl = waf["WebAcl"]["Properties"]
    assert acl["Scope"] == "REGIONAL" and acl["DefaultAction"] == {"Allow": {}}
    (rule,) = acl["Rules"]
    assert rule["Statement"]["RateBasedStatement"] == {
        "Limit": {"Ref": "WafRateLimit"},
        "EvaluationWindowSec": 300,
        "AggregateKeyType": "IP",
    }
    assert rule["Action"]["Block"]["CustomResponse"]["ResponseCode"] == 429
    association = waf["WebAclAssociation"]["Properties"]
    assert association["WebACLArn"] == {"Fn::GetAtt": ["WebAcl", "Arn"]}
    assert association["ResourceArn"]["Fn::Sub"].endswith("/restapis/${RestApi}/stages/${RestApi.Stage}")


def test_both_apis_throttle_and_log_each_request_without_credentials(template: dict[str, Any]) -> None:
    rest = template["Resources"]["RestApi"]["Properties"]
    websocket = template["Resources"]["WebSocketStage"]["Properties"]
    (rest_throttle,) = rest["MethodSettings"]
    assert (rest_throttle["ThrottlingRateLimit"], rest_throttle["ThrottlingBurstLimit"]) == (
        {"Ref": "ThrottleRateLimit"},
        {"Ref": "ThrottleBurstLimit"},
    )
    ws_throttle = websocket["DefaultRouteSettings"]
    assert (ws_throttle["ThrottlingRateLimit"], ws_throttle["ThrottlingBurstLimit"]) == (
        {"Ref": "WebSocketThrottleRateLimit"},
        {"Ref": "WebSocketThrottleBurstLimit"},
    )
    for name, setting in (("REST", rest["AccessLogSetting"]), ("WebSocket", websocket["AccessLogSettings"])):
        group = setting["DestinationArn"]["Fn::GetAtt"][0]
        assert template["Resources"][group]["Properties"]["KmsKeyId"] == DATA_KEY, name
        fields = json.loads(setting["Format"])
        values = set(fields.values())
        assert {"$context.requestId", "$context.identity.sourceIp", "$context.status"} <= values, name
        assert "$context.integration.latency" in values, name
        text = setting["Format"].lower()
        for secret in ("authorization", "apikey", "querystring", "$input", "$context.body"):
            assert secret not in text, (name, secret)
    assert "$context.responseLatency" in json.loads(rest["AccessLogSetting"]["Format"]).values()


# ---------------------------------------------------------------- network


def test_every_vpc_and_subnet_reference_chooses_between_the_stacks_network_and_the_callers(
    template: dict[str, Any],
) -> None:
    seen = 0
    for node, trail in walk({"Resources": template["Resources"], "Outputs": template["Outputs"]}):
        if node in ({"Ref": "VpcId"}, {"Ref": "SubnetIds"}, {"Ref": "PrivateRouteTableIds"}):
            seen += 1
            where = "/".join(str(key) for _, key in trail)
            assert create_vpc_branch(trail) == 2, where
    assert seen >= 20
    # Everything that names the created network directly exists only with it.
    created = {"Vpc", "PrivateSubnet1", "PrivateSubnet2", "PrivateRouteTable1", "PrivateRouteTable2"}
    for logical_id, resource in template["Resources"].items():
        for node, trail in walk(resource.get("Properties", {})):
            if isinstance(node, dict) and node.get("Ref") in created and create_vpc_branch(trail) != 1:
                assert resource.get("Condition") in {"CreateVpc", "NatPerAz"}, logical_id
    assert template["Resources"]["Cache"]["Properties"]["SubnetIds"] == PRIVATE_SUBNETS
    assert template["Resources"]["FunctionSecurityGroup"]["Properties"]["VpcId"] == THE_VPC


def test_the_created_vpc_reaches_the_internet_only_through_nat_from_private_subnets(template: dict[str, Any]) -> None:
    res = template["Resources"]
    assert template["Conditions"]["CreateVpc"] == {
        "Fn::And": [
            {"Fn::Equals": [{"Ref": "VpcId"}, ""]},
            {"Fn::Equals": [{"Fn::Join": ["", {"Ref": "SubnetIds"}]}, ""]},
        ]
    }
    zones = {res[f"PrivateSubnet{n}"]["Properties"]["AvailabilityZone"]["Fn::Select"][0] for n in (1, 2)}
    assert zones == {0, 1}  # two AZs
    for n in (1, 2):
        (route,) = [
            r["Properties"]
            for r in resources(template, "AWS::EC2::Route").values()
            if r["Properties"]["RouteTableId"] == {"Ref": f"PrivateRouteTable{n}"}
        ]
        assert route["DestinationCidrBlock"] == "0.0.0.0/0" and "NatGatewayId" in route
        assert "GatewayId" not in route  # no internet gateway route from a private subnet
        assert res[f"PrivateSubnet{n}"]["Properties"].get("MapPublicIpOnLaunch", False) is False
    for nat in resources(template, "AWS::EC2::NatGateway").values():
        assert nat["Properties"]["SubnetId"]["Ref"].startswith("PublicSubnet")
    assert res["PrivateDefaultRoute2"]["Properties"]["NatGatewayId"] == {
        "Fn::If": ["NatPerAz", {"Ref": "NatGateway2"}, {"Ref": "NatGateway1"}]
    }


def test_aws_traffic_takes_vpc_endpoints_open_only_to_the_functions_and_the_worker(template: dict[str, Any]) -> None:
    endpoints = {
        p["Properties"]["ServiceName"]["Fn::Sub"].rpartition(".")[2]: p
        for p in resources(template, "AWS::EC2::VPCEndpoint").values()
    }
    assert set(endpoints) == {"dynamodb", "s3", "sqs", "secretsmanager", "lambda"}
    for service, endpoint in endpoints.items():
        props = endpoint["Properties"]
        assert props["VpcId"] == THE_VPC, service
        if service in {"dynamodb", "s3"}:
            assert (props["VpcEndpointType"], endpoint["Condition"]) == ("Gateway", "CreateGatewayEndpoints")
        else:
            assert (props["VpcEndpointType"], endpoint["Condition"]) == ("Interface", "CreateInterfaceEndpoints")
            assert props["PrivateDnsEnabled"] is True and props["SubnetIds"] == PRIVATE_SUBNETS, service
            assert props["SecurityGroupIds"] == [{"Fn::GetAtt": ["EndpointSecurityGroup", "GroupId"]}]
    ingress = template["Resources"]["EndpointSecurityGroup"]["Properties"]["SecurityGroupIngress"]
    assert {(rule["FromPort"], rule["ToPort"], rule["SourceSecurityGroupId"]["Fn::GetAtt"][0]) for rule in ingress} == {
        (443, 443, "FunctionSecurityGroup"),
        (443, 443, "WorkerSecurityGroup"),
    }
