"""``golem-api image build``: an image from a Dockerfile, its ``RUN`` steps run in the local sandbox.

The builder keeps the image's own files in a tree (the build's temporary directory), plays the Dockerfile's
steps (:mod:`~golem_local.images.dockerfile`) on it, writes the image file (:mod:`~golem_local.images.format`)
and adds it to a registry (:mod:`~golem_local.images.registry`) under its hash and tag.

- ``FROM``: ``python:*`` (any tag, ``docker.io/library/python`` too) is the host's Python at ``/usr/local``
  (:mod:`golem_local.runtime.python_base`), at build and at run time; ``debian:*`` and ``ubuntu:*`` are
  the host's system directories, which every sandbox shows anyway; ``scratch`` adds nothing. The base is
  recorded in the image's labels (:data:`~golem_local.images.format.BASE_LABEL`). Other bases are refused.
- ``COPY``/``ADD`` copy from the build context into the tree, symbolic links as links, with the time stamp
  :data:`~golem_local.images.format.EPOCH` (so ``.pyc`` files compiled from them at build time are the same on
  every build). Nothing is written through a symbolic link of the tree, nor read from outside the context.
- ``RUN`` runs in a bubblewrap sandbox (:mod:`golem_local.runtime.sandbox`) with the tree bound
  read-write at ``/`` and the host's system directories read-only over it: a step may write anywhere in
  the tree, not in the system directories (so ``apt-get install`` fails: the system is the host's), and has
  no network. Its environment is ``PATH``, ``HOME=/tmp``, the ``ARG`` values and the ``ENV`` so far; its
  directory the ``WORKDIR``; its output goes to the build log as it comes; it may take ``run_timeout``
  seconds. The paths bubblewrap had to create in the tree as mount points are removed afterwards.
- ``ENV``, ``WORKDIR`` (created in the tree), ``VOLUME`` (created too), ``ENTRYPOINT``, ``CMD``, ``LABEL``,
  ``EXPOSE`` make the image's metadata.

Same context, same Dockerfile, same host: same image hash (see :mod:`~golem_local.images.format`), as long
as the ``RUN`` steps themselves write the same bytes.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import posixpath
import shutil
import stat
import tempfile
import time
from collections.abc import Callable, Mapping
from pathlib import Path

from attrs import frozen

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
from golem_local.images.errors import DockerfileError, ImageBuildError
from golem_local.images.format import BASE_LABEL, EPOCH, ImageMetadata, write_image
from golem_local.images.registry import ImageRegistry, normalize_tag
from golem_local.runtime.image import check_sandbox_path, is_python_base
from golem_local.runtime.python_base import PythonLayout, host_python, prepare_python, python_image_env
from golem_local.runtime.sandbox import (
    DEFAULT_PATH,
    SYSTEM_PATHS,
    SandboxLayout,
    bwrap_args,
    check_bubblewrap,
    describe_exit,
    mount_points,
)
from golem_shared.errors import ConfigurationError

__all__ = [
    "DEFAULT_RUN_TIMEOUT",
    "BuildLog",
    "BuildResult",
    "base_kind",
    "build_image",
]

DEFAULT_RUN_TIMEOUT = 600.0
"""Seconds one ``RUN`` step may take before the build is stopped."""

BuildLog = Callable[[str], None]
"""Where the build's progress goes: step headers (whole lines) and ``RUN`` output (pieces, as they come)."""

_TAIL = 2000  # bytes of a failed RUN's output quoted in the error
_GLOB = frozenset("*?[")
_KILL_WAIT = 5.0


@frozen
class BuildResult:
    """A built image: its hash, tag (``None`` when built without one), size in bytes, file in the registry,
    metadata, and the build's wall time in seconds."""

    hash: str
    tag: str | None
    size: int
    path: Path
    metadata: ImageMetadata
    seconds: float


def base_kind(reference: str) -> str:
    """How the local builder maps the ``FROM`` ``reference``: ``"python"``, ``"system"`` or ``"scratch"``.

    Raises ``ValueError`` saying which bases it maps, for any other.
    """
    if is_python_base(reference):
        return "python"
    name = reference.strip().lower().split("@", 1)[0]
    repository = name.split(":", 1)[0] if "/" not in name else name.rsplit(":", 1)[0]
    if repository in ("scratch",):
        return "scratch"
    if repository.removeprefix("docker.io/").removeprefix("library/") in ("debian", "ubuntu"):
        return "system"
    raise ValueError(
        f"the local builder cannot use the base image {reference!r}: it maps python:* onto this machine's Python, "
        "debian:* and ubuntu:* onto its system directories, and scratch onto nothing; start from one of these "
        "(python:3.11-slim for a Python service)"
    )


def _remove_tree(path: Path) -> None:
    """Remove the build's directory, also directories a step made read-only."""
    try:
        shutil.rmtree(path)
    except OSError:
        for directory, subdirectories, _files in os.walk(path):
            for name in (directory, *(os.path.join(directory, sub) for sub in subdirectories)):
                if not os.path.islink(name):  # a link may point out of the tree: never change its target
                    with contextlib.suppress(OSError):
                        os.chmod(name, 0o700)
        shutil.rmtree(path, ignore_errors=True)


class _Build:
    """The state of one build: the tree, and the metadata the steps have made so far."""

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
    ) -> None:
        self.dockerfile = dockerfile
        self.context = context.resolve()
        self.work = work
        self.tree = work / "tree"
        self.tree.mkdir()
        self.real_tree = self.tree.resolve()
        self.build_args = dict(build_args)
        self.log = log
        self.bwrap = bwrap
        self.run_timeout = run_timeout
        self.global_args: dict[str, str | None] = {}
        self.args: dict[str, str | None] = {}
        self.env: dict[str, str] = {}
        self.workdir = "/"
        self.workdir_set = False
        self.entrypoint: tuple[str, ...] | None = None
        self.cmd: tuple[str, ...] | None = None
        self.volumes: list[str] = []
        self.labels: dict[str, str] = {}
        self.exposed: list[str] = []
        self.python: PythonLayout | None = None
        self.python_checked = False
        self.step: Step | None = None

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

    def directory(self, path: str) -> Path:
        """Create the image directory ``path`` (absolute) in the tree, parents too, through no symbolic link."""
        current = self.tree
        for part in [part for part in path.split("/") if part]:
            current = current / part
            if current.is_symlink():
                raise self.refuse(
                    f"{path} goes through the symbolic link {'/' + str(current.relative_to(self.tree))} in the "
                    "image; the local builder does not write through links: name the real directory"
                )
            if not current.exists():
                current.mkdir()
            elif not current.is_dir():
                raise self.refuse(f"{path} needs {current.relative_to(self.tree)} to be a directory, it is a file")
        return current

    # -- steps ----------------------------------------------------------------------------------------------

    async def run_steps(self) -> None:
        steps = self.dockerfile.steps
        for number, step in enumerate(steps, start=1):
            self.step = step
            self.log(f"Step {number}/{len(steps)} : {step.text}\n")
            if isinstance(step, FromStep):
                self.from_(step)
            elif isinstance(step, CopyStep):
                await asyncio.to_thread(self.copy, step)
            elif isinstance(step, RunStep):
                await self.run(step)
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
                self.directory(self.workdir)
            elif isinstance(step, VolumeStep):
                self.volume(step)
            elif isinstance(step, CommandStep):
                argv = ("/bin/sh", "-c", step.argv[0]) if step.shell else step.argv
                if step.keyword == "ENTRYPOINT":
                    self.entrypoint = argv
                else:
                    self.cmd = argv
            elif isinstance(step, LabelStep):
                self.labels.update((self.expand(key), self.expand(value)) for key, value in step.pairs)
            elif isinstance(step, ExposeStep):
                for port in (self.expand(port) for port in step.ports):
                    self.exposed.append(port if "/" in port else f"{port}/tcp")
            # anything else (USER root) changes nothing

    def from_(self, step: FromStep) -> None:
        reference = self.expand(step.image)
        try:
            kind = base_kind(reference)
        except ValueError as exc:
            raise self.refuse(str(exc)) from None
        self.global_args, self.args = self.args, {}
        self.labels[BASE_LABEL] = reference
        if kind == "python":
            self.env.update(python_image_env())
            self.python = prepare_python(self.work / "python")
            python = host_python()
            self.log(f" → this machine's Python {python.full_version}, read-only at /usr/local\n")
        elif kind == "system":
            self.env["PATH"] = DEFAULT_PATH
            self.log(" → this machine's system directories, read-only\n")

    def arg(self, step: ArgStep) -> None:
        for name, default in step.pairs:
            if name in self.build_args:
                value: str | None = self.build_args[name]
            elif default is not None:
                value = self.expand(default)
            else:
                value = self.global_args.get(name)
            self.args[name] = value

    def volume(self, step: VolumeStep) -> None:
        for raw in step.paths:
            try:
                path = check_sandbox_path(self.expand(raw), "volume")
            except ValueError as exc:
                raise self.refuse(str(exc)) from None
            taken = [system for system in SYSTEM_PATHS if path == system or path.startswith(system + "/")]
            if taken:
                raise self.refuse(
                    f"the volume {path} is inside {taken[0]}, which the sandbox fills itself; put volumes elsewhere, "
                    "e.g. under /golem"
                )
            self.directory(path)
            if path not in self.volumes:
                self.volumes.append(path)

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

    def copy(self, step: CopyStep) -> None:
        sources = self.sources(step)
        raw_dest = self.expand(step.dest)
        dest = self.absolute(raw_dest)
        into = raw_dest.endswith("/") or raw_dest in (".", "./")
        if len(sources) > 1 and not into:
            raise self.refuse(f"copying {len(sources)} sources needs a directory as destination: write {raw_dest}/")
        for source in sources:
            if source.is_dir() and not source.is_symlink():
                target = self.directory(dest)
                for child in sorted(source.iterdir()):
                    self.copy_entry(child, target / child.name, step.chmod)
                continue
            existing = self.tree / dest.lstrip("/")
            if into or (existing.is_dir() and not existing.is_symlink()):
                target = self.directory(dest) / source.name
            else:
                target = self.directory(posixpath.dirname(dest)) / posixpath.basename(dest)
            self.copy_entry(source, target, step.chmod)

    def copy_entry(self, source: Path, target: Path, chmod: int | None) -> None:
        """Copy ``source`` (a file, link or directory) to ``target`` in the tree, replacing a file or link there."""
        info = source.lstat()
        if target.is_symlink() or (target.exists() and not target.is_dir()):
            if stat.S_ISDIR(info.st_mode):
                raise self.refuse(f"cannot copy the directory {source} over the file {target.relative_to(self.tree)}")
            target.unlink()
        if stat.S_ISLNK(info.st_mode):
            os.symlink(os.readlink(source), target)
            return
        if stat.S_ISDIR(info.st_mode):
            if not target.exists():
                target.mkdir()
            for child in sorted(source.iterdir()):
                self.copy_entry(child, target / child.name, chmod)
            mode = stat.S_IMODE(info.st_mode) if chmod is None else chmod
            target.chmod(mode | stat.S_IRWXU)  # the builder must still write into it; stored as-is by the tar
        elif stat.S_ISREG(info.st_mode):
            if target.is_dir():
                raise self.refuse(f"cannot copy the file {source} over the directory {target.relative_to(self.tree)}")
            shutil.copyfile(source, target)
            target.chmod(stat.S_IMODE(info.st_mode) if chmod is None else chmod)
        else:
            raise self.refuse(f"{source} is not a file, a directory or a symbolic link; images hold only those")
        os.utime(target, (EPOCH, EPOCH))

    # -- RUN ------------------------------------------------------------------------------------------------

    async def run(self, step: RunStep) -> None:
        if not self.python_checked and self.python is not None:
            self.python_checked = True
            await self.sandboxed(["/usr/local/bin/python3", "-c", "import sys, encodings"], quiet=True, probe=True)
        argv = ["/bin/sh", "-c", step.argv[0]] if step.shell else list(step.argv)
        await self.sandboxed(argv)

    async def sandboxed(self, argv: list[str], *, quiet: bool = False, probe: bool = False) -> None:
        """Run ``argv`` in a sandbox over the tree; raise :class:`ImageBuildError` unless it exits with 0."""
        layout = SandboxLayout(image_root=self.tree, image_as_root=True, python=self.python, working_dir=self.workdir)
        points = mount_points(layout)
        existed = self.existing(points)
        python_env = dict(self.python.env) if self.python is not None else {}
        args = {name: value for name, value in self.args.items() if value is not None}
        env = {"PATH": DEFAULT_PATH, "HOME": "/tmp", **python_env, **args, **self.env}
        command = [self.bwrap, *bwrap_args(layout)]
        for name, value in env.items():
            command += ["--setenv", name, value]
        command += argv
        tail = b""
        try:
            process = await asyncio.create_subprocess_exec(
                *command,
                stdin=asyncio.subprocess.DEVNULL,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.STDOUT,
                start_new_session=True,
                umask=0o022,
            )
        except OSError as exc:
            raise self.failed(f"cannot run bubblewrap {self.bwrap!r}: {exc}") from exc
        stdout = process.stdout
        assert stdout is not None

        async def pump() -> int:
            nonlocal tail
            while chunk := await stdout.read(65536):
                tail = (tail + chunk)[-_TAIL:]
                if not quiet:
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
            if probe:
                raise self.failed(
                    f"this machine's Python ({host_python().executable}) does not start from /usr/local in the "
                    f"sandbox: {said or describe_exit(code)}; run golem-api under a regular CPython installation"
                )
            raise self.failed(f"`{' '.join(argv)}` {describe_exit(code)}" + (f"; it said:\n{said}" if said else ""))

    def existing(self, points: tuple[str, ...]) -> set[str]:
        """The sandbox paths among ``points`` that the tree already has (so are not bubblewrap's to remove)."""
        return {point for point in points if os.path.lexists(self.tree / point.lstrip("/"))}

    def remove_mount_points(self, points: tuple[str, ...], existed: set[str]) -> None:
        """Remove what bubblewrap created in the tree to mount over (empty directories, empty files, links)."""
        for point in sorted(points, key=lambda path: path.count("/"), reverse=True):
            if point in existed:
                continue
            path = self.tree / point.lstrip("/")
            with contextlib.suppress(OSError):
                if path.is_symlink():
                    path.unlink()
                elif path.is_dir():
                    path.rmdir()  # only when empty: a step may have put files there since
                elif path.is_file() and path.stat().st_size == 0:
                    path.unlink()

    def metadata(self) -> ImageMetadata:
        return ImageMetadata(
            env=[f"{name}={value}" for name, value in self.env.items()],
            entrypoint=self.entrypoint,
            cmd=self.cmd,
            working_dir=self.workdir if self.workdir_set else "",
            volumes=sorted(self.volumes),
            labels=self.labels,
            exposed_ports=sorted(set(self.exposed)),
        )


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
) -> BuildResult:
    """Build the image of the Dockerfile in the directory ``context`` and add it to ``registry`` under ``tag``.

    ``dockerfile`` defaults to ``context/Dockerfile``; ``registry`` to the default registry; ``build_args``
    set ``ARG`` values; ``log`` receives the progress (default: nothing). Raises
    :class:`~golem_local.images.errors.DockerfileError` for a line the builder cannot honour (before anything
    runs when it can tell), :class:`~golem_local.images.errors.ImageBuildError` when a step fails, and
    :class:`~golem_api.errors.SandboxUnavailableError` when ``RUN`` steps need a sandbox this machine lacks.
    """
    started = time.monotonic()
    context = Path(context)
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
    normal_tag = normalize_tag(tag) if tag is not None else None
    parsed = parse_dockerfile(dockerfile_path.read_text(encoding="utf-8"), str(dockerfile_path))
    if any(isinstance(step, RunStep) for step in parsed.steps):
        await check_bubblewrap(bwrap)
    target = registry if registry is not None else ImageRegistry()
    work = Path(tempfile.mkdtemp(prefix="golem-api-build-"))
    try:
        build = _Build(
            parsed,
            context,
            work,
            build_args=build_args or {},
            log=log or (lambda _text: None),
            bwrap=bwrap,
            run_timeout=run_timeout,
        )
        await build.run_steps()
        metadata = build.metadata()
        image_file = work / "image.gvmi"
        await asyncio.to_thread(write_image, build.tree, metadata, image_file)
        entry = await asyncio.to_thread(target.add, image_file, tag=normal_tag)
    finally:
        await asyncio.to_thread(_remove_tree, work)
    return BuildResult(
        hash=entry.hash,
        tag=normal_tag,
        size=entry.size,
        path=entry.path,
        metadata=metadata,
        seconds=time.monotonic() - started,
    )
