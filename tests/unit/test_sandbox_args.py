"""The bubblewrap command line of the local ``vm`` runtime: what the sandbox shows, in which order."""

from __future__ import annotations

from pathlib import Path

import pytest

from golem_local.runtime.base import Volume
from golem_local.runtime.image import DEFAULT_IMAGE, DEFAULT_VOLUMES, Image, check_sandbox_path
from golem_local.runtime.sandbox import AGENT_PATH, SandboxLayout, bwrap_args, describe_exit


def _ops(args: list[str]) -> list[tuple[str, ...]]:
    """The options as tuples: ``("--ro-bind", src, dest)``, ``("--dir", path)``, ``("--unshare-all",)``…"""
    arity = {"--ro-bind": 2, "--bind": 2, "--symlink": 2, "--dir": 1, "--proc": 1, "--dev": 1, "--tmpfs": 1}
    arity |= {"--remount-ro": 1, "--chdir": 1, "--hostname": 1, "--uid": 1, "--gid": 1, "--cap-drop": 1}
    ops, index = [], 0
    while index < len(args):
        count = arity.get(args[index], 0)
        ops.append(tuple(args[index : index + count + 1]))
        index += count + 1
    return ops


def _dest(op: tuple[str, ...]) -> str:
    return op[-1]


def test_isolation_flags_and_nothing_of_the_host_homes() -> None:
    args = bwrap_args(SandboxLayout())
    for flag in ("--unshare-all", "--die-with-parent", "--new-session", "--as-pid-1", "--clearenv"):
        assert flag in args
    assert ("--cap-drop", "ALL") in _ops(args)
    assert "--share-net" not in args
    shown = {_dest(op) for op in _ops(args) if op[0] in ("--ro-bind", "--bind", "--symlink")}
    assert "/usr" in shown
    assert not any(path.startswith(("/root", "/home", "/work")) for path in shown)
    assert "/etc/ssl/private" not in shown
    assert "/etc/shadow" not in shown


def test_image_and_volumes_share_golem_and_root_is_read_only_last(tmp_path: Path) -> None:
    root = tmp_path / "image"
    (root / "golem" / "run").mkdir(parents=True)
    (root / "golem" / "run" / "service.py").write_text("print('hi')\n")
    (root / "golem" / "in").mkdir()  # hidden by the volume
    (root / "app").mkdir()
    (root / "usr").mkdir()  # the host's /usr wins
    volumes = tuple(Volume(path, tmp_path / "volumes" / path.lstrip("/")) for path in ("/golem/out", "/golem/in"))
    layout = SandboxLayout(volumes=volumes, image_root=root, files=((tmp_path / "agent.py", AGENT_PATH),))
    ops = _ops(bwrap_args(layout))
    assert ("--dir", "/golem") in ops
    assert ("--ro-bind", str(root / "golem" / "run"), "/golem/run") in ops
    assert ("--ro-bind", str(root / "app"), "/app") in ops
    assert not any(op[0] == "--ro-bind" and op[1] == str(root / "usr") for op in ops)
    assert not any(op[0] == "--ro-bind" and _dest(op) == "/golem/in" for op in ops)
    binds = [op for op in ops if op[0] == "--bind"]
    assert binds == [
        ("--bind", str(volumes[1].host_path), "/golem/in"),
        ("--bind", str(volumes[0].host_path), "/golem/out"),
    ]
    # Every volume comes after the image's files, and the root is made read-only after everything.
    assert ops.index(binds[0]) > ops.index(("--ro-bind", str(root / "golem" / "run"), "/golem/run"))
    assert ops.index(("--remount-ro", "/")) > max(ops.index(op) for op in binds)
    assert ("--ro-bind", str(tmp_path / "agent.py"), AGENT_PATH) in ops


def test_working_directory_outside_volumes_exists_read_only() -> None:
    ops = _ops(bwrap_args(SandboxLayout(working_dir="/srv/app")))
    assert ops.index(("--dir", "/srv")) < ops.index(("--dir", "/srv/app"))


@pytest.mark.parametrize(
    ("path", "message"),
    [("golem/out", "not an absolute path"), ("/golem/../etc", r"contains '\.\.'"), ("/", "root directory")],
)
def test_sandbox_paths_are_checked(path: str, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        check_sandbox_path(path, "volume")


def test_sandbox_paths_are_normalised_and_image_defaults() -> None:
    assert check_sandbox_path("//golem//out/", "volume") == "/golem/out"
    assert DEFAULT_IMAGE.volumes == DEFAULT_VOLUMES
    assert DEFAULT_IMAGE.working_dir == "/golem/work"
    assert Image(cmd="serve").cmd == ("serve",)


def test_exit_descriptions() -> None:
    assert describe_exit(0) == "exited with code 0"
    assert describe_exit(-9) == "exited with code -9 (killed by SIGKILL)"
