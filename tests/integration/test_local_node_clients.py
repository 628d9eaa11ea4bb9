"""What other SDKs (golem-js 3.6, golem-core 0.7.8) need of the local node, over plain HTTP on loopback.

Each test is one finding of running those clients against the node (``docs/fidelity.md``): the public version
route, agreements that name the subscriptions, the old registry's ``/image.<hash>.link`` and images published by
the requestor over gftp. ``tests/fidelity/test_golem_js.py`` and ``test_golem_core.py`` run the clients themselves.
"""

from __future__ import annotations

import json
import shutil
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from golem_local.config import LocalNetworkConfig
from golem_local.images.format import ImageMetadata, write_gvmi
from golem_local.images.registry import ImageRegistry
from golem_local.node import TASK_PACKAGE, LocalNode
from golem_shared.gftp import gftp_url
from tests.integration.agreements import ACTIVITY, approved_agreement, call
from tests.integration.test_local_gsb import DOWNLOAD, GftpPeer
from tests.integration.test_local_node_market import M, negotiate
from tests.tinyroot import make_tiny_root

pytestmark = pytest.mark.integration

needs_images = pytest.mark.skipif(
    shutil.which("bwrap") is None or shutil.which("mksquashfs") is None,
    reason="bubblewrap and squashfs-tools are needed (scripts/bootstrap.sh installs them)",
)
METADATA = ImageMetadata(env=("PATH=/bin", "GREETING=from-gftp"), working_dir="/")


def tiny_image(tmp_path: Path) -> tuple[Path, str]:
    """A small real GVMI (the host's sh and coreutils) and its hash."""
    path = tmp_path / "tiny.gvmi"
    digest = write_gvmi(make_tiny_root(tmp_path / "tree"), METADATA, path)
    return path, digest


async def test_the_version_is_public_and_new_enough_for_golem_js(local_node: LocalNode) -> None:
    for headers in ({}, {"Authorization": f"Bearer {local_node.app_key}"}, {"Authorization": "Bearer wrong"}):
        async with aiohttp.ClientSession(base_url=local_node.url, headers=headers) as session:
            status, body = await call(session, "GET", "/version/get")
        assert status == 200, body
        assert set(body) == {"current", "pending"}
        assert body["pending"] is None
        current = body["current"]
        assert set(current) == {"version", "name", "seen", "releaseTs", "insertionTs", "updateTs"}
        major, minor, patch = (int(part) for part in current["version"].split("."))
        assert (major, minor, patch) >= (0, 15, 2), "golem-js refuses daemons older than 0.15.2"
        assert current["seen"] is True
    async with aiohttp.ClientSession(base_url=local_node.url) as anonymous:
        assert (await call(anonymous, "GET", "/me"))[0] == 401, "only the version route is public"
        assert (await call(anonymous, "GET", "/version/get/more"))[0] == 401


async def test_an_agreement_names_the_demand_and_offer_subscriptions(
    local_node: LocalNode, http: aiohttp.ClientSession
) -> None:
    demand_id, counter_id, draft = await negotiate(http, local_node)
    assert draft["prevProposalId"] == counter_id
    status, agreement_id = await call(
        http, "POST", f"{M}/agreements", {"proposalId": draft["proposalId"], "validTo": "2099-01-01T00:00:00Z"}
    )
    assert status == 200, agreement_id
    status, agreement = await call(http, "GET", f"{M}/agreements/{agreement_id}")
    assert status == 200, agreement
    # yagna: the subscriptions (POST /demands, the provider's POST /offers), not the last proposals; golem-js looks
    # its demand up by this id and gives the agreement up when it is unknown.
    assert agreement["demand"]["demandId"] == demand_id
    (provider,) = [p for p in local_node.providers if p.node_id == agreement["offer"]["providerId"]]
    assert agreement["offer"]["offerId"] == provider.offer_id
    assert agreement["offer"]["offerId"] != draft["proposalId"]
    assert agreement["demand"]["properties"]["golem.com.payment.chosen-platform"] == "erc20-holesky-tglm"


@pytest.fixture
async def registry_node(tmp_path: Path) -> AsyncIterator[tuple[LocalNode, str]]:
    """A node without providers serving a registry that holds one small image: (node, its hash)."""
    registry = ImageRegistry(tmp_path / "registry")
    path, digest = tiny_image(tmp_path)
    registry.add(path, tag="tests/tiny:1")
    async with LocalNode(LocalNetworkConfig(providers=(), image_registry=registry.root)) as node:
        yield node, digest


@needs_images
async def test_the_old_registry_route_gives_the_download_url_as_plain_text(
    registry_node: tuple[LocalNode, str],
) -> None:
    node, digest = registry_node
    async with aiohttp.ClientSession(base_url=node.url) as anonymous:  # public, as the registry is
        async with anonymous.get(f"/image.{digest}.link") as response:
            assert response.status == 200
            assert response.content_type == "text/plain"
            link = await response.text()
        # golem-core and yapapi use the text as it is: no newline, nothing around the URL
        assert link == f"{node.url}/v1/image/download/{digest}"
        async with anonymous.get(f"/image.{'ab' * 28}.link") as response:
            assert response.status == 404
            assert "ab" * 28 in (await response.json())["message"]
        async with anonymous.get("/image.not-a-hash.link") as response:
            assert response.status == 400
            assert "not-a-hash" in (await response.json())["message"]
    async with aiohttp.ClientSession() as provider, provider.head(link) as response:
        assert response.status == 200


@pytest.fixture
async def one_provider() -> AsyncIterator[LocalNode]:
    async with LocalNode(LocalNetworkConfig.with_providers(1, debit_note_interval_sec=3600)) as node:
        yield node


@needs_images
async def test_an_image_the_requestor_publishes_over_gftp_is_deployed(tmp_path: Path, one_provider: LocalNode) -> None:
    """golem-js's ``imageUrl: "file://..."``: the task package names ``gftp://<requestor>/<id>``."""
    node = one_provider
    path, digest = tiny_image(tmp_path)
    headers = {"Authorization": f"Bearer {node.app_key}"}
    async with (
        aiohttp.ClientSession(base_url=node.url, headers=headers) as http,
        GftpPeer(http, "tiny-image", DOWNLOAD, path.read_bytes()) as peer,
    ):
        package = f"hash:sha3:{digest}:{gftp_url(node.requestor_id, peer.file_id)}"
        agreement_id = await approved_agreement(http, node, extra_properties={TASK_PACKAGE: package})
        status, activity_id = await call(http, "POST", f"{ACTIVITY}/activity", agreement_id)
        assert status == 200, activity_id
        run = {"entry_point": "/bin/sh", "args": ["-c", "echo $GREETING"], "capture": {"stdout": {"atEnd": {}}}}
        script: list[dict[str, Any]] = [{"deploy": {}}, {"start": {}}, {"run": run}]
        exec_path = f"{ACTIVITY}/activity/{activity_id}/exec"
        status, batch = await call(http, "POST", exec_path, {"text": json.dumps(script)})
        assert status == 200, batch
        status, results = await call(http, "GET", f"{exec_path}/{batch}", commandIndex=2, timeout=60)
        assert status == 200, results
        assert [r["result"] for r in results] == ["Ok", "Ok", "Ok"], results
        assert results[2]["stdout"].strip() == "from-gftp", "the image's own environment"
        assert "GetChunk" in peer.requests
    assert node.image_cache is not None
    assert node.image_cache.downloads == {digest: 1}
