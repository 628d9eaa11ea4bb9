"""What the ``vm`` and ``container`` runtimes do for an activity whose ``deploy`` joins VPNs: one
:class:`SandboxNetwork` each.

At ``deploy`` it checks the ``hosts`` map and joins the VPNs of ``net`` through the node's
:class:`~golem_local.runtime.base.NetworkJoiner` (which makes the activity's network namespace); at ``start``
it says how to start bubblewrap inside that namespace (:attr:`SandboxNetwork.argv_prefix`, with
``SandboxLayout(share_net=True)``) and gives the activity's own ``/etc/hosts`` (:attr:`SandboxNetwork.hosts_file`:
``localhost``, the hostname at the activity's first VPN address, then the ``hosts`` entries, as the Golem VM's
agent writes them); at ``stop``, after the sandbox's processes have ended, it leaves the VPNs. The ``container``
runtime runs a podman container in that namespace (``--network ns:``); a docker container, which can only get a
namespace of docker's making, joins after it started (``join_later``, :meth:`SandboxNetwork.join_holder`).
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

    def __init__(
        self,
        lease: NetworkLease | None,
        hosts_file: Path | None,
        *,
        joiner: NetworkJoiner | None = None,
        networks: Sequence[DeployNetwork] = (),
    ) -> None:
        self._lease = lease
        self.hosts_file = hosts_file
        self._joiner = joiner  # set while the join waits for its holder (see deploy's join_later)
        self._networks = tuple(networks)

    @classmethod
    async def deploy(
        cls,
        joiner: NetworkJoiner | None,
        networks: Sequence[DeployNetwork],
        hosts: Mapping[str, str],
        *,
        hostname: str,
        work_dir: Path,
        join_later: bool = False,
    ) -> SandboxNetwork | None:
        """Join ``networks`` and write the activity's ``/etc/hosts``; ``None`` when the deploy has neither
        ``net`` nor ``hosts`` (the sandbox then gets its own empty network, as always).

        ``join_later``: check everything now but join at :meth:`join_holder`, in the network namespace of a
        process that is not running yet (a docker container's)."""
        if not networks and not hosts:
            return None
        entries = _check_hosts(hosts)
        if networks and joiner is None:
            raise RuntimeFailure(
                "deploy: this provider does not offer VPNs (no 'vpn' in golem.runtime.capabilities), but the deploy "
                "command joins one; ask for the capability in the demand (run_service(network=…) does)"
            )
        later = joiner if join_later and networks else None
        lease = await joiner(networks) if networks and joiner is not None and later is None else None
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
        return cls(lease, hosts_file, joiner=later, networks=networks)

    async def join_holder(self, pid: int) -> None:
        """Join the VPNs deferred by ``join_later`` in the network namespace ``pid`` runs in (no-op otherwise)."""
        joiner, self._joiner = self._joiner, None
        if joiner is not None:
            self._lease = await joiner(self._networks, holder_pid=pid)

    @property
    def netns_path(self) -> Path | None:
        """The activity's network namespace when it is in a VPN (``None`` before a deferred join)."""
        return self._lease.netns_path if self._lease is not None else None

    @property
    def argv_prefix(self) -> list[str]:
        """``nsenter --net=<namespace> --`` when the activity is in a VPN (bubblewrap cannot join a namespace)."""
        if self._lease is None:
            return []
        return ["nsenter", f"--net={self._lease.netns_path}", "--"]

    @property
    def shares_net(self) -> bool:
        """Whether the sandbox must keep the namespace it is started in (``SandboxLayout.share_net``)."""
        return self._lease is not None or self._joiner is not None

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
