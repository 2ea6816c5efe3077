"""Retry backoff of the mesh's calls: full jitter, from the backoff shared with the observatory."""

from __future__ import annotations

from boutique.backoff import full_jitter

__all__ = ["full_jitter"]
