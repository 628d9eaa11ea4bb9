#!/usr/bin/env python3
"""The http-proxy example: HTTP servers on Golem providers, reached from this machine through a local proxy.

    python examples/http_proxy/http_proxy.py [--num-instances 2] [--port 8080] [--running-time 600] [--requests N]

A VPN joins the requestor and the instances (``golem.create_network``); each instance runs Python's HTTP
server on port 80 of its VPN address, serving a page that names its provider. ``HttpProxy`` listens on
``http://127.0.0.1:PORT`` and sends each request to the next running instance (round-robin) through the
VPN. Open the URL in a browser, or pass ``--requests N`` to have the example send N requests itself and
print the answers. After ``--running-time`` seconds (or Ctrl-C) the proxy and the instances stop, the
providers are paid, and ``Golem`` removes the network.

This is yapapi's ``examples/http-proxy`` for golem-api: ``HttpProxyService`` + ``LocalHttpProxy`` become any
``Service`` + :class:`~golem_api.HttpProxy`. Without ``YAGNA_APPKEY`` it runs on the embedded local network
(needs root for the VPN's network namespaces), with its image built from ``image/`` at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import shlex
import sys
from pathlib import Path

import aiohttp

from golem_api import Golem, HttpProxy, Payload, Service, vm
from golem_api.services.service import Handler

__all__ = ["HttpService", "main"]

HERE = Path(__file__).resolve().parent
IMAGE_DIR = HERE / "image"
IMAGE_TAG = "golem-api/http-proxy:1.0"
STARTING_TIMEOUT = 120.0  # seconds for every instance to get a provider and start

_log = logging.getLogger("http_proxy")


async def build_local_image() -> None:
    """Build ``image/`` into the local registry under :data:`IMAGE_TAG` (about a second, idempotent)."""
    from golem_local.images.builder import build_image

    await build_image(IMAGE_DIR, tag=IMAGE_TAG, log=lambda text: _log.debug("image build: %s", text.rstrip()))


class HttpService(Service):
    """Python's HTTP server on port 80, with a page that says where it runs."""

    @staticmethod
    async def get_payload() -> Payload:
        # run_service(network=…) asks for the "vpn" capability by itself; saying it here does no harm.
        return await vm.repo(image_tag=IMAGE_TAG, capabilities=["vpn"])

    async def start(self) -> Handler:
        # deploy (which carries the network: the instance joins it at its address) and start
        async for script in super().start():
            yield script
        assert self.network_node is not None
        page = f"Hello from inside Golem!\n... running on {self.provider_name} at {self.network_node.ip}\n"
        script = self._ctx.new_script(timeout=30)
        script.run("/bin/sh", "-c", f"echo {shlex.quote(page.rstrip())} > /golem/www/index.html")
        script.run("/golem/run/start-server.sh")
        yield script

    # no `run`: after the start, everything goes through the VPN


async def send_requests(url: str, count: int) -> None:
    """Send ``count`` requests to the proxy and print each answer (to see the round-robin)."""
    async with aiohttp.ClientSession() as session:
        for number in range(1, count + 1):
            async with session.get(url) as response:
                print(f"request {number}: {response.status} {(await response.text()).strip().splitlines()[-1]}")


async def run_example(args: argparse.Namespace) -> None:
    async with Golem(budget=1.0, subnet_tag=args.subnet_tag) as golem:
        if golem.local_node is not None:
            await build_local_image()
        network = await golem.create_network("192.168.0.1/24")
        cluster = await golem.run_service(HttpService, network=network, num_instances=args.num_instances)
        await cluster.wait_running(timeout=STARTING_TIMEOUT)
        print(
            f"instances: {', '.join(f'{i.name} @ {i.network_node and i.network_node.ip}' for i in cluster.instances)}"
        )
        async with HttpProxy(cluster, remote_port=80, port=args.port) as proxy:
            print(f"Local HTTP server listening on {proxy.url}", flush=True)
            if args.requests:
                await send_requests(proxy.url, args.requests)
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.Event().wait(), args.running_time)  # until the time is up or Ctrl-C
        print("HTTP server stopped")
        await cluster.stop()
    print("done")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="An extremely simple http proxy, on Golem")
    parser.add_argument("--num-instances", type=int, default=2, help="instances of the HTTP service (default 2)")
    parser.add_argument("--port", type=int, default=8080, help="the local port to listen on (0: any free one)")
    parser.add_argument("--running-time", type=float, default=600, help="seconds to serve (default 600)")
    parser.add_argument("--requests", type=int, default=0, help="send this many requests and print the answers")
    parser.add_argument("--subnet-tag", default=os.environ.get("YAGNA_SUBNET", "public"))
    parser.add_argument("--log-level", default="WARNING")
    args = parser.parse_args(argv)
    logging.basicConfig(level=args.log_level, format="%(asctime)s %(levelname)s %(name)s: %(message)s")
    try:
        asyncio.run(run_example(args))
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main())
