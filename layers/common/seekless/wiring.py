"""The one place that builds real adapters, once per execution environment.

Nothing here runs at import. Each factory is cached per thread: on Lambda that is once per execution
environment (one thread); the local gateway runs each emulated execution environment in its own
thread with its own event loop, and async clients must not cross event loops.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from functools import wraps
from typing import TYPE_CHECKING, Any, ParamSpec, TypeVar, cast

from seekless.config import Settings
from seekless.errors import ServiceUnavailable, UpstreamError

if TYPE_CHECKING:
    from redis.asyncio import Redis

    from seekless.adapters.deepseek import DeepSeekClient
    from seekless.adapters.dynamodb import DynamoKeyStore, DynamoSessionStore
    from seekless.adapters.redis_cache import RedisResponseCache
    from seekless.auth import Authenticator
    from seekless.chat import ChatService
    from seekless.telemetry import Telemetry

P = ParamSpec("P")
R = TypeVar("R")
_environment = threading.local()


def per_environment(factory: Callable[[], R]) -> Callable[[], R]:
    """Cache ``factory``'s result for the lifetime of this execution environment (thread)."""

    @wraps(factory)
    def cached() -> R:
        cache: dict[str, object] = _environment.__dict__.setdefault("cache", {})
        name = factory.__qualname__
        if name not in cache:
            cache[name] = factory()
        return cache[name]  # type: ignore[return-value]

    return cached


def reset_environment() -> None:
    """Forget every cached adapter of this thread (tests; a fresh 'cold start')."""
    _environment.__dict__.pop("cache", None)


def close_environment() -> None:
    """Close this environment's clients on its own event loop, then forget them (local stack shutdown)."""
    cache: dict[str, object] = _environment.__dict__.pop("cache", {})
    closers = [cast(Any, client).aclose for client in cache.values() if hasattr(client, "aclose")]
    if not closers:
        return
    import asyncio

    async def close_all() -> None:
        await asyncio.gather(*(close() for close in closers), return_exceptions=True)

    asyncio.get_event_loop().run_until_complete(close_all())


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
    if config.redis_cluster:
        from redis.asyncio.cluster import RedisCluster

        cluster = RedisCluster.from_url(config.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout)
        return cluster  # type: ignore[return-value]  # the commands we use behave the same
    from redis.asyncio import Redis

    return Redis.from_url(
        config.redis_url, socket_timeout=timeout, socket_connect_timeout=timeout, health_check_interval=30
    )


def deepseek_api_key(force_refresh: bool = False) -> str:
    """The DeepSeek key: from the environment locally, from Secrets Manager (cached) on AWS."""
    config = settings()
    if config.deepseek_api_key:
        return config.deepseek_api_key
    if not config.deepseek_secret_name:
        raise UpstreamError("No DeepSeek API key is configured.", code="upstream_not_configured")
    from aws_lambda_powertools.utilities import parameters

    try:
        secret = parameters.get_secret(
            config.deepseek_secret_name, max_age=config.secret_cache_seconds, force_fetch=force_refresh
        )
    except parameters.exceptions.GetParameterError as error:
        raise ServiceUnavailable("The DeepSeek API key could not be read; retry shortly.") from error
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
def chat_service() -> ChatService:
    from seekless.chat import ChatService

    return ChatService(
        settings=settings(),
        model=chat_model(),
        cache=response_cache(),
        sessions=session_store(),
        telemetry=telemetry(),
    )
