"""`migrate-guard serve`: /health and /metrics over real HTTP, against a server in a thread (the module's
API) or in a subprocess (the command itself: its start line, port in use, SIGTERM and Ctrl-C)."""

from __future__ import annotations

import http.client
import json
import os
import queue
import signal
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
from conftest import error_line, migrate_example, use_repository

from migrate_guard.config import load_project
from migrate_guard.monitor import serve
from migrate_guard.monitor.status import Status, evaluate

EVALUATED = "X-Migrate-Guard-Evaluated"


# --- projects and servers ----------------------------------------------------------------------


@pytest.fixture
def healthy(example: Path, sqlite_url: str, monkeypatch: pytest.MonkeyPatch, run_cli) -> tuple[str, ...]:
    """The example at 0004 on SQLite, one backup, verified: healthy. Returns the CLI's -c/--url arguments."""
    migrate_example(example, sqlite_url, revision="0004", customers=None)
    use_repository(example, example / "repo", monkeypatch)
    args = ("-c", str(example / "alembic.ini"), "--url", sqlite_url)
    assert run_cli(*args, "backup").exit_code == 0
    assert run_cli(*args, "verify", "--all").exit_code == 0
    return args


@pytest.fixture
def unhealthy(example: Path) -> tuple[str, ...]:
    """The example with neither a database nor a snapshot: unhealthy."""
    return ("-c", str(example / "alembic.ini"))


def project_of(args: tuple[str, ...]):
    return load_project(args[1], args[3] if len(args) > 3 else None)


@contextmanager
def running(cache: serve.CachedStatus) -> Iterator[serve.StatusServer]:
    server = serve.StatusServer(serve.parse_listen("127.0.0.1:0"), cache)
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        yield server
    finally:
        server.shutdown()
        server.server_close()
        thread.join(5)


def request(
    server_or_port: serve.StatusServer | int, method: str, path: str, body: bytes | None = None
) -> tuple[int, dict[str, str], bytes]:
    port = server_or_port if isinstance(server_or_port, int) else server_or_port.port
    conn = http.client.HTTPConnection("127.0.0.1", port, timeout=10)
    try:
        conn.request(method, path, body=body)
        response = conn.getresponse()
        return response.status, {k.lower(): v for k, v in response.getheaders()}, response.read()
    finally:
        conn.close()


class Counting:
    """An evaluate() that counts its calls, optionally held until released, or raising."""

    def __init__(self, inner: Callable[[], Status]) -> None:
        self.inner = inner
        self.calls = 0
        self.gate: threading.Event | None = None
        self.started = threading.Event()
        self.fail: Exception | None = None
        self.last: Status

    def __call__(self) -> Status:
        self.calls += 1
        self.started.set()
        if self.gate is not None:
            assert self.gate.wait(10)
        if self.fail is not None:
            raise self.fail
        self.last = self.inner()
        return self.last


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


# --- /health and /metrics -----------------------------------------------------------------------


def test_healthy_is_200_with_the_json_status_prints(run_cli, healthy):
    printed = run_cli(*healthy, "status", "--format", "json")
    assert printed.exit_code == 0
    expected = json.loads(printed.stdout)
    project = project_of(healthy)
    counting = Counting(lambda: evaluate(project))
    with running(serve.CachedStatus(counting, 30)) as server:
        code, headers, body = request(server, "GET", "/health")
    assert code == 200 and headers["content-type"] == "application/json", body
    assert int(headers["content-length"]) == len(body) and headers[EVALUATED.lower()].endswith("Z")
    got = json.loads(body)
    assert got.keys() == expected.keys() and got["healthy"] is True
    assert got["figures"].keys() == expected["figures"].keys()
    assert [(c["name"], c["level"]) for c in got["checks"]] == [(c["name"], c["level"]) for c in expected["checks"]]
    # byte for byte what `status --format json` prints (click.echo's newline included) for that evaluation
    assert body.decode() == json.dumps(counting.last.to_dict(), indent=2) + "\n"


def test_unhealthy_is_503_and_head_has_no_body(unhealthy):
    project = project_of(unhealthy)
    with running(serve.CachedStatus(lambda: evaluate(project), 30)) as server:
        code, headers, body = request(server, "GET", "/health")
        report = json.loads(body)
        assert code == 503 and report["healthy"] is False
        assert {c["name"] for c in report["checks"] if c["level"] == "critical"} >= {"repository", "database"}
        code, head_headers, head_body = request(server, "HEAD", "/health")
        assert code == 503 and head_body == b"" and head_headers["content-length"] == str(len(body))
        assert head_headers[EVALUATED.lower()] == headers[EVALUATED.lower()]
        code, _, head_body = request(server, "HEAD", "/metrics")
        assert code == 200 and head_body == b""


def test_metrics_is_the_prometheus_exposition(run_cli, healthy):
    printed = run_cli(*healthy, "status", "--format", "prometheus").stdout
    project = project_of(healthy)
    with running(serve.CachedStatus(lambda: evaluate(project), 30)) as server:
        code, headers, body = request(server, "GET", "/metrics?from=prometheus")  # a query string is ignored
    assert code == 200 and headers["content-type"] == "text/plain; version=0.0.4; charset=utf-8"
    text = body.decode()

    def names(exposition: str) -> list[str]:
        return [line.split(" ")[0] for line in exposition.splitlines()]

    assert names(text) == names(printed)  # the same lines; only ages may differ between the two evaluations
    assert "migrate_guard_healthy 1\n" in text and 'migrate_guard_check_status{check="verify"} 0\n' in text


def test_other_paths_are_404_and_other_methods_405_and_change_nothing(healthy, example):
    project = project_of(healthy)
    counting = Counting(lambda: evaluate(project))

    def tree() -> dict[str, tuple[int, int]]:
        return {str(p): (p.stat().st_size, p.stat().st_mtime_ns) for p in sorted(example.rglob("*")) if p.is_file()}

    with running(serve.CachedStatus(counting, 30)) as server:
        assert request(server, "GET", "/health?verbose=1")[0] == 200
        before = tree()
        for path in ("/", "/healthz", "/health/", "/health/x", "/status", "/metrics.txt"):
            code, headers, body = request(server, "GET", path)
            assert code == 404 and b"/health and /metrics" in body, path
            assert request(server, "HEAD", path)[0] == 404
        for method in ("POST", "PUT", "DELETE", "PATCH", "OPTIONS", "TRACE", "BACKUP"):
            for path in ("/health", "/metrics", "/backup"):
                code, headers, body = request(server, method, path, body=b'{"healthy": false}')
                assert code == 405 and headers["allow"] == "GET, HEAD", (method, path)
        code, headers, _ = request(server, "GET", "/health")
        assert code == 200 and json.loads(request(server, "GET", "/health")[2])["healthy"] is True
    assert counting.calls == 1  # a refused request never evaluates
    assert tree() == before


# --- the cached evaluation ---------------------------------------------------------------------


def test_the_status_is_evaluated_at_most_once_per_interval(unhealthy):
    project = project_of(unhealthy)
    counting, clock = Counting(lambda: evaluate(project)), Clock()
    with running(serve.CachedStatus(counting, 5, clock=clock)) as server:
        assert counting.calls == 0  # lazily: nothing before the first request
        first = request(server, "GET", "/health")[1][EVALUATED.lower()]
        clock.now += 4.9
        assert request(server, "GET", "/health")[1][EVALUATED.lower()] == first
        assert request(server, "GET", "/metrics")[1][EVALUATED.lower()] == first
        assert counting.calls == 1
        clock.now += 0.2
        second = request(server, "GET", "/metrics")[1][EVALUATED.lower()]
        assert second > first and counting.calls == 2
        assert request(server, "GET", "/health")[1][EVALUATED.lower()] == second


def test_with_a_small_real_interval_a_new_evaluation_follows(unhealthy):
    project = project_of(unhealthy)
    with running(serve.CachedStatus(lambda: evaluate(project), 0.3)) as server:
        start = time.monotonic()
        first = request(server, "GET", "/health")[1][EVALUATED.lower()]
        again = request(server, "GET", "/health")[1][EVALUATED.lower()]
        if time.monotonic() - start < 0.3:  # both within the interval (a loaded machine may take longer)
            assert again == first
        time.sleep(0.35)
        assert request(server, "GET", "/health")[1][EVALUATED.lower()] > again


def test_never_two_evaluations_at_once(unhealthy):
    project = project_of(unhealthy)
    counting, clock = Counting(lambda: evaluate(project)), Clock()
    counting.gate = threading.Event()
    with running(serve.CachedStatus(counting, 5, clock=clock)) as server:
        results: queue.Queue[tuple[int, dict[str, str], bytes]] = queue.Queue()

        def ask() -> None:
            results.put(request(server, "GET", "/health"))

        waiting = [threading.Thread(target=ask) for _ in range(4)]
        for t in waiting:
            t.start()
        assert counting.started.wait(5)
        time.sleep(0.1)
        assert results.empty()  # no result yet: they wait for the one evaluation
        counting.gate.set()
        for t in waiting:
            t.join(10)
        answers = [results.get_nowait() for _ in waiting]
        assert counting.calls == 1 and len({a[1][EVALUATED.lower()] for a in answers}) == 1
        previous = answers[0][1][EVALUATED.lower()]
        # due again, and slow: while it runs, others get the previous result at once
        counting.gate.clear()
        counting.started.clear()
        clock.now += 10
        slow = threading.Thread(target=ask)
        slow.start()
        assert counting.started.wait(5)
        assert request(server, "GET", "/health")[1][EVALUATED.lower()] == previous
        counting.gate.set()
        slow.join(10)
        assert results.get_nowait()[1][EVALUATED.lower()] > previous and counting.calls == 2


def test_an_evaluation_that_raises_is_503_and_the_server_keeps_running(healthy):
    project = project_of(healthy)
    counting, clock = Counting(lambda: evaluate(project)), Clock()
    counting.fail = RuntimeError("the repository exploded\nsecond line")
    warned: list[str] = []
    with running(serve.CachedStatus(counting, 5, clock=clock, warn=warned.append)) as server:
        code, headers, body = request(server, "GET", "/health")
        assert code == 503 and headers["content-type"] == "application/json"
        assert json.loads(body) == {"status": "unhealthy", "error": "RuntimeError: the repository exploded"}
        code, _, body = request(server, "GET", "/metrics")
        assert code == 200 and "migrate_guard_healthy 0\n" in body.decode()
        assert warned == ["status could not be evaluated: RuntimeError: the repository exploded"]
        counting.fail = None
        clock.now += 6
        code, _, body = request(server, "GET", "/health")
        assert code == 200 and json.loads(body)["healthy"] is True


# --- --listen ------------------------------------------------------------------------------------


def test_listen_values():
    assert serve.parse_listen("127.0.0.1:9466") == serve.Listen("127.0.0.1", 9466, socket.AF_INET)
    assert serve.parse_listen("[::1]:0") == serve.Listen("::1", 0, socket.AF_INET6)
    assert serve.parse_listen("localhost:80").address(8080) == "localhost:8080"
    assert serve.parse_listen("[::1]:9466").address() == "[::1]:9466"
    for bad in ("9466", ":9466", "::1:9466", "[::1]", "[::1]9466", "[nope]:1", "host:", "host:65536", "h:1a", ""):
        with pytest.raises(serve.UsageError):
            serve.parse_listen(bad)


def test_a_bad_listen_or_interval_is_a_usage_error(run_cli, unhealthy):
    for args in (("--listen", "localhost"), ("--listen", "::1:9466"), ("--interval", "-1"), ("--interval", "nan")):
        result = run_cli(*unhealthy, "serve", *args)
        assert result.exit_code == 2, result.output
        assert error_line(result).startswith("migrate-guard: error: --")


def test_ipv6_loopback(unhealthy):
    if not socket.has_ipv6:
        pytest.skip("no IPv6")
    project = project_of(unhealthy)
    try:
        server = serve.StatusServer(serve.parse_listen("[::1]:0"), serve.CachedStatus(lambda: evaluate(project)))
    except serve.GuardError as exc:
        pytest.skip(f"no IPv6 loopback here: {exc.message}")
    thread = threading.Thread(target=server.serve_forever, args=(0.05,), daemon=True)
    thread.start()
    try:
        assert server.url == f"http://[::1]:{server.port}"
        conn = http.client.HTTPConnection("::1", server.port, timeout=10)
        conn.request("GET", "/health")
        assert conn.getresponse().status == 503
        conn.close()
    finally:
        server.shutdown()
        server.server_close()


# --- the command, in a subprocess ---------------------------------------------------------------


class Served:
    def __init__(self, args: tuple[str, ...], cwd: Path, listen: str = "127.0.0.1:0") -> None:
        env = {**os.environ, "PYTHONUNBUFFERED": "1"}
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "migrate_guard", *args, "serve", "--listen", listen, "--interval", "30"],
            cwd=cwd,
            env=env,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.lines: queue.Queue[str] = queue.Queue()
        threading.Thread(target=self._read, daemon=True).start()

    def _read(self) -> None:
        assert self.proc.stderr is not None
        for line in self.proc.stderr:
            self.lines.put(line)
        self.lines.put("")

    def line(self, timeout: float = 10) -> str:
        return self.lines.get(timeout=timeout)

    def port(self) -> int:
        first = self.line()
        prefix = "serving /health and /metrics on http://127.0.0.1:"
        assert first.startswith(prefix), first
        return int(first.rstrip("\n").removeprefix(prefix))

    def stop(self, sig: int) -> tuple[int, str]:
        self.proc.send_signal(sig)
        code = self.proc.wait(10)
        rest = []
        while (line := self.line()) != "":
            rest.append(line)
        return code, "".join(rest)

    def kill(self) -> None:
        if self.proc.poll() is None:
            self.proc.kill()
            self.proc.wait(5)


def test_the_command_serves_until_sigterm(run_cli, healthy, tmp_path):
    served = Served(healthy, tmp_path)
    try:
        port = served.port()
        code, headers, body = request(port, "GET", "/health")
        assert (
            code == 200
            and json.loads(body).keys() == json.loads(run_cli(*healthy, "status", "--format", "json").stdout).keys()
        )
        code, headers, body = request(port, "GET", "/metrics")
        assert code == 200 and "migrate_guard_healthy 1\n" in body.decode()
        assert request(port, "POST", "/health", b"x")[0] == 405 and request(port, "GET", "/nope")[0] == 404
        code, rest = served.stop(signal.SIGTERM)
        assert code == 0 and rest == "stopped (SIGTERM)\n", rest
        with pytest.raises(OSError):  # the socket is closed
            socket.create_connection(("127.0.0.1", port), timeout=2).close()
    finally:
        served.kill()


def test_a_port_in_use_is_one_line_exit_2_and_ctrl_c_stops_cleanly(unhealthy, tmp_path):
    first = Served(unhealthy, tmp_path)
    try:
        port = first.port()
        assert request(port, "GET", "/health")[0] == 503
        second = subprocess.run(
            [sys.executable, "-m", "migrate_guard", *unhealthy, "serve", "--listen", f"127.0.0.1:{port}"],
            cwd=tmp_path,
            capture_output=True,
            text=True,
            timeout=30,
        )
        assert second.returncode == 2 and second.stdout == ""
        assert second.stderr == f"migrate-guard: error: cannot listen on 127.0.0.1:{port}: address already in use\n"
        assert request(port, "GET", "/health")[0] == 503  # the first one still serves
        code, rest = first.stop(signal.SIGINT)
        assert code == 0 and rest == "stopped (SIGINT)\n", rest
    finally:
        first.kill()
