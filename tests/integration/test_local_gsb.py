"""The GSB API of the local node and the provider side of ``transfer``, over real HTTP and a raw WebSocket.

The requestor side here is hand-made (aiohttp WebSocket + the FlexBuffers codec of ``golem_shared.gftp``), as
a browser or golem-js would do it, so that the node is checked against the wire, not against our own client.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import json
import random
from collections.abc import AsyncIterator
from typing import Any

import aiohttp
import pytest
from aiohttp import web

from golem_local.config import LocalNetworkConfig
from golem_local.node import LocalNode
from golem_local.transfer import FETCH_CHUNK_SIZE
from golem_shared.gftp import (
    GSB_SUBPROTOCOL,
    GsbResponse,
    decode_request,
    encode_response,
    gftp_address,
    gftp_url,
)
from tests.integration.agreements import ACTIVITY, call, new_activity

pytestmark = pytest.mark.integration

GSB = "/gsb-api/v1"
DOWNLOAD = ["GetMetadata", "GetChunk"]
UPLOAD = ["UploadChunk", "UploadFinished"]
FIVE_MIB = random.Random(7).randbytes(5 * 1024 * 1024)


@pytest.fixture
async def local_node() -> AsyncIterator[LocalNode]:
    """Overrides the conftest's node: one provider that bills hourly."""
    async with LocalNode(LocalNetworkConfig.with_providers(1, debit_note_interval_sec=3600)) as node:
        yield node


class GftpPeer:
    """The requestor's side of one bound gftp service: serves ``data`` and collects uploads.

    ``error`` makes it answer every request with that error; ``hold`` makes it keep requests unanswered
    (``requests`` still records them).
    """

    def __init__(self, http: aiohttp.ClientSession, file_id: str, components: list[str], data: bytes = b"") -> None:
        self.http = http
        self.file_id = file_id
        self.components = components
        self.data = data
        self.uploaded: dict[int, bytes] = {}
        self.finished_hash: str | None = None
        self.error: dict[str, str] | None = None
        self.hold = False
        self.requests: list[str] = []
        self.first_request = asyncio.Event()
        self.services_id = ""
        self.socket: aiohttp.ClientWebSocketResponse[bool] | None = None
        self._task: asyncio.Task[None] | None = None

    async def __aenter__(self) -> GftpPeer:
        body = {"listen": {"on": gftp_address(self.file_id), "components": self.components}}
        status, bound = await call(self.http, "POST", f"{GSB}/services", body)
        assert status == 201, bound
        self.services_id = bound["servicesId"]
        self.socket = await self.http.ws_connect(f"{GSB}/services/{self.services_id}", protocols=(GSB_SUBPROTOCOL,))
        self._task = asyncio.create_task(self._serve())
        return self

    async def __aexit__(self, *_exc: object) -> None:
        assert self._task is not None
        assert self.socket is not None
        self._task.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await self._task
        await self.socket.close()

    async def _serve(self) -> None:
        assert self.socket is not None
        async for message in self.socket:
            assert message.type is aiohttp.WSMsgType.BINARY
            request = decode_request(message.data)
            self.requests.append(request.component)
            self.first_request.set()
            if self.hold:
                continue
            await self.socket.send_bytes(encode_response(self._answer(request.id, request.component, request.payload)))

    def _answer(self, call_id: str, component: str, payload: Any) -> GsbResponse:
        if self.error is not None:
            return GsbResponse(id=call_id, error=self.error)
        if component == "GetMetadata":
            return GsbResponse(id=call_id, payload={"fileSize": len(self.data)})
        if component == "GetChunk":
            offset, size = payload["offset"], payload["size"]
            return GsbResponse(id=call_id, payload={"offset": offset, "content": self.data[offset : offset + size]})
        if component == "UploadChunk":
            self.uploaded[payload["chunk"]["offset"]] = payload["chunk"]["content"]
            return GsbResponse(id=call_id, payload=None)
        self.finished_hash = payload.get("hash")
        return GsbResponse(id=call_id, payload=None)

    async def wait_closed(self) -> None:
        """Until the node has closed the WebSocket (the serving loop then ends)."""
        assert self._task is not None
        await asyncio.wait_for(asyncio.shield(self._task), 10)

    def received(self) -> bytes:
        data = b""
        for offset in sorted(self.uploaded):
            assert offset == len(data), "uploaded chunks must tile the file"
            data += self.uploaded[offset]
        return data


class Activity:
    def __init__(self, http: aiohttp.ClientSession, activity_id: str, node: LocalNode) -> None:
        self.http = http
        self.path = f"{ACTIVITY}/activity/{activity_id}"
        self.node = node

    def url(self, file_id: str) -> str:
        return gftp_url(self.node.requestor_id, file_id)

    async def run(self, commands: list[dict[str, Any]]) -> list[dict[str, Any]]:
        """Exec ``commands`` and return the results once the batch has ended."""
        status, batch = await call(self.http, "POST", f"{self.path}/exec", {"text": json.dumps(commands)})
        assert status == 200, batch
        status, results = await call(
            self.http, "GET", f"{self.path}/exec/{batch}", commandIndex=len(commands) - 1, timeout=30
        )
        assert status == 200, results
        return list(results)


@pytest.fixture
async def ready(local_node: LocalNode, http: aiohttp.ClientSession) -> Activity:
    """A deployed and started activity."""
    activity = Activity(http, await new_activity(http, local_node), local_node)
    results = await activity.run([{"deploy": {}}, {"start": {}}])
    assert [r["result"] for r in results] == ["Ok", "Ok"]
    return activity


def transfer(source: str, destination: str) -> dict[str, Any]:
    return {"transfer": {"from": source, "to": destination}}


def shell(script: str) -> dict[str, Any]:
    return {"run": {"entry_point": "/bin/sh", "args": ["-c", script], "capture": {"stdout": {"atEnd": {}}}}}


async def test_a_5_mib_file_goes_in_and_comes_back_byte_for_byte(ready: Activity, http: aiohttp.ClientSession) -> None:
    async with GftpPeer(http, "in-file", DOWNLOAD, FIVE_MIB) as source, GftpPeer(http, "out-file", UPLOAD) as sink:
        results = await ready.run(
            [
                transfer(ready.url("in-file"), "container:/golem/in/sub/data.bin"),
                shell("wc -c < /golem/in/sub/data.bin; sha256sum /golem/in/sub/data.bin | cut -d' ' -f1"),
                transfer("container:/golem/in/sub/data.bin", ready.url("out-file")),
            ]
        )
    assert [r["result"] for r in results] == ["Ok", "Ok", "Ok"], results
    size, digest = results[1]["stdout"].split()
    assert int(size) == len(FIVE_MIB)
    assert digest == hashlib.sha256(FIVE_MIB).hexdigest()
    assert source.requests[0] == "GetMetadata"
    # chunked, not one 5 MiB frame
    assert source.requests.count("GetChunk") == -(-len(FIVE_MIB) // FETCH_CHUNK_SIZE) >= 2
    assert sink.received() == FIVE_MIB
    assert sink.finished_hash == hashlib.sha3_256(FIVE_MIB).hexdigest()
    assert sink.requests[-1] == "UploadFinished"


async def test_container_copies_and_an_empty_file(ready: Activity, http: aiohttp.ClientSession) -> None:
    async with GftpPeer(http, "empty", DOWNLOAD, b"") as _source, GftpPeer(http, "back", UPLOAD) as sink:
        results = await ready.run(
            [
                transfer(ready.url("empty"), "container:/golem/in/empty"),
                transfer("container:/golem/in/empty", "container:/golem/out/copy"),
                shell("wc -c < /golem/out/copy"),
                transfer("container:/golem/out/copy", ready.url("back")),
            ]
        )
    assert [r["result"] for r in results] == ["Ok"] * 4, results
    assert results[2]["stdout"].strip() == "0"
    assert sink.received() == b""
    assert sink.finished_hash == hashlib.sha3_256(b"").hexdigest()


async def test_transfer_failures_are_error_results_that_say_why(ready: Activity, http: aiohttp.ClientSession) -> None:
    cases = [
        (
            transfer(ready.url("never-bound"), "container:/golem/in/x"),
            "no GSB service is bound on /public/gftp/never-bound",
        ),
        (transfer(gftp_url("0x" + "1" * 40, "f"), "container:/golem/in/x"), "the only requestor"),
        (transfer("container:/golem/in/missing", ready.url("x")), "does not exist"),
        (transfer("container:/etc/passwd", ready.url("x")), "not inside a volume"),
        (transfer("ftp://example/file", "container:/golem/in/x"), "cannot transfer from 'ftp://example/file'"),
        (transfer("container:/golem/in/x", "https://example/up"), "uploads to http(s) are not supported"),
    ]
    for command, expected in cases:
        results = await ready.run([command])
        assert results[0]["result"] == "Error", command
        assert results[0]["message"].startswith("transfer failed: "), results[0]
        assert expected in results[0]["message"], results[0]["message"]

    async with GftpPeer(http, "broken", DOWNLOAD, b"data") as peer:
        peer.error = {"ReadError": "Can't read from file. disk on fire"}
        results = await ready.run([transfer(ready.url("broken"), "container:/golem/in/broken")])
    assert "answered an error: ReadError: Can't read from file. disk on fire" in results[0]["message"]
    listing = await ready.run([shell("ls /golem/in")])
    assert "broken" not in (listing[0]["stdout"] or "")  # no partial file is left behind


async def test_an_http_download_lands_in_the_volume(ready: Activity) -> None:
    async def serve(request: web.BaseRequest) -> web.StreamResponse:
        if request.path != "/file.bin":
            return web.Response(status=404)
        return web.Response(body=FIVE_MIB[:100_000])

    server = web.Server(serve)
    runner = web.ServerRunner(server, access_log=None)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        port = runner.addresses[0][1]
        results = await ready.run(
            [
                transfer(f"http://127.0.0.1:{port}/file.bin", "container:/golem/in/web.bin"),
                shell("sha256sum /golem/in/web.bin | cut -d' ' -f1"),
                transfer(f"http://127.0.0.1:{port}/missing", "container:/golem/in/missing"),
            ]
        )
    finally:
        await runner.cleanup()
    assert results[1]["stdout"].strip() == hashlib.sha256(FIVE_MIB[:100_000]).hexdigest()
    assert results[2]["result"] == "Error"
    assert "answered 404" in results[2]["message"]


async def test_unbinding_fails_the_waiting_call_and_closes_the_socket(
    ready: Activity, http: aiohttp.ClientSession
) -> None:
    async with GftpPeer(http, "slow", DOWNLOAD, b"data") as peer:
        peer.hold = True
        status, batch = await call(
            http,
            "POST",
            f"{ready.path}/exec",
            {"text": json.dumps([transfer(ready.url("slow"), "container:/golem/in/slow")])},
        )
        assert status == 200
        await asyncio.wait_for(peer.first_request.wait(), 10)
        assert await call(http, "DELETE", f"{GSB}/services/{peer.services_id}") == (200, None)
        status, results = await call(http, "GET", f"{ready.path}/exec/{batch}", commandIndex=0, timeout=10)
        await peer.wait_closed()
        assert peer.socket is not None
        assert peer.socket.closed
    assert results[0]["result"] == "Error"
    assert "were unbound" in results[0]["message"]
    assert (await call(http, "DELETE", f"{GSB}/services/{peer.services_id}"))[0] == 404


async def test_services_binding_links_and_app_key_rules(local_node: LocalNode, http: aiohttp.ClientSession) -> None:
    body = {"listen": {"on": "/public/gftp/abc", "components": DOWNLOAD}}
    status, bound = await call(http, "POST", f"{GSB}/services", body)
    assert status == 201
    sid = bound["servicesId"]
    assert bound["listen"] == body["listen"]  # as the daemon answers: no "links"
    status, again = await call(http, "POST", f"{GSB}/services", body)
    assert status == 400
    assert "already bound" in again["message"]
    assert (await call(http, "POST", f"{GSB}/services", {"listen": {"on": "/x"}}))[0] == 400

    async with aiohttp.ClientSession(base_url=local_node.url) as anonymous:
        with pytest.raises(aiohttp.WSServerHandshakeError) as refused:
            await anonymous.ws_connect(f"{GSB}/services/{sid}", protocols=(GSB_SUBPROTOCOL,))
        assert refused.value.status == 401
        socket = await anonymous.ws_connect(
            f"{GSB}/services/{sid}", protocols=(GSB_SUBPROTOCOL,), params={"authToken": local_node.app_key}
        )
        assert socket.protocol == GSB_SUBPROTOCOL
        await socket.close()
    with pytest.raises(aiohttp.WSServerHandshakeError) as unknown:
        await http.ws_connect(f"{GSB}/services/nope", protocols=(GSB_SUBPROTOCOL,))
    assert unknown.value.status == 404

    assert await call(http, "DELETE", f"{GSB}/services/{sid}") == (200, None)
    assert (await call(http, "DELETE", f"{GSB}/services/{sid}"))[0] == 404


async def test_a_call_with_nobody_connected_ends_at_its_timeout(
    local_node: LocalNode, http: aiohttp.ClientSession
) -> None:
    body = {"listen": {"on": "/public/gftp/lonely", "components": DOWNLOAD}}
    assert (await call(http, "POST", f"{GSB}/services", body))[0] == 201
    with pytest.raises(Exception, match="nobody connected to the WebSocket") as failure:
        await local_node.gsb.call("/public/gftp/lonely", "GetMetadata", {}, timeout=0.2)
    assert "gsb-api/v1/services/" in str(failure.value)
    with pytest.raises(Exception, match="does not listen for UploadChunk"):
        await local_node.gsb.call("/public/gftp/lonely", "UploadChunk", {}, timeout=0.2)
