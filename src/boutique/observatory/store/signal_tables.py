"""The signals stored beside spans (logs, metrics, profiles), each through its `SignalTable` (see `observatory.signals`)."""

from __future__ import annotations

from boutique.observatory.logs.table import TABLE as LOGS
from boutique.observatory.metrics.table import TABLE as METRICS
from boutique.observatory.profiles.table import TABLE as PROFILES
from boutique.observatory.signals import SignalTable

TABLES: tuple[SignalTable, ...] = (LOGS, METRICS, PROFILES)
