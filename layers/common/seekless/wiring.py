"""The one place that builds real adapters, once per execution environment (see environment.py).

Nothing here runs at import.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from seekless.config import Settings
from seekless.environment import aclose_environment, close_environment, per_environment, reset_environment, run
from seekless.errors import ServiceUnavailable, UpstreamError

if TYPE_CHECKING:
    from redis import Redis as SyncRedis
    from redis.asyncio import Redis

    from seekless.adapters.apigw import ApiGatewayNotifier
    from seekless.adapters.batches import S3BatchFiles
    from seekless.adapters.connections import DynamoConnectionStore
    from seekless.adapters.decisions import DynamoDecisionStore, DynamoRulesetStore
    from seekless.adapters.deepseek import DeepSeekClient
    from seekless.adapters.dynamodb import DynamoKeyStore, DynamoSessionStore
    from seekless.adapters.invoker import LambdaInvoker
    from seekless.adapters.jobs import DynamoJobStore
    from seekless.adapters.limits import RedisRateLimiter
    from seekless.adapters.redis_cache import RedisDecisionCache, RedisResponseCache
    from seekless.adapters.redis_iam import ElastiCacheIamCredentials
    from seekless.adapters.replies import AwsReplies
    from seekless.adapters.sqs import SqsJobMessages, SqsJobQueue
    from seekless.adapters.tickets import RedisTicketStore
    from seekless.adapters.usage import DynamoUsageStore, UsageFolder, UsageLedger
    from seekless.adapters.ws_buffer import RedisRequestLog
    from seekless.audit import Auditor
    from seekless.auth import AdminAuthenticator, Authenticator
    from seekless.batches import BatchService
    from seekless.chat import ChatService
    from seekless.decisions import DecisionService
    from seekless.jobs import JobService
    from seekless.keys import KeyAdmin
    from seekless.limits import LimitsByKeyId, RateLimiter
    from seekless.ports import ChatModel
    from seekless.queued import JobEndings, QueuedRequests, ReplyPolicy
    from seekless.telemetry import Telemetry
    from seekless.worker.runner import FrameSink, Worker
    from seekless.ws.generator import Generator
    from seekless.ws.service import JobAliases, WsService

__all__ = ["aclose_environment", "close_environment", "per_environment", "reset_environment", "run"]


@per_environment
def settings() -> Settings:
    return Settings()


@per_environment
def telemetry() -> Telemetry:
    from seekless.observability import PowertoolsTelemetry

    return PowertoolsTelemetry()


@per_environment
def redis() -> Redis | None:
    config = settings()
    if not config.redis_url:
        return None
    timeout = config.redis_timeout_seconds
    credentials = redis_credentials()
    if config.redis_cluster:
        from redis.asyncio.cluster import RedisCluster

        cluster = RedisCluster.from_url(
            config.redis_url,
            socket_timeout=timeout,
            socket_connect_timeout=timeout,
            credential_provider=credentials,
        )
        return cluster  # type: ignore[return-value]  # the commands we use behave the same
    from redis.asyncio import Redis

    return Redis.from_url(
        config.redis_url,
        socket_timeout=timeout,
        socket_connect_timeout=timeout,
        health_check_interval=30,
        credential_provider=credentials,
    )


@per_environment
def redis_credentials() -> ElastiCacheIamCredentials | None:
    """IAM authentication to ElastiCache when the template names the user and cache; else none."""
    config = settings()
    if not (config.redis_iam_user and config.redis_cache_name):
        return None
    from seekless.adapters.redis_iam import ElastiCacheIamCredentials

    return ElastiCacheIamCredentials(config.redis_iam_user, config.redis_cache_name)


def deepseek_api_key(force_refresh: bool = False) -> str:
    """The DeepSeek key: from the environment locally, from Secrets Manager (cached) on AWS."""
    config = settings()
    if config.deepseek_api_key:
        return config.deepseek_api_key
    if not config.deepseek_secret_name:
        raise UpstreamError("No DeepSeek API key is configured.", code="upstream_not_configured")
    return _secret(config.deepseek_secret_name, "The DeepSeek API key", force_refresh=force_refresh)


def admin_api_key(force_refresh: bool = False) -> str | None:
    """The admin routes' key, read as the DeepSeek key is; None when none is configured."""
    config = settings()
    if config.admin_api_key:
        return config.admin_api_key
    if not config.admin_key_secret_name:
        return None
    return _secret(config.admin_key_secret_name, "The admin key", force_refresh=force_refresh) or None


def _secret(name: str, what: str, *, force_refresh: bool) -> str:
    """A Secrets Manager string through Powertools, cached per environment for secret_cache_seconds."""
    from aws_lambda_powertools.utilities import parameters

    try:
        secret = parameters.get_secret(name, max_age=settings().secret_cache_seconds, force_fetch=force_refresh)
    except parameters.exceptions.GetParameterError as error:
        raise ServiceUnavailable(f"{what} could not be read; retry shortly.") from error
    return str(secret).strip()


@per_environment
def chat_model() -> DeepSeekClient:
    from seekless.adapters.breaker import RedisCircuitBreaker
    from seekless.adapters.deepseek import DeepSeekClient

    config = settings()
    client = redis()
    breaker = (
        RedisCircuitBreaker(
            client,
            failure_threshold=config.breaker_failure_threshold,
            cooldown_seconds=config.breaker_cooldown_seconds,
            telemetry=telemetry(),
        )
        if client is not None
        else None
    )
    return DeepSeekClient.from_settings(config, api_key=deepseek_api_key, breaker=breaker)


@per_environment
def response_cache() -> RedisResponseCache | None:
    from seekless.adapters.redis_cache import RedisResponseCache

    client = redis()
    if client is None:
        return None
    metrics = telemetry()
    return RedisResponseCache(client, on_error=lambda operation: metrics.count("CacheErrors"))


@per_environment
def session_store() -> DynamoSessionStore:
    from seekless.adapters.dynamodb import DynamoSessionStore

    config = settings()
    return DynamoSessionStore(config.sessions_table, ttl_days=config.session_ttl_days)


@per_environment
def key_store() -> DynamoKeyStore:
    from seekless.adapters.dynamodb import DynamoKeyStore

    return DynamoKeyStore(settings().keys_table)


@per_environment
def authenticator() -> Authenticator:
    from seekless.auth import Authenticator

    return Authenticator(key_store(), cache_seconds=settings().key_cache_seconds)


@per_environment
def admin_authenticator() -> AdminAuthenticator:
    from seekless.auth import AdminAuthenticator

    return AdminAuthenticator(admin_api_key)


@per_environment
def key_admin() -> KeyAdmin:
    from seekless.keys import KeyAdmin

    return KeyAdmin(key_store())


@per_environment
def chat_service() -> ChatService:
    from seekless.chat import ChatService

    return ChatService(
        settings=settings(),
        model=chat_model(),
        cache=response_cache(),
        sessions=session_store(),
        telemetry=telemetry(),
        limiter=limiters(),
        limits_for=limits_by_key_id(),
    )


@per_environment
def ruleset_store() -> DynamoRulesetStore:
    from seekless.adapters.decisions import DynamoRulesetStore

    return DynamoRulesetStore(settings().rulesets_table)


@per_environment
def decision_store() -> DynamoDecisionStore:
    from seekless.adapters.decisions import DynamoDecisionStore

    config = settings()
    return DynamoDecisionStore(config.decisions_table, retention_days=config.decision_retention_days)


@per_environment
def decision_cache() -> RedisDecisionCache | None:
    from seekless.adapters.redis_cache import RedisDecisionCache

    client = redis()
    if client is None:
        return None
    metrics = telemetry()
    return RedisDecisionCache(client, on_error=lambda operation: metrics.count("DecisionCacheErrors"))


@per_environment
def decision_service() -> DecisionService:
    from seekless.decisions import DecisionService

    return DecisionService(
        rulesets=ruleset_store(),
        decisions=decision_store(),
        chat=chat_service(),
        cache=decision_cache(),
        settings=settings(),
        telemetry=telemetry(),
    )


@per_environment
def usage_table() -> DynamoUsageStore:
    from seekless.adapters.usage import DynamoUsageStore

    config = settings()
    return DynamoUsageStore(config.usage_table, retention_days=config.usage_retention_days)


@per_environment
def usage_store() -> UsageLedger:
    """Counts in Redis when there is one (folded into the usage table every minute), else the table."""
    from seekless.adapters.usage import UsageLedger

    return UsageLedger(usage_table(), redis(), telemetry=telemetry())


@per_environment
def usage_folder() -> UsageFolder | None:
    """The sweeper's fold of Redis usage counters into the table; None without Redis (nothing to fold)."""
    from seekless.adapters.usage import UsageFolder

    client = redis_sync()
    return None if client is None else UsageFolder(usage_table(), client)


@per_environment
def auditor() -> Auditor:
    from seekless.audit import Auditor

    config = settings()
    return Auditor(usage=usage_store(), include_content=config.audit_include_content, telemetry=telemetry())


@per_environment
def limiters() -> list[RateLimiter]:
    """Daily/monthly budgets (DynamoDB) first, then requests/tokens per minute (Redis, when configured)."""
    from seekless.adapters.budgets import DynamoBudgets

    found: list[RateLimiter] = [DynamoBudgets(settings().keys_table)]
    per_minute = rate_limiter()
    if per_minute is not None:
        found.append(per_minute)
    return found


@per_environment
def limits_by_key_id() -> LimitsByKeyId:
    """Limits of the keys behind jobs and WebSocket generations (their principal carries only the id)."""
    from seekless.limits import LimitsByKeyId

    return LimitsByKeyId(key_store(), cache_seconds=settings().key_cache_seconds)


@per_environment
def rate_limiter() -> RedisRateLimiter | None:
    """Per-key limits, when Redis is configured (without it nothing is enforced: say so in the config)."""
    client = redis()
    if client is None:
        return None
    from seekless.adapters.limits import RedisRateLimiter

    return RedisRateLimiter(client, on_error=settings().rate_limit_on_error, telemetry=telemetry())


@per_environment
def redis_sync() -> SyncRedis | None:
    """A blocking client, for the synchronous callers (the $connect authorizer, ticket issuing)."""
    config = settings()
    if not config.redis_url:
        return None
    timeout = config.redis_timeout_seconds
    credentials = redis_credentials()
    if config.redis_cluster:
        from redis.cluster import RedisCluster

        return RedisCluster.from_url(  # type: ignore[return-value]
            config.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, credential_provider=credentials
        )
    from redis import Redis

    return Redis.from_url(
        config.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, credential_provider=credentials
    )


@per_environment
def ticket_store() -> RedisTicketStore:
    from seekless.adapters.tickets import RedisTicketStore

    client = redis_sync()
    if client is None:
        raise ServiceUnavailable("WebSocket tickets need Redis, and none is configured.")
    return RedisTicketStore(client, ttl_seconds=settings().ws_ticket_seconds)


@per_environment
def connection_store() -> DynamoConnectionStore:
    from seekless.adapters.connections import DynamoConnectionStore

    return DynamoConnectionStore(settings().connections_table)


@per_environment
def notifier() -> ApiGatewayNotifier:
    from seekless.adapters.apigw import ApiGatewayNotifier

    endpoint = settings().ws_endpoint
    if not endpoint:
        raise ServiceUnavailable("SEEKLESS_WS_ENDPOINT is not configured.")
    return ApiGatewayNotifier(endpoint)


@per_environment
def invoker() -> LambdaInvoker:
    from seekless.adapters.invoker import LambdaInvoker

    return LambdaInvoker(settings().generator_function)


@per_environment
def request_log() -> RedisRequestLog:
    from seekless.adapters.ws_buffer import RedisRequestLog

    client = redis()
    if client is None:
        raise ServiceUnavailable("WebSocket streaming needs Redis, and none is configured.")
    return RedisRequestLog(client, ttl_seconds=settings().ws_buffer_seconds)


@per_environment
def ws_service() -> WsService:
    from seekless.ws.service import WsService

    config = settings()
    queue = job_queue()
    return WsService(
        chat=chat_service(),
        log=request_log(),
        notifier=notifier(),
        invoker=invoker(),
        job_store=job_store() if queue is not None else None,
        job_queue=queue,
        aliases=job_aliases(),
        job_min_max_tokens=config.ws_job_min_max_tokens,
        auditor=auditor(),
    )


@per_environment
def job_aliases() -> JobAliases | None:
    """WebSocket chats run as jobs: job id ↔ request id, kept as long as a job may run."""
    from seekless.ws.service import JobAliases

    client = redis()
    if client is None:
        return None
    config = settings()
    return JobAliases(client, ttl_seconds=config.ws_buffer_seconds + int(config.worker_job_deadline_seconds))


@per_environment
def generator() -> Generator:
    from seekless.ws.generator import Generator, StreamingOptions

    return Generator(
        chat=chat_service(),
        log=request_log(),
        notifier=notifier(),
        connections=connection_store(),
        options=StreamingOptions.from_settings(settings()),
        auditor=auditor(),
    )


@per_environment
def job_store() -> DynamoJobStore:
    from seekless.adapters.jobs import DynamoJobStore

    config = settings()
    return DynamoJobStore(
        config.jobs_table,
        bucket=config.jobs_bucket,
        ttl_days=config.job_ttl_days,
        inline_result_bytes=config.job_inline_result_bytes,
    )


@per_environment
def job_queue() -> SqsJobQueue | None:
    from seekless.adapters.sqs import SqsJobQueue

    url = settings().jobs_queue_url
    return SqsJobQueue(url) if url else None


@per_environment
def job_service() -> JobService:
    from seekless.jobs import JobService

    return JobService(store=job_store(), queue=job_queue())


@per_environment
def validation_chat() -> ChatService:
    """Checks a request as the chat route would (model, max_tokens, JSON mode) without any client."""
    from seekless.chat import validation_only

    return validation_only(settings())


@per_environment
def batch_files() -> S3BatchFiles:
    from seekless.adapters.batches import S3BatchFiles

    bucket = settings().jobs_bucket
    if not bucket:
        raise ServiceUnavailable(
            "Batches are not available on this deployment (no jobs bucket).", code="batches_unavailable"
        )
    return S3BatchFiles(bucket)


@per_environment
def batch_service() -> BatchService:
    from seekless.adapters.batches import DynamoBatchStore
    from seekless.batches import BatchService

    config = settings()
    store = DynamoBatchStore(config.batches_table, jobs=job_store(), ttl_days=config.job_ttl_days)
    return BatchService(
        batches=store,
        jobs=job_store(),
        queue=job_queue(),
        files=batch_files(),
        chat=validation_chat(),
        max_lines=config.batch_max_lines,
        max_line_bytes=config.batch_max_line_bytes,
        decisions=batch_decisions,
    )


@per_environment
def batch_decisions() -> DecisionService:
    """Checks a decisions file's lines at ingest (rulesets read, nothing asked or stored), and decides
    them in the worker, where each job asks through its own ChatService (``DecisionService.using``)."""
    from seekless.decisions import DecisionService

    config = settings()
    return DecisionService(
        rulesets=ruleset_store(),
        decisions=decision_store(),
        chat=validation_chat(),
        cache=decision_cache(),
        settings=config,
        telemetry=telemetry(),
    )


def _split(value: str) -> list[str]:
    return [part.strip() for part in value.split(",") if part.strip()]


@per_environment
def queued_requests() -> QueuedRequests:
    from seekless.queued import QueuedRequests

    queue = job_queue()
    if queue is None:
        raise ServiceUnavailable("SEEKLESS_JOBS_QUEUE_URL is not configured.")
    return QueuedRequests(jobs=job_store(), queue=queue, chat=validation_chat(), policy=reply_policy())


@per_environment
def reply_policy() -> ReplyPolicy:
    from seekless.queued import ReplyPolicy

    config = settings()
    return ReplyPolicy(_split(config.reply_queue_urls), _split(config.reply_s3_prefixes))


@per_environment
def replies() -> AwsReplies:
    from seekless.adapters.replies import AwsReplies

    return AwsReplies()


@per_environment
def job_endings() -> JobEndings:
    from seekless.queued import JobEndings

    return JobEndings(
        jobs=job_store(),
        batches=batch_service() if settings().jobs_bucket else None,
        replies=replies(),
    )


# -- the GPU worker (python -m seekless.worker) --------------------------------------------------------


@per_environment
def inference_model() -> DeepSeekClient | None:
    """The OpenAI-compatible endpoint in the worker's own task (vLLM), with a breaker of its own."""
    import socket

    from seekless.adapters.breaker import RedisCircuitBreaker
    from seekless.adapters.deepseek import DeepSeekClient

    config = settings()
    if not config.inference_base_url:
        return None
    client = redis()
    breaker = (
        RedisCircuitBreaker(
            client,
            # Each task has its own vLLM: one task's sick GPU must not send every task to DeepSeek.
            name=f"inference:{socket.gethostname()}",
            failure_threshold=config.breaker_failure_threshold,
            cooldown_seconds=config.breaker_cooldown_seconds,
        )
        if client is not None
        else None
    )
    key = config.inference_api_key
    return DeepSeekClient(
        base_url=config.inference_base_url,
        api_key=lambda _refresh: key,
        breaker=breaker,
        retry_attempts=config.retry_attempts,
        retry_base_delay=config.retry_base_delay_seconds,
        retry_max_delay=config.retry_max_delay_seconds,
        connect_timeout=config.connect_timeout_seconds,
        max_connections=config.max_upstream_connections,
    )


@per_environment
def worker_chat_model() -> ChatModel:
    """vLLM first, the DeepSeek API when it cannot start a generation; DeepSeek alone without one."""
    from seekless.worker.fallback import FallbackChatModel

    primary = inference_model()
    if primary is None:
        return chat_model()
    metrics = telemetry()
    return FallbackChatModel(
        primary,
        chat_model(),
        primary_model=settings().inference_model,
        on_fallback=lambda error: metrics.count("InferenceFallbacks"),
    )


@per_environment
def job_messages() -> SqsJobMessages:
    from seekless.adapters.sqs import SqsJobMessages

    url = settings().jobs_queue_url
    if not url:
        raise ServiceUnavailable("SEEKLESS_JOBS_QUEUE_URL is not configured.")
    return SqsJobMessages(url)


@per_environment
def worker_frames() -> FrameSink | None:
    """Streaming jobs that carry a connection_id needs Redis (the frame log) and the WebSocket endpoint."""
    from seekless.worker.runner import FrameSink

    config = settings()
    if redis() is None or not config.ws_endpoint:
        return None
    from seekless.ws.generator import StreamingOptions
    from seekless.ws.service import JobFrameLog

    aliases = job_aliases()
    assert aliases is not None
    return FrameSink(
        log=JobFrameLog(request_log(), aliases, notifier()),
        notifier=notifier(),
        connections=connection_store(),
        options=StreamingOptions.from_settings(config),
    )


@per_environment
def worker() -> Worker:
    from seekless.worker.health import health_path, touch
    from seekless.worker.runner import Worker, WorkerConfig

    config = settings()
    path = health_path(config.worker_health_file)

    def alive() -> None:
        touch(path)
        flush_worker_metrics()  # a long-running task has no invocation end to flush at: every beat instead

    return Worker(
        config=WorkerConfig.from_settings(config),
        messages=job_messages(),
        jobs=job_store(),
        settings=config,
        model=worker_chat_model(),
        sessions=session_store(),
        frames=worker_frames(),
        on_alive=alive,
        telemetry=telemetry(),
        alive_interval=min(5.0, max(0.5, config.worker_health_max_age_seconds / 3)),
        endings=job_endings(),
        limiter=limiters(),
        limits_for=limits_by_key_id(),
        auditor=auditor(),
        decisions=batch_decisions(),
    )


def flush_worker_metrics() -> None:
    """Publish the worker's metrics so far as one EMF line (CloudWatch reads it from the task's log)."""
    from seekless.observability import PowertoolsTelemetry

    metrics = telemetry()
    if isinstance(metrics, PowertoolsTelemetry):
        metrics.flush()


async def close_worker() -> None:
    """Close the worker's pooled clients on its event loop (the process is about to exit)."""
    flush_worker_metrics()
    await aclose_environment()
