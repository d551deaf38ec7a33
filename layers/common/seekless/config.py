"""The one settings model. Read from the environment once per execution environment (see wiring).

Every field has a sane default so a local developer needs no configuration at all; template.yaml sets
the AWS values. Field names map to upper-case environment variables; the ``SEEKLESS_`` prefix is
used except for the few names that other tools already know (REDIS_URL, DEEPSEEK_*).
"""

from __future__ import annotations

from typing import Literal

from pydantic import AliasChoices, BaseModel, Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class ModelSpec(BaseModel):
    """One entry of the model catalogue: what the client names and what goes upstream."""

    upstream: str
    thinking: Literal["enabled", "disabled"] | None = None  # forced by an alias; None = client decides
    max_output_tokens: int = 384_000
    context_tokens: int = 1_000_000
    # USD per million tokens, for the estimated-cost metric.
    price_input_cache_hit: float = 0.0
    price_input_cache_miss: float = 0.0
    price_output: float = 0.0


def default_catalogue() -> dict[str, ModelSpec]:
    flash = {"price_input_cache_hit": 0.028, "price_input_cache_miss": 0.28, "price_output": 0.42}
    pro = {"price_input_cache_hit": 0.07, "price_input_cache_miss": 0.56, "price_output": 1.68}
    return {
        "deepseek-flash": ModelSpec(upstream="deepseek-flash", **flash),
        "deepseek-v4-pro": ModelSpec(upstream="deepseek-v4-pro", **pro),
        # Retired on 2026-07-24; kept as aliases so old clients keep working.
        "deepseek-chat": ModelSpec(upstream="deepseek-flash", thinking="disabled", **flash),
        "deepseek-reasoner": ModelSpec(upstream="deepseek-flash", thinking="enabled", **flash),
    }


class Settings(BaseSettings):
    model_config = SettingsConfigDict(env_prefix="SEEKLESS_", extra="ignore", populate_by_name=True)

    # DeepSeek
    deepseek_base_url: str = Field(
        "https://api.deepseek.com", validation_alias=AliasChoices("DEEPSEEK_BASE_URL", "deepseek_base_url")
    )
    # Local development only. On AWS the key lives in Secrets Manager (deepseek_secret_name).
    deepseek_api_key: str | None = Field(
        None, validation_alias=AliasChoices("DEEPSEEK_API_KEY", "deepseek_api_key"), repr=False
    )
    deepseek_secret_name: str | None = None
    # The admin routes' credential (never a tenant's key): on AWS the secret named here, locally the
    # value itself. Neither set: the admin routes answer 404.
    admin_key_secret_name: str | None = None
    admin_api_key: str | None = Field(None, repr=False)
    secret_cache_seconds: int = 300
    models: dict[str, ModelSpec] = Field(default_factory=default_catalogue)

    # Request limits
    max_body_bytes: int = 1_048_576
    max_tokens_cap: int = 32_768
    default_max_tokens: int = 4_096
    max_messages: int = 2_000
    max_message_chars: int = 1_000_000  # characters of one message's content (a 1 MiB body holds about this many)
    max_tools: int = 128  # OpenAI's limit
    max_tools_bytes: int = 262_144  # the tools array as compact JSON
    max_stop_sequences: int = 4  # OpenAI's limit (DeepSeek itself takes 16)
    max_user_chars: int = 512  # `user` is stored with jobs but never sent upstream (user_id is a tenant hash)

    # Upstream call behaviour
    request_deadline_seconds: float = 25.0  # under API Gateway's 29 s integration timeout
    connect_timeout_seconds: float = 3.0
    # Total attempts, first one included. Four: at 30 % failed calls 99.2 % of requests still succeed
    # (three: 97.3 %), for 1.42 upstream calls per request; the breaker bounds the cost of an outage.
    retry_attempts: int = 4
    retry_base_delay_seconds: float = 0.2
    retry_max_delay_seconds: float = 4.0
    breaker_failure_threshold: int = 5
    breaker_cooldown_seconds: float = 30.0
    max_upstream_connections: int = 100

    # Redis
    redis_url: str | None = Field(None, validation_alias=AliasChoices("REDIS_URL", "redis_url"))
    redis_cluster: bool = False  # ElastiCache Serverless: true (cluster mode, hence hash tags in keys)
    redis_timeout_seconds: float = 0.25
    cache_ttl_seconds: int = 3_600
    # Per-key requests/tokens per minute live in Redis. When Redis cannot be reached: "open" admits (and
    # counts RateLimiterErrors), "closed" refuses with 503. Open by default: an outage of the limiter
    # should not become an outage of the API; DeepSeek's own account limits still apply.
    rate_limit_on_error: Literal["open", "closed"] = "open"
    # ElastiCache IAM authentication (the template sets both): connections authenticate as this
    # IAM-enabled cache user with a short-lived SigV4 token, so no Redis password exists anywhere.
    # Unset (local Redis): no AUTH.
    redis_iam_user: str | None = None
    redis_cache_name: str | None = None

    # DynamoDB
    sessions_table: str = "seekless-sessions"
    keys_table: str = "seekless-keys"
    session_ttl_days: int = 30
    history_token_budget: int = 64_000
    key_cache_seconds: float = 60.0

    # Audit and usage: one audit log record per request; per-tenant daily usage for GET /v1/usage
    usage_table: str = "seekless-usage"
    usage_retention_days: int = 400
    audit_include_content: bool = False  # put prompts and answers in audit records (off: never logged)

    # Hybrid decisions (docs/DECISIONS.md): rulesets, the decisions kept for audit, the verdict asked of DeepSeek
    rulesets_table: str = "seekless-rulesets"
    decisions_table: str = "seekless-decisions"
    decision_retention_days: int = 400  # how long a decision is kept for audit (TTL)
    decision_json_attempts: int = 3  # asks for a verdict per decision, first included (blank or invalid: again)
    decision_cache_seconds: int = 86_400  # an identical record under the same ruleset version is answered from Redis
    decision_model: str = "deepseek-chat"  # asked when neither the request nor the ruleset names a model

    # WebSocket streaming
    connections_table: str = "seekless-connections"
    ws_endpoint: str | None = None  # the @connections management endpoint (https://{api}.execute-api.../{stage})
    generator_function: str = "GeneratorFunction"
    ws_buffer_seconds: int = 900  # how long a request's frames stay resumable
    ws_flush_interval_ms: int = 100
    ws_flush_bytes: int = 4_096
    ws_frame_max_bytes: int = 32_768  # API Gateway's frame limit
    ws_resume_grace_seconds: float = 30.0  # a generation whose client vanished waits this long for a resume
    ws_ticket_seconds: int = 60
    ws_job_min_max_tokens: int = 16_384  # a WebSocket chat asking for this many max_tokens or more runs as a job

    # Jobs (long generations through SQS)
    jobs_table: str = "seekless-jobs"
    job_resend_after_seconds: float = 60.0  # the sweeper re-sends a job not confirmed sent after this long
    jobs_queue_url: str | None = None  # the JobsQueue URL; unset means POST /v1/jobs answers 503
    jobs_bucket: str | None = None  # results over job_inline_result_bytes go here
    job_ttl_days: int = 7  # job records (and their idempotency keys) are kept this long
    job_inline_result_bytes: int = 300_000  # larger results go to S3 (DynamoDB items cap at 400 KB)
    # A job its key's requests/tokens per minute refuse waits on the queue for them, at most this long
    # from its creation (a batch's completion window) and this many times; then it fails.
    job_max_wait_seconds: float = 86_400.0
    job_max_deferrals: int = 1_000

    # Batch files (S3) and queued requests (SQS)
    batches_table: str = "seekless-batches"
    batch_max_lines: int = 50_000  # requests per batch file, as OpenAI's Batch API; later lines are errors
    batch_max_line_bytes: int = 1_000_000  # one line must fit a job message (SQS: 1 MiB)
    batch_finalize_after_seconds: float = 900.0  # the sweeper finishes a batch whose finalizer died after this
    reply_queue_urls: str = ""  # comma-separated queue URLs a queued request may name as reply_to
    reply_s3_prefixes: str = ""  # comma-separated s3://bucket/prefix/ a queued request may name as reply_to

    # The GPU worker (python -m seekless.worker): an OpenAI-compatible inference endpoint first (vLLM in
    # the same ECS task), the DeepSeek API when that endpoint's breaker is open or it fails before output.
    inference_base_url: str | None = None  # e.g. http://127.0.0.1:8000/v1; unset: DeepSeek API only
    inference_model: str | None = None  # the model id the endpoint serves; unset: the catalogue's upstream name
    inference_api_key: str = Field("EMPTY", repr=False)  # vLLM's --api-key, if it was started with one
    worker_concurrency: int = 32  # jobs run at once
    worker_wait_seconds: int = 20  # SQS long-poll wait (0-20)
    worker_visibility_seconds: int = 300  # visibility asked for on receive; extended every third of it
    worker_lease_seconds: float | None = None  # job lease; unset: the visibility timeout
    worker_max_receive_count: int = 5  # the queue's RedrivePolicy maxReceiveCount
    worker_grace_seconds: float = 100.0  # on SIGTERM, how long running jobs may finish (ECS stopTimeout 120)
    worker_progress_seconds: float = 5.0  # progress checkpoints (tokens so far) at most this often
    worker_cancel_poll_seconds: float = 0.5  # how often a running job's status is read (cancel latency)
    worker_job_deadline_seconds: float = 3_600.0  # absolute deadline of one job's generation
    worker_health_file: str | None = None  # touched while the worker's loop runs; unset: <tmp>/seekless-worker.alive
    worker_health_max_age_seconds: float = 60.0  # `python -m seekless.worker --health` fails past this age
