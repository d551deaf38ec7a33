"""`make dev` as a user runs it: the command prints its URLs and key, serves, says where it is in its state
file (for `seekless invoke`), and Ctrl-C stops it all and removes that file."""

from __future__ import annotations

import json
import os
import re
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx


def read_until(process: subprocess.Popen[str], marker: str, timeout: float) -> list[str]:
    assert process.stdout is not None
    deadline = time.monotonic() + timeout
    lines: list[str] = []
    while time.monotonic() < deadline:
        line = process.stdout.readline()
        if not line:
            break
        lines.append(line.rstrip("\n"))
        if marker in line:
            return lines
    raise AssertionError(f"never saw {marker!r}; output so far: {lines}")


def port_open(port: int) -> bool:
    with socket.socket() as sock:
        sock.settimeout(0.2)
        return sock.connect_ex(("127.0.0.1", port)) == 0


def test_dev_serves_then_ctrl_c_stops_every_process_it_started(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DEEPSEEK_API_KEY", "AWS_ENDPOINT_URL")}
    env["PYTHONUNBUFFERED"] = "1"
    env["SEEKLESS_STATE_DIR"] = str(tmp_path)  # not the repository's .seekless/, which a developer may be using
    state_file = tmp_path / "local-stack.json"
    process = subprocess.Popen(
        [sys.executable, "-m", "seekless_local.cli", "dev", "--port", "0", "--ws-port", "0"],
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
    )
    try:
        output = "\n".join(read_until(process, "Press Ctrl-C", timeout=60))
        rest = re.search(r"REST API\s+(http://127\.0\.0\.1:(\d+))/v1", output)
        ws = re.search(r"WebSocket\s+ws://127\.0\.0\.1:(\d+)", output)
        moto = re.search(r"AWS \(moto\)\s+http://127\.0\.0\.1:(\d+)", output)
        redis = re.search(r"Redis\s+(?:redis-server started|embedded fakeredis) on redis://127\.0\.0\.1:(\d+)", output)
        assert rest and ws and moto and redis, output
        assert "Dev API key  sk-seekless-local-dev" in output
        assert "Admin key    sk-seekless-local-admin" in output
        assert "DeepSeek emulator" in output
        answer = httpx.post(
            rest.group(1) + "/v1/chat/completions",
            headers={"Authorization": "Bearer sk-seekless-local-dev"},
            json={"model": "deepseek-flash", "messages": [{"role": "user", "content": "hi"}]},
            timeout=30,
        )
        assert answer.status_code == 200 and answer.json()["choices"][0]["message"]["content"]
        ports = [int(rest.group(2)), int(ws.group(1)), int(moto.group(1)), int(redis.group(1))]
        assert all(port_open(p) for p in ports)
        assert "SQS trigger  RequestsFunction ← seekless-requests" in output
        state = json.loads(state_file.read_text())
        assert state["pid"] == process.pid and state["moto_url"] == f"http://127.0.0.1:{moto.group(1)}"
        assert state["rest_url"] == rest.group(1)
        assert state["admin_api_key"] == "sk-seekless-local-admin"  # what `seekless keys` finds it by

        process.send_signal(signal.SIGINT)
        assert process.wait(timeout=30) == 0
        assert not any(port_open(p) for p in ports)
        assert not state_file.exists()
    finally:
        if process.poll() is None:
            process.kill()
            process.wait(timeout=10)
        if process.stdout is not None:
            process.stdout.close()
