"""Soak: many instances sending commands for a long time; resources over time, and every document paid once.

    python -m bench.soak                         # 20 instances, a command every 0.2 s each, 10 minutes
    python -m bench.soak --minutes 2             # shorter
    python -m bench.soak --minutes 2 --write-docs   # and put the figures in docs/performance.md ("## Soak")

The node (``bench.node_server``, one provider per instance, bubblewrap sandboxes unless ``--runtime idle``)
runs in a process of its own; this process is the requestor. Every ``--sample`` seconds it prints one line:
the requestor's and the node's resident memory (RSS) and open file descriptors, the node's child processes,
and the commands run, debit notes accepted and errors so far. At the end it stops the cluster, leaves
``Golem``, stops the node and checks from both sides that every document was paid exactly once: every
agreement has one invoice, accepted by exactly one accept call (the node's ledger counts them), every debit
note the requestor accepted was accepted once, and the requestor's ``InvoiceAccepted`` events name each
invoice once. It prints a JSON line with everything and exits 1 if a check failed.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import re
import sys
import time
from collections import Counter
from decimal import Decimal
from pathlib import Path
from typing import Any

import psutil  # type: ignore[import-untyped]

from bench.processes import ROOT
from golem_api import Golem, Service, VmPayload
from golem_api.events import CommandExecuted, DebitNoteAccepted, Event, InvoiceAccepted, ServiceStateChanged
from golem_api.payload import Payload
from golem_api.services.service import Handler

__all__ = ["main", "soak"]

PAGE = ROOT / "docs" / "performance.md"
SECTION = "## Soak"


class Ticker(Service):
    """Runs ``/bin/true`` every ``interval`` seconds until stopped."""

    interval = 0.2

    @staticmethod
    async def get_payload() -> Payload | None:
        return VmPayload(min_mem_gib=0.5)

    async def run(self) -> Handler:
        while True:
            script = self._ctx.new_script(timeout=30)
            script.run("/bin/true")
            yield script
            await asyncio.sleep(self.interval)  # the pace of the load, not a wait for an event


def _usage(process: psutil.Process) -> tuple[float, int, int]:
    """(RSS in MB, open file descriptors, child processes) of ``process``."""
    with process.oneshot():
        return process.memory_info().rss / 1e6, process.num_fds(), len(process.children(recursive=True))


async def soak(*, minutes: float, instances: int, interval: float, sample: float, runtime: str) -> dict[str, Any]:
    """Run the soak (see the module docstring) and return its figures and checks."""
    Ticker.interval = interval
    node = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "bench.node_server",
        *("--providers", str(instances), "--runtime", runtime, "--ledger"),
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        cwd=ROOT,
    )
    assert node.stdin is not None
    assert node.stdout is not None
    info = json.loads(await asyncio.wait_for(node.stdout.readline(), 60))
    me, node_process = psutil.Process(), psutil.Process(info["pid"])
    counts: Counter[str] = Counter()
    invoice_events: Counter[str] = Counter()
    debit_events: Counter[str] = Counter()

    def count(event: Event) -> None:
        if isinstance(event, CommandExecuted):
            counts["commands"] += 1
            counts["failed commands"] += not event.success
        elif isinstance(event, DebitNoteAccepted):
            debit_events[event.debit_note_id] += 1
        elif isinstance(event, InvoiceAccepted):
            invoice_events[event.invoice_id] += 1
        elif isinstance(event, ServiceStateChanged) and event.new in ("terminated", "unresponsive"):
            counts[f"instances {event.new}"] += 1

    samples: list[dict[str, float]] = []
    began = time.monotonic()
    try:
        golem = Golem(budget=Decimal(1000), app_key=info["app_key"], api_url=info["url"], event_consumer=None)
        async with golem:
            golem.bus.subscribe(count)
            cluster = await golem.run_service(Ticker, num_instances=instances)
            await cluster.wait_running(timeout=120)
            loaded = time.monotonic()
            print(f"{instances} instances running after {loaded - began:.1f} s; soaking {minutes:g} min", flush=True)
            print(
                "   t/s  req RSS/MB  req fds  node RSS/MB  node fds  node children  commands  debit notes  failed",
                flush=True,
            )
            end = loaded + minutes * 60
            while True:
                now = time.monotonic()
                req_rss, req_fds, _ = _usage(me)
                node_rss, node_fds, children = _usage(node_process)
                row = {
                    "t": now - loaded,
                    "requestor_rss_mb": req_rss,
                    "requestor_fds": req_fds,
                    "node_rss_mb": node_rss,
                    "node_fds": node_fds,
                    "node_children": children,
                    "commands": counts["commands"],
                    "debit_notes": len(debit_events),
                }
                samples.append(row)
                print(
                    f"{row['t']:6.0f}  {req_rss:10.1f}  {req_fds:7d}  {node_rss:11.1f}  {node_fds:8d}  "
                    f"{children:13d}  {counts['commands']:8d}  {len(debit_events):11d}  {counts['failed commands']:6d}",
                    flush=True,
                )
                if now >= end:
                    break
                await asyncio.sleep(min(sample, end - now))  # the sampling period
            soaked = time.monotonic() - loaded
            await asyncio.wait_for(cluster.stop(), 60)
        agreements = [a.agreement_id for a in golem.agreements]
        spent = golem.spent  # after the exit: the last invoices are accepted on the way out
    finally:
        node.stdin.close()
        tail = await asyncio.wait_for(node.stdout.read(), 60)
        await asyncio.wait_for(node.wait(), 60)
    ledger = json.loads(tail.decode().strip().splitlines()[-1])
    invoices = ledger["invoices"]
    by_agreement = Counter(agreement for _, agreement, _, _, _ in invoices)
    problems = []
    if sorted(by_agreement) != sorted(agreements) or any(n != 1 for n in by_agreement.values()):
        problems.append(f"not one invoice per agreement: {dict(by_agreement)} for {len(agreements)} agreements")
    for invoice_id, _, status, calls, _ in invoices:
        if (status, calls) != ("SETTLED", 1):
            problems.append(f"invoice {invoice_id}: {status}, {calls} accept call(s)")
        if invoice_events[invoice_id] != 1:
            problems.append(f"invoice {invoice_id}: accepted {invoice_events[invoice_id]} time(s) by the requestor")
    calls_per_note = Counter(calls for _, calls in ledger["debit_notes"])
    if any(calls > 1 for calls in calls_per_note):
        problems.append(f"debit notes accepted more than once: {dict(calls_per_note)}")
    if any(n != 1 for n in debit_events.values()):
        problems.append("a debit note was reported accepted twice by the requestor")
    if Decimal(ledger["total_paid"]) != spent:
        problems.append(f"the node was paid {ledger['total_paid']}, the requestor counted {spent}")
    invoiced = sum((Decimal(amount) for *_, amount in invoices), Decimal(0))
    if invoiced != spent:
        problems.append(f"the invoices come to {invoiced}, the requestor paid {spent}")
    if counts["failed commands"]:
        problems.append(f"{counts['failed commands']} command(s) failed")
    return {
        "minutes": soaked / 60,
        "instances": instances,
        "interval": interval,
        "runtime": runtime,
        "commands": counts["commands"],
        "agreements": len(agreements),
        "invoices": len(invoices),
        "debit_notes_issued": len(ledger["debit_notes"]),
        "debit_notes_accepted": sum(calls_per_note[c] for c in calls_per_note if c > 0),
        "paid": ledger["total_paid"],
        "samples": samples,
        "problems": problems,
    }


def section(result: dict[str, Any]) -> str:
    """The ``## Soak`` section of docs/performance.md for ``result``."""
    samples = result["samples"]
    lines = [
        SECTION,
        "",
        f"`python -m bench.soak --minutes {result['minutes']:.0f} --write-docs`: {result['instances']} instances of a "
        f"service that runs `/bin/true` every {result['interval']:g} s ({result['runtime']} runtime: a bubblewrap "
        f"sandbox per activity), one provider each, against a node in its own process, for "
        f"**{result['minutes']:.1f} minutes** (the full soak is 10 minutes, `python -m bench.soak`; this is the "
        "length run for this page). The requestor and the node, sampled as the load ran:",
        "",
        "| t (s) | requestor RSS (MB) | requestor fds | node RSS (MB) | node fds | node children | commands |",
        "|---|---|---|---|---|---|---|",
        *(
            f"| {s['t']:.0f} | {s['requestor_rss_mb']:.1f} | {s['requestor_fds']:.0f} | {s['node_rss_mb']:.1f} | "
            f"{s['node_fds']:.0f} | {s['node_children']:.0f} | {s['commands']:.0f} |"
            for s in samples
        ),
    ]
    verdict = "every check held" if not result["problems"] else "checks FAILED: " + "; ".join(result["problems"])
    lines += [
        "",
        f"{result['commands']} commands ran ({result['commands'] / (result['minutes'] * 60):.0f}/s); "
        f"{result['debit_notes_issued']} debit notes were issued and {result['debit_notes_accepted']} accepted, "
        f"each by one accept call; {result['invoices']} invoices for {result['agreements']} agreements, each "
        f"settled by one accept call and reported once by the requestor; {result['paid']} paid, as the requestor "
        f"counted. {verdict[0].upper() + verdict[1:]}.",
        "",
        "The node keeps a finished batch's results for 60 s (`golem_local.activity.BATCH_RETENTION`), so its memory "
        "levels off after the first minute; before that limit it grew by about 6 KB per command. The open file "
        "descriptors of both grow in steps with the largest number of concurrent requests seen so far: they are "
        "the requestor's pooled HTTP connections (at most 100) and their ends on the node.",
        "",
    ]
    return "\n".join(lines)


def write_section(text: str, page: Path = PAGE) -> None:
    """Put ``text`` in ``page`` as its ``## Soak`` section (replacing one there, else before ``## Re-running``)."""
    content = page.read_text()
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## )", re.MULTILINE | re.DOTALL)
    if pattern.search(content):
        content = pattern.sub(lambda _: text + "\n", content)
    else:
        content = content.replace("## Re-running", text + "\n## Re-running", 1)
    page.write_text(content)


def main(argv: list[str] | None = None) -> None:
    """Parse the arguments, soak, print the JSON line; exit 1 when a check failed."""
    parser = argparse.ArgumentParser(prog="python -m bench.soak", description=__doc__.splitlines()[0])
    parser.add_argument("--minutes", type=float, default=10.0, help="how long the load runs (default 10)")
    parser.add_argument("--instances", type=int, default=20, help="service instances, one provider each")
    parser.add_argument("--interval", type=float, default=0.2, help="seconds between an instance's commands")
    parser.add_argument("--sample", type=float, default=30.0, help="seconds between samples")
    parser.add_argument("--runtime", choices=("vm", "idle"), default="vm", help="what runs activities")
    parser.add_argument("--write-docs", action="store_true", help="write the figures into docs/performance.md")
    args = parser.parse_args(argv)
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    logging.getLogger("asyncio").setLevel(logging.ERROR)
    result = asyncio.run(
        soak(
            minutes=args.minutes,
            instances=args.instances,
            interval=args.interval,
            sample=args.sample,
            runtime=args.runtime,
        )
    )
    if args.write_docs:
        write_section(section(result))
    print(json.dumps({k: v for k, v in result.items() if k != "samples"}), flush=True)
    if result["problems"]:
        print("\n".join(result["problems"]), file=sys.stderr)
        sys.exit(1)


if __name__ == "__main__":
    os.environ.setdefault("PYTHONUNBUFFERED", "1")
    main()
