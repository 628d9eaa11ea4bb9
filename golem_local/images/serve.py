"""The registry API of the local node: what ``vm.repo`` and providers ask the public Golem registry, asked here.

The public registry (``https://registry.golem.network``) answers ``GET /v1/image/info?tag=…`` or
``?hash=…`` (``&count=true`` counts a download; accepted and ignored here) with
``{"http": <download URL>, "sha3": <hash>, "size": <bytes>}``, and serves the image file at that URL. The
local node serves the same routes from an :class:`~golem_local.images.registry.ImageRegistry` directory:

    GET  /v1/image/info?tag=NAME:VERSION | hash=HASH    200 {"http", "sha3", "size"}; 404 {"message"} if unknown
    GET  /v1/image/download/HASH                        the image file, streamed (ranges too); HEAD answers alike

Like the public registry, these routes need no app key (the node's other APIs do): providers and
requestors download images anonymously. The URLs given are built from the host the request came to.
"""

from __future__ import annotations

from aiohttp import web

from golem_local.http import HttpError, json_response
from golem_local.images.errors import ImageNotFoundError
from golem_local.images.registry import ImageRegistry
from golem_shared.errors import ConfigurationError
from golem_shared.imagehash import check_image_hash

__all__ = [
    "LINK_PATH",
    "REGISTRY_PREFIX",
    "add_registry_routes",
    "is_public_path",
]

REGISTRY_PREFIX = "/v1/image/"
"""Every path of the registry API starts so (the node lets them through without an app key)."""

_REGISTRY = web.AppKey("golem_local.images.registry", ImageRegistry)


async def _info(request: web.Request) -> web.StreamResponse:
    registry = request.app[_REGISTRY]
    tag, digest = request.query.get("tag"), request.query.get("hash")
    if (tag is None) == (digest is None):
        raise HttpError(400, "give one of the query parameters tag=NAME:VERSION or hash=<sha3 hex>, not both")
    try:
        entry = registry.find(tag=tag, hash=digest)
    except ImageNotFoundError as exc:
        raise HttpError(404, str(exc)) from None
    except ConfigurationError as exc:
        raise HttpError(400, str(exc)) from None
    url = request.url.origin().join(request.app.router["golem_api_image_download"].url_for(hash=entry.hash))
    return json_response({"http": str(url), "sha3": entry.hash, "size": entry.size})


async def _download(request: web.Request) -> web.StreamResponse:
    registry = request.app[_REGISTRY]
    try:
        path = registry.path_of(check_image_hash(request.match_info["hash"]))
    except ConfigurationError as exc:
        raise HttpError(400, str(exc)) from None
    if not path.is_file():
        raise HttpError(404, f"no image {request.match_info['hash']} in the local registry {registry.root}")
    return web.FileResponse(path, headers={"Content-Type": "application/octet-stream"})


LINK_PATH = "/image.{hash}.link"
"""The old repository's route (girepo, found through the DNS SRV record _girepo._tcp.dev.golem.network), which
golem-core 0.7.8 and yapapi ask for an image given by hash alone: the download URL as plain text."""


async def _link(request: web.Request) -> web.StreamResponse:
    registry = request.app[_REGISTRY]
    try:
        entry = registry.find(hash=request.match_info["hash"])
    except ImageNotFoundError as exc:
        raise HttpError(404, str(exc)) from None
    except ConfigurationError as exc:
        raise HttpError(400, str(exc)) from None
    url = request.url.origin().join(request.app.router["golem_api_image_download"].url_for(hash=entry.hash))
    return web.Response(text=str(url), content_type="text/plain")  # no newline: golem-core uses the text as is


def is_public_path(path: str) -> bool:
    """Whether ``path`` is a registry route (served without the app key, as the public registries are)."""
    return path.startswith(REGISTRY_PREFIX) or (path.startswith("/image.") and path.endswith(".link"))


def add_registry_routes(app: web.Application, registry: ImageRegistry) -> None:
    """Serve ``registry`` on ``app`` (see the module docstring)."""
    app[_REGISTRY] = registry
    app.router.add_get(LINK_PATH, _link)
    app.router.add_get(REGISTRY_PREFIX + "info", _info)
    app.router.add_get(REGISTRY_PREFIX + "download/{hash}", _download, name="golem_api_image_download")
