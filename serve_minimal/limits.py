"""What keeps a server up under bad input and load: body size, API key, and the admission queue.

- ``BodySizeLimit``: an ASGI middleware answering 413 for a body over the limit, whether announced by
  ``Content-Length`` or sent chunked (the body is read up to the limit, then replayed to the app), and 408
  for a body that does not arrive in time.
- ``ApiKeyGate``: ``Authorization: Bearer KEY`` compared in constant time, before the body is read or
  parsed (a request without the key learns nothing about its body); 401 otherwise. ``/health`` and
  the API docs stay open.
- ``AdmissionQueue``: at most ``slots`` generations run at once; later requests wait in arrival order
  (FIFO) — at most ``max_waiting`` of them, each at most ``max_wait_seconds`` — else 429.
- ``Planner``: checking and planning requests, on threads of its own, as many at once as the queue admits.
- ``RedactQuery``: the access log never shows a query string (a key a client put in the URL).
"""

from __future__ import annotations

import asyncio
import ctypes
import hmac
import json
import logging
from collections import deque
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import TypeVar

from serve_minimal.errors import APIError, error_body

RETRY_AFTER_SECONDS = "1"
T = TypeVar("T")


OPEN_PATHS = frozenset({"/health", "/docs", "/docs/oauth2-redirect", "/redoc", "/openapi.json"})


class ApiKeyGate:
    """Refuse requests without ``Authorization: Bearer <api_key>`` with an OpenAI-shaped 401."""

    def __init__(self, app, *, api_key: str) -> None:
        if not api_key or not api_key.strip():
            raise ValueError("an empty API key would let an empty bearer token through; give a real key or none")
        self.app = app
        self.api_key = api_key

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http" or scope["path"] in OPEN_PATHS or has_api_key(_header(scope, b"authorization"), api_key=self.api_key):
            await self.app(scope, receive, send)
            return
        body = error_body(
            message="missing or incorrect API key: send the header 'Authorization: Bearer <key>'",
            type="invalid_request_error",
            code="invalid_api_key",
        )
        await _send_json(send, status=401, body=body, headers=[(b"www-authenticate", b"Bearer")])


def has_api_key(authorization: str | None, *, api_key: str) -> bool:
    scheme, _, token = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(token.strip().encode(), api_key.encode())


class BodySizeLimit:
    """Refuse request bodies larger than ``max_bytes`` with an OpenAI-shaped 413, and bodies that take longer
    than ``timeout`` seconds to arrive with a 408 (a client that opens many sockets and sends slowly holds
    nothing for long)."""

    def __init__(self, app, *, max_bytes: int, timeout: float) -> None:
        self.app = app
        self.max_bytes = max_bytes
        self.timeout = timeout

    async def __call__(self, scope, receive, send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        declared = _content_length(scope)
        if declared is not None and declared > self.max_bytes:
            await self._refuse(send, size=f"{declared} bytes")
            return
        try:
            async with asyncio.timeout(self.timeout):
                body, complete = await _read_body(receive, limit=self.max_bytes)
        except TimeoutError:
            await _close_with(send, status=408, code="request_timeout",
                              message=f"the request body did not arrive within {self.timeout:g} s")
            return
        if not complete:
            await self._refuse(send, size=f"more than {self.max_bytes} bytes")
            return
        await self.app(scope, _replay(body, receive), send)

    async def _refuse(self, send, *, size: str) -> None:
        await _close_with(send, status=413, code="request_too_large",
                          message=f"request body is {size}; the limit is {self.max_bytes} bytes")


async def _close_with(send, *, status: int, code: str, message: str) -> None:
    """An OpenAI-shaped client error before the app saw the request, and the connection closed after it."""
    body = error_body(message=message, type="invalid_request_error", code=code)
    await _send_json(send, status=status, body=body, headers=[(b"connection", b"close")])


async def _send_json(send, *, status: int, body: dict, headers: list[tuple[bytes, bytes]]) -> None:
    payload = json.dumps(body).encode()
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(payload)).encode()), *headers]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    await send({"type": "http.response.body", "body": payload})


def _header(scope, name: bytes) -> str | None:
    for key, value in scope.get("headers", []):
        if key == name:
            return value.decode("latin-1")
    return None


def _content_length(scope) -> int | None:
    value = _header(scope, b"content-length")
    try:
        return None if value is None else int(value)
    except ValueError:
        return None


async def _read_body(receive, *, limit: int) -> tuple[bytes, bool]:
    """The whole body, or (what was read, False) once it passes ``limit``."""
    parts, size = [], 0
    while True:
        message = await receive()
        if message["type"] != "http.request":
            return b"".join(parts), True
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            return b"", False
        parts.append(chunk)
        if not message.get("more_body", False):
            return b"".join(parts), True


def _replay(body: bytes, receive):
    sent = False

    async def replayed():
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replayed


class AdmissionQueue:
    """A fair (FIFO) gate in front of generation: ``slots`` run, ``max_waiting`` wait, the rest get 429.

    ``acquire()`` returns once the caller holds a slot; ``release()`` hands the slot to the longest
    waiter. Lives on one event loop; ``release`` must be called on that loop.
    """

    def __init__(self, *, slots: int, max_waiting: int, max_wait_seconds: float) -> None:
        if slots < 1:
            raise ValueError(f"max concurrency must be >= 1, got {slots}")
        if max_waiting < 0:
            raise ValueError(f"max queue must be >= 0, got {max_waiting}")
        self.slots = slots
        self.max_waiting = max_waiting
        self.max_wait_seconds = max_wait_seconds
        self.running = 0
        self._waiters: deque[asyncio.Future] = deque()

    @property
    def waiting(self) -> int:
        return sum(1 for waiter in self._waiters if not waiter.done())

    async def acquire(self) -> None:
        if self.running < self.slots and not self.waiting:
            self.running += 1
            return
        if self.waiting >= self.max_waiting:
            raise _busy(f"the server is busy: {self.running} generations running and {self.waiting} waiting "
                        f"(max concurrency {self.slots}, max queue {self.max_waiting}); retry later", code="queue_full")
        waiter = asyncio.get_running_loop().create_future()
        self._waiters.append(waiter)
        try:
            async with asyncio.timeout(self.max_wait_seconds):
                await waiter
        except TimeoutError:
            if waiter.done() and not waiter.cancelled():
                return  # the slot arrived as the wait ran out: it is ours
            self._forget(waiter)
            raise _busy(f"waited {self.max_wait_seconds:g} s for a free generation slot; retry later", code="queue_timeout") from None
        except asyncio.CancelledError:
            if waiter.done() and not waiter.cancelled():
                self.release()  # handed a slot while being cancelled: pass it on
            else:
                self._forget(waiter)
            raise

    def release(self) -> None:
        while self._waiters:
            waiter = self._waiters.popleft()
            if not waiter.done():
                waiter.set_result(None)  # the slot moves to the waiter; running is unchanged
                return
        self.running -= 1

    def _forget(self, waiter: asyncio.Future) -> None:
        try:
            self._waiters.remove(waiter)
        except ValueError:
            pass


class Planner:
    """Where requests are checked and planned (schemas, patterns, rendering, tokenizing, the grammar): threads of
    its own, never the event loop's default pool that answers use, and bounded like generation — at most
    ``limit`` (max concurrency + max queue) at once; beyond, 429 at once. Each plan's schema work shares one
    time budget (``plan_completion``), so hostile schemas cost a bounded share of the server, not its workers."""

    def __init__(self, *, limit: int) -> None:
        self.limit = limit
        self.active = 0
        self._pool = ThreadPoolExecutor(max_workers=limit, thread_name_prefix="plan")

    async def run(self, function: Callable[[], T]) -> T:
        if self.active >= self.limit:
            raise _busy(f"the server is busy: {self.active} requests being checked (max concurrency + max queue "
                        f"= {self.limit}); retry later", code="queue_full")
        self.active += 1
        try:
            return await asyncio.get_running_loop().run_in_executor(self._pool, function)
        finally:
            self.active -= 1


class RedactQuery(logging.Filter):
    """Access-log lines without query strings: no route of this API reads one, so a query can only carry what
    a client put there by mistake (``?api_key=sk-…``), which must not reach a log file. uvicorn's access
    record has the path as its third argument."""

    def filter(self, record: logging.LogRecord) -> bool:
        args = record.args
        if isinstance(args, tuple) and len(args) >= 3 and isinstance(args[2], str) and "?" in args[2]:
            record.args = (*args[:2], args[2].split("?", 1)[0] + "?[query removed]", *args[3:])
        return True


def redact_access_log(logger: logging.Logger | None = None) -> None:
    """Install ``RedactQuery`` on uvicorn's access logger (once)."""
    logger = logger or logging.getLogger("uvicorn.access")
    if not any(isinstance(existing, RedactQuery) for existing in logger.filters):
        logger.addFilter(RedactQuery())


def _busy(message: str, *, code: str) -> APIError:
    return APIError(429, message, type="rate_limit_error", code=code, headers={"Retry-After": RETRY_AFTER_SECONDS})


def free_memory_trimmer() -> Callable[[], None] | None:
    """glibc's ``malloc_trim(0)``, or None where the C library has none (musl, macOS).

    Generations run on worker threads, and glibc gives each thread its own heap arena; what a
    burst of concurrent requests frees stays mapped in those arenas, so a server that was busy once
    keeps the burst's footprint forever. The server calls this whenever it becomes idle."""
    try:
        trim = ctypes.CDLL(None).malloc_trim
    except (OSError, AttributeError):
        return None
    trim.argtypes = [ctypes.c_size_t]
    trim.restype = ctypes.c_int
    return lambda: trim(0)
