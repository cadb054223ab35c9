"""SQL catalog backends, chosen by URL."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import Catalog, FrameResult, QueryResult, SearchFilter, TrackerState

__all__ = ["Catalog", "FrameResult", "QueryResult", "SearchFilter", "TrackerState", "open_catalog"]

_POSTGRES_SCHEMES = ("postgresql", "postgres", "postgresql+psycopg")


def open_catalog(url: str) -> Catalog:
    """`sqlite:///path/catalog.db`, a plain path, or `postgresql://user:password@host:port/database`
    (also `postgres://` and `postgresql+psycopg://`)."""
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteCatalog

        return SqliteCatalog(Path(url.removeprefix("sqlite:///")))
    if "://" not in url:
        from .sqlite import SqliteCatalog

        return SqliteCatalog(Path(url))
    scheme = url.split("://", 1)[0].lower()
    if scheme in _POSTGRES_SCHEMES or scheme.startswith("postgresql+"):
        from .postgres import PostgresCatalog

        return PostgresCatalog(url)  # an unsupported postgresql+driver gets its own message there
    raise ConfigError(
        f"unsupported catalog URL scheme {scheme + '://'!r}: use sqlite:///PATH or "
        "postgresql://user:password@host:port/database"
    )
