"""Span storage behind one interface (`Store`); DuckDB is the implementation here."""

from boutique.observatory.store.base import Dependency, RedPoint, Store, TagCondition, TraceQuery

__all__ = ["Dependency", "RedPoint", "Store", "TagCondition", "TraceQuery"]
