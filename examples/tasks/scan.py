#!/usr/bin/env python3
"""yapapi's scan example, ported to golem-api: read the CPU model of N providers, each scanned once.

    python examples/tasks/scan.py [--scan-size N] [--max-workers M] [--log-file scan.log]

Each task runs ``cat /proc/cpuinfo`` on a provider no earlier task ran on: the market strategy turns down
providers already scanned, and each worker leaves its provider after one task (``await tasks.aclose()``), which
ends its agreement. Without ``YAGNA_APPKEY`` it runs on the embedded local Golem network (three providers, so
``--scan-size`` is 3 there; a larger scan waits for providers that never come until ``--timeout``), in the
local runtime's default image; with ``YAGNA_APPKEY``, on the network of that daemon with yapapi's alpine image.

What changed from yapapi's ``scan.py``: the import lines; the strategy subclasses ``ScoringStrategy`` (golem-api's
base for strategies that score offers as yapapi's do); the payload on the local network; the helpers of
yapapi's ``examples/utils`` are written out here.
"""

import argparse
import asyncio
import os
import re
import sys
from datetime import datetime, timedelta

from golem_api import (
    SCORE_REJECTED,
    SCORE_TRUSTED,
    Golem,
    GolemError,
    Payload,
    ScoringStrategy,
    Task,
    VmPayload,
    WorkContext,
    vm,
)
from golem_api.log import enable_default_logger, pluralize

TEXT_COLOR_CYAN = "\033[36;1m"
TEXT_COLOR_YELLOW = "\033[33;1m"
TEXT_COLOR_MAGENTA = "\033[35;1m"
TEXT_COLOR_DEFAULT = "\033[0m"

# alpine:latest
IMAGE_HASH = "25d5315561c3aa3b8daa1ea8cfd5a6c35f307f4347a63994c9d5f2a8"

scanned_nodes = set()


class ScanStrategy(ScoringStrategy):
    async def score_offer(self, offer):
        node_address = offer.issuer

        # reject nodes that we have already scanned
        if node_address in scanned_nodes:
            return SCORE_REJECTED

        return SCORE_TRUSTED


def on_live_network() -> bool:
    return bool(os.environ.get("YAGNA_APPKEY"))


async def scan_payload() -> Payload:
    if on_live_network():
        return await vm.repo(image_hash=IMAGE_HASH)
    return VmPayload()  # the local runtime's default image: /bin/cat is all the task needs


def print_env_info(golem: Golem) -> None:
    where = "the local Golem network" if golem.local_node else "the Golem network of your yagna daemon"
    print(
        f"Running on {where}; using subnet: {TEXT_COLOR_YELLOW}{golem.subnet_tag}{TEXT_COLOR_DEFAULT}, "
        f"payment driver: {TEXT_COLOR_YELLOW}{golem.payment_driver}{TEXT_COLOR_DEFAULT}, "
        f"and network: {TEXT_COLOR_YELLOW}{golem.payment_network}{TEXT_COLOR_DEFAULT}\n"
    )


async def main(scan_size: int, max_workers: int, subnet_tag, payment_driver=None, payment_network=None, timeout=None):
    payload = await scan_payload()

    async def worker(ctx: WorkContext, tasks):
        assert ctx.provider_id not in scanned_nodes

        async for task in tasks:
            print(
                f"{TEXT_COLOR_CYAN}Getting info for {ctx.provider_id} (aka {ctx.provider_name}){TEXT_COLOR_DEFAULT}",
            )
            script = ctx.new_script()

            future_result = script.run("/bin/cat", "/proc/cpuinfo")
            yield script

            result = (await future_result).stdout or ""

            cpu_model_match = re.search("^model name\\s+:\\s+(.*)$", result, flags=re.MULTILINE)
            result = cpu_model_match.group(1) if cpu_model_match else None

            # add the node to the set so we don't end up signing another agreement with it
            scanned_nodes.add(ctx.provider_id)

            # and accept the result (pass the result to the loop in `main`)
            task.accept_result((ctx.provider_id, ctx.provider_name, result))

            # as we don't want to execute any more tasks on this node, we close the task iterator: the worker
            # ends, and with it the agreement with this provider
            await tasks.aclose()

    async with Golem(
        budget=1,
        strategy=ScanStrategy(),
        subnet_tag=subnet_tag,
        payment_driver=payment_driver,
        payment_network=payment_network,
    ) as golem:
        print_env_info(golem)
        print(
            f"{TEXT_COLOR_YELLOW}Scanning {pluralize(scan_size, 'node')}, "
            f"using {pluralize(max_workers, 'concurrent worker')}.{TEXT_COLOR_DEFAULT}"
        )

        tasks = [Task(i) for i in range(scan_size)]
        async for task in golem.execute_tasks(worker, tasks, payload, max_workers=max_workers, timeout=timeout):
            print(f"{TEXT_COLOR_MAGENTA}{task.result}{TEXT_COLOR_DEFAULT}")


def build_parser() -> argparse.ArgumentParser:
    now = datetime.now().strftime("%Y-%m-%d_%H.%M.%S")
    parser = argparse.ArgumentParser(description="Scan providers")
    parser.add_argument("--scan-size", help="Number of nodes to scan (default: 3 locally, 5 live)", type=int)
    parser.add_argument("--max-workers", help="Number of scans at the same time", type=int, default=3)
    parser.add_argument("--subnet-tag", help="Subnet name, for example `public`")
    parser.add_argument("--payment-driver", "--driver", help="Payment driver name, for example `erc20`")
    parser.add_argument("--payment-network", "--network", help="Payment network name, for example `holesky`")
    parser.add_argument("--timeout", type=float, default=600.0, help="seconds for the whole scan (default 600)")
    parser.add_argument("--log-file", default=f"scan-golem-api-{now}.log", help="the debug log")
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    scan_size = args.scan_size or (5 if on_live_network() else 3)
    enable_default_logger(log_file=args.log_file)
    try:
        asyncio.run(
            main(
                scan_size=scan_size,
                max_workers=args.max_workers,
                subnet_tag=args.subnet_tag,
                payment_driver=args.payment_driver,
                payment_network=args.payment_network,
                timeout=timedelta(seconds=args.timeout),
            )
        )
    except GolemError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
