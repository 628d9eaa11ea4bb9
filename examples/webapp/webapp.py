#!/usr/bin/env python3
"""The webapp example: a front end and its "db" on two Golem providers, talking over a VPN.

    python examples/webapp/webapp.py [--port 8080] [--running-time 600] [--messages "hello" "world"]

Both services join one VPN (``golem.create_network``). The db (a small message store over HTTP) runs at a
fixed VPN address, ``192.168.0.2``; the front end is started with that address and asks the db over the VPN,
instance to instance, for every request. This machine reaches the front end through ``HttpProxy`` at
``http://127.0.0.1:PORT``: ``curl -d 'hello' http://127.0.0.1:8080`` stores a message, ``curl
http://127.0.0.1:8080`` lists them. ``--messages`` posts some and prints the list, then the example ends
after ``--running-time`` seconds (or Ctrl-C).

yapapi's ``examples/webapp`` has the same shape (an HTTP front end, an rqlite db, ``LocalHttpProxy``). Without
``YAGNA_APPKEY`` it runs on the embedded local network (needs root for the VPN), its image built from
``image/`` at the start.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import logging
import os
import sys
from pathlib import Path

import aiohttp

from golem_api import Golem, HttpProxy, Payload, Service, vm
from golem_api.services.service import Handler

__all__ = ["DbService", "FrontEnd", "main"]

HERE = Path(__file__).resolve().parent
IMAGE_TAG = "golem-api/webapp:1.0"
DB_ADDRESS = "192.168.0.2"
DB_PORT = 4001
STARTING_TIMEOUT = 120.0

_log = logging.getLogger("webapp")


async def payload() -> Payload:
    return await vm.repo(image_tag=IMAGE_TAG, capabilities=["vpn"])


class DbService(Service):
    """The message store, on port :data:`DB_PORT` of its VPN address."""

    get_payload = staticmethod(payload)

    async def start(self) -> Handler:
        async for script in super().start():  # deploy (into the VPN) and start
            yield script
        script = self._ctx.new_script(timeout=30)
        script.run("/golem/run/serve.sh", str(DB_PORT), "/golem/run/db.py", str(DB_PORT))
        yield script


class FrontEnd(Service):
    """The front end on port 80; it reads and writes the db at ``db_address`` over the VPN."""

    get_payload = staticmethod(payload)

    def __init__(self, db_address: str) -> None:
        self.db_address = db_address

    async def start(self) -> Handler:
        async for script in super().start():
            yield script
        script = self._ctx.new_script(timeout=30)
        script.run("/golem/run/serve.sh", "80", "/golem/run/app.py", self.db_address, str(DB_PORT))
        yield script


async def run_example(args: argparse.Namespace) -> None:
    async with Golem(budget=1.0, subnet_tag=args.subnet_tag) as golem:
        if golem.local_node is not None:
            from golem_local.images.builder import build_image

            await build_image(HERE / "image", tag=IMAGE_TAG, log=lambda text: _log.debug("%s", text.rstrip()))
        network = await golem.create_network("192.168.0.1/24")
        db = await golem.run_service(DbService, network=network, network_addresses=[DB_ADDRESS])
        await db.wait_running(timeout=STARTING_TIMEOUT)
        front = await golem.run_service(FrontEnd, instance_params=[{"db_address": DB_ADDRESS}], network=network)
        await front.wait_running(timeout=STARTING_TIMEOUT)
        for cluster in (db, front):
            for instance in cluster.instances:
                node = instance.network_node
                print(f"{instance.name} on {instance.provider_name} at {node and node.ip}")
        async with HttpProxy(front, remote_port=80, port=args.port) as proxy, aiohttp.ClientSession() as session:
            print(f"The web app is at {proxy.url}", flush=True)
            for text in args.messages:
                async with session.post(proxy.url, data=text.encode()) as response:
                    print(f"posted {text!r}: {response.status}")
            if args.messages:
                async with session.get(proxy.url) as response:
                    print((await response.text()).rstrip())
            with contextlib.suppress(asyncio.TimeoutError):
                await asyncio.wait_for(asyncio.Event().wait(), args.running_time)
        await front.stop()
        await db.stop()
    print("done")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description="A front end and its db on Golem, over a VPN")
    parser.add_argument("--port", type=int, default=8080, help="the local port of the web app (0: any free one)")
    parser.add_argument("--running-time", type=float, default=600, help="seconds to serve (default 600)")
    parser.add_argument("--messages", nargs="*", default=[], help="post these messages, then print the list")
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
