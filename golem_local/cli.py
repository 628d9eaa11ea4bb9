"""The local network's commands of ``golem-api``: ``node``, ``image`` and ``runtime``.

``golem-api node [--port N] [--providers N] [--app-key KEY] [--runtime NAME]… [--debit-note-interval SEC]
[--runtimes-dir DIR]… [--registry DIR]`` runs the embedded local Golem network on its own, for code in another
process (or another language) that talks to a yagna daemon: it prints the URL and app key to export, and runs
until Ctrl-C or SIGTERM, then stops cleanly.

``golem-api runtime list|info NAME|test NAME [--runtimes-dir DIR]…`` lists, describes and self-tests the
runtimes a local provider can run, runtime programs of descriptor directories included
(:mod:`golem_local.runtime.program`).

``golem-api image build DIR --tag NAME:VERSION [--file DOCKERFILE] [--build-arg NAME=VALUE]… [--registry DIR]
[--engine auto|none|docker|podman] [--compression C [--compression-level N]] [--host-ca PEM | --no-host-ca]
[--no-cache] [--refresh-bases]`` builds a GVMI image from the Dockerfile in ``DIR``
(:mod:`golem_local.images.builder`; the steps' output goes to stderr) and adds it to the local image registry,
then prints its tag, hash, size and file on stdout. ``golem-api image add FILE [--tag NAME:VERSION]`` checks a
GVMI made elsewhere (``gvmkit-build``) and adds a copy of it. ``golem-api image list [--registry DIR]`` lists
the registry's images. The registry defaults to ``$GOLEM_API_HOME/images``
(:func:`~golem_local.images.registry.default_registry_dir`).

The requestor's command line (:mod:`golem_api._cli`) adds these through :func:`add_commands`, by way of its
one lazy door into this package (:mod:`golem_api._local`).
"""

from __future__ import annotations

import argparse
import asyncio
import sys
import tempfile
from pathlib import Path
from typing import TextIO

from attrs import evolve

from golem_local.config import DEFAULT_DEBIT_NOTE_INTERVAL_SEC, LocalNetworkConfig
from golem_local.images.builder import ENGINES, HOST_CA, build_image
from golem_local.images.format import COMPRESSIONS, DEFAULT_COMPRESSION, verify_image
from golem_local.images.registry import ImageRegistry, default_registry_dir, normalize_tag
from golem_local.node import LocalNode
from golem_local.runtime.base import OfferTemplate, bounded_stop
from golem_local.runtime.builtin import BUILTIN_RUNTIMES
from golem_local.runtime.program import RUNTIMES_DIR_ENV, program_runtimes, runtime_dirs_from_env
from golem_local.runtime.registry import ENTRY_POINT_GROUP, RuntimeContext, RuntimeDescriptor, RuntimeRegistry
from golem_shared.errors import GolemError
from golem_shared.signals import stop_on_signals

__all__ = ["DEFAULT_PORT", "add_commands", "node_config"]

DEFAULT_PORT = 7465
"""The daemon's port, so that clients' default ``YAGNA_API_URL`` (``http://127.0.0.1:7465``) finds the node."""


def add_commands(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    """Add ``node`` and ``image`` to the ``golem-api`` parser's subcommands."""
    _add_node_command(commands)
    _add_image_command(commands)
    _add_runtime_command(commands)


def _count(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not a whole number") from None
    if value < 0:
        raise argparse.ArgumentTypeError(f"{value} is negative")
    return value


def _positive_count(text: str) -> int:
    value = _count(text)
    if value == 0:
        raise argparse.ArgumentTypeError("0 is not positive")
    return value


def _port(text: str) -> int:
    value = _count(text)
    if value > 65535:
        raise argparse.ArgumentTypeError(f"{value} is not a port (0-65535)")
    return value


def _add_node_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    node = commands.add_parser(
        "node",
        help="run the embedded local Golem network standalone",
        description="Run the embedded local Golem network (a yagna-compatible node with local providers) "
        "until Ctrl-C or SIGTERM.",
    )
    node.add_argument(
        "--port", type=_port, default=DEFAULT_PORT, help=f"port on 127.0.0.1 (default {DEFAULT_PORT}; 0: any free)"
    )
    node.add_argument("--providers", type=_count, default=3, metavar="N", help="number of providers (default 3)")
    node.add_argument("--app-key", metavar="KEY", help="the app key clients must send (default: a random one)")
    node.add_argument(
        "--runtime",
        action="append",
        default=[],
        metavar="NAME",
        help="the runtime the providers run (default vm); given more than once, the providers take them in turn "
        "(see `golem-api runtime list`)",
    )
    node.add_argument(
        "--debit-note-interval",
        type=_positive_count,
        default=None,
        metavar="SEC",
        help=f"seconds between two debit notes the providers offer (default {DEFAULT_DEBIT_NOTE_INTERVAL_SEC}, "
        "as yagna's provider; a requestor may propose another)",
    )
    _add_runtimes_dir_option(node)
    _add_registry_option(node, "the image registry the node serves")
    node.set_defaults(handler=_run_node)


def _add_runtimes_dir_option(parser: argparse.ArgumentParser) -> None:
    parser.add_argument(
        "--runtimes-dir",
        action="append",
        default=[],
        type=Path,
        metavar="DIR",
        help="a directory of runtime descriptor files (JSON) naming runtime programs (the runtime SDK's Command "
        f"mode); may be given more than once; ${RUNTIMES_DIR_ENV} adds more",
    )


def _add_registry_option(parser: argparse.ArgumentParser, what: str) -> None:
    parser.add_argument(
        "--registry",
        metavar="DIR",
        type=Path,
        default=None,
        help=f"{what} (default: {default_registry_dir()}, from $GOLEM_API_HOME)",
    )


def _build_arg(text: str) -> tuple[str, str]:
    name, equals, value = text.partition("=")
    if not equals or not name:
        raise argparse.ArgumentTypeError(f"{text!r} is not NAME=VALUE")
    return name, value


def _add_image_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    image = commands.add_parser(
        "image",
        help="build, add and list local images",
        description="Build, add and list the GVMI images of the local registry.",
    )
    actions = image.add_subparsers(dest="action", required=True, metavar="ACTION")
    build = actions.add_parser(
        "build",
        help="build an image from a Dockerfile",
        description="Build a GVMI image (a squashfs of the whole root file system and its config) from "
        "DIR/Dockerfile and add it to the local registry. With --engine auto (the default) the builder's own "
        "interpreter builds what it can (bases debian:*, python:*, scratch made from Debian's packages; RUN in a "
        "sandbox with the network), and docker or podman, if usable, builds the rest.",
    )
    build.add_argument("context", metavar="DIR", type=Path, help="the build context: the folder of the Dockerfile")
    build.add_argument("--tag", "-t", required=True, metavar="NAME:VERSION", help="the tag to give the image")
    build.add_argument("--file", "-f", type=Path, metavar="DOCKERFILE", help="the Dockerfile (default: DIR/Dockerfile)")
    build.add_argument(
        "--build-arg", type=_build_arg, action="append", default=[], metavar="NAME=VALUE", help="an ARG value"
    )
    build.add_argument(
        "--engine",
        choices=ENGINES,
        default="auto",
        help="what builds: auto (own interpreter when it can, else a usable docker or podman), none (the own "
        "interpreter only), docker, podman (the whole Dockerfile)",
    )
    build.add_argument(
        "--compression",
        choices=COMPRESSIONS,
        default=None,
        help=f"squashfs compressor (default {DEFAULT_COMPRESSION[0]} level {DEFAULT_COMPRESSION[1]}: every kernel "
        "reads it; gvmkit-build's default is lzo)",
    )
    build.add_argument("--compression-level", type=int, default=None, metavar="N", help="the compressor's level")
    ca = build.add_mutually_exclusive_group()
    ca.add_argument(
        "--host-ca",
        type=Path,
        default=None,
        metavar="PEM",
        help=f"CA bundle RUN steps trust (default: {HOST_CA} when it exists; needed behind a TLS-intercepting proxy)",
    )
    ca.add_argument("--no-host-ca", action="store_true", help="do not show the host's CA bundle to RUN steps")
    build.add_argument("--no-cache", action="store_true", help="neither use nor fill the build cache of RUN steps")
    build.add_argument("--refresh-bases", action="store_true", help="make the Debian bases again from today's archive")
    _add_registry_option(build, "the registry to add the image to")
    build.set_defaults(handler=_build_image)
    add = actions.add_parser(
        "add",
        help="add a GVMI made elsewhere (gvmkit-build)",
        description="Check a GVMI image file (its metadata trailer, CRC, squashfs superblock) and add a copy of it "
        "to the local registry, under its hash and optionally a tag.",
    )
    add.add_argument("file", metavar="FILE", type=Path, help="the .gvmi file")
    add.add_argument("--tag", "-t", metavar="NAME:VERSION", help="a tag to give it")
    _add_registry_option(add, "the registry to add the image to")
    add.set_defaults(handler=_add_image)
    listing = actions.add_parser("list", help="list the images of the local registry")
    _add_registry_option(listing, "the registry to list")
    listing.set_defaults(handler=_list_images)


def _size(size: int) -> str:
    value = float(size)
    for unit in ("B", "KiB", "MiB"):
        if value < 1024 or unit == "MiB":
            return f"{value:.0f} {unit}" if unit == "B" else f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"  # pragma: no cover - unreachable


def _build_image(args: argparse.Namespace) -> int:
    def log(text: str) -> None:
        sys.stderr.write(text)
        sys.stderr.flush()

    try:
        result = asyncio.run(
            build_image(
                args.context,
                tag=args.tag,
                registry=ImageRegistry(args.registry),
                dockerfile=args.file,
                build_args=dict(args.build_arg),
                log=log,
                engine=args.engine,
                compression=args.compression,
                compression_level=args.compression_level,
                host_ca=False if args.no_host_ca else args.host_ca,
                use_cache=not args.no_cache,
                refresh_bases=args.refresh_bases,
            )
        )
    except GolemError as exc:
        print(f"golem-api image build: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("golem-api image build: interrupted", file=sys.stderr)
        return 130
    by = "the builder's own interpreter" if result.engine == "none" else result.engine
    cached = f", {result.cached_steps} RUN step(s) from the build cache" if result.cached_steps else ""
    notes = "".join(f"  note: {note}\n" for note in result.notes)
    print(
        f"Built {result.tag} in {result.seconds:.1f} s (by {by}{cached})\n"
        f"  hash: {result.hash}\n"
        f"  tag:  {result.tag}\n"
        f"  size: {_size(result.size)} ({result.size} bytes)\n"
        f"  file: {result.path}\n"
        f"{notes}"
        f"Use it with: await vm.repo(image_tag={result.tag!r})",
        flush=True,
    )
    return 0


def _add_image(args: argparse.Namespace) -> int:
    registry = ImageRegistry(args.registry)
    try:
        info = verify_image(args.file)
        entry = registry.add(args.file, tag=args.tag, copy=True)
    except GolemError as exc:
        print(f"golem-api image add: error: {exc}", file=sys.stderr)
        return 1
    except OSError as exc:
        print(f"golem-api image add: error: cannot read {args.file}: {exc.strerror or exc}", file=sys.stderr)
        return 1
    use = f"image_tag={normalize_tag(args.tag)!r}" if args.tag else f"image_hash={entry.hash!r}"
    print(
        f"Added {args.file}\n"
        f"  hash: {entry.hash}\n"
        f"  tags: {', '.join(entry.tags) or '(none)'}\n"
        f"  size: {_size(entry.size)} ({entry.size} bytes; squashfs {info.compression}, {info.squashfs_size} bytes)\n"
        f"  file: {entry.path}\n"
        f"Use it with: await vm.repo({use})",
        flush=True,
    )
    return 0


def _list_images(args: argparse.Namespace) -> int:
    registry = ImageRegistry(args.registry)
    try:
        entries = registry.entries()
    except GolemError as exc:
        print(f"golem-api image list: error: {exc}", file=sys.stderr)
        return 1
    if not entries:
        print(f"No images in {registry.root}; build one with `golem-api image build DIR --tag NAME:VERSION`.")
        return 0
    rows = [(", ".join(entry.tags) or "(untagged)", entry.hash, _size(entry.size)) for entry in entries]
    width = max(len("TAG"), *(len(row[0]) for row in rows))
    print(f"{'TAG':<{width}}  {'HASH':<56}  SIZE")
    for tags, digest, size in rows:
        print(f"{tags:<{width}}  {digest}  {size}")
    return 0


def node_config(args: argparse.Namespace) -> LocalNetworkConfig:
    """The network ``golem-api node`` serves for its parsed arguments ``args``."""
    config = LocalNetworkConfig.with_providers(
        args.providers, image_registry=args.registry, runtime_dirs=tuple(args.runtimes_dir)
    )
    if args.runtime:
        providers = tuple(
            evolve(spec, runtime=args.runtime[index % len(args.runtime)]) for index, spec in enumerate(config.providers)
        )
        config = evolve(config, providers=providers)
    if args.debit_note_interval is not None:
        interval = args.debit_note_interval
        config = evolve(
            config, providers=tuple(evolve(spec, debit_note_interval_sec=interval) for spec in config.providers)
        )
    return config


def _run_node(args: argparse.Namespace) -> int:
    try:
        return asyncio.run(_serve_node(node_config(args), args.port, args.app_key, sys.stdout))
    except GolemError as exc:
        print(f"golem-api node: error: {exc}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:  # where signal handlers cannot be installed (Windows)
        return 130


async def _serve_node(config: LocalNetworkConfig, port: int, app_key: str | None, out: TextIO) -> int:
    with stop_on_signals() as stop:
        async with LocalNode(config, port=port, app_key=app_key) as node:
            _describe(node, out)
            await stop.wait()
            print("Stopping the local Golem network…", file=out, flush=True)
    print("Stopped.", file=out, flush=True)
    return 0


def _describe(node: LocalNode, out: TextIO) -> None:
    lines = [
        f"Local Golem network running at {node.url} with {len(node.providers)} provider(s)",
        f"  requestor id: {node.requestor_id}",
        f"  app key:      {node.app_key}",
        f"  payment:      {node.config.payment_platform}, balance {node.config.requestor_balance}",
    ]
    lines += [f"  provider:     {p.name} {p.node_id} (runtime {p.spec.runtime})" for p in node.providers]
    lines += [
        f"  images:       {node.registry.root} (the registry at {node.url}/v1/image/)",
        "Point clients at it with:",
        f"  export YAGNA_APPKEY={node.app_key} YAGNA_API_URL={node.url} YAGNA_SUBNET={node.config.subnet} "
        f"GOLEM_REGISTRY_URL={node.url}",
        "Press Ctrl-C to stop.",
    ]
    print("\n".join(lines), file=out, flush=True)


def _add_runtime_command(commands: argparse._SubParsersAction[argparse.ArgumentParser]) -> None:
    runtime = commands.add_parser(
        "runtime",
        help="list, describe and self-test the runtimes local providers can run",
        description="The runtimes a local provider can run: the built-in ones, the runtime programs of the "
        f"descriptor files in --runtimes-dir and ${RUNTIMES_DIR_ENV}, and those installed packages announce in the "
        f"entry-point group {ENTRY_POINT_GROUP!r}.",
    )
    actions = runtime.add_subparsers(dest="action", required=True, metavar="ACTION")
    listing = actions.add_parser("list", help="list the runtimes")
    _add_runtimes_dir_option(listing)
    listing.set_defaults(handler=_list_runtimes)
    info = actions.add_parser("info", help="describe a runtime: version, description, counters, offer")
    info.add_argument("name", metavar="NAME")
    _add_runtimes_dir_option(info)
    info.set_defaults(handler=_runtime_info)
    test = actions.add_parser("test", help="run a runtime's self-test, as a node does at start")
    test.add_argument("name", metavar="NAME")
    _add_runtimes_dir_option(test)
    test.set_defaults(handler=_test_runtime)


def _runtime_registry(args: argparse.Namespace) -> RuntimeRegistry:
    directories = (*args.runtimes_dir, *runtime_dirs_from_env())
    return RuntimeRegistry(builtin=BUILTIN_RUNTIMES, programs=program_runtimes(directories))


def _list_runtimes(args: argparse.Namespace) -> int:
    try:
        registry = _runtime_registry(args)
    except GolemError as exc:
        print(f"golem-api runtime list: error: {exc}", file=sys.stderr)
        return 1
    rows: list[tuple[str, str, str]] = []
    for name in registry.names():
        try:
            descriptor = registry.get(name)
        except GolemError as exc:
            rows.append((name, "?", f"(broken: {exc})"))
            continue
        rows.append((name, descriptor.version, descriptor.description))
    width = max(len("NAME"), *(len(row[0]) for row in rows))
    print(f"{'NAME':<{width}}  {'VERSION':<12}  DESCRIPTION")
    for name, version, description in rows:
        print(f"{name:<{width}}  {version:<12}  {description}")
    return 0


def _describe_runtime(descriptor: RuntimeDescriptor) -> list[str]:
    counters = [f"    {name}: {price} GLM per unit by default" for name, price in descriptor.counters.items()]
    return [
        f"name:        {descriptor.name}",
        f"version:     {descriptor.version}",
        f"description: {descriptor.description}",
        "counters:    golem.usage.duration_sec, golem.usage.cpu_sec" + (", and its own:" if counters else ""),
        *counters,
    ]


def _runtime_info(args: argparse.Namespace) -> int:
    try:
        descriptor = _runtime_registry(args).get(args.name)
    except GolemError as exc:
        print(f"golem-api runtime info: error: {exc}", file=sys.stderr)
        return 1
    print("\n".join(_describe_runtime(descriptor)))
    return 0


def _test_runtime(args: argparse.Namespace) -> int:
    try:
        descriptor = _runtime_registry(args).get(args.name)
        offer = asyncio.run(_self_test(descriptor))
    except Exception as exc:
        print(f"golem-api runtime test: {args.name}: FAILED: {exc}", file=sys.stderr)
        return 1
    print(f"{descriptor.name} {descriptor.version}: self-test passed")
    for key, value in sorted(offer.properties.items()):
        print(f"  offer: {key} = {value!r}")
    if offer.constraints:
        print(f"  constraints: {offer.constraints}")
    return 0


async def _self_test(descriptor: RuntimeDescriptor) -> OfferTemplate:
    with tempfile.TemporaryDirectory(prefix="golem-api-runtime-test-") as scratch:
        probe = descriptor.factory(RuntimeContext(activity_id="self-test", work_dir=Path(scratch) / "self-test"))
        try:
            await probe.self_test()
            return probe.offer()
        finally:
            await bounded_stop(probe, f"the self-test of runtime {descriptor.name!r}")
