"""Errors of local images: a Dockerfile that cannot be built, a registry that does not know an image, a file
that is not an image, a download that failed or does not match its hash.

They extend the shared error tree (:mod:`golem_shared.errors`, which holds ``ImageError`` and
``ImageNotFoundError`` since the requestor raises those too)::

    GolemError
    └── ImageError                  an image could not be built, found, fetched or read
        ├── DockerfileError         a Dockerfile line the builder refuses (also a ConfigurationError)
        ├── ImageBuildError         a build step failed (a RUN exited non-zero, a COPY source is missing)
        ├── ImageFormatError        a file is not a GVMI image (trailer, CRC, squashfs), or is damaged
        └── ImageNotFoundError      a registry knows no image by that tag or hash
"""

from __future__ import annotations

from golem_shared.errors import ConfigurationError, ImageError, ImageNotFoundError

__all__ = [
    "DockerfileError",
    "ImageBuildError",
    "ImageError",
    "ImageFormatError",
    "ImageNotFoundError",
]


class DockerfileError(ImageError, ConfigurationError):
    """A Dockerfile line the local builder cannot honour: ``path``, ``line`` (1-based) and ``instruction``.

    ``str(error)`` reads ``Dockerfile, line 7: USER: <what is wrong>; <what to do>``.
    """

    def __init__(self, message: str, *, path: str, line: int, instruction: str) -> None:
        self.path = path
        self.line = line
        self.instruction = instruction
        self.reason = message
        super().__init__(f"{path}, line {line}: {instruction}: {message}")


class ImageBuildError(ImageError):
    """A build step failed; ``path`` and ``line`` locate it in the Dockerfile (``line`` 0: not tied to one)."""

    def __init__(self, message: str, *, path: str, line: int = 0, instruction: str = "") -> None:
        self.path = path
        self.line = line
        self.instruction = instruction
        where = f"{path}, line {line}: {instruction}: " if line else f"{path}: "
        super().__init__(where + message)


class ImageFormatError(ImageError):
    """A file is not a GVMI image (see :mod:`golem_local.images.format`), or is damaged; the message names it."""
