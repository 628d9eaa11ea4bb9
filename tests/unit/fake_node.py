"""A fake transport for the REST API classes: answers each route with canned JSON and records the requests."""

from __future__ import annotations

import json as jsonlib
from collections.abc import Callable, Mapping
from typing import Any

from attrs import define, field

from golem_api._rest.routes import ABSENT, Route

__all__ = ["FakeNode", "Sent"]


@define
class Sent:
    route: Route
    path: str
    params: dict[str, str]
    json: Any
    timeout: float | None


@define
class FakeNode:
    """Answers each route with canned JSON (or raises a canned error) and records the requests."""

    answers: dict[Route, Any] = field(factory=dict)
    sent: list[Sent] = field(factory=list)

    async def __call__(
        self,
        route: Route,
        *path_args: str,
        params: Mapping[str, str | None] | None = None,
        json: Any = ABSENT,
        timeout: float | None = None,
        parse: Callable[[Any], Any],
        decode: Callable[[str], Any] = jsonlib.loads,
    ) -> Any:
        query = {key: value for key, value in (params or {}).items() if value is not None}
        self.sent.append(Sent(route, route.expand(*path_args), query, json, timeout))
        self.check(route, params)
        answer = self.answers.get(route)
        if isinstance(answer, Exception):
            raise answer
        return parse(decode(jsonlib.dumps(answer, separators=(",", ":"))))  # as a node's compact answer

    def check(self, route: Route, params: Mapping[str, str | None] | None) -> None:
        """Called with each request before it is answered; subclasses assert what they need here."""

    @property
    def last(self) -> Sent:
        return self.sent[-1]
