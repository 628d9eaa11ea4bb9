"""The embedded local Golem network: a yagna-compatible node on loopback with local providers.

::

    async with LocalNode() as node:          # 3 providers, a funded requestor, any free port
        print(node.url, node.app_key)        # what YAGNA_API_URL and YAGNA_APPKEY would be

The node serves ``GET /me``, ``/market-api/v1``, ``/payment-api/v1``, ``/activity-api/v1`` and
``/gsb-api/v1`` behind the app-key check, as the requestor identity ``requestor_id``. Its providers run
in-process on the same :class:`~golem_local.market.LocalMarket`; the
:class:`~golem_local.activity.ActivityHub` runs their activities' ExeScript, meters them and is their
``Billing``; the :class:`~golem_local.ledger.Ledger` holds the money; the
:class:`~golem_local.gsb.GsbRouter` carries file transfers to and from the requestor.

Every activity runs in a :class:`~golem_local.runtime.vm.VmRuntime` (a bubblewrap sandbox) with its own
directory ``<work_dir>/<activity id>``, running the image its demand names in ``golem.srv.comp.task_package``
(``hash:sha3:<hash>:<url>``: ``LocalNetworkConfig.images[hash]`` when given there, else downloaded from
``<url>`` at ``deploy``, verified and cached in ``<work_dir>/images`` by the node's
:class:`~golem_local.images.cache.ImageCache`), or the default image without one.

The node also plays the public Golem registry for the images of its
:class:`~golem_local.images.registry.ImageRegistry` (``LocalNetworkConfig.image_registry``): ``/v1/image/info``
and the downloads (:mod:`golem_local.images.serve`), without the app key, as the public registry needs none.

Nothing is bound to an event loop before :meth:`LocalNode.start`, which runs in the caller's loop (a
notebook's included): it checks once that the sandbox works here (``SandboxUnavailableError`` saying what
to install when not), creates the temporary ``work_dir``, serves, and starts the providers.
:meth:`LocalNode.stop` stops the providers and the activities, closes the server and removes ``work_dir``.
A node runs once: build a new one to start again.

A node that is killed (SIGKILL, a crash) cannot remove its ``work_dir``. So each node holds an exclusive lock
(``flock``) on ``<work_dir>/node.lock``, which also names its pid, for as long as it runs; the kernel releases
it when the process dies, however it dies. At start a node removes every ``golem-local-node-*`` directory of
the temporary directory whose lock it can take: their nodes are dead. Directories without a lock file are left
alone.
"""

from __future__ import annotations

import asyncio
import contextlib
import fcntl
import functools
import logging
import os
import shutil
import tempfile
from collections.abc import Callable
from pathlib import Path
from types import TracebackType

import attrs
from aiohttp import web

from golem_local.activity import ActivityHub, Runtime
from golem_local.activity_api import add_activity_routes
from golem_local.config import LocalNetworkConfig
from golem_local.eventlog import StrictClock
from golem_local.gsb import GsbRouter, add_gsb_routes
from golem_local.http import APP_KEY, Handler, error_middleware, json_response, unauthorized
from golem_local.identity import NodeIdentities, new_app_key
from golem_local.images.cache import ImageCache, parse_task_package
from golem_local.images.errors import ImageError
from golem_local.images.registry import ImageRegistry
from golem_local.images.serve import add_registry_routes, is_public_path
from golem_local.ledger import Ledger
from golem_local.market import LocalMarket
from golem_local.market_api import add_market_routes
from golem_local.market_model import AgreementRecord, LocalMarketError
from golem_local.net.api import add_net_routes
from golem_local.net.vpn import LocalVpn
from golem_local.payment_api import add_payment_routes
from golem_local.provider import LocalProvider
from golem_local.provider_port import InProcessMarket
from golem_local.runtime.base import DEFAULT_STOP_GRACE, OfferTemplate, RuntimeFailure, bounded_stop
from golem_local.runtime.builtin import BUILTIN_RUNTIMES, CONTAINER, VM
from golem_local.runtime.container import ContainerRuntime
from golem_local.runtime.engine_image import EngineImages
from golem_local.runtime.idle import IdleRuntime, UnavailableRuntime
from golem_local.runtime.image import DEFAULT_IMAGE, Image
from golem_local.runtime.launch import SandboxHost, SandboxLimits
from golem_local.runtime.program import program_runtimes, runtime_dirs_from_env
from golem_local.runtime.registry import RuntimeContext, RuntimeDescriptor, RuntimeRegistry
from golem_local.runtime.storage import NODE_DIR_PREFIX, sweep_stale
from golem_local.runtime.vm import VmRuntime
from golem_local.transfer import FileTransfer
from golem_local.version_api import VERSION_PATH, add_version_routes
from golem_shared.allocator import keep_freed_memory
from golem_shared.errors import LocalNodeError

__all__ = [
    "LOCK_FILE",
    "TASK_PACKAGE",
    "WORK_DIR_PREFIX",
    "LocalNode",
    "remove_stale_work_dirs",
]

_log = logging.getLogger(__name__)

_said: set[str] = set()  # what the nodes of this process have said about their sandboxes: each thing once

_SHUTDOWN_TIMEOUT = 0.5  # seconds open requests (long-polls) get to finish when the node stops
TASK_PACKAGE = "golem.srv.comp.task_package"
WORK_DIR_PREFIX = NODE_DIR_PREFIX  # <tmp>/golem-local-node-<pid>-<random>: the pid for sweep_stale, the lock for us
LOCK_FILE = "node.lock"


def _lock_work_dir(work_dir: Path) -> int:
    """Take the lock of a node's ``work_dir`` for this process (see the module docstring); the open descriptor."""
    fd = os.open(work_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o600)
    fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    os.write(fd, f"{os.getpid()}\n".encode())
    return fd


def remove_stale_work_dirs(parent: Path | None = None) -> list[Path]:
    """Remove the ``work_dir`` of every dead node under ``parent`` (the temporary directory); returns them."""
    removed = []
    for candidate in Path(parent or tempfile.gettempdir()).glob(f"{WORK_DIR_PREFIX}*"):
        try:
            fd = os.open(candidate / LOCK_FILE, os.O_RDWR | os.O_CLOEXEC)
        except OSError:
            continue  # no lock file: not ours to judge (a node starting, or of an older version)
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            os.close(fd)
            continue  # a live node holds it
        try:
            shutil.rmtree(candidate, ignore_errors=True)
            removed.append(candidate)
        finally:
            os.close(fd)
    if removed:
        _log.info("removed the work directories of %d dead local node(s): %s", len(removed), removed)
    return removed


@web.middleware
async def _auth_unless_registry(request: web.Request, handler: Handler) -> web.StreamResponse:
    """The app-key check, except for the registry routes, which are public (as the Golem registry is), and the
    version route (public on yagna too)."""
    path = request.path
    if not (is_public_path(path) or path == VERSION_PATH):
        refusal = unauthorized(request)
        if refusal is not None:
            return refusal
    return await handler(request)


class LocalNode:
    """A local Golem network reachable over HTTP at :attr:`url` with :attr:`app_key` (an async context manager).

    ``port=0`` takes any free port. The ids are fresh for every node: ``requestor_id`` and each provider's
    ``node_id`` (which is also its payment address).
    """

    def __init__(
        self,
        config: LocalNetworkConfig | None = None,
        *,
        host: str = "127.0.0.1",
        port: int = 0,
        app_key: str | None = None,
    ) -> None:
        if not isinstance(port, int) or isinstance(port, bool) or not 0 <= port <= 65535:
            raise LocalNodeError(f"port must be 0 (any free port) or 1-65535, not {port!r}")
        if app_key is not None and not app_key.strip():
            raise LocalNodeError("app_key must not be empty: leave it out to have one generated")
        self.config = config if config is not None else LocalNetworkConfig()
        self.host = host
        self.port = port
        self.app_key = app_key if app_key is not None else new_app_key()
        ids = NodeIdentities()
        self.requestor_id = ids.node_id("requestor")
        clock = StrictClock()
        self.market = LocalMarket(clock)
        self.ledger: Ledger = Ledger(
            clock, self.requestor_id, self.config.requestor_balance, self.config.payment_platform
        )
        provider_ids = {spec.name: ids.node_id(f"provider/{spec.name}") for spec in self.config.providers}
        self._specs = {provider_ids[spec.name]: spec for spec in self.config.providers}
        self._limits = {
            node_id: SandboxLimits.from_offer(
                mem_gib=spec.mem_gib,
                cpu_threads=spec.cpu_threads,
                storage_gib=spec.storage_gib,
                processes=spec.max_processes,
            )
            for node_id, spec in self._specs.items()
        }
        self.runtimes = RuntimeRegistry(self.config.runtimes, builtin=BUILTIN_RUNTIMES)
        self._descriptors: dict[str, RuntimeDescriptor] = {}  # the providers' runtimes by name, found at start
        self.sandbox_host: SandboxHost | None = None
        self.work_dir: Path | None = None
        self.registry = ImageRegistry(self.config.image_registry)
        self.image_cache: ImageCache | None = None
        self.engine_images = EngineImages()
        """The images the ``container`` runtime imported into an engine for this node, removed when it stops."""
        self.gsb = GsbRouter()
        self.vpn = LocalVpn(enabled=self.config.activity_runtime == "vm" and self.config.vpn)
        self.transfers = FileTransfer(self.gsb, self.requestor_id)
        self.activities = ActivityHub(
            self.market,
            self.ledger,
            providers=self._specs,
            runtime_factory=self._runtime,
            transfers=self.transfers,
            output_limit=self.config.output_limit,
        )
        self.providers: tuple[LocalProvider, ...] = tuple(
            LocalProvider(
                spec,
                InProcessMarket(self.market, provider_ids[spec.name]),
                payment_platform=self.config.payment_platform,
                billing=self.activities,
                ledger=self.ledger,
            )
            for spec in self.config.providers
        )
        self._runner: web.AppRunner | None = None
        self._started = False
        self._lock_fd: int | None = None

    def __repr__(self) -> str:
        where = self.url if self._runner is not None else "not running"
        return f"<LocalNode {where} requestor={self.requestor_id} providers={len(self.providers)}>"

    @property
    def url(self) -> str:
        """``http://127.0.0.1:PORT``: the root URL to use as ``YAGNA_API_URL`` (the bound port once started)."""
        host = f"[{self.host}]" if ":" in self.host else self.host
        return f"http://{host}:{self.port}"

    @property
    def running(self) -> bool:
        """Whether the server is up."""
        return self._runner is not None

    def build_app(self) -> web.Application:
        """The aiohttp application of the node: errors first, then the app-key check, then every API."""
        app = web.Application(middlewares=[error_middleware, _auth_unless_registry])
        app[APP_KEY] = self.app_key
        app.router.add_get("/me", self._me)
        add_version_routes(app)
        add_registry_routes(app, self.registry)
        add_market_routes(app, self.market, node_id=self.requestor_id)
        add_payment_routes(app, self.ledger, session_of=self._app_session_of)
        add_activity_routes(app, self.activities, ping_interval=self.config.sse_ping_interval)
        add_gsb_routes(app, self.gsb)
        add_net_routes(app, self.vpn, owner=self.requestor_id, node_id=self.requestor_id)
        return app

    def _runtime(self, agreement: AgreementRecord, activity_id: str) -> Runtime:
        """A sandbox for a new activity: the image its demand names, its provider's environment."""
        if self.work_dir is None:
            raise LocalNodeError("the local node is not running: start it before creating activities")
        if self.config.activity_runtime == "idle":
            return IdleRuntime()
        spec = self._specs.get(agreement.provider_id)
        env = spec.env if spec is not None else {}
        work_dir = self.work_dir / activity_id
        descriptor = self._descriptors.get(spec.runtime) if spec is not None else None
        if descriptor is not None and descriptor not in (VM, CONTAINER):
            context = RuntimeContext(
                activity_id=activity_id,
                work_dir=work_dir,
                provider=spec.name if spec is not None else "",
                env=env,
                demand=dict(agreement.demand.properties),
                stop_grace=spec.stop_grace if spec is not None else DEFAULT_STOP_GRACE,
            )
            try:
                return descriptor.factory(context)
            except Exception as exc:
                _log.warning(
                    "runtime %s could not be made for activity %s", descriptor.name, activity_id, exc_info=True
                )
                return UnavailableRuntime(f"the provider's runtime {descriptor.name!r} could not be made: {exc!r}")
        sandbox: Callable[..., Runtime]
        grace = spec.stop_grace if spec is not None else DEFAULT_STOP_GRACE
        if descriptor is CONTAINER:
            sandbox = functools.partial(
                ContainerRuntime,
                work_dir=work_dir,
                env=env,
                limits=self._limits.get(agreement.provider_id),
                stop_grace=grace,
                images=self.engine_images,
                join_network=self.vpn.joiner(),
                host=self.sandbox_host,
            )
        else:
            sandbox = functools.partial(
                VmRuntime,
                work_dir=work_dir,
                bwrap=self.config.bwrap,
                env=env,
                host=self.sandbox_host,
                limits=self._limits.get(agreement.provider_id),
                join_network=self.vpn.joiner(),
                stop_grace=grace,
            )
        package = agreement.demand.properties.get(TASK_PACKAGE)
        if package is None:
            return sandbox(DEFAULT_IMAGE)
        try:
            digest, url = parse_task_package(package)
        except ValueError as exc:
            return UnavailableRuntime(f"{TASK_PACKAGE}: {exc}")
        given = self.config.images.get(digest)
        if given is not None:
            return sandbox(given)
        return sandbox(DEFAULT_IMAGE, load_image=functools.partial(self._load_image, digest, url))

    async def _load_image(self, digest: str, url: str) -> Image:
        """The image of a task package, from the node's cache (downloaded there once); for ``VmRuntime.deploy``."""
        if self.image_cache is None:
            raise RuntimeFailure("the local node is stopping: no image can be fetched now")
        try:
            return await self.image_cache.image(digest, url)
        except ImageError as exc:
            raise RuntimeFailure(str(exc)) from exc

    def _app_session_of(self, agreement_id: str) -> str | None:
        """The ``appSessionId`` the agreement was confirmed with (payment events are filtered by it)."""
        try:
            return self.market.get_agreement(agreement_id).app_session_id
        except LocalMarketError:  # not an agreement of this market: no session
            return None

    async def _me(self, request: web.Request) -> web.StreamResponse:
        return json_response({"identity": self.requestor_id, "name": "requestor", "role": "manager"})

    async def start(self) -> None:
        """Serve the node on ``host:port`` and start the providers; ``LocalNodeError`` if the port is taken."""
        if self._started:
            raise LocalNodeError("this LocalNode was already started: create a new LocalNode to start again")
        self._started = True
        keep_freed_memory()  # transfers and output pass through buffers of a mebibyte: no page faults for each
        directories = (*self.config.runtime_dirs, *runtime_dirs_from_env())
        self.runtimes = RuntimeRegistry(
            self.config.runtimes, builtin=BUILTIN_RUNTIMES, programs=program_runtimes(directories)
        )
        self._descriptors = self._find_runtimes()
        self.work_dir = Path(tempfile.mkdtemp(prefix=f"{NODE_DIR_PREFIX}{os.getpid()}-"))
        self._lock_fd = _lock_work_dir(self.work_dir)
        self.image_cache = ImageCache(self.work_dir / "images", gftp_download=self.transfers.download)
        try:
            # One check of the sandbox, so that a missing bubblewrap is reported now, with what to install.
            host = self.sandbox_host = SandboxHost.detect()
            if host.storage_quota:
                await asyncio.to_thread(sweep_stale)  # unmount first what dead nodes left mounted in their directories
            await asyncio.to_thread(remove_stale_work_dirs)
            if host.root:
                self.work_dir.chmod(0o711)  # each sandbox's uid may pass to its own activity's directory
            probe = VmRuntime(
                DEFAULT_IMAGE,
                self.work_dir / "self-test",
                bwrap=self.config.bwrap,
                host=host,
                join_network=self.vpn.joiner(),
            )
            own_offers: dict[str, OfferTemplate] = {}
            if self.config.activity_runtime == "vm":
                if VM in self._descriptors.values():
                    await probe.self_test()
                    self._say(host)
                own_offers = await self._self_test_runtimes(self.work_dir)
            await self.vpn.start()
        except BaseException:
            await self._remove_work_dir()
            raise
        for provider in self.providers:
            descriptor = self._descriptors[provider.spec.runtime]
            provider.runtime_counters = dict(descriptor.counters)
            own = own_offers.get(descriptor.name)
            if own is not None and descriptor is CONTAINER and self.vpn.available:
                own = attrs.evolve(own, properties={**own.properties, "golem.runtime.capabilities": ["vpn"]})
            if own is not None:
                provider.runtime_offer = own
                continue
            properties = dict(probe.offer().properties)
            if self.config.activity_runtime == "vm":
                properties.update(host.offer_properties(self._limits[provider.node_id]))
            provider.runtime_offer = OfferTemplate(properties=properties, constraints=probe.offer().constraints)
        # handler_cancellation: a request whose client went away is cancelled, as the daemon drops it, so that
        # abandoned long-polls do not hold the node open when it stops.
        runner = web.AppRunner(
            self.build_app(), access_log=None, shutdown_timeout=_SHUTDOWN_TIMEOUT, handler_cancellation=True
        )
        await runner.setup()
        site = web.TCPSite(runner, self.host, self.port)
        try:
            await site.start()
        except OSError as exc:
            await runner.cleanup()
            await self._remove_work_dir()
            raise LocalNodeError(
                f"the local node cannot listen on {self.host}:{self.port}: {exc.strerror or exc}; "
                "is another node running there? Choose another port, or port=0 for any free one"
            ) from exc
        self._runner = runner
        self.port = runner.addresses[0][1]
        try:
            for provider in self.providers:
                await provider.start()
        except BaseException:
            await self.aclose()
            raise
        _log.debug("local Golem node at %s with %d providers", self.url, len(self.providers))

    def _find_runtimes(self) -> dict[str, RuntimeDescriptor]:
        """The providers' runtimes by name; ``LocalNodeError`` for an unknown name or a price of a counter the
        runtime does not report."""
        found: dict[str, RuntimeDescriptor] = {}
        for spec in self.config.providers:
            if spec.runtime not in found:
                try:
                    found[spec.runtime] = self.runtimes.get(spec.runtime)
                except LocalNodeError as exc:
                    raise LocalNodeError(f"provider {spec.name}: {exc}") from exc
            descriptor = found[spec.runtime]
            extra = sorted(set(spec.counter_prices) - set(descriptor.counters))
            if extra:
                raise LocalNodeError(
                    f"provider {spec.name} prices {', '.join(extra)}, which its runtime {descriptor.name!r} does not "
                    f"report (it reports: {', '.join(descriptor.counters) or 'no counters of its own'}); "
                    "leave them out of counter_prices"
                )
        return found

    async def _self_test_runtimes(self, work_dir: Path) -> dict[str, OfferTemplate]:
        """Self-test each runtime of the providers but ``vm`` (tested above) once; their offers by name.

        A runtime that fails its self-test (or cannot be made for it) stops the node with ``LocalNodeError``
        naming the runtime and why."""
        offers: dict[str, OfferTemplate] = {}
        for name, descriptor in self._descriptors.items():
            if descriptor is VM:
                continue
            context = RuntimeContext(activity_id="self-test", work_dir=work_dir / f"self-test-{name}", stop_grace=0.0)
            try:
                probe = descriptor.factory(context)
                try:
                    await probe.self_test()
                    offers[name] = probe.offer()
                finally:
                    await bounded_stop(probe, f"the self-test of runtime {descriptor.name!r}")
            except Exception as exc:
                raise LocalNodeError(f"runtime {name!r} failed its self-test, so the node cannot start: {exc}") from exc
        return offers

    def _say(self, host: SandboxHost) -> None:
        """Say once per process who the sandboxes run as and what the machine cannot enforce."""
        for line in host.report(list(self._limits.values())):
            if line not in _said:
                _said.add(line)
                warn = line.startswith("the local node runs as root") or "not enforced" in line
                level = logging.WARNING if warn else logging.INFO
                _log.log(level, "%s", line[0].upper() + line[1:])

    async def aclose(self) -> None:
        """Stop the providers and the activities, then close the server. Calling it twice is harmless."""
        self._started = True  # a stopped node never starts (again)
        for provider in self.providers:
            await provider.aclose()
        await self.activities.aclose()
        await self.vpn.aclose()  # after the activities: their sandboxes no longer hold the namespaces
        await self.engine_images.aclose()  # after the activities: no container of this node uses them
        host, self.sandbox_host = self.sandbox_host, None
        if host is not None:
            host.close()
        cache, self.image_cache = self.image_cache, None
        if cache is not None:
            await cache.aclose()
        await self.gsb.aclose()
        runner, self._runner = self._runner, None
        if runner is not None:
            await runner.cleanup()
        await self._remove_work_dir()

    async def _remove_work_dir(self) -> None:
        work_dir, self.work_dir = self.work_dir, None
        if work_dir is not None:
            await asyncio.to_thread(shutil.rmtree, work_dir, ignore_errors=True)
        fd, self._lock_fd = self._lock_fd, None
        if fd is not None:
            with contextlib.suppress(OSError):
                os.close(fd)

    async def __aenter__(self) -> LocalNode:
        await self.start()
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        traceback: TracebackType | None,
    ) -> None:
        await self.aclose()
