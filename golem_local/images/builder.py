"""``golem-api image build``: a GVMI image (a whole root file system) from a Dockerfile.

Two ways to build, chosen by ``engine`` (:data:`ENGINES`):

- **the builder's own interpreter** (``"none"``): no daemon, no registry. The base comes from Debian's
  packages (:mod:`~golem_local.images.bases`: ``debian:*``, ``python:*``, ``scratch``), unpacked into a tree;
  the steps play on it (:mod:`~golem_local.images.dockerfile` says which), ``RUN`` in a bubblewrap sandbox with
  the tree as ``/``, the host's network (``apt-get install``, ``pip install`` work), the root of the user
  namespace the tree belongs to (:func:`golem_local.runtime.rootfs.user_namespace`, so ``apt`` may switch to
  ``_apt`` and ``dpkg`` give files to ``www-data``); then ``mksquashfs`` and the GVMI metadata
  (:mod:`~golem_local.images.format`). Its ``RUN`` steps' results are cached (:mod:`~golem_local.images.buildcache`):
  the second build of a Dockerfile reuses them and gives the same hash.
- **a container engine** (``"docker"``, ``"podman"``, :mod:`~golem_local.images.engine`): the engine builds the
  whole Dockerfile, whatever it holds, and its root file system is exported into the GVMI.

``"auto"`` (the default) uses the own interpreter when it can honour the Dockerfile, and otherwise a usable
engine if there is one (a daemon that answers, or podman): the image of a Dockerfile the interpreter can build
does not depend on what happens to be installed, and any other Dockerfile still builds where an engine exists.

``RUN`` steps see the host's CA bundle (``host_ca``, by default ``/etc/ssl/certs/ca-certificates.crt`` when
the host has one) at ``/.golem-build/ca-certificates.crt``, named by ``SSL_CERT_FILE``, ``PIP_CERT``,
``REQUESTS_CA_BUNDLE``, ``CURL_CA_BUNDLE``, ``GIT_SSL_CAINFO`` and ``NODE_EXTRA_CA_CERTS`` (unless the
Dockerfile sets them): behind a TLS-intercepting proxy that only the host trusts, ``pip install`` works. Neither
the file nor those variables end up in the image.
"""

from __future__ import annotations

import asyncio
import contextlib
import hashlib
import os
import posixpath
import shutil
import stat
import subprocess
import tempfile
import time
from collections.abc import Callable, Iterator, Mapping
from pathlib import Path

from attrs import frozen

from golem_local.images.bases import Base, BaseUnavailable, BuiltBase, cache_dir, ensure_base, resolve_base
from golem_local.images.buildcache import BuildCache, chain
from golem_local.images.dockerfile import (
    ArgStep,
    CommandStep,
    CopyStep,
    Dockerfile,
    EnvStep,
    ExposeStep,
    FromStep,
    LabelStep,
    RunStep,
    Step,
    VolumeStep,
    WorkdirStep,
    expand,
    parse_dockerfile,
)
from golem_local.images.errors import DockerfileError, ImageBuildError, ImageFormatError
from golem_local.images.format import (
    COMPRESSIONS,
    DEFAULT_COMPRESSION,
    EPOCH,
    ImageMetadata,
    gvmi_from_squashfs,
    make_squashfs,
    unpack_squashfs,
)
from golem_local.images.registry import ImageRegistry, normalize_tag
from golem_local.runtime.image import check_sandbox_path
from golem_local.runtime.rootfs import (
    AGENT_DIR,
    UserNamespace,
    hosts_file,
    owned_directory,
    remove_tree,
    user_namespace,
)
from golem_local.runtime.sandbox import DEFAULT_PATH, MISSING_MESSAGE, describe_exit
from golem_shared.errors import ConfigurationError, SandboxUnavailableError

__all__ = [
    "BUILD_CA_PATH",
    "DEFAULT_RUN_TIMEOUT",
    "ENGINES",
    "HOST_CA",
    "BuildLog",
    "BuildResult",
    "build_image",
]

DEFAULT_RUN_TIMEOUT = 1200.0
"""Seconds one ``RUN`` step may take before the build is stopped."""

ENGINES = ("auto", "none", "docker", "podman")
"""What builds: ``auto`` (see the module docstring), ``none`` (the own interpreter), or that engine."""

HOST_CA = Path("/etc/ssl/certs/ca-certificates.crt")
"""The host's CA bundle (Debian's path), shown to ``RUN`` steps by default when it exists."""

BUILD_CA_PATH = "/.golem-build/ca-certificates.crt"
"""Where ``RUN`` steps of the own interpreter find the host's CA bundle."""

SNAPSHOT_SECONDS = 3.0
"""A ``RUN`` step that takes at least this long is kept in the build cache (so is the last ``RUN``)."""

BuildLog = Callable[[str], None]
"""Where the build's progress goes: step headers (whole lines) and ``RUN`` output (pieces, as they come)."""

_CA_VARIABLES = (
    "SSL_CERT_FILE",
    "PIP_CERT",
    "REQUESTS_CA_BUNDLE",
    "CURL_CA_BUNDLE",
    "GIT_SSL_CAINFO",
    "NODE_EXTRA_CA_CERTS",
)
_RESERVED_VOLUMES = ("/proc", "/dev", "/sys", AGENT_DIR)
_TAIL = 2000  # bytes of a failed RUN's output quoted in the error
_GLOB = frozenset("*?[")
_KILL_WAIT = 5.0
_TOOL_TIMEOUT = 1800.0
_MAX_LINKS = 40


@frozen
class BuildResult:
    """A built image: its hash, tag (``None`` when built without one), size in bytes, file in the registry,
    metadata, the build's wall time in seconds, what built it (``"none"``: the own interpreter, or the
    engine's name), how many ``RUN`` steps came from the build cache, and notes on the base (e.g. the Python
    version a ``python:*`` base really has)."""

    hash: str
    tag: str | None
    size: int
    path: Path
    metadata: ImageMetadata
    seconds: float
    engine: str = "none"
    cached_steps: int = 0
    notes: tuple[str, ...] = ()


def _content_hash(paths: list[Path], context: Path) -> str:
    """SHA-256 of what COPY takes from ``paths``: names (relative to the context), types, modes, link targets,
    contents; directories recursively, in sorted order."""
    digest = hashlib.sha256()

    def add(path: Path) -> None:
        info = path.lstat()
        digest.update(f"{path.relative_to(context)}\0{info.st_mode:o}\0".encode())
        if stat.S_ISLNK(info.st_mode):
            digest.update(os.readlink(path).encode() + b"\0")
        elif stat.S_ISDIR(info.st_mode):
            for child in sorted(path.iterdir()):
                add(child)
        elif stat.S_ISREG(info.st_mode):
            with open(path, "rb") as source:
                while chunk := source.read(1 << 20):
                    digest.update(chunk)
            digest.update(b"\0")

    for path in paths:
        add(path)
    return digest.hexdigest()


@contextlib.contextmanager
def _kept_mtime(directory: Path) -> Iterator[None]:
    """Restore ``directory``'s modification time after adding entries to it (so images do not depend on when
    they were built)."""
    try:
        before = directory.lstat()
    except OSError:
        yield
        return
    try:
        yield
    finally:
        with contextlib.suppress(OSError):
            os.utime(directory, ns=(before.st_atime_ns, before.st_mtime_ns), follow_symlinks=False)


class _Build:
    """One build by the own interpreter: the tree, the metadata so far, the cache keys.

    The steps are played twice: a dry pass that validates every line, makes the base and computes each
    step's cache key (:meth:`plan`), then the real one (:meth:`execute`), which starts from the latest
    ``RUN`` layer the cache holds and plays the steps after it.
    """

    def __init__(
        self,
        dockerfile: Dockerfile,
        context: Path,
        work: Path,
        *,
        build_args: Mapping[str, str],
        log: BuildLog,
        bwrap: str,
        run_timeout: float,
        namespace: UserNamespace,
        cache: BuildCache | None,
        host_ca: Path | None,
        compression: tuple[str, int | None],
        refresh_bases: bool,
    ) -> None:
        self.dockerfile = dockerfile
        self.context = context.resolve()
        self.work = work
        self.tree = work / "tree"
        self.build_args = dict(build_args)
        self.log = log
        self.bwrap = bwrap
        self.run_timeout = run_timeout
        self.namespace = namespace
        self.cache = cache
        self.host_ca = host_ca
        self.compression = compression
        self.refresh_bases = refresh_bases
        self.notes: list[str] = []
        self.base: BuiltBase | None = None
        self.keys: list[str] = []  # the key after each step (dry pass)
        self.last_run = -1  # index of the last RUN step
        self.resume = -1  # index of the step whose layer the real pass starts from
        self.cached_steps = 0
        self._reset()

    def _reset(self) -> None:
        self.dry = True
        self.key = ""
        self.global_args: dict[str, str | None] = {}
        self.args: dict[str, str | None] = {}
        self.env: dict[str, str] = {}
        self.workdir = "/"
        self.workdir_set = False
        self.entrypoint: tuple[str, ...] | None = None
        self.cmd: tuple[str, ...] | None = None
        self.cmd_set = False
        self.volumes: list[str] = []
        self.labels: dict[str, str] = {}
        self.exposed: list[str] = []
        self.step: Step | None = None
        self.materialized = False
        self.origin: tuple[str, Path | None] = ("empty", None)
        self.layer: Path | None = None  # a layer equal to the tree as it is now

    # -- errors and variables -------------------------------------------------------------------------------

    def refuse(self, message: str) -> DockerfileError:
        assert self.step is not None
        return DockerfileError(message, path=self.dockerfile.path, line=self.step.line, instruction=self.step.keyword)

    def failed(self, message: str) -> ImageBuildError:
        assert self.step is not None
        return ImageBuildError(message, path=self.dockerfile.path, line=self.step.line, instruction=self.step.keyword)

    def variables(self) -> dict[str, str]:
        values = {name: value for name, value in self.args.items() if value is not None}
        return {**values, **self.env}

    def expand(self, text: str) -> str:
        try:
            return expand(text, self.variables())
        except ValueError as exc:
            raise self.refuse(f"{exc}; write variables as $NAME or ${{NAME}}") from None

    # -- paths in the tree ----------------------------------------------------------------------------------

    def absolute(self, path: str) -> str:
        """``path`` in the image, made absolute against the ``WORKDIR`` and normalised."""
        joined = posixpath.normpath(posixpath.join(self.workdir, path))
        return "/" + joined.lstrip("/")

    def own(self, path: Path) -> None:
        """Give what the builder made in the tree to the image's root: the root of the namespace when that is
        not the node's own user (the node runs as root: :func:`~golem_local.runtime.rootfs.user_namespace`)."""
        if self.namespace.root_owner is not None:
            os.lchown(path, *self.namespace.root_owner)

    def directory(self, path: str) -> Path:
        """The host directory of the image directory ``path`` (absolute), made with its parents when missing.

        Symbolic links are followed as the image itself would follow them (``/var/run`` → ``/run``, ``/bin`` →
        ``usr/bin``), never out of the tree; new directories get the time stamp :data:`EPOCH` and leave their
        parent's time stamp as it was.
        """
        parts = [part for part in path.split("/") if part]
        current = ""
        links = 0
        while parts:
            part = parts.pop(0)
            if part == ".":
                continue
            if part == "..":
                current = posixpath.dirname(current)
                continue
            candidate = f"{current}/{part}"
            host = self.tree / candidate.lstrip("/")
            if host.is_symlink():
                links += 1
                if links > _MAX_LINKS:
                    raise self.failed(f"{path} goes through more than {_MAX_LINKS} symbolic links in the image")
                target = os.readlink(host)
                if target.startswith("/"):
                    current = ""
                parts = [p for p in target.split("/") if p] + parts
                continue
            if not host.exists():
                parent = self.tree / current.lstrip("/") if current else self.tree
                with _kept_mtime(parent):
                    host.mkdir()
                self.own(host)
                os.utime(host, (EPOCH, EPOCH))
            elif not host.is_dir():
                raise self.failed(f"{path} needs {candidate} to be a directory, but in the image it is a file")
            current = candidate
        return self.tree / current.lstrip("/") if current else self.tree

    # -- the two passes -------------------------------------------------------------------------------------

    async def plan(self) -> None:
        """The dry pass: every line checked, the base made, each step's key; find the layer to start from."""
        self._reset()
        steps = self.dockerfile.steps
        for index, step in enumerate(steps):
            if isinstance(step, RunStep):
                self.last_run = index
            await self.play(index, step)
            self.keys.append(self.key)
        if self.cache is not None:
            for index in range(len(steps) - 1, -1, -1):
                if isinstance(steps[index], RunStep) and self.cache.find(self.keys[index]) is not None:
                    self.resume = index
                    break

    async def execute(self) -> None:
        """The real pass (after :meth:`plan`)."""
        self._reset()
        self.dry = False
        steps = self.dockerfile.steps
        for index, step in enumerate(steps):
            self.step = step
            self.log(f"Step {index + 1}/{len(steps)} : {step.text}\n")
            if index == self.resume:
                assert self.cache is not None
                layer = self.cache.find(self.keys[index])
                if layer is None:
                    raise self.failed("its cached result was removed meanwhile (another build evicted it); build again")
                self.origin = ("layer", layer)
                self.materialized = False
                self.layer = layer
            if index <= self.resume:
                self.dry = True
                await self.play(index, step)
                self.dry = False
                if isinstance(step, RunStep):
                    self.cached_steps += 1
                    self.log(" ---> Using cache\n")
                continue
            await self.play(index, step)

    async def play(self, index: int, step: Step) -> None:
        self.step = step
        if isinstance(step, FromStep):
            await self.from_(step)
        elif isinstance(step, CopyStep):
            await self.copy(step)
        elif isinstance(step, RunStep):
            await self.run(step, last=index == self.last_run)
        elif isinstance(step, EnvStep):
            variables = self.variables()  # every value of one ENV line sees the values before the line
            for name, value in step.pairs:
                try:
                    self.env[name] = expand(value, variables)
                except ValueError as exc:
                    raise self.refuse(f"{exc}; write variables as $NAME or ${{NAME}}") from None
        elif isinstance(step, ArgStep):
            self.arg(step)
        elif isinstance(step, WorkdirStep):
            self.workdir = self.absolute(self.expand(step.path))
            self.workdir_set = True
            self.key = chain(self.key, "WORKDIR", self.workdir)
            await self.tree_op(lambda: self.directory(self.workdir))
        elif isinstance(step, VolumeStep):
            await self.volume(step)
        elif isinstance(step, CommandStep):
            argv = ("/bin/sh", "-c", step.argv[0]) if step.shell else step.argv
            if step.keyword == "ENTRYPOINT":
                self.entrypoint = argv
                if not self.cmd_set:
                    self.cmd = None  # as Docker: an ENTRYPOINT drops the CMD of the base image
            else:
                self.cmd = argv
                self.cmd_set = True
        elif isinstance(step, LabelStep):
            self.labels.update((self.expand(key), self.expand(value)) for key, value in step.pairs)
        elif isinstance(step, ExposeStep):
            for port in (self.expand(port) for port in step.ports):
                self.exposed.append(port if "/" in port else f"{port}/tcp")
        # anything else (USER root) changes nothing

    async def tree_op(self, operation: Callable[[], object]) -> None:
        """Apply ``operation`` to the tree (made first if need be), unless this is a dry pass."""
        if self.dry:
            return
        await self.materialize()
        self.layer = None
        await asyncio.to_thread(operation)

    async def materialize(self) -> None:
        """Make the tree what :attr:`origin` says (the base, or a cached layer), once."""
        if self.materialized:
            return
        await asyncio.to_thread(remove_tree, self.tree, self.namespace)
        kind, source = self.origin
        try:
            if kind == "layer":
                assert source is not None
                await asyncio.to_thread(self.unsquash, source)
            elif kind == "tar":
                assert source is not None
                await asyncio.to_thread(self.untar, source)
            else:
                self.tree.mkdir(mode=0o755)
                self.own(self.tree)
        except (ImageFormatError, OSError) as exc:
            raise self.failed(f"cannot set up the build's tree in {self.work}: {exc}") from exc
        self.materialized = True

    def unsquash(self, layer: Path) -> None:
        """Unpack a cached layer as the tree, in the namespace (files and directory through descriptors)."""
        source = os.open(layer, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with owned_directory(self.tree, self.namespace) as (inside, fds):
                unpack_squashfs(
                    Path(f"/proc/self/fd/{source}"),
                    Path(inside),
                    wrap=self.namespace.enter,
                    pass_fds=(*self.namespace.pass_fds, source, *fds),
                )
        finally:
            os.close(source)

    def untar(self, tar: Path) -> None:
        """Unpack a base's tar as the tree, in the namespace (files and directory through descriptors)."""
        owners = ["--numeric-owner"] if self.namespace.maps_many_ids else ["--no-same-owner"]
        source = os.open(tar, os.O_RDONLY | os.O_CLOEXEC)
        try:
            with owned_directory(self.tree, self.namespace) as (inside, fds):
                script = 'mkdir -m 0755 "$1" && shift && exec tar "$@"'
                command = [*self.namespace.enter, "sh", "-c", script, "untar", inside]
                command += ["-xpf", f"/proc/self/fd/{source}", *owners, "-C", inside, "--exclude=./dev/*"]
                process = subprocess.run(
                    command,
                    capture_output=True,
                    pass_fds=(*self.namespace.pass_fds, source, *fds),
                    timeout=_TOOL_TIMEOUT,
                    check=False,
                )
        finally:
            os.close(source)
        if process.returncode != 0:
            raise OSError(f"unpacking {tar} failed: {process.stderr.decode(errors='replace').strip()[-1000:]}")

    # -- FROM, ARG, VOLUME ----------------------------------------------------------------------------------

    async def from_(self, step: FromStep) -> None:
        reference = self.expand(step.image)
        try:
            base: Base = resolve_base(reference)
        except BaseUnavailable as exc:
            raise self.refuse(str(exc)) from None
        self.global_args, self.args = self.args, {}
        self.env = dict(base.env)
        self.cmd = base.cmd
        self.cmd_set = False
        root = f"{self.compression[0]}:{self.compression[1]}"
        if base.kind == "scratch":
            self.key = chain("", "FROM", "scratch", root)
            self.origin = ("empty", None)
        else:
            if self.base is None:
                self.base = await ensure_base(base, log=self.log, refresh=self.refresh_bases)
            built = self.base
            self.key = chain("", "FROM", built.sha256, root)
            self.origin = ("tar", built.tar)
            if base.kind == "python" and built.python_version:
                self.env["PYTHON_VERSION"] = built.python_version
            if self.dry and base.note not in self.notes:
                self.notes.append(base.note)
        if not self.dry:
            self.log(f" → {base.note}\n")

    def arg(self, step: ArgStep) -> None:
        for name, default in step.pairs:
            if name in self.build_args:
                value: str | None = self.build_args[name]
            elif default is not None:
                value = self.expand(default)
            else:
                value = self.global_args.get(name)
            self.args[name] = value

    async def volume(self, step: VolumeStep) -> None:
        paths = []
        for raw in step.paths:
            try:
                path = check_sandbox_path(self.expand(raw), "volume")
            except ValueError as exc:
                raise self.refuse(str(exc)) from None
            taken = [reserved for reserved in _RESERVED_VOLUMES if path == reserved or path.startswith(reserved + "/")]
            if taken:
                raise self.refuse(f"the volume {path} is inside {taken[0]}, which the sandbox fills itself")
            paths.append(path)
            if path not in self.volumes:
                self.volumes.append(path)
        self.key = chain(self.key, "VOLUME", paths)

        def make() -> None:
            for path in paths:
                self.directory(path)

        await self.tree_op(make)

    # -- COPY / ADD -----------------------------------------------------------------------------------------

    def sources(self, step: CopyStep) -> list[Path]:
        found: list[Path] = []
        for raw in step.sources:
            text = self.expand(raw)
            relative = posixpath.normpath(text.lstrip("/") or ".")
            if relative == ".." or relative.startswith("../"):
                raise self.refuse(f"the source {text!r} is outside the build context {self.context}; copy it in first")
            if _GLOB & set(relative):
                matches = sorted(self.context.glob(relative))
                if not matches:
                    raise self.failed(f"no file of the build context {self.context} matches {text!r}")
                found += matches
                continue
            path = self.context / relative
            if not os.path.lexists(path):
                raise self.failed(f"the source {text!r} is not in the build context {self.context}")
            found.append(path)
        for path in found:
            real = path.parent.resolve() / path.name
            if real != self.context and self.context not in real.parents:
                raise self.refuse(f"the source {path} leads outside the build context {self.context}; copy it in first")
        return found

    async def copy(self, step: CopyStep) -> None:
        sources = self.sources(step)
        raw_dest = self.expand(step.dest)
        dest = self.absolute(raw_dest)
        into = raw_dest.endswith("/") or raw_dest in (".", "./")
        if len(sources) > 1 and not into:
            raise self.refuse(f"copying {len(sources)} sources needs a directory as destination: write {raw_dest}/")
        content = await asyncio.to_thread(_content_hash, sources, self.context)
        names = [str(source.relative_to(self.context)) for source in sources]
        self.key = chain(self.key, "COPY", names, dest, into, step.chmod, content)
        await self.tree_op(lambda: self.copy_now(sources, dest, into, step.chmod))

    def copy_now(self, sources: list[Path], dest: str, into: bool, chmod: int | None) -> None:
        for source in sources:
            if source.is_dir() and not source.is_symlink():
                target = self.directory(dest)
                for child in sorted(source.iterdir()):
                    self.copy_entry(child, target / child.name, chmod)
                continue
            parent = self.directory(posixpath.dirname(dest))
            existing = parent / posixpath.basename(dest)
            if into or (existing.is_dir() and not existing.is_symlink()):
                target = self.directory(dest) / source.name
            else:
                target = existing
            self.copy_entry(source, target, chmod)

    def copy_entry(self, source: Path, target: Path, chmod: int | None) -> None:
        """Copy ``source`` (a file, link or directory) to ``target`` in the tree, replacing a file or link there."""
        info = source.lstat()
        with _kept_mtime(target.parent):
            if target.is_symlink() or (target.exists() and not target.is_dir()):
                if stat.S_ISDIR(info.st_mode):
                    raise self.failed(
                        f"cannot copy the directory {source} over the file /{target.relative_to(self.tree)}"
                    )
                target.unlink()
            if stat.S_ISLNK(info.st_mode):
                os.symlink(os.readlink(source), target)
                self.own(target)
                os.utime(target, (EPOCH, EPOCH), follow_symlinks=False)
                return
            if stat.S_ISDIR(info.st_mode):
                if not target.exists():
                    target.mkdir()
                    self.own(target)
                for child in sorted(source.iterdir()):
                    self.copy_entry(child, target / child.name, chmod)
                target.chmod(stat.S_IMODE(info.st_mode) if chmod is None else chmod)
            elif stat.S_ISREG(info.st_mode):
                if target.is_dir():
                    raise self.failed(
                        f"cannot copy the file {source} over the directory /{target.relative_to(self.tree)}"
                    )
                shutil.copyfile(source, target)
                self.own(target)
                target.chmod(stat.S_IMODE(info.st_mode) if chmod is None else chmod)
            else:
                raise self.refuse(f"{source} is not a file, a directory or a symbolic link; images hold only those")
            os.utime(target, (EPOCH, EPOCH))

    # -- RUN ------------------------------------------------------------------------------------------------

    def run_env(self) -> dict[str, str]:
        args = {name: value for name, value in self.args.items() if value is not None}
        return {"PATH": DEFAULT_PATH, "HOME": "/root", **args, **self.env}

    async def run(self, step: RunStep, *, last: bool) -> None:
        argv = ["/bin/sh", "-c", step.argv[0]] if step.shell else list(step.argv)
        env = self.run_env()
        self.key = chain(self.key, "RUN", argv, env, self.workdir)
        if self.dry:
            return
        await self.materialize()
        self.layer = None
        started = time.monotonic()
        await self.sandboxed(argv, env)
        took = time.monotonic() - started
        if self.cache is not None and (last or took >= SNAPSHOT_SECONDS):
            partial = self.cache.partial(self.key)
            try:
                await asyncio.to_thread(self.squash, partial)
            except ImageFormatError as exc:
                raise self.failed(f"cannot keep the step's result in the build cache: {exc}") from exc
            self.layer = self.cache.store(self.key, partial)

    def squash(self, destination: Path) -> None:
        """The tree as a squashfs at ``destination``, written in the namespace (so with the image's own ids)."""
        with owned_directory(destination, self.namespace) as (inside, fds):
            make_squashfs(
                self.tree,
                Path(inside),
                compression=self.compression[0],
                level=self.compression[1],
                wrap=self.namespace.enter,
                pass_fds=(*self.namespace.pass_fds, *fds),
            )

    def mount_points(self) -> list[str]:
        points = ["/proc", "/dev", "/etc", "/etc/resolv.conf", "/etc/hosts"]
        if self.host_ca is not None:
            points += [posixpath.dirname(BUILD_CA_PATH), BUILD_CA_PATH]
        return points

    async def sandboxed(self, argv: list[str], env: dict[str, str]) -> None:
        """Run ``argv`` in a sandbox over the tree; raise :class:`ImageBuildError` unless it exits with 0."""
        hosts = self.work / "hosts"
        hosts.write_text(hosts_file("golem-build"))
        command = [*self.namespace.enter, self.bwrap, "--bind", str(self.tree), "/", "--proc", "/proc", "--dev", "/dev"]
        if os.path.exists("/etc/resolv.conf"):  # noqa: ASYNC240 - one stat
            command += ["--ro-bind", "/etc/resolv.conf", "/etc/resolv.conf"]
        command += ["--ro-bind", str(hosts), "/etc/hosts"]
        step_env = dict(env)
        if self.host_ca is not None:
            command += ["--ro-bind", str(self.host_ca), BUILD_CA_PATH]
            for name in _CA_VARIABLES:
                step_env.setdefault(name, BUILD_CA_PATH)
        command += ["--unshare-pid", "--unshare-ipc", "--unshare-uts", "--unshare-cgroup-try"]
        command += ["--hostname", "golem-build", "--die-with-parent", "--new-session", "--clearenv"]
        for name, value in step_env.items():
            command += ["--setenv", name, value]
        workdir = self.workdir
        if not (self.tree / workdir.lstrip("/")).is_dir():
            workdir = "/"
        command += ["--chdir", workdir, "--", *argv]
        points = self.mount_points()
        existed = {point for point in points if os.path.lexists(self.tree / point.lstrip("/"))}  # noqa: ASYNC240
        tail = b""
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                pass_fds=self.namespace.pass_fds,
            )
        except OSError as exc:
            raise self.failed(f"cannot run bubblewrap {self.bwrap!r}: {exc}; {MISSING_MESSAGE}") from exc
        stdout = process.stdout
        assert stdout is not None

        async def pump() -> int:
            nonlocal tail
            while chunk := await stdout.read(65536):
                tail = (tail + chunk)[-_TAIL:]
                self.log(chunk.decode(errors="replace"))
            return await process.wait()

        try:
            code = await asyncio.wait_for(pump(), self.run_timeout)
        except asyncio.TimeoutError:
            raise self.failed(
                f"did not finish within {self.run_timeout:.0f} s and was stopped; make the step faster, or build "
                "with a longer run timeout"
            ) from None
        finally:
            if process.returncode is None:
                with contextlib.suppress(ProcessLookupError):
                    process.kill()
                with contextlib.suppress(asyncio.TimeoutError):
                    await asyncio.wait_for(process.wait(), _KILL_WAIT)
            await asyncio.to_thread(self.remove_mount_points, points, existed)
        if code != 0:
            said = tail.decode(errors="replace").strip()
            hint = ""
            if not self.namespace.maps_many_ids and "apt" in " ".join(argv):
                hint = (
                    "; RUN steps run in a user namespace with a single id here, where apt-get cannot work: give this "
                    "user subordinate ids (`usermod --add-subuids 100000-165535 --add-subgids 100000-165535 USER`, "
                    "package uidmap) or build as root"
                )
            raise self.failed(
                f"`{' '.join(argv)}` {describe_exit(code)}" + (f"; it said:\n{said}" if said else "") + hint
            )

    def remove_mount_points(self, points: list[str], existed: set[str]) -> None:
        """Remove what bubblewrap created in the tree to mount over (empty directories, empty files)."""
        for point in sorted(points, key=lambda path: path.count("/"), reverse=True):
            if point in existed:
                continue
            path = self.tree / point.lstrip("/")
            with contextlib.suppress(OSError):
                if path.is_symlink():
                    continue
                if path.is_dir():
                    path.rmdir()  # only when empty: a step may have put files there since
                elif path.is_file() and path.stat().st_size == 0:
                    path.unlink()

    # -- the result -----------------------------------------------------------------------------------------

    def metadata(self) -> ImageMetadata:
        labels = dict(self.labels)
        return ImageMetadata(
            env=[f"{name}={value}" for name, value in self.env.items()],
            entrypoint=self.entrypoint,
            cmd=self.cmd,
            working_dir=self.workdir if self.workdir_set else "",
            volumes=sorted(self.volumes),
            labels=labels,
            exposed_ports=sorted(set(self.exposed)),
        )

    async def write(self, destination: Path) -> None:
        """Write the image (from the layer equal to the tree when there is one: no second ``mksquashfs``)."""
        metadata = self.metadata()
        try:
            if self.layer is not None:
                await asyncio.to_thread(gvmi_from_squashfs, self.layer, metadata, destination)
                return
            await self.materialize()
            squashfs = destination.with_name(destination.name + ".sqfs")
            await asyncio.to_thread(self.squash, squashfs)
            try:
                await asyncio.to_thread(gvmi_from_squashfs, squashfs, metadata, destination)
            finally:
                squashfs.unlink(missing_ok=True)
        except ImageFormatError as exc:
            raise ImageBuildError(f"cannot write the image: {exc}", path=self.dockerfile.path) from exc


def _check_options(
    context: Path, dockerfile: Path | str | None, run_timeout: float, engine: str, compression: str | None
) -> Path:
    if not context.is_dir():
        raise ConfigurationError(
            f"the build context {str(context)!r} is not a directory; give the folder of the Dockerfile"
        )
    dockerfile_path = Path(dockerfile) if dockerfile is not None else context / "Dockerfile"
    if not dockerfile_path.is_file():
        raise ConfigurationError(
            f"there is no Dockerfile at {str(dockerfile_path)!r}; write one there, or name it with --file"
        )
    if run_timeout <= 0:
        raise ConfigurationError(f"run_timeout must be a positive number of seconds, not {run_timeout!r}")
    if engine not in ENGINES:
        raise ConfigurationError(f"engine must be one of {', '.join(ENGINES)}, not {engine!r}")
    if compression is not None and compression not in COMPRESSIONS:
        raise ConfigurationError(f"compression must be one of {', '.join(COMPRESSIONS)}, not {compression!r}")
    return dockerfile_path


def _host_ca(host_ca: Path | str | bool | None) -> Path | None:
    if host_ca is None or host_ca is True:
        return HOST_CA if HOST_CA.is_file() else None
    if host_ca is False:
        return None
    path = Path(host_ca)
    if not path.is_file():
        raise ConfigurationError(f"the CA bundle {str(path)!r} does not exist; name a PEM file, or leave host_ca out")
    return path


async def build_image(
    context: Path | str,
    *,
    tag: str | None = None,
    registry: ImageRegistry | None = None,
    dockerfile: Path | str | None = None,
    build_args: Mapping[str, str] | None = None,
    log: BuildLog | None = None,
    bwrap: str = "bwrap",
    run_timeout: float = DEFAULT_RUN_TIMEOUT,
    engine: str = "auto",
    compression: str | None = None,
    compression_level: int | None = None,
    host_ca: Path | str | bool | None = None,
    use_cache: bool = True,
    refresh_bases: bool = False,
) -> BuildResult:
    """Build the GVMI image of the Dockerfile in the directory ``context`` and add it to ``registry`` under ``tag``.

    ``dockerfile`` defaults to ``context/Dockerfile``; ``registry`` to the default registry; ``build_args``
    set ``ARG`` values; ``log`` receives the progress (default: nothing); ``engine`` is one of :data:`ENGINES`
    (see the module docstring); ``compression`` (and ``compression_level``) the squashfs compressor (default
    :data:`~golem_local.images.format.DEFAULT_COMPRESSION`); ``host_ca`` the CA bundle shown to ``RUN`` steps
    (``None``: the host's when it has one; ``False``: none); ``use_cache=False`` neither reads nor writes
    the build cache; ``refresh_bases`` makes the bases again from today's Debian archive.

    Raises :class:`~golem_local.images.errors.DockerfileError` for a line the builder cannot honour (before
    anything runs; with ``"auto"`` only when no engine can build it either),
    :class:`~golem_local.images.errors.ImageBuildError` when a step fails, ``SandboxUnavailableError`` when the
    sandbox cannot run here, ``ConfigurationError`` for bad options or missing tools.
    """
    started = time.monotonic()
    context = Path(context)
    dockerfile_path = _check_options(context, dockerfile, run_timeout, engine, compression)
    normal_tag = normalize_tag(tag) if tag is not None else None
    chosen = (
        (compression, compression_level)
        if compression is not None
        else (DEFAULT_COMPRESSION if compression_level is None else (DEFAULT_COMPRESSION[0], compression_level))
    )
    write_log = log or (lambda _text: None)
    ca = _host_ca(host_ca)
    target = registry if registry is not None else ImageRegistry()
    text = dockerfile_path.read_text(encoding="utf-8")

    async def with_engine(name: str) -> BuildResult:
        return await _build_with_engine(
            name, context, dockerfile_path, normal_tag, target, build_args, write_log, ca, chosen, run_timeout, started
        )

    if engine in ("docker", "podman"):
        return await with_engine(engine)
    try:
        parsed = parse_dockerfile(text, str(dockerfile_path))
        for step in parsed.steps:
            if isinstance(step, FromStep) and "$" not in step.image:
                try:
                    resolve_base(step.image)
                except BaseUnavailable as exc:
                    raise DockerfileError(
                        str(exc), path=str(dockerfile_path), line=step.line, instruction="FROM"
                    ) from None
    except DockerfileError as refused:
        if engine == "auto":
            from golem_local.images.engine import usable_engine

            found = await usable_engine()
            if found is not None:
                write_log(f" → the builder's own interpreter cannot build this Dockerfile ({refused}); using {found}\n")
                return await with_engine(found)
        raise
    if shutil.which(bwrap) is None and any(isinstance(step, RunStep) for step in parsed.steps):
        raise SandboxUnavailableError(f"{MISSING_MESSAGE} (looked for {bwrap!r})")
    namespace = await asyncio.to_thread(user_namespace)
    cache = BuildCache(cache_dir() / "build") if use_cache else None
    work = Path(tempfile.mkdtemp(prefix="golem-api-build-"))
    if namespace.root_owner is not None:
        os.chmod(work, 0o711)  # the tree below is the namespace's root's: it may pass, not list
    try:
        build = _Build(
            parsed,
            context,
            work,
            build_args=build_args or {},
            log=write_log,
            bwrap=bwrap,
            run_timeout=run_timeout,
            namespace=namespace,
            cache=cache,
            host_ca=ca,
            compression=chosen,
            refresh_bases=refresh_bases,
        )
        await build.plan()
        await build.execute()
        image_file = work / "image.gvmi"
        await build.write(image_file)
        entry = await asyncio.to_thread(target.add, image_file, tag=normal_tag)
        if cache is not None:
            await asyncio.to_thread(cache.evict, {key for key in build.keys if key})
    finally:
        await asyncio.to_thread(remove_tree, work, namespace)
    return BuildResult(
        hash=entry.hash,
        tag=normal_tag,
        size=entry.size,
        path=entry.path,
        metadata=build.metadata(),
        seconds=time.monotonic() - started,
        engine="none",
        cached_steps=build.cached_steps,
        notes=tuple(build.notes),
    )


async def _build_with_engine(
    engine: str,
    context: Path,
    dockerfile: Path,
    tag: str | None,
    registry: ImageRegistry,
    build_args: Mapping[str, str] | None,
    log: BuildLog,
    host_ca: Path | None,
    compression: tuple[str, int | None],
    run_timeout: float,
    started: float,
) -> BuildResult:
    from golem_local.images.engine import build_with_engine

    work = Path(tempfile.mkdtemp(prefix="golem-api-build-"))
    try:
        image_file = work / "image.gvmi"
        metadata, notes = await build_with_engine(
            engine,
            context,
            dockerfile,
            image_file,
            tag=tag,
            build_args=build_args or {},
            log=log,
            host_ca=host_ca,
            compression=compression,
            timeout=run_timeout,
        )
        entry = await asyncio.to_thread(registry.add, image_file, tag=tag)
    finally:
        await asyncio.to_thread(shutil.rmtree, work, True)
    return BuildResult(
        hash=entry.hash,
        tag=tag,
        size=entry.size,
        path=entry.path,
        metadata=metadata,
        seconds=time.monotonic() - started,
        engine=engine,
        notes=notes,
    )
