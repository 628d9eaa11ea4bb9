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

from yapapi_shared import ClusterService, cluster_parser, run_cluster, run_program

SERVICE = "/golem/run/service.sh"
LOG = "/golem/out/service.log"


class SimpleService(ClusterService):
    """One instance: a log on the provider that grows by a line per observation."""

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
        self.ran.one()
        # Like the example's endless loop: the instance runs until the cluster stops it.
        await asyncio.Event().wait()

    async def shutdown(self):
        script = self._ctx.new_script()
        script.run(SERVICE, "--stop")
        script.download_file(LOG, str(self.output_dir / f"{self.name}.final.log"))
        script.terminate()
        yield script
        self.stopped.one()


async def main(args: argparse.Namespace) -> None:
    await run_cluster(SimpleService, args, min_storage_gib=1.0)


if __name__ == "__main__":
    run_program(main, cluster_parser(__doc__.splitlines()[0], rounds=3), timeout=40.0)
