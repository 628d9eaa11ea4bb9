#!/usr/bin/env python3
"""The requestor side of the simple-service example: run a small statistics service on Golem providers.

    python examples/simple_service/simple_service.py [--num-instances N] [--running-time SECONDS] [--show-usage]

Each instance runs the image built from ``image/`` (its ``Dockerfile``): ``start`` deploys it and starts the
simulated source of observations, ``run`` prints the statistics of what was observed so far and downloads a
plot of their distribution every few seconds, and ``shutdown`` stops the simulation. After the running time
the instances are stopped, the providers are paid, and a summary per provider is printed.

Without ``YAGNA_APPKEY`` it runs on the embedded local Golem network, with the image built from ``image/`` at
the start of each run (``golem-api image build examples/simple_service/image --tag golem-api/simple-service:1.0``
does the same): the first build makes the Debian base of ``python:3.8-slim`` and pip-installs numpy and
matplotlib, about a minute; later builds take the unchanged steps from the build cache, a few seconds.
With ``YAGNA_APPKEY`` set it runs on the network of that yagna daemon, with the public image of the same
service (``--image-hash`` picks another one).

Ctrl-C stops the instances (their ``shutdown`` runs), pays what is owed, prints the summary and exits with
code 130 (the shell's code for "interrupted"); SIGTERM does the same with code 143.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import logging
import os
import signal
import sys
from collections.abc import Callable
from datetime import datetime, timedelta, timezone
from pathlib import Path
from typing import Any

from rich.console import Console

from golem_api import Golem, GolemError, Payload, Service, ServiceState
from golem_api.console import LiveStatus, format_amount, progress
from golem_api.events import ServiceStateChanged
from golem_api.services.service import Handler

__all__ = ["SimpleService", "main"]

HERE = Path(__file__).resolve().parent
IMAGE_DIR = HERE / "image"
IMAGE_TAG = "golem-api/simple-service:1.0"
"""The image on the local network (built from ``image/``)."""
PUBLIC_IMAGE_HASH = "8b11df59f84358d47fc6776d0bb7290b0054c15ded2d6f54cf634488"
"""The simple-service image in Golem's public image repository, used on the live network."""

STARTING_TIMEOUT = 120.0  # seconds for every instance to get a provider and start
STOPPING_TIMEOUT = 30.0  # seconds for every instance to stop once asked
INTERRUPTED = {signal.SIGINT: 130, signal.SIGTERM: 143}  # exit codes: 128 + the signal's number

_log = logging.getLogger("simple_service")


def on_live_network() -> bool:
    """True when ``Golem`` will talk to a yagna daemon (an app key is set), False for the local network."""
    return bool(os.environ.get("YAGNA_APPKEY"))


async def build_local_image(console: Console) -> str:
    """Build the image from ``image/`` into the local registry under :data:`IMAGE_TAG`; returns its hash.

    Idempotent (the same files give the same image; unchanged steps come from the build cache in a few
    seconds), so the image always matches the scripts beside this file.
    """
    from golem_local.images.builder import build_image

    def log(text: str) -> None:
        _log.debug("image build: %s", text.rstrip("\n"))

    with progress(f"Building the image {IMAGE_TAG} (the first time: about a minute)…", console):
        result = await build_image(IMAGE_DIR, tag=IMAGE_TAG, log=log)
    _log.info("built %s: %s (%d bytes) in %.1f s", IMAGE_TAG, result.hash, result.size, result.seconds)
    return result.hash


async def image_payload(image_hash: str | None = None) -> Payload:
    """The service's payload: ``image_hash`` if given, else the local image or, on the live network, the
    public one."""
    from golem_api import vm

    resources: dict[str, Any] = {"min_mem_gib": 0.5, "min_storage_gib": 2.0}
    if image_hash is not None:
        return await vm.repo(image_hash=image_hash, **resources)
    if on_live_network():
        return await vm.repo(image_hash=PUBLIC_IMAGE_HASH, **resources)
    return await vm.repo(image_tag=IMAGE_TAG, **resources)


class SimpleService(Service):
    """The simple service: a store of simulated observations that reports statistics and plots."""

    SIMPLE_SERVICE = "/golem/run/simple_service.py"
    SIMPLE_SERVICE_CTL = "/golem/run/simulate_observations_ctl.py"

    def __init__(
        self,
        *,
        instance_name: str,
        show_usage: bool = False,
        output_dir: Path = Path(),
        interval: float = 3.0,
        report: Callable[[str], None] = print,
    ) -> None:
        self.name = instance_name
        self.show_usage = show_usage
        self.output_dir = Path(output_dir)
        self.interval = interval
        self.report = report
        self.stats: list[dict[str, Any]] = []
        self.plots: list[Path] = []
        self.simulation_stopped = False

    @staticmethod
    async def get_payload() -> Payload:
        return await image_payload()

    async def start(self) -> Handler:
        """Deploy and start the image, then start the simulated observations in the background."""
        async for script in super().start():
            yield script
        script = self._ctx.new_script(timeout=60)
        script.run(self.SIMPLE_SERVICE_CTL, "--start")
        yield script

    async def run(self) -> Handler:
        """Every ``interval`` seconds: print the statistics, draw the distribution and download the plot."""
        while True:
            await asyncio.sleep(self.interval)  # the service's own pace, not a wait for something to happen
            script = self._ctx.new_script(timeout=60)
            stats_run = script.run(self.SIMPLE_SERVICE, "--stats")
            plot_run = script.run(self.SIMPLE_SERVICE, "--plot", "dist")
            yield script
            stats = json.loads((await stats_run).stdout or "null")
            self.stats.append(stats)
            self.report(f"{self.name}: {json.dumps(stats)}")
            plot_path = json.loads((await plot_run).stdout or "null")
            target = self.output_dir / f"{self.name}-{len(self.stats):03d}.png"
            script = self._ctx.new_script(timeout=60)
            script.download_file(plot_path, target)
            yield script
            self.plots.append(target)
            self.report(f"{self.name}: downloaded {plot_path} to {target}")
            if self.show_usage:
                await self._report_usage()

    async def shutdown(self) -> Handler:
        """Stop the simulated observations (the activity ends after this)."""
        script = self._ctx.new_script(timeout=20)
        stop_run = script.run(self.SIMPLE_SERVICE_CTL, "--stop")
        yield script
        self.simulation_stopped = True
        self.report(f"{self.name}: simulation stopped {((await stop_run).stdout or '').strip()}")

    async def _report_usage(self) -> None:
        ctx = self._ctx
        usage = await ctx.get_usage()  # counters by name, as yapapi's get_usage gives them
        shown = ", ".join(f"{name.rsplit('.', 1)[-1]}={value:.1f}" for name, value in usage.current_usage.items())
        cost = await ctx.get_cost()
        if cost is None:
            cost = ctx.agreement.pricing.start_price
        self.report(f"{self.name}: usage {shown or 'none yet'}, cost {format_amount(cost)} at the agreed prices")


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0] if __doc__ else None)
    parser.add_argument("--num-instances", type=int, default=1, help="service instances to run (default 1)")
    parser.add_argument("--running-time", type=float, default=60.0, help="seconds to run once started (default 60)")
    parser.add_argument("--show-usage", action="store_true", help="print each instance's usage and cost as it runs")
    parser.add_argument("--subnet-tag", default="public", help="the market's subnet (default public)")
    parser.add_argument("--payment-driver", default="erc20", help="payment driver (default erc20)")
    parser.add_argument("--payment-network", default="holesky", help="payment network (default holesky)")
    parser.add_argument("--budget", default="1.0", help="most to spend, in tokens (default 1.0)")
    parser.add_argument("--image-hash", help="run this image of Golem's image repository instead")
    parser.add_argument("--output-dir", type=Path, default=Path("simple-service-plots"), help="where plots are saved")
    parser.add_argument("--interval", type=float, default=3.0, help="seconds between two reports (default 3)")
    parser.add_argument("--log-file", type=Path, help="write the full debug log to this file")
    return parser


def configure_logging(log_file: Path | None) -> None:
    """Warnings and errors on the console; everything in ``log_file`` when one is given."""
    root = logging.getLogger()
    root.setLevel(logging.DEBUG if log_file else logging.WARNING)
    console_handler = logging.StreamHandler(sys.stderr)
    console_handler.setLevel(logging.WARNING)
    console_handler.setFormatter(logging.Formatter("%(levelname)s %(name)s: %(message)s"))
    root.addHandler(console_handler)
    if log_file is not None:
        file_handler = logging.FileHandler(log_file, encoding="utf-8")
        file_handler.setLevel(logging.DEBUG)
        file_handler.setFormatter(logging.Formatter("%(asctime)s %(levelname)s %(name)s: %(message)s"))
        root.addHandler(file_handler)


async def run_example(args: argparse.Namespace, console: Console) -> None:
    """Run the service for ``args.running_time`` seconds, then stop it; print the summary in any case."""
    args.output_dir.mkdir(parents=True, exist_ok=True)
    golem = Golem(
        budget=args.budget,
        subnet_tag=args.subnet_tag,
        payment_driver=args.payment_driver,
        payment_network=args.payment_network,
    )
    try:
        with contextlib.ExitStack() as paying:  # its progress line shows while `async with golem` ends
            async with golem:
                where = "the local Golem network" if golem.local_node else "the Golem network of your yagna daemon"
                console.print(f"Running {args.num_instances} instance(s) of the simple service on {where}.")
                if golem.local_node is not None and args.image_hash is None:
                    await build_local_image(console)
                payload = await image_payload(args.image_hash) if args.image_hash else None
                cluster = await golem.run_service(
                    SimpleService,
                    instance_params=[
                        {
                            "instance_name": f"simple-service-{i + 1}",
                            "show_usage": args.show_usage,
                            "output_dir": args.output_dir,
                            "interval": args.interval,
                        }
                        for i in range(args.num_instances)
                    ],
                    payload=payload,
                    expiration=datetime.now(timezone.utc) + timedelta(minutes=120),
                )
                async with LiveStatus(golem, cluster, console=console):
                    await cluster.wait_running(timeout=STARTING_TIMEOUT)
                    console.print(f"All instances are running; they run for {args.running_time:g} s.")
                    await _until_ended(golem, cluster.instances, args.running_time)
                    console.print("Stopping the instances…")  # the live table shows their progress
                    await asyncio.wait_for(cluster.stop(), STOPPING_TIMEOUT)
                paying.enter_context(progress("Ending the agreements and paying the providers…", console))
    except asyncio.CancelledError:
        records = golem.summary.agreements.values() if golem.summary is not None else ()
        unpaid = sum(1 for record in records if record.paid is None)
        paid = "what was owed is paid" if not unpaid else f"{unpaid} agreement(s) are not paid yet (see the warnings)"
        console.print(f"Interrupted: the instances were stopped and {paid}.")
        raise
    finally:
        console.print(golem.summary if golem.summary is not None else f"Paid {golem.spent}")
        saved = sorted(args.output_dir.glob("simple-service-*.png"))
        console.print(f"{len(saved)} plot(s) in {args.output_dir}/", soft_wrap=True)


async def _until_ended(golem: Golem, instances: list[SimpleService], seconds: float) -> None:
    """Return after ``seconds``, or earlier once no instance is left running (say, all failed)."""
    all_ended = asyncio.Event()

    def check(_event: Any) -> None:
        if all(i.state in (ServiceState.terminated, ServiceState.unresponsive) for i in instances):
            all_ended.set()

    subscription = golem.bus.subscribe(check, ServiceStateChanged)
    try:
        with contextlib.suppress(asyncio.TimeoutError):
            await asyncio.wait_for(all_ended.wait(), seconds)
    finally:
        golem.bus.unsubscribe(subscription)


async def _main(args: argparse.Namespace, console: Console) -> None:
    task = asyncio.current_task()
    assert task is not None
    loop = asyncio.get_running_loop()
    loop.add_signal_handler(signal.SIGTERM, task.cancel)  # SIGTERM stops the run like Ctrl-C does
    try:
        await run_example(args, console)
    finally:
        loop.remove_signal_handler(signal.SIGTERM)


def main(argv: list[str] | None = None) -> int:
    """Run the example; returns the exit code (0, 1 on a Golem error, 130 on Ctrl-C, 143 on SIGTERM)."""
    args = build_parser().parse_args(argv)
    if args.num_instances < 1 or args.running_time <= 0 or args.interval <= 0:
        print("error: --num-instances, --running-time and --interval must be positive", file=sys.stderr)
        return 2
    configure_logging(args.log_file)
    console = Console()
    try:
        asyncio.run(_main(args, console))
    except KeyboardInterrupt:
        return INTERRUPTED[signal.SIGINT]
    except asyncio.CancelledError:
        return INTERRUPTED[signal.SIGTERM]
    except (GolemError, TimeoutError) as exc:
        console.print(f"[bold red]error:[/] {exc}", soft_wrap=True)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
