"""The local image registry: image files by hash, and tags (``name:version``) naming them.

A directory, by default ``$GOLEM_API_HOME/images`` (``GOLEM_API_HOME`` defaults to
``$XDG_DATA_HOME/golem-api``, that is ``~/.local/share/golem-api``)::

    images/
        blobs/<sha3-224 hex>.gvmi     the image files (see golem_local.images.format)
        tags.json                     {"tags": {"golem-api/simple-service:1.0": "<hash>", …}}

``golem-api image build`` adds to it; the local node serves it (``/v1/image/info``, downloads) as the public
Golem registry serves its images, so that ``vm.repo(image_tag=…)`` finds them on the local network. Adding
is safe against concurrent builds: files land by rename, and the tag index is rewritten under a lock.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

from attrs import frozen

from golem_local.images.errors import ImageFormatError, ImageNotFoundError
from golem_local.images.format import verify_image
from golem_shared.errors import ConfigurationError
from golem_shared.imagehash import IMAGE_HASH_PATTERN, check_image_hash

__all__ = [
    "HOME_ENV",
    "ImageRegistry",
    "RegistryEntry",
    "default_registry_dir",
    "golem_api_home",
    "normalize_tag",
]

HOME_ENV = "GOLEM_API_HOME"
"""The environment variable naming golem-api's data directory (the registry is its ``images``)."""

_COMPONENT = r"[a-z0-9]+(?:(?:[._]|__|-+)[a-z0-9]+)*"
_TAG = re.compile(rf"(?P<name>{_COMPONENT}(?:/{_COMPONENT})*)(?::(?P<version>[A-Za-z0-9_][A-Za-z0-9_.-]{{0,127}}))?")


def golem_api_home() -> Path:
    """``$GOLEM_API_HOME``, else ``$XDG_DATA_HOME/golem-api``, else ``~/.local/share/golem-api``."""
    home = os.environ.get(HOME_ENV)
    if home:
        return Path(home).expanduser()
    data = os.environ.get("XDG_DATA_HOME") or str(Path.home() / ".local" / "share")
    return Path(data) / "golem-api"


def default_registry_dir() -> Path:
    """Where images are kept unless told otherwise: :func:`golem_api_home` ``/ "images"``."""
    return golem_api_home() / "images"


def normalize_tag(tag: str) -> str:
    """``name:version`` (``:latest`` added when no version is given); ``ConfigurationError`` if it is not a tag.

    Names are lower case, with ``/``-separated parts of letters, digits, ``.``, ``_`` and ``-``, as Docker's.
    """
    match = _TAG.fullmatch(tag.strip()) if isinstance(tag, str) else None
    if match is None:
        raise ConfigurationError(
            f"{tag!r} is not an image tag: write NAME:VERSION with a lower-case name, e.g. golem-api/simple-service:1.0"
        )
    return f"{match['name']}:{match['version'] or 'latest'}"


@frozen
class RegistryEntry:
    """One image of a registry: its hash, size in bytes, file, and the tags naming it (sorted)."""

    hash: str
    size: int
    path: Path
    tags: tuple[str, ...] = ()


class ImageRegistry:
    """The registry in the directory ``root`` (default :func:`default_registry_dir`); see the module docstring.

    Reading never creates the directory: a registry that does not exist is an empty one.
    """

    def __init__(self, root: Path | str | None = None) -> None:
        self.root = Path(root).expanduser() if root is not None else default_registry_dir()

    def __repr__(self) -> str:
        return f"<ImageRegistry {self.root}>"

    @property
    def _blobs(self) -> Path:
        return self.root / "blobs"

    @property
    def _index(self) -> Path:
        return self.root / "tags.json"

    def path_of(self, digest: str) -> Path:
        """Where the image with hash ``digest`` is (or would be) kept."""
        return self._blobs / f"{check_image_hash(digest)}.gvmi"

    def tags(self) -> dict[str, str]:
        """Every tag and the hash it names."""
        try:
            data = json.loads(self._index.read_text(encoding="utf-8"))
        except FileNotFoundError:
            return {}
        except ValueError as exc:
            raise ImageFormatError(
                f"the tag index {self._index} is not valid JSON ({exc}); remove it and rebuild"
            ) from exc
        tags = data.get("tags") if isinstance(data, dict) else None
        if not isinstance(tags, dict):
            raise ImageFormatError(f"the tag index {self._index} has no 'tags' object; remove it and rebuild")
        return {str(tag): str(digest) for tag, digest in tags.items()}

    @contextlib.contextmanager
    def _locked(self) -> Iterator[None]:
        self.root.mkdir(parents=True, exist_ok=True)
        with open(self.root / ".lock", "a") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock, fcntl.LOCK_UN)

    def add(self, image_file: Path, *, tag: str | None = None, copy: bool = False) -> RegistryEntry:
        """Move (or with ``copy``, copy) the image file ``image_file`` into the registry (under its hash) and
        point ``tag`` at it.

        Raises :class:`~golem_local.images.errors.ImageFormatError` if the file is not a GVMI image (see
        :func:`~golem_local.images.format.verify_image`). A tag that named another image moves to this one.
        """
        digest = verify_image(image_file).hash
        normal = normalize_tag(tag) if tag is not None else None
        self._blobs.mkdir(parents=True, exist_ok=True)
        target = self.path_of(digest)
        if not target.exists():
            with tempfile.NamedTemporaryFile(dir=self._blobs, prefix=".incoming-", delete=False) as partial:
                pass
            try:
                if copy:
                    shutil.copyfile(image_file, partial.name)
                else:
                    shutil.move(str(image_file), partial.name)
                os.chmod(partial.name, 0o644)
                os.replace(partial.name, target)
            except BaseException:
                with contextlib.suppress(OSError):
                    os.unlink(partial.name)
                raise
        elif not copy:
            image_file.unlink(missing_ok=True)
        if normal is not None:
            self.tag(digest, normal)
        return self._entry(digest)

    def tag(self, digest: str, tag: str) -> None:
        """Point ``tag`` at the image ``digest`` (which must be in the registry)."""
        normal = normalize_tag(tag)
        if not self.path_of(digest).exists():
            raise ImageNotFoundError(f"no image {digest} in the local registry {self.root} to tag", hash=digest)
        with self._locked():
            tags = self.tags()
            tags[normal] = digest
            text = json.dumps({"tags": dict(sorted(tags.items()))}, indent=2) + "\n"
            with tempfile.NamedTemporaryFile(
                "w", dir=self.root, prefix=".tags-", delete=False, encoding="utf-8"
            ) as out:
                out.write(text)
            os.replace(out.name, self._index)

    def _entry(self, digest: str, tags: dict[str, str] | None = None) -> RegistryEntry:
        path = self.path_of(digest)
        names = tuple(
            sorted(tag for tag, named in (tags if tags is not None else self.tags()).items() if named == digest)
        )
        return RegistryEntry(digest, path.stat().st_size, path, names)

    def find(self, *, tag: str | None = None, hash: str | None = None) -> RegistryEntry:
        """The image named by ``tag`` or with hash ``hash`` (give one).

        Raises :class:`~golem_local.images.errors.ImageNotFoundError` saying how to build it when there is none.
        """
        if (tag is None) == (hash is None):
            raise ConfigurationError("give either tag= or hash= to find an image, not both and not neither")
        if tag is not None:
            normal = normalize_tag(tag)
            digest = self.tags().get(normal)
            if digest is None or not self.path_of(digest).exists():
                raise ImageNotFoundError(
                    f"no image tagged {normal!r} in the local registry {self.root}: build it with "
                    f"`golem-api image build DIR --tag {normal}` (DIR holding its Dockerfile)",
                    tag=normal,
                )
            return self._entry(digest)
        assert hash is not None
        digest = check_image_hash(hash)
        if not self.path_of(digest).exists():
            raise ImageNotFoundError(
                f"no image with hash {digest} in the local registry {self.root}: build it with "
                "`golem-api image build DIR --tag NAME:VERSION`; `golem-api image list` shows the images there",
                hash=digest,
            )
        return self._entry(digest)

    def entries(self) -> list[RegistryEntry]:
        """Every image of the registry, sorted by hash."""
        if not self._blobs.is_dir():
            return []
        tags = self.tags()
        digests = sorted(path.stem for path in self._blobs.glob("*.gvmi") if IMAGE_HASH_PATTERN.fullmatch(path.stem))
        return [self._entry(digest, tags) for digest in digests]
