"""The one place that touches the database: engine, tables and the queries each part needs."""

from smartplex_sync.store.engine import get_engine, make_engine, utcnow
from smartplex_sync.store.tables import metadata

__all__ = ["get_engine", "make_engine", "metadata", "utcnow"]
