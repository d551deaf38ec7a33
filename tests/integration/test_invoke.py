"""`seekless invoke` as a user runs it (the CLI in a child process): a function of template.yaml with a
sample event, against the running `seekless dev` stack when there is one, else against services it
starts for the call. And the state file through which it finds that stack."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

import boto3
import pytest

from seekless_local.events import load_event
from seekless_local.stack import LocalStack, StackConfig, running_stack

TIMEOUT = 90


def seekless(
    *args: str, state_dir: Path, redis_url: str, stdin: str | None = None, **env: str
) -> subprocess.CompletedProcess[str]:
    environment = {
        k: v
        for k, v in os.environ.items()
        if k not in ("AWS_ENDPOINT_URL", "DEEPSEEK_API_KEY", "DEEPSEEK_BASE_URL", "POWERTOOLS_LOG_LEVEL")
    }
    # The state directory is the test's own, so a developer's running `seekless dev` is never used.
    environment.update({"SEEKLESS_STATE_DIR": str(state_dir), "REDIS_URL": redis_url, **env})
    return subprocess.run(
        [sys.executable, "-m", "seekless_local.cli", *args],
        input=stdin,
        capture_output=True,
        text=True,
        env=environment,
        timeout=TIMEOUT,
        check=False,
    )


def only_json(stdout: str) -> Any:
    """stdout must be the result and nothing else: one line of JSON."""
    lines = stdout.splitlines()
    assert len(lines) == 1, stdout
    return json.loads(lines[0])


def test_invoking_the_rest_function_prints_its_proxy_response(tmp_path: Path, redis_url: str) -> None:
    done = seekless("invoke", "RestApiFunction", "--event", "rest/get_healthz", state_dir=tmp_path, redis_url=redis_url)
    assert done.returncode == 0, done.stderr
    response = only_json(done.stdout)
    assert response["statusCode"] == 200 and json.loads(response["body"]) == {"status": "ok"}
    assert "no `seekless dev` running: starting moto" in done.stderr


def test_invoking_the_job_sweeper_with_its_scheduled_event(tmp_path: Path, redis_url: str) -> None:
    done = seekless(
        "invoke", "JobSweeperFunction", "-e", "schedule/job_sweeper", state_dir=tmp_path, redis_url=redis_url
    )
    assert done.returncode == 0, done.stderr
    assert only_json(done.stdout)["resent"] == 0  # a fresh jobs table has nothing to re-send


def test_the_event_can_come_from_stdin(tmp_path: Path, redis_url: str) -> None:
    event = json.dumps(load_event("schedule/job_sweeper"))
    done = seekless(
        "invoke", "JobSweeperFunction", "--event", "-", state_dir=tmp_path, redis_url=redis_url, stdin=event
    )
    assert done.returncode == 0, done.stderr
    assert only_json(done.stdout)["resent"] == 0


def test_handler_logs_go_to_stderr_and_only_the_result_to_stdout(tmp_path: Path, redis_url: str) -> None:
    done = seekless(
        "invoke",
        "RequestsFunction",
        "--event",
        "sqs/request_reply_sqs",
        state_dir=tmp_path,
        redis_url=redis_url,
        POWERTOOLS_LOG_LEVEL="INFO",
    )
    assert done.returncode == 0, done.stderr
    assert only_json(done.stdout) == {"batchItemFailures": []}
    assert '"function_name":"RequestsFunction"' in done.stderr  # Powertools' structured log lines


def test_a_handler_that_raises_exits_1_with_lambdas_error_object(tmp_path: Path, redis_url: str) -> None:
    done = seekless(
        "invoke", "WsAuthorizerFunction", "-e", "ws/authorizer_none", state_dir=tmp_path, redis_url=redis_url
    )
    assert done.returncode == 1
    error = only_json(done.stdout)
    assert error["errorMessage"] == "Unauthorized" and error["errorType"] == "Unauthorized"
    trace = "".join(error["stackTrace"])
    assert "functions/ws_authorizer/app.py" in trace
    assert "seekless_local" not in trace and "/local/" not in trace  # the handler down, as on Lambda


def test_an_unknown_function_exits_2_and_names_the_functions(tmp_path: Path, redis_url: str) -> None:
    done = seekless("invoke", "NoSuchFunction", state_dir=tmp_path, redis_url=redis_url)
    assert done.returncode == 2 and done.stdout == ""
    assert "NoSuchFunction" in done.stderr and "RestApiFunction" in done.stderr


def test_invoke_runs_against_the_running_stack(tmp_path: Path, redis_url: str) -> None:
    state_file = tmp_path / "local-stack.json"
    config = StackConfig(rest_port=0, ws_port=0, redis_url=redis_url, event_sources=False, state_file=state_file)
    with LocalStack(config) as stack:
        dynamodb = boto3.client("dynamodb", endpoint_url=stack.moto_url)
        before = dynamodb.scan(TableName=stack.tables["SessionsTable"])["Count"]
        done = seekless(
            "invoke", "RestApiFunction", "-e", "rest/post_sessions", state_dir=tmp_path, redis_url=redis_url
        )
        assert done.returncode == 0, done.stderr
        assert f"using the local stack of `seekless dev` (pid {os.getpid()}" in done.stderr
        assert only_json(done.stdout)["statusCode"] == 201
        # The session landed in the running stack's table, not in services of the invoke's own.
        assert dynamodb.scan(TableName=stack.tables["SessionsTable"])["Count"] == before + 1


# ---------------------------------------------------------------- the state file


def test_the_state_file_says_where_the_stack_is_for_as_long_as_it_runs(tmp_path: Path, redis_url: str) -> None:
    state_file = tmp_path / "state" / "local-stack.json"
    config = StackConfig(rest_port=0, ws_port=0, redis_url=redis_url, event_sources=False, state_file=state_file)
    with LocalStack(config) as stack:
        services = running_stack(state_file)
        assert services is not None and services == stack.services()
        assert services.pid == os.getpid() and services.moto_url == stack.moto_url
        assert services.queues["RepliesQueue"] == stack.queues["RepliesQueue"]
        assert services.tables["BatchesTable"] == "seekless-batches"
        assert services.ws_management_url and services.lambda_url and services.rest_url
        # The admin key `seekless keys` uses by default; the REST function was given the same.
        assert services.admin_api_key == stack.config.dev_admin_key == os.environ["SEEKLESS_ADMIN_API_KEY"]
        assert state_file.stat().st_mode & 0o077 == 0  # the owner's only
        assert "State file" in stack.summary()
    assert not state_file.exists()
    assert running_stack(state_file) is None


def test_a_state_file_left_by_a_dead_stack_is_ignored(tmp_path: Path, redis_url: str) -> None:
    state_file = tmp_path / "local-stack.json"
    config = StackConfig(rest_port=0, ws_port=0, redis_url=redis_url, event_sources=False, state_file=state_file)
    with LocalStack(config) as stack:
        text = state_file.read_text()
        dead = subprocess.run([sys.executable, "-c", "import os; print(os.getpid())"], capture_output=True, text=True)
        stale = json.loads(text) | {"pid": int(dead.stdout)}
        state_file.write_text(json.dumps(stale))
        assert running_stack(state_file) is None  # its process is gone
        assert stack.moto_url
    assert state_file.exists()  # another process's file: not ours to remove


@pytest.mark.parametrize("contents", ["", "{}", '{"version": 2}', "not json"])
def test_an_unreadable_state_file_means_no_running_stack(tmp_path: Path, contents: str) -> None:
    state_file = tmp_path / "local-stack.json"
    state_file.write_text(contents)
    assert running_stack(state_file) is None
