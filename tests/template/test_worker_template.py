"""The GPU worker in template.yaml: cluster and GPU capacity, the two-container task, the task role's
grants, and scaling on the jobs backlog from zero and back to zero."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from seekless_local.template import TEMPLATE_PATH, function_specs
from tests.template.conftest import (
    DATA_KEY,
    DATA_KEY_USE,
    POWERTOOLS_ENV,
    PRIVATE_SUBNETS,
    as_list,
    cache_connect_grants,
    grants,
    resource_key,
    resources,
    settings_env_names,
    statements,
)

EXECUTE_API = "arn:${AWS::Partition}:execute-api:${AWS::Region}:${AWS::AccountId}:${WebSocketApi}"
WORKER_RESOURCES = {
    "WorkerCluster",
    "WorkerInstanceSecurityGroup",
    "WorkerSecurityGroup",
    "CacheIngressFromWorker",
    "WorkerInstanceRole",
    "WorkerInstanceProfile",
    "WorkerLaunchTemplate",
    "WorkerAutoScalingGroup",
    "WorkerCapacityProvider",
    "WorkerClusterCapacityProviders",
    "WorkerLogGroup",
    "WorkerExecutionRole",
    "WorkerTaskRole",
    "WorkerTaskDefinition",
    "WorkerService",
    "WorkerScalableTarget",
    "WorkerBacklogPerTaskScaling",
    "WorkerScaleFromZeroPolicy",
    "WorkerScaleFromZeroAlarm",
    "WorkerScaleToZeroPolicy",
    "WorkerScaleToZeroAlarm",
}
# boto3 reads these itself; Lambda sets them for the functions, ECS on EC2 does not.
AWS_SDK_ENV = {"AWS_REGION", "AWS_DEFAULT_REGION"}
# A ready-made ECS metric: one of these in each backlog formula gives the per-task denominator.
TASK_COUNT_METRICS = {"DesiredTaskCount", "RunningTaskCount"}
QUEUE_DIMENSION = [{"Name": "QueueName", "Value": {"Fn::GetAtt": ["JobsQueue", "QueueName"]}}]


def _props(template: dict[str, Any], logical_id: str) -> dict[str, Any]:
    return dict(template["Resources"][logical_id]["Properties"])


def _containers(template: dict[str, Any]) -> dict[str, dict[str, Any]]:
    definitions = _props(template, "WorkerTaskDefinition")["ContainerDefinitions"]
    return {container["Name"]: container for container in definitions}


def _environment(template: dict[str, Any]) -> dict[str, Any]:
    return {pair["Name"]: pair["Value"] for pair in _containers(template)["worker"]["Environment"]}


def _getatt_arn(logical_id: str) -> dict[str, Any]:
    return {"Fn::GetAtt": [logical_id, "Arn"]}


def _metrics(queries: list[dict[str, Any]]) -> dict[str, dict[str, Any]]:
    """Metric data query id → its metric (namespace, name, dimensions), for the non-expression ones."""
    return {query["Id"]: query["MetricStat"]["Metric"] for query in queries if "MetricStat" in query}


def _expression(queries: list[dict[str, Any]]) -> str:
    (returned,) = [query for query in queries if query.get("ReturnData") is True]
    return str(returned["Expression"])


# ---------------------------------------------------------------- parameters, transform, outputs


def test_worker_parameters_have_safe_documented_defaults(template: dict[str, Any]) -> None:
    parameters = template["Parameters"]
    instance = parameters["WorkerInstanceType"]
    assert instance["Default"] in instance["AllowedValues"]
    # Single-GPU families only: one task per instance is what the scaling arithmetic assumes.
    assert all(value.split(".")[0] in {"g5", "g6", "g6e"} for value in instance["AllowedValues"])
    assert all(value.split(".")[1] in {"xlarge", "2xlarge"} for value in instance["AllowedValues"])
    assert (parameters["WorkerMinTasks"]["Default"], parameters["WorkerMinTasks"]["MinValue"]) == (0, 0)
    assert parameters["WorkerMaxTasks"]["Default"] == 2
    assert parameters["BacklogPerTask"]["Default"] >= parameters["WorkerConcurrency"]["Default"]
    assert parameters["InferenceModelId"]["Default"].startswith("deepseek-ai/")
    image = parameters["InferenceImage"]["Default"]
    repository, _, tag = image.partition(":")
    assert repository == "vllm/vllm-openai" and tag.startswith("v") and tag != "latest"
    # The worker image is built from this repository, so there is no default to fall back on.
    assert "Default" not in parameters["WorkerImage"]
    assert "docker build -f worker/Dockerfile" in Path(TEMPLATE_PATH).read_text(encoding="utf-8")


def test_worker_amis_are_the_ecs_gpu_optimized_ones_from_ssm(template: dict[str, Any]) -> None:
    ami = template["Parameters"]["WorkerAmiId"]
    assert ami["Type"] == "AWS::SSM::Parameter::Value<AWS::EC2::Image::Id>"
    assert ami["Default"] == "/aws/service/ecs/optimized-ami/amazon-linux-2023/gpu/recommended/image_id"
    data = _props(template, "WorkerLaunchTemplate")["LaunchTemplateData"]
    assert data["ImageId"] == {"Ref": "WorkerAmiId"}
    assert data["InstanceType"] == {"Ref": "WorkerInstanceType"}


def test_translator_passes_every_worker_resource_through_unchanged(
    template: dict[str, Any], transformed: dict[str, Any]
) -> None:
    for logical_id in WORKER_RESOURCES:
        assert transformed["Resources"][logical_id] == template["Resources"][logical_id], logical_id


def test_outputs_name_the_cluster_the_service_and_the_task_role(template: dict[str, Any]) -> None:
    outputs = template["Outputs"]
    assert outputs["WorkerClusterName"]["Value"] == {"Ref": "WorkerCluster"}
    assert outputs["WorkerServiceName"]["Value"] == {"Fn::GetAtt": ["WorkerService", "Name"]}
    assert outputs["WorkerTaskRoleArn"]["Value"] == _getatt_arn("WorkerTaskRole")


# ---------------------------------------------------------------- cluster and GPU capacity


def test_instances_join_the_cluster_with_gpu_support_and_no_task_access_to_instance_credentials(
    template: dict[str, Any],
) -> None:
    data = _props(template, "WorkerLaunchTemplate")["LaunchTemplateData"]
    user_data = data["UserData"]["Fn::Base64"]["Fn::Sub"]
    assert "ECS_CLUSTER=${WorkerCluster}" in user_data
    assert "ECS_ENABLE_GPU_SUPPORT=true" in user_data
    assert "ECS_AWSVPC_BLOCK_IMDS=true" in user_data
    assert data["MetadataOptions"]["HttpTokens"] == "required"
    assert data["IamInstanceProfile"] == {"Arn": _getatt_arn("WorkerInstanceProfile")}
    (disk,) = data["BlockDeviceMappings"]
    assert disk["Ebs"]["Encrypted"] is True and disk["Ebs"]["VolumeSize"] >= 100


def test_instance_role_is_only_the_ecs_agents_managed_policy(template: dict[str, Any]) -> None:
    role = _props(template, "WorkerInstanceRole")
    assert role["ManagedPolicyArns"] == [
        {"Fn::Sub": "arn:${AWS::Partition}:iam::aws:policy/service-role/AmazonEC2ContainerServiceforEC2Role"}
    ]
    assert "Policies" not in role
    assert _props(template, "WorkerInstanceProfile")["Roles"] == [{"Ref": "WorkerInstanceRole"}]


def test_auto_scaling_group_spans_the_subnets_and_is_sized_by_ecs(template: dict[str, Any]) -> None:
    group = _props(template, "WorkerAutoScalingGroup")
    assert group["VPCZoneIdentifier"] == PRIVATE_SUBNETS
    assert group["MinSize"] == "0"
    assert group["MaxSize"] == {"Ref": "WorkerMaxTasks"}
    # Managed scaling owns the size; a DesiredCapacity here would be reset on every stack update.
    assert "DesiredCapacity" not in group
    assert group["LaunchTemplate"]["LaunchTemplateId"] == {"Ref": "WorkerLaunchTemplate"}


def test_capacity_provider_scales_instances_drains_them_and_is_the_clusters_default(
    template: dict[str, Any],
) -> None:
    provider = _props(template, "WorkerCapacityProvider")["AutoScalingGroupProvider"]
    assert provider["AutoScalingGroupArn"] == {"Ref": "WorkerAutoScalingGroup"}
    assert provider["ManagedScaling"]["Status"] == "ENABLED"
    assert provider["ManagedScaling"]["TargetCapacity"] == 100
    # Termination protection would hang stack deletion; draining hands the jobs back instead.
    assert provider["ManagedTerminationProtection"] == "DISABLED"
    assert provider["ManagedDraining"] == "ENABLED"
    association = _props(template, "WorkerClusterCapacityProviders")
    assert association["Cluster"] == {"Ref": "WorkerCluster"}
    assert association["CapacityProviders"] == [{"Ref": "WorkerCapacityProvider"}]
    service = template["Resources"]["WorkerService"]
    assert service["DependsOn"] == "WorkerClusterCapacityProviders"
    assert service["Properties"]["CapacityProviderStrategy"] == [
        {"CapacityProvider": {"Ref": "WorkerCapacityProvider"}, "Weight": 1}
    ]
    assert "LaunchType" not in service["Properties"]


def test_container_insights_is_on_for_the_task_count_metrics(template: dict[str, Any]) -> None:
    assert {"Name": "containerInsights", "Value": "enabled"} in _props(template, "WorkerCluster")["ClusterSettings"]


def test_worker_tasks_are_private_and_reach_the_cache(template: dict[str, Any]) -> None:
    network = _props(template, "WorkerService")["NetworkConfiguration"]["AwsvpcConfiguration"]
    assert network["AssignPublicIp"] == "DISABLED"
    assert network["Subnets"] == PRIVATE_SUBNETS
    assert network["SecurityGroups"] == [{"Fn::GetAtt": ["WorkerSecurityGroup", "GroupId"]}]
    for group in ("WorkerSecurityGroup", "WorkerInstanceSecurityGroup"):
        assert "SecurityGroupIngress" not in _props(template, group), group
    ingress = _props(template, "CacheIngressFromWorker")
    assert ingress["GroupId"] == {"Fn::GetAtt": ["CacheSecurityGroup", "GroupId"]}
    assert ingress["SourceSecurityGroupId"] == {"Fn::GetAtt": ["WorkerSecurityGroup", "GroupId"]}
    assert (ingress["IpProtocol"], ingress["FromPort"], ingress["ToPort"]) == ("tcp", 6379, 6379)
    # The only rule kept outside its group is this one; the functions' rule stays inline in the group.
    rules = resources(template, "AWS::EC2::SecurityGroupIngress")
    assert set(rules) == {"CacheIngressFromWorker"}


# ---------------------------------------------------------------- the task


def test_task_runs_on_ec2_in_awsvpc_with_its_own_roles(template: dict[str, Any]) -> None:
    task = _props(template, "WorkerTaskDefinition")
    assert task["RequiresCompatibilities"] == ["EC2"]
    assert task["NetworkMode"] == "awsvpc"
    assert task["TaskRoleArn"] == _getatt_arn("WorkerTaskRole")
    assert task["ExecutionRoleArn"] == _getatt_arn("WorkerExecutionRole")
    assert set(_containers(template)) == {"inference", "worker"}


def test_inference_container_holds_the_gpu_and_serves_the_model_on_port_8000(template: dict[str, Any]) -> None:
    inference = _containers(template)["inference"]
    assert inference["Image"] == {"Ref": "InferenceImage"}
    assert inference["ResourceRequirements"] == [{"Type": "GPU", "Value": "1"}]
    command = inference["Command"]
    assert command[command.index("--model") + 1] == {"Ref": "InferenceModelId"}
    # The worker asks for the model by the same id.
    assert command[command.index("--served-model-name") + 1] == {"Ref": "InferenceModelId"}
    assert command[command.index("--port") + 1] == "8000"
    (check,) = [part for part in inference["HealthCheck"]["Command"][1:] if "/health" in part]
    assert "http://127.0.0.1:8000/health" in check
    # Reachable from inside the task only.
    assert command[command.index("--host") + 1] == "127.0.0.1"
    assert inference["LogConfiguration"]["LogDriver"] == "awslogs"
    assert inference["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "WorkerLogGroup"}


def test_worker_container_holds_no_gpu_starts_after_vllm_is_healthy_and_gets_120_s_to_stop(
    template: dict[str, Any],
) -> None:
    worker = _containers(template)["worker"]
    assert worker["Image"] == {"Ref": "WorkerImage"}
    assert "ResourceRequirements" not in worker
    assert worker["DependsOn"] == [{"ContainerName": "inference", "Condition": "HEALTHY"}]
    assert worker["StopTimeout"] == 120
    assert worker["Essential"] is True
    assert worker["HealthCheck"]["Command"] == ["CMD", "python", "-m", "seekless.worker", "--health"]
    assert worker["LinuxParameters"]["InitProcessEnabled"] is True
    assert worker["LogConfiguration"]["Options"]["awslogs-group"] == {"Ref": "WorkerLogGroup"}


def test_worker_environment_names_are_known_settings(template: dict[str, Any]) -> None:
    # A misspelt name would be ignored silently and the worker would run on a default.
    unknown = set(_environment(template)) - settings_env_names() - POWERTOOLS_ENV - AWS_SDK_ENV
    assert unknown == set()


def test_worker_is_told_where_everything_lives_as_the_functions_are(template: dict[str, Any]) -> None:
    environment = _environment(template)
    assert environment["SEEKLESS_JOBS_TABLE"] == {"Ref": "JobsTable"}
    assert environment["SEEKLESS_JOBS_QUEUE_URL"] == {"Ref": "JobsQueue"}
    assert environment["SEEKLESS_JOBS_BUCKET"] == {"Ref": "JobsBucket"}
    assert environment["SEEKLESS_SESSIONS_TABLE"] == {"Ref": "SessionsTable"}
    assert environment["SEEKLESS_CONNECTIONS_TABLE"] == {"Ref": "ConnectionsTable"}
    assert environment["SEEKLESS_DEEPSEEK_SECRET_NAME"] == {"Ref": "DeepSeekApiKeySecret"}
    assert environment["SEEKLESS_INFERENCE_MODEL"] == {"Ref": "InferenceModelId"}
    assert environment["SEEKLESS_WORKER_CONCURRENCY"] == {"Ref": "WorkerConcurrency"}
    # The adapter appends /chat/completions to its base URL; vLLM serves it under /v1.
    assert environment["SEEKLESS_INFERENCE_BASE_URL"] == "http://127.0.0.1:8000/v1"
    # The drain finishes before ECS's SIGKILL, with time left to hand jobs back.
    assert 0 < int(environment["SEEKLESS_WORKER_GRACE_SECONDS"]) < _containers(template)["worker"]["StopTimeout"]
    generator = function_specs(template)["GeneratorFunction"].environment
    for name in ("REDIS_URL", "SEEKLESS_REDIS_CLUSTER", "SEEKLESS_WS_ENDPOINT", "DEEPSEEK_BASE_URL"):
        assert environment[name] == generator[name], name


def test_deepseek_key_is_read_by_the_worker_not_injected_into_its_environment(template: dict[str, Any]) -> None:
    for name, container in _containers(template).items():
        assert "Secrets" not in container, name
    assert "DEEPSEEK_API_KEY" not in _environment(template)


# ---------------------------------------------------------------- roles


WORKER_GRANTS = {
    resource_key(_getatt_arn("JobsQueue")): {
        "sqs:ReceiveMessage",
        "sqs:DeleteMessage",
        "sqs:ChangeMessageVisibility",
        "sqs:GetQueueAttributes",
        "sqs:SendMessage",  # a job waiting out its key's per-minute limits: a delayed copy of itself
    },
    resource_key(_getatt_arn("JobsTable")): {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:ConditionCheckItem",
        "dynamodb:TransactWriteItems",
    },
    resource_key(_getatt_arn("SessionsTable")): {
        "dynamodb:GetItem",
        "dynamodb:Query",
        "dynamodb:PutItem",
        "dynamodb:UpdateItem",
        "dynamodb:ConditionCheckItem",
        "dynamodb:TransactWriteItems",
    },
    resource_key(_getatt_arn("ConnectionsTable")): {"dynamodb:GetItem", "dynamodb:DeleteItem"},
    resource_key({"Fn::Sub": "${JobsBucket.Arn}/jobs/*"}): {"s3:PutObject", "s3:GetObject"},
    resource_key({"Fn::Sub": f"{EXECUTE_API}/${{Stage}}/POST/@connections/*"}): {"execute-api:ManageConnections"},
    resource_key({"Ref": "DeepSeekApiKeySecret"}): {"secretsmanager:GetSecretValue"},
    resource_key(_getatt_arn("ApiKeysTable")): {"dynamodb:GetItem", "dynamodb:UpdateItem"},  # limits, budgets
    resource_key(_getatt_arn("UsageTable")): {"dynamodb:UpdateItem"},  # each job adds to its tenant's usage
    # Batches: count each line's end, finish the batch whose last line this worker ended.
    resource_key(_getatt_arn("BatchesTable")): {
        "dynamodb:GetItem",
        "dynamodb:UpdateItem",
        "dynamodb:ConditionCheckItem",
    },
    resource_key({"Fn::Sub": "${JobsTable.Arn}/index/by_batch"}): {"dynamodb:Query"},
    **{
        resource_key({"Fn::Sub": f"${{JobsBucket.Arn}}/batches/{part}/*"}): {"s3:GetObject", "s3:PutObject"}
        for part in ("work", "output", "errors")
    },
    # Decisions files: the pinned ruleset version is read, each decision put once.
    resource_key(_getatt_arn("RulesetsTable")): {"dynamodb:GetItem"},
    resource_key(_getatt_arn("DecisionsTable")): {"dynamodb:PutItem"},
    # Replies to queued requests: the stack's replies queue and prefix only.
    resource_key(_getatt_arn("RepliesQueue")): {"sqs:SendMessage"},
    resource_key({"Fn::Sub": "${JobsBucket.Arn}/replies/*"}): {"s3:PutObject"},
    # The key of every store above, through those stores' services; Redis as the cache's IAM user.
    resource_key(DATA_KEY): DATA_KEY_USE,
    **cache_connect_grants(),
}


def test_task_role_is_granted_exactly_what_the_worker_needs(template: dict[str, Any]) -> None:
    role = template["Resources"]["WorkerTaskRole"]
    assert grants(role) == WORKER_GRANTS
    assert "ManagedPolicyArns" not in role["Properties"]


def test_task_role_names_every_action_and_resource(template: dict[str, Any]) -> None:
    for statement in statements(template["Resources"]["WorkerTaskRole"]):
        assert "NotAction" not in statement and "NotResource" not in statement
        for action in as_list(statement["Action"]):
            assert "*" not in action, action
        for resource in as_list(statement["Resource"]):
            assert resource != "*", statement


def test_task_role_never_touches_the_dead_letter_queue_or_lists_jobs(template: dict[str, Any]) -> None:
    granted = grants(template["Resources"]["WorkerTaskRole"])
    assert resource_key(_getatt_arn("JobsDeadLetterQueue")) not in granted
    # The one index it reads is a batch's own jobs (to write the batch's results), never a tenant listing.
    indexes = [resource for resource in granted if "/index/" in resource]
    assert indexes == [resource_key({"Fn::Sub": "${JobsTable.Arn}/index/by_batch"})]
    assert "dynamodb:PutItem" not in granted[resource_key(_getatt_arn("JobsTable"))]


def test_task_role_streams_only_to_this_apis_connections_on_this_stage(template: dict[str, Any]) -> None:
    (statement,) = [
        s
        for s in statements(template["Resources"]["WorkerTaskRole"])
        if "execute-api:ManageConnections" in as_list(s["Action"])
    ]
    assert as_list(statement["Action"]) == ["execute-api:ManageConnections"]
    assert as_list(statement["Resource"]) == [{"Fn::Sub": f"{EXECUTE_API}/${{Stage}}/POST/@connections/*"}]


def test_task_role_can_only_be_assumed_by_this_accounts_ecs_tasks(template: dict[str, Any]) -> None:
    (trust,) = _props(template, "WorkerTaskRole")["AssumeRolePolicyDocument"]["Statement"]
    assert trust["Principal"] == {"Service": "ecs-tasks.amazonaws.com"}
    assert trust["Condition"]["StringEquals"] == {"aws:SourceAccount": {"Ref": "AWS::AccountId"}}


def test_execution_role_pulls_images_and_writes_only_the_workers_logs(template: dict[str, Any]) -> None:
    role = template["Resources"]["WorkerExecutionRole"]
    assert "ManagedPolicyArns" not in role["Properties"]
    granted = grants(role)
    # ECR's login call takes no resource; it is the only "*".
    assert granted.pop(resource_key("*")) == {"ecr:GetAuthorizationToken"}
    assert granted.pop(resource_key({"Fn::Sub": "${WorkerLogGroup.Arn}"})) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    assert granted.pop(resource_key({"Fn::Sub": "${WorkerLogGroup.Arn}:log-stream:*"})) == {
        "logs:CreateLogStream",
        "logs:PutLogEvents",
    }
    (pull,) = granted.values()
    assert pull == {"ecr:BatchCheckLayerAvailability", "ecr:GetDownloadUrlForLayer", "ecr:BatchGetImage"}


# ---------------------------------------------------------------- queues (unchanged by the worker)


def test_jobs_queues_stay_encrypted_and_redrive_after_five_receives(template: dict[str, Any]) -> None:
    queue = _props(template, "JobsQueue")
    assert queue["KmsMasterKeyId"] == DATA_KEY
    assert _props(template, "JobsDeadLetterQueue")["KmsMasterKeyId"] == DATA_KEY
    assert queue["RedrivePolicy"] == {"deadLetterTargetArn": _getatt_arn("JobsDeadLetterQueue"), "maxReceiveCount": 5}


def test_worker_is_told_the_queues_visibility_timeout_and_receive_limit(template: dict[str, Any]) -> None:
    queue = _props(template, "JobsQueue")
    environment = _environment(template)
    assert int(environment["SEEKLESS_WORKER_VISIBILITY_SECONDS"]) == queue["VisibilityTimeout"]
    assert int(environment["SEEKLESS_WORKER_MAX_RECEIVE_COUNT"]) == queue["RedrivePolicy"]["maxReceiveCount"]


# ---------------------------------------------------------------- scaling


def test_service_starts_at_the_minimum_and_scales_between_the_parameters(template: dict[str, Any]) -> None:
    assert _props(template, "WorkerService")["DesiredCount"] == {"Ref": "WorkerMinTasks"}
    target = _props(template, "WorkerScalableTarget")
    assert target["ServiceNamespace"] == "ecs"
    assert target["ScalableDimension"] == "ecs:service:DesiredCount"
    assert target["ResourceId"] == {"Fn::Sub": "service/${WorkerCluster}/${WorkerService.Name}"}
    assert (target["MinCapacity"], target["MaxCapacity"]) == ({"Ref": "WorkerMinTasks"}, {"Ref": "WorkerMaxTasks"})


def test_target_tracking_holds_the_backlog_per_task_at_the_parameter(template: dict[str, Any]) -> None:
    policy = _props(template, "WorkerBacklogPerTaskScaling")
    assert policy["PolicyType"] == "TargetTrackingScaling"
    assert policy["ScalingTargetId"] == {"Ref": "WorkerScalableTarget"}
    config = policy["TargetTrackingScalingPolicyConfiguration"]
    assert config["TargetValue"] == {"Ref": "BacklogPerTask"}
    assert config.get("DisableScaleIn", False) is False
    queries = config["CustomizedMetricSpecification"]["Metrics"]
    metrics = _metrics(queries)
    queue_metrics = {m["MetricName"] for m in metrics.values() if m["Namespace"] == "AWS/SQS"}
    assert "ApproximateNumberOfMessagesVisible" in queue_metrics
    for metric in metrics.values():
        if metric["Namespace"] == "AWS/SQS":
            assert metric["Dimensions"] == QUEUE_DIMENSION
    (tasks_id,) = [i for i, m in metrics.items() if m["Namespace"] == "ECS/ContainerInsights"]
    assert metrics[tasks_id]["MetricName"] in TASK_COUNT_METRICS
    assert metrics[tasks_id]["Dimensions"] == [
        {"Name": "ClusterName", "Value": {"Ref": "WorkerCluster"}},
        {"Name": "ServiceName", "Value": {"Fn::GetAtt": ["WorkerService", "Name"]}},
    ]
    # Jobs divided by tasks (guarded against zero tasks).
    expression = _expression(queries)
    assert f"/ FILL({tasks_id}, 0)" in expression
    assert all(query_id in expression for query_id in metrics)


def test_a_queue_with_jobs_and_no_task_wanted_starts_one(template: dict[str, Any]) -> None:
    alarm = _props(template, "WorkerScaleFromZeroAlarm")
    assert alarm["AlarmActions"] == [{"Ref": "WorkerScaleFromZeroPolicy"}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("GreaterThanOrEqualToThreshold", 1)
    assert alarm["TreatMissingData"] == "notBreaching"
    metrics = _metrics(alarm["Metrics"])
    assert metrics["visible"]["MetricName"] == "ApproximateNumberOfMessagesVisible"
    assert metrics["visible"]["Dimensions"] == QUEUE_DIMENSION
    assert metrics["desired"]["MetricName"] in TASK_COUNT_METRICS
    assert _expression(alarm["Metrics"]) == "IF(FILL(visible, 0) > 0 AND FILL(desired, 0) == 0, 1, 0)"
    policy = _props(template, "WorkerScaleFromZeroPolicy")
    assert policy["PolicyType"] == "StepScaling"
    assert policy["ScalingTargetId"] == {"Ref": "WorkerScalableTarget"}
    step = policy["StepScalingPolicyConfiguration"]
    # Exactly one, however often the alarm fires: repeating it cannot add tasks.
    assert step["AdjustmentType"] == "ExactCapacity"
    assert step["StepAdjustments"] == [{"MetricIntervalLowerBound": 0, "ScalingAdjustment": 1}]


def test_an_idle_queue_scales_the_workers_to_zero(template: dict[str, Any]) -> None:
    alarm = _props(template, "WorkerScaleToZeroAlarm")
    assert alarm["AlarmActions"] == [{"Ref": "WorkerScaleToZeroPolicy"}]
    assert (alarm["ComparisonOperator"], alarm["Threshold"]) == ("LessThanOrEqualToThreshold", 0)
    # Idle for a while, not for a moment between jobs.
    assert alarm["EvaluationPeriods"] == alarm["DatapointsToAlarm"] >= 10
    metrics = _metrics(alarm["Metrics"])
    # Running jobs count: a worker busy with a long job and an empty queue is not idle.
    assert {m["MetricName"] for m in metrics.values()} == {
        "ApproximateNumberOfMessagesVisible",
        "ApproximateNumberOfMessagesNotVisible",
    }
    assert all(m["Dimensions"] == QUEUE_DIMENSION for m in metrics.values())
    step = _props(template, "WorkerScaleToZeroPolicy")["StepScalingPolicyConfiguration"]
    assert step["AdjustmentType"] == "ExactCapacity"
    assert step["StepAdjustments"] == [{"MetricIntervalUpperBound": 0, "ScalingAdjustment": 0}]
    # Zero is reachable: the scalable target's floor is WorkerMinTasks, whose default and minimum are 0.
    assert template["Parameters"]["WorkerMinTasks"]["Default"] == 0


@pytest.mark.parametrize("logical_id", ["WorkerBacklogPerTaskScaling", "WorkerScaleToZeroAlarm"])
def test_in_flight_jobs_count_as_backlog(template: dict[str, Any], logical_id: str) -> None:
    props = _props(template, logical_id)
    queries = (
        props["TargetTrackingScalingPolicyConfiguration"]["CustomizedMetricSpecification"]["Metrics"]
        if "TargetTrackingScalingPolicyConfiguration" in props
        else props["Metrics"]
    )
    names = {query_id: m["MetricName"] for query_id, m in _metrics(queries).items()}
    (inflight,) = [i for i, name in names.items() if name == "ApproximateNumberOfMessagesNotVisible"]
    (visible,) = [i for i, name in names.items() if name == "ApproximateNumberOfMessagesVisible"]
    assert f"FILL({visible}, 0) + FILL({inflight}, 0)" in _expression(queries)
