"""The Dockerfile subset the builder's own interpreter honours, parsed into typed steps with their line numbers.

(A container engine, ``golem-api image build --engine docker|podman``, builds any Dockerfile; with the default
``--engine auto`` it builds the Dockerfiles refused here when one is usable.)

Honoured: ``FROM`` (one, no ``AS``), ``COPY``/``ADD`` of files and directories of the build context (JSON or
plain form, wildcards, ``--chmod``; ``--chown`` only to root, since everything in the sandbox is root),
``RUN`` (shell and exec form), ``ENV`` (``k=v …`` and the old ``k v`` form), ``WORKDIR``, ``VOLUME`` (JSON
and plain form), ``ENTRYPOINT``/``CMD`` (both forms), ``LABEL``, ``ARG``, ``EXPOSE`` (recorded, like
Docker, without effect), ``USER root``, ``MAINTAINER`` (a label), comments, line continuations and the
``# escape=`` directive. Variables (``$NAME``, ``${NAME}``, ``${NAME:-default}``, ``${NAME:+word}``) are
expanded by the builder in ``COPY``/``ADD``, ``ENV``, ``WORKDIR``, ``VOLUME``, ``LABEL``, ``EXPOSE`` as Docker
does; in ``RUN`` the shell expands them.

Everything else is a :class:`~golem_local.images.errors.DockerfileError` naming the file, the line and the
instruction, and saying what to write instead: multi-stage builds (``FROM … AS``, ``COPY --from``), ``ADD``
of URLs or archives, ``RUN --mount``, heredocs, ``USER`` other than root, ``SHELL``, ``HEALTHCHECK``,
``ONBUILD``, ``STOPSIGNAL``. ``.dockerignore`` files are not read: the context is copied only where a
``COPY`` names it. Each refusal ends by naming the engine that would build the line as it is.
"""

from __future__ import annotations

import json
import re
import shlex
from collections.abc import Callable, Mapping

from attrs import frozen

from golem_local.images.errors import DockerfileError

__all__ = [
    "ArgStep",
    "CommandStep",
    "CopyStep",
    "Dockerfile",
    "EnvStep",
    "ExposeStep",
    "FromStep",
    "LabelStep",
    "RunStep",
    "Step",
    "VolumeStep",
    "WorkdirStep",
    "expand",
    "parse_dockerfile",
]

_DIRECTIVE = re.compile(r"#\s*([A-Za-z][A-Za-z0-9_-]*)\s*=\s*(\S*)\s*")
_ARCHIVES = (".tar", ".tar.gz", ".tgz", ".tar.bz2", ".tbz2", ".tar.xz", ".txz", ".tar.zst")
_ROOT_USERS = frozenset({"root", "0", "root:root", "0:0", "root:0", "0:root"})
_NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_]*")
_REFERENCE = re.compile(r"([A-Za-z_][A-Za-z0-9_]*)(?::([-+])(.*))?", re.S)
_INSTRUCTION = re.compile(r"(\S+)(?:\s+(.*))?", re.S)
_ENGINE = " (or build with --engine docker or podman)"
_REFUSED = {
    "SHELL": 'the shell form always runs /bin/sh -c; write RUN ["bash", "-c", "…"] for another shell',
    "HEALTHCHECK": "Golem checks a service's health from the requestor; remove the line",
    "ONBUILD": "images built here are not used as bases of other builds; remove the line",
    "STOPSIGNAL": "activities end when their sandbox stops; remove the line",
}


@frozen
class Step:
    """One instruction: its keyword (upper case), the line it starts on, and its text as written (continuations
    joined), for build logs."""

    keyword: str
    line: int
    text: str


@frozen
class FromStep(Step):
    """``FROM image[:tag]``: the base, mapped onto this machine by the builder."""

    image: str


@frozen
class CopyStep(Step):
    """``COPY``/``ADD`` (``add``) of ``sources`` in the build context to ``dest`` in the image."""

    sources: tuple[str, ...]
    dest: str
    chmod: int | None
    add: bool


@frozen
class RunStep(Step):
    """``RUN``: ``argv`` in exec form, or ``(command,)`` run by ``/bin/sh -c`` when ``shell``."""

    argv: tuple[str, ...]
    shell: bool


@frozen
class CommandStep(Step):
    """``ENTRYPOINT`` or ``CMD`` (``keyword`` says which), in exec form or as a shell command."""

    argv: tuple[str, ...]
    shell: bool


@frozen
class EnvStep(Step):
    """``ENV``: variables of the image, in order (values not yet expanded)."""

    pairs: tuple[tuple[str, str], ...]


@frozen
class LabelStep(Step):
    """``LABEL`` (and ``MAINTAINER``): metadata of the image."""

    pairs: tuple[tuple[str, str], ...]


@frozen
class ArgStep(Step):
    """``ARG``: build arguments with their defaults (``None``: no default)."""

    pairs: tuple[tuple[str, str | None], ...]


@frozen
class WorkdirStep(Step):
    """``WORKDIR``: the directory of later steps and of the image's commands."""

    path: str


@frozen
class VolumeStep(Step):
    """``VOLUME``: writable directories every activity of the image gets."""

    paths: tuple[str, ...]


@frozen
class ExposeStep(Step):
    """``EXPOSE``: recorded in the image's metadata; it opens nothing (nor does it in Docker)."""

    ports: tuple[str, ...]


@frozen
class Dockerfile:
    """A parsed Dockerfile: ``path`` (for messages) and its steps, the ``FROM`` among them."""

    path: str
    steps: tuple[Step, ...]

    @property
    def base(self) -> FromStep:
        """The ``FROM`` step."""
        return next(step for step in self.steps if isinstance(step, FromStep))


def expand(text: str, variables: Mapping[str, str]) -> str:
    """``text`` with ``$NAME``, ``${NAME}``, ``${NAME:-default}`` and ``${NAME:+word}`` replaced, as Docker does.

    An unset variable expands to nothing; ``\\$`` is a literal ``$``. Raises ``ValueError`` for an unclosed
    ``${`` or an unknown modifier, with the offending text.
    """
    out: list[str] = []
    index = 0
    while index < len(text):
        char = text[index]
        if char == "\\" and text[index + 1 : index + 2] == "$":
            out.append("$")
            index += 2
            continue
        if char != "$":
            out.append(char)
            index += 1
            continue
        if text[index + 1 : index + 2] == "{":
            end = text.find("}", index + 2)
            if end < 0:
                raise ValueError(f"{text[index:]!r} has no closing '}}'")
            body = text[index + 2 : end]
            reference = _REFERENCE.fullmatch(body)
            if reference is None:
                raise ValueError(f"${{{body}}} is not a variable reference Docker understands")
            name, modifier, word = reference.group(1), reference.group(2), reference.group(3) or ""
            value = variables.get(name, "")
            if modifier == "-":
                value = value or word
            elif modifier == "+":
                value = word if value else ""
            out.append(value)
            index = end + 1
            continue
        match = _NAME.match(text, index + 1)
        if match is None:
            out.append(char)
            index += 1
            continue
        out.append(variables.get(match.group(), ""))
        index = match.end()
    return "".join(out)


class _Parser:
    """Turns logical lines into steps; every refusal names the file, the line and the instruction."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.line = 0
        self.keyword = ""

    def fail(self, message: str) -> DockerfileError:
        return DockerfileError(message + _ENGINE, path=self.path, line=self.line, instruction=self.keyword)

    def lines(self, text: str) -> list[tuple[int, str]]:
        """Logical lines ``(first line number, text)``: directives read, comments dropped, continuations joined."""
        raw = text.splitlines()
        escape = "\\"
        index = 0
        while index < len(raw):
            match = _DIRECTIVE.fullmatch(raw[index].strip())
            if match is None:
                break
            name, value = match.group(1).lower(), match.group(2)
            if name == "escape":
                if value not in ("\\", "`"):
                    self.line, self.keyword = index + 1, "# escape"
                    raise self.fail(f"the escape character {value!r} is not \\ or `; use one of these")
                escape = value
            elif name not in ("syntax", "check"):
                break  # an unknown directive is a comment, and ends the directives
            index += 1
        logical: list[tuple[int, str]] = []
        pending: str | None = None
        start = 0
        for number, line in enumerate(raw[index:], start=index + 1):
            stripped = line.strip()
            if not stripped or stripped.startswith("#"):
                continue  # comments and blank lines, also inside a continued instruction
            if pending is None:
                start, pending = number, ""
            content = line.rstrip()
            if content.endswith(escape):
                pending += content[:-1]
                continue
            logical.append((start, (pending + content).strip()))
            pending = None
        if pending is not None and pending.strip():
            logical.append((start, pending.strip()))
        return logical

    def json_list(self, arguments: str) -> list[str] | None:
        """The JSON form ``["a", "b"]`` as a list, or ``None`` when ``arguments`` is not one."""
        if not arguments.startswith("["):
            return None
        try:
            value = json.loads(arguments)
        except ValueError:
            return None
        if isinstance(value, list) and all(isinstance(item, str) for item in value):
            return value
        return None

    def flags(self, words: list[str], allowed: tuple[str, ...]) -> dict[str, str]:
        """Leading ``--name=value`` words, removed from ``words``; a flag not in ``allowed`` is refused."""
        found: dict[str, str] = {}
        while words and words[0].startswith("--"):
            name, _, value = words.pop(0)[2:].partition("=")
            if name not in allowed:
                known = ", ".join(f"--{flag}" for flag in allowed) or "none"
                raise self.fail(f"the flag --{name} is not supported by the local builder (supported: {known})")
            found[name] = value
        return found

    def pairs(self, arguments: str, *, legacy: bool) -> tuple[tuple[str, str], ...]:
        """``k=v k2="v 2"`` pairs; with ``legacy``, ``k the rest`` too (``ENV``'s old form)."""
        first = arguments.split(None, 1)
        if legacy and first and "=" not in first[0]:
            if len(first) < 2:
                raise self.fail(f"{arguments!r} has a name but no value; write {first[0]}=value")
            return ((first[0], first[1].strip()),)
        try:
            words = shlex.split(arguments, posix=True)
        except ValueError as exc:
            raise self.fail(f"cannot read {arguments!r}: {exc}; check the quotes") from None
        if not words:
            raise self.fail("nothing to set; write name=value")
        result = []
        for word in words:
            key, equals, value = word.partition("=")
            if not equals or not key:
                raise self.fail(f"{word!r} is not of the form name=value")
            result.append((key, value))
        return tuple(result)

    def step(self, number: int, line: str) -> Step:
        match = _INSTRUCTION.fullmatch(line)
        assert match is not None  # a logical line is never blank
        self.line, self.keyword = number, match.group(1).upper()
        arguments = (match.group(2) or "").strip()
        if self.keyword in _REFUSED:
            raise self.fail(f"not supported by the local builder: {_REFUSED[self.keyword]}")
        handlers: dict[str, Callable[[str, str], Step]] = {
            "FROM": self._from,
            "COPY": self._copy,
            "ADD": self._add,
            "RUN": self._run,
            "ENTRYPOINT": self._command,
            "CMD": self._command,
            "ENV": self._env,
            "LABEL": self._label,
            "MAINTAINER": self._maintainer,
            "ARG": self._arg,
            "WORKDIR": self._workdir,
            "VOLUME": self._volume,
            "EXPOSE": self._expose,
            "USER": self._user,
        }
        handler = handlers.get(self.keyword)
        if handler is None:
            raise self.fail(
                "unknown instruction; the local builder honours FROM, COPY, ADD, RUN, ENV, WORKDIR, VOLUME, "
                "ENTRYPOINT, CMD, LABEL, ARG, EXPOSE, USER root and MAINTAINER"
            )
        return handler(line, arguments)

    def _from(self, text: str, arguments: str) -> Step:
        words = arguments.split()
        self.flags(words, ())
        if len(words) == 3 and words[1].lower() == "as":
            raise self.fail(
                f"multi-stage builds (FROM … AS {words[2]}) are not supported by the local builder; "
                "build in one stage, with the files copied from the build context"
            )
        if len(words) != 1:
            raise self.fail(f"{arguments!r} is not one image reference; write FROM python:3.11-slim or similar")
        return FromStep("FROM", self.line, text, words[0])

    def _copy(self, text: str, arguments: str, *, add: bool = False) -> Step:
        if arguments.startswith("<<") or " <<" in arguments.split("[", 1)[0]:
            raise self.fail("heredocs are not supported; put the text in a file of the build context and COPY it")
        words = arguments.split()
        if any(word.startswith("--from") for word in words if word.startswith("--")):
            raise self.fail(
                "COPY --from copies from another build stage or image, which the local builder does not support; "
                "put the files in the build context and COPY them from there"
            )
        flags = self.flags(words, ("chmod", "chown", "link") if not add else ("chmod", "chown"))
        chown = flags.get("chown")
        if chown is not None and chown not in _ROOT_USERS:
            raise self.fail(
                f"--chown={chown}: the builder's own interpreter copies files as root; drop the flag and "
                "`RUN chown` them"
            )
        chmod: int | None = None
        if "chmod" in flags:
            try:
                chmod = int(flags["chmod"], 8)
            except ValueError:
                raise self.fail(f"--chmod={flags['chmod']} is not an octal mode such as 755") from None
            if not 0 <= chmod <= 0o7777:
                raise self.fail(f"--chmod={flags['chmod']} is not a file mode (0 to 7777)")
        rest = " ".join(words)
        items = self.json_list(rest)
        if items is None:
            if rest.startswith("["):
                raise self.fail(f'{rest!r} is not a JSON list of strings; write ["src", "dest"]')
            items = words
        if len(items) < 2:
            raise self.fail(f"{rest!r} needs at least a source and a destination")
        sources = tuple(items[:-1])
        for source in sources:
            if add and "://" in source:
                raise self.fail(
                    f"ADD of a URL ({source}) is not supported by the builder's own interpreter; download the file "
                    "into the build context and COPY it, or fetch it in a RUN step"
                )
            if add and source.lower().endswith(_ARCHIVES):
                raise self.fail(
                    f"ADD would unpack the archive {source}, which the local builder does not do; COPY it and "
                    "unpack it with RUN tar -xf"
                )
        return CopyStep(self.keyword, self.line, text, sources, items[-1], chmod, add)

    def _add(self, text: str, arguments: str) -> Step:
        return self._copy(text, arguments, add=True)

    def _run(self, text: str, arguments: str) -> Step:
        if arguments.startswith("--"):
            flag = arguments.split()[0]
            raise self.fail(f"RUN {flag} is not supported by the local builder; write the command without it")
        if arguments.startswith("<<"):
            raise self.fail("heredocs are not supported; put the script in a file, COPY it and RUN it")
        if not arguments:
            raise self.fail("nothing to run")
        argv = self.json_list(arguments)
        if argv is not None:
            if not argv:
                raise self.fail("the exec form [] names no program")
            return RunStep("RUN", self.line, text, tuple(argv), False)
        return RunStep("RUN", self.line, text, (arguments,), True)

    def _command(self, text: str, arguments: str) -> Step:
        argv = self.json_list(arguments)
        if argv is not None:
            return CommandStep(self.keyword, self.line, text, tuple(argv), False)
        if not arguments:
            raise self.fail('nothing given; write the command, or ["program", "arg"]')
        return CommandStep(self.keyword, self.line, text, (arguments,), True)

    def _env(self, text: str, arguments: str) -> Step:
        return EnvStep("ENV", self.line, text, self.pairs(arguments, legacy=True))

    def _label(self, text: str, arguments: str) -> Step:
        return LabelStep("LABEL", self.line, text, self.pairs(arguments, legacy=False))

    def _maintainer(self, text: str, arguments: str) -> Step:
        return LabelStep("MAINTAINER", self.line, text, (("maintainer", arguments),))

    def _arg(self, text: str, arguments: str) -> Step:
        pairs: list[tuple[str, str | None]] = []
        for word in arguments.split():
            name, equals, default = word.partition("=")
            if not _NAME.fullmatch(name):
                raise self.fail(f"{name!r} is not a variable name (letters, digits and _, not first a digit)")
            pairs.append((name, default.strip("\"'") if equals else None))
        if not pairs:
            raise self.fail("no argument named; write ARG NAME or ARG NAME=default")
        return ArgStep("ARG", self.line, text, tuple(pairs))

    def _workdir(self, text: str, arguments: str) -> Step:
        if not arguments:
            raise self.fail("no directory given")
        return WorkdirStep("WORKDIR", self.line, text, arguments)

    def _volume(self, text: str, arguments: str) -> Step:
        paths = self.json_list(arguments)
        if paths is None:
            if arguments.startswith("["):
                raise self.fail(f'{arguments!r} is not a JSON list of strings; write ["/golem/in", "/golem/out"]')
            paths = arguments.split()
        if not paths:
            raise self.fail("no directory given")
        return VolumeStep("VOLUME", self.line, text, tuple(paths))

    def _expose(self, text: str, arguments: str) -> Step:
        if not arguments:
            raise self.fail("no port given")
        return ExposeStep("EXPOSE", self.line, text, tuple(arguments.split()))

    def _user(self, text: str, arguments: str) -> Step:
        if arguments not in _ROOT_USERS:
            raise self.fail(
                f"USER {arguments}: the builder's own interpreter runs every step as root, and a Golem VM runs "
                "every command as root whatever the image says (gvmkit-build drops USER); remove the line, or "
                "write USER root"
            )
        return Step("USER", self.line, text)  # nothing to do: root is who runs everything


def parse_dockerfile(text: str, path: str = "Dockerfile") -> Dockerfile:
    """Parse ``text`` (the contents of the Dockerfile at ``path``) into steps.

    Raises :class:`~golem_local.images.errors.DockerfileError` for a line the local builder cannot honour, for
    a Dockerfile without ``FROM``, with a second ``FROM``, or with an instruction other than ``ARG`` before it.
    """
    parser = _Parser(path)
    steps: list[Step] = []
    for number, line in parser.lines(text):
        step = parser.step(number, line)
        seen_from = any(isinstance(earlier, FromStep) for earlier in steps)
        if isinstance(step, FromStep) and seen_from:
            raise parser.fail(
                "a second FROM starts a multi-stage build, which the local builder does not support; build in one stage"
            )
        if not seen_from and not isinstance(step, (FromStep, ArgStep)):
            raise parser.fail(
                "only ARG may come before FROM; start the Dockerfile with FROM python:3.11-slim or similar"
            )
        steps.append(step)
    if not any(isinstance(step, FromStep) for step in steps):
        raise DockerfileError(
            "the Dockerfile has no FROM; start it with FROM python:3.11-slim (or debian:bookworm-slim, scratch)",
            path=path,
            line=max(1, len(text.splitlines())),
            instruction="FROM",
        )
    return Dockerfile(path, tuple(steps))
