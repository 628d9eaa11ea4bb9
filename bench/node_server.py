"""A local Golem network in a process of its own, for benchmarks that measure a requestor process alone.

    python -m bench.node_server --providers 200 --runtime idle

Prints one JSON line ``{"url": …, "app_key": …, "subnet": …}`` once the node serves, then runs until its
standard input is closed (the parent's way to stop it), and stops the node.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import sys

from golem_local.config import LocalNetworkConfig
from golem_local.node import LocalNode

__all__ = ["main", "serve"]


async def serve(providers: int, runtime: str, port: int) -> None:
    """Serve the node until standard input reaches its end."""
    config = LocalNetworkConfig.with_providers(providers, activity_runtime=runtime)
    async with LocalNode(config, port=port) as node:
        print(json.dumps({"url": node.url, "app_key": node.app_key, "subnet": config.subnet}), flush=True)
        await asyncio.to_thread(sys.stdin.read)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments and serve."""
    parser = argparse.ArgumentParser(prog="python -m bench.node_server", description=__doc__.splitlines()[0])
    parser.add_argument("--providers", type=int, default=10, help="number of local providers (default 10)")
    parser.add_argument("--runtime", choices=("vm", "idle"), default="vm", help="what runs activities")
    parser.add_argument("--port", type=int, default=0, help="port to serve on (default: any free one)")
    args = parser.parse_args(argv)
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    asyncio.run(serve(args.providers, args.runtime, args.port))


if __name__ == "__main__":
    main()
