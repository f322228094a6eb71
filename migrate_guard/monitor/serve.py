"""`migrate-guard serve`: a read-only HTTP endpoint for uptime monitors and Prometheus.

``GET /health`` answers 200 when `status` is healthy and 503 when it is not, with the JSON
`status --format json` prints; ``GET /metrics`` the Prometheus text exposition of the same status.
``HEAD`` of both works; any other path is 404, any other method 405 (there is nothing to write).

The status is evaluated lazily, on a request, at most once every ``interval`` seconds and never twice at
once: requests in between get the cached result (``X-Migrate-Guard-Evaluated`` says when it was taken);
while one request evaluates, the others get the previous result, or wait for it when there is none yet.
An evaluation that raises is cached like any other: /health answers 503 with ``{"status": "unhealthy",
"error": ...}`` and the server keeps running.
"""

from __future__ import annotations

import contextlib
import ipaddress
import json
import math
import signal
import socket
import socketserver
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from types import FrameType
from typing import Any
from urllib.parse import urlsplit

from .. import __version__
from ..config import Project
from ..errors import GuardError, UsageError, one_line
from .status import Status, evaluate, render_prometheus

DEFAULT_LISTEN = "127.0.0.1:9466"
DEFAULT_INTERVAL = 30.0
EVALUATED_HEADER = "X-Migrate-Guard-Evaluated"
JSON_TYPE = "application/json"
METRICS_TYPE = "text/plain; version=0.0.4; charset=utf-8"
TEXT_TYPE = "text/plain; charset=utf-8"
ALLOWED = "GET, HEAD"
REQUEST_TIMEOUT = 10.0  # seconds a client may take to send its request: a stalled one never holds a thread long
MAX_DRAINED_BODY = 1 << 20  # a refused request's body read (up to this) so the 405 reaches the client


# --- --listen and --interval -------------------------------------------------------------------


@dataclass(frozen=True)
class Listen:
    host: str
    port: int
    family: socket.AddressFamily

    def address(self, port: int | None = None) -> str:
        """``host:port`` (``[host]:port`` for IPv6), with ``port`` for the one bound when it was 0."""
        host = f"[{self.host}]" if self.family == socket.AF_INET6 else self.host
        return f"{host}:{self.port if port is None else port}"


def parse_listen(value: str) -> Listen:
    """``HOST:PORT``, ``[IPv6]:PORT``; port 0 picks a free one. Anything else is a usage error."""
    text = value.strip()
    usage = "e.g. 127.0.0.1:9466, [::1]:9466, 0.0.0.0:9466; port 0 picks a free one"
    if text.startswith("["):
        host, sep, rest = text[1:].partition("]")
        if not sep or not rest.startswith(":"):
            raise UsageError(f"--listen {value!r}: expected [IPv6]:PORT ({usage})")
        port_text = rest[1:]
        try:
            ipaddress.IPv6Address(host)
        except ValueError:
            raise UsageError(f"--listen {value!r}: {host!r} is not an IPv6 address") from None
        family = socket.AF_INET6
    else:
        host, sep, port_text = text.rpartition(":")
        if not sep:
            raise UsageError(f"--listen {value!r}: expected HOST:PORT ({usage})")
        if ":" in host:
            raise UsageError(f"--listen {value!r}: write an IPv6 address in brackets, as [::1]:9466")
        if not host:
            raise UsageError(f"--listen {value!r}: no host; name one ({usage})")
        family = socket.AF_INET
    if not port_text.isascii() or not port_text.isdigit() or int(port_text) > 65535:
        raise UsageError(f"--listen {value!r}: the port must be a number from 0 to 65535")
    return Listen(host, int(port_text), family)


def check_interval(seconds: float) -> float:
    if not math.isfinite(seconds) or seconds < 0:
        raise UsageError(f"--interval {seconds}: must be a number of seconds, 0 or more")
    return seconds


# --- the cached evaluation ---------------------------------------------------------------------


def _now_iso() -> str:
    return datetime.now(UTC).isoformat(timespec="microseconds").replace("+00:00", "Z")


def _one_line(exc: BaseException) -> str:
    return exc.message if isinstance(exc, GuardError) else " ".join(one_line(exc).split())


@dataclass(frozen=True)
class Evaluation:
    """One evaluation of the status (or its failure), rendered once for every request that gets it."""

    evaluated_at: str  # ISO time, to the microsecond: tells two evaluations apart
    taken: float  # time.monotonic() when it started
    status: Status | None
    error: str | None
    health: bytes  # exactly what `status --format json` prints
    metrics: bytes

    @property
    def healthy(self) -> bool:
        return self.status is not None and self.status.exit_code == 0

    @classmethod
    def of(cls, status: Status, evaluated_at: str, taken: float) -> Evaluation:
        health = json.dumps(status.to_dict(), indent=2) + "\n"
        return cls(evaluated_at, taken, status, None, health.encode(), render_prometheus(status).encode())

    @classmethod
    def failed(cls, error: str, evaluated_at: str, taken: float) -> Evaluation:
        health = json.dumps({"status": "unhealthy", "error": error}) + "\n"
        metrics = (
            f"# status could not be evaluated: {error}\n"
            "# HELP migrate_guard_healthy 1 when no status check is critical, else 0.\n"
            "# TYPE migrate_guard_healthy gauge\n"
            "migrate_guard_healthy 0\n"
        )
        return cls(evaluated_at, taken, None, error, health.encode(), metrics.encode())


class CachedStatus:
    """The status, evaluated on demand at most once every ``interval`` seconds, never twice at once."""

    def __init__(
        self,
        evaluate: Callable[[], Status],
        interval: float = DEFAULT_INTERVAL,
        *,
        warn: Callable[[str], None] | None = None,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._evaluate = evaluate
        self.interval = check_interval(interval)
        self._warn = warn
        self._clock = clock
        self._lock = threading.Lock()
        self._latest: Evaluation | None = None

    def _fresh(self, evaluation: Evaluation | None) -> bool:
        return evaluation is not None and self._clock() - evaluation.taken < self.interval

    def get(self) -> Evaluation:
        latest = self._latest
        if latest is not None and self._fresh(latest):
            return latest
        if latest is None:
            self._lock.acquire()  # nothing to answer with yet: wait for the evaluation under way
        elif not self._lock.acquire(blocking=False):
            return latest  # another request is evaluating: the previous result meanwhile
        try:
            latest = self._latest
            if latest is not None and self._fresh(latest):
                return latest  # evaluated while this request waited
            latest = self._latest = self._evaluate_now()
            return latest
        finally:
            self._lock.release()

    def _evaluate_now(self) -> Evaluation:
        evaluated_at, taken = _now_iso(), self._clock()
        try:
            return Evaluation.of(self._evaluate(), evaluated_at, taken)
        except Exception as exc:  # noqa: BLE001 - reported as unhealthy; the server keeps running
            error = _one_line(exc)
            if self._warn is not None:
                self._warn(f"status could not be evaluated: {error}")
            return Evaluation.failed(error, evaluated_at, taken)


# --- HTTP ----------------------------------------------------------------------------------------


class _Handler(BaseHTTPRequestHandler):
    server: StatusServer
    server_version = f"migrate-guard/{__version__}"
    timeout = REQUEST_TIMEOUT

    def version_string(self) -> str:
        return self.server_version

    def parse_request(self) -> bool:
        if not super().parse_request():
            return False  # the error is sent
        if self.command not in ("GET", "HEAD"):
            self._drain_body()
            self._answer(405, TEXT_TYPE, b"method not allowed: this endpoint is read-only\n", {"Allow": ALLOWED})
            return False
        return True

    def do_GET(self) -> None:
        self._route()

    def do_HEAD(self) -> None:
        self._route()

    def _route(self) -> None:
        path = urlsplit(self.path).path
        if path not in ("/health", "/metrics"):
            self._answer(404, TEXT_TYPE, b"not found: /health and /metrics are served here\n")
            return
        evaluation = self.server.cache.get()
        headers = {EVALUATED_HEADER: evaluation.evaluated_at}
        if path == "/health":
            self._answer(200 if evaluation.healthy else 503, JSON_TYPE, evaluation.health, headers)
        else:
            self._answer(200, METRICS_TYPE, evaluation.metrics, headers)

    def _answer(self, code: int, content_type: str, body: bytes, headers: dict[str, str] | None = None) -> None:
        self.send_response(code)
        self.send_header("Content-Type", content_type)
        self.send_header("Content-Length", str(len(body)))
        self.send_header("Cache-Control", "no-store")
        for name, value in (headers or {}).items():
            self.send_header(name, value)
        self.end_headers()
        if self.command != "HEAD":
            self.wfile.write(body)

    def _drain_body(self) -> None:
        """Read a refused request's body, so closing the connection does not reset it before the client
        reads the answer; a body too big or of unknown length is left, and the connection closed."""
        self.close_connection = True
        try:
            length = int(self.headers.get("Content-Length") or 0)
        except ValueError:
            return
        if 0 < length <= MAX_DRAINED_BODY and "Transfer-Encoding" not in self.headers:
            with contextlib.suppress(OSError):
                self.rfile.read(length)

    def log_message(self, format: str, *args: Any) -> None:
        """No per-request lines on stderr: a monitor polling every few seconds would flood the log."""


class StatusServer(ThreadingHTTPServer):
    """A ThreadingHTTPServer answering from ``cache``; bound (and listening) once constructed."""

    daemon_threads = True

    def __init__(self, listen: Listen, cache: CachedStatus) -> None:
        self.address_family = listen.family
        self.listen = listen
        self.cache = cache
        try:
            super().__init__((listen.host, listen.port), _Handler)
        except OSError as exc:  # in use, not an address of this host, a privileged port, an unknown name
            reason = exc.strerror or str(exc)
            raise GuardError(f"cannot listen on {listen.address()}: {reason[:1].lower()}{reason[1:]}") from None

    def server_bind(self) -> None:
        socketserver.TCPServer.server_bind(self)  # not HTTPServer's: its getfqdn() may wait on DNS
        self.server_name = self.listen.host
        self.server_port = self.port

    @property
    def port(self) -> int:
        return int(self.server_address[1])

    @property
    def url(self) -> str:
        return f"http://{self.listen.address(self.port)}"

    def handle_error(self, request: Any, client_address: Any) -> None:
        """A client that went away mid-answer is nobody's problem; anything else is one line, not a traceback."""
        import sys

        exc = sys.exc_info()[1]
        if exc is None or isinstance(exc, ConnectionError | TimeoutError):
            return
        print(f"migrate-guard: warning: request from {client_address[0]}: {_one_line(exc)}", file=sys.stderr)


def open_server(
    project: Project, listen: Listen, interval: float, warn: Callable[[str], None] | None = None
) -> StatusServer:
    """A bound server for ``project``'s status (started with ``serve_forever``); GuardError if it cannot bind."""
    return StatusServer(listen, CachedStatus(lambda: evaluate(project), interval, warn=warn))


def serve(
    project: Project,
    listen: Listen,
    interval: float = DEFAULT_INTERVAL,
    *,
    say: Callable[[str], None],
    warn: Callable[[str], None] | None = None,
) -> int:
    """Serve until SIGTERM or Ctrl-C (SIGINT), then close the socket; returns the exit code, 0."""
    server = open_server(project, listen, interval, warn)
    stopping: list[str] = []

    def stop(signum: int, frame: FrameType | None) -> None:
        if not stopping:  # shutdown() waits for serve_forever to return: it cannot run in this (its) thread
            stopping.append(signal.Signals(signum).name)
            threading.Thread(target=server.shutdown, daemon=True).start()

    previous = {sig: signal.signal(sig, stop) for sig in (signal.SIGTERM, signal.SIGINT)}
    try:
        say(f"serving /health and /metrics on {server.url}")
        server.serve_forever()
    except KeyboardInterrupt:
        stopping.append("SIGINT")
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        server.server_close()
    say(f"stopped ({stopping[0] if stopping else 'done'})")
    return 0
