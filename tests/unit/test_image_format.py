"""The GVMI image file (squashfs + CRC + container config + length), its hash, the registry by hash and tag, and
image names. Images here are written by the real mksquashfs from small trees (tens of milliseconds each)."""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import struct
import subprocess
import zlib
from pathlib import Path

import pytest

from golem_api import vm
from golem_api.errors import ConfigurationError
from golem_api.payload import VmPayload
from golem_local.images.cache import image_from_metadata, parse_task_package
from golem_local.images.errors import ImageFormatError, ImageNotFoundError
from golem_local.images.format import (
    ImageMetadata,
    gvmi_from_squashfs,
    make_squashfs,
    read_metadata,
    unpack_image,
    verify_image,
    write_gvmi,
)
from golem_local.images.registry import ImageRegistry, default_registry_dir, normalize_tag
from golem_shared.imagehash import check_image_hash, file_sha3

METADATA = ImageMetadata(
    env=("PATH=/usr/local/bin:/usr/bin", "APP=/golem/run"),
    entrypoint=("sh", "-c"),
    working_dir="/golem/work",
    volumes=("/golem/in", "/golem/out"),
    labels={"org.example.name": "service"},
)


def make_tree(root: Path) -> Path:
    (root / "golem" / "run").mkdir(parents=True)
    (root / "golem" / "run" / "service.py").write_text("print('hi')\n")
    (root / "golem" / "run" / "service.py").chmod(0o755)
    (root / "golem" / "run" / "data.db").write_bytes(bytes(range(256)) * 10)
    (root / "golem" / "work").mkdir()
    (root / "golem" / "readonly").mkdir()
    (root / "golem" / "readonly" / "keep.txt").write_text("kept")
    (root / "golem" / "readonly").chmod(0o555)
    os.symlink("/usr/local/bin/python3", root / "golem" / "run" / "python")
    for directory, _subdirectories, files in os.walk(root):
        for name in [directory, *(os.path.join(directory, f) for f in files)]:
            os.utime(name, (1_600_000_000, 1_600_000_000), follow_symlinks=False)
    return root


def test_an_image_round_trips_files_modes_links_owners_and_metadata(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    image = tmp_path / "image.gvmi"
    digest = write_gvmi(tree, METADATA, image)
    assert digest == file_sha3(image) == hashlib.sha3_224(image.read_bytes()).hexdigest()
    assert read_metadata(image) == METADATA
    unpacked = tmp_path / "unpacked"
    assert unpack_image(image, unpacked) == METADATA
    run = unpacked / "golem" / "run"
    assert (run / "service.py").read_text() == "print('hi')\n"
    assert (run / "service.py").stat().st_mode & 0o777 == 0o755
    assert (run / "service.py").stat().st_mtime == 1_600_000_000
    assert (run / "data.db").read_bytes() == bytes(range(256)) * 10
    assert os.readlink(run / "python") == "/usr/local/bin/python3"
    assert (unpacked / "golem" / "readonly" / "keep.txt").read_text() == "kept"
    assert (unpacked / "golem" / "readonly").stat().st_mode & 0o777 == 0o555
    assert (unpacked / "golem" / "work").is_dir()
    listing = subprocess.run(["unsquashfs", "-lln", str(image)], capture_output=True, text=True, check=True).stdout
    assert "-rwxr-xr-x 0/0" in listing  # unsquashfs reads the GVMI as it is: the trailer is past bytes_used
    assert "squashfs-root/golem/run/service.py" in listing


def test_the_file_has_the_gvmi_layout_with_a_flat_docker_config(tmp_path: Path) -> None:
    image = tmp_path / "image.gvmi"
    write_gvmi(make_tree(tmp_path / "tree"), METADATA, image)
    data = image.read_bytes()
    assert data[:4] == b"hsqs"
    (bytes_used,) = struct.unpack_from("<Q", data, 40)
    length = int(data[-8:])
    config = data[-8 - length : -8]
    (crc,) = struct.unpack("<I", data[-12 - length : -8 - length])
    assert crc == zlib.crc32(config)
    payload = len(data) - 12 - length
    assert payload % 4096 == 0
    assert bytes_used <= payload < bytes_used + 4096
    assert set(data[bytes_used:payload]) <= {0}
    as_json = json.loads(config)
    assert list(as_json) == [  # gvmkit-build's order (Docker's ContainerConfig), and no nulls
        "Hostname", "Domainname", "AttachStdin", "AttachStdout", "AttachStderr", "Tty", "OpenStdin", "StdinOnce",
        "Env", "Volumes", "WorkingDir", "Entrypoint", "Labels",
    ]  # fmt: skip
    assert as_json["Env"] == ["PATH=/usr/local/bin:/usr/bin", "APP=/golem/run"]
    assert as_json["Entrypoint"] == ["sh", "-c"]
    assert as_json["Volumes"] == {"/golem/in": {}, "/golem/out": {}}
    assert b"null" not in config
    info = verify_image(image)
    assert (info.compression, info.squashfs_size, info.metadata) == ("gzip", bytes_used, METADATA)


def test_same_tree_same_hash_and_any_change_shows(tmp_path: Path) -> None:
    first = write_gvmi(make_tree(tmp_path / "a"), METADATA, tmp_path / "a.gvmi")
    second_tree = make_tree(tmp_path / "b")
    assert write_gvmi(second_tree, METADATA, tmp_path / "b.gvmi") == first, "mksquashfs is deterministic"
    (second_tree / "golem" / "run" / "service.py").write_text("print('changed')\n")
    assert write_gvmi(second_tree, METADATA, tmp_path / "c.gvmi") != first
    other = ImageMetadata(env=METADATA.env, volumes=("/golem/in",))
    assert write_gvmi(make_tree(tmp_path / "d"), other, tmp_path / "d.gvmi") != first
    squashfs = tmp_path / "e.sqfs"
    make_squashfs(make_tree(tmp_path / "e"), squashfs)
    assert gvmi_from_squashfs(squashfs, METADATA, tmp_path / "e.gvmi") == first


def test_a_gvmi_made_elsewhere_is_read_and_run_as_a_root_file_system(tmp_path: Path) -> None:
    # what gvmkit-build writes: lzo, a config taken from `docker inspect` with keys we do not use
    tree = make_tree(tmp_path / "tree")
    squashfs = tmp_path / "fs.sqfs"
    subprocess.run(["mksquashfs", str(tree), str(squashfs), "-comp", "lzo", "-quiet", "-no-progress"], check=True)
    config = {"Hostname": "3f2a", "Domainname": "", "User": "", "Env": ["A=1"], "Cmd": None, "Image": "sha256:ab",
              "Volumes": {"/golem/input": {}}, "WorkingDir": "", "Entrypoint": ["/bin/sh"], "OnBuild": None,
              "Labels": None, "ArgsEscaped": True}  # fmt: skip
    data = json.dumps(config).encode()
    image = tmp_path / "foreign.gvmi"
    image.write_bytes(squashfs.read_bytes() + struct.pack("<I", zlib.crc32(data)) + data + b"%08d" % len(data))
    info = verify_image(image, "sha3:" + file_sha3(image))
    assert info.compression == "lzo"
    assert info.metadata == ImageMetadata(env=("A=1",), entrypoint=("/bin/sh",), volumes=("/golem/input",))
    runtime_image = image_from_metadata(info.metadata, tmp_path / "unpacked", info.hash)
    assert (runtime_image.rootfs, runtime_image.working_dir, runtime_image.volumes) == (True, "/", ("/golem/input",))


def test_damaged_truncated_or_foreign_files_are_refused_naming_the_file(tmp_path: Path) -> None:
    image = tmp_path / "image.gvmi"
    tree = make_tree(tmp_path / "tree")
    (tree / "noise.bin").write_bytes(hashlib.shake_256(b"noise").digest(64 * 1024))  # incompressible: 64 KiB
    write_gvmi(tree, METADATA, image)
    data = image.read_bytes()
    cases = {
        "damaged.gvmi": (data[:-20] + bytes([data[-20] ^ 0xFF]) + data[-19:], "does not match its CRC32"),
        "truncated.gvmi": (data[: len(data) // 2], "does not end with the 8-digit length"),
        "short.gvmi": (b"12", "too short"),
        "text.gvmi": (b"not an image at all, just some text", "does not end with the 8-digit length"),
        "notsquashfs.gvmi": (b"\0" * 4096 + data[-(12 + int(data[-8:])) :], "does not start with a squashfs"),
        "cut.gvmi": (data[:32768] + data[-(12 + int(data[-8:])) :], "squashfs says it is"),
    }
    for name, (content, message) in cases.items():
        path = tmp_path / name
        path.write_bytes(content)
        with pytest.raises(ImageFormatError, match=message) as refused:
            verify_image(path)
        assert str(path) in str(refused.value)
        assert "gvmkit-build" in str(refused.value), "the error says how to get a good file"
    with pytest.raises(ImageFormatError, match=f"has the hash {file_sha3(image)}, not the expected {'ab' * 28}"):
        verify_image(image, "ab" * 28)
    with pytest.raises(ImageFormatError, match="CRC32"):
        unpack_image(tmp_path / "damaged.gvmi", tmp_path / "out")
    assert not (tmp_path / "out").exists()


def test_the_runtime_image_follows_the_metadata(tmp_path: Path) -> None:
    image = image_from_metadata(METADATA, tmp_path, "ab" * 28)
    assert image.env == {"PATH": "/usr/local/bin:/usr/bin", "APP": "/golem/run"}
    assert (image.entrypoint, image.cmd) == (("sh", "-c"), ())
    assert (image.working_dir, image.volumes, image.hash) == ("/golem/work", ("/golem/in", "/golem/out"), "ab" * 28)
    assert image.rootfs, "a GVMI's tree is the whole root file system"
    assert image_from_metadata(ImageMetadata(), tmp_path).working_dir == "/"


def test_the_registry_keeps_images_by_hash_and_tag(tmp_path: Path) -> None:
    registry = ImageRegistry(tmp_path / "registry")
    assert registry.entries() == []
    assert not registry.root.exists(), "reading never creates the registry"
    image = tmp_path / "image.gvmi"
    digest = write_gvmi(make_tree(tmp_path / "tree"), METADATA, image)
    entry = registry.add(image, tag="golem-api/service:1.0")
    assert not image.exists()
    assert (entry.hash, entry.tags, entry.size) == (digest, ("golem-api/service:1.0",), entry.path.stat().st_size)
    assert registry.find(tag="golem-api/service:1.0") == entry
    assert registry.find(hash=digest.upper()) == entry
    again = tmp_path / "again.gvmi"
    write_gvmi(make_tree(tmp_path / "tree2"), METADATA, again)
    assert registry.add(again, tag="golem-api/service").tags == ("golem-api/service:1.0", "golem-api/service:latest")
    kept = tmp_path / "kept.gvmi"
    shutil.copyfile(entry.path, kept)
    assert registry.add(kept, tag="golem-api/copy:1", copy=True).hash == digest
    assert kept.exists(), "copy=True (golem-api image add) leaves the file where it was"
    assert [e.hash for e in registry.entries()] == [digest]
    with pytest.raises(ImageNotFoundError, match=r"golem-api image build DIR --tag other/x:2") as missing:
        registry.find(tag="other/x:2")
    assert missing.value.tag == "other/x:2"
    with pytest.raises(ImageNotFoundError, match="ab" * 28):
        registry.find(hash="ab" * 28)
    foreign = tmp_path / "foreign.gvmi"
    foreign.write_bytes(b"nope")
    with pytest.raises(ImageFormatError, match="not a GVMI image"):
        registry.add(foreign, tag="x:1")


def test_tags_and_hashes_are_checked(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    assert normalize_tag("golem-api/simple-service:1.0") == "golem-api/simple-service:1.0"
    assert normalize_tag("service") == "service:latest"
    for bad in ("Upper/Case:1", "a b:1", "x:", ":1", "x:1:2"):
        with pytest.raises(ConfigurationError, match="NAME:VERSION"):
            normalize_tag(bad)
    assert check_image_hash(" " + "AB" * 28) == "ab" * 28
    with pytest.raises(ConfigurationError, match="56 hex digits"):
        check_image_hash("abc")
    monkeypatch.setenv("GOLEM_API_HOME", str(tmp_path / "home"))
    assert default_registry_dir() == tmp_path / "home" / "images"
    assert ImageRegistry().root == tmp_path / "home" / "images"


def test_task_packages_are_parsed_strictly() -> None:
    digest = "cd" * 28
    assert parse_task_package(f"hash:sha3:{digest.upper()}:http://127.0.0.1:1/v1/image/download/x") == (
        digest,
        "http://127.0.0.1:1/v1/image/download/x",
    )
    with pytest.raises(ValueError, match="hash:sha3:<hash>:<url>"):
        parse_task_package("sha3:abc")
    with pytest.raises(ValueError, match="sha1"):
        parse_task_package("hash:sha1:abc:http://x")


async def test_vm_repo_names_the_image_and_golem_resolves_it_later() -> None:
    payload = await vm.repo(image_tag="golem-api/simple-service:1.0", min_mem_gib=1.0, capabilities=["vpn"])
    assert isinstance(payload, VmPayload)
    assert payload.needs_resolving
    assert "(golem.runtime.capabilities=vpn)" in payload.demand_constraints()
    assert "(golem.inf.mem.gib>=1.0)" in payload.demand_constraints()
    with pytest.raises(ConfigurationError, match="not resolved yet"):
        payload.demand_properties()
    by_hash = await vm.repo(image_hash="EF" * 28)
    assert by_hash.image_hash == "ef" * 28
    resolved = VmPayload(task_package="hash:sha3:" + "ef" * 28 + ":http://x/y")
    assert resolved.demand_properties()["golem.srv.comp.task_package"].startswith("hash:sha3:efef")
    assert VmPayload().demand_properties() == {}


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({}, "name the image"),
        ({"image_tag": "a:1", "image_hash": "ab" * 28}, "not both"),
        ({"image_url": "http://x/i.gvmi"}, "needs image_hash"),
        ({"image_url": "http://x/i.gvmi", "image_tag": "a:1"}, "not with image_tag"),
        ({"image_url": "ftp://x/i.gvmi", "image_hash": "ab" * 28}, "not an http"),
        ({"image_hash": "1234"}, "56 hex digits"),
        ({"image_tag": " "}, "non-empty"),
    ],
)
async def test_vm_repo_refuses_missing_or_contradictory_names(kwargs: dict[str, str], message: str) -> None:
    with pytest.raises(ConfigurationError, match=message):
        await vm.repo(**kwargs)  # type: ignore[arg-type]
