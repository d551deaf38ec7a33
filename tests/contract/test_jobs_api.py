"""Jobs over /v1/jobs against the running local stack: the record in DynamoDB, the message on SQS."""

from __future__ import annotations

import uuid
from collections.abc import Callable, Iterator
from typing import Any

import boto3
import httpx
import pytest

from seekless.adapters.jobs import DynamoJobStore
from seekless.contracts import GenerationJob
from seekless_local.stack import LocalStack
from tests.contract.conftest import assert_openai_error_schema, make_http, unique_messages, upstream_calls

MODEL = "deepseek-flash"


@pytest.fixture
def sqs(stack: LocalStack) -> Any:
    client = boto3.client("sqs", endpoint_url=stack.moto_url)
    # Drain, so only this test's messages are there (PurgeQueue is allowed once a minute).
    url = stack.queues["JobsQueue"]
    while found := client.receive_message(QueueUrl=url, MaxNumberOfMessages=10, WaitTimeSeconds=0).get("Messages"):
        entries = [{"Id": str(n), "ReceiptHandle": m["ReceiptHandle"]} for n, m in enumerate(found)]
        client.delete_message_batch(QueueUrl=url, Entries=entries)
    return client


@pytest.fixture
def tenant_http(stack: LocalStack, new_tenant_key: Callable[[str], str]) -> Iterator[httpx.Client]:
    """A tenant of its own, so listings hold only what the test created."""
    with make_http(stack, new_tenant_key(f"t-{uuid.uuid4().hex[:12]}")) as session:
        yield session


def body(**extra: Any) -> dict[str, Any]:
    return {"model": MODEL, "messages": unique_messages("A long essay"), "max_tokens": 64, **extra}


def submit(http: httpx.Client, payload: dict[str, Any] | None = None, **headers: str) -> dict[str, Any]:
    response = http.post("/v1/jobs", json=payload or body(), headers=headers)
    assert response.status_code == 202, response.text
    return dict(response.json())


def messages(sqs: Any, stack: LocalStack) -> list[GenerationJob]:
    found = sqs.receive_message(QueueUrl=stack.queues["JobsQueue"], MaxNumberOfMessages=10, WaitTimeSeconds=0)
    return [GenerationJob.model_validate_json(m["Body"]) for m in found.get("Messages", [])]


def listing(http: httpx.Client, **params: Any) -> list[dict[str, Any]]:
    response = http.get("/v1/jobs", params=params)
    assert response.status_code == 200, response.text
    page = response.json()
    assert page["object"] == "list"
    return list(page["data"])


def worker_store(stack: LocalStack) -> DynamoJobStore:
    """Plays the (future) worker's part: the same store, straight against moto."""
    return DynamoJobStore(
        stack.tables["JobsTable"],
        bucket=stack.buckets["JobsBucket"],
        client=boto3.client("dynamodb", endpoint_url=stack.moto_url),
        s3_client=boto3.client("s3", endpoint_url=stack.moto_url),
    )


def test_post_answers_202_and_puts_the_job_on_the_queue(http: httpx.Client, stack: LocalStack, sqs: Any) -> None:
    payload = body()
    accepted = submit(http, payload)

    assert set(accepted) == {"id", "object", "status", "created_at"}
    assert accepted["object"] == "job" and accepted["status"] == "queued"
    (sent,) = messages(sqs, stack)
    assert sent.job_id == accepted["id"] and sent.tenant_id == "dev" and sent.connection_id is None
    assert sent.request.messages[0].content == payload["messages"][0]["content"]
    assert upstream_calls(stack) == 0  # the worker generates, not the API


def test_get_shows_status_and_progress(http: httpx.Client, sqs: Any) -> None:
    accepted = submit(http)

    job = http.get(f"/v1/jobs/{accepted['id']}").json()

    assert job["id"] == accepted["id"] and job["status"] == "queued"
    assert job["progress"] == {"tokens": 0} and "result" not in job and "error" not in job


def test_a_finished_job_shows_its_result_and_cannot_be_cancelled(
    http: httpx.Client, stack: LocalStack, sqs: Any
) -> None:
    job_id = submit(http)["id"]
    store = worker_store(stack)
    store.claim("dev", job_id, owner="worker-1", lease_seconds=60)
    store.progress("dev", job_id, owner="worker-1", tokens=12)
    result = {"id": "chatcmpl-1", "object": "chat.completion", "choices": [], "model": MODEL}
    store.succeed("dev", job_id, result, owner="worker-1")

    job = http.get(f"/v1/jobs/{job_id}").json()
    cancel = http.post(f"/v1/jobs/{job_id}/cancel")

    assert job["status"] == "succeeded" and job["result"] == result and job["progress"] == {"tokens": 12}
    assert cancel.status_code == 409
    assert assert_openai_error_schema(cancel.json())["code"] == "job_finished"


def test_cancel_a_queued_job(http: httpx.Client, sqs: Any) -> None:
    job_id = submit(http)["id"]

    cancelled = http.post(f"/v1/jobs/{job_id}/cancel")

    assert cancelled.status_code == 200 and cancelled.json()["status"] == "cancelled"
    assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "cancelled"


def test_list_is_newest_first_and_filters_by_status(tenant_http: httpx.Client, sqs: Any) -> None:
    first = submit(tenant_http)["id"]
    second = submit(tenant_http)["id"]
    tenant_http.post(f"/v1/jobs/{first}/cancel")

    assert [j["id"] for j in listing(tenant_http)] == [second, first]
    assert [j["id"] for j in listing(tenant_http, status="queued")] == [second]
    assert [j["id"] for j in listing(tenant_http, status="cancelled")] == [first]
    assert [j["id"] for j in listing(tenant_http, limit=1, after=second)] == [first]
    bad = tenant_http.get("/v1/jobs", params={"status": "paused"})
    assert bad.status_code == 400 and assert_openai_error_schema(bad.json())["param"] == "query.status"


def test_the_same_idempotency_key_returns_the_same_job(tenant_http: httpx.Client, stack: LocalStack, sqs: Any) -> None:
    payload = body()
    first = submit(tenant_http, payload, **{"Idempotency-Key": "order-42"})
    again = submit(tenant_http, payload, **{"Idempotency-Key": "order-42"})

    assert again["id"] == first["id"]
    assert len(listing(tenant_http)) == 1
    assert [m.job_id for m in messages(sqs, stack)] == [first["id"]]


def test_the_same_idempotency_key_with_another_body_is_409(tenant_http: httpx.Client, sqs: Any) -> None:
    submit(tenant_http, body(), **{"Idempotency-Key": "order-43"})

    reused = tenant_http.post("/v1/jobs", json=body(), headers={"Idempotency-Key": "order-43"})

    assert reused.status_code == 409
    assert assert_openai_error_schema(reused.json())["code"] == "idempotency_key_reused"
    assert len(listing(tenant_http)) == 1


def test_another_tenants_job_is_404(http: httpx.Client, other_http: httpx.Client, sqs: Any) -> None:
    job_id = submit(http)["id"]

    for response in (other_http.get(f"/v1/jobs/{job_id}"), other_http.post(f"/v1/jobs/{job_id}/cancel")):
        assert response.status_code == 404
        assert assert_openai_error_schema(response.json())["code"] == "job_not_found"
    assert job_id not in [j["id"] for j in listing(other_http)]
    assert http.get(f"/v1/jobs/{job_id}").json()["status"] == "queued"


@pytest.mark.parametrize(
    ("payload", "status"),
    [
        ({"model": "no-such-model", "messages": [{"role": "user", "content": "x"}]}, 404),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "max_tokens": 10_000_000}, 400),
        ({"model": MODEL, "messages": []}, 400),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "bogus": 1}, 400),
        ({"model": MODEL, "messages": [{"role": "user", "content": "x"}], "session_id": "sess_missing"}, 404),
    ],
    ids=["unknown-model", "max-tokens-over-cap", "no-messages", "unknown-field", "unknown-session"],
)
def test_bad_input_is_refused_with_no_job_and_no_message(
    tenant_http: httpx.Client, stack: LocalStack, sqs: Any, payload: dict[str, Any], status: int
) -> None:
    response = tenant_http.post("/v1/jobs", json=payload, headers={"Idempotency-Key": "k"})

    assert response.status_code == status, response.text
    assert_openai_error_schema(response.json())
    assert listing(tenant_http) == []
    assert messages(sqs, stack) == []


def test_jobs_need_a_key(anonymous_http: httpx.Client) -> None:
    response = anonymous_http.post("/v1/jobs", json=body())
    assert response.status_code == 401
