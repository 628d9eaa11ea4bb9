"""The local image file (GVMI layout, tar payload), its hash, the registry by hash and tag, and image names."""

from __future__ import annotations

import hashlib
import io
import json
import os
import struct
import tarfile
import zlib
from pathlib import Path

import pytest

from golem_api import vm
from golem_api.errors import ConfigurationError
from golem_api.payload import VmPayload
from golem_local.images.cache import image_from_metadata, parse_task_package
from golem_local.images.errors import ImageFormatError, ImageNotFoundError
from golem_local.images.format import BASE_LABEL, ImageMetadata, read_metadata, unpack_image, write_image
from golem_local.images.registry import ImageRegistry, default_registry_dir, normalize_tag
from golem_shared.imagehash import check_image_hash, file_sha3

METADATA = ImageMetadata(
    env=("PATH=/usr/local/bin:/usr/bin", "APP=/golem/run"),
    entrypoint=("sh", "-c"),
    working_dir="/golem/work",
    volumes=("/golem/in", "/golem/out"),
    labels={BASE_LABEL: "python:3.11-slim"},
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
    return root


def test_an_image_round_trips_files_modes_links_and_metadata(tmp_path: Path) -> None:
    tree = make_tree(tmp_path / "tree")
    image = tmp_path / "image.gvmi"
    digest = write_image(tree, METADATA, image)
    assert digest == file_sha3(image) == hashlib.sha3_224(image.read_bytes()).hexdigest()
    assert read_metadata(image) == METADATA
    unpacked = tmp_path / "unpacked"
    assert unpack_image(image, unpacked) == METADATA
    run = unpacked / "golem" / "run"
    assert (run / "service.py").read_text() == "print('hi')\n"
    assert (run / "service.py").stat().st_mode & 0o777 == 0o755
    assert (run / "data.db").read_bytes() == bytes(range(256)) * 10
    assert os.readlink(run / "python") == "/usr/local/bin/python3"
    assert (unpacked / "golem" / "readonly" / "keep.txt").read_text() == "kept"
    assert (unpacked / "golem" / "readonly").stat().st_mode & 0o777 == 0o555
    assert (unpacked / "golem" / "work").is_dir()


def test_the_file_has_the_gvmi_layout_with_a_docker_config(tmp_path: Path) -> None:
    image = tmp_path / "image.gvmi"
    write_image(make_tree(tmp_path / "tree"), METADATA, image)
    data = image.read_bytes()
    length = int(data[-8:])
    config = data[-8 - length : -8]
    (crc,) = struct.unpack("<I", data[-12 - length : -8 - length])
    assert crc == zlib.crc32(config)
    as_json = json.loads(config)
    assert as_json["Env"] == ["PATH=/usr/local/bin:/usr/bin", "APP=/golem/run"]
    assert as_json["Entrypoint"] == ["sh", "-c"]
    assert as_json["Cmd"] is None
    assert as_json["WorkingDir"] == "/golem/work"
    assert as_json["Volumes"] == {"/golem/in": {}, "/golem/out": {}}
    with tarfile.open(fileobj=io.BytesIO(data[: -12 - length])) as tar:
        members = tar.getmembers()
    assert [m.name for m in members] == sorted(m.name for m in members)
    assert {(m.uid, m.gid, m.uname, m.gname, m.mtime) for m in members} == {(0, 0, "", "", 0)}


def test_same_tree_same_hash_whatever_the_time_stamps(tmp_path: Path) -> None:
    first = write_image(make_tree(tmp_path / "a"), METADATA, tmp_path / "a.gvmi")
    second_tree = make_tree(tmp_path / "b")
    os.utime(second_tree / "golem" / "run" / "service.py", (1_700_000_000, 1_700_000_000))
    assert write_image(second_tree, METADATA, tmp_path / "b.gvmi") == first
    (second_tree / "golem" / "run" / "service.py").write_text("print('changed')\n")
    assert write_image(second_tree, METADATA, tmp_path / "c.gvmi") != first
    other = ImageMetadata(env=METADATA.env, volumes=("/golem/in",))
    assert write_image(make_tree(tmp_path / "d"), other, tmp_path / "d.gvmi") != first


def test_damaged_or_foreign_files_are_refused(tmp_path: Path) -> None:
    image = tmp_path / "image.gvmi"
    write_image(make_tree(tmp_path / "tree"), METADATA, image)
    data = bytearray(image.read_bytes())
    data[-20] ^= 0xFF  # inside the JSON: the CRC no longer matches
    damaged = tmp_path / "damaged.gvmi"
    damaged.write_bytes(bytes(data))
    with pytest.raises(ImageFormatError, match="CRC32"):
        read_metadata(damaged)
    foreign = tmp_path / "foreign.gvmi"
    foreign.write_bytes(b"not an image at all, just some text")
    with pytest.raises(ImageFormatError, match="8-digit metadata length"):
        read_metadata(foreign)
    short = tmp_path / "short.gvmi"
    short.write_bytes(b"12")
    with pytest.raises(ImageFormatError, match="too short"):
        unpack_image(short, tmp_path / "out")


def _image_with_tar(tmp_path: Path, add: list[tuple[tarfile.TarInfo, bytes | None]]) -> Path:
    payload = io.BytesIO()
    with tarfile.open(fileobj=payload, mode="w") as tar:
        for info, content in add:
            tar.addfile(info, io.BytesIO(content) if content is not None else None)
    config = json.dumps(METADATA.to_json()).encode()
    path = tmp_path / "crafted.gvmi"
    path.write_bytes(payload.getvalue() + struct.pack("<I", zlib.crc32(config)) + config + b"%08d" % len(config))
    return path


def test_unpacking_never_writes_outside_the_tree(tmp_path: Path) -> None:
    escape = tarfile.TarInfo("../escaped.txt")
    escape.size = 1
    with pytest.raises(ImageFormatError, match="outside the image's tree"):
        unpack_image(_image_with_tar(tmp_path, [(escape, b"x")]), tmp_path / "out1")
    assert not (tmp_path / "escaped.txt").exists()
    link = tarfile.TarInfo("etc")
    link.type = tarfile.SYMTYPE
    link.linkname = str(tmp_path / "victim")
    (tmp_path / "victim").mkdir()
    through = tarfile.TarInfo("etc/passwd")
    through.size = 1
    with pytest.raises(ImageFormatError, match="symbolic link"):
        unpack_image(_image_with_tar(tmp_path, [(link, None), (through, b"x")]), tmp_path / "out2")
    assert not (tmp_path / "victim" / "passwd").exists()
    device = tarfile.TarInfo("dev/null")
    device.type = tarfile.CHRTYPE
    with pytest.raises(ImageFormatError, match="not a file, a directory or a symbolic link"):
        unpack_image(_image_with_tar(tmp_path, [(device, None)]), tmp_path / "out3")


def test_the_runtime_image_follows_the_metadata(tmp_path: Path) -> None:
    image = image_from_metadata(METADATA, tmp_path, "ab" * 28)
    assert image.env == {"PATH": "/usr/local/bin:/usr/bin", "APP": "/golem/run"}
    assert (image.entrypoint, image.cmd) == (("sh", "-c"), ())
    assert (image.working_dir, image.volumes, image.hash) == ("/golem/work", ("/golem/in", "/golem/out"), "ab" * 28)
    assert image.uses_host_python
    assert image_from_metadata(ImageMetadata(), tmp_path).working_dir == "/"
    assert not image_from_metadata(ImageMetadata(labels={BASE_LABEL: "debian:12"}), tmp_path).uses_host_python


def test_the_registry_keeps_images_by_hash_and_tag(tmp_path: Path) -> None:
    registry = ImageRegistry(tmp_path / "registry")
    assert registry.entries() == []
    assert not registry.root.exists(), "reading never creates the registry"
    image = tmp_path / "image.gvmi"
    digest = write_image(make_tree(tmp_path / "tree"), METADATA, image)
    entry = registry.add(image, tag="golem-api/service:1.0")
    assert not image.exists()
    assert (entry.hash, entry.tags, entry.size) == (digest, ("golem-api/service:1.0",), entry.path.stat().st_size)
    assert registry.find(tag="golem-api/service:1.0") == entry
    assert registry.find(hash=digest.upper()) == entry
    again = tmp_path / "again.gvmi"
    write_image(make_tree(tmp_path / "tree2"), METADATA, again)
    assert registry.add(again, tag="golem-api/service").tags == ("golem-api/service:1.0", "golem-api/service:latest")
    assert [e.hash for e in registry.entries()] == [digest]
    with pytest.raises(ImageNotFoundError, match=r"golem-api image build DIR --tag other/x:2") as missing:
        registry.find(tag="other/x:2")
    assert missing.value.tag == "other/x:2"
    with pytest.raises(ImageNotFoundError, match="ab" * 28):
        registry.find(hash="ab" * 28)
    foreign = tmp_path / "foreign.gvmi"
    foreign.write_bytes(b"nope")
    with pytest.raises(ImageFormatError):
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
