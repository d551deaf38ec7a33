"""`make dev`: the whole application on one machine, no AWS account, no Docker.

- AWS services from a moto server (a child process, so its state is its own).
- Redis from REDIS_URL, else a redis-server we start, else embedded fakeredis; it says which.
- DeepSeek: the real API when DEEPSEEK_API_KEY is set (DEEPSEEK_BASE_URL overrides the base), else the
  emulator.
- Tables, queues (dead-letter redrive included) and buckets created from template.yaml; the dev API
  key (SEEKLESS_DEV_API_KEY) seeded for tenant "dev".
- The REST function from template.yaml behind a local API Gateway REST proxy on :3000.
- The WebSocket API from template.yaml (authorizer, routes, generator) on :3001, with the @connections
  management API and the Lambda Invoke API the handlers call through boto3 unchanged.
- One job worker (``seekless.worker``) on a thread, long-polling the moto jobs queue, when
  ``StackConfig.worker`` is on (`seekless dev` turns it on; the contract suite drives jobs itself).
Leaving the ``with`` block (Ctrl-C in `seekless dev`) stops everything it started.
"""

from __future__ import annotations

import os
import subprocess
import sys
from contextlib import ExitStack
from dataclasses import dataclass, field
from types import TracebackType
from typing import Any

from seekless_local.redis_server import RedisServer, free_port, stop_process, wait_for_port

DEFAULT_DEV_API_KEY = "sk-seekless-local-dev"
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


@dataclass
class StackConfig:
    host: str = "127.0.0.1"
    rest_port: int = 3000
    ws_port: int = 3001
    dev_api_key: str = DEFAULT_DEV_API_KEY
    redis_url: str | None = None
    deepseek_api_key: str | None = None
    deepseek_base_url: str | None = None
    environments: int = 4  # concurrent execution environments per function
    worker: bool = False  # run a job worker thread on the jobs queue
    extra_env: dict[str, str] = field(default_factory=dict)

    @classmethod
    def from_environment(cls) -> StackConfig:
        return cls(
            rest_port=int(os.environ.get("SEEKLESS_REST_PORT", "3000")),
            ws_port=int(os.environ.get("SEEKLESS_WS_PORT", "3001")),
            dev_api_key=os.environ.get("SEEKLESS_DEV_API_KEY") or DEFAULT_DEV_API_KEY,
            redis_url=os.environ.get("REDIS_URL") or None,
            deepseek_api_key=os.environ.get("DEEPSEEK_API_KEY") or None,
            deepseek_base_url=os.environ.get("DEEPSEEK_BASE_URL") or None,
            worker=os.environ.get("SEEKLESS_DEV_WORKER", "1") != "0",
        )


class MotoServer:
    """moto's server mode in a child process: every AWS API on one local endpoint (see moto_server)."""

    def __init__(self, host: str = "127.0.0.1", port: int = 0) -> None:
        self.host = host
        self.port = port or free_port()
        self._process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.port}"

    def __enter__(self) -> MotoServer:
        self._process = subprocess.Popen(  # noqa: S603 - our own interpreter and module
            [sys.executable, "-m", "seekless_local.moto_server", self.host, str(self.port)],
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
        self.tables: dict[str, str] = {}
        self.queues: dict[str, str] = {}  # logical id → queue URL
        self.buckets: dict[str, str] = {}
        self.gateway: Any = None
        self.worker: Any = None  # seekless_local.worker.WorkerThread when config.worker

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

    def _start(self) -> None:
        import boto3

        from seekless.adapters.dynamodb import DynamoKeyStore
        from seekless.auth import hash_key
        from seekless_local import template as cfn
        from seekless_local.gateway import ExecutionEnvironments, RestGateway
        from seekless_local.servers import ThreadedServer
        from seekless_local.ws_gateway import WebSocketGateway

        config = self.config
        moto = self._exit.enter_context(MotoServer(config.host))
        self.moto_url = moto.url
        self.redis = self._exit.enter_context(RedisServer.choose(config.redis_url))
        if config.deepseek_api_key:
            self.deepseek_base_url = config.deepseek_base_url or "https://api.deepseek.com"
            deepseek_key = config.deepseek_api_key
        else:
            from seekless_local.emulator import EmulatorServer

            self.emulator = self._exit.enter_context(EmulatorServer())
            self.deepseek_base_url = self.emulator.base_url
            deepseek_key = "sk-emulator-local"

        self._set_env({**_LOCAL_AWS, "AWS_ENDPOINT_URL": moto.url})
        dynamodb = boto3.client("dynamodb", endpoint_url=moto.url)
        names = {
            "SessionsTable": "seekless-sessions",
            "ApiKeysTable": "seekless-keys",
            "ConnectionsTable": "seekless-connections",
            "JobsTable": "seekless-jobs",
        }
        self.tables = cfn.create_tables(dynamodb, names=names)
        self.queues = cfn.create_queues(
            boto3.client("sqs", endpoint_url=moto.url),
            names={"JobsQueue": "seekless-jobs", "JobsDeadLetterQueue": "seekless-jobs-dlq"},
        )
        self.buckets = cfn.create_buckets(
            boto3.client("s3", endpoint_url=moto.url), names={"JobsBucket": "seekless-jobs"}
        )
        DynamoKeyStore(self.tables["ApiKeysTable"], client=dynamodb).put(
            hash_key(config.dev_api_key), tenant_id=DEV_TENANT, key_id="dev", name="local development key"
        )

        template = cfn.load_template()
        specs = cfn.function_specs(template)
        spec = specs[REST_FUNCTION]
        refs = {
            "SessionsTable": self.tables["SessionsTable"],
            "ApiKeysTable": self.tables["ApiKeysTable"],
            "JobsTable": self.tables["JobsTable"],
            "JobsQueue": self.queues["JobsQueue"],  # Ref of a queue is its URL
            "JobsBucket": self.buckets["JobsBucket"],
        }
        env = cfn.resolve_environment(spec, refs, template)
        env.update(
            {
                "SEEKLESS_SESSIONS_TABLE": self.tables["SessionsTable"],
                "SEEKLESS_KEYS_TABLE": self.tables["ApiKeysTable"],
                "SEEKLESS_CONNECTIONS_TABLE": self.tables["ConnectionsTable"],
                "SEEKLESS_JOBS_TABLE": self.tables["JobsTable"],
                "SEEKLESS_JOBS_QUEUE_URL": self.queues["JobsQueue"],
                "SEEKLESS_JOBS_BUCKET": self.buckets["JobsBucket"],
                "SEEKLESS_GENERATOR_FUNCTION": "GeneratorFunction",
                "REDIS_URL": self.redis.url,
                "SEEKLESS_REDIS_CLUSTER": "false",
                "DEEPSEEK_BASE_URL": self.deepseek_base_url,
                "DEEPSEEK_API_KEY": deepseek_key,
                "POWERTOOLS_TRACE_DISABLED": "true",
                "POWERTOOLS_METRICS_DISABLED": os.environ.get("POWERTOOLS_METRICS_DISABLED", "true"),
                "POWERTOOLS_LOG_LEVEL": os.environ.get("POWERTOOLS_LOG_LEVEL", "WARNING"),
                **config.extra_env,
            }
        )
        env.pop("SEEKLESS_DEEPSEEK_SECRET_NAME", None)  # locally the key comes from the environment
        self._set_env(env)

        # Every function of the WebSocket API runs in this process, on its own warm environments.
        # Settings are read on each environment's first invocation, so the gateway's endpoints can
        # still be set after it starts (they are only known then).
        ws_gateway = WebSocketGateway(
            template, lambda logical_id: cfn.load_handler(specs[logical_id]), host=config.host, port=config.ws_port
        )
        self.ws_gateway = self._exit.enter_context(ws_gateway)
        self.ws_url = ws_gateway.url
        self._set_env(
            {"SEEKLESS_WS_ENDPOINT": ws_gateway.management_url, "AWS_ENDPOINT_URL_LAMBDA": ws_gateway.lambda_url}
        )

        environments = ExecutionEnvironments(
            lambda: cfn.load_handler(spec),
            name=REST_FUNCTION,
            timeout=float(spec.timeout or 29),
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

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        try:
            self._exit.close()
        finally:
            self._restore_env()

    def summary(self) -> str:
        assert self.redis is not None
        return "\n".join(
            [
                "seekless local stack is up",
                f"  REST API     {self.rest_url}/v1   (OpenAPI: {self.rest_url}/openapi.json)",
                f"  WebSocket    {self.ws_url}   (protocol: docs/WEBSOCKET.md)",
                f"  Chat page    {self.rest_url}/",
                f"  AWS (moto)   {self.moto_url}",
                f"  Redis        {self.redis.describe}",
                f"  DeepSeek     {self.deepseek_description}",
                *(
                    [f"  Job worker   1 thread on {self.queues['JobsQueue']} (POST /v1/jobs, then GET /v1/jobs/{{id}})"]
                    if self.worker is not None
                    else []
                ),
                f"  Dev API key  {self.dev_api_key}   (tenant '{DEV_TENANT}'; set SEEKLESS_DEV_API_KEY to change)",
                "Press Ctrl-C to stop.",
            ]
        )
