"""Splitting a batch file into jobs: the enqueue rate, and memory that stays flat as the file grows.

Run alone with ``python -m bench.batch_split [--quick] [--profile N]``. What runs, as the integration
tests run it (tests/integration/test_batches.py):

- moto as a child process (``seekless_local.stack.MotoServer`` running ``seekless_local.moto_server``,
  the local stack's own server: one API call at a time, and SQS sends that cost the same at any queue
  depth, ``patch_moto_sends``; stock moto makes each SendMessage scan the whole queue, which this script
  also measures, on a ``MotoServer(stock_sqs=True)``), with the jobs bucket, and for every
  measured run a fresh set of the template's tables and a fresh jobs queue (``create_tables``,
  ``create_queues``, ``create_buckets`` from template.yaml), so every run writes into empty ones;
- a JSONL file of N valid lines in OpenAI's Batch format (distinct custom_ids and prompts), put under
  ``batches/input/<tenant>/`` in the bucket before anything is timed;
- ``BatchService.ingest`` with the real adapters (``DynamoBatchStore``, ``DynamoJobStore``,
  ``S3BatchFiles``, ``SqsJobQueue``) and the production limits (``Settings()``: 50,000 lines, 1 MB a
  line), each run in a fresh child process (``python -m bench.batch_split --child ...``), so that its
  peak resident set is its own.

Each child first imports the modules, builds the boto3 clients and the adapters and makes one cheap
call per client (a warm-up: endpoint rules and parsers load on the first call); then it does its one
timed thing:

- ``imports``: nothing more (the memory baseline: what the ingest's process holds before it starts);
- ``ingest``: ``ingest(source)`` once, from the call to its return: the S3 read, every line checked as
  the chat route checks a request, the job items written in BatchWriteItem pages of 25, the
  GenerationJob messages sent in SendMessageBatch calls of 10, a checkpoint every 100 lines, the
  invalid-lines file written and the batch marked ingested;
- ``raw`` (the direct baseline): the same job items and the same message bodies, built outside the
  timing from the same file, written with raw boto3 ``batch_write_item`` (25 a call) and
  ``send_message_batch`` (10 a call), 100 lines at a time as the ingest does; only the calls are timed.

Peak memory is the child's ``VmHWM`` (``/proc/self/status``), not ``ru_maxrss``, which Linux makes at
least the parent's peak in a child started by vfork and exec. Every boto3 call of a child goes through
a wrapper that counts and times it by operation; moto's CPU over each run is read from ``/proc``.
"""

from __future__ import annotations

import argparse
import cProfile
import io
import json
import os
import pstats
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from bench.common import LOCAL_AWS, REPO_ROOT, Row, Section, X, ms, peak_rss_mib, print_sections, ratio

CHILD = "--child"
TENANT = "bench"
BUCKET = "seekless-jobs"
REGION = "us-east-1"
CREDENTIALS = {"aws_access_key_id": "testing", "aws_secret_access_key": "testing", "region_name": REGION}
CHUNK = 100  # seekless.batches.INGEST_CHUNK: lines written and sent together
TARGET_RATE = 0.5  # issue 5: ingest at least half the rate of the raw calls
TARGET_RSS = 1.2  # issue 5: peak RSS of the large file at most 1.2x that of the small one
CHILD_TIMEOUT = 900.0
DEPTH = 500  # messages queued when a moto server's send cost is measured
DEPTH_CALLS = 5
GE = "\N{GREATER-THAN OR EQUAL TO}"
LE = "\N{LESS-THAN OR EQUAL TO}"


@dataclass(frozen=True)
class Plan:
    large: int
    small: int


FULL = Plan(large=50_000, small=5_000)
QUICK = Plan(large=5_000, small=1_000)


# -- the file --------------------------------------------------------------------------------------

WORDS = [
    "tide",
    "moon",
    "harbour",
    "lantern",
    "orchard",
    "granite",
    "meadow",
    "ember",
    "willow",
    "quarry",
    "falcon",
    "cedar",
]


def batch_line(n: int) -> str:
    """One valid line in OpenAI's Batch format, as tests/integration/test_batches.py's ``line()``
    builds them, with a distinct custom_id and prompt (about 250 bytes)."""
    words = " ".join(WORDS[(n * 7 + i) % len(WORDS)] for i in range(12))
    request = {
        "model": "deepseek-flash",
        "messages": [{"role": "user", "content": f"Item {n}: write one sentence about {words}."}],
        "max_tokens": 200,
        "temperature": 0.7,
    }
    return json.dumps({"custom_id": f"req-{n:06d}", "method": "POST", "url": "/v1/chat/completions", "body": request})


def write_file(path: Path, lines: int) -> int:
    """Write ``lines`` lines to ``path`` one at a time; the file's size in bytes."""
    with path.open("w", encoding="utf-8") as sink:
        for n in range(1, lines + 1):
            sink.write(batch_line(n) + "\n")
    return path.stat().st_size


# -- moto ------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Depth:
    """SendMessageBatch (10 messages) on a moto server, empty queue and ``depth`` queued."""

    empty_ms: float
    deep_ms: float
    depth: int


def send_cost(*, stock_sqs: bool, depth: int = DEPTH, calls: int = DEPTH_CALLS) -> Depth:
    """On a fresh local moto server: ``stock_sqs`` as moto has it, else as the local stack runs it."""
    import boto3

    from seekless_local.stack import MotoServer

    body = batch_line(0)
    entries = [{"Id": str(i), "MessageBody": body} for i in range(10)]
    with MotoServer(stock_sqs=stock_sqs) as moto:
        sqs = boto3.client("sqs", endpoint_url=moto.url, **CREDENTIALS)
        url = sqs.create_queue(QueueName=f"depth-{uuid.uuid4().hex[:8]}")["QueueUrl"]

        def timed() -> float:
            started = time.perf_counter()
            for _ in range(calls):
                sqs.send_message_batch(QueueUrl=url, Entries=entries)
            return (time.perf_counter() - started) / calls * 1000

        sqs.send_message_batch(QueueUrl=url, Entries=entries)  # warm-up
        sqs.purge_queue(QueueUrl=url)
        empty = timed()  # at depths 0 to 10 * (calls - 1)
        while (
            int(
                sqs.get_queue_attributes(QueueUrl=url, AttributeNames=["ApproximateNumberOfMessages"])["Attributes"][
                    "ApproximateNumberOfMessages"
                ]
            )
            < depth
        ):
            sqs.send_message_batch(QueueUrl=url, Entries=entries)
        return Depth(empty_ms=empty, deep_ms=timed(), depth=depth)


# -- the child process -----------------------------------------------------------------------------


class Counted:
    """A boto3 client whose public method calls are counted and timed by name (the whole boto3 call:
    serialization, the HTTP round trip to moto, parsing)."""

    def __init__(self, client: Any, calls: dict[str, list[float]]) -> None:
        self._client = client
        self._calls = calls

    def __getattr__(self, name: str) -> Any:
        attribute = getattr(self._client, name)
        if name.startswith("_") or not callable(attribute):
            return attribute

        def timed(*args: Any, **kwargs: Any) -> Any:
            started = time.perf_counter()
            try:
                return attribute(*args, **kwargs)
            finally:
                entry = self._calls.setdefault(name, [0, 0.0])
                entry[0] += 1
                entry[1] += time.perf_counter() - started

        return timed


def _cpu() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


def child(config: dict[str, Any]) -> dict[str, Any]:
    """One measured run (``config["mode"]``: imports, ingest or raw) in this fresh process."""
    import boto3

    from seekless.adapters.batches import DynamoBatchStore, S3BatchFiles
    from seekless.adapters.jobs import DynamoJobStore
    from seekless.adapters.sqs import SqsJobQueue, _attributes
    from seekless.batches import BatchLine, BatchService, BatchSource
    from seekless.chat import validation_only
    from seekless.config import Settings
    from seekless.contracts import ChatCompletionRequest

    calls: dict[str, list[float]] = {}
    endpoint = {"endpoint_url": config["moto_url"], "region_name": REGION}
    dynamodb = Counted(boto3.client("dynamodb", **endpoint), calls)
    sqs = Counted(boto3.client("sqs", **endpoint), calls)
    s3 = Counted(boto3.client("s3", **endpoint), calls)
    settings = Settings()
    jobs = DynamoJobStore(config["jobs_table"], bucket=BUCKET, client=dynamodb, s3_client=s3)
    batches = DynamoBatchStore(config["batches_table"], jobs=jobs, client=dynamodb)
    service = BatchService(
        batches=batches,
        jobs=jobs,
        queue=SqsJobQueue(config["queue_url"], client=sqs),
        files=S3BatchFiles(BUCKET, client=s3),
        chat=validation_only(settings),
        max_lines=settings.batch_max_lines,
        max_line_bytes=settings.batch_max_line_bytes,
    )
    # Warm-up: the first call of each client loads its endpoint rules and parsers.
    dynamodb.describe_table(TableName=config["jobs_table"])
    sqs.get_queue_attributes(QueueUrl=config["queue_url"], AttributeNames=["QueueArn"])
    s3.head_bucket(Bucket=BUCKET)
    calls.clear()
    prelude_rss = peak_rss_mib()
    result: dict[str, Any] = {"mode": config["mode"], "lines": config["lines"], "prelude_rss_mib": prelude_rss}

    if config["mode"] == "ingest":
        source = BatchSource(bucket=BUCKET, key=config["key"], tag=config["tag"])
        profiler = cProfile.Profile() if config.get("profile") else None
        cpu, started = _cpu(), time.perf_counter()
        if profiler is not None:
            profiler.enable()
        batch = service.ingest(source)
        if profiler is not None:
            profiler.disable()
        result["seconds"] = time.perf_counter() - started
        result["cpu"] = _cpu() - cpu
        assert batch is not None
        result.update(jobs=batch.jobs, invalid=batch.invalid, status=str(batch.status))
        if profiler is not None:
            out = io.StringIO()
            pstats.Stats(profiler, stream=out).sort_stats("tottime").print_stats(config["profile"])
            result["profile"] = out.getvalue()
    elif config["mode"] == "raw":
        # The same items and message bodies the ingest makes, built outside the timing (from the
        # adapters' own builders, so every byte matches), then only the calls are timed.
        batch_id = "batch_" + uuid.uuid4().hex[:24]
        cpu_spent = 0.0
        pending: list[BatchLine] = []

        def flush(lines: list[BatchLine]) -> float:
            items = [jobs._batch_job_item(TENANT, batch_id, "s3", line, time.time()) for line in lines]
            messages = [jobs._job(item).to_generation_job() for item in items]
            entries = [
                {
                    "Id": str(i),
                    "MessageBody": job.model_dump_json(exclude_none=True),
                    "MessageAttributes": _attributes(job),
                }
                for i, job in enumerate(messages)
            ]
            cpu = _cpu()
            for start in range(0, len(items), 25):
                page = [{"PutRequest": {"Item": item}} for item in items[start : start + 25]]
                answer = dynamodb.batch_write_item(RequestItems={config["jobs_table"]: page})
                if answer.get("UnprocessedItems"):
                    raise RuntimeError("moto left items unprocessed")
            for start in range(0, len(entries), 10):
                answer = sqs.send_message_batch(QueueUrl=config["queue_url"], Entries=entries[start : start + 10])
                if answer.get("Failed"):
                    raise RuntimeError("moto refused messages")
            return _cpu() - cpu

        with open(config["path"], encoding="utf-8") as lines:
            for number, text in enumerate(lines, start=1):
                data = json.loads(text)
                request = ChatCompletionRequest.model_validate(data["body"])
                pending.append(BatchLine(number=number, custom_id=data["custom_id"], request=request))
                if len(pending) >= CHUNK:
                    cpu_spent += flush(pending)
                    pending = []
        if pending:
            cpu_spent += flush(pending)
        result["seconds"] = sum(seconds for _, seconds in calls.values())
        result["cpu"] = cpu_spent
        result.update(jobs=config["lines"], invalid=0, status="-")
    elif config["mode"] != "imports":
        raise ValueError(f"unknown mode {config['mode']!r}")
    result["peak_rss_mib"] = peak_rss_mib()
    result["calls"] = calls
    return result


# -- the parent ------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Run:
    mode: str
    lines: int
    seconds: float  # ingest: the call, end to end; raw: the calls alone
    cpu: float  # the child's CPU over the same span (raw: over the calls)
    moto_cpu: float | None  # moto's CPU over the child's whole life
    peak_rss_mib: float
    prelude_rss_mib: float
    calls: dict[str, tuple[int, float]]
    jobs: int
    invalid: int
    status: str
    queued: int  # messages on the run's queue afterwards
    profile: str = ""

    @property
    def rate(self) -> float:
        return self.lines / self.seconds

    def call_seconds(self, *names: str) -> float:
        return sum(self.calls[name][1] for name in names if name in self.calls)

    def call_count(self, *names: str) -> int:
        return sum(self.calls[name][0] for name in names if name in self.calls)


@dataclass
class Results:
    plan: Plan
    depth: Depth  # stock moto's sends
    local_depth: Depth  # the local stack's (seekless_local.moto_server's) sends
    imports: Run
    ingest: dict[int, Run] = field(default_factory=dict)
    raw: dict[int, Run] = field(default_factory=dict)
    file_bytes: dict[int, int] = field(default_factory=dict)
    profile: str = ""


class Bench:
    """moto, the bucket, the files, and a fresh set of tables and a queue for each child."""

    def __init__(self, moto_url: str, moto_pid: int | None, workdir: Path) -> None:
        import boto3

        self.moto_url = moto_url
        self.workdir = workdir
        self.dynamodb = boto3.client("dynamodb", endpoint_url=moto_url, **CREDENTIALS)
        self.sqs = boto3.client("sqs", endpoint_url=moto_url, **CREDENTIALS)
        self.s3 = boto3.client("s3", endpoint_url=moto_url, **CREDENTIALS)
        self.moto_pid = moto_pid
        self.files: dict[int, tuple[Path, str]] = {}  # lines -> (local path, S3 key)
        self.file_bytes: dict[int, int] = {}

    def setup(self) -> None:
        from seekless_local.template import create_buckets

        create_buckets(self.s3, names={"JobsBucket": BUCKET})

    def file(self, lines: int) -> tuple[Path, str]:
        if lines not in self.files:
            path = self.workdir / f"batch-{lines}.jsonl"
            self.file_bytes[lines] = write_file(path, lines)
            key = f"batches/input/{TENANT}/bench-{lines}-{uuid.uuid4().hex[:8]}.jsonl"
            self.s3.upload_file(str(path), BUCKET, key)
            self.files[lines] = (path, key)
        return self.files[lines]

    def fresh(self) -> dict[str, str]:
        """A new set of the template's tables and a new jobs queue (with its dead-letter queue)."""
        from seekless_local.template import create_queues, create_tables, default_table_name, table_definitions

        suffix = uuid.uuid4().hex[:8]
        names = {logical: f"{default_table_name(logical)}-{suffix}" for logical in table_definitions()}
        create_tables(self.dynamodb, names=names)
        queues = create_queues(self.sqs, names={"JobsQueue": f"jobs-{suffix}", "JobsDeadLetterQueue": f"dlq-{suffix}"})
        return {
            "jobs_table": names["JobsTable"],
            "batches_table": names["BatchesTable"],
            "queue_url": queues["JobsQueue"],
        }

    def _moto_cpu(self) -> float | None:
        from bench.worker_throughput import process_cpu

        return process_cpu(self.moto_pid) if self.moto_pid else None

    def run(self, mode: str, lines: int, *, profile: int = 0) -> Run:
        config: dict[str, Any] = {"mode": mode, "lines": lines, "moto_url": self.moto_url, **self.fresh()}
        if mode != "imports":
            path, key = self.file(lines)
            config.update(path=str(path), key=key, tag=uuid.uuid4().hex, profile=profile)
        inherited = {k: v for k, v in os.environ.items() if not k.startswith(("SEEKLESS_", "DEEPSEEK_", "AWS_"))}
        env = {**inherited, **LOCAL_AWS, "POWERTOOLS_LOG_LEVEL": "WARNING", "POWERTOOLS_TRACE_DISABLED": "true"}
        moto_before = self._moto_cpu()
        done = subprocess.run(
            [sys.executable, "-m", "bench.batch_split", CHILD, json.dumps(config)],
            cwd=REPO_ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=CHILD_TIMEOUT,
            check=False,
        )
        moto_after = self._moto_cpu()
        if done.returncode != 0:
            sys.stderr.write(done.stderr[-4000:])
            raise RuntimeError(f"the {mode} child ({lines} lines) exited with {done.returncode}")
        data = json.loads(done.stdout.strip().splitlines()[-1])
        attributes = self.sqs.get_queue_attributes(
            QueueUrl=config["queue_url"], AttributeNames=["ApproximateNumberOfMessages"]
        )["Attributes"]
        run = Run(
            mode=mode,
            lines=lines,
            seconds=float(data.get("seconds", 0.0)),
            cpu=float(data.get("cpu", 0.0)),
            moto_cpu=moto_after - moto_before if moto_before is not None and moto_after is not None else None,
            peak_rss_mib=float(data["peak_rss_mib"]),
            prelude_rss_mib=float(data["prelude_rss_mib"]),
            calls={name: (int(count), float(seconds)) for name, (count, seconds) in data["calls"].items()},
            jobs=int(data.get("jobs", 0)),
            invalid=int(data.get("invalid", 0)),
            status=str(data.get("status", "-")),
            queued=int(attributes["ApproximateNumberOfMessages"]),
            profile=str(data.get("profile", "")),
        )
        if mode != "imports" and (run.jobs != lines or run.invalid or run.queued != lines):
            raise RuntimeError(f"{mode} of {lines} lines: {run.jobs} jobs, {run.invalid} invalid, {run.queued} queued")
        return run


def measure(plan: Plan, *, profile: int = 0) -> Results:
    from seekless_local.stack import MotoServer

    depth, local_depth = send_cost(stock_sqs=True), send_cost(stock_sqs=False)
    with MotoServer() as moto, tempfile.TemporaryDirectory() as tmp:
        bench = Bench(moto.url, moto.pid, Path(tmp))
        bench.setup()
        for lines in (plan.small, plan.large):
            bench.file(lines)  # written and uploaded before anything is timed
        results = Results(plan=plan, depth=depth, local_depth=local_depth, imports=bench.run("imports", 0))
        # Small before large (the small runs warm moto up), ingest and raw interleaved at each size.
        for lines in (plan.small, plan.large):
            results.ingest[lines] = bench.run("ingest", lines)
            results.raw[lines] = bench.run("raw", lines)
        if profile:
            results.profile = bench.run("ingest", plan.small, profile=profile).profile
        results.file_bytes = dict(bench.file_bytes)
        return results


# -- the tables ------------------------------------------------------------------------------------


def _n(value: int) -> str:
    return f"{value:,}"


def _mib(value: float) -> str:
    return f"{value:.1f} MiB"


def _rate(value: float, unit: str) -> str:
    return f"{value:,.0f} {unit}/s"


WRITE = ("batch_write_item",)
SEND = ("send_message_batch",)


def _breakdown(run: Run) -> str:
    """Where an ingest's time went: the AWS calls by operation, and the rest (this process's own work)."""
    in_calls = sum(seconds for _, seconds in run.calls.values())
    parts = [
        f"{name} {count:,}\N{MULTIPLICATION SIGN} {seconds:.1f} s"
        for name, (count, seconds) in sorted(run.calls.items(), key=lambda item: -item[1][1])
    ]
    return (
        f"{run.seconds:.1f} s = {in_calls:.1f} s in boto3 calls ({', '.join(parts)}) + "
        f"{run.seconds - in_calls:.1f} s outside them (reading and checking lines, building items and messages)"
    )


def sections(results: Results) -> list[Section]:
    plan = results.plan
    ingest, raw = results.ingest[plan.large], results.raw[plan.large]
    small, small_raw = results.ingest[plan.small], results.raw[plan.small]
    share = ratio(ingest.rate, raw.rate)
    share_small = ratio(small.rate, small_raw.rate)
    raw_send = raw.call_seconds(*SEND)
    depth, local_depth = results.depth, results.local_depth
    rows = [
        Row(
            f"split rate, {_n(plan.large)} lines, end to end",
            _rate(ingest.rate, "lines"),
            f"{_rate(raw.rate, 'lines')} (raw BatchWriteItem + SendMessageBatch)",
            f"{share:.2f}{X}",
            f"{GE} {TARGET_RATE}{X}",
            share >= TARGET_RATE,
        ),
        Row(
            f"messages enqueued per second, {_n(plan.large)} lines",
            _rate(ingest.lines / ingest.seconds, "msg"),
            f"{_rate(raw.lines / raw_send, 'msg')} (raw SendMessageBatch alone)",
            f"{ratio(ingest.lines / ingest.seconds, raw.lines / raw_send):.2f}{X}",
        ),
        Row(
            f"wall time, {_n(plan.large)} lines",
            f"{ingest.seconds:.1f} s",
            f"{raw.seconds:.1f} s (the raw calls)",
            f"{ingest.seconds - raw.seconds:+.1f} s",
        ),
        Row(
            f"CPU of the client process, {_n(plan.large)} lines",
            f"{ingest.cpu:.1f} s (the ingest)",
            f"{raw.cpu:.1f} s (over the raw calls)",
            f"{ratio(ingest.cpu, raw.cpu):.2f}{X}",
        ),
        Row(
            f"split rate, {_n(plan.small)} lines, end to end",
            _rate(small.rate, "lines"),
            f"{_rate(small_raw.rate, 'lines')} (raw calls)",
            f"{share_small:.2f}{X}",
        ),
        Row(
            f"stock moto: one SendMessageBatch of 10 with {_n(depth.depth)} messages queued",
            ms(depth.deep_ms),
            f"{ms(depth.empty_ms)} (queue empty)",
            f"{ratio(depth.deep_ms, depth.empty_ms):.1f}{X}",
        ),
        Row(
            f"local moto: one SendMessageBatch of 10 with {_n(local_depth.depth)} messages queued",
            ms(local_depth.deep_ms),
            f"{ms(local_depth.empty_ms)} (queue empty)",
            f"{ratio(local_depth.deep_ms, local_depth.empty_ms):.1f}{X}",
        ),
    ]
    flat = ratio(ingest.peak_rss_mib, small.peak_rss_mib)
    base = results.imports.peak_rss_mib
    memory = [
        Row(
            f"peak RSS of the ingesting process, {_n(plan.large)} lines",
            _mib(ingest.peak_rss_mib),
            f"{_mib(small.peak_rss_mib)} ({_n(plan.small)} lines)",
            f"{flat:.2f}{X}",
            f"{LE} {TARGET_RSS}{X}",
            flat <= TARGET_RSS,
        ),
        Row(
            "peak RSS added by the ingest (over imports and adapters)",
            f"{ingest.peak_rss_mib - base:+.1f} MiB ({_n(plan.large)} lines)",
            f"{small.peak_rss_mib - base:+.1f} MiB ({_n(plan.small)} lines)",
            f"{ingest.peak_rss_mib - small.peak_rss_mib:+.1f} MiB",
        ),
        Row(
            "peak RSS, imports and adapters only (no ingest)",
            _mib(base),
            "-",
            "-",
        ),
    ]
    cores = os.cpu_count() or 1
    moto_share = (
        f"moto used {ingest.moto_cpu:.1f} s of CPU over the {_n(plan.large)}-line ingest's child "
        f"({ingest.moto_cpu / ingest.seconds:.0%} of its wall time) and {raw.moto_cpu:.1f} s over the raw "
        f"calls' child; the ingesting process {ingest.cpu:.1f} s ({ingest.cpu / ingest.seconds:.0%})."
        if ingest.moto_cpu is not None and raw.moto_cpu is not None
        else "moto's CPU could not be read."
    )
    notes = [
        f"One ingest and one raw run at each size ({_n(plan.small)} lines, then {_n(plan.large)}), each in a fresh "
        f"child process on this {cores}-core machine, into fresh tables and a fresh queue on one moto server (a "
        f"child process too); the files ({results.file_bytes[plan.small] / 1e6:.1f} MB and "
        f"{results.file_bytes[plan.large] / 1e6:.1f} MB, every line valid) are written and uploaded first. Not "
        "interleaved round by round: one ingest is one call.",
        "seekless: `BatchService.ingest(source)` from the call to its return (imports, clients and a warm-up call "
        "per client come before): the S3 object read in 1 MiB chunks, every line parsed and checked as the chat "
        "route checks a request (pydantic, the model catalogue, `max_tokens`), one job item per line written with "
        "BatchWriteItem (25 a call), one GenerationJob message per line sent with SendMessageBatch (10 a call), "
        "a checkpoint (UpdateItem) every 100 lines, the batch opened and marked ingested. "
        f"Where the {_n(plan.large)}-line ingest's time went: {_breakdown(ingest)}.",
        "direct: the same job items and the same message bodies (made by the adapters' own builders, outside "
        "the timing, from the same file) sent with raw boto3 `batch_write_item` (25 a call) and "
        "`send_message_batch` (10 a call), 100 lines at a time; the figure is the time inside those calls alone "
        f"({raw.call_count(*WRITE):,} + {raw.call_count(*SEND):,} calls: {raw.call_seconds(*WRITE):.1f} s + "
        f"{raw_send:.1f} s). The message-rate row compares with SendMessageBatch alone, so it also bills the "
        "job writes to the ingest.",
        "The local moto server applies one API call at a time (a lock, for transaction safety: "
        "local/moto_server.py), and every call is a round trip to it on this machine, so moto bounds both rates: "
        f"{moto_share} On AWS, DynamoDB and SQS calls take a few milliseconds each and the ingest would be "
        "bound by its own round trips (it makes them one at a time); the client CPU row is the part that does "
        "not depend on moto.",
        "moto 5's SendMessage computes every queue attribute, among them the approximate message counts, each a "
        "scan of every queued message, to read one (`ContentBasedDeduplication`): a send costs time in "
        "proportion to the queue's depth (the stock moto row, a `MotoServer(stock_sqs=True)`, measured here; "
        f"{DEPTH_CALLS} calls at each depth), so {_n(plan.large)} sends to one queue would take hours. The local "
        "stack's moto server (`seekless_local.moto_server`, what `make dev`, the integration tests and every run "
        "above use) skips the counts during a send (`patch_moto_sends` in local/moto_server.py, on unless "
        "`--stock-sqs`): the local moto row, same measurement. GetQueueAttributes still counts, exactly, and "
        "checks here that every message arrived. The ingest and the raw calls go through the same server.",
    ]
    memory_notes = [
        "The peak resident set (`VmHWM`) of each child, read at its end; the baseline child imports the "
        "same modules, builds the same clients and adapters and makes the same warm-up calls, then stops. "
        "The file is streamed (one line held at a time) and the custom_ids seen are kept as 8-byte digests "
        "(bounded by the 50,000-line limit: a few MB at most). The moto server, which holds every item and "
        "message, is another process and not counted.",
    ]
    extra = [
        f"ingest {_n(plan.small)} lines: {_breakdown(small)}",
        f"raw {_n(plan.small)}: {small_raw.seconds:.1f} s in calls; raw {_n(plan.large)}: {raw.seconds:.1f} s",
        f"peak RSS after the warm-up, before the timed part: ingest {_n(plan.large)} "
        f"{ingest.prelude_rss_mib:.1f} MiB, ingest {_n(plan.small)} {small.prelude_rss_mib:.1f} MiB, "
        f"imports {results.imports.prelude_rss_mib:.1f} MiB",
    ]
    if results.profile:
        extra += ["", f"cProfile of a {_n(plan.small)}-line ingest (its own child; tottime):", results.profile]
    return [
        Section(title="Batch split: enqueue rate of a batch file's jobs", rows=rows, notes=notes, extra=extra),
        Section(title="Batch split: memory stays flat as the file grows", rows=memory, notes=memory_notes),
    ]


def run(quick: bool = False, *, profile: int = 0) -> list[Section]:
    return sections(measure(QUICK if quick else FULL, profile=profile))


def main(argv: Sequence[str] | None = None) -> None:
    argv = list(sys.argv[1:] if argv is None else argv)
    if argv[:1] == [CHILD]:
        print(json.dumps(child(json.loads(argv[1]))))
        return
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="smaller files (a smoke run)")
    parser.add_argument("--profile", type=int, default=0, metavar="N", help="also cProfile a small ingest (top N)")
    args = parser.parse_args(argv)
    print_sections(run(args.quick, profile=args.profile))


if __name__ == "__main__":
    main()
