"""Errors raised at the configuration boundary, in a module that imports nothing, so every layer can raise them.

:class:`ConfigError` lives here rather than in :mod:`sslsec.config` because the implementations (methods, engine,
data) raise it too, and :mod:`sslsec.config` must stay importable without them (``sslsec.config`` re-exports it).
"""

__all__ = ["ConfigError"]


class ConfigError(ValueError):
    """A configuration value is missing, unknown, of the wrong type or out of range."""
