"""The numbers of a run's summary line, whichever way it ran: one process, several (summed over the
partitions, reading counted once), or fleet mode's groups of files."""

from __future__ import annotations

from dataclasses import dataclass, field

from analyzer.parallel.worker import PartitionResult
from analyzer.pipeline import Pipeline
from analyzer.segments.reader import ReadReport


@dataclass
class Totals:
    """What the summary line says, summed over the workers (the same numbers as one process's)."""

    files_read: int = 0
    rows_read: int = 0
    rows_dropped: int = 0
    problems: list[tuple[str, str]] = field(default_factory=list)
    connections: int = 0
    exchanges: int = 0
    incomplete: int = 0
    events: int = 0
    parse_errors: int = 0
    coerced: dict[str, int] = field(default_factory=dict)

    @classmethod
    def of(cls, pipeline: Pipeline, report: ReadReport) -> Totals:
        """A one-process run's."""
        return cls(report.files_read, report.rows_read, report.rows_dropped, report.problems,
                   pipeline.tracker.connections_seen, pipeline.exchanges, pipeline.incomplete,
                   pipeline.events, pipeline.parse_errors)

    def combine(self, other: Totals) -> None:
        """Another run's totals, over other files (fleet mode: another group of files)."""
        for name in ("files_read", "rows_read", "rows_dropped", "connections", "exchanges", "incomplete",
                     "events", "parse_errors"):
            setattr(self, name, getattr(self, name) + getattr(other, name))
        self.problems += other.problems
        for name, n in other.coerced.items():
            self.coerced[name] = self.coerced.get(name, 0) + n

    def add(self, r: PartitionResult, reading: bool) -> None:
        """A partition's counts; `reading`: also its reading of the files (one partition's stands for all)."""
        self.connections += r.connections
        self.exchanges += r.exchanges
        self.incomplete += r.incomplete
        self.events += r.events
        self.parse_errors += r.parse_errors
        for name, n in r.coerced.items():
            self.coerced[name] = self.coerced.get(name, 0) + n
        if reading:
            self.files_read += r.files_read
            self.rows_read += r.rows_read
            self.rows_dropped += r.rows_dropped
            self.problems += r.problems
