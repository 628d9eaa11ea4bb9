"""An image's identity: the SHA3-224 hex digest of its file, as the registry, the task package and providers use it."""

from __future__ import annotations

import hashlib
import re
from pathlib import Path

from golem_shared.errors import ConfigurationError

__all__ = ["IMAGE_HASH_PATTERN", "check_image_hash", "file_sha3"]

IMAGE_HASH_PATTERN = re.compile(r"[0-9a-f]{56}")
"""56 lower-case hex digits: a SHA3-224 digest."""

_CHUNK = 1 << 20


def check_image_hash(value: str) -> str:
    """``value`` in lower case if it is a SHA3-224 hex digest (56 hex digits); ``ConfigurationError`` if not."""
    digest = value.strip().lower() if isinstance(value, str) else ""
    if not IMAGE_HASH_PATTERN.fullmatch(digest):
        raise ConfigurationError(
            f"{value!r} is not an image hash: an image hash is the SHA3-224 hex digest of the image file "
            "(56 hex digits), as `golem-api image build` prints it"
        )
    return digest


def file_sha3(path: Path) -> str:
    """The SHA3-224 hex digest of the file at ``path`` (an image's hash)."""
    digest = hashlib.sha3_224()
    with open(path, "rb") as source:
        while chunk := source.read(_CHUNK):
            digest.update(chunk)
    return digest.hexdigest()
