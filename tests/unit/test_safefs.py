"""File access beneath a volume (golem_local.safefs), with openat2 and with the component-walk fallback."""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

from golem_local import safefs
from golem_local.safefs import UnsafePath, VolumeFiles


@pytest.fixture(params=["openat2", "walk"])
def mode(request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch) -> str:
    """Each test runs with openat2 (when the kernel has it) and with the fallback."""
    if request.param == "walk":
        monkeypatch.setattr(safefs, "_supported", False)
    elif not safefs.openat2_supported():
        pytest.skip("this kernel has no openat2")
    return str(request.param)


@pytest.fixture
def volumes(tmp_path: Path) -> Iterator[tuple[VolumeFiles, Path]]:
    (tmp_path / "in").mkdir()
    (tmp_path / "out" / "dir" / "sub").mkdir(parents=True)
    (tmp_path / "out" / "dir" / "sub" / "a").write_text("A")
    (tmp_path / "secret").write_text("host")
    (tmp_path / "out" / "dir" / "leak").symlink_to(tmp_path / "secret")
    (tmp_path / "out" / "linked").symlink_to(tmp_path)
    os.mkfifo(tmp_path / "out" / "fifo")
    files = VolumeFiles({"/golem/input": tmp_path / "in", "/golem/output": tmp_path / "out"})
    yield files, tmp_path
    files.close()


def test_files_are_created_read_and_copied_beneath_the_volumes(mode: str, volumes: tuple[VolumeFiles, Path]) -> None:
    files, root = volumes
    new = files.create("/golem/input/x/y/data.bin")
    os.write(new.fd, b"payload")
    new.commit()
    assert (root / "in" / "x" / "y" / "data.bin").read_bytes() == b"payload"
    fd = files.open_read("/golem/input/x/y/data.bin")
    assert os.read(fd, 100) == b"payload"
    os.close(fd)
    stats = files.copy("/golem/output/dir", "/golem/input/copy")
    assert (stats.files, stats.links, stats.skipped) == (1, 1, [])
    assert (root / "in" / "copy" / "sub" / "a").read_text() == "A"
    assert (root / "in" / "copy" / "leak").is_symlink()
    assert files.kind("/golem/output/dir") == "directory"
    assert files.kind("/golem/output/dir/leak") == "other"
    assert files.kind("/golem/output/missing") is None


@pytest.mark.parametrize(
    "path",
    ["/golem/output/dir/leak", "/golem/output/linked/secret", "/golem/output/../secret", "/etc/passwd", "relative"],
)
def test_links_escapes_and_other_paths_are_refused(mode: str, volumes: tuple[VolumeFiles, Path], path: str) -> None:
    files, _root = volumes
    with pytest.raises(UnsafePath):
        files.open_read(path)


def test_a_fifo_is_never_opened_and_a_planted_link_is_replaced_not_followed(
    mode: str, volumes: tuple[VolumeFiles, Path]
) -> None:
    files, root = volumes
    with pytest.raises(UnsafePath, match="not a regular file"):
        files.open_read("/golem/output/fifo")
    (root / "in" / "target").symlink_to(root / "secret")
    new = files.create("/golem/input/target")
    os.write(new.fd, b"new")
    new.commit()
    assert (root / "secret").read_text() == "host"
    assert (root / "in" / "target").read_text() == "new"
    with pytest.raises(UnsafePath):
        files.create("/golem/output/linked/planted")
    assert not (root / "planted").exists()


def test_copying_a_directory_into_itself_ends_and_an_aborted_file_leaves_nothing(
    mode: str, volumes: tuple[VolumeFiles, Path]
) -> None:
    files, root = volumes
    files.copy("/golem/output/dir", "/golem/output/dir/inside")
    assert (root / "out" / "dir" / "inside" / "sub" / "a").read_text() == "A"
    assert not (root / "out" / "dir" / "inside" / "inside").exists()
    new = files.create("/golem/input/partial")
    new.abort()
    assert list((root / "in").iterdir()) == []
