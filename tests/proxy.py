"""A fault-injecting HTTP proxy on 127.0.0.1, for testing how the sync engine copes.

:class:`FaultProxy` relays HTTP/1.1 between a client and an upstream server, both on
loopback, parsing each request and response so a fault can be chosen per connection
(when it is accepted) or per request::

    proxy = FaultProxy(upstream_port).start()
    proxy.add(Fault.cut_after_response_start(), path="/api/v1/sync/push")
    ... point the client at proxy.url ...
    proxy.stop()

Rules are tried in the order they were added; the first one that matches and has
uses left is consumed. ``chooser`` replaces the rules with a function that decides
per connection and per request: :class:`RandomFaults` picks faults at random,
:class:`FaultScript` hands out a list of faults in order, one per matching request::

    proxy.chooser = FaultScript(
        [Fault.passthrough(), Fault.cut_after_response_start()], path=PUSH
    )

A chooser sees each request's method, path and body in :class:`RequestInfo`, so a
callback can also decide by content. The faults the proxy applied are in
``events`` (``counts()`` sums them by kind), every request it read is in
``requests``.
"""

from __future__ import annotations

import asyncio
import contextlib
import ipaddress
import json
import random
import socket
import struct
import threading
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import StrEnum

MAX_HEAD_BYTES = 64 * 1024


class FaultKind(StrEnum):
    PASS = "pass"
    # Connection faults, chosen when a connection is accepted.
    RESET_ON_ACCEPT = "reset_on_accept"  # TCP reset before reading anything
    CLOSE_ON_ACCEPT = "close_on_accept"  # orderly close before reading anything
    # Request faults, chosen when a request has been read.
    RESET_BEFORE_FORWARD = (
        "reset_before_forward"  # the request never reaches the server
    )
    CUT_AFTER_RESPONSE_START = "cut_after_response_start"  # the server committed it
    DELAY = "delay"  # forward after ``seconds``
    STALL = "stall"  # never respond, so the client times out
    TRUNCATE = "truncate"  # send ``keep_bytes`` of the response, then close
    STATUS = "status"  # respond ``status`` (with ``retry_after``) without forwarding
    DUPLICATE = "duplicate"  # forward the request twice, relay the second response


CONNECTION_FAULTS = {
    FaultKind.PASS,
    FaultKind.RESET_ON_ACCEPT,
    FaultKind.CLOSE_ON_ACCEPT,
}


@dataclass(frozen=True)
class Fault:
    kind: FaultKind
    seconds: float = 0.0
    status: int = 503
    retry_after: str | None = None
    keep_bytes: int = 0

    @classmethod
    def passthrough(cls) -> Fault:
        return cls(FaultKind.PASS)

    @classmethod
    def reset_on_accept(cls) -> Fault:
        return cls(FaultKind.RESET_ON_ACCEPT)

    @classmethod
    def close_on_accept(cls) -> Fault:
        return cls(FaultKind.CLOSE_ON_ACCEPT)

    @classmethod
    def reset_before_forward(cls) -> Fault:
        return cls(FaultKind.RESET_BEFORE_FORWARD)

    @classmethod
    def cut_after_response_start(cls, keep_bytes: int = 12) -> Fault:
        """Reset the connection after the first ``keep_bytes`` of the response."""
        return cls(FaultKind.CUT_AFTER_RESPONSE_START, keep_bytes=keep_bytes)

    @classmethod
    def delay(cls, seconds: float) -> Fault:
        return cls(FaultKind.DELAY, seconds=seconds)

    @classmethod
    def stall(cls) -> Fault:
        return cls(FaultKind.STALL)

    @classmethod
    def truncate(cls, keep_bytes: int) -> Fault:
        return cls(FaultKind.TRUNCATE, keep_bytes=keep_bytes)

    @classmethod
    def answer(cls, status: int, retry_after: str | None = None) -> Fault:
        return cls(FaultKind.STATUS, status=status, retry_after=retry_after)

    @classmethod
    def duplicate(cls) -> Fault:
        return cls(FaultKind.DUPLICATE)


@dataclass(frozen=True)
class RequestInfo:
    """What a fault is chosen by; ``method``, ``path`` and ``body`` are empty on
    accept. ``body`` is the request body as sent (chunked framing included)."""

    connection: int
    request: int
    method: str = ""
    path: str = ""
    body: bytes = field(default=b"", repr=False)


@dataclass
class Rule:
    fault: Fault
    method: str | None = None
    path: str | None = None  # a prefix of the request path, query string included
    times: int | None = 1  # None: every match

    def matches(self, info: RequestInfo, on_accept: bool) -> bool:
        if self.times is not None and self.times <= 0:
            return False
        if on_accept != (self.fault.kind in CONNECTION_FAULTS - {FaultKind.PASS}):
            return False
        if self.method is not None and info.method != self.method:
            return False
        return self.path is None or info.path.startswith(self.path)


@dataclass(frozen=True)
class Event:
    fault: FaultKind
    info: RequestInfo
    status: int | None = None  # the HTTP status a ``STATUS`` fault returned

    @property
    def label(self) -> str:
        """Return the kind, with the status for a ``STATUS`` fault (``status_503``)."""
        if self.fault == FaultKind.STATUS and self.status is not None:
            return f"status_{self.status}"
        return self.fault.value


class _Message:
    """One parsed HTTP message: its head (start line and headers) and its body."""

    def __init__(self, head: bytes, body: bytes) -> None:
        self.head = head
        self.body = body

    @property
    def raw(self) -> bytes:
        return self.head + self.body

    @property
    def start_line(self) -> str:
        return self.head.split(b"\r\n", 1)[0].decode("latin-1")

    def header(self, name: str) -> str | None:
        for line in self.head.split(b"\r\n")[1:]:
            key, _, value = line.decode("latin-1").partition(":")
            if key.strip().lower() == name.lower():
                return value.strip()
        return None

    @property
    def closes(self) -> bool:
        return (self.header("connection") or "").lower() == "close"


async def _read_message(
    reader: asyncio.StreamReader, *, is_response: bool
) -> _Message | None:
    """Read one message; return ``None`` when the peer closed before sending one."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except asyncio.IncompleteReadError as exc:
        if exc.partial:
            raise ConnectionError(
                "peer closed in the middle of a message head"
            ) from exc
        return None
    except asyncio.LimitOverrunError as exc:
        raise ConnectionError(f"message head over {MAX_HEAD_BYTES} bytes") from exc
    message = _Message(head, b"")
    length = message.header("content-length")
    if (message.header("transfer-encoding") or "").lower() == "chunked":
        message.body = await _read_chunked(reader)
    elif length is not None:
        message.body = await reader.readexactly(int(length))
    elif is_response and not _bodiless(message):
        message.body = await reader.read()  # the body runs to the end of the stream
    return message


def _bodiless(response: _Message) -> bool:
    status = response.start_line.split(" ", 2)[1] if " " in response.start_line else ""
    return status.startswith("1") or status in ("204", "304")


async def _read_chunked(reader: asyncio.StreamReader) -> bytes:
    body = b""
    while True:
        size_line = await reader.readuntil(b"\r\n")
        body += size_line
        size = int(size_line.split(b";", 1)[0].strip(), 16)
        if size == 0:
            # Trailers, if any, end with an empty line.
            while True:
                line = await reader.readuntil(b"\r\n")
                body += line
                if line == b"\r\n":
                    return body
        body += await reader.readexactly(size + 2)


def _reset(writer: asyncio.StreamWriter) -> None:
    """Close a connection with a TCP reset: SO_LINGER 0, then abort."""
    sock = writer.get_extra_info("socket")
    if sock is not None:
        with contextlib.suppress(OSError):
            sock.setsockopt(
                socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0)
            )
    writer.transport.abort()


def _status_response(fault: Fault) -> bytes:
    body = json.dumps(
        {"message": f"injected {fault.status} from the test proxy"}
    ).encode()
    headers = [
        f"HTTP/1.1 {fault.status} Injected",
        "Content-Type: application/json",
        f"Content-Length: {len(body)}",
    ]
    if fault.retry_after is not None:
        headers.append(f"Retry-After: {fault.retry_after}")
    return ("\r\n".join(headers) + "\r\n\r\n").encode() + body


def _check_loopback(host: str) -> None:
    if host != "localhost" and not ipaddress.ip_address(host).is_loopback:
        raise ValueError(f"the test proxy only works on loopback, not {host!r}")


class FaultProxy:
    """An HTTP/1.1 proxy on 127.0.0.1 in front of ``upstream_port``, in a thread."""

    def __init__(self, upstream_port: int, *, upstream_host: str = "127.0.0.1") -> None:
        _check_loopback(upstream_host)
        self.upstream_host = upstream_host
        self.upstream_port = upstream_port
        self.port = 0
        self.rules: list[Rule] = []
        self.chooser: Callable[[RequestInfo, bool], Fault] | None = None
        self.events: list[Event] = []
        self.requests: list[RequestInfo] = []
        self._lock = threading.Lock()
        self._connections = 0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._server: asyncio.base_events.Server | None = None
        self._thread: threading.Thread | None = None
        self._tasks: set[asyncio.Task[None]] = set()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    # Control, from the test's thread

    def start(self) -> FaultProxy:
        ready = threading.Event()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(
            target=self._run, args=(ready,), daemon=True, name="fault-proxy"
        )
        self._thread.start()
        if not ready.wait(10) or self._server is None:
            raise RuntimeError("the test proxy did not start within 10 s")
        return self

    def stop(self) -> None:
        if self._loop is None:
            return
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        if self._thread is not None:
            self._thread.join(10)
        self._loop.close()
        self._loop = None

    def pause(self) -> None:
        """Stop listening, so new connections are refused, and cut open ones."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._shutdown(), self._loop).result(10)

    def resume(self) -> None:
        """Listen again on the same port."""
        assert self._loop is not None
        asyncio.run_coroutine_threadsafe(self._listen(), self._loop).result(10)

    def add(
        self,
        fault: Fault,
        *,
        method: str | None = None,
        path: str | None = None,
        times: int | None = 1,
    ) -> Rule:
        rule = Rule(fault, method=method, path=path, times=times)
        with self._lock:
            self.rules.append(rule)
        return rule

    def count(self, kind: FaultKind) -> int:
        with self._lock:
            return sum(1 for event in self.events if event.fault == kind)

    def counts(self) -> dict[str, int]:
        """Return how often each fault was applied, by :attr:`Event.label`."""
        totals: dict[str, int] = {}
        with self._lock:
            for event in self.events:
                totals[event.label] = totals.get(event.label, 0) + 1
        return totals

    # The event loop

    def _run(self, ready: threading.Event) -> None:
        assert self._loop is not None
        asyncio.set_event_loop(self._loop)
        self._loop.run_until_complete(self._listen())
        ready.set()
        self._loop.run_forever()

    async def _listen(self) -> None:
        self._server = await asyncio.start_server(
            self._serve,
            "127.0.0.1",
            self.port,
            limit=MAX_HEAD_BYTES,
            reuse_address=True,
        )
        self.port = self._server.sockets[0].getsockname()[1]

    async def _shutdown(self) -> None:
        if self._server is not None:
            self._server.close()
            await self._server.wait_closed()
            self._server = None
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)

    def _choose(self, info: RequestInfo, on_accept: bool) -> Fault:
        with self._lock:
            if not on_accept:
                self.requests.append(info)
            if self.chooser is not None:
                fault = self.chooser(info, on_accept)
            else:
                fault = Fault.passthrough()
                for rule in self.rules:
                    if rule.matches(info, on_accept):
                        if rule.times is not None:
                            rule.times -= 1
                        fault = rule.fault
                        break
            if fault.kind != FaultKind.PASS:
                status = fault.status if fault.kind == FaultKind.STATUS else None
                self.events.append(Event(fault.kind, info, status))
            return fault

    async def _serve(
        self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        with self._lock:
            self._connections += 1
            number = self._connections
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None = None
        try:
            fault = self._choose(RequestInfo(number, 0), on_accept=True)
            if fault.kind == FaultKind.RESET_ON_ACCEPT:
                _reset(writer)
                return
            if fault.kind == FaultKind.CLOSE_ON_ACCEPT:
                writer.close()
                return
            index = 0
            while True:
                request = await _read_message(reader, is_response=False)
                if request is None:
                    return
                index += 1
                method, _, rest = request.start_line.partition(" ")
                info = RequestInfo(
                    number, index, method, rest.rsplit(" ", 1)[0], request.body
                )
                fault = self._choose(info, on_accept=False)
                upstream, keep_open = await self._handle(
                    request, fault, writer, upstream
                )
                if not keep_open:
                    return
        except (ConnectionError, asyncio.IncompleteReadError, OSError):
            return
        except asyncio.CancelledError:
            _reset(writer)
            raise
        finally:
            self._tasks.discard(task)
            if upstream is not None:
                upstream[1].close()
            if not writer.transport.is_closing():
                writer.close()

    async def _handle(
        self,
        request: _Message,
        fault: Fault,
        writer: asyncio.StreamWriter,
        upstream: tuple[asyncio.StreamReader, asyncio.StreamWriter] | None,
    ) -> tuple[tuple[asyncio.StreamReader, asyncio.StreamWriter] | None, bool]:
        """Apply ``fault`` to one request; return the upstream and whether to go on."""
        kind = fault.kind
        if kind == FaultKind.RESET_BEFORE_FORWARD:
            _reset(writer)
            return upstream, False
        if kind == FaultKind.STATUS:
            writer.write(_status_response(fault))
            await writer.drain()
            return upstream, True
        if kind == FaultKind.STALL:
            await (
                asyncio.Event().wait()
            )  # until the client goes away or the proxy stops
        if kind == FaultKind.DELAY:
            await asyncio.sleep(fault.seconds)

        sends = 2 if kind == FaultKind.DUPLICATE else 1
        response = None
        for _ in range(sends):
            upstream = upstream or await asyncio.open_connection(
                self.upstream_host, self.upstream_port
            )
            upstream[1].write(request.raw)
            await upstream[1].drain()
            response = await _read_message(upstream[0], is_response=True)
            if response is None:
                raise ConnectionError("upstream closed without a response")
            if response.closes:
                upstream[1].close()
                upstream = None
        assert response is not None

        if kind == FaultKind.CUT_AFTER_RESPONSE_START:
            writer.write(response.raw[: fault.keep_bytes])
            await writer.drain()
            _reset(writer)
            return upstream, False
        if kind == FaultKind.TRUNCATE:
            writer.write(response.raw[: fault.keep_bytes])
            await writer.drain()
            writer.close()
            return upstream, False
        writer.write(response.raw)
        await writer.drain()
        return upstream, not (response.closes or request.closes)


def every_request_fault() -> list[Fault]:
    """Return one fault of each request kind a client must survive by retrying.

    ``STALL`` is left out: it costs a whole client timeout per hit.
    """
    return [
        Fault.reset_before_forward(),
        Fault.cut_after_response_start(),
        Fault.truncate(keep_bytes=40),
        Fault.answer(502),
        Fault.answer(503, retry_after="0"),
        Fault.answer(429),
        Fault.answer(429, retry_after="0"),
        Fault.duplicate(),
        Fault.delay(0.05),
    ]


@dataclass
class RandomFaults:
    """A ``chooser`` that picks a fault for a share ``rate`` of requests, seeded.

    ``connection_rate`` is the share of new connections that get one of
    ``connection_faults`` before any request is read. It is 0 unless set, so
    existing callers get request faults only.
    """

    rate: float
    faults: list[Fault] = field(
        default_factory=lambda: [
            Fault.reset_before_forward(),
            Fault.cut_after_response_start(),
            Fault.answer(503, retry_after="0"),
            Fault.answer(429),
            Fault.duplicate(),
        ]
    )
    seed: int = 0
    connection_rate: float = 0.0
    connection_faults: list[Fault] = field(
        default_factory=lambda: [Fault.reset_on_accept(), Fault.close_on_accept()]
    )

    def __post_init__(self) -> None:
        self._random = random.Random(self.seed)

    def __call__(self, info: RequestInfo, on_accept: bool) -> Fault:
        if on_accept:
            if self._random.random() >= self.connection_rate:
                return Fault.passthrough()
            return self._random.choice(self.connection_faults)
        if self._random.random() >= self.rate:
            return Fault.passthrough()
        return self._random.choice(self.faults)


@dataclass
class FaultScript:
    """A ``chooser`` that applies ``faults`` in order, one per matching request.

    A request matches when its method and path prefix match (``None`` matches
    any); other requests pass through and consume nothing. ``on_accept`` is a
    second list, consumed one entry per new connection. Once a list is used up,
    the proxy passes everything through.
    """

    faults: list[Fault]
    method: str | None = None
    path: str | None = None
    on_accept: list[Fault] = field(default_factory=list)
    used: int = 0
    accepted: int = 0

    def __call__(self, info: RequestInfo, on_accept: bool) -> Fault:
        if on_accept:
            if self.accepted >= len(self.on_accept):
                return Fault.passthrough()
            self.accepted += 1
            return self.on_accept[self.accepted - 1]
        if not self._matches(info) or self.used >= len(self.faults):
            return Fault.passthrough()
        self.used += 1
        return self.faults[self.used - 1]

    @property
    def done(self) -> bool:
        """Whether every scripted fault has been handed out."""
        return self.used >= len(self.faults) and self.accepted >= len(self.on_accept)

    def _matches(self, info: RequestInfo) -> bool:
        if self.method is not None and info.method != self.method:
            return False
        return self.path is None or info.path.startswith(self.path)
