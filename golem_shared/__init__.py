"""The small core both halves of golem-api share, and the only code either may import from the other side.

- :mod:`golem_shared.errors`: the root of the one ``GolemError`` tree and the branches both halves raise;
- :mod:`golem_shared.timestamps`: RFC 3339 timestamps as the daemon writes them;
- :mod:`golem_shared.constraints`: the market's constraint language (parse, match);
- :mod:`golem_shared.pricing`: the linear pricing model over usage counters;
- :mod:`golem_shared.gftp`: the GSB file-transfer frames (FlexBuffers);
- :mod:`golem_shared.imagehash`: an image's SHA3-224 hash;
- :mod:`golem_shared.output`: the note that says where and how much of a command's output was left out;
- :mod:`golem_shared.signals`: Ctrl-C / SIGTERM handling for the command line.

The requestor (:mod:`golem_api`) and the embedded local network (:mod:`golem_local`) import this package and
never each other, except through :mod:`golem_api._local`, the one door the requestor opens lazily. Nothing here
imports either of them.
"""

__all__: list[str] = []
