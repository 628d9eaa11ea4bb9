"""Identities of the local network: node ids (which are also payment addresses) and app keys.

A Golem node id is an Ethereum-style address, ``0x`` and 40 lowercase hex digits, and the node's default
payment address is the same string. The local network draws one random seed per run and derives every id
from it and a name, so that within one run ``ids.node_id("local-provider-1")`` is always the same address,
while two runs never share ids.
"""

from __future__ import annotations

import hashlib
import re
import secrets

__all__ = [
    "NodeIdentities",
    "is_node_id",
    "new_app_key",
    "new_node_id",
]

_NODE_ID = re.compile(r"0x[0-9a-f]{40}")


def new_node_id() -> str:
    """A fresh random node id: ``0x`` and 40 lowercase hex digits."""
    return "0x" + secrets.token_hex(20)


def new_app_key() -> str:
    """A fresh app key (32 hex digits), the secret a client sends as ``Authorization: Bearer <key>``."""
    return secrets.token_hex(16)


def is_node_id(text: str) -> bool:
    """Whether ``text`` is written as a node id is (``0x`` and 40 lowercase hex digits)."""
    return _NODE_ID.fullmatch(text) is not None


class NodeIdentities:
    """Node ids derived from one random seed (drawn per run unless given) and a name."""

    def __init__(self, seed: bytes | None = None) -> None:
        self._seed = secrets.token_bytes(32) if seed is None else seed

    def node_id(self, name: str) -> str:
        """The node id of ``name`` in this run: the same name always gives the same id."""
        digest = hashlib.sha256(self._seed + b"\x00" + name.encode()).hexdigest()
        return "0x" + digest[:40]
