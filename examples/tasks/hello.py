#!/usr/bin/env python3
"""yapapi's hello-world task example, ported to golem-api: one task that runs ``date`` on a provider.

    python examples/tasks/hello.py [--log-file hello.log]

Without ``YAGNA_APPKEY`` it runs on the embedded local Golem network in the local runtime's default image (the
command needs nothing but ``/bin/sh``); with ``YAGNA_APPKEY`` it runs yapapi's public hello-world image on the
network of that yagna daemon. What changed from yapapi's ``hello.py``: the import lines, the payload on the
local network, and ``asyncio.run`` for the event loop (yapapi's ``get_event_loop().run_until_complete`` works
too).
"""

import argparse
import asyncio
import os
from collections.abc import AsyncIterable

from golem_api import Golem, Payload, Task, VmPayload, WorkContext, vm
from golem_api.log import enable_default_logger

HELLO_IMAGE_HASH = "d646d7b93083d817846c2ae5c62c72ca0507782385a2e29291a3d376"
"""yapapi's hello-world image (alpine) in Golem's public image registry."""


async def worker(context: WorkContext, tasks: AsyncIterable[Task]):
    async for task in tasks:
        script = context.new_script()
        future_result = script.run("/bin/sh", "-c", "date")

        yield script

        task.accept_result(result=await future_result)


async def payload() -> Payload:
    """yapapi's image on a live network; the local runtime's default image on the local network."""
    if os.environ.get("YAGNA_APPKEY"):
        return await vm.repo(image_hash=HELLO_IMAGE_HASH)
    return VmPayload()


async def main() -> None:
    package = await payload()

    tasks = [Task(data=None)]

    async with Golem(budget=1.0, subnet_tag="public") as golem:
        async for completed in golem.execute_tasks(worker, tasks, payload=package):
            print(completed.result.stdout)


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description="Run `date` on a provider, as a task")
    parser.add_argument("--log-file", default="hello.log", help="where the debug log goes (default hello.log)")
    args = parser.parse_args()
    enable_default_logger(log_file=args.log_file)
    asyncio.run(main())
