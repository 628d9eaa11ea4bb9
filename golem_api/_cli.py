"""The ``golem-api`` command line.

``golem-api node …`` and ``golem-api image …`` belong to the embedded local network (:mod:`golem_local.cli`,
reached through :mod:`golem_api._local`).

``golem-api gftp server`` is the daemon's ``gftp server`` for programs that start one (yapapi): JSON-RPC on
standard input and output, files served through the node named by ``YAGNA_APPKEY`` and ``YAGNA_API_URL``
(:mod:`golem_api._compat.gftp`). Put it on ``PATH`` as ``gftp`` with a two-line script that runs
``exec golem-api gftp "$@"``.

``golem-api --version`` prints the version. Each command is a subparser with a ``handler(args) -> exit code``.
"""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from golem_api import _local
from golem_api._compat.gftp import GFTP_VERSION, run_gftp_server
from golem_api._version import __version__

__all__ = ["build_parser", "main"]


def _add_gftp_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    gftp = commands.add_parser(
        "gftp",
        help="the daemon's gftp program, for yapapi",
        description="Serve files to providers as the daemon's `gftp server` does (JSON-RPC on stdin/stdout), "
        "through the node named by YAGNA_APPKEY and YAGNA_API_URL.",
    )
    gftp.add_argument("--version", action="version", version=f"gftp {GFTP_VERSION} (golem-api)")
    actions = gftp.add_subparsers(dest="action", required=True, metavar="ACTION")
    server = actions.add_parser("server", help="answer gftp JSON-RPC calls on standard input and output")
    server.set_defaults(handler=_run_gftp_server)


def _run_gftp_server(_args: argparse.Namespace) -> int:
    return run_gftp_server()


def build_parser() -> argparse.ArgumentParser:
    """The ``golem-api`` parser with every subcommand."""
    parser = argparse.ArgumentParser(prog="golem-api", description="Golem services from Python.")
    parser.add_argument("--version", action="version", version=f"golem-api {__version__}")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    _local.add_cli_commands(commands)
    _add_gftp_command(commands)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run ``golem-api`` with ``argv`` (default: the process's arguments); returns the exit code."""
    args = build_parser().parse_args(argv)
    code: int = args.handler(args)
    return code


if __name__ == "__main__":
    sys.exit(main())
