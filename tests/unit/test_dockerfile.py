"""The Dockerfile subset of the local image builder: forms, continuations, variables, and refusals by line."""

from __future__ import annotations

import pytest

from golem_api.errors import ConfigurationError
from golem_local.images.bases import BaseUnavailable, resolve_base
from golem_local.images.dockerfile import (
    ArgStep,
    CommandStep,
    CopyStep,
    EnvStep,
    ExposeStep,
    FromStep,
    LabelStep,
    RunStep,
    VolumeStep,
    WorkdirStep,
    expand,
    parse_dockerfile,
)
from golem_local.images.errors import DockerfileError

EXAMPLE = """\
# syntax=docker/dockerfile:1
# The provider side of a service.
ARG PY=3.11
FROM python:${PY}-slim
LABEL org.example.name="simple service" version=1
ENV APP=/golem/run \\
    MODE="two words"
ENV LEGACY value with spaces
WORKDIR /golem/work
VOLUME /golem/in /golem/out
VOLUME ["/golem/extra"]
COPY --chmod=755 a.py b.py $APP/
ADD ["data dir/", "/golem/data/"]
RUN pip install numpy \\
    # a comment inside the continuation is dropped
    && python3 -c 'print(1)'
RUN ["python3", "-c", "print(2)"]
EXPOSE 8080 53/udp
USER root
ENTRYPOINT ["sh", "-c"]
CMD echo hello
"""


def test_the_example_parses_into_typed_steps_with_line_numbers() -> None:
    dockerfile = parse_dockerfile(EXAMPLE, "ctx/Dockerfile")
    steps = dockerfile.steps
    assert [step.keyword for step in steps] == [
        "ARG", "FROM", "LABEL", "ENV", "ENV", "WORKDIR", "VOLUME", "VOLUME", "COPY", "ADD", "RUN", "RUN", "EXPOSE",
        "USER", "ENTRYPOINT", "CMD",
    ]  # fmt: skip
    assert [step.line for step in steps][:5] == [3, 4, 5, 6, 8]
    assert dockerfile.base == steps[1]
    assert isinstance(steps[0], ArgStep)
    assert steps[0].pairs == (("PY", "3.11"),)
    assert isinstance(steps[1], FromStep)
    assert steps[1].image == "python:${PY}-slim"
    assert isinstance(steps[2], LabelStep)
    assert steps[2].pairs == (
        ("org.example.name", "simple service"),
        ("version", "1"),
    )
    assert isinstance(steps[3], EnvStep)
    assert steps[3].pairs == (("APP", "/golem/run"), ("MODE", "two words"))
    assert isinstance(steps[4], EnvStep)
    assert steps[4].pairs == (("LEGACY", "value with spaces"),)
    assert isinstance(steps[5], WorkdirStep)
    assert steps[5].path == "/golem/work"
    assert isinstance(steps[6], VolumeStep)
    assert steps[6].paths == ("/golem/in", "/golem/out")
    assert isinstance(steps[7], VolumeStep)
    assert steps[7].paths == ("/golem/extra",)
    copy = steps[8]
    assert isinstance(copy, CopyStep)
    assert (copy.sources, copy.dest, copy.chmod, copy.add) == (("a.py", "b.py"), "$APP/", 0o755, False)
    add = steps[9]
    assert isinstance(add, CopyStep)
    assert (add.sources, add.dest, add.add) == (("data dir/",), "/golem/data/", True)
    run = steps[10]
    assert isinstance(run, RunStep)
    assert run.shell
    assert run.line == 14
    assert run.argv[0].split() == ["pip", "install", "numpy", "&&", "python3", "-c", "'print(1)'"]
    assert isinstance(steps[11], RunStep)
    assert steps[11].argv == ("python3", "-c", "print(2)")
    assert not steps[11].shell
    assert isinstance(steps[12], ExposeStep)
    assert steps[12].ports == ("8080", "53/udp")
    assert isinstance(steps[14], CommandStep)
    assert (steps[14].argv, steps[14].shell) == (("sh", "-c"), False)
    assert isinstance(steps[15], CommandStep)
    assert (steps[15].argv, steps[15].shell) == (("echo hello",), True)


def test_keywords_are_case_insensitive_and_the_escape_directive_is_honoured() -> None:
    text = "# escape=`\nfrom debian:bookworm\nrun echo a `\n  b\ncopy x C:\\dir\\\n"
    steps = parse_dockerfile(text).steps
    assert isinstance(steps[1], RunStep)
    assert steps[1].argv == ("echo a   b",)
    assert isinstance(steps[2], CopyStep)
    assert steps[2].dest == "C:\\dir\\"


def test_a_broken_json_form_of_run_is_a_shell_command_as_in_docker() -> None:
    (_, run) = parse_dockerfile('FROM scratch\nRUN ["echo", oops]\n').steps
    assert isinstance(run, RunStep)
    assert run.shell
    assert run.argv == ('["echo", oops]',)


@pytest.mark.parametrize(
    ("line", "words"),
    [
        ("USER nobody", ["USER", "root"]),
        ("HEALTHCHECK CMD true", ["HEALTHCHECK", "remove the line"]),
        ("ONBUILD RUN true", ["ONBUILD"]),
        ('SHELL ["/bin/bash", "-c"]', ["SHELL", "bash"]),
        ("STOPSIGNAL SIGTERM", ["STOPSIGNAL"]),
        ("COPY --from=builder /x /y", ["COPY", "--from", "build context"]),
        ("ADD https://example.com/x.tgz /x", ["ADD", "URL", "COPY"]),
        ("ADD stuff.tar.gz /opt/", ["ADD", "unpack", "tar -xf"]),
        ("RUN --mount=type=cache,target=/root/.cache pip install x", ["RUN --mount", "without"]),
        ("RUN <<EOF", ["heredocs"]),
        ("COPY --chown=1000:1000 a /a", ["--chown", "root"]),
        ("COPY --chmod=999 a /a", ["--chmod=999", "octal"]),
        ("COPY --newflag a /a", ["--newflag", "--chmod"]),
        ("COPY onlyone", ["source and a destination"]),
        ("ENV NAME", ["no value"]),
        ("LABEL justaword", ["name=value"]),
        ("FROBNICATE x", ["unknown instruction", "FROM, COPY"]),
        ("FROM debian AS second", ["multi-stage"]),
    ],
)
def test_unsupported_lines_are_refused_naming_file_line_and_instruction(line: str, words: list[str]) -> None:
    text = f"FROM python:3.11-slim\n# a comment\n{line}\n"
    with pytest.raises(DockerfileError) as failure:
        parse_dockerfile(text, "service/Dockerfile")
    error = failure.value
    assert isinstance(error, ConfigurationError)
    assert (error.path, error.line, error.instruction) == ("service/Dockerfile", 3, line.split()[0])
    message = str(error)
    assert message.startswith(f"service/Dockerfile, line 3: {line.split()[0]}: ")
    for word in words:
        assert word in message


def test_the_line_of_an_error_is_where_the_continued_instruction_starts() -> None:
    text = "FROM scratch\n\nRUN true\nUSER \\\n  nobody\n"
    with pytest.raises(DockerfileError, match="line 4: USER"):
        parse_dockerfile(text)


def test_from_must_come_first_once_and_exist() -> None:
    with pytest.raises(DockerfileError, match=r"line 1: RUN: only ARG may come before FROM"):
        parse_dockerfile("RUN true\nFROM scratch\n")
    with pytest.raises(DockerfileError, match=r"line 2: FROM: a second FROM starts a multi-stage build"):
        parse_dockerfile("FROM scratch\nFROM debian\n")
    with pytest.raises(DockerfileError, match="has no FROM"):
        parse_dockerfile("# nothing\nARG X=1\n")


def test_variables_expand_as_docker_does() -> None:
    values = {"APP": "/golem/run", "EMPTY": ""}
    assert expand("$APP/x ${APP}/y", values) == "/golem/run/x /golem/run/y"
    assert expand("${MISSING:-fallback} ${EMPTY:-dflt} ${APP:+set} ${MISSING:+set}.", values) == "fallback dflt set ."
    assert expand("\\$APP costs $5 and $", values) == "$APP costs $5 and $"
    with pytest.raises(ValueError, match="no closing"):
        expand("${APP", values)
    with pytest.raises(ValueError, match="not a variable reference"):
        expand("${APP%%x}", values)


@pytest.mark.parametrize(
    ("reference", "kind", "suite", "note"),
    [
        ("python:3.11-slim", "python", "bookworm", "Debian bookworm's Python 3.11"),
        ("python:3.8-slim", "python", "bookworm", "Python 3.11, NOT 3.8"),
        ("python:3.13", "python", "trixie", "Debian trixie's Python 3.13"),
        ("python:3.12-slim-trixie", "python", "trixie", "Python 3.13, NOT 3.12"),
        ("docker.io/library/python:3.9-bullseye", "python", "bullseye", "Python 3.9"),
        ("python", "python", "bookworm", "Python 3.11"),
        ("debian:bookworm-slim", "debian", "bookworm", "Debian bookworm"),
        ("debian:12", "debian", "bookworm", "Debian bookworm"),
        ("library/debian:trixie", "debian", "trixie", "Debian trixie"),
        ("debian", "debian", "trixie", "Debian trixie"),
        ("scratch", "scratch", "none", "empty"),
    ],
)
def test_bases_are_made_from_debian_and_say_what_they_are(reference: str, kind: str, suite: str, note: str) -> None:
    base = resolve_base(reference)
    assert (base.kind, base.suite) == (kind, suite)
    assert note in base.note


@pytest.mark.parametrize(
    ("reference", "words"),
    [
        ("ubuntu:22.04", ["no Ubuntu archive", "FROM debian:bookworm-slim", "--engine docker"]),
        ("alpine:3.19", ["FROM debian:bookworm-slim", "apt-get install", "--engine docker"]),
        ("nginx:1.27", ["apt-get install -y --no-install-recommends nginx", "--engine docker"]),
        ("golemfactory/base:1.8", ["debian:*, python:* and scratch", "--engine docker"]),
        ("localhost:5000/python:3.11", ["without a registry", "--engine docker"]),
        ("debian:sarge", ["no Debian release", "debian:bookworm-slim"]),
        ("python:3.11-alpine", ["'alpine'", "python:3.11-slim"]),
    ],
)
def test_other_bases_are_refused_saying_what_to_do(reference: str, words: list[str]) -> None:
    with pytest.raises(BaseUnavailable) as failure:
        resolve_base(reference)
    for word in words:
        assert word in str(failure.value)
