"""Which engine the ``container`` runtime uses: a bad or missing engine named by ``GOLEM_LOCAL_CONTAINER_ENGINE``
is an error saying what was asked and what to do (no engine is started: no program of that name is on PATH)."""

from __future__ import annotations

from pathlib import Path

import pytest

from golem_local.runtime.container_engine import ENGINE_ENV, ContainerEngine, find_engine
from golem_shared.errors import SandboxUnavailableError


async def test_an_unknown_engine_name_is_refused_with_the_names_allowed(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv(ENGINE_ENV, "containerd")
    with pytest.raises(SandboxUnavailableError, match=r"cannot use the engine 'containerd' \(GOLEM_LOCAL_CONTAINER"):
        await find_engine()
    with pytest.raises(SandboxUnavailableError, match="name docker or podman"):
        await find_engine("lxc")


async def test_a_named_engine_that_is_missing_is_not_replaced_by_the_other(
    monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path))  # neither docker nor podman here
    monkeypatch.setenv(ENGINE_ENV, "podman")
    with pytest.raises(SandboxUnavailableError, match=r"told to use podman .*podman is not installed.*unset"):
        await find_engine()
    monkeypatch.delenv(ENGINE_ENV)
    with pytest.raises(SandboxUnavailableError, match=r"none answers here.*apt-get install podman runc"):
        await find_engine()


def test_a_docker_engine_keeps_the_daemon_it_was_found_with(monkeypatch: pytest.MonkeyPatch) -> None:
    engine = ContainerEngine(name="docker", program="/usr/bin/docker", host="unix:///run/private.sock")
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/other.sock")
    env = engine.env()
    assert env is not None
    assert env["DOCKER_HOST"] == "unix:///run/private.sock"
    monkeypatch.setenv("DOCKER_HOST", "unix:///run/private.sock")
    assert engine.env() is None, "the process's own environment already names it"
    assert ContainerEngine(name="podman", program="/usr/bin/podman").env() is None
