"""Tail sampling: hold each trace until it is complete, then keep it by policies (see `stage`)."""

from __future__ import annotations

from boutique.observatory.sampling.config import SamplingConfig, SamplingFlags, from_options, load, parse
from boutique.observatory.sampling.stage import TailSampler, drain_journal, journal_directory

__all__ = [
    "SamplingConfig",
    "SamplingFlags",
    "TailSampler",
    "drain_journal",
    "from_options",
    "journal_directory",
    "load",
    "parse",
]
