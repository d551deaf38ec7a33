"""Job records in DynamoDB and the jobs queue on SQS (moto; table, queues and bucket from template.yaml):
every transition and every refused one, lease expiry, races, idempotency, large results, isolation."""

from __future__ import annotations

import json
import threading
from collections.abc import Callable
from typing import Any

import boto3
import pytest

from seekless.adapters.jobs import DynamoJobStore
from seekless.adapters.sqs import SqsJobMessages, SqsJobQueue
from seekless.contracts import ChatCompletionRequest, GenerationJob
from seekless.errors import NotFound, ServiceUnavailable
from seekless.jobs import ENQUEUE_FAILED, IdempotencyKeyReused, Job, JobConflict, JobService, JobStatus, job_error
from seekless.models import Principal
from seekless_local.template import create_buckets, create_queues
from tests.waiting import wait_for

from .conftest import TABLES
from .test_session_store import AtomicCalls, Clock

LEASE = 60.0
DEV = Principal(tenant_id="dev", key_id="dev")
OTHER = Principal(tenant_id="other", key_id="other")


def chat(text: str = "Write a long essay") -> ChatCompletionRequest:
    return ChatCompletionRequest.model_validate(
        {"model": "deepseek-flash", "messages": [{"role": "user", "content": text}], "max_tokens": 100}
    )


def completion(content: str = "done") -> dict[str, Any]:
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "deepseek-flash",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": content}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4},
    }


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def s3(aws: Any) -> Any:
    client = boto3.client("s3", region_name="us-east-1")
    create_buckets(client, names={"JobsBucket": "seekless-jobs"})
    return client


@pytest.fixture
def sqs(aws: Any) -> Any:
    return boto3.client("sqs", region_name="us-east-1")


@pytest.fixture
def queue_urls(sqs: Any) -> dict[str, str]:
    return create_queues(sqs, names={"JobsQueue": "seekless-jobs", "JobsDeadLetterQueue": "seekless-jobs-dlq"})


@pytest.fixture
def make_store(aws: Any, s3: Any, clock: Clock) -> Callable[..., DynamoJobStore]:
    def make(client: Any = None, **options: Any) -> DynamoJobStore:
        return DynamoJobStore(
            TABLES["JobsTable"], bucket="seekless-jobs", client=client or aws, s3_client=s3, clock=clock, **options
        )

    return make


@pytest.fixture
def store(make_store: Callable[..., DynamoJobStore]) -> DynamoJobStore:
    return make_store()


def new_job(store: DynamoJobStore, tenant: str = "dev", text: str = "Write a long essay") -> str:
    job, created = store.create(tenant, key_id="k", request=chat(text), session_id=None)
    assert created
    return job.id


def refused(code: str, call: Callable[[], Any]) -> JobConflict:
    with pytest.raises(JobConflict) as caught:
        call()
    assert caught.value.code == code, caught.value.message
    assert caught.value.status == 409
    return caught.value


# -- create, read, isolation -------------------------------------------------------------------------


def test_created_job_is_queued_and_reads_back_with_its_request(store: DynamoJobStore) -> None:
    job, created = store.create("dev", key_id="k1", request=chat(), session_id="sess_1")
    assert created and job.status is JobStatus.QUEUED and job.attempts == 0
    read = store.get("dev", job.id)
    assert read == job
    assert read.request == chat() and read.session_id == "sess_1" and read.key_id == "k1"


def test_another_tenants_job_is_a_plain_miss_everywhere(store: DynamoJobStore) -> None:
    job_id = new_job(store)
    for call in (
        lambda: store.get("other", job_id),
        lambda: store.cancel("other", job_id),
        lambda: store.claim("other", job_id, owner="w", lease_seconds=LEASE),
        lambda: store.fail("other", job_id, job_error("x"), owner=None),
    ):
        with pytest.raises(NotFound):
            call()
    assert store.list_jobs("other", status=None, limit=10, after=None).items == []
    assert store.get("dev", job_id).status is JobStatus.QUEUED  # untouched


def test_missing_job_is_not_found_for_every_transition(store: DynamoJobStore) -> None:
    for call in (
        lambda: store.get("dev", "job_missing"),
        lambda: store.claim("dev", "job_missing", owner="w", lease_seconds=LEASE),
        lambda: store.heartbeat("dev", "job_missing", owner="w", lease_seconds=LEASE),
        lambda: store.progress("dev", "job_missing", owner="w", tokens=1),
        lambda: store.succeed("dev", "job_missing", completion(), owner="w"),
        lambda: store.fail("dev", "job_missing", job_error("x"), owner="w"),
        lambda: store.cancel("dev", "job_missing"),
    ):
        with pytest.raises(NotFound):
            call()


def test_expired_job_reads_as_missing_and_cannot_be_claimed(store: DynamoJobStore, clock: Clock) -> None:
    job_id = new_job(store)
    clock.now += 8 * 86_400  # past the 7-day retention; TTL may not have deleted it yet
    with pytest.raises(NotFound):
        store.get("dev", job_id)
    with pytest.raises(NotFound):
        store.claim("dev", job_id, owner="w", lease_seconds=LEASE)
    assert store.list_jobs("dev", status=None, limit=10, after=None).items == []


# -- the lifecycle -----------------------------------------------------------------------------------


def test_claim_takes_a_queued_job_with_a_lease(store: DynamoJobStore, clock: Clock) -> None:
    job_id = new_job(store)
    job = store.claim("dev", job_id, owner="w1", lease_seconds=LEASE)
    assert job.status is JobStatus.RUNNING and job.attempts == 1
    assert job.lease_owner == "w1" and job.lease_expires_at == pytest.approx(clock.now + LEASE)


def test_a_live_lease_cannot_be_claimed_again(store: DynamoJobStore) -> None:
    job_id = new_job(store)
    store.claim("dev", job_id, owner="w1", lease_seconds=LEASE)
    conflict = refused("job_leased", lambda: store.claim("dev", job_id, owner="w2", lease_seconds=LEASE))
    assert conflict.current is not None and conflict.current.lease_owner == "w1"


def test_an_expired_lease_is_reclaimed_and_the_old_owner_is_locked_out(store: DynamoJobStore, clock: Clock) -> None:
    job_id = new_job(store)
    store.claim("dev", job_id, owner="w1", lease_seconds=LEASE)
    clock.now += LEASE + 1  # w1 died, or stalled past its lease
    job = store.claim("dev", job_id, owner="w2", lease_seconds=LEASE)
    assert job.lease_owner == "w2" and job.attempts == 2
    refused("lease_lost", lambda: store.heartbeat("dev", job_id, owner="w1", lease_seconds=LEASE))
    refused("lease_lost", lambda: store.progress("dev", job_id, owner="w1", tokens=5))
    refused("lease_lost", lambda: store.succeed("dev", job_id, completion("stale"), owner="w1"))
    refused("lease_lost", lambda: store.fail("dev", job_id, job_error("stale"), owner="w1"))
    assert store.succeed("dev", job_id, completion("fresh"), owner="w2").result == completion("fresh")


def test_heartbeat_extends_the_lease_for_its_owner_only(store: DynamoJobStore, clock: Clock) -> None:
    job_id = new_job(store)
    refused("job_not_running", lambda: store.heartbeat("dev", job_id, owner="w1", lease_seconds=LEASE))
    store.claim("dev", job_id, owner="w1", lease_seconds=LEASE)
    clock.now += LEASE / 2
    job = store.heartbeat("dev", job_id, owner="w1", lease_seconds=LEASE)
    assert job.lease_expires_at == pytest.approx(clock.now + LEASE)
    clock.now += LEASE * 0.9  # past the first lease, inside the extended one
    refused("job_leased", lambda: store.claim("dev", job_id, owner="w2", lease_seconds=LEASE))
    refused("lease_lost", lambda: store.heartbeat("dev", job_id, owner="w2", lease_seconds=LEASE))


def test_progress_is_recorded_by_the_owner_only(store: DynamoJobStore) -> None:
    job_id = new_job(store)
    refused("job_not_running", lambda: store.progress("dev", job_id, owner="w1", tokens=1))
    store.claim("dev", job_id, owner="w1", lease_seconds=LEASE)
    assert store.progress("dev", job_id, owner="w1", tokens=42).progress_tokens == 42
    refused("lease_lost", lambda: store.progress("dev", job_id, owner="w2", tokens=99))
    assert store.get("dev", job_id).progress_tokens == 42


def test_succeed_stores_the_result_and_nothing_moves_a_finished_job(store: DynamoJobStore) -> None:
    job_id = new_job(store)
    refused("job_not_running", lambda: store.succeed("dev", job_id, completion(), owner="w1"))
    store.claim("dev", job_id, owner="w1", lease_seconds=LEASE)
    job = store.succeed("dev", job_id, completion(), owner="w1")
    assert job.status is JobStatus.SUCCEEDED and job.result == completion()
    assert store.get("dev", job_id).result == completion()
    refused("job_finished", lambda: store.succeed("dev", job_id, completion("again"), owner="w1"))
    refused("job_finished", lambda: store.fail("dev", job_id, job_error("late"), owner="w1"))
    refused("job_finished", lambda: store.claim("dev", job_id, owner="w2", lease_seconds=LEASE))
    refused("job_finished", lambda: store.cancel("dev", job_id))
    refused("job_finished", lambda: store.heartbeat("dev", job_id, owner="w1", lease_seconds=LEASE))
    assert store.get("dev", job_id).result == completion()


def test_fail_records_the_error_in_openai_shape(store: DynamoJobStore) -> None:
    job_id = new_job(store)
    store.claim("dev", job_id, owner="w1", lease_seconds=LEASE)
    error = job_error("upstream gave up", type="api_error", code="upstream_error")
    job = store.fail("dev", job_id, error, owner="w1")
    assert job.status is JobStatus.FAILED and job.error == error and job.result is None
    assert store.get("dev", job_id).to_api()["error"] == error
    refused("job_finished", lambda: store.claim("dev", job_id, owner="w2", lease_seconds=LEASE))


def test_cancel_a_queued_job_and_it_is_never_claimed(store: DynamoJobStore) -> None:
    job_id = new_job(store)
    assert store.cancel("dev", job_id).status is JobStatus.CANCELLED
    assert store.cancel("dev", job_id).status is JobStatus.CANCELLED  # a retried cancel is harmless
    refused("job_finished", lambda: store.claim("dev", job_id, owner="w1", lease_seconds=LEASE))


def test_cancel_a_running_job_locks_its_worker_out(store: DynamoJobStore) -> None:
    job_id = new_job(store)
    store.claim("dev", job_id, owner="w1", lease_seconds=LEASE)
    assert store.cancel("dev", job_id).status is JobStatus.CANCELLED
    refused("job_finished", lambda: store.heartbeat("dev", job_id, owner="w1", lease_seconds=LEASE))
    refused("job_finished", lambda: store.progress("dev", job_id, owner="w1", tokens=3))
    refused("job_finished", lambda: store.succeed("dev", job_id, completion(), owner="w1"))
    assert store.get("dev", job_id).status is JobStatus.CANCELLED


def test_the_producer_can_fail_only_a_queued_job(store: DynamoJobStore) -> None:
    job_id = new_job(store)
    assert store.fail("dev", job_id, job_error("no queue"), owner=None).status is JobStatus.FAILED
    running = new_job(store)
    store.claim("dev", running, owner="w1", lease_seconds=LEASE)
    refused("job_not_queued", lambda: store.fail("dev", running, job_error("no queue"), owner=None))


# -- waiting for a key's per-minute limits -----------------------------------------------------------


def defer(store: DynamoJobStore, clock: Clock, job_id: str, owner: str, message_id: str = "msg-2") -> Job:
    return store.defer(
        "dev", job_id, owner=owner, not_before=clock.now + 29.5, reason="rate_limit_requests", message_id=message_id
    )


def test_defer_puts_a_running_job_back_to_wait_without_counting_an_attempt(store: DynamoJobStore, clock: Clock) -> None:
    job_id = new_job(store)
    refused("job_not_running", lambda: defer(store, clock, job_id, "w1"))
    store.claim("dev", job_id, owner="w1", lease_seconds=LEASE, message_id="msg-1")
    refused("lease_lost", lambda: defer(store, clock, job_id, "w2"))
    job = defer(store, clock, job_id, "w1")
    assert job.status is JobStatus.QUEUED and job.attempts == 0 and job.deferrals == 1
    assert job.lease_owner is None and job.lease_expires_at is None
    shown = store.get("dev", job_id).to_api()
    assert shown["status"] == "queued" and shown["waiting"] == {"reason": "rate_limit_requests", "until": 1_700_000_030}
    assert [j.id for j in store.list_jobs("dev", status=JobStatus.QUEUED, limit=10, after=None).items] == [job_id]
    refused("job_not_running", lambda: defer(store, clock, job_id, "w1"))  # only a claim takes it off the queue


def test_only_the_deferred_copy_claims_a_waiting_job_and_its_claim_ends_the_wait(
    store: DynamoJobStore, clock: Clock
) -> None:
    job_id = new_job(store)
    store.claim("dev", job_id, owner="w1", lease_seconds=LEASE, message_id="msg-1")
    defer(store, clock, job_id, "w1", message_id="msg-2")
    late = refused(
        "job_deferred", lambda: store.claim("dev", job_id, owner="w2", lease_seconds=LEASE, message_id="msg-1")
    )
    assert late.current is not None and late.current.status is JobStatus.QUEUED
    job = store.claim("dev", job_id, owner="w2", lease_seconds=LEASE, message_id="msg-2")
    assert job.status is JobStatus.RUNNING and job.attempts == 1 and job.deferrals == 1
    assert (job.wait_reason, job.not_before, job.deferred_message) == (None, None, None)
    assert "waiting" not in job.to_api()
    assert store.succeed("dev", job_id, completion(), owner="w2").status is JobStatus.SUCCEEDED
    refused("job_finished", lambda: store.claim("dev", job_id, owner="w3", lease_seconds=LEASE, message_id="msg-2"))


def test_a_waiting_job_can_be_cancelled_and_its_copy_then_finds_it_finished(
    store: DynamoJobStore, clock: Clock
) -> None:
    job_id = new_job(store)
    store.claim("dev", job_id, owner="w1", lease_seconds=LEASE, message_id="msg-1")
    defer(store, clock, job_id, "w1")
    assert store.cancel("dev", job_id).status is JobStatus.CANCELLED
    refused("job_finished", lambda: store.claim("dev", job_id, owner="w2", lease_seconds=LEASE, message_id="msg-2"))


def test_concurrent_claims_have_exactly_one_winner(make_store: Callable[..., DynamoJobStore], aws: Any) -> None:
    # AtomicCalls: moto's server is not safe when two threads write one table at once, which real
    # DynamoDB is; serialising each API call keeps the race that matters (N conditional claims arriving
    # together) and removes the one moto invents.
    store = make_store(AtomicCalls(aws))
    job_id = new_job(store)
    barrier = threading.Barrier(8)
    winners: list[str] = []
    losers: list[str] = []

    def claim(n: int) -> None:
        barrier.wait(timeout=10)
        try:
            store.claim("dev", job_id, owner=f"w{n}", lease_seconds=LEASE)
            winners.append(f"w{n}")
        except JobConflict as conflict:
            losers.append(str(conflict.code))

    threads = [threading.Thread(target=claim, args=(n,)) for n in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(winners) == 1 and losers == ["job_leased"] * 7
    job = store.get("dev", job_id)
    assert job.lease_owner == winners[0] and job.attempts == 1


# -- listing -----------------------------------------------------------------------------------------


def test_list_is_newest_first_pages_and_filters_by_status(store: DynamoJobStore, clock: Clock) -> None:
    ids = []
    for n in range(5):
        clock.now += 1
        ids.append(new_job(store, text=f"job {n}"))
    new_job(store, tenant="other")
    store.claim("dev", ids[1], owner="w", lease_seconds=LEASE)
    store.cancel("dev", ids[3])
    first = store.list_jobs("dev", status=None, limit=3, after=None)
    assert [j.id for j in first.items] == ids[::-1][:3] and first.has_more
    second = store.list_jobs("dev", status=None, limit=3, after=first.items[-1].id)
    assert [j.id for j in second.items] == ids[::-1][3:] and not second.has_more
    queued = store.list_jobs("dev", status=JobStatus.QUEUED, limit=10, after=None)
    assert [j.id for j in queued.items] == [ids[4], ids[2], ids[0]]
    assert [j.id for j in store.list_jobs("dev", status=JobStatus.RUNNING, limit=10, after=None).items] == [ids[1]]
    assert [j.id for j in store.list_jobs("dev", status=JobStatus.CANCELLED, limit=10, after=None).items] == [ids[3]]
    paged = store.list_jobs("dev", status=JobStatus.QUEUED, limit=1, after=ids[4])
    assert [j.id for j in paged.items] == [ids[2]] and paged.has_more


def test_listings_carry_no_request_or_result(store: DynamoJobStore) -> None:
    job_id = new_job(store)
    store.claim("dev", job_id, owner="w", lease_seconds=LEASE)
    store.succeed("dev", job_id, completion(), owner="w")
    (listed,) = store.list_jobs("dev", status=JobStatus.SUCCEEDED, limit=10, after=None).items
    assert listed.request is None and listed.result is None and listed.model == "deepseek-flash"


def test_a_cursor_that_is_not_the_tenants_job_is_not_found(store: DynamoJobStore) -> None:
    other = new_job(store, tenant="other")
    with pytest.raises(NotFound):
        store.list_jobs("dev", status=None, limit=10, after=other)


# -- large results -----------------------------------------------------------------------------------


def test_a_result_too_large_for_an_item_goes_to_s3_and_comes_back(
    make_store: Callable[..., DynamoJobStore], aws: Any, s3: Any
) -> None:
    store = make_store(inline_result_bytes=1_000)
    job_id = new_job(store)
    store.claim("dev", job_id, owner="w", lease_seconds=LEASE)
    big = completion("x" * 500_000)  # over DynamoDB's 400 KB item limit
    assert store.succeed("dev", job_id, big, owner="w").result == big
    assert store.get("dev", job_id).result == big
    (item,) = [i for i in aws.scan(TableName=TABLES["JobsTable"])["Items"] if i.get("job_id", {}).get("S") == job_id]
    assert "result" not in item
    pointer = item["result_s3"]["M"]
    assert pointer["key"]["S"].startswith(f"jobs/dev/{job_id}/")
    stored = s3.get_object(Bucket="seekless-jobs", Key=pointer["key"]["S"])["Body"].read()
    assert json.loads(stored) == big


def test_a_small_result_stays_in_the_item(store: DynamoJobStore, s3: Any) -> None:
    job_id = new_job(store)
    store.claim("dev", job_id, owner="w", lease_seconds=LEASE)
    store.succeed("dev", job_id, completion(), owner="w")
    assert s3.list_objects_v2(Bucket="seekless-jobs").get("KeyCount", 0) == 0


# -- idempotency -------------------------------------------------------------------------------------


def key_of(request: ChatCompletionRequest) -> tuple[str, str]:
    from seekless.jobs import request_fingerprint

    return ("key-1", request_fingerprint(request, None))


def test_the_same_idempotency_key_returns_the_same_job(store: DynamoJobStore) -> None:
    first, created = store.create("dev", key_id="k", request=chat(), session_id=None, idempotency=key_of(chat()))
    again, created_again = store.create("dev", key_id="k", request=chat(), session_id=None, idempotency=key_of(chat()))
    assert created and not created_again and again.id == first.id
    assert len(store.list_jobs("dev", status=None, limit=10, after=None).items) == 1


def test_the_same_key_with_another_body_is_refused(store: DynamoJobStore) -> None:
    store.create("dev", key_id="k", request=chat(), session_id=None, idempotency=key_of(chat()))
    with pytest.raises(IdempotencyKeyReused) as caught:
        store.create("dev", key_id="k", request=chat("other"), session_id=None, idempotency=key_of(chat("other")))
    assert caught.value.status == 409
    assert len(store.list_jobs("dev", status=None, limit=10, after=None).items) == 1


def test_idempotency_keys_are_per_tenant(store: DynamoJobStore) -> None:
    mine, _ = store.create("dev", key_id="k", request=chat(), session_id=None, idempotency=key_of(chat()))
    theirs, created = store.create("other", key_id="k", request=chat(), session_id=None, idempotency=key_of(chat()))
    assert created and theirs.id != mine.id


def test_an_expired_idempotency_key_makes_a_new_job(store: DynamoJobStore, clock: Clock) -> None:
    first, _ = store.create("dev", key_id="k", request=chat(), session_id=None, idempotency=key_of(chat()))
    clock.now += 8 * 86_400
    second, created = store.create("dev", key_id="k", request=chat(), session_id=None, idempotency=key_of(chat()))
    assert created and second.id != first.id


class RecordingQueue:
    def __init__(self, fail: bool = False) -> None:
        self.sent: list[GenerationJob] = []
        self.fail = fail
        self._lock = threading.Lock()

    def enqueue(self, job: GenerationJob) -> None:
        if self.fail:
            raise ServiceUnavailable("queue down")
        with self._lock:
            self.sent.append(job)


def test_concurrent_identical_submissions_make_one_job_and_one_message(
    make_store: Callable[..., DynamoJobStore], aws: Any
) -> None:
    queue = RecordingQueue()
    service = JobService(store=make_store(AtomicCalls(aws)), queue=queue)
    barrier = threading.Barrier(8)
    ids: list[str] = []

    def submit() -> None:
        barrier.wait(timeout=10)
        ids.append(service.submit(DEV, chat(), idempotency_key="same").job.id)

    threads = [threading.Thread(target=submit) for _ in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=30)
    assert len(ids) == 8 and len(set(ids)) == 1
    assert [job.job_id for job in queue.sent] == ids[:1]


# -- the queue ---------------------------------------------------------------------------------------


def test_submitting_sends_the_generation_job_contract(
    store: DynamoJobStore, sqs: Any, queue_urls: dict[str, str]
) -> None:
    service = JobService(store=store, queue=SqsJobQueue(queue_urls["JobsQueue"], client=sqs))
    job = service.submit(DEV, chat(), session_id="sess_9").job
    (message,) = sqs.receive_message(QueueUrl=queue_urls["JobsQueue"], MessageAttributeNames=["All"])["Messages"]
    sent = GenerationJob.model_validate_json(message["Body"])
    assert sent.job_id == job.id and sent.version == 3
    assert (sent.tenant_id, sent.key_id, sent.session_id, sent.connection_id) == ("dev", "dev", "sess_9", None)
    assert sent.request == chat()
    assert message["MessageAttributes"]["contract"]["StringValue"] == "GenerationJob/v3"


def test_an_unreachable_queue_fails_the_job_instead_of_leaving_it_queued(store: DynamoJobStore, sqs: Any) -> None:
    missing = "https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue"
    service = JobService(store=store, queue=SqsJobQueue(missing, client=sqs))
    with pytest.raises(ServiceUnavailable) as caught:
        service.submit(DEV, chat(), idempotency_key="k-down")
    assert caught.value.code == ENQUEUE_FAILED
    (job,) = store.list_jobs("dev", status=None, limit=10, after=None).items
    assert job.status is JobStatus.FAILED and job.error is not None and job.error["code"] == ENQUEUE_FAILED
    # The same key replays the same outcome, and makes no second job.
    with pytest.raises(ServiceUnavailable):
        service.submit(DEV, chat(), idempotency_key="k-down")
    assert len(store.list_jobs("dev", status=None, limit=10, after=None).items) == 1


def test_the_jobs_queue_redrives_to_its_dead_letter_queue_after_five_receives(
    sqs: Any, queue_urls: dict[str, str]
) -> None:
    attributes = sqs.get_queue_attributes(QueueUrl=queue_urls["JobsQueue"], AttributeNames=["All"])["Attributes"]
    dlq_arn = sqs.get_queue_attributes(QueueUrl=queue_urls["JobsDeadLetterQueue"], AttributeNames=["QueueArn"])[
        "Attributes"
    ]["QueueArn"]
    assert json.loads(attributes["RedrivePolicy"]) == {"deadLetterTargetArn": dlq_arn, "maxReceiveCount": 5}
    assert attributes["VisibilityTimeout"] == "300"


def test_a_deferred_copy_arrives_later_as_a_new_message_whose_receive_count_starts_again(
    sqs: Any, queue_urls: dict[str, str]
) -> None:
    url = queue_urls["JobsQueue"]
    job = GenerationJob(job_id="job_1", tenant_id="dev", key_id="dev", request=chat())
    SqsJobQueue(url, client=sqs).enqueue(job)
    messages = SqsJobMessages(url, client=sqs)
    for _ in range(3):  # what repeated visibility timeouts would do: three receives of one message
        (original,) = messages.receive(max_messages=1, wait_seconds=0, visibility_seconds=0)
    assert original.receive_count == 3
    copy_id = messages.send_later(job, 1)
    assert messages.delete(original)
    assert messages.receive(max_messages=1, wait_seconds=0, visibility_seconds=30) == []  # not before its delay
    (copy,) = wait_for(
        lambda: messages.receive(max_messages=1, wait_seconds=1, visibility_seconds=30), what="the delayed copy"
    )
    assert copy.id == copy_id and copy.receive_count == 1
    assert GenerationJob.model_validate_json(copy.body) == job


def test_a_copy_the_queue_refuses_is_an_error_not_a_silent_loss(sqs: Any) -> None:
    missing = SqsJobMessages("https://sqs.us-east-1.amazonaws.com/123456789012/no-such-queue", client=sqs)
    job = GenerationJob(job_id="job_1", tenant_id="dev", key_id="dev", request=chat())
    with pytest.raises(ServiceUnavailable):
        missing.send_later(job, 5)


def test_holders_reads_many_jobs_status_and_owner_in_one_batch(store: DynamoJobStore) -> None:
    running, cancelled, queued = new_job(store), new_job(store), new_job(store)
    other = new_job(store, tenant="other")
    store.claim("dev", running, owner="w1", lease_seconds=LEASE)
    store.claim("dev", cancelled, owner="w1", lease_seconds=LEASE)
    store.cancel("dev", cancelled)
    keys = [("dev", running), ("dev", cancelled), ("dev", queued), ("dev", other), ("dev", "job_missing")]
    keys += [("other", f"job_{i}") for i in range(120)]  # past one BatchGetItem's hundred keys
    found = store.holders(keys)
    assert found[("dev", running)] == (JobStatus.RUNNING, "w1")
    assert found[("dev", cancelled)] is not None and found[("dev", cancelled)][0] is JobStatus.CANCELLED
    assert found[("dev", queued)] == (JobStatus.QUEUED, None)
    assert found[("dev", other)] is None  # another tenant's id is a plain miss here too
    assert found[("dev", "job_missing")] is None and len(found) == len(keys)


def test_a_job_whose_producer_crashed_before_sending_is_resent_by_the_sweeper(
    store: DynamoJobStore, sqs: Any, queue_urls: dict[str, str], clock: Clock
) -> None:
    service = JobService(store=store, queue=SqsJobQueue(queue_urls["JobsQueue"], client=sqs))
    sent = service.submit(DEV, chat("sent normally")).job
    orphan, _ = store.create("dev", key_id="dev", request=chat("crashed before sending"), session_id=None)
    sqs.purge_queue(QueueUrl=queue_urls["JobsQueue"])
    assert store.unsent(created_before=clock.now + 1) == [store.get("dev", orphan.id)]  # the sent one left the index
    assert service.resend_unsent(older_than_seconds=60, now=clock.now + 30) == 0  # too young: maybe still sending
    assert service.resend_unsent(older_than_seconds=60, now=clock.now + 61) == 1
    (message,) = sqs.receive_message(QueueUrl=queue_urls["JobsQueue"])["Messages"]
    assert GenerationJob.model_validate_json(message["Body"]).job_id == orphan.id != sent.id
    assert store.unsent(created_before=clock.now + 1000) == []
