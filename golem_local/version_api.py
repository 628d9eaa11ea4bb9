"""The daemon's version route, ``GET /version/get``, public as yagna's.

yagna answers it with or without an app key:
``{"current": {"version", "name", "seen", "releaseTs", "insertionTs", "updateTs"}, "pending": null}``.
golem-js asks it without a key before anything else (``GolemNetwork.connect``, ``TaskExecutor.create``) and needs
a version of at least 0.15.2, so the node gives the version of the yagna its APIs follow.
"""

from __future__ import annotations

from datetime import datetime, timezone

from aiohttp import web

from golem_local.http import json_response

__all__ = [
    "DAEMON_VERSION",
    "VERSION_PATH",
    "add_version_routes",
]

VERSION_PATH = "/version/get"
DAEMON_VERSION = "0.17.6"
"""The yagna release whose APIs the node follows."""

_NAME = "golem-api local node"


def add_version_routes(app: web.Application) -> None:
    """Serve ``GET /version/get`` on ``app`` (the caller exempts :data:`VERSION_PATH` from the app-key check)."""
    started = datetime.now(timezone.utc).strftime("%Y-%m-%dT%H:%M:%S")  # yagna's timestamps: no zone, no fraction
    body = {
        "current": {
            "version": DAEMON_VERSION,
            "name": _NAME,
            "seen": True,
            "releaseTs": started,
            "insertionTs": started,
            "updateTs": started,
        },
        "pending": None,
    }

    async def version(request: web.Request) -> web.StreamResponse:
        return json_response(body)

    app.router.add_get(VERSION_PATH, version)
