"""SQL catalog backends, chosen by URL."""

from __future__ import annotations

from pathlib import Path

from ..errors import ConfigError
from .base import Catalog, FrameResult, QueryResult, SearchFilter

__all__ = ["Catalog", "FrameResult", "QueryResult", "SearchFilter", "open_catalog"]


def open_catalog(url: str) -> Catalog:
    """`sqlite:///path/catalog.db` or a plain path; PostgreSQL arrives with the scale-out backends."""
    if url.startswith("sqlite:///"):
        from .sqlite import SqliteCatalog

        return SqliteCatalog(Path(url.removeprefix("sqlite:///")))
    if "://" not in url:
        from .sqlite import SqliteCatalog

        return SqliteCatalog(Path(url))
    raise ConfigError(f"unsupported catalog URL {url!r}: use sqlite:///PATH")
