"""The requestor's receiving side of gftp (:class:`golem_api.activity.storage.Receiving`) against a real local node.

The provider's side is played through the node's own :class:`~golem_local.gsb.GsbRouter` (what its exe-unit
calls), so that the chunks, their order, their number in flight and the hash at the end are the test's to
choose: several chunks outstanding at once, chunks out of order, and a chunk corrupted on the way, which the
SHA3-256 the provider sends at the end must reveal.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tracemalloc
from collections.abc import AsyncIterator

import pytest

from golem_api import Golem, LocalNetworkConfig, VmPayload
from golem_api._rest.client import RestClient
from golem_api._rest.config import ApiConfig
from golem_api.activity.storage import GsbStorage, Receiving
from golem_api.errors import TransferError
from golem_local.gsb import GsbCallError
from golem_local.node import LocalNode
from golem_shared.gftp import UPLOAD_CHUNK, UPLOAD_FINISHED, gftp_address

pytestmark = pytest.mark.integration

BOUND = 20.0
CHUNK = 1 << 20


@pytest.fixture
async def node() -> AsyncIterator[LocalNode]:
    async with LocalNode(LocalNetworkConfig.with_providers(1, debit_note_interval_sec=3600)) as local:
        yield local


@pytest.fixture
async def storage(node: LocalNode) -> AsyncIterator[GsbStorage]:
    async with RestClient(ApiConfig.for_node(node.url, node.app_key)) as rest, GsbStorage(rest) as opened:
        yield opened


def _address(receiving: Receiving) -> str:
    return gftp_address(receiving.url.rsplit("/", 1)[1])


async def _send(node: LocalNode, receiving: Receiving, data: bytes, order: list[int], *, in_flight: int) -> None:
    """Upload ``data`` to ``receiving`` as the provider does, chunks in ``order``, ``in_flight`` at once."""
    address = _address(receiving)
    offsets = [index * CHUNK for index in order]
    for start in range(0, len(offsets), in_flight):
        await asyncio.gather(
            *(
                node.gsb.call(
                    address,
                    UPLOAD_CHUNK,
                    {"chunk": {"offset": offset, "content": data[offset : offset + CHUNK]}},
                    timeout=BOUND,
                )
                for offset in offsets[start : start + in_flight]
            )
        )


async def test_chunks_sent_eight_at_a_time_arrive_whole_and_the_hash_checks(
    node: LocalNode, storage: GsbStorage
) -> None:
    data = os.urandom(20 * CHUNK + 12345)
    receiving = await storage.receive_bytes()
    await _send(node, receiving, data, list(range(21)), in_flight=8)
    finished = node.gsb.call(
        _address(receiving), UPLOAD_FINISHED, {"hash": hashlib.sha3_256(data).hexdigest()}, timeout=BOUND
    )
    await finished
    assert await receiving.result(BOUND) == data


async def test_chunks_out_of_order_are_still_checked_against_the_hash(node: LocalNode, storage: GsbStorage) -> None:
    data = os.urandom(6 * CHUNK)
    receiving = await storage.receive_bytes()
    await _send(node, receiving, data, [0, 2, 1, 5, 4, 3], in_flight=3)
    wrong = hashlib.sha3_256(data[:-1] + b"?").hexdigest()
    with pytest.raises(GsbCallError, match="IntegrityError"):
        await node.gsb.call(_address(receiving), UPLOAD_FINISHED, {"hash": wrong}, timeout=BOUND)
    with pytest.raises(TransferError, match=f"has SHA3-256 {hashlib.sha3_256(data).hexdigest()}, but the provider"):
        await receiving.result(BOUND)


async def test_a_chunk_corrupted_on_the_way_fails_the_download_naming_both_hashes(
    node: LocalNode, storage: GsbStorage, tmp_path: os.PathLike[str]
) -> None:
    data = os.urandom(5 * CHUNK)
    corrupted = bytearray(data)
    corrupted[3 * CHUNK + 7] ^= 0xFF
    receiving = await storage.receive_file(tmp_path / "file")  # type: ignore[operator]
    await _send(node, receiving, bytes(corrupted), list(range(5)), in_flight=4)
    expected = hashlib.sha3_256(data).hexdigest()
    with pytest.raises(GsbCallError, match="IntegrityError"):
        await node.gsb.call(_address(receiving), UPLOAD_FINISHED, {"hash": expected}, timeout=BOUND)
    with pytest.raises(TransferError, match=f"but the provider sent {expected}"):
        await receiving.wait(BOUND)


async def test_download_bytes_holds_the_file_once_not_twice(tmp_path: os.PathLike[str]) -> None:
    """What ``download_bytes`` allocates while 24 MiB come in: about the bytes it returns, not a buffer and a copy
    (Python's own allocations, node and requestor together, as ``tracemalloc`` counts them)."""
    size = 24 * CHUNK
    async with Golem(budget=1.0, local_network=LocalNetworkConfig.with_providers(1)) as golem:
        agreement = await (await golem.create_demand(VmPayload())).agreement(timeout=BOUND)
        ctx = golem.work_context(await agreement.create_activity())
        script = ctx.new_script(timeout=BOUND)
        script.deploy()
        script.start()
        script.run("/bin/sh", "-c", f"head -c {size} /dev/urandom > /golem/work/big")
        await ctx.run_script(script)
        script = ctx.new_script(timeout=BOUND * 3)
        download = script.download_bytes("/golem/work/big")
        tracemalloc.start()
        try:
            await ctx.run_script(script)
            data = await download
            _now, peak = tracemalloc.get_traced_memory()
        finally:
            tracemalloc.stop()
        await agreement.terminate()
    assert len(data) == size
    assert peak < 1.5 * size, f"download_bytes of {size} bytes peaked at {peak} bytes of Python allocations"
