"""The version of golem-api (the distribution's version is read from here at build time)."""

__version__ = "0.2.0"
