"""The floor of an idle requestor: the polling of running instances, made with bare aiohttp.

    python -m bench.idle_floor --url URL --app-key KEY --allocation ID --interval 5 < activity-ids

Reads activity ids (one a line) from standard input, then until it is terminated makes the requests an idle
``Golem`` makes for them: each activity's state every ``--interval`` s (the health check), the debit-note
and invoice events by long-poll, and for every debit note received its read and its acceptance (up to 64 at
once). No checks, events, retries or bookkeeping: what polling that many instances cannot do with less.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import sys
from datetime import datetime, timezone
from typing import Any

import aiohttp

__all__ = ["main", "poll"]


async def _get(session: aiohttp.ClientSession, url: str, **params: str) -> Any:
    async with session.get(url, params=params or None) as response:
        text = await response.text()
        return json.loads(text) if text else None


async def _health(session: aiohttp.ClientSession, base: str, activity: str, interval: float, offset: float) -> None:
    await asyncio.sleep(offset)  # the instances started at different moments: their checks are spread too
    while True:
        await _get(session, f"{base}/activity-api/v1/activity/{activity}/state")
        await asyncio.sleep(interval)  # the health check's period


async def _events(session: aiohttp.ClientSession, base: str, kind: str, allocation: str) -> None:
    after = datetime.now(timezone.utc).isoformat().replace("+00:00", "Z")
    gate = asyncio.Semaphore(64)
    running: set[asyncio.Task[None]] = set()

    async def accept(note_id: str) -> None:
        async with gate:
            note = await _get(session, f"{base}/payment-api/v1/debitNotes/{note_id}")
            body = {"totalAmountAccepted": note["totalAmountDue"], "allocationId": allocation}
            async with session.post(f"{base}/payment-api/v1/debitNotes/{note_id}/accept", json=body) as answer:
                await answer.read()

    try:
        while True:
            events = await _get(
                session, f"{base}/payment-api/v1/{kind}Events", timeout="5", afterTimestamp=after, maxEvents="100"
            )
            for event in events:
                after = event["eventDate"]
                if kind == "debitNote" and event["eventType"].endswith("ReceivedEvent"):
                    task = asyncio.ensure_future(accept(event["debitNoteId"]))
                    running.add(task)
                    task.add_done_callback(running.discard)
    finally:
        for task in list(running):
            task.cancel()
        await asyncio.gather(*running, return_exceptions=True)


async def poll(url: str, app_key: str, allocation: str, activities: list[str], interval: float) -> None:
    """Poll as an idle requestor does, until cancelled."""
    headers = {"Authorization": f"Bearer {app_key}"}
    base = url.rstrip("/")
    async with aiohttp.ClientSession(headers=headers, connector=aiohttp.TCPConnector(limit=0)) as session:
        spread = interval / max(len(activities), 1)
        tasks = [
            asyncio.ensure_future(_health(session, base, activity, interval, index * spread))
            for index, activity in enumerate(activities)
        ]
        tasks += [asyncio.ensure_future(_events(session, base, kind, allocation)) for kind in ("debitNote", "invoice")]
        try:
            await asyncio.gather(*tasks)
        finally:
            for task in tasks:
                task.cancel()
            await asyncio.gather(*tasks, return_exceptions=True)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, read the activity ids, poll until terminated."""
    parser = argparse.ArgumentParser(prog="python -m bench.idle_floor", description=__doc__.splitlines()[0])
    parser.add_argument("--url", required=True)
    parser.add_argument("--app-key", required=True)
    parser.add_argument("--allocation", required=True)
    parser.add_argument("--interval", type=float, default=5.0, help="seconds between two state reads of one activity")
    args = parser.parse_args(argv)
    activities = [line.strip() for line in sys.stdin if line.strip()]
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(poll(args.url, args.app_key, args.allocation, activities, args.interval))


if __name__ == "__main__":
    main()
