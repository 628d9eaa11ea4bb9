"""The providers' side of images: the image a task package names, downloaded, verified and unpacked once.

An agreement's demand names its image as ``golem.srv.comp.task_package = "hash:sha3:<hash>:<url>"``. At the
activity's ``deploy``, :meth:`ImageCache.image` downloads ``<url>`` (streamed to disk, at most
``download_timeout`` seconds), checks that the SHA3-224 of what came is ``<hash>``, unpacks it into
``<directory>/<hash>/`` and keeps the result: later activities on the same image (on any provider of the
node) use that tree at once, and activities that ask while the download runs wait for that one download.
A failed download is not kept: the next activity tries again. The tree is unpacked (``unsquashfs``) in the
user namespace the sandboxes run in (:func:`golem_local.runtime.rootfs.user_namespace`, :func:`unpack_for_sandboxes`),
so its files belong to the ids the image's users have there; each activity's sandbox shows it through an overlay
of its own (:mod:`golem_local.runtime.rootfs`), so the cached tree never changes. :meth:`ImageCache.aclose` removes it.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import logging
import os
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp

from golem_local.images.errors import ImageError, ImageFormatError
from golem_local.images.format import ImageMetadata, unpack_image
from golem_local.runtime.image import Image
from golem_local.runtime.rootfs import UserNamespace, owned_directory, remove_tree, user_namespace
from golem_shared.errors import LocalNodeError, SandboxUnavailableError
from golem_shared.imagehash import check_image_hash

__all__ = [
    "DOWNLOAD_TIMEOUT",
    "ImageCache",
    "image_from_metadata",
    "parse_task_package",
    "unpack_for_sandboxes",
]

DOWNLOAD_TIMEOUT = 300.0
"""Seconds a download may take, in all."""
_READ_TIMEOUT = 30.0  # seconds without a byte before a download is given up
_CONNECT_TIMEOUT = 10.0
_CHUNK = 1 << 16

_log = logging.getLogger(__name__)

GftpDownload = Callable[[str, Path], Awaitable[None]]
"""``download(url, target)``: fetch a ``gftp://`` URL into a file of the node."""


def _where_to_publish(digest: str) -> str:
    return (
        "; publish the image where the providers can reach it (on the local network: build it with "
        "`golem-api image build DIR --tag NAME:VERSION` and ask for it with vm.repo(image_tag=...)), or give it to "
        f"the local network directly with LocalNetworkConfig(images={{'{digest}': Image(...)}})"
    )


def parse_task_package(package: object) -> tuple[str, str]:
    """``(hash, url)`` of a ``hash:sha3:<hash>:<url>`` task package; ``ValueError`` saying what is wrong."""
    parts = package.split(":", 3) if isinstance(package, str) else []
    if len(parts) != 4 or parts[0] != "hash" or not parts[2] or not parts[3]:
        raise ValueError(f"{package!r} is not of the form hash:sha3:<hash>:<url>")
    if parts[1].lower() != "sha3":
        raise ValueError(f"{package!r} names a {parts[1]} hash; images are named by their sha3 (SHA3-224) hash")
    return parts[2].strip().lower(), parts[3].strip()


def unpack_for_sandboxes(path: Path, destination: Path, namespace: UserNamespace | None = None) -> ImageMetadata:
    """Unpack the image at ``path`` into the new directory ``destination`` as root of ``namespace`` (by default
    the sandboxes', :func:`~golem_local.runtime.rootfs.user_namespace`), so that its files belong to the ids its
    users have there; return its metadata. ``unsquashfs`` runs with that root's rights only: the file is read
    and the tree made through descriptors (:func:`~golem_local.runtime.rootfs.owned_directory`).
    Raises :class:`ImageFormatError` (not an image, cannot be unpacked) or ``OSError``."""
    if namespace is None:
        namespace = user_namespace()
    source = os.open(path, os.O_RDONLY | os.O_CLOEXEC)
    try:
        with owned_directory(destination, namespace) as (inside, fds):
            return unpack_image(
                Path(f"/proc/self/fd/{source}"),
                Path(inside),
                wrap=namespace.enter,
                pass_fds=(*namespace.pass_fds, source, *fds),
            )
    finally:
        os.close(source)


def image_from_metadata(metadata: ImageMetadata, root: Path, digest: str | None = None) -> Image:
    """The :class:`Image` the local ``vm`` runtime runs for an image whose root file system is unpacked at
    ``root``: that tree is the sandbox's ``/``."""
    return Image(
        root=root,
        env=metadata.env_dict,
        entrypoint=metadata.entrypoint or (),
        cmd=metadata.cmd or (),
        working_dir=metadata.working_dir or "/",
        volumes=metadata.volumes,
        hash=digest,
        rootfs=True,
    )


class ImageCache:
    """Images by hash under ``directory`` (see the module docstring); :meth:`close` ends what is under way.

    ``downloads`` counts, per hash, the downloads that completed: one per image however many activities
    asked for it.
    """

    def __init__(
        self,
        directory: Path,
        *,
        download_timeout: float = DOWNLOAD_TIMEOUT,
        gftp_download: GftpDownload | None = None,
    ) -> None:
        self.directory = Path(directory)
        # ``gftp://<requestor>/<id>`` task packages (golem-js publishes ``imageUrl: "file://..."`` so) are fetched
        # with ``gftp_download(url, target)`` through the requestor's GSB service, as a yagna exe-unit fetches them.
        self._gftp_download = gftp_download
        self.download_timeout = download_timeout
        self.downloads: dict[str, int] = {}
        self._images: dict[str, Image] = {}
        self._pending: dict[str, asyncio.Task[Image]] = {}
        self._session: aiohttp.ClientSession | None = None
        self._closed = False

    async def image(self, digest: str, url: str) -> Image:
        """The image with hash ``digest``, downloaded from ``url`` unless already here.

        Raises :class:`~golem_local.images.errors.ImageError` saying what went wrong: the URL did not answer
        or answered with an error, the file's hash is not ``digest``, the file is not an image.
        """
        if self._closed:
            raise ImageError("the image cache is closed: the local node is stopping")
        try:
            digest = check_image_hash(digest)
        except ValueError as exc:
            raise ImageError(str(exc)) from None
        image = self._images.get(digest)
        if image is not None:
            return image
        task = self._pending.get(digest)
        if task is None:
            task = asyncio.create_task(self._fetch(digest, url), name=f"image download {digest[:12]}")
            self._pending[digest] = task
            task.add_done_callback(lambda done: self._done(digest, done))
        # Shielded: one activity giving up (its deploy cancelled) must not cancel the others' download.
        return await asyncio.shield(task)

    def _done(self, digest: str, task: asyncio.Task[Image]) -> None:
        if self._pending.get(digest) is task:
            del self._pending[digest]
        if not task.cancelled() and task.exception() is None:
            self._images[digest] = task.result()

    async def _fetch(self, digest: str, url: str) -> Image:
        self.directory.mkdir(parents=True, exist_ok=True)
        download = self.directory / f"{digest}.download"
        unpacking = self.directory / f"{digest}.unpacking"
        tree = self.directory / digest
        try:
            actual = await self._download(url, download, digest)
            if actual != digest:
                raise ImageError(
                    f"the image downloaded from {url} has the hash {actual}, not the {digest} the task package "
                    "names: it was changed after it was published, or the URL points at another image; "
                    "resolve the image again (vm.repo) or fix the URL"
                )
            try:
                namespace = await asyncio.to_thread(user_namespace)
            except SandboxUnavailableError as exc:
                raise ImageError(f"cannot unpack the image {digest}: {exc}") from exc
            await asyncio.to_thread(remove_tree, unpacking, namespace)
            try:
                metadata = await asyncio.to_thread(unpack_for_sandboxes, download, unpacking, namespace)
                await asyncio.to_thread(unpacking.rename, tree)
            except ImageFormatError as exc:
                raise ImageError(f"the file downloaded from {url} is not a GVMI image: {exc}") from exc
            except OSError as exc:
                raise ImageError(f"cannot unpack the image {digest} into {self.directory}: {exc}") from exc
        finally:
            await asyncio.to_thread(download.unlink, True)
            await asyncio.to_thread(remove_tree, unpacking, _namespace_if_made())
        self.downloads[digest] = self.downloads.get(digest, 0) + 1
        _log.debug("image %s downloaded from %s and unpacked at %s", digest, url, tree)
        return image_from_metadata(metadata, tree, digest)

    async def _download(self, url: str, target: Path, digest: str) -> str:
        """Stream ``url`` into ``target``; return the SHA3-224 hex digest of what came."""
        if url.startswith("gftp://") and self._gftp_download is not None:
            return await self._download_gftp(url, target, digest)
        if not url.startswith(("http://", "https://")):
            raise ImageError(
                f"the image {digest} is at {url!r}, which is neither an http(s) URL nor a gftp:// URL of the "
                "requestor; providers download over HTTP or gftp"
            )
        if self._session is None:
            timeout = aiohttp.ClientTimeout(
                total=self.download_timeout, sock_connect=_CONNECT_TIMEOUT, sock_read=_READ_TIMEOUT
            )
            self._session = aiohttp.ClientSession(timeout=timeout)
        hasher = hashlib.sha3_224()
        try:
            async with self._session.get(url) as response:
                if response.status != 200:
                    text = (await response.text(errors="replace"))[:300].strip()
                    raise ImageError(
                        f"downloading the image {digest} from {url} failed: the server answered {response.status}"
                        + (f" ({text})" if text else "")
                        + _where_to_publish(digest)
                    )
                with open(target, "wb") as out:  # noqa: ASYNC230 - chunks of 64 KiB to a local file
                    async for chunk in response.content.iter_chunked(_CHUNK):
                        hasher.update(chunk)
                        out.write(chunk)
        except (aiohttp.ClientError, asyncio.TimeoutError, OSError) as exc:
            raise ImageError(
                f"cannot download the image {digest} from {url}: {exc!r}{_where_to_publish(digest)}"
            ) from exc
        return hasher.hexdigest()

    async def _download_gftp(self, url: str, target: Path, digest: str) -> str:
        assert self._gftp_download is not None
        try:
            await asyncio.wait_for(self._gftp_download(url, target), self.download_timeout)
        except (LocalNodeError, asyncio.TimeoutError, OSError) as exc:
            raise ImageError(f"cannot download the image {digest} from {url}: {exc}") from exc
        return await asyncio.to_thread(_sha3_224_of, target)

    async def aclose(self) -> None:
        """Cancel the downloads under way, wait for them, close the HTTP session, and remove the unpacked
        images. Idempotent."""
        self._closed = True
        tasks = list(self._pending.values())
        for task in tasks:
            task.cancel()
        await asyncio.gather(*tasks, return_exceptions=True)
        session, self._session = self._session, None
        if session is not None:
            with contextlib.suppress(Exception):
                await session.close()
        self._images.clear()
        await asyncio.to_thread(remove_tree, self.directory, _namespace_if_made())


def _sha3_224_of(path: Path) -> str:
    hasher = hashlib.sha3_224()
    with open(path, "rb") as file:
        while chunk := file.read(_CHUNK):
            hasher.update(chunk)
    return hasher.hexdigest()


def _namespace_if_made() -> UserNamespace | None:
    """The sandboxes' user namespace if this process made one (files in the cache may belong to its ids)."""
    try:
        return user_namespace() if os.geteuid() != 0 else None
    except SandboxUnavailableError:
        return None
