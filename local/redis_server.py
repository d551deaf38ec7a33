"""Redis for the local stack and the test suite: REDIS_URL, else a redis-server we start, else fakeredis.

The fallback order is the local stack contract in DESIGN.md. ``describe`` says which one is in use so
`make dev` and the test header can print it.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import tempfile
import threading
import time
from types import TracebackType


def find_redis_server() -> str | None:
    return shutil.which("redis-server")


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def wait_for_port(port: int, *, host: str = "127.0.0.1", timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while True:
        try:
            with socket.create_connection((host, port), timeout=0.2):
                return
        except OSError:
            if time.monotonic() > deadline:
                raise TimeoutError(f"nothing listening on {host}:{port} after {timeout}s") from None
            time.sleep(0.02)


def stop_process(process: subprocess.Popen[bytes], timeout: float = 10.0) -> None:
    """Ask a child to stop, then insist."""
    process.terminate()
    try:
        process.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout=timeout)


class RedisServer:
    """A Redis the caller owns for the lifetime of a ``with`` block."""

    def __init__(self, url: str, kind: str) -> None:
        self.url = url
        self.kind = kind  # "external" | "redis-server" | "fakeredis"
        self._process: subprocess.Popen[bytes] | None = None
        self._fake: object | None = None
        self._tmp: tempfile.TemporaryDirectory[str] | None = None

    @property
    def describe(self) -> str:
        return {
            "external": f"Redis from REDIS_URL ({self.url})",
            "redis-server": f"redis-server started on {self.url}",
            "fakeredis": f"embedded fakeredis on {self.url} (redis-server not on PATH)",
        }[self.kind]

    @classmethod
    def for_tests(cls) -> RedisServer:
        return cls.choose(os.environ.get("REDIS_URL"))

    @classmethod
    def choose(cls, redis_url: str | None) -> RedisServer:
        if redis_url:
            return cls(redis_url, "external")
        port = free_port()
        server = cls(f"redis://127.0.0.1:{port}/0", "redis-server" if find_redis_server() else "fakeredis")
        server._port = port
        return server

    _port: int = 0

    def __enter__(self) -> RedisServer:
        if self.kind == "redis-server":
            self._start_redis_server()
        elif self.kind == "fakeredis":
            self._start_fake()
        return self

    def __exit__(self, *exc: tuple[type[BaseException], BaseException, TracebackType] | None) -> None:
        self.stop()

    def _start_redis_server(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="seekless-redis-")
        binary = find_redis_server()
        assert binary
        self._process = subprocess.Popen(  # noqa: S603 - fixed argv, our own binary lookup
            [
                binary,
                "--port",
                str(self._port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                self._tmp.name,
            ],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        wait_for_port(self._port)

    def _start_fake(self) -> None:
        from fakeredis import TcpFakeServer

        server = TcpFakeServer(("127.0.0.1", self._port), server_type="redis")
        thread = threading.Thread(target=server.serve_forever, daemon=True, name="fakeredis")
        thread.start()
        self._fake = server
        wait_for_port(self._port)

    def flush(self) -> None:
        import redis

        client = redis.Redis.from_url(self.url)
        try:
            client.flushdb()
        finally:
            client.close()

    def kill(self) -> None:
        """Stop the server abruptly, its clients' connections with it (fault tests); ``start`` brings it
        back on the same port."""
        if self._process is not None:
            self._process.kill()
            self._process.wait(timeout=10)
        if self._fake is not None:
            self._fake.shutdown()  # type: ignore[attr-defined]  # also ends every client's connection
            self._fake.server_close()  # type: ignore[attr-defined]
            self._fake = None

    def start(self) -> None:
        """Bring a killed server back on the same port, empty (fault tests: Redis restarted mid-run)."""
        if self.kind == "fakeredis" and self._fake is None:
            self._start_fake()
        if self.kind != "redis-server" or (self._process is not None and self._process.poll() is None):
            return
        if self._tmp is not None:
            self._tmp.cleanup()
        self._start_redis_server()

    def restart(self) -> None:
        if self.kind == "redis-server":
            self.kill()
            self.start()

    def stop(self) -> None:
        if self._process is not None:
            stop_process(self._process)
            self._process = None
        if self._fake is not None:
            self._fake.shutdown()  # type: ignore[attr-defined]
            self._fake.server_close()  # type: ignore[attr-defined]
            self._fake = None
        if self._tmp is not None:
            self._tmp.cleanup()
            self._tmp = None
