"""``golem-api gftp server``: the daemon's ``gftp server`` program, served through the node's GSB API.

yapapi (and other SDKs of its generation) move files with a child process: it runs ``gftp server`` through the
shell, writes one JSON-RPC 2.0 request per line on its standard input and reads one response per line from its
standard output, one call at a time. The daemon ships that program as a binary speaking to the daemon's bus;
this module answers the same calls with golem-api's :class:`~golem_api.activity.storage.GsbStorage`, so it
needs nothing but the node's REST API (``YAGNA_APPKEY``, ``YAGNA_API_URL``, read as yapapi reads them) and
works against the local node and a real daemon alike. The calls (params by name):

==========================  ===============================  ==================================================
method                      params                           result
==========================  ===============================  ==================================================
``version``                 —                                ``"0.17.6 (golem-api)"``: from 0.7.3 on, yapapi
                                                             closes the URLs it no longer needs
``publish``                 ``{"files": [path, …]}``         ``[{"file": path, "url": "gftp://<node>/<id>"}]``
``receive``                 ``{"output_file": path}``        ``{"file": path, "url": "gftp://<node>/<id>"}``
``close``                   ``{"urls": [url, …]}``           ``["ok" | "error", …]`` (``error``: not open here)
``shutdown``                —                                ``"ok"``; every URL is closed, then the program ends
==========================  ===============================  ==================================================

A published file is served chunk by chunk from disk for as long as its URL is open; a received file is
written where the provider's chunks say as they come, and is complete when the provider's ``transfer``
command ends. Failures answer with a JSON-RPC error object (``code``, ``message``) naming the offending value;
``upload`` (pushing a file to another node) is not offered. The program ends on ``shutdown``, at the end of its
input (its parent is gone), or on SIGINT/SIGTERM, closing every URL first. Its log goes to standard error
(``RUST_LOG=debug``, which yapapi sets with ``DEBUG_GFTP``, turns on debug lines); standard output carries
nothing but responses.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from golem_api._rest.client import RestClient
from golem_api._rest.config import ApiConfig
from golem_api.activity.storage import GsbStorage, Published, Receiving
from golem_api.errors import ApiError, ConfigurationError, GolemError, NodeUnreachableError
from golem_shared.signals import stop_on_signals

__all__ = ["GFTP_VERSION", "GftpRpcServer", "run_gftp_server", "serve_gftp"]

GFTP_VERSION = "0.17.6"
"""The daemon release whose ``gftp server`` this matches (yapapi only checks that it is at least 0.7.3)."""

_log = logging.getLogger(__name__)

_LINE_LIMIT = 16 * 1024 * 1024  # bytes one request line may take (a publish of many long paths)
_REQUEST_TIMEOUT = 20.0  # seconds one REST call to the node may take (bind, unbind, /me)

# JSON-RPC 2.0 error codes
_PARSE_ERROR = -32700
_INVALID_REQUEST = -32600
_METHOD_NOT_FOUND = -32601
_INVALID_PARAMS = -32602
_SERVER_ERROR = -32000


class _RpcError(Exception):
    """An error answer: a JSON-RPC ``code`` and a message saying what was wrong and what to do."""

    def __init__(self, code: int, message: str) -> None:
        self.code = code
        super().__init__(message)


def _params(request: Mapping[str, Any]) -> Mapping[str, Any]:
    params = request.get("params")
    if params is None or params == []:
        return {}
    if not isinstance(params, dict):
        raise _RpcError(_INVALID_PARAMS, f"params must be an object of named values, got {params!r:.200}")
    return params


def _path_list(params: Mapping[str, Any], name: str) -> list[str]:
    value = params.get(name)
    if not isinstance(value, list) or not all(isinstance(item, str) and item for item in value):
        raise _RpcError(_INVALID_PARAMS, f"{name!r} must be a list of non-empty strings, got {value!r:.200}")
    return value


class GftpRpcServer:
    """Answers gftp JSON-RPC requests with a :class:`GsbStorage`; keeps every URL it opened until closed.

    :meth:`handle_line` takes one request line and gives the response line (``None`` for a notification);
    :meth:`serve` does so for every line of a stream until ``shutdown`` or its end. The storage is the
    caller's: it stays open after ``shutdown``, with nothing left in it.
    """

    def __init__(self, storage: GsbStorage) -> None:
        self.storage = storage
        self._open: dict[str, Published | Receiving] = {}
        self._shut_down = False
        self._methods: dict[str, Callable[[Mapping[str, Any]], Any]] = {
            "close": self._close,
            "publish": self._publish,
            "receive": self._receive,
            "shutdown": self._shutdown,
            "version": self._version,
        }

    def __repr__(self) -> str:
        return f"<GftpRpcServer {len(self._open)} URL(s) open{', shut down' if self._shut_down else ''}>"

    @property
    def shut_down(self) -> bool:
        """True once a ``shutdown`` call was answered."""
        return self._shut_down

    @property
    def urls(self) -> list[str]:
        """The URLs open now (published or receiving), in the order they were opened."""
        return list(self._open)

    async def serve(self, reader: asyncio.StreamReader, write: Callable[[bytes], None]) -> None:
        """Answer each line of ``reader`` through ``write`` until ``shutdown`` or the end of the input."""
        while not self._shut_down:
            try:
                line = await reader.readline()
            except ValueError:  # a line longer than the reader's limit: it cannot be answered by id
                write(_error_line(None, _RpcError(_INVALID_REQUEST, f"a request line exceeds {_LINE_LIMIT} bytes")))
                return
            if not line:
                return
            if not line.strip():
                continue
            reply = await self.handle_line(line)
            if reply is not None:
                write(reply)

    async def handle_line(self, line: bytes | str) -> bytes | None:
        """The response line (ending in a newline) for one request line; ``None`` for a notification."""
        try:
            request = json.loads(line)
        except ValueError as exc:
            return _error_line(None, _RpcError(_PARSE_ERROR, f"the request is not JSON ({exc}): {line!r:.200}"))
        if not isinstance(request, dict):
            return _error_line(None, _RpcError(_INVALID_REQUEST, f"a request must be an object, got {request!r:.200}"))
        request_id = request.get("id")
        try:
            result = await self._call(request)
        except _RpcError as error:
            return None if "id" not in request else _error_line(request_id, error)
        if "id" not in request:
            return None
        return _line({"jsonrpc": "2.0", "id": request_id, "result": result})

    async def _call(self, request: Mapping[str, Any]) -> Any:
        method = request.get("method")
        handler = self._methods.get(method) if isinstance(method, str) else None
        if handler is None:
            known = ", ".join(sorted(self._methods))
            raise _RpcError(_METHOD_NOT_FOUND, f"no method {method!r} in golem-api's gftp server; it offers {known}")
        if self._shut_down:
            raise _RpcError(_SERVER_ERROR, f"{method!r} came after shutdown; start a new gftp server")
        params = _params(request)
        try:
            return await handler(params)
        except _RpcError:
            raise
        except (ApiError, NodeUnreachableError) as exc:
            raise _RpcError(_SERVER_ERROR, f"{method} failed at the node: {exc}") from None
        except GolemError as exc:
            raise _RpcError(_SERVER_ERROR, f"{method} failed: {exc}") from None

    async def _version(self, _params: Mapping[str, Any]) -> str:
        return f"{GFTP_VERSION} (golem-api)"

    async def _publish(self, params: Mapping[str, Any]) -> list[dict[str, str]]:
        files = _path_list(params, "files")
        links: list[dict[str, str]] = []
        opened: list[Published] = []
        try:
            for file in files:
                published = await self.storage.publish_file(Path(file))
                opened.append(published)
                links.append({"file": file, "url": published.url})
        except BaseException:
            for published in opened:  # all or nothing: a failed call leaves no URL open
                await published.aclose()
            raise
        for published in opened:
            self._open[published.url] = published
            _log.debug("published %s as %s", published.url, published)
        return links

    async def _receive(self, params: Mapping[str, Any]) -> dict[str, str]:
        output_file = params.get("output_file")
        if not isinstance(output_file, str) or not output_file:
            raise _RpcError(_INVALID_PARAMS, f"'output_file' must be a non-empty path, got {output_file!r:.200}")
        receiving = await self.storage.receive_file(Path(output_file))
        self._open[receiving.url] = receiving
        _log.debug("receiving %s into %s", receiving.url, output_file)
        return {"file": output_file, "url": receiving.url}

    async def _close(self, params: Mapping[str, Any]) -> list[str]:
        statuses: list[str] = []
        for url in _path_list(params, "urls"):
            service = self._open.pop(url, None)
            if service is None:
                _log.warning("close: %s is not open here", url)
                statuses.append("error")
                continue
            await service.aclose()
            statuses.append("ok")
        return statuses

    async def _shutdown(self, _params: Mapping[str, Any]) -> str:
        await self.aclose()
        self._shut_down = True
        return "ok"

    async def aclose(self) -> None:
        """Close every URL still open (the storage itself stays open)."""
        services, self._open = list(self._open.values()), {}
        for service in services:
            await service.aclose()


def _line(message: Mapping[str, Any]) -> bytes:
    return (json.dumps(message) + "\n").encode()


def _error_line(request_id: Any, error: _RpcError) -> bytes:
    _log.warning("answering with error %d: %s", error.code, error)
    return _line({"jsonrpc": "2.0", "id": request_id, "error": {"code": error.code, "message": str(error)}})


async def _stdin_reader() -> tuple[asyncio.StreamReader, Callable[[], None]]:
    """A reader of standard input and the function that releases it."""
    loop = asyncio.get_running_loop()
    reader = asyncio.StreamReader(limit=_LINE_LIMIT)
    try:
        transport, _ = await loop.connect_read_pipe(lambda: asyncio.StreamReaderProtocol(reader), sys.stdin)
    except (ValueError, OSError):  # a regular file cannot be watched by the loop; it is finite, read it now
        reader.feed_data(sys.stdin.buffer.read())
        reader.feed_eof()
        return reader, _nothing
    return reader, transport.close


def _nothing() -> None:
    """Nothing to release."""


def _write_stdout(data: bytes) -> None:
    sys.stdout.buffer.write(data)
    sys.stdout.buffer.flush()


async def serve_gftp(
    config: ApiConfig,
    reader: asyncio.StreamReader | None = None,
    write: Callable[[bytes], None] | None = None,
) -> int:
    """Serve gftp calls from ``reader`` (default: standard input) to ``write`` (default: standard output)
    through the node of ``config`` until ``shutdown``, the input's end, or SIGINT/SIGTERM.

    Returns the exit code: 0, or 1 when serving broke (the output closed, the node unreachable at close).
    """
    release = _nothing
    if reader is None:
        reader, release = await _stdin_reader()
    loop = asyncio.get_running_loop()
    code = 0
    try:
        with stop_on_signals() as stop:
            async with RestClient(config, request_timeout=_REQUEST_TIMEOUT) as rest, GsbStorage(rest) as storage:
                server = GftpRpcServer(storage)
                serving = loop.create_task(server.serve(reader, write or _write_stdout), name="gftp server")
                stopping = loop.create_task(stop.wait(), name="gftp server stop signal")
                try:
                    await asyncio.wait((serving, stopping), return_when=asyncio.FIRST_COMPLETED)
                finally:
                    for task in (serving, stopping):
                        task.cancel()
                    await asyncio.gather(serving, stopping, return_exceptions=True)
                    await server.aclose()
                failure = serving.exception() if serving.done() and not serving.cancelled() else None
                if failure is not None:
                    _log.error("the gftp server stopped: %s: %s", type(failure).__name__, failure)
                    code = 1
    finally:
        release()
    return code


def run_gftp_server(env: Mapping[str, str] | None = None) -> int:
    """``golem-api gftp server``: serve standard input and output with the node named by ``YAGNA_APPKEY`` and
    ``YAGNA_API_URL`` in ``env`` (default: the environment); returns the exit code."""
    environ = os.environ if env is None else env
    debug = "debug" in environ.get("RUST_LOG", "").lower()
    logging.basicConfig(
        stream=sys.stderr, level=logging.DEBUG if debug else logging.WARNING, format="gftp %(levelname)s %(message)s"
    )
    if not environ.get("YAGNA_APPKEY"):
        print(
            "golem-api gftp server: error: YAGNA_APPKEY is not set; it serves files through a node and needs its "
            "app key (and YAGNA_API_URL, default http://127.0.0.1:7465): `golem-api node` prints both",
            file=sys.stderr,
            flush=True,
        )
        return 1
    try:
        config = ApiConfig.from_env(env=environ)
    except ConfigurationError as exc:
        print(f"golem-api gftp server: error: {exc}", file=sys.stderr, flush=True)
        return 1
    try:
        return asyncio.run(serve_gftp(config))
    except KeyboardInterrupt:  # where signal handlers cannot be installed
        return 130
