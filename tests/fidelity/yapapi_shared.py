"""What the yapapi programs of ``tests/fidelity`` share: counting instances, the service cluster's instances and
main program, and the command line (``--log-file``, ``--timeout``).

Test code run by **yapapi** with ``.venv-yapapi/bin/python`` (never imported by golem-api): the programs next to
it import it as a top-level module (their folder is first on ``sys.path``), so it imports only yapapi and the
standard library.
"""

import argparse
import asyncio
import os
import pathlib
import sys
from collections.abc import Awaitable, Callable

from yapapi import Golem
from yapapi.log import enable_default_logger
from yapapi.payload import vm
from yapapi.services import Service


class Countdown:
    """Counts instances; ``done`` is set when ``total`` have counted."""

    def __init__(self, total: int) -> None:
        self.total = total
        self.count = 0
        self.done = asyncio.Event()

    def one(self) -> None:
        self.count += 1
        if self.count == self.total:
            self.done.set()


class ClusterService(Service):
    """An instance of :func:`run_cluster`'s service: its ``name``, ``rounds`` to run, the ``output_dir`` of its
    downloads, and the countdowns it counts itself in once it ran (``ran``) and once it shut down (``stopped``)."""

    def __init__(self, index: int, rounds: int, output_dir: str, ran: Countdown, stopped: Countdown) -> None:
        super().__init__()
        self.name = f"simple-service-{index}"
        self.rounds = rounds
        self.output_dir = pathlib.Path(output_dir)
        self.ran = ran
        self.stopped = stopped


async def run_cluster(service: type[ClusterService], args: argparse.Namespace, min_storage_gib: float) -> None:
    """Run ``args.num_instances`` of ``service`` on the image ``args.image_tag``; stop the cluster once every
    instance counted itself in ``ran``, and wait until every one counted itself in ``stopped``. Each wait is bounded
    by ``args.timeout``."""
    package = await vm.repo(
        image_tag=args.image_tag,
        repository_url=os.environ["GOLEM_REGISTRY_URL"],
        min_mem_gib=0.5,
        min_storage_gib=min_storage_gib,
    )
    ran, stopped = Countdown(args.num_instances), Countdown(args.num_instances)
    params = [
        {"index": i, "rounds": args.rounds, "output_dir": args.output_dir, "ran": ran, "stopped": stopped}
        for i in range(1, args.num_instances + 1)
    ]
    async with Golem(budget=1.0, subnet_tag=os.environ.get("YAGNA_SUBNET", "public")) as golem:
        cluster = await golem.run_service(service, payload=package, instance_params=params)
        await asyncio.wait_for(ran.done.wait(), args.timeout)
        print("all instances ran; stopping the cluster", flush=True)
        cluster.stop()
        await asyncio.wait_for(stopped.done.wait(), args.timeout)
        print("all instances stopped", flush=True)
    print("done", flush=True)


def cluster_parser(description: str, rounds: int) -> argparse.ArgumentParser:
    """The command line of a program that runs :func:`run_cluster`."""
    parser = argparse.ArgumentParser(description=description)
    parser.add_argument("--image-tag", required=True)
    parser.add_argument("--num-instances", type=int, default=2)
    parser.add_argument("--rounds", type=int, default=rounds)
    parser.add_argument("--output-dir", required=True)
    return parser


def run_program(
    main: Callable[[argparse.Namespace], Awaitable[None]], parser: argparse.ArgumentParser, timeout: float
) -> None:
    """Add ``--log-file`` (yapapi's debug log) and ``--timeout`` (``timeout`` s by default) to ``parser``, parse the
    command line, run ``main`` with yapapi's default logger and exit 0 (an exception exits 1)."""
    parser.add_argument("--log-file", required=True)
    parser.add_argument("--timeout", type=float, default=timeout, help="bound of each wait, in seconds")
    arguments = parser.parse_args()
    enable_default_logger(log_file=arguments.log_file)
    asyncio.run(main(arguments))
    sys.exit(0)
