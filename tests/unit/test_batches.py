"""Batch files, pure parts: reading lines from a byte stream, checking each line, naming the batch."""

from __future__ import annotations

import json
from typing import Any

import pytest
from pydantic import ValidationError

from seekless.batches import BatchLine, BatchSource, LineError, LineValidator, read_lines, sources_from_s3_event
from seekless.chat import validation_only
from seekless.config import Settings
from seekless.contracts import GenerationJob, ReplyTo, RequestMessage
from seekless.queued import ReplyPolicy, request_job_id
from seekless_local.events import load_event


def test_lines_split_across_chunks_keep_their_numbers_and_lose_crlf() -> None:
    chunks = [b'{"a"', b":1}\r\n{", b'"b":2}\n', b"\n", b"last"]
    assert list(read_lines(chunks, max_line_bytes=100)) == [
        (1, b'{"a":1}'),
        (2, b'{"b":2}'),
        (3, b""),
        (4, b"last"),
    ]


def test_a_line_over_the_limit_is_reported_and_its_bytes_skipped() -> None:
    chunks = [b"ok\n", b"x" * 50, b"x" * 50 + b"\nafter\n"]
    assert list(read_lines(chunks, max_line_bytes=60)) == [(1, b"ok"), (2, None), (3, b"after")]


def test_a_trailing_newline_makes_no_extra_line() -> None:
    assert list(read_lines([b"a\nb\n"], max_line_bytes=10)) == [(1, b"a"), (2, b"b")]


def _line(custom_id: str, **body: Any) -> bytes:
    request = {"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}], **body}
    return json.dumps(
        {"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": request}
    ).encode()


@pytest.fixture
def validator() -> LineValidator:
    return LineValidator(validation_only(Settings(max_tokens_cap=1_000, default_max_tokens=500)), max_lines=2)


@pytest.mark.parametrize(
    ("raw", "code"),
    [
        (None, "line_too_large"),
        (b"   ", "empty_line"),
        (b"{nope", "invalid_json"),
        (b"42", "invalid_line"),
        (json.dumps({"custom_id": "", "method": "POST"}).encode(), "invalid_custom_id"),
        (
            json.dumps({"custom_id": "a", "method": "PUT", "url": "/v1/chat/completions", "body": {}}).encode(),
            "invalid_method",
        ),
        (
            json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/completions", "body": {}}).encode(),
            "invalid_url",
        ),
        (json.dumps({"custom_id": "a", "method": "POST", "url": "/v1/chat/completions"}).encode(), "missing_body"),
        (
            json.dumps(
                {"custom_id": "a", "method": "POST", "url": "/v1/chat/completions", "body": {}, "x": 1}
            ).encode(),
            "invalid_line",
        ),
        (_line("a", messages=[]), "invalid_request"),
        (_line("a", stream=True), "invalid_request"),
        (_line("a", model="gpt-4"), "model_not_found"),
        (_line("a", max_tokens=5_000), "invalid_value"),
    ],
)
def test_each_kind_of_bad_line_gets_its_own_code(validator: LineValidator, raw: bytes | None, code: str) -> None:
    outcome = validator.check(7, raw, max_line_bytes=100)
    assert isinstance(outcome, LineError) and outcome.code == code and outcome.number == 7
    assert outcome.to_record()["line"] == 7 and outcome.to_record()["error"]["code"] == code


def test_a_line_nested_deeper_than_json_parses_is_one_invalid_line(validator: LineValidator) -> None:
    outcome = validator.check(3, b"[" * 5000 + b"]" * 5000, max_line_bytes=1_000_000)
    assert isinstance(outcome, LineError) and outcome.code == "invalid_json"


def test_duplicates_and_lines_past_the_cap_are_refused(validator: LineValidator) -> None:
    first = validator.check(1, _line("a"), max_line_bytes=1_000)
    assert isinstance(first, BatchLine) and first.custom_id == "a"
    again = validator.check(2, _line("a"), max_line_bytes=1_000)
    assert isinstance(again, LineError) and again.code == "duplicate_custom_id" and again.custom_id == "a"
    assert isinstance(validator.check(3, _line("b"), max_line_bytes=1_000), BatchLine)
    over = validator.check(4, _line("c"), max_line_bytes=1_000)
    assert isinstance(over, LineError) and over.code == "batch_too_large"


def test_s3_event_keys_are_url_decoded() -> None:
    [source] = sources_from_s3_event(load_event("s3/batch_put_encoded_key"))
    assert source.key == "batches/input/dev/risk review (2026-11).jsonl"
    assert source.tenant_id == "dev" and source.tag == "0065A1B2C3D4E5F602"


def test_a_reserved_name_keeps_its_id_and_any_other_name_gets_a_stable_one() -> None:
    reserved = BatchSource(bucket="b", key="batches/input/t/batch_0123456789abcdef01234567.jsonl", tag="1")
    assert reserved.batch_id() == "batch_0123456789abcdef01234567"
    named = BatchSource(bucket="b", key="batches/input/t/nightly.jsonl", tag="1")
    assert named.batch_id() == named.batch_id() != BatchSource("b", named.key, "2").batch_id()
    assert BatchSource(bucket="b", key="batches/input/nightly.jsonl", tag="1").tenant_id is None


def test_reply_to_names_exactly_one_destination() -> None:
    with pytest.raises(ValidationError):
        ReplyTo.model_validate({})
    with pytest.raises(ValidationError):
        ReplyTo.model_validate({"queue_url": "https://q", "s3_prefix": "s3://bucket/x/"})
    policy = ReplyPolicy(["https://sqs.example/1/replies"], ["s3://bucket/replies/"])
    assert policy.allows(ReplyTo(s3_prefix="s3://bucket/replies/team/"))
    assert not policy.allows(ReplyTo(s3_prefix="s3://bucket/other/"))
    assert not policy.allows(ReplyTo(queue_url="https://sqs.example/1/elsewhere"))


def test_a_queued_request_is_idempotent_on_its_message_id() -> None:
    message = RequestMessage.model_validate(
        {
            "tenant_id": "t",
            "request": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
            "reply_to": {"s3_prefix": "s3://bucket/replies/"},
        }
    )
    assert request_job_id(message, "m-1") == request_job_id(message, "m-1") != request_job_id(message, "m-2")
    assert request_job_id(message.model_copy(update={"job_id": "mine"}), "m-1") == "mine"


def test_a_v1_job_message_still_parses_as_the_v2_contract() -> None:
    body = load_event("sqs/job_message")["Records"][0]["body"]
    job = GenerationJob.model_validate_json(body)
    assert job.version == 1 and job.batch_id is None and job.reply_to is None


def test_a_tenant_segment_that_could_forge_a_key_names_no_tenant() -> None:
    assert BatchSource(bucket="b", key="batches/input/acme-1/x.jsonl", tag="1").tenant_id == "acme-1"
    assert BatchSource(bucket="b", key="batches/input/a#B#x/x.jsonl", tag="1").tenant_id is None
    with pytest.raises(ValidationError):
        RequestMessage.model_validate(
            {
                "tenant_id": "a#J#b",
                "request": {"model": "m", "messages": [{"role": "user", "content": "x"}]},
                "reply_to": {"s3_prefix": "s3://bucket/replies/"},
            }
        )
