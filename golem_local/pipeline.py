"""Consecutive ``run`` commands of a batch handed to the runtime at once, as a chain.

A batch's commands run in order, each after the one before it succeeded. Run one at a time, every command costs
a round trip between the exe-unit and its runtime besides its own run: for the ``vm`` runtime, the sandbox's
agent reports the exit, the node's event loop wakes, records the result and sends the next request, and the
agent waits for it. On two busy cores that wait was most of a short command's time. A runtime that is a
:class:`~golem_local.runtime.base.ChainRunner` takes a run of such commands at once and starts each the moment the
one before it exited with code 0; the exe-unit records each command's start, result and events as the exits come
in, in order, exactly as when they run one at a time (:class:`BatchChain`).

What chains (:func:`chain_length`): ``run`` commands in a row, at most :data:`CHAIN_LIMIT`. ``deploy``, ``start``,
``transfer``, ``terminate`` and ``sign`` need the exe-unit itself and run on their own. A command's streamed output
must come after its ``started`` event, which the exe-unit records only once it has the result of the command before
it, while the runtime may have started the command already: so each command's sink holds its output events until
the exe-unit has recorded the start (:meth:`GatedSink.open`), and asks the runtime, while it holds any, to read no
further (:class:`~golem_local.runtime.base.FlowControl`), so that what it holds stays one piece and the command's
exit is not read before its output went out.

What stays as one at a time: a failing command (not started, another exit code, killed) ends the batch, and the
commands after it never run (the runtime drops the rest of its chain); the state is checked before each command;
a destroy or terminate cancels the command being awaited, which kills the running one and drops the queued ones
(nothing queued runs after it), and a runtime's stop ends the chain with everything else in the sandbox.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from typing import TYPE_CHECKING, Protocol

from golem_local.exescript import Command, OutputCapture, RunCommand
from golem_local.runtime.base import ChainRunner, CommandChain, OutputSink, RunProcess

if TYPE_CHECKING:
    from golem_local.batch import Batch

__all__ = ["CHAIN_LIMIT", "BatchChain", "GatedSink", "chain_length", "chainable", "prepare_run"]

CHAIN_LIMIT = 256
"""Commands of one chain at most: a longer run of them goes as several chains (one round trip each), so that one
request to the runtime stays small."""

Captures = Mapping[str, OutputCapture]


class GatedSink(OutputSink, Protocol):
    """The sink of a chained command's output: it holds the output's events until :meth:`open`."""

    def open(self) -> None:
        """The command's ``started`` event is recorded: what was held goes out, and what comes next at once."""
        ...


SinkFactory = Callable[[RunCommand, Captures], GatedSink]


def prepare_run(command: RunCommand, output_limit: int) -> tuple[Captures, RunProcess]:
    """What the exe-unit needs to run ``command``, alone or in a chain: the captures that keep its output (at
    most ``output_limit`` each) and the process to hand to the runtime."""
    captures = {
        "stdout": OutputCapture(command.capture.stdout, limit=output_limit),
        "stderr": OutputCapture(command.capture.stderr, limit=output_limit),
    }
    return captures, RunProcess(entry_point=command.entry_point, args=command.args, env=dict(command.env))


def chainable(command: Command) -> bool:
    """Whether ``command`` may be part of a chain: a ``run``."""
    return isinstance(command, RunCommand)


def chain_length(commands: Sequence[Command], start: int) -> int:
    """How many commands from ``start`` on go as one chain: the chainable ones in a row, at most
    :data:`CHAIN_LIMIT` (below 2, running them one at a time is as good)."""
    end = start
    limit = min(len(commands), start + CHAIN_LIMIT)
    while end < limit and chainable(commands[end]):
        end += 1
    return end - start


class BatchChain:
    """The commands ``start`` … ``start + len(commands) - 1`` of a batch, running as one chain on a runtime.

    Made by :meth:`start`; :meth:`result` gives each command's exit code, note and captured output in turn;
    :meth:`close` forgets it (and ends what may still run of it).
    """

    def __init__(
        self,
        batch: Batch,
        commands: Sequence[RunCommand],
        captures: Sequence[Captures],
        sinks: Sequence[GatedSink],
        chain: CommandChain,
    ) -> None:
        self.batch = batch
        self.start_index = commands[0].index
        self.count = len(commands)
        self._captures = captures
        self._sinks = sinks
        self._chain = chain

    @classmethod
    async def start(
        cls,
        runtime: ChainRunner,
        batch: Batch,
        commands: Sequence[RunCommand],
        *,
        output_limit: int,
        sink: SinkFactory,
    ) -> BatchChain:
        """Hand ``commands`` to ``runtime`` as one chain; the first starts now. ``sink(command, captures)`` makes
        the sink of each command's output (held until :meth:`result` is asked for it). Raises what
        :meth:`ChainRunner.run_chain` raises."""
        captures: list[Captures] = []
        processes = []
        sinks: list[GatedSink] = []
        for command in commands:
            kept, process = prepare_run(command, output_limit)
            captures.append(kept)
            sinks.append(sink(command, kept))
            processes.append(process)
        chain = await runtime.run_chain(processes, sinks)
        return cls(batch, commands, captures, sinks, chain)

    def covers(self, batch: Batch, index: int) -> bool:
        """Whether command ``index`` of ``batch`` is one of this chain's."""
        return batch is self.batch and self.start_index <= index < self.start_index + self.count

    async def result(self, index: int) -> tuple[int, str | None, Captures]:
        """Command ``index``'s exit code and note once it has ended, and what its captures kept (see
        :meth:`CommandChain.result` for what it raises, and what cancelling it does). Its ``started`` event must
        be recorded already: its output events follow from now on."""
        position = index - self.start_index
        self._sinks[position].open()
        code, note = await self._chain.result(position)
        return code, note, self._captures[position]

    def close(self) -> None:
        """Forget the chain; what may still run of it is killed (see :meth:`CommandChain.close`)."""
        self._chain.close()
