"""Logging set-up for programs, as yapapi's examples do it: ``enable_default_logger(log_file="run.log")``.

golem-api logs under the ``golem_api`` logger (the default event consumer, :mod:`golem_api._summary`, writes
its lines about agreements, payments and totals there; :mod:`golem_api.tasks` its job summaries) and the
embedded local network under ``golem_local``. A library does not configure logging by itself; a program that
wants the usual picture calls :func:`enable_default_logger` once at its start.
"""

from __future__ import annotations

import logging
import os
import sys
from pathlib import Path

from golem_api._version import __version__

__all__ = ["DEFAULT_FORMAT", "enable_default_logger", "pluralize"]

DEFAULT_FORMAT = "[%(asctime)s %(levelname)s %(name)s] %(message)s"
_LOGGERS = ("golem_api", "golem_local")
_REST_LOGGER = "golem_api._rest"
_CONSOLE = "golem_api default console"


def enable_default_logger(
    format_: str = DEFAULT_FORMAT,
    log_file: str | os.PathLike[str] | None = None,
    debug_activity_api: bool = False,
    debug_market_api: bool = False,
    debug_payment_api: bool = False,
    debug_net_api: bool = False,
) -> None:
    """Log golem-api's ``INFO`` lines to standard error and, with ``log_file``, everything (``DEBUG``) to that
    file (created or replaced), as yapapi's function of the same name does.

    Any ``debug_*_api`` flag adds each REST request and answer to the file (golem-api has one logger for all
    APIs, ``golem_api._rest``; without a flag it logs at ``INFO`` there). Calling it again adds no second
    handler for the same target.
    """
    formatter = logging.Formatter(fmt=format_)
    known = {handler.get_name() for handler in logging.getLogger(_LOGGERS[0]).handlers}
    handlers: list[logging.Handler] = []
    if _CONSOLE not in known:
        console = logging.StreamHandler(sys.stderr)
        console.setLevel(logging.INFO)
        console.setFormatter(formatter)
        console.set_name(_CONSOLE)
        handlers.append(console)
    if log_file is not None:
        path = Path(log_file)
        if not path.parent.is_dir():
            from golem_api.errors import ConfigurationError

            raise ConfigurationError(f"cannot log to {str(path)!r}: the directory {str(path.parent)!r} is missing")
        name = f"golem_api default file {path.resolve()}"
        if name not in known:
            file_handler = logging.FileHandler(path, mode="w", encoding="utf-8")
            file_handler.setLevel(logging.DEBUG)
            file_handler.setFormatter(formatter)
            file_handler.set_name(name)
            handlers.append(file_handler)
    for logger_name in _LOGGERS:
        logger = logging.getLogger(logger_name)
        logger.setLevel(logging.DEBUG)
        logger.disabled = False
        for handler in handlers:
            if logger_name == _LOGGERS[0] or handler.get_name() != _CONSOLE:  # the console shows golem_api only
                logger.addHandler(handler)
    wants_rest = debug_activity_api or debug_market_api or debug_payment_api or debug_net_api
    logging.getLogger(_REST_LOGGER).setLevel(logging.DEBUG if wants_rest else logging.INFO)
    if log_file is not None:
        log = logging.getLogger("golem_api")
        log.debug("golem-api %s, program %s, working directory %s", __version__, sys.argv[0], os.getcwd())
        log.info("Using log file %s; look there for details when something goes wrong", log_file)


def pluralize(count: int, word: str) -> str:
    """``"1 task"``, ``"3 tasks"`` (yapapi's helper of the same name)."""
    return f"{count} {word}" + ("" if count == 1 else "s")
