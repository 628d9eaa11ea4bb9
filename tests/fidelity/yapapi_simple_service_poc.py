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

from yapapi_shared import ClusterService, cluster_parser, run_cluster, run_program

SIMPLE_SERVICE = "/golem/run/simple_service.py"
SIMPLE_SERVICE_CTL = "/golem/run/simulate_observations_ctl.py"


class SimpleService(ClusterService):
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
        self.ran.one()
        await asyncio.Event().wait()  # like the poc's endless loop: the instance runs until the cluster stops

    async def shutdown(self):
        script = self._ctx.new_script()
        stopped = script.run(SIMPLE_SERVICE_CTL, "--stop")
        yield script
        print(f"{self.name}: simulation {(await stopped).stdout.strip()}", flush=True)
        self.stopped.one()


async def main(args: argparse.Namespace) -> None:
    await run_cluster(SimpleService, args, min_storage_gib=2.0)


if __name__ == "__main__":
    run_program(main, cluster_parser(__doc__.splitlines()[0], rounds=2), timeout=60.0)
