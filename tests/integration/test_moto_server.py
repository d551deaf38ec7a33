"""The local moto server's SQS sends (``seekless_local.moto_server.patch_moto_sends``): a send never
scans the queue's messages, however deep the queue, and GetQueueAttributes still counts them exactly.

The mechanism is checked, not the time it takes (performance is measured by bench/batch_split.py): the
queue's message list is swapped for one that counts how often it is walked through. Stock moto walks it
on every send (each approximate count is a scan), so a send costs time in proportion to the depth.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from typing import Any

import boto3
import pytest
from moto import mock_aws
from moto.sqs import models

from seekless_local.moto_server import moto_sends_patched, patch_moto_sends
from seekless_local.stack import MOTO_ACCOUNT_ID, MotoServer
from seekless_local.template import REPO_ROOT

REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": REGION}
DEPTH = 50  # messages queued before the watched send


class Walks(list[Any]):
    """A queue's message list that counts how many times it is walked through (a scan)."""

    walks = 0

    def __iter__(self) -> Iterator[Any]:
        self.walks += 1
        return super().__iter__()


def batch(start: int, *, delay: int = 0) -> list[dict[str, Any]]:
    return [{"Id": str(i), "MessageBody": f"message {start + i}", "DelaySeconds": delay} for i in range(10)]


def scans_while_sending(depth: int = DEPTH) -> dict[str, int]:
    """Under mock_aws in this process: fill a queue to ``depth``, then count the scans of its messages
    during one SendMessageBatch of 10 and during one GetQueueAttributes (All)."""
    with mock_aws():
        sqs = boto3.client("sqs", **CREDENTIALS)
        url = sqs.create_queue(QueueName="depth")["QueueUrl"]
        for start in range(0, depth, 10):
            sqs.send_message_batch(QueueUrl=url, Entries=batch(start))
        queue = models.sqs_backends[MOTO_ACCOUNT_ID][REGION].get_queue("depth")
        watched = queue._messages = Walks(queue._messages)
        sqs.send_message_batch(QueueUrl=url, Entries=batch(depth))
        send = watched.walks
        attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["All"])["Attributes"]
        assert queue._messages is watched, "moto replaced the message list: the count below means nothing"
        return {
            "send": send,
            "get": watched.walks - send,
            "queued": int(attributes["ApproximateNumberOfMessages"]),
        }


def counts(sqs: Any, url: str) -> tuple[int, int, int]:
    """(visible, in flight, delayed), as GetQueueAttributes reports them."""
    names = [
        "ApproximateNumberOfMessages",
        "ApproximateNumberOfMessagesNotVisible",
        "ApproximateNumberOfMessagesDelayed",
    ]
    attributes = sqs.get_queue_attributes(QueueUrl=url, AttributeNames=names)["Attributes"]
    visible, in_flight, delayed = (int(attributes[name]) for name in names)
    return visible, in_flight, delayed


def sends_and_counts(sqs: Any, queue_name: str) -> None:
    """Sends, a delayed batch, a receive and a delete, with the counts exact after each."""
    url = sqs.create_queue(QueueName=queue_name)["QueueUrl"]
    assert counts(sqs, url) == (0, 0, 0)
    for start in range(0, 30, 10):
        assert not sqs.send_message_batch(QueueUrl=url, Entries=batch(start)).get("Failed")
    sqs.send_message(QueueUrl=url, MessageBody="one more")
    assert counts(sqs, url) == (31, 0, 0)
    assert not sqs.send_message_batch(QueueUrl=url, Entries=batch(100, delay=600)).get("Failed")
    assert counts(sqs, url) == (31, 0, 10)
    received = sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=4, VisibilityTimeout=600)["Messages"]
    assert len(received) == 4
    assert counts(sqs, url) == (27, 4, 10)
    sqs.delete_message(QueueUrl=url, ReceiptHandle=received[0]["ReceiptHandle"])
    assert counts(sqs, url) == (27, 3, 10)


def test_patch_is_idempotent_and_sends_scan_nothing() -> None:
    patch_moto_sends()
    patched = (models.SQSBackend.send_message, models.SQSBackend.send_message_batch, models.Queue.__dict__.copy())
    patch_moto_sends()  # a second call (another test, another import) changes nothing
    assert moto_sends_patched()
    assert (models.SQSBackend.send_message, models.SQSBackend.send_message_batch) == patched[:2]
    assert all(models.Queue.__dict__[name] is value for name, value in patched[2].items())

    scans = scans_while_sending()
    assert scans["send"] == 0  # nothing in proportion to the depth
    assert scans["get"] > 0  # the counts are still computed when asked for
    assert scans["queued"] == DEPTH + 10


def test_counts_stay_exact_in_process(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("AWS_ENDPOINT_URL", raising=False)
    patch_moto_sends()
    with mock_aws():
        sends_and_counts(boto3.client("sqs", **CREDENTIALS), "counted")


# main() patches by default, --stock-sqs leaves moto alone: each in a fresh process, since the patch is
# for the whole process and has no undo. run_simple is stubbed so that main() returns instead of serving.
PROBE = """
import json, sys
from seekless_local import moto_server
moto_server.run_simple = lambda *args, **kwargs: None
moto_server.main(["127.0.0.1", "0", *sys.argv[1:]])
from tests.integration.test_moto_server import scans_while_sending
print(json.dumps({"patched": moto_server.moto_sends_patched(), **scans_while_sending()}))
"""


@pytest.mark.parametrize("flags", [[], ["--stock-sqs"]], ids=["default", "stock-sqs"])
def test_main_patches_unless_stock_sqs(flags: list[str]) -> None:
    env = {name: value for name, value in os.environ.items() if not name.startswith("AWS_")}
    done = subprocess.run(
        [sys.executable, "-c", PROBE, *flags],
        cwd=REPO_ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    probe = json.loads(done.stdout.strip().splitlines()[-1])
    assert probe["queued"] == DEPTH + 10
    if flags:
        assert not probe["patched"]
        # Stock moto walks the whole queue on every send: if this fails, moto stopped doing that, and
        # patch_moto_sends may be dropped.
        assert probe["send"] > 0
    else:
        assert probe["patched"]
        assert probe["send"] == 0


@pytest.mark.parametrize("stock_sqs", [False, True], ids=["local", "stock-sqs"])
def test_local_server_counts_exactly(stock_sqs: bool) -> None:
    with MotoServer(stock_sqs=stock_sqs) as server:
        sends_and_counts(boto3.client("sqs", endpoint_url=server.url, **CREDENTIALS), "counted")
