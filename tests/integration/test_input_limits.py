"""The input limits, swept across every entry point that takes a chat request: REST chat (plain and
streamed), REST jobs, a WebSocket chat frame, a batch line and a queued request, each through its own
function as Lambda invokes it (moto, a real Redis, the DeepSeek emulator).

Each row is one violation; each entry point must refuse it in its own protocol's error shape, naming
the parameter, with no upstream call (the emulator's counter) and no job queued for the worker."""

from __future__ import annotations

import json
import uuid
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import quote_plus

import boto3
import pytest

from seekless_local.emulator import EmulatorServer
from seekless_local.events import load_event
from seekless_local.gateway import rest_event

from .conftest import DEV_KEY
from .test_event_functions import BUCKET, Invoke, _messages, _record, _request, invoke, queues
from .test_ws_events import CONNECTION, posted, ws_env

# The fixtures imported from the event-function tests, named here so that pytest (and ruff) see them used.
__all__ = ["invoke", "queues", "ws_env"]

ENTRY_POINTS = ("rest_chat", "rest_chat_stream", "rest_jobs", "ws_chat", "batch_line", "queued_request")
TOOL = {"type": "function", "function": {"name": "lookup", "parameters": {"type": "object"}}}


def user(text: str) -> dict[str, str]:
    return {"role": "user", "content": text}


@dataclass(frozen=True)
class Violation:
    fields: dict[str, Any]  # on top of a valid request
    param: str
    code: str  # ignored for a ``schema`` violation: each entry point has its own code for those
    env: dict[str, str] = field(default_factory=dict)  # the limit, lowered where a default would need a huge body
    on_websocket: bool = True  # a chat frame carries no tools and no user
    schema: bool = False  # refused by the entry point's own parsing, before ChatService


VIOLATIONS = {
    "too_many_messages": Violation(
        {"messages": [user("a"), user("b"), user("c")]},
        "messages",
        "array_above_max_length",
        env={"SEEKLESS_MAX_MESSAGES": "2"},
    ),
    "message_too_long": Violation(
        {"messages": [user("x" * 101)]},
        "messages.0.content",
        "string_above_max_length",
        env={"SEEKLESS_MAX_MESSAGE_CHARS": "100"},
    ),
    "max_tokens_over_the_cap": Violation({"max_tokens": 32_769}, "max_tokens", "invalid_value"),
    "prompt_past_the_context_window": Violation(
        {"messages": [user("x" * 4_000)], "max_tokens": 100},
        "messages",
        "context_length_exceeded",
        env={"SEEKLESS_MODELS": json.dumps({"deepseek-flash": {"upstream": "deepseek-flash", "context_tokens": 1000}})},
    ),
    "too_many_tools": Violation(
        {"tools": [TOOL, TOOL]}, "tools", "array_above_max_length", env={"SEEKLESS_MAX_TOOLS": "1"}, on_websocket=False
    ),
    "tools_too_large": Violation(
        {"tools": [{**TOOL, "description": "d" * 300}]},
        "tools",
        "tools_too_large",
        env={"SEEKLESS_MAX_TOOLS_BYTES": "200"},
        on_websocket=False,
    ),
    "too_many_stop_sequences": Violation({"stop": ["1", "2", "3", "4", "5"]}, "stop", "array_above_max_length"),
    "user_too_long": Violation({"user": "u" * 513}, "user", "string_above_max_length", on_websocket=False),
    "malformed_session_id": Violation({"session_id": "sess#1"}, "session_id", "", schema=True),
}
# What each entry point answers for a request its own parsing refuses (and where it puts the request).
SCHEMA_CODES = {
    "ws_chat": "invalid_request",
    "batch_line": "invalid_request",
    "queued_request": "invalid_request_message",
}
PARAM_PREFIX = {"queued_request": "request."}


@dataclass
class Stack:
    invoke: Invoke
    queues: dict[str, str]
    emulator: EmulatorServer

    def post(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        event = rest_event(
            method="POST",
            path=path,
            query=b"",
            headers=[(b"authorization", f"Bearer {DEV_KEY}".encode()), (b"content-type", b"application/json")],
            body=json.dumps(body).encode(),
            source_ip="203.0.113.10",
            stage="local",
        )
        return dict(self.invoke("RestApiFunction", event))

    def rest(self, path: str, body: dict[str, Any]) -> dict[str, Any]:
        response = self.post(path, body)
        assert response["statusCode"] == 400, response["body"]
        headers = {name.lower(): value for name, value in response["headers"].items()}
        assert headers["content-type"] == "application/json"  # an error, never a stream
        error = json.loads(response["body"])["error"]
        assert set(error) == {"message", "type", "param", "code"} and error["type"] == "invalid_request_error"
        return dict(error)

    def ws_chat(self, request: dict[str, Any]) -> dict[str, Any]:
        event = {**load_event("ws/chat"), "body": json.dumps({"action": "chat", "request_id": "r1", **request})}
        assert self.invoke("WsMessageFunction", event)["statusCode"] == 200
        (frame,) = posted(CONNECTION)
        assert (frame["type"], frame["request_id"], frame["seq"]) == ("error", "r1", 0)
        return frame

    def ingest(self, request: dict[str, Any]) -> dict[str, Any]:
        """A one-line batch file dropped in S3, through the ingest function; the batch it made."""
        key = f"batches/input/dev/limits-{uuid.uuid4().hex}.jsonl"
        line = {"custom_id": "line-1", "method": "POST", "url": "/v1/chat/completions", "body": request}
        boto3.client("s3", region_name="us-east-1").put_object(
            Bucket=BUCKET, Key=key, Body=json.dumps(line).encode() + b"\n"
        )
        event = load_event("s3/batch_put_encoded_key")
        event["Records"][0]["s3"]["object"]["key"] = quote_plus(key)
        (batch,) = self.invoke("BatchIngestFunction", event)["batches"]
        return dict(batch)

    def batch_line(self, request: dict[str, Any]) -> dict[str, Any]:
        batch = self.ingest(request)
        assert batch["status"] == "failed" and batch["request_counts"] == {"total": 1, "completed": 0, "failed": 1}
        s3 = boto3.client("s3", region_name="us-east-1")
        errors = s3.get_object(Bucket=BUCKET, Key=batch["error_file_id"])["Body"].read().decode().splitlines()
        (record,) = [json.loads(line) for line in errors]
        assert (record["custom_id"], record["line"], record["response"]) == ("line-1", 1, None)
        return dict(record["error"])

    def queued_request(self, request: dict[str, Any]) -> dict[str, Any]:
        replies = {"queue_url": self.queues["RepliesQueue"]}
        message = _request(replies, request=request)
        assert self.invoke("RequestsFunction", {"Records": [_record(message, "limits-1")]}) == {"batchItemFailures": []}
        (reply,) = _messages(self.queues["RepliesQueue"])
        assert (reply["object"], reply["status"]) == ("job.reply", "failed")
        assert set(reply["error"]) == {"message", "type", "param", "code"}
        return dict(reply["error"])

    def send(self, entry_point: str, request: dict[str, Any]) -> dict[str, Any]:
        if entry_point == "rest_chat":
            return self.rest("/v1/chat/completions", request)
        if entry_point == "rest_chat_stream":
            return self.rest("/v1/chat/completions", {**request, "stream": True})
        if entry_point == "rest_jobs":
            return self.rest("/v1/jobs", request)
        return dict(getattr(self, entry_point)(request))

    def jobs_queued(self) -> int:
        sqs = boto3.client("sqs", region_name="us-east-1")
        names = ["ApproximateNumberOfMessages", "ApproximateNumberOfMessagesNotVisible"]
        counts = sqs.get_queue_attributes(QueueUrl=self.queues["JobsQueue"], AttributeNames=names)["Attributes"]
        return sum(int(counts[name]) for name in names)


@pytest.fixture
def stack(invoke: Invoke, queues: dict[str, str], ws_env: None, emulator: EmulatorServer) -> Stack:
    return Stack(invoke, queues, emulator)


def valid_request(**fields: Any) -> dict[str, Any]:
    return {"model": "deepseek-flash", "messages": [user(f"limits {uuid.uuid4().hex}")], **fields}


def expected(violation: Violation, entry_point: str) -> tuple[str | None, str]:
    """(param, code) as the entry point reports them. A batch line's error record is OpenAI's
    {code, message}, with no param field: its message names the parameter."""
    if violation.schema:
        param = PARAM_PREFIX.get(entry_point, "") + violation.param
        code = SCHEMA_CODES.get(entry_point, "invalid_request")
    else:
        param, code = violation.param, violation.code
    return (None if entry_point == "batch_line" else param), code


@pytest.mark.parametrize("name", list(VIOLATIONS))
def test_every_entry_point_refuses_it_before_any_upstream_call(
    name: str, stack: Stack, monkeypatch: pytest.MonkeyPatch
) -> None:
    violation = VIOLATIONS[name]
    for variable, value in violation.env.items():
        monkeypatch.setenv(variable, value)  # read when each function's environment starts, below
    entry_points = [e for e in ENTRY_POINTS if violation.on_websocket or e != "ws_chat"]

    answers = {entry: stack.send(entry, valid_request(**violation.fields)) for entry in entry_points}

    assert {entry: (error.get("param"), error["code"]) for entry, error in answers.items()} == {
        entry: expected(violation, entry) for entry in entry_points
    }
    for entry, error in answers.items():
        assert violation.param in error["message"], (entry, error["message"])
    assert stack.emulator.stats()["calls"] == 0
    assert stack.jobs_queued() == 0


def test_within_the_limits_the_same_paths_reach_upstream_and_the_jobs_queue(stack: Stack) -> None:
    """The sweep's control: on the same stack, a request at a limit is answered by the emulator (its
    counter moves) and a job, a batch line and a queued request each put a job on the queue."""
    at_limits = valid_request(stop=["1", "2", "3", "4"], user="u" * 512)

    assert stack.post("/v1/chat/completions", at_limits)["statusCode"] == 200
    assert stack.emulator.stats()["calls"] == 1
    assert stack.post("/v1/jobs", at_limits)["statusCode"] == 202
    assert stack.jobs_queued() == 1

    replies = {"queue_url": stack.queues["RepliesQueue"]}
    message = _record(_request(replies, request=at_limits), "within-limits")
    assert stack.invoke("RequestsFunction", {"Records": [message]}) == {"batchItemFailures": []}
    assert stack.jobs_queued() == 2
    assert stack.ingest(at_limits)["status"] == "in_progress"
    assert stack.jobs_queued() == 3
