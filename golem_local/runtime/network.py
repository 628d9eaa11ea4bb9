"""What the ``vm`` runtime does for an activity whose ``deploy`` joins VPNs: one :class:`SandboxNetwork` each.

At ``deploy`` it checks the ``hosts`` map and joins the VPNs of ``net`` through the node's
:class:`~golem_local.runtime.base.NetworkJoiner` (which makes the activity's network namespace); at ``start``
it says how to start bubblewrap inside that namespace (:attr:`SandboxNetwork.argv_prefix`, with
``SandboxLayout(share_net=True)``) and gives the activity's own ``/etc/hosts`` (:attr:`SandboxNetwork.hosts_file`:
``localhost``, the hostname at the activity's first VPN address, then the ``hosts`` entries, as the Golem VM's
agent writes them); at ``stop``, after the sandbox's processes have ended, it leaves the VPNs.
"""

from __future__ import annotations

import asyncio
import ipaddress
import re
from collections.abc import Mapping, Sequence
from pathlib import Path

from golem_local.runtime.base import DeployNetwork, NetworkJoiner, NetworkLease, RuntimeFailure

__all__ = ["SandboxNetwork"]

_HOST_NAME = re.compile(r"[A-Za-z0-9]([A-Za-z0-9.-]{0,252})?")


class SandboxNetwork:
    """The VPN side of one activity's sandbox (see the module docstring)."""

    def __init__(self, lease: NetworkLease | None, hosts_file: Path | None) -> None:
        self._lease = lease
        self.hosts_file = hosts_file

    @classmethod
    async def deploy(
        cls,
        joiner: NetworkJoiner | None,
        networks: Sequence[DeployNetwork],
        hosts: Mapping[str, str],
        *,
        hostname: str,
        work_dir: Path,
    ) -> SandboxNetwork | None:
        """Join ``networks`` and write the activity's ``/etc/hosts``; ``None`` when the deploy has neither
        ``net`` nor ``hosts`` (the sandbox then gets its own empty network, as always)."""
        if not networks and not hosts:
            return None
        entries = _check_hosts(hosts)
        if networks and joiner is None:
            raise RuntimeFailure(
                "deploy: this provider does not offer VPNs (no 'vpn' in golem.runtime.capabilities), but the deploy "
                "command joins one; ask for the capability in the demand (run_service(network=…) does)"
            )
        lease = await joiner(networks) if networks and joiner is not None else None
        lines = ["127.0.0.1\tlocalhost", "::1\tlocalhost ip6-localhost ip6-loopback"]
        if networks:
            lines.append(f"{networks[0].node_ip}\t{hostname}")
        lines += [f"{address}\t{name}" for name, address in entries]
        hosts_file = work_dir / "etc-hosts"
        try:
            await asyncio.to_thread(_write, hosts_file, "\n".join(lines) + "\n")
        except OSError as exc:
            if lease is not None:
                await lease.release()
            raise RuntimeFailure(f"cannot write the activity's /etc/hosts in {str(work_dir)!r}: {exc}") from exc
        return cls(lease, hosts_file)

    @property
    def argv_prefix(self) -> list[str]:
        """``nsenter --net=<namespace> --`` when the activity is in a VPN (bubblewrap cannot join a namespace)."""
        if self._lease is None:
            return []
        return ["nsenter", f"--net={self._lease.netns_path}", "--"]

    @property
    def shares_net(self) -> bool:
        """Whether the sandbox must keep the namespace it is started in (``SandboxLayout.share_net``)."""
        return self._lease is not None

    async def release(self) -> None:
        """Leave the VPNs (after every process of the sandbox has ended). Idempotent."""
        lease, self._lease = self._lease, None
        if lease is not None:
            await lease.release()


def _check_hosts(hosts: Mapping[str, str]) -> list[tuple[str, str]]:
    entries = []
    for name, address in hosts.items():
        if not _HOST_NAME.fullmatch(name):
            raise RuntimeFailure(f"deploy: hosts has the name {name!r}; use letters, digits, dots and dashes")
        try:
            entries.append((name, str(ipaddress.ip_address(address))))
        except ValueError:
            raise RuntimeFailure(f"deploy: hosts maps {name!r} to {address!r}, which is not an IP address") from None
    return entries


def _write(path: Path, text: str) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(text)
