"""Decisions in bulk: a JSONL file under decisions/input/<tenant>/ split by the batch machinery into one
job per valid line, decided by the worker (rules first, DeepSeek only when they leave a record open),
and finished into the batch's output and errors files. moto (S3, DynamoDB, SQS), the DeepSeek emulator
and the worker on a thread, on real sockets; the emulator's call counter says how often DeepSeek was
asked. Every wait has a deadline."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from typing import Any

import boto3
import pytest

from seekless.adapters.decisions import DynamoDecisionStore, DynamoRulesetStore
from seekless.adapters.deepseek import DeepSeekClient
from seekless.adapters.replies import AwsReplies
from seekless.adapters.sqs import SqsJobMessages
from seekless.batches import DECISIONS_ENDPOINT, BatchService, BatchStatus
from seekless.chat import validation_only
from seekless.contracts import GenerationJob
from seekless.decisions import DecisionService
from seekless.errors import NotFound
from seekless.models import Principal
from seekless.queued import JobEndings
from seekless.rules import RulesetSpec
from seekless.worker.runner import Worker
from seekless_local.emulator import EmulatorServer
from seekless_local.stack import MotoServer
from seekless_local.worker import WorkerThread

from .conftest import TABLES
from .test_batches import DEV, Env, env, moto  # noqa: F401 (the fixtures this module shares)
from .test_decisions import REFUNDS, calls
from .test_worker import EMULATOR_KEY, FAST, _creds

OTHER = Principal(tenant_id="other", key_id="other")


@pytest.fixture
def decisions(env: Env, moto: MotoServer) -> DecisionService:  # noqa: F811
    dynamodb = boto3.client("dynamodb", endpoint_url=moto.url, region_name="us-east-1", **_creds())
    return DecisionService(
        rulesets=DynamoRulesetStore(TABLES["RulesetsTable"], client=dynamodb),
        decisions=DynamoDecisionStore(TABLES["DecisionsTable"], client=dynamodb),
        chat=validation_only(env.settings),
        cache=None,
        settings=env.settings,
    )


@pytest.fixture
def service(env: Env, decisions: DecisionService) -> BatchService:  # noqa: F811
    return env.batch_service(decisions=lambda: decisions, max_lines=50)


@pytest.fixture
def worker(env: Env, decisions: DecisionService, service: BatchService) -> Iterator[WorkerThread]:  # noqa: F811
    def build() -> Worker:
        return Worker(
            config=FAST,
            messages=SqsJobMessages(env.queue_url, client=env.sqs),
            jobs=env.jobs,
            settings=env.settings,
            model=DeepSeekClient.from_settings(env.settings, api_key=lambda _refresh: EMULATOR_KEY),
            sessions=None,
            endings=JobEndings(jobs=env.jobs, batches=service, replies=AwsReplies(sqs_client=env.sqs)),
            decisions=decisions,
        )

    with WorkerThread(build) as thread:
        yield thread


def ruleset(tenant: Principal, decisions: DecisionService, ruleset_id: str) -> int:
    """Publish REFUNDS under ``ruleset_id``; returns its version."""
    return decisions.publish(tenant, RulesetSpec.model_validate({**REFUNDS, "id": ruleset_id})).version


def line(custom_id: str, ruleset_id: str, record: dict[str, Any], **extra: Any) -> str:
    return json.dumps({"custom_id": custom_id, "ruleset": ruleset_id, "input": record, **extra})


def test_a_decisions_file_decides_every_valid_line_and_reports_every_bad_one(
    env: Env,  # noqa: F811
    service: BatchService,
    decisions: DecisionService,
    worker: WorkerThread,
    emulator: EmulatorServer,
) -> None:
    name = "refunds-" + uuid.uuid4().hex[:8]
    assert ruleset(DEV, decisions, name) == 1
    assert ruleset(DEV, decisions, name) == 2  # the file is decided under the latest: 2
    lines = [
        line("small", name, {"amount": 5, "country": "DE"}),  # 1: the final rule "small" approves
        line("embargo", name, {"amount": 500, "country": "KP"}),  # 2: the final rule "embargo" denies
        line("open", name, {"amount": 150, "country": "DE"}),  # 3: no rule fires: DeepSeek decides
        line("large", name, {"amount": 1500, "country": "FR"}, version=1),  # 4: "large" is not final: DeepSeek
        line("negative", name, {"amount": -1, "country": "DE"}),  # 5: not the ruleset's input schema
        line("unknown", "no-such-ruleset", {"amount": 5, "country": "DE"}),  # 6
        "{not json",  # 7
        line("small", name, {"amount": 6, "country": "DE"}),  # 8: a custom_id used on line 1
        line("model", name, {"amount": 150, "country": "DE"}, model="gpt-9"),  # 9
        json.dumps({"custom_id": "extra", "ruleset": name, "input": {}, "method": "POST"}),  # 10
    ]
    source = env.put(f"decisions/input/dev/{name}.jsonl", "\n".join(lines) + "\n")

    started = service.ingest(source)
    assert started is not None and (started.jobs, started.invalid) == (4, 6)
    batch = env.wait_ended(started)

    assert batch.status is BatchStatus.COMPLETED and batch.completed == 4
    described = service.describe(batch)
    assert described["endpoint"] == DECISIONS_ENDPOINT and described["output_url"] and described["error_url"]
    assert described["request_counts"] == {"total": 10, "completed": 4, "failed": 6}
    output, errors = env.read(batch.output_key), env.read(batch.error_key)
    bodies = {r["custom_id"]: r["response"]["body"] for r in output}
    assert sorted(bodies) == ["embargo", "large", "open", "small"]
    assert all(r["response"]["status_code"] == 200 and r["error"] is None for r in output)
    assert {k: (b["decision"], b["decided_by"]) for k, b in bodies.items() if k in ("small", "embargo")} == {
        "small": ("approve", "rule:small"),
        "embargo": ("deny", "rule:embargo"),
    }
    assert bodies["open"]["decided_by"] == bodies["large"]["decided_by"] == "model"
    assert {k: b["ruleset"]["version"] for k, b in bodies.items()} == {"small": 2, "embargo": 2, "open": 2, "large": 1}
    assert calls(emulator) == 2  # the two model lines; the rules-only ones never reach DeepSeek

    codes = {r["line"]: r["error"]["code"] for r in errors}
    assert codes == {
        5: "input_schema_mismatch",
        6: "ruleset_not_found",
        7: "invalid_json",
        8: "duplicate_custom_id",
        9: "model_not_found",
        10: "invalid_line",
    }
    for body in bodies.values():  # each decision was stored for the tenant, and only for it
        assert decisions.get_decision(DEV, body["id"]).to_api() == body
        with pytest.raises(NotFound):
            decisions.get_decision(OTHER, body["id"])


def test_a_file_of_rules_only_lines_makes_no_upstream_call(
    env: Env,  # noqa: F811
    service: BatchService,
    decisions: DecisionService,
    worker: WorkerThread,
    emulator: EmulatorServer,
) -> None:
    name = "refunds-" + uuid.uuid4().hex[:8]
    ruleset(DEV, decisions, name)
    lines = [line(f"r{i}", name, {"amount": i, "country": "DE"}) for i in range(5)]
    started = service.ingest(env.put(f"decisions/input/dev/{name}.jsonl", "\n".join(lines)))
    assert started is not None
    batch = env.wait_ended(started)
    assert batch.status is BatchStatus.COMPLETED and batch.completed == 5
    assert {r["response"]["body"]["decided_by"] for r in env.read(batch.output_key)} == {"rule:small"}
    assert env.read(batch.error_key) == []
    assert calls(emulator) == 0


def test_another_tenants_ruleset_is_unknown_to_a_decisions_file(
    env: Env,  # noqa: F811
    service: BatchService,
    decisions: DecisionService,
) -> None:
    name = "refunds-" + uuid.uuid4().hex[:8]
    ruleset(OTHER, decisions, name)
    started = service.ingest(env.put(f"decisions/input/dev/{name}.jsonl", line("a", name, {"amount": 5})))
    assert started is not None and started.status is BatchStatus.FAILED  # no valid line: finished at once
    (error,) = env.read(started.error_key)
    assert (error["line"], error["error"]["code"]) == (1, "ruleset_not_found")


def test_a_decision_job_message_round_trips_and_old_messages_still_parse() -> None:
    decision = {"ruleset": "refunds", "version": 3, "input": {"amount": 5}, "model": "deepseek-chat"}
    job = GenerationJob.model_validate({"job_id": "j", "tenant_id": "t", "key_id": "k", "decision": decision})
    assert job.version == 3 and job.request is None
    assert GenerationJob.model_validate_json(job.model_dump_json()) == job
    old = {"version": 2, "job_id": "j", "tenant_id": "t", "key_id": "k"}
    request = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}]}
    assert GenerationJob.model_validate({**old, "request": request}).chat_request().model == "deepseek-flash"
    with pytest.raises(ValueError, match="exactly one"):
        GenerationJob.model_validate({**old, "version": 3})
    with pytest.raises(ValueError, match="v3"):
        GenerationJob.model_validate({**old, "decision": decision})


async def test_a_jobs_decision_is_made_once_however_often_the_job_runs(
    env: Env,  # noqa: F811
    decisions: DecisionService,
    emulator: EmulatorServer,
) -> None:
    from seekless.chat import ChatService
    from seekless.decisions import new_decision_id

    name = "refunds-" + uuid.uuid4().hex[:8]
    ruleset(DEV, decisions, name)
    model = DeepSeekClient.from_settings(env.settings, api_key=lambda _refresh: EMULATOR_KEY)
    asking = decisions.using(ChatService(settings=env.settings, model=model, cache=None, sessions=None))
    job_id = "job_" + uuid.uuid4().hex
    decision_id = new_decision_id(1_795_000_000.0, for_job=job_id)
    assert decision_id == new_decision_id(1_795_000_000.0, for_job=job_id) != new_decision_id(1_795_000_000.0)

    before = calls(emulator)
    try:
        runs = [
            await asking.decide(DEV, name, {"amount": 150, "country": "DE"}, deadline=1e12, decision_id=decision_id)
            for _ in range(3)  # the first run, then two re-runs after a lost lease
        ]
    finally:
        await model.aclose()
    assert calls(emulator) - before == 1  # DeepSeek was asked on the first run only
    assert {run.id for run in runs} == {decision_id}
    assert runs[1] == runs[2] == decisions.get_decision(DEV, decision_id)
    assert runs[0].decided_by == runs[1].decided_by == "model"
    listed = decisions.list_decisions(DEV, limit=100, after=None).items
    assert [d.id for d in listed].count(decision_id) == 1
