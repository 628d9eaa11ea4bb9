"""How fast the local VPN is: connection set-up and TCP throughput, requestor → instance (through the node's
WebSocket) and instance → instance, next to plain loopback TCP on the host measured in the same run.

    .venv/bin/python -m bench.bench_vpn [--runs 3] [--megabytes 64]     (needs root, like the local VPN)

The node runs in a process of its own (:mod:`bench.node_server`, as a yagna daemon would) and the requestor
(``Golem`` with the node's app key) in this one. Two instances join one VPN at 192.168.0.2 and .3 and run
:mod:`bench.vpn_tcpbench`'s server; the same program's client measures loopback on the host and instance →
instance inside the second sandbox, so both paths run the same code. The requestor's side goes through
``Network.connect`` (a ``TcpConnection``: binary WebSocket frames of 64 KiB, relayed by the node to a TCP
connection it made in the VPN's hub namespace). ``bench.run --only vpn`` puts the figures in
``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import socket
import statistics
import sys
import time
from decimal import Decimal
from pathlib import Path
from typing import Any

from bench.processes import ROOT, served_node
from bench.stats import Figure, Result, fmt
from golem_api import Golem, Service, VmPayload
from golem_api.network import Network, TcpConnection
from golem_local.net import netns

__all__ = ["main", "vpn"]

TOOL = Path(__file__).resolve().with_name("vpn_tcpbench.py")
CODE = TOOL.read_text()
PORT = 9000
HOST_PYTHON = "/usr/bin/python3" if os.access("/usr/bin/python3", os.X_OK) else sys.executable
WAIT = 120.0  # seconds any one step may take


class TcpBenchServer(Service):
    """Runs the tool's server on port :data:`PORT` of its VPN address."""

    @staticmethod
    async def get_payload() -> VmPayload:
        return VmPayload()

    async def start(self) -> Any:
        async for script in super().start():
            yield script
        script = self._ctx.new_script(timeout=30)
        script.run(
            "/bin/sh",
            "-c",
            f'python3 -c "$TCPBENCH" serve {PORT} > /tmp/bench.log 2>&1 & '
            "for i in $(seq 1000); do grep -q ready /tmp/bench.log 2>/dev/null && exit 0; sleep 0.01; done; exit 1",
            env={"TCPBENCH": CODE},
        )
        yield script


async def _in_instance(instance: Service, *args: str) -> dict[str, Any]:
    script = instance.ctx.new_script(timeout=WAIT)
    result = script.run("python3", "-c", CODE, *args)
    await instance.ctx.run_script(script)
    answer: dict[str, Any] = json.loads(((await result).stdout or "").strip().splitlines()[-1])
    return answer


async def _on_host(*args: str) -> dict[str, Any]:
    process = await asyncio.create_subprocess_exec(HOST_PYTHON, str(TOOL), *args, stdout=asyncio.subprocess.PIPE)
    out, _ = await asyncio.wait_for(process.communicate(), WAIT)
    if process.returncode != 0:
        raise RuntimeError(f"vpn_tcpbench {' '.join(args)} failed with {process.returncode}")
    answer: dict[str, Any] = json.loads(out.decode().strip().splitlines()[-1])
    return answer


def _free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


async def _ws_setup_ms(network: Network, ip: str, count: int) -> float:
    times = []
    for _ in range(count):
        began = time.perf_counter()
        connection = await network.connect(ip, PORT)
        times.append(time.perf_counter() - began)
        await connection.aclose()
    return statistics.median(times) * 1000


async def _ws_transfer(network: Network, ip: str, mode: str, size: int) -> float:
    """MB/s of one stream of ``size`` bytes through the node's WebSocket (``up``: requestor → instance)."""
    connection: TcpConnection = await network.connect(ip, PORT)
    async with connection:
        began = time.perf_counter()
        if mode == "up":
            await connection.write(b"U" + size.to_bytes(8, "big"))
            payload = bytes(256 * 1024)
            left = size
            while left:
                piece = min(len(payload), left)
                await connection.write(payload[:piece])
                left -= piece
            if await connection.readexactly(1) != b"K":
                raise RuntimeError("the instance did not acknowledge the upload")
        else:
            await connection.write(b"D" + size.to_bytes(8, "big"))
            left = size
            while left:
                data = await connection.read(min(left, 1 << 20))
                if not data:
                    raise RuntimeError(f"the download ended {left} bytes early")
                left -= len(data)
        return size / (time.perf_counter() - began) / 1e6


async def vpn(runs: int, megabytes: int = 64, connects: int = 50) -> Result:
    """The VPN benchmark (see the module docstring): ``runs`` runs of every figure."""
    title = "VPN: set-up and throughput"
    reason = netns.unavailable_reason()
    if reason is not None:
        return Result(key="vpn", title=title, figures=[], skipped=reason)
    size = megabytes * 1_000_000
    samples: dict[tuple[str, str], list[float]] = {}

    def add(name: str, unit: str, value: float) -> None:
        samples.setdefault((name, unit), []).append(value)

    host_port = _free_port()
    server = await asyncio.create_subprocess_exec(
        HOST_PYTHON, str(TOOL), "serve", str(host_port), stdout=asyncio.subprocess.PIPE
    )
    try:
        assert server.stdout is not None
        if (await asyncio.wait_for(server.stdout.readline(), WAIT)).strip() != b"ready":
            raise RuntimeError("the loopback server did not start")
        async with (
            served_node(3, "vm") as node,
            Golem(
                budget=Decimal(10),
                app_key=node["app_key"],
                api_url=node["url"],
                subnet_tag=node["subnet"],
                event_consumer=None,
            ) as golem,
        ):
            network = await golem.create_network("192.168.0.0/24")
            cluster = await golem.run_service(
                TcpBenchServer, num_instances=2, network=network, network_addresses=["192.168.0.2", "192.168.0.3"]
            )
            await cluster.wait_running(timeout=WAIT)
            _first, second = cluster.instances
            for _ in range(runs):
                loopback = await _on_host("connects", "127.0.0.1", str(host_port), str(connects))
                add("set-up, loopback TCP", "ms", loopback["ms"])
                add(
                    "set-up, requestor → instance (WebSocket)",
                    "ms",
                    await _ws_setup_ms(network, "192.168.0.2", connects),
                )
                between = await _in_instance(second, "connects", "192.168.0.2", str(PORT), str(connects))
                add("set-up, instance → instance", "ms", between["ms"])
                for mode, arrow in (("up", "→"), ("down", "←")):
                    host = await _on_host("client", "127.0.0.1", str(host_port), mode, str(size))
                    add(f"loopback TCP ({mode})", "MB/s", host["MBps"])
                    add(
                        f"requestor {arrow} instance (WebSocket)",
                        "MB/s",
                        await _ws_transfer(network, "192.168.0.2", mode, size),
                    )
                    inside = await _in_instance(second, "client", "192.168.0.2", str(PORT), mode, str(size))
                    add(f"instance {arrow} instance", "MB/s", inside["MBps"])
            await cluster.stop()
    finally:
        if server.returncode is None:
            server.kill()
        await server.wait()
    return Result(
        key="vpn",
        title=title,
        figures=[Figure(name, unit, values) for (name, unit), values in samples.items()],
        notes=(
            f"Per run: the median of {connects} TCP connects (connect, then close) and one stream of {megabytes} MB "
            "each way, on three paths: plain loopback TCP on the host; the requestor (this process, `Golem` with "
            "the app key of a `bench.node_server` process, as with yagna) to an instance through the node's "
            "WebSocket (`Network.connect`: the set-up includes the WebSocket handshake and the node's TCP connect "
            "inside the VPN; data in 64 KiB binary frames); and one instance to another by VPN address (veth, "
            "bridge, veth; measured inside the sandbox). Loopback and instance → instance run the same Python "
            "program (`bench/vpn_tcpbench.py`). Up (→) is towards the serving instance, down (←) back."
        ),
    )


def main(argv: list[str] | None = None) -> None:
    """Run the benchmark and print its figures."""
    parser = argparse.ArgumentParser(prog="python -m bench.bench_vpn", description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=3)
    parser.add_argument("--megabytes", type=int, default=64)
    args = parser.parse_args(argv)
    os.chdir(ROOT)
    result = asyncio.run(vpn(args.runs, args.megabytes))
    if result.skipped:
        print(f"not run: {result.skipped}")
        return
    for figure in result.figures:
        print(f"{figure.name:45} {fmt(figure.median):>8} {figure.unit:5} ({figure.spread()}, {figure.runs} runs)")


if __name__ == "__main__":
    main()
