"""Who the app key speaks for: :class:`Identity` (``GET /me``)."""

from __future__ import annotations

from typing import Any

from attrs import frozen

from golem_api._rest.models._fields import Fields

__all__ = ["Identity"]


@frozen
class Identity:
    """The node id the app key acts as, with its name and role."""

    identity: str
    name: str | None = None
    role: str | None = None

    @classmethod
    def from_json(cls, data: Any) -> Identity:
        """Parse ``{"identity": "0x…", "name"?, "role"?}``."""
        f = Fields("Identity", data)
        return cls(identity=f.text("identity"), name=f.opt_text("name"), role=f.opt_text("role"))
