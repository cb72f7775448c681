"""Errors raised at the boundary (configuration, data files), in a module that imports nothing, so every layer can
raise them.

:class:`ConfigError` lives here rather than in :mod:`sslsec.config` because the implementations (methods, engine,
data) raise it too, and :mod:`sslsec.config` must stay importable without them (``sslsec.config`` re-exports it).
:class:`DatasetError` lives here so that both data-set modules (:mod:`sslsec.data.datasets`, which re-exports it,
and :mod:`sslsec.data.folders`) raise it without importing each other both ways.
"""

__all__ = ["ConfigError", "DatasetError", "some"]


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""


class DatasetError(ValueError):
    """A data set is missing or malformed; the message names the path and how to get or fix the data."""


def some(names: list) -> str:
    """The first five of ``names`` for an error message, with `` ...`` when there are more."""
    return f"{names[:5]}{' ...' if len(names) > 5 else ''}"
