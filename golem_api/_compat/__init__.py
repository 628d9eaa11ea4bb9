"""Stand-ins for the programs other Golem tools expect next to a daemon, backed by golem-api.

:mod:`golem_api._compat.gftp` is a ``gftp server``: the JSON-RPC file-transfer helper that yapapi starts as a
child process, here served through the node's GSB API (``golem-api gftp server``), so that yapapi runs
unmodified against the local node or a real daemon without the daemon's ``gftp`` binary.
"""

from __future__ import annotations

__all__: list[str] = []
