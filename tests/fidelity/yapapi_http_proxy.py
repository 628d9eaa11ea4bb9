"""yapapi 0.13.1's http-proxy example, as a program run by ``tests/fidelity/test_yapapi_vpn.py``.

This is test code run by **yapapi** with ``.venv-yapapi/bin/python`` (never imported by golem-api). It is our
own program written against the same yapapi APIs as yapapi's ``examples/http-proxy/http_proxy.py`` (LGPL-3.0,
golemfactory/yapapi; not shipped in the wheel), in the same order: ``Golem.create_network("192.168.0.1/24")``,
``run_service(HttpService, network=network, num_instances=N, expiration=…)`` where ``HttpService`` is an
``HttpProxyService`` whose payload asks for ``vm.VM_CAPS_VPN`` and whose ``start`` runs ``super().start()`` (the
``deploy`` that carries the network) and then starts an HTTP server with a page naming its provider,
``LocalHttpProxy(cluster, port).run()``, requests to the proxy, ``proxy.stop()``, ``cluster.stop()``,
``network.remove()``. The one thing changed on purpose is the image: nginx's paths (``/usr/share/nginx``,
``/usr/sbin/nginx``) cannot come from an image on the local network, whose ``/usr`` is the host's, so the image
(``examples/http_proxy/image``, our own http-proxy example's) serves the page with Python's HTTP server, and
``start`` writes the page there.

It also opens yapapi's ``SocketProxy`` to the first instance's port 80 and sends a raw request through it.
Everything comes from the environment as yapapi reads it (``YAGNA_APPKEY``, ``YAGNA_API_URL``) plus
``GOLEM_REGISTRY_URL``; every wait is bounded by ``--timeout``; the exit code is 0 only if all went well.
"""

import argparse
import asyncio
import os
import shlex
from datetime import datetime, timedelta, timezone

import aiohttp
from yapapi import Golem
from yapapi.contrib.service.http_proxy import HttpProxyService, LocalHttpProxy
from yapapi.contrib.service.socket_proxy import SocketProxy, SocketProxyService
from yapapi.payload import vm
from yapapi_shared import Countdown, run_program

STARTING_TIMEOUT = timedelta(minutes=4)
EXPIRATION_MARGIN = timedelta(minutes=5)


class HttpService(HttpProxyService, SocketProxyService):
    def __init__(self, started: Countdown) -> None:
        super().__init__(remote_port=80)
        self.remote_ports = [80]
        self.started = started

    @staticmethod
    async def get_payload():
        return await vm.repo(
            image_tag=os.environ["HTTP_PROXY_IMAGE_TAG"],
            repository_url=os.environ["GOLEM_REGISTRY_URL"],
            # as the example: only providers offering VPN-capable VM runtimes
            capabilities=[vm.VM_CAPS_VPN],
        )

    async def start(self):
        # the initialization of the service, which sends the network details within the `deploy` command
        async for script in super().start():
            yield script
        script = self._ctx.new_script(timeout=timedelta(minutes=1))
        msg = f"Hello from inside Golem!\n... running on {self.provider_name}"
        script.run("/bin/sh", "-c", f"echo {shlex.quote(msg)} > /golem/www/index.html")
        script.run("/golem/run/start-server.sh")
        yield script
        self.started.one()

    async def shutdown(self):
        script = self._ctx.new_script()
        script.run("/bin/cat", "/golem/www/.server.log")  # the example reads nginx's logs here
        yield script


async def main(args: argparse.Namespace) -> None:
    started = Countdown(args.num_instances)  # instances whose HTTP server is up
    async with Golem(budget=1.0, subnet_tag=os.environ.get("YAGNA_SUBNET", "public")) as golem:
        network = await golem.create_network("192.168.0.1/24")
        print(f"network {network.network_id} {network.network_address}/{network.netmask}", flush=True)
        cluster = await golem.run_service(
            HttpService,
            network=network,
            num_instances=args.num_instances,
            instance_params=[{"started": started}] * args.num_instances,
            expiration=datetime.now(timezone.utc) + STARTING_TIMEOUT + EXPIRATION_MARGIN,
        )
        await asyncio.wait_for(started.done.wait(), args.timeout)
        for instance in cluster.instances:
            print(f"instance {instance.provider_name} at {instance.network_node.ip}", flush=True)

        proxy = LocalHttpProxy(cluster, args.port)
        await proxy.run()
        print(f"Local HTTP server listening on: http://localhost:{args.port}", flush=True)
        async with aiohttp.ClientSession() as session:
            for number in range(1, args.requests + 1):
                async with session.get(f"http://localhost:{args.port}/") as response:
                    text = (await response.text()).strip().replace("\n", " ")
                    print(f"response {number}: {response.status} {text}", flush=True)
        await proxy.stop()
        print("HTTP server stopped", flush=True)

        socket_proxy = SocketProxy(ports=[args.socket_port])
        server = await socket_proxy.run_server(cluster.instances[0], 80)
        for _ in range(int(args.timeout * 100)):  # run_server starts the listening task and returns at once
            if server._running:
                break
            await asyncio.sleep(0.01)
        reader, writer = await asyncio.wait_for(asyncio.open_connection("127.0.0.1", args.socket_port), args.timeout)
        writer.write(b"GET / HTTP/1.0\r\n\r\n")
        answer = await asyncio.wait_for(reader.read(), args.timeout)
        writer.close()
        print(f"socket proxy: {answer.splitlines()[0].decode()} {answer.splitlines()[-1].decode()}", flush=True)
        await socket_proxy.stop()

        cluster.stop()
        for _ in range(int(args.timeout * 10)):
            if not any(instance.is_available for instance in cluster.instances):
                break
            await asyncio.sleep(0.1)  # yapapi has no event for it; the example polls every 5 s
        await network.remove()
        print("network removed", flush=True)
    print("done", flush=True)


def parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--num-instances", type=int, default=2)
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument("--socket-port", type=int, required=True)
    parser.add_argument("--requests", type=int, default=4)
    return parser


if __name__ == "__main__":
    run_program(main, parser(), timeout=40.0)
