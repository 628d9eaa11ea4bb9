"""The requestor's side of images: a ``vm.repo`` payload's image name → the demand's task package.

yapapi's protocol, against a registry at ``repo``:

- by tag or hash: ``GET {repo}/v1/image/info?tag=…`` (or ``hash=…``) ``&count=true`` →
  ``{"http": url, "https": url, "sha3": hash, "size": n}``; a 404 means the registry has no such image;
- by URL: ``HEAD {url}`` must answer 200, and the hash is the one given with it.

Either way the demand gets ``golem.srv.comp.task_package = "hash:sha3:<hash>:<url>"``. ``Golem`` calls
:func:`resolve_image` when it creates a demand. The registry asked is the payload's ``repo_url`` when it has
one; otherwise, on the local network, the local node (it serves the registry API from its image registry,
:mod:`golem_local.images.serve`), and on a real one ``$GOLEM_REGISTRY_URL``, else :data:`PUBLIC_REGISTRY`.
"""

from __future__ import annotations

import asyncio
import os
from typing import Any

import aiohttp
from attrs import evolve

from golem_api.payload import Payload, VmPayload
from golem_shared.errors import ImageError, ImageNotFoundError

__all__ = [
    "PUBLIC_REGISTRY",
    "REGISTRY_ENV",
    "RESOLVE_TIMEOUT",
    "registry_url",
    "resolve_image",
    "resolve_task_package",
]

PUBLIC_REGISTRY = "https://registry.golem.network"
REGISTRY_ENV = "GOLEM_REGISTRY_URL"
RESOLVE_TIMEOUT = 30.0
"""Seconds the registry (or the image URL) has to answer."""


def registry_url(repo_url: str | None = None, local_node_url: str | None = None) -> str:
    """The registry to ask: ``repo_url``, else the local node on the local network, else ``$GOLEM_REGISTRY_URL``,
    else :data:`PUBLIC_REGISTRY`."""
    chosen = repo_url or local_node_url or os.environ.get(REGISTRY_ENV) or PUBLIC_REGISTRY
    return chosen.rstrip("/")


def _build_hint(tag: str | None) -> str:
    return (
        f"; build it with `golem-api image build DIR --tag {tag or 'NAME:VERSION'}` for the local network, or "
        "publish it to the Golem registry with `gvmkit-build --push`"
    )


async def _message(response: aiohttp.ClientResponse) -> str:
    text = (await response.text(errors="replace")).strip()
    try:
        body: Any = await response.json(content_type=None)
    except ValueError:
        return text[:300]
    return str(body.get("message", text))[:500] if isinstance(body, dict) else text[:300]


async def resolve_task_package(
    *,
    repo_url: str,
    image_hash: str | None = None,
    image_tag: str | None = None,
    image_url: str | None = None,
    use_https: bool = False,
    timeout: float = RESOLVE_TIMEOUT,
) -> str:
    """``hash:sha3:<hash>:<url>`` for the image named by ``image_url`` + ``image_hash``, ``image_tag`` or
    ``image_hash``, asking the registry at ``repo_url`` (see the module docstring).

    Raises :class:`~golem_local.images.errors.ImageNotFoundError` when the registry does not know the image
    (saying how to build or publish it), :class:`~golem_local.images.errors.ImageError` when it cannot be asked.
    """
    what = f"tagged {image_tag!r}" if image_tag else f"with hash {image_hash}"
    client_timeout = aiohttp.ClientTimeout(total=timeout)
    try:
        async with aiohttp.ClientSession(timeout=client_timeout) as session:
            if image_url is not None:
                async with session.head(image_url, allow_redirects=True) as response:
                    if response.status != 200:
                        raise ImageError(
                            f"the image URL {image_url} answered {response.status} to HEAD; check that the image is "
                            "published there"
                        )
                return f"hash:sha3:{image_hash}:{image_url}"
            params = {"tag": image_tag} if image_tag else {"hash": str(image_hash)}
            params["count"] = "true"
            async with session.get(f"{repo_url}/v1/image/info", params=params) as response:
                if response.status == 404:
                    said = await _message(response)
                    message = (
                        f"{said} (asked the image registry at {repo_url})"
                        if "golem-api image build" in said  # the local node's registry says how to build it
                        else f"the image registry at {repo_url} has no image {what}{_build_hint(image_tag)}"
                    )
                    raise ImageNotFoundError(message, tag=image_tag, hash=image_hash)
                if response.status != 200:
                    raise ImageError(
                        f"the image registry at {repo_url} answered {response.status} when asked for the image {what}: "
                        f"{await _message(response)}"
                    )
                info = await response.json(content_type=None)
    except (aiohttp.ClientError, asyncio.TimeoutError) as exc:
        raise ImageError(
            f"cannot reach the image registry at {image_url or repo_url} to resolve the image {what}: {exc!r}; check "
            f"the network, or name another registry with repo_url= or ${REGISTRY_ENV}"
        ) from exc
    key = "https" if use_https else "http"
    if not isinstance(info, dict) or not isinstance(info.get(key), str) or not isinstance(info.get("sha3"), str):
        raise ImageError(
            f"the image registry at {repo_url} answered {info!r} for the image {what}, without the {key!r} URL and "
            "'sha3' hash a registry gives"
        )
    return f"hash:sha3:{info['sha3']}:{info[key]}"


async def resolve_image(payload: Payload, *, local_registry: str | None = None) -> Payload:
    """``payload`` with its image resolved into a task package, when it is a :class:`VmPayload` that names one
    (``vm.repo``); any other payload as it is. ``local_registry`` is the local node's URL on the local network.
    """
    if not isinstance(payload, VmPayload) or not payload.needs_resolving:
        return payload
    package = await resolve_task_package(
        repo_url=registry_url(payload.repo_url, local_registry),
        image_hash=payload.image_hash,
        image_tag=payload.image_tag,
        image_url=payload.image_url,
        use_https=payload.image_use_https,
    )
    return evolve(payload, task_package=package)
