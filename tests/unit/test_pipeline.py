"""Which commands of a batch the exe-unit hands to its runtime as one chain (golem_local.pipeline)."""

from __future__ import annotations

import json

from golem_local.exescript import parse_exescript
from golem_local.pipeline import CHAIN_LIMIT, chain_length


def script(*commands: object) -> str:
    return json.dumps(list(commands))


RUN = {"run": {"entry_point": "/bin/true"}}
STREAMED = {"run": {"entry_point": "/bin/true", "capture": {"stdout": {"stream": {}}, "stderr": {"stream": {}}}}}


def test_runs_in_a_row_chain_whatever_their_capture_and_other_commands_stand_alone() -> None:
    commands = parse_exescript(
        script({"deploy": {}}, {"start": {}}, RUN, STREAMED, RUN, {"transfer": {"from": "a", "to": "b"}}, RUN, RUN)
    )
    assert [chain_length(commands, start) for start in range(len(commands))] == [0, 0, 3, 2, 1, 0, 2, 1]


def test_a_long_run_of_commands_goes_as_chains_of_at_most_the_limit() -> None:
    commands = parse_exescript(script(*[RUN] * (CHAIN_LIMIT + 5)))
    assert chain_length(commands, 0) == CHAIN_LIMIT
    assert chain_length(commands, CHAIN_LIMIT) == 5
