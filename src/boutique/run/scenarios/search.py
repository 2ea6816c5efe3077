"""A trace search, as the scenarios describe it and the query API and search page take it."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field


@dataclass(frozen=True)
class Search:
    """A trace search, as the query API and the search page take it."""

    service: str
    tags: Mapping[str, str | int | bool] = field(default_factory=dict)
    errors: bool = False  # only traces with an error span
    min_duration: str = ""  # only traces at least this long (a Go duration, e.g. 500ms)
