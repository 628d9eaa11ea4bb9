#!/usr/bin/env python3
"""A Blender-like fan-out, ported from yapapi's blender example: render N frames of a scene, one task per frame.

    python examples/tasks/fan_out.py [--frames 0 10 20 …] [--max-workers 6] [--output-dir frames] [--show-usage]

Each worker uploads the scene once, then for each of its frames uploads the render parameters, runs the
renderer and downloads the frame it drew (``output_<frame>.png`` in ``--output-dir``). Without ``YAGNA_APPKEY``
it runs on the embedded local Golem network, with the image built from ``fan_out_image/`` at the start (its
renderer is a small Python stand-in for Blender, ``render.py``); with ``YAGNA_APPKEY`` it needs that image in
a registry the providers can reach: pass its hash with ``--image-hash``.

What changed from yapapi's ``blender.py``: the import lines, the image, and the helpers of yapapi's
``examples/utils`` written out here. The worker is yapapi's, down to the ``BatchTimeoutError`` handling and the
``--show-usage`` lines (``get_raw_state``, ``get_usage``, ``get_cost``).
"""

import argparse
import asyncio
import logging
import os
import pathlib
import sys
from datetime import datetime, timedelta

from golem_api import BatchTimeoutError, Golem, GolemError, Payload, Task, WorkContext, vm
from golem_api.log import enable_default_logger

TEXT_COLOR_RED = "\033[31;1m"
TEXT_COLOR_CYAN = "\033[36;1m"
TEXT_COLOR_MAGENTA = "\033[35;1m"
TEXT_COLOR_DEFAULT = "\033[0m"

HERE = pathlib.Path(__file__).resolve().parent
IMAGE_DIR = HERE / "fan_out_image"
IMAGE_TAG = "golem-api/fan-out:1.0"
SCENE = HERE / "scene.json"

_log = logging.getLogger("fan_out")


def on_live_network() -> bool:
    return bool(os.environ.get("YAGNA_APPKEY"))


async def build_local_image() -> None:
    """Build ``fan_out_image/`` into the local registry (about a second; the same files give the same image)."""
    from golem_local.images.builder import build_image

    result = await build_image(IMAGE_DIR, tag=IMAGE_TAG, log=lambda text: _log.debug("image build: %s", text))
    _log.info("built %s: %s", IMAGE_TAG, result.hash)


async def render_payload(image_hash: str | None, min_cpu_threads: int) -> Payload:
    resources = {"min_mem_gib": 0.5, "min_storage_gib": 2.0, "min_cpu_threads": min_cpu_threads}
    if image_hash:
        return await vm.repo(image_hash=image_hash, **resources)
    if on_live_network():
        raise SystemExit("on a live network, give --image-hash of the fan_out_image built and pushed to a registry")
    await build_local_image()
    return await vm.repo(image_tag=IMAGE_TAG, **resources)


def format_usage(usage):
    return {
        "current_usage": usage.current_usage,
        "timestamp": usage.timestamp.isoformat(sep=" ") if usage.timestamp else None,
    }


async def main(
    frames,
    output_dir: pathlib.Path,
    subnet_tag=None,
    min_cpu_threads=1,
    payment_driver=None,
    payment_network=None,
    show_usage=False,
    max_workers=6,
    image_hash=None,
):
    package = await render_payload(image_hash, min_cpu_threads)

    async def worker(ctx: WorkContext, tasks):
        scene_path = str(SCENE)

        # Set timeout for the first script executed on the provider. Usually, 30 seconds
        # should be more than enough for computing a single frame of the provided scene,
        # however a provider may require more time for the first task if it needs to download
        # the VM image first. Once downloaded, the VM image will be cached and other tasks that use
        # that image will be computed faster.
        script = ctx.new_script(timeout=timedelta(minutes=10))
        script.upload_file(scene_path, "/golem/resource/scene.json")

        async for task in tasks:
            frame = task.data
            crops = [{"outfilebasename": "out", "borders_x": [0.0, 1.0], "borders_y": [0.0, 1.0]}]
            script.upload_json(
                {
                    "scene_file": "/golem/resource/scene.json",
                    "resolution": (400, 300),
                    "use_compositing": False,
                    "crops": crops,
                    "samples": 100,
                    "frames": [frame],
                    "output_format": "PNG",
                    "RESOURCES_DIR": "/golem/resources",
                    "WORK_DIR": "/golem/work",
                    "OUTPUT_DIR": "/golem/output",
                },
                "/golem/work/params.json",
            )

            script.run("/golem/entrypoints/run-render.sh")
            output_file = str(output_dir / f"output_{frame}.png")
            script.download_file(f"/golem/output/out{frame:04d}.png", output_file)
            try:
                yield script
                # TODO: Check if job results are valid
                # and reject by: task.reject_task(reason = 'invalid file')
                task.accept_result(result=output_file)
            except BatchTimeoutError:
                print(
                    f"{TEXT_COLOR_RED}"
                    f"Task {task} timed out on {ctx.provider_name}, time: {task.running_time}"
                    f"{TEXT_COLOR_DEFAULT}"
                )
                raise

            # reinitialize the script which we send to the engine to compute subsequent frames
            script = ctx.new_script(timeout=timedelta(minutes=1))

            if show_usage:
                raw_state = await ctx.get_raw_state()
                usage = format_usage(await ctx.get_usage())
                cost = await ctx.get_cost()
                print(
                    f"{TEXT_COLOR_MAGENTA}"
                    f" --- {ctx.provider_name} STATE: {raw_state}\n"
                    f" --- {ctx.provider_name} USAGE: {usage}\n"
                    f" --- {ctx.provider_name}  COST: {cost}"
                    f"{TEXT_COLOR_DEFAULT}"
                )

    # Worst-case overhead, in minutes, for initialization (negotiation, file transfer etc.)
    init_overhead = 3
    # Providers will not accept work if the timeout is outside of the [5 min, 30min] range.
    # We increase the lower bound to 6 min to account for the time needed for our demand to
    # reach the providers.
    min_timeout, max_timeout = 6, 30

    timeout = timedelta(minutes=max(min(init_overhead + len(frames) * 2, max_timeout), min_timeout))

    async with Golem(
        budget=10.0,
        subnet_tag=subnet_tag,
        payment_driver=payment_driver,
        payment_network=payment_network,
    ) as golem:
        num_tasks = 0
        start_time = datetime.now()

        completed_tasks = golem.execute_tasks(
            worker,
            [Task(data=frame) for frame in frames],
            payload=package,
            max_workers=max_workers,
            timeout=timeout,
        )
        async for task in completed_tasks:
            num_tasks += 1
            print(
                f"{TEXT_COLOR_CYAN}"
                f"Task computed: {task}, result: {task.result}, time: {task.running_time}"
                f"{TEXT_COLOR_DEFAULT}"
            )

        print(
            f"{TEXT_COLOR_CYAN}"
            f"{num_tasks} tasks computed, total time: {datetime.now() - start_time}"
            f"{TEXT_COLOR_DEFAULT}"
        )
        print(completed_tasks.summary)


def build_parser() -> argparse.ArgumentParser:
    now = datetime.now().strftime("%Y-%m-%d_%H.%M.%S")
    parser = argparse.ArgumentParser(description="Render the frames of a scene on providers, one task per frame")
    parser.add_argument("--frames", type=int, nargs="+", default=list(range(0, 60, 10)), help="frames to render")
    parser.add_argument("--max-workers", type=int, default=6, help="workers at the same time (default 6)")
    parser.add_argument("--output-dir", type=pathlib.Path, default=pathlib.Path("."), help="where frames go")
    parser.add_argument("--show-usage", action="store_true", help="show activity usage and cost")
    parser.add_argument(
        "--min-cpu-threads", type=int, default=1, help="require providers with at least this many CPU threads"
    )
    parser.add_argument("--image-hash", help="the renderer image in a registry (needed on a live network)")
    parser.add_argument("--subnet-tag", help="Subnet name, for example `public`")
    parser.add_argument("--payment-driver", "--driver", help="Payment driver name, for example `erc20`")
    parser.add_argument("--payment-network", "--network", help="Payment network name, for example `holesky`")
    parser.add_argument("--log-file", default=f"fan-out-golem-api-{now}.log", help="the debug log")
    return parser


if __name__ == "__main__":
    args = build_parser().parse_args()
    args.output_dir.mkdir(parents=True, exist_ok=True)
    enable_default_logger(log_file=args.log_file)
    try:
        asyncio.run(
            main(
                frames=args.frames,
                output_dir=args.output_dir,
                subnet_tag=args.subnet_tag,
                min_cpu_threads=args.min_cpu_threads,
                payment_driver=args.payment_driver,
                payment_network=args.payment_network,
                show_usage=args.show_usage,
                max_workers=args.max_workers,
                image_hash=args.image_hash,
            )
        )
    except GolemError as error:
        print(f"error: {error}", file=sys.stderr)
        sys.exit(1)
    except KeyboardInterrupt:
        sys.exit(130)
