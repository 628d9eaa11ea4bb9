"""A yapapi 0.13.1 requestor shaped like yapapi's own simple-service-poc, run by ``tests/fidelity/test_yapapi.py``.

This is test code run by **yapapi** with ``.venv-yapapi/bin/python`` (never imported by golem-api). Its provider
side is the image built from ``examples/simple_service/image``, the documented Dockerfile of that example
(``FROM python:3.8-slim``, numpy and matplotlib from pip, the control script keeping its pid file in
``/var/run``). Each instance, as in the poc: ``start`` deploys and starts the image, then starts the simulated
observations (``simulate_observations_ctl.py --start``); ``run`` asks for the statistics and a plot of their
distribution (``simple_service.py --stats``, ``--plot dist``) and downloads the plot, ``--rounds`` times;
``shutdown`` stops the simulation (``--stop``). The main program stops the cluster once every instance ran its
rounds and waits until every instance shut down. Every wait is bounded by ``--timeout``; nothing sleeps.
"""

import argparse
import asyncio
import json
import os
import pathlib
import sys

from yapapi import Golem
from yapapi.log import enable_default_logger
from yapapi.payload import vm
from yapapi.services import Service

SIMPLE_SERVICE = "/golem/run/simple_service.py"
SIMPLE_SERVICE_CTL = "/golem/run/simulate_observations_ctl.py"


class Progress:
    """Counts instances that ran their rounds and instances that shut down; an event fires for each total."""

    def __init__(self, instances: int) -> None:
        self.instances = instances
        self.ran = 0
        self.stopped = 0
        self.all_ran = asyncio.Event()
        self.all_stopped = asyncio.Event()

    def instance_ran(self) -> None:
        self.ran += 1
        if self.ran == self.instances:
            self.all_ran.set()

    def instance_stopped(self) -> None:
        self.stopped += 1
        if self.stopped == self.instances:
            self.all_stopped.set()


class SimpleService(Service):
    def __init__(self, index: int, rounds: int, output_dir: str, progress: Progress) -> None:
        super().__init__()
        self.name = f"simple-service-{index}"
        self.rounds = rounds
        self.output_dir = pathlib.Path(output_dir)
        self.progress = progress

    async def start(self):
        async for script in super().start():  # deploy, start
            yield script
        script = self._ctx.new_script()
        started = script.run(SIMPLE_SERVICE_CTL, "--start")
        yield script
        print(f"{self.name}: simulation {(await started).stdout.strip()}", flush=True)

    async def run(self):
        for number in range(1, self.rounds + 1):
            script = self._ctx.new_script()
            stats = script.run(SIMPLE_SERVICE, "--stats")
            plot = script.run(SIMPLE_SERVICE, "--plot", "dist")
            yield script
            print(f"{self.name} stats: {(await stats).stdout.strip()}", flush=True)
            plot_path = json.loads((await plot).stdout.strip())
            script = self._ctx.new_script()
            script.download_file(plot_path, str(self.output_dir / f"{self.name}-{number}.png"))
            yield script
        self.progress.instance_ran()
        await asyncio.Event().wait()  # like the poc's endless loop: the instance runs until the cluster stops

    async def shutdown(self):
        script = self._ctx.new_script()
        stopped = script.run(SIMPLE_SERVICE_CTL, "--stop")
        yield script
        print(f"{self.name}: simulation {(await stopped).stdout.strip()}", flush=True)
        self.progress.instance_stopped()


async def main(args: argparse.Namespace) -> None:
    package = await vm.repo(
        image_tag=args.image_tag,
        repository_url=os.environ["GOLEM_REGISTRY_URL"],
        min_mem_gib=0.5,
        min_storage_gib=2.0,
    )
    progress = Progress(args.num_instances)
    params = [
        {"index": i, "rounds": args.rounds, "output_dir": args.output_dir, "progress": progress}
        for i in range(1, args.num_instances + 1)
    ]
    async with Golem(budget=1.0, subnet_tag=os.environ.get("YAGNA_SUBNET", "public")) as golem:
        cluster = await golem.run_service(SimpleService, payload=package, instance_params=params)
        await asyncio.wait_for(progress.all_ran.wait(), args.timeout)
        print("all instances ran; stopping the cluster", flush=True)
        cluster.stop()
        await asyncio.wait_for(progress.all_stopped.wait(), args.timeout)
        print("all instances stopped", flush=True)
    print("done", flush=True)


def parse_args() -> argparse.Namespace:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image-tag", required=True)
    parser.add_argument("--num-instances", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--log-file", required=True)
    parser.add_argument("--timeout", type=float, default=60.0, help="bound of each wait, in seconds")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    enable_default_logger(log_file=arguments.log_file)
    asyncio.run(main(arguments))
    sys.exit(0)
