"""The ``golem-api`` command line.

``golem-api node [--port N] [--providers N] [--app-key KEY]`` runs the embedded local Golem network on its
own, for code in another process (or another language) that talks to a yagna daemon: it prints the URL
and app key to export, and runs until Ctrl-C or SIGTERM, then stops cleanly.

Each command is a subparser with a ``handler(args) -> exit code``; new commands (``image build``, …) add
their own ``_add_…`` function to :func:`build_parser`.
"""

from __future__ import annotations

import argparse
import asyncio
import signal
import sys
from collections.abc import Sequence
from typing import TextIO

from golem_api.errors import GolemError
from golem_api.local.config import LocalNetworkConfig
from golem_api.local.node import LocalNode

__all__ = ["build_parser", "main"]

DEFAULT_PORT = 7465
"""The daemon's port, so that clients' default ``YAGNA_API_URL`` (``http://127.0.0.1:7465``) finds the node."""


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def _add_node_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = commands.add_parser(
        "node",
        help="run the embedded local Golem network standalone",
        description="Run the embedded local Golem network (a yagna-compatible node with local providers) "
        "until Ctrl-C or SIGTERM.",
    )
    node.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free)"
    )
    node.add_argument("--providers", type=_count, default=3, metavar="N", help="number of providers (default 3)")
    node.add_argument("--app-key", metavar="KEY", help="the app key clients must send (default: a random one)")
    node.set_defaults(handler=_run_node)


def build_parser() -> argparse.ArgumentParser:
    """The ``golem-api`` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="golem-api", description="Golem services from Python.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _add_node_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``golem-api`` with ``argv`` (default: the process's arguments); returns the exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


def _run_node(args: argparse.Namespace) -> int:
    try:
        config = LocalNetworkConfig.with_providers(args.providers)
        return asyncio.run(_serve_node(config, args.port, args.app_key, sys.stdout))
    except GolemError as exc:
        print(f"golem-api node: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # where signal handlers cannot be installed (Windows)
        return 130


async def _serve_node(config: LocalNetworkConfig, port: int, app_key: str | None, out: TextIO) -> int:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    installed = []
    for sig in (signal.SIGINT, signal.SIGTERM):
        try:
            loop.add_signal_handler(sig, stop.set)
            installed.append(sig)
        except (NotImplementedError, RuntimeError):  # not the main thread, or no signal support
            pass
    try:
        async with LocalNode(config, port=port, app_key=app_key) as node:
            _describe(node, out)
            await stop.wait()
            print("Stopping the local Golem network…", file=out, flush=True)
    finally:
        for sig in installed:
            loop.remove_signal_handler(sig)
    print("Stopped.", file=out, flush=True)
    return 0


def _describe(node: LocalNode, out: TextIO) -> None:
    lines = [
        f"Local Golem network running at {node.url} with {len(node.providers)} provider(s)",
        f"  requestor id: {node.requestor_id}",
        f"  app key:      {node.app_key}",
        f"  payment:      {node.config.payment_platform}, balance {node.config.requestor_balance}",
    ]
    lines += [f"  provider:     {p.name} {p.node_id}" for p in node.providers]
    lines += [
        "Point clients at it with:",
        f"  export YAGNA_APPKEY={node.app_key} YAGNA_API_URL={node.url} YAGNA_SUBNET={node.config.subnet}",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), file=out, flush=True)


if __name__ == "__main__":
    sys.exit(main())
