"""template.yaml as data: the one source that tests and the local stack build tables and functions from.

Reading the template instead of restating it means the schema a test runs against cannot drift from
the schema that gets deployed (STYLE.md #11).
"""

from __future__ import annotations

import hashlib
import importlib.util
import json
import sys
import threading
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

import yaml

if TYPE_CHECKING:
    from mypy_boto3_dynamodb import DynamoDBClient

REPO_ROOT = Path(__file__).resolve().parent.parent
TEMPLATE_PATH = REPO_ROOT / "template.yaml"

TABLE_TYPE = "AWS::DynamoDB::Table"
FUNCTION_TYPE = "AWS::Serverless::Function"

# boto3 create_table accepts only these keys of a CloudFormation GlobalSecondaryIndex.
_GSI_KEYS = ("IndexName", "KeySchema", "Projection", "ProvisionedThroughput", "OnDemandThroughput")
_LSI_KEYS = ("IndexName", "KeySchema", "Projection")

# Short tags whose long form is "Fn::<Name>"; !Ref and !Condition are the two that are not.
_FN_TAGS = (
    "Base64",
    "Cidr",
    "FindInMap",
    "GetAZs",
    "GetAtt",
    "If",
    "ImportValue",
    "Join",
    "Select",
    "Split",
    "Sub",
    "Equals",
    "Not",
    "And",
    "Or",
    "Transform",
    "ToJsonString",
    "Length",
    # Rules-only functions (the template's Rules section).
    "Contains",
    "EachMemberEquals",
    "EachMemberIn",
    "RefAll",
    "ValueOf",
    "ValueOfAll",
)


class CloudFormationLoader(yaml.SafeLoader):
    """A safe YAML loader that turns CloudFormation short tags into their long dict form."""


def _node_value(loader: yaml.SafeLoader, node: yaml.Node) -> Any:
    if isinstance(node, yaml.ScalarNode):
        return loader.construct_scalar(node)
    if isinstance(node, yaml.SequenceNode):
        return loader.construct_sequence(node, deep=True)
    assert isinstance(node, yaml.MappingNode)
    return loader.construct_mapping(node, deep=True)


def _long_form(key: str) -> Callable[[yaml.SafeLoader, yaml.Node], dict[str, Any]]:
    def construct(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
        return {key: _node_value(loader, node)}

    return construct


def _get_att(loader: yaml.SafeLoader, node: yaml.Node) -> dict[str, Any]:
    value = _node_value(loader, node)
    if isinstance(value, str):
        # "Cache.Endpoint.Address" is resource "Cache", attribute "Endpoint.Address".
        resource, _, attribute = value.partition(".")
        value = [resource, attribute]
    return {"Fn::GetAtt": value}


CloudFormationLoader.add_constructor("!Ref", _long_form("Ref"))
CloudFormationLoader.add_constructor("!Condition", _long_form("Condition"))
for _name in _FN_TAGS:
    CloudFormationLoader.add_constructor(f"!{_name}", _long_form(f"Fn::{_name}"))
CloudFormationLoader.add_constructor("!GetAtt", _get_att)


def load_template(path: str | Path | None = None) -> dict[str, Any]:
    """The template as a dict, short tags in long form (what aws-sam-translator and CloudFormation see)."""
    text = Path(path or TEMPLATE_PATH).read_text(encoding="utf-8")
    template = yaml.load(text, Loader=CloudFormationLoader)  # noqa: S506 - a SafeLoader subclass
    if not isinstance(template, dict):
        raise ValueError(f"{path or TEMPLATE_PATH} is not a CloudFormation template")
    return template


def _resources(template: Mapping[str, Any], resource_type: str) -> dict[str, dict[str, Any]]:
    return {
        logical_id: resource
        for logical_id, resource in template.get("Resources", {}).items()
        if resource.get("Type") == resource_type
    }


# ---------------------------------------------------------------- DynamoDB tables


def table_definitions(template: Mapping[str, Any] | None = None) -> dict[str, dict[str, Any]]:
    """boto3 ``create_table`` keyword arguments (all but TableName) for each AWS::DynamoDB::Table."""
    template = load_template() if template is None else template
    definitions: dict[str, dict[str, Any]] = {}
    for logical_id, resource in _resources(template, TABLE_TYPE).items():
        props = resource.get("Properties", {})
        billing_mode = props.get("BillingMode", "PROVISIONED")
        kwargs: dict[str, Any] = {
            "AttributeDefinitions": props["AttributeDefinitions"],
            "KeySchema": props["KeySchema"],
            "BillingMode": billing_mode,
        }
        if "ProvisionedThroughput" in props:
            kwargs["ProvisionedThroughput"] = props["ProvisionedThroughput"]
        if props.get("GlobalSecondaryIndexes"):
            kwargs["GlobalSecondaryIndexes"] = [
                {key: index[key] for key in _GSI_KEYS if key in index} for index in props["GlobalSecondaryIndexes"]
            ]
        if props.get("LocalSecondaryIndexes"):
            kwargs["LocalSecondaryIndexes"] = [
                {key: index[key] for key in _LSI_KEYS if key in index} for index in props["LocalSecondaryIndexes"]
            ]
        definitions[logical_id] = kwargs
    return definitions


def default_table_name(logical_id: str) -> str:
    return f"seekless-{logical_id.lower()}"


def create_tables(
    dynamodb_client: DynamoDBClient,
    template: Mapping[str, Any] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Create every table of the template, with TTL as the template sets it.

    Returns logical id → table name. ``names`` overrides the default name (``seekless-<logicalid>``)
    for the logical ids it contains.
    """
    template = load_template() if template is None else template
    names = names or {}
    created: dict[str, str] = {}
    resources = _resources(template, TABLE_TYPE)
    for logical_id, kwargs in table_definitions(template).items():
        table_name = names.get(logical_id) or default_table_name(logical_id)
        dynamodb_client.create_table(TableName=table_name, **kwargs)
        # TTL can only be set on an ACTIVE table; moto is active at once, real DynamoDB is not.
        dynamodb_client.get_waiter("table_exists").wait(
            TableName=table_name, WaiterConfig={"Delay": 1, "MaxAttempts": 60}
        )
        ttl = resources[logical_id].get("Properties", {}).get("TimeToLiveSpecification")
        if ttl and ttl.get("Enabled") in (True, "true", "True"):
            dynamodb_client.update_time_to_live(
                TableName=table_name,
                TimeToLiveSpecification={"Enabled": True, "AttributeName": ttl["AttributeName"]},
            )
        created[logical_id] = table_name
    return created


# ---------------------------------------------------------------- SQS queues and S3 buckets

QUEUE_TYPE = "AWS::SQS::Queue"
BUCKET_TYPE = "AWS::S3::Bucket"
# CloudFormation queue properties that are SQS attributes of the same name.
_QUEUE_ATTRIBUTES = (
    "ContentBasedDeduplication",
    "DelaySeconds",
    "FifoQueue",
    "KmsDataKeyReusePeriodSeconds",
    "MaximumMessageSize",
    "MessageRetentionPeriod",
    "ReceiveMessageWaitTimeSeconds",
    "SqsManagedSseEnabled",
    "VisibilityTimeout",
)


def create_queues(
    sqs_client: Any,
    template: Mapping[str, Any] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Create every queue of the template with its attributes and RedrivePolicy.

    Returns logical id → queue URL. ``names`` overrides the default name (``seekless-<logicalid>``).
    A dead-letter queue is created before the queues that redrive to it, so their RedrivePolicy can
    name its real ARN; a RedrivePolicy that points outside the template raises ValueError.
    """
    template = load_template() if template is None else template
    names = names or {}
    pending = dict(_resources(template, QUEUE_TYPE))
    urls: dict[str, str] = {}
    arns: dict[str, str] = {}
    while pending:
        progressed = False
        for logical_id, resource in list(pending.items()):
            props = resource.get("Properties", {})
            attributes = {key: str(_scalar(props[key])) for key in _QUEUE_ATTRIBUTES if key in props}
            redrive = props.get("RedrivePolicy")
            if isinstance(redrive, str):
                redrive = json.loads(redrive)
            if redrive:
                targets = references(redrive.get("deadLetterTargetArn"))
                if len(targets) != 1 or not targets <= arns.keys() | pending.keys():
                    raise ValueError(f"{logical_id}: RedrivePolicy must name a queue of this template")
                (target,) = targets
                if target not in arns:
                    continue  # its dead-letter queue first
                attributes["RedrivePolicy"] = json.dumps(
                    {"deadLetterTargetArn": arns[target], "maxReceiveCount": int(redrive["maxReceiveCount"])}
                )
            name = names.get(logical_id) or default_table_name(logical_id)
            if attributes.get("FifoQueue") == "true" and not name.endswith(".fifo"):
                name += ".fifo"
            url = sqs_client.create_queue(QueueName=name, Attributes=attributes)["QueueUrl"]
            arns[logical_id] = sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"][
                "QueueArn"
            ]
            urls[logical_id] = url
            del pending[logical_id]
            progressed = True
        if not progressed:
            raise ValueError(f"RedrivePolicy cycle among {sorted(pending)}")
    return urls


def _encryption_rules(encryption: Mapping[str, Any]) -> list[dict[str, Any]]:
    """CloudFormation's BucketEncryption rules in the S3 API's spelling.

    A KMS key named by an intrinsic (``!GetAtt DataKey.Arn``) is the stack's own key, which the local
    stack does not create: the bucket keeps SSE-KMS with the service's default key instead.
    """
    rules = []
    for rule in encryption["ServerSideEncryptionConfiguration"]:
        default = {
            key: value
            for key, value in rule["ServerSideEncryptionByDefault"].items()
            if key != "KMSMasterKeyID" or isinstance(value, str)
        }
        converted = {"ApplyServerSideEncryptionByDefault": default}
        if "BucketKeyEnabled" in rule:
            converted["BucketKeyEnabled"] = rule["BucketKeyEnabled"]
        rules.append(converted)
    return rules


def create_buckets(
    s3_client: Any,
    template: Mapping[str, Any] | None = None,
    names: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """Create every bucket of the template with its encryption and public access block.

    Returns logical id → bucket name; ``names`` overrides the default (``seekless-<logicalid>``).
    """
    template = load_template() if template is None else template
    names = names or {}
    created: dict[str, str] = {}
    for logical_id, resource in _resources(template, BUCKET_TYPE).items():
        props = resource.get("Properties", {})
        name = names.get(logical_id) or default_table_name(logical_id)
        s3_client.create_bucket(Bucket=name)
        if "BucketEncryption" in props:
            s3_client.put_bucket_encryption(
                Bucket=name,
                ServerSideEncryptionConfiguration={"Rules": _encryption_rules(props["BucketEncryption"])},
            )
        if "PublicAccessBlockConfiguration" in props:
            s3_client.put_public_access_block(
                Bucket=name, PublicAccessBlockConfiguration=props["PublicAccessBlockConfiguration"]
            )
        created[logical_id] = name
    return created


def queue_arns(sqs_client: Any, urls: Mapping[str, str]) -> dict[str, str]:
    """Logical id → queue ARN for queues created by ``create_queues`` (what ``!GetAtt Queue.Arn`` gives)."""
    return {
        logical_id: sqs_client.get_queue_attributes(QueueUrl=url, AttributeNames=["QueueArn"])["Attributes"]["QueueArn"]
        for logical_id, url in urls.items()
    }


def bucket_queue_notifications(
    template: Mapping[str, Any] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Bucket logical id → its NotificationConfiguration.QueueConfigurations, each resolved to
    ``{"Queue": <queue logical id>, "Events": [...], "Rules": [{"Name", "Value"}...]}``.

    A queue that is not a queue of this template, or Lambda/Topic configurations (nothing local
    delivers those), raise ValueError rather than being skipped: a notification that silently never
    fires is the bug this reader exists to avoid.
    """
    template = load_template() if template is None else template
    resources = template.get("Resources", {})
    found: dict[str, list[dict[str, Any]]] = {}
    for logical_id, resource in _resources(template, BUCKET_TYPE).items():
        config = resource.get("Properties", {}).get("NotificationConfiguration") or {}
        unsupported = sorted(set(config) - {"QueueConfigurations"})
        if unsupported:
            raise ValueError(f"{logical_id}: NotificationConfiguration {unsupported} cannot be delivered locally")
        for entry in config.get("QueueConfigurations") or []:
            targets = [
                name for name in references(entry.get("Queue")) if resources.get(name, {}).get("Type") == QUEUE_TYPE
            ]
            if len(targets) != 1:
                raise ValueError(f"{logical_id}: a QueueConfiguration must name one queue of this template")
            event = entry.get("Event")
            if not isinstance(event, str):
                raise ValueError(f"{logical_id}: a QueueConfiguration needs one Event")
            rules = (entry.get("Filter") or {}).get("S3Key", {}).get("Rules") or []
            found.setdefault(logical_id, []).append(
                {
                    "Queue": targets[0],
                    "Events": [event],
                    "Rules": [{"Name": r["Name"], "Value": r["Value"]} for r in rules],
                }
            )
    return found


def configure_bucket_notifications(
    s3_client: Any,
    buckets: Mapping[str, str],
    arns: Mapping[str, str],
    template: Mapping[str, Any] | None = None,
) -> dict[str, list[dict[str, Any]]]:
    """Apply each bucket's QueueConfigurations, as CloudFormation does once the queues exist.

    ``buckets`` and ``arns`` are ``create_buckets`` and ``queue_arns`` results. Like S3, moto then
    sends each queue an ``s3:TestEvent`` message; a consumer must tolerate it. Returns what was
    applied, keyed by bucket logical id.
    """
    applied = bucket_queue_notifications(template)
    for logical_id, entries in applied.items():
        configurations = []
        for entry in entries:
            configuration: dict[str, Any] = {"QueueArn": arns[entry["Queue"]], "Events": entry["Events"]}
            if entry["Rules"]:
                configuration["Filter"] = {"Key": {"FilterRules": entry["Rules"]}}
            configurations.append(configuration)
        s3_client.put_bucket_notification_configuration(
            Bucket=buckets[logical_id], NotificationConfiguration={"QueueConfigurations": configurations}
        )
    return applied


# ---------------------------------------------------------------- functions


@dataclass(frozen=True)
class FunctionSpec:
    """One AWS::Serverless::Function after merging Globals, with paths resolved against the repo."""

    logical_id: str
    code_uri: Path
    handler: str
    module_path: Path
    handler_attr: str
    # Values are strings, or an intrinsic left in its long dict form ({"Ref": "SessionsTable"}).
    environment: dict[str, Any] = field(default_factory=dict)
    timeout: int | None = None
    events: dict[str, Any] = field(default_factory=dict)


def _scalar(value: Any) -> Any:
    # CloudFormation passes environment values as strings; YAML may have read 3600 as an int.
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, int | float):
        return str(value)
    return value


def function_specs(
    template: Mapping[str, Any] | None = None, *, base_dir: str | Path | None = None
) -> dict[str, FunctionSpec]:
    """Every AWS::Serverless::Function, keyed by logical id. ``base_dir`` is the template's folder."""
    template = load_template() if template is None else template
    base = Path(base_dir).resolve() if base_dir is not None else REPO_ROOT
    globals_ = template.get("Globals", {}).get("Function", {})
    specs: dict[str, FunctionSpec] = {}
    for logical_id, resource in _resources(template, FUNCTION_TYPE).items():
        props = resource.get("Properties", {})
        code_uri_value = props.get("CodeUri", globals_.get("CodeUri"))
        handler = props.get("Handler", globals_.get("Handler"))
        if not isinstance(code_uri_value, str) or not isinstance(handler, str):
            raise ValueError(f"{logical_id}: CodeUri and Handler must be plain strings for local use")
        code_uri = (base / code_uri_value).resolve()
        module_name, _, handler_attr = handler.rpartition(".")
        module_path = code_uri.joinpath(*module_name.split(".")).with_suffix(".py")
        environment = {
            **globals_.get("Environment", {}).get("Variables", {}),
            **props.get("Environment", {}).get("Variables", {}),
        }
        timeout = props.get("Timeout", globals_.get("Timeout"))
        specs[logical_id] = FunctionSpec(
            logical_id=logical_id,
            code_uri=code_uri,
            handler=handler,
            module_path=module_path,
            handler_attr=handler_attr,
            environment={name: _scalar(value) for name, value in environment.items()},
            timeout=int(timeout) if timeout is not None else None,
            events=dict(props.get("Events", {})),
        )
    return specs


EVENT_SOURCE_MAPPING_TYPE = "AWS::Lambda::EventSourceMapping"


@dataclass(frozen=True)
class SqsEventSource:
    """One SQS → function mapping: how Lambda's event source mapping is configured."""

    function: str  # logical id
    event: str  # the event's name under the function's Events, or the mapping resource's logical id
    queue: str  # the queue's logical id
    batch_size: int = 10  # Lambda's default for SQS
    batching_window_seconds: float = 0.0
    report_batch_item_failures: bool = False
    enabled: bool = True


def _sqs_source(
    template: Mapping[str, Any], function: str, name: str, queue_value: Any, props: Mapping[str, Any]
) -> SqsEventSource:
    resources = template.get("Resources", {})
    queues = [q for q in references(queue_value) if resources.get(q, {}).get("Type") == QUEUE_TYPE]
    if len(queues) != 1:
        raise ValueError(f"{name}: the event source must name one queue of this template")
    if props.get("FilterCriteria"):
        raise ValueError(f"{name}: FilterCriteria is not supported by the local event source")
    return SqsEventSource(
        function=function,
        event=name,
        queue=queues[0],
        batch_size=int(props.get("BatchSize", 10)),
        batching_window_seconds=float(props.get("MaximumBatchingWindowInSeconds", 0)),
        report_batch_item_failures="ReportBatchItemFailures" in (props.get("FunctionResponseTypes") or []),
        enabled=props.get("Enabled", True) not in (False, "false", "False"),
    )


def sqs_event_sources(template: Mapping[str, Any] | None = None) -> list[SqsEventSource]:
    """Every SQS → function mapping of the template, both spellings: a function's ``Events`` entry of
    ``Type: SQS`` (SAM), and an ``AWS::Lambda::EventSourceMapping`` whose EventSourceArn is a queue's.

    The queue and the function must be this template's; FilterCriteria is refused, since nothing local
    would apply it and records it should drop would reach the function.
    """
    template = load_template() if template is None else template
    resources = template.get("Resources", {})
    sources: list[SqsEventSource] = []
    for logical_id, resource in _resources(template, FUNCTION_TYPE).items():
        for name, event in (resource.get("Properties", {}).get("Events") or {}).items():
            if event.get("Type") == "SQS":
                props = event.get("Properties", {})
                sources.append(_sqs_source(template, logical_id, f"{logical_id}.{name}", props.get("Queue"), props))
    for logical_id, resource in _resources(template, EVENT_SOURCE_MAPPING_TYPE).items():
        props = resource.get("Properties", {})
        if not any(resources.get(q, {}).get("Type") == QUEUE_TYPE for q in references(props.get("EventSourceArn"))):
            continue  # a stream or another source: not an SQS mapping
        functions = [
            f for f in references(props.get("FunctionName")) if resources.get(f, {}).get("Type") == FUNCTION_TYPE
        ]
        if len(functions) != 1:
            raise ValueError(f"{logical_id}: FunctionName must name one function of this template")
        sources.append(_sqs_source(template, functions[0], logical_id, props.get("EventSourceArn"), props))
    return sources


def _resolve(value: Any, refs: Mapping[str, str]) -> str | None:
    """A string for ``value`` given ``refs`` (Ref names and "Resource.Attribute" keys), else None."""
    if isinstance(value, str):
        return value
    if not isinstance(value, dict) or len(value) != 1:
        return None
    ((kind, arg),) = value.items()
    if kind == "Ref":
        return refs.get(arg)
    if kind == "Fn::GetAtt":
        return refs.get(".".join(arg) if isinstance(arg, list) else arg)
    if kind == "Fn::Sub":
        text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
        scope = dict(refs)
        for name, inner in variables.items():
            resolved = _resolve(inner, refs)
            if resolved is None:
                return None
            scope[name] = resolved
        out, rest = [], text
        while "${" in rest:
            head, _, tail = rest.partition("${")
            name, _, rest = tail.partition("}")
            if name.startswith("!"):  # ${!Literal} is an escaped literal
                out.append(head + "${" + name[1:] + "}")
                continue
            if name not in scope:
                return None
            out.append(head + scope[name])
        return "".join(out) + rest
    return None


def parameter_defaults(template: Mapping[str, Any] | None = None) -> dict[str, str]:
    """Each parameter's Default as a string (List parameters joined with commas, as CloudFormation does)."""
    template = load_template() if template is None else template
    defaults: dict[str, str] = {}
    for name, parameter in template.get("Parameters", {}).items():
        if "Default" in parameter:
            default = parameter["Default"]
            defaults[name] = ",".join(default) if isinstance(default, list) else str(_scalar(default))
    return defaults


def resolve_environment(
    spec: FunctionSpec, refs: Mapping[str, str], template: Mapping[str, Any] | None = None
) -> dict[str, str]:
    """The function's environment with intrinsics resolved, for running it locally.

    ``refs`` maps Ref targets (parameters, table logical ids → table names) and GetAtt keys
    ("Cache.Endpoint.Address") to strings; parameter defaults fill what it leaves out. A variable that
    cannot be resolved is dropped, so the settings model falls back to its own default.
    """
    scope = {**parameter_defaults(template), "AWS::Region": "us-east-1", **refs}
    resolved = {name: _resolve(value, scope) for name, value in spec.environment.items()}
    return {name: value for name, value in resolved.items() if value is not None}


def load_handler(spec: FunctionSpec, *, fresh: bool = False) -> Callable[..., Any]:
    """Import the handler module from its file and return the handler callable.

    Every function's module is called app.py, so each is imported under a name of its own. The
    function's folder is on sys.path while the module executes, as /var/task is on Lambda. A second
    call returns the already-imported handler (a warm execution environment) unless ``fresh``.
    """
    # The file's path is part of the name: two templates may use one logical id for different code.
    digest = hashlib.sha256(str(spec.module_path.resolve()).encode()).hexdigest()[:12]
    module_name = f"_seekless_function_{spec.logical_id.lower()}_{digest}"
    # One import at a time: two threads loading the same function (a poller and a caller, two
    # gateways) would otherwise each execute the module and hold handlers of different module objects,
    # and sys.path is shared.
    with _LOAD_LOCK:
        return _load_handler(spec, module_name, fresh=fresh)


_LOAD_LOCK = threading.RLock()


def _load_handler(spec: FunctionSpec, module_name: str, *, fresh: bool) -> Callable[..., Any]:
    module = None if fresh else sys.modules.get(module_name)
    if module is None:
        import_spec = importlib.util.spec_from_file_location(module_name, spec.module_path)
        if import_spec is None or import_spec.loader is None:
            raise ImportError(f"cannot import {spec.module_path} for {spec.logical_id}")
        module = importlib.util.module_from_spec(import_spec)
        # Registered before executing: dataclasses and pydantic look their module up by name.
        sys.modules[module_name] = module
        folder = str(spec.code_uri)
        sys.path.insert(0, folder)
        try:
            import_spec.loader.exec_module(module)
        except BaseException:
            sys.modules.pop(module_name, None)
            raise
        finally:
            if folder in sys.path:
                sys.path.remove(folder)
    handler = getattr(module, spec.handler_attr, None)
    if not callable(handler):
        raise AttributeError(f"{spec.module_path} has no callable {spec.handler_attr!r} ({spec.logical_id})")
    return handler


# ---------------------------------------------------------------- WebSocket API (API Gateway v2)

WS_API_TYPE = "AWS::ApiGatewayV2::Api"
WS_ROUTE_TYPE = "AWS::ApiGatewayV2::Route"
WS_INTEGRATION_TYPE = "AWS::ApiGatewayV2::Integration"
WS_AUTHORIZER_TYPE = "AWS::ApiGatewayV2::Authorizer"
_FUNCTION_TYPES = (FUNCTION_TYPE, "AWS::Lambda::Function")
DEFAULT_FUNCTION_TIMEOUT = 3  # seconds, SAM's and Lambda's default


@dataclass(frozen=True)
class WebSocketAuthorizerSpec:
    """A REQUEST authorizer: the function it invokes and the identity sources that must be present."""

    logical_id: str
    function: str
    # e.g. ("route.request.header.Authorization", "route.request.querystring.ticket"); empty: none required
    identity_sources: tuple[str, ...] = ()


@dataclass(frozen=True)
class WebSocketApiSpec:
    """One WebSocket API as the local gateway needs it: routes resolved down to function logical ids."""

    logical_id: str
    route_selection_expression: str
    routes: dict[str, str]  # route key ("$connect", "chat", ...) → function logical id
    authorizer: WebSocketAuthorizerSpec | None  # the $connect route's, when AuthorizationType is CUSTOM
    functions: dict[str, int]  # every function of the template → its Timeout (seconds), for Invoke


def references(value: Any) -> set[str]:
    """Logical ids that ``value`` points at: ``Ref``, ``Fn::GetAtt`` and ``${X}``/``${X.Arn}`` in ``Fn::Sub``.

    Pseudo parameters (``AWS::Region``) are left out.
    """
    found: set[str] = set()
    if isinstance(value, list):
        for item in value:
            found |= references(item)
    elif isinstance(value, dict):
        for kind, arg in value.items():
            if kind == "Ref" and isinstance(arg, str):
                found.add(arg)
            elif kind == "Fn::GetAtt":
                target = arg[0] if isinstance(arg, list) else str(arg).partition(".")[0]
                found.add(target)
            elif kind == "Fn::Sub":
                text, variables = (arg, {}) if isinstance(arg, str) else (arg[0], arg[1])
                for name in _sub_names(text):
                    if name not in variables:
                        found.add(name.partition(".")[0])
                found |= references(list(variables.values()))
            else:
                found |= references(arg)
    return {name for name in found if not name.startswith("AWS::")}


def _sub_names(text: str) -> list[str]:
    names, rest = [], text
    while "${" in rest:
        _, _, tail = rest.partition("${")
        name, _, rest = tail.partition("}")
        if not name.startswith("!"):
            names.append(name.strip())
    return names


def _referenced(value: Any, template: Mapping[str, Any], types: tuple[str, ...]) -> str | None:
    resources = template.get("Resources", {})
    matches = sorted(name for name in references(value) if resources.get(name, {}).get("Type") in types)
    return matches[0] if len(matches) == 1 else None


def function_timeouts(template: Mapping[str, Any] | None = None) -> dict[str, int]:
    """Every function's Timeout (Globals merged), keyed by logical id."""
    template = load_template() if template is None else template
    default = template.get("Globals", {}).get("Function", {}).get("Timeout", DEFAULT_FUNCTION_TIMEOUT)
    timeouts: dict[str, int] = {}
    for logical_id, resource in template.get("Resources", {}).items():
        if resource.get("Type") in _FUNCTION_TYPES:
            timeout = resource.get("Properties", {}).get("Timeout", default)
            timeouts[logical_id] = int(timeout) if isinstance(timeout, int | str) else DEFAULT_FUNCTION_TIMEOUT
    return timeouts


def websocket_api(template: Mapping[str, Any] | None = None, logical_id: str | None = None) -> WebSocketApiSpec:
    """The template's WebSocket API (AWS::ApiGatewayV2::Api, ProtocolType WEBSOCKET) with its routes.

    Each route's Target (``integrations/<Integration>``) leads to an Integration whose IntegrationUri
    references a function; the $connect route's AuthorizerId leads to a REQUEST authorizer whose
    AuthorizerUri references a function. Raises ValueError when the template has no such API (or
    several and ``logical_id`` does not pick one), or a route does not end at a function here.
    """
    template = load_template() if template is None else template
    apis = {
        name: resource
        for name, resource in _resources(template, WS_API_TYPE).items()
        if resource.get("Properties", {}).get("ProtocolType") == "WEBSOCKET"
    }
    if logical_id is not None:
        if logical_id not in apis:
            raise ValueError(f"no WebSocket API {logical_id!r} in the template")
    elif len(apis) != 1:
        raise ValueError(f"expected one WebSocket API in the template, found {sorted(apis) or 'none'}")
    else:
        (logical_id,) = apis
    props = apis[logical_id].get("Properties", {})
    selection = props.get("RouteSelectionExpression", "$request.body.action")

    routes: dict[str, str] = {}
    authorizer: WebSocketAuthorizerSpec | None = None
    for route_id, route in _resources(template, WS_ROUTE_TYPE).items():
        route_props = route.get("Properties", {})
        if logical_id not in references(route_props.get("ApiId")):
            continue
        route_key = route_props.get("RouteKey")
        if not isinstance(route_key, str):
            raise ValueError(f"{route_id}: RouteKey must be a plain string")
        integration_id = _referenced(route_props.get("Target"), template, (WS_INTEGRATION_TYPE,))
        if integration_id is None:
            raise ValueError(f"{route_id}: Target does not name an integration of this template")
        integration = template["Resources"][integration_id].get("Properties", {})
        function = _referenced(integration.get("IntegrationUri"), template, _FUNCTION_TYPES)
        if function is None:
            raise ValueError(f"{integration_id}: IntegrationUri does not reference a function of this template")
        routes[route_key] = function
        if route_key == "$connect" and route_props.get("AuthorizationType") == "CUSTOM":
            authorizer_id = _referenced(route_props.get("AuthorizerId"), template, (WS_AUTHORIZER_TYPE,))
            if authorizer_id is None:
                raise ValueError(f"{route_id}: AuthorizerId does not name an authorizer of this template")
            authorizer_props = template["Resources"][authorizer_id].get("Properties", {})
            authorizer_function = _referenced(authorizer_props.get("AuthorizerUri"), template, _FUNCTION_TYPES)
            if authorizer_function is None:
                raise ValueError(f"{authorizer_id}: AuthorizerUri does not reference a function of this template")
            sources = authorizer_props.get("IdentitySource") or []
            authorizer = WebSocketAuthorizerSpec(
                logical_id=authorizer_id,
                function=authorizer_function,
                identity_sources=tuple(s for s in sources if isinstance(s, str)),
            )
    return WebSocketApiSpec(
        logical_id=logical_id,
        route_selection_expression=selection,
        routes=routes,
        authorizer=authorizer,
        functions=function_timeouts(template),
    )
