"""What a command's large output costs the requestor and the node (in one process): memory and loop stalls.

Runs ``head -c N /dev/zero | tr '\\0' x`` (``N`` MB, 200 by default) in an activity of a one-provider local
network through ``WorkContext.run_script`` and prints the wall time, the growth of the process's peak
resident memory (``ru_maxrss``: the node and the requestor together) and the longest stall of the event
loop (a 10 ms ticker's worst lateness), plus the size of the ``CommandResult``'s stdout.
``--file`` writes the output to a file with ``run(stdout_file=…)`` (golem-api with issue 14).

Run: ``.venv/bin/python bench/bench_output.py [MB] [--file]`` (needs bubblewrap).
"""

from __future__ import annotations

import asyncio
import resource
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from golem_api import Golem, LocalNetworkConfig, VmPayload


async def _ticker(worst: list[float]) -> None:
    loop = asyncio.get_running_loop()
    while True:
        due = loop.time() + 0.01
        await asyncio.sleep(0.01)
        worst[0] = max(worst[0], loop.time() - due)


async def main(megabytes: int, to_file: bool) -> None:
    """Measure and print (see the module docstring)."""
    network = LocalNetworkConfig.with_providers(1, debit_note_interval_sec=3600)
    async with Golem(budget=1.0, local_network=network) as golem:
        agreement = await (await golem.create_demand(VmPayload())).agreement(timeout=30)
        activity = await agreement.create_activity()
        ctx = golem.work_context(activity)
        script = ctx.new_script(timeout=60)
        script.deploy()
        script.start()
        await ctx.run_script(script)
        with tempfile.TemporaryDirectory() as scratch:
            options: dict[str, Any] = {"stdout_file": Path(scratch) / "out"} if to_file else {}
            script = ctx.new_script(timeout=600)
            run = script.run("/bin/sh", "-c", f"head -c {megabytes * 1_000_000} /dev/zero | tr '\\0' x", **options)
            worst = [0.0]
            ticker = asyncio.create_task(_ticker(worst))
            before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            began = time.perf_counter()
            await ctx.run_script(script)
            took = time.perf_counter() - began
            after = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
            ticker.cancel()
            written = (Path(scratch) / "out").stat().st_size if to_file else 0
        result = await run
        await agreement.terminate()
    where = " to a file" if to_file else ""
    print(
        f"{megabytes} MB of stdout{where}: {took:.2f} s, peak RSS +{(after - before) / 1024:.0f} MiB, "
        f"longest loop stall {worst[0] * 1000:.0f} ms, CommandResult.stdout {len(result.stdout or '')} characters"
        + (f", file {written} bytes" if to_file else "")
    )


if __name__ == "__main__":
    arguments = [argument for argument in sys.argv[1:] if argument != "--file"]
    asyncio.run(main(int(arguments[0]) if arguments else 200, "--file" in sys.argv))
