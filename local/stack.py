"""`make dev`: the whole application on one machine, no AWS account, no Docker.

- AWS services from a moto server (a child process, so its state is its own).
- Redis from REDIS_URL, else a redis-server we start, else embedded fakeredis; it says which.
- DeepSeek: the real API when DEEPSEEK_API_KEY is set (DEEPSEEK_BASE_URL overrides the base), else the
  emulator.
- Every table, queue (dead-letter redrive included) and bucket of template.yaml, with the buckets'
  S3 → SQS notifications; the dev API key (SEEKLESS_DEV_API_KEY) seeded for tenant "dev", and the dev
  admin key (SEEKLESS_DEV_ADMIN_KEY) for the admin routes. Every function sees the environment the
  template gives it, resolved against these.
- The REST function from template.yaml behind a local API Gateway REST proxy on :3000.
- The WebSocket API from template.yaml (authorizer, routes, generator) on :3001, with the @connections
  management API and the Lambda Invoke API the handlers call through boto3 unchanged.
- One job worker (``seekless.worker``) on a thread, long-polling the moto jobs queue, when
  ``StackConfig.worker`` is on (`seekless dev` turns it on; the contract suite drives jobs itself).
- Lambda's SQS event source mappings (``seekless_local.event_sources``): a poller per ``Type: SQS``
  event of the template, when ``StackConfig.event_sources`` is on (the default).
- With ``StackConfig.state_file`` (`seekless dev` sets it), a small JSON file saying where all of it
  is, so `seekless invoke` runs functions against this stack and `seekless keys` finds its admin
  API; removed on exit.
Leaving the ``with`` block (Ctrl-C in `seekless dev`) stops everything it started.
"""

from __future__ import annotations

import json
import os
import re
import socket
import subprocess
import sys
from collections.abc import Mapping
from contextlib import ExitStack
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from types import TracebackType
from typing import Any
from urllib.parse import urlsplit

from seekless_local.redis_server import RedisServer, free_port, stop_process, wait_for_port
from seekless_local.template import REPO_ROOT, FunctionSpec, resolve_environment

DEFAULT_DEV_API_KEY = "sk-seekless-local-dev"
DEFAULT_DEV_ADMIN_KEY = "sk-seekless-local-admin"
DEV_TENANT = "dev"
REST_FUNCTION = "RestApiFunction"
# moto accepts any credentials; these only keep boto3 from looking for real ones.
_LOCAL_AWS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_SESSION_TOKEN": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
    "AWS_REGION": "us-east-1",
}
REGION = "us-east-1"
MOTO_ACCOUNT_ID = "123456789012"  # the account moto puts every resource in
EMULATOR_API_KEY = "sk-emulator-local"
STATE_FILE_NAME = "local-stack.json"
# Names the code's defaults (seekless.config) and the docs already use; every other resource is named
# by local_resource_name's rule.
_NAME_OVERRIDES = {"ApiKeysTable": "seekless-keys"}


def local_resource_name(logical_id: str) -> str:
    """The local name of a table, queue or bucket: ``JobsDeadLetterQueue`` → ``seekless-jobs-dlq``,
    ``BatchUploadsQueue`` → ``seekless-batch-uploads``, ``BatchesTable`` → ``seekless-batches``."""
    if logical_id in _NAME_OVERRIDES:
        return _NAME_OVERRIDES[logical_id]
    stem = re.sub(r"(Table|Queue|Bucket)$", "", logical_id)
    stem = re.sub(r"DeadLetter$", "Dlq", stem)
    return "seekless-" + re.sub(r"(?<!^)(?=[A-Z])", "-", stem).lower()


def default_state_file() -> Path:
    """Where `seekless dev` says where its services are: $SEEKLESS_STATE_DIR, else .seekless/ in the repo."""
    folder = os.environ.get("SEEKLESS_STATE_DIR")
    return (Path(folder) if folder else REPO_ROOT / ".seekless") / STATE_FILE_NAME


@dataclass(frozen=True)
class LocalServices:
    """Where a local stack's services are: everything a function needs to run against them.

    ``LocalStack.services()`` builds it; the state file is its JSON; `seekless invoke` and `seekless
    keys` read it back. Its one credential is the dev admin key, a local stand-in for the deployed
    stack's secret (so `seekless keys` needs no option); the DeepSeek key never goes in: with the
    real API it comes from the reader's own environment.
    """

    moto_url: str
    redis_url: str
    deepseek_base_url: str
    deepseek_emulated: bool
    tables: dict[str, str]  # logical id → table name
    queues: dict[str, str]  # logical id → queue URL
    queue_arns: dict[str, str]  # logical id → queue ARN
    buckets: dict[str, str]  # logical id → bucket name
    ws_management_url: str | None = None  # the @connections API handlers post frames to
    lambda_url: str | None = None  # the Lambda Invoke API (the WebSocket gateway serves both)
    rest_url: str | None = None
    ws_url: str | None = None
    pid: int = 0
    template_path: str = ""
    admin_api_key: str | None = field(default=None, repr=False)  # the REST function's SEEKLESS_ADMIN_API_KEY

    def to_json(self) -> str:
        return json.dumps({"version": 1, **asdict(self)}, indent=2, sort_keys=True)

    @classmethod
    def from_json(cls, text: str) -> LocalServices:
        data = json.loads(text)
        if not isinstance(data, dict) or data.pop("version", None) != 1:
            raise ValueError("not a seekless local-stack state file (version 1)")
        return cls(**data)

    def ports(self) -> list[tuple[str, int]]:
        """(host, port) of every service here that must answer for the stack to be usable."""
        found = []
        for url in (self.moto_url, self.redis_url, self.lambda_url):
            if url:
                parts = urlsplit(url)
                if parts.hostname and parts.port:
                    found.append((parts.hostname, parts.port))
        return found

    def answering(self, timeout: float = 0.5) -> bool:
        for host, port in self.ports():
            try:
                with socket.create_connection((host, port), timeout=timeout):
                    pass
            except OSError:
                return False
        return True

    def refs(self, template: Mapping[str, Any]) -> dict[str, str]:
        """What ``Ref`` and ``Fn::GetAtt`` of the template's resources resolve to here."""
        refs = {
            "AWS::AccountId": MOTO_ACCOUNT_ID,
            "AWS::Partition": "aws",
            "AWS::Region": REGION,
            "AWS::URLSuffix": "amazonaws.com",
            "AWS::StackName": "seekless-local",
        }
        for logical_id, name in self.tables.items():
            refs[logical_id] = name
            refs[f"{logical_id}.Arn"] = f"arn:aws:dynamodb:{REGION}:{MOTO_ACCOUNT_ID}:table/{name}"
        for logical_id, url in self.queues.items():
            refs[logical_id] = url  # Ref of a queue is its URL
            refs[f"{logical_id}.QueueUrl"] = url
            refs[f"{logical_id}.QueueName"] = url.rsplit("/", 1)[-1]
            if logical_id in self.queue_arns:
                refs[f"{logical_id}.Arn"] = self.queue_arns[logical_id]
        for logical_id, name in self.buckets.items():
            refs[logical_id] = name
            refs[f"{logical_id}.Arn"] = f"arn:aws:s3:::{name}"
        for logical_id, resource in template.get("Resources", {}).items():
            if resource.get("Type") in ("AWS::Serverless::Function", "AWS::Lambda::Function"):
                # The local Lambda Invoke API knows functions by logical id.
                refs[logical_id] = logical_id
        return refs

    def infrastructure_environment(self, *, deepseek_api_key: str | None = None) -> dict[str, str]:
        """The variables that point a function at these services instead of AWS's (set last, so they win
        over the template's: REDIS_URL, DEEPSEEK_BASE_URL, the endpoints)."""
        env = {
            **_LOCAL_AWS,
            "AWS_ENDPOINT_URL": self.moto_url,
            "REDIS_URL": self.redis_url,
            "SEEKLESS_REDIS_CLUSTER": "false",
            "DEEPSEEK_BASE_URL": self.deepseek_base_url,
            "POWERTOOLS_TRACE_DISABLED": "true",
            "POWERTOOLS_METRICS_DISABLED": os.environ.get("POWERTOOLS_METRICS_DISABLED", "true"),
            "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
        }
        key = EMULATOR_API_KEY if self.deepseek_emulated else deepseek_api_key
        if key:
            env["DEEPSEEK_API_KEY"] = key
        if self.ws_management_url:
            env["SEEKLESS_WS_ENDPOINT"] = self.ws_management_url
        if self.admin_api_key:
            env["SEEKLESS_ADMIN_API_KEY"] = self.admin_api_key
        if self.lambda_url:
            env["AWS_ENDPOINT_URL_LAMBDA"] = self.lambda_url
        return env

    def function_environment(self, spec: FunctionSpec, template: Mapping[str, Any]) -> dict[str, str]:
        """The function's Environment from the template, resolved against these services."""
        env = resolve_environment(spec, self.refs(template), template)
        # Locally the DeepSeek and admin keys come from the environment, not from Secrets Manager.
        env.pop("SEEKLESS_DEEPSEEK_SECRET_NAME", None)
        env.pop("SEEKLESS_ADMIN_KEY_SECRET_NAME", None)
        local_urls = set(self.queues.values())
        for name, value in env.items():
            items = value.split(",")
            if name.endswith("_URLS") and local_urls.issuperset(items):
                # A queue has two addresses here: moto's URL, and the one it would have on AWS in moto's
                # account, which boto3 aimed at moto reaches too. Sample events and clients use the
                # AWS one, so an allow-list of queue URLs holds both.
                env[name] = ",".join([*items, *(aws_queue_url(url) for url in items)])
        return env


def aws_queue_url(local_url: str) -> str:
    """``http://127.0.0.1:PORT/123456789012/name`` → ``https://sqs.us-east-1.amazonaws.com/123456789012/name``."""
    return f"https://sqs.{REGION}.amazonaws.com{urlsplit(local_url).path}"


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    rest_port: int = 3000
    ws_port: int = 3001
    dev_api_key: str = DEFAULT_DEV_API_KEY
    dev_admin_key: str = DEFAULT_DEV_ADMIN_KEY
    redis_url: str | None = None
    deepseek_api_key: str | None = None
    deepseek_base_url: str | None = None
    environments: int = 4  # concurrent execution environments of the REST function
    ws_environments: int = 8  # ... of each WebSocket API function (authorizer, routes, generator)
    worker: bool = False  # run a job worker thread on the jobs queue
    event_sources: bool = True  # run the template's SQS event source mappings (pollers)
    event_source_wait_seconds: int = 1  # their long poll: short, so stopping never waits long
    schedules: bool = False  # run the template's Schedule events (the job sweeper, every minute)
    schedule_period_seconds: float | None = None  # every schedule's period instead of its rate (tests)
    rest_gateway: bool = True  # False: services only (what `seekless invoke` starts when no stack runs)
    template_path: Path | None = None  # template.yaml of the repository unless set (tests use their own)
    state_file: Path | None = None  # where to say where the services are (`seekless dev` sets it)
    extra_env: dict[str, str] = field(default_factory=dict)
    # Timeout (seconds) of these functions instead of the template's: what a handler reads from its
    # context (the fault suite gives the generator a deadline of seconds, not 15 minutes).
    function_timeouts: dict[str, int] = field(default_factory=dict)

    @classmethod
    def from_environment(cls) -> StackConfig:
        return cls(
            rest_port=int(os.environ.get("SEEKLESS_REST_PORT", "3000")),
            ws_port=int(os.environ.get("SEEKLESS_WS_PORT", "3001")),
            dev_api_key=os.environ.get("SEEKLESS_DEV_API_KEY") or DEFAULT_DEV_API_KEY,
            dev_admin_key=os.environ.get("SEEKLESS_DEV_ADMIN_KEY") or DEFAULT_DEV_ADMIN_KEY,
            redis_url=os.environ.get("REDIS_URL") or None,
            deepseek_api_key=os.environ.get("DEEPSEEK_API_KEY") or None,
            deepseek_base_url=os.environ.get("DEEPSEEK_BASE_URL") or None,
            worker=os.environ.get("SEEKLESS_DEV_WORKER", "1") != "0",
            event_sources=os.environ.get("SEEKLESS_DEV_EVENT_SOURCES", "1") != "0",
            schedules=os.environ.get("SEEKLESS_DEV_SCHEDULES", "1") != "0",
            state_file=default_state_file(),
        )


class MotoServer:
    """moto's server mode in a child process: every AWS API on one local endpoint (see moto_server).

    ``stock_sqs`` leaves moto's SQS sends unpatched, each one scanning the whole queue (``--stock-sqs``:
    only to measure that cost, as bench/batch_split.py does).
    """

    def __init__(self, host: str = "127.0.0.1", port: int = 0, *, stock_sqs: bool = False) -> None:
        self.host = host
        self.port = port or free_port()
        self.stock_sqs = stock_sqs
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    @property
    def pid(self) -> int | None:
        """The child's process id while it runs."""
        return self._process.pid if self._process is not None else None

    def __enter__(self) -> MotoServer:
        flags = ["--stock-sqs"] if self.stock_sqs else []
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "seekless_local.moto_server", self.host, str(self.port), *flags],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self.port, host=self.host, timeout=30)
        return self

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None


class LocalStack:
    """Everything `make dev` runs, as one context manager (the contract tests use it too)."""

    def __init__(self, config: StackConfig | None = None) -> None:
        self.config = config or StackConfig()
        self._exit = ExitStack()
        self._saved_env: dict[str, str | None] = {}
        self.rest_url = ""
        self.ws_url = ""
        self.ws_gateway: Any = None
        self.moto_url = ""
        self.redis: RedisServer | None = None
        self.emulator: Any = None  # seekless_local.emulator.EmulatorServer when emulating DeepSeek
        self.deepseek_base_url = ""
        self.tables: dict[str, str] = {}  # logical id → table name
        self.queues: dict[str, str] = {}  # logical id → queue URL
        self.queue_arns: dict[str, str] = {}  # logical id → queue ARN
        self.buckets: dict[str, str] = {}  # logical id → bucket name
        self.notifications: dict[str, list[dict[str, Any]]] = {}  # bucket logical id → S3 → SQS rules
        self.gateway: Any = None
        self.worker: Any = None  # seekless_local.worker.WorkerThread when config.worker
        self.event_sources: Any = None  # seekless_local.event_sources.EventSources when config.event_sources
        self.schedules: Any = None  # seekless_local.schedules.Schedules when config.schedules
        self.template: dict[str, Any] = {}
        self.state_file: Path | None = None  # written while the stack is up

    @property
    def dev_api_key(self) -> str:
        return self.config.dev_api_key

    @property
    def deepseek_description(self) -> str:
        if self.emulator is None:
            return f"DeepSeek API at {self.deepseek_base_url} (DEEPSEEK_API_KEY set)"
        return f"DeepSeek emulator at {self.deepseek_base_url} (set DEEPSEEK_API_KEY to use the real API)"

    def _set_env(self, values: dict[str, str]) -> None:
        for name, value in values.items():
            self._saved_env.setdefault(name, os.environ.get(name))
            os.environ[name] = value

    def _restore_env(self) -> None:
        for name, value in self._saved_env.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value
        self._saved_env.clear()

    def __enter__(self) -> LocalStack:
        try:
            self._start()
        except BaseException:
            self.__exit__(None, None, None)
            raise
        return self

    def services(self) -> LocalServices:
        assert self.redis is not None
        return LocalServices(
            moto_url=self.moto_url,
            redis_url=self.redis.url,
            deepseek_base_url=self.deepseek_base_url,
            deepseek_emulated=self.emulator is not None,
            tables=dict(self.tables),
            queues=dict(self.queues),
            queue_arns=dict(self.queue_arns),
            buckets=dict(self.buckets),
            ws_management_url=self.ws_gateway.management_url if self.ws_gateway is not None else None,
            lambda_url=self.ws_gateway.lambda_url if self.ws_gateway is not None else None,
            rest_url=self.rest_url or None,
            ws_url=self.ws_url or None,
            pid=os.getpid(),
            template_path=str(self.config.template_path or ""),
            admin_api_key=self.config.dev_admin_key,
        )

    def _start(self) -> None:
        import boto3

        from seekless.adapters.dynamodb import DynamoKeyStore
        from seekless.auth import hash_key
        from seekless_local import template as cfn
        from seekless_local.gateway import ExecutionEnvironments, RestGateway
        from seekless_local.servers import ThreadedServer
        from seekless_local.ws_gateway import WebSocketGateway

        config = self.config
        template_path = config.template_path or cfn.TEMPLATE_PATH
        self.template = template = cfn.load_template(template_path)
        specs = cfn.function_specs(template, base_dir=Path(template_path).resolve().parent)

        moto = self._exit.enter_context(MotoServer(config.host))
        self.moto_url = moto.url
        self.redis = self._exit.enter_context(RedisServer.choose(config.redis_url))
        if config.deepseek_api_key:
            self.deepseek_base_url = config.deepseek_base_url or "https://api.deepseek.com"
        else:
            from seekless_local.emulator import EmulatorServer

            self.emulator = self._exit.enter_context(EmulatorServer())
            self.deepseek_base_url = self.emulator.base_url

        self._set_env({**_LOCAL_AWS, "AWS_ENDPOINT_URL": moto.url})
        dynamodb = boto3.client("dynamodb", endpoint_url=moto.url)
        sqs = boto3.client("sqs", endpoint_url=moto.url)
        s3 = boto3.client("s3", endpoint_url=moto.url)
        names = {
            logical_id: local_resource_name(logical_id)
            for logical_id, resource in template.get("Resources", {}).items()
            if resource.get("Type") in (cfn.TABLE_TYPE, cfn.QUEUE_TYPE, cfn.BUCKET_TYPE)
        }
        self.tables = cfn.create_tables(dynamodb, template, names=names)
        self.queues = cfn.create_queues(sqs, template, names=names)
        self.queue_arns = cfn.queue_arns(sqs, self.queues)
        self.buckets = cfn.create_buckets(s3, template, names=names)
        # S3 (like moto) sends each queue an s3:TestEvent here: a consumer sees it, as on AWS.
        self.notifications = cfn.configure_bucket_notifications(s3, self.buckets, self.queue_arns, template)
        if "ApiKeysTable" in self.tables:
            DynamoKeyStore(self.tables["ApiKeysTable"], client=dynamodb).put(
                hash_key(config.dev_api_key), tenant_id=DEV_TENANT, key_id="dev", name="local development key"
            )

        # Every function runs in this process and so shares one environment: the union of what the
        # template gives each (no two give a variable different values), then the local endpoints.
        services = self.services()
        env: dict[str, str] = {}
        for spec in specs.values():
            env.update(services.function_environment(spec, template))
        env.update(services.infrastructure_environment(deepseek_api_key=config.deepseek_api_key))
        env.update(config.extra_env)
        self._set_env(env)

        # Every function of the WebSocket API runs in this process, on its own warm environments. The
        # gateway also serves the @connections and Lambda Invoke APIs that handlers call, so it runs
        # in the services-only mode too. Settings are read on each environment's first invocation, so
        # its endpoints can still be set after it starts (they are only known then).
        if _has_websocket_api(template):
            api = cfn.websocket_api(template)
            if config.function_timeouts:
                api = replace(api, functions={**api.functions, **config.function_timeouts})
            ws_gateway = WebSocketGateway(
                api,
                lambda logical_id: cfn.load_handler(specs[logical_id]),
                host=config.host,
                port=config.ws_port if config.rest_gateway else 0,
                environments=config.ws_environments,
            )
            self.ws_gateway = self._exit.enter_context(ws_gateway)
            self.ws_url = ws_gateway.url if config.rest_gateway else ""
            self._set_env(
                {"SEEKLESS_WS_ENDPOINT": ws_gateway.management_url, "AWS_ENDPOINT_URL_LAMBDA": ws_gateway.lambda_url}
            )

        if config.rest_gateway and REST_FUNCTION in specs:
            spec = specs[REST_FUNCTION]
            environments = ExecutionEnvironments(
                lambda: cfn.load_handler(spec),
                name=REST_FUNCTION,
                timeout=float(config.function_timeouts.get(REST_FUNCTION) or spec.timeout or 29),
                size=config.environments,
            )
            self._exit.callback(environments.close)
            self.gateway = RestGateway(environments)
            server = ThreadedServer(self.gateway, host=config.host, port=config.rest_port, name="rest-gateway")
            self._exit.enter_context(server)
            self.rest_url = server.url

        if config.worker:
            from seekless_local.worker import WorkerThread

            # A short long-poll locally, so Ctrl-C never waits on an outstanding receive for long.
            self._set_env({"SEEKLESS_WORKER_WAIT_SECONDS": os.environ.get("SEEKLESS_WORKER_WAIT_SECONDS", "2")})
            self.worker = self._exit.enter_context(WorkerThread())

        sources = cfn.sqs_event_sources(template)
        if config.event_sources and sources:
            from seekless_local.event_sources import EventSources

            self.event_sources = self._exit.enter_context(
                EventSources(
                    sources,
                    queue_urls=self.queues,
                    queue_arns=self.queue_arns,
                    load=lambda logical_id: cfn.load_handler(specs[logical_id]),
                    endpoint_url=moto.url,
                    timeouts={lid: spec.timeout or cfn.DEFAULT_FUNCTION_TIMEOUT for lid, spec in specs.items()},
                    wait_seconds=config.event_source_wait_seconds,
                )
            )

        if config.schedules:
            from seekless_local.schedules import Schedules, schedules

            self.schedules = self._exit.enter_context(
                Schedules(
                    schedules(template),
                    load=lambda logical_id: cfn.load_handler(specs[logical_id]),
                    timeouts={lid: spec.timeout or cfn.DEFAULT_FUNCTION_TIMEOUT for lid, spec in specs.items()},
                    period_seconds=config.schedule_period_seconds,
                )
            )

        if config.state_file is not None:
            # Written last and removed first, so `seekless invoke` never finds a stack half up or down.
            write_state_file(config.state_file, self.services())
            self.state_file = config.state_file
            self._exit.callback(remove_state_file, config.state_file, os.getpid())

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        try:
            self._exit.close()
        finally:
            self._restore_env()

    def summary(self) -> str:
        assert self.redis is not None
        lines = ["seekless local stack is up"]
        if self.rest_url:
            lines += [
                f"  REST API     {self.rest_url}/v1   (OpenAPI: {self.rest_url}/openapi.json)",
                f"  WebSocket    {self.ws_url}   (protocol: docs/WEBSOCKET.md)",
                f"  Chat page    {self.rest_url}/",
            ]
        lines += [
            f"  AWS (moto)   {self.moto_url}",
            f"  Redis        {self.redis.describe}",
            f"  DeepSeek     {self.deepseek_description}",
        ]
        if self.worker is not None:
            lines.append(
                f"  Job worker   1 thread on {self.queues['JobsQueue']} (POST /v1/jobs, then GET /v1/jobs/{{id}})"
            )
        if self.event_sources is not None:
            for described in self.event_sources.describe():
                lines.append(f"  SQS trigger  {described}")
        if self.schedules is not None:
            for schedule in self.schedules.schedules:
                lines.append(f"  Schedule     {schedule.function} every {schedule.period_seconds:g} s")
        for logical_id, entries in self.notifications.items():
            for entry in entries:
                rules = {rule["Name"]: rule["Value"] for rule in entry["Rules"]}
                objects = f"s3://{self.buckets[logical_id]}/{rules.get('prefix', '')}*{rules.get('suffix', '')}"
                lines.append(f"  S3 → SQS     {objects} → {self.queues[entry['Queue']].rsplit('/', 1)[-1]}")
        for label, logical_id in (("Requests", "RequestsQueue"), ("Replies", "RepliesQueue")):
            if logical_id in self.queues:
                lines.append(f"  {label:<12} {self.queues[logical_id]}")
        if self.tables:
            lines.append(f"  Tables       {', '.join(sorted(self.tables.values()))}")
        if self.state_file is not None:
            lines.append(f"  State file   {self.state_file}   (`seekless invoke` runs functions against this stack)")
        if "ApiKeysTable" in self.tables:
            lines.append(
                f"  Dev API key  {self.dev_api_key}   (tenant '{DEV_TENANT}'; set SEEKLESS_DEV_API_KEY to change)"
            )
        if self.rest_url:
            lines.append(
                f"  Admin key    {self.config.dev_admin_key}   (/v1/admin/keys, `seekless keys`; set "
                "SEEKLESS_DEV_ADMIN_KEY to change)"
            )
        lines.append("Press Ctrl-C to stop.")
        return "\n".join(lines)


def _has_websocket_api(template: Mapping[str, Any]) -> bool:
    return any(
        resource.get("Type") == "AWS::ApiGatewayV2::Api"
        and resource.get("Properties", {}).get("ProtocolType") == "WEBSOCKET"
        for resource in template.get("Resources", {}).values()
    )


# ---------------------------------------------------------------- the state file


def write_state_file(path: Path, services: LocalServices) -> None:
    """Atomically, readable by the owner only: it holds the dev admin key."""
    path.parent.mkdir(parents=True, exist_ok=True)
    if path.parent == REPO_ROOT / ".seekless":
        # Keeps the folder out of git without touching the repository's .gitignore.
        (path.parent / ".gitignore").write_text("*\n", encoding="utf-8")
    temporary = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w", encoding="utf-8") as file:
        file.write(services.to_json())
    os.replace(temporary, path)


def remove_state_file(path: Path, pid: int) -> None:
    """Remove the state file if it is still this process's (another stack may have replaced it)."""
    try:
        if LocalServices.from_json(path.read_text(encoding="utf-8")).pid == pid:
            path.unlink()
    except (OSError, ValueError, TypeError):
        pass


def pid_alive(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # alive, someone else's
        return True
    return True


def running_stack(path: Path | None = None) -> LocalServices | None:
    """The services of a running `seekless dev`, from its state file: None when there is no file, or its
    process is gone, or its services do not answer (a stack killed without cleaning up)."""
    path = path or default_state_file()
    try:
        services = LocalServices.from_json(path.read_text(encoding="utf-8"))
    except (OSError, ValueError, TypeError):
        return None
    if not pid_alive(services.pid) or not services.answering():
        return None
    return services
