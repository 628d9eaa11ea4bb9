"""A TCP proxy between a requestor and a node that injects faults on chosen requests, for tests.

It forwards bytes both ways on loopback and reads only the request line of each HTTP request it sees (the
first line of a chunk sent by the client). A :class:`Fault` matches request lines by a regular expression
and, the next ``times`` times one matches, does one of:

* ``"drop"``: close the connection without forwarding the request (the node never sees it);
* ``"lose_answer"``: forward the request, then close the connection when the node's answer starts, without
  passing it on (the node acted; the client never learns it);
* ``"status"``: answer ``status`` itself (e.g. 503) and close, without forwarding;
* ``"hold"``: keep the request until :meth:`FaultProxy.release`, then forward it (how many requests a client
  has in flight at once shows in the hits).

:meth:`FaultProxy.cut` closes every open connection at once (a network blip); :attr:`refusing` makes it close
new connections as they come (the node looks down). Every injected fault is recorded in :attr:`hits` and
wakes :meth:`FaultProxy.wait_hits`, so that tests synchronise on the fault, not on time.
"""

from __future__ import annotations

import asyncio
import contextlib
import re

from attrs import define, field

__all__ = ["Fault", "FaultProxy"]

_REQUEST_LINE = re.compile(rb"^(GET|POST|PUT|DELETE|PATCH|HEAD|OPTIONS) (\S+) HTTP/1\.[01]\r\n")


@define
class Fault:
    """Inject ``action`` on the next ``times`` requests whose ``METHOD path`` matches ``pattern``."""

    pattern: str
    action: str  # "drop", "lose_answer", "status" or "hold"
    times: int = 1
    status: int = 503
    _regex: re.Pattern[str] = field(init=False)

    def __attrs_post_init__(self) -> None:
        if self.action not in ("drop", "lose_answer", "status", "hold"):
            raise ValueError(f"unknown fault action {self.action!r}")
        self._regex = re.compile(self.pattern)

    def matches(self, request: str) -> bool:
        return self.times > 0 and self._regex.search(request) is not None


class FaultProxy:
    """Listens on ``127.0.0.1:<any port>`` and forwards to ``target`` (``host, port``); see the module docstring."""

    def __init__(self, target_host: str, target_port: int) -> None:
        self._target = (target_host, target_port)
        self.faults: list[Fault] = []
        self.hits: list[tuple[str, str]] = []  # (action, "METHOD path")
        self.requests: list[str] = []
        self.refusing = False
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()
        self._tasks: set[asyncio.Task[None]] = set()
        self._hit = asyncio.Event()
        self._seen = asyncio.Event()
        self._released = asyncio.Event()

    @property
    def url(self) -> str:
        assert self._server is not None
        port = self._server.sockets[0].getsockname()[1]
        return f"http://127.0.0.1:{port}"

    async def __aenter__(self) -> FaultProxy:
        self._server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return self

    async def __aexit__(self, *exc: object) -> None:
        assert self._server is not None
        self._server.close()
        self.cut()
        for task in list(self._tasks):
            task.cancel()
        if self._tasks:
            await asyncio.wait(self._tasks, timeout=5)
        await self._server.wait_closed()

    def add(self, pattern: str, action: str, *, times: int = 1, status: int = 503) -> Fault:
        """Arm a fault (see :class:`Fault`); returns it (its ``times`` counts down as it fires)."""
        fault = Fault(pattern, action, times, status)
        self.faults.append(fault)
        return fault

    def cut(self) -> None:
        """Close every open connection now."""
        for writer in list(self._writers):
            writer.close()

    def release(self) -> None:
        """Forward the held requests, and from now on every request a ``"hold"`` fault matches at once."""
        self._released.set()

    def hits_of(self, action: str) -> list[str]:
        return [request for kind, request in self.hits if kind == action]

    async def wait_hits(self, action: str, count: int, timeout: float) -> None:
        """Wait until ``action`` was injected ``count`` times (at most ``timeout`` s)."""

        async def until() -> None:
            while len(self.hits_of(action)) < count:
                self._hit.clear()
                await self._hit.wait()

        await asyncio.wait_for(until(), timeout)

    async def wait_requests(self, pattern: str, count: int, timeout: float) -> list[str]:
        """Wait until ``count`` requests matching ``pattern`` (``METHOD path``) came (at most ``timeout`` s);
        all those that came."""
        regex = re.compile(pattern)

        def matching() -> list[str]:
            return [request for request in self.requests if regex.search(request)]

        async def until() -> None:
            while len(matching()) < count:
                self._seen.clear()
                await self._seen.wait()

        await asyncio.wait_for(until(), timeout)
        return matching()

    def _record(self, action: str, request: str) -> None:
        self.hits.append((action, request))
        self._hit.set()

    def _match(self, request: str) -> Fault | None:
        for fault in self.faults:
            if fault.matches(request):
                fault.times -= 1
                return fault
        return None

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.current_task()
        assert task is not None
        self._tasks.add(task)
        try:
            await self._relay(reader, writer)
        finally:
            self._tasks.discard(task)

    async def _relay(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.add(writer)
        if self.refusing:
            writer.close()
            self._writers.discard(writer)
            return
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.close()
            self._writers.discard(writer)
            return
        self._writers.add(up_writer)
        lose_answer_of: list[str] = []  # the request whose answer is not passed on

        async def client_to_node() -> None:
            while chunk := await reader.read(65536):
                found = _REQUEST_LINE.match(chunk)
                if found is not None:
                    request = f"{found.group(1).decode()} {found.group(2).decode()}"
                    self.requests.append(request)
                    self._seen.set()
                    fault = self._match(request)
                    if fault is not None and fault.action == "drop":
                        self._record("drop", request)
                        return
                    if fault is not None and fault.action == "status":
                        body = b'{"message":"injected by the fault proxy"}'
                        writer.write(
                            f"HTTP/1.1 {fault.status} Injected\r\nContent-Type: application/json\r\n"
                            f"Content-Length: {len(body)}\r\nConnection: close\r\n\r\n".encode()
                            + body
                        )
                        await writer.drain()
                        self._record("status", request)
                        return
                    if fault is not None and fault.action == "hold":
                        self._record("hold", request)
                        await self._released.wait()
                    elif fault is not None:
                        lose_answer_of.append(request)
                up_writer.write(chunk)
                await up_writer.drain()

        async def node_to_client() -> None:
            while chunk := await up_reader.read(65536):
                if lose_answer_of:
                    self._record("lose_answer", lose_answer_of[0])
                    return
                writer.write(chunk)
                await writer.drain()

        pumps = [asyncio.ensure_future(client_to_node()), asyncio.ensure_future(node_to_client())]
        try:
            await asyncio.wait(pumps, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pass
        finally:
            for pump in pumps:
                pump.cancel()
            await asyncio.wait(pumps)
            for pump in pumps:
                if not pump.cancelled():
                    with contextlib.suppress(OSError, ConnectionError):
                        pump.result()
            for w in (writer, up_writer):
                w.close()
                self._writers.discard(w)
