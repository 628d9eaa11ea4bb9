"""What the local ``vm`` runtime runs: an image's files, environment, entrypoint and volumes.

A Golem VM image (GVMI) is a squashfs tree plus a Docker container config (``Env``, ``Entrypoint``, ``Cmd``,
``WorkingDir``, ``Volumes``). The local runtime has no VM: it shows an image's files inside a bubblewrap
sandbox, so an :class:`Image` is that config plus, optionally, a host directory whose contents appear at ``/``
in the sandbox (``root/golem/run/x.py`` is ``/golem/run/x.py``). Without a root, commands see only the host's
system directories (read-only) and the volumes: enough for shell commands and ``python3``.

Each activity works on its own copy of the root, so an image's files are writable inside an activity (a
service may keep its database next to its scripts) while the root itself is never changed. ``base`` is the
``FROM`` the image was built on: a ``python`` base (``python:3.11-slim``, ``docker.io/library/python``) makes
the sandbox show the host's Python at ``/usr/local``
(:mod:`~golem_local.runtime.python_base`); any other base shows the host's system directories only.
Images come from :mod:`golem_local.images` (built by ``golem-api image build``, downloaded by providers):
those are GVMI files with a whole root file system (``rootfs=True``), which becomes the sandbox's ``/``
(:mod:`~golem_local.runtime.rootfs`); what this docstring says of the host's directories and Python is
for images given as an :class:`Image` of a few files (``LocalNetworkConfig(images=…)``, tests).
"""

from __future__ import annotations

import posixpath
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from attrs import field, frozen

from golem_local.runtime.base import RuntimeFailure, Volume

__all__ = [
    "DEFAULT_IMAGE",
    "DEFAULT_VOLUMES",
    "Image",
    "check_sandbox_path",
    "is_python_base",
    "volume_of",
]

DEFAULT_VOLUMES: tuple[str, ...] = ("/golem/in", "/golem/out", "/golem/input", "/golem/output", "/golem/work")
"""The writable directories every activity gets when its image declares none (the usual Golem examples' paths)."""


def check_sandbox_path(path: str, what: str) -> str:
    """Return ``path`` normalised if it is an absolute path inside the sandbox other than ``/``.

    Raises ``ValueError`` naming ``what`` (e.g. "volume") and the value when it is relative, is ``/``, or
    climbs with ``..``: such a path could not be mapped safely to a host directory.
    """
    if not isinstance(path, str) or not path.startswith("/"):
        raise ValueError(f"the {what} {path!r} is not an absolute path; write it as /golem/work or similar")
    if ".." in path.split("/"):
        raise ValueError(f"the {what} {path!r} contains '..'; name the directory directly")
    normal = posixpath.normpath(path)
    if normal.startswith("//"):  # POSIX keeps a leading double slash; for us it is the same as one
        normal = "/" + normal.lstrip("/")
    if normal == "/":
        raise ValueError(f"the {what} {path!r} is the root directory; name a directory below it")
    return normal


def volume_of(volumes: Sequence[Volume], path: str) -> tuple[Volume, Path]:
    """The volume holding the sandbox path ``path`` (the deepest, when volumes nest) and ``path``'s host path in
    it, not resolved; :class:`RuntimeFailure` naming the volumes when ``path`` is not an absolute path in one."""
    names = ", ".join(volume.path for volume in volumes) or "none yet: deploy first"
    try:
        normal = check_sandbox_path(path, "path")
    except ValueError as exc:
        raise RuntimeFailure(f"{exc}; files can go to and from the volumes only ({names})") from None
    inside = [v for v in volumes if normal == v.path or normal.startswith(v.path.rstrip("/") + "/")]
    if not inside:
        raise RuntimeFailure(f"{path!r} is not inside a volume; files can go to and from these only: {names}")
    volume = max(inside, key=lambda candidate: len(candidate.path))
    return volume, volume.host_path / normal[len(volume.path) :].lstrip("/")


def is_python_base(reference: str) -> bool:
    """Whether the image reference ``reference`` (``python:3.11-slim``, ``docker.io/library/python``…) names the
    official ``python`` images, which the local runtime maps onto the host's Python."""
    name = reference.strip().lower().split("@", 1)[0]
    last = name.rsplit("/", 1)[-1]
    repository = name.rsplit("/", 1)[0] if "/" in name else ""
    return last.split(":", 1)[0] == "python" and repository in (
        "",
        "library",
        "docker.io/library",
        "index.docker.io/library",
    )


def _env(values: Mapping[str, str]) -> dict[str, str]:
    return {str(key): str(value) for key, value in values.items()}


def _strings(values: Iterable[str]) -> tuple[str, ...]:
    if isinstance(values, str):  # a lone string would otherwise become a tuple of characters
        return (values,)
    return tuple(str(value) for value in values)


def _root(value: Path | str | None) -> Path | None:
    return None if value is None else Path(value)


@frozen
class Image:
    """An image as the local ``vm`` runtime sees it (see the module docstring).

    ``env`` is the image's environment (Docker ``Env``), ``entrypoint`` and ``cmd`` its Docker defaults
    (kept for the exe-unit; the runtime itself runs only what ``run`` commands name), ``working_dir`` the
    default directory of commands, ``volumes`` the writable directories of each activity, ``hash`` the
    SHA3-224 hex digest of the image file it came from, if any, and ``base`` its ``FROM`` (see the module
    docstring). ``rootfs``: ``root`` is a whole root file system (an unpacked GVMI), which the sandbox shows
    as its ``/`` (writable per activity) instead of the host's system directories.
    """

    root: Path | None = field(default=None, converter=_root)
    env: Mapping[str, str] = field(factory=dict, converter=_env)
    entrypoint: tuple[str, ...] = field(default=(), converter=_strings)
    cmd: tuple[str, ...] = field(default=(), converter=_strings)
    working_dir: str = "/golem/work"
    volumes: tuple[str, ...] = field(default=DEFAULT_VOLUMES, converter=_strings)
    hash: str | None = None
    base: str = ""
    rootfs: bool = False

    @property
    def uses_host_python(self) -> bool:
        """Whether the image was built on a ``python`` base, so the sandbox shows the host's Python."""
        return is_python_base(self.base)


DEFAULT_IMAGE = Image()
"""No files of its own, the default volumes, ``/golem/work`` as working directory."""
