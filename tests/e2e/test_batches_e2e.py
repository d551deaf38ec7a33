"""Batch files and queued requests through the running local stack: `seekless batch submit --wait`
uploads through a presigned URL, moto's S3 notifies the uploads queue, the local event source delivers
it to BatchIngestFunction, the worker runs every line, and the finalizer writes the results files the
CLI downloads. Every wait has a deadline."""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any

import boto3
import httpx
import pytest

from seekless.adapters.dynamodb import DynamoKeyStore
from seekless.auth import hash_key
from seekless_local import client_cli
from seekless_local.stack import LocalStack
from tests.waiting import wait_for

GOOD = 4
LINES = 100


def line(custom_id: str, text: str = "hello", **body: Any) -> str:
    request = {"model": "deepseek-flash", "messages": [{"role": "user", "content": text}], "max_tokens": 32, **body}
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": "/v1/chat/completions", "body": request})


def batch_file(folder: Path) -> Path:
    lines = [line(f"ok-{i}", f"question {i}") for i in range(GOOD)]
    lines += ["{not json", line("ok-0"), line("bad-model", model="gpt-9"), line("streamed", stream=True)]
    path = folder / "questions.jsonl"
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def options(stack: LocalStack, api_key: str | None = None) -> list[str]:
    return ["--url", stack.rest_url + "/v1", "--ws-url", stack.ws_url, "--api-key", api_key or stack.dev_api_key]


def jsonl(path: Path) -> list[dict[str, Any]]:
    return [json.loads(text) for text in path.read_text(encoding="utf-8").splitlines()]


def test_submit_wait_downloads_results_and_errors_with_every_line_in_one_of_them(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    source = batch_file(tmp_path)
    code = client_cli.main(["batch", "submit", str(source), "--wait", "--poll", "0.3", "--json", *options(stack)])
    out, err = capsys.readouterr()
    assert code == 0, err
    report = json.loads(out)
    batch_id = report["id"]
    assert report["status"] == "completed" and set(report["downloads"]) == {"output", "errors"}
    outputs = sorted(tmp_path.glob(f"questions.{batch_id}.output.jsonl"))
    errors = sorted(tmp_path.glob(f"questions.{batch_id}.errors.jsonl"))
    assert outputs and errors, sorted(p.name for p in tmp_path.iterdir())
    answered, refused = jsonl(outputs[0]), jsonl(errors[0])
    assert sorted(r["custom_id"] for r in answered) == [f"ok-{i}" for i in range(GOOD)]
    assert all(r["response"]["body"]["choices"][0]["message"]["content"] for r in answered)
    assert sorted(r["line"] for r in refused) == [5, 6, 7, 8]  # each bad line once, by number
    assert {r["error"]["code"] for r in refused} == {
        "invalid_json",
        "duplicate_custom_id",
        "model_not_found",
        "invalid_request",
    }

    # The other batch commands see the same batch.
    assert client_cli.main(["batch", "status", batch_id, "--json", *options(stack)]) == 0
    assert json.loads(capsys.readouterr().out)["request_counts"] == {"total": GOOD + 4, "completed": GOOD, "failed": 4}
    assert client_cli.main(["batch", "list", "--json", *options(stack)]) == 0
    assert batch_id in {b["id"] for b in json.loads(capsys.readouterr().out)["data"]}
    again = tmp_path / "again"
    assert client_cli.main(["batch", "download", batch_id, "--out", str(again), *options(stack)]) == 0
    capsys.readouterr()
    assert (again / f"{batch_id}.output.jsonl").read_bytes() == outputs[0].read_bytes()
    assert (again / f"{batch_id}.errors.jsonl").read_bytes() == errors[0].read_bytes()


def test_a_file_dropped_into_the_bucket_runs_and_shows_in_the_listing(stack: LocalStack, tmp_path: Path) -> None:
    s3 = boto3.client("s3", endpoint_url=stack.moto_url, region_name="us-east-1")
    key = f"batches/input/dev/dropped {uuid.uuid4().hex}.jsonl"  # a space: S3 events URL-encode it
    s3.put_object(Bucket=stack.buckets["JobsBucket"], Key=key, Body="\n".join([line("a"), line("b")]).encode())
    with httpx.Client(base_url=stack.rest_url, headers={"Authorization": f"Bearer {stack.dev_api_key}"}) as http:

        def ended() -> dict[str, Any] | None:
            listing = http.get("/v1/batches", params={"limit": 100}).json()["data"]
            mine = [b for b in listing if b["input_file_id"] == key]
            return mine[0] if mine and mine[0]["status"] == "completed" else None

        batch = wait_for(ended, timeout=60, what="the dropped batch to complete")
        assert batch["request_counts"] == {"total": 2, "completed": 2, "failed": 0}
        output = httpx.get(batch["output_url"]).text.splitlines()
        assert sorted(json.loads(r)["custom_id"] for r in output) == ["a", "b"]


def test_another_tenant_cannot_see_or_cancel_a_batch(stack: LocalStack, tmp_path: Path) -> None:
    other = "sk-seekless-e2e-other-" + uuid.uuid4().hex
    keys = DynamoKeyStore(stack.tables["ApiKeysTable"], client=boto3.client("dynamodb", endpoint_url=stack.moto_url))
    keys.put(hash_key(other), tenant_id="other", key_id="other")
    with httpx.Client(base_url=stack.rest_url + "/v1") as http:
        upload = http.post("/batches/uploads", headers={"Authorization": f"Bearer {stack.dev_api_key}"}).json()
        for method, path in (("GET", f"/batches/{upload['id']}"), ("POST", f"/batches/{upload['id']}/cancel")):
            answer = http.request(method, path, headers={"Authorization": f"Bearer {other}"})
            assert answer.status_code == 404 and answer.json()["error"]["code"] == "batch_not_found"
        theirs = http.get("/batches", headers={"Authorization": f"Bearer {other}"}).json()["data"]
        assert upload["id"] not in {b["id"] for b in theirs}


def test_a_request_on_the_requests_queue_is_answered_on_the_replies_queue(stack: LocalStack) -> None:
    sqs = boto3.client("sqs", endpoint_url=stack.moto_url, region_name="us-east-1")
    replies = stack.queues["RepliesQueue"]
    message = {
        "tenant_id": "dev",
        "request": {"model": "deepseek-flash", "messages": [{"role": "user", "content": "ping"}], "max_tokens": 16},
        "reply_to": {"queue_url": replies},
    }
    sent = sqs.send_message(QueueUrl=stack.queues["RequestsQueue"], MessageBody=json.dumps(message))

    def reply() -> list[dict[str, Any]]:
        got = sqs.receive_message(QueueUrl=replies, WaitTimeSeconds=1, MessageAttributeNames=["All"])
        return [json.loads(m["Body"]) for m in got.get("Messages", [])]

    (answer,) = wait_for(reply, timeout=60, what="the reply")
    assert answer["status"] == "succeeded" and answer["result"]["choices"][0]["message"]["content"]
    assert answer["id"].startswith("req_") and sent["MessageId"]


def test_cancel_from_the_cli_ends_a_batch_cancelled(
    stack: LocalStack, tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    # More lines than the worker runs at once, each slow: most are still queued when the cancel lands.
    stack.emulator.configure(ttft_ms=2_000)
    source = tmp_path / "slow.jsonl"
    source.write_text("\n".join(line(f"s{i}") for i in range(LINES)) + "\n", encoding="utf-8")
    assert client_cli.main(["batch", "submit", str(source), "--json", *options(stack)]) == 0
    submitted = json.loads(capsys.readouterr().out)
    batch_id = submitted["id"]
    with httpx.Client(
        base_url=stack.rest_url + "/v1", headers={"Authorization": f"Bearer {stack.dev_api_key}"}
    ) as http:
        wait_for(lambda: http.get(f"/batches/{batch_id}").json()["status"] == "in_progress", timeout=30, what="start")
        assert client_cli.main(["batch", "cancel", batch_id, "--json", *options(stack)]) == 0
        capsys.readouterr()
        batch = wait_for(
            lambda: (b := http.get(f"/batches/{batch_id}").json())["status"] == "cancelled" and b,
            timeout=90,
            what="the batch to end cancelled",
        )
    counts = batch["request_counts"]
    assert counts["total"] == LINES and counts["completed"] < LINES
    errors = httpx.get(batch["error_url"]).text.splitlines()
    assert errors and len(errors) + counts["completed"] == LINES
    assert {json.loads(r)["error"]["code"] for r in errors} <= {"batch_cancelled"}
