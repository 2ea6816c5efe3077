"""Counts of the sampler's decisions: per policy (its own verdict) and in all (the final decision)."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field

import numpy as np


@dataclass
class Counts:
    """Traces and spans a verdict kept and dropped."""

    kept_traces: int = 0
    kept_spans: int = 0
    dropped_traces: int = 0
    dropped_spans: int = 0

    def add(self, keep: np.ndarray, spans: np.ndarray) -> None:
        """Count one round's verdicts (`keep` per trace, `spans` per trace)."""
        kept = int(np.count_nonzero(keep))
        kept_spans = int(spans[keep].sum())
        self.kept_traces += kept
        self.kept_spans += kept_spans
        self.dropped_traces += len(keep) - kept
        self.dropped_spans += int(spans.sum()) - kept_spans

    def minus(self, earlier: Counts) -> Counts:
        """What was counted since `earlier`."""
        return Counts(
            self.kept_traces - earlier.kept_traces,
            self.kept_spans - earlier.kept_spans,
            self.dropped_traces - earlier.dropped_traces,
            self.dropped_spans - earlier.dropped_spans,
        )


@dataclass
class Stats:
    """Everything the sampler counts since it started."""

    policies: dict[str, Counts]
    decided: Counts = field(default_factory=Counts)  # the final decisions
    early_traces: int = 0  # decided before their wait because more than num_traces were held
    late_kept_spans: int = 0  # spans of traces already kept, stored as they came
    late_dropped_spans: int = 0  # spans of traces already dropped
    replayed_spans: int = 0  # spans read back from the journal at start
    stored_spans: int = 0  # spans committed to the store (kept and late kept)
    journaled_spans: int = 0

    def copy(self) -> Stats:
        """A snapshot (for the minute's log line)."""
        return Stats(
            policies={name: Counts(**asdict(c)) for name, c in self.policies.items()},
            decided=Counts(**asdict(self.decided)),
            early_traces=self.early_traces,
            late_kept_spans=self.late_kept_spans,
            late_dropped_spans=self.late_dropped_spans,
            replayed_spans=self.replayed_spans,
            stored_spans=self.stored_spans,
            journaled_spans=self.journaled_spans,
        )

    def since(self, earlier: Stats) -> dict[str, object]:
        """The figures of the log line: what changed since `earlier`."""
        decided = self.decided.minus(earlier.decided)
        return {
            **asdict(decided),
            "late_spans": (self.late_kept_spans - earlier.late_kept_spans)
            + (self.late_dropped_spans - earlier.late_dropped_spans),
            "early_traces": self.early_traces - earlier.early_traces,
            "policies": {
                name: f"{c.minus(earlier.policies[name]).kept_traces} kept, "
                f"{c.minus(earlier.policies[name]).dropped_traces} dropped"
                for name, c in self.policies.items()
            },
        }

    def busy_since(self, earlier: Stats) -> bool:
        """Whether anything was decided or came late since `earlier`."""
        return (
            self.decided != earlier.decided
            or self.late_kept_spans != earlier.late_kept_spans
            or self.late_dropped_spans != earlier.late_dropped_spans
        )
