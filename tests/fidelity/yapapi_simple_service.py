"""A yapapi 0.13.1 service in the style of yapapi's simple-service example, run by ``tests/fidelity/test_yapapi.py``.

This is test code run by **yapapi** with ``.venv-yapapi/bin/python`` (never imported by golem-api): it must work
unmodified on a real yagna daemon and on ``golem-api node``. Each instance deploys the image, starts, receives a
greeting with ``upload_bytes`` (gftp ``publish``), runs the service's control script in a loop of ``run``
commands, downloads the service's log with ``download_file`` (gftp ``receive``) after each round, and appends a
last line in ``shutdown``. The main program waits until every instance finished its rounds, calls
``cluster.stop()``, waits until every instance shut down, and leaves ``Golem`` (which pays the invoices).

Everything comes from the environment as yapapi reads it (``YAGNA_APPKEY``, ``YAGNA_API_URL``, ``YAGNA_SUBNET``,
``YAGNA_PAYMENT_NETWORK``) plus ``GOLEM_REGISTRY_URL`` for ``vm.repo``'s ``repository_url``; ``gftp`` must be on
``PATH``. Each wait is bounded by ``--timeout``; the exit code is 0 only if everything finished.
"""

import argparse
import asyncio
import os
import pathlib
import sys

from yapapi import Golem
from yapapi.log import enable_default_logger
from yapapi.payload import vm
from yapapi.services import Service

SERVICE = "/golem/run/service.sh"
LOG = "/golem/out/service.log"


class Progress:
    """Counts instances that finished their rounds and instances that shut down; an event fires for each."""

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
    """One instance: a log on the provider that grows by a line per observation."""

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
        script.upload_bytes(f"hello {self.name}\n".encode(), "/golem/in/greeting.txt")
        script.run(SERVICE, "--start")
        yield script

    async def run(self):
        for observation in range(1, self.rounds + 1):
            script = self._ctx.new_script()
            script.run(SERVICE, "--observe", str(observation))
            stats = script.run(SERVICE, "--stats")
            yield script
            print(f"{self.name} on {self.provider_name}: {(await stats).stdout.strip()}", flush=True)

            script = self._ctx.new_script()
            script.download_file(LOG, str(self.output_dir / f"{self.name}.log"))
            yield script
        self.progress.instance_ran()
        # Like the example's endless loop: the instance runs until the cluster stops it.
        await asyncio.Event().wait()

    async def shutdown(self):
        script = self._ctx.new_script()
        script.run(SERVICE, "--stop")
        script.download_file(LOG, str(self.output_dir / f"{self.name}.final.log"))
        script.terminate()
        yield script
        self.progress.instance_stopped()


async def main(args: argparse.Namespace) -> None:
    package = await vm.repo(
        image_tag=args.image_tag,
        repository_url=os.environ["GOLEM_REGISTRY_URL"],
        min_mem_gib=0.5,
        min_storage_gib=1.0,
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
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--output-dir", required=True)
    parser.add_argument("--log-file", required=True)
    parser.add_argument("--timeout", type=float, default=40.0, help="bound of each wait, in seconds")
    return parser.parse_args()


if __name__ == "__main__":
    arguments = parse_args()
    enable_default_logger(log_file=arguments.log_file)
    asyncio.run(main(arguments))
    sys.exit(0)
